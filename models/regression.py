"""Tensor regression layer (Kossaifi et al. 2020, "Tensor Regression Networks") with
tensor dropout (Kolbeinsson et al. 2021, "Tensor Dropout for Robust Learning").

``TensorRegression`` maps activations ``x`` of shape ``(..., *in_shape)`` to
``(..., out_features)`` as ``y[b, o] = sum_i x[b, i_1, ..., i_N] W[i_1, ..., i_N, o] + bias[o]``
without flattening ``x``: the regression weight ``W`` of shape ``(*in_shape, out_features)``
is held as a decomposition and never formed in ``__call__``.

- ``form="tucker"``: ``W = core x_1 U_1 ... x_N U_N x_{N+1} U_out`` (``tnlib.tucker.Tucker``),
  ``core`` ``(r_1, ..., r_N, r_out)``, ``factors[k]`` ``(n_k, r_k)`` (the last one is
  ``U_out`` ``(out_features, r_out)``). ``x`` is projected on each mode first
  (``x x_k U_k^T``, shape ``(B, r_1, ..., r_N)``), then contracted with the core and ``U_out``.
- ``form="cp"``: ``W = sum_r U_1[:, r] o ... o U_N[:, r] o U_out[:, r]`` (``tnlib.cp.CP``
  with unit weights; ``from_dense`` folds ALS's weights into ``U_out``), ``factors[k]``
  ``(n_k, R)``. ``x`` is contracted with ``U_1, ..., U_N`` sharing the rank index
  (``(B, R)``), then with ``U_out``.

Tensor dropout: in training mode (``deterministic=False``, ``dropout_rate > 0``) every
forward draws Bernoulli(``1 - dropout_rate``) masks on the rank components, rescaled by
``1 / (1 - dropout_rate)``: CP: one mask on the ``R`` rank-one components; Tucker: one
mask per mode on the columns of ``factors[k]`` (equivalently the core's slices), so the
core is masked by their outer product. The masks are independent with mean 1, so the
dropped weight is unbiased: ``E[W_dropped] = W``. A draw may drop every component of a
mode (probability ``rate**r``); that step then outputs the bias alone, as
``nnx.Dropout`` may drop every unit. In eval mode (``deterministic=True``) nothing is
dropped. The conventions are ``nnx.Dropout``'s: a ``deterministic`` attribute switched
by ``model.train()`` / ``model.eval()`` (or ``nnx.view``), keys from the ``dropout``
stream of the ``rngs`` given at construction, or ``rngs`` / ``deterministic`` passed to
``__call__``.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import rnglib

from tnlib import cp, linalg, tucker
from tnlib.models._common import check_int, compute_dtype, double_precision

__all__ = ["TensorRegression"]

_FORMS = ("tucker", "cp")



def _check_shape(in_shape) -> tuple[int, ...]:
    if isinstance(in_shape, int) and not isinstance(in_shape, bool):
        in_shape = (in_shape,)
    if not isinstance(in_shape, tuple | list) or len(in_shape) == 0:
        raise ValueError(f"in_shape must be a non-empty sequence of ints >= 1, got {in_shape!r}")
    return tuple(check_int(n, "in_shape") for n in in_shape)


def _check_form(form) -> str:
    if form not in _FORMS:
        raise ValueError(f"form must be one of {_FORMS}, got {form!r}")
    return form


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate < 1:
        raise ValueError(f"dropout_rate must be a float in [0, 1), got {rate!r}")
    return float(rate)


def _check_rank(rank, form, dims) -> int | tuple[int, ...]:
    """CP: an int >= 1. Tucker: an int (caps every mode at ``min(rank, n_k)``) or one
    rank per mode of ``dims`` (``*in_shape, out_features``), ``1 <= r_k <= n_k``."""
    if form == "cp":
        return check_int(rank, "rank")
    if isinstance(rank, int) and not isinstance(rank, bool):
        return tuple(min(check_int(rank, "rank"), n) for n in dims)
    if not isinstance(rank, tuple | list) or len(rank) != len(dims):
        raise ValueError(f"rank must be an int or {len(dims)} ints (one per mode of the weight "
                         f"{dims}), got {rank!r}")
    for r, n in zip(rank, dims, strict=True):
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= n:
            raise ValueError(f"rank {tuple(rank)} must have 1 <= r_k <= n_k for the weight "
                             f"shape {dims}")
    return tuple(rank)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init(key, form, dims, rank, target, dtype):
    """Initial ``(core or None, factors)`` with ``E ||W||_F^2 = target``: one compiled
    program per shape, one Gaussian draw split into the arrays. Tucker: orthonormal
    factors (Q of Gaussian ``(n_k, r_k)``) and a core of variance ``target / prod(ranks)``
    (``||W||_F = ||core||_F``); CP (``R``, ``L = N + 1`` modes): ``tnlib.cp.random``'s
    factors (variance ``1 / (n_k R^(1/L))``, ``E ||W||_F^2 = 1``) each scaled by
    ``target ** (1 / (2 L))``."""
    shapes = [(n, rank if form == "cp" else r) for n, r in
              zip(dims, (rank,) * len(dims) if form == "cp" else rank, strict=True)]
    if form == "tucker":
        shapes.append(rank)
    sizes = [math.prod(sh) for sh in shapes]
    draws = jnp.split(jax.random.normal(key, (sum(sizes),), dtype),
                      list(itertools.accumulate(sizes[:-1])))
    arrays = [d.reshape(sh) for d, sh in zip(draws, shapes, strict=True)]
    if form == "cp":
        s = target ** (0.5 / len(dims))
        return None, [a * (s / math.sqrt(n * rank ** (1.0 / len(dims))))
                      for a, n in zip(arrays, dims, strict=True)]
    factors = [linalg.qr(a)[0] for a in arrays[:-1]]
    return math.sqrt(target / math.prod(rank)) * arrays[-1], factors


@functools.partial(jax.jit, static_argnums=1)
def _hosvd(weight, ranks):
    return tucker.hosvd(weight, ranks)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _cp_fit(weight, rank, n_iter):
    """CP-ALS factors with the weights folded into the last (output) factor."""
    d = cp.als(weight, rank, n_iter=n_iter)
    return d.factors[:-1] + (d.factors[-1] * d.weights,)


class TensorRegression(nnx.Module):
    """Tucker- or CP-structured tensor regression layer with tensor dropout.

    Args:
      in_shape: the input modes ``(n_1, ..., n_N)`` (an int for ``N = 1``).
      out_features: ``O >= 1``.
      rank: ``form="tucker"``: an int (every mode of the weight ``(*in_shape, O)``
        capped at ``min(rank, n_k)``) or ``N + 1`` ints ``1 <= r_k <= n_k`` (the last for
        the output mode); ``form="cp"``: the CP rank ``R >= 1``.
      form: ``"tucker"`` or ``"cp"``.
      dropout_rate: tensor-dropout probability of each rank component, in ``[0, 1)``.
      use_bias: add a bias ``(O,)`` (initialized to zero).
      init_scale: the dense weight's entries have variance ``init_scale**2 / prod(in_shape)``
        (LeCun normal, ``nnx.Linear``'s default), i.e. ``E ||W||_F^2 = O init_scale**2``:
        Tucker with orthonormal factors and a Gaussian core; CP with factors of
        ``tnlib.cp.random``'s law, each scaled by the same factor.
      deterministic: initial mode, as ``nnx.Dropout`` (False: dropout when training).
      dtype: computation dtype (default: promote the parameters' and the input's).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a ``params`` stream; when ``dropout_rate > 0`` its
        ``dropout`` stream (or the default one) is forked and stored for training-mode
        calls (without one, pass ``rngs`` to ``__call__`` or use eval mode).

    Params: Tucker: ``core`` ``(r_1, ..., r_N, r_out)``; both forms: ``factors``, an
    ``nnx.List`` of ``N + 1`` ``nnx.Param`` of shapes ``(n_k, r_k)`` then
    ``(O, r_out)``; ``bias`` ``(O,)``.
    """

    def __init__(self, in_shape, out_features: int, *, rank, form: str = "tucker",
                 dropout_rate: float = 0.0, use_bias: bool = True, init_scale: float = 1.0,
                 deterministic: bool = False, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.in_shape = _check_shape(in_shape)
        self.out_features = check_int(out_features, "out_features")
        self.form = _check_form(form)
        dims = self.in_shape + (self.out_features,)
        rank = _check_rank(rank, self.form, dims)
        self.dropout_rate = _check_rate(dropout_rate)
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        self.deterministic = deterministic
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        target = self.out_features * init_scale**2  # E ||W||_F^2
        core, factors = _init(rngs.params(), self.form, dims, rank, target, param_dtype)
        if core is not None:
            self.core = nnx.Param(core)
        self.factors = nnx.List([nnx.Param(f) for f in factors])
        self.bias = (nnx.Param(jnp.zeros((self.out_features,), param_dtype))
                     if use_bias else None)
        stream = None
        if self.dropout_rate > 0:
            try:
                stream = rngs["dropout"].fork()
            except KeyError:  # no dropout stream: eval only, or rngs passed to __call__
                stream = None
        self.rngs = nnx.data(stream) if stream is None else stream

    # ------------------------------------------------------------------ structure

    @property
    def rank(self):
        """Tucker: the multilinear ranks ``(r_1, ..., r_N, r_out)``; CP: ``R``."""
        if self.form == "tucker":
            return tuple(self.core.shape)
        return self.factors[0].shape[-1]

    def decomposition(self, key=None, dtype=None):
        """The weight ``(*in_shape, out_features)`` as a ``tnlib.tucker.Tucker`` or
        ``tnlib.cp.CP`` (parameters cast to ``dtype``, default ``param_dtype``).

        With a PRNG ``key``, one tensor-dropout draw is applied (module docstring):
        Tucker factor columns, or CP weights, are multiplied by independent
        ``Bernoulli(1 - dropout_rate) / (1 - dropout_rate)`` masks; this is the weight
        a training-mode ``__call__`` with that key uses.
        """
        dt = dtype or self.param_dtype
        factors = [f[...].astype(dt) for f in self.factors]
        keep = 1.0 - self.dropout_rate
        drop = key is not None and self.dropout_rate > 0

        def mask(k, r):
            return jax.random.bernoulli(k, keep, (r,)).astype(dt) / jnp.asarray(keep, dt)

        if self.form == "tucker":
            if drop:  # one mask per mode on the factor's columns
                keys = jax.random.split(key, len(factors))
                factors = [f * mask(k, f.shape[-1])
                           for f, k in zip(factors, keys, strict=True)]
            return tucker.Tucker(self.core[...].astype(dt), tuple(factors))
        r = factors[0].shape[-1]  # CP: one mask on the rank-one components
        weights = mask(key, r) if drop else jnp.ones((r,), dt)
        return cp.CP(weights, tuple(factors))

    def to_dense(self):
        """The full weight tensor ``(*in_shape, out_features)``."""
        d = self.decomposition()
        return tucker.to_dense(d) if self.form == "tucker" else cp.to_dense(d)

    def num_params(self) -> int:
        """Stored scalars: the decomposition's (core and factors) plus the bias."""
        n = sum(math.prod(f.shape) for f in self.factors)
        if self.form == "tucker":
            n += math.prod(self.core.shape)
        return n + (self.out_features if self.bias is not None else 0)

    # ------------------------------------------------------------------ forward

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view``, as ``nnx.Dropout.set_view``."""
        if deterministic is not None:
            self.deterministic = deterministic

    def _dropout_key(self, deterministic, rngs):
        deterministic = self.deterministic if deterministic is None else deterministic
        if deterministic or self.dropout_rate == 0:
            return None
        rngs = self.rngs if rngs is None else rngs
        if rngs is None:
            raise ValueError("deterministic is False and dropout_rate > 0, but no rngs were "
                             "given at construction or to __call__ (or call model.eval())")
        if isinstance(rngs, nnx.Rngs):
            return rngs["dropout"]()
        if isinstance(rngs, rnglib.RngStream):
            return rngs()
        if isinstance(rngs, jax.Array):
            return rngs
        raise TypeError(f"rngs must be an nnx.Rngs, RngStream or key, got {type(rngs)}")

    def __call__(self, x, *, deterministic: bool | None = None, rngs=None):
        """``x`` ``(..., *in_shape)`` -> ``(..., out_features)``; ``deterministic`` and
        ``rngs`` override the attribute and the stored stream, as ``nnx.Dropout``."""
        x = jnp.asarray(x)
        n = len(self.in_shape)
        if x.ndim < n or x.shape[x.ndim - n:] != self.in_shape:
            raise ValueError(f"x must have shape (..., {', '.join(map(str, self.in_shape))}), "
                             f"got {x.shape}")
        dt = compute_dtype(self.dtype, x, self.param_dtype)
        batch = x.shape[: x.ndim - n]
        z = x.astype(dt).reshape((-1,) + self.in_shape)
        w = self.decomposition(self._dropout_key(deterministic, rngs), dt)
        *u_in, u_out = w.factors
        if self.form == "tucker":
            for u in u_in:  # contract the leading input mode; its rank axis goes last
                z = jnp.tensordot(z, u, axes=([1], [0]))
            z = jnp.tensordot(z, w.core, axes=(list(range(1, n + 1)), list(range(n))))
        else:
            z = jnp.tensordot(z, u_in[0], axes=([1], [0]))  # (B, n_2, ..., n_N, R)
            for u in u_in[1:]:
                z = jnp.einsum("bi...r,ir->b...r", z, u)
            z = z * w.weights
        y = z @ u_out.T
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y.reshape(batch + (self.out_features,))

    # ------------------------------------------------------------------ from a dense weight

    @classmethod
    def from_dense(cls, weight, bias=None, *, rank, form: str = "tucker", n_iter: int = 100,
                   dropout_rate: float = 0.0, deterministic: bool = False, dtype=None,
                   param_dtype=None, rngs: nnx.Rngs) -> TensorRegression:
        """Layer from a dense weight ``(*in_shape, out_features)`` (and bias ``(O,)``).

        Tucker: truncated HOSVD (``tnlib.tucker.hosvd``) at the ranks ``rank`` gives
        (as ``__init__`` reads it); CP: CP-ALS (``tnlib.cp.als``, ``n_iter`` sweeps, SVD
        initialization; ``rank`` at most ``tnlib.cp.rank_bound`` of the weight's shape)
        with its weights folded into the output factor. Computed in double precision,
        cast to ``param_dtype`` (default the weight's dtype): a weight that truly has
        the structure is reproduced to ``param_dtype`` rounding.
        """
        weight = jnp.asarray(weight)
        if weight.ndim < 2:
            raise ValueError(f"weight must have shape (*in_shape, out_features) with at least "
                             f"2 axes, got {weight.shape}")
        if bias is not None and jnp.shape(bias) != (weight.shape[-1],):
            raise ValueError(f"bias must have shape ({weight.shape[-1]},), got "
                             f"{jnp.shape(bias)}")
        param_dtype = param_dtype or weight.dtype
        form = _check_form(form)
        ranks = _check_rank(rank, form, weight.shape)
        if form == "cp" and ranks > cp.rank_bound(weight.shape):
            raise ValueError(f"rank must be at most tnlib.cp.rank_bound{weight.shape} = "
                             f"{cp.rank_bound(weight.shape)} for CP-ALS, got {ranks}")
        layer = cls(weight.shape[:-1], weight.shape[-1], rank=rank, form=form,
                    dropout_rate=dropout_rate, use_bias=bias is not None,
                    deterministic=deterministic, dtype=dtype, param_dtype=param_dtype,
                    rngs=rngs)
        if form == "tucker":
            t = double_precision(lambda w: _hosvd(w, ranks), weight, param_dtype)
            layer.core[...] = t.core
            factors = t.factors
        else:
            factors = double_precision(lambda w: _cp_fit(w, ranks, n_iter), weight,
                                        param_dtype)
        for p, f in zip(layer.factors, factors, strict=True):
            p[...] = f
        if bias is not None:
            layer.bias[...] = jnp.asarray(bias, param_dtype)
        return layer
