"""Structured dense replacements for ``nnx.Linear``.

Each layer maps ``x`` ``(..., in_features)`` to ``(..., out_features)`` as
``x @ kernel + bias`` where ``kernel`` ``(in_features, out_features)`` (``to_dense()``,
the layout ``nnx.Linear`` stores) is never formed in the forward pass: ``__call__``
rebuilds the tnlib object from the parameters (``as_matrix()``) and calls the tnlib core.

- ``LowRankLinear``, ``KroneckerLinear``, ``MonarchLinear``, ``BTTLinear``: one
  ``nnx.Param`` per core of ``tnlib.btt.LowRank`` (``u``, ``v``), ``Kronecker``
  (``a``, ``b``) and ``BlockTT`` (``left``, ``right``; Monarch is its rank-1 case).
  tnlib.btt's matrices are ``(d_out, d_in)``, the transpose of ``kernel``.
- ``TTLinear``: a TT-matrix / MPO (``tnlib.tt.TTMatrix``), cores
  ``(r_{k-1}, n_out_k, n_in_k, r_k)`` in an ``nnx.List`` of Params.

The siblings share one signature, mirroring ``nnx.Linear``::

    Cls(in_features, out_features, *, rank=0.5, in_factors=None, out_factors=None,
        use_bias=True, dtype=None, param_dtype=jnp.float32, kernel_init=None,
        bias_init=zeros, rngs)

(Kronecker and Monarch have no ``rank``: both are rank 1 by construction; LowRank has no
factors; TTLinear adds ``n_factors``.) Unset factors are the most balanced ones
(:func:`factorize_dims`). ``rank`` is an int, or a float in ``(0, 1]``: the fraction of
the dense kernel's ``in_features * out_features`` parameters the cores may use, resolved
to the largest rank within that budget (at least 1), as tltorch's
``FactorizedLinear(rank=0.5)``; the layer reports the resolved rank (``layer.rank``).
An int rank larger than the shape can use (the bound ``from_dense`` enforces) is an
error naming the largest useful rank, and so are factors whose rank-1 cores already cost
more parameters than the dense kernel (a prime ``in_features``).

``kernel_init=None`` draws the cores at the muP scale (``tnlib.btt``'s ``random``:
dense entries of variance ``1 / in_features``); an initializer ``init(key, shape,
dtype)`` is called once per core instead. Every layer also has
``from_dense(kernel, bias=None, *, <structure>, rngs)`` (the tnlib projection onto the
structure, computed in double precision and cast to ``param_dtype``: a kernel that truly
has the structure comes back to float32 rounding), ``from_linear(linear, *,
<structure>, rngs)`` (the same from an ``nnx.Linear``, bias copied), ``to_dense()``,
``num_params()`` and ``lr_multipliers()`` (muP learning-rate multipliers shaped like
``nnx.state(layer, nnx.Param)``, applied by ``tnlib.models.structured_optimizer``).

Learning rates follow the muP rule of Qiu et al. 2024 that ``tnlib.btt`` documents: each
core is one factor of a product of batched matmuls, its Adam learning rate scales as
``1 / fan_in(core)`` (the number of terms the core sums over when the layer is applied)
as a dense layer's scales as ``1 / in_features``, so its multiplier relative to the
dense rate is ``in_features / fan_in(core)`` (BTT family: ``tnlib.btt.lr_multipliers``;
TT: ``TTLinear.lr_multipliers``); biases get 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from tnlib import btt, tt
from tnlib._validate import check_size
from tnlib.models._common import check_int, double_precision, param_tree, promote_dtype
from tnlib.models._shapes import (
    check_cheaper_than_dense,
    check_factors,
    check_rank,
    factorize_dims,
    resolve_rank,
    shape_count,
    tt_factors,
    tt_ranks,
)

__all__ = [
    "LowRankLinear", "KroneckerLinear", "MonarchLinear", "BTTLinear", "TTLinear",
    "factorize_dims",
]

_ZEROS = nnx.initializers.zeros_init()
_DEFAULT_RANK = 0.5


def _check_kernel(kernel, bias):
    kernel = jnp.asarray(kernel)
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be (in_features, out_features), got {kernel.shape}")
    if bias is not None:
        bias = jnp.asarray(bias)
        if bias.shape != (kernel.shape[1],):
            raise ValueError(f"bias must have shape ({kernel.shape[1]},), got {bias.shape}")
    return kernel, bias


def _draw(make: Callable, key, kernel_init):
    """``make(key)`` (the muP default), or its cores drawn one by one by
    ``kernel_init(key_k, shape, dtype)`` (shapes from ``jax.eval_shape(make, key)``).
    Cores larger in all than ``TNLIB_MAX_BYTES`` (default half the memory) are a
    ValueError naming the size, before anything is allocated."""
    leaves, treedef = jax.tree.flatten(jax.eval_shape(make, key))
    for dtype in {a.dtype for a in leaves}:
        check_size(sum(a.size for a in leaves if a.dtype == dtype), dtype,
                   "the layer's cores")
    if kernel_init is None:
        return make(key)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [kernel_init(k, a.shape, a.dtype)
                                        for k, a in zip(keys, leaves, strict=True)])


# ------------------------------------------------------------------------- base class


class _Structured(nnx.Module):
    """Shared bias, dtype promotion, forward pass and ``from_linear``; subclasses define
    ``_core_values()``, ``_assemble(arrays)`` (the tnlib object) and ``_apply``."""

    def _setup(self, in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs):
        self.in_features = check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.use_bias, self.dtype, self.param_dtype = use_bias, dtype, param_dtype
        self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype))
                     if use_bias else None)

    def _set_bias(self, bias):
        if bias is not None:
            self.bias = nnx.Param(jnp.asarray(bias, self.param_dtype))

    @property
    def _dense_params(self) -> int:
        return self.in_features * self.out_features

    def as_matrix(self, dtype=None):
        """The tnlib object the layer applies (``(out_features, in_features)``, the
        transpose of ``kernel``), its cores cast to ``dtype`` when given."""
        arrays = self._core_values()
        return self._assemble([a if dtype is None else a.astype(dtype) for a in arrays])

    def __call__(self, x):
        """``x`` ``(..., in_features)`` -> ``(..., out_features)``, computed in the
        promotion of the parameters' and ``x``'s dtypes (or ``dtype``)."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x must have shape (..., {self.in_features}), got {x.shape}")
        bias = None if self.bias is None else self.bias.get_value()
        x, bias, *cores = promote_dtype((x, bias, *self._core_values()), dtype=self.dtype)
        y = self._apply(self._assemble(cores), x.reshape(-1, self.in_features))
        y = y.reshape(x.shape[:-1] + (self.out_features,))
        return y if bias is None else y + bias

    def num_params(self) -> int:
        """Stored scalars: the cores' (tnlib's ``num_params``) plus the bias."""
        bias = self.out_features if self.bias is not None else 0
        return self._count(self.as_matrix()) + bias

    @classmethod
    def _build(cls, kernel, bias, decompose, ctor_kwargs, param_dtype, dtype, rngs):
        """The layer built by its constructor (which checks every argument), its cores
        replaced by ``decompose(w, layer)`` of ``w = kernel.T`` in double precision and
        its bias by ``bias``."""
        kernel, bias = _check_kernel(kernel, bias)
        param_dtype = param_dtype or kernel.dtype
        layer = cls(kernel.shape[0], kernel.shape[1], use_bias=bias is not None, dtype=dtype,
                    param_dtype=param_dtype, rngs=rngs, **ctor_kwargs)
        layer._init_cores(double_precision(lambda k: decompose(k.T, layer), kernel,
                                           param_dtype))
        layer._set_bias(bias)
        return layer

    @classmethod
    def from_linear(cls, linear: nnx.Linear, *, rngs: nnx.Rngs, **structure):
        """``from_dense`` of a trained ``nnx.Linear``: its kernel decomposed, its bias
        copied, its ``dtype`` / ``param_dtype`` kept; ``structure`` (``rank``,
        ``in_factors``, ...) as ``from_dense``."""
        if not isinstance(linear, nnx.Linear):
            raise TypeError(f"linear must be an nnx.Linear, got {type(linear).__name__}")
        bias = None if linear.bias is None else linear.bias[...]
        return cls.from_dense(linear.kernel[...], bias, dtype=linear.dtype,
                              param_dtype=linear.param_dtype, rngs=rngs, **structure)


class _BTTFamily(_Structured):
    """Layers whose cores are the fields ``_names`` of a ``tnlib.btt`` type."""

    _names: tuple[str, ...] = ()
    _model_dims: tuple[int | None, ...] = ()  # per core: the axis split over a model mesh axis
    _count = staticmethod(btt.num_params)

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

    def _core_values(self):
        return [getattr(self, n).get_value() for n in self._names]

    def _assemble(self, arrays):
        return type(self)._type(*arrays)

    def _apply(self, w, x):
        return btt.matvec(w, x)

    def to_dense(self):
        """The kernel ``(in_features, out_features)`` (``btt.to_dense`` transposed)."""
        return btt.to_dense(self.as_matrix()).T

    def lr_multipliers(self) -> nnx.State:
        """``btt.lr_multipliers`` of each core (bias 1.0), as a tree shaped like
        ``nnx.state(self, nnx.Param)``."""
        mult = btt.lr_multipliers(self.as_matrix())
        return param_tree(self, lambda path: 1.0 if path == ("bias",)
                          else float(getattr(mult, path[0])))


_COMMON_DOC = """  use_bias: add a bias ``(out_features,)`` (initialized by ``bias_init``).
      dtype: computation dtype (default: promote the parameters' and the input's).
      param_dtype: parameter dtype.
      kernel_init: None (default) for the muP initialization (dense entries of variance
        ``1 / in_features``), or an initializer ``init(key, shape, dtype)`` applied to
        each core.
      bias_init: initializer of the bias (default zeros, as ``nnx.Linear``).
      rngs: ``nnx.Rngs`` with a ``params`` stream.
"""
_RANK_DOC = """an int >= 1, or a float in ``(0, 1]``: the fraction of
        the dense kernel's ``in_features * out_features`` parameters the cores may use
        (resolved to the largest rank within it, at least 1; read it back as ``rank``)"""


class LowRankLinear(_BTTFamily):
    """``kernel = (u @ v).T``: ``u`` ``(out_features, r)``, ``v`` ``(r, in_features)``.

    Args:
      in_features, out_features: sizes of the input and output.
      rank: ``r <= min(in_features, out_features)``; RANK_DOC.
    """

    _type = btt.LowRank
    _names = ("u", "v")
    _model_dims = (0, 1)

    def __init__(self, in_features: int, out_features: int, *,
                 rank: int | float = _DEFAULT_RANK, use_bias: bool = True, dtype=None,
                 param_dtype=jnp.float32, kernel_init=None, bias_init=_ZEROS,
                 rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        i, o, dense = in_features, out_features, self._dense_params
        check_rank(rank, dense)
        cost = lambda r: shape_count(btt.num_params, btt.LowRank, [(o, r), (r, i)])
        check_cheaper_than_dense("LowRankLinear", cost(1), dense, i, o)
        r = resolve_rank(rank, cost, min(i, o), dense,
                          f"min(in_features, out_features) = min({i}, {o})", "LowRankLinear")
        self._init_cores(_draw(
            lambda k: btt.random(k, (o, i), r, param_dtype, kind="lowrank"),
            rngs.params(), kernel_init))

    @property
    def rank(self) -> int:
        """The rank ``r`` (read from ``v``'s shape)."""
        return self.v.shape[0]

    @classmethod
    def from_dense(cls, kernel, bias=None, *, rank: int | float = _DEFAULT_RANK, dtype=None,
                   param_dtype=None, rngs: nnx.Rngs) -> LowRankLinear:
        """Best rank-``rank`` approximation (truncated SVD, ``tnlib.btt.from_dense``) of
        ``kernel`` ``(in_features, out_features)``; ``bias`` copied."""
        return cls._build(kernel, bias, lambda w, layer: btt.from_dense(
            w, max_rank=layer.rank, kind="lowrank"), dict(rank=rank), param_dtype, dtype, rngs)


class KroneckerLinear(_BTTFamily):
    """``kernel = kron(a, b).T``: ``a`` ``(m1, n1)``, ``b`` ``(m2, n2)``; rank 1.

    Args:
      in_features, out_features: sizes of the input and output.
      in_factors: ``(n1, n2)`` with ``n1 n2 = in_features``; default
        ``factorize_dims(in_features, 2)``.
      out_factors: ``(m1, m2)`` with ``m1 m2 = out_features``; default
        ``factorize_dims(out_features, 2)``.
    """

    _type = btt.Kronecker
    _names = ("a", "b")
    _model_dims = (0, None)
    rank = 1  # a single Kronecker product

    def __init__(self, in_features: int, out_features: int, *,
                 in_factors: Sequence[int] | None = None,
                 out_factors: Sequence[int] | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, kernel_init=None, bias_init=_ZEROS,
                 rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        fi = self.in_factors = check_factors(in_factors, in_features, "in_factors", 2)
        fo = self.out_factors = check_factors(out_factors, out_features, "out_factors", 2)
        cost1 = shape_count(btt.num_params, btt.Kronecker,
                             [(fo[0], fi[0]), (fo[1], fi[1])])
        check_cheaper_than_dense("KroneckerLinear", cost1, self._dense_params, in_features,
                                  out_features, fi, fo)
        self._init_cores(_draw(
            lambda k: btt.random(k, (fo, fi), 1, param_dtype, kind="kronecker"),
            rngs.params(), kernel_init))

    @classmethod
    def from_dense(cls, kernel, bias=None, *, in_factors=None, out_factors=None, dtype=None,
                   param_dtype=None, rngs: nnx.Rngs) -> KroneckerLinear:
        """Nearest Kronecker product (Van Loan-Pitsianis, ``tnlib.btt.from_dense``) of
        ``kernel`` ``(in_features, out_features)``; ``bias`` copied."""
        return cls._build(kernel, bias, lambda w, layer: btt.from_dense(
            w, kind="kronecker", dims=(layer.out_factors, layer.in_factors)),
            dict(in_factors=in_factors, out_factors=out_factors), param_dtype, dtype, rngs)


class BTTLinear(_BTTFamily):
    """Block tensor-train kernel (Qiu et al. 2024): ``left`` ``(n2, m1, n1, r)``,
    ``right`` ``(m1, m2, n2, r)``, ``kernel = btt.to_dense(BlockTT(left, right)).T``.

    Args:
      in_features, out_features: sizes of the input and output.
      rank: the BTT rank ``r <= min(m2, n1)``; RANK_DOC.
      in_factors: ``(n1, n2)`` with ``n1 n2 = in_features``; default
        ``factorize_dims(in_features, 2)``.
      out_factors: ``(m1, m2)`` with ``m1 m2 = out_features``; default
        ``factorize_dims(out_features, 2)``.
    """

    _type = btt.BlockTT
    _names = ("left", "right")
    _model_dims = (0, 0)
    _kind = "btt"

    def __init__(self, in_features: int, out_features: int, *,
                 rank: int | float = _DEFAULT_RANK, in_factors: Sequence[int] | None = None,
                 out_factors: Sequence[int] | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, kernel_init=None, bias_init=_ZEROS,
                 rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        owner, dense = type(self).__name__, self._dense_params
        check_rank(rank, dense)
        fi = self.in_factors = check_factors(in_factors, in_features, "in_factors", 2)
        fo = self.out_factors = check_factors(out_factors, out_features, "out_factors", 2)
        (n1, n2), (m1, m2) = fi, fo
        cost = lambda r: shape_count(btt.num_params, btt.BlockTT,
                                      [(n2, m1, n1, r), (m1, m2, n2, r)])
        check_cheaper_than_dense(owner, cost(1), dense, in_features, out_features, fi, fo)
        r = resolve_rank(rank, cost, min(m2, n1), dense,
                          f"min(m2, n1) = min(out_factors[1], in_factors[0]) = "
                          f"min({m2}, {n1}), the block shape", owner)
        self._init_cores(_draw(
            lambda k: btt.random(k, (fo, fi), r, param_dtype, kind=self._kind),
            rngs.params(), kernel_init))

    @property
    def rank(self) -> int:
        """The BTT rank ``r`` (read from ``left``'s shape)."""
        return self.left.shape[-1]

    @classmethod
    def from_dense(cls, kernel, bias=None, *, rank: int | float = _DEFAULT_RANK,
                   in_factors=None, out_factors=None, dtype=None, param_dtype=None,
                   rngs: nnx.Rngs) -> BTTLinear:
        """Best BTT approximation (blockwise truncated SVD, ``tnlib.btt.from_dense``) of
        ``kernel`` ``(in_features, out_features)``; ``bias`` copied."""
        return cls._build(kernel, bias, _btt_projection,
                          dict(rank=rank, in_factors=in_factors, out_factors=out_factors),
                          param_dtype, dtype, rngs)


def _btt_projection(w, layer):
    return btt.from_dense(w, max_rank=layer.rank, kind=layer._kind,
                          dims=(layer.out_factors, layer.in_factors))


class MonarchLinear(BTTLinear):
    """Monarch kernel (Dao et al. 2022): ``BTTLinear`` with rank 1.

    Args:
      in_features, out_features: sizes of the input and output.
      in_factors, out_factors: as ``BTTLinear`` (default ``factorize_dims(., 2)``).
    """

    _kind = "monarch"

    def __init__(self, in_features: int, out_features: int, *,
                 in_factors: Sequence[int] | None = None,
                 out_factors: Sequence[int] | None = None, use_bias: bool = True,
                 dtype=None, param_dtype=jnp.float32, kernel_init=None, bias_init=_ZEROS,
                 rngs: nnx.Rngs):
        super().__init__(in_features, out_features, rank=1, in_factors=in_factors,
                         out_factors=out_factors, use_bias=use_bias, dtype=dtype,
                         param_dtype=param_dtype, kernel_init=kernel_init,
                         bias_init=bias_init, rngs=rngs)

    @classmethod
    def from_dense(cls, kernel, bias=None, *, in_factors=None, out_factors=None,
                   dtype=None, param_dtype=None, rngs: nnx.Rngs) -> MonarchLinear:
        """Best Monarch approximation (rank-1 SVD per block) of ``kernel``; ``bias``
        copied."""
        return cls._build(kernel, bias, _btt_projection,
                          dict(in_factors=in_factors, out_factors=out_factors),
                          param_dtype, dtype, rngs)


class TTLinear(_Structured):
    """TT-matrix (MPO) kernel: ``cores[k]`` ``(r_{k-1}, out_factors[k], in_factors[k],
    r_k)`` and ``kernel = tt.to_dense(TTMatrix(cores)).T``.

    Args:
      in_features, out_features: sizes of the input and output.
      rank: internal TT rank, RANK_DOC.
        An int or a fraction applies to every bond, capped bond by bond at what the
        unfoldings allow (``rank`` reads back the ``L - 1`` bonds); a sequence of
        ``L - 1`` ints sets each bond.
      in_factors: ``(n_1, ..., n_L)`` with product ``in_features``; default
        ``factorize_dims(in_features, L)``.
      out_factors: ``(m_1, ..., m_L)`` with product ``out_features``; default
        ``factorize_dims(out_features, L)``.
      n_factors: the number of sites ``L`` when neither factor tuple is given (default 3).
    """

    _count = staticmethod(tt.num_params)

    def __init__(self, in_features: int, out_features: int, *,
                 rank: int | float | Sequence[int] = _DEFAULT_RANK,
                 in_factors: Sequence[int] | None = None,
                 out_factors: Sequence[int] | None = None, n_factors: int | None = None,
                 use_bias: bool = True, dtype=None, param_dtype=jnp.float32,
                 kernel_init=None, bias_init=_ZEROS, rngs: nnx.Rngs):
        self._setup(in_features, out_features, use_bias, dtype, param_dtype, bias_init, rngs)
        fi, fo = tt_factors(in_features, out_features, in_factors, out_factors, n_factors)
        self.in_factors, self.out_factors = fi, fo
        ranks = tt_ranks(rank, fi, fo, in_features, out_features)

        def make(key):
            ttm = tt.random(key, fo, list(ranks) or 1, param_dtype, col_dims=fi)
            # tt.random has E ||W||_F^2 = 1; spread a factor sqrt(out_features) over the
            # cores so that each dense entry has variance 1 / in_features.
            s = out_features ** (0.5 / len(ttm.cores))
            return tt.TTMatrix(tuple(c * s for c in ttm.cores))

        self._init_cores(_draw(make, rngs.params(), kernel_init))

    def _init_cores(self, ttm):
        self.cores = nnx.List([nnx.Param(c) for c in ttm.cores])

    def _core_values(self):
        return [c.get_value() for c in self.cores]

    def _assemble(self, arrays):
        return tt.TTMatrix(tuple(arrays))

    def _apply(self, ttm, x):
        return tt.matvec(ttm, x)

    def partition_specs(self, axis: str = "model") -> dict:
        """Every core split over a ``model`` mesh axis along its output mode
        ``out_factors[k]`` (read by ``tnlib.experiments.sharding.shard_params``)."""
        return {"cores": (None, axis, None, None)}

    @property
    def ranks(self) -> tuple[int, ...]:
        """All ``L + 1`` bond dimensions (boundaries 1)."""
        return self.as_matrix().ranks

    @property
    def rank(self) -> tuple[int, ...]:
        """The ``L - 1`` internal bond dimensions (``ranks[1:-1]``)."""
        return self.ranks[1:-1]

    @classmethod
    def from_dense(cls, kernel, bias=None, *, rank: int | float = _DEFAULT_RANK,
                   in_factors=None, out_factors=None, n_factors=None, dtype=None,
                   param_dtype=None, rngs: nnx.Rngs) -> TTLinear:
        """TT-SVD (``tnlib.tt.from_dense``) of ``kernel.T`` with every bond capped at the
        resolved ``rank`` (an int or a fraction; bonds the unfoldings cannot fill come
        out smaller, as the constructor's); ``bias`` copied."""
        if isinstance(rank, Sequence) and not isinstance(rank, str):
            raise ValueError(f"TTLinear.from_dense takes rank as one int or a fraction "
                             f"(tnlib.tt.from_dense caps every bond at one max_rank), got "
                             f"{rank!r}")

        def decompose(w, layer):
            return tt.from_dense(w, max_rank=max(layer.rank, default=None),
                                 row_dims=layer.out_factors, col_dims=layer.in_factors)

        return cls._build(kernel, bias, decompose,
                          dict(rank=rank, in_factors=in_factors, out_factors=out_factors,
                               n_factors=n_factors), param_dtype, dtype, rngs)

    def to_dense(self):
        """The kernel ``(in_features, out_features)`` (``tt.to_dense`` transposed)."""
        return tt.to_dense(self.as_matrix()).T

    def lr_multipliers(self) -> nnx.State:
        """``in_features / (r_{k-1} n_k)`` for ``cores[k]`` (bias 1.0), as a tree shaped
        like ``nnx.state(self, nnx.Param)``.

        ``tnlib.tt.matvec`` contracts the input site by site from the left: core ``k``
        sums over its input mode ``n_k = in_factors[k]`` and the bond ``r_{k-1}`` that
        carries the already contracted input, so its fan-in is ``r_{k-1} n_k`` and its
        Adam multiplier is ``in_features / (r_{k-1} n_k)``, the muP rule of
        ``tnlib.btt.lr_multipliers`` (a two-site TT with rank ``r`` gets ``n_2`` and
        ``n_1 / r``, exactly ``BTTLinear``'s ``left`` and ``right``).
        """
        ranks = self.ranks
        return param_tree(self, lambda path: 1.0 if path == ("bias",) else
                          self.in_features / (ranks[path[1]] * self.in_factors[path[1]]))


for _cls in (LowRankLinear, KroneckerLinear, BTTLinear, MonarchLinear, TTLinear):
    _cls.__doc__ = _cls.__doc__.replace("RANK_DOC", _RANK_DOC) + _COMMON_DOC
