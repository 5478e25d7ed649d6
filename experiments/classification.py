"""Supervised classification: ``train_and_evaluate(config, workdir)``.

Trains a model from :data:`MODELS` on a data set from :mod:`tnlib.experiments.data`
with optax Adam (or SGD, ``train.optimizer``) and cross-entropy, optionally with label
smoothing (``train.label_smoothing``), mixup (``train.mixup``, :func:`mixup_batch`),
random shifts (``train.augment_shift``) and muP learning rates (``train.mup``). One step
is one batch; the state a checkpoint
holds is the parameters, the optimizer state and any non-parameter model state (the
data order is a function of ``(seed, step)``). Everything else (lock, resumption,
checkpoints, metrics, summary) is :func:`tnlib.experiments.runner.run`'s.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from . import data as data_lib
from . import records, runner, sharding, training
from .config import ConfigError, check_keys, validate

__all__ = [
    "MODELS",
    "build_model",
    "check_config",
    "check_schedule",
    "evaluate",
    "make_steps",
    "mixup_batch",
    "model_options",
    "train_and_evaluate",
]

Split = tuple[np.ndarray, np.ndarray]


# --------------------------------------------------------------------------- model zoo

# model.name -> the tnlib.models class built as Cls(n_sites, n_classes, **model config).
MODELS = {"mps_classifier": "MPSClassifier", "structured_mlp": "StructuredMLP",
          "tt_input_mlp": "TTInputMLP", "residual_mlp": "ResidualMLP"}


def _model_class(name: str) -> type[nnx.Module]:
    import tnlib.models  # imported here: `tnlib --help` stays fast

    return getattr(tnlib.models, MODELS[name])


def build_model(cfg: ml_collections.ConfigDict, n_sites: int, n_classes: int, seed: int):
    """``MODELS[cfg.name](n_sites, n_classes, **cfg but name, rngs)``; a constructor's
    ValueError or TypeError becomes a ConfigError."""
    if cfg.name not in MODELS:
        raise ConfigError(f"model.name={cfg.name!r} is not one of {sorted(MODELS)}")
    kwargs = {k: v for k, v in cfg.items() if k != "name"}
    try:
        return _model_class(cfg.name)(n_sites, n_classes, **kwargs, rngs=nnx.Rngs(seed))
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model: {e}") from e


def model_options(name: str) -> list[str]:
    """Config keys ``model.<key>`` the model ``name`` (a key of :data:`MODELS`) accepts,
    besides ``name``: the keyword arguments of its class, less those the runner sets."""
    params = inspect.signature(_model_class(name).__init__).parameters
    return [k for k in params if k not in ("self", "n_sites", "in_features", "n_classes", "rngs",
                                            "dtype", "param_dtype")]


REQUIRED = ("task", "seed", "data.name", "model.name") + tuple(
    f"train.{k}" for k in training.TRAIN_KEYS if k not in ("end_lr_factor", "weight_decay",
                                                           "grad_clip_norm", "mup",
                                                           "augment_shift", "optimizer",
                                                           "momentum", "decay_epochs",
                                                           "label_smoothing", "mixup"))


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
    data_lib.check_options(config.data)
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


# --------------------------------------------------------------------------- steps


def make_steps(graphdef, rest, optimizer: optax.GradientTransformation,
               label_smoothing: float = 0.0):
    """Jitted ``train_step(params, opt_state, x, y, y2=None, lam=1.0)`` and
    ``eval_step(params, x, y, mask)``.

    ``train_step`` minimizes ``lam * CE(logits, y) + (1 - lam) * CE(logits, y2)`` (mixup's
    loss for a batch ``x`` mixed as ``lam * x + (1 - lam) * x[perm]`` with ``y2 = y[perm]``;
    ``y2 = y`` (the default), ``lam = 1`` is plain training), each cross-entropy against
    labels smoothed by ``label_smoothing`` (``(1 - eps) * onehot + eps / n_classes``, as PyTorch's
    ``CrossEntropyLoss(label_smoothing=eps)``). It returns ``(params, opt_state, loss,
    accuracy)``: batch means, the accuracy the larger of those against ``y`` and ``y2``
    (as the official code of Qiu et al. 2024 counts it under mixup). An empty batch is a
    ValueError: its mean loss is NaN and one update would turn every parameter into NaN.
    ``eval_step`` returns the summed (unsmoothed) loss and the number correct over unmasked
    rows.
    """

    def logits_fn(params, x):
        return nnx.merge(graphdef, params, rest)(x)

    def xent(logits, y):
        if not label_smoothing:
            return optax.softmax_cross_entropy_with_integer_labels(logits, y)
        target = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), label_smoothing)
        return optax.softmax_cross_entropy(logits, target)

    def loss_fn(params, x, y, y2, lam):
        logits = logits_fn(params, x)
        pred = jnp.argmax(logits, -1)
        if y2 is None:  # static: no mixup, one cross-entropy
            return xent(logits, y).mean(), jnp.mean(pred == y)
        loss = (lam * xent(logits, y) + (1.0 - lam) * xent(logits, y2)).mean()
        return loss, jnp.maximum(jnp.mean(pred == y), jnp.mean(pred == y2))

    @jax.jit
    def train_step(params, opt_state, x, y, y2=None, lam=1.0):
        if x.shape[0] == 0 or y.shape[0] == 0:  # static: checked when traced
            raise ValueError(f"train_step got an empty batch (x {x.shape}, y {y.shape}); "
                             "a step needs at least one example")
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, y2, lam)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    @jax.jit
    def eval_step(params, x, y, mask):
        logits = logits_fn(params, x)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = jnp.argmax(logits, -1) == y
        return jnp.sum(jnp.where(mask, losses, 0.0)), jnp.sum(mask & correct)

    return train_step, eval_step


def mixup_batch(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator):
    """Mixup (Zhang et al. 2018) as the official code of Qiu et al. 2024 draws it (ffcv's
    ``ImageMixup(alpha, same_lambda=True)``): one ``lam ~ Beta(alpha, alpha)`` for the
    batch and a random permutation ``perm`` of its rows. Returns ``(lam * x + (1 - lam) *
    x[perm], y, y[perm], lam)``; ``alpha = 0`` returns the batch unmixed (``lam = 1``)."""
    if not alpha:
        return x, y, y, np.float32(1.0)
    lam = np.float32(rng.beta(alpha, alpha))
    perm = rng.permutation(len(y))
    return (lam * x + (1 - lam) * x[perm]).astype(x.dtype), y, y[perm], lam


evaluate = data_lib.evaluate  # evaluate(eval_step, params, split, batch_size, mesh=None)


# --------------------------------------------------------------------------- task


def setup(config: ml_collections.ConfigDict) -> runner.Task:
    """Load the data, build the model and optimizer: the :class:`~runner.Task` of ``config``."""
    tc = config.train
    splits = data_lib.from_config(config.data)
    x_train, y_train = splits["train"]
    n_train, n_sites = x_train.shape
    n_classes = int(max(y.max() for _, y in splits.values())) + 1
    steps_per_epoch = n_train // tc.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size={tc.batch_size} exceeds the {n_train} "
                          "training examples")
    total_steps = steps_per_epoch * tc.num_epochs
    check_schedule(tc, total_steps)
    shift, side = tc.get("augment_shift", 0), math.isqrt(n_sites)
    if shift and side * side != n_sites:
        raise ConfigError(f"train.augment_shift={shift} needs square images; "
                          f"{config.data.name!r} has {n_sites} pixels per example")

    mesh = sharding.make_mesh(config.get("mesh"))
    model = build_model(config.model, n_sites, n_classes, config.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = sharding.shard_params(model, params, mesh)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    try:
        schedule = training.make_schedule(tc, total_steps, steps_per_epoch)
        optimizer = training.make_optimizer(tc, schedule)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if tc.get("mup", False):  # muP learning-rate multipliers: structured layers' per-core
        # ones, or the model's own table when it defines lr_multipliers()
        from tnlib.models import structured_optimizer

        optimizer = structured_optimizer(model, optimizer)
    # The state: parameters, optimizer state (moments and the step count that drives the
    # schedule) and, when the model has any, its other state (e.g. dropout RNG streams).
    state = {"params": params, "opt_state": sharding.replicate(optimizer.init(params), mesh)}
    if jax.tree.leaves(rest):
        state["rest"] = sharding.replicate(rest, mesh)
    smoothing, alpha = float(tc.get("label_smoothing", 0.0)), float(tc.get("mixup", 0.0))
    train_step, eval_step = make_steps(graphdef, state.get("rest", rest), optimizer, smoothing)

    def step(state, index, tick):
        idx = training.batch_indices(config.seed, index, n_train, tc.batch_size)
        xb = x_train[idx]
        if shift:  # a fresh translation of each image, reproducible from (seed, step)
            xb = data_lib.random_shift(xb, side, shift, np.random.default_rng((config.seed, index)))
        if alpha:  # mixup's draw: reproducible from (seed, step), apart from the shift's
            xb, yb, yb2, lam = mixup_batch(xb, y_train[idx], alpha,
                                           np.random.default_rng((config.seed, index, 1)))
            mixed = sharding.shard_batch(mesh, xb, yb, yb2)
        else:
            mixed, lam = sharding.shard_batch(mesh, xb, y_train[idx]), 1.0
        params, opt_state, loss, acc = train_step(state["params"], state["opt_state"], *mixed,
                                                  lam=lam)
        sharding.throttle(mesh, index + 1, loss)  # bounded queue of SPMD steps (XLA:CPU)
        return {**state, "params": params, "opt_state": opt_state}, {"train_loss": loss,
                                                                      "train_acc": acc}

    def evaluate_all(state) -> dict[str, float]:
        out = {}
        for name in ("validation", "test"):
            if name in splits:
                r = evaluate(eval_step, state["params"], splits[name], tc.eval_batch_size, mesh)
                out.update({f"{name}_loss": r["loss"], f"{name}_acc": r["acc"]})
        return out

    return runner.Task(
        state=state, total_steps=total_steps, step=step, evaluate=evaluate_all,
        summarize=lambda state, final: {**records.eval_summary(final), "n_params": n_params,
                                        "n_train": n_train, "n_test": len(splits["test"][0])},
        log_every=tc.log_every, eval_every=tc.eval_every, checkpoint_every=tc.checkpoint_every,
        keep_checkpoints=tc.keep_checkpoints, steps_per_epoch=steps_per_epoch,
        log_extra=lambda state, step: {"lr": float(schedule(step - 1))},
        diverged="training diverged at step {step} (train loss {loss}); try a smaller "
                 "train.lr or a larger model.init_std",
        meta={"n_params": n_params, "n_train": n_train, "n_sites": n_sites,
              "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
              "mesh": dict(mesh.shape), "processes": jax.process_count()},
        checkpoint_meta={"steps_per_epoch": steps_per_epoch},
        title=f"{config.model.name} on {config.data.name}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluate.

    Returns the summary written to ``summary.json``: test accuracy and loss,
    validation accuracy and loss where the data set has a validation split, the
    number of steps, the training wall time in seconds (summed over resumed
    sessions) and the number of parameters. Lock, config checks, checkpoints and
    records are :func:`tnlib.experiments.runner.run`'s; config errors
    (:class:`ConfigError`) are raised before the directory is created.
    """
    check_config(config)
    return runner.run(config, workdir, setup)
