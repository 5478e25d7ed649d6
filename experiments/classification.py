"""Supervised classification: ``train_and_evaluate(config, workdir)``.

Trains a model from :data:`MODELS` on a data set from :mod:`tnlib.experiments.data`
with optax Adam and cross-entropy, logging to ``metrics.jsonl``, checkpointing with
orbax, and resuming from the latest checkpoint when ``workdir`` already holds one.
See :mod:`tnlib.experiments.records` for the files a run writes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from . import data as data_lib
from . import records, sharding, training
from .config import ConfigError, check_keys, validate

__all__ = [
    "MODELS",
    "build_model",
    "check_config",
    "check_schedule",
    "evaluate",
    "load_data",
    "make_steps",
    "model_options",
    "train_and_evaluate",
]

Split = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- model zoo


def _mps_classifier(cfg: ml_collections.ConfigDict, n_sites: int, n_classes: int, rngs):
    """``MPSClassifier(n_sites, n_classes, **model config except name, rngs=rngs)``."""
    from tnlib.models import MPSClassifier

    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return MPSClassifier(n_sites, n_classes, **kwargs, rngs=rngs)


def _structured_mlp(cfg: ml_collections.ConfigDict, n_sites: int, n_classes: int, rngs):
    """``StructuredMLP(n_sites, n_classes, **model config except name, rngs=rngs)``."""
    from tnlib.models import StructuredMLP

    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    return StructuredMLP(n_sites, n_classes, **kwargs, rngs=rngs)


MODELS: dict[str, Callable[..., nnx.Module]] = {"mps_classifier": _mps_classifier,
                                                "structured_mlp": _structured_mlp}


def build_model(cfg: ml_collections.ConfigDict, n_sites: int, n_classes: int, seed: int):
    """The model named ``cfg.name``; a constructor's ValueError becomes a ConfigError."""
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name={cfg.name!r} is not one of {sorted(MODELS)}")
    try:
        return MODELS[cfg.name](cfg, n_sites, n_classes, nnx.Rngs(seed))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: {e}") from e


def model_options(name: str) -> list[str]:
    """Config keys ``model.<key>`` the model ``name`` (a key of :data:`MODELS`) accepts,
    besides ``name``: the keyword arguments of its class, less those the runner sets."""
    from tnlib.models import MPSClassifier, StructuredMLP

    classes = {"mps_classifier": MPSClassifier, "structured_mlp": StructuredMLP}
    params = inspect.signature(classes[name].__init__).parameters
    return [k for k in params if k not in ("self", "n_sites", "in_features", "n_classes", "rngs",
                                            "dtype", "param_dtype")]


REQUIRED = ("task", "seed", "data.name", "model.name") + tuple(
    f"train.{k}" for k in training.TRAIN_KEYS if k not in ("end_lr_factor", "weight_decay",
                                                           "grad_clip_norm", "mup",
                                                           "augment_shift"))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for an impossible config, before any data is loaded.

    Checks: required keys, unknown keys (top level, ``train``, ``model``, ``data``),
    types, allowed names, value ranges, ``train.batch_size <= data.n_train`` when
    ``n_train`` is given (otherwise after loading, still before any work), and that the
    optional ``mesh`` section fits the devices and divides the batch.
    """
    validate(config, choices={"task": ["classification"], "model.name": MODELS,
                              "data.name": data_lib.LOADERS}, required=REQUIRED)
    check_keys(config, {"": ("task", "seed", "data", "model", "train", "mesh"),
                        "train": training.TRAIN_KEYS,
                        "model": ["name", *model_options(config.model.name)]})
    extra = {k for k in config.data if k not in ("name", "n_train", "n_test")}
    unknown = sorted(extra - set(data_lib.loader_options(config.data.name)))
    if unknown:
        raise ConfigError(f"data.{unknown[0]}: data set {config.data.name!r} has no such option; "
                          f"it takes {data_lib.loader_options(config.data.name)}")
    n_train = config.data.get("n_train")
    if n_train is not None and config.train.batch_size > n_train:
        raise ConfigError(f"train.batch_size={config.train.batch_size} exceeds "
                          f"data.n_train={n_train}: not one full batch per epoch")
    n_data = sharding.mesh_shape(config.get("mesh"), jax.device_count())[sharding.DATA]
    if config.train.batch_size % n_data:
        raise ConfigError(f"train.batch_size={config.train.batch_size} does not split over "
                          f"the {n_data} devices of mesh.data; make it a multiple of {n_data}")


def check_schedule(tc: ml_collections.ConfigDict, total_steps: int) -> None:
    """Raise ConfigError when the warmup does not fit in the run's ``total_steps``."""
    if tc.warmup_steps >= total_steps > 1:
        raise ConfigError(f"train.warmup_steps={tc.warmup_steps} must be smaller than the "
                          f"run's {total_steps} steps (the learning rate would never reach "
                          "train.lr)")


# --------------------------------------------------------------------------- data


def load_data(cfg: ml_collections.ConfigDict) -> dict[str, Split]:
    """Load ``cfg.name`` with the loader options in ``cfg``, then cut to n_train / n_test."""
    sizes = {"train": cfg.get("n_train"), "test": cfg.get("n_test")}
    opts = {k: v for k, v in cfg.items() if k not in ("name", "n_train", "n_test")}
    try:
        splits = data_lib.load(cfg.name, **opts)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from e
    for split, n in sizes.items():
        if n is not None and n > len(splits[split][0]):
            raise ConfigError(f"data.n_{split}={n} exceeds the {len(splits[split][0])} "
                              f"{split} examples of {cfg.name!r}")
    return data_lib.subset(splits, sizes)


# --------------------------------------------------------------------------- steps


def make_steps(graphdef, rest, optimizer: optax.GradientTransformation):
    """Jitted ``train_step(params, opt_state, x, y)`` and ``eval_step(params, x, y, mask)``.

    ``train_step`` returns ``(params, opt_state, loss, accuracy)`` (batch means);
    ``eval_step`` returns the summed loss and the number correct over unmasked rows.
    """

    def logits_fn(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def loss_fn(params, x, y):
        logits = logits_fn(params, x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, jnp.mean(jnp.argmax(logits, -1) == y)

    @jax.jit
    def train_step(params, opt_state, x, y):
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    @jax.jit
    def eval_step(params, x, y, mask):
        logits = logits_fn(params, x)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = jnp.argmax(logits, -1) == y
        return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(mask & correct)

    return train_step, eval_step


def evaluate(eval_step, params, split: Split, batch_size: int, mesh=None) -> dict[str, float]:
    """Mean loss and accuracy over ``split``; the last batch is padded (one compilation).

    With ``mesh``, batches are split over its ``data`` axis (the batch size is rounded
    up to a multiple of that axis; padded rows are masked out).
    """
    x, y = split
    n = len(x)
    batch_size = min(batch_size, n)
    if mesh is not None:
        batch_size = -(-batch_size // mesh.shape[sharding.DATA]) * mesh.shape[sharding.DATA]
    total_loss, total_correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        mask = np.ones(batch_size, bool)
        if len(xb) < batch_size:
            pad = batch_size - len(xb)
            mask[len(xb) :] = False
            xb = np.concatenate([xb, np.zeros((pad, x.shape[1]), x.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, y.dtype)])
        if mesh is not None:
            xb, yb, mask = sharding.shard_batch(mesh, xb, yb, mask)
        loss, correct = eval_step(params, xb, yb, mask)
        total_loss += float(loss)
        total_correct += int(correct)
    return {"loss": total_loss / n, "acc": total_correct / n}


# --------------------------------------------------------------------------- checkpoints


def _state(params, opt_state, rest) -> dict[str, Any]:
    """What a checkpoint holds: parameters, optimizer state (Adam moments and step count,
    which drives the schedule) and, when the model has any, its non-parameter state
    (e.g. nnx RNG streams of dropout layers). The data order needs no state: it is a
    function of (seed, step)."""
    state = {"params": params, "opt_state": opt_state}
    if jax.tree.leaves(rest):
        state["rest"] = rest
    return state


# --------------------------------------------------------------------------- driver


def _check_resumable(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Refuse to resume a run directory that was started with a different config
    (other than its ``mesh``)."""
    path = workdir / "config.json"
    ckpt = workdir / "checkpoints"
    if not ckpt.is_dir() or not any(p.name.isdigit() for p in ckpt.iterdir()):
        return
    # The mesh may change between sessions (a checkpoint restores onto any mesh shape).
    def same(c):
        return {k: v for k, v in c.items() if k != "mesh"}

    if path.exists() and same(records.read_json(path)) != same(json.loads(config.to_json())):
        raise ConfigError(
            f"{workdir} holds checkpoints of a run with a different config ({path}); "
            "use another --workdir or delete that directory"
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluate.

    Returns the summary written to ``summary.json``: test accuracy and loss,
    validation accuracy and loss where the data set has a validation split, the
    number of steps, the training wall time in seconds (summed over resumed
    sessions) and the number of parameters.

    Holds ``workdir/run.lock`` while it runs (:func:`records.lock_run_dir`): a second
    run on the same directory raises :class:`records.RunLockedError` at once. Config
    errors (:class:`ConfigError`) are raised before the directory is created.
    """
    check_config(config)
    workdir = Path(workdir)
    with contextlib.ExitStack() as stack:
        checked = False
        if workdir.is_dir():  # fail fast, before loading data
            if sharding.is_main_process():
                stack.enter_context(records.lock_run_dir(workdir))
            _check_resumable(workdir, config)
            checked = True
        return _train_locked(config, workdir, stack, checked)


def _train_locked(config: ml_collections.ConfigDict, workdir: Path,
                  stack: contextlib.ExitStack, checked: bool) -> dict[str, Any]:
    tc = config.train
    splits = load_data(config.data)
    x_train, y_train = splits["train"]
    n_train, n_sites = x_train.shape
    n_classes = int(max(y.max() for _, y in splits.values())) + 1
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size={tc.batch_size} exceeds the {n_train} "
                          "training examples")
    total_steps = steps_per_epoch * tc.num_epochs
    check_schedule(tc, total_steps)
    shift = tc.get("augment_shift", 0)
    side = math.isqrt(n_sites)
    if shift and side * side != n_sites:
        raise ConfigError(f"train.augment_shift={shift} needs square images; "
                          f"{config.data.name!r} has {n_sites} pixels per example")

    mesh = sharding.make_mesh(config.get("mesh"))
    model = build_model(config.model, n_sites, n_classes, config.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = sharding.shard_params(model, params, mesh)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    if not checked:  # only now: config errors leave no trace
        # Another process of this run (or another run) may have created it meanwhile:
        # process 0 takes the lock whichever process made the directory.
        workdir.mkdir(parents=True, exist_ok=True)
        if sharding.is_main_process():
            stack.enter_context(records.lock_run_dir(workdir))
        _check_resumable(workdir, config)
    schedule = training.make_schedule(tc, total_steps)
    optimizer = training.make_optimizer(tc, schedule)
    if tc.get("mup", False):  # per-core muP learning-rate multipliers of structured layers
        from tnlib.models import structured_optimizer

        optimizer = structured_optimizer(model, optimizer)
    opt_state = sharding.replicate(optimizer.init(params), mesh)
    rest = sharding.replicate(rest, mesh)
    main = sharding.is_main_process()  # process 0 writes the records; all save checkpoints

    mngr = training.checkpoint_manager(workdir / "checkpoints", tc.keep_checkpoints)
    stack.callback(mngr.close)
    metrics_path = workdir / "metrics.jsonl"
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state(params, opt_state, rest))
    restored = training.restore_checkpoint(mngr, abstract,
                                           quarantine=workdir / "checkpoints.corrupt")
    step, wall_before = 0, 0.0
    if restored is not None:
        step, state, ck_meta = restored
        params, opt_state = state["params"], state["opt_state"]
        rest = state.get("rest", rest)
        wall_before = float(ck_meta.get("wall_s", 0.0))
        if main:
            records.truncate_metrics(metrics_path, step)
            print(f"resumed from step {step}", flush=True)
    elif main:
        metrics_path.unlink(missing_ok=True)
    train_step, eval_step = make_steps(graphdef, rest, optimizer)
    if main:
        records.write_run_start(workdir, config, restored=restored, step=step,
            task=config.task, n_params=n_params, n_train=n_train, n_sites=n_sites,
            total_steps=total_steps, steps_per_epoch=steps_per_epoch,
            mesh=dict(mesh.shape), processes=jax.process_count())

    def eval_all(params) -> dict[str, float]:
        out = {}
        for name in ("validation", "test"):
            if name in splits:
                r = evaluate(eval_step, params, splits[name], tc.eval_batch_size, mesh)
                out.update({f"{name}_loss": r["loss"], f"{name}_acc": r["acc"]})
        return out

    t0 = time.perf_counter()
    losses, accs, pending, last_record = [], [], [], {}
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", file=sys.stderr,
               mininterval=1.0, dynamic_ncols=True, disable=not main)
    try:
        while step < total_steps:
            idx = training.batch_indices(config.seed, step, n_train, tc.batch_size)
            xb = x_train[idx]
            if shift:  # a fresh translation of each image, reproducible from (seed, step)
                xb = data_lib.random_shift(xb, side, shift,
                                           np.random.default_rng((config.seed, step)))
            xb, yb = sharding.shard_batch(mesh, xb, y_train[idx])
            params, opt_state, loss, acc = train_step(params, opt_state, xb, yb)
            step += 1
            sharding.throttle(mesh, step, loss)  # bounded queue of SPMD steps (XLA:CPU)
            losses.append(loss)
            accs.append(acc)
            bar.update(1)
            last = step == total_steps
            record: dict[str, Any] = {}
            if step % tc.log_every == 0 or last:
                train_loss = float(jnp.mean(jnp.stack(losses)))
                if not math.isfinite(train_loss):
                    raise FloatingPointError(
                        f"training diverged at step {step} (train loss {train_loss}); "
                        "try a smaller train.lr or a larger model.init_std"
                    )
                record.update(train_loss=train_loss, train_acc=float(jnp.mean(jnp.stack(accs))),
                              lr=float(schedule(step - 1)))
                losses, accs = [], []
                bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
            if (tc.eval_every and step % tc.eval_every == 0) or last:
                record.update(eval_all(params))
            wall = wall_before + time.perf_counter() - t0
            if record:
                record.update(step=step, epoch=round(step / steps_per_epoch, 4), wall_s=wall)
                last_record = record
                if main:
                    records.append_metrics(metrics_path, record)
            if step % tc.checkpoint_every == 0 or last:
                training.commit_checkpoints(mngr, pending)  # the previous save, now complete
                training.save_checkpoint(
                    mngr, step, _state(params, opt_state, rest),
                    {"step": step, "wall_s": wall, "seed": config.seed,
                     "steps_per_epoch": steps_per_epoch})
                pending = [step]
    finally:
        bar.close()
        training.commit_checkpoints(mngr, pending)

    if restored is not None and restored[0] == total_steps:  # finished earlier: re-evaluate
        final = eval_all(params)
        wall = wall_before
    else:  # the last step always logs an evaluation
        final = {k: v for k, v in last_record.items() if k.startswith(("test_", "validation_"))}
        wall = last_record["wall_s"]
    return records.finish_run(
        workdir, final, main=main, title=f"{config.model.name} on {config.data.name}",
        steps=step, wall_s=wall, n_params=n_params, n_train=n_train,
        n_test=len(splits["test"][0]))
