"""Task-independent training pieces: optimizer, data order, checkpoints.

The data order is a pure function of ``(seed, epoch)``: step ``s`` of a run reads
batch ``s % steps_per_epoch`` of the permutation for epoch ``s // steps_per_epoch``.
A run resumed from a checkpoint at step ``K`` therefore sees exactly the batches the
uninterrupted run would have seen, with no RNG state to save beyond ``(seed, K)``.

Checkpoints are orbax step directories ``checkpoints/<step>/``. Orbax writes each one
to a temporary directory and renames it when complete, so a run killed mid-save
leaves no half-written step. :func:`save_checkpoint` waits for orbax to finish and
then, before it returns, adds ``tnlib_manifest.json`` to the step directory (the size
and SHA-256 of every file), and only then deletes checkpoints beyond ``keep``: the
newest checkpoint is trusted only once its integrity record exists, and a trusted one
is never deleted before its successor is. :func:`restore_checkpoint` walks the steps
from the newest down, verifies the manifest (orbax itself does not notice flipped
bytes: it restores them as wrong numbers), restores with orbax, and moves a step that
fails either check, or that has no manifest at all (a run stopped between orbax's
rename and the manifest: nothing can vouch for its bytes), to ``checkpoints.corrupt/``
with a :class:`CheckpointWarning` naming the step and the reason, then tries the
previous step.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from . import faults
from .records import CheckpointError, CheckpointWarning

__all__ = [
    "MANIFEST",
    "TRAIN_KEYS",
    "CheckpointError",
    "CheckpointWarning",
    "batch_indices",
    "checkpoint_manager",
    "checkpoint_path",
    "commit_checkpoints",
    "epoch_permutation",
    "make_optimizer",
    "make_schedule",
    "restore_checkpoint",
    "save_checkpoint",
    "verify_manifest",
    "write_manifest",
]

# Keys of config.train read by make_schedule / make_optimizer and the training loop.
TRAIN_KEYS = (
    "batch_size", "eval_batch_size", "num_epochs", "lr", "schedule", "end_lr_factor",
    "warmup_steps", "weight_decay", "grad_clip_norm", "log_every", "eval_every",
    "checkpoint_every", "keep_checkpoints", "mup", "augment_shift", "optimizer", "momentum",
    "decay_epochs", "label_smoothing", "mixup",
)


# --------------------------------------------------------------------------- optimizer


def make_schedule(train: ml_collections.ConfigDict, total_steps: int,
                  steps_per_epoch: int | None = None) -> optax.Schedule:
    """Learning rate against step: linear warmup, then constant or cosine decay, or
    TensorNet's per-epoch log-spaced steps.

    Reads ``lr``, ``warmup_steps``, ``schedule`` (``"constant"``, ``"cosine"`` or
    ``"logspace_epochs"``) and ``end_lr_factor`` (the final lr as a fraction of ``lr``).
    ``"logspace_epochs"`` (MatConvNet's ``learningRate = logspace(a, b, n)``): epoch
    ``e`` runs at the ``e``-th of ``decay_epochs`` log-spaced rates from ``lr`` to
    ``lr * end_lr_factor``, later epochs at the last; it needs ``steps_per_epoch``.
    """
    lr, warmup = float(train.lr), int(train.warmup_steps)
    warmup = min(warmup, max(total_steps - 1, 0))
    if train.schedule == "logspace_epochs":
        n = int(train.get("decay_epochs", 0) or 0)
        if n < 1 or not steps_per_epoch:
            raise ValueError("train.schedule='logspace_epochs' needs train.decay_epochs >= 1 "
                             f"(got {train.get('decay_epochs')!r}) and the steps per epoch")
        rates = jnp.asarray(np.logspace(math.log10(lr),
                                        math.log10(lr * float(train.end_lr_factor)), n),
                            jnp.float32)
        return lambda step: rates[jnp.minimum(step // steps_per_epoch, n - 1)]
    if train.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup else lr,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=lr * float(train.get("end_lr_factor", 0.0)),
        )
    if train.schedule != "constant":
        raise ValueError(f"train.schedule={train.schedule!r}: expected 'constant', 'cosine' "
                         "or 'logspace_epochs'")
    if not warmup:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
    )


def make_optimizer(
    train: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Adam (AdamW when ``weight_decay > 0``), or with ``optimizer="sgd"`` SGD with
    ``momentum`` and, when ``weight_decay > 0``, L2 weight decay added to the gradients of
    the kernels (parameters with more than one axis; biases are not decayed) before the
    momentum, as MatConvNet's ``cnn_train``; optionally after global-norm clipping."""
    wd = float(train.get("weight_decay", 0.0))
    name = train.get("optimizer", "adam") or "adam"
    if name == "sgd":
        opt = optax.sgd(schedule, momentum=float(train.get("momentum", 0.0)) or None)
        if wd > 0:
            opt = optax.chain(optax.add_decayed_weights(
                wd, mask=lambda p: jax.tree.map(lambda a: a.ndim > 1, p)), opt)
    elif name == "adam":
        opt = optax.adamw(schedule, weight_decay=wd) if wd > 0 else optax.adam(schedule)
    else:
        raise ValueError(f"train.optimizer={name!r}: expected 'adam' or 'sgd'")
    clip = float(train.get("grad_clip_norm", 0.0))
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt


# --------------------------------------------------------------------------- data order


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` training examples in ``epoch``; a pure function of its inputs."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> np.ndarray:
    """Indices of the examples in the batch of global ``step`` (incomplete batches dropped)."""
    steps_per_epoch = n // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} training examples")
    epoch, i = divmod(step, steps_per_epoch)
    return epoch_permutation(seed, epoch, n)[i * batch_size : (i + 1) * batch_size]


# --------------------------------------------------------------------------- checkpoints


MANIFEST = "tnlib_manifest.json"


def checkpoint_manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    """An orbax manager for the checkpoints under ``directory``; :func:`save_checkpoint`
    keeps the last ``keep`` of them (orbax itself deletes nothing: it would delete the
    previous checkpoint before the new one has its manifest).

    An interrupted save leaves only a temporary directory that orbax ignores, so a
    restore always sees complete checkpoints.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=None, create=True)
    mngr = ocp.CheckpointManager(Path(directory).absolute(), options=options)
    mngr.tnlib_keep = int(keep)  # read by save_checkpoint
    return mngr


def checkpoint_path(mngr: ocp.CheckpointManager, step: int) -> Path:
    """The directory of ``step`` (orbax's default step naming: the bare number)."""
    return Path(mngr.directory) / str(step)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _files(step_dir: Path) -> list[Path]:
    return sorted(p for p in Path(step_dir).rglob("*") if p.is_file() and p.name != MANIFEST
                  and not p.name.endswith(".tmp"))


def write_manifest(step_dir: Path, step: int) -> Path:
    """Write ``step_dir/tnlib_manifest.json`` (size and SHA-256 of every file), atomically."""
    step_dir = Path(step_dir)
    files = {str(p.relative_to(step_dir)): {"size": p.stat().st_size, "sha256": _digest(p)}
             for p in _files(step_dir)}
    path = step_dir / MANIFEST
    tmp = path.with_name(MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"step": step, "files": files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def verify_manifest(step_dir: Path) -> tuple[bool, str | None]:
    """``(has_manifest, problem)``: ``problem`` names the first file that is missing or
    whose size or SHA-256 differs from the manifest (``None`` when all match)."""
    path = Path(step_dir) / MANIFEST
    if not path.exists():
        return False, None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        wants = sorted((rel, int(want["size"]), str(want["sha256"]))
                       for rel, want in files.items())
        step = manifest["step"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return True, f"its manifest {path} is unreadable ({type(e).__name__}: {e})"
    if str(step) != Path(step_dir).name:
        return True, f"its manifest {path} is for step {step!r}, not {Path(step_dir).name}"
    for rel, size, digest in wants:
        p = Path(step_dir) / rel
        if not p.is_file():
            return True, f"file {p} is missing"
        if p.stat().st_size != size:
            return True, f"file {p} has {p.stat().st_size} bytes, the manifest says {size}"
        if _digest(p) != digest:
            return True, f"file {p} does not match its SHA-256 in the manifest"
    return True, None


def save_checkpoint(mngr: ocp.CheckpointManager, step: int, state: Any,
                    meta: dict[str, Any]) -> Path:
    """Save ``state`` (a pytree of arrays) and the JSON ``meta`` as ``step``, durably.

    Returns only once orbax has finished writing and renamed the step directory, its
    manifest is written (process 0) and the checkpoints beyond the manager's ``keep``
    are deleted, oldest first (never the one just written). A process killed before
    the manifest leaves a step that :func:`restore_checkpoint` sets aside. Returns the
    step directory.
    """
    mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                            meta=ocp.args.JsonSave(meta)))
    faults.point("save")
    commit_checkpoints(mngr, [step])
    return checkpoint_path(mngr, step)


def commit_checkpoints(mngr: ocp.CheckpointManager, steps: Iterable[int]) -> list[int]:
    """Wait for pending saves, write the manifest of each of ``steps`` on disk that has
    none, then delete the oldest checkpoints beyond the manager's ``keep``; returns the
    steps committed. In a multi-process run only process 0 writes manifests and
    deletes (orbax has already synchronised the save); the others wait at a barrier."""
    mngr.wait_until_finished()
    faults.point("commit")
    done = []
    if jax.process_index() == 0:
        for step in steps:
            step_dir = checkpoint_path(mngr, step)
            if step_dir.is_dir() and not (step_dir / MANIFEST).exists():
                write_manifest(step_dir, step)
                done.append(step)
        _prune(mngr)
    _sync_processes("tnlib committed checkpoints")
    mngr.reload()
    return done


def _prune(mngr: ocp.CheckpointManager) -> None:
    """Delete the oldest step directories beyond ``mngr.tnlib_keep`` (all of them have
    manifests by now: only the newest can lack one, and it is never deleted)."""
    keep = getattr(mngr, "tnlib_keep", None)
    steps = sorted(int(p.name) for p in Path(mngr.directory).iterdir()
                   if p.name.isdigit() and p.is_dir())
    for step in steps[:-keep] if keep else []:
        shutil.rmtree(checkpoint_path(mngr, step), ignore_errors=True)


def _set_aside(step_dir: Path, quarantine: Path) -> Path:
    quarantine.mkdir(parents=True, exist_ok=True)
    dest, k = quarantine / step_dir.name, 1
    while dest.exists():
        dest, k = quarantine / f"{step_dir.name}.{k}", k + 1
    shutil.move(str(step_dir), str(dest))
    return dest


def _sync_processes(name: str) -> None:
    """Barrier across the processes of a multi-process run (nothing in a single one)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def restore_checkpoint(
    mngr: ocp.CheckpointManager,
    abstract_state: Any,
    *,
    quarantine: Path,
) -> tuple[int, Any, dict[str, Any]] | None:
    """``(step, state, meta)`` of the newest checkpoint that verifies and restores, or None.

    A step whose manifest does not match its files, or that has no manifest (killed
    between orbax's commit and ours: its bytes cannot be verified, so it is not
    trusted), is moved to ``quarantine`` with a :class:`CheckpointWarning` naming the
    step and the file or the reason, and the previous step is tried. A step whose
    manifest matches but that orbax cannot restore into ``abstract_state`` raises
    :class:`CheckpointError` (a code change, not a damaged disk: nothing is moved). In
    a multi-process run every process calls this (orbax restores collectively) and
    reaches the same verdicts from the shared files; process 0 alone moves a bad step,
    the others wait for it at a barrier.
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        step_dir = checkpoint_path(mngr, step)
        has_manifest, problem = verify_manifest(step_dir)
        if not has_manifest:
            problem = (f"it has no integrity record ({MANIFEST}: the run stopped between "
                       "orbax's save and the record), so its files cannot be verified")
        if problem is None:
            try:
                out = mngr.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
                return step, out.state, dict(out.meta)
            except Exception as e:  # orbax / tensorstore raise many types for bad files
                # on one line: TensorStore errors carry a multi-line spec
                detail = " ".join(str(e).split())[:300]
                raise CheckpointError(
                    f"checkpoint step {step} in {step_dir} is intact but does not fit this "
                    f"run's model and optimizer ({type(e).__name__}: {detail}); use "
                    "another --workdir"
                ) from e
        if jax.process_index() == 0:  # one mover; the others wait for the move
            dest = _set_aside(step_dir, Path(quarantine))
        else:
            dest = Path(quarantine) / step_dir.name
        _sync_processes(f"tnlib set aside checkpoint {step}")
        what = "is corrupt or truncated" if has_manifest else "is not verified"
        msg = (f"checkpoint step {step} {what}: {problem}; moved it to {dest} and trying "
               "the previous checkpoint")
        warnings.warn(msg, CheckpointWarning, stacklevel=2)
        mngr.reload()
    return None
