"""The one run loop behind every task: :func:`run` and the :class:`Task` a task supplies.

A task module builds a :class:`Task` from its config (``setup(config) -> Task``: load
the data, build the model, raise :class:`~tnlib.experiments.config.ConfigError` for
what is known only then) and hands it to :func:`run`, which does everything else, the
same way for every task:

* **lock**: ``workdir/run.lock`` is held (``flock``, process 0) for the whole run,
  taken before ``setup`` when the directory exists, so a second run fails at once
  (:class:`~tnlib.experiments.records.RunLockedError`);
* **exact config check**: a directory holding checkpoints of another config (other
  than its ``mesh``) is refused (:func:`check_resumable`); the directory is created
  only after ``setup`` returned, so a config error leaves no trace;
* **restore / quarantine**: the newest checkpoint that verifies is restored
  (:func:`~tnlib.experiments.training.restore_checkpoint`: damaged ones are moved to
  ``checkpoints.corrupt/`` with a ``CheckpointWarning``); ``metrics.jsonl`` is cut back
  to its step and ``resumed from step N`` printed;
* **the loop**: ``state, metrics = task.step(state, i, tick)`` for ``i`` from the
  restored step; every ``log_every`` steps the step metrics (means over the steps
  since the last line) and ``task.log_extra``, every ``eval_every`` steps (and at the
  last) ``task.evaluate(state)`` go to one ``metrics.jsonl`` line with ``step`` and
  ``wall_s``; a non-finite ``train_loss`` raises ``FloatingPointError``; every
  ``checkpoint_every`` steps (and at the last) an asynchronous orbax save starts, and
  the previous one is committed (manifest); a tqdm bar shows the progress;
* **Ctrl-C** (``KeyboardInterrupt``) waits for the save in flight and commits it
  before it propagates (``tnlib run`` exits 130);
* **the end**: the summary (``task.summarize(state, final evaluation)`` plus ``steps``
  and ``wall_s``, summed over resumed sessions) goes to ``summary.json``, curves to
  ``curves.png`` and one line to stdout (:func:`~tnlib.experiments.records.finish_run`).
  A run started again after it finished only re-evaluates.

A resumed run continues bitwise as the uninterrupted one when ``step`` is a pure
function of ``(state, i)`` and ``load(save(state))`` gives back what ``step`` needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from . import records, sharding, training
from .config import ConfigError

__all__ = ["Task", "check_resumable", "run"]


def _no_metrics(state) -> dict[str, Any]:
    return {}


def _as_tree(state) -> tuple[Any, dict[str, Any]]:
    return state, {}


def _from_tree(tree, info) -> Any:
    return tree


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """What a task supplies to :func:`run`: its state, its step and a few numbers.

    Attributes:
      state: the state before the first step (any object; its checkpoint form is
        ``save(state)``).
      total_steps: the number of steps of a full run (an upper bound when ``done``
        is given).
      step: ``step(state, index, tick) -> (state, metrics)`` does step ``index``
        (0-based) and returns scalar metrics of that step; ``tick(n=1)`` advances the
        progress bar by ``n`` of the ``ticks_per_step`` units (the rest is added after
        the step). Must depend only on ``(state, index)`` for resumption to be exact.
      summarize: ``summarize(state, final) -> dict`` the summary fields (``final`` is
        the last ``evaluate`` output); the runner adds ``steps`` and ``wall_s``.
      evaluate: ``evaluate(state) -> metrics`` (default none).
      save: ``save(state) -> (pytree of arrays, JSON dict)``: what a checkpoint holds
        (default ``(state, {})``).
      load: ``load(pytree, json) -> state``, the inverse of ``save``.
      fixed_shapes: restore into the shapes and shardings of ``save(state)[0]``
        (default); False restores whatever was saved (a state that grows).
      done: ``done(state) -> bool``: the run ends early when True (default never).
      log_every, eval_every, checkpoint_every, keep_checkpoints: cadences in steps
        (``eval_every=0``: evaluate at the last step only) and checkpoints kept.
      steps_per_epoch: when given, each metrics line has ``epoch = step / it``.
      log_extra: ``log_extra(state, step) -> dict`` added to every logged line.
      postfix: metrics shown beside the progress bar.
      diverged: the ``FloatingPointError`` message for a non-finite ``train_loss``
        (formatted with ``step`` and ``loss``).
      meta: fields added to ``meta.json``; checkpoint_meta: to each checkpoint's meta.
      title: title of ``curves.png`` (None: no plot); line: the summary line printed
        (default the test accuracy line).
      desc, unit, ticks_per_step: the progress bar.
    """

    state: Any
    total_steps: int
    step: Callable[[Any, int, Callable[..., None]], tuple[Any, Mapping[str, Any]]]
    summarize: Callable[[Any, Mapping[str, Any]], dict[str, Any]]
    evaluate: Callable[[Any], Mapping[str, Any]] = _no_metrics
    save: Callable[[Any], tuple[Any, dict[str, Any]]] = _as_tree
    load: Callable[[Any, dict[str, Any]], Any] = _from_tree
    fixed_shapes: bool = True
    done: Callable[[Any], bool] | None = None
    log_every: int = 1
    eval_every: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    steps_per_epoch: int | None = None
    log_extra: Callable[[Any, int], Mapping[str, Any]] | None = None
    postfix: Sequence[str] = ("train_loss",)
    diverged: str = "training diverged at step {step} (train loss {loss})"
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint_meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    title: str | None = None
    line: Callable[[Mapping[str, Any]], str] | None = None
    desc: str = "train"
    unit: str = "step"
    ticks_per_step: int = 1


def check_resumable(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError when ``workdir`` holds checkpoints of a run started with a
    different config (its ``config.json``; the ``mesh`` may differ: a checkpoint
    restores onto any mesh)."""
    path, ckpt = Path(workdir) / "config.json", Path(workdir) / "checkpoints"
    if not ckpt.is_dir() or not any(p.name.isdigit() for p in ckpt.iterdir()):
        return

    def same(c):
        return {k: v for k, v in c.items() if k != "mesh"}

    if path.exists() and same(records.read_json(path)) != same(json.loads(config.to_json())):
        raise ConfigError(
            f"{workdir} holds checkpoints of a run with a different config ({path}); "
            "use another --workdir or delete that directory"
        )


def _mean(values: list) -> Any:
    """One value as it is; several scalars as the float of their mean."""
    if len(values) == 1:
        v = values[0]
        return float(v) if isinstance(v, jax.Array | np.ndarray | np.generic) else v
    return float(jnp.mean(jnp.stack([jnp.asarray(v) for v in values])))


def run(config: ml_collections.ConfigDict, workdir: str | Path,
        setup: Callable[[ml_collections.ConfigDict], Task]) -> dict[str, Any]:
    """Run (or resume, or re-evaluate) the task ``setup(config)`` in ``workdir``.

    Args:
      config: the run's config, already checked by the task's ``check_config``.
      workdir: the run directory (created after ``setup`` succeeded).
      setup: builds the :class:`Task`; raises ConfigError for errors known only after
        loading data.

    Returns:
      The summary written to ``summary.json``.

    Raises:
      RunLockedError: another process holds the directory.
      ConfigError: from ``setup``, or the directory holds another config's checkpoints.
      FloatingPointError: the train loss became non-finite.
      CheckpointError: an intact checkpoint does not fit the task's state.
    """
    workdir = Path(workdir)
    main = sharding.is_main_process()  # process 0 writes the records; all save checkpoints
    with contextlib.ExitStack() as stack:
        checked = workdir.is_dir()
        if checked:  # fail fast, before loading data
            if main:
                stack.enter_context(records.lock_run_dir(workdir))
            check_resumable(workdir, config)
        task = setup(config)
        if not checked:  # only now: config errors leave no trace
            # another process of this run may have made it meanwhile: process 0 locks
            workdir.mkdir(parents=True, exist_ok=True)
            if main:
                stack.enter_context(records.lock_run_dir(workdir))
            check_resumable(workdir, config)
        return _loop(config, workdir, task, stack, main)


def _loop(config, workdir: Path, task: Task, stack: contextlib.ExitStack,
          main: bool) -> dict[str, Any]:
    mngr = training.checkpoint_manager(workdir / "checkpoints", task.keep_checkpoints)
    stack.callback(mngr.close)
    metrics_path = workdir / "metrics.jsonl"
    tree = task.save(task.state)[0]
    abstract = (jax.tree.map(ocp.utils.to_shape_dtype_struct, tree) if task.fixed_shapes
                else None)
    restored = training.restore_checkpoint(mngr, abstract,
                                           quarantine=workdir / "checkpoints.corrupt")
    state, step, wall_before = task.state, 0, 0.0
    if restored is not None:
        step, tree, ck_meta = restored
        state = task.load(tree, ck_meta.get("task", {}))
        wall_before = float(ck_meta.get("wall_s", 0.0))
        if main:
            records.truncate_metrics(metrics_path, step)
            print(f"resumed from step {step}", flush=True)
    elif main:
        metrics_path.unlink(missing_ok=True)
    if main:
        records.write_run_start(workdir, config, restored=restored is not None, step=step,
                                task=config.task, **task.meta)

    def finished(state, step):
        return step >= task.total_steps or (task.done is not None and task.done(state))

    start_step, t0 = step, time.perf_counter()
    window: dict[str, list] = {}
    pending: list[int] = []
    last_record: dict[str, Any] = {}
    final: Mapping[str, Any] = {}
    n = task.ticks_per_step
    bar = tqdm(total=task.total_steps * n, initial=step * n, desc=task.desc, unit=task.unit,
               file=sys.stderr, mininterval=1.0, dynamic_ncols=True, disable=not main)
    try:
        while not finished(state, step):
            ticked = [0]

            def tick(k: int = 1, ticked=ticked) -> None:
                ticked[0] += k
                bar.update(k)

            state, metrics = task.step(state, step, tick)
            step += 1
            bar.update(max(n - ticked[0], 0))
            for k, v in metrics.items():
                window.setdefault(k, []).append(v)
            last = finished(state, step)
            record: dict[str, Any] = {}
            if step % task.log_every == 0 or last:
                record.update({k: _mean(v) for k, v in window.items()})
                window = {}
                if task.log_extra is not None:
                    record.update(task.log_extra(state, step))
            if (task.eval_every and step % task.eval_every == 0) or last:
                final = task.evaluate(state)
                record.update(final)
            loss = record.get("train_loss")
            if loss is not None and not math.isfinite(loss):
                raise FloatingPointError(task.diverged.format(step=step, loss=loss))
            wall = wall_before + time.perf_counter() - t0
            if record:
                if task.steps_per_epoch:
                    record["epoch"] = round(step / task.steps_per_epoch, 4)
                record.update(step=step, wall_s=wall)
                last_record = record
                if main:
                    records.append_metrics(metrics_path, record)
                shown = {k: record[k] for k in task.postfix if k in record}
                if shown:
                    bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v
                                     for k, v in shown.items()}, refresh=False)
            if step % task.checkpoint_every == 0 or last:
                training.commit_checkpoints(mngr, pending)  # the previous save, now complete
                tree, info = task.save(state)
                training.save_checkpoint(mngr, step, tree, {
                    "step": step, "wall_s": wall, "seed": config.seed, **task.checkpoint_meta,
                    **({"task": info} if info else {})})
                pending = [step]
    finally:
        bar.close()
        training.commit_checkpoints(mngr, pending)

    if step == start_step:  # finished in an earlier session: re-evaluate
        final, wall = task.evaluate(state), wall_before
    else:  # the last step always evaluates
        wall = last_record.get("wall_s", wall_before + time.perf_counter() - t0)
    summary = {**task.summarize(state, final), "steps": step, "wall_s": wall}
    return records.finish_run(workdir, summary, main=main, title=task.title, line=task.line)
