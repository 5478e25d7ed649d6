"""tnlib.tr against the dense tensors it represents (float64; eager / jit / vmap,
eval_shape, check_grads), TR-SVD against tensorly's tensor_ring, and TR-ALS."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorly as tl
from dense_checks import F64, MODES, close, key, run
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from tensorly.decomposition import tensor_ring

from tnlib import tr


def normal(seed, shape, dtype=F64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return jnp.asarray(x, dtype)


def make(dims, ranks, seed, dtype=F64):
    """A ring with Gaussian cores drawn by numpy (cheaper than compiling jax.random)."""
    L = len(dims)
    ranks = (ranks,) * L if isinstance(ranks, int) else tuple(ranks)
    return tr.TensorRing(tuple(
        normal(seed * 100 + k, (ranks[k], n, ranks[(k + 1) % L]), dtype)
        / math.sqrt(n * ranks[k])
        for k, n in enumerate(dims)
    ))


def reference_dense(t):
    """Entry by entry: ``trace(G_0[:, i_0, :] @ ... @ G_{L-1}[:, i_{L-1}, :])`` in numpy."""
    cores = [np.asarray(c) for c in t.cores]
    out = np.zeros(t.dims, dtype=np.result_type(*cores))
    for idx in np.ndindex(*t.dims):
        m = np.eye(cores[0].shape[0])
        for c, i in zip(cores, idx, strict=True):
            m = m @ c[:, i, :]
        out[idx] = np.trace(m)
    return out


def rel_err(x, t):
    return float(jnp.linalg.norm(tr.to_dense(t) - x) / jnp.linalg.norm(x))


# Closing ranks > 1 throughout (a ring, not a train); a one-site ring too.
CASES = [((3, 4, 2), (2, 3, 2)), ((2, 3, 2, 3), 2), ((4,), 3)]


# ------------------------------------------------------------------ dense agreement


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims,ranks", CASES)
def test_operations_match_dense(mode, dims, ranks):
    a, b = make(dims, ranks, 0), make(dims, 1 + int(np.max(ranks)), 1)
    assert a.dims == dims and a.n_sites == len(dims)
    assert a.ranks == ((ranks,) * len(dims) if isinstance(ranks, int) else ranks)
    A, B = reference_dense(a), reference_dense(b)
    close(run(mode, tr.to_dense, a), A)
    close(run(mode, tr.inner, a, b), np.vdot(A, B))
    close(run(mode, tr.norm, a), np.linalg.norm(A))
    assert tr.num_params(a) == sum(c.size for c in a.cores)


def test_inner_conjugates_first_argument():
    a, b = make((2, 3, 2), 2, 0, jnp.complex128), make((2, 3, 2), 3, 1, jnp.complex128)
    A, B = tr.to_dense(a), tr.to_dense(b)
    close(A, reference_dense(a))
    close(tr.inner(a, b), jnp.sum(jnp.conj(A) * B))
    close(tr.norm(a), jnp.linalg.norm(A))


def test_random_vmap_batch_and_eval_shape():
    keys = jax.random.split(key(7), 4)
    batch = jax.jit(jax.vmap(lambda k: tr.random(k, (3, 2, 4), (2, 3, 2), F64)))(keys)
    assert batch.dims == (3, 2, 4) and batch.ranks == (2, 3, 2)  # from trailing axes
    assert tr.num_params(batch) == 2 * 3 * 3 + 3 * 2 * 2 + 2 * 4 * 2
    dense = jax.vmap(tr.to_dense)(batch)
    close(dense[1], reference_dense(jax.tree.map(lambda c: c[1], batch)))
    close(jax.vmap(tr.norm)(batch), jnp.linalg.norm(dense.reshape(4, -1), axis=1))
    close(jax.vmap(tr.inner)(batch, batch), jnp.sum(dense**2, axis=(1, 2, 3)))
    shaped = jax.eval_shape(lambda k: tr.random(k, (3, 4, 5), 2, F64), key(0))
    assert isinstance(shaped, tr.TensorRing) and shaped.ranks == (2, 2, 2)
    x = jax.ShapeDtypeStruct((4, 5, 6), F64)
    assert jax.eval_shape(lambda x: tr.from_dense(x, max_rank=2), x).ranks == (2, 2, 2)
    assert jax.eval_shape(lambda x: tr.als(x, (1, 2, 3), n_iter=2), x).ranks == (1, 2, 3)
    assert isinstance(jax.tree.map(lambda c: 2 * c, make((3, 4), 2, 0)), tr.TensorRing)


def test_check_grads():
    a, b = make((3, 2, 4), (2, 3, 2), 0), make((3, 2, 4), 2, 1)
    # numpy leaves: check_grads perturbs the inputs with numpy arithmetic (on jax arrays
    # every perturbation would compile an eager add / subtract per core shape)
    a, b = jax.tree.map(np.asarray, (a, b))
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    # jitted so the many small derivative programs compile once each (CPU budget)
    check_grads(jax.jit(tr.to_dense), (a,), **kw)
    check_grads(jax.jit(tr.inner), (a, b), **kw)
    check_grads(jax.jit(tr.norm), (a,), **kw)
    x = np.asarray(normal(9, (3, 4, 3)))
    check_grads(jax.jit(lambda x: tr.to_dense(tr.from_dense(x, max_rank=2))), (x,),
                **dict(kw, modes=("rev",)))


# -------------------------------------------------------------------------- TR-SVD


@settings(max_examples=4)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.integers(0, 2**16))
def test_from_dense_exact_roundtrip_at_full_rank(dims, seed):
    x = normal(seed, tuple(dims))
    t = tr.from_dense(x)
    close(tr.to_dense(t), x)
    # the kept rank of the first unfolding splits as r_0 * r_1 with r_0 <= r_1
    r0, r1 = t.ranks[0], t.ranks[1 % len(dims)]
    if len(dims) > 1:
        assert r0 * r1 == min(dims[0], math.prod(dims[1:])) and r0 <= r1


def test_from_dense_roundtrip_under_jit_and_vmap():
    xs = jnp.stack([normal(s, (2, 4, 3)) for s in range(3)])
    f = jax.jit(lambda x: tr.to_dense(tr.from_dense(x)))
    close(f(xs[0]), xs[0])
    close(jax.vmap(lambda x: tr.to_dense(tr.from_dense(x)))(xs), xs)
    t = jax.jit(lambda x: tr.from_dense(x, max_rank=3, rtol=0.3))(xs[1])
    assert t.ranks == (1, 2, 3)  # static: from max_rank and the unfolding sizes
    assert rel_err(xs[1], t) <= 0.3 + 1e-12


def test_from_dense_recovers_planted_ring():
    planted = make((6, 5, 4, 3), (2, 3, 2, 2), 3)
    x = tr.to_dense(planted)
    r0, r = planted.ranks[0], max(planted.ranks)
    # the first split recovers (r_0, r_1) exactly; later bonds need up to r_k * r_0**2
    # (documented in from_dense), so a cap of r * r_0**2 reconstructs the ring exactly
    t = tr.from_dense(x, max_rank=r * r0**2)
    assert t.ranks[:2] == planted.ranks[:2]
    assert all(b <= r * r0**2 for b in t.ranks)
    close(tr.to_dense(t), x, 1e-9)
    small = tr.from_dense(x, rtol=1e-10)
    assert small.ranks[:2] == planted.ranks[:2]
    assert all(b <= pk * r0**2 for b, pk in zip(small.ranks, planted.ranks, strict=True))
    close(tr.to_dense(small), x, 1e-9)


@pytest.mark.parametrize("rtol", [1e-3, 0.2, 0.5])
def test_from_dense_rtol_bound(rtol):
    x = normal(4, (4, 3, 4, 3))
    t = tr.from_dense(x, rtol=rtol)
    assert rel_err(x, t) <= rtol + 1e-12


@pytest.mark.parametrize("dims,rank", [((9, 4, 5, 4), 3), ((4, 5, 6), 2)])
def test_from_dense_matches_tensorly_tensor_ring(dims, rank):
    # Same split (rank**2 <= n_0 gives r_0 = r_1 = rank) and the same SVD sign
    # convention (svd_flip), so the errors agree to rounding.
    x = normal(5, dims)
    t = tr.from_dense(x, max_rank=rank)
    assert t.ranks == (rank,) * len(dims)
    xt = np.asarray(x)
    with tl.backend_context("numpy"):
        ref = tensor_ring(tl.tensor(xt), rank=[rank] * (len(dims) + 1))
        theirs = float(np.linalg.norm(tl.tr_to_tensor(ref) - xt) / np.linalg.norm(xt))
    assert abs(rel_err(x, t) - theirs) <= 1e-12


# ------------------------------------------- TR-SVD: per-bond ranks, starting mode


@pytest.mark.parametrize("ranks,mode", [((3, 2, 4, 12, 18, 3), 0), ((12, 2, 1, 3, 6, 12), 1)])
def test_per_bond_ranks_and_mode_ported_from_tensorly(ranks, mode):
    # Ported from tensorly 0.10.0, tensorly/decomposition/tests/test_tr_svd.py
    # (test_tensor_ring, test_tensor_ring_mode): a ring of shape (6, 2, 3, 2, 6) with
    # these ranks (tensorly's L + 1 form, first = last) is recovered with exactly these
    # ranks, and rank (12, 2, 10, 3, 6, 12) from mode 1 is a ValueError (2 * 10 > 2).
    from tensorly.random import random_tr

    x = random_tr((6, 2, 3, 2, 6), ranks, full=True, random_state=1234)
    t = tr.from_dense(jnp.asarray(x), max_rank=list(ranks[:-1]), mode=mode)
    assert t.ranks == ranks[:-1] and t.dims == (6, 2, 3, 2, 6)
    np.testing.assert_array_almost_equal(tr.to_dense(t), x, decimal=2)  # tensorly's check
    close(tr.to_dense(t), x, 1e-9)
    with tl.backend_context("numpy"):
        ref = tensor_ring(tl.tensor(x), ranks, mode=mode)
        assert [f.shape for f in ref.factors] == [c.shape for c in t.cores]
    with pytest.raises(ValueError, match=r"max_rank\[1\] \* max_rank\[2\] = 20 .* largest "
                       r"allowed value is 2"):
        tr.from_dense(jnp.asarray(x), max_rank=(12, 2, 10, 3, 6), mode=1)


@pytest.mark.parametrize("mode", [0, 1, 2, -1])
def test_per_bond_truncation_from_each_mode_is_tensorlys_tensor_ring(mode):
    # A truncating case: the same unfoldings, splits and svd_flip signs as tensorly, so
    # the reconstructions agree to rounding (dense reference: tensorly's own TR).
    x = normal(8, (4, 5, 6, 3))
    ranks = [2, 2, 2, 1]  # r_m * r_{m+1} <= n_m from every starting mode
    t = tr.from_dense(x, max_rank=ranks, mode=mode)
    assert t.ranks == tuple(ranks)
    with tl.backend_context("numpy"):
        ref = tensor_ring(tl.tensor(np.asarray(x)), ranks + ranks[:1], mode=mode % 4)
        close(tr.to_dense(t), tl.tr_to_tensor(ref), 1e-10)


@pytest.mark.slow  # ~8 s (make test-slow, which CI runs): one compile per rank pattern
def test_per_bond_and_mode_under_jit_and_vmap():
    planted = make((3, 4, 6, 3), (2, 2, 3, 1), 3)
    x = tr.to_dense(planted)
    f = jax.jit(lambda x: tr.to_dense(tr.from_dense(x, max_rank=(6, 6, 3, 1), mode=2)))
    close(f(x), x, 1e-10)  # bonds large enough for this ring: exact
    eager = tr.from_dense(x, max_rank=(6, 6, 3, 1), mode=2)
    # r_0 is capped to what its unfolding allows (r_3 n_3 = 3 rows)
    assert eager.ranks == (3, 6, 3, 1)
    xs = jnp.stack([x, 2 * x, normal(1, x.shape)])
    batch = jax.vmap(lambda x: tr.from_dense(x, max_rank=[1, 2, 2, 2], mode=1))(xs)
    assert batch.ranks == (1, 2, 2, 2)
    for i in range(3):
        one = tr.from_dense(xs[i], max_rank=[1, 2, 2, 2], mode=1)
        close(tr.to_dense(jax.tree.map(lambda c, i=i: c[i], batch)), tr.to_dense(one), 1e-10)
    # rtol only zeroes singular values when the ranks are given per bond
    z = tr.from_dense(x, max_rank=(6, 6, 3, 1), rtol=0.5, mode=2)
    assert z.ranks == eager.ranks and rel_err(x, z) <= 0.5 + 1e-12
    # an int cap from another mode: exact at full rank, the same ranks rotated
    close(tr.to_dense(tr.from_dense(x, mode=3)), x, 1e-10)


def test_per_bond_and_mode_bad_input():
    x = normal(0, (3, 4, 5))
    with pytest.raises(ValueError, match="max_rank must be an int or a sequence of 3"):
        tr.from_dense(x, max_rank=[2, 2])
    with pytest.raises(ValueError, match="max_rank entries must be ints >= 1"):
        tr.from_dense(x, max_rank=[2, 0, 2])
    with pytest.raises(ValueError, match=r"mode must be a Python int in \[-3, 2\]"):
        tr.from_dense(x, max_rank=2, mode=3)
    with pytest.raises(ValueError, match="mode must be"):
        tr.from_dense(x, mode=1.0)
    with pytest.raises(ValueError, match=r"max_rank\[2\] \* max_rank\[0\] = 12 .* largest "
                       r"allowed value is 5"):
        tr.from_dense(x, max_rank=[3, 1, 4], mode=2)


# ----------------------------------------------------------------------------- ALS


_ALS = jax.jit(lambda x: tr.als(x, 2, n_iter=12, return_errors=True))


@settings(max_examples=4)
@given(st.integers(0, 2**16))
def test_als_never_increases_the_error_under_jit(seed):
    x = normal(seed, (4, 5, 6))
    t, errors = _ALS(x)
    errors = np.asarray(errors)
    assert t.ranks == (2, 2, 2)
    assert np.all(np.diff(errors) <= 1e-10 * errors[:-1])
    close(errors[-1], rel_err(x, t), 1e-12)
    # it starts from TR-SVD at these ranks, and no sweep can make that worse
    assert errors[0] <= rel_err(x, tr.from_dense(x, max_rank=2)) + 1e-12


@pytest.mark.parametrize("init", ["svd", "random"])
def test_als_on_a_planted_ring_with_uneven_ranks(init):
    # svd: TR-SVD gives bonds (2, 2, .), so bond 1 is padded to 3 with small random
    # entries; random: Gaussian cores scaled to ||x||.
    planted = make((4, 3, 4), (2, 3, 2), 8)
    x = tr.to_dense(planted)
    t, errors = tr.als(x, (2, 3, 2), n_iter=25, key=None if init == "svd" else key(1),
                       return_errors=True)
    errors = np.asarray(errors)
    assert t.ranks == (2, 3, 2)
    assert np.all(np.diff(errors) <= 1e-10 * errors[:-1])
    # TR-ALS on planted rings is slow (swamps; tensorly's tensor_ring_als is no faster)
    assert errors[-1] < 0.5 * errors[0]


# ------------------------------------------------------------------------ bad input


def test_mismatched_bonds_name_sites_and_shapes():
    bad = tr.TensorRing((jnp.ones((2, 2, 3)), jnp.ones((4, 2, 2))))
    with pytest.raises(ValueError, match=r"site 0 and site 1.*\(2, 2, 3\).*\(4, 2, 2\)"):
        tr.to_dense(bad)
    closing = tr.TensorRing((jnp.ones((2, 2, 3)), jnp.ones((3, 2, 5))))
    with pytest.raises(ValueError, match=r"site 1 and site 0 \(the closing bond.*\(3, 2, 5\)"):
        tr.norm(closing)
    with pytest.raises(ValueError, match="3 axes"):
        tr.inner(tr.TensorRing((jnp.ones((1, 2)),)), make((2,), 1, 0))
    with pytest.raises(ValueError, match="mode sizes differ"):
        tr.inner(make((2, 3), 2, 0), make((3, 2), 2, 0))
    with pytest.raises(TypeError, match="TensorRing"):
        tr.norm(jnp.ones(3))


def test_bad_rank_arguments():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"ranks\[1\] \* ranks\[2\] = 12 at core 1 is larger "
                                         r"than 8, the largest allowed value"):
        tr.als(x, (1, 3, 4))
    with pytest.raises(ValueError, match="sequence of 3 ring ranks"):
        tr.als(x, (2, 2))
    with pytest.raises(ValueError, match="n_iter"):
        tr.als(x, 1, n_iter=0)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        tr.from_dense(x, max_rank=0)
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        tr.from_dense(x, rtol=-1.0)
    with pytest.raises(TypeError, match="static max_rank"):
        jax.jit(lambda x: tr.from_dense(x, rtol=0.1))(x)
    with pytest.raises(ValueError, match="rank"):
        tr.random(key(0), (2, 3, 4), (2, 2))
    with pytest.raises(ValueError, match="dims"):
        tr.random(key(0), (2, 0), 2)
