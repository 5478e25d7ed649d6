"""Properties of tnlib.search over random shapes, orders, ranks (1, and above what the
tensor needs), and the five dtypes: every call agrees with a dense float64 computation
done here by hand (numpy einsum / SVDs) or raises ValueError / TypeError naming the
argument.

dtype policy (tnlib.search): the padding helpers (``pad`` / ``mask`` / ``unpad``) and
the planted problems take every dtype and keep it; ``problem`` fits real targets only
(a complex target or ``dtype`` is a TypeError naming it), bfloat16 targets are fitted
in float32; the rank selectors (``core_shapes``, ``tt_ranks`` and their greedy
baselines) read any real or complex array and compute in float64 / complex128.

Compile budget: one masked-ALS fit, in float32 (float64 fits are what
tests/tnlib/test_search.py runs), on a tiny padded layout (order-3 ring, mode size 2,
``max_rank`` 3: ranks up to 3 exceed what a 2 x 2 x 2 tensor needs); every Evaluator and
search here reuses it (one bucket). Its results are checked against float64 references.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import (
    ALL_DTYPES,
    BF16,
    C64,
    C128,
    F32,
    F64,
    close,
    covers,
    dims_st,
    dtype_id,
    finite,
    key,
    raises,
    same_dtype,
    seeds,
    upcast,
)

from tnlib import network
from tnlib.search import (
    EvalRecord,
    Evaluation,
    Evaluator,
    FitConfig,
    Problem,
    RankSelection,
    SearchResult,
    SearchSpace,
    Structure,
    core_shapes,
    greedy,
    greedy_core_shapes,
    greedy_tt_ranks,
    mask,
    objective,
    pad,
    padded_adjacency,
    problem,
    problems,
    search_space,
    tnale,
    tnga,
    tnls,
    tt_ranks,
    unpad,
)

FIT = dict(n_iter=3, restarts=1)
TOL = dict(rtol=1e-4, atol=1e-6)  # a float32 fit against its float64 dense reference
BATCH = dict(min_batch=4, max_batch=4)
COMPLEX = (jnp.complex64, jnp.complex128)


def is_complex(dtype):
    return jnp.dtype(dtype) in map(jnp.dtype, COMPLEX)


def rand(rng, shape, dtype):
    """Gaussian array of ``dtype`` drawn on the host (no per-shape PRNG compile)."""
    a = rng.standard_normal(shape)
    if is_complex(dtype):
        a = a + 1j * rng.standard_normal(shape)
    return jnp.asarray(a.astype(jnp.dtype(dtype)))


def rand_network(rng, adjacency, perm, dtype):
    """A Network of structure ``adjacency`` with Gaussian cores (host-drawn)."""
    adj = tuple(tuple(int(v) for v in row) for row in np.asarray(adjacency))
    n = len(adj)
    shapes = [(adj[k][k],) + tuple(adj[k][j] for j in range(n) if j != k and adj[k][j] > 1)
              for k in range(n)]
    return network.Network(tuple(rand(rng, sh, dtype) for sh in shapes), adj, tuple(perm))


def np_dense(cores, spec):
    """Contraction of ``cores`` by ``spec`` in numpy float64 / complex128."""
    return np.einsum(spec, *[np.asarray(upcast(c)) for c in cores], optimize=True)


def net_dense(net):
    """Dense tensor of a tnlib Network (original mode order), in numpy float64."""
    return np_dense(net.cores, network.einsum_spec(net.adjacency, net.perm))


def rse(x, approx):
    x = np.asarray(upcast(x))
    return float(np.sum(np.abs(x - approx) ** 2) / np.sum(np.abs(x) ** 2))


@pytest.fixture(scope="module")
def planted():
    return problems.planted_ring(key(1), 3, 2, min_rank=1, max_rank=2, dtype=F64)


@pytest.fixture(scope="module")
def prob(planted):
    return problem(planted.tensor.astype(F32), max_rank=3, edges="ring", **FIT)


def random_structure(sp, rng):
    perm = tuple(int(p) for p in rng.permutation(sp.n_nodes)) if sp.search_perm else sp.perm
    return sp.clip(rng.integers(1, sp.max_rank + 1, len(sp.edges)), perm)


# ------------------------------------------------------------------ search spaces


@covers("search.search_space", "search.SearchSpace", "search.Structure",
        "search.padded_adjacency")
@settings(max_examples=4)
@given(dims_st(2, 4, 3), st.integers(1, 5), st.sampled_from(["all", "ring", "chain"]),
       st.booleans(), seeds)
def test_space_structures_and_adjacency(dims, max_rank, edges, search_perm, seed):
    rng = np.random.default_rng(seed)
    n = len(dims)
    sp = search_space(dims, max_rank, edges=edges, search_perm=search_perm)
    assert isinstance(sp, SearchSpace) and sp.dims == dims and sp.size == math.prod(dims)
    want = {"all": set(itertools.combinations(range(n), 2)),
            "chain": {(k, k + 1) for k in range(n - 1)},
            "ring": {(k, k + 1) for k in range(n - 1)} | {(0, n - 1)}}[edges]
    assert set(sp.edges) == want and len(sp.edges) == len(want)
    s = random_structure(sp, rng)
    assert isinstance(s, Structure)
    a = np.asarray(sp.adjacency(s))
    assert (a == a.T).all() and tuple(np.diag(a)) == tuple(dims[p] for p in s.perm)
    for (i, j), r in zip(sp.edges, s.ranks, strict=True):
        assert a[i, j] == r and 1 <= r <= max_rank
    off = a + np.diag([1 - v for v in np.diag(a)])  # ones on the diagonal
    assert all(off[i, j] == 1 for i, j in itertools.combinations(range(n), 2)
               if (i, j) not in want)
    assert sp.structure(a, s.perm) == s
    assert sp.num_params(s) == network.num_params(a) == sum(math.prod(row) for row in a)
    assert sp.uniform(max_rank + 7) == Structure((max_rank,) * len(sp.edges), sp.perm)
    assert sp.uniform(0) == Structure((1,) * len(sp.edges), sp.perm)
    # the padded network: every support edge at max_rank, padded mode sizes
    pa = np.asarray(padded_adjacency(sp))
    node = max(dims) if search_perm else None
    assert tuple(np.diag(pa)) == ((node,) * n if node else tuple(dims))
    for i, j in itertools.combinations(range(n), 2):
        assert pa[i, j] == pa[j, i] == (max_rank if (i, j) in want else 1)
    # the same space from a support matrix
    sup = search_space(dims, max_rank, support=sp.adjacency(sp.uniform(2)))
    assert set(sup.edges) == (want if max_rank > 1 else set())
    # a budget: the smallest network is allowed, one parameter less is not
    small = search_space(dims, max_rank, edges=edges, max_params=sum(dims))
    assert small.feasible(small.uniform(1))
    assert small.feasible(small.uniform(2)) == (max_rank == 1 or not small.edges)
    raises(lambda: search_space(dims, max_rank, max_params=sum(dims) - 1), "max_params")
    raises(lambda: search_space(dims, 0), "max_rank")
    raises(lambda: search_space(dims, 2.5), "max_rank")
    raises(lambda: search_space(dims[:1], 2), "dims")
    raises(lambda: search_space(dims, 2, edges="star"), "edges")
    raises(lambda: search_space(dims, 2, edges=[(0, n)]), "edges")
    raises(lambda: search_space(dims, 2, perm=(0,) * n), "perm")
    asym = np.array(sp.adjacency(sp.uniform(1)))
    asym[0, 1] = 2
    raises(lambda: search_space(dims, 2, support=asym), "support must be symmetric")
    wrong = np.array(sp.adjacency(sp.uniform(1)))
    wrong[0, 0] += 1
    raises(lambda: search_space(dims, 2, support=wrong, perm=s.perm), "mode sizes of support")
    raises(lambda: sp.structure(asym), "init must be symmetric")
    raises(lambda: sp.structure(wrong, s.perm, "adj"), "mode sizes of adj")
    too_big = np.array(a)
    i, j = sp.edges[0]
    too_big[i, j] = too_big[j, i] = max_rank + 1
    raises(lambda: sp.structure(too_big, s.perm, "adj"), "adj has rank")


# ------------------------------------------------------------------ pad / mask / unpad


def expected_mask(sp, s):
    """Per padded core: 1 on the entries the structure ``s`` uses, computed from the
    padded adjacency (node k's bond axes in increasing neighbour order)."""
    pa = padded_adjacency(sp)
    a = sp.adjacency(s)
    out = []
    for k in range(sp.n_nodes):
        nbrs = [j for j in range(sp.n_nodes) if j != k and pa[k][j] > 1]
        shape = (pa[k][k],) + tuple(pa[k][j] for j in nbrs)
        idx = np.indices(shape)
        keep = idx[0] < a[k][k]
        for ax, j in enumerate(nbrs):
            keep &= idx[ax + 1] < a[k][j]
        out.append(keep)
    return out


# one case per dtype: rank one only (no edges), ranks above what the unfoldings allow
# (rank 4 on a 2 x 2 chain), mode sizes 1, padded modes (searched permutation)
PAD_CASES = [
    (BF16, (2, 3, 2), 3, "all", True, 1),
    (F32, (3, 1, 2, 2), 2, "ring", False, 2),
    (F64, (2, 2), 4, "chain", False, 3),
    (C64, (3, 2, 2), 1, "all", True, 4),
    (C128, (2, 3, 2, 3), 3, "ring", True, 5),
]


@covers("search.pad", "search.mask", "search.unpad", "search.padded_adjacency")
@pytest.mark.parametrize("dtype, dims, max_rank, edges, search_perm, seed", PAD_CASES,
                         ids=[dtype_id(c[0]) for c in PAD_CASES])
def test_pad_mask_unpad_agree_with_dense(dtype, dims, max_rank, edges, search_perm, seed):
    check_pad_mask_unpad(dtype, dims, max_rank, edges, search_perm, seed)


@covers("search.pad", "search.mask", "search.unpad")
@settings(max_examples=3)
@given(dims_st(2, 4, 3), st.integers(1, 4), st.sampled_from(["all", "ring", "chain"]),
       st.booleans(), seeds)
def test_pad_mask_unpad_random_structures(dims, max_rank, edges, search_perm, seed):
    check_pad_mask_unpad(F64, dims, max_rank, edges, search_perm, seed)


@functools.partial(jax.jit, static_argnums=(0, 1))
def pad_forms(sp, s, raw, other):
    masked = mask(sp, s, raw)
    net = unpad(sp, s, masked)
    padded = pad(sp, other)
    return masked, net, pad(sp, net), padded, mask(sp, s, padded), unpad(sp, s, padded)


def check_pad_mask_unpad(dtype, dims, max_rank, edges, search_perm, seed):
    rng = np.random.default_rng(seed)
    sp = search_space(dims, max_rank, edges=edges, search_perm=search_perm)
    s = random_structure(sp, rng)
    pa = padded_adjacency(sp)
    spec = network.einsum_spec(pa)  # node order, padded mode sizes
    raw = tuple(rand(rng, keep.shape, dtype) for keep in expected_mask(sp, s))
    other = rand_network(rng, sp.adjacency(s), s.perm, dtype)
    # one jitted call (the space and structure are static)
    masked, net, repadded, padded, remasked, unpadded = pad_forms(sp, s, raw, other)
    same_dtype(masked, dtype)
    for m, r, keep in zip(masked, raw, expected_mask(sp, s), strict=True):
        assert m.shape == r.shape
        m, r = np.asarray(upcast(m)), np.asarray(upcast(r))
        np.testing.assert_array_equal(m[keep], r[keep])  # untouched where used
        np.testing.assert_array_equal(m[~keep], 0)  # exactly zero elsewhere
    same_dtype(net.cores, dtype)
    assert net.adjacency == sp.adjacency(s) and net.perm == s.perm
    network.check(net)
    # the padded masked network contracts to the small one (node order), zero beyond
    big = np_dense(masked, spec)
    small = net_dense(net).transpose(s.perm)
    inside = tuple(slice(0, d) for d in small.shape)
    np.testing.assert_allclose(big[inside], small, rtol=1e-12, atol=1e-12)
    rest = big.copy()
    rest[inside] = 0
    np.testing.assert_array_equal(rest, 0)
    finite(small)
    # pad inverts unpad exactly; a random small network round-trips and keeps its tensor
    for a, b in zip(repadded, masked, strict=True):
        np.testing.assert_array_equal(np.asarray(upcast(a)), np.asarray(upcast(b)))
    same_dtype(padded, dtype)
    for a, b in zip(remasked, padded, strict=True):
        np.testing.assert_array_equal(np.asarray(upcast(a)), np.asarray(upcast(b)))
    assert unpadded.adjacency == other.adjacency and unpadded.perm == other.perm
    for a, b in zip(unpadded.cores, other.cores, strict=True):
        np.testing.assert_array_equal(np.asarray(upcast(a)), np.asarray(upcast(b)))
    dense_o = net_dense(other).transpose(s.perm)
    close(np_dense(padded, spec)[inside], dense_o, F64)
    # bad input names the argument
    bad = Structure((max_rank + 1,) + s.ranks[1:], s.perm)
    raises(lambda: mask(sp, bad, raw), "s must hold one rank")
    raises(lambda: unpad(sp, bad, raw), "s must hold one rank")
    raises(lambda: mask(sp, Structure(s.ranks, (0,) * sp.n_nodes), raw), "s perm")
    raises(lambda: mask(sp, s, raw[:-1]), "cores")
    raises(lambda: unpad(sp, s, raw[:-1] + (np.concatenate([raw[-1]] * 2),)), "cores")
    big_net = rand_network(rng, sp.adjacency(bad), s.perm, dtype)
    raises(lambda: pad(sp, big_net), "net has rank")
    raises(lambda: pad(sp, raw), "net must be a tnlib.network.Network")
    raises(lambda: padded_adjacency(dims), "space")
    raises(lambda: mask(pa, s, raw), "space")
    if not search_perm:  # the space fixes perm: a network on another one is refused
        swapped = (1, 0) + tuple(range(2, len(dims)))
        adj = np.array(sp.adjacency(s))
        adj[np.diag_indices(len(dims))] = [dims[p] for p in swapped]
        moved = rand_network(rng, adj, swapped, dtype)
        raises(lambda: pad(sp, moved), "net perm")


# ------------------------------------------------------------------ problem / engine


@covers("search.Evaluator", "search.Evaluation", "search.EvalRecord", "search.objective",
        "search.problem", "search.Problem", "search.FitConfig")
def test_evaluator_batch_equals_alone_and_dense_rse_and_counts_exactly(planted, prob):
    sp, x = prob.space, prob.target
    assert isinstance(prob, Problem) and prob.fit == FitConfig("als", 3, 1, 0.02, None)
    assert prob.lam == 10.0 and prob.target.dtype == F32
    # rank one, a mixed structure, and ranks 3 (above what a 2 x 2 x 2 tensor needs)
    cands = [sp.uniform(1), sp.clip((3, 1, 2)), sp.uniform(3)]
    ev = Evaluator(prob, 11, **BATCH)
    out = ev.evaluate(cands + [cands[1]])  # a duplicate in the batch is free
    assert ev.count == 3 and out[3] is out[1] and [e.index for e in out[:3]] == [0, 1, 2]
    alone = Evaluator(prob, 11, **BATCH)
    singles = [alone.evaluate([c])[0] for c in cands]  # one call each: same indices
    assert alone.count == 3
    for e, a, c in zip(out[:3], singles, cands, strict=True):
        assert isinstance(e, Evaluation) and e.structure == c and a.index == e.index
        np.testing.assert_allclose(e.rse, a.rse, rtol=1e-5, atol=1e-9)
        finite(e.cores, "fitted cores")
        assert math.isfinite(e.rse) and math.isfinite(e.objective)
        net = unpad(sp, c, e.cores)
        err = rse(x, net_dense(net))  # the RSE recomputed densely from the cores
        np.testing.assert_allclose(e.rse, err, **TOL)
        n_params = sum(math.prod(row) for row in sp.adjacency(c))
        assert e.n_params == n_params
        np.testing.assert_allclose(e.objective, n_params / x.size + prob.lam * err, **TOL)
        assert e.objective == objective(e.n_params, sp.size, e.rse, prob.lam)
    assert ev.best.objective == min(e.objective for e in out[:3])
    assert len(ev.log) == len(ev.fits) == 3
    for rec, e in zip(ev.log, out[:3], strict=True):
        assert isinstance(rec, EvalRecord)
        assert (rec.index, rec.structure, rec.n_params, rec.objective, rec.rse) == (
            e.index, e.structure, e.n_params, e.objective, e.rse)
        assert rec.wall_s >= 0 and rec.batch == 0
    # cache hits are free and answer the same evaluation
    again = ev.evaluate(cands[::-1])
    assert ev.count == 3 and [e.index for e in again] == [2, 1, 0]
    # a refit is one more counted evaluation; the cache keeps the better fit
    (rf,) = ev.refit([cands[1]])
    assert ev.count == 4 and ev.log[-1].structure == cands[1]
    assert rf.objective == min(r.objective for r in ev.log if r.structure == cands[1])
    # a warm start from fitted cores is a counted evaluation of its own
    grown = sp.clip((3, 2, 2))
    (w,) = ev.evaluate([grown], init=[out[1].cores])
    assert ev.count == 5 and w.index == 4
    np.testing.assert_allclose(rse(x, net_dense(unpad(sp, grown, w.cores))), w.rse, **TOL)
    # the evaluation budget stops exactly
    capped = Evaluator(prob, 11, max_evals=2, **BATCH)
    res = capped.evaluate(cands)
    assert capped.count == 2 and capped.exhausted and res[2] is None
    assert capped.evaluate([sp.clip((2, 2, 1))]) == [None] and capped.count == 2
    # infeasible structures (over max_params) are answered, not fitted, not counted
    limit = sp.num_params(cands[1])
    bud = problem(x, max_rank=3, edges="ring", max_params=limit, **FIT)
    bev = Evaluator(bud, 11, **BATCH)
    res = bev.evaluate(cands)
    assert bev.count == 2 and len(bev.log) == 2
    assert res[2].index == -1 and res[2].objective == math.inf and res[2].cores is None
    assert all(r.n_params <= limit for r in bev.log)
    # bad input names the argument
    raises(lambda: ev.evaluate([Structure((4, 1, 1), sp.perm)]), "structures")
    raises(lambda: ev.evaluate([Structure((1, 1), sp.perm)]), "structures")
    raises(lambda: ev.evaluate([Structure((1, 1, 1), (0, 2, 1))]), "structures perm")
    raises(lambda: ev.evaluate(cands[:2], init=[out[0].cores]), "init")
    raises(lambda: ev.evaluate(cands[:1], init=[out[0].cores[:2]]), "init")
    raises(lambda: Evaluator("x", 0), "problem")
    raises(lambda: Evaluator(prob, 0, max_evals=0), "max_evals")
    raises(lambda: Evaluator(prob, 0, min_batch=0), "min_batch")
    raises(lambda: Evaluator(prob, 2.5), "key")
    raises(lambda: Evaluator(prob, "seed"), "key")
    assert Evaluator(prob, np.int64(11), **BATCH).evaluate(cands[:1])[0].rse == out[0].rse


@covers("search.problem", "search.Evaluator", "search.objective")
@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)
def test_problem_dtypes_fit_or_raise_naming_the_argument(dtype, planted):
    x = planted.tensor
    if is_complex(dtype):
        xc = x.astype(dtype) * (1 + 0.5j)
        raises(lambda: problem(xc, max_rank=2), "target must be real")
        raises(lambda: problem(x, max_rank=2, dtype=dtype), "dtype")
        return
    p = problem(x.astype(dtype), max_rank=3, edges="ring", **FIT)
    want = F32 if dtype == BF16 else dtype
    assert p.target.dtype == jnp.dtype(want)
    assert problem(x, max_rank=3, dtype=dtype).target.dtype == jnp.dtype(want)
    if dtype == F64:
        return  # float64 fits: tests/tnlib/test_search.py (a second compile here)
    ev = Evaluator(p, 3, **BATCH)
    (e,) = ev.evaluate([p.space.clip((2, 2, 1))])
    same_dtype(e.cores, want)
    finite(e.cores, "fitted cores")
    net = unpad(p.space, e.structure, e.cores)
    err = rse(p.target, net_dense(net))  # against the target it was given (after the cast)
    np.testing.assert_allclose(e.rse, err, rtol=1e-3, atol=1e-5)
    assert abs(e.objective - objective(e.n_params, x.size, err, p.lam)) <= 1e-3 * (1 + p.lam)


def bad_problem_cases(x):
    dims = tuple(x.shape)
    asym = np.diag(dims)
    asym[asym == 0] = 1
    asym[0, 1] = 2
    wrong = np.ones((len(dims),) * 2, int) * 2
    nan = np.asarray(x).copy()
    nan[0, 0, 0] = np.nan
    return [
        (dict(target=x, max_rank=0), "max_rank"),
        (dict(target=x, max_rank=2, max_params=sum(dims) - 1), "max_params"),
        (dict(target=x, max_rank=2, support=asym), "support must be symmetric"),
        (dict(target=x, max_rank=2, support=wrong), "mode sizes of support"),
        (dict(target=x, max_rank=2, dims=dims[::-1] + (1,)), "dims"),
        (dict(target=x, max_rank=2, lam=-1.0), "lam"),
        (dict(target=x, max_rank=2, lam=float("nan")), "lam"),
        (dict(target=x, max_rank=2, n_iter=-1), "n_iter"),
        (dict(target=x, max_rank=2, restarts=0), "restarts"),
        (dict(target=x, max_rank=2, method="sgd"), "method"),
        (dict(target=x, max_rank=2, ridge=-1.0), "ridge"),
        (dict(target=x, max_rank=2, learning_rate=0.0), "learning_rate"),
        (dict(target=x, max_rank=2, edges="star"), "edges"),
        (dict(target=x, max_rank=2, perm=(0, 0, 1)), "perm"),
        (dict(target=nan, max_rank=2), "target must be finite"),
        (dict(target=x[0, 0], max_rank=2), "dims"),
        (dict(max_rank=2), "target"),
        (dict(target=x, loss=lambda net: 0.0, max_rank=2), "target"),
        (dict(loss=3, dims=dims, max_rank=2), "loss"),
        (dict(loss=lambda net: 0.0, max_rank=2), "dims"),
        (dict(loss=lambda net: 0.0, dims=dims, max_rank=2, method="als"), "method"),
        (dict(loss=lambda net: 0.0, dims=dims, max_rank=2, search_perm=True), "search_perm"),
    ]


@covers("search.problem", "search.objective")
@settings(max_examples=3)
@given(st.integers(0, 10**6), st.integers(1, 10**6), st.floats(0, 1e3), st.floats(0, 1e3))
def test_objective_formula_and_bad_problems_name_the_argument(n, size, err, lam):
    val = objective(n, size, err, lam)
    assert val == n / size + lam * err and math.isfinite(val)
    raises(lambda: objective(n, 0, err, lam), "size")
    raises(lambda: objective(-1 - n, size, err, lam), "n_params")
    raises(lambda: objective(n, size, err, -1.0 - lam), "lam")
    x = np.random.default_rng(n).standard_normal((2, 2, 3))
    for kwargs, name in bad_problem_cases(x):
        target = kwargs.pop("target", None)
        raises(lambda t=target, k=kwargs: problem(t, **k), name)


# ------------------------------------------------------------------ the searches


ALGOS = {
    "tnale": functools.partial(tnale, radius=(1, 1)),
    "tnls": functools.partial(tnls, n_samples=3),
    "tnga": functools.partial(tnga, pop_size=3, n_elite=1),
    "greedy": greedy,
}


@covers("search.tnale", "search.tnls", "search.tnga", "search.greedy", "search.SearchResult")
@pytest.mark.parametrize("name", sorted(ALGOS))
def test_search_result_is_its_log_minimum_and_contracts_to_its_rse(name, planted, prob):
    sp, x = prob.space, prob.target
    budget = 5
    r = ALGOS[name](prob, 3, max_evals=budget, **BATCH)
    assert isinstance(r, SearchResult) and r.algorithm == name
    assert 1 <= r.n_evals <= budget and r.n_evals == len(r.log)
    assert [e.index for e in r.log] == list(range(r.n_evals))
    best = min(r.log, key=lambda e: (e.objective, e.index))  # earliest on ties
    assert (r.structure, r.objective, r.rse, r.n_params) == (
        best.structure, best.objective, best.rse, best.n_params)
    assert r.objective == min(e.objective for e in r.log)
    assert r.adjacency == sp.adjacency(r.structure) == r.network.adjacency
    assert r.n_params == network.num_params(r.adjacency)
    finite(r.network.cores, "best cores")
    err = rse(x, net_dense(r.network))
    np.testing.assert_allclose(r.rse, err, **TOL)
    np.testing.assert_allclose(r.objective, r.n_params / x.size + prob.lam * err, **TOL)
    for e in r.log:
        assert e.objective == objective(e.n_params, sp.size, e.rse, prob.lam)
        assert all(1 <= q <= sp.max_rank for q in e.structure.ranks)
        assert math.isfinite(e.objective)
    if name != "tnale":  # only TnALE refits (each refit a logged evaluation)
        assert len({e.structure for e in r.log}) == r.n_evals
    if name == "greedy":
        assert r.log[0].structure == sp.uniform(1)
    # reproducible from the seed
    again = ALGOS[name](prob, 3, max_evals=budget, **BATCH)
    assert [(e.structure, e.rse) for e in again.log] == [(e.structure, e.rse) for e in r.log]
    # under a parameter budget nothing above it is fitted or returned
    limit = sp.num_params(sp.uniform(2))
    bud = problem(x, max_rank=3, edges="ring", max_params=limit, **FIT)
    rb = ALGOS[name](bud, 4, max_evals=budget, **BATCH)
    assert 1 <= rb.n_evals == len(rb.log) <= budget
    assert rb.n_params <= limit and all(e.n_params <= limit for e in rb.log)


def bad_search_cases(sp):
    asym = np.array(sp.adjacency(sp.uniform(2)))
    asym[0, 1] = 3
    sizes = np.array(sp.adjacency(sp.uniform(2)))
    sizes[0, 0] = 5
    return [
        (tnale, dict(radius=(0, 1)), "radius"),
        (tnale, dict(radius=(1,)), "radius"),
        (tnale, dict(max_sweeps=0), "max_sweeps"),
        (tnale, dict(n_refit=-1), "n_refit"),
        (tnale, dict(init=asym), "init must be symmetric"),
        (tnale, dict(init=Structure((4, 1, 1), sp.perm)), "init"),
        (tnls, dict(init=sizes), "mode sizes of init"),
        (tnls, dict(init=Structure((1, 1), sp.perm)), "init"),
        (tnls, dict(n_samples=0), "n_samples"),
        (tnls, dict(radius=0), "radius"),
        (tnls, dict(patience=0), "patience"),
        (tnls, dict(p_move=1.5), "p_move"),
        (tnga, dict(pop_size=0), "pop_size"),
        (tnga, dict(n_generations=0), "n_generations"),
        (tnga, dict(pop_size=3, n_elite=3), "n_elite"),
        (tnga, dict(keep=0.0), "keep"),
        (tnga, dict(p_crossover=1.5), "p_crossover"),
        (tnga, dict(p_mutation=-0.1), "p_mutation"),
        (greedy, dict(patience=-1), "patience"),
    ] + [(algo, dict(max_evals=0), "max_evals") for algo in (tnale, tnls, tnga, greedy)] + [
        (algo, dict(seed=1.5), "seed") for algo in (tnale, tnls, tnga, greedy)] + [
        (algo, dict(min_batch=8, max_batch=4), "min_batch") for algo in (tnale, greedy)]


@covers("search.tnale", "search.tnls", "search.tnga", "search.greedy")
def test_searches_refuse_bad_arguments_by_name(prob):
    for algo, kwargs, name in bad_search_cases(prob.space):
        kwargs = {"seed": 0, **kwargs}
        raises(lambda a=algo, k=kwargs: a(prob, **k), name)


# ------------------------------------------------------------------ rank selection


def svd_tails(mat):
    s = np.linalg.svd(mat, compute_uv=False)
    return np.concatenate([np.cumsum((s ** 2)[::-1])[::-1], [0.0]])


def unfold(x, k):
    return np.moveaxis(x, k, 0).reshape(x.shape[k], -1)


def mode_mul(x, mat, k):
    return np.moveaxis(np.tensordot(mat, x, axes=(1, k)), 0, k)


def tucker_error(x, ranks, sweeps=0):
    """Relative error of the truncated HOSVD (then ``sweeps`` HOOI sweeps) at ``ranks``,
    from the dense reconstruction."""
    us = [np.linalg.svd(unfold(x, k), full_matrices=False)[0][:, :r]
          for k, r in enumerate(ranks)]
    for _ in range(sweeps):
        for k in range(x.ndim):
            y = x
            for j, u in enumerate(us):
                if j != k:
                    y = mode_mul(y, u.conj().T, j)
            us[k] = np.linalg.svd(unfold(y, k), full_matrices=False)[0][:, :ranks[k]]
    approx = x
    for k, u in enumerate(us):
        approx = mode_mul(approx, u @ u.conj().T, k)
    return float(np.linalg.norm(x - approx) / np.linalg.norm(x))


def tt_svd_error(x, bonds):
    """Relative error of the TT-SVD at bond ranks ``(1, r_1, ..., 1)``, from the dense
    contraction of its cores."""
    cores, rest, r = [], x.reshape(1, -1), 1
    for k in range(x.ndim - 1):
        u, s, vh = np.linalg.svd(rest.reshape(r * x.shape[k], -1), full_matrices=False)
        keep = min(bonds[k + 1], s.size)
        cores.append(u[:, :keep].reshape(r, x.shape[k], keep))
        rest, r = s[:keep, None] * vh[:keep], keep
    cores.append(rest.reshape(r, x.shape[-1], 1))
    approx = np.ones((1, 1))
    for c in cores:
        approx = np.tensordot(approx, c, axes=(-1, 0))
    approx = approx.reshape(x.shape)
    return float(np.linalg.norm(x - approx) / np.linalg.norm(x))


def tucker_count(dims, ranks):
    return math.prod(ranks) + sum(n * r for n, r in zip(dims, ranks, strict=True))


def tt_count(dims, bonds):
    return sum(bonds[k] * n * bonds[k + 1] for k, n in enumerate(dims))


def tucker_shapes(dims, budget, consistent=True):
    """Every (consistent) Tucker core shape within the budget (brute force)."""
    caps = [min(n, math.prod(dims) // n) for n in dims]
    for r in itertools.product(*(range(1, c + 1) for c in caps)):
        if tucker_count(dims, r) <= budget and (not consistent or max(r) ** 2 <= math.prod(r)):
            yield r


def tt_bonds(dims, budget):
    """Every consistent TT bond-rank vector within the budget (brute force)."""
    caps = [min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))]
    for inner in itertools.product(*(range(1, c + 1) for c in caps)):
        b = (1, *inner, 1)
        if tt_count(dims, b) <= budget and all(
                b[k + 1] <= b[k] * n and b[k] <= n * b[k + 1] for k, n in enumerate(dims)):
            yield b


# one case per dtype; budget fractions from the smallest network (0) to above full (1.3)
RANK_CASES = [
    (BF16, (3, 4, 2), 0.4, 1),
    (F32, (4,), 0.5, 2),
    (F64, (2, 3, 2, 3), 0.3, 3),
    (C64, (3, 3, 2), 1.3, 4),
    (C128, (2, 2, 3, 2), 0.6, 5),
]


@covers("search.core_shapes", "search.greedy_core_shapes", "search.tt_ranks",
        "search.greedy_tt_ranks", "search.RankSelection")
@pytest.mark.parametrize("dtype, dims, frac, seed", RANK_CASES,
                         ids=[dtype_id(c[0]) for c in RANK_CASES])
def test_rank_selection_respects_budget_and_reports_dense_errors(dtype, dims, frac, seed):
    check_rank_selection(dtype, dims, frac, seed)


@covers("search.core_shapes", "search.greedy_core_shapes", "search.tt_ranks",
        "search.greedy_tt_ranks")
@settings(max_examples=4)
@given(dims_st(1, 4, 4), st.floats(0, 1.3), seeds)
def test_rank_selection_random_shapes_and_budgets(dims, frac, seed):
    check_rank_selection(F64, dims, frac, seed)


def check_rank_selection(dtype, dims, frac, seed):
    x_in = rand(np.random.default_rng(seed), dims, dtype)
    x = np.asarray(upcast(x_in))  # the values the selectors read, in float64 / complex128
    n = len(dims)
    tuck_tails = [svd_tails(unfold(x, k)) for k in range(n)]
    tt_tails = [svd_tails(x.reshape(math.prod(dims[:k + 1]), -1)) for k in range(n - 1)]
    normsq = float(np.sum(np.abs(x) ** 2))
    tight = dict(rtol=1e-7, atol=1e-9)

    def tucker_sur(r):
        return sum(t[q] for t, q in zip(tuck_tails, r, strict=True))

    def tt_sur(b):
        return sum(t[q] for t, q in zip(tt_tails, b[1:-1], strict=True))

    # Tucker: surrogate (exact DP) and exact HOSVD objective
    lo = 1 + sum(dims)
    full = tucker_count(dims, [min(d, math.prod(dims) // d) for d in dims])
    budget = lo + int(frac * max(full - lo, 0))
    best_sur = min(tucker_sur(r) for r in tucker_shapes(dims, budget))
    free = core_shapes(x_in, budget, consistent=False)  # any shape within the caps
    assert free.params == tucker_count(dims, free.ranks) <= budget
    np.testing.assert_allclose(tucker_sur(free.ranks),
                               min(tucker_sur(r) for r in tucker_shapes(dims, budget, False)),
                               rtol=1e-9, atol=1e-12)
    for obj in ("surrogate", "hosvd"):
        sel = core_shapes(x_in, budget, objective=obj)
        assert isinstance(sel, RankSelection) and sel.shape == sel.ranks
        assert sel.budget == budget and sel.evaluations == 0 and len(sel.ranks) == n
        assert sel.params == tucker_count(dims, sel.ranks) <= budget
        assert all(1 <= r <= min(d, math.prod(dims) // d)
                   for r, d in zip(sel.ranks, dims, strict=True))
        assert max(sel.ranks) ** 2 <= math.prod(sel.ranks)
        err = tucker_error(x, sel.ranks)  # the dense truncated HOSVD at the chosen shape
        assert sel.rel_error_lower <= err + 1e-9
        np.testing.assert_allclose(sel.rel_error_lower,
                                   math.sqrt(max(t[r] for t, r in zip(
                                       tuck_tails, sel.ranks, strict=True)) / normsq), **tight)
        if obj == "surrogate":
            np.testing.assert_allclose(sel.rel_error, math.sqrt(tucker_sur(sel.ranks) / normsq),
                                       **tight)
            assert err <= sel.rel_error + 1e-9
            np.testing.assert_allclose(tucker_sur(sel.ranks), best_sur, rtol=1e-9, atol=1e-12)
        else:
            np.testing.assert_allclose(sel.rel_error, err, rtol=1e-6, atol=1e-7)
    for method, sweeps in (("hosvd", 0), ("hooi", 1)):
        g = greedy_core_shapes(x_in, budget, method=method, n_iter=1)
        assert isinstance(g, RankSelection) and g.evaluations >= 0
        assert g.params == tucker_count(dims, g.ranks) <= budget
        assert all(1 <= r <= min(d, math.prod(dims) // d)
                   for r, d in zip(g.ranks, dims, strict=True))
        np.testing.assert_allclose(g.rel_error, tucker_error(x, g.ranks, sweeps), rtol=1e-6,
                                   atol=1e-7)
        assert g.rel_error_lower <= g.rel_error + 1e-9
    # TT: exact DP over consistent bonds, greedy TT-SVD
    lo = sum(dims)
    full = tt_count(dims, (1, *[min(math.prod(dims[:k]), math.prod(dims[k:]))
                                for k in range(1, n)], 1))
    budget = lo + int(frac * max(full - lo, 0))
    t = tt_ranks(x_in, budget)
    assert isinstance(t, RankSelection) and t.budget == budget and t.evaluations == 0
    assert len(t.ranks) == n + 1 and t.ranks[0] == t.ranks[-1] == 1
    assert t.params == tt_count(dims, t.ranks) <= budget
    np.testing.assert_allclose(t.rel_error, math.sqrt(tt_sur(t.ranks) / normsq), **tight)
    np.testing.assert_allclose(tt_sur(t.ranks), min(tt_sur(b) for b in tt_bonds(dims, budget)),
                               rtol=1e-9, atol=1e-12)
    err = tt_svd_error(x, t.ranks)
    assert t.rel_error_lower <= err + 1e-9 and err <= t.rel_error + 1e-9
    gt = greedy_tt_ranks(x_in, budget)
    assert gt.params == tt_count(dims, gt.ranks) <= budget and len(gt.ranks) == n + 1
    assert all(gt.ranks[k + 1] <= gt.ranks[k] * d and gt.ranks[k] <= d * gt.ranks[k + 1]
               for k, d in enumerate(dims))
    np.testing.assert_allclose(gt.rel_error, tt_svd_error(x, gt.ranks), rtol=1e-6, atol=1e-7)
    for sel in (t, gt):
        assert math.isfinite(sel.rel_error) and math.isfinite(sel.rel_error_lower)


@covers("search.core_shapes", "search.greedy_core_shapes", "search.tt_ranks",
        "search.greedy_tt_ranks")
def test_rank_selection_zero_tensor_and_bad_input():
    zero = np.zeros((2, 3, 2))
    for sel in (core_shapes(zero, 20), core_shapes(zero, 20, objective="hosvd"),
                greedy_core_shapes(zero, 20), tt_ranks(zero, 20), greedy_tt_ranks(zero, 20)):
        assert sel.rel_error == sel.rel_error_lower == 0.0
    x = np.random.default_rng(0).standard_normal((2, 3, 2))
    nan = x.copy()
    nan[0, 0, 0] = np.nan
    for fn, lo in ((core_shapes, 1 + 7), (greedy_core_shapes, 1 + 7), (tt_ranks, 7),
                   (greedy_tt_ranks, 7)):
        raises(lambda f=fn, b=lo: f(x, b - 1), "budget")
        raises(lambda f=fn, b=lo: f(x, float(b)), "budget")
        raises(lambda f=fn, b=lo: f(x, True), "budget")
        raises(lambda f=fn, b=lo: f(nan, b), "x must be finite")
        raises(lambda f=fn, b=lo: f(np.float64(1.0), b), "x")
        raises(lambda f=fn, b=lo: f(np.array(["a", "b"]), b), "x")
        raises(lambda f=fn, b=lo: f(np.zeros((0, 2)), b), "x")
    raises(lambda: core_shapes(x, 20, objective="cp"), "objective")
    raises(lambda: greedy_core_shapes(x, 20, method="svd"), "method")
    raises(lambda: greedy_core_shapes(x, 20, n_iter=0), "n_iter")


# ------------------------------------------------------------------ benchmark problems


# one case per dtype: orders 2 to 4, mode size 1, ranks 1 only, ranks above the mode
# size, permuted modes, a ring plus a chord (the float64 case is the shared fixture's)
PLANTED_CASES = [
    (BF16, "ring", 3, 2, 2, 2, True, 1),
    (F32, "ring", 2, 3, 1, 0, False, 2),
    (F64, "ring", 3, 2, 1, 1, False, 1),
    (C64, "ring", 3, 1, 1, 2, True, 4),
    (C128, "network", 4, 3, 1, 1, False, 7),
]


@covers("search.problems")
@pytest.mark.parametrize("dtype, kind, order, dim, lo, span, permute, seed", PLANTED_CASES,
                         ids=[dtype_id(c[0]) for c in PLANTED_CASES])
def test_planted_problems_contract_to_their_tensor(dtype, kind, order, dim, lo, span, permute,
                                                   seed):
    hi = lo + span
    ring = {(k, k + 1) for k in range(order - 1)} | ({(0, order - 1)} if order > 2 else set())
    if kind == "ring":
        p = problems.planted_ring(key(seed), order, dim, min_rank=lo, max_rank=hi,
                                  permute=permute, dtype=dtype)
        assert set(p.edges) == ring
    else:
        n_extra = seed % (order * (order - 1) // 2 - len(ring) + 1)
        p = problems.planted_network(key(seed), order, dim, n_extra=n_extra, min_rank=lo,
                                     max_rank=hi, permute=permute, dtype=dtype)
        assert ring <= set(p.edges) and len(p.edges) == len(ring) + n_extra
    assert p.tensor.shape == (dim,) * order and p.tensor.dtype == jnp.dtype(dtype)
    same_dtype(p.network.cores, dtype)
    assert sorted(p.perm) == list(range(order)) and p.network.perm == p.perm
    if not permute:
        assert p.perm == tuple(range(order))
    a = np.asarray(p.adjacency)
    assert p.network.adjacency == p.adjacency and (a == a.T).all()
    assert tuple(np.diag(a)) == (dim,) * order
    ranks = [a[i, j] for i, j in p.edges]
    assert all(lo <= r <= hi for r in ranks)
    if kind == "ring" and hi > 1:
        assert max(ranks) > 1  # never the trivial network
    assert all(a[i, j] == 1 for i, j in itertools.combinations(range(order), 2)
               if (i, j) not in set(p.edges))
    assert p.n_params == network.num_params(p.adjacency)
    # the planted network contracts to the (unit-norm) tensor
    dense = net_dense(p.network)
    close(p.tensor, dense / np.linalg.norm(dense), dtype, factor=2)
    close(np.linalg.norm(np.asarray(upcast(p.tensor))), 1.0, dtype, factor=2)
    raises(lambda: problems.planted_ring(key(0), 1), "order")
    raises(lambda: problems.planted_ring(key(0), 3, 0), "dim")
    raises(lambda: problems.planted_ring(key(0), 3, 2, min_rank=3, max_rank=2), "min_rank")
    raises(lambda: problems.planted_network(key(0), 4, 2, n_extra=3), "n_extra")
    raises(lambda: problems.planted_network(key(0), 4, True), "dim")


@covers("search.problems")
def test_image_tensor_shapes_and_bad_input():
    import skimage.data
    import skimage.transform

    ref = np.asarray(skimage.data.camera(), np.float64)
    ref = skimage.transform.resize(ref / ref.max(), (8, 4), anti_aliasing=True)
    for shape, dtype in (((2, 4, 2, 2), F64), ((8, 4), F32)):
        img = problems.image_tensor("camera", shape, dtype=dtype)
        assert img.shape == shape and img.dtype == jnp.dtype(dtype)
        finite(img)
        assert 0 <= float(img.min()) and float(img.max()) <= 1
        close(img.reshape(8, 4), ref, dtype)  # rows from the first half of the modes
    raises(lambda: problems.image_tensor("camera", (0, 4)), "shape")
    raises(lambda: problems.image_tensor("camera", ()), "shape")
    raises(lambda: problems.image_tensor("camera", (2.5, 2)), "shape")
    raises(lambda: problems.image_tensor("nope", (2, 2)), "name")
