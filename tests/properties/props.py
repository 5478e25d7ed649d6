"""Shared pieces of the property suite: the coverage registry, dtypes and tolerances,
hypothesis strategies and the checks every property ends with.

Coverage: decorate each property test with ``@covers("tt.inner", "tt.norm", ...)``
(names are ``<module short name>.<public name>``, e.g. ``models.TTLinear``);
``test_prop_coverage.py`` imports every ``test_prop_*.py`` file of this folder and
fails when a name in ``__all__`` of a module listed there has no property test.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import strategies as st

COVERED: dict[str, list[str]] = {}


def covers(*names: str):
    """Register the decorated test as a property test of the public functions ``names``."""

    def deco(fn):
        for n in names:
            COVERED.setdefault(n, []).append(fn.__name__)
        return fn

    return deco


# ------------------------------------------------------------------------- dtypes

BF16, F32, F64, C64, C128 = jnp.bfloat16, jnp.float32, jnp.float64, jnp.complex64, jnp.complex128
ALL_DTYPES = [BF16, F32, F64, C64, C128]
EXACT_DTYPES = [F32, F64, C128]  # where bfloat16 / complex64 add nothing new


def dtype_id(dt) -> str:
    return jnp.dtype(dt).name


def tol(dtype) -> float:
    """Relative accuracy expected of a few contractions / decompositions in ``dtype``."""
    eps = float(jnp.finfo(jnp.dtype(dtype)).eps)
    return 6e-2 if eps > 1e-3 else 2e-4 if eps > 1e-10 else 1e-9


def wide(dtype):
    """float64 / complex128: the dtype the dense reference is computed in."""
    return jnp.complex128 if jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating) else jnp.float64


def upcast(tree, dtype=None):
    """Every inexact leaf of ``tree`` as float64 / complex128 (the exact reference)."""
    def f(a):
        a = jnp.asarray(a)
        return a.astype(wide(a.dtype if dtype is None else dtype))
    return jax.tree.map(f, tree)


def normal(key, shape, dtype):
    """Gaussian array of ``dtype`` (complex: independent real and imaginary parts)."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        k1, k2 = jax.random.split(key)
        real = jnp.finfo(dtype).dtype
        return (jax.random.normal(k1, shape, real) + 1j * jax.random.normal(k2, shape, real)
                ).astype(dtype)
    return jax.random.normal(key, shape, dtype)


# ------------------------------------------------------------------------- checks


def finite(tree, what="result"):
    """No NaN / inf in any inexact leaf of ``tree``."""
    for leaf in jax.tree.leaves(tree):
        a = np.asarray(jnp.asarray(leaf).astype(wide(jnp.asarray(leaf).dtype)))
        assert np.all(np.isfinite(a)), f"{what} has non-finite entries: {a}"


def close(out, ref, dtype, factor=1.0, scale=None):
    """``out`` (of any dtype) equals the float64 reference ``ref``: same shape, finite,
    within ``factor * tol(dtype) * scale`` (``scale`` defaults to ``max(1, max|ref|)``)."""
    out = np.asarray(jnp.asarray(out).astype(wide(jnp.asarray(out).dtype)))
    ref = np.asarray(ref)
    assert out.shape == ref.shape, f"shape {out.shape}, expected {ref.shape}"
    assert np.all(np.isfinite(out)), f"non-finite result {out}"
    if scale is None:
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    np.testing.assert_allclose(out, ref, rtol=0, atol=factor * tol(dtype) * scale)


def raises(fn, name, exc=(ValueError, TypeError)):
    """``fn()`` raises ValueError / TypeError whose message names ``name``."""
    with pytest.raises(exc, match=re.escape(name)):
        fn()


def same_dtype(obj, dtype):
    """Every array leaf of ``obj`` has ``dtype``."""
    for leaf in jax.tree.leaves(obj):
        assert jnp.asarray(leaf).dtype == jnp.dtype(dtype), (jnp.asarray(leaf).dtype, dtype)


# --------------------------------------------------------------------- strategies

seeds = st.integers(0, 2**16)


def dims_st(min_size=1, max_size=4, max_n=4):
    return st.lists(st.integers(1, max_n), min_size=min_size, max_size=max_size).map(tuple)


def key(seed):
    return jax.random.PRNGKey(seed)
