"""Shared helpers of the format tests: keys, a scale-aware closeness check against
the dense reference, running a function eagerly or under jit, and numpy-drawn TTs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tnlib import tt

F64 = jnp.float64
TOL = 1e-10
# Parametrize with MODES: the compiled pass runs in `make test`; the eager pass (the same
# checks, op by op: several times slower) runs with the slow set in `make test-all`.
# Eager execution stays covered by default elsewhere (the README tour, the layer tests).
MODES = [pytest.param("eager", marks=pytest.mark.slow), "jit"]


def key(i=0):
    return jax.random.PRNGKey(i)


def rand(shape, seed=0, dtype=F64):
    """Gaussian entries drawn by numpy (jax.random compiles a sampler for every shape);
    complex dtypes get unit-variance complex entries."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = (x + 1j * rng.standard_normal(shape)) / np.sqrt(2)
    return jnp.asarray(x, dtype)


def close(a, b, tol=TOL):
    """``a`` equals the reference ``b`` to ``tol`` relative to ``max(1, max|b|)``."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


def run(mode, f, *args):
    """``f(*args)`` eagerly (``mode="eager"``) or through ``jax.jit`` (``"jit"``)."""
    return f(*args) if mode == "eager" else jax.jit(f)(*args)


def np_tt(dims, rank, seed, dtype=F64, col_dims=None):
    """A TT (or TT-matrix) with ``tt.random``'s shapes and scaling, drawn by numpy
    (complex dtypes get independent real and imaginary parts): eager ``jax.random``
    compiles a sampler for every core shape (``tt.random`` itself is tested in
    test_tt.py)."""
    shapes = jax.eval_shape(lambda k: tt.random(k, dims, rank, dtype, col_dims=col_dims), key(0))
    rng = np.random.default_rng(seed)
    cores = []
    for c in shapes.cores:
        x = rng.standard_normal(c.shape)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            x = (x + 1j * rng.standard_normal(c.shape)) / math.sqrt(2)
        std = 1.0 / math.sqrt(math.prod(c.shape[1:-1]) * math.sqrt(c.shape[0] * c.shape[-1]))
        cores.append(jnp.asarray(std * x, dtype))
    return type(shapes)(tuple(cores))
