"""A dense layer trained on the low-rank manifold with an adaptive rank (DLRT).

:class:`DLRTLinear` stores its weight as one :class:`tnlib.dlrt.USV` inside an
``nnx.Param`` (``U S V^T`` padded to a static ``max_rank``, the active rank an int32
array), so :func:`tnlib.dlrt.step` trains every such layer of a model at once::

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    state = dlrt.init(params, optax.adam(1e-3))
    loss = lambda p: loss_fn(nnx.merge(graphdef, p, rest)(x), y)
    params, state, info = jax.jit(partial(dlrt.step, ...))(...)
    nnx.update(model, params)

The other parameters of the model (biases, dense layers, anything not a ``USV``) take
the same optimizer's S-step update. Train these layers with :func:`tnlib.dlrt.step`,
not with a plain gradient step (the rank is an integer leaf and the factors must stay
orthonormal).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from tnlib import dlrt

from ._common import check_int, double_precision, promote_dtype
from ._shapes import resolve_rank

__all__ = ["DLRTLinear"]

_ZEROS = nnx.initializers.zeros_init()


class DLRTLinear(nnx.Module):
    """``y = x W^T + b`` with ``W = U S V^T`` of adaptive rank (``tnlib.dlrt``).

    Args:
      in_features, out_features: sizes of the input and output.
      rank: the starting rank: an int, or a float in ``(0, 1]``, the fraction of the
        dense kernel's parameters that ``r (in + out)`` may use (default 0.5), at most
        ``min(in_features, out_features) // 2``.
      max_rank: the static cap (default: the starting rank, so the rank can only
        shrink; pass a larger one to let it grow); ``2 max_rank <= min(in_features,
        out_features)`` (the integrator's augmented bases are twice as wide).
    """

    def __init__(self, in_features: int, out_features: int, *, rank: int | float = 0.5,
                 max_rank: int | None = None, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, bias_init=_ZEROS, rngs: nnx.Rngs):
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        i, o = in_features, out_features
        largest = min(i, o) // 2
        if largest < 1:
            raise ValueError(f"DLRTLinear needs min(in_features, out_features) >= 2 (the "
                             f"augmented bases are twice the rank), got {i} x {o}")
        rank = resolve_rank(rank, lambda r: r * (i + o), largest, i * o,
                            f"min(in_features, out_features) // 2 = {largest}", "DLRTLinear")
        self.dtype, self.param_dtype = dtype, param_dtype
        self.w = nnx.Param(dlrt.random(rngs.params(), (out_features, in_features), rank,
                                       max_rank=max_rank, dtype=param_dtype))
        self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
                     if use_bias else None)

    @property
    def rank(self) -> int:
        """The active rank (concrete: call outside ``jit``)."""
        return int(self.w.get_value().rank)

    def __call__(self, x):
        """``x`` ``(..., in_features)`` -> ``(..., out_features)``."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        f = self.w.get_value()
        bias = None if self.bias is None else self.bias.get_value()
        x, bias, u, s, v = promote_dtype((x, bias, f.u, f.s, f.v), dtype=self.dtype)
        y = dlrt.apply(dlrt.USV(u, s, v, f.rank), x)
        return y if bias is None else y + bias

    def num_params(self) -> int:
        """Parameters at the active rank, ``r (in + out)`` (the paper's evaluation
        count), plus the bias."""
        bias = self.out_features if self.bias is not None else 0
        return int(dlrt.active_params(self.w.get_value())) + bias

    @classmethod
    def from_dense(cls, kernel, bias=None, *, max_rank: int, rank: int | None = None,
                   rtol: float | None = None, dtype=None, param_dtype=None,
                   rngs: nnx.Rngs) -> DLRTLinear:
        """The truncated SVD (double precision) of ``kernel`` ``(in_features,
        out_features)`` at ``rank``, or at the rank ``rtol`` picks, or at ``max_rank``;
        ``bias`` copied."""
        kernel = jnp.asarray(kernel)
        if kernel.ndim != 2:
            raise ValueError(f"kernel must be (in_features, out_features), got {kernel.shape}")
        param_dtype = param_dtype or kernel.dtype
        layer = cls(kernel.shape[0], kernel.shape[1], rank=rank or 1, max_rank=max_rank,
                    use_bias=bias is not None, dtype=dtype, param_dtype=param_dtype,
                    rngs=rngs)
        layer.w = nnx.Param(double_precision(
            lambda k: dlrt.from_dense(k.T, max_rank=max_rank, rank=rank, rtol=rtol), kernel,
            param_dtype))
        if bias is not None:
            layer.bias = nnx.Param(jnp.asarray(bias, param_dtype))
        return layer

    @classmethod
    def from_linear(cls, linear: nnx.Linear, *, max_rank: int, rank: int | None = None,
                    rtol: float | None = None, rngs: nnx.Rngs) -> DLRTLinear:
        """``from_dense`` of a trained ``nnx.Linear`` (kernel decomposed, bias copied)."""
        if not isinstance(linear, nnx.Linear):
            raise TypeError(f"linear must be an nnx.Linear, got {type(linear).__name__}")
        bias = None if linear.bias is None else linear.bias[...]
        return cls.from_dense(linear.kernel[...], bias, max_rank=max_rank, rank=rank,
                              rtol=rtol, dtype=linear.dtype, param_dtype=linear.param_dtype,
                              rngs=rngs)
