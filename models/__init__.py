"""Flax NNX layers built on the tnlib core (installed as ``tnlib.models``)."""

from tnlib.models.born import MPSBornMachine
from tnlib.models.mps import MPSClassifier, local_feature_map

__all__ = ["MPSBornMachine", "MPSClassifier", "local_feature_map"]
