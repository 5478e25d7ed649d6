"""tnlib.search on tiny problems: the masked padded network equals the unpadded one
(dense reference, float64), batched and sequential fits agree, the objective matches
its formula and the fitted network, every search returns a consistent record with
exact evaluation counts and is reproducible from its seed, and bad input is refused."""

import functools

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

# One fit configuration and one bucket size for the whole file: a few compilations.
FIT = dict(n_iter=8, restarts=1)
BATCH = dict(min_batch=4, max_batch=4)


@functools.lru_cache
def planted():
    return problems.planted_ring(key(3), 4, 3, max_rank=3, dtype=F64)


@functools.lru_cache
def ring_problem():
    return problem(planted().tensor, max_rank=3, edges="ring", **FIT)


def padded_dense(space, cores):
    return network.contract(cores, network.einsum_spec(padded_adjacency(space)))


def rse_of(net, x):
    return float(jnp.sum((network.to_dense(net) - x) ** 2) / jnp.sum(x ** 2))


# ------------------------------------------------------------------ padding and masks


@pytest.mark.parametrize("search_perm", [False, True])
def test_masked_padded_network_equals_unpadded(search_perm):
    dims = (2, 3, 2, 3)
    sp = search_space(dims, 3, edges="all", search_perm=search_perm)
    perm = (1, 0, 3, 2) if search_perm else (0, 1, 2, 3)
    s = Structure((2, 1, 3, 3, 1, 2), perm)
    adj = padded_adjacency(sp)
    raw = network.random(key(0), adj, None, F64).cores
    masked = mask(sp, s, raw)
    net = unpad(sp, s, masked)
    assert net.adjacency == sp.adjacency(s) and net.perm == perm
    # the padded network (node order) is the small one, zero beyond its mode sizes
    dense = padded_dense(sp, masked)
    small = network.to_dense(net).transpose(perm)
    close(dense[tuple(slice(0, d) for d in small.shape)], small)
    close(jnp.sum(dense ** 2), jnp.sum(small ** 2))
    # pad is the inverse of unpad on masked cores
    for a, b in zip(pad(sp, net), masked, strict=True):
        close(a, b, 0)
    # a random small network, padded, represents the same tensor
    other = network.random(key(1), sp.adjacency(s), perm, F64)
    close(padded_dense(sp, pad(sp, other))[tuple(slice(0, d) for d in small.shape)],
          network.to_dense(other).transpose(perm))


# ------------------------------------------------------------------ engine


def test_batched_and_sequential_fits_agree_and_objective_formula():
    prob = ring_problem()
    sp = prob.space
    cands = [sp.uniform(1), sp.uniform(2), sp.structure(planted().adjacency)]
    b = Evaluator(prob, 7, **BATCH)
    s = Evaluator(prob, 7, batched=False, **BATCH)
    rb, rs = b.evaluate(cands), s.evaluate(cands)
    assert b.count == s.count == 3 and len(b.log) == 3
    for eb, es in zip(rb, rs, strict=True):
        assert eb.structure == es.structure and eb.index == es.index
        np.testing.assert_allclose(eb.rse, es.rse, rtol=1e-6, atol=1e-12)
        assert eb.n_params == network.num_params(sp.adjacency(eb.structure))
        assert eb.objective == objective(eb.n_params, sp.size, eb.rse, prob.lam)
        assert eb.objective == eb.n_params / planted().tensor.size + prob.lam * eb.rse
        net = unpad(sp, eb.structure, eb.cores)
        np.testing.assert_allclose(rse_of(net, prob.target), eb.rse, rtol=1e-6, atol=1e-12)
    # cached structures are answered again without counting
    again = b.evaluate(cands[:2])
    assert b.count == 3 and [e.index for e in again] == [0, 1]
    # the budget stops evaluation exactly
    c = Evaluator(prob, 7, max_evals=2, **BATCH)
    out = c.evaluate(cands)
    assert c.count == 2 and c.exhausted and out[2] is None


def test_loss_problem_uses_the_loss_as_error():
    x = planted().tensor

    def loss(net):
        return jnp.sum((network.to_dense(net) - x) ** 2)

    prob = problem(loss=loss, dims=x.shape, max_rank=2, edges="ring", n_iter=20, restarts=1)
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
def test_search_record_is_consistent_and_reproducible(name):
    prob = ring_problem()
    sp = prob.space
    budget = 9
    r = ALGOS[name](prob, 5, max_evals=budget, **BATCH)
    assert r.algorithm == name
    assert 1 <= r.n_evals <= budget and r.n_evals == len(r.log)
    assert [e.index for e in r.log] == list(range(r.n_evals))
    assert len({e.structure for e in r.log}) == r.n_evals  # no structure fitted twice
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


# ------------------------------------------------------------------ bad input


def test_bad_input_errors():
    x = planted().tensor
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
    prob = ring_problem()
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
    with pytest.raises(ValueError, match="give exactly one of target"):
        problem(max_rank=2)
