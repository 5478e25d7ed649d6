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

import jax
import jax.numpy as jnp
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

__all__ = ["INPUT_LAYERS", "LAYERS", "StructuredMLP", "TTInputMLP"]

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
