"""Structure search as a ``tnlib run`` task: ``train_and_evaluate(config, workdir)``.

Builds a planted problem (:mod:`tnlib.search.problems`) and runs one search algorithm
(``tnale``, ``tnls``, ``tnga`` or ``greedy``) through the run loop of
:func:`tnlib.experiments.runner.run`. One step is one fitted batch of candidates: the
searches are deterministic given their seed and the evaluations they see, so a step
runs the algorithm again with every evaluation so far replayed (answered from the
state, counted and logged, not refitted) and stops it after the next fitted batch; the
step that finds the algorithm ending marks the search done. The state, every
evaluation and its fitted cores, is checkpointed with orbax like any task's, so a
run resumes (and survives SIGKILL, damaged checkpoints, a second run) the same way.

Writes ``config.json``, ``meta.json``, ``metrics.jsonl`` (one line per batch: its
``step``, ``n_evals`` so far and the best objective / RSE / parameters),
``checkpoints/`` and ``summary.json``.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from tnlib import search
from tnlib.search import EvalRecord, Structure

from . import runner
from .config import ConfigError, validate

__all__ = ["ALGORITHMS", "SearchState", "build_problem", "check_config", "setup",
           "train_and_evaluate"]

ALGORITHMS = {"tnale": search.tnale, "tnls": search.tnls, "tnga": search.tnga,
              "greedy": search.greedy}
PROBLEMS = ("planted_ring", "planted_network")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for an impossible config before any work."""
    validate(config, choices={"task": ["search"], "search.algorithm": ALGORITHMS,
                              "problem.kind": PROBLEMS})
    p, s = config.problem, config.search
    for key, value, low in (("problem.order", p.order, 2), ("problem.dim", p.dim, 1),
                            ("problem.max_rank", p.max_rank, 1),
                            ("problem.planted_max_rank", p.planted_max_rank, 1),
                            ("problem.n_iter", p.n_iter, 0), ("problem.restarts", p.restarts, 1),
                            ("search.max_evals", s.max_evals, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key}={value!r} is impossible; expected an int >= {low}")
    if not isinstance(p.get("permute", False), bool):
        raise ConfigError(f"problem.permute={p.permute!r} is impossible; expected a bool "
                          "(plant the modes in a random order and search the permutation)")
    if not (isinstance(p.lam, int | float) and p.lam >= 0):
        raise ConfigError(f"problem.lam={p.lam!r} is impossible; expected a number >= 0")
    allowed = set(inspect.signature(ALGORITHMS[s.algorithm]).parameters) - {
        "problem", "seed", "max_evals", "replay", "on_batch"}
    unknown = set(s.get("options", {}).keys()) - allowed
    if unknown:
        raise ConfigError(f"search.options: {s.algorithm} has no option {sorted(unknown)[0]!r}")


def build_problem(config: ml_collections.ConfigDict):
    """The planted problem of ``config.problem`` and the search problem over it."""
    p = config.problem
    key = jax.random.PRNGKey(p.seed)
    permute = bool(p.get("permute", False))
    if p.kind == "planted_ring":
        planted = search.problems.planted_ring(key, p.order, p.dim, max_rank=p.planted_max_rank,
                                               permute=permute)
        edges = "ring"
    else:
        planted = search.problems.planted_network(key, p.order, p.dim,
                                                  max_rank=p.planted_max_rank, permute=permute)
        edges = planted.edges
    try:
        prob = search.problem(planted.tensor, max_rank=p.max_rank, edges=edges, lam=p.lam,
                              n_iter=p.n_iter, restarts=p.restarts, search_perm=permute)
    except ValueError as e:
        raise ConfigError(f"problem: {e}") from e
    return planted, prob


class SearchState(NamedTuple):
    """Every evaluation so far as ``(EvalRecord, fitted cores)`` and whether the search
    has ended."""

    log: tuple
    done: bool


class _Paused(Exception):
    """Raised after a fitted batch to stop the algorithm there (carries the evaluator)."""


_FIELDS = ("index", "n_params", "objective", "rse", "wall_s", "batch")


def _save(state: SearchState):
    """The checkpoint arrays: the log's columns and, per node, every evaluation's fitted
    (padded, so equally shaped) core stacked: a few arrays however long the search."""
    recs = [r for r, _ in state.log]
    tree = {k: np.asarray([getattr(r, k) for r in recs]) for k in _FIELDS}
    tree["ranks"] = np.asarray([r.structure.ranks for r in recs], np.int64)
    tree["perm"] = np.asarray([r.structure.perm for r in recs], np.int64)
    tree["done"] = np.asarray(state.done)
    tree["fits"] = [np.stack(node) for node in zip(*(c for _, c in state.log), strict=True)]
    return tree, {}


def _load(tree, info) -> SearchState:
    log = []
    for i in range(len(tree["index"])):
        s = Structure(tuple(int(v) for v in tree["ranks"][i]),
                      tuple(int(v) for v in tree["perm"][i]))
        vals = {k: tree[k][i].item() for k in _FIELDS}
        rec = EvalRecord(vals["index"], s, vals["n_params"], vals["objective"], vals["rse"],
                         vals["wall_s"], vals["batch"])
        log.append((rec, tuple(np.asarray(node[i]) for node in tree["fits"])))
    return SearchState(tuple(log), bool(tree["done"]))


def setup(config: ml_collections.ConfigDict) -> runner.Task:
    """The planted problem and the search of ``config`` as a :class:`~runner.Task`."""
    planted, prob = build_problem(config)
    algo = functools.partial(ALGORITHMS[config.search.algorithm], prob, config.seed,
                             max_evals=config.search.max_evals,
                             **dict(config.search.get("options", {})))

    def on_batch(ev):
        raise _Paused(ev)

    def step(state, index, tick):
        try:
            algo(replay=state.log, on_batch=on_batch)
        except _Paused as paused:
            ev = paused.args[0]
            b = ev.best
            return SearchState(tuple(zip(ev.log, ev.fits, strict=True)), False), {
                "n_evals": ev.count, "best_objective": b.objective, "best_rse": b.rse,
                "best_params": b.n_params}
        return SearchState(state.log, True), {}

    def summarize(state, final):
        r = algo(replay=state.log, on_batch=on_batch)  # all replayed: nothing is fitted
        rel = math.sqrt(max(r.rse, 0.0))
        return {"algorithm": r.algorithm, "ranks": list(r.structure.ranks),
                "perm": list(r.structure.perm), "adjacency": [list(a) for a in r.adjacency],
                "n_params": r.n_params, "rse": r.rse, "objective": r.objective,
                "n_evals": r.n_evals, "planted_params": planted.n_params,
                "planted_adjacency": [list(map(int, a)) for a in planted.adjacency],
                "planted_perm": list(planted.perm), "size": int(planted.tensor.size),
                "success": bool(r.n_params <= planted.n_params and rel <= 1e-2)}

    return runner.Task(
        state=SearchState((), False), total_steps=config.search.max_evals, step=step,
        summarize=summarize, save=_save, load=_load, fixed_shapes=False,
        done=lambda state: state.done, keep_checkpoints=3, postfix=("best_objective",),
        meta={"planted_params": planted.n_params}, desc="search", unit="batch",
        line=lambda s: (f"n_params={s['n_params']} (planted {s['planted_params']}) "
                        f"rse={s['rse']:.3e} objective={s['objective']:.5f} "
                        f"n_evals={s['n_evals']}"))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or resume) the search of ``config`` in ``workdir``; returns the summary
    (also in ``summary.json``): the best structure, its parameters, RSE and objective,
    the evaluations used, the planted network's parameters and ``success``."""
    check_config(config)
    return runner.run(config, workdir, setup)
