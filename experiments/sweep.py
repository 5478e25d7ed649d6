"""MPS classifier trained by two-site sweeps: ``train_and_evaluate(config, workdir)``.

The model is a :class:`tnlib.sweep.LabelledMPS` (the classifier of Stoudenmire &
Schwab 2016 with the class index on one pixel core, moving with the sweep as in the
paper) trained by :func:`tnlib.sweep.update`: by default each bond tensor's squared
loss is solved by ``train.passes`` conjugate-gradient iterations with ridge term
``train.l2`` (TNML's ``fixedL.cc``), then split by SVD keeping a discarded weight of at
most ``train.cutoff`` and between ``model.min_bond`` and ``model.max_bond`` singular
values (ITensor's rule); ``train.solver="gd"`` takes ``train.local_steps`` gradient
steps instead (any ``train.loss``). The chain starts from TNML's data-driven state
(``model.init="data"``: :func:`tnlib.sweep.init_from_data`) or a product state
(``"product"``). The padded bond grows in powers of two as the kept bonds need it
(:func:`tnlib.sweep.grow`), so early sweeps cost what their bonds need.

One runner step is one bond update; a sweep is ``2 (L - 1)`` of them. Each line of
``metrics.jsonl`` is one sweep (``epoch`` counts sweeps, ``step`` updates): the train /
validation / test loss and accuracy, the bond dimensions kept (``bond_dims``, all
``L + 1``) and the mean local loss and discarded weight of its updates. A checkpoint
(orbax, with a SHA-256 manifest: :func:`tnlib.experiments.training.save_checkpoint`)
is written every ``train.checkpoint_every`` updates, mid-sweep included, and at the
end; a run started again resumes from the last one that verifies, recomputing the
environments of the chain at its label position, and continues exactly as an
uninterrupted run. The gradient solver's step size per sweep is an optax schedule
(constant, or cosine to ``end_lr_factor``).

Devices. The ``mesh`` section (:mod:`tnlib.experiments.sharding`; default all devices
on ``data``) splits the training samples, their cached environments and every
evaluation batch over ``mesh.data``; the chain is replicated. Each update is one
SPMD program: the bond gradient is summed over the devices (an all-reduce inside the
gradient-step loop, same trip count everywhere) and every device computes the same
SVD split of the replicated bond tensor. The host waits for each update before
dispatching the next when the mesh has more than one device: XLA:CPU's simulated
devices deadlock when the host queues many collective programs ahead (see
``_wait``). A ``model`` axis larger than 1 is a config error (the bond
tensors are small), and so is a training set that does not split evenly over
``mesh.data`` (no sample is dropped). Only process 0 writes records; checkpoints
restore onto any mesh.

:func:`tnlib.models.mps.from_labelled_mps` / :func:`~tnlib.models.mps.to_labelled_mps`
convert to and from :class:`tnlib.models.MPSClassifier`, so a sweep-trained model can
be evaluated, saved or fine-tuned with the gradient-training code. The run loop (lock,
resumption, checkpoints, metrics, summary) is :func:`tnlib.experiments.runner.run`'s.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tnlib import sweep as sw
from tnlib.models.mps import FEATURE_MAPS, local_feature_map

from . import config as config_lib
from . import data as data_lib
from . import records, runner, sharding
from .config import ConfigError, check_keys, validate

__all__ = ["MODEL_KEYS", "TRAIN_KEYS", "check_config", "evaluate", "make_schedule", "setup",
           "train_and_evaluate"]

# Keys of config.model and config.train the task reads (any other is a ConfigError).
MODEL_KEYS = ("name", "max_bond", "min_bond", "init", "init_bond", "init_per_class",
              "local_dim", "feature_map", "init_std")
TRAIN_KEYS = ("num_sweeps", "solver", "passes", "l2", "loss", "lr", "momentum", "schedule",
              "end_lr_factor", "local_steps", "cutoff", "eval_batch_size", "checkpoint_every",
              "keep_checkpoints")
# Every key but train.end_lr_factor (read by the cosine schedule only; default 0).
REQUIRED = ("task", "seed", "data.name", *(f"model.{k}" for k in MODEL_KEYS),
            *(f"train.{k}" for k in TRAIN_KEYS if k != "end_lr_factor"))
TYPES: dict[str, type] = {
    **{k: t for k, t in config_lib.TYPES.items() if k in ("task", "seed") or
       k.startswith("data.")},
    "model.name": str, "model.max_bond": int, "model.min_bond": int, "model.init": str,
    "model.init_bond": int, "model.init_per_class": int, "model.local_dim": int,
    "model.feature_map": str, "model.init_std": float,
    "train.num_sweeps": int, "train.solver": str, "train.passes": int, "train.l2": float,
    "train.loss": str, "train.lr": float, "train.momentum": float,
    "train.schedule": str, "train.end_lr_factor": float, "train.local_steps": int,
    "train.cutoff": float, "train.eval_batch_size": int, "train.checkpoint_every": int,
    "train.keep_checkpoints": int,
}
# The rules this task shares with classification come from config.RULES; the rest are
# the sweep's own.
_SHARED = ("seed", "model.local_dim", "model.init_std", "data.downsample", "data.n_train",
           "data.n_test", "train.lr", "train.end_lr_factor", "train.eval_batch_size",
           "train.checkpoint_every", "train.keep_checkpoints")
RULES = (
    *(r for r in config_lib.RULES if r[0] in _SHARED),
    ("model.max_bond", lambda v: v >= 1, "an int >= 1"),
    ("model.min_bond", lambda v: v >= 1, "an int >= 1"),
    ("model.init_bond", lambda v: v >= 1, "an int >= 1"),
    ("model.init_per_class", lambda v: v >= 1, "an int >= 1"),
    ("train.passes", lambda v: v >= 0, "an int >= 0"),
    ("train.l2", lambda v: v >= 0, "a float >= 0"),
    ("train.num_sweeps", lambda v: v >= 1, "an int >= 1"),
    ("train.local_steps", lambda v: v >= 0, "an int >= 0"),
    ("train.momentum", lambda v: 0 <= v < 1, "a float in [0, 1)"),
    ("train.cutoff", lambda v: 0 <= v < 1, "a float in [0, 1) (the discarded weight)"),
)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for an impossible config, before any data is loaded.

    Checks (:func:`tnlib.experiments.config.validate` / ``check_keys``, as the
    classification task): required keys, unknown keys (top level, ``model``,
    ``train``, the data set's options), types, allowed names and value ranges, then
    ``init_bond <= max_bond``, and the ``mesh`` (:func:`check_mesh`).
    """
    validate(config, choices={"task": ["sweep"], "model.name": ["mps_sweep"],
                              "model.feature_map": FEATURE_MAPS, "train.loss": sw.LOSSES,
                              "model.init": ["data", "product"], "train.solver": sw.SOLVERS,
                              "train.schedule": ["constant", "cosine"],
                              "data.name": data_lib.LOADERS},
             rules=RULES, types=TYPES, required=REQUIRED)
    check_keys(config, {"": ("task", "seed", "data", "model", "train", "mesh"),
                        "model": MODEL_KEYS, "train": TRAIN_KEYS})
    check_mesh(config)
    if config.model.init_bond > config.model.max_bond:
        raise ConfigError(f"model.init_bond={config.model.init_bond} exceeds "
                          f"model.max_bond={config.model.max_bond}")
    if config.model.min_bond > config.model.max_bond:
        raise ConfigError(f"model.min_bond={config.model.min_bond} exceeds "
                          f"model.max_bond={config.model.max_bond}")
    if config.train.solver == "cg" and config.train.loss != "squared":
        raise ConfigError(f"train.solver='cg' solves the squared loss; set train.loss="
                          f"'squared' (got {config.train.loss!r}) or train.solver='gd'")
    if config.model.feature_map == "linear" and config.model.local_dim != 2:
        raise ConfigError("model.feature_map='linear' needs model.local_dim=2")
    data_lib.check_options(config.data)


def check_mesh(config: ml_collections.ConfigDict, n_train: int | None = None) -> int:
    """The size of ``mesh.data`` for this run's devices; ConfigError naming the key
    when the mesh does not fit the devices, has another axis larger than 1 (the
    sweep splits only the samples), or does not divide the training samples
    (``n_train``, default ``data.n_train`` when given)."""
    cfg = config.get("mesh")
    for name, size in (dict(cfg) if cfg is not None else {}).items():
        if name != sharding.DATA and size not in (1, -1) and not isinstance(size, bool):
            raise ConfigError(f"mesh.{name}={size!r}: the sweep task splits only the training "
                              f"samples (over mesh.{sharding.DATA}) and keeps the chain "
                              f"replicated; set mesh.{name}=1")
    shape = sharding.mesh_shape(cfg, jax.device_count())
    for name, size in shape.items():
        if name != sharding.DATA and size > 1:
            raise ConfigError(f"mesh.{name}=-1 gives {size} devices: the sweep task splits "
                              f"only the training samples; set mesh.{name}=1")
    n_data = shape[sharding.DATA]
    given = config.data.get("n_train")
    n_train = given if n_train is None else n_train
    if n_train is not None and n_train % n_data:
        raise ConfigError(f"data.n_train={given!r}: the {n_train} training samples do not split "
                          f"over the {n_data} devices of mesh.{sharding.DATA} (none is "
                          f"dropped); set data.n_train to a multiple of {n_data} or "
                          f"mesh.{sharding.DATA} to a divisor of {n_train}")
    return n_data


# --------------------------------------------------------------------------- evaluation


_features = jax.jit(local_feature_map, static_argnums=(1, 2))


@functools.partial(jax.jit, static_argnames=("feature_map", "loss"))
def _eval_batch(mps, x, y, mask, *, feature_map, loss):
    """Summed loss and number correct over the rows of ``x`` ``(B, L)`` where ``mask``."""
    out, _ = sw.logits(mps, local_feature_map(x, mps.local_dim, feature_map))
    if loss == "cross_entropy":
        losses = jax.nn.logsumexp(out, -1) - jnp.take_along_axis(out, y[:, None], -1)[:, 0]
    else:
        losses = 0.5 * jnp.sum((out - jax.nn.one_hot(y, out.shape[-1], dtype=out.dtype)) ** 2,
                               -1)
    correct = jnp.argmax(out, -1) == y
    return jnp.sum(jnp.where(mask, losses, 0)), jnp.sum(mask & correct)


def evaluate(mps, split, batch_size: int, feature_map: str, loss: str,
             mesh=None) -> dict[str, float]:
    """Mean loss (the training loss) and accuracy of ``mps`` over ``split``
    (:func:`tnlib.experiments.data.evaluate`: padded, masked batches, split over
    ``mesh.data`` when given)."""
    step = functools.partial(_eval_batch, feature_map=feature_map, loss=loss)
    return data_lib.evaluate(step, mps, split, batch_size, mesh)


# --------------------------------------------------------------------------- task


def _wait(mesh, info) -> None:
    """On a mesh of more than one device, wait for an update before the next is queued
    (:func:`~tnlib.experiments.sharding.throttle`): XLA:CPU's simulated devices
    deadlock when the host queues many collective programs ahead. On GPUs that costs
    one dispatch latency per update."""
    sharding.throttle(mesh, 0, info["loss_after"], every=1)


def make_schedule(tc: ml_collections.ConfigDict) -> optax.Schedule:
    """Step size against the sweep index (0-based): ``train.lr`` constant, or a cosine
    from ``train.lr`` at the first sweep to ``lr * end_lr_factor`` at the last."""
    if tc.schedule == "constant" or tc.num_sweeps == 1:
        return optax.constant_schedule(float(tc.lr))
    return optax.cosine_decay_schedule(float(tc.lr), tc.num_sweeps - 1,
                                       alpha=float(tc.get("end_lr_factor", 0.0)))


def _n_params(mps: sw.LabelledMPS) -> int:
    """Parameters kept: the pixel cores at the kept bonds, plus the label's classes."""
    dims = [int(r) for r in np.asarray(mps.ranks)]
    d, c = mps.local_dim, int(mps.center)
    return (sum(a * d * b for a, b in zip(dims, dims[1:], strict=False))
            + dims[c] * dims[c + 1] * d * (mps.n_classes - 1))


def setup(config: ml_collections.ConfigDict) -> runner.Task:
    """Load the data and build the chain: the :class:`~runner.Task` of ``config``.

    The state is ``(mps, envs)``; one step is one bond update (its direction follows
    from the step index: the label starts every sweep on the middle site, ``L // 2``).
    A checkpoint holds the chain only, at its current padded bond; the environments of
    the training set are recomputed from it at the first step of a session."""
    mc, tc = config.model, config.train
    splits = data_lib.from_config(config.data)
    x_train, y_train = splits["train"]
    n_train, n_sites = x_train.shape
    if n_sites < 2:
        raise ConfigError(f"the data have {n_sites} pixel(s); sweeping needs at least 2")
    check_mesh(config, n_train)
    mesh = sharding.make_mesh(config.get("mesh"))
    n_classes = int(max(y.max() for _, y in splits.values())) + 1
    key, home = jax.random.key(config.seed), n_sites // 2  # the label's site (TNML's)
    if mc.init == "data":
        feats = np.asarray(_features(jnp.asarray(x_train), mc.local_dim, mc.feature_map))
        mps = sw.init_from_data(key, feats, y_train, n_classes, init_bond=mc.init_bond,
                                per_class=mc.init_per_class, center=home)
    else:
        mps = sw.init(key, n_sites, n_classes, max_bond=mc.init_bond, local_dim=mc.local_dim,
                      init_bond=mc.init_bond, init_std=mc.init_std, center=home)
    schedule = make_schedule(tc)
    directions = sw.sweep_directions(n_sites, home, back=True)
    per_sweep = len(directions)
    options = dict(solver=tc.solver, passes=tc.passes, l2=tc.l2, cutoff=tc.cutoff,
                   min_rank=mc.min_bond, loss=tc.loss, steps=tc.local_steps,
                   momentum=tc.momentum)

    def step(state, index, tick):
        mps, envs = state
        if envs is None:  # samples and their environments split over mesh.data
            xs, ys = sharding.shard_batch(mesh, x_train, y_train)
            envs = sw.environments(mps, _features(xs, mc.local_dim, mc.feature_map), ys)
        direction = directions[index % per_sweep]
        mps, envs = sw.grow(mps, envs, direction, mc.max_bond)
        mps, envs, info = sw.update(mps, envs, direction=direction, max_rank=mc.max_bond,
                                    lr=float(schedule(index // per_sweep)), **options)
        if mesh.size > 1:
            _wait(mesh, info)
        return (mps, envs), {"local_loss": info["loss_after"], "discarded": info["discarded"]}

    def evaluate_all(state) -> dict[str, float]:
        out = {}
        for name in ("train", "validation", "test"):
            if name in splits:
                r = evaluate(state[0], splits[name], tc.eval_batch_size, mc.feature_map, tc.loss,
                             mesh)
                out.update({f"{name}_loss": r["loss"], f"{name}_acc": r["acc"]})
        return out

    def log_extra(state, step):
        dims = [int(r) for r in np.asarray(state[0].ranks)]
        return {"lr": float(schedule((step - 1) // per_sweep)), "bond_dims": dims,
                "max_kept_bond": max(dims), "mean_bond": float(np.mean(dims[1:-1])),
                "padded_bond": state[0].max_bond}

    def save(state):
        mps = state[0]
        return {"cores": mps.cores, "label": mps.label, "center": mps.center,
                "ranks": mps.ranks}, {}

    def load(tree, info):
        # through the host and replicated over this run's mesh as a fresh run's chain is
        # (a checkpoint of any mesh fits), so the resumed run reuses its compilations
        tree = {k: jnp.asarray(np.asarray(v)) for k, v in tree.items()}
        mps = sw.LabelledMPS(tree["cores"], tree["label"], tree["center"], tree["ranks"])
        return sharding.replicate(mps, mesh), None

    def summarize(state, final):
        mps = state[0]
        return {**records.eval_summary(final), "n_params": _n_params(mps), "n_train": n_train,
                "n_test": len(splits["test"][0]), "updates_per_sweep": per_sweep,
                "bond_dims": [int(r) for r in np.asarray(mps.ranks)]}

    return runner.Task(
        state=(sharding.replicate(mps, mesh), None), total_steps=tc.num_sweeps * per_sweep,
        step=step, evaluate=evaluate_all, summarize=summarize, save=save, load=load,
        fixed_shapes=False, log_every=per_sweep, eval_every=per_sweep,
        steps_per_epoch=per_sweep, checkpoint_every=tc.checkpoint_every,
        keep_checkpoints=tc.keep_checkpoints, log_extra=log_extra,
        postfix=("train_acc", "max_kept_bond"),
        diverged="the sweep ending at update {step} diverged (train loss {loss}); try a "
                 "smaller train.lr (solver gd) or a larger train.l2 (solver cg)",
        meta={"n_train": n_train, "n_sites": n_sites, "total_steps": tc.num_sweeps * per_sweep,
              "updates_per_sweep": per_sweep, "max_bond": mc.max_bond, "mesh": dict(mesh.shape),
              "processes": jax.process_count()},
        title=f"MPS sweeps (chi <= {mc.max_bond}) on {config.data.name}",
        desc="sweep", unit="update")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` by sweeps in ``workdir`` (resuming from its latest checkpoint).

    Returns the summary written to ``summary.json``: test (and validation) accuracy
    and loss, ``steps`` (sweeps done), the training wall time in seconds (summed over
    resumed sessions), the number of parameters kept (sum over the kept bonds) and
    the final ``bond_dims``. Lock, config checks, checkpoints and records are
    :func:`tnlib.experiments.runner.run`'s: config errors (including those known only
    after loading the data) are raised before the directory is created.
    """
    check_config(config)
    return runner.run(config, workdir, setup)
