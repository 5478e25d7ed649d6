"""Rank-adaptive low-rank training (DLRT, Schotthoefer et al. 2022) as a ``tnlib run`` task.

The paper's fully connected MNIST network as its official TensorFlow code builds it
(``CSMMLab/DLRT-Net``, ``DLRTNetAdaptive``): ``model.depth`` hidden layers of width
``model.width`` (the first ``784 -> width``), each ``W = U S V^T`` trained by
:func:`tnlib.dlrt.step` with ReLU, then a dense ``width -> 10`` output layer (trained in
the S-step, as there), softmax cross-entropy. ``model.kind = "dense"`` trains the same
network with dense hidden layers and the same optimizer (the paper's baseline).

One runner step is one batch; the batch order of epoch ``e`` is a permutation drawn from
``(seed, e)``, so a resumed run continues bitwise. Evaluation reports test and
validation accuracy, each layer's rank, and the paper's parameter counts:
``eval_params = sum(in r + r out) + width * 10`` and ``train_params = sum(2 in r + 4 r^2
+ 2 r out) + width * 10`` (the official script's ``compute_param_count``; biases not
counted) against the dense network's ``784 width + (depth - 1) width^2 + 10 width``,
and the compression rates ``1 - params / dense``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from tnlib import dlrt

from . import data, records, runner, training
from .config import ConfigError, check_keys, validate

__all__ = ["adapted_params", "check_config", "dense_params", "finetune_source", "param_counts",
           "setup", "train_and_evaluate"]

MODEL_KEYS = ("kind", "width", "depth", "rank", "max_rank", "min_rank")
TRAIN_KEYS = ("tau", "lr", "batch_size", "num_epochs", "eval_every", "checkpoint_every",
              "log_every", "finetune_from")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for an impossible config before any work."""
    validate(config, choices={"task": ["low_rank"], "model.kind": ["dlrt", "dense"],
                              "data.name": ["mnist", "digits"]},
             required=("task", "seed", "data", "model", "train"))
    check_keys(config, {"": ("task", "seed", "data", "model", "train"),
                        "data": ("name", "n_train", "n_test"),
                        "model": MODEL_KEYS, "train": TRAIN_KEYS})
    m, t = config.model, config.train
    for key, low in (("width", 2), ("depth", 1), ("rank", 1), ("max_rank", 1),
                     ("min_rank", 1)):
        v = m[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ConfigError(f"model.{key}={v!r} is impossible; expected an int >= {low}")
    if m.kind == "dlrt":
        if m.rank > m.max_rank:
            raise ConfigError(f"model.rank={m.rank} is above model.max_rank={m.max_rank}")
        if 2 * m.max_rank > m.width:
            raise ConfigError(f"model.max_rank={m.max_rank}: the augmented bases are 2 "
                              f"max_rank wide, so it must be <= width // 2 = {m.width // 2}")
    if not 0 <= t.tau < 1:
        raise ConfigError(f"train.tau={t.tau!r} is impossible; expected 0 <= tau < 1")
    for key in ("batch_size", "num_epochs", "eval_every", "checkpoint_every", "log_every"):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"train.{key}={v!r} is impossible; expected an int >= 1")
    if not t.lr > 0:
        raise ConfigError(f"train.lr={t.lr!r} is impossible; expected > 0")
    src = t.get("finetune_from")
    if src is not None:
        if not isinstance(src, str) or not src:
            raise ConfigError(f"train.finetune_from={src!r} is impossible; expected the "
                              "directory of a finished rank-adaptive run")
        if m.kind != "dlrt":
            raise ConfigError("train.finetune_from fine-tunes a DLRT run at fixed rank; it "
                              f"needs model.kind='dlrt', got {m.kind!r}")


def finetune_source(config: ml_collections.ConfigDict,
                    workdir: str | Path | None = None) -> Path:
    """The finished rank-adaptive run that ``train.finetune_from`` names (``{seed}`` is
    this run's seed; a relative path is relative to ``workdir``, this run's directory,
    when given). ConfigError unless it has finished (``summary.json``) with the same
    data, model and seed."""
    src = Path(config.train.finetune_from.format(seed=config.seed))
    if workdir is not None and not src.is_absolute():
        src = Path(os.path.normpath(Path(workdir) / src))  # the workdir may not exist yet
    if not (src / "summary.json").exists() or not (src / "config.json").exists():
        raise ConfigError(f"train.finetune_from: {src} is not a finished run (no "
                          "summary.json / config.json); run the rank-adaptive phase first")
    stored = records.read_json(src / "config.json")
    for key in ("data", "model"):
        if stored.get(key) != json.loads(config[key].to_json()):
            raise ConfigError(f"train.finetune_from: {src} was run with {key} "
                              f"{stored.get(key)}, this config has {config[key].to_dict()}")
    if stored.get("seed") != config.seed:
        raise ConfigError(f"train.finetune_from: {src} was run with seed "
                          f"{stored.get('seed')}, this config has seed {config.seed}")
    return src


def dense_params(n_in: int, width: int, depth: int, n_out: int = 10) -> int:
    """Weights of the dense network (biases not counted, as in the paper)."""
    return n_in * width + (depth - 1) * width * width + width * n_out


def param_counts(ranks, n_in: int, width: int, n_out: int = 10) -> dict[str, int]:
    """The official script's evaluation and training parameter counts at ``ranks``."""
    ins = [n_in] + [width] * (len(ranks) - 1)
    ev = sum(i * r + r * width for i, r in zip(ins, ranks, strict=True)) + width * n_out
    tr = sum(2 * i * r + 4 * r * r + 2 * r * width
             for i, r in zip(ins, ranks, strict=True)) + width * n_out
    return {"eval_params": int(ev), "train_params": int(tr)}


def _init_params(key, n_in, n_out, m):
    keys = jax.random.split(key, m.depth + 1)
    sizes = [n_in] + [m.width] * m.depth
    hidden = []
    for k, (i, o) in zip(keys[:-1], zip(sizes[:-1], sizes[1:], strict=True), strict=True):
        if m.kind == "dlrt":
            w = dlrt.random(k, (o, i), m.rank, max_rank=m.max_rank)
        else:
            w = jax.random.normal(k, (o, i)) / jnp.sqrt(i)  # LeCun normal
        hidden.append({"w": w, "b": jnp.zeros(o)})
    out = {"w": jax.random.normal(keys[-1], (n_out, m.width)) / jnp.sqrt(m.width),
           "b": jnp.zeros(n_out)}
    return {"hidden": hidden, "out": out}


def _flat(state) -> dict:
    """The checkpoint layout of a state: its leaves keyed by their position."""
    return {str(k): leaf for k, leaf in enumerate(jax.tree.leaves(state))}


def _unflat(treedef, tree: dict):
    return jax.tree.unflatten(treedef, [tree[str(k)] for k in range(len(tree))])


def adapted_params(config: ml_collections.ConfigDict, n_in: int, n_out: int = 10, *,
                   workdir: str | Path | None = None):
    """The parameters of the newest checkpoint of the run that ``train.finetune_from``
    names (:func:`finetune_source`), each factorization's padding cut to its rank:
    fixed-rank steps never need more, and a narrower padding is a cheaper step."""
    src = finetune_source(config, workdir)
    params = _init_params(jax.random.PRNGKey(config.seed), n_in, n_out, config.model)
    template = (params, dlrt.init(params, optax.adam(config.train.lr)))
    mngr = training.checkpoint_manager(src / "checkpoints", keep=1)
    try:
        restored = training.restore_checkpoint(
            mngr, jax.tree.map(ocp.utils.to_shape_dtype_struct, _flat(template)),
            quarantine=src / "checkpoints.corrupt")
    finally:
        mngr.close()
    if restored is None:
        raise ConfigError(f"train.finetune_from: {src} holds no checkpoint to start from")
    params = _unflat(jax.tree.structure(template), restored[1])[0]
    for layer in params["hidden"]:
        layer["w"] = dlrt.shrink(layer["w"], max(int(layer["w"].rank), 1))
    return params


def _logits(params, x):
    for layer in params["hidden"]:
        w = layer["w"]
        y = dlrt.apply(w, x) if isinstance(w, dlrt.USV) else x @ w.T
        x = jax.nn.relu(y + layer["b"])
    return x @ params["out"]["w"].T + params["out"]["b"]


def _loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(_logits(params, x), y).mean()


def setup(config: ml_collections.ConfigDict, workdir: str | Path | None = None
          ) -> runner.Task:
    """The training run of ``config`` as a :class:`~runner.Task`: step ``i`` is batch
    ``i``. ``workdir`` (the run's directory) anchors a relative ``train.finetune_from``."""
    m, t = config.model, config.train
    splits = data.from_config(config.data)
    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    x_tr = jnp.asarray(x_tr.reshape(len(x_tr), -1), jnp.float32)
    y_tr = jnp.asarray(y_tr, jnp.int32)
    n_in, n_out = x_tr.shape[1], 10
    if m.kind == "dlrt" and 2 * m.max_rank > n_in:
        raise ConfigError(f"model.max_rank={m.max_rank} must be <= n_in // 2 = {n_in // 2}")
    steps_per_epoch = len(x_tr) // t.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(f"train.batch_size={t.batch_size} exceeds the {len(x_tr)} "
                          "training examples")
    total = steps_per_epoch * t.num_epochs
    opt = optax.adam(t.lr)
    fixed = t.get("finetune_from") is not None
    params = (adapted_params(config, n_in, n_out, workdir=workdir) if fixed else
              _init_params(jax.random.PRNGKey(config.seed), n_in, n_out, m))
    opt_state = dlrt.init(params, opt) if m.kind == "dlrt" else opt.init(params)
    template = (params, opt_state)
    treedef = jax.tree.structure(template)
    n_hidden = m.depth

    # The batch order of epoch e: one permutation per epoch (drawn once, on the first
    # step of the epoch), sliced per step.
    epoch_perm = jax.jit(lambda e: jax.random.permutation(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), e), len(x_tr)))
    perms: dict[int, jax.Array] = {}

    def batch_index(i):
        epoch, j = divmod(i, steps_per_epoch)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = epoch_perm(epoch)
        return perms[epoch][j * t.batch_size:(j + 1) * t.batch_size]

    @jax.jit
    def train_step(state, idx):
        params, opt_state = state
        x, y = x_tr[idx], y_tr[idx]
        if m.kind == "dlrt":
            params, opt_state, info = dlrt.step(lambda p: _loss(p, x, y), params, opt_state,
                                                opt, rtol=None if fixed else t.tau,
                                                min_rank=m.min_rank)
            return (params, opt_state), info["loss"], info["ranks"]
        value, g = jax.value_and_grad(_loss)(params, x, y)
        upd, opt_state = opt.update(g, opt_state, params)
        ranks = jnp.full((n_hidden,), -1, jnp.int32)
        return (optax.apply_updates(params, upd), opt_state), value, ranks

    accuracy = jax.jit(lambda p, x, y: jnp.mean(jnp.argmax(_logits(p, x), -1) == y))

    def acc(params, split):
        x, y = split
        x = jnp.asarray(x.reshape(len(x), -1), jnp.float32)
        return float(np.mean([accuracy(params, x[k:k + 2000], jnp.asarray(y[k:k + 2000]))
                              for k in range(0, len(x), 2000)]))

    def ranks_of(params):
        if m.kind != "dlrt":
            return [min(n_in if k == 0 else m.width, m.width) for k in range(n_hidden)]
        return [int(layer["w"].rank) for layer in params["hidden"]]

    def step(state, i, tick):
        state, loss, ranks = train_step(state, batch_index(i))
        return state, {"train_loss": float(loss),
                       **{f"rank_{k}": int(r) for k, r in enumerate(np.asarray(ranks))}}

    dense = dense_params(n_in, m.width, m.depth, n_out)

    def evaluate(state):
        params = state[0]
        out = {"test_accuracy": acc(params, (x_te, y_te))}
        if "validation" in splits:
            out["validation_accuracy"] = acc(params, splits["validation"])
        ranks = ranks_of(params)
        counts = param_counts(ranks, n_in, m.width, n_out) if m.kind == "dlrt" else {
            "eval_params": dense, "train_params": dense}
        out.update({f"rank_{k}": r for k, r in enumerate(ranks)}, **counts,
                   eval_compression=1 - counts["eval_params"] / dense,
                   train_compression=1 - counts["train_params"] / dense)
        return out

    def summarize(state, final):
        return {**final, "ranks": ranks_of(state[0]), "dense_params": dense}

    def save(state):
        return _flat(state), {}

    def load(tree, info):
        return _unflat(treedef, tree)

    return runner.Task(
        state=template, total_steps=total, step=step, evaluate=evaluate,
        summarize=summarize, save=save, load=load, log_every=t.log_every,
        eval_every=t.eval_every, checkpoint_every=t.checkpoint_every,
        steps_per_epoch=steps_per_epoch, postfix=("train_loss", "rank_0"),
        meta={"dense_params": dense, "finetune_from": t.get("finetune_from")},
        title=f"DLRT ({m.kind}, {'fixed-rank fine-tune' if fixed else f'tau={t.tau}'})",
        line=lambda s: (f"test accuracy {s['test_accuracy']:.4f}, ranks {s['ranks']}, "
                        f"eval compression {s['eval_compression']:.1%}, steps {s['steps']}"))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or complete) the training of ``config`` in ``workdir``; returns the summary."""
    check_config(config)
    return runner.run(config, workdir, lambda c: setup(c, workdir=workdir))
