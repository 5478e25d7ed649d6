"""Convolutions with a decomposed kernel, as Flax NNX modules mirroring ``nnx.Conv``.

Both layers take NHWC inputs ``(..., H, W, C_in)`` and represent a dense kernel of
shape ``(kh, kw, C_in, C_out)`` (``nnx.Conv``'s HWIO layout):

- ``TuckerConv``: Tucker-2 decomposition over the channel modes (Kim et al. 2016,
  "Compression of Deep Convolutional Neural Networks for Fast and Low Power Mobile
  Applications"): ``K = core x_3 U_in x_4 U_out`` with ``core`` ``(kh, kw, r_in, r_out)``,
  ``U_in`` ``(C_in, r_in)`` and ``U_out`` ``(C_out, r_out)``; applied as a 1x1 conv
  ``C_in -> r_in``, a ``kh x kw`` conv ``r_in -> r_out`` and a 1x1 conv ``r_out -> C_out``.
- ``DLRTConv``: the kernel reshaped to ``(C_out, kh kw C_in)`` is a ``tnlib.dlrt.USV``
  whose rank adapts when trained by ``tnlib.dlrt.step`` (the form of the DLRT paper's
  official LeNet5 code); applied as a ``kh x kw`` conv ``C_in -> R`` and a 1x1 map
  ``R -> C_out``.
- ``CPConv``: rank-``R`` CP kernel (Lebedev et al. 2015, "Speeding-up Convolutional
  Neural Networks Using Fine-tuned CP-Decomposition"):
  ``K[h, w, i, o] = sum_r V[h, r] H[w, r] U_in[i, r] U_out[o, r]``; applied as a 1x1 conv
  ``C_in -> R``, a depthwise ``kh x 1`` conv, a depthwise ``1 x kw`` conv and a 1x1 conv
  ``R -> C_out``.

The 1x1 convolutions are mode products (``tnlib.tucker.mode_product`` on the channel
axis); ``to_dense`` builds the kernel with ``tnlib.tucker`` / ``tnlib.cp``, and
``from_dense`` uses a partial HOSVD (``tnlib.tucker.hosvd``) or CP-ALS (``tnlib.cp.als``),
computed in double precision and cast to ``param_dtype``.

Learning rates (``lr_multipliers()``, read by ``tnlib.models.structured_optimizer``):
the muP rule of ``tnlib.btt`` applied to the stages above. A dense ``kh x kw``
convolution sums ``kh kw C_in`` terms per output; a stage that sums ``fan_in`` terms
gets the Adam multiplier ``kh kw C_in / fan_in``. TuckerConv: ``first`` (fan-in
``C_in``) ``kh kw``, ``core`` (``kh kw r_in``) ``C_in / r_in``, ``last`` (``r_out``)
``kh kw C_in / r_out``. CPConv: ``first`` ``kh kw``, ``vertical`` (``kh``)
``kw C_in``, ``horizontal`` (``kw``) ``kh C_in``, ``last`` (``R``) ``kh kw C_in / R``.
Biases get 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tnlib import cp, dlrt, linalg, tucker
from tnlib.models._common import check_int, compute_dtype, double_precision, param_tree
from tnlib.models._shapes import resolve_rank

__all__ = ["TuckerConv", "CPConv", "DLRTConv"]

_DIMS = ("NHWC", "HWIO", "NHWC")



def _pair(value, name) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return tuple(check_int(v, name) for v in value)


def _padding(padding):
    """``"SAME"``/``"VALID"``, an int, or per-dimension ints / ``(lo, hi)`` pairs."""
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"padding must be 'SAME', 'VALID', an int or pairs, got {padding!r}")
        return padding.upper()
    if isinstance(padding, int) and not isinstance(padding, bool):
        padding = (padding, padding)
    if not isinstance(padding, tuple | list) or len(padding) != 2:
        raise ValueError(f"padding must be 'SAME', 'VALID', an int or 2 pairs, got {padding!r}")
    out = []
    for p in padding:
        p = (p, p) if isinstance(p, int) and not isinstance(p, bool) else tuple(p)
        if len(p) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in p):
            raise ValueError(f"padding entries must be ints >= 0 or (lo, hi) pairs, got "
                             f"{padding!r}")
        out.append(p)
    return tuple(out)


def _split_padding(padding, axis):
    """Padding for a separable conv acting on spatial ``axis`` only (0: H, 1: W)."""
    if isinstance(padding, str):
        return padding  # SAME / VALID are computed per spatial dimension
    return tuple(p if k == axis else (0, 0) for k, p in enumerate(padding))


def _common_init(self, in_features, out_features, kernel_size, strides, padding, use_bias,
                 dtype, param_dtype):
    self.in_features = check_int(in_features, "in_features")
    self.out_features = check_int(out_features, "out_features")
    self.kernel_size = _pair(kernel_size, "kernel_size")
    self.strides = _pair(strides, "strides")
    self.padding = _padding(padding)
    self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype


def _flatten_input(x, in_features):
    """``(..., H, W, C)`` -> ``(N, H, W, C)`` and the leading shape (``()`` when unbatched)."""
    x = jnp.asarray(x)
    if x.ndim < 3 or x.shape[-1] != in_features:
        raise ValueError(f"x must have shape (..., H, W, {in_features}), got {x.shape}")
    return x.reshape((-1,) + x.shape[-3:]), x.shape[:-3]


def _dtype(layer, x):
    return compute_dtype(layer.dtype, x, layer.param_dtype)


def _check_kernel(kernel, bias):
    kernel = jnp.asarray(kernel)
    if kernel.ndim != 4:
        raise ValueError(f"kernel must have shape (kh, kw, C_in, C_out), got {kernel.shape}")
    if bias is not None and jnp.shape(bias) != (kernel.shape[-1],):
        raise ValueError(f"bias must have shape ({kernel.shape[-1]},), got {jnp.shape(bias)}")
    return kernel


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 6))
def _tucker_init(key, c_in, c_out, kernel_size, ranks, init_scale, dtype):
    """Orthonormal ``U_in``, ``U_out`` and a Gaussian core with ``E||K||_F^2 = C_out *
    init_scale^2`` (``||K||_F = ||core||_F`` for orthonormal factors); one compiled
    program per shape instead of many eager ops."""
    (kh, kw), (r_in, r_out) = kernel_size, ranks
    k_in, k_core, k_out = jax.random.split(key, 3)
    u_in = linalg.qr(jax.random.normal(k_in, (c_in, r_in), dtype))[0]
    u_out = linalg.qr(jax.random.normal(k_out, (c_out, r_out), dtype))[0]
    std = init_scale * jnp.sqrt(c_out / (kh * kw * r_in * r_out))
    core = std.astype(dtype) * jax.random.normal(k_core, (kh, kw, r_in, r_out), dtype)
    return u_in, core, u_out


@functools.partial(jax.jit, static_argnums=(1, 2, 4))
def _cp_init(key, dims, rank, init_scale, dtype):
    """``tnlib.cp.random`` factors, each scaled by ``(C_out * init_scale^2)^(1/8)`` so
    ``E||K||_F^2 = C_out * init_scale^2``."""
    init = cp.random(key, dims, rank, dtype)
    s = ((init_scale**2 * dims[-1]) ** 0.125).astype(dtype)
    return tuple(s * f for f in init.factors)


@functools.partial(jax.jit, static_argnums=1)
def _partial_hosvd(kernel, ranks):
    """HOSVD with full spatial ranks, the square orthogonal spatial factors folded into
    the core: ``(core (kh, kw, r_in, r_out), U_in, U_out)``. Jitted: one compile."""
    kh, kw = kernel.shape[:2]
    t = tucker.hosvd(kernel, (kh, kw) + ranks)
    core = tucker.mode_product(tucker.mode_product(t.core, t.factors[0], 0), t.factors[1], 1)
    return core, t.factors[2], t.factors[3]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _cp_als(kernel, rank, n_iter):
    return cp.als(kernel, rank, n_iter=n_iter)


class TuckerConv(nnx.Module):
    """2-D convolution whose kernel is a Tucker-2 tensor over the channel modes.

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out``.
      kernel_size: int or ``(kh, kw)``.
      ranks: ``(r_in, r_out)`` with ``1 <= r_in <= C_in`` and ``1 <= r_out <= C_out``.
      strides: int or ``(sh, sw)``.
      padding: ``"SAME"``, ``"VALID"``, an int, or two ints / ``(lo, hi)`` pairs.
      use_bias: add a bias of shape ``(C_out,)`` (initialized to zero).
      init_scale: the dense kernel's entries have variance
        ``init_scale**2 / (kh * kw * C_in)`` (LeCun normal, ``nnx.Conv``'s default):
        orthonormal ``U_in``, ``U_out`` and a Gaussian core.
      dtype: computation dtype (default: inferred from inputs and params).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Params: ``first`` ``(C_in, r_in)``, ``core`` ``(kh, kw, r_in, r_out)``, ``last``
    ``(C_out, r_out)``, ``bias`` ``(C_out,)``. Input ``(..., H, W, C_in)``, output
    ``(..., H', W', C_out)``.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size, *, ranks,
                 strides=1, padding="SAME", use_bias: bool = True, init_scale: float = 1.0,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        _common_init(self, in_features, out_features, kernel_size, strides, padding, use_bias,
                     dtype, param_dtype)
        if not isinstance(ranks, tuple | list) or len(ranks) != 2:
            raise ValueError(f"ranks must be a pair (r_in, r_out), got {ranks!r}")
        r_in = check_int(ranks[0], "ranks[0] (r_in)")
        r_out = check_int(ranks[1], "ranks[1] (r_out)")
        if r_in > self.in_features or r_out > self.out_features:
            raise ValueError(f"ranks {tuple(ranks)} must be at most (in_features, out_features) "
                             f"= ({self.in_features}, {self.out_features})")
        self.ranks = (r_in, r_out)
        kh, kw = self.kernel_size
        u_in, core, u_out = _tucker_init(rngs.params(), self.in_features, self.out_features,
                                         self.kernel_size, self.ranks, init_scale, param_dtype)
        self.first, self.core, self.last = nnx.Param(u_in), nnx.Param(core), nnx.Param(u_out)
        self.bias = nnx.Param(jnp.zeros((self.out_features,), param_dtype)) if use_bias else None

    def as_tucker(self, dtype=None) -> tucker.Tucker:
        """The kernel as a ``tnlib.tucker.Tucker`` over the channel modes: core
        ``(kh, kw, r_in, r_out)`` with identity spatial factors."""
        kh, kw = self.kernel_size
        dt = dtype or self.param_dtype
        return tucker.Tucker(self.core[...].astype(dt), (
            jnp.eye(kh, dtype=dt), jnp.eye(kw, dtype=dt),
            self.first[...].astype(dt), self.last[...].astype(dt)))

    def to_dense(self):
        """Dense kernel ``(kh, kw, C_in, C_out)``: ``core x_3 first x_4 last``."""
        k = tucker.mode_product(self.core[...], self.first[...], 2)
        return tucker.mode_product(k, self.last[...], 3)

    def lr_multipliers(self) -> nnx.State:
        """muP Adam multipliers (module docstring): ``first`` ``kh kw``, ``core``
        ``C_in / r_in``, ``last`` ``kh kw C_in / r_out``, ``bias`` 1; a tree shaped like
        ``nnx.state(self, nnx.Param)``."""
        (kh, kw), (r_in, r_out) = self.kernel_size, self.ranks
        fan_in = kh * kw * self.in_features
        table = {"first": fan_in / self.in_features, "core": fan_in / (kh * kw * r_in),
                 "last": fan_in / r_out, "bias": 1.0}
        return param_tree(self, lambda path: table[path[0]])

    def __call__(self, x):
        x, batch = _flatten_input(x, self.in_features)
        dt = _dtype(self, x)
        x = x.astype(dt)
        # 1x1 conv C_in -> r_in, k x k conv r_in -> r_out, 1x1 conv r_out -> C_out
        y = tucker.mode_product(x, self.first[...].astype(dt).T, 3)
        y = jax.lax.conv_general_dilated(y, self.core[...].astype(dt), self.strides,
                                         self.padding, dimension_numbers=_DIMS)
        y = tucker.mode_product(y, self.last[...].astype(dt), 3)
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y.reshape(batch + y.shape[1:])

    @classmethod
    def from_dense(cls, kernel, bias=None, *, ranks, strides=1, padding="SAME",
                   dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs) -> TuckerConv:
        """Layer from a dense HWIO kernel ``(kh, kw, C_in, C_out)`` by partial HOSVD.

        ``tnlib.tucker.hosvd`` runs with full ranks ``(kh, kw)`` on the spatial modes
        (their factors are square orthogonal and are folded into the core, so
        nothing is truncated there) and ``ranks`` on the channel modes, in double
        precision. A kernel of multilinear rank ``(., ., r_in, r_out)`` is reproduced
        exactly (to ``param_dtype`` rounding).
        """
        kernel = _check_kernel(kernel, bias)
        kh, kw, c_in, c_out = kernel.shape
        layer = cls(c_in, c_out, (kh, kw), ranks=ranks, strides=strides, padding=padding,
                    use_bias=bias is not None, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        core, u_in, u_out = double_precision(lambda k: _partial_hosvd(k, layer.ranks),
                                              kernel, param_dtype)
        layer.core[...] = core
        layer.first[...] = u_in
        layer.last[...] = u_out
        if bias is not None:
            layer.bias[...] = jnp.asarray(bias, param_dtype)
        return layer


class CPConv(nnx.Module):
    """2-D convolution whose kernel is a rank-``R`` CP tensor.

    Args:
      in_features: as in ``TuckerConv``, and so are ``out_features``, ``kernel_size``,
        ``strides``, ``padding``, ``use_bias``, ``dtype``, ``param_dtype``, ``rngs``.
      rank: CP rank ``R >= 1``.
      init_scale: the dense kernel has ``E ||K||_F^2 = init_scale**2 * C_out`` (the
        LeCun-normal budget): ``tnlib.cp.random`` factors, each scaled by the same
        factor.

    Params: ``first`` ``(C_in, R)``, ``vertical`` ``(kh, R)``, ``horizontal``
    ``(kw, R)``, ``last`` ``(C_out, R)``, ``bias`` ``(C_out,)``; the CP weights are 1
    (``from_dense`` folds ALS's weights into ``last``). Input ``(..., H, W, C_in)``,
    output ``(..., H', W', C_out)``.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size, *, rank: int,
                 strides=1, padding="SAME", use_bias: bool = True, init_scale: float = 1.0,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        _common_init(self, in_features, out_features, kernel_size, strides, padding, use_bias,
                     dtype, param_dtype)
        self.rank = check_int(rank, "rank")
        kh, kw = self.kernel_size
        v, h, u_in, u_out = _cp_init(rngs.params(), (kh, kw, self.in_features, self.out_features),
                                     self.rank, init_scale, param_dtype)
        self.vertical, self.horizontal = nnx.Param(v), nnx.Param(h)
        self.first, self.last = nnx.Param(u_in), nnx.Param(u_out)
        self.bias = nnx.Param(jnp.zeros((self.out_features,), param_dtype)) if use_bias else None

    def as_cp(self, dtype=None) -> cp.CP:
        """The kernel as a ``tnlib.cp.CP`` with factors for ``(kh, kw, C_in, C_out)``."""
        dt = dtype or self.param_dtype
        factors = tuple(p[...].astype(dt)
                        for p in (self.vertical, self.horizontal, self.first, self.last))
        return cp.CP(jnp.ones((self.rank,), dt), factors)

    def to_dense(self):
        """Dense kernel ``(kh, kw, C_in, C_out)`` via ``tnlib.cp.to_dense``."""
        return cp.to_dense(self.as_cp())

    def lr_multipliers(self) -> nnx.State:
        """muP Adam multipliers (module docstring): ``first`` ``kh kw``, ``vertical``
        ``kw C_in``, ``horizontal`` ``kh C_in``, ``last`` ``kh kw C_in / R``, ``bias`` 1;
        a tree shaped like ``nnx.state(self, nnx.Param)``."""
        kh, kw = self.kernel_size
        fan_in = kh * kw * self.in_features
        table = {"first": fan_in / self.in_features, "vertical": fan_in / kh,
                 "horizontal": fan_in / kw, "last": fan_in / self.rank, "bias": 1.0}
        return param_tree(self, lambda path: table[path[0]])

    def __call__(self, x):
        x, batch = _flatten_input(x, self.in_features)
        dt = _dtype(self, x)
        x = x.astype(dt)
        k = self.as_cp(dt)
        v, h, u_in, u_out = k.factors
        sh, sw = self.strides
        r = self.rank
        y = tucker.mode_product(x, u_in.T, 3)  # 1x1 conv C_in -> R
        y = jax.lax.conv_general_dilated(  # depthwise kh x 1
            y, v[:, None, None, :], (sh, 1), _split_padding(self.padding, 0),
            dimension_numbers=_DIMS, feature_group_count=r)
        y = jax.lax.conv_general_dilated(  # depthwise 1 x kw
            y, h[None, :, None, :], (1, sw), _split_padding(self.padding, 1),
            dimension_numbers=_DIMS, feature_group_count=r)
        y = tucker.mode_product(y, u_out, 3)  # 1x1 conv R -> C_out
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y.reshape(batch + y.shape[1:])

    @classmethod
    def from_dense(cls, kernel, bias=None, *, rank: int, n_iter: int = 100, strides=1,
                   padding="SAME", dtype=None, param_dtype=jnp.float32,
                   rngs: nnx.Rngs) -> CPConv:
        """Layer from a dense HWIO kernel ``(kh, kw, C_in, C_out)`` by CP-ALS
        (``tnlib.cp.als`` with ``n_iter`` sweeps, SVD initialization, in double
        precision); ALS's weights are folded into ``last``. ``rank`` is at most
        ``tnlib.cp.rank_bound`` of the kernel's shape."""
        kernel = _check_kernel(kernel, bias)
        kh, kw, c_in, c_out = kernel.shape
        layer = cls(c_in, c_out, (kh, kw), rank=rank, strides=strides, padding=padding,
                    use_bias=bias is not None, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        def fit(k):
            d = _cp_als(k, layer.rank, n_iter)
            return d.factors[:3] + (d.factors[3] * d.weights,)

        v, h, u_in, u_out = double_precision(fit, kernel, param_dtype)
        layer.vertical[...] = v
        layer.horizontal[...] = h
        layer.first[...] = u_in
        layer.last[...] = u_out
        if bias is not None:
            layer.bias[...] = jnp.asarray(bias, param_dtype)
        return layer


class DLRTConv(nnx.Module):
    """2-D convolution whose kernel, as the ``(C_out, kh kw C_in)`` matrix, is a
    :class:`tnlib.dlrt.USV` of adaptive rank (train it with :func:`tnlib.dlrt.step`,
    as :class:`tnlib.models.DLRTLinear`).

    Args:
      in_features: input channels ``C_in``.
      out_features: output channels ``C_out``.
      kernel_size: int or ``(kh, kw)``.
      rank: the starting rank: an int, or a float in ``(0, 1]``, the fraction of the
        dense kernel's parameters that ``r (C_out + kh kw C_in)`` may use (default 0.5).
      max_rank: the static cap (default the starting rank);
        ``2 max_rank <= min(C_out, kh kw C_in)``.
      strides, padding, use_bias, dtype, param_dtype, rngs: as ``TuckerConv``.

    Params: ``w`` (a ``USV``: ``u`` ``(C_out, R)``, ``s``, ``v`` ``(kh kw C_in, R)``),
    ``bias`` ``(C_out,)``.
    """

    def __init__(self, in_features: int, out_features: int, kernel_size, *,
                 rank: int | float = 0.5, max_rank: int | None = None, strides=1,
                 padding="SAME", use_bias: bool = True, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        _common_init(self, in_features, out_features, kernel_size, strides, padding, use_bias,
                     dtype, param_dtype)
        kh, kw = self.kernel_size
        o, m = self.out_features, kh * kw * self.in_features
        largest = min(o, m) // 2
        if largest < 1:
            raise ValueError(f"DLRTConv needs min(C_out, kh kw C_in) >= 2, got {o} and {m}")
        r = resolve_rank(rank, lambda r: r * (o + m), largest, o * m,
                         f"min(C_out, kh kw C_in) // 2 = {largest}", "DLRTConv")
        self.w = nnx.Param(dlrt.random(rngs.params(), (o, m), r, max_rank=max_rank,
                                       dtype=param_dtype))
        self.bias = nnx.Param(jnp.zeros((o,), param_dtype)) if use_bias else None

    @property
    def rank(self) -> int:
        """The active rank (concrete: call outside ``jit``)."""
        return int(self.w.get_value().rank)

    def to_dense(self):
        """Dense kernel ``(kh, kw, C_in, C_out)``."""
        kh, kw = self.kernel_size
        w = dlrt.to_dense(self.w.get_value())  # (C_out, kh kw C_in)
        return w.T.reshape(kh, kw, self.in_features, self.out_features)

    def num_params(self) -> int:
        """``r (C_out + kh kw C_in)`` at the active rank, plus the bias."""
        bias = self.out_features if self.bias is not None else 0
        return int(dlrt.active_params(self.w.get_value())) + bias

    def __call__(self, x):
        x, batch = _flatten_input(x, self.in_features)
        dt = _dtype(self, x)
        f = self.w.get_value()
        kh, kw = self.kernel_size
        v = f.v.astype(dt).reshape(kh, kw, self.in_features, -1)
        y = jax.lax.conv_general_dilated(x.astype(dt), v, self.strides, self.padding,
                                         dimension_numbers=_DIMS)
        y = y @ (f.u @ f.s).astype(dt).T
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y.reshape(batch + y.shape[1:])

    @classmethod
    def from_dense(cls, kernel, bias=None, *, max_rank: int, rank: int | None = None,
                   rtol: float | None = None, strides=1, padding="SAME", dtype=None,
                   param_dtype=jnp.float32, rngs: nnx.Rngs) -> DLRTConv:
        """The truncated SVD (double precision) of the HWIO ``kernel`` as a ``(C_out,
        kh kw C_in)`` matrix, at ``rank`` / the rank ``rtol`` picks / ``max_rank``."""
        kernel = _check_kernel(kernel, bias)
        kh, kw, c_in, c_out = kernel.shape
        layer = cls(c_in, c_out, (kh, kw), rank=rank or 1, max_rank=max_rank,
                    strides=strides, padding=padding, use_bias=bias is not None,
                    dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        layer.w = nnx.Param(double_precision(
            lambda k: dlrt.from_dense(k.reshape(-1, c_out).T, max_rank=max_rank, rank=rank,
                                      rtol=rtol), kernel, param_dtype))
        if bias is not None:
            layer.bias[...] = jnp.asarray(bias, param_dtype)
        return layer
