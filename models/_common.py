"""Helpers shared by the layers of ``tnlib.models`` (private module, public names).

Every layer module imports what it shares from here on purpose, so no module reaches
into another module's underscore names: argument checks (``check_int``), the dtype
promotion of a forward pass (flax's ``nnx.nn.dtypes.promote_dtype`` and
``compute_dtype`` built on its ``canonicalize_dtype``), double-precision
decompositions for ``from_dense`` (``double_precision``) and the per-parameter trees of
``lr_multipliers()`` (``param_tree``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import canonicalize_dtype, promote_dtype

from tnlib import linalg

__all__ = ["check_int", "compute_dtype", "double_precision", "param_tree", "promote_dtype"]


def check_int(value, name: str, low: int = 1) -> int:
    """``value`` when it is a Python int ``>= low`` (not a bool); else a ValueError
    naming the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def compute_dtype(dtype, *args):
    """The dtype a layer computes in: ``dtype`` when given, else the promotion of
    ``args`` (arrays, or dtypes such as ``param_dtype``), made inexact (flax's
    ``nnx.nn.dtypes.canonicalize_dtype``, the rule of ``promote_dtype``)."""
    args = [np.zeros((), a) if isinstance(a, np.dtype | type | str) else a for a in args]
    return canonicalize_dtype(*args, dtype=dtype)


def double_precision(fn: Callable, array, out_dtype):
    """``fn(array)`` computed in double precision, every inexact leaf cast to
    ``out_dtype`` (integer leaves, such as an active rank, are kept).

    For a concrete ``array``, ``fn`` runs under ``jax.enable_x64(True)`` on a float64
    (complex128 for complex input) copy whatever the global x64 flag, so the SVDs / ALS
    of a ``from_dense`` are exact to double precision before the cast (float32 SVDs
    leave relative errors near 1e-6 even on exactly structured matrices). A traced
    ``array`` (inside ``jit``) is decomposed in its own dtype.
    """
    def cast(tree):
        def one(a):
            a = jnp.asarray(a)
            return a.astype(out_dtype) if jnp.issubdtype(a.dtype, jnp.inexact) else a
        return jax.tree.map(one, tree)

    if not linalg.is_concrete(array):
        return cast(fn(array))
    with jax.enable_x64(True):
        hi = jnp.promote_types(jnp.asarray(array).dtype, jnp.float64)
        return cast(fn(jnp.asarray(array, hi)))


def param_tree(module: nnx.Module, value: Callable[[tuple], float]) -> nnx.State:
    """``nnx.state(module, nnx.Param)`` with every Param's value replaced by
    ``value(path)`` (``path`` as in ``nnx.to_flat_state``: ``("left",)``,
    ``("cores", 0)``, ...): the same tree structure as the parameters, so it can be
    ``jax.tree.map``-ed against them (``lr_multipliers()`` of every structured layer)."""
    flat = nnx.to_flat_state(nnx.state(module, nnx.Param))
    return nnx.from_flat_state([(path, var.replace(value(path))) for path, var in flat])
