"""Properties of tnlib.tucker, tnlib.tree, tnlib.cp and tnlib.tr: random shapes, ranks
(1, and above what a matricization allows), dtypes and batches; every call agrees with
the dense float64 computation or raises ValueError / TypeError naming the argument.

dtype policy: constructors and contractions take float32/float64/complex64/complex128
and bfloat16. SVD / QR / least squares of bfloat16 run in float32 and return bfloat16
(``tnlib.linalg``, ``cp.als``, ``tr.als``); contractions return the input dtype
(``tree``'s ``inner`` / ``norm`` / ``log_norm`` accumulate in at least float32).
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

from tnlib import cp, tr, tree, tucker


def np_tucker(t):
    t = upcast(t)
    x = np.asarray(t.core)
    for k, f in enumerate(t.factors):
        x = np.moveaxis(np.tensordot(np.asarray(f), x, axes=([1], [k])), 0, k)
    return x


def np_cp(c):
    c = upcast(c)
    x = np.asarray(c.weights)
    letters = "abcdefgh"[:len(c.factors)]
    spec = "r," + ",".join(f"{ch}r" for ch in letters) + "->" + letters
    return np.einsum(spec, x, *[np.asarray(f) for f in c.factors])


def np_tr(t):
    t = upcast(t)
    res = np.asarray(t.cores[0])
    for c in t.cores[1:]:
        res = np.tensordot(res, np.asarray(c), axes=([-1], [0]))
    return np.trace(res, axis1=0, axis2=-1) if res.ndim > 2 else np.trace(res)


def checks(dtype, obj, ref, mod, other=None, other_ref=None):
    """to_dense / inner / norm of ``obj`` against the dense reference ``ref``."""
    nA = np.linalg.norm(ref)
    d = mod.to_dense(obj)
    assert d.dtype == jnp.dtype(dtype)
    close(d, ref.reshape(d.shape), dtype, factor=2, scale=max(1.0, nA))
    assert d.shape == ref.shape
    close(mod.norm(obj), nA, dtype, factor=2, scale=max(1.0, nA))
    if other is not None:
        s = max(1.0, nA * np.linalg.norm(other_ref))
        close(mod.inner(obj, other), np.vdot(ref, other_ref), dtype, factor=2, scale=s)


ranks_st = st.integers(1, 5)
DT = pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)


@covers("tucker.Tucker", "tucker.random", "tucker.to_dense", "tucker.inner", "tucker.norm",
        "tucker.hosvd", "tucker.from_dense", "tucker.hooi", "tucker.mode_product",
        "tucker.multilinear_singular_values", "tucker.num_params", "tucker.check")
@DT
@settings(max_examples=1)
@given(dims_st(1, 3, 4), ranks_st, seeds)
def test_tucker_matches_dense(dtype, dims, rank, seed):
    bound = [min(n, math.prod(dims) // n) for n in dims]
    ranks = tuple(min(rank, b) for b in bound)
    a = tucker.random(key(seed), dims, ranks, dtype)
    b = tucker.random(key(seed + 1), dims, 1, dtype)
    same_dtype(a, dtype)
    assert a.dims == dims and a.ranks == ranks and tucker.check(a) is a
    pairs = zip(dims, ranks, strict=True)
    assert tucker.num_params(a) == math.prod(ranks) + sum(n * r for n, r in pairs)
    A = np_tucker(a)
    checks(dtype, a, A, tucker, b, np_tucker(b))
    nA = max(1.0, np.linalg.norm(A))
    for fn in (lambda x: tucker.hosvd(x), lambda x: tucker.from_dense(x, max_rank=rank + 3),
               lambda x: tucker.hosvd(x, ranks), lambda x: tucker.hooi(x, ranks, 2)):
        f = fn(tucker.to_dense(a))
        same_dtype(f, dtype)
        close(tucker.to_dense(f), A, dtype, factor=8, scale=nA)
    if rank > max(bound):  # a rank above the matricization: a ValueError naming ranks
        raises(lambda: tucker.hosvd(tucker.to_dense(a), rank), "rank")
    sv = tucker.multilinear_singular_values(tucker.to_dense(a))
    for k, s in enumerate(sv):
        unf = np.moveaxis(A, k, 0).reshape(dims[k], -1)
        close(s, np.linalg.svd(unf, compute_uv=False), dtype, factor=4, scale=nA)
    m = normal(key(seed + 2), (2, dims[-1]), dtype)
    ref = np.moveaxis(np.tensordot(np.asarray(upcast(m)), A, axes=([1], [len(dims) - 1])), 0, -1)
    close(tucker.mode_product(tucker.to_dense(a), m, -1), ref, dtype, factor=4, scale=nA)
    close(tucker.to_dense(tucker.mode_product(a, m, len(dims) - 1)), ref, dtype, 4, scale=nA)


@covers("tree.TreeTN", "tree.random", "tree.to_dense", "tree.inner", "tree.norm",
        "tree.log_norm", "tree.from_dense", "tree.round", "tree.orthogonalize",
        "tree.singular_values", "tree.num_params", "tree.balanced_tree", "tree.nodes",
        "tree.check")
@DT
@settings(max_examples=1)
@given(dims_st(1, 4, 3), ranks_st, seeds)
def test_tree_matches_dense(dtype, dims, rank, seed):
    a = tree.random(key(seed), dims, rank, dtype=dtype)
    b = tree.random(key(seed + 1), dims, 1, dtype=dtype)
    same_dtype(a, dtype)
    assert a.tree == tree.balanced_tree(len(dims)) and tree.check(a) is a
    assert a.tree == tree.nodes(a.tree)[-1] and set(a.ranks) == set(tree.nodes(a.tree))
    assert tree.num_params(a) == sum(x.size for x in jax.tree.leaves(a))
    A = np.asarray(tree.to_dense(upcast(a)))
    checks(dtype, a, A, tree, b, np.asarray(tree.to_dense(upcast(b))))
    nA = max(1.0, np.linalg.norm(A))
    close(tree.log_norm(a), np.log(np.linalg.norm(A)), dtype, factor=2)
    for t in (tree.orthogonalize(a), tree.round(a, max_rank=rank),
              tree.from_dense(tree.to_dense(a)), tree.from_dense(tree.to_dense(a), max_rank=rank)):
        same_dtype(t, dtype)
        close(tree.to_dense(t), A, dtype, factor=8, scale=nA)
    one = tree.round(a, max_rank=1)
    assert max(one.ranks.values()) == 1
    finite(tree.to_dense(one))
    for node, s in tree.singular_values(a).items():
        modes = tree._modes(node)
        rest = [m for m in range(len(dims)) if m not in modes]
        mat = A.transpose(list(modes) + rest).reshape(math.prod(dims[m] for m in modes), -1)
        ref = np.linalg.svd(mat, compute_uv=False)[:s.shape[0]]
        close(s, np.pad(ref, (0, s.shape[0] - ref.shape[0])), dtype, factor=8, scale=nA)


@covers("cp.CP", "cp.random", "cp.to_dense", "cp.inner", "cp.norm", "cp.num_params",
        "cp.rank_bound", "cp.als", "cp.from_dense", "cp.check")
@DT
@settings(max_examples=1)
@given(dims_st(1, 3, 3), ranks_st, seeds)
def test_cp_matches_dense(dtype, dims, rank, seed):
    a = cp.random(key(seed), dims, rank, dtype)
    b = cp.random(key(seed + 1), dims, 2, dtype)
    same_dtype(a, dtype)
    assert a.rank == rank and cp.check(a) is a and cp.num_params(a) == rank * (1 + sum(dims))
    A = np_cp(a)
    checks(dtype, a, A, cp, b, np_cp(b))
    x = tucker.to_dense(tucker.random(key(seed), dims, 1, dtype))  # rank 1: ALS recovers it
    r = min(rank, cp.rank_bound(dims))
    fit, errs = cp.als(x, r, n_iter=3, return_errors=True)
    same_dtype(fit, dtype)
    finite((fit, errs))
    close(cp.to_dense(fit), np.asarray(upcast(x)), dtype, factor=20)
    if rank > cp.rank_bound(dims):
        raises(lambda: cp.from_dense(x, max_rank=rank, n_iter=1), "rank")


@covers("cp.mode_product", "cp.normalize", "cp.nonneg_hals")
@DT
@settings(max_examples=1)
@given(dims_st(1, 3, 3), ranks_st, seeds)
def test_cp_mode_product_normalize_nonneg(dtype, dims, rank, seed):
    a = cp.random(key(seed), dims, rank, dtype)
    A = np_cp(a)
    nA = max(1.0, np.linalg.norm(A))
    n = cp.normalize(a)
    same_dtype(n, dtype)
    close(np_cp(n), A, dtype, factor=4, scale=nA)
    m = normal(key(seed + 1), (2, dims[-1]), dtype)
    pm = cp.mode_product(a, m, -1)
    same_dtype(pm, dtype)
    ref = np.moveaxis(np.tensordot(np.asarray(upcast(m)), A, axes=([1], [A.ndim - 1])), 0, -1)
    close(np_cp(pm), ref, dtype, factor=4, scale=nA * max(1.0, np.abs(upcast(m)).sum()))
    v = normal(key(seed + 2), (dims[0],), dtype)
    pv = cp.mode_product(a, v, 0)
    refv = np.tensordot(np.asarray(upcast(v)), A, axes=([0], [0]))
    got = np_cp(pv) if len(dims) > 1 else np.asarray(upcast(pv))
    close(got, refv, dtype, factor=4, scale=nA * max(1.0, np.abs(upcast(v)).sum()))
    raises(lambda: cp.mode_product(a, jnp.ones((2, dims[-1] + 1), dtype), -1), "matrix")
    x = jnp.abs(tucker.to_dense(tucker.random(key(seed), dims, 1, dtype)))  # rank 1, >= 0
    r = min(rank, cp.rank_bound(dims))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raises(lambda: cp.nonneg_hals(x.astype(dtype), r, n_iter=2), "x")
        return
    fit, errs = cp.nonneg_hals(x, r, n_iter=20, return_errors=True)
    same_dtype(fit, dtype)
    finite((fit, errs))
    for leaf in jax.tree.leaves(fit):
        assert np.all(np.asarray(upcast(leaf)) >= 0)
    close(cp.to_dense(fit), np.asarray(upcast(x)), dtype, factor=200)


@covers("tucker.normalize", "tucker.partial_hooi", "tucker.nonneg_hals", "tucker.mode_product",
        "tucker.hooi")
@DT
@settings(max_examples=1)
@given(dims_st(2, 3, 3), ranks_st, seeds)
def test_tucker_normalize_partial_masked_nonneg(dtype, dims, rank, seed):
    a = tucker.random(key(seed), dims, 1, dtype)
    A = np_tucker(a)
    nA = max(1.0, np.linalg.norm(A))
    n = tucker.normalize(a)
    same_dtype(n, dtype)
    close(np_tucker(n), A, dtype, factor=4, scale=nA)
    v = normal(key(seed + 2), (dims[0],), dtype)
    pv = tucker.mode_product(a, v, 0)
    refv = np.tensordot(np.asarray(upcast(v)), A, axes=([0], [0]))
    close(np_tucker(pv), refv, dtype, factor=4, scale=nA * max(1.0, np.abs(upcast(v)).sum()))
    x = tucker.to_dense(a)  # multilinear rank 1: every fit below recovers it
    core, factors = tucker.partial_hooi(x, 1, [-1], n_iter=2)
    same_dtype((core, factors), dtype)
    rec = np.moveaxis(np.tensordot(np.asarray(upcast(factors[0])), np.asarray(upcast(core)),
                                   axes=([1], [len(dims) - 1])), 0, -1)
    close(rec, A, dtype, factor=20, scale=nA)
    raises(lambda: tucker.partial_hooi(x, rank + 4, [0]), "rank")
    m = tucker.hooi(x, 1, 2, mask=jnp.ones(dims))
    same_dtype(m, dtype)
    close(np_tucker(m), A, dtype, factor=20, scale=nA)
    xn = jnp.abs(x)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raises(lambda: tucker.nonneg_hals(xn.astype(dtype), 1, n_iter=2), "x")
        return
    fit = tucker.nonneg_hals(xn, 1, n_iter=10)
    same_dtype(fit, dtype)
    finite(fit)
    for leaf in jax.tree.leaves(fit):
        assert np.all(np.asarray(upcast(leaf)) >= 0)
    close(np_tucker(fit), np.asarray(upcast(xn)), dtype, factor=200, scale=nA)


@covers("tr.TensorRing", "tr.random", "tr.to_dense", "tr.inner", "tr.norm", "tr.num_params",
        "tr.from_dense", "tr.als", "tr.check")
@DT
@settings(max_examples=1)
@given(dims_st(1, 4, 3), ranks_st, seeds)
def test_tr_matches_dense(dtype, dims, rank, seed):
    a = tr.random(key(seed), dims, rank, dtype)
    b = tr.random(key(seed + 1), dims, 1, dtype)
    same_dtype(a, dtype)
    assert a.ranks == (rank,) * len(dims) and tr.check(a) is a
    assert tr.num_params(a) == rank * rank * sum(dims)
    A = np_tr(a)
    checks(dtype, a, A, tr, b, np_tr(b))
    nA = max(1.0, np.linalg.norm(A))
    f = tr.from_dense(tr.to_dense(a))
    same_dtype(f, dtype)
    close(tr.to_dense(f), A, dtype, factor=8, scale=nA)
    g = tr.from_dense(tr.to_dense(a), max_rank=1)
    assert max(g.ranks) == 1
    finite(tr.to_dense(g))
    fit, errs = tr.als(tr.to_dense(b), 1, n_iter=2, return_errors=True)
    same_dtype(fit, dtype)
    finite((fit, errs))
    close(tr.to_dense(fit), np.asarray(upcast(tr.to_dense(b))), dtype, factor=20)


@covers("tucker.random", "tucker.hosvd", "tucker.from_dense", "tucker.hooi",
        "tucker.mode_product", "tucker.inner", "tucker.check", "tucker.to_dense",
        "tucker.norm", "tucker.num_params", "tucker.multilinear_singular_values",
        "tree.random", "tree.from_dense", "tree.round", "tree.inner", "tree.check",
        "tree.balanced_tree", "tree.nodes", "tree.to_dense", "tree.norm", "tree.log_norm",
        "tree.orthogonalize", "tree.singular_values", "tree.num_params",
        "cp.random", "cp.als", "cp.from_dense", "cp.inner", "cp.check", "cp.rank_bound",
        "cp.to_dense", "cp.norm", "cp.num_params",
        "tr.random", "tr.from_dense", "tr.als", "tr.inner", "tr.check", "tr.to_dense",
        "tr.norm", "tr.num_params")
def test_formats_bad_input_names_the_argument():
    x = jnp.ones((2, 3, 2))
    tk = tucker.random(key(0), (2, 3, 2), 1, F64)
    tk2 = tucker.random(key(0), (2, 2, 2), 1, F64)
    tn = tree.random(key(0), (2, 3, 2), 2, dtype=F64)
    tn2 = tree.random(key(0), (2, 2, 2), 2, dtype=F64)
    c = cp.random(key(0), (2, 3), 2, F64)
    c2 = cp.random(key(0), (2, 2), 2, F64)
    r = tr.random(key(0), (2, 3), 2, F64)
    r2 = tr.random(key(0), (2, 2), 2, F64)
    cases = [
        (lambda: tucker.random(key(0), (2, 0), 1), "dims"),
        (lambda: tucker.random(key(0), (2, 3), 3), "rank"),
        (lambda: tucker.random(key(0), (2, 3), (1,)), "rank"),
        (lambda: tucker.random(key(0), (2, 3), 1.5), "rank"),
        (lambda: tucker.hosvd(jnp.ones(())), "x"),
        (lambda: tucker.hosvd(x, (1, 1, 3)), "rank"),
        (lambda: tucker.hosvd(x, rtol=-1.0), "rtol"),
        (lambda: tucker.from_dense(x, max_rank=0), "max_rank"),
        (lambda: tucker.from_dense(x, max_rank=1, rank=1), "max_rank"),
        (lambda: tucker.hooi(x, 1, n_iter=-1), "n_iter"),
        (lambda: tucker.hooi(x, None), "rank"),
        (lambda: tucker.mode_product(x, jnp.ones((2, 5)), 1), "matrix"),
        (lambda: tucker.mode_product(x, jnp.ones((2, 3)), 3), "mode"),
        (lambda: tucker.inner(tk, tk2), "mode sizes"),
        (lambda: tucker.check(tk.factors), "Tucker"),
        (lambda: tucker.to_dense(tucker.Tucker(jnp.ones((2, 2)), tk.factors)), "core"),
        (lambda: tucker.multilinear_singular_values(jnp.ones(())), "x"),
        (lambda: tucker.norm(tucker.Tucker(tk.core, ())), "factors"),
        (lambda: tree.random(key(0), (2, 3), 0), "rank"),
        (lambda: tree.random(key(0), (2, 3), 2, tree=(0, 0)), "tree"),
        (lambda: tree.random(key(0), (2, 3), {0: 5, 1: 1}), "rank"),
        (lambda: tree.from_dense(jnp.ones(())), "x"),
        (lambda: tree.from_dense(x, max_rank=0), "max_rank"),
        (lambda: tree.from_dense(x, tree=((0, 1),)), "tree"),
        (lambda: tree.round(tn, rtol=-1.0), "rtol"),
        (lambda: tree.inner(tn, tn2), "mode sizes"),
        (lambda: tree.balanced_tree(0), "n_modes"),
        (lambda: tree.check(tn.leaves), "TreeTN"),
        (lambda: tree.to_dense(tree.TreeTN(tn.leaves, tn.transfers[:-1], tn.tree)), "transfer"),
        (lambda: tree.norm(tree.TreeTN(tn.leaves[:2], tn.transfers, tn.tree)), "tree"),
        (lambda: tree.log_norm(tree.TreeTN((), (), 0)), "leaves"),
        (lambda: tree.orthogonalize(tk), "TreeTN"),
        (lambda: tree.singular_values(tk), "TreeTN"),
        (lambda: tree.num_params(tk), "TreeTN"),
        (lambda: cp.random(key(0), (2, 3), 0), "rank"),
        (lambda: cp.random(key(0), (2, 3), 2.0), "rank"),
        (lambda: cp.als(x, 7), "rank"),
        (lambda: cp.als(x, 2, n_iter=0), "n_iter"),
        (lambda: cp.from_dense(jnp.ones(()), max_rank=1), "x"),
        (lambda: cp.inner(c, c2), "mode sizes"),
        (lambda: cp.check(tk), "CP"),
        (lambda: cp.to_dense(cp.CP(jnp.ones((3,)), c.factors)), "weights"),
        (lambda: cp.norm(cp.CP(jnp.ones((2, 1)), c.factors)), "weights"),
        (lambda: cp.num_params(tk), "CP"),
        (lambda: cp.rank_bound(()), "dims"),
        (lambda: tr.random(key(0), (2, 3), (1, 2, 3)), "rank"),
        (lambda: tr.random(key(0), (2, 3), 0), "rank"),
        (lambda: tr.from_dense(jnp.ones(())), "x"),
        (lambda: tr.from_dense(x, max_rank=0), "max_rank"),
        (lambda: tr.als(x, 5), "ranks"),
        (lambda: tr.als(x, 1, n_iter=0), "n_iter"),
        (lambda: tr.inner(r, r2), "mode sizes"),
        (lambda: tr.check(tk), "TensorRing"),
        (lambda: tr.to_dense(tr.TensorRing((r.cores[0], jnp.ones((3, 3, 2))))), "bond"),
        (lambda: tr.norm(tr.TensorRing(())), "cores"),
        (lambda: tr.num_params(tk), "TensorRing"),
    ]
    failures = []
    for i, (fn, name) in enumerate(cases):
        try:
            raises(fn, name)
        except BaseException as e:  # collect all, report together
            failures.append((i, name, repr(e)[:300]))
    assert not failures, failures
