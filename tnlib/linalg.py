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

import functools

import jax
import jax.numpy as jnp

from tnlib._numerics import check_rank_args, is_concrete, low_precision, safe_sqrt

__all__ = [
    "svd",
    "qr",
    "truncated_svd",
    "randomized_svd",
    "truncated_split",
    "SVD_METHODS",
    "svd_method",
    "tail_norms",
    "tolerance_rank",
    "tolerance_mask",
    "is_concrete",
]

#: The values of ``method`` (``svd``, ``truncated_svd``) and of the ``svd`` argument of
#: the decompositions (``tt.from_dense``, ``tt.round``, ``tucker.hosvd``, ``tucker.hooi``).
SVD_METHODS = ("auto", "lapack", "gram", "randomized")

#: ``"auto"`` takes the Gram route only when the truncation asked for is coarser than
#: what the route resolves: a relative tolerance of at least this (or a rank cap alone).
GRAM_MIN_RTOL = 1e-6


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


def _check_method(method, allowed=("lapack", "gram"), name: str = "method") -> str:
    if method not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {method!r}")
    return method


def svd(a: jax.Array, *, method: str = "lapack") -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thin SVD ``a = u @ diag(s) @ vh`` with a broadened, always-finite derivative.

    Args:
      a: array of shape ``(..., m, n)``, real or complex. bfloat16 / float16 inputs
        are decomposed in float32 and the factors cast back to the input dtype.
      method: ``"lapack"`` (LAPACK's divide and conquer, ``gesdd``) or ``"gram"``: the
        Hermitian eigendecomposition of the short side's Gram matrix (``a a^H`` when
        ``m <= n``, else ``a^H a``) and one product for the other side's vectors
        (quimb's ``svd:eig``). The Gram route is 1.3-5x faster on this project's CPU
        (every shape measured, most for very wide or tall matrices), but squares the
        condition number: singular values below ``sqrt(eps) * s_max`` (``1.5e-8``
        relative in float64, ``3.5e-4`` in float32) cannot be resolved and come out
        as exactly 0 with zero vectors on the long side, and a kept value ``s_i`` has
        a relative error of about ``eps * (s_max / s_i)**2``. The short side's vectors
        are orthonormal to rounding either way. Use it for truncations coarser than
        that, in double precision (what ``"auto"`` does in the decompositions; see
        ``svd_method``).

    Returns:
      ``(u, s, vh)`` with shapes ``(..., m, k)``, ``(..., k)``, ``(..., k, n)``,
      ``k = min(m, n)``, singular values in descending order.
    """
    a = _check_matrix(a)
    _check_method(method)
    if low_precision(a.dtype):
        return tuple(f.astype(a.dtype) for f in svd(a.astype(jnp.float32), method=method))
    return _svd_gram(a) if method == "gram" else _svd(a)


def svd_method(method: str, a, *, rtol=None, truncating: bool = True) -> str:
    """The route ``method`` names for the unfolding ``a`` of a decomposition: ``"auto"``
    is ``"gram"`` when ``a`` is double precision and the decomposition truncates
    (``truncating``: a rank cap or a tolerance was given) no finer than the Gram route
    resolves (``rtol`` None or ``>= GRAM_MIN_RTOL``), else ``"lapack"``; any other
    name of ``SVD_METHODS`` is returned as it is (a ValueError for unknown ones)."""
    _check_method(method, SVD_METHODS, name="svd")  # the decompositions' argument name
    if method != "auto":
        return method
    dtype = jnp.result_type(a)
    double = jnp.finfo(dtype).bits == 64
    coarse = rtol is None or float(rtol) >= GRAM_MIN_RTOL
    return "gram" if double and truncating and coarse else "lapack"


def _finite_input(a):
    """``(a with non-finite matrices zeroed, mask)``: LAPACK can spin without end on an
    inf among finite entries (a diverged training step hung a sweep that way), so such a
    matrix is never handed to it and its factors come out NaN (``_nan_where``)."""
    finite = jnp.all(jnp.isfinite(a), axis=(-2, -1), keepdims=True)
    return jnp.where(finite, a, 0), finite


def _nan_where(finite, u, s, vh):
    return (jnp.where(finite, u, jnp.nan), jnp.where(finite[..., 0], s, jnp.nan),
            jnp.where(finite, vh, jnp.nan))


def _thin_svd(a):
    """``jnp.linalg.svd(a, full_matrices=False)``; a wide matrix (``n >= 2 m``) is first
    reduced by a QR of its transpose, ``a = r^H q^H``, and the ``m x m`` factor is
    decomposed: the same factors up to rounding, several times faster on CPU, where
    LAPACK's gesdd on a short-and-wide matrix is slow (tall ones are reduced by it).
    A matrix holding inf or NaN gives NaN factors (``_finite_input``)."""
    a, finite = _finite_input(a)
    m, n = a.shape[-2:]
    if n < 2 * m:
        u, s, vh = jnp.linalg.svd(a, full_matrices=False)
    else:
        q, r = jnp.linalg.qr(_H(a))  # q (..., n, m), r (..., m, m)
        u, s, wh = jnp.linalg.svd(_H(r), full_matrices=False)
        vh = wh @ _H(q)
    return _nan_where(finite, u, s, vh)


def _gram_svd(a, rank=None):
    """Thin SVD through ``eigh`` of the short side's Gram matrix (see ``svd``'s
    ``method="gram"``); values below ``sqrt(eps) * s_max`` are set to 0 with zero
    long-side vectors. With ``rank``, only the leading ``rank`` triplets: the long
    side's product then costs ``rank / min(m, n)`` of the full one."""
    m, n = a.shape[-2:]
    b = a if m <= n else _H(a)  # (k, N), k = min(m, n)
    # inf / NaN anywhere in a reaches the Gram matrix's diagonal: guarding the small
    # (k, k) matrix spares two passes over a (the LAPACK route's _finite_input)
    g, finite = _finite_input(b @ _H(b))
    w, q = jnp.linalg.eigh(g)  # ascending
    w, q = w[..., ::-1], q[..., ::-1]
    s = jnp.sqrt(jnp.maximum(w, 0))
    resolved = s > jnp.sqrt(jnp.finfo(s.dtype).eps) * s[..., :1]
    s = jnp.where(resolved, s, 0)
    inv = jnp.where(resolved, 1 / jnp.where(resolved, s, 1), 0)
    inv = jnp.where(finite[..., 0], inv, jnp.nan)  # a non-finite input: NaN long side
    if rank is not None:
        q, s, inv = q[..., :rank], s[..., :rank], inv[..., :rank]
    other = (_H(q) @ b) * inv[..., :, None].astype(b.dtype)  # (k, N): rows of W^H
    q = jnp.where(finite, q, jnp.nan)
    s = jnp.where(finite[..., 0], s, jnp.nan)
    return (q, s, other) if m <= n else (_H(other), s, _H(q))


def _svd_tangents(a, da, u, s, vh, project_u: bool, project_v: bool):
    """Forward-mode derivative of the thin SVD ``(u, s, vh)`` of ``a`` along ``da``,
    with the broadened reciprocals of the module docstring. ``project_u`` / ``project_v``
    add the part of ``du`` / ``dv`` outside the span of ``u`` / ``v``: needed on a side
    whose vectors do not span the whole space (the long side of a rectangular matrix, or
    the Gram route's long side, whose unresolved vectors are zero: the projection term
    then carries exactly what their rotation would have)."""
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
    s_inv_row = s_inv[..., None, :].astype(a.dtype)
    if project_u:
        dav = da @ v
        du = du + (dav - u @ (_H(u) @ dav)) * s_inv_row
    if project_v:
        dahu = _H(da) @ u
        dv = dv + (dahu - v @ (vh @ dahu)) * s_inv_row
    return du, ds, _H(dv)


@jax.custom_jvp
def _svd(a):
    u, s, vh = _thin_svd(a)
    return u, s, vh  # a plain tuple: the JVP rule's output must have the same structure


@_svd.defjvp
def _svd_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vh = _thin_svd(a)
    m, n = a.shape[-2:]
    return (u, s, vh), _svd_tangents(a, da, u, s, vh, m > n, n > m)


@jax.custom_jvp
def _svd_gram(a):
    u, s, vh = _gram_svd(a)
    return u, s, vh


@_svd_gram.defjvp
def _svd_gram_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vh = _gram_svd(a)
    m, n = a.shape[-2:]
    # the eigenvectors span the short side; the long side's may be incomplete
    return (u, s, vh), _svd_tangents(a, da, u, s, vh, m > n, m <= n)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _svd_gram_truncated(a, rank):
    u, s, vh = _gram_svd(a, rank)
    return u, s, vh


@_svd_gram_truncated.defjvp
def _svd_gram_truncated_jvp(rank, primals, tangents):
    # the exact derivative of the leading triplets needs the whole spectrum: the full
    # decomposition's, sliced (only when differentiating; the primal stays truncated)
    (u, s, vh), (du, ds, dvh) = _svd_gram_jvp(primals, tangents)
    cut = lambda x, y, z: (x[..., :rank], y[..., :rank], z[..., :rank, :])
    return cut(u, s, vh), cut(du, ds, dvh)


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




def truncated_svd(a: jax.Array, max_rank: int | None = None, *, method: str = "lapack",
                  **randomized):
    """Thin SVD of ``a`` keeping the ``min(max_rank, min(m, n))`` largest singular values.

    Args:
      a: array of shape ``(..., m, n)``.
      max_rank: static cap (a Python int); ``None`` keeps everything.
      method: ``"lapack"`` or ``"gram"`` (as in ``svd``), or ``"randomized"``
        (``randomized_svd``, which needs ``max_rank``; its keyword arguments
        ``oversample``, ``power_iters`` and ``key`` may be passed here).
    """
    check_rank_args(max_rank, None)
    _check_method(method, ("lapack", "gram", "randomized"))
    if method == "randomized":
        if max_rank is None:
            raise ValueError("method='randomized' needs max_rank (the rank to find)")
        return randomized_svd(a, max_rank, **randomized)
    if randomized:
        raise TypeError(f"{sorted(randomized)} only apply to method='randomized'")
    k = min(a.shape[-2:])
    if method == "gram" and max_rank is not None and max_rank < k:
        a = _check_matrix(a)
        if low_precision(a.dtype):
            out = _svd_gram_truncated(a.astype(jnp.float32), max_rank)
            return tuple(f.astype(a.dtype) for f in out)
        return _svd_gram_truncated(a, max_rank)
    u, s, vh = svd(a, method=method)
    if max_rank is not None and max_rank < s.shape[-1]:
        u, s, vh = u[..., :max_rank], s[..., :max_rank], vh[..., :max_rank, :]
    return u, s, vh


def truncated_split(a: jax.Array, max_rank: int | None = None, *, method: str = "lapack"):
    """``(u, s, svh)``: ``truncated_svd`` with the singular values absorbed to the right,
    ``svh = diag(s) @ vh``, so ``a ~ u @ svh`` with orthonormal columns in ``u`` (the
    split a left-to-right TT-SVD sweep keeps).

    With ``method="gram"`` on a matrix that is not tall, ``svh`` is ``u^H a`` itself:
    no division by the singular values and one pass over ``a`` fewer (quimb's
    ``absorb="right"``), which also keeps the small components that the Gram route
    cannot resolve as singular values. Derivatives are those of the full thin SVD,
    sliced (exact, and as finite as ``svd``'s)."""
    check_rank_args(max_rank, None)
    _check_method(method, ("lapack", "gram", "randomized"))
    a = _check_matrix(a)
    m, n = a.shape[-2:]
    if method == "gram" and m <= n and not low_precision(a.dtype):
        return _gram_split(a, min(m, max_rank or m))
    u, s, vh = truncated_svd(a, max_rank, method=method)
    return u, s, s[..., :, None].astype(vh.dtype) * vh


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _gram_split(a, rank):
    g, finite = _finite_input(a @ _H(a))
    w, q = jnp.linalg.eigh(g)
    w, q = w[..., ::-1][..., :rank], q[..., ::-1][..., :rank]
    s = jnp.sqrt(jnp.maximum(w, 0))
    resolved = s > jnp.sqrt(jnp.finfo(s.dtype).eps) * s[..., :1]
    q = jnp.where(finite, q, jnp.nan)  # NaN u, and through it NaN svh
    s = jnp.where(finite[..., 0], jnp.where(resolved, s, 0), jnp.nan)
    return q, s, _H(q) @ a


@_gram_split.defjvp
def _gram_split_jvp(rank, primals, tangents):
    (u, s, vh), (du, ds, dvh) = _svd_gram_jvp(primals, tangents)
    u, s, vh = u[..., :rank], s[..., :rank], vh[..., :rank, :]
    du, ds, dvh = du[..., :rank], ds[..., :rank], dvh[..., :rank, :]
    sc, dsc = s[..., :, None].astype(vh.dtype), ds[..., :, None].astype(vh.dtype)
    return (u, s, sc * vh), (du, ds, dsc * vh + sc * dvh)


def randomized_svd(a: jax.Array, rank: int, *, oversample: int = 10, power_iters: int = 2,
                   key: jax.Array | None = None):
    """Rank-``rank`` SVD by a randomized range finder (Halko, Martinsson & Tropp 2011,
    algorithms 4.4 and 5.1; tensorly's ``randomized_svd``).

    ``Q`` is an orthonormal basis of ``a @ omega`` for a Gaussian ``omega`` with
    ``rank + oversample`` columns, refined by ``power_iters`` rounds of
    ``Q <- qr(a qr(a^H Q))`` (each re-orthonormalized, which keeps small singular
    values from drowning in rounding); then the small matrix ``Q^H a`` is decomposed
    exactly. A wide matrix is handled through its transpose. When ``a`` has rank at most
    ``rank + oversample`` the result is the exact truncated SVD; otherwise its error is
    close to the optimal one, the closer the more power iterations and the faster the
    spectrum decays. Built from ``qr`` and ``svd``, so ``jit``, ``vmap`` and ``grad``
    go through it (the derivative is that of the algorithm, for a fixed ``key``).

    Args:
      a: array of shape ``(..., m, n)``.
      rank: static number of singular triplets returned (1 <= rank <= min(m, n)).
      oversample: extra random columns (static int >= 0), capped at ``min(m, n) - rank``.
      power_iters: power iterations (static int >= 0).
      key: PRNG key of ``omega``; ``None`` uses ``jax.random.key(0)``, so results are
        deterministic.

    Returns:
      ``(u, s, vh)`` with shapes ``(..., m, rank)``, ``(..., rank)``, ``(..., rank, n)``.
    """
    a = _check_matrix(a)
    m, n = a.shape[-2:]
    check_rank_args(rank, None)
    if rank > min(m, n):
        raise ValueError(f"rank must be at most min(m, n) = {min(m, n)}, got {rank}")
    for value, name in ((oversample, "oversample"), (power_iters, "power_iters")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a Python int >= 0, got {value!r}")
    if low_precision(a.dtype):
        out = randomized_svd(a.astype(jnp.float32), rank, oversample=oversample,
                             power_iters=power_iters, key=key)
        return tuple(f.astype(a.dtype) for f in out)
    if m < n:
        u, s, vh = randomized_svd(_H(a), rank, oversample=oversample,
                                  power_iters=power_iters, key=key)
        return _H(vh), s, _H(u)
    width = min(rank + oversample, n)
    key = jax.random.key(0) if key is None else key
    real = jnp.finfo(a.dtype).dtype
    omega = jax.random.normal(key, (n, width), real).astype(a.dtype)
    q, _ = qr(a @ omega)
    for _ in range(power_iters):
        z, _ = qr(_H(a) @ q)
        q, _ = qr(a @ z)
    ub, s, vh = svd(_H(q) @ a)
    u = q @ ub
    return u[..., :rank], s[..., :rank], vh[..., :rank, :]


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
