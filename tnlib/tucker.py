"""Tucker decompositions: a core tensor multiplied by one factor matrix per mode.

A ``Tucker`` holds a ``core`` of shape ``(r_1, ..., r_N)`` and ``factors``, a tuple
of ``N`` matrices of shape ``(n_k, r_k)``; it represents the tensor

    x[i_1, ..., i_N] = sum_{a} core[a_1, ..., a_N] * prod_k factors[k][i_k, a_k],

written ``core x_1 U_1 x_2 ... x_N U_N`` with the mode product ``x_k``. Sizes and
ranks are read from the factors' trailing axes (so a batch of decompositions
stacked on leading axes by ``vmap`` still reports them right); nothing is stored
beside the arrays.

Constructors: ``random`` (orthonormal factors), ``hosvd`` / ``from_dense``
(truncated higher-order SVD, De Lathauwer et al. 2000) and ``hooi`` (higher-order
orthogonal iteration from the HOSVD, a fixed number of sweeps, jittable; with a
``mask`` for missing data). In ``tnlib/_tucker_fits.py``: ``partial_hooi`` (only some
modes, tensorly's ``partial_tucker``), ``nonneg_hals`` (non-negative Tucker) and
``normalize`` (unit factor columns, tensorly's ``tucker_normalize``).
Multilinear ranks are static: inside ``jit`` pass ranks (or ``max_rank``); a
tolerance ``rtol`` alone picks data-dependent ranks and needs a concrete tensor
(outside ``jit``); with ranks too, ``rtol`` only zeroes core slices.

``inner`` and ``norm`` never form the dense tensor: they contract the factors'
Gram matrices with the cores. SVD and QR come from ``tnlib.linalg`` so
gradients stay finite on degenerate spectra.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from tnlib import _numerics, linalg
from tnlib._tucker_ops import check_ranks as _check_ranks
from tnlib._tucker_ops import dense_mode_product as _dense_mode_product
from tnlib._tucker_ops import leading_vectors as _leading_vectors
from tnlib._tucker_ops import max_ranks as _max_ranks
from tnlib._tucker_ops import project as _project
from tnlib._tucker_ops import unfold as _unfold
from tnlib._validate import check_dims as _check_dims
from tnlib._validate import check_same_dims as _check_same_dims
from tnlib._validate import check_size as _check_size
from tnlib.struct import pytree_dataclass

__all__ = [
    "Tucker", "random", "hosvd", "from_dense", "hooi", "to_dense", "mode_product", "inner",
    "norm", "multilinear_singular_values", "num_params", "check",
    # tnlib/_tucker_fits.py
    "normalize", "partial_hooi", "nonneg_hals",
]


@pytree_dataclass
class Tucker:
    """Tucker tensor: ``core`` of shape ``(r_1, ..., r_N)``, ``factors[k]`` of shape
    ``(n_k, r_k)``. Represents ``core x_1 factors[0] ... x_N factors[N-1]``."""

    core: jax.Array
    factors: tuple

    @property
    def dims(self) -> tuple[int, ...]:
        """Mode sizes ``(n_1, ..., n_N)``."""
        return tuple(f.shape[-2] for f in self.factors)

    @property
    def ranks(self) -> tuple[int, ...]:
        """Multilinear ranks ``(r_1, ..., r_N)`` (the core's shape)."""
        return tuple(f.shape[-1] for f in self.factors)

    @property
    def n_modes(self) -> int:
        return len(self.factors)

    @property
    def dtype(self):
        return jnp.result_type(self.core, *self.factors)


# ----------------------------------------------------------------------------- checks


def check(t, name: str = "t"):
    """Validate a Tucker's shapes (static; works under jit); returns ``t`` unchanged.

    Raises TypeError when ``t`` is not a ``Tucker`` and ValueError naming the mode
    and both shapes when a factor is not a matrix or the core's axis ``k`` does not
    match ``factors[k].shape[1]``.
    """
    if not isinstance(t, Tucker):
        raise TypeError(f"{name} must be a Tucker, got {type(t).__name__}")
    factors = t.factors
    if not isinstance(factors, tuple | list) or len(factors) == 0:
        raise ValueError(f"{name}: factors must be a non-empty tuple of (n_k, r_k) matrices")
    for k, f in enumerate(factors):
        if f.ndim != 2:
            raise ValueError(f"{name}: factor {k} has shape {tuple(f.shape)}; expected (n_k, r_k)")
    if t.core.ndim != len(factors):
        raise ValueError(
            f"{name}: core has shape {tuple(t.core.shape)} ({t.core.ndim} axes) but there are "
            f"{len(factors)} factors"
        )
    for k, f in enumerate(factors):
        if t.core.shape[k] != f.shape[1]:
            raise ValueError(
                f"{name}: mode {k} does not match: core has shape {tuple(t.core.shape)} "
                f"(size {t.core.shape[k]} on axis {k}), factor {k} has shape {tuple(f.shape)}"
            )
    return t


def _check_mode(mode, n_modes: int) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int) or not -n_modes <= mode < n_modes:
        raise ValueError(f"mode must be an int in [{-n_modes}, {n_modes - 1}], got {mode!r}")
    return mode % n_modes


def _as_tensor(x, name: str = "x"):
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one axis, got a scalar")
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


# ------------------------------------------------------------------- dense helpers


# ------------------------------------------------------------------------ construction


def random(key, dims: Sequence[int], rank, dtype=jnp.float32) -> Tucker:
    """Random Tucker tensor with orthonormal factors and a Gaussian core.

    The factors are the Q factors of Gaussian ``(n_k, r_k)`` matrices (orthonormal
    columns); the core's entries are i.i.d. normal with variance ``1 / prod(rank)``,
    so ``E ||t||_F^2 = 1``.

    Args:
      key: PRNG key.
      dims: mode sizes ``(n_1, ..., n_N)``.
      rank: an int (every mode) or ``N`` ranks, each at most
        ``min(n_k, prod_{j != k} n_j)``.
      dtype: float or complex dtype.
    """
    dims = _check_dims(dims)
    rank = _check_ranks(rank, dims, "rank")
    keys = jax.random.split(key, len(dims) + 1)
    factors = tuple(
        linalg.qr(jax.random.normal(keys[k], (n, r), dtype))[0]
        for k, (n, r) in enumerate(zip(dims, rank, strict=True))
    )
    core = jax.random.normal(keys[-1], rank, dtype) / math.sqrt(math.prod(rank))
    return Tucker(core, factors)


def hosvd(x, rank=None, rtol: float | None = None, *, svd: str = "auto") -> Tucker:
    """Truncated higher-order SVD of a dense tensor.

    Factor ``k`` holds the ``r_k`` leading left singular vectors of the mode-``k``
    unfolding of ``x`` (orthonormal columns); the core is ``x x_k factors[k]^H``.
    The squared error is at most the sum over modes of the discarded squared
    multilinear singular values,
    ``||x - t||_F^2 <= sum_k sum_{i > r_k} s_i^(k)^2``, and at least its largest term.

    Args:
      x: dense array with ``N >= 1`` axes (real or complex).
      rank: an int (every mode) or ``N`` per-mode ranks, static Python ints, each at
        most ``min(n_k, prod_{j != k} n_j)`` (larger is a ValueError saying the largest
        allowed value). ``None`` keeps those largest ranks: an exact decomposition.
      rtol: relative Frobenius tolerance. With only ``rtol`` (concrete ``x``, outside
        ``jit``) each mode keeps the fewest singular values whose discarded tail is
        at most ``rtol * ||x||_F / sqrt(N)``, so ``||x - t||_F <= rtol * ||x||_F``.
        With ``rank`` too, shapes come from ``rank`` and ``rtol`` only zeroes the
        core slices of values it would drop (jit-safe).
      svd: how each unfolding is decomposed, one of ``linalg.SVD_METHODS``:
        ``"lapack"``, ``"gram"`` (eigendecomposition of the unfolding's Gram matrix,
        faster, resolves singular values down to ``sqrt(eps)`` of the largest; see
        ``linalg.svd``), ``"randomized"`` (``linalg.randomized_svd``; needs
        ``rank``) or ``"auto"``: the Gram route in double precision when ranks or a
        tolerance of at least ``linalg.GRAM_MIN_RTOL`` truncate, else LAPACK.

    Returns:
      ``Tucker`` with core ``(r_1, ..., r_N)`` and factors ``(n_k, r_k)``.
    """
    x = _as_tensor(x)
    _numerics.check_rank_args(None, rtol, x)
    if rtol is not None and rank is None and not linalg.is_concrete(x):
        raise TypeError(
            "hosvd with only rtol picks data-dependent ranks and needs a concrete tensor; "
            "inside jit also pass static ranks (or max_rank to from_dense)"
        )
    dims = x.shape
    method = linalg.svd_method(svd, x, rtol=rtol, truncating=rank is not None or rtol is not None)
    if method == "randomized" and rank is None:
        raise ValueError("svd='randomized' needs rank (the ranks to find)")
    rank = _max_ranks(dims) if rank is None and rtol is None else rank
    if rank is not None:
        rank = _check_ranks(rank, dims, "rank")
    n_modes = x.ndim
    abs_tol = None
    if rtol is not None:
        abs_tol = rtol * jnp.linalg.norm(x.ravel()) / math.sqrt(n_modes)
    factors, masks = [], []
    for k in range(n_modes):
        mat = _unfold(x, k)
        if method == "randomized":
            u, s, _ = linalg.randomized_svd(mat, rank[k])
        else:  # the Gram route's left vectors are orthonormal when mat is not tall
            tall = mat.shape[0] > mat.shape[1]
            u, s, _ = linalg.svd(mat, method="lapack" if tall else method)
        if rank is None:
            keep = linalg.tolerance_rank(s, abs_tol)
            masks.append(None)
        else:
            keep = rank[k]
            # the mask is computed on the full spectrum: the tail cut by rank[k] counts
            masks.append(None if abs_tol is None else linalg.tolerance_mask(s, abs_tol)[:keep])
        factors.append(u[:, :keep])
    core = _project(x, factors)
    for k, m in enumerate(masks):
        if m is not None:
            shape = [1] * n_modes
            shape[k] = m.shape[0]
            core = core * m.reshape(shape).astype(core.dtype)
    return Tucker(core, tuple(factors))


def from_dense(x, *, max_rank: int | None = None, rtol: float | None = None,
               rank=None, svd: str = "auto") -> Tucker:
    """Truncated HOSVD (``hosvd``) with the argument names of ``tt.from_dense``.

    Args:
      x: dense array with ``N >= 1`` axes.
      max_rank: static cap (Python int >= 1) on every mode's rank; each mode keeps
        ``min(max_rank, n_k, prod_{j != k} n_j)`` (capped, never an error).
      rtol: relative Frobenius tolerance, as in ``hosvd``: alone it picks ranks with
        ``||x - t||_F <= rtol * ||x||_F`` (concrete ``x``); with ``max_rank`` or
        ``rank`` it only zeroes core slices.
      rank: exact per-mode ranks as in ``hosvd`` (an error when too large); do not
        combine with ``max_rank``.
      svd: the SVD route, as in ``hosvd``.
    """
    x = _as_tensor(x)
    _numerics.check_rank_args(max_rank, rtol, x)
    if max_rank is not None:
        if rank is not None:
            raise ValueError("pass max_rank (a cap) or rank (exact per-mode ranks), not both")
        rank = tuple(min(max_rank, r) for r in _max_ranks(x.shape))
    return hosvd(x, rank, rtol, svd=svd)


def hooi(x, rank, n_iter: int = 10, *, mask=None, svd: str = "auto") -> Tucker:
    """Higher-order orthogonal iteration (De Lathauwer et al. 2000), from the HOSVD.

    Each of the ``n_iter`` sweeps replaces factor ``k`` (for ``k = 1..N`` in turn)
    by the ``r_k`` leading left singular vectors of the mode-``k`` unfolding of
    ``x`` projected on the other current factors; the core is then
    ``x x_k factors[k]^H``. Every update maximizes ``||core||_F`` given the other
    factors, so the error ``||x - t||_F`` never increases: it is at most the
    HOSVD's. The iteration count is fixed (no convergence test) and the sweeps run
    in ``lax.fori_loop``, so compile time does not grow with ``n_iter``: jittable and
    differentiable, with ``rank`` and ``n_iter`` static.

    Args:
      x: dense array with ``N >= 1`` axes.
      rank: an int or ``N`` per-mode ranks, each at most ``min(n_k, prod_{j != k} n_j)``.
      n_iter: number of sweeps (Python int >= 0; 0 returns the HOSVD).
      mask: None, or an array of ``x.shape`` with 1 where ``x`` is observed and 0 where it
        is missing (missing data): each sweep first fills the missing entries with the
        current fit (an EM step, as tensorly's ``tucker(mask=...)``) and the start fills
        each unfolding 5 times with its own truncated SVD (``svd_mask_repeats=5``); the
        values of ``x`` at missing entries play no part. Traced like ``x`` under jit.
      svd: the SVD route of the start and of every factor update, as in ``hosvd``
        (``"auto"``: the Gram route in double precision); with ``mask``, LAPACK.

    Returns:
      ``Tucker`` with orthonormal factors.
    """
    x = _as_tensor(x)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be a Python int >= 0, got {n_iter!r}")
    if rank is None:
        raise ValueError("hooi needs rank (an int or one per mode)")
    rank = _check_ranks(rank, x.shape, "rank")
    if mask is not None:
        return _tucker_fits.masked_hooi(x, rank, n_iter, mask)
    method = linalg.svd_method(svd, x)
    factors = hosvd(x, rank, svd=method).factors
    if n_iter:
        _, factors = jax.lax.fori_loop(0, n_iter, _hooi_sweep(rank, method), (x, factors))
    return Tucker(_project(x, factors), tuple(factors))


@functools.lru_cache(maxsize=128)
def _hooi_sweep(ranks: tuple[int, ...], method: str):
    """One HOOI sweep as a ``fori_loop`` body. Cached per ``ranks`` and closing over
    nothing else (``x`` rides in the carry), so repeated eager calls reuse the traced
    loop instead of re-tracing it."""

    def sweep(_, carry):
        x, factors = carry
        factors = list(factors)
        for k in range(x.ndim):
            y = _project(x, factors, skip=k)
            factors[k] = _leading_vectors(_unfold(y, k), ranks[k], method)
        return x, tuple(factors)

    return sweep


def to_dense(tn: Tucker):
    """The dense tensor of shape ``tn.dims``: ``core x_1 factors[0] ... x_N factors[N-1]``
    (a ValueError naming the size when it exceeds ``_validate.max_bytes()``)."""
    check(tn)
    _check_size(tn.dims, tn.core.dtype, "tucker.to_dense")
    x = tn.core
    for k, f in enumerate(tn.factors):
        x = _dense_mode_product(x, f, k)
    return x


# --------------------------------------------------------------------------- algebra


def mode_product(x, matrix, mode: int):
    """Mode-``mode`` product ``x x_mode matrix``: contracts axis ``mode`` of ``x`` with
    the columns of ``matrix`` (shape ``(m, n_mode)``); that axis becomes size ``m``.
    A vector ``(n_mode,)`` contracts the mode away (tensorly's ``mode_dot`` with a
    vector): ``y[...] = sum_j v[j] x[..., j, ...]`` has one axis fewer.

    For a dense array, returns the dense array
    ``y[..., i, ...] = sum_j matrix[i, j] x[..., j, ...]``. For a ``Tucker``, returns
    a ``Tucker`` with ``factors[mode]`` replaced by ``matrix @ factors[mode]`` (same
    core and ranks; that factor is no longer orthonormal in general); with a vector,
    the ``Tucker`` of the other modes whose core is contracted with
    ``v @ factors[mode]`` along axis ``mode`` (a one-mode ``Tucker`` gives the scalar).
    Nothing is conjugated. ``mode`` may be negative.
    """
    matrix = jnp.asarray(matrix)
    if isinstance(x, Tucker):
        check(x, "x")
        dims = x.dims
    else:
        x = _as_tensor(x)
        dims = x.shape
    mode = _check_mode(mode, len(dims))
    if matrix.ndim not in (1, 2) or matrix.shape[-1] != dims[mode]:
        raise ValueError(
            f"matrix must have shape (m, {dims[mode]}) or ({dims[mode]},) to act on mode "
            f"{mode} of size {dims[mode]}, got {tuple(matrix.shape)}"
        )
    if isinstance(x, Tucker):
        factors = list(x.factors)
        if matrix.ndim == 1:
            row = matrix @ factors.pop(mode)
            core = jnp.tensordot(x.core, row, axes=([mode], [0]))
            return Tucker(core, tuple(factors)) if factors else core
        factors[mode] = matrix @ factors[mode]
        return Tucker(x.core, tuple(factors))
    if matrix.ndim == 1:
        return jnp.tensordot(x, matrix, axes=([mode], [0]))
    return _dense_mode_product(x, matrix, mode)


def inner(a: Tucker, b: Tucker):
    """``<a, b> = sum conj(a) * b`` (the first argument is conjugated), never dense.

    Contracts ``b``'s core with the cross-Gram matrices ``factors_a[k]^H factors_b[k]``
    (shape ``(ra_k, rb_k)``) and takes ``vdot`` with ``a``'s core: cost
    ``O(sum_k n_k ra_k rb_k + core contractions)``; ranks may differ.
    """
    check(a, "a")
    check(b, "b")
    _check_same_dims(a, b)
    y = b.core
    for k, (fa, fb) in enumerate(zip(a.factors, b.factors, strict=True)):
        y = _dense_mode_product(y, jnp.conj(fa).T @ fb, k)
    return jnp.vdot(a.core, y)


def norm(tn: Tucker):
    """Frobenius norm ``||tn||_F`` without forming the dense tensor.

    ``||tn||_F^2 = <core, core x_k G_k>`` with the Gram matrices
    ``G_k = factors[k]^H factors[k]`` (``(r_k, r_k)``): ``O(sum_k n_k r_k^2)`` plus
    core contractions. With orthonormal factors it equals ``||core||_F``.
    """
    check(tn)
    y = tn.core
    for k, f in enumerate(tn.factors):
        y = _dense_mode_product(y, jnp.conj(f).T @ f, k)
    sq = jnp.real(jnp.vdot(tn.core, y))
    return _numerics.safe_sqrt(jnp.maximum(sq, 0))


def multilinear_singular_values(x) -> tuple[jax.Array, ...]:
    """Singular values of each mode-``k`` unfolding of a dense ``x`` (descending).

    Returns a tuple of ``N`` arrays of lengths ``min(n_k, prod_{j != k} n_j)``:
    the spectra that HOSVD truncates and that core-shape (rank) selection reads.
    Their gradient (``real(u_i^H dA v_i)``) is finite even for repeated values.
    """
    x = _as_tensor(x)
    # Thin SVD (compute_uv=False still allocates a max(m, n)^2 matrix on CPU), with the
    # broadened backward of linalg.svd so repeated singular values keep finite gradients.
    return tuple(linalg.svd(_unfold(x, k))[1] for k in range(x.ndim))


def num_params(tn: Tucker) -> int:
    """Number of stored entries of one decomposition: ``prod r_k + sum n_k r_k``
    (sizes and ranks read from trailing axes, so a vmapped batch reports one member's)."""
    return math.prod(tn.ranks) + sum(n * r for n, r in zip(tn.dims, tn.ranks, strict=True))


from tnlib import _tucker_fits  # noqa: E402  (masked HOOI; _tucker_fits imports this module's types)
from tnlib._tucker_fits import (  # noqa: E402  (re-exports)
    nonneg_hals,
    normalize,
    partial_hooi,
)
