"""Numerical helpers shared by the format modules (private to tnlib, public names).

``safe_sqrt`` / ``safe_log`` keep derivatives finite at zero, ``low_precision`` says
when LAPACK has no kernel for a dtype, ``check_rank_args`` validates the truncation
arguments ``max_rank`` / ``rtol`` that every format's ``from_dense`` and ``round``
take, ``is_concrete`` tells a concrete array from a tracer, and ``balance_norms``
rescales the cores of a network to equal norms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "safe_sqrt", "safe_log", "low_precision", "check_rank_args", "is_concrete", "balance_norms",
    "accumulation_dtypes",
]


def safe_sqrt(x):
    """``sqrt(x)`` for ``x >= 0`` whose derivative at exactly 0 is 0 (a subgradient of
    a norm; the plain derivative there is infinite and turns into NaN)."""
    pos = x > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, x, 1)), 0)


def safe_log(x):
    """``log(x)`` for ``x >= 0``: ``-inf`` at 0 with a zero (not NaN) derivative."""
    pos = x > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, x, 1)), -jnp.inf)


def low_precision(dtype) -> bool:
    """bfloat16 / float16: LAPACK has no kernels for them."""
    return jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32


def is_concrete(x) -> bool:
    """True when ``x`` holds concrete values (not a tracer inside jit/vmap/grad)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def check_rank_args(max_rank, rtol, x=None) -> None:
    """TypeError / ValueError naming the argument unless ``max_rank`` is None or a
    Python int >= 1 (static) and ``rtol`` is None or a concrete finite number >= 0 (NaN
    and inf are refused: every comparison with NaN is False, which truncated to rank 1).
    With ``x`` (the tensor a ``from_dense`` decomposes), also a ValueError naming the
    axis of size 0 (an empty tensor has no decomposition; it divided by zero)."""
    if x is not None:
        from tnlib._validate import check_shape

        check_shape(np.shape(x), "x")
    if max_rank is not None:
        if isinstance(max_rank, bool) or not isinstance(max_rank, int):
            raise TypeError(
                f"max_rank must be a Python int (static), got {type(max_rank).__name__}"
            )
        if max_rank < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if rtol is not None:
        if not is_concrete(rtol):
            raise TypeError("rtol must be a concrete number, not a traced value")
        value = float(rtol)
        if not math.isfinite(value) or value < 0:  # NaN compares False: would keep rank 1
            raise ValueError(f"rtol must be >= 0 and finite, got {value}")


def balance_norms(cores):
    """Rescale cores to equal Frobenius norms (their product, the tensor, is unchanged);
    all-zero cores leave the tuple as it is."""
    norms = [jnp.linalg.norm(c.ravel()) for c in cores]
    ok = jnp.all(jnp.stack(norms) > 0)
    logmean = sum(jnp.log(jnp.where(ok, v, 1.0)) for v in norms) / len(cores)
    return tuple(
        c * jnp.where(ok, jnp.exp(logmean) / jnp.where(ok, v, 1.0), 1.0).astype(c.dtype)
        for c, v in zip(cores, norms, strict=True)
    )


def accumulation_dtypes(*arrays):
    """``(dt, acc)``: the promoted dtype of the operands and the dtype products accumulate
    in (float32 for 16-bit floats, ``dt`` itself otherwise)."""
    dt = jnp.result_type(*arrays)
    return dt, (jnp.dtype(jnp.float32) if jnp.finfo(dt).bits < 32 else dt)
