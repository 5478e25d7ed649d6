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
Monarch
    Not a type of its own: Monarch matrices are ``BlockTT`` with ``r = 1``
    (``kind="monarch"`` below builds one).

The format verbs are module functions, as in every format module. The two
constructors pick the structure with a keyword, ``kind`` in ``KINDS`` =
``("lowrank", "kronecker", "btt", "monarch")``: ``random(key, dims, rank, dtype,
kind=...)`` with ``dims = (d_out, d_in)`` for low-rank and ``(out_factors,
in_factors)`` (two pairs) otherwise, and ``from_dense(x, max_rank=..., rtol=...,
kind=..., dims=...)`` (the best Frobenius-norm projection of a dense matrix onto the
structure). ``matvec``, ``to_dense``, ``inner``, ``norm``, ``num_params``, ``flops``
and ``lr_multipliers`` accept any type (``functools.singledispatch``, one registered
implementation per type, or ``isinstance`` pairs in ``inner``). ``matvec`` is two
batched ``lax.dot_general`` GEMMs; bfloat16 / float16 inputs accumulate in float32 and
return their own dtype (``matvec`` docstring). ``det``, ``slogdet``, ``inv`` and
``cholesky`` take a ``Kronecker`` with square factors and work on the factors only
(``det(kron(a, b)) = det(a)**m2 det(b)**m1``, ``inv`` / ``cholesky`` factor-wise; in
``tnlib/_kron_ops.py``).

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
from tnlib._validate import check_int
from tnlib._validate import check_size as _check_size
from tnlib.struct import pytree_dataclass

__all__ = [
    "LowRank", "Kronecker", "BlockTT", "KINDS", "random", "from_dense", "matvec", "to_dense",
    "inner", "norm", "num_params", "flops", "lr_multipliers", "check",
    # tnlib/_kron_ops.py (Kronecker only)
    "det", "slogdet", "inv", "cholesky",
]


def _shape(x):
    return tuple(x.shape)


# ----------------------------------------------------------------------------- checks


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


# --------------------------------------------------------------------- construction

KINDS = ("lowrank", "kronecker", "btt", "monarch")


def _check_kind(kind) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _check_factor_dims(dims, kind) -> tuple[tuple[int, int], tuple[int, int]]:
    if not isinstance(dims, Sequence) or len(dims) != 2:
        raise ValueError(f"dims must be (out_factors, in_factors) for kind={kind!r}, "
                         f"got {dims!r}")
    return _check_pair(dims[0], "out_factors"), _check_pair(dims[1], "in_factors")


def random(key, dims, rank, dtype=jnp.float32, *, kind: str = "btt"):
    """A random structured matrix with the variance-preserving initialization of the
    module docstring (dense entry variance ``1 / d_in``).

    Args:
      key: PRNG key.
      dims: ``(d_out, d_in)`` (ints) for ``kind="lowrank"``; ``(out_factors,
        in_factors)``, each a pair ``(m1, m2)`` / ``(n1, n2)``, for the other kinds.
      rank: static int >= 1: the rank of ``LowRank`` / ``BlockTT``; 1 for
        ``"kronecker"`` and ``"monarch"`` (the only rank they have).
      dtype: float or complex dtype.
      kind: ``"lowrank"`` (``LowRank``), ``"kronecker"`` (``Kronecker``), ``"btt"``
        (``BlockTT``) or ``"monarch"`` (``BlockTT`` of rank 1).
    """
    kind = _check_kind(kind)
    rank = _check_rank(rank, None if kind in ("lowrank", "btt") else 1, f"kind={kind!r}")
    k1, k2 = jax.random.split(key)
    if kind == "lowrank":
        if not isinstance(dims, Sequence) or len(dims) != 2:
            raise ValueError(f"dims must be (d_out, d_in) for kind='lowrank', got {dims!r}")
        d_out, d_in = check_int(dims[0], "d_out"), check_int(dims[1], "d_in")
        return LowRank(jax.random.normal(k1, (d_out, rank), dtype) / math.sqrt(rank),
                       jax.random.normal(k2, (rank, d_in), dtype) / math.sqrt(d_in))
    (m1, m2), (n1, n2) = _check_factor_dims(dims, kind)
    if kind == "kronecker":
        return Kronecker(jax.random.normal(k1, (m1, n1), dtype) / math.sqrt(n1),
                         jax.random.normal(k2, (m2, n2), dtype) / math.sqrt(n2))
    left = jax.random.normal(k1, (n2, m1, n1, rank), dtype) / math.sqrt(n1)
    right = jax.random.normal(k2, (m1, m2, n2, rank), dtype) / math.sqrt(n2 * rank)
    return BlockTT(left, right)


def _truncate(s, max_rank, rtol, norm):
    """Kept rank and zeroing mask for singular values ``s`` ``(..., k)`` of independent
    blocks whose errors add (Frobenius): ``max_rank`` caps the rank; ``rtol`` alone
    picks the smallest rank whose total discarded norm is ``<= rtol * norm`` (concrete
    ``s``), with ``max_rank`` it only zeroes the values that rank would drop."""
    keep = s.shape[-1] if max_rank is None else min(max_rank, s.shape[-1])
    if rtol is None:
        return keep, None
    tails = linalg.tail_norms(s).reshape(-1, s.shape[-1])
    total = _numerics.safe_sqrt(jnp.sum(tails * tails, axis=0))  # error of keeping r
    mask = (total > rtol * norm).at[0].set(True)
    if max_rank is None:
        if not _numerics.is_concrete(s):
            raise TypeError("from_dense with only rtol picks a data-dependent rank and "
                            "needs a concrete matrix; inside jit also pass max_rank")
        return max(1, int(jnp.sum(mask))), None
    return keep, mask[:keep]


def from_dense(x, *, max_rank: int | None = None, rtol: float | None = None,
               kind: str = "btt", dims=None):
    """Best Frobenius-norm approximation of the dense matrix ``x`` ``(d_out, d_in)``
    by the structure ``kind`` (a truncated SVD per independent block, Eckart-Young).

    ``"lowrank"``: the truncated SVD of ``x``, split as ``u = U sqrt(S)``,
    ``v = sqrt(S) Vh``. ``"kronecker"``: the nearest Kronecker product (Van Loan and
    Pitsianis 1993): ``||W - kron(a, b)|| = ||R(W) - vec(a) vec(b)^T||`` for the
    rearrangement ``R(W)[(i, p), (j, q)] = W[(i, j), (p, q)]``, so ``a``, ``b`` come
    from its leading singular triple. ``"btt"``: for fixed ``(i, q)`` the block
    ``B_iq[j, p] = W[(i, j), (p, q)]`` ``(m2, n1)`` equals ``sum_k right[i, j, q, k]
    left[q, i, p, k]``, a product no other block shares; the error is the sum of the
    blocks' errors, so the optimum is each block's rank-``r`` SVD (a matrix that is a
    BTT of rank ``r`` is reproduced exactly). ``"monarch"``: ``"btt"`` at rank 1.

    Args:
      x: dense matrix ``(d_out, d_in)``.
      max_rank: static cap on the rank (``None``: full, ``min(d_out, d_in)`` for
        low-rank, ``min(m2, n1)`` for BTT); must be None or 1 for Kronecker / Monarch.
      rtol: relative Frobenius tolerance (low-rank and BTT). Alone (concrete ``x``) it
        picks the smallest rank with ``||x - w||_F <= rtol * ||x||_F``; with
        ``max_rank`` the shapes come from ``max_rank`` and ``rtol`` only zeroes
        singular values (jit-safe).
      kind: ``"lowrank"``, ``"kronecker"``, ``"btt"`` or ``"monarch"``.
      dims: ``(out_factors, in_factors)`` for the factored kinds (not for low-rank).
    """
    kind = _check_kind(kind)
    _numerics.check_rank_args(max_rank, rtol, x)
    x = _as_inexact(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a matrix (d_out, d_in), got shape {_shape(x)}")
    if kind == "lowrank":
        u, s, vh = linalg.svd(x)
        blocks = None
    else:
        if dims is None:
            raise ValueError(f"from_dense(kind={kind!r}) needs dims=(out_factors, in_factors)")
        (m1, m2), (n1, n2) = _check_factor_dims(dims, kind)
        x = _check_matrix(x, m1 * m2, n1 * n2, "x")
        if kind in ("kronecker", "monarch"):
            if max_rank not in (None, 1) or rtol is not None:
                raise ValueError(f"kind={kind!r} has rank 1: pass max_rank=None or 1 and "
                                 f"no rtol, got max_rank={max_rank!r}, rtol={rtol!r}")
            max_rank = 1
        blocks = x.reshape(m1, m2, n1, n2)
        if kind == "kronecker":
            blocks = blocks.transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)
        else:
            blocks = blocks.transpose(0, 3, 1, 2)  # (m1, n2, m2, n1)
        u, s, vh = linalg.svd(blocks)
    norm = jnp.linalg.norm(x.ravel())
    keep, mask = _truncate(s, max_rank, rtol, norm)
    u, s, vh = u[..., :keep], s[..., :keep], vh[..., :keep, :]
    if mask is not None:
        s = s * mask.astype(s.dtype)
    rs = _numerics.safe_sqrt(s).astype(x.dtype)
    if kind == "lowrank":
        return LowRank(u * rs, rs[:, None] * vh)
    if kind == "kronecker":
        return Kronecker((rs[0] * u[:, 0]).reshape(m1, n1), (rs[0] * vh[0]).reshape(m2, n2))
    right = (u * rs[..., None, :]).transpose(0, 2, 1, 3)  # (m1, m2, n2, r)
    left = (rs[..., :, None] * vh).transpose(1, 0, 3, 2)  # (n2, m1, n1, r)
    return BlockTT(left, right)


# -------------------------------------------------------------------------- matvec


def _flatten_x(w, x):
    check(w)
    x = _as_inexact(x)
    if x.ndim < 1 or x.shape[-1] != w.d_in:
        raise ValueError(f"x must have shape (..., {w.d_in}) (d_in), got {_shape(x)}")
    return x.reshape(-1, w.d_in), x.shape[:-1]


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
    dt, acc = _numerics.accumulation_dtypes(xf, w.u, w.v)
    xf, u, v = xf.astype(dt), w.u.astype(dt), w.v.astype(dt)
    t = _dot(xf, v, ((1,), (1,)), acc=acc).astype(dt)  # (B, r)
    y = _dot(t, u, ((1,), (1,)), acc=acc).astype(dt)  # (B, d_out)
    return y.reshape(*lead, w.d_out)


@matvec.register
def _(w: Kronecker, x):
    xf, lead = _flatten_x(w, x)
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    dt, acc = _numerics.accumulation_dtypes(xf, w.a, w.b)
    x3, a, b = xf.reshape(-1, n1, n2).astype(dt), w.a.astype(dt), w.b.astype(dt)
    t = _dot(x3, b, ((2,), (1,)), acc=acc).astype(dt)  # (B, n1, m2)
    y = _dot(t, a, ((1,), (1,)), acc=acc).astype(dt)  # (B, m2, m1)
    return y.transpose(0, 2, 1).reshape(*lead, m1 * m2)


@matvec.register
def _(w: BlockTT, x):
    xf, lead = _flatten_x(w, x)
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    dt, acc = _numerics.accumulation_dtypes(xf, w.left, w.right)
    x3 = xf.reshape(-1, n1, n2).astype(dt)
    y = _btt_apply(w.left.astype(dt), w.right.astype(dt), x3, acc)
    return y.reshape(*lead, m1 * m2)


# ------------------------------------------------------------------ dense and counts


@functools.singledispatch
def to_dense(tn):
    """The dense matrix ``(d_out, d_in)`` that ``tn`` represents."""
    check(tn)


@to_dense.register
def _(w: LowRank):
    check(w)
    _check_size((w.d_out, w.d_in), jnp.result_type(*jax.tree.leaves(w)), "btt.to_dense")
    return w.u @ w.v


@to_dense.register
def _(w: Kronecker):
    check(w)
    _check_size((w.d_out, w.d_in), jnp.result_type(*jax.tree.leaves(w)), "btt.to_dense")
    return jnp.kron(w.a, w.b)


@to_dense.register
def _(w: BlockTT):
    check(w)
    _check_size((w.d_out, w.d_in), jnp.result_type(*jax.tree.leaves(w)), "btt.to_dense")
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    # blocks[i, q] = right[i, :, q, :] @ left[q, i, :, :]^T  (m2, n1)
    blocks = jnp.matmul(w.right.transpose(0, 2, 1, 3), w.left.transpose(1, 0, 3, 2))
    return blocks.transpose(0, 2, 3, 1).reshape(m1 * m2, n1 * n2)


@functools.singledispatch
def num_params(tn) -> int:
    """Number of stored scalars (per structure, for a vmapped batch):
    ``LowRank`` ``r (d_out + d_in)``; ``Kronecker`` ``m1 n1 + m2 n2``;
    ``BlockTT`` ``r (n2 m1 n1 + m1 m2 n2)``."""
    check(tn)


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
def flops(tn, batch: int = 1) -> int:
    """Floating-point operations (2 per multiply-add) of ``matvec`` on ``batch``
    vectors, as ``matvec`` computes it: ``LowRank`` ``2 B r (d_in + d_out)``;
    ``Kronecker`` ``2 B (n1 n2 m2 + m1 n1 m2)``; ``BlockTT``
    ``2 B r (n2 m1 n1 + m1 m2 n2)`` (= ``2 B num_params``)."""
    check(tn)


@flops.register
def _(w: LowRank, batch: int = 1) -> int:
    return 2 * check_int(batch, "batch") * w.rank * (w.d_in + w.d_out)


@flops.register
def _(w: Kronecker, batch: int = 1) -> int:
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    return 2 * check_int(batch, "batch") * (n1 * n2 * m2 + m1 * n1 * m2)


@flops.register
def _(w: BlockTT, batch: int = 1) -> int:
    return 2 * check_int(batch, "batch") * num_params(w)


def inner(a, b):
    """Frobenius inner product ``sum conj(A) * B`` of the matrices ``a`` and ``b`` stand
    for (any two kinds of the same shape). Two ``Kronecker`` give ``<a1, a2> <b1, b2>``
    and two ``LowRank`` ``trace((u_a^H u_b)(v_b v_a^H))`` without the dense matrices;
    other pairs go through ``to_dense``."""
    check(a, "a")
    check(b, "b")
    if (a.d_out, a.d_in) != (b.d_out, b.d_in):
        raise ValueError(f"shapes differ: a is {(a.d_out, a.d_in)}, b is {(b.d_out, b.d_in)}")
    if isinstance(a, Kronecker) and isinstance(b, Kronecker) and (
            a.in_factors, a.out_factors) == (b.in_factors, b.out_factors):
        return jnp.vdot(a.a, b.a) * jnp.vdot(a.b, b.b)
    if isinstance(a, LowRank) and isinstance(b, LowRank):
        return jnp.sum((a.u.conj().T @ b.u) * (a.v.conj() @ b.v.T))
    return jnp.vdot(to_dense(a), to_dense(b))


def norm(tn):
    """Frobenius norm of the matrix ``tn`` stands for (``sqrt(inner(tn, tn))``)."""
    return _numerics.safe_sqrt(jnp.maximum(jnp.real(inner(tn, tn)), 0))


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


from tnlib._kron_ops import (  # noqa: E402  (re-exports; _kron_ops imports this module's types)
    cholesky,
    det,
    inv,
    slogdet,
)
