"""Structure-search algorithms: TNGA, TNLS, TnALE and greedy rank growth.

Each is a function ``algo(problem, seed, *, max_evals=..., ...) -> SearchResult``. The
seed (an int or a PRNG key) fixes everything: the host-side choices (samples,
mutations) come from a NumPy generator seeded from it, the fits from
``fold_in(key, evaluation number)``, so a search is reproducible. ``replay`` (the log
and cores of an interrupted run with the same seed) and ``on_batch`` (a callback after
every fitted batch) are handed to the Evaluator: that is how ``tnlib run`` checkpoints
and resumes a search. All of them go
through one :class:`~tnlib.search.engine.Evaluator`, which counts evaluations exactly
(repeated structures are answered from its cache and not counted) and stops at
``max_evals``.

- :func:`tnga`: the genetic algorithm of Li & Sun 2020 ("Evolutionary topology search
  for tensor network decomposition"): a population of structures, elitism, rank-based
  selection after discarding the worst, uniform crossover of the edge ranks, per-gene
  mutation (a new random rank; rank one removes the edge) and a swap mutation of the
  permutation.
- :func:`tnls`: local sampling (Li et al. 2022, "Permutation search of tensor network
  structures via local sampling"): sample structures in a neighbourhood of the
  incumbent (each rank moved, with probability ``p_move``, by a nonzero step of at
  most ``radius``; a random transposition of the permutation), move to the best sample
  when it improves the objective. Moving only a few ranks per sample keeps the
  samples local on long rings (moving all of them at once makes a single-rank step
  exponentially unlikely in the order).
- :func:`tnale`: alternating local enumeration (Li et al. 2023): update one structure
  variable at a time (one edge rank, or the permutation) by evaluating every value in
  its neighbourhood with the others fixed; sweeps go forward and backward over the
  variables (round trip); the first ``n_wide`` sweeps use the larger radius
  ``radius[0]``, later ones ``radius[1]``. A fit is random and can miss (an unlucky
  start leaves a good neighbour with a large error, and a cached answer is never
  revisited), so when a sweep at the small radius changes nothing, the incumbent's
  neighbours are refitted from fresh random starts (each refit a counted evaluation,
  at most ``n_refit`` times per structure) and the sweeps go on if one of them now
  improves; otherwise the search stops (after ``stall_rounds`` such rounds).
- :func:`greedy`: greedy rank growth (Hashemizadeh et al. 2020, "Adaptive learning of
  tensor network structures"): start from rank one everywhere, try raising each edge
  rank by one, warm-starting from the incumbent's fitted cores (the new slices start
  from small noise), keep the edge that lowers the fit error most; stop when the
  objective stops improving (``patience`` steps), the error reaches ``rse_tol``, or
  every edge is at ``max_rank``.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np

from tnlib._validate import as_key
from tnlib.search.engine import Evaluation, Evaluator, Problem, SearchResult
from tnlib.search.space import SearchSpace, Structure, check_structure

__all__ = ["tnga", "tnls", "tnale", "greedy"]


def _setup(problem: Problem, seed, max_evals, batched: bool, max_batch: int, min_batch: int,
           replay=None, on_batch=None):
    key = as_key(seed, "seed")
    k_eval, k_host = jax.random.split(key)
    host = int(jax.random.randint(k_host, (), 0, 2**31 - 1))
    ev = Evaluator(problem, k_eval, batched=batched, max_evals=max_evals, max_batch=max_batch,
                   min_batch=min_batch, replay=replay, on_batch=on_batch)
    return ev, np.random.default_rng(host)


def _start(space: SearchSpace, init, default: Structure, rng: np.random.Generator) -> Structure:
    """The starting structure: ``default`` for None; for ``"random"`` (as the official
    TnALE code starts) every rank uniform in ``1..max_rank`` and, when the permutation is
    searched, a uniformly random permutation, drawn from the search's own generator (so
    each seed starts elsewhere); else a Structure or an adjacency matrix."""
    if init is None:
        return default
    if isinstance(init, str):
        if init != "random":
            raise ValueError(f"init must be None, 'random', a Structure or an adjacency "
                             f"matrix, got {init!r}")
        perm = (tuple(int(v) for v in rng.permutation(np.asarray(space.perm)))
                if space.search_perm else space.perm)
        return space.clip(rng.integers(1, space.max_rank + 1, len(space.edges)), perm)
    if isinstance(init, Structure):
        return check_structure(space, init, "init")
    return space.structure(init)


def _swap(perm, i: int, j: int) -> tuple[int, ...]:
    p = list(perm)
    p[i], p[j] = p[j], p[i]
    return tuple(p)


def _best(evals: list[Evaluation | None]) -> Evaluation | None:
    done = [e for e in evals if e is not None]
    return min(done, key=lambda e: (e.objective, e.index)) if done else None


def _check_pos(name, v, low=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")


# ----------------------------------------------------------------------------- TnALE


def tnale(problem: Problem, seed, *, max_evals: int | None = None, init=None,
          radius: tuple[int, int] = (2, 1), n_wide: int = 1, max_sweeps: int = 50,
          n_refit: int = 1, stall_rounds: int = 1, batched: bool = True, max_batch: int = 64,
          min_batch: int = 1, replay=None, on_batch=None) -> SearchResult:
    """Alternating local enumeration (TnALE) from ``init`` (default: every rank
    ``ceil(max_rank / 2)``; ``"random"``: random ranks and permutation drawn from the
    seed, as the official code starts; a Structure or an adjacency matrix).

    One variable at a time (each support edge's rank, then the permutation when it is
    searched): all values within ``radius`` of the current one are evaluated in one
    batch and the best is kept if it lowers the objective. Sweeps alternate forward
    and backward; the first ``n_wide`` use ``radius[0]``, the rest ``radius[1]``.
    When a sweep at ``radius[1]`` changes nothing, every neighbour of the incumbent
    (each variable moved within ``radius[1]``) that has been refitted fewer than
    ``n_refit`` times is fitted again from fresh starts (:meth:`Evaluator.refit`,
    counted); if the best of them lowers the objective the search moves there and
    sweeps on, else it ends once ``stall_rounds`` refit rounds in a row have failed
    (the official code re-evaluates a stalled neighbourhood until its generation
    budget: a large ``n_refit`` and ``stall_rounds`` do the same until ``max_evals``).
    It also ends after ``max_sweeps`` sweeps or when ``max_evals`` is spent.
    ``n_refit=0`` disables refitting.
    """
    sp = problem.space
    _check_pos("max_sweeps", max_sweeps)
    _check_pos("n_refit", n_refit, 0)
    _check_pos("stall_rounds", stall_rounds)
    if len(radius) != 2 or any(isinstance(r, bool) or not isinstance(r, int) or r < 1
                               for r in radius):
        raise ValueError(f"radius must be two ints >= 1 (first sweeps, later sweeps), "
                         f"got {radius!r}")
    ev, rng = _setup(problem, seed, max_evals, batched, max_batch, min_batch,
                     replay, on_batch)
    x = _start(sp, init, sp.uniform(-(-sp.max_rank // 2)), rng)
    cur = ev.evaluate([x])[0]
    variables = list(range(len(sp.edges))) + (["perm"] if sp.search_perm else [])

    def neighbours(x, v, r):
        if v == "perm":
            return [Structure(x.ranks, _swap(x.perm, i, j))
                    for i, j in itertools.combinations(range(sp.n_nodes), 2)]
        lo, hi = max(1, x.ranks[v] - r), min(sp.max_rank, x.ranks[v] + r)
        return [Structure(x.ranks[:v] + (q,) + x.ranks[v + 1:], x.perm)
                for q in range(lo, hi + 1) if q != x.ranks[v]]

    refits: dict[Structure, int] = {}
    stalled = 0  # refit rounds in a row that found nothing better
    for sweep in range(max_sweeps):
        r = radius[0] if sweep < n_wide else radius[1]
        order = variables if sweep % 2 == 0 else variables[::-1]
        changed = False
        for v in order:
            if ev.exhausted:
                break
            best = _best(ev.evaluate(neighbours(x, v, r)))
            if best is not None and best.objective < cur.objective:
                x, cur, changed = best.structure, best, True
        if ev.exhausted:
            break
        if not changed and r == radius[1]:
            again = [s for v in variables for s in neighbours(x, v, r)
                     if refits.get(s, 0) < n_refit and (e := ev.lookup(s)) is not None
                     and e.index >= 0]
            for s in again:
                refits[s] = refits.get(s, 0) + 1
            best = _best(ev.refit(again)) if again else None
            if best is None or best.objective >= cur.objective:
                stalled += 1
                if not again or stalled >= stall_rounds or ev.exhausted:
                    break
                continue
            x, cur = best.structure, best
        stalled = 0
    return ev.result("tnale")


# ----------------------------------------------------------------------------- TNLS


def tnls(problem: Problem, seed, *, max_evals: int | None = None, init=None,
         n_samples: int = 16, radius: int = 1, p_move: float | None = None,
         max_iter: int = 100, patience: int = 5, batched: bool = True, max_batch: int = 64,
         min_batch: int = 1, replay=None, on_batch=None) -> SearchResult:
    """Local sampling (TNLS) from ``init`` (default: every rank ``ceil(max_rank / 2)``;
    ``"random"``, a Structure or an adjacency matrix as for :func:`tnale`).

    Each iteration draws ``n_samples`` structures around the incumbent (each rank
    moved with probability ``p_move``, default ``min(1, 2 / #edges)``, by a uniform
    nonzero integer in ``[-radius, radius]``, and when the permutation is searched a
    random transposition with probability one half; a draw equal to the incumbent is
    redrawn), evaluates them as one batch and moves to the best if it lowers the
    objective. Stops after ``patience`` iterations without improvement, ``max_iter``
    iterations or ``max_evals``.
    """
    sp = problem.space
    for name, v in (("n_samples", n_samples), ("radius", radius), ("max_iter", max_iter),
                    ("patience", patience)):
        _check_pos(name, v)
    n_e = len(sp.edges)
    p_move = min(1.0, 2.0 / max(n_e, 1)) if p_move is None else p_move
    if isinstance(p_move, bool) or not isinstance(p_move, int | float) or \
            not 0 < p_move <= 1:
        raise ValueError(f"p_move must be a probability in (0, 1], got {p_move!r}")
    ev, rng = _setup(problem, seed, max_evals, batched, max_batch, min_batch,
                   replay, on_batch)
    x = _start(sp, init, sp.uniform(-(-sp.max_rank // 2)), rng)
    cur = ev.evaluate([x])[0]
    stall = 0
    for _ in range(max_iter):
        if ev.exhausted:
            break
        samples = []
        for _ in range(n_samples):
            for _ in range(10):  # redraw the incumbent itself
                step = rng.integers(1, radius + 1, n_e) * rng.choice((-1, 1), n_e)
                ranks = np.asarray(x.ranks) + np.where(rng.random(n_e) < p_move, step, 0)
                perm = x.perm
                if sp.search_perm and rng.random() < 0.5:
                    i, j = rng.choice(sp.n_nodes, 2, replace=False)
                    perm = _swap(perm, int(i), int(j))
                s = sp.clip(ranks, perm)
                if s != x:
                    break
            samples.append(s)
        best = _best(ev.evaluate(samples))
        if best is not None and best.objective < cur.objective:
            x, cur, stall = best.structure, best, 0
        else:
            stall += 1
            if stall >= patience:
                break
    return ev.result("tnls")


# ----------------------------------------------------------------------------- TNGA


def tnga(problem: Problem, seed, *, max_evals: int | None = None, pop_size: int = 24,
         n_generations: int = 30, n_elite: int = 2, keep: float = 0.5,
         p_crossover: float = 0.8, p_mutation: float | None = None,
         batched: bool = True, max_batch: int = 64, min_batch: int = 1,
          replay=None, on_batch=None) -> SearchResult:
    """Genetic search (TNGA): ``pop_size`` random structures (ranks uniform in
    ``1..max_rank``), then per generation: the ``n_elite`` best survive unchanged; the
    best fraction ``keep`` are parents, drawn with probability proportional to their
    rank (best = highest); children take each edge rank from either parent (uniform
    crossover, with probability ``p_crossover``, else a copy of the first parent) and
    mutate each rank with probability ``p_mutation`` (default ``1 / #edges``) to a new
    random value; with a searched permutation a child inherits its first parent's and
    swaps two modes with probability one half. Stops after ``n_generations`` or
    ``max_evals``.
    """
    sp = problem.space
    for name, v in (("pop_size", pop_size), ("n_generations", n_generations)):
        _check_pos(name, v)
    _check_pos("n_elite", n_elite, 0)
    if n_elite >= pop_size:
        raise ValueError(f"n_elite={n_elite} must be smaller than pop_size={pop_size}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    for name, v in (("p_crossover", p_crossover), ("p_mutation", p_mutation)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or not 0 <= v <= 1):
            raise ValueError(f"{name} must be a probability in [0, 1], got {v!r}")
    ev, rng = _setup(problem, seed, max_evals, batched, max_batch, min_batch,
                   replay, on_batch)
    n_e = len(sp.edges)
    p_mut = (1.0 / max(n_e, 1)) if p_mutation is None else p_mutation
    perm0 = np.asarray(sp.perm)

    def random_structure():
        perm = tuple(int(v) for v in rng.permutation(perm0)) if sp.search_perm else sp.perm
        return sp.clip(rng.integers(1, sp.max_rank + 1, n_e), perm)

    pop = [random_structure() for _ in range(pop_size)]
    for _ in range(n_generations):
        scored = [e for e in ev.evaluate(pop) if e is not None]
        if ev.exhausted or not scored:
            break
        scored.sort(key=lambda e: (e.objective, e.index))
        parents = scored[:max(2, int(round(keep * len(scored))))]
        weights = np.arange(len(parents), 0, -1, dtype=float)
        weights /= weights.sum()
        nxt = [e.structure for e in scored[:n_elite]]
        seen = set(nxt)
        tries = 0
        while len(nxt) < pop_size and tries < 20 * pop_size:
            tries += 1
            a, b = rng.choice(len(parents), 2, replace=False, p=weights)
            ra, rb = np.asarray(parents[a].structure.ranks), np.asarray(parents[b].structure.ranks)
            child = np.where(rng.random(n_e) < 0.5, ra, rb) if rng.random() < p_crossover \
                else ra.copy()
            mut = rng.random(n_e) < p_mut
            child = np.where(mut, rng.integers(1, sp.max_rank + 1, n_e), child)
            perm = parents[a].structure.perm
            if sp.search_perm and rng.random() < 0.5:
                i, j = rng.choice(sp.n_nodes, 2, replace=False)
                perm = _swap(perm, int(i), int(j))
            s = sp.clip(child, perm)
            if s not in seen:
                seen.add(s)
                nxt.append(s)
        while len(nxt) < pop_size:
            nxt.append(random_structure())
        pop = nxt
    return ev.result("tnga")


# ----------------------------------------------------------------------------- greedy


def greedy(problem: Problem, seed, *, max_evals: int | None = None, patience: int = 1,
           rse_tol: float | None = None, batched: bool = True,
           max_batch: int = 64, min_batch: int = 1,
          replay=None, on_batch=None) -> SearchResult:
    """Greedy rank growth from rank one on every support edge (permutation fixed).

    Each step evaluates every structure with one edge rank raised by one, each fitted
    from the incumbent's cores (warm start), and moves to the one with the smallest
    error (RSE, or the loss). Stops when the objective has not improved for more than
    ``patience`` steps, the error is at most ``rse_tol``, no edge can grow, or
    ``max_evals`` is spent. Returns the best structure seen.
    """
    sp = problem.space
    _check_pos("patience", patience, 0)
    ev, _ = _setup(problem, seed, max_evals, batched, max_batch, min_batch,
                   replay, on_batch)
    cur = ev.evaluate([sp.uniform(1)])[0]
    best_obj, stall = cur.objective, 0
    while not ev.exhausted:
        if rse_tol is not None and cur.rse <= rse_tol:
            break
        x = cur.structure
        cands = [Structure(x.ranks[:e] + (x.ranks[e] + 1,) + x.ranks[e + 1:], x.perm)
                 for e in range(len(sp.edges)) if x.ranks[e] < sp.max_rank]
        cands = [s for s in cands if sp.feasible(s)]
        if not cands:
            break
        done = [e for e in ev.evaluate(cands, init=[cur.cores] * len(cands)) if e is not None]
        if not done:
            break
        cur = min(done, key=lambda e: (e.rse, e.index))
        if cur.objective < best_obj:
            best_obj, stall = cur.objective, 0
        else:
            stall += 1
            if stall > patience:
                break
    return ev.result("greedy")
