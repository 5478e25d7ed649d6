"""Flax NNX layers built on the tnlib core (installed as ``tnlib.models``)."""

from tnlib.models.mps import MPSClassifier, local_feature_map

__all__ = ["MPSClassifier", "local_feature_map"]
