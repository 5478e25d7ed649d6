"""CP (CANDECOMP/PARAFAC) decompositions.

A ``CP`` holds ``weights`` of shape ``(R,)`` and one factor matrix per mode,
``factors[k]`` of shape ``(n_k, R)``; it represents

    x[i_1, ..., i_L] = sum_r weights[r] * factors[0][i_1, r] * ... * factors[L-1][i_L, r].

Sizes and the rank are read from the arrays' trailing axes (a batch of CPs
stacked on leading axes by ``vmap`` reports them right); nothing is stored beside
the arrays.

``als`` fits a CP of a static rank with a fixed number of alternating
least-squares sweeps inside one ``lax.fori_loop``, so it runs under ``jit`` and
``vmap`` (tensorly's ``parafac`` cannot be jitted). Each factor update solves the
normal equations built from the Hadamard product of the other factors' Gram
matrices with an eigendecomposition-based pseudo-inverse, so rank-deficient Gram
matrices (a rank above a mode size, duplicated components) give the minimum-norm
update instead of NaNs. ``als`` also starts from a given CP with some factors held
fixed (``init``, ``fixed_modes``) and fits tensors with missing entries (``mask``,
an exact row-wise least-squares update on the observed entries). ``nonneg_hals`` fits
a non-negative CP by HALS. ``inner`` and ``norm`` never form the dense tensor;
``mode_product`` (a matrix or a vector, tensorly's ``cp_mode_dot``) and ``normalize``
(``cp_normalize``) act on the factors (``tnlib/_cp_ops.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from tnlib import _numerics, linalg
from tnlib._validate import as_inexact as _as_inexact
from tnlib._validate import check_dims as _check_dims
from tnlib._validate import check_mask as _check_mask
from tnlib._validate import check_same_dims as _check_same_dims
from tnlib._validate import check_size as _check_size
from tnlib.struct import pytree_dataclass

__all__ = [
    "CP", "random", "als", "from_dense", "to_dense", "inner", "norm", "num_params",
    "rank_bound", "check",
    # tnlib/_cp_ops.py
    "mode_product", "normalize", "nonneg_hals",
]


@pytree_dataclass
class CP:
    """CP tensor: ``weights`` ``(R,)`` and ``factors[k]`` ``(n_k, R)``."""

    weights: jax.Array
    factors: tuple

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(f.shape[-2] for f in self.factors)

    @property
    def rank(self) -> int:
        return self.weights.shape[-1]

    @property
    def n_modes(self) -> int:
        return len(self.factors)

    @property
    def dtype(self):
        return jnp.result_type(self.weights, *self.factors)


# ----------------------------------------------------------------------------- checks


def check(cp, name: str = "cp"):
    """Validate a CP's array shapes (static; works under jit).

    Raises ValueError naming the mode and the shapes when a factor is not a matrix
    or its number of columns differs from the number of weights. Returns ``cp``.
    """
    if not isinstance(cp, CP):
        raise TypeError(f"{name} must be a tnlib.cp.CP, got {type(cp).__name__}")
    factors = cp.factors
    if not isinstance(factors, tuple | list) or len(factors) == 0:
        raise ValueError(f"{name}: factors must be a non-empty tuple of (n_k, R) arrays")
    if cp.weights.ndim != 1:
        raise ValueError(f"{name}: weights must have shape (R,), got {tuple(cp.weights.shape)}")
    r = cp.weights.shape[0]
    for k, f in enumerate(factors):
        if f.ndim != 2:
            raise ValueError(
                f"{name}: factor {k} has shape {tuple(f.shape)}; expected 2 axes (n_k, R)"
            )
        if f.shape[1] != r:
            raise ValueError(
                f"{name}: factor {k} has shape {tuple(f.shape)} ({f.shape[1]} columns) but "
                f"weights has shape {tuple(cp.weights.shape)} (rank {r})"
            )
    return cp


def rank_bound(dims: Sequence[int]) -> int:
    """``prod(dims) // max(dims)``: every tensor of shape ``dims`` has CP rank at most
    this (one rank-1 term per fibre along the largest mode), so larger ranks are
    redundant and ``als`` rejects them."""
    dims = _check_dims(dims)
    return math.prod(dims) // max(dims)


def _check_rank(rank, dims=None) -> int:
    return _cp_ops.check_rank(rank, dims)


# ------------------------------------------------------------------------ construction


def random(key, dims: Sequence[int], rank: int, dtype=jnp.float32) -> CP:
    """Random CP with unit weights and Gaussian factors scaled so ``E ||cp||_F^2 = 1``.

    Args:
      key: PRNG key.
      dims: mode sizes ``(n_1, ..., n_L)``.
      rank: number of rank-1 terms ``R`` (any int >= 1; redundant ranks are allowed).
      dtype: float or complex dtype.
    """
    dims = _check_dims(dims)
    rank = _check_rank(rank)
    keys = jax.random.split(key, len(dims))
    factors = tuple(
        jax.random.normal(k, (n, rank), dtype) / math.sqrt(n * rank ** (1.0 / len(dims)))
        for k, n in zip(keys, dims, strict=True)
    )
    return CP(jnp.ones((rank,), dtype), factors)


def to_dense(tn: CP):
    """The dense tensor of shape ``dims`` (Khatri-Rao product summed over the rank); a
    ValueError naming the size when it (times the rank) exceeds ``_validate.max_bytes()``."""
    check(tn)
    _check_size((*tn.dims, tn.rank), tn.factors[0].dtype, "cp.to_dense")
    r = tn.rank
    res = tn.factors[0] * tn.weights
    for f in tn.factors[1:]:
        res = (res[:, None, :] * f[None, :, :]).reshape(-1, r)
    return jnp.sum(res, axis=-1).reshape(tn.dims)


def _grams(a_factors, b_factors):
    """Hadamard product of ``conj(A_k)^T B_k`` over the modes: ``(Ra, Rb)``."""
    g = None
    for fa, fb in zip(a_factors, b_factors, strict=True):
        m = jnp.conj(fa).T @ fb
        g = m if g is None else g * m
    return g


def inner(a: CP, b: CP):
    """``<a, b> = sum conj(a) * b`` without densifying (the first argument is conjugated):
    ``conj(w_a)^T (prod_k conj(A_k)^T B_k) w_b`` with a Hadamard product over modes."""
    check(a, "a")
    check(b, "b")
    _check_same_dims(a, b)
    return jnp.conj(a.weights) @ _grams(a.factors, b.factors) @ b.weights


def norm(tn: CP):
    """Frobenius norm ``||tn||_F`` from the Hadamard product of the factor Gram
    matrices (never forms the dense tensor)."""
    sq = jnp.real(inner(tn, tn))
    return _numerics.safe_sqrt(jnp.maximum(sq, 0))


def num_params(tn: CP) -> int:
    """Number of stored scalars: ``R + sum_k n_k R`` (per network, for a vmapped batch)."""
    if not isinstance(tn, CP):  # a type check only: a stacked batch has extra axes
        raise TypeError(f"tn must be a tnlib.cp.CP, got {type(tn).__name__}")
    return tn.rank * (1 + sum(tn.dims))


# ----------------------------------------------------------------------------- ALS


def _rel_error(x, cp, x_norm):
    err = jnp.linalg.norm((x - to_dense(cp)).ravel())
    return err / jnp.where(x_norm > 0, x_norm, 1.0)


def als(x, rank: int, n_iter: int = 50, key=None, *, return_errors: bool = False,
        init=None, fixed_modes=(), mask=None, svd: str = "auto"):
    """CP decomposition of a dense tensor by alternating least squares.

    Runs exactly ``n_iter`` sweeps (no convergence test) in a ``lax.fori_loop``, so
    it is jittable: ``jax.jit(lambda x: als(x, 3, n_iter=10))``. Each sweep updates
    the free factors in mode order 0, 1, ..., L-1; the update of mode ``k`` is the exact
    least-squares solution ``F_k = X_(k) conj(K) pinv(conj(V))`` with ``K`` the
    Khatri-Rao product of the other factors and ``V = K^H K`` the Hadamard product of
    their Gram matrices, after which its columns are normalized and the norms go into
    ``weights``. Every update minimizes the error over one factor, so the error
    never increases from sweep to sweep (up to rounding).

    With ``mask`` (missing data), the update of mode ``k`` is the exact least-squares
    fit of the observed entries only: each row ``i`` of ``F_k`` solves its own normal
    equations ``V_i = K^H diag(mask_(k)[i]) K`` (the Khatri-Rao matrix is formed, size
    ``prod_{j != k} n_j x R``). This minimizes the masked error over each factor
    exactly, unlike the imputation (EM) step of tensorly's ``parafac(mask=...)``, and
    the masked error never increases.

    Args:
      x: dense array (float or complex; integers are cast to the default float;
        bfloat16 / float16 are fitted in float32 and the result cast back).
      rank: static number of components ``R``, at most ``rank_bound(x.shape)``.
      n_iter: static number of sweeps (>= 1).
      key: None (default) initializes each factor from the ``R`` leading left
        singular vectors of the mode's unfolding (tensorly's ``init='svd'``; padded
        with deterministic random columns when ``R`` exceeds the mode's size; with a
        mask, of the unfolding whose missing entries are filled by 5 rounds of its own
        rank-``R`` SVD, tensorly's ``svd_mask_repeats=5``); a PRNG key
        initializes with ``random(key, ...)``'s Gaussian factors instead.
      return_errors: also return the relative error ``||x - cp||_F / ||x||_F`` after
        each sweep, an array of shape ``(n_iter,)`` (with a mask, over the observed
        entries: ``||mask (x - cp)||_F / ||mask x||_F``).
      init: a ``CP`` of shape ``x.shape`` and rank ``rank`` to start from (tensorly's
        ``init=cp_tensor``); not together with ``key``.
      fixed_modes: static modes whose factors stay exactly those of ``init`` (tensorly's
        ``fixed_modes``; any mode may be fixed, the last one included, but not all).
        Needs ``init``.
      mask: array of ``x.shape``, 1 (or True) where ``x`` is observed and 0 where it is
        missing (its values there are ignored); traced like ``x`` under ``jit`` / ``vmap``.
      svd: the SVD route of the SVD initialization (``key`` None, no ``init``), one of
        ``linalg.SVD_METHODS`` as in ``tucker.hosvd``: ``"auto"`` (default) takes the
        Gram route for the wide unfoldings of a double-precision ``x`` (6x faster
        than LAPACK on a 100^3 tensor at rank 10; it resolves singular values down to
        ``sqrt(eps)`` of the largest, plenty for a starting point) and LAPACK
        otherwise.

    Returns:
      ``CP`` (or ``(cp, errors)``): the free factors have unit-norm columns and the scale
      lives in the weights; fixed factors are returned as given.
    """
    x = _as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    rank = _check_rank(rank, x.shape)
    n_iter = _cp_ops.check_n_iter(n_iter)
    linalg.svd_method(svd, x)  # a ValueError naming the methods for an unknown svd
    L = x.ndim
    if init is not None:
        _cp_ops.check_init(init, x.shape, rank)
        if key is not None:
            raise ValueError("pass key (a random start) or init (a given start), not both")
    fixed = _cp_ops.check_fixed_modes(fixed_modes, L, init)
    if mask is not None:
        mask = _check_mask(mask, x.shape)
    if _numerics.low_precision(x.dtype):  # fit in float32, return x's dtype
        init = None if init is None else jax.tree.map(lambda a: a.astype(jnp.float32), init)
        out = als(x.astype(jnp.float32), rank, n_iter, key, return_errors=return_errors,
                  init=init, fixed_modes=fixed, mask=mask, svd=svd)
        return jax.tree.map(lambda a: a.astype(x.dtype), out)
    if mask is not None:
        mask = mask.astype(jnp.finfo(x.dtype).dtype)
        x = x * mask  # the values at missing entries play no part
    free = [k for k in range(L) if k not in fixed]
    if init is not None:
        factors = [f.astype(x.dtype) for f in init.factors]
    elif key is None:
        factors = _cp_ops.svd_init(x, rank, mask, method=svd)
    else:
        factors = list(random(key, x.shape, rank, x.dtype).factors)
    # free factors start unit-norm (their scale plays no part: each update solves for it)
    factors = [_cp_ops.normalize_columns(f)[0] if k in free else f
               for k, f in enumerate(factors)]
    weights = jnp.ones((rank,), x.dtype)
    x_norm = jnp.linalg.norm(x.ravel())
    errors = jnp.zeros((n_iter,), jnp.finfo(x.dtype).dtype)

    def sweep(i, carry):
        weights, factors, errors = carry
        factors = list(factors)
        grams = [jnp.conj(f).T @ f for f in factors]
        for k in free:
            if mask is None:
                v = jnp.ones((rank, rank), x.dtype)
                for j in range(L):
                    if j != k:
                        v = v * grams[j]
                f = _cp_ops.psd_solve(_cp_ops.mttkrp(x, factors, k), jnp.conj(v))
            else:
                f = _cp_ops.masked_solve(x, mask, factors, k)
            factors[k], norms = _cp_ops.normalize_columns(f)
            weights = norms.astype(x.dtype)
            grams[k] = jnp.conj(factors[k]).T @ factors[k]
        if return_errors:
            fit = CP(weights, tuple(factors))
            if mask is None:
                err = _rel_error(x, fit, x_norm)
            else:
                err = jnp.linalg.norm((x - mask * to_dense(fit)).ravel())
                err = err / jnp.where(x_norm > 0, x_norm, 1.0)
            errors = errors.at[i].set(err)
        return weights, tuple(factors), errors

    weights, factors, errors = jax.lax.fori_loop(
        0, n_iter, sweep, (weights, tuple(factors), errors)
    )
    out = CP(weights, factors)
    return (out, errors) if return_errors else out


def from_dense(x, *, max_rank: int | None = None, rtol: float | None = None,
               n_iter: int = 50, key=None, return_errors: bool = False):
    """CP decomposition by ALS (``als``) with the truncation arguments of every format.

    Args:
      x: dense array.
      max_rank: static CP rank (Python int), at most ``rank_bound(x.shape)``;
        ``None`` means that bound.
      rtol: relative Frobenius tolerance. Given, the ranks ``1, 2, ..., max_rank`` are
        fitted in turn and the first with ``||x - cp||_F <= rtol * ||x||_F`` is returned
        (the last one if none is): a data-dependent rank, so ``x`` must be concrete
        (outside ``jit``).
      n_iter, key, return_errors: as in ``als``.
    """
    x = _as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    _numerics.check_rank_args(max_rank, rtol, x)
    max_rank = rank_bound(x.shape) if max_rank is None else _check_rank(max_rank, x.shape)
    if rtol is None:
        return als(x, max_rank, n_iter=n_iter, key=key, return_errors=return_errors)
    if not _numerics.is_concrete(x):
        raise TypeError("from_dense with rtol picks a data-dependent CP rank and needs a "
                        "concrete tensor; inside jit pass max_rank alone")
    x_norm = jnp.linalg.norm(x.ravel())
    for rank in range(1, max_rank + 1):
        out = als(x, rank, n_iter=n_iter, key=key, return_errors=return_errors)
        if float(_rel_error(x, out[0] if return_errors else out, x_norm)) <= rtol:
            break
    return out


from tnlib import _cp_ops  # noqa: E402  (shared ALS pieces; _cp_ops imports this module's types)
from tnlib._cp_ops import (  # noqa: E402  (re-exports)
    mode_product,
    nonneg_hals,
    normalize,
)
