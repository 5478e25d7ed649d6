"""Tensor trains (MPS) and TT-matrices (MPO).

A ``TensorTrain`` holds cores of shape ``(r_{k-1}, n_k, r_k)`` with boundary ranks
``r_0 = r_L = 1``; a ``TTMatrix`` holds cores ``(r_{k-1}, m_k, n_k, r_k)`` (output
mode ``m``, input mode ``n``). Sizes and ranks are read from the arrays' shapes
(trailing axes, so a batch of networks stacked on leading axes reports them
right); nothing is stored beside the arrays.

Every function here is pure and works eagerly, under ``jit``, ``vmap`` and
``grad``. Functions that change ranks take a static ``max_rank``; a tolerance
``rtol`` alone picks a data-dependent rank and so needs concrete inputs (outside
``jit``); with both, ranks come from ``max_rank`` and ``rtol`` only zeroes
singular values.

Long chains with uniform bond dimension are contracted with ``lax.scan`` over the
stacked cores (``stack``), and sweeps carry a running log-scale so hundreds of sites
stay finite in float32.

Performance notes (``benchmarks/README.md`` has the measurements):

- *Compile time.* On stacked ``(L, r, n, r)`` cores (``sweep_features``) it does not
  grow with ``L`` (0.14 s at 64 and at 1024 sites on this project's CPU). A
  ``TensorTrain`` is a tuple of ``L`` separate arrays, and the copy that stacks them
  for the scan is one XLA concatenate of ``L`` operands, whose compile time grows with
  ``L``: ``contract_features`` on a tuple compiles in 0.20 s at 64 sites and 0.85 s at
  1024 with ``method="scan"`` (quimb 1.7 s and 30.5 s, tensornetwork 2.6 s and 55 s).
  Code that compiles long uniform chains often should keep the cores stacked.
- *Tiny calls.* A call on a chain of a few sites with small bonds is dispatch-bound
  (about 30 microseconds for an 8-site inner product at bond 8, within 10% of
  tensornetwork's and quimb-jax's): run many such independent contractions as one
  ``jax.vmap``-ed call over stacked batches of cores.
- *SVD routes.* ``from_dense`` and ``round`` take ``svd=``; the default takes the Gram
  route in double precision (see ``linalg.svd``), 2.5-6.9x faster than LAPACK's SVD
  on the benchmark's TT-SVDs at the same error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from tnlib import _numerics, _tt_sweeps, linalg
from tnlib._validate import check_cores as _check_cores
from tnlib._validate import check_dims as _check_dims
from tnlib._validate import check_int as _check_int
from tnlib._validate import check_size as _check_size
from tnlib._validate import rank_sequence as _rank_sequence
from tnlib.struct import pytree_dataclass

__all__ = [
    "TensorTrain", "TTMatrix", "random", "from_dense", "to_dense", "inner", "norm",
    "log_norm", "add", "scale", "hadamard", "orthogonalize", "round", "matvec", "matmul",
    "stack", "sweep_features", "contract_features", "feature_method", "check", "num_params",
    "flops",
    # tnlib/_tt_ops.py
    "ones", "zeros", "eye", "pad_rank", "renormalize", "transpose", "conj_transpose", "trace",
    "bilinear_form", "bilinear_form_two_mat", "quadratic_form", "matmul_matrices", "getitem",
    "gather", "schmidt_values", "entropy", "reduced_density_matrix", "mutual_information",
    "project_tangent", "hessian_vector_product",
]


@pytree_dataclass
class TensorTrain:
    """Tensor train / MPS: ``cores[k]`` has shape ``(r_{k-1}, n_k, r_k)``, ``r_0 = r_L = 1``."""

    cores: tuple

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(c.shape[-2] for c in self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        """All ``L + 1`` bond dimensions, boundaries included."""
        return (self.cores[0].shape[-3],) + tuple(c.shape[-1] for c in self.cores)

    @property
    def n_sites(self) -> int:
        return len(self.cores)

    @property
    def dtype(self):
        return jnp.result_type(*self.cores)

    def __getitem__(self, index):
        """``tt[1:3, 0, :]``: see ``tnlib.tt.getitem``."""
        return getitem(self, index)

    __iter__ = None  # indexing takes one entry per site; iterating is not meant


@pytree_dataclass
class TTMatrix:
    """TT-matrix / MPO: ``cores[k]`` has shape ``(r_{k-1}, m_k, n_k, r_k)``.

    It represents a ``(prod m_k) x (prod n_k)`` matrix whose row index is the
    row-major flattening of ``(m_1, ..., m_L)`` and column index that of
    ``(n_1, ..., n_L)``.
    """

    cores: tuple

    @property
    def row_dims(self) -> tuple[int, ...]:
        return tuple(c.shape[-3] for c in self.cores)

    @property
    def col_dims(self) -> tuple[int, ...]:
        return tuple(c.shape[-2] for c in self.cores)

    @property
    def shape(self) -> tuple[int, int]:
        return math.prod(self.row_dims), math.prod(self.col_dims)

    @property
    def ranks(self) -> tuple[int, ...]:
        return (self.cores[0].shape[-4],) + tuple(c.shape[-1] for c in self.cores)

    @property
    def n_sites(self) -> int:
        return len(self.cores)

    @property
    def dtype(self):
        return jnp.result_type(*self.cores)


# ----------------------------------------------------------------------------- checks


def check(tt, name: str = "tt"):
    """Validate a TensorTrain / TTMatrix's core shapes (static; works under jit).

    Raises ValueError naming the site and both shapes when neighbouring bonds
    disagree, and when a core has the wrong number of axes or the boundary ranks
    are not 1. Returns ``tt`` unchanged.
    """
    cores = tt.cores
    if isinstance(tt, TTMatrix):
        _check_cores(cores, name, 4, "(r_left, n_out, n_in, r_right)")
    else:
        _check_cores(cores, name, 3, "(r_left, n, r_right)")
    if cores[0].shape[0] != 1 or cores[-1].shape[-1] != 1:
        raise ValueError(
            f"{name}: open-boundary ranks must be 1, got left {cores[0].shape[0]} at site 0 "
            f"and right {cores[-1].shape[-1]} at site {len(cores) - 1}"
        )
    return tt


def _check_same_dims(a, b):
    da = a.dims if isinstance(a, TensorTrain) else (a.row_dims, a.col_dims)
    db = b.dims if isinstance(b, TensorTrain) else (b.row_dims, b.col_dims)
    if da != db:
        raise ValueError(f"mode sizes differ: a has {da}, b has {db}")


def _internal_ranks(rank, n_sites: int) -> tuple[int, ...]:
    inner = _rank_sequence(rank, n_sites - 1, "rank", "internal ranks")
    return (1,) + inner + (1,)


# ------------------------------------------------------------------------ construction


def random(key, dims: Sequence[int], rank, dtype=jnp.float32, *, col_dims=None):
    """Random TT with Gaussian cores scaled so that ``E ||tt||_F^2 = 1``.

    Args:
      key: PRNG key.
      dims: mode sizes ``(n_1, ..., n_L)`` (row sizes when ``col_dims`` is given).
      rank: an int (all internal bonds) or a sequence of ``L - 1`` internal ranks.
        Ranks above what an unfolding allows are kept as given: the train is then
        redundant (``round`` or ``orthogonalize`` shrinks such bonds exactly).
      dtype: float or complex dtype.
      col_dims: when given, return a ``TTMatrix`` with these column sizes.
    """
    dims = _check_dims(dims)
    if col_dims is not None:
        col_dims = _check_dims(col_dims, "col_dims")
        if len(col_dims) != len(dims):
            raise ValueError(f"col_dims {col_dims} must have as many sites as dims {dims}")
    ranks = _internal_ranks(rank, len(dims))
    keys = jax.random.split(key, len(dims))
    cores = []
    for k, n in enumerate(dims):
        phys = (n,) if col_dims is None else (n, col_dims[k])
        size = math.prod(phys)
        std = 1.0 / math.sqrt(size * math.sqrt(ranks[k] * ranks[k + 1]))
        shape = (ranks[k], *phys, ranks[k + 1])
        cores.append(std * jax.random.normal(keys[k], shape, dtype))
    return TensorTrain(tuple(cores)) if col_dims is None else TTMatrix(tuple(cores))


def _tt_svd(x, dims, max_rank, rtol, svd):
    """TT-SVD of ``x`` reshaped to ``dims``; returns cores ``(r, n, r')``."""
    caps = _tt_ops.bond_caps(max_rank, len(dims))  # per bond: an int or a list
    _numerics.check_rank_args(None, rtol, x)
    method = _svd_route(svd, x, max_rank, rtol, "from_dense")
    if rtol is not None and max_rank is None and not linalg.is_concrete(x):
        raise TypeError(
            "from_dense with only rtol picks a data-dependent rank and needs a concrete "
            "tensor; inside jit also pass a static max_rank"
        )
    n_sites = len(dims)
    abs_tol = None
    if rtol is not None and n_sites > 1:
        abs_tol = rtol * jnp.linalg.norm(x.ravel()) / math.sqrt(n_sites - 1)
    cores, r = [], 1
    rest = x.reshape(dims[0], -1)
    for k in range(n_sites - 1):
        rows, cols = rest.shape
        if rtol is None and rows <= cols and (caps is None or rows <= caps[k]):
            # Nothing to truncate at this bond: every orthonormal basis of the row space
            # gives the same tensor, and the identity costs no decomposition and no pass
            # over the data (the first bonds, where the unfoldings are widest, are
            # usually these: 2^20 entries at max_rank 32 skip five of nineteen splits).
            cores.append(jnp.eye(rows, dtype=rest.dtype).reshape(r, dims[k], rows))
            r = rows
            rest = rest.reshape(r * dims[k + 1], -1)
            continue
        # a static cap (alone or with rtol) is known before the split; rtol alone
        # needs the whole spectrum first
        cap = None if caps is None or max_rank is None else min(caps[k], *rest.shape)
        u, s, svh = linalg.truncated_split(rest, cap, method=method)
        keep = s.shape[-1]
        if abs_tol is not None and max_rank is None:
            keep = linalg.tolerance_rank(s, abs_tol)
        u, s, svh = u[:, :keep], s[:keep], svh[:keep]
        if abs_tol is not None and max_rank is not None:
            # the tail already cut by max_rank counts against the tolerance budget
            svh = svh * linalg.tolerance_mask(s, abs_tol)[:, None].astype(svh.dtype)
        cores.append(u.reshape(r, dims[k], keep))
        r = keep
        rest = svh.reshape(r * dims[k + 1], -1)
    cores.append(rest.reshape(r, dims[-1], 1))
    return cores


def _svd_route(svd, x, max_rank, rtol, owner):
    """``linalg.svd_method`` for a TT truncation; randomized needs a rank cap."""
    method = linalg.svd_method(svd, x, rtol=rtol,
                               truncating=max_rank is not None or rtol is not None)
    if method == "randomized" and max_rank is None:
        raise ValueError(f"{owner} with svd='randomized' needs max_rank (the ranks to find)")
    return method


def from_dense(x, *, max_rank: int | None = None, rtol: float | None = None,
               row_dims=None, col_dims=None, svd: str = "auto"):
    """TT-SVD (Oseledets 2011) of a dense tensor.

    Args:
      x: dense array; its shape gives the mode sizes. For a TT-matrix pass a
        matrix (or any array of ``prod(row_dims) * prod(col_dims)`` entries) with
        ``row_dims`` and ``col_dims``.
      max_rank: static cap on every bond (Python int >= 1), or per bond: a list of the
        ``L - 1`` internal caps, or of all ``L + 1`` ranks with the boundary 1s as t3f's
        ``to_tt_tensor(max_tt_rank=[...])`` / tensorly's ``tensor_train(x, rank=[...])``.
      rtol: relative Frobenius tolerance. With only ``rtol`` the result satisfies
        ``||x - tt||_F <= rtol * ||x||_F`` with the smallest ranks the sweep finds
        (needs concrete ``x``); with ``max_rank`` too it only zeroes singular values.
      row_dims, col_dims: mode sizes of a TT-matrix; both or neither.
      svd: how each unfolding is decomposed, one of ``linalg.SVD_METHODS``:
        ``"lapack"``, ``"gram"`` (eigendecomposition of the unfolding's Gram matrix,
        quimb's ``svd:eig``: faster, resolves singular values down to ``sqrt(eps)``
        of the largest; see ``linalg.svd``), ``"randomized"``
        (``linalg.randomized_svd`` at each bond's cap; needs ``max_rank``) or
        ``"auto"``: the Gram route in double precision when ``max_rank`` or an
        ``rtol >= linalg.GRAM_MIN_RTOL`` truncates, else LAPACK (an untruncated
        TT-SVD stays exact to rounding).

    Returns:
      ``TensorTrain`` (or ``TTMatrix`` when ``row_dims``/``col_dims`` are given).
    """
    x = jnp.asarray(x)
    if (row_dims is None) != (col_dims is None):
        raise ValueError("pass both row_dims and col_dims for a TT-matrix, or neither")
    if row_dims is None:
        if x.ndim == 0:
            raise ValueError("x must have at least one axis")
        return TensorTrain(tuple(_tt_svd(x, x.shape, max_rank, rtol, svd)))
    row_dims, col_dims = _check_dims(row_dims, "row_dims"), _check_dims(col_dims, "col_dims")
    if len(row_dims) != len(col_dims):
        raise ValueError(f"row_dims {row_dims} and col_dims {col_dims} differ in length")
    if x.size != math.prod(row_dims) * math.prod(col_dims):
        raise ValueError(
            f"x has shape {x.shape} ({x.size} entries); row_dims {row_dims} x col_dims "
            f"{col_dims} need {math.prod(row_dims) * math.prod(col_dims)}"
        )
    n_sites = len(row_dims)
    t = x.reshape(row_dims + col_dims)
    order = [ax for k in range(n_sites) for ax in (k, n_sites + k)]
    t = t.transpose(order)
    merged = tuple(m * n for m, n in zip(row_dims, col_dims, strict=True))
    cores = _tt_svd(t.reshape(merged), merged, max_rank, rtol, svd)
    return TTMatrix(tuple(
        c.reshape(c.shape[0], m, n, c.shape[-1])
        for c, m, n in zip(cores, row_dims, col_dims, strict=True)
    ))


def to_dense(tn):
    """The dense tensor (shape ``dims``) or matrix (shape ``ttm.shape``) represented;
    a ValueError naming the size when it exceeds ``_validate.max_bytes()``."""
    check(tn)
    _check_size(tn.shape if isinstance(tn, TTMatrix) else tn.dims, tn.cores[0].dtype,
                "tt.to_dense")
    if isinstance(tn, TTMatrix):
        flat = TensorTrain(tuple(c.reshape(c.shape[0], -1, c.shape[-1]) for c in tn.cores))
        t = to_dense(flat).reshape(
            tuple(x for m, n in zip(tn.row_dims, tn.col_dims, strict=True) for x in (m, n))
        )
        n_sites = tn.n_sites
        order = list(range(0, 2 * n_sites, 2)) + list(range(1, 2 * n_sites, 2))
        return t.transpose(order).reshape(tn.shape)
    res = tn.cores[0].reshape(-1, tn.cores[0].shape[-1])
    for c in tn.cores[1:]:
        res = (res @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
    return res.reshape(tn.dims)


# --------------------------------------------------------------------------- algebra


def add(a, b):
    """``a + b`` as a TT whose ranks are the sums of the operands' ranks."""
    check(a, "a")
    check(b, "b")
    _check_same_dims(a, b)
    L = a.n_sites
    if L == 1:
        return type(a)((a.cores[0] + b.cores[0],))
    cores = []
    for k, (x, y) in enumerate(zip(a.cores, b.cores, strict=True)):
        dt = jnp.result_type(x, y)
        if k == 0:
            cores.append(jnp.concatenate([x, y], axis=-1).astype(dt))
        elif k == L - 1:
            cores.append(jnp.concatenate([x, y], axis=0).astype(dt))
        else:
            rx, ry = x.shape[0], y.shape[0]
            top = jnp.concatenate([x, jnp.zeros((rx, *y.shape[1:-1], y.shape[-1]), dt)], -1)
            bot = jnp.concatenate([jnp.zeros((ry, *x.shape[1:-1], x.shape[-1]), dt), y], -1)
            cores.append(jnp.concatenate([top, bot], axis=0).astype(dt))
    return type(a)(tuple(cores))


def scale(tt, alpha):
    """``alpha * tt`` (the factor goes into the first core)."""
    check(tt)
    first = tt.cores[0] * alpha
    return type(tt)((first,) + tuple(tt.cores[1:]))


def hadamard(a, b):
    """Elementwise product; ranks multiply."""
    check(a, "a")
    check(b, "b")
    _check_same_dims(a, b)
    if isinstance(a, TTMatrix):
        raise TypeError("hadamard takes two TensorTrains")
    cores = []
    for x, y in zip(a.cores, b.cores, strict=True):
        z = jnp.einsum("anb,cnd->acnbd", x, y)
        cores.append(z.reshape(x.shape[0] * y.shape[0], x.shape[1], x.shape[2] * y.shape[2]))
    return TensorTrain(tuple(cores))


_compute_dtype = _tt_sweeps.compute_dtype  # at least float32
_acc_dtype = _tt_sweeps.acc_dtype  # the running log-scale's real dtype


def inner(a, b):
    """``<a, b> = sum conj(a) * b`` (the first argument is conjugated).

    Transfer-matrix sweep; the ends of the chain, where the dense unfolding is no
    larger than the bond environment, are contracted densely (one GEMM per site)."""
    check(a, "a")
    check(b, "b")
    _check_same_dims(a, b)
    if isinstance(a, TTMatrix):
        a, b = (TensorTrain(tuple(c.reshape(c.shape[0], -1, c.shape[-1]) for c in t.cores))
                for t in (a, b))
    dt = jnp.result_type(a.dtype, b.dtype)
    return _tt_sweeps.inner([c.astype(dt) for c in a.cores], [c.astype(dt) for c in b.cores])


def log_norm(tn):
    """``log ||tn||_F``, computed with a running rescaling: finite for any length.

    Chains of uniform bond dimension and at least ``_tt_sweeps.SCAN_MIN_SITES`` (64)
    sites are swept with ``lax.scan`` over stacked cores (compile time independent of
    the length); shorter ones site by site (faster on CPU). Computed in at least
    float32 (bfloat16 / float16 cores are promoted).
    """
    check(tn)
    if isinstance(tn, TTMatrix):
        tn = TensorTrain(tuple(c.reshape(c.shape[0], -1, c.shape[-1]) for c in tn.cores))
    long = tn.n_sites >= _tt_sweeps.SCAN_MIN_SITES
    return _tt_sweeps.log_norm(tn.cores, stack(tn) if long else None)


def norm(tn):
    """Frobenius norm ``||tn||_F`` (via ``log_norm``, so long chains do not overflow
    in the intermediate sums)."""
    return jnp.exp(log_norm(tn))


# ----------------------------------------------------------------- canonical forms


def orthogonalize(tn, center: int):
    """Bring ``tn`` into mixed-canonical form around site ``center``.

    Cores left of ``center`` become left-orthogonal (their ``(r*n, r')`` unfolding
    has orthonormal columns), cores right of it right-orthogonal. ``center=L-1``
    gives the left-canonical form, ``center=0`` the right-canonical one. Redundant
    bonds shrink exactly (the tensor is unchanged) on the orthogonalized side: bond
    ``k`` (between sites ``k`` and ``k+1``) to at most ``prod(dims[:k+1])`` left of
    ``center``, to at most ``prod(dims[k+1:])`` from ``center`` on; ``round`` bounds
    every bond by both. A ``TTMatrix`` is orthogonalized over its merged modes
    ``m_k n_k`` (quimb ``MPO.canonize``).
    """
    check(tn)
    if isinstance(tn, TTMatrix):
        return _tt_ops.from_flat(orthogonalize(_tt_ops.as_flat(tn), center), tn)
    L = tn.n_sites
    if isinstance(center, bool) or not isinstance(center, int) or not 0 <= center < L:
        raise ValueError(f"center must be an int in [0, {L - 1}], got {center!r}")
    cores = list(tn.cores)
    for k in range(center):
        r, n, _ = cores[k].shape
        q, rr = linalg.qr(cores[k].reshape(r * n, -1))
        cores[k] = q.reshape(r, n, -1)
        cores[k + 1] = jnp.einsum("ab,bnc->anc", rr, cores[k + 1])
    for k in range(L - 1, center, -1):
        _, n, r = cores[k].shape
        q, rr = linalg.qr(cores[k].reshape(-1, n * r).T)
        cores[k] = q.T.reshape(-1, n, r)
        cores[k - 1] = jnp.einsum("anb,cb->anc", cores[k - 1], rr)
    return TensorTrain(tuple(cores))


def round(tn, *, max_rank: int | None = None, rtol: float | None = None, svd: str = "auto"):
    """TT-rounding: left-orthogonalize, then truncate each bond by SVD right to left.

    With only ``rtol`` (concrete input) the result satisfies
    ``||tn - out||_F <= rtol * ||tn||_F`` with the smallest ranks the sweep finds.
    ``max_rank`` (static) caps the bonds: an int, or per bond as in ``from_dense``;
    with both, ``rtol`` only zeroes values. A ``TTMatrix`` is rounded over its merged
    modes ``m_k n_k`` (t3f ``round`` of a TT-matrix, quimb ``MPO.compress``).
    ``svd`` picks the route of each bond's SVD as in ``from_dense`` (``"auto"``: the
    Gram route in double precision, where quimb's fastest ``method`` is ``"eig"``).
    """
    check(tn)
    if isinstance(tn, TTMatrix):
        flat = round(_tt_ops.as_flat(tn), max_rank=max_rank, rtol=rtol, svd=svd)
        return _tt_ops.from_flat(flat, tn)
    caps = _tt_ops.bond_caps(max_rank, tn.n_sites)
    _numerics.check_rank_args(None, rtol)
    if rtol is not None and max_rank is None and not linalg.is_concrete(tn):
        raise TypeError(
            "round with only rtol picks a data-dependent rank and needs concrete cores; "
            "inside jit also pass a static max_rank"
        )
    L = tn.n_sites
    method = _svd_route(svd, tn.cores[0], max_rank, rtol, "round")
    cores = list(orthogonalize(tn, L - 1).cores)
    abs_tol = None
    if rtol is not None and L > 1:
        abs_tol = rtol * jnp.linalg.norm(cores[-1].ravel()) / math.sqrt(L - 1)
    for k in range(L - 1, 0, -1):
        _, n, r = cores[k].shape
        mat = cores[k].reshape(-1, n * r)
        if method == "randomized":
            u, s, vh = linalg.randomized_svd(mat, min(caps[k - 1], *mat.shape))
        elif method == "gram":
            cap = None if caps is None or max_rank is None else min(caps[k - 1], *mat.shape)
            u, s, vh = linalg.truncated_svd(mat, cap, method="gram")
        elif mat.shape[0] < mat.shape[1]:
            # wide: decompose the transpose, which LAPACK reduces by its own QR, and
            # spare linalg.svd's extra QR and product (mat = vht^T s ut^T)
            ut, s, vht = linalg.svd(mat.T)
            u, vh = vht.T, ut.T
        else:
            u, s, vh = linalg.svd(mat)
        keep = s.shape[-1] if caps is None else min(caps[k - 1], s.shape[-1])
        if abs_tol is not None and max_rank is None:
            keep = linalg.tolerance_rank(s, abs_tol)
        u, s, vh = u[:, :keep], s[:keep], vh[:keep]
        if abs_tol is not None and max_rank is not None:
            s = s * linalg.tolerance_mask(s, abs_tol)
        cores[k] = vh.reshape(keep, n, r)
        cores[k - 1] = jnp.einsum("anb,bc->anc", cores[k - 1], u * s.astype(u.dtype))
    return TensorTrain(tuple(cores))


def num_params(tn) -> int:
    """Stored scalars, ``sum_k r_{k-1} n_k r_k`` (``r_{k-1} m_k n_k r_k`` for a
    TTMatrix), read from the cores' trailing axes: a vmapped batch counts one train,
    and abstract cores (``jax.ShapeDtypeStruct``) work too."""
    if not isinstance(tn, TensorTrain | TTMatrix):
        raise TypeError(f"tn must be a TensorTrain or TTMatrix, got {type(tn).__name__}")
    k = 3 if isinstance(tn, TensorTrain) else 4
    return sum(math.prod(c.shape[-k:]) for c in tn.cores)


def flops(tn: TTMatrix, batch: int = 1) -> int:
    """FLOPs (2 per multiply-add) of ``matvec`` on ``batch`` vectors, as it contracts
    site by site: ``2 B sum_k r_{k-1} m_k n_k r_k prod(n_{>k}) prod(m_{<k})``."""
    if not isinstance(tn, TTMatrix):
        raise TypeError(f"flops counts TTMatrix.matvec; tn is a {type(tn).__name__}")
    batch, rows, cols = _check_int(batch, "batch"), tn.row_dims, tn.col_dims
    return 2 * batch * sum(
        math.prod(c.shape[-4:]) * math.prod(cols[k + 1:]) * math.prod(rows[:k])
        for k, c in enumerate(tn.cores))


# --------------------------------------------------------------------- TT-matrices


def matvec(ttm: TTMatrix, x):
    """``ttm @ x`` for ``x`` of shape ``(..., prod(col_dims))`` (one vector or a batch).

    Contracts one site at a time, never forming the dense matrix: the state is
    ``(B, n_k, ..., n_L, m_1, ..., m_{k-1}, r)``; each site moves ``n_k`` next to the
    bond and is one ``(B ..., r n_k) @ (r n_k, m_k r')`` GEMM, the batch in its rows.
    Returns ``(..., prod(row_dims))``.
    """
    check(ttm, "ttm")
    if not isinstance(ttm, TTMatrix):
        raise TypeError(f"ttm must be a TTMatrix, got {type(ttm).__name__}")
    x = jnp.asarray(x)
    n_in = ttm.shape[1]
    if x.ndim == 0 or x.shape[-1] != n_in:
        raise ValueError(f"x must have shape (..., {n_in}) with {n_in} = prod(col_dims "
                         f"{ttm.col_dims}), got {x.shape}")
    lead = x.shape[:-1]
    s = x.reshape((-1,) + tuple(ttm.col_dims) + (1,))
    for core in ttm.cores:
        a, m, n, b = core.shape
        s = jnp.moveaxis(s, 1, -1)  # (B, rest, a, n_k)
        rest = s.shape[1:-2]
        s = jnp.matmul(s.reshape(-1, a * n), core.transpose(0, 2, 1, 3).reshape(a * n, m * b))
        s = s.reshape((-1,) + rest + (m, b))
    return s.reshape(lead + (ttm.shape[0],))


def matmul(ttm: TTMatrix, tt: TensorTrain) -> TensorTrain:
    """``ttm @ tt``: a TT-matrix applied to a TT; ranks multiply (round afterwards).
    With a ``TTMatrix`` ``tt``, the TT-matrix product (``matmul_matrices``).

    Output core ``k`` has shape ``(a c, m, b d)`` for cores ``(a, m, n, b)`` and
    ``(c, n, d)``, dtype ``jnp.result_type`` of the two (bfloat16 / float16 computed
    in float32 for mode sizes up to 8)."""
    if isinstance(ttm, TTMatrix) and isinstance(tt, TTMatrix):
        return matmul_matrices(ttm, tt)  # TT-matrix x TT-matrix
    check(ttm, "ttm")
    check(tt, "tt")
    if not isinstance(ttm, TTMatrix) or not isinstance(tt, TensorTrain):
        raise TypeError("matmul(ttm, tt) takes a TTMatrix and a TensorTrain (or TTMatrix)")
    if ttm.col_dims != tt.dims:
        raise ValueError(f"ttm.col_dims {ttm.col_dims} do not match tt.dims {tt.dims}")
    # site k: (a, m, n, b) x (c, n, d) -> (a c, m, b d); small n as one fused
    # multiply-add loop writing the output in order (see tnlib/_tt_sweeps.py)
    return TensorTrain(tuple(_tt_sweeps.matmul_core(a, b)
                             for a, b in zip(ttm.cores, tt.cores, strict=True)))


from tnlib import _tt_ops  # noqa: E402  (shared helpers: per-bond caps, TT-matrix <-> TT)
from tnlib._tt_chains import (  # noqa: E402  (re-exports; _tt_chains imports this module's types)
    contract_features,
    feature_method,
    stack,
    sweep_features,
)
from tnlib._tt_ops import (  # noqa: E402  (re-exports; _tt_ops imports this module's types)
    bilinear_form,
    bilinear_form_two_mat,
    conj_transpose,
    entropy,
    eye,
    gather,
    getitem,
    hessian_vector_product,
    matmul_matrices,
    mutual_information,
    ones,
    pad_rank,
    project_tangent,
    quadratic_form,
    reduced_density_matrix,
    renormalize,
    schmidt_values,
    trace,
    transpose,
    zeros,
)
