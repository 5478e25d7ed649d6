"""Task-independent training pieces: optimizer, data order, checkpoints.

The data order is a pure function of ``(seed, epoch)``: step ``s`` of a run reads
batch ``s % steps_per_epoch`` of the permutation for epoch ``s // steps_per_epoch``.
A run resumed from a checkpoint at step ``K`` therefore sees exactly the batches the
uninterrupted run would have seen, with no RNG state to save beyond ``(seed, K)``.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

__all__ = [
    "batch_indices",
    "checkpoint_manager",
    "epoch_permutation",
    "make_optimizer",
    "make_schedule",
]


# --------------------------------------------------------------------------- optimizer


def make_schedule(train: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Learning rate against step: linear warmup, then constant or cosine decay.

    Reads ``lr``, ``warmup_steps``, ``schedule`` (``"constant"`` or ``"cosine"``) and
    ``end_lr_factor`` (the cosine's final lr as a fraction of ``lr``).
    """
    lr, warmup = float(train.lr), int(train.warmup_steps)
    warmup = min(warmup, max(total_steps - 1, 0))
    if train.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0 if warmup else lr,
            peak_value=lr,
            warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1),
            end_value=lr * float(train.get("end_lr_factor", 0.0)),
        )
    if train.schedule != "constant":
        raise ValueError(f"train.schedule={train.schedule!r}: expected 'constant' or 'cosine'")
    if not warmup:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
    )


def make_optimizer(
    train: ml_collections.ConfigDict, schedule: optax.Schedule
) -> optax.GradientTransformation:
    """Adam (AdamW when ``weight_decay > 0``), optionally after global-norm clipping."""
    wd = float(train.get("weight_decay", 0.0))
    opt = optax.adamw(schedule, weight_decay=wd) if wd > 0 else optax.adam(schedule)
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


def checkpoint_manager(directory: Path, keep: int) -> ocp.CheckpointManager:
    """An orbax manager keeping the last ``keep`` checkpoints under ``directory``.

    Saving is asynchronous; an interrupted save leaves only a temporary directory that
    orbax ignores, so a restore always sees complete checkpoints.
    """
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)
