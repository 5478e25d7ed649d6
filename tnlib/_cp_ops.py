"""Mode products, normalization and non-negative fits of ``tnlib.cp``, plus the ALS
pieces ``cp.als`` shares with them.

The public functions (``mode_product``, ``normalize``, ``nonneg_hals``) are
re-exported by ``tnlib.cp`` (call ``tnlib.cp.normalize``, ...); this module only keeps
``cp.py`` within its size. The lower-case helpers without ``__all__`` entries
(``mttkrp``, ``psd_solve``, ``masked_solve``, ...) are shared with ``cp.als``. Every
function is pure, with static ranks and iteration counts: jit / vmap / grad-safe.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from tnlib import _nnls, _numerics, linalg
from tnlib._validate import as_inexact
from tnlib.cp import CP, check

__all__ = ["mode_product", "normalize", "nonneg_hals"]


# ------------------------------------------------------------- shared with cp.als


def check_rank(rank, dims=None) -> int:
    """``rank`` as a Python int >= 1, at most ``prod(dims) // max(dims)`` when given."""
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be a Python int (static), got {type(rank).__name__}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if dims is not None:
        bound = math.prod(dims) // max(dims)
        if rank > bound:
            raise ValueError(
                f"rank {rank} is larger than {bound}, the largest allowed value for "
                f"shape {tuple(dims)} (every tensor of that shape has CP rank at most "
                f"prod(dims) // max(dims))"
            )
    return rank


def check_n_iter(n_iter, name: str = "n_iter") -> int:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"{name} must be a Python int >= 1 (static), got {n_iter!r}")
    return n_iter


def check_init(init, dims, rank: int):
    """``init`` (a ``CP`` of shape ``dims`` and rank ``rank``) or TypeError / ValueError
    naming ``init``."""
    if not isinstance(init, CP):
        raise TypeError(f"init must be a tnlib.cp.CP, got {type(init).__name__}")
    check(init, "init")
    if init.dims != tuple(dims) or init.rank != rank:
        raise ValueError(
            f"init must have dims {tuple(dims)} and rank {rank} (those of x and rank), got "
            f"dims {init.dims} and rank {init.rank}"
        )
    return init


def check_fixed_modes(fixed_modes, n_modes: int, init) -> tuple[int, ...]:
    """``fixed_modes`` as a sorted tuple of distinct modes in ``[0, n_modes)``; fixing a
    mode needs ``init`` (the values to keep), and at least one mode must stay free."""
    if isinstance(fixed_modes, int | bool) or not hasattr(fixed_modes, "__iter__"):
        raise TypeError(f"fixed_modes must be a sequence of ints, got {fixed_modes!r}")
    modes = []
    for m in fixed_modes:
        if isinstance(m, bool) or not isinstance(m, int) or not -n_modes <= m < n_modes:
            raise ValueError(
                f"fixed_modes entries must be ints in [{-n_modes}, {n_modes - 1}], got "
                f"{tuple(fixed_modes)}"
            )
        modes.append(m % n_modes)
    if len(set(modes)) != len(modes):
        raise ValueError(f"fixed_modes has a repeated mode: {tuple(fixed_modes)}")
    if modes and init is None:
        raise ValueError("fixed_modes needs init (the CP whose factors are kept)")
    if len(modes) == n_modes:
        raise ValueError(
            f"fixed_modes fixes all {n_modes} modes: nothing is left to fit (leave one free)"
        )
    return tuple(sorted(modes))


def unfold(x, mode: int):
    return jnp.moveaxis(x, mode, 0).reshape(x.shape[mode], -1)


def khatri_rao(factors, rank: int, dtype):
    """Row-major Khatri-Rao product ``(prod n_j, R)`` of ``factors`` (ones ``(1, R)``
    when there are none); row order matches ``unfold``'s columns."""
    res = jnp.ones((1, rank), dtype)
    for f in factors:
        res = (res[:, None, :] * f[None, :, :]).reshape(-1, rank)
    return res


def mttkrp(x, factors, mode):
    """``X_(mode) @ conj(K)``, ``K`` the Khatri-Rao product of the other factors:
    shape ``(n_mode, R)``, without forming ``K``. The last other mode is contracted first
    by one GEMM (``x`` against its factor), then each remaining mode with the rank axis
    batched: the Khatri-Rao form (one dot over every other mode at once, what a single
    einsum lowers to) measured 1.5x slower on a 64^3 tensor at rank 10."""
    L, rank = x.ndim, factors[mode].shape[-1]
    others = [j for j in range(L) if j != mode]
    if not others:
        return x[:, None] * jnp.ones((rank,), x.dtype)
    last = others[-1]
    t = jnp.tensordot(x, jnp.conj(factors[last]), axes=(last, 0))
    ids = [j for j in range(L) if j != last] + [L]  # t's axes; L is the rank axis
    for j in reversed(others[:-1]):
        out = [i for i in ids if i != j]
        t = jnp.einsum(t, ids, jnp.conj(factors[j]), [j, L], out)
        ids = out
    return t


def psd_solve(m, v):
    """``m @ pinv(v)`` for a Hermitian positive semi-definite ``v`` ``(R, R)``.

    Eigenvalues below ``R * eps * lambda_max`` are treated as zero, so a singular
    ``v`` gives the minimum-norm least-squares solution instead of NaNs. The
    eigendecomposition is ``linalg.svd`` (equal to it for a PSD matrix): its broadened
    derivative stays finite when eigenvalues repeat (``eigh``'s is NaN there, e.g. for
    the identity Gram matrices of orthonormal factors).
    """
    q, w, _ = linalg.svd(v)
    eps = jnp.finfo(w.dtype).eps
    cutoff = v.shape[-1] * eps * jnp.maximum(jnp.max(w), jnp.finfo(w.dtype).tiny)
    inv = jnp.where(w > cutoff, 1.0 / jnp.where(w > cutoff, w, 1.0), 0.0)
    return ((m @ q) * inv.astype(q.dtype)) @ jnp.conj(q).T


def masked_solve(xm, mask, factors, mode):
    """Exact least-squares update of ``factors[mode]`` on the observed entries only.

    Row ``i`` solves its own normal equations ``f_i conj(V_i) = b_i`` with
    ``V_i = K^H diag(mask_(mode)[i]) K`` and ``b_i = (mask x)_(mode)[i] conj(K)`` (``K``
    the Khatri-Rao product of the other factors, formed: ``(prod_{j != mode} n_j, R)``),
    by the pseudo-inverse (a row with too few observations gets the minimum-norm
    solution). ``xm`` is ``mask * x``.
    """
    rank = factors[mode].shape[-1]
    kr = khatri_rao([f for j, f in enumerate(factors) if j != mode], rank, xm.dtype)
    m = unfold(mask, mode).astype(kr.dtype)
    v = jnp.einsum("ip,pr,ps->irs", m, jnp.conj(kr), kr)
    b = unfold(xm, mode) @ jnp.conj(kr)
    return jax.vmap(lambda bi, vi: psd_solve(bi[None], jnp.conj(vi))[0])(b, v)


def normalize_columns(f):
    norms = _numerics.safe_sqrt(jnp.sum(jnp.abs(f) ** 2, axis=0))
    safe = jnp.where(norms > 0, norms, 1.0)
    return f / safe.astype(f.dtype), norms


def svd_init(x, rank, mask=None, n_impute: int = 5, method: str = "lapack"):
    """Leading left singular vectors of each unfolding; modes whose unfolding has fewer
    than ``rank`` singular vectors are padded with Gaussian columns drawn
    from the fixed key ``PRNGKey(0)`` (deterministic). With ``mask``, the missing
    entries of each unfolding are first filled ``n_impute`` times by its rank-``rank``
    SVD (from zeros), as tensorly's ``svd_interface(mask=...)`` does. ``method`` is an
    SVD route of ``linalg.SVD_METHODS`` (``"auto"`` resolved per unfolding by
    ``linalg.svd_method``); a tall unfolding always goes to LAPACK (the Gram route's
    left vectors are exact only for a wide one)."""
    factors = []
    pad_key = jax.random.PRNGKey(0)
    for k, n in enumerate(x.shape):
        mat = unfold(x, k)
        route = linalg.svd_method(method, mat)
        if route == "gram" and mat.shape[0] > mat.shape[1]:
            route = "lapack"
        u, s, vh = linalg.truncated_svd(mat, rank, method=route)
        if mask is not None:
            m = unfold(mask, k).astype(mat.dtype)
            for _ in range(n_impute):
                low = (u * s.astype(u.dtype)) @ vh
                u, s, vh = linalg.truncated_svd(mat * m + low * (1 - m), rank, method=route)
        if u.shape[1] < rank:
            extra = jax.random.normal(jax.random.fold_in(pad_key, k), (n, rank - u.shape[1]),
                                      x.dtype) / math.sqrt(n)
            u = jnp.concatenate([u, extra], axis=1)
        factors.append(u)
    return factors


# ------------------------------------------------------------------ public functions


def mode_product(tn: CP, matrix, mode: int):
    """Mode-``mode`` product of a CP with a matrix or a vector (tensorly's ``cp_mode_dot``).

    A matrix ``(m, n_mode)`` replaces ``factors[mode]`` by ``matrix @ factors[mode]``: the
    CP of ``x x_mode matrix``, that mode now of size ``m`` (same rank and weights). A
    vector ``(n_mode,)`` contracts the mode away: ``sum_i v[i] x[..., i, ...]`` is the CP
    of the other modes with weights ``weights * (v @ factors[mode])``; contracting the
    only mode of a one-mode CP gives the scalar. Nothing is conjugated (a mode product,
    not an inner product). ``mode`` may be negative.
    """
    check(tn, "tn")
    matrix = jnp.asarray(matrix)
    L = tn.n_modes
    if isinstance(mode, bool) or not isinstance(mode, int) or not -L <= mode < L:
        raise ValueError(f"mode must be an int in [{-L}, {L - 1}], got {mode!r}")
    mode %= L
    n = tn.dims[mode]
    if matrix.ndim not in (1, 2) or matrix.shape[-1] != n:
        raise ValueError(
            f"matrix must have shape (m, {n}) or ({n},) to act on mode {mode} of size {n}, "
            f"got {tuple(matrix.shape)}"
        )
    factors = list(tn.factors)
    if matrix.ndim == 2:
        factors[mode] = matrix @ factors[mode]
        return CP(tn.weights, tuple(factors))
    weights = tn.weights * (matrix @ factors.pop(mode))
    if not factors:
        return jnp.sum(weights)
    return CP(weights, tuple(factors))


def normalize(tn: CP) -> CP:
    """The same tensor with unit-norm factor columns and the norms in the weights
    (tensorly's ``cp_normalize``): ``factors[k][:, r] / ||factors[k][:, r]||`` and
    ``weights[r] * prod_k ||factors[k][:, r]||``. A zero column stays zero (its weight
    becomes 0). Differentiable everywhere (the norm's derivative at 0 is taken as 0)."""
    check(tn, "tn")
    weights = tn.weights
    factors = []
    for f in tn.factors:
        f, norms = normalize_columns(f)
        factors.append(f)
        weights = weights * norms.astype(weights.dtype)
    return CP(weights, tuple(factors))


def nonneg_hals(x, rank: int, n_iter: int = 100, key=None, *, init=None, n_inner: int = 5,
                return_errors: bool = False):
    """Non-negative CP by hierarchical alternating least squares (HALS; Gillis and
    Glineur 2012), as tensorly's ``non_negative_parafac_hals``.

    Each of the exactly ``n_iter`` sweeps (a ``lax.fori_loop``, jittable) updates the
    factors in mode order: factor ``k`` gets ``n_inner`` HALS passes over its columns,
    each column the exact non-negative minimizer given the others,
    ``F[:, r] = max(0, F[:, r] + (M[:, r] - F V[:, r]) / V[r, r])`` with ``M`` the MTTKRP
    of ``x`` and ``V`` the Hadamard product of the other factors' Gram matrices. Every
    step minimizes the error over its block, so it never increases (up to rounding).

    Args:
      x: real dense array (non-negative data is the usual case; any real data works).
        Integers become the default float; bfloat16 / float16 are fitted in float32 and
        the result cast back.
      rank: static number of components, at most ``rank_bound(x.shape)``.
      n_iter: static number of outer sweeps (>= 1).
      key: None (default) starts from NNDSVDa of each unfolding (the non-negative SVD
        start tensorly's ``init='svd'`` uses); a PRNG key starts from uniform [0, 1)
        factors scaled to ``||x||_F``.
      init: a non-negative ``CP`` of shape ``x.shape`` and rank ``rank`` to start from
        (its weights are folded into the last factor).
      n_inner: static number of HALS passes per factor update (>= 1; tensorly uses 5).
      return_errors: also return ``||x - cp||_F / ||x||_F`` after each sweep.

    Returns:
      ``CP`` with non-negative unit-norm factor columns and non-negative weights (or
      ``(cp, errors)``).
    """
    x = as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    _nnls.check_real(x)
    rank = check_rank(rank, x.shape)
    n_iter = check_n_iter(n_iter)
    n_inner = check_n_iter(n_inner, "n_inner")
    if init is not None:
        check_init(init, x.shape, rank)
        if key is not None:
            raise ValueError("pass key (a random start) or init (a given start), not both")
    if _numerics.low_precision(x.dtype):
        init = None if init is None else jax.tree.map(lambda a: a.astype(jnp.float32), init)
        out = nonneg_hals(x.astype(jnp.float32), rank, n_iter, key, init=init, n_inner=n_inner,
                          return_errors=return_errors)
        return jax.tree.map(lambda a: a.astype(x.dtype), out)
    L = x.ndim
    x_norm = jnp.linalg.norm(x.ravel())
    if init is not None:
        factors = [f.astype(x.dtype) for f in init.factors]
        factors[-1] = factors[-1] * init.weights.astype(x.dtype)
    elif key is not None:
        keys = jax.random.split(key, L)
        factors = [jax.random.uniform(k, (n, rank), x.dtype) for k, n in zip(keys, x.shape,
                                                                               strict=True)]
        scale = x_norm / jnp.maximum(norm_of(factors), jnp.finfo(x.dtype).tiny)
        factors = [f * scale ** (1.0 / L) for f in factors]
    else:  # NNDSVDa per unfolding; mode 0 also carries the singular values (tensorly)
        fill = jnp.mean(x)
        factors = []
        for k in range(L):
            w, s = _nnls.nndsvda(unfold(x, k), rank, fill)
            factors.append(w * s.astype(x.dtype) if k == 0 else w)
    factors = [jnp.abs(f) for f in factors]
    errors = jnp.zeros((n_iter,), x.dtype)

    def sweep(i, carry):
        factors, errors = carry
        factors = list(factors)
        for k in range(L):
            v = jnp.ones((rank, rank), x.dtype)
            for j in range(L):
                if j != k:
                    v = v * (factors[j].T @ factors[j])
            utm = mttkrp(x, factors, k).T
            factors[k] = _nnls.hals(utm, v, factors[k].T, n_inner).T
        if return_errors:
            err = jnp.linalg.norm((x - dense_of(factors)).ravel())
            errors = errors.at[i].set(err / jnp.where(x_norm > 0, x_norm, 1.0))
        return tuple(factors), errors

    factors, errors = jax.lax.fori_loop(0, n_iter, sweep, (tuple(factors), errors))
    out = normalize(CP(jnp.ones((rank,), x.dtype), factors))
    return (out, errors) if return_errors else out


def dense_of(factors):
    """The dense tensor of unit-weight factors."""
    rank = factors[0].shape[-1]
    return jnp.sum(khatri_rao(factors, rank, factors[0].dtype), axis=-1).reshape(
        tuple(f.shape[0] for f in factors))


def norm_of(factors):
    """Frobenius norm of the unit-weight CP ``factors`` (Hadamard product of Grams)."""
    g = None
    for f in factors:
        m = jnp.conj(f).T @ f
        g = m if g is None else g * m
    return _numerics.safe_sqrt(jnp.maximum(jnp.real(jnp.sum(g)), 0))
