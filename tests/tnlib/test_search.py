"""tnlib.search on tiny problems: the masked padded network equals the unpadded one
(dense reference, float64), batched and sequential fits agree, the objective matches
its formula and the fitted network, every search returns a consistent record with
exact evaluation counts (refits included) and is reproducible from its seed, a
replayed run gives the identical log, the benchmark problems are what they claim,
and bad input is refused.

Compile budget: one batched fit (one bucket: ``min_batch == max_batch``; cold and
warm starts share it), one sequential fit and one Adam fit, all on one shared
problem; everything else reuses them."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key

from tnlib import network
from tnlib.search import (
    Evaluator,
    Structure,
    greedy,
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
    unpad,
)

FIT = dict(n_iter=6, restarts=1)
BATCH = dict(min_batch=4, max_batch=4)


@pytest.fixture(scope="module")
def planted():
    return problems.planted_ring(key(3), 4, 3, max_rank=3, dtype=F64)


@pytest.fixture(scope="module")
def prob(planted):
    return problem(planted.tensor, max_rank=3, edges="ring", **FIT)


def rse_of(net, x):
    return float(jnp.sum((network.to_dense(net) - x) ** 2) / jnp.sum(x ** 2))


# ------------------------------------------------------------------ padding and masks


@pytest.mark.parametrize("search_perm", [False, True])
def test_masked_padded_network_equals_unpadded(search_perm):
    dims = (2, 3, 2)
    sp = search_space(dims, 3, edges="all", search_perm=search_perm)
    perm = (1, 0, 2) if search_perm else (0, 1, 2)
    s = Structure((2, 1, 3), perm)
    padded = padded_adjacency(sp)
    spec = network.einsum_spec(padded)
    raw = network.random(key(0), network.dims_of(padded), padded, F64).cores
    adj = sp.adjacency(s)
    other = network.random(key(1), network.dims_of(adj, perm), adj, F64, perm=perm)

    @jax.jit
    def dense_forms(raw, other):
        masked = mask(sp, s, raw)
        net = unpad(sp, s, masked)
        return (masked, net, network.contract(masked, spec), network.to_dense(net),
                pad(sp, net), network.contract(pad(sp, other), spec), network.to_dense(other))

    masked, net, dense, small, repadded, dense_o, small_o = dense_forms(raw, other)
    assert net.adjacency == sp.adjacency(s) and net.perm == perm
    # the padded network (node order) is the small one, zero beyond its mode sizes
    small = small.transpose(perm)
    close(dense[tuple(slice(0, d) for d in small.shape)], small)
    close(jnp.sum(dense ** 2), jnp.sum(small ** 2))
    # pad is the inverse of unpad on masked cores
    for a, b in zip(repadded, masked, strict=True):
        close(a, b, 0)
    # a random small network, padded, represents the same tensor
    close(dense_o[tuple(slice(0, d) for d in small.shape)], small_o.transpose(perm))


# ------------------------------------------------------------------ engine


def test_engine_batched_equals_sequential_counts_objective_refit(planted, prob):
    sp = prob.space
    cands = [sp.uniform(1), sp.uniform(2), sp.structure(planted.adjacency)]
    b = Evaluator(prob, 7, **BATCH)
    s = Evaluator(prob, 7, batched=False, **BATCH)
    rb, rs = b.evaluate(cands), s.evaluate(cands)
    assert b.count == s.count == 3 and len(b.log) == len(b.fits) == 3
    for eb, es in zip(rb, rs, strict=True):
        assert eb.structure == es.structure and eb.index == es.index
        np.testing.assert_allclose(eb.rse, es.rse, rtol=1e-6, atol=1e-12)
        assert eb.n_params == network.num_params(sp.adjacency(eb.structure))
        assert eb.objective == objective(eb.n_params, sp.size, eb.rse, prob.lam)
        assert eb.objective == eb.n_params / planted.tensor.size + prob.lam * eb.rse
        net = unpad(sp, eb.structure, eb.cores)
        np.testing.assert_allclose(rse_of(net, prob.target), eb.rse, rtol=1e-6, atol=1e-12)
    # cached structures are answered again without counting
    again = b.evaluate(cands[:2])
    assert b.count == 3 and [e.index for e in again] == [0, 1]
    # a warm start from fitted cores (greedy's path) is a counted evaluation of its own
    grown = Structure((2, 2, 2, 3), sp.perm)
    (w,) = b.evaluate([grown], init=[rb[1].cores])
    assert b.count == 4 and w.index == 3
    np.testing.assert_allclose(rse_of(unpad(sp, grown, w.cores), prob.target), w.rse,
                               rtol=1e-6, atol=1e-12)
    # a refit is a new evaluation from a fresh start; the cache keeps the better fit
    out = b.refit([cands[0], cands[1], Structure((3, 1, 1, 1), sp.perm)])
    assert b.count == 6 and out[2] is None and [r.index for r in b.log[-2:]] == [4, 5]
    assert [r.structure for r in b.log[-2:]] == cands[:2]
    for s0, e in zip(cands[:2], out[:2], strict=True):
        fits = [r for r in b.log if r.structure == s0]
        assert len(fits) == 2 and e.objective == min(r.objective for r in fits)
        assert b.lookup(s0) is e
    assert b.best.objective == min(r.objective for r in b.log)
    # the budget stops evaluation exactly, refits included
    c = Evaluator(prob, 7, max_evals=2, **BATCH)
    out = c.evaluate(cands)
    assert c.count == 2 and c.exhausted and out[2] is None
    assert c.refit(cands[:1]) == [None] and c.count == 2


def test_loss_problem_uses_the_loss_as_error(planted):
    x = planted.tensor

    def loss(net):
        return jnp.sum((network.to_dense(net) - x) ** 2)

    prob = problem(loss=loss, dims=x.shape, max_rank=2, edges="ring", n_iter=10, restarts=1)
    ev = Evaluator(prob, 0, **BATCH)
    (e,) = ev.evaluate([prob.space.uniform(2)])
    net = unpad(prob.space, e.structure, e.cores)
    np.testing.assert_allclose(float(loss(net)), e.rse, rtol=1e-6)
    assert e.objective == e.n_params / x.size + prob.lam * e.rse


# ------------------------------------------------------------------ algorithms


ALGOS = {
    "tnale": functools.partial(tnale, radius=(1, 1)),
    "tnls": functools.partial(tnls, n_samples=4),
    "tnga": functools.partial(tnga, pop_size=4, n_elite=1),
    "greedy": greedy,
}


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_search_record_is_consistent_and_reproducible(name, prob):
    sp = prob.space
    budget = 9
    r = ALGOS[name](prob, 5, max_evals=budget, **BATCH)
    assert r.algorithm == name
    assert 1 <= r.n_evals <= budget and r.n_evals == len(r.log)
    assert [e.index for e in r.log] == list(range(r.n_evals))
    if name != "tnale":  # only TnALE refits
        assert len({e.structure for e in r.log}) == r.n_evals
    best = min(r.log, key=lambda e: (e.objective, e.index))
    assert (r.structure, r.objective, r.rse) == (best.structure, best.objective, best.rse)
    assert r.adjacency == sp.adjacency(r.structure) == r.network.adjacency
    assert r.n_params == network.num_params(r.adjacency)
    np.testing.assert_allclose(rse_of(r.network, prob.target), r.rse, rtol=1e-6, atol=1e-12)
    for e in r.log:
        assert e.objective == objective(e.n_params, sp.size, e.rse, prob.lam)
        assert all(1 <= q <= sp.max_rank for q in e.structure.ranks)
    if name == "greedy":
        assert r.log[0].structure == sp.uniform(1)
    again = ALGOS[name](prob, 5, max_evals=budget, **BATCH)
    assert [(e.structure, e.rse) for e in again.log] == [(e.structure, e.rse) for e in r.log]


def test_tnale_refits_a_stalled_neighbourhood_and_resumes_identically(prob):
    sp = prob.space
    seen = []
    run = functools.partial(tnale, prob, 2, radius=(1, 1), max_evals=80, **BATCH)
    r = run(on_batch=seen.append)
    ev = seen[-1]
    assert r.n_evals == ev.count == len(ev.fits) < 80  # it stopped by itself
    counts = {}
    for e in r.log:
        counts[e.structure] = counts.get(e.structure, 0) + 1
    assert max(counts.values()) == 2  # n_refit=1: each structure fitted at most twice
    # it stopped at a structure whose whole radius-1 neighbourhood was refitted
    x = r.structure
    for e in range(len(sp.edges)):
        for q in (x.ranks[e] - 1, x.ranks[e] + 1):
            if 1 <= q <= sp.max_rank:
                assert counts[Structure(x.ranks[:e] + (q,) + x.ranks[e + 1:], x.perm)] == 2
    # without refits it never fits a structure twice
    plain = tnale(prob, 2, radius=(1, 1), max_evals=80, n_refit=0, **BATCH)
    assert len({e.structure for e in plain.log}) == plain.n_evals
    # resuming from the evaluations of the first half of the batches gives the same run
    cut = max(rec.batch for rec in r.log) // 2
    replay = [(rec, ev.fits[rec.index]) for rec in r.log if rec.batch <= cut]
    assert 0 < len(replay) < r.n_evals
    again = run(replay=replay)

    def rows(log):  # everything but the wall time
        return [(e.index, e.structure, e.n_params, e.objective, e.rse, e.batch) for e in log]

    assert rows(again.log) == rows(r.log)
    assert (again.structure, again.objective, again.n_evals) == (r.structure, r.objective,
                                                                  r.n_evals)


def test_tnale_keeps_refitting_a_stalled_neighbourhood_for_stall_rounds(prob):
    """``stall_rounds`` failed refit rounds in a row end the search (the official code
    re-evaluates until its budget): more rounds spend more evaluations, each structure
    is refitted at most ``n_refit`` times, and a replayed run repeats it exactly."""
    one = tnale(prob, 2, radius=(1, 1), max_evals=200, **BATCH)
    run = functools.partial(tnale, prob, 2, radius=(1, 1), max_evals=200, n_refit=3,
                            stall_rounds=3, **BATCH)
    seen = []
    more = run(on_batch=seen.append)
    assert more.n_evals > one.n_evals
    assert [e.structure for e in more.log[:one.n_evals]] == [e.structure for e in one.log]
    counts = {}
    for e in more.log:
        counts[e.structure] = counts.get(e.structure, 0) + 1
    assert max(counts.values()) <= 4  # the first fit and at most 3 refits
    assert more.objective <= one.objective
    replay = [(rec, seen[-1].fits[rec.index]) for rec in more.log]
    again = run(replay=replay)
    assert [(e.structure, e.rse) for e in again.log] == [(e.structure, e.rse)
                                                           for e in more.log]
    with pytest.raises(ValueError, match="stall_rounds must be an int >= 1"):
        tnale(prob, 0, stall_rounds=0)


# ------------------------------------------------------------------ problems


def test_planted_problems_and_image_tensor():
    p = problems.planted_network(key(4), 4, 2, n_extra=1, min_rank=2, max_rank=3, dtype=F64)
    ring = {(0, 1), (1, 2), (2, 3), (0, 3)}
    assert len(p.edges) == 5 and ring < set(p.edges)
    adj = np.asarray(p.adjacency)
    assert (adj == adj.T).all() and tuple(np.diag(adj)) == (2, 2, 2, 2)
    for i, j in p.edges:
        assert 2 <= adj[i, j] <= 3
    assert p.n_params == network.num_params(p.adjacency) and p.network.adjacency == p.adjacency
    dense = network.to_dense(p.network)
    close(p.tensor, dense / jnp.linalg.norm(dense.ravel()))
    # a search over the planted support contains the planted structure
    sp = search_space(p.tensor.shape, 3, edges=p.edges)
    assert sp.num_params(sp.structure(p.adjacency)) == p.n_params
    q = problems.planted_ring(key(5), 5, 2, min_rank=1, max_rank=2, dtype=F64)
    assert q.edges == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 4))
    ranks = [q.adjacency[i][j] for i, j in q.edges]
    assert min(ranks) >= 1 and max(ranks) == 2  # never the trivial network
    close(jnp.linalg.norm(q.tensor.ravel()), 1.0)
    with pytest.raises(ValueError, match="n_extra must be in 0..2"):
        problems.planted_network(key(0), 4, 2, n_extra=3)
    with pytest.raises(ValueError, match="order must be an int >= 2"):
        problems.planted_ring(key(0), 1)

    import skimage.data
    import skimage.transform

    img = problems.image_tensor("camera", (4, 2, 2, 4), dtype=F64)
    assert img.shape == (4, 2, 2, 4) and img.dtype == F64
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    ref = np.asarray(skimage.data.camera(), np.float64)
    ref = skimage.transform.resize(ref / ref.max(), (8, 8), anti_aliasing=True)
    close(img.reshape(8, 8), ref)  # rows from the first half of the modes
    with pytest.raises(ValueError, match="no image 'nope'"):
        problems.image_tensor("nope")


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("algo", [tnale, tnls])
def test_random_starts_differ_between_seeds_and_repeat_for_one(algo, planted):
    """``init="random"`` (the official TnALE start): ranks in 1..max_rank and, with the
    permutation searched, a random permutation, drawn from the search seed."""
    prob = problem(planted.tensor, max_rank=3, edges="ring", search_perm=True, **FIT)
    starts = [algo(prob, s, init="random", max_evals=1, **BATCH).log[0].structure
              for s in range(6)]
    assert len(set(starts)) > 1, starts
    assert len({s.perm for s in starts}) > 1, starts
    for s in starts:
        assert all(1 <= q <= 3 for q in s.ranks) and sorted(s.perm) == [0, 1, 2, 3]
    again = algo(prob, 2, init="random", max_evals=1, **BATCH).log[0].structure
    assert again == starts[2]
    # without a searched permutation the start keeps the space's
    fixed = algo(problem(planted.tensor, max_rank=3, edges="ring", **FIT), 1, init="random",
                 max_evals=1, **BATCH).log[0].structure
    assert fixed.perm == (0, 1, 2, 3)
    with pytest.raises(ValueError, match="init must be None, 'random'"):
        algo(prob, 0, init="uniform", max_evals=1)


def test_bad_input_errors(planted, prob):
    x = planted.tensor
    with pytest.raises(ValueError, match="max_rank must be an int >= 1"):
        problem(x, max_rank=0)
    with pytest.raises(ValueError, match="smaller than the smallest network"):
        problem(x, max_rank=2, max_params=int(sum(x.shape)) - 1)
    asym = np.diag(x.shape)
    asym[asym == 0] = 1
    asym[0, 1] = 2
    with pytest.raises(ValueError, match="support must be symmetric"):
        problem(x, max_rank=2, support=asym)
    wrong = np.ones((4, 4), int) * 2
    with pytest.raises(ValueError, match="mode sizes of support .* do not match"):
        problem(x, max_rank=2, support=wrong)
    with pytest.raises(ValueError, match="dims .* do not match the target's shape"):
        problem(x, max_rank=2, dims=(3, 3, 3, 4))
    bad_init = np.array(prob.space.adjacency(prob.space.uniform(2)))
    bad_init[0, 1] = 3
    with pytest.raises(ValueError, match="init must be symmetric"):
        tnale(prob, 0, init=bad_init, max_evals=1)
    sizes = np.array(prob.space.adjacency(prob.space.uniform(2)))
    sizes[0, 0] = 5
    with pytest.raises(ValueError, match="mode sizes of init .* do not match"):
        tnls(prob, 0, init=sizes, max_evals=1)
    chord = np.array(prob.space.adjacency(prob.space.uniform(2)))
    chord[0, 2] = chord[2, 0] = 2
    with pytest.raises(ValueError, match="outside the search space's support"):
        tnale(prob, 0, init=chord, max_evals=1)
    with pytest.raises(ValueError, match="max_evals must be an int >= 1"):
        greedy(prob, 0, max_evals=0)
    with pytest.raises(ValueError, match="n_refit must be an int >= 0"):
        tnale(prob, 0, n_refit=-1)
    with pytest.raises(ValueError, match="p_move must be a probability"):
        tnls(prob, 0, p_move=0.0)
    with pytest.raises(ValueError, match="give exactly one of target"):
        problem(max_rank=2)
