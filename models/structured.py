"""Structured dense replacements for ``nnx.Linear`` and their muP optimizer.

Each layer maps ``x`` ``(..., in_features)`` to ``(..., out_features)`` as
``x @ kernel + bias`` where ``kernel`` ``(in_features, out_features)`` (``to_dense()``,
the layout ``nnx.Linear`` stores) is never formed in the forward pass: ``__call__``
rebuilds the tnlib object from the parameters and calls the tnlib core.

- ``LowRankLinear``, ``KroneckerLinear``, ``MonarchLinear``, ``BTTLinear``: one
  ``nnx.Param`` per core of ``tnlib.btt.LowRank`` (``u``, ``v``), ``Kronecker``
  (``a``, ``b``) and ``BlockTT`` (``left``, ``right``; Monarch is its rank-1 case).
  tnlib.btt's matrices are ``(d_out, d_in)``, the transpose of ``kernel``.
  Initialization is ``T.random``'s muP scale (dense entry variance ``1/in_features``).
- ``TTLinear``: a TT-matrix / MPO (``tnlib.tt.TTMatrix``), cores
  ``(r_{k-1}, n_out_k, n_in_k, r_k)`` in an ``nnx.List`` of Params, scaled so the dense
  entries have variance ``1/in_features``.

Every layer has ``from_dense(kernel, bias=None, *, <structure>, rngs)`` (the tnlib
projection onto the structure, computed in double precision and cast to ``param_dtype``:
a kernel that truly has the structure comes back to float32 rounding),
``to_dense()``, ``num_params()`` and ``lr_multipliers()``: a dict from parameter name
(or path tuple relative to the layer) to its Adam learning-rate multiplier.
``structured_optimizer`` applies those multipliers to the updates of any optax optimizer.

Learning rates follow the muP rule of Qiu et al. 2024 that ``tnlib.btt`` documents: each
core is one factor of a product of batched matmuls, its Adam learning rate scales as
``1 / fan_in(core)`` (the number of terms the core sums over when the layer is applied)
as a dense layer's scales as ``1 / in_features``, so its multiplier relative to the
dense rate is ``in_features / fan_in(core)`` (BTT family: ``tnlib.btt.lr_multipliers``;
TT: ``TTLinear.lr_multipliers``); biases get 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tnlib import btt, linalg, tt

__all__ = [
    "LowRankLinear", "KroneckerLinear", "MonarchLinear", "BTTLinear", "TTLinear",
    "structured_optimizer", "layer_lr_multipliers", "balanced_factors",
]


def _check_int(value, name, low=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def balanced_factors(n: int) -> tuple[int, int]:
    """The most balanced factorization ``(a, b)``, ``a <= b``, ``a * b = n``."""
    n = _check_int(n, "n")
    a = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return a, n // a


def _factors(factors, dim, name, n_sites=None):
    """Validate ``factors`` (ints >= 1 whose product is ``dim``); None: balanced pair."""
    if factors is None:
        return balanced_factors(dim)
    if isinstance(factors, int | str) or not isinstance(factors, Sequence):
        raise ValueError(f"{name} must be a sequence of ints, got {factors!r}")
    factors = tuple(factors)
    for f in factors:
        _check_int(f, name)
    if n_sites is not None and len(factors) != n_sites:
        raise ValueError(f"{name} must have {n_sites} factors, got {factors}")
    if math.prod(factors) != dim:
        raise ValueError(f"{name} {factors} must multiply to {dim}, got {math.prod(factors)}")
    return factors


def _double_precision(fn, array, out_dtype):
    """``fn(array)`` computed in double precision, every leaf cast to ``out_dtype``.

    For a concrete ``array``, ``fn`` runs under ``jax.enable_x64(True)`` on a float64
    (complex128 for complex input) copy whatever the global x64 flag, so the SVDs / ALS
    of a ``from_dense`` are exact to double precision before the cast (float32 SVDs
    leave relative errors near 1e-6 even on exactly structured matrices). A traced
    ``array`` (inside ``jit``) is decomposed in its own dtype.
    """
    cast = lambda tree: jax.tree.map(lambda a: jnp.asarray(a).astype(out_dtype), tree)
    if not linalg.is_concrete(array):
        return cast(fn(array))
    with jax.enable_x64(True):
        hi = jnp.promote_types(jnp.asarray(array).dtype, jnp.float64)
        return cast(fn(jnp.asarray(array, hi)))


def _check_kernel(kernel, bias):
    kernel = jnp.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be (in_features, out_features), got {kernel.shape}")
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[1],):
            raise ValueError(f"bias must have shape ({kernel.shape[1]},), got {bias.shape}")
    return kernel, bias


class _Structured(nnx.Module):
    """Shared bias, dtype handling and forward pass; subclasses define ``_matrix`` (the
    tnlib object, cores cast to ``dt``) and ``_apply(matrix, x2d)``."""

    def _setup(self, in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs):
        self.in_features = _check_int(in_features, "in_features")
        self.out_features = _check_int(out_features, "out_features")
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
                     if use_bias else None)

    def _set_bias(self, bias):
        if bias is not None:
            self.bias = nnx.Param(jnp.asarray(bias, self.param_dtype))

    def __call__(self, x):
        """``x`` ``(..., in_features)`` -> ``(..., out_features)``."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        dt = self.dtype or jnp.result_type(self.param_dtype, x.dtype)
        dt = dt if jnp.issubdtype(dt, jnp.inexact) else self.param_dtype
        y = self._apply(self._matrix(dt), x.astype(dt).reshape(-1, self.in_features))
        y = y.reshape(x.shape[:-1] + (self.out_features,))
        if self.bias is not None:
            y = y + self.bias[...].astype(dt)
        return y

    def _bias_params(self) -> int:
        return self.out_features if self.bias is not None else 0


class _BTTFamily(_Structured):
    """Layers whose cores are the fields ``_names`` of a ``tnlib.btt`` type."""

    _names: tuple[str, ...] = ()
    _model_dims: tuple[int | None, ...] = ()  # per core: the axis split over a model mesh axis

    def partition_specs(self, axis: str = "model") -> dict:
        """How the cores split over a ``model`` mesh axis: ``{core name: spec}`` (a tuple
        naming ``axis`` at one dimension, ``None`` elsewhere), read by
        ``tnlib.experiments.sharding.shard_params``; the bias is replicated. BTT / Monarch
        split ``left`` over ``n2`` and ``right`` over ``m1``, the batch dimensions of
        their two batched matmuls; low-rank splits ``u`` over outputs and ``v`` over
        inputs; Kronecker splits ``a`` over its rows."""
        specs = {}
        for name, dim in zip(self._names, self._model_dims, strict=True):
            if dim is not None:
                ndim = getattr(self, name).ndim
                specs[name] = tuple(axis if d == dim else None for d in range(ndim))
        return specs

    def _init_cores(self, obj):
        for name in self._names:
            setattr(self, name, nnx.Param(getattr(obj, name)))

    def _matrix(self, dt=None):
        arrays = [getattr(self, n).get_value() for n in self._names]
        if dt is not None:
            arrays = [a.astype(dt) for a in arrays]
        return type(self)._type(*arrays)

    def _apply(self, w, x):
        return btt.matvec(w, x)

    def to_dense(self):
        """The kernel ``(in_features, out_features)`` (``btt.to_dense`` transposed)."""
        return btt.to_dense(self._matrix()).T

    def num_params(self) -> int:
        """Stored scalars: the cores' (``btt.num_params``) plus the bias."""
        return btt.num_params(self._matrix()) + self._bias_params()

    def lr_multipliers(self) -> dict:
        """``{core name: btt.lr_multipliers}`` plus ``bias: 1.0``."""
        mult = btt.lr_multipliers(self._matrix())
        out = {n: float(getattr(mult, n)) for n in self._names}
        if self.bias is not None:
            out["bias"] = 1.0
        return out

    @classmethod
    def _build(cls, kernel, bias, obj_fn, ctor_kwargs, param_dtype, dtype, rngs):
        kernel, bias = _check_kernel(kernel, bias)
        param_dtype = param_dtype or kernel.dtype
        # validates the structure before building the layer
        obj = _double_precision(lambda w: obj_fn(w.T), kernel, param_dtype)
        layer = cls(kernel.shape[0], kernel.shape[1], use_bias=bias is not None, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs, **ctor_kwargs)
        layer._init_cores(obj)
        layer._set_bias(bias)
        return layer


_COMMON_DOC = """  use_bias: add a bias ``(out_features,)`` (initialized by ``bias_init``).
      dtype: computation dtype (default: promote the parameters' and the input's).
      param_dtype: parameter dtype.
      bias_init: initializer of the bias (default zeros, as ``nnx.Linear``).
      rngs: ``nnx.Rngs`` with a ``params`` stream.
"""
_ZEROS = nnx.initializers.zeros_init()


class LowRankLinear(_BTTFamily):
    """``kernel = (u @ v).T`` of rank ``rank``: ``u`` ``(out, r)``, ``v`` ``(r, in)``.

    Args:
      in_features, out_features: sizes of the input and output.
      rank: the rank, an int >= 1.
    """

    _type = btt.LowRank
    _names = ("u", "v")
    _model_dims = (0, 1)

    def __init__(self, in_features: int, out_features: int, *, rank: int,
                 use_bias: bool = True, dtype=None, param_dtype=jnp.float32,
                 bias_init=_ZEROS, rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        self.rank = _check_int(rank, "rank")
        self._init_cores(btt.LowRank.random(rngs.params(), out_features, in_features, rank,
                                            param_dtype))

    @classmethod
    def from_dense(cls, kernel, bias=None, *, rank: int, dtype=None, param_dtype=None,
                   rngs: nnx.Rngs) -> LowRankLinear:
        """Best rank-``rank`` approximation (truncated SVD) of ``kernel`` ``(in, out)``;
        ``rank <= min(in, out)``."""
        return cls._build(kernel, bias, lambda w: btt.LowRank.from_dense(w, rank),
                          dict(rank=rank), param_dtype, dtype, rngs)


class KroneckerLinear(_BTTFamily):
    """``kernel = kron(a, b).T``: ``a`` ``(m1, n1)``, ``b`` ``(m2, n2)``.

    Args:
      in_features, out_features: sizes of the input and output.
      in_factors: ``(n1, n2)`` with ``n1 n2 = in_features``.
      out_factors: ``(m1, m2)`` with ``m1 m2 = out_features``.
    """

    _type = btt.Kronecker
    _names = ("a", "b")
    _model_dims = (0, None)

    def __init__(self, in_features: int, out_features: int, *, in_factors: Sequence[int],
                 out_factors: Sequence[int], use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, bias_init=_ZEROS, rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        self.in_factors = _factors(in_factors, in_features, "in_factors", 2)
        self.out_factors = _factors(out_factors, out_features, "out_factors", 2)
        self._init_cores(btt.Kronecker.random(rngs.params(), self.out_factors,
                                              self.in_factors, param_dtype))

    @classmethod
    def from_dense(cls, kernel, bias=None, *, in_factors, out_factors, dtype=None,
                   param_dtype=None, rngs: nnx.Rngs) -> KroneckerLinear:
        """Nearest Kronecker product (Van Loan-Pitsianis) of ``kernel`` ``(in, out)``."""
        kernel, bias = _check_kernel(kernel, bias)
        fi = _factors(in_factors, kernel.shape[0], "in_factors", 2)
        fo = _factors(out_factors, kernel.shape[1], "out_factors", 2)
        return cls._build(kernel, bias, lambda w: btt.Kronecker.from_dense(w, fo, fi),
                          dict(in_factors=fi, out_factors=fo), param_dtype, dtype, rngs)


class BTTLinear(_BTTFamily):
    """Block tensor-train kernel (Qiu et al. 2024): ``left`` ``(n2, m1, n1, r)``,
    ``right`` ``(m1, m2, n2, r)``, ``kernel = btt.to_dense(BlockTT(left, right)).T``.

    Args:
      in_features, out_features: sizes of the input and output.
      rank: the BTT rank ``r`` >= 1.
      in_factors: ``(n1, n2)`` with ``n1 n2 = in_features``; default the most balanced.
      out_factors: ``(m1, m2)`` with ``m1 m2 = out_features``; default the most balanced.
    """

    _type = btt.BlockTT
    _names = ("left", "right")
    _model_dims = (0, 0)

    def __init__(self, in_features: int, out_features: int, *, rank: int,
                 in_factors: Sequence[int] | None = None,
                 out_factors: Sequence[int] | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, bias_init=_ZEROS, rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        self.rank = _check_int(rank, "rank")
        self.in_factors = _factors(in_factors, in_features, "in_factors", 2)
        self.out_factors = _factors(out_factors, out_features, "out_factors", 2)
        self._init_cores(btt.BlockTT.random(rngs.params(), self.out_factors, self.in_factors,
                                            rank, param_dtype))

    @classmethod
    def from_dense(cls, kernel, bias=None, *, rank: int, in_factors=None, out_factors=None,
                   dtype=None, param_dtype=None, rngs: nnx.Rngs):
        """Best BTT approximation (blockwise truncated SVD) of ``kernel`` ``(in, out)``;
        ``rank <= min(m2, n1)``."""
        kernel, bias = _check_kernel(kernel, bias)
        fi = _factors(in_factors, kernel.shape[0], "in_factors", 2)
        fo = _factors(out_factors, kernel.shape[1], "out_factors", 2)
        kw = dict(in_factors=fi, out_factors=fo)
        if cls is BTTLinear:
            kw["rank"] = rank
        return cls._build(kernel, bias, lambda w: btt.BlockTT.from_dense(w, fo, fi, rank),
                          kw, param_dtype, dtype, rngs)


class MonarchLinear(BTTLinear):
    """Monarch kernel (Dao et al. 2022): ``BTTLinear`` with rank 1.

    Args:
      in_features, out_features: sizes of the input and output.
      in_factors, out_factors: as ``BTTLinear`` (default the most balanced pairs).
    """

    def __init__(self, in_features: int, out_features: int, *,
                 in_factors: Sequence[int] | None = None,
                 out_factors: Sequence[int] | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, bias_init=_ZEROS, rngs: nnx.Rngs):
        super().__init__(in_features, out_features, rank=1, in_factors=in_factors,
                         out_factors=out_factors, use_bias=use_bias, dtype=dtype,
                         param_dtype=param_dtype, bias_init=bias_init, rngs=rngs)

    @classmethod
    def from_dense(cls, kernel, bias=None, *, in_factors=None, out_factors=None,
                   dtype=None, param_dtype=None, rngs: nnx.Rngs) -> MonarchLinear:
        """Best Monarch approximation (rank-1 SVD per block) of ``kernel`` ``(in, out)``."""
        return super().from_dense(kernel, bias, rank=1, in_factors=in_factors,
                                  out_factors=out_factors, dtype=dtype,
                                  param_dtype=param_dtype, rngs=rngs)


class TTLinear(_Structured):
    """TT-matrix (MPO) kernel: ``cores[k]`` ``(r_{k-1}, out_factors[k], in_factors[k], r_k)``
    and ``kernel = tt.to_dense(TTMatrix(cores)).T``.

    Args:
      in_features, out_features: sizes of the input and output.
      in_factors: ``(n_1, ..., n_L)`` with product ``in_features``.
      out_factors: ``(m_1, ..., m_L)`` with product ``out_features`` (same ``L``).
      rank: internal TT rank, an int or a sequence of ``L - 1`` ints.
    """

    def __init__(self, in_features: int, out_features: int, *, in_factors: Sequence[int],
                 out_factors: Sequence[int], rank, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, bias_init=_ZEROS, rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        self.in_factors = _factors(in_factors, in_features, "in_factors")
        self.out_factors = _factors(out_factors, out_features, "out_factors",
                                    len(self.in_factors))
        ttm = tt.random(rngs.params(), self.out_factors, rank, param_dtype,
                        col_dims=self.in_factors)
        # tt.random has E ||W||_F^2 = 1; spread a factor sqrt(out_features) over the cores
        # so that each dense entry has variance 1 / in_features.
        s = out_features ** (0.5 / len(ttm.cores))
        self._set_cores([c * s for c in ttm.cores])

    def _set_cores(self, cores):
        self.cores = nnx.List([nnx.Param(c) for c in cores])

    def partition_specs(self, axis: str = "model") -> dict:
        """Every core split over a ``model`` mesh axis along its output mode
        ``out_factors[k]`` (read by ``tnlib.experiments.sharding.shard_params``)."""
        return {"cores": (None, axis, None, None)}

    def _matrix(self, dt=None):
        return tt.TTMatrix(tuple(c.get_value() if dt is None else c[...].astype(dt)
                                 for c in self.cores))

    def _apply(self, ttm, x):
        return tt.matvec(ttm, x)

    @property
    def ranks(self) -> tuple[int, ...]:
        """All ``L + 1`` bond dimensions (boundaries 1)."""
        return self._matrix().ranks

    @classmethod
    def from_dense(cls, kernel, bias=None, *, in_factors, out_factors, rank: int,
                   dtype=None, param_dtype=None, rngs: nnx.Rngs) -> TTLinear:
        """TT-SVD of ``kernel.T`` with bonds capped at ``rank`` (an int); bonds the
        unfoldings cannot fill come out smaller."""
        kernel, bias = _check_kernel(kernel, bias)
        _check_int(rank, "rank")
        fi = _factors(in_factors, kernel.shape[0], "in_factors")
        fo = _factors(out_factors, kernel.shape[1], "out_factors", len(fi))
        param_dtype = param_dtype or kernel.dtype
        ttm = _double_precision(
            lambda w: tt.from_dense(w.T, max_rank=rank, row_dims=fo, col_dims=fi),
            kernel, param_dtype)
        layer = cls(kernel.shape[0], kernel.shape[1], in_factors=fi, out_factors=fo,
                    rank=rank, use_bias=bias is not None, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs)
        layer._set_cores(list(ttm.cores))
        layer._set_bias(bias)
        return layer

    def to_dense(self):
        """The kernel ``(in_features, out_features)`` (``tt.to_dense`` transposed)."""
        return tt.to_dense(self._matrix()).T

    def num_params(self) -> int:
        """Stored scalars: all core entries plus the bias."""
        return sum(math.prod(c.shape) for c in self.cores) + self._bias_params()

    def lr_multipliers(self) -> dict:
        """``{("cores", k): in_features / (r_{k-1} n_k)}`` plus ``bias: 1.0``.

        ``tnlib.tt.matvec`` contracts the input site by site from the left: core ``k``
        sums over its input mode ``n_k = in_factors[k]`` and the bond ``r_{k-1}`` that
        carries the already contracted input, so its fan-in is ``r_{k-1} n_k`` and its
        Adam multiplier is ``in_features / (r_{k-1} n_k)``, the muP rule of
        ``tnlib.btt.lr_multipliers`` (a two-site TT with rank ``r`` gets ``n_2`` and
        ``n_1 / r``, exactly ``BTTLinear``'s ``left`` and ``right``).
        """
        ranks = self.ranks
        out = {("cores", k): self.in_features / (ranks[k] * n)
               for k, n in enumerate(self.in_factors)}
        if self.bias is not None:
            out["bias"] = 1.0
        return out


for _cls in (LowRankLinear, KroneckerLinear, BTTLinear, MonarchLinear, TTLinear):
    _cls.__doc__ += _COMMON_DOC


# ------------------------------------------------------------------------ optimizer


def _norm_path(path) -> tuple:
    keys = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                keys.append(getattr(k, attr))
                break
        else:
            keys.append(k)
    while keys and keys[-1] in ("value", "raw_value"):
        keys.pop()
    return tuple(keys)


def layer_lr_multipliers(model: nnx.Module) -> dict[tuple, float]:
    """``{path of a Param in nnx.state(model): multiplier}`` for every parameter of
    every sub-module with an ``lr_multipliers()`` method (absent paths mean 1)."""
    table = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Module) and callable(getattr(node, "lr_multipliers", None)):
            for key, mult in node.lr_multipliers().items():
                rel = key if isinstance(key, tuple) else (key,)
                table[tuple(path) + rel] = float(mult)
    return table


def structured_optimizer(model: nnx.Module,
                         base_optimizer: optax.GradientTransformation
                         ) -> optax.GradientTransformation:
    """``optax.chain(base_optimizer, scale_by_multipliers)``: each update of a structured
    layer's core is multiplied by that core's muP multiplier (the layer's
    ``lr_multipliers()``: BTT family, ``TTLinear``, ``TuckerConv``, ``CPConv``,
    ``TTEmbedding``; every other parameter by 1).

    The multipliers are read once from ``model``'s structure (static floats); the
    transform accepts updates shaped like ``nnx.state(model, nnx.Param)`` (as
    ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` passes them) or its pure dict.
    """
    table = layer_lr_multipliers(model)

    def update(updates, state, params=None):
        del params
        scaled = jax.tree_util.tree_map_with_path(
            lambda p, u: u * jnp.asarray(table.get(_norm_path(p), 1.0), u.dtype), updates)
        return scaled, state

    scale = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    return optax.chain(base_optimizer, scale)
