"""The SVD routes of tnlib.linalg (``method="gram"``, ``randomized_svd``) against
``numpy.linalg.svd`` in float64, under jit / vmap / grad, and the ``svd=`` argument of
the decompositions (TT-SVD, TT rounding, HOSVD, HOOI) against the LAPACK route."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import rand
from jax.test_util import check_grads

from tnlib import cp, linalg, tt, tucker

F64 = jnp.float64
KW = dict(order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def low_rank(m, n, r, seed=0, decay=1.0):
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.standard_normal((m, r)))
    q2, _ = np.linalg.qr(rng.standard_normal((n, r)))
    s = decay ** np.arange(r) * np.linspace(3, 1, r)
    return jnp.asarray(q1 @ np.diag(s) @ q2.T)


def gauge_free(u, s, vh, k=2):
    """Functions of the factors that do not depend on their phases."""
    return s, (u[..., :, :k] * s[..., None, :k]) @ vh[..., :k, :]


@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (6, 6), (3, 4, 7)])
@pytest.mark.parametrize("dtype", [F64, jnp.complex128])
def test_gram_route_matches_numpy(shape, dtype):
    a = rand(shape, 1, dtype)
    ref_s = np.linalg.svd(np.asarray(a), compute_uv=False)
    k = min(shape[-2:])
    eye = np.broadcast_to(np.eye(k), shape[:-2] + (k, k))
    gram = lambda a: linalg.svd(a, method="gram")
    for f in (gram, jax.jit(gram)):
        u, s, vh = f(a)
        np.testing.assert_allclose(s, ref_s, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose((u * s[..., None, :].astype(u.dtype)) @ vh, a, atol=1e-11)
        np.testing.assert_allclose(jnp.swapaxes(u.conj(), -1, -2) @ u, eye, atol=1e-11)
        np.testing.assert_allclose(vh @ jnp.swapaxes(vh.conj(), -1, -2), eye, atol=1e-11)


@pytest.mark.parametrize("shape", [(4, 7), (7, 4), (5, 5)])
def test_gram_route_gradients(shape):
    a = rand(shape, 2)
    gram = lambda a: linalg.svd(a, method="gram")
    check_grads(jax.jit(lambda a: gauge_free(*gram(a))), (a,), **KW)
    # the same derivative as the LAPACK route's
    for out in (0, 1):
        def f(a, m, out=out):
            return jnp.sum(jnp.sin(gauge_free(*linalg.svd(a, method=m))[out]))

        g = [jax.jit(jax.grad(f), static_argnums=1)(a, m) for m in ("lapack", "gram")]
        np.testing.assert_allclose(g[0], g[1], atol=1e-10)


def test_gram_route_zeroes_what_it_cannot_resolve():
    a = low_rank(8, 12, 2, seed=3)  # rank 2: six singular values are rounding noise
    u, s, vh = linalg.svd(a, method="gram")
    np.testing.assert_array_equal(np.asarray(s[2:]), 0)
    np.testing.assert_array_equal(np.asarray(vh[2:]), 0)  # the long side's vectors
    np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-12)  # the short side's, complete
    np.testing.assert_allclose((u * s) @ vh, a, atol=1e-12)
    # the gradient of a gauge-invariant quantity stays finite and equals LAPACK's
    f = lambda a, m: jnp.sum(linalg.truncated_svd(a, 2, method=m)[1] ** 2)
    g = [jax.jit(jax.grad(f), static_argnums=1)(a, m) for m in ("lapack", "gram")]
    np.testing.assert_allclose(g[1], g[0], atol=1e-10)
    np.testing.assert_allclose(g[1], 2 * a, atol=1e-10)  # d||A||^2 = 2 A


def test_gram_route_under_vmap_and_low_precision():
    a = rand((3, 4, 6), 4)
    u, s, vh = jax.vmap(lambda m: linalg.svd(m, method="gram"))(a)
    np.testing.assert_allclose(s, np.linalg.svd(np.asarray(a), compute_uv=False), rtol=1e-10)
    b = a.astype(jnp.bfloat16)
    u, s, vh = linalg.svd(b, method="gram")
    assert u.dtype == s.dtype == vh.dtype == jnp.bfloat16


@pytest.mark.parametrize("shape", [(30, 12), (12, 30)])
def test_randomized_svd_exact_on_low_rank(shape):
    a = low_rank(*shape, 5, seed=5)
    u, s, vh = linalg.randomized_svd(a, 4, oversample=1, power_iters=0)
    np.testing.assert_allclose(s, np.linalg.svd(np.asarray(a), compute_uv=False)[:4], rtol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(vh @ vh.T, np.eye(4), atol=1e-12)
    # range found exactly, so the rank-4 truncation is the optimal one (Eckart-Young)
    ref = np.linalg.svd(np.asarray(a))
    best = (ref[0][:, :4] * ref[1][:4]) @ ref[2][:4]
    np.testing.assert_allclose((u * s) @ vh, best, atol=1e-11)


def test_randomized_svd_near_optimal_with_power_iterations():
    a = rand((60, 40), 6)  # a flat spectrum: the hard case for a range finder
    opt = np.linalg.norm(np.linalg.svd(np.asarray(a), compute_uv=False)[8:])
    errs = []
    for q in (0, 3):
        u, s, vh = linalg.randomized_svd(a, 8, power_iters=q)
        errs.append(float(jnp.linalg.norm(a - (u * s) @ vh)))
    assert errs[1] < errs[0]
    assert errs[1] <= 1.02 * opt, (errs, opt)


def test_randomized_svd_jit_vmap_grad():
    a = jnp.stack([low_rank(10, 7, 3, seed=s) for s in (7, 8)])
    ref = np.linalg.svd(np.asarray(a), compute_uv=False)[:, :3]
    f = jax.jit(jax.vmap(lambda m: linalg.randomized_svd(m, 3, oversample=2)[1]))
    np.testing.assert_allclose(f(a), ref, rtol=1e-10)
    # on a low-rank input the algorithm's singular values have the exact derivative
    g_r = jax.jit(jax.grad(lambda m: jnp.sum(linalg.randomized_svd(m, 2)[1])))(a[0])
    g_l = jax.jit(jax.grad(lambda m: jnp.sum(linalg.truncated_svd(m, 2)[1])))(a[0])
    np.testing.assert_allclose(g_r, g_l, atol=1e-10)


def test_svd_method_rules_and_errors():
    a64, a32 = rand((3, 4)), rand((3, 4), dtype=jnp.float32)
    assert linalg.svd_method("auto", a64) == "gram"
    assert linalg.svd_method("auto", a32) == "lapack"  # float32: sqrt(eps) = 3.5e-4
    assert linalg.svd_method("auto", a64, truncating=False) == "lapack"  # exact stays exact
    assert linalg.svd_method("auto", a64, rtol=1e-10) == "lapack"  # finer than gram resolves
    assert linalg.svd_method("auto", a64, rtol=1e-3) == "gram"
    assert linalg.svd_method("randomized", a32) == "randomized"

    with pytest.raises(ValueError, match="svd must be one of"):
        linalg.svd_method("eig", a64)
    with pytest.raises(ValueError, match="method must be one of"):
        linalg.svd(a64, method="randomized")
    with pytest.raises(ValueError, match="needs max_rank"):
        linalg.truncated_svd(a64, method="randomized")
    with pytest.raises(ValueError, match="rank must be at most"):
        linalg.randomized_svd(a64, 4)
    with pytest.raises(ValueError, match="power_iters"):
        linalg.randomized_svd(a64, 2, power_iters=-1)
    with pytest.raises(TypeError, match="only apply to method='randomized'"):
        linalg.truncated_svd(a64, 2, oversample=3)
    with pytest.raises(ValueError, match="needs max_rank"):
        tt.from_dense(rand((4, 4, 4)), rtol=0.1, svd="randomized")
    with pytest.raises(ValueError, match="needs rank"):
        tucker.hosvd(rand((4, 4, 4)), rtol=0.1, svd="randomized")


def _planted_tt(seed=10):
    x = tt.to_dense(tt.random(jax.random.key(seed), (4, 5, 6, 5), 3, F64))
    return x + 1e-3 * rand(x.shape, seed)


SLOW_RANDOMIZED = pytest.param("randomized", marks=pytest.mark.slow)  # compiles the most


@pytest.mark.parametrize("svd", ["gram", SLOW_RANDOMIZED])
def test_tt_svd_and_round_routes_agree_with_lapack(svd):
    x = _planted_tt()

    @jax.jit
    def both(x):  # one program: TT-SVD and rounding by LAPACK and by the route
        big = tt.from_dense(x, max_rank=8, svd="lapack")
        return [tt.to_dense(f(a, max_rank=3, svd=m)) for f, a in ((tt.from_dense, x),
                (tt.round, big)) for m in ("lapack", svd)]

    ref, got, ref_r, got_r = both(x)
    np.testing.assert_allclose(got, ref, atol=1e-9)
    np.testing.assert_allclose(got_r, ref_r, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("svd", ["gram", "randomized"])
def test_tt_svd_gradients_through_the_routes(svd):
    # the same derivative as LAPACK's on this well-separated spectrum
    x = _planted_tt()
    f = lambda x, m: jnp.sum(tt.to_dense(tt.from_dense(x, max_rank=3, svd=m)) ** 2)
    g = [jax.jit(jax.grad(f), static_argnums=1)(x, m) for m in ("lapack", svd)]
    np.testing.assert_allclose(g[1], g[0], atol=1e-8)


@pytest.mark.parametrize("svd", ["gram", SLOW_RANDOMIZED])
def test_hosvd_and_hooi_routes_agree_with_lapack(svd):
    core = tucker.random(jax.random.key(11), (6, 7, 8), (2, 3, 2), F64)
    x = tucker.to_dense(core) + 1e-3 * rand((6, 7, 8), 12)
    for fit in (lambda x, m: tucker.hosvd(x, (2, 3, 2), svd=m),
                lambda x, m: tucker.hooi(x, (2, 3, 2), 3, svd=m)):
        run = jax.jit(lambda x, fit=fit: (lambda t: (tucker.to_dense(t), t.factors))(fit(x, svd)))
        got, factors = run(x)
        ref = jax.jit(lambda x, fit=fit: tucker.to_dense(fit(x, "lapack")))(x)
        np.testing.assert_allclose(got, ref, atol=1e-9)
        for f in factors:  # the factors stay orthonormal
            np.testing.assert_allclose(f.T @ f, np.eye(f.shape[1]), atol=1e-12)


@pytest.mark.parametrize("masked", [False, True])
def test_cp_als_svd_init_routes_agree_with_lapack(masked):
    # a planted rank-3 tensor (its tall mode-0 unfolding, 13 x 12, stays on LAPACK): the
    # Gram route starts ALS from the same subspaces, so the fits agree
    keys = jax.random.split(jax.random.key(13), 3)
    fs = tuple(jnp.linalg.qr(jax.random.normal(k, (n, 3), F64))[0]
               for k, n in zip(keys, (13, 3, 4), strict=True))
    x = cp.to_dense(cp.CP(jnp.array([3.0, 2.0, 1.0], F64), fs)) + 1e-4 * rand((13, 3, 4), 14)
    mask = (rand((13, 3, 4), 15) > -1.5) if masked else None

    @jax.jit
    def both(x):
        return [cp.to_dense(cp.als(x, 3, 8, svd=m, mask=mask)) for m in ("lapack", "gram", "auto")]

    ref, gram, auto = both(x)
    np.testing.assert_allclose(gram, ref, atol=1e-8)
    np.testing.assert_allclose(auto, ref, atol=1e-8)
    assert np.linalg.norm(ref - x) < 1e-3 * np.linalg.norm(x)
    with pytest.raises(ValueError, match="svd must be one of"):
        cp.als(x, 3, svd="eig")


@pytest.mark.parametrize("shape", [(4, 9), (9, 4)])
@pytest.mark.parametrize("method", ["lapack", "gram", "randomized"])
def test_truncated_split_absorbs_the_values(shape, method):
    a = rand(shape, 13)
    u, s, svh = linalg.truncated_split(a, 3, method=method)
    ur, sr, vhr = np.linalg.svd(np.asarray(a), full_matrices=False)
    best = (ur[:, :3] * sr[:3]) @ vhr[:3]
    np.testing.assert_allclose(u @ svh, best, atol=1e-9 if method == "randomized" else 1e-11)
    np.testing.assert_allclose(s, sr[:3], rtol=1e-8 if method == "randomized" else 1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(3), atol=1e-12)
    if method == "gram":  # the split's derivative is the thin SVD's, sliced
        def f(a, m):
            u, _, svh = linalg.truncated_split(a, 3, method=m)
            return jnp.sum(jnp.sin(u @ svh))

        g = [jax.jit(jax.grad(f), static_argnums=1)(a, m) for m in ("lapack", method)]
        np.testing.assert_allclose(g[1], g[0], atol=1e-10)
    bad = a.at[0, 0].set(jnp.inf)
    assert np.isnan(np.asarray(linalg.truncated_split(bad, 3, method="gram")[2])).all()
