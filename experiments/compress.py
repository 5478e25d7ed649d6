"""Compress-then-fine-tune and tensor adapters as a ``tnlib run`` task.

Two studies on one small image classifier (``model.name``: ``"cnn"`` or ``"vit"``, both
written here from ``nnx.Linear`` / ``nnx.Conv`` so that :func:`tnlib.models.factorize`
and the adapters find their layers):

``study.mode = "compress"``
  Step 0 trains the dense model for ``train.pretrain_epochs``. Every later step is one
  case ``(structure, rank ratio)`` of ``study.structures`` x ``study.ratios``: a copy of
  the trained model is factorized (:func:`~tnlib.models.factorize`, every ``nnx.Linear``
  except the classifier ``head`` for the linear structures, every ``nnx.Conv`` for
  ``tucker`` / ``cp``), its test accuracy read *before* and *after* a fine-tune of
  ``train.finetune_epochs``, and the same factorized architecture is trained from its
  layers' own random initialization for ``pretrain_epochs + finetune_epochs`` (the
  *from scratch* baseline: same parameter count, same total epochs). ``monarch`` and
  ``kronecker`` have no rank: they run once, at the first ratio. Whole-model
  compression is ``dense params / compressed params`` (every ``nnx.Param``, biases,
  norms and the head included).

``study.mode = "adapt"``
  Transfer from digits 0-4 to digits 5-9: step 0 trains the dense model on the images
  of 0-4 (5 classes); every later step adapts a copy of it to 5-9 (labels minus 5, a
  new zero-initialized head) for ``train.finetune_epochs`` with one method of
  ``study.methods``: ``head`` (linear probe), ``full`` (every parameter), or ``lora`` /
  ``lotr`` / ``dota`` on the attention projections (``wq, wk, wv, wo`` of every block;
  the rest frozen, the head trained) at each LoRA rank of ``study.lora_ranks``: LoTR
  (one ``U, V`` pair shared by all of them, a core per matrix) and DoTA (TT-matrix
  adapter, 3 sites) take the rank whose trainable parameter count is closest to
  LoRA's.

Every step's numbers go to ``metrics.jsonl`` and the list of rows (one per case) to
``summary.json``; a checkpoint after every step holds the dense model and the rows, so a
run cut short resumes at the next case.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from tnlib.models import DoTA, LoRA, LoTR, factorize
from tnlib.models.surgery import CONV_STRUCTURES, LINEAR_STRUCTURES

from . import data, runner
from .config import ConfigError, check_keys, validate

__all__ = ["CNN", "ViT", "check_config", "n_params", "setup", "train_and_evaluate"]

RANKLESS = ("monarch", "kronecker")
ADAPTED = ("wq", "wk", "wv", "wo")  # the ViT's attention projections
ADAPTER_PARAMS = {"lora_a", "lora_b", "u", "v", "cores"}


# --------------------------------------------------------------------------- models


def _pool(x):
    """2x2 max pooling of ``(B, H, W, C)`` (H, W even)."""
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max((2, 4))


class CNN(nnx.Module):
    """conv3x3(c1) - relu - pool - conv3x3(c2) - relu - pool - fc(hidden) - relu - head."""

    def __init__(self, side: int, n_classes: int, *, c1: int, c2: int, hidden: int,
                 rngs: nnx.Rngs):
        self.side = side
        self.conv1 = nnx.Conv(1, c1, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (3, 3), rngs=rngs)
        self.fc = nnx.Linear((side // 4) ** 2 * c2, hidden, rngs=rngs)
        self.head = nnx.Linear(hidden, n_classes, rngs=rngs)

    def __call__(self, x):
        x = x.reshape(-1, self.side, self.side, 1)
        x = _pool(jax.nn.relu(self.conv1(x)))
        x = _pool(jax.nn.relu(self.conv2(x)))
        x = jax.nn.relu(self.fc(x.reshape(x.shape[0], -1)))
        return self.head(x)


class Block(nnx.Module):
    """Pre-norm transformer block: multi-head self-attention and a GELU MLP."""

    def __init__(self, dim: int, mlp: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.ln1, self.ln2 = nnx.LayerNorm(dim, rngs=rngs), nnx.LayerNorm(dim, rngs=rngs)
        self.wq, self.wk, self.wv, self.wo = (nnx.Linear(dim, dim, rngs=rngs) for _ in range(4))
        self.mlp1, self.mlp2 = nnx.Linear(dim, mlp, rngs=rngs), nnx.Linear(mlp, dim, rngs=rngs)

    def __call__(self, x):
        b, n, d = x.shape
        h = self.ln1(x)
        q, k, v = (w(h).reshape(b, n, self.heads, d // self.heads)
                   for w in (self.wq, self.wk, self.wv))
        a = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d // self.heads))
        x = x + self.wo(jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, n, d))
        return x + self.mlp2(jax.nn.gelu(self.mlp1(self.ln2(x))))


class ViT(nnx.Module):
    """Vision transformer: ``patch x patch`` patches embedded by one ``nnx.Linear``, a
    learned position embedding, ``depth`` blocks, mean pooling, a final norm, ``head``."""

    def __init__(self, side: int, n_classes: int, *, patch: int, dim: int, depth: int,
                 mlp: int, heads: int, rngs: nnx.Rngs):
        self.side, self.patch = side, patch
        n = (side // patch) ** 2
        self.embed = nnx.Linear(patch * patch, dim, rngs=rngs)
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n, dim)))
        self.blocks = nnx.List([Block(dim, mlp, heads, rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, n_classes, rngs=rngs)

    def __call__(self, x):
        s, p = self.side, self.patch
        x = x.reshape(-1, s // p, p, s // p, p).transpose(0, 1, 3, 2, 4)
        x = self.embed(x.reshape(x.shape[0], -1, p * p)) + self.pos[...]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x.mean(1)))


def build_model(m: ml_collections.ConfigDict, side: int, n_classes: int, seed: int):
    rngs = nnx.Rngs(seed)
    if m.name == "cnn":
        return CNN(side, n_classes, c1=m.c1, c2=m.c2, hidden=m.hidden, rngs=rngs)
    return ViT(side, n_classes, patch=m.patch, dim=m.dim, depth=m.depth, mlp=m.mlp,
               heads=m.heads, rngs=rngs)


def n_params(model, wrt=nnx.Param) -> int:
    """Scalars in the model's variables that ``wrt`` selects (shared ones once)."""
    return sum(int(np.size(v)) for v in jax.tree.leaves(nnx.state(model, wrt)))


# --------------------------------------------------------------------------- training


def fit(model, x, y, *, epochs: int, batch_size: int, lr: float, seed: int, wrt=nnx.Param):
    """Adam on the variables ``wrt`` selects, ``epochs`` passes over ``(x, y)`` in an
    order drawn from ``(seed, epoch)``; updates ``model`` in place, returns the mean
    loss of the last epoch."""
    graphdef, params, rest = nnx.split(model, wrt, ...)
    opt = optax.adam(lr)
    opt_state = opt.init(params)

    @jax.jit
    def step(params, opt_state, rest, xb, yb):
        def loss(p):
            logits = nnx.merge(graphdef, p, rest)(xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        value, g = jax.value_and_grad(loss)(params)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, value

    n = len(x) // batch_size
    last = []
    for e in range(epochs):
        perm = np.random.default_rng((seed, e)).permutation(len(x))
        last = []
        for j in range(n):
            idx = perm[j * batch_size:(j + 1) * batch_size]
            params, opt_state, value = step(params, opt_state, rest, x[idx], y[idx])
            last.append(value)
    nnx.update(model, params)
    loss = float(jnp.mean(jnp.stack(last))) if last else float("nan")
    if not math.isfinite(loss):
        raise FloatingPointError(f"training diverged (mean loss {loss})")
    return loss


def accuracy(model, x, y, batch: int = 2000) -> float:
    graphdef, state = nnx.split(model)
    pred = jax.jit(lambda s, xb: jnp.argmax(nnx.merge(graphdef, s)(xb), -1))
    hits = sum(int(jnp.sum(pred(state, x[k:k + batch]) == y[k:k + batch]))
               for k in range(0, len(x), batch))
    return hits / len(x)


def _clone(model):
    return nnx.merge(*nnx.split(model))


# --------------------------------------------------------------------------- compress


def _not_head(path, layer) -> bool:
    return "head" not in path


def _get(model, path):
    node = model
    for key in path:
        node = node[key] if isinstance(key, int) else getattr(node, key)
    return node


def _fresh(layer, structure, ratio, rngs):
    """A layer of ``layer``'s structure and shape built by its own constructor
    (its own random initialization)."""
    if structure in LINEAR_STRUCTURES:
        kw = {} if structure in RANKLESS else {"rank": ratio}
        return LINEAR_STRUCTURES[structure](layer.in_features, layer.out_features,
                                            use_bias=layer.bias is not None, rngs=rngs, **kw)
    cls = CONV_STRUCTURES[structure]
    kw = {"ranks": tuple(layer.ranks)} if structure == "tucker" else {"rank": layer.rank}
    return cls(layer.in_features, layer.out_features, layer.kernel_size,
               strides=layer.strides, padding=layer.padding, rngs=rngs, **kw)


def compress_case(dense, splits, structure, ratio, config, case: int) -> dict[str, Any]:
    """One ``(structure, ratio)``: factorize a copy of ``dense``, accuracy before and
    after the fine-tune, and the same architecture trained from scratch."""
    t, seed = config.train, config.seed
    (x_tr, y_tr), (x_te, y_te) = splits["train"], splits["test"]
    dense_params = n_params(dense)
    t0 = time.perf_counter()
    model = _clone(dense)
    where = _not_head if structure in LINEAR_STRUCTURES else None
    report = factorize(model, structure, rank=ratio, where=where, rngs=nnx.Rngs(seed))
    params = n_params(model)
    before = accuracy(model, x_te, y_te)
    fit(model, x_tr, y_tr, epochs=t.finetune_epochs, batch_size=t.batch_size,
        lr=t.finetune_lr, seed=seed + 1000 * case)
    after = accuracy(model, x_te, y_te)
    t1 = time.perf_counter()

    # from scratch: the same layers, built by their constructors at a new init
    scratch = build_model(config.model, *_shape(splits), seed + 7919 * case)
    rngs = nnx.Rngs(seed + 7919 * case)
    for r in report:
        if r.replaced:
            _set(scratch, r.path, _fresh(_get(model, r.path), structure, ratio, rngs))
    if n_params(scratch) != params:
        raise AssertionError(f"scratch model has {n_params(scratch)} parameters, the "
                             f"factorized one {params}")
    fit(scratch, x_tr, y_tr, epochs=t.pretrain_epochs + t.finetune_epochs,
        batch_size=t.batch_size, lr=t.lr, seed=seed + 1000 * case + 1)
    from_scratch = accuracy(scratch, x_te, y_te)
    return {"structure": structure, "ratio": ratio, "params": params,
            "dense_params": dense_params, "compression": dense_params / params,
            "replaced": sum(r.replaced for r in report), "layers": len(report),
            "rel_errors": [r.rel_error for r in report],
            "acc_before": before, "acc_after": after, "acc_scratch": from_scratch,
            "wall_compress_s": t1 - t0, "wall_scratch_s": time.perf_counter() - t1}


def _set(model, path, value):
    parent = _get(model, path[:-1])
    if isinstance(path[-1], int):
        parent[path[-1]] = value
    else:
        setattr(parent, path[-1], value)


def _shape(splits):
    x, y = splits["train"]
    return int(round(math.sqrt(x.shape[1]))), int(y.max()) + 1


# --------------------------------------------------------------------------- adapt


class _Slot(nnx.Module):
    """Layer ``index`` of a shared :class:`~tnlib.models.LoTR`, called like a Linear."""

    def __init__(self, shared: LoTR, index: int):
        self.shared, self.index = shared, index

    def __call__(self, x):
        return self.shared(x, self.index)


def _trainable(path, value) -> bool:
    return isinstance(value, nnx.Param) and any(
        p == "head" or p in ADAPTER_PARAMS for p in path)


def _closest(budget, cost, largest):
    return min(range(1, largest + 1), key=lambda r: (abs(cost(r) - budget), r))


def adapter_ranks(dim: int, n_mats: int, lora_rank: int) -> dict[str, int]:
    """LoRA's rank and the LoTR / DoTA ranks whose trainable counts are closest to it."""
    budget = n_mats * lora_rank * 2 * dim
    probe = DoTA(jnp.eye(dim), rank=1)

    def dota_cost(r):
        fo, fi = probe.out_factors, probe.in_factors
        bonds = [1] + [min(r, math.prod(a * b for a, b in zip(fo[:k], fi[:k], strict=True)),
                           math.prod(a * b for a, b in zip(fo[k:], fi[k:], strict=True)))
                       for k in range(1, len(fi))] + [1]
        return n_mats * sum(bonds[k] * fo[k] * fi[k] * bonds[k + 1] for k in range(len(fi)))

    return {"lora": lora_rank,
            "lotr": _closest(budget, lambda r: 2 * dim * r + n_mats * r * r, dim),
            "dota": _closest(budget, dota_cost, dim)}


def adapt_case(dense, splits, method, lora_rank, config, case: int) -> dict[str, Any]:
    """Adapt a copy of ``dense`` (trained on 0-4) to 5-9 with ``method``."""
    t, seed = config.train, config.seed
    (x_tr, y_tr), (x_te, y_te) = splits["target_train"], splits["target_test"]
    model = _clone(dense)
    model.head = nnx.Linear(model.head.in_features, 5, kernel_init=nnx.initializers.zeros,
                            rngs=nnx.Rngs(seed))
    paths = [(i, name) for i in range(len(model.blocks)) for name in ADAPTED]
    rank = None
    if method in ("lora", "dota"):
        rank = adapter_ranks(model.blocks[0].wq.in_features, len(paths), lora_rank)[method]
        cls = LoRA if method == "lora" else DoTA
        for i, name in paths:
            setattr(model.blocks[i], name, cls.from_linear(getattr(model.blocks[i], name),
                                                           rank=rank, rngs=nnx.Rngs(seed)))
    elif method == "lotr":
        rank = adapter_ranks(model.blocks[0].wq.in_features, len(paths), lora_rank)["lotr"]
        shared = LoTR.from_linears([getattr(model.blocks[i], n) for i, n in paths], rank=rank,
                                   rngs=nnx.Rngs(seed))
        for k, (i, name) in enumerate(paths):
            setattr(model.blocks[i], name, _Slot(shared, k))
    wrt = nnx.Param if method == "full" else _trainable
    trainable = n_params(model, wrt)
    head = n_params(model.head)
    before = accuracy(model, x_te, y_te)
    t0 = time.perf_counter()
    fit(model, x_tr, y_tr, epochs=t.finetune_epochs, batch_size=t.batch_size,
        lr=t.finetune_lr, seed=seed + 1000 * case, wrt=wrt)
    return {"method": method, "lora_rank": lora_rank if rank is not None else None,
            "rank": rank, "trainable": trainable, "adapter_params": trainable - head,
            "acc_before": before, "acc_after": accuracy(model, x_te, y_te),
            "wall_s": time.perf_counter() - t0}


def _split_digits(splits):
    out = {}
    for name, key in (("train", "train"), ("test", "test")):
        x, y = splits[key]
        lo, hi = y < 5, y >= 5
        out[name] = (x[lo], y[lo])
        out[f"target_{name}"] = (x[hi], y[hi] - 5)
    return out


# --------------------------------------------------------------------------- task

MODEL_KEYS = ("name", "c1", "c2", "hidden", "patch", "dim", "depth", "mlp", "heads")
TRAIN_KEYS = ("lr", "finetune_lr", "batch_size", "pretrain_epochs", "finetune_epochs")
STUDY_KEYS = ("mode", "structures", "ratios", "methods", "lora_ranks")


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for an impossible config before any work."""
    validate(config, choices={"task": ["compress"], "model.name": ["cnn", "vit"],
                              "study.mode": ["compress", "adapt"],
                              "data.name": ["mnist", "digits"]},
             required=("task", "seed", "data", "model", "train", "study"))
    check_keys(config, {"": ("task", "seed", "data", "model", "train", "study"),
                        "data": ("name", "n_train", "n_test"), "model": MODEL_KEYS,
                        "train": TRAIN_KEYS, "study": STUDY_KEYS})
    s, t = config.study, config.train
    known = set(LINEAR_STRUCTURES) | set(CONV_STRUCTURES)
    for st in s.structures:
        if st not in known:
            raise ConfigError(f"study.structures: {st!r} is not one of {sorted(known)}")
        if st in CONV_STRUCTURES and config.model.name != "cnn":
            raise ConfigError(f"study.structures: {st!r} factorizes convolutions; the "
                              f"{config.model.name} has none")
    for r in s.ratios:
        if not 0 < r <= 1:
            raise ConfigError(f"study.ratios: {r!r} must lie in (0, 1]")
    for m in s.methods:
        if m not in ("head", "full", "lora", "lotr", "dota"):
            raise ConfigError(f"study.methods: unknown method {m!r}")
    if s.mode == "adapt" and config.model.name != "vit":
        raise ConfigError("study.mode='adapt' adapts the ViT's attention projections: "
                          "set model.name='vit'")
    for key in ("batch_size", "pretrain_epochs", "finetune_epochs"):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"train.{key}={v!r} is impossible; expected an int >= 1")
    for key in ("lr", "finetune_lr"):
        if not t[key] > 0:
            raise ConfigError(f"train.{key}={t[key]!r} is impossible; expected > 0")


def cases_of(s) -> list[tuple]:
    if s.mode == "adapt":
        fixed = [(m, None) for m in s.methods if m in ("head", "full")]
        return fixed + [(m, int(r)) for r in s.lora_ranks for m in s.methods
                        if m in ("lora", "lotr", "dota")]
    return [(st, float(r)) for st in s.structures
            for r in (s.ratios[:1] if st in RANKLESS else s.ratios)]


def setup(config: ml_collections.ConfigDict) -> runner.Task:
    """The study of ``config``: step 0 pretrains, step ``i >= 1`` is case ``i - 1``."""
    m, t, s = config.model, config.train, config.study
    splits = data.from_config(config.data)
    splits = {k: (np.asarray(x.reshape(len(x), -1), np.float32), np.asarray(y, np.int32))
              for k, (x, y) in splits.items()}
    if s.mode == "adapt":
        splits = _split_digits(splits)
    side, n_classes = _shape(splits)
    if side * side != splits["train"][0].shape[1]:
        raise ConfigError(f"the images are not square ({splits['train'][0].shape[1]} pixels)")
    if m.name == "vit" and side % m.patch:
        raise ConfigError(f"model.patch={m.patch} does not divide the image side {side}")
    cases = cases_of(s)
    model = build_model(m, side, n_classes, config.seed)
    graphdef, init_state = nnx.split(model)
    treedef = jax.tree.structure(init_state)
    steps_total = 1 + len(cases)

    def dense_of(state):
        return nnx.merge(graphdef, state["params"])

    def step(state, i, tick):
        x_te, y_te = splits["test"]
        if i == 0:
            dense = dense_of(state)
            t0 = time.perf_counter()
            loss = fit(dense, *splits["train"], epochs=t.pretrain_epochs,
                       batch_size=t.batch_size, lr=t.lr, seed=config.seed)
            row = {"case": "dense", "params": n_params(dense),
                   "acc": accuracy(dense, x_te, y_te), "train_loss": loss,
                   "wall_s": time.perf_counter() - t0}
            print(f"dense: {row['params']} params, test accuracy {row['acc']:.4f}", flush=True)
            return {"params": nnx.state(dense), "rows": [row]}, {
                "test_accuracy": row["acc"], "train_loss": loss}
        name, arg = cases[i - 1]
        dense = dense_of(state)
        if s.mode == "adapt":
            row = adapt_case(dense, splits, name, arg, config, i)
            print(f"{name} (LoRA-rank budget {arg}): rank {row['rank']}, trainable "
                  f"{row['trainable']}, accuracy {row['acc_after']:.4f}", flush=True)
            metrics = {"acc_after": row["acc_after"], "trainable": row["trainable"]}
        else:
            row = compress_case(dense, splits, name, arg, config, i)
            print(f"{name} {arg}: {row['compression']:.2f}x, before {row['acc_before']:.4f}, "
                  f"after {row['acc_after']:.4f}, scratch {row['acc_scratch']:.4f}", flush=True)
            metrics = {k: row[k] for k in ("compression", "acc_before", "acc_after",
                                           "acc_scratch")}
        return {"params": state["params"], "rows": [*state["rows"], row]}, metrics

    def summarize(state, final):
        rows = state["rows"]
        return {"rows": rows, "dense_params": rows[0]["params"],
                "dense_accuracy": rows[0]["acc"], "n_cases": len(rows) - 1}

    def save(state):
        leaves = jax.tree.leaves(state["params"])
        return {str(k): leaf for k, leaf in enumerate(leaves)}, {"rows": state["rows"]}

    def load(tree, info):
        params = jax.tree.unflatten(treedef, [tree[str(k)] for k in range(len(tree))])
        return {"params": params, "rows": list(info["rows"])}

    return runner.Task(
        state={"params": init_state, "rows": []}, total_steps=steps_total, step=step,
        summarize=summarize, save=save, load=load, log_every=1, eval_every=0,
        checkpoint_every=1, postfix=(), desc="study", unit="case",
        meta={"cases": [list(c) for c in cases]},
        line=lambda sm: (f"{m.name} {s.mode}: dense accuracy {sm['dense_accuracy']:.4f}, "
                         f"{sm['n_cases']} cases, wall {sm['wall_s']:.0f} s"))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Run (or complete) the study of ``config`` in ``workdir``; returns the summary."""
    check_config(config)
    return runner.run(config, workdir, setup)
