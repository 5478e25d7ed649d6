"""Properties of tnlib.network, tnlib.btt and tnlib.linalg: random structures, ranks
(1 and above the matrix / block bound), dtypes and batch shapes agree with the dense
float64 computation or raise ValueError / TypeError naming the argument.

dtype policy: ``linalg.svd`` / ``qr`` (and so every SVD-based constructor) factor
bfloat16 / float16 in float32 and return the input dtype; everything else keeps the
input dtype.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import (
    ALL_DTYPES,
    F64,
    close,
    covers,
    dtype_id,
    finite,
    key,
    normal,
    raises,
    same_dtype,
    seeds,
    upcast,
)
from props import tol as tol_of

from tnlib import btt, linalg, network

DT = pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)


@st.composite
def adjacencies(draw):
    n = draw(st.integers(1, 4))
    a = np.ones((n, n), int)
    for i in range(n):
        a[i, i] = draw(st.integers(1, 3))
        for j in range(i + 1, n):
            a[i, j] = a[j, i] = draw(st.integers(1, 3))
    perm = draw(st.permutations(range(n)))
    return tuple(map(tuple, a.tolist())), tuple(perm)


@covers("network.Network", "network.random", "network.to_dense", "network.inner",
        "network.norm", "network.num_params", "network.einsum_spec", "network.contract",
        "network.contract_path", "network.check", "network.fit")
@DT
@settings(max_examples=1)
@given(adjacencies(), seeds)
def test_network_matches_dense(dtype, structure, seed):
    adj, perm = structure
    a = network.random(key(seed), network.dims_of(adj, perm), adj, dtype, perm=perm)
    same_dtype(a, dtype)
    assert network.check(a) is a and network.num_params(adj) == network.num_params(a)
    assert network.num_params(adj) == sum(c.size for c in a.cores)
    spec = network.einsum_spec(adj, perm)
    cores = [np.asarray(c) for c in upcast(a).cores]
    A = np.einsum(spec, *cores)
    nA = max(1.0, np.linalg.norm(A))
    d = network.to_dense(a)
    assert d.dtype == jnp.dtype(dtype) and a.dims == A.shape
    close(d, A, dtype, factor=2, scale=nA)
    close(network.contract(a.cores, spec), A, dtype, factor=2, scale=nA)
    path = network.contract_path(spec, *(c.shape for c in a.cores))
    assert all(isinstance(step, tuple) for step in path)
    close(network.inner(a, a), np.vdot(A, A), dtype, factor=2, scale=nA * nA)
    close(network.norm(a), np.linalg.norm(A), dtype, factor=2, scale=nA)
    net, rse = network.fit(d, adj, perm=perm, key=key(seed + 1), n_iter=1)
    same_dtype(net.cores, dtype)
    finite((net, rse))


@covers("network.slice_plan", "network.SlicePlan", "network.contract")
def test_network_sliced_contraction_matches():
    a = network.random(key(0), (2, 2, 2), ((2, 3, 3), (3, 2, 3), (3, 3, 2)), F64)
    spec = network.einsum_spec(a.adjacency)
    plan = network.slice_plan(spec, *(c.shape for c in a.cores), max_intermediate=8)
    assert isinstance(plan, network.SlicePlan)
    close(network.contract(a.cores, spec, max_intermediate=8), network.to_dense(a), F64)


def dense_btt(w):
    return np.asarray(btt.to_dense(upcast(w)))


@covers("btt.LowRank", "btt.Kronecker", "btt.BlockTT", "btt.random", "btt.from_dense",
        "btt.matvec", "btt.to_dense", "btt.num_params", "btt.flops", "btt.lr_multipliers",
        "btt.check", "btt.inner", "btt.norm")
@DT
@settings(max_examples=1)
@given(st.tuples(*[st.integers(1, 3)] * 4), st.integers(1, 4),
       st.sampled_from([(), (3,), (2, 1)]), seeds)
def test_btt_matches_dense(dtype, sizes, rank, batch, seed):
    m1, m2, n1, n2 = sizes
    d_out, d_in = m1 * m2, n1 * n2
    ws = [btt.random(key(seed), (d_out, d_in), rank, dtype, kind="lowrank"),
          btt.random(key(seed), ((m1, m2), (n1, n2)), 1, dtype, kind="kronecker"),
          btt.random(key(seed), ((m1, m2), (n1, n2)), rank, dtype),
          btt.random(key(seed), ((m1, m2), (n1, n2)), 1, dtype, kind="monarch")]
    x = normal(key(seed + 1), (*batch, d_in), dtype)
    xr = np.asarray(upcast(x))
    for w in ws:
        same_dtype(w, dtype)
        assert btt.check(w) is w
        W = dense_btt(w)
        assert W.shape == (d_out, d_in) and (w.d_out, w.d_in) == W.shape
        close(btt.to_dense(w), W, dtype)
        y = btt.matvec(w, x)
        assert y.shape == (*batch, d_out) and y.dtype == jnp.dtype(dtype)
        close(y, xr @ W.T, dtype, factor=2, scale=max(1.0, np.abs(W).sum() * np.abs(xr).max()))
        assert btt.num_params(w) == sum(leaf.size for leaf in jax.tree.leaves(w))
        assert btt.flops(w, 3) > 0
        close(btt.norm(w), np.linalg.norm(W), dtype)
        close(btt.inner(w, ws[2]), np.vdot(W, dense_btt(ws[2])), dtype,
              scale=max(1.0, np.linalg.norm(W) * np.linalg.norm(dense_btt(ws[2]))))
        assert all(v > 0 for v in jax.tree.leaves(btt.lr_multipliers(w)))
    # projections: exact on matrices of the structure, ranks capped by the bound
    W = btt.to_dense(ws[0])
    nW = max(1.0, float(jnp.linalg.norm(upcast(W))))
    lr = btt.from_dense(W, max_rank=rank, kind="lowrank")
    assert lr.rank == min(rank, d_out, d_in)
    close(btt.to_dense(lr), np.asarray(upcast(W)), dtype, 8, scale=nW)
    K = btt.to_dense(ws[1])
    k = btt.from_dense(K, kind="kronecker", dims=((m1, m2), (n1, n2)))
    close(btt.to_dense(k), np.asarray(upcast(K)), dtype, 8, scale=max(1.0, np.abs(K).max()))
    B = btt.to_dense(ws[2])
    b = btt.from_dense(B, max_rank=rank, dims=((m1, m2), (n1, n2)))
    assert b.rank == min(rank, m2, n1)
    close(btt.to_dense(b), np.asarray(upcast(B)), dtype, 8, scale=max(1.0, np.abs(B).max()))
    M = btt.to_dense(ws[3])
    close(btt.to_dense(btt.from_dense(M, kind="monarch", dims=((m1, m2), (n1, n2)))),
          np.asarray(upcast(M)),
          dtype, 8, scale=max(1.0, np.abs(M).max()))


@covers("linalg.svd", "linalg.qr", "linalg.truncated_svd", "linalg.tail_norms",
        "linalg.tolerance_rank", "linalg.tolerance_mask", "linalg.is_concrete")
@DT
@settings(max_examples=1)
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from([(), (2,)]), st.integers(1, 5),
       seeds)
def test_linalg_matches_numpy(dtype, m, n, batch, max_rank, seed):
    a = normal(key(seed), (*batch, m, n), dtype)
    A = np.asarray(upcast(a))
    k = min(m, n)
    u, s, vh = linalg.svd(a)
    assert u.shape == (*batch, m, k) and s.shape == (*batch, k) and vh.shape == (*batch, k, n)
    assert u.dtype == a.dtype
    rec = np.asarray(upcast(u)) * np.asarray(upcast(s))[..., None, :] @ np.asarray(upcast(vh))
    close(rec, A, dtype, factor=8)
    close(s, np.linalg.svd(A, compute_uv=False), dtype, factor=8)
    q, r = linalg.qr(a)
    assert q.shape == (*batch, m, k) and r.shape == (*batch, k, n) and q.dtype == a.dtype
    close(np.asarray(upcast(q)) @ np.asarray(upcast(r)), A, dtype, factor=8)
    assert np.allclose(np.tril(np.asarray(upcast(r)), -1), 0)
    u2, s2, vh2 = linalg.truncated_svd(a, max_rank)
    assert s2.shape[-1] == min(max_rank, k)
    sr = np.linalg.svd(A, compute_uv=False)
    tails = np.sqrt(np.cumsum((sr ** 2)[..., ::-1], -1)[..., ::-1])
    close(linalg.tail_norms(s), tails, dtype, factor=8)
    sv = np.asarray(upcast(s)).reshape(-1, k)[0]
    tol = 0.5 * float(np.linalg.norm(sv))
    mask = np.asarray(linalg.tolerance_mask(s.reshape(-1, k)[0], tol))
    assert mask[0] and np.sqrt(np.sum(sv[~mask] ** 2)) <= tol * (1 + 1e-2)
    assert linalg.tolerance_rank(s.reshape(-1, k)[0], tol) == max(1, int(mask.sum()))
    assert linalg.is_concrete(a) and not jax.jit(
        lambda x: jnp.asarray(linalg.is_concrete(x)))(a)


@covers("network.random", "network.fit", "network.einsum_spec", "network.contract",
        "network.from_dense", "network.structure", "network.check_perm",
        "network.check_adjacency", "network.dims_of", "btt.random", "btt.from_dense",
        "btt.inner", "btt.KINDS",
        "network.contract_path", "network.inner", "network.num_params", "network.check",
        "network.slice_plan", "network.to_dense", "network.norm",
        "btt.LowRank", "btt.Kronecker", "btt.BlockTT", "btt.matvec",
        "btt.check", "btt.to_dense", "btt.num_params", "btt.flops", "btt.lr_multipliers",
        "linalg.truncated_svd", "linalg.tolerance_rank", "linalg.svd", "linalg.qr",
        "linalg.tail_norms", "linalg.tolerance_mask")
def test_bad_input_names_the_argument():
    a = network.random(key(0), network.dims_of(((2, 2), (2, 3))), ((2, 2), (2, 3)), F64)
    b = network.random(key(0), network.dims_of(((2, 2), (2, 2))), ((2, 2), (2, 2)), F64)
    w = btt.random(key(0), ((2, 2), (2, 3)), 2, F64)
    cases = [
        (lambda: network.random(key(0), (2, 2), ((2, 2), (3, 2))), "rank"),
        (lambda: network.random(key(0), (2, 2), ((2, 0), (0, 2))), "rank"),
        (lambda: network.random(key(0), (2, 2), ((2, 2, 1), (2, 2, 1))), "rank"),
        (lambda: network.dims_of(((2, 2, 1), (2, 2, 1))), "adjacency"),
        (lambda: network.random(key(0), (2, 2), ((2, 2), (2, 2)), perm=(0, 0)), "perm"),
        (lambda: network.einsum_spec(((1.5,),)), "adjacency"),
        (lambda: network.num_params(()), "adjacency"),
        (lambda: network.inner(a, b), "mode sizes"),
        (lambda: network.to_dense(network.Network(b.cores, a.adjacency, a.perm)), "core"),
        (lambda: network.norm(network.Network(a.cores[:1], a.adjacency, a.perm)), "cores"),
        (lambda: network.check(network.Network(b.cores, a.adjacency, a.perm)), "core 1"),
        (lambda: network.contract([], "->"), "arrays"),
        (lambda: network.fit(jnp.ones((2, 2)), a.adjacency, key=key(0)), "x"),
        (lambda: network.fit(jnp.ones((2, 3)), a.adjacency), "key"),
        (lambda: network.fit(jnp.ones((2, 3)), a.adjacency, key=key(0), method="x"), "method"),
        (lambda: network.fit(jnp.ones((2, 3)), a.adjacency, key=key(0), n_iter=-1), "n_iter"),
        (lambda: btt.random(key(0), (0, 2), 1, kind="lowrank"), "d_out"),
        (lambda: btt.random(key(0), (2, 2), 0, kind="lowrank"), "rank"),
        (lambda: btt.from_dense(jnp.ones((2, 3)), max_rank=0, kind="lowrank"), "max_rank"),
        (lambda: btt.from_dense(jnp.ones((2,)), max_rank=1, kind="lowrank"), "x"),
        (lambda: btt.random(key(0), ((2,), (2, 2)), 1, kind="kronecker"), "out_factors"),
        (lambda: btt.from_dense(jnp.ones((4, 5)), kind="kronecker", dims=((2, 2), (2, 2))), "x"),
        (lambda: btt.random(key(0), ((2, 2), (2, 0)), 1), "in_factors"),
        (lambda: btt.from_dense(jnp.ones((4, 4)), rtol=-1.0, dims=((2, 2), (2, 2))), "rtol"),
        (lambda: btt.from_dense(jnp.ones((4, 4)), kind="btt"), "dims"),
        (lambda: btt.random(key(0), (4, 4), 1, kind="x"), "kind"),
        (lambda: btt.inner(w, btt.random(key(0), (3, 4), 1, kind="lowrank")), "shapes"),
        (lambda: network.from_dense(jnp.ones((2, 3)), max_rank=2, adjacency=a.adjacency),
         "max_rank"),
        (lambda: network.structure((2, 3), 0), "rank"),
        (lambda: network.check_perm((0, 0), 2), "perm"),
        (lambda: network.check_adjacency(((2, 1),)), "adjacency"),
        (lambda: btt.from_dense(jnp.ones((4, 4)), kind="monarch", dims=((2, 2), (4, 2))), "x"),
        (lambda: btt.matvec(w, jnp.ones((3, 5))), "x"),
        (lambda: btt.matvec(jnp.ones((2, 2)), jnp.ones(2)), "w"),
        (lambda: btt.to_dense(jnp.ones((2, 2))), "w"),
        (lambda: btt.num_params(a), "w"),
        (lambda: btt.flops(w, 0), "batch"),
        (lambda: btt.lr_multipliers(a), "w"),
        (lambda: btt.check(btt.BlockTT(w.left, w.right[:1])), "right"),
        (lambda: linalg.truncated_svd(jnp.ones((2, 2)), 0), "max_rank"),
        (lambda: linalg.truncated_svd(jnp.ones((2, 2)), 1.0), "max_rank"),
        (lambda: jax.jit(lambda s: linalg.tolerance_rank(s, 0.1))(jnp.ones(2)), "concrete"),
        (lambda: linalg.svd(jnp.ones((3,))), "a"),
        (lambda: linalg.qr(jnp.ones((3,))), "a"),
    ]
    failures = []
    for i, (fn, name) in enumerate(cases):
        try:
            raises(fn, name)
        except BaseException as e:  # collect all, report together
            failures.append((i, name, repr(e)[:300]))
    assert not failures, failures


@covers("btt.det", "btt.slogdet", "btt.inv", "btt.cholesky")
@DT
@settings(max_examples=1)
@given(st.integers(1, 4), st.integers(1, 4), seeds)
def test_kronecker_det_inv_cholesky_match_dense(dtype, m1, m2, seed):
    # well-conditioned factors: m I + G (det, inv) and G G^H + m I (cholesky)
    g1, g2 = normal(key(seed), (m1, m1), dtype), normal(key(seed + 1), (m2, m2), dtype)
    w = btt.Kronecker(g1 + m1 * jnp.eye(m1, dtype=dtype), g2 + m2 * jnp.eye(m2, dtype=dtype))
    W = dense_btt(w)
    d = btt.det(w)
    assert d.dtype == jnp.dtype(dtype)
    ref = np.linalg.det(W)
    close(d, ref, dtype, factor=8, scale=max(1.0, abs(ref)))
    sign, logabs = btt.slogdet(w)
    ref_sign, ref_log = np.linalg.slogdet(W)
    close(sign, ref_sign, dtype, factor=8)
    close(logabs, ref_log, dtype, factor=8, scale=max(1.0, abs(ref_log)))
    inv = btt.inv(w)
    same_dtype(inv, dtype)
    ref_inv = np.linalg.inv(W)
    close(btt.to_dense(inv), ref_inv, dtype, factor=8)
    spd = btt.Kronecker(g1 @ jnp.conj(g1).T + m1 * jnp.eye(m1, dtype=dtype),
                        g2 @ jnp.conj(g2).T + m2 * jnp.eye(m2, dtype=dtype))
    S = dense_btt(spd)
    c = btt.cholesky(spd)
    same_dtype(c, dtype)
    close(btt.to_dense(c), np.linalg.cholesky(S), dtype, factor=8, scale=max(1.0, np.abs(S).max()))
    rect = btt.Kronecker(jnp.ones((m1, m1 + 1), dtype), jnp.eye(m2, dtype=dtype))
    for fn in (btt.det, btt.slogdet, btt.inv, btt.cholesky):
        raises(lambda fn=fn: fn(rect), "square")
    finite(btt.slogdet(w))


@covers("linalg.svd", "linalg.randomized_svd", "linalg.svd_method", "linalg.SVD_METHODS",
        "linalg.truncated_svd", "linalg.truncated_split")
@DT
@settings(max_examples=1)
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from([(), (2,)]), st.integers(1, 5),
       seeds)
def test_svd_routes_match_numpy(dtype, m, n, batch, rank, seed):
    """The Gram route within its resolution (``sqrt(eps) * s_max``; complete on the short
    side), the randomized SVD exact at full rank and never above the spectrum (the
    singular values of ``Q Q^H a`` interlace those of ``a``) below it."""
    a = normal(key(seed), (*batch, m, n), dtype)
    A = np.asarray(upcast(a))
    k, rank = min(m, n), min(rank, m, n)
    sr = np.linalg.svd(A, compute_uv=False)
    smax = max(1.0, float(sr.max()))
    work = jnp.float32 if jnp.finfo(dtype).bits < 32 else dtype
    res = 4 * float(np.sqrt(jnp.finfo(work).eps)) * smax + 8 * float(jnp.finfo(work).eps) * smax
    u, s, vh = linalg.svd(a, method="gram")
    assert u.shape == (*batch, m, k) and s.shape == (*batch, k) and vh.shape == (*batch, k, n)
    assert u.dtype == vh.dtype == a.dtype
    finite(s, "gram singular values")
    assert np.abs(np.asarray(upcast(s)) - sr).max() <= res + float(tol_of(dtype)) * smax
    rec = np.asarray(upcast(u)) * np.asarray(upcast(s))[..., None, :] @ np.asarray(upcast(vh))
    assert np.abs(rec - A).max() <= k * res + 8 * float(tol_of(dtype)) * smax
    u2, s2, vh2 = linalg.randomized_svd(a, rank)
    assert s2.shape == (*batch, rank) and u2.dtype == a.dtype
    s2 = np.asarray(upcast(s2))
    assert np.all(s2 <= sr[..., :rank] * (1 + 8 * float(tol_of(dtype))) + 8 * float(tol_of(dtype)))
    if rank == k:
        close(s2, sr, dtype, factor=8, scale=smax)
    for method in linalg.SVD_METHODS:
        route = linalg.svd_method(method, a)
        assert route in linalg.SVD_METHODS and route != "auto"
    assert (linalg.svd_method("auto", a) == "gram") == (jnp.finfo(dtype).bits == 64)
    out = linalg.truncated_svd(a, rank, method="randomized")
    assert out[1].shape == (*batch, rank)
    for method in ("lapack", "gram"):  # the split reconstructs what the SVD keeps
        u3, s3, svh = linalg.truncated_split(a, rank, method=method)
        assert u3.shape == (*batch, m, rank) and svh.shape == (*batch, rank, n)
        ur, sv, vr = (np.asarray(upcast(f)) for f in linalg.truncated_svd(a, rank, method=method))
        rec = np.asarray(upcast(u3)) @ np.asarray(upcast(svh))
        bound = k * res + 8 * float(tol_of(dtype)) * smax
        assert np.abs(rec - (ur * sv[..., None, :]) @ vr).max() <= bound
