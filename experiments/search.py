"""Structure search as a ``tnlib run`` task: ``train_and_evaluate(config, workdir)``.

Builds a planted problem (:mod:`tnlib.search.problems`), runs one search algorithm
(``tnale``, ``tnls``, ``tnga`` or ``greedy``) and writes, besides ``config.json`` and
``meta.json``: ``metrics.jsonl`` (one line per fitted batch: evaluations so far, best
objective / RSE / parameters), ``search_state.json`` + ``search_state.npz`` (every
evaluation and its fitted cores, saved after each batch) and ``summary.json``.

Resuming: the searches are deterministic given their seed and the evaluations they
see, so a restarted run replays the saved evaluations (counted and logged, not
refitted) and continues from the first batch that was not saved.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from tnlib import search
from tnlib.search import EvalRecord, Structure

from . import records
from .config import ConfigError, validate

__all__ = ["ALGORITHMS", "check_config", "build_problem", "train_and_evaluate"]

ALGORITHMS = {"tnale": search.tnale, "tnls": search.tnls, "tnga": search.tnga,
              "greedy": search.greedy}
PROBLEMS = ("planted_ring", "planted_network")
STATE = "search_state"


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
    if p.kind == "planted_ring":
        planted = search.problems.planted_ring(key, p.order, p.dim, max_rank=p.planted_max_rank)
        edges = "ring"
    else:
        planted = search.problems.planted_network(key, p.order, p.dim,
                                                  max_rank=p.planted_max_rank)
        edges = planted.edges
    try:
        prob = search.problem(planted.tensor, max_rank=p.max_rank, edges=edges, lam=p.lam,
                              n_iter=p.n_iter, restarts=p.restarts)
    except ValueError as e:
        raise ConfigError(f"problem: {e}") from e
    return planted, prob


def _save_state(workdir: Path, ev) -> None:
    log = [{"index": r.index, "ranks": list(r.structure.ranks), "perm": list(r.structure.perm),
            "n_params": r.n_params, "objective": r.objective, "rse": r.rse, "wall_s": r.wall_s,
            "batch": r.batch} for r in ev.log]
    arrays = {f"{r.index}_{k}": np.asarray(c)
              for r in ev.log for k, c in enumerate(ev.fits[r.index])}
    tmp = workdir / f"{STATE}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(workdir / f"{STATE}.npz")
    records.write_json(workdir / f"{STATE}.json", {"count": ev.count, "log": log})


def _load_state(workdir: Path, n_nodes: int):
    path = workdir / f"{STATE}.json"
    if not path.exists() or not (workdir / f"{STATE}.npz").exists():
        return []
    state = records.read_json(path)
    with np.load(workdir / f"{STATE}.npz") as z:
        out = []
        for r in state["log"]:
            s = Structure(tuple(r["ranks"]), tuple(r["perm"]))
            rec = EvalRecord(r["index"], s, r["n_params"], r["objective"], r["rse"],
                             r["wall_s"], r["batch"])
            out.append((rec, tuple(z[f"{r['index']}_{k}"] for k in range(n_nodes))))
    return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or resume) the search of ``config`` in ``workdir``; returns the summary."""
    check_config(config)
    workdir = Path(workdir)
    planted, prob = build_problem(config)
    cfg_path = workdir / "config.json"
    if (workdir / f"{STATE}.json").exists() and cfg_path.exists() and \
            records.read_json(cfg_path) != json.loads(config.to_json()):
        raise ConfigError(f"{workdir} holds a search with a different config ({cfg_path}); "
                          "use another --workdir or delete that directory")
    workdir.mkdir(parents=True, exist_ok=True)
    replay = _load_state(workdir, prob.space.n_nodes)
    metrics = workdir / "metrics.jsonl"
    if replay:
        records.truncate_metrics(metrics, len(replay))
        print(f"resumed from {len(replay)} evaluations", flush=True)
    else:
        metrics.unlink(missing_ok=True)
    records.write_json(cfg_path, json.loads(config.to_json()))
    previous = records.read_json(workdir / "meta.json") if replay and (
        workdir / "meta.json").exists() else None
    meta = records.make_meta(previous, start_step=len(replay),
                             devices=[str(d) for d in jax.devices()])
    meta.update(task=config.task, planted_params=planted.n_params)
    records.write_json(workdir / "meta.json", meta)
    t0 = time.perf_counter()
    wall_before = sum(r.wall_s for r, _ in replay)

    def on_batch(ev):
        _save_state(workdir, ev)
        b = ev.best
        records.append_metrics(metrics, {
            "step": ev.count, "best_objective": b.objective, "best_rse": b.rse,
            "best_params": b.n_params, "wall_s": wall_before + time.perf_counter() - t0})

    algo = functools.partial(ALGORITHMS[config.search.algorithm],
                             **dict(config.search.get("options", {})))
    r = algo(prob, config.seed, max_evals=config.search.max_evals, replay=replay,
             on_batch=on_batch)
    rel = math.sqrt(max(r.rse, 0.0))
    summary = {"algorithm": r.algorithm, "ranks": list(r.structure.ranks),
               "perm": list(r.structure.perm), "adjacency": [list(a) for a in r.adjacency],
               "n_params": r.n_params, "rse": r.rse, "objective": r.objective,
               "n_evals": r.n_evals, "planted_params": planted.n_params,
               "success": bool(r.n_params <= planted.n_params and rel <= 1e-2),
               "wall_s": wall_before + time.perf_counter() - t0}
    records.write_json(workdir / "summary.json", summary)
    print(f"n_params={r.n_params} (planted {planted.n_params}) rse={r.rse:.3e} "
          f"objective={r.objective:.5f} n_evals={r.n_evals}", flush=True)
    return summary

