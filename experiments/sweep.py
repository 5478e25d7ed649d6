"""MPS classifier trained by DMRG-style two-site sweeps: ``train_and_evaluate(config, workdir)``.

The model is a :class:`tnlib.sweep.LabelledMPS` (the classifier of Stoudenmire &
Schwab 2016 with the class index on one pixel core) trained by
:func:`tnlib.sweep.sweep`: full-batch gradient steps on each bond tensor with the
training set's environments cached, truncated SVD with ``model.max_bond`` and
``train.cutoff``. One logged step is one sweep (right to the end and back); each
line of ``metrics.jsonl`` carries the train / validation / test loss and accuracy
and the bond dimensions kept (``bond_dims``, all ``L + 1`` of them). A checkpoint
(orbax, with a SHA-256 manifest: :func:`tnlib.experiments.training.save_checkpoint`)
is written after every ``train.checkpoint_every`` sweeps and a run started again
resumes from the last one that verifies (a damaged one is set aside with a
:class:`~tnlib.experiments.records.CheckpointWarning` and the previous one used); the
environments are recomputed from the model, so a resumed run continues exactly as an
uninterrupted one. While it runs, the run directory is locked
(:func:`~tnlib.experiments.records.lock_run_dir`): a second run on it fails at once.

Devices. The ``mesh`` section (:mod:`tnlib.experiments.sharding`; default all devices
on ``data``) splits the training samples, their cached environments and every
evaluation batch over ``mesh.data``; the chain is replicated. Each update is one
SPMD program: the bond gradient is summed over the devices (an all-reduce inside the
gradient-step loop, same trip count everywhere) and every device computes the same
SVD split of the replicated bond tensor. The host waits for each update before
dispatching the next when the mesh has more than one device: XLA:CPU's simulated
devices deadlock when the host queues many collective programs ahead (see
``_bounded_dispatch``). A ``model`` axis larger than 1 is a config error (the bond
tensors are small), and so is a training set that does not split evenly over
``mesh.data`` (no sample is dropped). Only process 0 writes records; checkpoints
restore onto any mesh.

:func:`to_classifier` / :func:`from_classifier` convert to and from
:class:`tnlib.models.MPSClassifier`, so a sweep-trained model can be evaluated,
saved or fine-tuned with the gradient-training code.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx
from tqdm.auto import tqdm

from tnlib import linalg
from tnlib import sweep as sw
from tnlib.models.mps import FEATURE_MAPS, MPSClassifier, local_feature_map

from . import config as config_lib
from . import data as data_lib
from . import records, sharding, training
from .classification import _check_resumable, load_data
from .config import ConfigError, check_keys, validate

__all__ = ["MODEL_KEYS", "TRAIN_KEYS", "check_config", "evaluate", "from_classifier",
           "to_classifier", "train_and_evaluate"]

# Keys of config.model and config.train the task reads (any other is a ConfigError).
MODEL_KEYS = ("name", "max_bond", "init_bond", "local_dim", "feature_map", "init_std")
TRAIN_KEYS = ("num_sweeps", "loss", "lr", "momentum", "schedule", "end_lr_factor",
              "local_steps", "cutoff", "eval_batch_size", "checkpoint_every", "keep_checkpoints")
# Every key but train.end_lr_factor (read by the cosine schedule only; default 0).
REQUIRED = ("task", "seed", "data.name", *(f"model.{k}" for k in MODEL_KEYS),
            *(f"train.{k}" for k in TRAIN_KEYS if k != "end_lr_factor"))
TYPES: dict[str, type] = {
    **{k: t for k, t in config_lib.TYPES.items() if k in ("task", "seed") or
       k.startswith("data.")},
    "model.name": str, "model.max_bond": int, "model.init_bond": int, "model.local_dim": int,
    "model.feature_map": str, "model.init_std": float,
    "train.num_sweeps": int, "train.loss": str, "train.lr": float, "train.momentum": float,
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
    ("model.init_bond", lambda v: v >= 1, "an int >= 1"),
    ("train.num_sweeps", lambda v: v >= 1, "an int >= 1"),
    ("train.local_steps", lambda v: v >= 0, "an int >= 0"),
    ("train.momentum", lambda v: 0 <= v < 1, "a float in [0, 1)"),
    ("train.cutoff", lambda v: 0 <= v < 1, "a float in [0, 1)"),
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
                              "train.schedule": ["constant", "cosine"],
                              "data.name": data_lib.LOADERS},
             rules=RULES, types=TYPES, required=REQUIRED)
    check_keys(config, {"": ("task", "seed", "data", "model", "train", "mesh"),
                        "model": MODEL_KEYS, "train": TRAIN_KEYS})
    check_mesh(config)
    if config.model.init_bond > config.model.max_bond:
        raise ConfigError(f"model.init_bond={config.model.init_bond} exceeds "
                          f"model.max_bond={config.model.max_bond}")
    if config.model.feature_map == "linear" and config.model.local_dim != 2:
        raise ConfigError("model.feature_map='linear' needs model.local_dim=2")
    extra = {k for k in config.data if k not in ("name", "n_train", "n_test")}
    unknown = sorted(extra - set(data_lib.loader_options(config.data.name)))
    if unknown:
        raise ConfigError(f"data.{unknown[0]}: data set {config.data.name!r} has no such option; "
                          f"it takes {data_lib.loader_options(config.data.name)}")


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


# --------------------------------------------------------------------------- conversion


def from_classifier(model: MPSClassifier, max_bond: int | None = None) -> sw.LabelledMPS:
    """The :class:`~tnlib.sweep.LabelledMPS` of an ``MPSClassifier``, exactly.

    The label core is merged into the pixel core after it (before it when
    ``label_site == n_sites``), which becomes the labelled site. Bonds are padded to
    ``max_bond`` (default the classifier's ``bond_dim``; not smaller). The outputs
    differ from the classifier's by a positive factor per sample (the environments
    are normalized at another place): the same predictions.
    """
    left, right = jnp.asarray(model.left[...]), jnp.asarray(model.right[...])
    label = jnp.asarray(model.label[...])
    k, L = model.label_site, model.n_sites
    max_bond = model.bond_dim if max_bond is None else max_bond
    cores = list(left) + list(right)
    if k < L:
        merged, center = jnp.einsum("acb,bse->asce", label, right[0]), k
    else:
        merged, center = jnp.einsum("asb,bce->asce", left[-1], label), L - 1
    if center == 0:
        merged = merged[:1]
    if center == L - 1:
        merged = merged[..., :1]
    cores[0], cores[-1] = cores[0][:1], cores[-1][..., :1]
    return sw.from_cores(cores, merged, center, max_bond)


def to_classifier(mps: sw.LabelledMPS, *, feature_map: str = "cos_sin",
                  dtype=jnp.float32) -> MPSClassifier:
    """An ``MPSClassifier`` computing the same predictions as ``mps`` (outside jit).

    The labelled core ``(D, d, C, D)`` at site ``c`` is split by SVD into a pixel core
    and a label core placed after it (``label_site = c + 1``), keeping at most ``D``
    singular values: exact when the label sits at site 0 (where every sweep ends;
    the split then has rank ``<= d``) or whenever that core's rank is ``<= D``.
    Logits differ from :func:`tnlib.sweep.logits` by a positive factor per sample.
    """
    D, d, C = mps.max_bond, mps.local_dim, mps.n_classes
    c, L = int(mps.center), mps.n_sites
    u, s, vh = linalg.svd(mps.label.reshape(D * d, C * D))  # NaN for a non-finite label
    u, s, vh = u[:, :D], s[:D], vh[:D]
    pixel = u.reshape(D, d, D)
    label = (s[:, None] * vh).reshape(D, C, D)
    cores = mps.cores.at[c].set(pixel)
    # an abstract module (no random initialization to compute), then the parameters
    model = nnx.eval_shape(lambda: MPSClassifier(
        L, C, bond_dim=D, local_dim=d, label_site=c + 1, feature_map=feature_map,
        readout="linear", param_dtype=dtype, rngs=nnx.Rngs(0)))
    model.left = nnx.Param(cores[: c + 1].astype(dtype))
    model.right = nnx.Param(cores[c + 1 :].astype(dtype))
    model.label = nnx.Param(label.astype(dtype))
    return model


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
    """Mean loss (the training loss) and accuracy over ``split``; the last batch is
    padded and masked, so one compilation per batch size. With ``mesh``, batches are
    split over its ``data`` axis (the batch size rounded up to a multiple of it)."""
    x, y = split
    n = len(x)
    batch_size = min(batch_size, n)
    if mesh is not None:
        n_data = mesh.shape[sharding.DATA]
        batch_size = -(-batch_size // n_data) * n_data
    total_loss, total_correct = 0.0, 0
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        mask = np.arange(batch_size) < len(xb)
        if len(xb) < batch_size:
            pad = batch_size - len(xb)
            xb = np.concatenate([xb, np.zeros((pad, x.shape[1]), x.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, y.dtype)])
        if mesh is not None:
            xb, yb, mask = sharding.shard_batch(mesh, xb, yb, mask)
        lsum, correct = _eval_batch(mps, xb, yb, mask, feature_map=feature_map, loss=loss)
        total_loss += float(lsum)
        total_correct += int(correct)
    return {"loss": total_loss / n, "acc": total_correct / n}


# --------------------------------------------------------------------------- checkpoints


def _state(mps):
    return {"cores": mps.cores, "label": mps.label, "center": mps.center, "ranks": mps.ranks}


def _restore(mngr, mps, quarantine: Path, mesh=None):
    """``(step, mps, meta)`` of the newest good checkpoint (damaged ones set aside), or
    None; the chain is replicated over ``mesh`` when given, whatever mesh wrote it."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state(mps))
    restored = training.restore_checkpoint(mngr, abstract, quarantine=quarantine)
    if restored is None:
        return None
    step, st, meta = restored
    # through the host and replicated over this run's mesh as a fresh run's chain is (a
    # checkpoint of any mesh fits), so the resumed run reuses the fresh run's compilations
    st = {k: jnp.asarray(np.asarray(v)) for k, v in st.items()}
    mps = sw.LabelledMPS(st["cores"], st["label"], st["center"], st["ranks"])
    return step, (mps if mesh is None else sharding.replicate(mps, mesh)), meta


def _bounded_dispatch(mesh, callback):
    """The per-update callback of :func:`tnlib.sweep.sweep`, which on a mesh of more
    than one device also waits for each update before the next is queued
    (:func:`~tnlib.experiments.sharding.throttle`: XLA:CPU's simulated devices deadlock
    when the host queues many collective programs ahead; a sweep queues ``2 (L - 1)``
    updates per sweep). On GPUs that costs one dispatch latency per update."""
    if mesh.size == 1:
        return callback

    def wait(info):
        sharding.throttle(mesh, 0, info["loss_after"], every=1)
        callback(info)

    return wait


def _lr(tc, sweep_index: int) -> float:
    """Step size of sweep ``sweep_index`` (0-based): constant or cosine to ``end_lr_factor``."""
    lr = float(tc.lr)
    if tc.schedule == "constant" or tc.num_sweeps == 1:
        return lr
    end = lr * float(tc.get("end_lr_factor", 0.0))
    frac = sweep_index / (tc.num_sweeps - 1)
    return end + 0.5 * (lr - end) * (1 + math.cos(math.pi * frac))


# --------------------------------------------------------------------------- driver


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train ``config`` by sweeps in ``workdir`` (resuming from its latest checkpoint).

    Returns the summary written to ``summary.json``: test (and validation) accuracy
    and loss, ``steps`` (sweeps done), the training wall time in seconds (summed over
    resumed sessions), the number of parameters kept (sum over the kept bonds) and
    the final ``bond_dims``.

    Holds ``workdir/run.lock`` while it runs (:func:`records.lock_run_dir`; process 0
    of a multi-process run), taken before the data are loaded when the directory
    exists: a second run on the same directory raises :class:`records.RunLockedError`
    at once. Config errors (:class:`ConfigError`, including those known only after
    loading the data) are raised before the directory is created.
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
    mc, tc = config.model, config.train
    splits = load_data(config.data)
    x_train, y_train = splits["train"]
    n_train, n_sites = x_train.shape
    if n_sites < 2:
        raise ConfigError(f"the data have {n_sites} pixel(s); sweeping needs at least 2")
    check_mesh(config, n_train)
    mesh = sharding.make_mesh(config.get("mesh"))
    main = sharding.is_main_process()  # process 0 writes the records; all save checkpoints
    n_classes = int(max(y.max() for _, y in splits.values())) + 1
    mps = sw.init(jax.random.key(config.seed), n_sites, n_classes, max_bond=mc.max_bond,
                  local_dim=mc.local_dim, init_bond=mc.init_bond, init_std=mc.init_std)
    mps = sharding.replicate(mps, mesh)
    if not checked:  # only now: config errors leave no trace
        # Another process of this run (or another run) may have created it meanwhile:
        # process 0 takes the lock whichever process made the directory.
        workdir.mkdir(parents=True, exist_ok=True)
        if main:
            stack.enter_context(records.lock_run_dir(workdir))
        _check_resumable(workdir, config)

    mngr = training.checkpoint_manager(workdir / "checkpoints", tc.keep_checkpoints)
    stack.callback(mngr.close)
    metrics_path = workdir / "metrics.jsonl"
    restored = _restore(mngr, mps, workdir / "checkpoints.corrupt", mesh)
    step, wall_before = 0, 0.0
    if restored is not None:
        step, mps, ck_meta = restored
        wall_before = float(ck_meta.get("wall_s", 0.0))
        if main:
            records.truncate_metrics(metrics_path, step)
            print(f"resumed from step {step}", flush=True)
    elif main:
        metrics_path.unlink(missing_ok=True)
    updates = 2 * (n_sites - 1)
    if main:
        records.write_run_start(workdir, config, restored=restored, step=step,
            task=config.task, n_train=n_train, n_sites=n_sites,
            total_steps=tc.num_sweeps, updates_per_sweep=updates, max_bond=mc.max_bond,
            mesh=dict(mesh.shape), processes=jax.process_count())

    def eval_all(mps) -> dict[str, float]:
        out = {}
        for name in ("train", "validation", "test"):
            if name in splits:
                r = evaluate(mps, splits[name], tc.eval_batch_size, mc.feature_map, tc.loss,
                             mesh)
                out.update({f"{name}_loss": r["loss"], f"{name}_acc": r["acc"]})
        return out

    envs, pending, last_record = None, [], {}
    t0 = time.perf_counter()
    bar = tqdm(total=tc.num_sweeps * updates, initial=step * updates, desc="sweep",
               unit="site", file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
               disable=not main)
    callback = _bounded_dispatch(mesh, lambda _: bar.update(1))
    try:
        while step < tc.num_sweeps:
            if envs is None:  # samples and their environments split over mesh.data
                xs, ys = sharding.shard_batch(mesh, x_train, y_train)
                feats = _features(xs, mc.local_dim, mc.feature_map)
                envs = sw.environments(mps, feats, ys)
                del feats, xs
            lr = _lr(tc, step)
            mps, envs, infos = sw.sweep(mps, envs, lr=lr, momentum=tc.momentum, cutoff=tc.cutoff,
                                        steps=tc.local_steps, loss=tc.loss, callback=callback)
            step += 1
            record: dict[str, Any] = eval_all(mps)
            if not math.isfinite(record["train_loss"]):
                raise FloatingPointError(f"sweep {step} diverged (train loss "
                                         f"{record['train_loss']}); try a smaller train.lr")
            bond_dims = [int(r) for r in np.asarray(mps.ranks)]
            wall = wall_before + time.perf_counter() - t0
            record.update(step=step, epoch=step, lr=lr, wall_s=wall, bond_dims=bond_dims,
                          max_kept_bond=max(bond_dims),
                          mean_bond=float(np.mean(bond_dims[1:-1])),
                          mean_discarded=float(np.mean(infos["discarded"])),
                          local_loss=float(np.mean(infos["loss_after"])))
            last_record = record
            if main:
                records.append_metrics(metrics_path, record)
            bar.set_postfix(acc=f"{record['train_acc']:.4f}", chi=max(bond_dims), refresh=False)
            if step % tc.checkpoint_every == 0 or step == tc.num_sweeps:
                training.commit_checkpoints(mngr, pending)  # the previous save, now complete
                training.save_checkpoint(mngr, step, _state(mps),
                                         {"step": step, "wall_s": wall, "seed": config.seed})
                pending = [step]
    finally:
        bar.close()
        training.commit_checkpoints(mngr, pending)

    if restored is not None and restored[0] == tc.num_sweeps:  # finished earlier: re-evaluate
        final, wall = eval_all(mps), wall_before
    else:
        final, wall = last_record, last_record["wall_s"]
    bond_dims = [int(r) for r in np.asarray(mps.ranks)]
    n_params = sum(a * mc.local_dim * b for a, b in zip(bond_dims, bond_dims[1:], strict=False))
    n_params += bond_dims[int(mps.center)] * bond_dims[int(mps.center) + 1] * mc.local_dim * (
        n_classes - 1)
    return records.finish_run(
        workdir, final, main=main, title=f"MPS sweeps (chi <= {mc.max_bond}) on {config.data.name}",
        steps=step, wall_s=wall, n_params=n_params, n_train=n_train,
        n_test=len(splits["test"][0]), bond_dims=bond_dims)
