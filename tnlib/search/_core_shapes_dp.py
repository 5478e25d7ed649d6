"""Exact dynamic programs behind ``tnlib.search.core_shapes``: Tucker core shapes and TT
bond ranks minimizing a sum of per-mode discarded energies under a parameter budget.

Private helpers (numpy, concrete values, outside ``jit``): ``tucker_dp``, ``tt_dp``, the
Pareto pruning ``prune`` they share, and ``trace`` (the chosen ranks from the parent
pointers). Sorting dominates their cost, so states that cannot be completed within the
budget are dropped before each pruning (necessary conditions only: the surviving states,
their order and the result are those of pruning everything), and the last Tucker mode
is chosen in closed form, so the states before it are scored instead of pruned.
"""

from __future__ import annotations

import math

import numpy as np

_INT_LIMIT = 2**62  # composite int64 sort keys stay below this


def prune(key: np.ndarray, cost: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """Indices of the states not dominated within their ``key``: a state is kept when
    every other state with the same key and no larger ``cost`` has a larger ``loss``.

    Exact (integer ranks of the losses, no float offsets). The result lists the kept
    states sorted by ``(key, cost, loss)``, ties in the order given."""
    n = key.size
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    by_loss = np.argsort(loss, kind="stable")
    sorted_loss = loss[by_loss]
    level = np.empty(n, np.int64)  # dense ranks of the losses (equal losses, equal ranks)
    level[by_loss] = np.cumsum(np.concatenate([[False], sorted_loss[1:] != sorted_loss[:-1]]))
    n_levels = int(level[by_loss[-1]]) + 1
    key = key - key.min()
    cost = cost - cost.min()
    n_keys, n_costs = int(key.max()) + 1, int(cost.max()) + 1
    if n_keys * n_costs * n_levels < _INT_LIMIT:  # one stable sort of a composite key
        order = np.argsort((key * n_costs + cost) * n_levels + level, kind="stable")
    else:
        order = np.lexsort((level, cost, key))
    sorted_key = key[order]
    group = np.cumsum(np.concatenate([[0], sorted_key[1:] != sorted_key[:-1]]))
    # groups in descending blocks: a running minimum never leaks into the next group
    v = (int(group[-1]) - group) * n_levels + level[order]
    running = np.minimum.accumulate(v)
    keep = np.concatenate([[True], v[1:] < running[:-1]])
    return order[keep]


def trace(parents: list[np.ndarray], choices: list[np.ndarray], index: int) -> list[int]:
    """Ranks along the parent pointers from the final state ``index``."""
    ranks = []
    for par, ch in zip(reversed(parents), reversed(choices), strict=True):
        ranks.append(int(ch[index]))
        index = int(par[index])
    return ranks[::-1]


def tucker_dp(dims, tails, budget: int, consistent: bool) -> tuple[int, ...]:
    """Exact minimizer of ``sum_k tails[k][r_k]`` under the Tucker budget.

    After mode ``k`` a state is (core product ``p``, largest rank ``m``, factor
    parameters ``f``, loss); feasibility needs ``p + f + sum_{j > k} n_j <= budget``.
    Two states with the same ``(p, m)`` have the same future, so the one with more
    ``f`` and no smaller loss is dropped. ``consistent`` keeps only shapes with
    ``r_k <= prod_{j != k} r_j`` (``max r^2 <= prod r``): a larger rank is unusable.
    Ties in the loss go to the fewer parameters, then to the first state in the
    pruned order (sorted by ``(p, m)``, ``f``, loss) and the smaller last rank.

    States without a feasible completion are dropped before each pruning: with
    ``consistent`` the final product is at least ``m^2`` and at most ``p`` times the
    later modes' largest ranks. The last mode's feasible ranks form an interval
    ``lo <= r <= hi`` (``p r + f + n r <= budget``, and with ``consistent``
    ``r >= m^2 / p`` and ``r <= p``) and the tails do not increase, so each state
    before it is scored in closed form (its loss plus the tail at ``hi``) instead of
    pruned; only the states reaching the optimum are pruned, which finds the one that
    pruning them all would have listed first."""
    n_modes = len(dims)
    caps = [len(t) - 1 for t in tails]
    rest = np.cumsum([0, *dims[::-1]])[::-1][1:]  # rest[k] = sum_{j > k} n_j
    width = max(len(t) for t in tails) + 1
    p = np.ones(1, np.int64)
    m = np.ones(1, np.int64)
    f = np.zeros(1, np.int64)
    loss = np.zeros(1)
    parents, choices = [], []
    for k in range(n_modes - 1):
        r = np.arange(1, caps[k] + 1, dtype=np.int64)
        new_p = (p[:, None] * r[None, :]).ravel()
        new_f = (f[:, None] + dims[k] * r[None, :]).ravel()
        if consistent:
            new_m = np.maximum(m[:, None], r[None, :]).ravel()
            square = new_m * new_m
            ok = np.maximum(new_p, square) + new_f + int(rest[k]) <= budget
            ok &= square <= new_p * min(math.prod(caps[k + 1:]), budget)
        else:
            new_m = np.repeat(m, r.size)
            ok = new_p + new_f + int(rest[k]) <= budget
        index = np.flatnonzero(ok)
        parent, choice = np.divmod(index, r.size)
        choice += 1
        p, f, m = new_p[index], new_f[index], new_m[index]
        loss = loss[parent] + tails[k][choice]
        if 0 < k < n_modes - 2:  # after mode 0 the products differ: nothing to prune
            keep = prune(p * width + m, f, loss)
            p, m, f, loss = p[keep], m[keep], f[keep], loss[keep]
            parent, choice = parent[keep], choice[keep]
        parents.append(parent)
        choices.append(choice)
    # the last mode: a state's smallest loss is at its largest feasible rank hi
    n, tail = dims[-1], tails[-1]
    # the floor of the float quotient is exact: the numerator is far below 2**53
    hi = np.minimum(np.floor((budget - f) / (p + n)).astype(np.int64), caps[-1])
    if consistent:
        hi = np.minimum(hi, p)
        valid = np.flatnonzero((hi >= 1) & (m * m <= p * hi))  # lo <= hi
    else:
        valid = np.flatnonzero(hi >= 1)
    best = loss[valid] + tail[hi[valid]]
    tied = valid[best == best.min()]  # only these states can reach the optimum
    lo = np.maximum(-(-(m[tied] * m[tied]) // p[tied]), 1) if consistent else 1
    counts = hi[tied] - lo + 1
    state = np.repeat(tied, counts)
    ranks = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(state.size)
    cand_loss = loss[state] + tail[ranks]
    params = p[state] * ranks + f[state] + n * ranks
    lowest = cand_loss == cand_loss.min()
    optimal = lowest & (params == params[lowest].min())  # at most one rank per state
    state, ranks = state[optimal], ranks[optimal]
    if n_modes > 1:  # the state that pruning all of them keeps first
        first = int(prune(p[state] * width + m[state], f[state], loss[state])[0])
        state, ranks = state[first:first + 1], ranks[first:first + 1]
        parents[-1], choices[-1] = parents[-1][state], choices[-1][state]
    parents.append(np.zeros(1, np.int64))
    choices.append(ranks[:1])
    return tuple(trace(parents, choices, 0))


def tt_dp(dims, tails, budget: int) -> tuple[int, ...]:
    """Exact minimizer of ``sum_k tails[k][r_k]`` over bond ranks under the TT budget.

    A state after bond ``k`` is (``r_k``, parameters of cores ``1..k``, loss); bonds
    are kept consistent (``r_k <= r_{k-1} n_k`` and ``r_{k-1} <= n_k r_k``: a larger
    bond cannot be realized) and states with the same ``r_k`` are pruned to the
    Pareto front of (parameters, loss)."""
    n_sites = len(dims)
    rest = np.cumsum([0, *dims[::-1]])[::-1][1:]  # rest[k] = sum_{j > k} n_j
    r_prev = np.ones(1, np.int64)
    cost = np.zeros(1, np.int64)
    loss = np.zeros(1)
    parents, choices = [], []
    for k in range(n_sites - 1):  # bond k sits between sites k and k + 1
        r = np.arange(1, len(tails[k]), dtype=np.int64)
        a, b = r_prev[:, None], r[None, :]
        new_cost = (cost[:, None] + a * dims[k] * b).ravel()
        # the next core costs at least r_k n_{k+1}, the later ones at least n_j
        ok = ((b <= a * dims[k]) & (a <= dims[k] * b)).ravel()
        ok &= new_cost + (b * dims[k + 1]).repeat(r_prev.size, 0).ravel() + rest[k + 1] <= budget
        parent = np.repeat(np.arange(r_prev.size), r.size)[ok]
        choice = np.tile(r, r_prev.size)[ok]
        cost, loss = new_cost[ok], loss[parent] + tails[k][choice]
        keep = prune(choice, cost, loss)
        r_prev, cost, loss = choice[keep], cost[keep], loss[keep]
        parents.append(parent[keep])
        choices.append(choice[keep])
    params = cost + r_prev * dims[-1]
    fits = np.flatnonzero((params <= budget) & (r_prev <= dims[-1]))
    best = int(fits[np.lexsort((params[fits], loss[fits]))[0]])
    return (1, *trace(parents, choices, best), 1)
