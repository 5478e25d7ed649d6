"""An MLP whose hidden layers are dense or structured: the model of "Compute Better
Spent" (Qiu et al. 2024) and of TT-layer compression (Novikov et al. 2015).

``StructuredMLP(in_features, n_classes, width=..., depth=..., layer=...)``: a dense
input layer ``in_features -> width``, ``depth - 1`` hidden layers ``width -> width`` of
the chosen structure, and a dense readout ``width -> n_classes``, with ReLU between
them. ``layer`` is ``"dense"``, ``"lowrank"``, ``"kronecker"``, ``"monarch"``,
``"btt"`` or ``"tt"``; ``rank`` is the rank of low-rank, BTT and TT layers and
``n_factors`` the number of TT sites. :meth:`StructuredMLP.flops` counts the
multiply-adds of one forward pass (per example), as the layers compute it.

``TTInputMLP(in_features, n_classes, hidden=..., layer=...)``: the MNIST network of
TensorNet's official code (Novikov et al. 2015, ``experiments/mnist/cnn_mnist_init.m``):
one structured input layer ``in_features -> hidden`` (a TT layer on the 32x32 padded
image, input modes 4x8x8x4, output modes 5x5x5x5), ReLU, and a dense readout; with
``layer="none"`` a linear classifier on the pixels (the no-hidden-layer control).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tnlib import btt, tt
from tnlib.models.structured import (
    BTTLinear,
    KroneckerLinear,
    LowRankLinear,
    MonarchLinear,
    TTLinear,
    factorize_dims,
)

__all__ = ["INPUT_LAYERS", "LAYERS", "SCALING_LAYERS", "ResidualMLP", "StructuredMLP",
           "TTInputMLP", "scaling_layer"]

LAYERS = ("dense", "lowrank", "kronecker", "monarch", "btt", "tt")


def _hidden(kind: str, width: int, rank, n_factors: int, kw: dict, rngs: nnx.Rngs):
    if kind == "dense":
        return nnx.Linear(width, width, rngs=rngs, **kw)
    if kind in ("lowrank", "btt", "tt") and rank is None:
        raise ValueError(f"layer={kind!r} needs a rank, got rank=None")
    if kind == "lowrank":
        return LowRankLinear(width, width, rank=rank, rngs=rngs, **kw)
    if kind == "kronecker":
        return KroneckerLinear(width, width, rngs=rngs, **kw)
    if kind == "monarch":
        return MonarchLinear(width, width, rngs=rngs, **kw)
    if kind == "btt":
        return BTTLinear(width, width, rank=rank, rngs=rngs, **kw)
    if kind == "tt":
        # largest factor first: the site order of the recorded runs (same factors as
        # the layer's default, reversed)
        f = tuple(reversed(factorize_dims(width, n_factors)))
        if 1 in f:
            raise ValueError(f"width={width} has no {n_factors} factors > 1 for a TT layer; "
                             "pick a width with more divisors or a smaller n_factors")
        return TTLinear(width, width, rank=rank, in_factors=f, out_factors=f, rngs=rngs, **kw)
    raise ValueError(f"layer must be one of {LAYERS}, got {kind!r}")


def _num_params(module: nnx.Module) -> int:
    """Stored scalars of every ``nnx.Param`` of ``module``."""
    return sum(int(p.size) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))


def _layer_flops(layer) -> int:
    """FLOPs of one forward pass (per example), as the layer computes it."""
    if isinstance(layer, nnx.Linear):
        return 2 * layer.in_features * layer.out_features
    if isinstance(layer, TTLinear):
        return tt.flops(layer.as_matrix())
    return btt.flops(layer.as_matrix(), 1)


class StructuredMLP(nnx.Module):
    """Dense input layer, ``depth - 1`` structured hidden layers, dense readout (ReLU).

    Args:
      in_features: input size.
      n_classes: output size.
      width: hidden width.
      depth: number of hidden activations (>= 1); ``depth - 1`` structured layers.
      layer: structure of the hidden-to-hidden layers (:data:`LAYERS`).
      rank: rank of ``"lowrank"``, ``"btt"`` and ``"tt"`` layers.
      n_factors: number of TT sites of a ``"tt"`` layer (``width`` split into that
        many factors as equal as possible).
      dtype, param_dtype: as ``nnx.Linear``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, in_features: int, n_classes: int, *, width: int = 256, depth: int = 3,
                 layer: str = "dense", rank: int | None = None, n_factors: int = 3,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        for name, v in (("in_features", in_features), ("n_classes", n_classes),
                        ("width", width), ("depth", depth), ("n_factors", n_factors)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if layer not in LAYERS:
            raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        self.layer, self.in_features = layer, in_features
        self.inp = nnx.Linear(in_features, width, rngs=rngs, **kw)
        self.hidden = nnx.List([_hidden(layer, width, rank, n_factors, kw, rngs)
                                for _ in range(depth - 1)])
        self.out = nnx.Linear(width, n_classes, rngs=rngs, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` ``(..., in_features)`` -> logits ``(..., n_classes)``."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        h = jax.nn.relu(self.inp(x))
        for lay in self.hidden:
            h = jax.nn.relu(lay(h))
        return self.out(h)

    def flops(self) -> int:
        """Floating-point operations of one forward pass per example (2 per multiply-add;
        activations and biases not counted)."""
        return sum(_layer_flops(m) for m in (self.inp, *self.hidden, self.out))

    def num_params(self) -> int:
        return _num_params(self)


INPUT_LAYERS = ("tt", "lowrank", "dense", "none")


class TTInputMLP(nnx.Module):
    """A structured input layer, ReLU, dense readout: TensorNet's MNIST network.

    Args:
      in_features: input size (``prod(in_factors)`` for a TT layer; 1024 for TensorNet's
        32x32 padded images).
      n_classes: output size.
      hidden: width of the hidden layer (``prod(out_factors)`` for a TT layer).
      layer: ``"tt"`` (TT-matrix, ranks ``rank``), ``"lowrank"`` (rank ``rank``),
        ``"dense"``, or ``"none"`` (no hidden layer: a linear classifier ``in_features
        -> n_classes``; ``hidden`` and ``rank`` unused).
      rank: TT rank of every internal bond, or the low-rank layer's rank.
      in_factors, out_factors: the TT layer's input and output modes (TensorNet's
        4x8x8x4 and 5x5x5x5 by default).
      dtype, param_dtype: as ``nnx.Linear``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, in_features: int, n_classes: int, *, hidden: int = 625,
                 layer: str = "tt", rank: int | None = 2,
                 in_factors: tuple[int, ...] = (4, 8, 8, 4),
                 out_factors: tuple[int, ...] = (5, 5, 5, 5),
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        for name, v in (("in_features", in_features), ("n_classes", n_classes),
                        ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if layer not in INPUT_LAYERS:
            raise ValueError(f"layer must be one of {INPUT_LAYERS}, got {layer!r}")
        if layer in ("tt", "lowrank") and (isinstance(rank, bool) or not isinstance(rank, int)
                                           or rank < 1):
            raise ValueError(f"layer={layer!r} needs rank, a positive int; got {rank!r}")
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        self.layer, self.in_features = layer, in_features
        if layer == "none":
            self.inp = None
            self.out = nnx.Linear(in_features, n_classes, rngs=rngs, **kw)
            return
        if layer == "tt":
            self.inp = TTLinear(in_features, hidden, rank=rank, in_factors=tuple(in_factors),
                                out_factors=tuple(out_factors), rngs=rngs, **kw)
        elif layer == "lowrank":
            self.inp = LowRankLinear(in_features, hidden, rank=rank, rngs=rngs, **kw)
        else:
            self.inp = nnx.Linear(in_features, hidden, rngs=rngs, **kw)
        self.out = nnx.Linear(hidden, n_classes, rngs=rngs, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` ``(..., in_features)`` -> logits ``(..., n_classes)``."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        if self.inp is not None:
            x = jax.nn.relu(self.inp(x))
        return self.out(x)

    def flops(self) -> int:
        """Floating-point operations of one forward pass per example (2 per multiply-add;
        activations and biases not counted)."""
        return sum(_layer_flops(m) for m in (self.inp, self.out) if m is not None)

    def num_params(self) -> int:
        return _num_params(self)


# ----------------------------------------------------------------- Qiu et al.'s MLP

SCALING_LAYERS = ("dense", "lowrank", "kronecker", "monarch", "btt", "tt")


def _official_init(d_in: int, d_out: int):
    """The official code's muP initialization of a dense ``d_in -> d_out`` kernel
    (``cola_init``): normal, std ``sqrt(1 / d_in) * min(1, sqrt(d_out / d_in))``."""
    std = (1.0 / d_in) ** 0.5 * min(1.0, (d_out / d_in) ** 0.5)
    return nnx.initializers.normal(std)


def _zero_last_core(layer) -> None:
    """Zero the core ``layer`` applies last (its kernel when dense), as the official code
    zero-initializes a block's second layer: the block starts as the identity and every
    other core still gets a gradient."""
    if isinstance(layer, nnx.Linear):
        core = layer.kernel
    elif isinstance(layer, TTLinear):
        core = layer.cores[-1]
    else:  # LowRank applies u last, Kronecker a (after b), BTT / Monarch right
        core = getattr(layer, {LowRankLinear: "u", KroneckerLinear: "a"}.get(type(layer),
                                                                              "right"))
    core.set_value(jnp.zeros_like(core.get_value()))


def scaling_layer(kind: str, d_in: int, d_out: int, *, rank: int | None = None,
                  dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    """One ``d_in -> d_out`` layer of the structure ``kind`` as the official code of Qiu
    et al. 2024 builds it (``nn/cola_nn.py``, at the settings of ``experiments/mlp.sh``):

    - ``"dense"``: ``nnx.Linear``, initialized as the official ``cola_init``;
    - ``"lowrank"``: ``LowRankLinear`` of rank ``ceil(sqrt(min(d_in, d_out)))``
      (``rank_frac=0``);
    - ``"kronecker"``: ``KroneckerLinear`` (the official two-core TT of rank 1);
    - ``"monarch"``: Monarch with 4 blocks (``num_blocks=4``): ``BTTLinear`` of rank
      ``min(d_in, d_out) / 16`` with ``in_factors=(d_in / 4, 4)`` and ``out_factors=(4,
      d_out / 4)``, which is the official block-diagonal product up to a fixed
      reordering of the inputs and the outputs;
    - ``"btt"``: ``BTTLinear`` of rank 1 (two cores, ``tt_rank=1``);
    - ``"tt"``: ``TTLinear`` with two cores of rank 16 (``tt_cores=2, tt_rank=16``).

    ``rank`` overrides the low-rank, BTT and TT rank; ``dtype`` and ``param_dtype`` are
    as ``nnx.Linear``'s. The structured cores keep tnlib's muP initialization (dense
    entries of variance ``1 / d_in``).
    """
    kw = {"dtype": dtype, "param_dtype": param_dtype}
    if kind == "dense":
        return nnx.Linear(d_in, d_out, kernel_init=_official_init(d_in, d_out), rngs=rngs, **kw)
    if kind == "lowrank":
        r = rank or math.ceil(min(d_in, d_out) ** 0.5)
        return LowRankLinear(d_in, d_out, rank=r, rngs=rngs, **kw)
    if kind == "kronecker":
        return KroneckerLinear(d_in, d_out, rngs=rngs, **kw)
    if kind == "monarch":
        if d_in % 16 or d_out % 16:
            raise ValueError(f"a 4-block Monarch layer {d_in} -> {d_out} needs sizes that are "
                             "multiples of 16 (4 blocks whose rank is a quarter of the block)")
        return BTTLinear(d_in, d_out, rank=min(d_in, d_out) // 16,
                         in_factors=(d_in // 4, 4), out_factors=(4, d_out // 4), rngs=rngs, **kw)
    if kind == "btt":
        return BTTLinear(d_in, d_out, rank=rank or 1, rngs=rngs, **kw)
    if kind == "tt":
        return TTLinear(d_in, d_out, rank=rank or 16, n_factors=2, rngs=rngs, **kw)
    raise ValueError(f"layer must be one of {SCALING_LAYERS}, got {kind!r}")


class ResidualMLP(nnx.Module):
    """The MLP of Qiu et al. 2024's scaling laws (official ``nn/fcnet.py`` ``MLP``).

    A fixed permutation of the input pixels (``numpy.random.default_rng(42)``, as the
    official ``shuffle_pixels``), an input layer ``in_features -> width`` and GELU, then
    ``depth`` residual blocks ``h + W2(gelu(W1(LayerNorm(h))))`` with ``W1: width ->
    expansion * width`` and ``W2`` back, and a dense readout ``width -> n_classes``.
    Every linear layer but the readout has the structure ``layer``
    (:func:`scaling_layer`; the official ``layers=all_but_last``), the input layer only
    when ``structure_input`` (``False`` is the official ``layers=intermediate``). The
    readout and each block's ``W2`` start at zero (for a structured ``W2``, the core it
    applies last), as in the official code.

    :meth:`lr_multipliers` gives every parameter the official muP learning-rate
    multiplier relative to a base model of width ``base_width``: ``base_width / width``
    for the kernels of hidden and readout layers (their fan-in grew by that factor), 1
    for the input layer's kernel (its fan-in does not change) times ``input_lr_mult``,
    1 for biases and LayerNorm scales; a structured core gets its layer's multiplier
    times ``in_features / fan_in(core) / n_cores`` (the official ``d_in_orig / d_in /
    num_matrices``). The classification task applies them with ``train.mup``.

    Args:
      in_features, n_classes: input and output sizes.
      width: residual-stream width (the official ``64 * scale_factor``).
      depth: number of residual blocks (official 3).
      expansion: hidden size of a block over ``width`` (official 4).
      layer: structure of the layers (:data:`SCALING_LAYERS`).
      rank: overrides the low-rank / BTT / TT rank of :func:`scaling_layer`.
      structure_input: whether the input layer is structured too.
      shuffle_pixels: permute the inputs by the fixed permutation first.
      base_width: width of the muP base model (official 64).
      input_lr_mult: extra learning-rate multiplier of the input layer (official 0.1).
      dtype, param_dtype: as ``nnx.Linear``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, in_features: int, n_classes: int, *, width: int = 64, depth: int = 3,
                 expansion: int = 4, layer: str = "dense", rank: int | None = None,
                 structure_input: bool = True, shuffle_pixels: bool = True,
                 base_width: int = 64, input_lr_mult: float = 0.1,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        for name, v in (("in_features", in_features), ("n_classes", n_classes),
                        ("width", width), ("depth", depth), ("expansion", expansion),
                        ("base_width", base_width)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if layer not in SCALING_LAYERS:
            raise ValueError(f"layer must be one of {SCALING_LAYERS}, got {layer!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank must be None or a positive int, got {rank!r}")
        if not input_lr_mult > 0:
            raise ValueError(f"input_lr_mult must be > 0, got {input_lr_mult!r}")
        kw = {"dtype": dtype, "param_dtype": param_dtype}
        self.layer, self.in_features, self.width = layer, in_features, width
        self.base_width, self.input_lr_mult = base_width, float(input_lr_mult)
        self.shuffle_pixels = bool(shuffle_pixels)

        def make(d_in, d_out, structured):
            return scaling_layer(layer if structured else "dense", d_in, d_out, rank=rank,
                                 rngs=rngs, **kw)

        self.inp = make(in_features, width, structure_input)
        self.norms = nnx.List([nnx.LayerNorm(width, rngs=rngs, **kw) for _ in range(depth)])
        self.up = nnx.List([make(width, expansion * width, True) for _ in range(depth)])
        self.down = nnx.List([make(expansion * width, width, True) for _ in range(depth)])
        for lay in self.down:
            _zero_last_core(lay)
        self.out = nnx.Linear(width, n_classes, kernel_init=nnx.initializers.zeros_init(),
                              rngs=rngs, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` ``(..., in_features)`` -> logits ``(..., n_classes)``."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        if self.shuffle_pixels:  # a constant of the trace, as the official fixed permutation
            x = jnp.take(x, np.random.default_rng(42).permutation(self.in_features), axis=-1)
        h = jax.nn.gelu(self.inp(x), approximate=False)
        for norm, up, down in zip(self.norms, self.up, self.down, strict=True):
            h = h + down(jax.nn.gelu(up(norm(h)), approximate=False))
        return self.out(h)

    def flops(self) -> int:
        """Floating-point operations of one forward pass per example (2 per multiply-add
        of the linear layers; activations, norms and biases not counted)."""
        return sum(_layer_flops(m) for m in (self.inp, *self.up, *self.down, self.out))

    def num_params(self) -> int:
        return _num_params(self)

    def lr_multipliers(self) -> nnx.State:
        """The official muP multiplier of every parameter (class docstring), as a tree
        shaped like ``nnx.state(self, nnx.Param)``."""
        hidden = self.base_width / self.width
        table = {}

        def put(prefix, lay, mult):
            if isinstance(lay, nnx.Linear):
                table[(*prefix, "kernel")] = mult
                return
            inner = nnx.to_flat_state(lay.lr_multipliers())
            n_cores = sum(1 for p, _ in inner if p[-1] != "bias")
            for p, v in inner:
                if p[-1] != "bias":
                    table[(*prefix, *p)] = mult * float(v.get_value()) / n_cores

        put(("inp",), self.inp, self.input_lr_mult)
        for i in range(len(self.up)):
            put(("up", i), self.up[i], hidden)
            put(("down", i), self.down[i], hidden)
        put(("out",), self.out, hidden)
        flat = nnx.to_flat_state(nnx.state(self, nnx.Param))
        return nnx.from_flat_state([(p, v.replace(table.get(tuple(p), 1.0))) for p, v in flat])
