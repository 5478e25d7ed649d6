"""tnlib.tt against the dense tensors it represents: float64 / complex128, eager / jit /
vmap, eval_shape, check_grads, and tensornetwork's ncon as a second reference; and the
CPU fast paths (tnlib/_tt_sweeps.py) against the dense tensors and each other: dense
chain ends and the short-chain unrolled sweep vs the long-chain scan in inner / norm /
log_norm, the fused TT-matrix x TT product vs the GEMM one, rounding's transposed SVD
of wide unfoldings, bfloat16 / float32 long chains finite.

The dtype matrix (bfloat16 ... complex128 over random shapes) and the bad-input sweep
are the property tests of tests/properties/test_prop_tt.py."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensornetwork as tn
from dense_checks import F64, MODES, close, key, np_tt, run
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from tnlib import _tt_sweeps, tt

C128 = jnp.complex128

# Hypothesis: small chains with random mode sizes and ranks (ranks may exceed what the
# unfoldings allow; those are valid, redundant TTs).
chains = st.tuples(
    st.lists(st.integers(1, 4), min_size=1, max_size=5),
    st.integers(1, 4),
    st.integers(0, 2**16),
)


make = np_tt  # numpy-drawn TTs with tt.random's shapes and scaling


def gauss(seed, shape):
    """A float64 Gaussian array drawn by numpy (see ``make``)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(tuple(shape)), F64)


def ncon_dense(t):
    """Dense tensor of a TT through tensornetwork's ncon (second reference)."""
    L = t.n_sites
    cores = [np.asarray(c) for c in t.cores]
    cores[0] = cores[0][0]  # drop the boundary bonds of size 1
    cores[-1] = cores[-1][..., 0]
    if L == 1:
        return cores[0]
    nets = [[-1, 1]] + [[k, -(k + 1), k + 1] for k in range(1, L - 1)] + [[L - 1, -L]]
    return tn.ncon(cores, nets)


# ------------------------------------------------------------------- construction


@settings(max_examples=4)
@given(chains)
def test_random_dense_matches_ncon_and_shapes(args):
    dims, rank, seed = args
    t = tt.random(key(seed), dims, rank, F64)
    assert t.dims == tuple(dims)
    assert t.ranks[0] == t.ranks[-1] == 1
    close(tt.to_dense(t), ncon_dense(t))


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=4)
@given(chains)
def test_from_dense_exact_roundtrip(mode, args):
    dims, _, seed = args
    x = gauss(seed, tuple(dims))
    out = run(mode, lambda x: tt.to_dense(tt.from_dense(x)), x)
    close(out, x)


@settings(max_examples=4)
@given(chains)
def test_from_dense_recovers_planted_rank(args):
    dims, rank, seed = args
    x = tt.to_dense(make(dims, rank, seed))
    f = tt.from_dense(x, max_rank=rank)
    assert max(f.ranks) <= rank
    close(tt.to_dense(f), x, 1e-9)


@settings(max_examples=4)
@given(chains, st.sampled_from([0.0, 1e-3, 0.1, 0.3, 0.7]))
def test_from_dense_rtol_bound(args, rtol):
    dims, _, seed = args
    x = gauss(seed, tuple(dims))
    f = tt.from_dense(x, rtol=rtol)
    err = jnp.linalg.norm(tt.to_dense(f) - x) / jnp.linalg.norm(x)
    assert float(err) <= rtol + 1e-12


def test_from_dense_rtol_shrinks_ranks_and_is_minimal_on_low_rank():
    x = tt.to_dense(make((4, 5, 6, 3), 2, 1))
    f = tt.from_dense(x, rtol=1e-8)
    assert f.ranks == (1, 2, 2, 2, 1)
    close(tt.to_dense(f), x, 1e-9)


def test_from_dense_rtol_and_max_rank_under_jit_zeroes_only():
    x = gauss(3, (4, 4, 4))
    f = jax.jit(lambda x: tt.from_dense(x, max_rank=4, rtol=0.5))(x)
    assert f.ranks == (1, 4, 4, 1)  # static shapes
    err = jnp.linalg.norm(tt.to_dense(f) - x) / jnp.linalg.norm(x)
    assert float(err) <= 0.5 + 1e-12


def test_ttmatrix_from_dense_roundtrip_and_matvec_matmul():
    m = gauss(1, (2 * 3 * 2, 3 * 2 * 4))
    ttm = tt.from_dense(m, row_dims=(2, 3, 2), col_dims=(3, 2, 4))
    assert isinstance(ttm, tt.TTMatrix) and ttm.shape == m.shape
    close(tt.to_dense(ttm), m)
    r = make((2, 3, 2), 3, 2, col_dims=(3, 2, 4))
    R = tt.to_dense(r)
    v = gauss(3, (24,))
    for mode in ("eager", "jit"):
        close(run(mode, tt.matvec, r, v), R @ v)
    vs = gauss(4, (5, 24))
    close(jax.vmap(tt.matvec, (None, 0))(r, vs), vs @ R.T)
    close(jax.jit(tt.matvec)(r, vs), vs @ R.T)  # leading batch axes, the batch in the GEMMs
    close(tt.matvec(r, vs.reshape(5, 1, 24)), (vs @ R.T).reshape(5, 1, 12))
    x = make((3, 2, 4), 2, 5)
    close(tt.to_dense(tt.matmul(r, x)).ravel(), R @ tt.to_dense(x).ravel())


# ---------------------------------------------------------------------- algebra


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=4)
@given(chains)
def test_algebra_matches_dense(mode, args):
    dims, rank, seed = args
    a, b = make(dims, rank, seed), make(dims, max(1, rank - 1), seed + 1)
    A, B = tt.to_dense(a), tt.to_dense(b)
    close(run(mode, tt.inner, a, b), jnp.vdot(A, B))
    close(run(mode, tt.norm, a), jnp.linalg.norm(A))
    close(run(mode, tt.log_norm, a), jnp.log(jnp.linalg.norm(A)))
    close(run(mode, lambda a, b: tt.to_dense(tt.add(a, b)), a, b), A + B)
    close(run(mode, lambda a: tt.to_dense(tt.scale(a, -2.5)), a), -2.5 * A)
    close(run(mode, lambda a, b: tt.to_dense(tt.hadamard(a, b)), a, b), A * B)


def test_operations_under_vmap_over_a_batch_of_trains():
    keys = jax.random.split(key(7), 4)
    batch = jax.vmap(lambda k: tt.random(k, (3, 2, 4), 2, F64))(keys)
    assert batch.dims == (3, 2, 4) and batch.ranks == (1, 2, 2, 1)  # read from trailing axes
    dense = jax.vmap(tt.to_dense)(batch)
    close(jax.vmap(tt.norm)(batch), jnp.linalg.norm(dense.reshape(4, -1), axis=1))
    close(jax.vmap(tt.inner)(batch, batch), jnp.sum(dense**2, axis=(1, 2, 3)))
    rounded = jax.vmap(lambda t: tt.to_dense(tt.round(tt.add(t, t), max_rank=2)))(batch)
    close(rounded, 2 * dense)
    feats = gauss(8, (4, 3, 4))  # non-uniform dims: list path
    vals = jax.vmap(lambda t, f: tt.contract_features(t, [f[0, :3], f[1, :2], f[2]]))(
        batch, feats)
    ref = jnp.einsum("zabc,za,zb,zc->z", dense, feats[:, 0, :3], feats[:, 1, :2], feats[:, 2])
    close(vals[0] * jnp.exp(vals[1]), ref)


def test_eval_shape_and_tree_map():
    t = jax.eval_shape(lambda k: tt.random(k, (3, 4, 5), 2, F64), key(0))
    assert isinstance(t, tt.TensorTrain) and t.dims == (3, 4, 5) and t.ranks == (1, 2, 2, 1)
    out = jax.eval_shape(lambda t: tt.round(t, max_rank=1), t)
    assert out.ranks == (1, 1, 1, 1)
    doubled = jax.tree.map(lambda c: 2 * c, make((3, 4), 2, 0))
    assert isinstance(doubled, tt.TensorTrain)


# --------------------------------------------------------------- canonical forms


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=4)
@given(chains)
def test_orthogonalize(mode, args):
    dims, rank, seed = args
    t = make(dims, rank, seed)
    L = len(dims)
    center = seed % L
    o = run(mode, lambda t: tt.orthogonalize(t, center), t)
    close(tt.to_dense(o), tt.to_dense(t))
    for k, c in enumerate(o.cores):
        if k < center:
            m = c.reshape(-1, c.shape[-1])
            close(m.T @ m, jnp.eye(m.shape[1]))
        elif k > center:
            m = c.reshape(c.shape[0], -1)
            close(m @ m.T, jnp.eye(m.shape[0]))


@pytest.mark.parametrize("mode", MODES)
def test_round_removes_redundancy_at_static_rank(mode):
    t = make((3, 4, 5, 2), 2, 0)
    doubled = tt.add(t, t)
    assert doubled.ranks == (1, 4, 4, 4, 1)
    r = run(mode, lambda s: tt.round(s, max_rank=2), doubled)
    assert r.ranks == (1, 2, 2, 2, 1)
    close(tt.to_dense(r), 2 * tt.to_dense(t))


@settings(max_examples=4)
@given(chains, st.sampled_from([1e-6, 0.05, 0.3]))
def test_round_rtol_bound(args, rtol):
    dims, rank, seed = args
    t = tt.add(make(dims, rank, seed), make(dims, rank, seed + 1))
    r = tt.round(t, rtol=rtol)
    err = jnp.linalg.norm(tt.to_dense(r) - tt.to_dense(t)) / jnp.linalg.norm(tt.to_dense(t))
    assert float(err) <= rtol + 1e-12
    assert all(a <= b for a, b in zip(r.ranks, t.ranks, strict=True))


def test_round_max_rank_is_quasi_optimal():
    # TT-rounding error is within sqrt(L-1) of the best error at that rank for each bond.
    x = gauss(2, (4, 4, 4, 4))
    full = tt.from_dense(x)
    r = tt.round(full, max_rank=3)
    err = float(jnp.linalg.norm(tt.to_dense(r) - x))
    best = 0.0
    for k in range(1, 4):
        s = jnp.linalg.svd(x.reshape(4**k, -1), compute_uv=False)
        best = max(best, float(jnp.sqrt(jnp.sum(s[3:] ** 2))))
    assert best <= err + 1e-12 <= math.sqrt(3) * best + 1e-9


# ------------------------------------------------------------- feature contraction


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims,rank", [((2,) * 6, 3), ((3, 3, 3, 3), 2), ((2, 3, 2), (2, 3))])
def test_contract_features_matches_dense_and_ncon(mode, dims, rank):
    t = make(dims, rank, 4)
    feats = [gauss(10 + k, (n,)) for k, n in enumerate(dims)]
    arg = jnp.stack(feats) if len(set(dims)) == 1 else feats
    mant, log_scale = run(mode, tt.contract_features, t, arg)
    dense = tt.to_dense(t)
    ref = dense
    for f in feats:
        ref = jnp.tensordot(f, ref, axes=(0, 0))
    close(mant * jnp.exp(log_scale), ref)
    nc = tn.ncon([np.asarray(dense)] + [np.asarray(f) for f in feats],
                 [list(range(1, len(dims) + 1))] + [[k + 1] for k in range(len(dims))])
    close(mant * jnp.exp(log_scale), nc)


# Long chains (1000 sites in float32 and bfloat16 against float64): see
# tests/properties/test_prop_grads_chains.py.


def test_stack_pads_boundaries_exactly():
    t = make((2, 2, 2, 2), 3, 0)
    s = tt.stack(t)
    assert s.shape == (4, 3, 2, 3)
    assert tt.stack(make((2, 3, 2), 2, 0)) is None  # non-uniform dims
    ones = jnp.ones((4, 2), F64)
    v, ls = tt.sweep_features(s, ones, jnp.eye(3, dtype=F64)[0])
    close(v[0] * jnp.exp(ls), jnp.sum(tt.to_dense(t)))


# -------------------------------------------------------------- CPU fast paths


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


def np_dense(t):
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
        A, B = np_dense(a), np_dense(b)
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
    close(v1, np.log(np.linalg.norm(np_dense(a))))
    chex.assert_trees_all_close(g1, g2, atol=1e-10, rtol=0)


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
    close(got.ravel(), W @ np_dense(x).ravel())
    for i in range(2):
        close(got_b[i].ravel(), W @ np_dense(tt.TensorTrain(tuple(c[i] for c in xs.cores))).ravel())
    assert got.dtype == C128 and low_out.dtype == jnp.bfloat16
    ref = np.asarray(tt.to_dense(wr)) @ np_dense(x).ravel()
    close(np_dense(low_out).ravel(), ref, tol=0.05)


def test_matmul_matrices_paths_match_dense():
    # TT-matrix x TT-matrix, contracted mode sizes 2 and 3 (fused) and 9 (GEMM); mixed
    # complex x real dtypes and bfloat16 (accumulated in float32)
    n = _tt_sweeps.MATMUL_FUSED_MAX + 1
    a = np_tt((2, 3, 2), 2, 16, C128, col_dims=(3, 2, n))
    b = np_tt((3, 2, n), 3, 17, F64, col_dims=(2, 2, 3))
    low = tuple(tt.TTMatrix(tuple(jnp.real(c).astype(jnp.bfloat16) for c in m.cores))
                for m in (a, b))
    got, low_out = jax.jit(lambda a, b, low: (tt.to_dense(tt.matmul(a, b)),
                                              tt.matmul(*low)))(a, b, low)
    A, B = np.asarray(tt.to_dense(a)), np.asarray(tt.to_dense(b))
    close(got, A @ B)
    assert got.dtype == C128 and low_out.dtype == jnp.bfloat16
    close(np.asarray(tt.to_dense(low_out), np.float64), np.real(A) @ B, tol=0.05)


def test_round_wide_unfoldings_complex():
    # bonds above the unfolding sizes make the right-to-left SVDs wide (transposed path)
    t = np_tt((2, 3, 2), 6, 15, C128)
    doubled = tt.add(t, t)
    r = jax.jit(lambda s: tt.round(s, max_rank=6))(doubled)
    close(tt.to_dense(r), 2 * tt.to_dense(t))
    for c in r.cores[1:]:  # right-orthogonal cores
        m = c.reshape(c.shape[0], -1)
        close(m @ jnp.conj(m).T, jnp.eye(c.shape[0]))


# -------------------------------------------------------------------- gradients


def test_check_grads_core_operations():
    a, b = make((3, 2, 4), 2, 0), make((3, 2, 4), 3, 1)
    feats = gauss(3, (3, 2))
    u = make((2, 2, 2), 2, 5)
    ttm = make((2, 3), 2, 6, col_dims=(3, 2))
    v = gauss(7, (6,))
    x = gauss(9, (3, 4, 3))
    ca, cb = make((2, 3, 2), 2, 9, C128), make((2, 3, 2), 2, 10, C128)
    # numpy leaves: check_grads perturbs the inputs with numpy arithmetic (on jax arrays
    # every perturbation would compile an eager add / subtract per shape)
    a, b, feats, u, ttm, v, x, ca, cb = jax.tree.map(
        np.asarray, (a, b, feats, u, ttm, v, x, ca, cb))
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    # a few operations per function: one compilation each instead of one per operation
    check_grads(jax.jit(lambda a, b: (tt.inner(a, b), tt.norm(a), tt.log_norm(a))), (a, b),
                **kw)
    check_grads(jax.jit(lambda t: (tt.contract_features(t, feats)[0] * 1.0,
                                   jnp.exp(tt.contract_features(t, feats)[1]))), (u,), **kw)
    check_grads(jax.jit(tt.matvec), (ttm, v), **kw)
    check_grads(jax.jit(lambda a, b: (tt.to_dense(a), tt.to_dense(tt.orthogonalize(a, 1)),
                                      tt.to_dense(tt.round(b, max_rank=2)))), (a, b), **kw)
    check_grads(jax.jit(lambda x: tt.to_dense(tt.from_dense(x, max_rank=2))), (x,), **kw)
    # complex trains: the real loss norm + Re<x, y> (conjugating the first argument)
    check_grads(jax.jit(lambda x, y: tt.norm(x) + jnp.real(tt.inner(x, y))), (ca, cb),
                order=1, modes=("rev",))


def test_gradients_finite_at_degenerate_spectra():
    # A tensor of exact TT-rank 1 truncated at rank 3: zero and repeated singular values.
    t = make((3, 3, 3), 1, 0)
    x = tt.to_dense(t)
    g = jax.jit(jax.grad(lambda x: jnp.sum(tt.to_dense(tt.from_dense(x, max_rank=3)) ** 2)))(x)
    assert np.all(np.isfinite(np.asarray(g)))
    close(g, 2 * x, 1e-8)  # the truncation is exact here, so d/dx ||x||^2 = 2x
    doubled = tt.add(t, t)
    gr = jax.jit(jax.grad(lambda s: tt.norm(tt.round(s, max_rank=2))))(doubled)
    assert all(np.all(np.isfinite(np.asarray(c))) for c in gr.cores)
    zero = tt.scale(make((2, 3, 2), 2, 9, C128), 0.0)
    g = jax.jit(jax.grad(lambda t: jnp.tanh(tt.log_norm(t))))(zero)  # -inf, zero derivative
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))


# -------------------------------------------------------------------- bad input


def test_mismatched_bonds_name_site_and_shapes():
    bad = tt.TensorTrain((jnp.ones((1, 2, 3)), jnp.ones((4, 2, 1))))
    with pytest.raises(ValueError, match=r"site 0 and site 1.*\(1, 2, 3\).*\(4, 2, 1\)"):
        tt.to_dense(bad)
    with pytest.raises(ValueError, match="boundary"):
        tt.norm(tt.TensorTrain((jnp.ones((2, 2, 1)),)))
    with pytest.raises(ValueError, match="3 axes"):
        tt.inner(tt.TensorTrain((jnp.ones((1, 2)),)), make((2,), 1, 0))


def test_bad_rank_arguments():
    x = jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        tt.from_dense(x, max_rank=0)
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        tt.from_dense(x, rtol=-0.1)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        tt.round(make((2, 3), 2, 0), max_rank=0)
    with pytest.raises(TypeError, match="static max_rank"):
        jax.jit(lambda x: tt.from_dense(x, rtol=0.1))(x)
    with pytest.raises(TypeError, match="static max_rank"):
        jax.jit(lambda t: tt.round(t, rtol=0.1))(make((2, 3), 2, 0))
    with pytest.raises(ValueError, match="rank"):
        tt.random(key(0), (2, 3, 4), (2,), F64)
    with pytest.raises(ValueError, match="dims"):
        tt.random(key(0), (2, 0), 2, F64)


def test_mismatched_dims_and_shapes():
    with pytest.raises(ValueError, match="mode sizes differ"):
        tt.inner(make((2, 3), 2, 0), make((3, 2), 2, 0))
    with pytest.raises(ValueError, match="row_dims"):
        tt.from_dense(jnp.ones((6, 6)), row_dims=(2, 3), col_dims=(2, 2))
    ttm = tt.random(key(0), (2, 3), 2, F64, col_dims=(3, 2))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 6\)"):
        tt.matvec(ttm, jnp.ones(5))
    with pytest.raises(ValueError, match="features"):
        tt.contract_features(make((2, 2), 2, 0), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="center"):
        tt.orthogonalize(make((2, 2), 2, 0), 2)
