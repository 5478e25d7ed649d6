"""tnlib: tensor networks for machine learning in JAX.

The functional core: each format is a pytree type with pure functions in its own
module (``tnlib.tt``, ``tnlib.tucker``, ...). Layers live in ``tnlib.models``,
experiments in ``tnlib.experiments``; ``tnlib.interop`` converts to and from
tensornetwork, quimb and tensorly.
"""

from tnlib import (
    btt,
    cp,
    linalg,
    network,
    riemannian,
    serialize,
    struct,
    sweep,
    sweep_born,
    tr,
    tree,
    tt,
    tucker,
)
from tnlib.cp import CP
from tnlib.network import Network
from tnlib.tr import TensorRing
from tnlib.tree import TreeTN
from tnlib.tt import TensorTrain, TTMatrix
from tnlib.tucker import Tucker

__version__ = "0.1.0"

__all__ = [
    "btt", "cp", "linalg", "network", "riemannian", "serialize", "struct", "sweep", "sweep_born",
    "tr", "tree", "tt", "tucker",
    "CP", "Network", "TensorRing", "TensorTrain", "TTMatrix", "TreeTN", "Tucker",
    "__version__",
]
