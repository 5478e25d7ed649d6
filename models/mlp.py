"""An MLP whose hidden layers are dense or structured: the model of "Compute Better
Spent" (Qiu et al. 2024) and of TT-layer compression (Novikov et al. 2015).

``StructuredMLP(in_features, n_classes, width=..., depth=..., layer=...)``: a dense
input layer ``in_features -> width``, ``depth - 1`` hidden layers ``width -> width`` of
the chosen structure, and a dense readout ``width -> n_classes``, with ReLU between
them. ``layer`` is ``"dense"``, ``"lowrank"``, ``"kronecker"``, ``"monarch"``,
``"btt"`` or ``"tt"``; ``rank`` is the rank of low-rank, BTT and TT layers and
``n_factors`` the number of TT sites. :meth:`StructuredMLP.flops` counts the
multiply-adds of one forward pass (per example), as the layers compute it.
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

__all__ = ["LAYERS", "StructuredMLP"]

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
        return sum(int(p.size) for p in jax.tree.leaves(nnx.state(self, nnx.Param)))
