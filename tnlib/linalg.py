"""Decompositions with gradients that stay finite on degenerate spectra.

``jnp.linalg.svd``'s derivative contains ``1 / (s_i**2 - s_j**2)`` and ``1 / s_i``;
both are infinite for the repeated or zero singular values that tensor networks
meet all the time (a tensor of exact low rank truncated at a higher rank, a
random network padded with zero bonds). ``svd`` here uses the same formulas with
Lorentzian broadening, ``x / (x**2 + eps**2)`` in place of ``1 / x``, where ``eps``
is the dtype's machine epsilon times the largest singular value squared (or
times the largest singular value for ``1 / s``). Away from degeneracies this is the
exact derivative to within rounding; at them it is finite and gauge-invariant
quantities (the reconstructed matrix, its norm) get the right derivative.

``qr`` returns the reduced QR of any matrix, wide ones included (JAX's own QR
has no derivative for wide matrices), and regularizes the triangular solve in
its derivative when ``R`` is singular.

Truncation helpers keep shapes static: ``truncated_svd`` slices to a static
``max_rank``; a tolerance only zeroes singular values (``tolerance_mask``).
Choosing a data-dependent rank (``tolerance_rank``) needs concrete values and
therefore happens outside ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnlib._numerics import check_rank_args, is_concrete, low_precision, safe_sqrt

__all__ = [
    "svd",
    "qr",
    "truncated_svd",
    "tail_norms",
    "tolerance_rank",
    "tolerance_mask",
    "is_concrete",
]


def _H(x):
    return jnp.swapaxes(x.conj(), -1, -2)


def _safe_reciprocal(x, eps):
    """``1/x`` broadened to ``x / (x**2 + eps**2)``: finite at 0, exact far from it.

    ``eps`` is zero for an all-zero matrix; the broadened reciprocal is then 0 where
    ``x`` is 0 (its limit for any ``eps > 0``), never ``0 / 0``."""
    den = x * x + eps * eps
    ok = den > 0
    return jnp.where(ok, x / jnp.where(ok, den, 1), 0)




def _check_matrix(a):
    a = jnp.asarray(a)
    if a.ndim < 2:
        raise ValueError(f"a must have shape (..., m, n) (a matrix or a batch), got {a.shape}")
    return a


def svd(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thin SVD ``a = u @ diag(s) @ vh`` with a broadened, always-finite derivative.

    Args:
      a: array of shape ``(..., m, n)``, real or complex. bfloat16 / float16 inputs
        are decomposed in float32 and the factors cast back to the input dtype.

    Returns:
      ``(u, s, vh)`` with shapes ``(..., m, k)``, ``(..., k)``, ``(..., k, n)``,
      ``k = min(m, n)``, singular values in descending order.
    """
    a = _check_matrix(a)
    if low_precision(a.dtype):
        return tuple(f.astype(a.dtype) for f in _svd(a.astype(jnp.float32)))
    return _svd(a)


def _thin_svd(a):
    """``jnp.linalg.svd(a, full_matrices=False)``; a wide matrix (``n >= 2 m``) is first
    reduced by a QR of its transpose, ``a = r^H q^H``, and the ``m x m`` factor is
    decomposed: the same factors up to rounding, several times faster on CPU, where
    LAPACK's gesdd on a short-and-wide matrix is slow (tall ones are reduced by it).

    A matrix holding inf or NaN gives NaN factors. It is never handed to LAPACK: gesdd
    can spin without end on an inf among finite entries (a diverged training step
    hung a sweep that way), so zeros are decomposed in its place."""
    finite = jnp.all(jnp.isfinite(a), axis=(-2, -1), keepdims=True)
    a = jnp.where(finite, a, 0)
    m, n = a.shape[-2:]
    if n < 2 * m:
        u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    else:
        q, r = jnp.linalg.qr(_H(a))  # q (..., n, m), r (..., m, m)
        u, s, wh = jnp.linalg.svd(_H(r), full_matrices=False)
        vh = wh @ _H(q)
    return (jnp.where(finite, u, jnp.nan), jnp.where(finite[..., 0], s, jnp.nan),
            jnp.where(finite, vh, jnp.nan))


@jax.custom_jvp
def _svd(a):
    u, s, vh = _thin_svd(a)
    return u, s, vh  # a plain tuple: the JVP rule's output must have the same structure


@_svd.defjvp
def _svd_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vh = _thin_svd(a)
    real = s.dtype
    tiny = jnp.finfo(real).eps
    smax = jnp.max(s, axis=-1, keepdims=True)[..., None]  # (..., 1, 1)
    v = _H(vh)
    ds_mat = _H(u) @ da @ v
    ds = jnp.real(jnp.diagonal(ds_mat, axis1=-2, axis2=-1)).astype(real)

    s_row = s[..., None, :]
    s_col = s[..., :, None]
    diffs = (s_row + s_col) * (s_row - s_col)  # s_j^2 - s_i^2
    f = _safe_reciprocal(diffs, tiny * smax * smax)
    # The diagonal of F is zero by construction (diffs == 0 there).
    s_inv = _safe_reciprocal(s, tiny * smax[..., 0])  # (..., k)

    dss = s_row.astype(a.dtype) * ds_mat
    sds = s_col.astype(a.dtype) * ds_mat
    k = s.shape[-1]
    eye = jnp.eye(k, dtype=a.dtype)
    du_dv_diag = 0.5 * (ds_mat - _H(ds_mat)) * (eye * s_inv[..., None, :].astype(a.dtype))
    f = f.astype(a.dtype)
    du = u @ (f * (dss + _H(dss)) + du_dv_diag)
    dv = v @ (f * (sds + _H(sds)))
    m, n = a.shape[-2:]
    s_inv_row = s_inv[..., None, :].astype(a.dtype)
    if m > n:
        dav = da @ v
        du = du + (dav - u @ (_H(u) @ dav)) * s_inv_row
    if n > m:
        dahu = _H(da) @ u
        dv = dv + (dahu - v @ (vh @ dahu)) * s_inv_row
    return (u, s, vh), (du, ds, _H(dv))


@jax.custom_jvp
def _qr_tall(a):
    q, r = jnp.linalg.qr(a, mode="reduced")
    return q, r  # a plain tuple, like the JVP rule's output


@_qr_tall.defjvp
def _qr_tall_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    q, r = jnp.linalg.qr(a, mode="reduced")
    n = a.shape[-1]
    # Regularize the triangular solve: diagonal entries of R below eps * max|R_ii|
    # are raised to that floor (keeping their sign), so rank-deficient inputs give
    # finite derivatives.
    diag = jnp.diagonal(r, axis1=-2, axis2=-1)
    mag = jnp.abs(diag)
    floor = jnp.finfo(mag.dtype).eps * jnp.maximum(jnp.max(mag, axis=-1, keepdims=True), 1e-30)
    phase = jnp.where(mag > 0, diag / jnp.where(mag > 0, mag, 1), 1)
    new_diag = jnp.where(mag < floor, phase * floor, diag)
    eye = jnp.eye(n, dtype=bool)
    r_reg = jnp.where(eye, new_diag[..., None, :], r)
    da_rinv = jax.lax.linalg.triangular_solve(r_reg, da, left_side=False, lower=False)
    qt_da_rinv = _H(q) @ da_rinv
    low = jnp.tril(qt_da_rinv, -1)
    do = low - _H(low)
    do = do + jnp.eye(n, dtype=do.dtype) * (qt_da_rinv - jnp.real(qt_da_rinv).astype(do.dtype))
    dq = q @ (do - qt_da_rinv) + da_rinv
    dr = (qt_da_rinv - do) @ r
    return (q, r), (dq, dr)


def qr(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reduced QR ``a = q @ r`` of a ``(..., m, n)`` matrix, wide or tall.

    ``q`` has shape ``(..., m, k)`` with orthonormal columns, ``r`` ``(..., k, n)``
    upper triangular (trapezoidal when ``m < n``), ``k = min(m, n)``. The derivative
    exists for wide matrices too and stays finite when ``a`` is rank-deficient.
    bfloat16 / float16 inputs are factored in float32 and cast back.
    """
    a = _check_matrix(a)
    if low_precision(a.dtype):
        return tuple(f.astype(a.dtype) for f in qr(a.astype(jnp.float32)))
    m, n = a.shape[-2:]
    if m >= n:
        return _qr_tall(a)
    q, r_left = _qr_tall(a[..., :, :m])
    r_right = _H(q) @ a[..., :, m:]
    return q, jnp.concatenate([r_left, r_right], axis=-1)




def truncated_svd(a: jax.Array, max_rank: int | None = None):
    """Thin SVD of ``a`` keeping the ``min(max_rank, min(m, n))`` largest singular values.

    ``max_rank`` is static (a Python int); ``None`` keeps everything.
    """
    check_rank_args(max_rank, None)
    u, s, vh = svd(a)
    if max_rank is not None and max_rank < s.shape[-1]:
        u, s, vh = u[..., :max_rank], s[..., :max_rank], vh[..., :max_rank, :]
    return u, s, vh


def tail_norms(s: jax.Array) -> jax.Array:
    """``t[k] = sqrt(sum_{i >= k} s_i**2)``: the Frobenius error of keeping ``k`` values."""
    sq = jnp.abs(s) ** 2
    tails = jnp.cumsum(sq[..., ::-1], axis=-1)[..., ::-1]
    return safe_sqrt(tails)  # finite derivative where a tail is exactly zero


def tolerance_mask(s: jax.Array, abs_tol) -> jax.Array:
    """Boolean mask of the singular values to keep so that the discarded tail has
    Frobenius norm ``<= abs_tol``; at least one value is always kept. Jit-safe."""
    t = tail_norms(s)
    # Value i may be dropped iff the tail starting at i is within tolerance.
    keep = t > abs_tol
    return keep.at[..., 0].set(True)


def tolerance_rank(s, abs_tol) -> int:
    """Smallest rank whose discarded tail has Frobenius norm ``<= abs_tol`` (>= 1).

    Needs concrete values: call it outside ``jit``.
    """
    if not is_concrete(s):
        raise TypeError(
            "choosing a rank from a tolerance needs concrete singular values; "
            "inside jit pass a static max_rank (a tolerance then only zeroes values)"
        )
    return max(1, int(jnp.sum(tolerance_mask(s, abs_tol))))
