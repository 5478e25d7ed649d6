"""The CPU fast paths of tnlib.tt (tnlib/_tt_sweeps.py) against the dense tensors and
against each other: dense chain ends and the short-chain unrolled sweep vs the long-chain
scan in inner / norm / log_norm, the fused TT-matrix x TT product vs the GEMM one, and
rounding's transposed SVD of wide unfoldings; float64 and complex128 under jit, vmap
and grad, bfloat16 / float32 long chains finite."""

import jax
import jax.numpy as jnp
import numpy as np
from dense_checks import F64, close, key, np_tt
from jax.test_util import check_grads

from tnlib import _tt_sweeps, tt

C128 = jnp.complex128


def test_split_bounds():
    for dims, ranks in [((2,), (1, 1)), ((2, 2), (1, 2, 1)), ((2,) * 8, (1,) + (8,) * 7 + (1,)),
                        ((1,) * 20, (1,) + (3,) * 19 + (1,)), ((4, 2, 3), (1, 2, 5, 1))]:
        kl, kr = _tt_sweeps.split(dims, ranks)
        assert 1 <= kl <= _tt_sweeps.DENSE_END_MAX and 0 <= kr <= _tt_sweeps.DENSE_END_MAX
        assert kl + kr <= len(dims)
    assert _tt_sweeps.split((2,) * 8, (1,) + (8,) * 7 + (1,)) == (3, 3)


# chains covering: one site, all-dense (no middle), dense ends and a middle, size-1 modes,
# non-uniform ranks (all-dense, no middle: (1, 2, 1, 3))
SHORT = [((3,), 1), ((2,) * 8, 4), ((1, 2, 1, 3), 2), ((3, 2, 4, 2), (2, 5, 3))]


def dense(t):
    """The dense tensor of a TT in NumPy (no compilation)."""
    out = np.ones((1, 1), complex)
    for c in t.cores:
        c = np.asarray(c)
        c = c if np.iscomplexobj(c) else c.astype(np.float64)  # bfloat16 too
        out = (out @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
    return out.reshape(t.dims)


def test_inner_norm_short_chains_match_dense():
    pairs = [(np_tt(d, r, 2 * i, C128), np_tt(d, r, 2 * i + 1, C128))
             for i, (d, r) in enumerate(SHORT)]
    got = jax.jit(lambda ps: [(tt.inner(a, b), tt.log_norm(a)) for a, b in ps])(pairs)
    for (a, b), (ip, lnorm) in zip(pairs, got, strict=True):
        A, B = dense(a), dense(b)
        close(ip, np.vdot(A, B))
        close(lnorm, np.log(np.linalg.norm(A)))


def test_scan_matches_unrolled_sweep(monkeypatch):
    # with the threshold lowered, this uniform chain takes the scan; the same cores through
    # the site-by-site sweep (and through inner, which has no scan) agree, gradients too
    monkeypatch.setattr(_tt_sweeps, "SCAN_MIN_SITES", 4)
    a = np_tt((2,) * 6, 3, 5)

    @jax.jit
    def run(t):
        scan = jax.value_and_grad(tt.log_norm)(t)
        unrolled = jax.value_and_grad(lambda s: _tt_sweeps.log_norm(s.cores, None))(t)
        return scan, unrolled, 0.5 * jnp.log(tt.inner(t, t))

    (v1, g1), (v2, g2), v3 = run(a)
    close(v1, v2)
    close(v1, v3)
    close(v1, np.log(np.linalg.norm(dense(a))))
    for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        close(x, y)


def test_low_precision_chains_stay_finite():
    # cores scaled by 30: the squared norm overflows float32 after ~13 sites unless rescaled;
    # 20 sites take the site-by-site sweep, 100 the scan
    for L in (20, _tt_sweeps.SCAN_MIN_SITES + 36):
        t = np_tt((2,) * L, 3, L)
        for dtype in (jnp.float32, jnp.bfloat16):
            low = tt.TensorTrain(tuple((30.0 * c).astype(dtype) for c in t.cores))
            ref = tt.log_norm(tt.TensorTrain(tuple(c.astype(F64) for c in low.cores)))
            got = jax.jit(tt.log_norm)(low)
            assert got.dtype == jnp.float32 and np.isfinite(float(got))
            np.testing.assert_allclose(float(got), float(ref), rtol=1e-4)


def test_norm_inner_vmap_and_grads():
    batch = jax.vmap(lambda k: tt.random(k, (2, 3, 2), 3, F64))(jax.random.split(key(8), 3))
    dense_b = jax.vmap(tt.to_dense)(batch).reshape(3, -1)
    norms, inners = jax.jit(jax.vmap(lambda t: (tt.norm(t), tt.inner(t, t))))(batch)
    close(norms, np.linalg.norm(dense_b, axis=1))
    close(inners, np.sum(dense_b**2, axis=1))
    a = np_tt((2, 3, 2), 2, 9, C128)
    b = np_tt((2, 3, 2), 2, 10, C128)
    check_grads(jax.jit(lambda x, y: tt.norm(x) + jnp.real(tt.inner(x, y))), (a, b), order=1,
                modes=("rev",))
    zero = tt.scale(a, 0.0)
    g = jax.jit(jax.grad(lambda t: jnp.tanh(tt.log_norm(t))))(zero)  # -inf, zero derivative
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))


def test_matmul_paths_match_dense():
    # contracted mode sizes 2 (the fused multiply-add) and MATMUL_FUSED_MAX + 1 (the GEMM)
    n = _tt_sweeps.MATMUL_FUSED_MAX + 1
    w = np_tt((2, 3, 2), 2, 11, C128, col_dims=(3, 2, n))
    x = np_tt((3, 2, n), 3, 12)  # mixed dtypes: complex result
    xs = jax.vmap(lambda k: tt.random(k, (3, 2, n), 2, F64))(jax.random.split(key(13), 2))
    wr = tt.TTMatrix(tuple(jnp.real(c) for c in w.cores))
    low = (tt.TTMatrix(tuple(c.astype(jnp.bfloat16) for c in wr.cores)),
           tt.TensorTrain(tuple(c.astype(jnp.bfloat16) for c in x.cores)))

    @jax.jit
    def run(w, x, xs, low):
        return (tt.to_dense(tt.matmul(w, x)), jax.vmap(lambda t: tt.to_dense(tt.matmul(w, t)))(xs),
                tt.matmul(*low))

    got, got_b, low_out = run(w, x, xs, low)
    W = np.asarray(tt.to_dense(w))
    close(got.ravel(), W @ dense(x).ravel())
    for i in range(2):
        close(got_b[i].ravel(), W @ dense(tt.TensorTrain(tuple(c[i] for c in xs.cores))).ravel())
    assert got.dtype == C128 and low_out.dtype == jnp.bfloat16
    ref = np.asarray(tt.to_dense(wr)) @ dense(x).ravel()
    close(dense(low_out).ravel(), ref, tol=0.05)


def test_round_wide_unfoldings_complex():
    # bonds above the unfolding sizes make the right-to-left SVDs wide (transposed path)
    t = np_tt((2, 3, 2), 6, 15, C128)
    doubled = tt.add(t, t)
    r = jax.jit(lambda s: tt.round(s, max_rank=6))(doubled)
    close(tt.to_dense(r), 2 * tt.to_dense(t))
    for c in r.cores[1:]:  # right-orthogonal cores
        m = c.reshape(c.shape[0], -1)
        close(m @ jnp.conj(m).T, jnp.eye(c.shape[0]))
