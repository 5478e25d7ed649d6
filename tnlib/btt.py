"""Structured matrices: low-rank, Kronecker, block tensor-train (BTT) and Monarch.

Each type stands for a dense matrix ``W`` of shape ``(d_out, d_in)`` and is applied
to a batch ``x`` of shape ``(..., d_in)`` as ``y = x @ W.T`` (shape ``(..., d_out)``)
with batched matrix multiplies. Sizes and ranks are read from the arrays' trailing
axes (a batch of structures stacked by ``vmap`` reports them right); nothing else
is stored.

``LowRank(u, v)``
    ``u`` ``(d_out, r)``, ``v`` ``(r, d_in)``: ``W = u @ v``.
``Kronecker(a, b)``
    ``a`` ``(m1, n1)``, ``b`` ``(m2, n2)``: ``W = kron(a, b)``, ``d_out = m1 m2``,
    ``d_in = n1 n2``.
``BlockTT(left, right)``
    The two-core block tensor-train of Qiu et al. 2024 ("Compute Better Spent"),
    ``left`` ``(n2, m1, n1, r)``, ``right`` ``(m1, m2, n2, r)``, ``d_in = n1 n2``,
    ``d_out = m1 m2``. With ``x`` reshaped row-major to ``(n1, n2)`` and ``y`` to
    ``(m1, m2)``::

        y[i, j] = sum_{p, q, k} right[i, j, q, k] * left[q, i, p, k] * x[p, q]

    computed in two stages: ``z[q, i, k] = sum_p left[q, i, p, k] x[p, q]`` (a matmul
    batched over ``q``), then ``y[i, j] = sum_{q, k} right[i, j, q, k] z[q, i, k]``
    (a matmul batched over ``i``). Equivalently
    ``W[(i, j), (p, q)] = sum_k right[i, j, q, k] left[q, i, p, k]``.
``Monarch``
    Not a type of its own: Monarch matrices are ``BlockTT`` with ``r = 1``;
    ``Monarch.random`` and ``Monarch.from_dense`` return such a ``BlockTT``.

Each type has ``T.random(key, ...)`` and ``T.from_dense(w, ...)`` (the best
Frobenius-norm projection of a dense matrix onto the structure); the module
functions ``matvec``, ``to_dense``, ``num_params``, ``flops`` and ``lr_multipliers``
accept any of them (``functools.singledispatch``, one registered implementation per
type). ``matvec`` is two batched ``lax.dot_general`` GEMMs; bfloat16 / float16 inputs
accumulate in float32 and return their own dtype (``matvec`` docstring).

Initialization (``random``): every core has i.i.d. ``N(0, sigma^2)`` entries with
``sigma^2 = 1 / fan_in(core)``, where the fan-in of a core is the number of terms it
sums over in ``matvec`` (``v``: ``d_in``; ``u``: ``r``; ``a``: ``n1``; ``b``: ``n2``;
``left``: ``n1``; ``right``: ``n2 r``). Each entry of the dense matrix is then a sum
of products whose variance is exactly ``1 / d_in``, the variance of a standard
(LeCun-normal) dense initialization, and every intermediate activation keeps unit
variance.

Learning rates (``lr_multipliers``): the muP rule of Qiu et al. for Adam is that the
learning rate of a core scales as ``1 / fan_in(core)``, as a dense layer's scales as
``1 / d_in``. ``lr_multipliers(w)`` returns, in the shape of ``w``, the factor
``d_in / fan_in(core)`` to multiply the dense layer's Adam learning rate by for each
core (``LowRank``: ``u`` ``d_in / r``, ``v`` ``1``; ``Kronecker``: ``a`` ``n2``, ``b``
``n1``; ``BlockTT``: ``left`` ``n2``, ``right`` ``n1 / r``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from tnlib import _numerics, linalg
from tnlib._validate import as_inexact as _as_inexact
from tnlib._validate import check_dims as _check_dims
from tnlib.struct import pytree_dataclass

__all__ = [
    "LowRank", "Kronecker", "BlockTT", "Monarch", "matvec", "to_dense", "num_params",
    "flops", "lr_multipliers", "check",
]


def _shape(x):
    return tuple(x.shape)


# ----------------------------------------------------------------------------- checks


def _check_int(value, name, low=1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a Python int >= {low}, got {value!r}")
    return value


def _check_pair(factors, name) -> tuple[int, int]:
    dims = _check_dims(factors, name)
    if len(dims) != 2:
        raise ValueError(f"{name} must be a pair of ints (two factors), got {dims}")
    return dims


def _check_matrix(w, d_out, d_in, name="w"):
    w = _as_inexact(w)
    if w.ndim != 2 or _shape(w) != (d_out, d_in):
        raise ValueError(f"{name} must have shape ({d_out}, {d_in}), got {_shape(w)}")
    return w


def _check_rank(rank, largest, what):
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be a Python int (static), got {type(rank).__name__}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if largest is not None and rank > largest:
        raise ValueError(
            f"rank {rank} is larger than {largest}, the largest allowed value ({what})"
        )
    return rank


@functools.singledispatch
def check(w, name: str = "w"):
    """Validate a structured matrix's array shapes (static; works under jit); returns it.

    Raises TypeError for an unknown type and ValueError naming the shapes that do not fit.
    """
    raise TypeError(
        f"{name} must be a tnlib.btt LowRank, Kronecker or BlockTT, got {type(w).__name__}"
    )


# -------------------------------------------------------------------------- LowRank


@pytree_dataclass
class LowRank:
    """``W = u @ v`` with ``u`` ``(d_out, r)`` and ``v`` ``(r, d_in)``."""

    u: jax.Array
    v: jax.Array

    @property
    def d_out(self) -> int:
        return self.u.shape[-2]

    @property
    def d_in(self) -> int:
        return self.v.shape[-1]

    @property
    def rank(self) -> int:
        return self.v.shape[-2]

    @property
    def dtype(self):
        return jnp.result_type(self.u, self.v)

    @staticmethod
    def random(key, d_out: int, d_in: int, rank: int, dtype=jnp.float32) -> LowRank:
        """Gaussian factors, ``v ~ N(0, 1/d_in)``, ``u ~ N(0, 1/r)`` (dense entry
        variance ``1/d_in``)."""
        d_out, d_in = _check_int(d_out, "d_out"), _check_int(d_in, "d_in")
        rank = _check_rank(rank, None, "")
        ku, kv = jax.random.split(key)
        u = jax.random.normal(ku, (d_out, rank), dtype) / math.sqrt(rank)
        v = jax.random.normal(kv, (rank, d_in), dtype) / math.sqrt(d_in)
        return LowRank(u, v)

    @staticmethod
    def from_dense(w, rank: int) -> LowRank:
        """Best rank-``rank`` approximation of ``w`` ``(d_out, d_in)`` (truncated SVD,
        Eckart-Young), split as ``u = U sqrt(S)``, ``v = sqrt(S) Vh``. ``rank`` is static
        and at most ``min(d_out, d_in)``."""
        w = _as_inexact(w)
        if w.ndim != 2:
            raise ValueError(f"w must be a matrix (d_out, d_in), got shape {_shape(w)}")
        rank = _check_rank(rank, min(w.shape), f"min(d_out, d_in) for w of shape {_shape(w)}")
        u, s, vh = linalg.truncated_svd(w, rank)
        rs = _numerics.safe_sqrt(s).astype(w.dtype)
        return LowRank(u * rs, rs[:, None] * vh)


@check.register
def _(w: LowRank, name: str = "w"):
    if w.u.ndim != 2 or w.v.ndim != 2 or w.u.shape[1] != w.v.shape[0]:
        raise ValueError(
            f"{name}: u must be (d_out, r) and v (r, d_in) with the same r, got u "
            f"{_shape(w.u)} and v {_shape(w.v)}"
        )
    return w


# ------------------------------------------------------------------------ Kronecker


@pytree_dataclass
class Kronecker:
    """``W = kron(a, b)`` with ``a`` ``(m1, n1)`` and ``b`` ``(m2, n2)``."""

    a: jax.Array
    b: jax.Array

    @property
    def out_factors(self) -> tuple[int, int]:
        return (self.a.shape[-2], self.b.shape[-2])

    @property
    def in_factors(self) -> tuple[int, int]:
        return (self.a.shape[-1], self.b.shape[-1])

    @property
    def d_out(self) -> int:
        return math.prod(self.out_factors)

    @property
    def d_in(self) -> int:
        return math.prod(self.in_factors)

    @property
    def dtype(self):
        return jnp.result_type(self.a, self.b)

    @staticmethod
    def random(key, out_factors: Sequence[int], in_factors: Sequence[int],
               dtype=jnp.float32) -> Kronecker:
        """Gaussian factors ``a ~ N(0, 1/n1)``, ``b ~ N(0, 1/n2)`` (dense entry variance
        ``1/d_in``)."""
        (m1, m2), (n1, n2) = _check_pair(out_factors, "out_factors"), _check_pair(
            in_factors, "in_factors")
        ka, kb = jax.random.split(key)
        a = jax.random.normal(ka, (m1, n1), dtype) / math.sqrt(n1)
        b = jax.random.normal(kb, (m2, n2), dtype) / math.sqrt(n2)
        return Kronecker(a, b)

    @staticmethod
    def from_dense(w, out_factors: Sequence[int], in_factors: Sequence[int]) -> Kronecker:
        """Nearest Kronecker product (Van Loan and Pitsianis 1993).

        ``||W - kron(a, b)||_F = ||R(W) - vec(a) vec(b)^T||_F`` for the rearrangement
        ``R(W)[(i, p), (j, q)] = W[(i, j), (p, q)]`` ``(m1 n1, m2 n2)``, so the best pair
        is the leading singular triple: ``a = sqrt(s0) u0``, ``b = sqrt(s0) vh0``.
        """
        (m1, m2), (n1, n2) = _check_pair(out_factors, "out_factors"), _check_pair(
            in_factors, "in_factors")
        w = _check_matrix(w, m1 * m2, n1 * n2)
        r = w.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)
        u, s, vh = linalg.truncated_svd(r, 1)
        rs = _numerics.safe_sqrt(s[0]).astype(w.dtype)
        return Kronecker((rs * u[:, 0]).reshape(m1, n1), (rs * vh[0]).reshape(m2, n2))


@check.register
def _(w: Kronecker, name: str = "w"):
    if w.a.ndim != 2 or w.b.ndim != 2:
        raise ValueError(f"{name}: a and b must be matrices, got {_shape(w.a)}, {_shape(w.b)}")
    return w


# -------------------------------------------------------------------------- BlockTT


@pytree_dataclass
class BlockTT:
    """Block tensor-train ``left`` ``(n2, m1, n1, r)``, ``right`` ``(m1, m2, n2, r)``:
    ``W[(i, j), (p, q)] = sum_k right[i, j, q, k] left[q, i, p, k]`` (module docstring)."""

    left: jax.Array
    right: jax.Array

    @property
    def out_factors(self) -> tuple[int, int]:
        return (self.right.shape[-4], self.right.shape[-3])

    @property
    def in_factors(self) -> tuple[int, int]:
        return (self.left.shape[-2], self.left.shape[-4])

    @property
    def d_out(self) -> int:
        return math.prod(self.out_factors)

    @property
    def d_in(self) -> int:
        return math.prod(self.in_factors)

    @property
    def rank(self) -> int:
        return self.left.shape[-1]

    @property
    def dtype(self):
        return jnp.result_type(self.left, self.right)

    @staticmethod
    def random(key, out_factors: Sequence[int], in_factors: Sequence[int], rank: int,
               dtype=jnp.float32) -> BlockTT:
        """Gaussian cores ``left ~ N(0, 1/n1)``, ``right ~ N(0, 1/(n2 r))`` (dense entry
        variance ``r / (n1 n2 r) = 1/d_in``). Any ``rank >= 1`` is accepted."""
        (m1, m2), (n1, n2) = _check_pair(out_factors, "out_factors"), _check_pair(
            in_factors, "in_factors")
        rank = _check_rank(rank, None, "")
        kl, kr = jax.random.split(key)
        left = jax.random.normal(kl, (n2, m1, n1, rank), dtype) / math.sqrt(n1)
        right = jax.random.normal(kr, (m1, m2, n2, rank), dtype) / math.sqrt(n2 * rank)
        return BlockTT(left, right)

    @staticmethod
    def from_dense(w, out_factors: Sequence[int], in_factors: Sequence[int],
                   rank: int) -> BlockTT:
        """Best Frobenius-norm BTT approximation of ``w`` ``(m1 m2, n1 n2)``.

        For fixed ``(i, q)`` the block ``B_iq[j, p] = W[(i, j), (p, q)]`` ``(m2, n1)``
        equals ``sum_k right[i, j, q, k] left[q, i, p, k]``: a product of an ``(m2, r)``
        and an ``(r, n1)`` matrix that no other block shares. The error is the sum of
        the blocks' errors, so the optimum is each block's rank-``r`` truncated SVD
        (Eckart-Young), split as ``right[i, :, q, :] = U sqrt(S)`` and
        ``left[q, i, :, :] = (sqrt(S) Vh)^T``; a matrix that is a BTT of rank ``r``
        is reproduced exactly. ``rank`` is static and at most ``min(m2, n1)``.
        """
        (m1, m2), (n1, n2) = _check_pair(out_factors, "out_factors"), _check_pair(
            in_factors, "in_factors")
        w = _check_matrix(w, m1 * m2, n1 * n2)
        rank = _check_rank(rank, min(m2, n1), f"min(m2, n1) = min({m2}, {n1}), the block shape")
        blocks = w.reshape(m1, m2, n1, n2).transpose(0, 3, 1, 2)  # (m1, n2, m2, n1)
        u, s, vh = linalg.truncated_svd(blocks, rank)
        rs = _numerics.safe_sqrt(s).astype(w.dtype)
        right = (u * rs[..., None, :]).transpose(0, 2, 1, 3)  # (m1, m2, n2, r)
        left = (rs[..., :, None] * vh).transpose(1, 0, 3, 2)  # (n2, m1, n1, r)
        return BlockTT(left, right)


@check.register
def _(w: BlockTT, name: str = "w"):
    lt, rt = _shape(w.left), _shape(w.right)
    if len(lt) != 4 or len(rt) != 4:
        raise ValueError(
            f"{name}: left must be (n2, m1, n1, r) and right (m1, m2, n2, r), got {lt}, {rt}"
        )
    if lt[0] != rt[2] or lt[1] != rt[0] or lt[3] != rt[3]:
        raise ValueError(
            f"{name}: left {lt} (n2, m1, n1, r) and right {rt} (m1, m2, n2, r) disagree "
            f"on n2, m1 or r"
        )
    return w


class Monarch:
    """Monarch matrices (Dao et al. 2022) as the rank-1 ``BlockTT``: a namespace whose
    constructors return ``BlockTT`` with ``r = 1`` (there is no separate type)."""

    @staticmethod
    def random(key, out_factors, in_factors, dtype=jnp.float32) -> BlockTT:
        """``BlockTT.random(key, out_factors, in_factors, 1, dtype)``."""
        return BlockTT.random(key, out_factors, in_factors, 1, dtype)

    @staticmethod
    def from_dense(w, out_factors, in_factors) -> BlockTT:
        """``BlockTT.from_dense(w, out_factors, in_factors, 1)``: the best Monarch
        approximation (a rank-1 SVD per ``(m2, n1)`` block)."""
        return BlockTT.from_dense(w, out_factors, in_factors, 1)


# -------------------------------------------------------------------------- matvec


def _flatten_x(w, x):
    check(w)
    x = _as_inexact(x)
    if x.ndim < 1 or x.shape[-1] != w.d_in:
        raise ValueError(f"x must have shape (..., {w.d_in}) (d_in), got {_shape(x)}")
    return x.reshape(-1, w.d_in), x.shape[:-1]


def _dtypes(*arrays):
    """``(dt, acc)``: the promoted dtype of the operands and the dtype the products
    accumulate in (float32 for 16-bit floats, ``dt`` itself otherwise)."""
    dt = jnp.result_type(*arrays)
    return dt, (jnp.dtype(jnp.float32) if jnp.finfo(dt).bits < 32 else dt)


def _dot(a, b, contract, batch=((), ()), acc=None):
    """``lax.dot_general`` accumulating in ``acc``; output dims: batch, ``a``'s free,
    ``b``'s free."""
    return lax.dot_general(a, b, (contract, batch), preferred_element_type=acc)


def _btt_apply(left, right, x3, acc):
    """The two BTT stages on ``x3`` ``(B, n1, n2)`` as batched GEMMs (``dot_general``);
    the stage-1 result is rounded to the input dtype; returns ``(B, m1, m2)``.

    Rank 1 (Monarch): the batch ``B`` is the GEMMs' row (M) dimension and no activation is
    transposed before the products: stage 1, batched over ``q``, ``z[q, b, i] = sum_p
    x3[b, p, q] left[q, i, p]`` ``(n2, B, m1)``; stage 2, batched over ``i``,
    ``y[i, b, j] = sum_q z[q, b, i] right[i, j, q]`` ``(m1, B, m2)``.
    Rank > 1: the batch is the column (N) dimension: ``x3`` as ``(n2, n1, B)``, stage 1
    ``(n2, m1 r, B)``, regrouped to ``(m1, n2 r, B)``, stage 2 ``(m1, m2, B)``. On the
    CPU each layout was the faster one at its ranks (``benchmarks/btt_layout.py``):
    batch-as-rows moves ``r``-element runs when it regroups the intermediate,
    batch-as-columns ``B``-element runs.
    """
    n2, m1, n1, r = left.shape
    m2 = right.shape[1]
    if r == 1:
        z = _dot(x3, left[..., 0], ((1,), (2,)), ((2,), (0,)), acc).astype(x3.dtype)
        y = _dot(z, right[..., 0], ((0,), (2,)), ((2,), (0,)), acc)
        return y.transpose(1, 0, 2).astype(x3.dtype)
    xs = x3.transpose(2, 1, 0)  # (n2, n1, B)
    lmat = left.transpose(0, 1, 3, 2).reshape(n2, m1 * r, n1)
    z = _dot(lmat, xs, ((2,), (1,)), ((0,), (0,)), acc).astype(x3.dtype)  # (n2, m1 r, B)
    zs = z.reshape(n2, m1, r, -1).transpose(1, 0, 2, 3).reshape(m1, n2 * r, -1)
    y = _dot(right.reshape(m1, m2, n2 * r), zs, ((2,), (1,)), ((0,), (0,)), acc)
    return y.transpose(2, 0, 1).astype(x3.dtype)


@functools.singledispatch
def matvec(w, x):
    """``y = x @ to_dense(w).T`` for ``x`` ``(..., d_in)``; ``y`` ``(..., d_out)``.

    Computed with two batched matrix multiplies (``lax.dot_general``), never forming the
    dense matrix: ``LowRank``: ``(x @ v^T) @ u^T``; ``Kronecker``: ``X @ b^T`` then
    ``a`` applied to the rows, with ``X`` the ``(n1, n2)`` reshape of each vector;
    ``BlockTT``: the two stages of the module docstring, each a batched GEMM (the batch
    of vectors is the GEMMs' row dimension for Monarch, their column dimension for rank
    > 1, whichever measured faster; ``_btt_apply``). Costs are given by ``flops``.

    Precision: ``x`` and the cores are promoted to a common dtype ``dt``, the output has
    dtype ``dt``. For 16-bit floats (bfloat16, float16) every product accumulates in
    float32 (``preferred_element_type``); the intermediate between the two multiplies
    and the output are rounded back to ``dt`` (so both GEMMs take 16-bit inputs). Other
    dtypes compute in ``dt`` throughout.
    """
    check(w)


@matvec.register
def _(w: LowRank, x):
    xf, lead = _flatten_x(w, x)
    dt, acc = _dtypes(xf, w.u, w.v)
    xf, u, v = xf.astype(dt), w.u.astype(dt), w.v.astype(dt)
    t = _dot(xf, v, ((1,), (1,)), acc=acc).astype(dt)  # (B, r)
    y = _dot(t, u, ((1,), (1,)), acc=acc).astype(dt)  # (B, d_out)
    return y.reshape(*lead, w.d_out)


@matvec.register
def _(w: Kronecker, x):
    xf, lead = _flatten_x(w, x)
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    dt, acc = _dtypes(xf, w.a, w.b)
    x3, a, b = xf.reshape(-1, n1, n2).astype(dt), w.a.astype(dt), w.b.astype(dt)
    t = _dot(x3, b, ((2,), (1,)), acc=acc).astype(dt)  # (B, n1, m2)
    y = _dot(t, a, ((1,), (1,)), acc=acc).astype(dt)  # (B, m2, m1)
    return y.transpose(0, 2, 1).reshape(*lead, m1 * m2)


@matvec.register
def _(w: BlockTT, x):
    xf, lead = _flatten_x(w, x)
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    dt, acc = _dtypes(xf, w.left, w.right)
    x3 = xf.reshape(-1, n1, n2).astype(dt)
    y = _btt_apply(w.left.astype(dt), w.right.astype(dt), x3, acc)
    return y.reshape(*lead, m1 * m2)


# ------------------------------------------------------------------ dense and counts


@functools.singledispatch
def to_dense(w):
    """The dense matrix ``(d_out, d_in)`` that ``w`` represents."""
    check(w)


@to_dense.register
def _(w: LowRank):
    check(w)
    return w.u @ w.v


@to_dense.register
def _(w: Kronecker):
    check(w)
    return jnp.kron(w.a, w.b)


@to_dense.register
def _(w: BlockTT):
    check(w)
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    # blocks[i, q] = right[i, :, q, :] @ left[q, i, :, :]^T  (m2, n1)
    blocks = jnp.matmul(w.right.transpose(0, 2, 1, 3), w.left.transpose(1, 0, 3, 2))
    return blocks.transpose(0, 2, 3, 1).reshape(m1 * m2, n1 * n2)


@functools.singledispatch
def num_params(w) -> int:
    """Number of stored scalars (per structure, for a vmapped batch):
    ``LowRank`` ``r (d_out + d_in)``; ``Kronecker`` ``m1 n1 + m2 n2``;
    ``BlockTT`` ``r (n2 m1 n1 + m1 m2 n2)``."""
    check(w)


@num_params.register
def _(w: LowRank) -> int:
    return w.rank * (w.d_out + w.d_in)


@num_params.register
def _(w: Kronecker) -> int:
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    return m1 * n1 + m2 * n2


@num_params.register
def _(w: BlockTT) -> int:
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    return w.rank * (n2 * m1 * n1 + m1 * m2 * n2)


@functools.singledispatch
def flops(w, batch: int = 1) -> int:
    """Floating-point operations (2 per multiply-add) of ``matvec`` on ``batch``
    vectors, as ``matvec`` computes it: ``LowRank`` ``2 B r (d_in + d_out)``;
    ``Kronecker`` ``2 B (n1 n2 m2 + m1 n1 m2)``; ``BlockTT``
    ``2 B r (n2 m1 n1 + m1 m2 n2)`` (= ``2 B num_params``)."""
    check(w)


@flops.register
def _(w: LowRank, batch: int = 1) -> int:
    return 2 * _check_int(batch, "batch") * w.rank * (w.d_in + w.d_out)


@flops.register
def _(w: Kronecker, batch: int = 1) -> int:
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    return 2 * _check_int(batch, "batch") * (n1 * n2 * m2 + m1 * n1 * m2)


@flops.register
def _(w: BlockTT, batch: int = 1) -> int:
    return 2 * _check_int(batch, "batch") * num_params(w)


@functools.singledispatch
def lr_multipliers(w):
    """Per-core Adam learning-rate multipliers ``d_in / fan_in(core)`` relative to a dense
    layer's (module docstring), as a structure of the same type with Python floats as
    leaves (``jax.tree.map`` it against the parameters)."""
    check(w)


@lr_multipliers.register
def _(w: LowRank):
    return LowRank(u=w.d_in / w.rank, v=1.0)


@lr_multipliers.register
def _(w: Kronecker):
    (n1, n2) = w.in_factors
    return Kronecker(a=float(n2), b=float(n1))


@lr_multipliers.register
def _(w: BlockTT):
    (n1, n2) = w.in_factors
    return BlockTT(left=float(n2), right=n1 / w.rank)
