"""Flax NNX layers built on the tnlib core (installed as ``tnlib.models``)."""

from tnlib.models.adapters import DoTA, FLoRA, Frozen, LoRA, LoTR
from tnlib.models.born import MPSBornMachine
from tnlib.models.conv import CPConv, DLRTConv, TuckerConv
from tnlib.models.embedding import TTEmbedding
from tnlib.models.low_rank import DLRTLinear
from tnlib.models.mlp import ResidualMLP, StructuredMLP, TTInputMLP, scaling_layer
from tnlib.models.mps import MPSClassifier, local_feature_map
from tnlib.models.mup import layer_lr_multipliers, structured_optimizer
from tnlib.models.regression import TensorRegression
from tnlib.models.structured import (
    BTTLinear,
    KroneckerLinear,
    LowRankLinear,
    MonarchLinear,
    TTLinear,
    factorize_dims,
)
from tnlib.models.surgery import Replacement, factorize

__all__ = [
    "BTTLinear", "CPConv", "DLRTConv", "DLRTLinear", "DoTA", "FLoRA", "Frozen", "KroneckerLinear",
    "LoRA", "LoTR",
    "LowRankLinear", "MonarchLinear", "MPSBornMachine", "MPSClassifier", "StructuredMLP",
    "Replacement", "ResidualMLP", "TensorRegression", "TTEmbedding", "TTInputMLP", "TTLinear",
    "TuckerConv",
    "factorize",
    "factorize_dims",
    "layer_lr_multipliers", "local_feature_map", "scaling_layer", "structured_optimizer",
]
