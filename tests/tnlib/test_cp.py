"""tnlib.cp against the dense tensors it represents (float64; eager / jit / vmap,
eval_shape, check_grads) and CP-ALS against tensorly's parafac on the same tensors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorly as tl
from dense_checks import F64, MODES, close, key, run
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from tensorly.decomposition import parafac

from tnlib import cp


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def make(dims, rank, seed, dtype=F64):
    """A CP with Gaussian entries drawn by numpy (cheaper than compiling jax.random)."""
    rng = np.random.default_rng(seed)
    draw = (lambda shape: rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) \
        if jnp.issubdtype(dtype, jnp.complexfloating) else rng.standard_normal
    return cp.CP(jnp.asarray(draw((rank,)), dtype),
                 tuple(jnp.asarray(draw((n, rank)), dtype) for n in dims))


def reference_dense(c):
    """``sum_r w_r a_r (x) b_r (x) ...`` with numpy's einsum (independent reference)."""
    letters = "ijklmn"[: c.n_modes]
    spec = "r," + ",".join(f"{m}r" for m in letters) + "->" + letters
    return np.einsum(spec, np.asarray(c.weights), *[np.asarray(f) for f in c.factors])


def parafac_error(x, rank, n_iter):
    """Relative error of tensorly's parafac (numpy backend, float64, SVD init, no early stop)."""
    xt = np.asarray(x, dtype=np.float64)
    with tl.backend_context("numpy"):
        ref = parafac(tl.tensor(xt), rank, n_iter_max=n_iter, init="svd", tol=0)
        return float(np.linalg.norm(tl.cp_to_tensor(ref) - xt) / np.linalg.norm(xt))


def rel_err(x, c):
    return float(jnp.linalg.norm(cp.to_dense(c) - x) / jnp.linalg.norm(x))


CASES = [((3, 4, 5), 3), ((2, 3, 2, 3), 2)]


# ------------------------------------------------------------------ dense agreement


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims,rank", CASES)
def test_operations_match_dense(mode, dims, rank):
    a, b = make(dims, rank, 0), make(dims, rank + 1, 1)
    assert a.dims == dims and a.rank == rank and a.n_modes == len(dims)
    A, B = reference_dense(a), reference_dense(b)
    close(run(mode, cp.to_dense, a), A)
    close(run(mode, cp.inner, a, b), np.vdot(A, B))
    close(run(mode, cp.norm, a), np.linalg.norm(A))
    assert cp.num_params(a) == rank + sum(n * rank for n in dims)


def test_inner_conjugates_first_argument():
    a = make((2, 3, 2), 2, 0, jnp.complex128)
    b = make((2, 3, 2), 3, 1, jnp.complex128)
    A, B = cp.to_dense(a), cp.to_dense(b)
    assert np.iscomplexobj(np.asarray(A))
    close(cp.inner(a, b), jnp.sum(jnp.conj(A) * B))
    close(cp.norm(a), jnp.linalg.norm(A))


def test_vmap_over_a_batch_of_cps_and_eval_shape():
    keys = jax.random.split(key(7), 4)
    batch = jax.jit(jax.vmap(lambda k: cp.random(k, (3, 2, 4), 2, F64)))(keys)
    assert batch.dims == (3, 2, 4) and batch.rank == 2  # read from trailing axes
    assert cp.num_params(batch) == 2 * (1 + 3 + 2 + 4)
    dense = jax.vmap(cp.to_dense)(batch)
    close(dense[2], reference_dense(jax.tree.map(lambda t: t[2], batch)))
    close(jax.vmap(cp.norm)(batch), jnp.linalg.norm(dense.reshape(4, -1), axis=1))
    close(jax.vmap(cp.inner)(batch, batch), jnp.sum(dense**2, axis=(1, 2, 3)))
    shaped = jax.eval_shape(lambda k: cp.random(k, (3, 4, 5), 2, F64), key(0))
    assert isinstance(shaped, cp.CP) and shaped.dims == (3, 4, 5) and shaped.rank == 2
    fitted = jax.eval_shape(lambda x: cp.als(x, 2, n_iter=3), jnp.zeros((3, 4, 5), F64))
    assert fitted.dims == (3, 4, 5) and fitted.rank == 2
    assert isinstance(jax.tree.map(lambda t: 2 * t, make((3, 4), 2, 0)), cp.CP)


def test_check_grads():
    a, b = make((3, 2, 4), 2, 0), make((3, 2, 4), 3, 1)
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    # jitted so the many small derivative programs compile once each (CPU budget)
    check_grads(jax.jit(cp.to_dense), (a,), **kw)
    check_grads(jax.jit(cp.inner), (a, b), **kw)
    check_grads(jax.jit(cp.norm), (a,), **kw)


# ------------------------------------------------------------------------------ ALS


def test_als_recovers_planted_rank_and_never_increases_the_error():
    dims, rank = (4, 5, 6), 3
    for seed, dtype in [(0, F64), (2, jnp.complex128)]:  # complex: conj in the normal eqs
        x = cp.to_dense(make(dims, rank, seed, dtype))
        fit, errors = cp.als(x, rank, n_iter=60, return_errors=True)
        assert fit.rank == rank and fit.dims == dims
        assert rel_err(x, fit) < 1e-6
        close(errors[-1], rel_err(x, fit), 1e-12)
        assert np.all(np.diff(np.asarray(errors)) <= 1e-12)
        # factor columns are unit vectors; the scale lives in the weights
        for f in fit.factors:
            close(jnp.linalg.norm(f, axis=0), jnp.ones(rank))


_ALS_JIT = jax.jit(lambda x: cp.als(x, 3, n_iter=10))


@settings(max_examples=4)
@given(st.integers(0, 2**16))
def test_als_under_jit_matches_or_beats_tensorly(seed):
    # Same initialization (leading left singular vectors) and sweep order as parafac:
    # the errors agree to rounding; the issue asks for ours <= theirs * 1.001.
    x = normal(seed, (4, 5, 6))
    ours = rel_err(x, _ALS_JIT(x))
    theirs = parafac_error(x, 3, 10)
    assert ours <= theirs * 1.001 + 1e-12


def test_als_matches_tensorly_on_four_modes_and_from_dense_is_als():
    x = normal(11, (3, 4, 3, 5))
    ours = rel_err(x, cp.from_dense(x, max_rank=3, n_iter=15))
    theirs = parafac_error(x, 3, 15)
    assert ours <= theirs * 1.001 + 1e-12


def test_als_under_vmap_equals_per_tensor_results():
    xs = jnp.stack([normal(s, (4, 5, 6)) for s in range(3)])
    batch = jax.vmap(lambda x: cp.als(x, 3, n_iter=10))(xs)
    for i in range(3):
        close(cp.to_dense(jax.tree.map(lambda t, i=i: t[i], batch)),
              cp.to_dense(_ALS_JIT(xs[i])), 1e-8)


def test_als_random_init_and_rank_above_mode_size():
    x = normal(5, (2, 3, 4))
    # rank 3 > n_0 = 2: the SVD start is padded with random columns; the Gram matrix of
    # mode 0 is singular and the pseudo-inverse keeps the updates finite.
    for k in (None, key(3)):
        fit, errors = cp.als(x, 3, n_iter=20, key=k, return_errors=True)
        errors = np.asarray(errors)
        assert np.all(np.isfinite(errors)) and np.all(np.diff(errors) <= 1e-10)
        assert errors[-1] < 1.0


# ------------------------------------------------------------------------ bad input


def test_bad_input_names_argument_and_expected_value():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"rank 13 is larger than 6, the largest allowed"):
        cp.als(x, 13)
    assert cp.rank_bound((2, 3, 4)) == 6
    with pytest.raises(ValueError, match="rank must be >= 1"):
        cp.als(x, 0)
    with pytest.raises(TypeError, match="rank must be a Python int"):
        cp.als(x, 2.0)
    with pytest.raises(ValueError, match="n_iter"):
        cp.als(x, 2, n_iter=0)
    with pytest.raises(ValueError, match="at least one axis"):
        cp.als(jnp.ones(()), 1)
    with pytest.raises(ValueError, match="dims"):
        cp.random(key(0), (2, 0), 2)
    bad = cp.CP(jnp.ones(2), (jnp.ones((2, 2)), jnp.ones((3, 3))))
    with pytest.raises(ValueError, match=r"factor 1 has shape \(3, 3\).*weights has shape \(2,\)"):
        cp.to_dense(bad)
    with pytest.raises(ValueError, match="2 axes"):
        cp.norm(cp.CP(jnp.ones(2), (jnp.ones((2, 2, 1)),)))
    with pytest.raises(ValueError, match="mode sizes differ"):
        cp.inner(make((2, 3), 2, 0), make((3, 2), 2, 0))
    with pytest.raises(TypeError, match="tnlib.cp.CP"):
        cp.norm(jnp.ones(3))
