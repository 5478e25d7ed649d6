"""tnlib: tensor networks for machine learning in JAX.

The functional core: each format is a pytree type with pure functions in its own
module (``tnlib.tt``, ...). Layers live in ``tnlib.models``, experiments in
``tnlib.experiments``.
"""

from tnlib import linalg, struct, tt
from tnlib.tt import TensorTrain, TTMatrix

__version__ = "0.1.0"

__all__ = ["linalg", "struct", "tt", "TensorTrain", "TTMatrix", "__version__"]
