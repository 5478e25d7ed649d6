"""The one run loop behind every task: :func:`run` and the :class:`Task` a task supplies.

A task module builds a :class:`Task` from its config (``setup(config) -> Task``: load
the data, build the model, raise :class:`~tnlib.experiments.config.ConfigError` for
what is known only then) and hands it to :func:`run`, which does everything else, the
same way for every task:

* **lock**: ``workdir/run.lock`` is held (``flock``, process 0) for the whole run,
  taken before ``setup`` when the directory exists, so a second run fails at once
  (:class:`~tnlib.experiments.records.RunLockedError`);
* **the directory**: a ``workdir`` that is a file, or that cannot be written, is a
  ConfigError before any work;
* **exact config check**: a directory holding checkpoints of another config (other
  than its ``mesh`` and keys set to None, which mean "not used") is refused
  (:func:`check_resumable`), read from ``config.json``
  and, when that file is missing, from the config every checkpoint stores in its
  metadata; a restored checkpoint's stored config is compared again; the directory is
  created only after ``setup`` returned, so a config error leaves no trace;
* **restore / quarantine**: the newest checkpoint that verifies is restored
  (:func:`~tnlib.experiments.training.restore_checkpoint`: damaged ones are moved to
  ``checkpoints.corrupt/`` with a ``CheckpointWarning``); ``metrics.jsonl`` is cut back
  to its step and ``resumed from step N`` printed;
* **the loop**: ``state, metrics = task.step(state, i, tick)`` for ``i`` from the
  restored step; every ``log_every`` steps the step metrics (means over the steps
  since the last line) and ``task.log_extra``, every ``eval_every`` steps (and at the
  last) ``task.evaluate(state)`` go to one ``metrics.jsonl`` line with ``step`` and
  ``wall_s``; a non-finite ``train_loss`` raises ``FloatingPointError``; every
  ``checkpoint_every`` steps (and at the last) a checkpoint is saved and the loop
  goes on only once orbax has finished it and its manifest is written
  (:func:`~tnlib.experiments.training.save_checkpoint`); the step metrics not yet
  logged (``checkpoint_every`` need not be a multiple of ``log_every``) are stored in
  the checkpoint's metadata, so the first line after a resume averages the same steps
  as the uninterrupted run's; a tqdm bar shows the progress;
* **Ctrl-C** (SIGINT) during a save is held back until the save and its manifest are
  complete, then raised as ``KeyboardInterrupt`` (``tnlib run`` exits 130);
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
import os
import signal
import sys
import threading
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

from . import faults, records, sharding, training
from .config import ConfigError

__all__ = ["Task", "check_resumable", "run", "same_config"]


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


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _comparable(config: Any) -> dict[str, Any]:
    """A config as plain JSON, without its ``mesh`` (a checkpoint restores onto any) and
    without keys set to None (None means "not used": a config that gained an unused
    optional key still matches the runs made before it)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = json.loads(config.to_json())
    return _drop_none({k: v for k, v in config.items() if k != "mesh"})


def same_config(a: Any, b: Any) -> bool:
    """Whether two configs (ConfigDicts or their JSON) describe the same run: equal but
    for ``mesh`` and keys set to None."""
    return _comparable(a) == _comparable(b)


def _stored_config(ckpt: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The config stored in the metadata of the newest checkpoint that has one."""
    for step_dir in sorted((p for p in ckpt.iterdir() if p.name.isdigit()),
                           key=lambda p: int(p.name), reverse=True):
        for meta in sorted((step_dir / "meta").glob("*")):
            try:
                stored = json.loads(meta.read_text()).get("config")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(stored, dict):
                return stored, meta
    return None, None


def check_resumable(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError when ``workdir`` holds checkpoints of a run started with a
    different config: its ``config.json`` or, when that is missing, the config stored
    in the newest checkpoint's metadata (the ``mesh`` may differ: a checkpoint restores
    onto any mesh; so may keys set to None: :func:`same_config`). Checkpoints with
    neither cannot be checked: an error too. An unreadable ``config.json`` is an error
    naming it."""
    path, ckpt = Path(workdir) / "config.json", Path(workdir) / "checkpoints"
    if not ckpt.is_dir() or not any(p.name.isdigit() for p in ckpt.iterdir()):
        return
    if path.exists():
        try:
            stored, where = records.read_json(path), path
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read {path} to check that the checkpoints in "
                              f"{workdir} belong to this config: {e}; restore or delete "
                              "that file (or the directory)") from None
    else:
        stored, where = _stored_config(ckpt)
        if stored is None:
            raise ConfigError(
                f"{workdir} holds checkpoints but no config.json, and no checkpoint stores "
                "its config: cannot check that they belong to this config; use another "
                "--workdir or delete that directory")
    if not same_config(stored, config):
        raise ConfigError(
            f"{workdir} holds checkpoints of a run with a different config ({where}); "
            "use another --workdir or delete that directory"
        )


def check_workdir(workdir: Path) -> None:
    """ConfigError unless ``workdir`` is (or can be made as) a writable directory: not a
    file, not under a file, not on a read-only file system (a probe file is created
    and removed in the nearest existing directory)."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir {workdir} is a file, not a directory; pass another "
                          "--workdir")
    probe_dir = workdir
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise ConfigError(f"workdir {workdir} cannot be created: {probe_dir} is a file")
    probe = probe_dir / f".tnlib-write-probe-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"workdir {workdir} cannot be written ({probe_dir}: "
                          f"{e.strerror or e}); pass a writable --workdir") from None


@contextlib.contextmanager
def _sigint_held():
    """Hold Ctrl-C (SIGINT) back for the ``with`` block and raise ``KeyboardInterrupt``
    after it: a save and its manifest are never cut in the middle. Only the main
    thread can install handlers; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda sig, frame: received.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def _exact(value: Any) -> dict[str, Any]:
    """One step metric as JSON that gives back the same value: a numeric scalar array
    keeps its dtype (``float32`` values are exact as Python floats), anything else
    is stored as plain JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return {"dtype": None, "value": value}
    a = np.asarray(value)
    if a.ndim == 0 and a.dtype.kind in "biuf":
        return {"dtype": str(a.dtype), "value": a.item()}
    return {"dtype": None, "value": records.jsonable(value)}


def _window_to_json(window: Mapping[str, list]) -> dict[str, list]:
    """The step metrics not yet logged (``checkpoint_every`` off the log cadence)."""
    return {k: [_exact(v) for v in values] for k, values in window.items()}


def _window_from_json(saved: Mapping[str, list]) -> dict[str, list]:
    return {k: [v["value"] if v["dtype"] is None else np.asarray(v["value"], v["dtype"])
                for v in values] for k, values in saved.items()}


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
    check_workdir(workdir)
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
    window: dict[str, list] = {}
    if restored is not None:
        step, tree, ck_meta = restored
        stored = ck_meta.get("config")
        if stored is not None and not same_config(stored, config):
            raise ConfigError(
                f"checkpoint step {step} in {workdir} was written by a run with a different "
                "config (the config stored in the checkpoint); use another --workdir or "
                "delete that directory")
        state = task.load(tree, ck_meta.get("task", {}))
        wall_before = float(ck_meta.get("wall_s", 0.0))
        window = _window_from_json(ck_meta.get("log_window", {}))
        if main:
            records.truncate_metrics(metrics_path, step)
            print(f"resumed from step {step}", flush=True)
    elif main:
        metrics_path.unlink(missing_ok=True)
    tb = None
    if main:
        records.write_run_start(workdir, config, restored=restored is not None, step=step,
                                task=config.task, **task.meta)
        tb = records.tensorboard_writer(workdir / "tensorboard")
        if tb is not None:
            stack.callback(tb.close)
            print(f"tensorboard: tensorboard --logdir {workdir / 'tensorboard'}", flush=True)

    def finished(state, step):
        return step >= task.total_steps or (task.done is not None and task.done(state))

    faults.point("start")
    config_json = json.loads(config.to_json())
    start_step, t0 = step, time.perf_counter()
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
            faults.point("step")
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
                    if tb is not None:
                        records.write_scalars(tb, record)
                shown = {k: record[k] for k in task.postfix if k in record}
                if shown:
                    bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v
                                     for k, v in shown.items()}, refresh=False)
            if step % task.checkpoint_every == 0 or last:
                tree, info = task.save(state)
                meta = {"step": step, "wall_s": wall, "seed": config.seed,
                        **task.checkpoint_meta, "config": config_json,
                        **({"task": info} if info else {}),
                        **({"log_window": _window_to_json(window)} if window else {})}
                with _sigint_held():  # returns once durable and verified by its manifest
                    training.save_checkpoint(mngr, step, tree, meta)
    finally:
        bar.close()

    if step == start_step:  # finished in an earlier session: re-evaluate
        final, wall = task.evaluate(state), wall_before
    else:  # the last step always evaluates
        wall = last_record.get("wall_s", wall_before + time.perf_counter() - t0)
    summary = {**task.summarize(state, final), "steps": step, "wall_s": wall}
    return records.finish_run(workdir, summary, main=main, title=task.title, line=task.line)
