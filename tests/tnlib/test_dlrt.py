"""tnlib.dlrt: the factors against the dense matrix they stand for (float64, jit, vmap,
check_grads), one integrator step against a numpy transcription of the paper's
algorithm, the truncation rule against a brute-force count, and the rank-adaptive
integrator recovering a planted rank from above and from below under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dense_checks import close
from jax.test_util import check_grads

from tnlib import dlrt


def rng(seed):
    return np.random.default_rng(seed)


def regression(seed=0, n=30, m=40, true_rank=5, samples=400):
    """``y = W x + b`` with ``W`` of rank ``true_rank``."""
    g = rng(seed)
    w = g.standard_normal((n, true_rank)) @ g.standard_normal((true_rank, m)) / np.sqrt(m)
    b = g.standard_normal(n)
    x = g.standard_normal((samples, m))
    return jnp.asarray(w), jnp.asarray(b), jnp.asarray(x), jnp.asarray(x @ w.T + b)


def test_factors_match_the_dense_matrix_jit_vmap_and_grads():
    f = dlrt.random(jax.random.PRNGKey(0), (12, 10), 3, max_rank=5, dtype=jnp.float64)
    w = np.asarray(dlrt.to_dense(f))
    assert f.u.shape == (12, 5) and f.s.shape == (5, 5) and f.v.shape == (10, 5)
    assert int(f.rank) == 3 and np.linalg.matrix_rank(w) == 3
    # padding beyond the active rank is zero
    assert not np.any(np.asarray(f.u[:, 3:])) and not np.any(np.asarray(f.s[3:]))
    x = jnp.asarray(rng(1).standard_normal((7, 10)))
    close(jax.jit(dlrt.apply)(f, x), np.asarray(x) @ w.T)
    close(jax.vmap(dlrt.apply, (None, 0))(f, x), np.asarray(x) @ w.T)
    check_grads(jax.jit(lambda u, s, v: dlrt.apply(dlrt.USV(u, s, v, f.rank), x)),
                (np.asarray(f.u), np.asarray(f.s), np.asarray(f.v)), order=1,
                modes=("rev",))
    assert int(dlrt.active_params(f)) == 3 * (12 + 10)


def test_from_dense_is_the_truncated_svd():
    a = rng(2).standard_normal((9, 8))
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    f = dlrt.from_dense(jnp.asarray(a), max_rank=4, rank=2)
    close(dlrt.to_dense(f), (u[:, :2] * s[:2]) @ vh[:2])
    # rtol: the smallest rank whose discarded tail is within rtol ||a||
    tol = 0.5
    want = next(k for k in range(1, 9) if np.sqrt(np.sum(s[k:] ** 2)) <= tol * np.linalg.norm(s))
    assert int(dlrt.from_dense(jnp.asarray(a), max_rank=4, rtol=tol).rank) == min(want, 4)


@pytest.mark.parametrize("seed", range(4))
def test_truncation_keeps_the_smallest_count_within_the_tolerance(seed):
    g = rng(seed)
    s = g.standard_normal((8, 8)) * np.exp(-np.arange(8))[None, :]
    sig = np.linalg.svd(s, compute_uv=False)
    for rtol in (0.0, 0.01, 0.1, 0.3, 0.9):
        tails = [np.sqrt(np.sum(sig[k:] ** 2)) for k in range(9)]
        want = next(k for k in range(9) if tails[k] <= rtol * np.linalg.norm(sig))
        for lo, hi in ((1, 8), (2, 5)):
            p, got_sig, q, k = jax.jit(dlrt.truncate, static_argnames=("max_rank",
                                       "min_rank"))(jnp.asarray(s), rtol, max_rank=hi,
                                                    min_rank=lo)
            assert int(k) == min(max(want, lo), hi), (rtol, lo, hi)
            close((np.asarray(p) * np.asarray(got_sig)) @ np.asarray(q).T, s)


def numpy_step(u, s, v, b, x, y, lr, rtol, r):
    """The paper's algorithm (SGD integrator), written with dense numpy gradients."""
    def grad_w(w, b):  # loss = mean_i ||w x_i + b - y_i||^2
        res = x @ w.T + b - y
        return 2 * res.T @ x / len(x), 2 * res.mean(0)

    u, s, v = u[:, :r], s[:r, :r], v[:, :r]
    g, _ = grad_w(u @ s @ v.T, b)
    k1 = u @ s - lr * g @ v
    l1 = v @ s.T - lr * g.T @ u
    uh = np.linalg.qr(np.concatenate([k1, u], 1))[0]
    vh = np.linalg.qr(np.concatenate([l1, v], 1))[0]
    st = (uh.T @ u) @ s @ (v.T @ vh)
    g2, gb = grad_w(uh @ st @ vh.T, b)
    st = st - lr * uh.T @ g2 @ vh
    p, sig, qh = np.linalg.svd(st)
    tails = [np.sqrt(np.sum(sig[k:] ** 2)) for k in range(len(sig) + 1)]
    k = next(k for k in range(len(tails)) if tails[k] <= rtol * np.linalg.norm(sig))
    return (uh @ p[:, :k]) * sig[:k] @ (vh @ qh.T[:, :k]).T, b - lr * gb, k


@pytest.mark.parametrize("rtol", [0.0, 0.05, 0.3])
def test_one_step_equals_the_papers_algorithm_in_numpy(rtol):
    _, _, x, y = regression(3, n=12, m=14, samples=50)
    f = dlrt.random(jax.random.PRNGKey(4), (12, 14), 3, max_rank=6, dtype=jnp.float64)
    b = jnp.zeros(12)
    params = {"w": f, "b": b}
    lr = 0.05
    opt = optax.sgd(lr)
    loss = lambda p: jnp.mean(jnp.sum((dlrt.apply(p["w"], x) + p["b"] - y) ** 2, -1))
    new, _, info = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=rtol))(
        params, dlrt.init(params, opt))
    w_ref, b_ref, k = numpy_step(*(np.asarray(a) for a in (f.u, f.s, f.v, b, x, y)), lr,
                                 rtol, 3)
    assert int(info["ranks"][0]) == min(k, 6) and int(new["w"].rank) == min(k, 6)
    close(dlrt.to_dense(new["w"]), w_ref, 1e-9)
    close(new["b"], b_ref, 1e-12)


def test_fixed_rank_step_equals_the_unconventional_integrator_in_numpy():
    """``rtol=None``: K- and L-steps, ``U1 = qr(K)``, ``V1 = qr(L)``, ``S`` carried into
    the new bases and stepped there, the rank unchanged (the paper's second phase)."""
    _, _, x, y = regression(3, n=12, m=14, samples=50)
    f = dlrt.random(jax.random.PRNGKey(4), (12, 14), 3, max_rank=6, dtype=jnp.float64)
    params = {"w": f, "b": jnp.zeros(12)}
    lr = 0.05
    opt = optax.sgd(lr)
    loss = lambda p: jnp.mean(jnp.sum((dlrt.apply(p["w"], x) + p["b"] - y) ** 2, -1))
    new, _, info = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=None))(
        params, dlrt.init(params, opt))
    u, s, v = (np.asarray(a)[..., :3] for a in (f.u, f.s, f.v))
    s = s[:3]
    xn, yn = np.asarray(x), np.asarray(y)

    def grad_w(w):
        return 2 * (xn @ w.T - yn).T @ xn / len(xn)

    g = grad_w(u @ s @ v.T)
    u1 = np.linalg.qr(u @ s - lr * g @ v)[0]
    v1 = np.linalg.qr(v @ s.T - lr * g.T @ u)[0]
    s1 = (u1.T @ u) @ s @ (v.T @ v1)
    s1 = s1 - lr * u1.T @ grad_w(u1 @ s1 @ v1.T) @ v1
    assert int(info["ranks"][0]) == 3 and int(new["w"].rank) == 3
    close(dlrt.to_dense(new["w"]), u1 @ s1 @ v1.T, 1e-9)
    w = new["w"]  # orthonormal on the active block, zero beyond it
    eye = np.diag((np.arange(6) < 3).astype(float))
    close(w.u.T @ w.u, eye, 1e-12)
    close(w.v.T @ w.v, eye, 1e-12)


def test_fixed_rank_training_keeps_the_rank_and_fits_at_that_rank():
    w, b, x, y = regression()
    params = {"w": dlrt.random(jax.random.PRNGKey(1), w.shape, 5, max_rank=8,
                               dtype=jnp.float64), "b": jnp.zeros(w.shape[0])}
    opt = optax.sgd(0.02)
    loss = lambda p: jnp.mean(jnp.sum((dlrt.apply(p["w"], x) + p["b"] - y) ** 2, -1))
    step = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=None))
    state = dlrt.init(params, opt)
    first = float(loss(params))
    for _ in range(400):
        params, state, info = step(params, state)
        assert int(info["ranks"][0]) == 5
    rel = np.linalg.norm(dlrt.to_dense(params["w"]) - w) / np.linalg.norm(w)
    assert float(loss(params)) < 1e-3 * first and rel < 2e-2, (float(loss(params)), rel)


def test_tucker_fixed_rank_step_keeps_ranks_and_lowers_the_loss():
    t = dlrt.random_tucker(jax.random.PRNGKey(0), (8, 9, 10), (2, 3, 2), max_ranks=(4, 4, 4),
                           dtype=jnp.float64)
    true = dlrt.random_tucker(jax.random.PRNGKey(7), (8, 9, 10), (2, 3, 2), dtype=jnp.float64)
    target = dlrt.tucker_to_dense(true)
    loss = lambda p: jnp.sum((dlrt.tucker_to_dense(p["t"]) - target) ** 2)
    opt = optax.adam(0.05)
    params = {"t": t}
    state = dlrt.init(params, opt)
    step = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=None))
    first = float(loss(params))
    for _ in range(300):
        params, state, info = step(params, state)
        assert tuple(int(r) for r in info["ranks"][0]) == (2, 3, 2)
    for i, r in enumerate((2, 3, 2)):
        u = np.asarray(params["t"].factors[i])
        close(u.T @ u, np.diag((np.arange(4) < r).astype(float)), 1e-10)
    assert float(loss(params)) < 1e-2 * first, (first, float(loss(params)))


@pytest.mark.parametrize("start", [10, 2])
def test_finds_the_planted_rank_from_above_and_below_under_jit(start):
    w, b, x, y = regression()
    params = {"w": dlrt.random(jax.random.PRNGKey(1), w.shape, start, max_rank=12,
                               dtype=jnp.float64), "b": jnp.zeros(w.shape[0])}
    opt = optax.sgd(0.02)
    loss = lambda p: jnp.mean(jnp.sum((dlrt.apply(p["w"], x) + p["b"] - y) ** 2, -1))
    step = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=0.01))
    state = dlrt.init(params, opt)
    ranks = []
    for i in range(300):
        params, state, info = step(params, state)
        ranks.append(int(info["ranks"][0]))
        if i % 50 == 0:  # the bases stay orthonormal on the active block, zero beyond it
            f, r = params["w"], ranks[-1]
            eye = np.diag((np.arange(12) < r).astype(float))
            close(f.u.T @ f.u, eye, 1e-10)
            close(f.v.T @ f.v, eye, 1e-10)
    assert ranks[-1] == 5 and ranks[-50:] == [5] * 50, ranks[::10]
    assert (max(ranks) > start) if start < 5 else (min(ranks) < start)
    rel = np.linalg.norm(dlrt.to_dense(params["w"]) - w) / np.linalg.norm(w)
    assert rel < 1e-2, rel
    close(params["b"], b, 1e-2)


def test_shrink_keeps_the_matrix_and_bad_arguments_are_errors():
    f = dlrt.random(jax.random.PRNGKey(0), (20, 16), 3, max_rank=8, dtype=jnp.float64)
    for width in (3, 5, 8):
        g = dlrt.shrink(f, width)
        assert g.max_rank == width
        close(dlrt.to_dense(g), dlrt.to_dense(f))
    with pytest.raises(ValueError, match="max_rank=9 is too large"):
        dlrt.random(jax.random.PRNGKey(0), (20, 16), 3, max_rank=9)
    with pytest.raises(ValueError, match="rank=4 is above max_rank=3"):
        dlrt.random(jax.random.PRNGKey(0), (20, 16), 4, max_rank=3)
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        dlrt.random(jax.random.PRNGKey(0), (20, 16), 0)
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="no dlrt.USV"):
        dlrt.init({"b": jnp.zeros(3)}, opt)
    with pytest.raises(ValueError, match="rtol must be None"):
        dlrt.step(lambda p: 0.0, {"w": f}, dlrt.init({"w": f}, opt), opt, rtol=1.5)


# ---------------------------------------------------------------------------- Tucker


def unfold(x, i):
    return np.moveaxis(x, i, 0).reshape(x.shape[i], -1)


def mode_mul(x, m, i):
    return np.moveaxis(np.tensordot(m, x, axes=(1, i)), 0, i)


def numpy_tucker_step(core, factors, target, lr, rtol, max_rank):
    """Rank-adaptive Tucker BUG written out with dense numpy gradients of
    ``||W - target||^2`` (SGD), active blocks only, ranks capped at ``max_rank``."""
    def dense(c, fs):
        for i, u in enumerate(fs):
            c = mode_mul(c, u, i)
        return c

    d = core.ndim
    g = 2 * (dense(core, factors) - target)
    bases = []
    for i, u in enumerate(factors):
        q, rf = np.linalg.qr(unfold(core, i).T)
        k = u @ rf.T
        z = np.moveaxis(q.T.reshape((core.shape[i],) + tuple(np.delete(core.shape, i))), 0, i)
        for j, uj in enumerate(factors):
            if j != i:
                z = mode_mul(z, uj, j)
        k = k - lr * unfold(g, i) @ unfold(z, i).T
        bases.append(np.linalg.qr(np.concatenate([k, u], 1))[0])
    c = core
    for i, (uh, u) in enumerate(zip(bases, factors, strict=True)):
        c = mode_mul(c, uh.T @ u, i)
    g2 = 2 * (dense(c, bases) - target)
    for i, uh in enumerate(bases):
        g2 = mode_mul(g2, uh.T, i)
    c = c - lr * g2
    tol = rtol * np.linalg.norm(c) / np.sqrt(d)
    ranks, ps = [], []
    for i in range(d):
        p, sig, _ = np.linalg.svd(unfold(c, i), full_matrices=False)
        tails = [np.sqrt(np.sum(sig[k:] ** 2)) for k in range(len(sig) + 1)]
        r = min(max_rank, next(k for k in range(len(tails)) if tails[k] <= tol))
        ranks.append(r)
        ps.append(p[:, :r])
    for i, (uh, p) in enumerate(zip(bases, ps, strict=True)):
        c = mode_mul(c, uh @ p @ p.T, i)
    return c, tuple(ranks)


@pytest.mark.parametrize("rtol", [0.0, 0.05, 0.3])
def test_tucker_step_equals_the_rank_adaptive_bug_in_numpy(rtol):
    t = dlrt.random_tucker(jax.random.PRNGKey(0), (8, 9, 10), (2, 3, 2), max_ranks=(4, 4, 4),
                           dtype=jnp.float64)
    target = jnp.asarray(rng(1).standard_normal((8, 9, 10)))
    loss = lambda p: jnp.sum((dlrt.tucker_to_dense(p["t"]) - target) ** 2)
    opt = optax.sgd(0.05)
    params = {"t": t}
    new, _, info = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=rtol))(
        params, dlrt.init(params, opt))
    core = np.asarray(t.core)[:2, :3, :2]
    factors = [np.asarray(u)[:, :r] for u, r in zip(t.factors, (2, 3, 2), strict=True)]
    want, ranks = numpy_tucker_step(core, factors, np.asarray(target), 0.05, rtol, 4)
    got = tuple(int(r) for r in info["ranks"][0])
    assert got == ranks, (got, ranks)
    close(dlrt.tucker_to_dense(new["t"]), want, 1e-9)
    # the padded tnlib.tucker view is the same tensor
    from tnlib import tucker
    close(tucker.to_dense(dlrt.as_tucker(new["t"])), want, 1e-9)


@pytest.mark.parametrize("start", [(4, 4, 4), (1, 1, 1)])
def test_tucker_finds_the_planted_multilinear_ranks_under_jit(start):
    true = dlrt.random_tucker(jax.random.PRNGKey(5), (10, 12, 10), (2, 3, 2), dtype=jnp.float64)
    x = dlrt.tucker_to_dense(true)
    x = 10 * x / jnp.linalg.norm(x)
    params = {"t": dlrt.random_tucker(jax.random.PRNGKey(1), (10, 12, 10), start,
                                      max_ranks=(4, 4, 4), dtype=jnp.float64)}
    opt = optax.sgd(0.1)
    loss = lambda p: jnp.sum((dlrt.tucker_to_dense(p["t"]) - x) ** 2)
    step = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=0.01))
    state = dlrt.init(params, opt)
    for _ in range(100):
        params, state, info = step(params, state)
    assert tuple(int(r) for r in info["ranks"][0]) == (2, 3, 2)
    close(dlrt.tucker_to_dense(params["t"]), x, 1e-8)
    for u, r in zip(params["t"].factors, (2, 3, 2), strict=True):  # orthonormal active block
        close(u.T @ u, np.diag((np.arange(4) < r).astype(float)), 1e-10)


def test_tucker_bad_ranks_are_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"max_ranks\[0\]=5 is too large for mode size 8"):
        dlrt.random_tucker(key, (8, 9, 10), (2, 2, 2), max_ranks=(5, 4, 4))
    with pytest.raises(ValueError, match="exceeds the product of the others"):
        dlrt.random_tucker(key, (8, 9, 10), (1, 1, 3), max_ranks=(1, 1, 3))
    with pytest.raises(ValueError, match="one entry per mode"):
        dlrt.random_tucker(key, (8, 9, 10), (2, 2))


def test_tucker_to_dense_under_vmap_and_grad():
    ts = [dlrt.random_tucker(jax.random.PRNGKey(k), (6, 7, 6), (2, 2, 3), max_ranks=(3, 3, 3),
                             dtype=jnp.float64) for k in range(3)]
    batch = jax.tree.map(lambda *a: jnp.stack(a), *ts)
    dense = jax.vmap(dlrt.tucker_to_dense)(batch)
    for k, t in enumerate(ts):
        close(dense[k], dlrt.tucker_to_dense(t))
    t = ts[0]
    check_grads(jax.jit(lambda c, f0, f1, f2: dlrt.tucker_to_dense(
        dlrt.TuckerFactors(c, (f0, f1, f2), t.ranks))),
        (np.asarray(t.core), *(np.asarray(f) for f in t.factors)), order=1, modes=("rev",))
