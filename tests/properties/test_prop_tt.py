"""Properties of tnlib.tt over random shapes, ranks (1, and above what the unfoldings
allow), all five dtypes and batch shapes: every call agrees with the dense
computation in float64 or raises ValueError / TypeError naming the argument.

dtype policy (tnlib.tt): every function takes bfloat16 / complex64 cores. Contractions
(``log_norm``, ``norm``, ``contract_features``, ``sweep_features``) accumulate in at
least float32; SVD / QR (``from_dense``, ``round``, ``orthogonalize``) run in float32
for bfloat16 (``tnlib.linalg``) and return the input dtype.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import (
    ALL_DTYPES,
    C128,
    F32,
    F64,
    close,
    covers,
    dims_st,
    dtype_id,
    finite,
    key,
    normal,
    raises,
    same_dtype,
    seeds,
    upcast,
)

from tnlib import tt


def np_dense(cores):
    """Dense tensor of a chain of ``(r, n..., r')`` cores, in numpy float64/complex128."""
    res = np.ones((1, 1))
    for c in cores:
        c = np.asarray(c)
        res = np.tensordot(res, c, axes=([-1], [0]))
    return res[0, ..., 0]


def bounds(dims):
    """Largest useful internal ranks: ``min(prod left, prod right)`` per bond."""
    return [min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))]


@covers("tt.TensorTrain", "tt.random", "tt.to_dense", "tt.inner", "tt.norm", "tt.log_norm",
        "tt.add", "tt.scale", "tt.hadamard", "tt.orthogonalize", "tt.round", "tt.from_dense",
        "tt.check")
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@settings(max_examples=1)
@given(dims_st(1, 4, 3), st.integers(1, 5), st.integers(1, 3), seeds)
def test_tt_algebra_matches_dense(dtype, dims, rank, rank_b, seed):
    a = tt.random(key(seed), dims, rank, dtype)
    b = tt.random(key(seed + 1), dims, rank_b, dtype)
    same_dtype(a, dtype)
    assert a.dims == dims and a.ranks[0] == a.ranks[-1] == 1
    A, B = np_dense(upcast(a).cores), np_dense(upcast(b).cores)
    close(tt.to_dense(a), A, dtype)
    assert tt.to_dense(a).dtype == jnp.dtype(dtype)
    nA = np.linalg.norm(A)
    close(tt.inner(a, b), np.vdot(A, B), dtype, scale=max(1.0, nA * np.linalg.norm(B)))
    close(tt.norm(a), nA, dtype, scale=max(1.0, nA))
    close(tt.log_norm(a), np.log(nA), dtype, factor=2)
    close(tt.to_dense(tt.add(a, b)), A + B, dtype, factor=2)
    close(tt.to_dense(tt.scale(a, 2.5)), 2.5 * A, dtype, factor=3)
    close(tt.to_dense(tt.hadamard(a, b)), A * B, dtype, factor=2)
    assert tt.check(a) is a
    for center in {0, len(dims) - 1, len(dims) // 2}:
        o = tt.orthogonalize(a, center)
        same_dtype(o, dtype)
        close(tt.to_dense(o), A, dtype, factor=4, scale=max(1.0, nA))
        for k, r in enumerate(o.ranks[1:-1]):  # redundant bonds shrink on the QR'd side
            assert r <= (math.prod(dims[:k + 1]) if k < center else math.prod(dims[k + 1:]))
    # rounding: exact at a cap above every bond, within the caps, never above the bounds
    full = tt.round(a, max_rank=max(rank, 1) + 1)
    same_dtype(full, dtype)
    close(tt.to_dense(full), A, dtype, factor=4, scale=max(1.0, nA))
    one = tt.round(a, max_rank=1)
    assert max(one.ranks) == 1
    finite(tt.to_dense(one))
    tol_r = tt.round(a, rtol=0.3)
    assert all(r <= bd for r, bd in zip(tol_r.ranks[1:-1], bounds(dims), strict=True))
    err = np.linalg.norm(np.asarray(upcast(tt.to_dense(tol_r))) - A)
    assert err <= 0.3 * nA + 8 * 6e-2 * nA  # bound plus low-precision slack
    # TT-SVD: exact at full rank and at the planted rank
    f = tt.from_dense(tt.to_dense(a))
    same_dtype(f, dtype)
    close(tt.to_dense(f), A, dtype, factor=4, scale=max(1.0, nA))
    g = tt.from_dense(tt.to_dense(a), max_rank=rank)
    assert max(g.ranks) <= rank
    close(tt.to_dense(g), A, dtype, factor=4, scale=max(1.0, nA))


@covers("tt.TTMatrix", "tt.matvec", "tt.matmul", "tt.num_params", "tt.flops")
@pytest.mark.parametrize("dtype", [F32, C128], ids=dtype_id)
@settings(max_examples=1)
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=3),
       st.integers(1, 4), seeds)
def test_ttmatrix_matches_dense(dtype, sizes, rank, seed):
    rows, cols = tuple(m for m, _ in sizes), tuple(n for _, n in sizes)
    m = tt.random(key(seed), rows, rank, dtype, col_dims=cols)
    v = tt.random(key(seed + 1), cols, rank, dtype)
    assert m.row_dims == rows and m.col_dims == cols
    M = np_dense(upcast(m).cores)  # (m1, n1, m2, n2, ...)
    L = len(sizes)
    M = M.transpose(list(range(0, 2 * L, 2)) + list(range(1, 2 * L, 2))).reshape(m.shape)
    close(tt.to_dense(m), M, dtype)
    x = normal(key(seed + 2), (m.shape[1],), dtype)
    xr = np.asarray(upcast(x))
    close(tt.matvec(m, x), M @ xr, dtype, factor=2, scale=max(1.0, np.abs(M).sum()))
    V = np_dense(upcast(v).cores).reshape(-1)
    mv = tt.matmul(m, v)
    close(tt.to_dense(mv).reshape(-1), M @ V, dtype, factor=2, scale=max(1.0, np.abs(M).sum()))
    close(tt.inner(m, m), np.vdot(M, M), dtype, scale=max(1.0, np.vdot(M, M).real))
    close(tt.norm(m), np.linalg.norm(M), dtype, scale=max(1.0, np.linalg.norm(M)))
    f = tt.from_dense(tt.to_dense(m), row_dims=rows, col_dims=cols)
    close(tt.to_dense(f), M, dtype, factor=4, scale=max(1.0, np.linalg.norm(M)))
    close(tt.to_dense(tt.add(m, m)), 2 * M, dtype, factor=2)
    assert tt.num_params(m) == sum(c.size for c in m.cores)
    assert tt.num_params(v) == sum(c.size for c in v.cores)
    # flops: 2 per multiply-add of the site-by-site contraction, counted by hand
    want = sum(2 * c.size * math.prod(cols[k + 1:]) * math.prod(rows[:k])
               for k, c in enumerate(m.cores))
    assert tt.flops(m, 3) == 3 * want


@covers("tt.stack", "tt.contract_features", "tt.sweep_features", "tt.feature_method")
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
@settings(max_examples=1)
@given(st.integers(1, 5), st.integers(1, 3), st.integers(1, 3), seeds)
def test_tt_features_match_dense(dtype, L, n, rank, seed):
    t = tt.random(key(seed), (n,) * L, rank, dtype)
    A = np_dense(upcast(t).cores)
    feats = normal(key(seed + 1), (L, n), dtype)
    F = np.asarray(upcast(feats))
    ref = A
    for k in range(L):
        ref = np.tensordot(ref, F[k], axes=([0], [0]))
    mant, logs = tt.contract_features(t, feats)
    assert mant.shape == () and logs.shape == ()
    val = np.asarray(upcast(mant)) * np.exp(np.asarray(logs, np.float64))
    close(val, ref, dtype, factor=2, scale=max(1.0, np.prod(np.linalg.norm(F, axis=1)) *
                                               np.linalg.norm(A)))
    # a sequence of vectors gives the same
    mant2, logs2 = tt.contract_features(t, [feats[k] for k in range(L)])
    close(np.asarray(upcast(mant2)) * np.exp(np.asarray(logs2, np.float64)), val, dtype, 2)
    # the log-depth path is the same function; the rule picks one of the two paths
    mant3, logs3 = tt.contract_features(t, feats, method="tree")
    close(np.asarray(upcast(mant3)) * np.exp(np.asarray(logs3, np.float64)), val, dtype, 2)
    for m in ("scan", "tree"):
        assert tt.feature_method(L, rank, 1, m) == m
    assert tt.feature_method(L, rank, seed % 4 + 1) in ("scan", "tree")
    raises(lambda: tt.feature_method(L, rank, 1, "fast"), "method")
    s = tt.stack(t)
    uniform = L >= 2 and len(set(t.ranks[1:-1])) == 1
    if not uniform:
        assert s is None
        return
    r = t.ranks[1]
    assert s.shape == (L, r, n, r) and s.dtype == jnp.dtype(dtype)
    e0 = jnp.zeros((r,), dtype).at[0].set(1)
    for m in ("scan", "tree"):
        vec, acc = tt.sweep_features(s, feats, e0, method=m)
        close(np.asarray(upcast(vec[0])) * np.exp(np.asarray(acc, np.float64)), ref, dtype, 2,
              scale=max(1.0, abs(ref)))


@covers("tt.random", "tt.to_dense", "tt.inner", "tt.round", "tt.log_norm")
@settings(max_examples=1)
@given(dims_st(2, 3, 3), st.integers(1, 3), seeds)
def test_tt_batched_networks(dims, rank, seed):
    """A (2, 3) batch of trains through nested vmap: sizes and ranks read right, every
    member equals its own unbatched computation."""
    keys = jax.random.split(key(seed), 6).reshape(2, 3, -1)
    mk = lambda k: tt.random(k, dims, rank, F64)  # noqa: E731
    batch = jax.vmap(jax.vmap(mk))(keys)
    assert batch.dims == dims and batch.cores[0].shape[:2] == (2, 3)
    vv = lambda f: jax.vmap(jax.vmap(f))  # noqa: E731
    dense = vv(tt.to_dense)(batch)
    assert dense.shape == (2, 3, *dims)
    inner, lnorm, rounded = vv(lambda t: (
        tt.inner(t, t), tt.log_norm(t), tt.to_dense(tt.round(t, max_rank=rank))))(batch)
    for i in range(2):
        for j in range(3):
            one = mk(keys[i, j])
            A = np.asarray(tt.to_dense(one))
            close(dense[i, j], A, F64)
            close(inner[i, j], np.vdot(A, A), F64)
            close(lnorm[i, j], np.log(np.linalg.norm(A)), F64)
            close(rounded[i, j], A, F64, factor=100)


@covers("tt.random", "tt.from_dense", "tt.round", "tt.orthogonalize", "tt.inner", "tt.add",
        "tt.hadamard", "tt.matvec", "tt.matmul", "tt.contract_features", "tt.sweep_features",
        "tt.check", "tt.scale", "tt.to_dense", "tt.norm", "tt.log_norm", "tt.stack")
def test_tt_bad_input_names_the_argument():
    t = tt.random(key(0), (2, 3, 2), 2, F64)
    u = tt.random(key(0), (2, 2, 2), 2, F64)
    m = tt.random(key(0), (2, 3), 2, F64, col_dims=(2, 2))
    bad = tt.TensorTrain((t.cores[0], t.cores[2], t.cores[1]))
    cases = [
        (lambda: tt.random(key(0), (), 2), "dims"),
        (lambda: tt.random(key(0), (2, 0), 2), "dims"),
        (lambda: tt.random(key(0), (2, 2.0), 2), "dims"),
        (lambda: tt.random(key(0), (2, 2), 0), "rank"),
        (lambda: tt.random(key(0), (2, 2, 2), (2,)), "rank"),
        (lambda: tt.random(key(0), (2, 2), True), "rank"),
        (lambda: tt.random(key(0), (2, 2), 2, col_dims=(2,)), "col_dims"),
        (lambda: tt.from_dense(jnp.ones(())), "x"),
        (lambda: tt.from_dense(jnp.ones((2, 2)), max_rank=0), "max_rank"),
        (lambda: tt.from_dense(jnp.ones((2, 2)), max_rank=2.0), "max_rank"),
        (lambda: tt.from_dense(jnp.ones((2, 2)), rtol=-0.1), "rtol"),
        (lambda: tt.from_dense(jnp.ones((2, 2)), row_dims=(2,)), "row_dims"),
        (lambda: tt.from_dense(jnp.ones((2, 3)), row_dims=(2,), col_dims=(2,)), "row_dims"),
        (lambda: jax.jit(lambda x: tt.from_dense(x, rtol=0.1))(jnp.ones((2, 2))), "rtol"),
        (lambda: tt.round(t, max_rank=0), "max_rank"),
        (lambda: tt.round(t, rtol=-1.0), "rtol"),
        (lambda: tt.orthogonalize(t, 3), "center"),
        (lambda: tt.orthogonalize(t, -1), "center"),
        (lambda: tt.orthogonalize(m, 5), "center"),  # a TT-matrix is orthogonalized too
        (lambda: tt.inner(t, u), "mode sizes"),
        (lambda: tt.add(t, u), "mode sizes"),
        (lambda: tt.hadamard(t, u), "mode sizes"),
        (lambda: tt.hadamard(m, m), "TensorTrain"),
        (lambda: tt.to_dense(bad), "tt"),
        (lambda: tt.norm(bad), "tt"),
        (lambda: tt.log_norm(bad), "tt"),
        (lambda: tt.scale(bad, 2.0), "tt"),
        (lambda: tt.stack(bad), "tt"),
        (lambda: tt.check(tt.TensorTrain((jnp.ones((2, 2, 1)),))), "boundary"),
        (lambda: tt.check(tt.TensorTrain(())), "cores"),
        (lambda: tt.matvec(m, jnp.ones((5,))), "x"),
        (lambda: tt.matvec(t, jnp.ones((12,))), "ttm"),
        (lambda: tt.matmul(m, t), "col_dims"),
        (lambda: tt.matmul(t, t), "TTMatrix"),
        (lambda: tt.contract_features(t, jnp.ones((3, 3))), "features"),
        (lambda: tt.contract_features(t, [jnp.ones(2), jnp.ones(2), jnp.ones(2)]), "features"),
        (lambda: tt.sweep_features(jnp.ones((2, 2, 2)), jnp.ones((2, 2)), jnp.ones(2)), "cores"),
        (lambda: tt.sweep_features(jnp.ones((2, 2, 3, 2)), jnp.ones((2, 3)), jnp.ones(3)),
         "vector"),
    ]
    for fn, name in cases:
        raises(fn, name)
