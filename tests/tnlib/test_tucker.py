"""tnlib.tucker against the dense tensors it represents: float64, eager / jit / vmap,
eval_shape, check_grads, HOSVD/HOOI error bounds, and tensorly's HOOI as a peer."""

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
from tensorly.decomposition import tucker as tl_tucker

from tnlib import tucker


def gaussian(dims, seed, dtype=F64):
    # numpy's generator: jax.random would compile a kernel for every new shape
    return jnp.asarray(np.random.default_rng(seed).standard_normal(tuple(dims)), dtype)


def err(t, x):
    return float(jnp.linalg.norm((tucker.to_dense(t) - x).ravel()))


def max_ranks(dims):
    total = math.prod(dims)
    return tuple(min(n, total // n) for n in dims)


def dense_of(t):
    """Reference reconstruction by one einsum (independent of tucker.to_dense)."""
    letters = "abcdefgh"[: t.n_modes]
    upper = letters.upper()
    spec = letters + "," + ",".join(u + c for u, c in zip(upper, letters, strict=True))
    return jnp.einsum(spec + "->" + upper, t.core, *t.factors)


# Hypothesis: small tensors of 1-4 modes with random sizes, plus per-mode rank fractions
# mapped into [1, largest allowed rank].
tensors = st.tuples(
    st.lists(st.integers(1, 5), min_size=1, max_size=4),
    st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
    st.integers(0, 2**16),
)


def ranks_from(dims, fracs):
    return tuple(max(1, math.ceil(f * m)) for f, m in zip(fracs, max_ranks(dims), strict=False))


# Most tests share these shapes, so eager op caches and jit caches are reused.
D, R = (3, 4, 5), (2, 3, 2)
CUBE = (3, 3, 3)


def planted_plus_noise(dims, ranks, seed, noise=0.3):
    """Multilinear rank ``ranks`` (unit expected norm) plus Gaussian noise of norm ~noise."""
    rng = np.random.default_rng(seed)
    ranks = (ranks,) * len(dims) if isinstance(ranks, int) else ranks
    x = rng.standard_normal(ranks) / math.sqrt(math.prod(ranks))
    for k, (n, r) in enumerate(zip(dims, ranks, strict=True)):
        q = np.linalg.qr(rng.standard_normal((n, r)))[0]
        x = np.moveaxis(np.tensordot(q, x, axes=(1, k)), 0, k)
    return jnp.asarray(x + noise * rng.standard_normal(dims) / math.sqrt(math.prod(dims)))


# ------------------------------------------------------------------- construction


def test_random_shapes_orthonormal_factors_and_unit_expected_norm():
    t = tucker.random(key(0), D, R, F64)
    assert t.dims == D and t.ranks == R and t.core.shape == R
    for f in t.factors:
        close(f.T @ f, jnp.eye(f.shape[1]))
    close(tucker.to_dense(t), dense_of(t))
    assert tucker.num_params(t) == 2 * 3 * 2 + 3 * 2 + 4 * 3 + 5 * 2
    # E||t||^2 = 1 is checked on a vmapped batch in test_operations_under_vmap_over_a_batch


@settings(max_examples=4)
@given(tensors)
def test_hosvd_exact_roundtrip_at_full_rank(args):
    dims, _, seed = args
    x = gaussian(dims, seed)
    t = tucker.hosvd(x)
    assert t.ranks == max_ranks(dims)
    close(tucker.to_dense(t), x)
    close(tucker.to_dense(tucker.from_dense(x)), x)


@settings(max_examples=4)
@given(tensors)
def test_hosvd_error_within_discarded_multilinear_singular_values(args):
    dims, fracs, seed = args
    x = gaussian(dims, seed)
    ranks = ranks_from(dims, fracs)
    svals = tucker.multilinear_singular_values(x)
    for k, s in enumerate(svals):  # the spectra of the unfoldings, as numpy computes them
        unfold = np.moveaxis(np.asarray(x), k, 0).reshape(dims[k], -1)
        close(s, np.linalg.svd(unfold, compute_uv=False))
    tails = [float(jnp.sum(s[r:] ** 2)) for s, r in zip(svals, ranks, strict=True)]
    t = tucker.hosvd(x, ranks)
    assert t.ranks == ranks
    for f in t.factors:
        close(f.T @ f, jnp.eye(f.shape[1]))
    e2 = err(t, x) ** 2
    # at most the sum of the discarded tails, at least the largest one (best per mode)
    assert max(tails) - 1e-10 <= e2 <= sum(tails) + 1e-10


def test_hosvd_and_hooi_under_jit_match_eager():
    x = gaussian(D, 0)
    t = jax.jit(tucker.hosvd)(x)
    assert t.ranks == max_ranks(D) == D and t.dims == D
    close(tucker.to_dense(t), x)
    f = jax.jit(lambda x: tucker.hooi(x, (2, 3, 2), n_iter=5))
    h = f(x)
    assert h.ranks == (2, 3, 2)
    eager = tucker.hooi(x, (2, 3, 2), n_iter=5)
    close(tucker.to_dense(h), tucker.to_dense(eager), 1e-9)
    assert err(h, x) <= err(tucker.hosvd(x, (2, 3, 2)), x) + 1e-12
    xs = jnp.stack([x, gaussian(D, 1)])
    batch = jax.vmap(f)(xs)
    assert batch.ranks == (2, 3, 2) and batch.core.shape == (2, 2, 3, 2)
    close(tucker.to_dense(jax.tree.map(lambda a: a[0], batch)), tucker.to_dense(h), 1e-9)


@pytest.mark.parametrize("rtol", [0.0, 0.05, 0.3, 0.7])
def test_hosvd_rtol_bound(rtol):
    x = gaussian(D, 0)
    t = tucker.hosvd(x, rtol=rtol)
    assert err(t, x) <= rtol * float(jnp.linalg.norm(x.ravel())) + 1e-10
    assert all(r <= m for r, m in zip(t.ranks, max_ranks(D), strict=True))
    if rtol == 0:
        assert t.ranks == max_ranks(D)
    assert tucker.from_dense(x, rtol=rtol).ranks == t.ranks


def test_rtol_recovers_planted_multilinear_ranks():
    x = tucker.to_dense(tucker.random(key(3), D, R, F64))
    t = tucker.hosvd(x, rtol=1e-8)
    assert t.ranks == R
    close(tucker.to_dense(t), x, 1e-9)


def test_rtol_with_ranks_under_jit_only_zeroes():
    x = planted_plus_noise(CUBE, 2, 5)  # a small third singular value per mode
    nx = float(jnp.linalg.norm(x.ravel()))
    t = jax.jit(lambda x: tucker.hosvd(x, 3, rtol=0.5))(x)
    assert t.ranks == (3, 3, 3)  # static shapes
    assert err(t, x) <= 0.5 * nx + 1e-10
    assert int(jnp.sum(t.core == 0)) > 0  # some core slices were zeroed
    t2 = jax.jit(lambda x: tucker.from_dense(x, max_rank=2, rtol=0.5))(x)
    assert t2.ranks == (2, 2, 2)
    # each mode keeps min(2, tolerance rank): its error is the larger of the two tails
    tol2 = (0.5 * nx) ** 2 / 3
    tails = [float(jnp.sum(s[2:] ** 2)) for s in tucker.multilinear_singular_values(x)]
    assert err(t2, x) ** 2 <= sum(max(tail, tol2) for tail in tails) + 1e-10


def test_from_dense_caps_max_rank_and_ranks_is_exact():
    x = gaussian(D, 6)
    t = tucker.from_dense(x, max_rank=4)
    assert t.ranks == (3, 4, 4)  # capped at the unfolding's rank on mode 0
    close(tucker.to_dense(t), tucker.to_dense(tucker.hosvd(x, (3, 4, 4))))
    assert tucker.from_dense(x, rank=R).ranks == R
    assert tucker.from_dense(x, rank=2).ranks == (2, 2, 2)


# ------------------------------------------------------------------------- HOOI


HOOI_CASES = [((5, 6, 4), (2, 3, 2)), ((4, 4, 4, 3), (2, 2, 3, 2))]


def test_hooi_never_worse_than_hosvd_and_within_tensorly():
    n_iter = 10
    for i, (dims, ranks) in enumerate(HOOI_CASES):
        for x in (gaussian(dims, i), planted_plus_noise(dims, ranks, i)):
            e_hosvd = err(tucker.hosvd(x, ranks), x)
            t = tucker.hooi(x, ranks, n_iter=n_iter)
            e_hooi = err(t, x)
            assert t.ranks == ranks
            for f in t.factors:
                close(f.T @ f, jnp.eye(f.shape[1]))
            assert e_hooi <= e_hosvd * (1 + 1e-12)
            # more sweeps never hurt either
            assert err(tucker.hooi(x, ranks, n_iter=2 * n_iter), x) <= e_hooi * (1 + 1e-12)
            with tl.backend_context("numpy"):
                # tol=0: tensorly runs all n_iter sweeps, as we do
                core, factors = tl_tucker(np.asarray(x), rank=list(ranks), n_iter_max=n_iter,
                                          init="svd", tol=0)
                rec = tl.tucker_to_tensor((core, factors))
            e_tl = float(np.linalg.norm(rec - np.asarray(x)))
            assert e_hooi <= e_tl * 1.001


def test_hooi_rank_larger_than_product_of_other_ranks():
    # r_0 = 3 > r_1 * r_2 = 2: the projected unfolding has too few columns; the factor is
    # completed to an orthonormal basis and the error is still no worse than HOSVD's.
    x = gaussian(CUBE, 9)
    t = tucker.hooi(x, (3, 2, 1), n_iter=3)
    close(t.factors[0].T @ t.factors[0], jnp.eye(3))
    assert err(t, x) <= err(tucker.hosvd(x, (3, 2, 1)), x) * (1 + 1e-12)
    h0 = tucker.hooi(x, 2, n_iter=0)  # 0 sweeps: the HOSVD
    close(tucker.to_dense(h0), tucker.to_dense(tucker.hosvd(x, 2)))


# ---------------------------------------------------------------------- algebra


def pair(seed):
    """Two Tuckers of dims D with different ranks; b's factors are not orthonormal."""
    a = tucker.random(key(seed), D, R, F64)
    rb = (3, 2, 4)
    factors = tuple(gaussian((n, r), seed + 2 + k)
                    for k, (n, r) in enumerate(zip(D, rb, strict=True)))
    b = tucker.Tucker(gaussian(rb, seed + 1), factors)
    return a, b


def algebra(a, b, B, m):
    return dict(
        inner=tucker.inner(a, b), norm_a=tucker.norm(a), norm_b=tucker.norm(b),
        dense_mp=tucker.mode_product(B, m, 2), dense_mp_neg=tucker.mode_product(B, m, -1),
        tucker_mp=tucker.to_dense(tucker.mode_product(b, m, 2)),
        shrunk_norm=tucker.norm(tucker.mode_product(b, m[:2], 2)),
    )


@pytest.mark.parametrize("mode", MODES)
def test_inner_norm_mode_product_match_dense(mode):
    a, b = pair(0)
    A, B = tucker.to_dense(a), tucker.to_dense(b)
    close(B, dense_of(b))
    m = gaussian((6, 5), 3)
    out = run(mode, algebra, a, b, B, m)
    close(out["inner"], jnp.vdot(A, B))
    close(out["norm_a"], jnp.linalg.norm(A.ravel()))
    close(out["norm_b"], jnp.linalg.norm(B.ravel()))
    ref = jnp.einsum("ia,xya->xyi", m, B)
    close(out["dense_mp"], ref)
    close(out["dense_mp_neg"], ref)
    close(out["tucker_mp"], ref)
    # shrinking mode 2 to 2 < rank 4 still gives a valid Tucker
    close(out["shrunk_norm"], jnp.linalg.norm(ref[..., :2].ravel()))
    tb = tucker.mode_product(b, m, 2)
    assert isinstance(tb, tucker.Tucker) and tb.dims == (3, 4, 6) and tb.ranks == b.ranks


def test_complex_inner_conjugates_first_argument():
    def cgauss(shape, seed):
        return gaussian(shape, seed) + 1j * gaussian(shape, seed + 50)

    a = tucker.Tucker(cgauss(R, 0), tuple(cgauss((n, r), 1 + k) for k, (n, r) in
                                           enumerate(zip(D, R, strict=True))))
    b = tucker.Tucker(cgauss((2, 2, 3), 5), tuple(cgauss((n, r), 6 + k) for k, (n, r) in
                                                  enumerate(zip(D, (2, 2, 3), strict=True))))
    x = cgauss(CUBE, 9)
    out = jax.jit(lambda a, b, x: (tucker.inner(a, b), tucker.norm(b), tucker.to_dense(a),
                                   tucker.to_dense(b), tucker.to_dense(tucker.hosvd(x))))(a, b, x)
    A, B = dense_of(a), dense_of(b)
    close(out[0], jnp.sum(jnp.conj(A) * B))
    close(out[1], jnp.linalg.norm(B.ravel()))
    close(out[2], A)
    close(out[3], B)
    close(out[4], x)


def test_operations_under_vmap_over_a_batch():
    m = gaussian((2, 4), 8)

    @jax.jit  # one compilation for the whole batch test
    def batched(keys):
        many = jax.vmap(lambda k: tucker.random(k, D, R, F64))(keys)
        batch = jax.tree.map(lambda a: a[:4], many)
        rolled = jax.tree.map(lambda a: jnp.roll(a, 1, axis=0), batch)
        dense = jax.vmap(tucker.to_dense)(batch)
        return batch, dict(
            dense=dense, norm=jax.vmap(tucker.norm)(batch),
            inner=jax.vmap(tucker.inner)(batch, rolled),
            tucker_mp=jax.vmap(lambda t: tucker.to_dense(tucker.mode_product(t, m, 1)))(batch),
            dense_mp=jax.vmap(lambda x: tucker.mode_product(x, m, 1))(dense),
            refit=jax.vmap(lambda x: tucker.to_dense(tucker.hosvd(x, R)))(dense),
            sq_norms=jax.vmap(tucker.norm)(many) ** 2,
        )

    batch, out = batched(jax.random.split(key(7), 256))
    assert abs(float(jnp.mean(out["sq_norms"])) - 1.0) < 0.15  # E||t||^2 = 1 (std ~0.03)
    assert batch.dims == D and batch.ranks == R  # read from trailing axes
    assert batch.core.shape == (4, *R)
    assert tucker.num_params(batch) == 12 + 6 + 12 + 10
    dense = jnp.stack([dense_of(jax.tree.map(lambda a, i=i: a[i], batch)) for i in range(4)])
    close(out["dense"], dense)
    flat = dense.reshape(4, -1)
    close(out["norm"], jnp.linalg.norm(flat, axis=1))
    close(out["inner"], jnp.sum(flat * jnp.roll(flat, 1, 0), axis=1))
    ref = jnp.einsum("ib,zabc->zaic", m, dense)
    close(out["tucker_mp"], ref)
    close(out["dense_mp"], ref)
    close(out["refit"], dense, 1e-9)


def test_eval_shape_and_tree_map():
    t = jax.eval_shape(lambda k: tucker.random(k, D, R, F64), key(0))
    assert isinstance(t, tucker.Tucker) and t.dims == D and t.ranks == R
    x = jax.ShapeDtypeStruct((4, 5, 6), F64)
    out = jax.eval_shape(lambda x: tucker.hooi(x, (2, 2, 3), n_iter=2), x)
    assert out.ranks == (2, 2, 3) and out.core.shape == (2, 2, 3)
    assert jax.eval_shape(lambda x: tucker.from_dense(x, max_rank=5), x).ranks == (4, 5, 5)
    doubled = jax.tree.map(lambda c: 2 * c, tucker.random(key(1), (3, 4), 2, F64))
    assert isinstance(doubled, tucker.Tucker)


# -------------------------------------------------------------------- gradients


def test_check_grads():
    a, b = pair(10)
    x = gaussian(D, 11)
    m = gaussian((2, 4), 12)
    # through the SVDs: planted rank 2 + noise keeps the spectral gaps open
    y = 10 * planted_plus_noise(CUBE, 2, 13, noise=0.05)  # entries of order one

    @jax.jit  # every operation in one function: one compilation, not eager dispatch
    def ops(a, b, x, m, y):
        return (tucker.to_dense(b), tucker.inner(a, b), tucker.norm(b),
                tucker.to_dense(tucker.mode_product(b, m, 1)), tucker.mode_product(x, m, 1),
                tucker.multilinear_singular_values(x)[1],
                tucker.to_dense(tucker.hosvd(y, 2)), tucker.to_dense(tucker.hooi(y, 2, n_iter=2)))

    # check_jvp compares every output elementwise with finite differences
    check_grads(ops, (a, b, x, m, y), order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)


def test_gradients_finite_at_degenerate_spectra():
    # exact multilinear rank (1, 1, 1) truncated at (2, 2, 2): zero singular values
    x = planted_plus_noise(CUBE, 1, 13, noise=0.0)
    def sq_hosvd(x):
        return jnp.sum(tucker.to_dense(tucker.hosvd(x, 2)) ** 2)

    def sq_hooi(x):
        return jnp.sum(tucker.to_dense(tucker.hooi(x, 2, n_iter=2)) ** 2)

    for g in jax.jit(lambda x: (jax.grad(sq_hosvd)(x), jax.grad(sq_hooi)(x)))(x):
        assert np.all(np.isfinite(np.asarray(g)))
        close(g, 2 * x, 1e-8)  # the truncation is exact here, so d/dx ||x||^2 = 2x


# -------------------------------------------------------------------- bad input


def test_ranks_above_the_matricization_say_the_largest_allowed_value():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"rank\[0\] = 3 .*largest allowed value is 2"):
        tucker.hosvd(x, (3, 2, 2))
    with pytest.raises(ValueError, match=r"rank\[0\] = 4 .*largest allowed value is 2"):
        tucker.hooi(x, 4)
    with pytest.raises(ValueError, match=r"rank\[2\] = 2 .*largest allowed value is 1"):
        tucker.hooi(jnp.ones((3, 3, 1)), (3, 3, 2))
    with pytest.raises(ValueError, match=r"rank\[1\] = 4 .*largest allowed value is 3"):
        tucker.hosvd(jnp.ones((3, 4, 1)), (3, 4, 1))  # mode-1 unfolding is 4 x 3
    with pytest.raises(ValueError, match=r"largest allowed value is 1"):
        tucker.hosvd(jnp.ones((5,)), 2)  # a vector's unfolding is (5, 1)
    with pytest.raises(ValueError, match=r"largest allowed value is 3"):
        tucker.random(key(0), (3, 4, 5), (4, 2, 2))
    with pytest.raises(ValueError, match=r"rank\[1\] = 5 .*largest allowed value is 4"):
        tucker.from_dense(jnp.ones((4, 4, 4)), rank=(2, 5, 2))


def test_bad_arguments():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match="sequence of 3 ranks"):
        tucker.hosvd(x, (2, 2))
    with pytest.raises(ValueError, match="ints >= 1"):
        tucker.hosvd(x, (2, 0, 2))
    with pytest.raises(TypeError, match="rank must be a Python int"):
        tucker.hosvd(x, 2.5)
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        tucker.hosvd(x, rtol=-0.1)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        tucker.from_dense(x, max_rank=0)
    with pytest.raises(ValueError, match="not both"):
        tucker.from_dense(x, max_rank=2, rank=2)
    with pytest.raises(TypeError, match="static ranks"):
        jax.jit(lambda x: tucker.hosvd(x, rtol=0.1))(x)
    with pytest.raises(TypeError, match="static ranks"):
        jax.jit(lambda x: tucker.from_dense(x, rtol=0.1))(x)
    with pytest.raises(ValueError, match="n_iter"):
        tucker.hooi(x, 2, n_iter=-1)
    with pytest.raises(ValueError, match="x must have at least one axis"):
        tucker.hosvd(jnp.ones(()))
    with pytest.raises(ValueError, match="dims"):
        tucker.random(key(0), (2, 0), 1)


def test_shape_mismatches_name_the_argument():
    a = tucker.random(key(0), (3, 4, 5), 2, F64)
    with pytest.raises(ValueError, match="mode sizes differ"):
        tucker.inner(a, tucker.random(key(1), (3, 5, 4), 2, F64))
    with pytest.raises(ValueError, match=r"mode 1 does not match.*\(2, 3, 2\).*\(4, 2\)"):
        tucker.to_dense(tucker.Tucker(jnp.ones((2, 3, 2)), a.factors))
    with pytest.raises(ValueError, match="b: core has shape"):
        tucker.inner(a, tucker.Tucker(jnp.ones((2, 2)), a.factors))
    with pytest.raises(TypeError, match="t must be a Tucker"):
        tucker.norm(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"matrix must have shape \(m, 4\)"):
        tucker.mode_product(a, jnp.ones((2, 3)), 1)
    with pytest.raises(ValueError, match=r"matrix must have shape \(m, 5\)"):
        tucker.mode_product(jnp.ones((3, 4, 5)), jnp.ones((2, 4)), -1)
    with pytest.raises(ValueError, match="mode must be an int"):
        tucker.mode_product(a, jnp.ones((2, 3)), 3)


# ------------------------------- vector mode product, normalize, partial / masked HOOI,
# ------------------------------- non-negative Tucker (issue 24)


def make_tucker(dims, ranks, seed, dtype=F64):
    rng = np.random.default_rng(seed)
    return tucker.Tucker(jnp.asarray(rng.standard_normal(ranks), dtype),
                         tuple(jnp.asarray(rng.standard_normal((n, r)), dtype)
                               for n, r in zip(dims, ranks, strict=True)))


def test_mode_product_ported_from_tensorly():
    # Ported from tensorly 0.10.0, tensorly/tests/test_tucker_tensor.py::test_tucker_mode_dot:
    # shape (5, 4, 6), rank (3, 2, 4), a (7, 4) matrix on mode 1 and a vector on mode 2
    # (RandomState(12345) uniform draws), compared with the dense mode product.
    from tensorly.tenalg import mode_dot

    rng = np.random.RandomState(12345)
    t = make_tucker((5, 4, 6), (3, 2, 4), 0)
    full = np.asarray(tucker.to_dense(t))
    matrix, vec = rng.random_sample((7, 4)), rng.random_sample(6)
    res = tucker.mode_product(t, jnp.asarray(matrix), 1)
    close(tucker.to_dense(res), mode_dot(full, matrix, mode=1))
    res = tucker.mode_product(t, jnp.asarray(vec), 2)
    assert isinstance(res, tucker.Tucker) and res.dims == (5, 4) and res.ranks == (3, 2)
    close(tucker.to_dense(res), mode_dot(full, vec, mode=2))
    close(tucker.mode_product(jnp.asarray(full), jnp.asarray(vec), 2), mode_dot(full, vec, 2))


@pytest.mark.parametrize("mode", MODES)
def test_vector_mode_product_jit_vmap_grads(mode):
    t = make_tucker((3, 4, 2), (2, 3, 2), 1, jnp.complex128)
    X = np.asarray(tucker.to_dense(t))
    v = gaussian((4,), 2) + 1j * gaussian((4,), 3)
    got = run(mode, lambda t, v: tucker.to_dense(tucker.mode_product(t, v, -2)), t, v)
    close(got, np.einsum("ajb,j->ab", X, np.asarray(v)))  # no conjugation
    close(run(mode, lambda x, v: tucker.mode_product(x, v, 1), jnp.asarray(X), v),
          np.einsum("ajb,j->ab", X, np.asarray(v)))
    one = make_tucker((4,), (2,), 4)
    close(run(mode, lambda t, v: tucker.mode_product(t, v, 0), one, gaussian((4,), 5)),
          np.asarray(tucker.to_dense(one)) @ np.asarray(gaussian((4,), 5)))
    batch = jax.tree.map(lambda *a: jnp.stack(a), make_tucker((3, 4), (2, 2), 6),
                         make_tucker((3, 4), (2, 2), 7))
    vs = jnp.stack([gaussian((3,), 8), gaussian((3,), 9)])
    out = jax.vmap(lambda t, v: tucker.to_dense(tucker.mode_product(t, v, 0)))(batch, vs)
    for i in range(2):
        ti = jax.tree.map(lambda a, i=i: a[i], batch)
        close(out[i], np.asarray(vs[i]) @ np.asarray(tucker.to_dense(ti)))
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    r = make_tucker((3, 4, 2), (2, 2, 2), 10)
    check_grads(jax.jit(lambda t, v: tucker.to_dense(tucker.mode_product(t, v, 1))),
                (r, gaussian((4,), 11)), **kw)


@pytest.mark.parametrize("mode", MODES)
def test_normalize_ported_from_tensorly_and_matches_dense(mode):
    # tensorly/tests/test_tucker_tensor.py::test_tucker_normalize: shape (3, 4, 5), rank
    # (3, 2, 4) — unit factor columns and the same tensor.
    t = make_tucker((3, 4, 5), (3, 2, 4), 0)
    n = run(mode, tucker.normalize, t)
    for f in n.factors:
        close(jnp.linalg.norm(f, axis=0), jnp.ones(f.shape[1]))
    close(tucker.to_dense(n), dense_of(t))
    z = tucker.Tucker(t.core, (t.factors[0].at[:, 1].set(0.0),) + t.factors[1:])
    nz = run(mode, tucker.normalize, z)
    assert np.all(np.asarray(nz.core[1]) == 0) and np.all(np.isfinite(np.asarray(nz.factors[0])))
    close(tucker.to_dense(nz), dense_of(z))
    batch = jax.tree.map(lambda *a: jnp.stack(a), make_tucker((3, 2), (2, 2), 1),
                         make_tucker((3, 2), (2, 2), 2))
    close(jax.vmap(lambda t: tucker.to_dense(tucker.normalize(t)))(batch),
          jax.vmap(tucker.to_dense)(batch))
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    check_grads(jax.jit(lambda t: jax.tree.leaves(tucker.normalize(t))),
                (make_tucker((3, 2, 4), (2, 2, 3), 3),), **kw)


def test_partial_hooi_ported_from_tensorly():
    # tensorly/decomposition/tests/test_tucker.py::test_partial_tucker: a (3, 4, 3)
    # RandomState(1234) uniform tensor, modes [1, 2]: full ranks reconstruct it; ranks
    # [3, 1] give factors (4, 3), (3, 1) and a core of shape (3, 3, 1).
    x = jnp.asarray(np.random.RandomState(1234).random_sample((3, 4, 3)))
    core, factors = tucker.partial_hooi(x, [4, 3], [1, 2], n_iter=5)
    rec = tucker.mode_product(tucker.mode_product(core, factors[0], 1), factors[1], 2)
    close(rec, x, 1e-10)
    core, factors = tucker.partial_hooi(x, [3, 1], [1, 2], n_iter=10)
    assert core.shape == (3, 3, 1) and [f.shape for f in factors] == [(4, 3), (3, 1)]
    # the same fit as tensorly's partial_tucker (same start, same sweeps)
    from tensorly.decomposition import partial_tucker
    from tensorly.tenalg import multi_mode_dot

    with tl.backend_context("numpy"):
        (tcore, tfac), _ = partial_tucker(tl.tensor(np.asarray(x)), rank=[3, 1], modes=[1, 2],
                                          n_iter_max=10, tol=0)
        theirs = np.linalg.norm(multi_mode_dot(tcore, tfac, modes=[1, 2]) - np.asarray(x))
    ours = float(jnp.linalg.norm(
        tucker.mode_product(tucker.mode_product(core, factors[0], 1), factors[1], 2) - x))
    assert ours <= theirs * 1.001 + 1e-12


def test_partial_hooi_matches_hooi_on_all_modes_jit_and_vmap():
    x = gaussian((4, 5, 3), 3)
    core, factors = jax.jit(lambda x: tucker.partial_hooi(x, (2, 3, 2), range(3), 4))(x)
    ref = tucker.hooi(x, (2, 3, 2), 4)
    close(tucker.to_dense(tucker.Tucker(core, factors)), tucker.to_dense(ref), 1e-9)
    xs = jnp.stack([x, gaussian((4, 5, 3), 4)])
    cores, facs = jax.vmap(lambda x: tucker.partial_hooi(x, 2, [-1, 0], 3))(xs)
    for i in range(2):
        c1, f1 = tucker.partial_hooi(xs[i], 2, [2, 0], 3)
        close(cores[i], c1, 1e-9)  # orthonormal bases: equal up to rounding (same signs)
        assert cores[i].shape == (2, 5, 2) and facs[0][i].shape == (3, 2)


def test_masked_hooi_ported_from_tensorly():
    # tensorly/decomposition/tests/test_tucker.py::test_masked_tucker: an all-ones mask is
    # the unmasked fit; a rank-(1, 1, 1) (5, 5, 5) tensor with entry [0, 0, 0] replaced by
    # 1.0 and masked out is recovered to 1e-3.
    x = jnp.asarray(np.random.RandomState(1234).random_sample((3, 3, 3)))
    close(tucker.to_dense(tucker.hooi(x, 2, 10, mask=jnp.ones((3, 3, 3)))),
          tucker.to_dense(tucker.hooi(x, 2, 10)), 1e-8)
    rng = np.random.default_rng(1234)
    clean = np.einsum("i,j,k->ijk", *[rng.random(5) for _ in range(3)])
    corrupted, mask = clean.copy(), np.ones((5, 5, 5))
    corrupted[0, 0, 0], mask[0, 0, 0] = 1.0, 0.0
    fit = tucker.hooi(jnp.asarray(corrupted), 1, 30, mask=jnp.asarray(mask))
    assert float(jnp.linalg.norm(tucker.to_dense(fit) - clean)) < 1e-3


# (seed, dims, rank, fraction missing, sweeps); ours / tensorly's masked error measured
# 1.000, 1.000, 1.000 (the same EM-imputed HOOI; tensorly 0.10.0, numpy backend)
MASKED = [(0, (5, 6, 7), (2, 3, 2), 0.3, 10), (1, (6, 5, 4), 2, 0.5, 20),
          (2, (4, 5, 4, 3), 2, 0.2, 8)]


@pytest.mark.parametrize("seed,dims,rank,frac,n_iter", MASKED)
def test_masked_hooi_matches_tensorly(seed, dims, rank, frac, n_iter):
    # A planted Tucker tensor plus noise with entries missing at random; both get the
    # tensor with its missing entries set to 0 and the same mask, error on observed entries.
    rng = np.random.default_rng(seed)
    ranks = (rank,) * len(dims) if isinstance(rank, int) else rank
    planted = np.asarray(tucker.to_dense(make_tucker(dims, ranks, seed)))
    mask = (rng.random(dims) > frac).astype(float)
    x = (planted + 0.1 * rng.standard_normal(dims)) * mask
    fit = jax.jit(lambda x, m: tucker.hooi(x, rank, n_iter, mask=m))(jnp.asarray(x),
                                                                     jnp.asarray(mask))
    ours = float(np.linalg.norm(mask * (np.asarray(tucker.to_dense(fit)) - x))
                 / np.linalg.norm(x))
    with tl.backend_context("numpy"):
        ref = tl_tucker(tl.tensor(x), rank=list(ranks), n_iter_max=n_iter, tol=0,
                        mask=tl.tensor(mask))
        theirs = float(np.linalg.norm(mask * (tl.tucker_to_tensor(ref) - x)) / np.linalg.norm(x))
    assert ours <= theirs * 1.01, (ours, theirs)
    assert ours < 0.2  # the noise level, not the missing entries, sets the error


def nn_tucker_tensor(seed, dims, rank, noise=0.05):
    rng = np.random.default_rng(seed)
    ranks = (rank,) * len(dims) if isinstance(rank, int) else rank
    x = rng.random(ranks)
    for k, n in enumerate(dims):
        x = np.moveaxis(np.tensordot(rng.random((n, ranks[k])), x, axes=([1], [k])), 0, k)
    return x + noise * rng.random(dims)


def assert_nonneg(t):
    for leaf in jax.tree.leaves(t):
        assert np.all(np.asarray(leaf) >= 0)


# ours / tensorly measured: against non_negative_tucker (multiplicative updates) 0.966,
# 0.998, 0.978; against non_negative_tucker_hals 1.000 (the same algorithm)
NONNEG = [(0, (5, 6, 7), (2, 3, 2), 20), (1, (6, 5, 4), 2, 30), (2, (4, 5, 4, 3), 2, 15)]


@pytest.mark.parametrize("seed,dims,rank,n_iter", NONNEG)
def test_nonneg_hals_matches_or_beats_tensorly(seed, dims, rank, n_iter):
    from tensorly.decomposition import non_negative_tucker, non_negative_tucker_hals

    x = nn_tucker_tensor(seed, dims, rank)
    fit, errors = jax.jit(lambda x: tucker.nonneg_hals(x, rank, n_iter, return_errors=True))(
        jnp.asarray(x))
    assert_nonneg(fit)
    ours = err(fit, jnp.asarray(x)) / float(np.linalg.norm(x))
    close(errors[-1], ours, 1e-10)
    ranks = [rank] * len(dims) if isinstance(rank, int) else list(rank)
    with tl.backend_context("numpy"):
        for fn in (non_negative_tucker, non_negative_tucker_hals):
            ref = fn(tl.tensor(x), ranks, n_iter_max=n_iter, init="svd", tol=0)
            theirs = float(np.linalg.norm(tl.tucker_to_tensor(ref) - x) / np.linalg.norm(x))
            assert ours <= theirs * 1.01, (fn.__name__, ours, theirs)


@pytest.mark.slow  # ~14 s (make test-slow, which CI runs): HALS eager and vmapped
def test_nonneg_hals_ported_from_tensorly_vmap_and_bad_input():
    # tensorly/decomposition/tests/test_tucker.py::test_non_negative_tucker: a non-negative
    # Tucker tensor (3, 4, 3) of rank [3, 4, 3], 40 iterations: all >= 0, relative error and
    # max abs error < 1 (tensorly's tol_norm_2 = tol_max_abs = 10e-1); an int rank sizes
    # every mode.
    from tensorly.random import random_tucker

    with tl.backend_context("numpy"):
        core, factors = random_tucker((3, 4, 3), rank=[3, 4, 3], non_negative=True,
                                      random_state=0)
        x = jnp.asarray(tl.tucker_to_tensor((core, factors)))
    fit = tucker.nonneg_hals(x, [3, 4, 3], n_iter=40)
    assert_nonneg(fit)
    assert err(fit, x) / float(jnp.linalg.norm(x)) < 1.0
    assert float(jnp.max(jnp.abs(tucker.to_dense(fit) - x))) < 1.0
    small = tucker.nonneg_hals(x, 3, n_iter=2)
    assert small.core.shape == (3, 3, 3)
    assert [f.shape for f in small.factors] == [(3, 3), (4, 3), (3, 3)]
    xs = jnp.stack([x, 2 * x])
    batch = jax.vmap(lambda x: tucker.nonneg_hals(x, 2, 5))(xs)
    for i in range(2):
        close(tucker.to_dense(jax.tree.map(lambda a, i=i: a[i], batch)),
              tucker.to_dense(tucker.nonneg_hals(xs[i], 2, 5)), 1e-8)
    with pytest.raises(TypeError, match="x must be real"):
        tucker.nonneg_hals(x.astype(jnp.complex128), 2)
    with pytest.raises(ValueError, match="n_core_iter"):
        tucker.nonneg_hals(x, 2, n_core_iter=0)


def test_new_tucker_bad_input_names_the_argument():
    x = gaussian((3, 4, 5), 0)
    with pytest.raises(ValueError, match=r"matrix must have shape \(m, 4\) or \(4,\)"):
        tucker.mode_product(x, jnp.ones(3), 1)
    with pytest.raises(TypeError, match="t must be a Tucker|tn must be a Tucker"):
        tucker.normalize(x)
    with pytest.raises(ValueError, match="modes entries"):
        tucker.partial_hooi(x, 2, [3])
    with pytest.raises(ValueError, match="distinct"):
        tucker.partial_hooi(x, 2, [0, -3])
    with pytest.raises(ValueError, match="rank must be an int or a sequence of 2"):
        tucker.partial_hooi(x, [2, 2, 2], [0, 1])
    with pytest.raises(ValueError, match=r"rank\[1\] = 9 is larger"):
        tucker.partial_hooi(x, [2, 9], [0, 1])
    with pytest.raises(ValueError, match=r"mask must have the shape of x, \(3, 4, 5\)"):
        tucker.hooi(x, 2, mask=jnp.ones((3, 4)))
    with pytest.raises(ValueError, match=r"mask must have the shape of x"):
        tucker.partial_hooi(x, 2, [0], mask=jnp.ones(3))
