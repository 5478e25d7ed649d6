"""Adapters for fine-tuning a frozen dense model: ``LoRA``, ``LoTR``, ``FLoRA`` and
``DoTA``.

Each adapter holds the pretrained weights it adapts as ``Frozen`` variables (an
``nnx.Variable`` that is not an ``nnx.Param``) and its own factors as ``nnx.Param``, so

    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

(and ``nnx.grad``, whose default ``wrt`` is ``nnx.Param``) trains the adapters only.
Every adapter equals the base model at initialization: LoRA, LoTR and FLoRA start
with a zero update (one factor or the core is zero); DoTA starts from the truncated MPO
of the weight itself and freezes the residual ``W - MPO(W)``. ``delta()`` returns the
dense matrix the adapter adds to its frozen ``kernel`` and ``merged_kernel()`` their sum
(for export: the merged kernel serves the base layer at no extra inference cost).

- ``LoRA`` (Hu et al. 2021): one dense kernel ``W`` ``(in, out)``,
  ``Delta W = (alpha / r) A B`` with ``A`` ``(in, r)`` and ``B`` ``(r, out)``, ``B = 0``
  at init; applied as ``x W + (alpha / r) (x A) B`` (``Delta W`` is never formed).
- ``LoTR`` (Bershatsky et al. 2024, "LoTR: Low Tensor Rank Weight Adaptation"): a stack
  of ``L`` kernels ``W_l`` ``(in, out)`` (e.g. the same projection in every block of a
  transformer) sharing one pair of factors ``U`` ``(in, r)``, ``V`` ``(out, r)``, with a
  small per-layer core ``G_l`` ``(r, r)``: ``Delta W_l = (alpha / r) U G_l V^T``
  (a Tucker-2 decomposition of the stacked update); ``G = 0`` at init.
- ``FLoRA`` (Si et al. 2024, "FLoRA: Low-Rank Core Space for N-dimension"): an N-d
  weight such as a convolution kernel ``(*kernel_size, C_in, C_out)``, with the Tucker
  update ``Delta W = scale * core x_1 U_1 ... x_N U_N`` (``core`` ``(r_1, ..., r_N)``,
  ``U_k`` ``(n_k, r_k)``), so the spatial structure of the kernel is kept instead of
  being flattened into a matrix; ``core = 0`` at init.
- ``DoTA`` (Hu et al. 2024, "DoTA: Weight-Decomposed Tensor Adaptation for Large
  Language Models"): one dense kernel ``W`` ``(in, out)``; the trainable part is a
  TT-matrix (MPO) initialized from the truncated MPO decomposition of ``W`` itself (not
  random, not zero), and the frozen part is the residual ``W_res = W - MPO(W)``, so
  ``y = x (W_res + MPO(cores)) + b`` equals the base layer at init.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from tnlib import linalg, tt, tucker
from tnlib.models._common import check_int, compute_dtype, double_precision

from ._shapes import tt_factors

__all__ = ["Frozen", "LoRA", "LoTR", "FLoRA", "DoTA"]


class Frozen(nnx.Variable):
    """A pretrained weight held fixed while its adapter trains. Not an ``nnx.Param``:
    ``nnx.grad`` and ``nnx.Optimizer(..., wrt=nnx.Param)`` leave it alone."""



def _check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _weights(kernel, bias, ndim, layout, bias_shape):
    """Validated frozen ``kernel`` (``ndim`` axes, or at least 2 when ``ndim`` is None)
    and ``bias`` of shape ``bias_shape(kernel)``, as arrays in their own dtypes."""
    kernel = jnp.asarray(kernel)
    if not jnp.issubdtype(kernel.dtype, jnp.inexact) or (
            kernel.ndim != ndim if ndim is not None else kernel.ndim < 2):
        raise ValueError(f"kernel must be a float array of shape {layout}, got "
                         f"{kernel.dtype} {kernel.shape}")
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != bias_shape(kernel):
            raise ValueError(f"bias must have shape {bias_shape(kernel)}, got {bias.shape}")
    return kernel, bias


def _compute_dtype(layer, x):
    return compute_dtype(layer.dtype, x, layer.kernel.dtype, layer.param_dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _orthonormal(key, shapes, dtype):
    """One ``(n, r)`` matrix with orthonormal columns (``r <= n``, the Q of a Gaussian
    matrix) per entry of ``shapes``; one compiled program and one draw per call."""
    sizes = [n * r for n, r in shapes]
    draws = jnp.split(jax.random.normal(key, (sum(sizes),), dtype),
                      list(itertools.accumulate(sizes[:-1])))
    return [linalg.qr(d.reshape(sh))[0] for d, sh in zip(draws, shapes, strict=True)]


def _check_x(x, width, what):
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != width:
        raise ValueError(f"x must have shape (..., {width}) ({what}), got {x.shape}")
    return x


# ----------------------------------------------------------------------------- LoRA

_HE_UNIFORM = nnx.initializers.he_uniform()


class LoRA(nnx.Module):
    """Low-rank adapter on a frozen dense kernel: ``y = x (W + (alpha / r) A B) + b``.

    Args:
      kernel: the frozen kernel ``W`` ``(in_features, out_features)`` (``nnx.Linear``'s
        layout; kept in its own dtype).
      bias: the frozen bias ``(out_features,)`` or None.
      rank: ``r``, an int with ``1 <= r <= min(in_features, out_features)``.
      alpha: the update is scaled by ``alpha / r`` (default ``alpha = r``: scale 1).
      a_init: initializer of ``A`` (default He uniform, as ``nnx.LoRA``); ``B`` is zero.
      dtype: computation dtype (default: promote the kernel's, the adapter's and x's).
      param_dtype: dtype of ``A`` and ``B``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Params: ``lora_a`` ``(in, r)``, ``lora_b`` ``(r, out)``; ``Frozen``: ``kernel``,
    ``bias``. ``LoRA.from_linear(linear, ...)`` adapts an ``nnx.Linear``.
    """

    def __init__(self, kernel, bias=None, *, rank: int, alpha: float | None = None,
                 a_init=_HE_UNIFORM, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        kernel, bias = _weights(kernel, bias, 2, "(in_features, out_features)",
                                lambda k: (k.shape[1],))
        self.in_features, self.out_features = kernel.shape
        rank = check_int(rank, "rank")
        if rank > min(kernel.shape):
            raise ValueError(f"rank must be at most min(in_features, out_features) = "
                             f"{min(kernel.shape)}, got {rank}")
        self.alpha = _check_real(rank if alpha is None else alpha, "alpha")
        self.dtype, self.param_dtype = dtype, param_dtype
        self.kernel = Frozen(kernel)
        self.bias = Frozen(bias) if bias is not None else None
        self.lora_a = nnx.Param(a_init(rngs.params(), (self.in_features, rank), param_dtype))
        self.lora_b = nnx.Param(jnp.zeros((rank, self.out_features), param_dtype))

    @classmethod
    def from_linear(cls, linear: nnx.Linear, *, rank: int, alpha: float | None = None,
                    **kwargs) -> LoRA:
        """Adapter on a copy of ``linear``'s kernel and bias (frozen)."""
        bias = None if linear.bias is None else linear.bias[...]
        return cls(linear.kernel[...], bias, rank=rank, alpha=alpha, **kwargs)

    @property
    def rank(self) -> int:
        return self.lora_a.shape[-1]

    @property
    def scale(self) -> float:
        """``alpha / r``."""
        return self.alpha / self.rank

    def delta(self):
        """``Delta W = (alpha / r) A B`` ``(in_features, out_features)``."""
        return self.scale * (self.lora_a[...] @ self.lora_b[...])

    def merged_kernel(self):
        """``W + Delta W`` (in the promoted dtype of the kernel and the adapter)."""
        return self.kernel[...] + self.delta()

    def num_params(self) -> int:
        """Trainable scalars: ``r (in_features + out_features)``."""
        return self.rank * (self.in_features + self.out_features)

    def __call__(self, x):
        """``x`` ``(..., in_features)`` -> ``(..., out_features)``."""
        x = _check_x(x, self.in_features, "in_features")
        dt = _compute_dtype(self, x)
        x = x.astype(dt)
        a, b = self.lora_a[...].astype(dt), self.lora_b[...].astype(dt)
        y = x @ self.kernel[...].astype(dt) + jnp.asarray(self.scale, dt) * ((x @ a) @ b)
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y


# ----------------------------------------------------------------------------- LoTR


class LoTR(nnx.Module):
    """Low tensor-rank adapter on a stack of ``L`` frozen kernels:
    ``y = x (W_l + (alpha / r) U G_l V^T) + b_l`` for layer ``l``.

    Args:
      kernels: the frozen kernels ``(L, in_features, out_features)``.
      biases: the frozen biases ``(L, out_features)`` or None.
      rank: ``r``, an int with ``1 <= r <= min(in_features, out_features)``.
      alpha: the update is scaled by ``alpha / r`` (default ``alpha = r``: scale 1).
      dtype: computation dtype (default: promote the kernels', the adapter's and x's).
      param_dtype: dtype of ``U``, ``V`` and the cores.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Params: ``u`` ``(in, r)`` and ``v`` ``(out, r)`` with orthonormal columns at init
    (shared by all layers), ``cores`` ``(L, r, r)`` zero at init; ``Frozen``: ``kernel``
    ``(L, in, out)``, ``bias`` ``(L, out)``. ``LoTR.from_linears([...])`` adapts a
    sequence of ``nnx.Linear`` of one shape. ``r (in + out) + L r^2`` trainable scalars
    instead of LoRA's ``L r (in + out)``.
    """

    def __init__(self, kernels, biases=None, *, rank: int, alpha: float | None = None,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kernels, biases = _weights(kernels, biases, 3, "(L, in_features, out_features)",
                                   lambda k: (k.shape[0], k.shape[2]))
        self.n_layers, self.in_features, self.out_features = kernels.shape
        rank = check_int(rank, "rank")
        if rank > min(kernels.shape[1:]):
            raise ValueError(f"rank must be at most min(in_features, out_features) = "
                             f"{min(kernels.shape[1:])}, got {rank}")
        self.alpha = _check_real(rank if alpha is None else alpha, "alpha")
        self.dtype, self.param_dtype = dtype, param_dtype
        self.kernel = Frozen(kernels)
        self.bias = Frozen(biases) if biases is not None else None
        u, v = _orthonormal(rngs.params(), ((self.in_features, rank),
                                            (self.out_features, rank)), param_dtype)
        self.u, self.v = nnx.Param(u), nnx.Param(v)
        self.cores = nnx.Param(jnp.zeros((self.n_layers, rank, rank), param_dtype))

    @classmethod
    def from_linears(cls, linears: Sequence[nnx.Linear], *, rank: int,
                     alpha: float | None = None, **kwargs) -> LoTR:
        """Adapter on the stacked kernels (and biases) of ``nnx.Linear`` layers of one
        shape (all with a bias, or none)."""
        if not isinstance(linears, Sequence) or len(linears) == 0:
            raise ValueError(f"linears must be a non-empty sequence of nnx.Linear, got "
                             f"{linears!r}")
        shapes = {tuple(lin.kernel.shape) for lin in linears}
        has_bias = {lin.bias is not None for lin in linears}
        if len(shapes) != 1 or len(has_bias) != 1:
            raise ValueError(f"linears must share one kernel shape and all have a bias or "
                             f"none, got shapes {sorted(shapes)}")
        kernels = jnp.stack([lin.kernel[...] for lin in linears])
        biases = jnp.stack([lin.bias[...] for lin in linears]) if has_bias.pop() else None
        return cls(kernels, biases, rank=rank, alpha=alpha, **kwargs)

    @property
    def rank(self) -> int:
        return self.u.shape[-1]

    @property
    def scale(self) -> float:
        """``alpha / r``."""
        return self.alpha / self.rank

    def _check_layer(self, layer):
        if isinstance(layer, bool) or not (isinstance(layer, int) or (
                hasattr(layer, "dtype") and jnp.issubdtype(layer.dtype, jnp.integer)
                and jnp.ndim(layer) == 0)):
            raise ValueError(f"layer must be an integer scalar, got {layer!r}")
        if linalg.is_concrete(layer) and not 0 <= int(layer) < self.n_layers:
            raise ValueError(f"layer must lie in [0, {self.n_layers}), got {int(layer)}")
        return layer

    def delta(self, layer=None):
        """``Delta W_l = (alpha / r) U G_l V^T``: ``(in, out)`` for one ``layer``, or the
        stack ``(L, in, out)`` when ``layer`` is None."""
        g = self.cores[...]
        if layer is not None:
            g = g[self._check_layer(layer)]
        return self.scale * (self.u[...] @ g @ self.v[...].T)

    def merged_kernel(self, layer=None):
        """``W_l + Delta W_l`` for one ``layer`` or the whole stack (``layer=None``)."""
        w = self.kernel[...]
        if layer is not None:
            w = w[self._check_layer(layer)]
        return w + self.delta(layer)

    def num_params(self) -> int:
        """Trainable scalars: ``r (in_features + out_features) + L r^2``."""
        r = self.rank
        return r * (self.in_features + self.out_features) + self.n_layers * r * r

    def __call__(self, x, layer):
        """Apply layer ``layer`` (a Python int or an integer scalar, e.g. the index of a
        ``lax.scan`` / ``nnx.scan`` over blocks: checked when concrete, clamped to
        ``[0, L)`` when traced, as JAX indexing): ``x`` ``(..., in)`` -> ``(..., out)``."""
        x = _check_x(x, self.in_features, "in_features")
        layer = self._check_layer(layer)
        dt = _compute_dtype(self, x)
        x = x.astype(dt)
        u, v = self.u[...].astype(dt), self.v[...].astype(dt)
        g = self.cores[...][layer].astype(dt)
        y = x @ self.kernel[...][layer].astype(dt)
        y = y + jnp.asarray(self.scale, dt) * (((x @ u) @ g) @ v.T)
        if self.bias is not None:
            y = y + self.bias[...][layer].astype(dt)
        return y


# ----------------------------------------------------------------------------- FLoRA


def _conv_arg(value, name, n_spatial, pair: bool):
    """Strides (``pair=False``: int or ``n_spatial`` ints >= 1) or padding (``pair=True``:
    ``"SAME"``/``"VALID"``, an int, or ``n_spatial`` ints / ``(lo, hi)`` pairs >= 0)."""
    if pair and isinstance(value, str):
        if value.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{name} must be 'SAME', 'VALID', ints or pairs, got {value!r}")
        return value.upper()
    low = 0 if pair else 1
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,) * n_spatial
    if not isinstance(value, tuple | list) or len(value) != n_spatial:
        raise ValueError(f"{name} must be an int or {n_spatial} entries, got {value!r}")
    out = []
    for v in value:
        v = (v, v) if pair and isinstance(v, int) and not isinstance(v, bool) else v
        items = tuple(v) if pair and isinstance(v, tuple | list) else (v,)
        if (pair and len(items) != 2) or any(
                isinstance(i, bool) or not isinstance(i, int) or i < low for i in items):
            raise ValueError(f"{name} entries must be ints >= {low}"
                             f"{' or (lo, hi) pairs' if pair else ''}, got {value!r}")
        out.append(items if pair else items[0])
    return tuple(out)


class FLoRA(nnx.Module):
    """Tucker adapter on a frozen N-d weight:
    ``W + scale * core x_1 U_1 ... x_N U_N``.

    The kernel's layout decides the layer: ``(in_features, out_features)`` is a dense
    layer (``x W + b``, applied as ``x U_1 core U_2^T`` without forming the update);
    ``(*kernel_size, C_in, C_out)`` (``nnx.Conv``'s layout, 1 to 3 spatial axes) is a
    convolution of channels-last inputs ``(..., *spatial, C_in)`` with the merged kernel
    (kernels are small; one convolution instead of two).

    Args:
      kernel: the frozen weight (N axes, ``N >= 2``).
      bias: the frozen bias ``(C_out,)`` or None.
      rank: an int (every mode's rank is ``min(rank, n_k)``) or ``N`` ints
        ``1 <= r_k <= n_k``.
      scale: multiplies the update (default 1).
      strides, padding: of the convolution (as ``nnx.Conv``: an int or one per spatial
        axis; ``"SAME"``, ``"VALID"``, an int, or ints / ``(lo, hi)`` pairs).
      dtype: computation dtype (default: promote the kernel's, the adapter's and x's).
      param_dtype: dtype of the core and the factors.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Params: ``core`` ``(r_1, ..., r_N)`` zero at init, ``factors`` an ``nnx.List`` of
    ``(n_k, r_k)`` with orthonormal columns (so ``||Delta W||_F = scale ||core||_F`` at
    init); ``Frozen``: ``kernel``, ``bias``. ``FLoRA.from_conv`` / ``from_linear`` adapt
    an ``nnx.Conv`` / ``nnx.Linear``.
    """

    def __init__(self, kernel, bias=None, *, rank, scale: float = 1.0, strides=1,
                 padding="SAME", dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kernel, bias = _weights(kernel, bias, None, "(*kernel_size, C_in, C_out)",
                                lambda k: (k.shape[-1],))
        if kernel.ndim > 5:
            raise ValueError(f"kernel must have 2 to 5 axes (dense, or 1 to 3 spatial axes), "
                             f"got {kernel.shape}")
        dims = kernel.shape
        if isinstance(rank, int) and not isinstance(rank, bool):
            ranks = tuple(min(check_int(rank, "rank"), n) for n in dims)
        elif isinstance(rank, tuple | list) and len(rank) == len(dims) and all(
                not isinstance(r, bool) and isinstance(r, int) and 1 <= r <= n
                for r, n in zip(rank, dims, strict=True)):
            ranks = tuple(rank)
        else:
            raise ValueError(f"rank must be an int >= 1 or {len(dims)} ints with "
                             f"1 <= r_k <= n_k for the kernel shape {dims}, got {rank!r}")
        n_spatial = kernel.ndim - 2
        self.strides = _conv_arg(strides, "strides", n_spatial, pair=False)
        self.padding = _conv_arg(padding, "padding", n_spatial, pair=True)
        self.scale = _check_real(scale, "scale")
        self.in_features, self.out_features = dims[-2], dims[-1]
        self.dtype, self.param_dtype = dtype, param_dtype
        self.kernel = Frozen(kernel)
        self.bias = Frozen(bias) if bias is not None else None
        factors = _orthonormal(rngs.params(), tuple(zip(dims, ranks, strict=True)),
                               param_dtype)
        self.factors = nnx.List([nnx.Param(f) for f in factors])
        self.core = nnx.Param(jnp.zeros(ranks, param_dtype))

    @classmethod
    def from_conv(cls, conv: nnx.Conv, *, rank, scale: float = 1.0, **kwargs) -> FLoRA:
        """Adapter on a copy of ``conv``'s kernel and bias (frozen), with its strides and
        padding; dilations and feature groups are not supported."""
        def trivial(d):
            return d is None or d == 1 or (isinstance(d, Sequence) and set(d) <= {1})

        if conv.feature_group_count != 1 or not (
                trivial(conv.input_dilation) and trivial(conv.kernel_dilation)):
            raise ValueError("conv must have feature_group_count 1 and no dilation")
        bias = None if conv.bias is None else conv.bias[...]
        strides = 1 if conv.strides is None else conv.strides
        if isinstance(strides, Sequence) and not isinstance(strides, str):
            strides = tuple(strides)
        padding = conv.padding
        if isinstance(padding, Sequence) and not isinstance(padding, str):
            padding = tuple(tuple(p) if isinstance(p, Sequence) else p for p in padding)
        return cls(conv.kernel[...], bias, rank=rank, scale=scale, strides=strides,
                   padding=padding, **kwargs)

    @classmethod
    def from_linear(cls, linear: nnx.Linear, *, rank, scale: float = 1.0,
                    **kwargs) -> FLoRA:
        """Adapter on a copy of ``linear``'s kernel and bias (frozen)."""
        bias = None if linear.bias is None else linear.bias[...]
        return cls(linear.kernel[...], bias, rank=rank, scale=scale, **kwargs)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(self.core.shape)

    def as_tucker(self, dtype=None) -> tucker.Tucker:
        """The update without ``scale`` as a ``tnlib.tucker.Tucker``."""
        dt = dtype or self.param_dtype
        return tucker.Tucker(self.core[...].astype(dt),
                             tuple(f[...].astype(dt) for f in self.factors))

    def delta(self):
        """``Delta W = scale * core x_1 U_1 ... x_N U_N`` (the kernel's shape)."""
        return self.scale * tucker.to_dense(self.as_tucker())

    def merged_kernel(self):
        """``W + Delta W``."""
        return self.kernel[...] + self.delta()

    def num_params(self) -> int:
        """Trainable scalars: ``prod r_k + sum n_k r_k``."""
        return math.prod(self.core.shape) + sum(math.prod(f.shape) for f in self.factors)

    def __call__(self, x):
        """Dense kernel: ``x`` ``(..., in)`` -> ``(..., out)``. Conv kernel with ``S``
        spatial axes: ``x`` ``(..., *spatial, C_in)`` (at least ``S + 1`` axes) ->
        ``(..., *spatial', C_out)``."""
        n_spatial = len(self.kernel.shape) - 2
        x = jnp.asarray(x)
        if x.ndim < n_spatial + 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (...{', S' * n_spatial}, "
                             f"{self.in_features}) for this kernel, got {x.shape}")
        dt = _compute_dtype(self, x)
        x = x.astype(dt)
        if n_spatial == 0:
            u1, u2 = (f[...].astype(dt) for f in self.factors)
            y = x @ self.kernel[...].astype(dt)
            y = y + jnp.asarray(self.scale, dt) * (((x @ u1) @ self.core[...].astype(dt)) @ u2.T)
        else:
            batch = x.shape[: x.ndim - n_spatial - 1]
            xs = x.reshape((-1,) + x.shape[x.ndim - n_spatial - 1:])
            kernel = self.kernel[...].astype(dt) + jnp.asarray(self.scale, dt) * tucker.to_dense(
                self.as_tucker(dt))
            sp = tuple(range(1, n_spatial + 1))
            dims = jax.lax.ConvDimensionNumbers(
                lhs_spec=(0, n_spatial + 1) + sp,
                rhs_spec=(n_spatial + 1, n_spatial) + tuple(range(n_spatial)),
                out_spec=(0, n_spatial + 1) + sp)
            y = jax.lax.conv_general_dilated(xs, kernel, self.strides, self.padding,
                                             dimension_numbers=dims)
            y = y.reshape(batch + y.shape[1:])
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y


# ----------------------------------------------------------------------------- DoTA


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _mpo_split(w, rank, out_factors, in_factors, param_dtype):
    """The TT-SVD cores of ``w.T`` (bonds capped at ``rank``), rounded to
    ``param_dtype``, and the residual ``w - MPO(cores)^T`` of those rounded cores, in
    ``w``'s dtype; one compiled program per shape."""
    cores = tt.from_dense(w.T, max_rank=rank, row_dims=out_factors,
                          col_dims=in_factors).cores
    cores = tuple(c.astype(param_dtype) for c in cores)
    mpo = tt.to_dense(tt.TTMatrix(tuple(c.astype(w.dtype) for c in cores)))
    return cores, w - mpo.T


class DoTA(nnx.Module):
    """TT-matrix (MPO) adapter initialized from the frozen weight itself:
    ``y = x (W_res + MPO(cores)) + b`` with ``W_res = W - MPO(W)_init`` frozen.

    DoTA (Hu et al. 2024) observes that randomly initialized tensor adapters start far
    from full fine-tuning, and instead trains the MPO of the pretrained weight. Choices
    made here (the paper's, unless marked *ours*):

    - *Initialization*: the cores are the TT-SVD (``tnlib.tt.from_dense``, computed in
      float64 for a concrete kernel) of ``W^T`` with every bond capped at ``rank``: the
      leading part of ``W`` in MPO form.
    - *Residual*: the frozen ``kernel`` is ``W - MPO(cores)`` (computed in float64, then
      kept in the original kernel's dtype), so the output at init is the base layer's
      up to rounding; ``delta()`` is the adapter's MPO, which is **not** zero at init
      (unlike LoRA's), and ``merged_kernel()`` is ``W_res + MPO(cores)``.
    - *Mode factorization*: ``in_features = prod in_factors``, ``out_features = prod
      out_factors``; site ``k`` pairs ``out_factors[k]`` with ``in_factors[k]``. The
      paper's per-matrix site count and factors (chosen for LLaMA-sized matrices) are
      not reproduced; the default here (*ours*) is ``TTLinear``'s: ``n_factors = 3``
      balanced factors (``factorize_dims``).
    - *Ranks*: one int ``rank``, the maximum bond dimension of every bond (the paper's
      truncated bond dimension), capped bond by bond at what the unfoldings allow.
    - *Scaling*: none; the MPO carries a part of ``W`` at its own magnitude, so a LoRA
      style ``alpha / r`` would only rescale the learning rate (*ours*: no ``alpha``).
    - *Bias* (*ours*): copied and frozen, as the other adapters' (the paper's LLaMA
      projections have none).

    Args:
      kernel: the pretrained kernel ``W`` ``(in_features, out_features)``.
      bias: the frozen bias ``(out_features,)`` or None.
      rank: the TT rank, an int >= 1, at most the largest bond the factors allow.
      in_factors: ``(n_1, ..., n_L)`` with product ``in_features`` (default
        ``factorize_dims(in_features, L)``).
      out_factors: ``(m_1, ..., m_L)`` with product ``out_features`` (default
        ``factorize_dims(out_features, L)``).
      n_factors: the number of sites ``L`` when neither factor tuple is given (default 3).
      dtype: computation dtype (default: promote the kernel's, the cores' and x's).
      param_dtype: dtype of the cores.
      rngs: unused (the initialization is deterministic); accepted like the other
        adapters' so that ``nnx.bridge.to_linen`` can pass it.

    Params: ``cores`` an ``nnx.List`` of ``(r_{k-1}, m_k, n_k, r_k)`` (the TT-matrix of
    ``W^T``, as ``TTLinear``); ``Frozen``: ``kernel`` (the residual), ``bias``.
    ``DoTA.from_linear(linear, ...)`` adapts an ``nnx.Linear``.
    """

    def __init__(self, kernel, bias=None, *, rank: int, in_factors=None, out_factors=None,
                 n_factors: int | None = None, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        del rngs
        kernel, bias = _weights(kernel, bias, 2, "(in_features, out_features)",
                                lambda k: (k.shape[1],))
        self.in_features, self.out_features = kernel.shape
        fi, fo = tt_factors(self.in_features, self.out_features, in_factors, out_factors,
                            n_factors)
        self.in_factors, self.out_factors = fi, fo
        rank = check_int(rank, "rank")
        sizes = [m * n for m, n in zip(fo, fi, strict=True)]
        caps = [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(fi))]
        if caps and rank > max(caps):
            raise ValueError(f"rank must be at most {max(caps)}, the largest bond the "
                             f"unfoldings of out_factors {fo} x in_factors {fi} allow (per "
                             f"bond {tuple(caps)}), got {rank}")
        self.dtype, self.param_dtype = dtype, param_dtype
        wide = jnp.promote_types(kernel.dtype, param_dtype)
        cores, residual = double_precision(
            lambda w: _mpo_split(w, rank, fo, fi, jnp.dtype(param_dtype)), kernel, wide)
        cores = [c.astype(param_dtype) for c in cores]  # exact: rounded in _mpo_split
        residual = residual.astype(kernel.dtype)
        self.kernel = Frozen(residual)
        self.bias = Frozen(bias) if bias is not None else None
        self.cores = nnx.List([nnx.Param(c) for c in cores])

    @classmethod
    def from_linear(cls, linear: nnx.Linear, *, rank: int, **kwargs) -> DoTA:
        """Adapter on a copy of ``linear``'s kernel (decomposed) and bias (frozen)."""
        bias = None if linear.bias is None else linear.bias[...]
        return cls(linear.kernel[...], bias, rank=rank, **kwargs)

    @property
    def ranks(self) -> tuple[int, ...]:
        """All ``L + 1`` bond dimensions (boundaries 1)."""
        return self.as_matrix().ranks

    def as_matrix(self, dtype=None) -> tt.TTMatrix:
        """The adapter as a ``tnlib.tt.TTMatrix`` ``(out_features, in_features)`` (the
        transpose of ``delta()``), its cores cast to ``dtype`` when given."""
        cores = (c.get_value() for c in self.cores)
        return tt.TTMatrix(tuple(c if dtype is None else c.astype(dtype) for c in cores))

    def delta(self):
        """The adapter's dense matrix ``MPO(cores)`` ``(in_features, out_features)``:
        at init the truncated MPO of the pretrained ``W`` (not zero)."""
        return tt.to_dense(self.as_matrix()).T

    def merged_kernel(self):
        """``W_res + MPO(cores)``: at init the pretrained ``W`` up to rounding."""
        return self.kernel[...] + self.delta()

    def num_params(self) -> int:
        """Trainable scalars: ``sum_k r_{k-1} m_k n_k r_k``."""
        return tt.num_params(self.as_matrix())

    def __call__(self, x):
        """``x`` ``(..., in_features)`` -> ``(..., out_features)``; the MPO is applied
        site by site (``tnlib.tt.matvec``), never formed."""
        x = _check_x(x, self.in_features, "in_features")
        dt = _compute_dtype(self, x)
        x = x.astype(dt)
        y = x @ self.kernel[...].astype(dt) + tt.matvec(self.as_matrix(dt), x)
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y
