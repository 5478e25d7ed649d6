"""Flax NNX layers built on the tnlib core (installed as ``tnlib.models``)."""

from tnlib.models.born import MPSBornMachine
from tnlib.models.mps import MPSClassifier, local_feature_map
from tnlib.models.structured import (
    BTTLinear,
    KroneckerLinear,
    LowRankLinear,
    MonarchLinear,
    TTLinear,
    balanced_factors,
    layer_lr_multipliers,
    structured_optimizer,
)

__all__ = [
    "BTTLinear", "KroneckerLinear", "LowRankLinear", "MonarchLinear", "MPSBornMachine",
    "MPSClassifier", "TTLinear", "balanced_factors", "layer_lr_multipliers",
    "local_feature_map", "structured_optimizer",
]
