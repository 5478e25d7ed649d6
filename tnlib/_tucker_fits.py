"""Normalization, partial and masked HOOI, and non-negative Tucker of ``tnlib.tucker``.

The public functions (``normalize``, ``partial_hooi``, ``nonneg_hals``) are re-exported
by ``tnlib.tucker`` (call ``tnlib.tucker.partial_hooi``, ...); this module only keeps
``tucker.py`` within its size. ``masked_hooi`` is ``tucker.hooi(..., mask=...)``. All
are pure with static ranks and iteration counts (``lax.fori_loop``): jit / vmap-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from tnlib import _nnls, _numerics, linalg
from tnlib._tucker_ops import check_ranks, dense_mode_product, leading_vectors, unfold
from tnlib._validate import as_inexact, check_mask
from tnlib.tucker import Tucker, check

__all__ = ["normalize", "partial_hooi", "nonneg_hals"]


def normalize(tn: Tucker) -> Tucker:
    """The same tensor with unit-norm factor columns and the norms absorbed into the
    core (tensorly's ``tucker_normalize``): ``factors[k][:, a] / ||factors[k][:, a]||``
    and ``core`` scaled by ``||factors[k][:, a]||`` along axis ``k``. A zero column
    stays zero (its core slice becomes 0). Differentiable everywhere."""
    check(tn, "tn")
    core = tn.core
    factors = []
    for k, f in enumerate(tn.factors):
        norms = _numerics.safe_sqrt(jnp.sum(jnp.abs(f) ** 2, axis=0))
        factors.append(f / jnp.where(norms > 0, norms, 1.0).astype(f.dtype))
        shape = [1] * core.ndim
        shape[k] = -1
        core = core * norms.astype(core.dtype).reshape(shape)
    return Tucker(core, tuple(factors))


def _check_modes(modes, n_modes: int) -> tuple[int, ...]:
    if isinstance(modes, int | bool) or not isinstance(modes, Sequence | range):
        raise TypeError(f"modes must be a sequence of ints, got {modes!r}")
    out = []
    for m in modes:
        if isinstance(m, bool) or not isinstance(m, int) or not -n_modes <= m < n_modes:
            raise ValueError(
                f"modes entries must be ints in [{-n_modes}, {n_modes - 1}], got {tuple(modes)}"
            )
        out.append(m % n_modes)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"modes must be a non-empty sequence of distinct modes, got "
                         f"{tuple(modes)}")
    return tuple(out)


def _check_n_iter(n_iter, name="n_iter", low=0) -> int:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < low:
        raise ValueError(f"{name} must be a Python int >= {low}, got {n_iter!r}")
    return n_iter


def _project(x, factors, modes, skip=None):
    for f, m in zip(factors, modes, strict=True):
        if m != skip:
            x = dense_mode_product(x, jnp.conj(f).T, m)
    return x


def _expand(core, factors, modes):
    for f, m in zip(factors, modes, strict=True):
        core = dense_mode_product(core, f, m)
    return core


def _hooi_loop(x, ranks, modes, n_iter, mask, n_impute):
    """HOSVD start then ``n_iter`` HOOI sweeps over ``modes``; with ``mask`` the missing
    entries are imputed from the current fit before each sweep (tensorly's
    ``partial_tucker(mask=...)``) and the start imputes each unfolding ``n_impute``
    times by its own truncated SVD (``svd_mask_repeats``)."""
    if mask is not None:
        mask = mask.astype(jnp.finfo(x.dtype).dtype)
        x = x * mask
    factors = []
    for r, m in zip(ranks, modes, strict=True):
        mat = unfold(x, m)
        if mask is not None:
            mk = unfold(mask, m).astype(mat.dtype)
            for _ in range(n_impute):
                u, s, vh = linalg.svd(mat)
                low = (u[:, :r] * s[:r].astype(u.dtype)) @ vh[:r]
                mat = mat * mk + low * (1 - mk)
        factors.append(leading_vectors(mat, r))
    core = _project(x, factors, modes)

    def sweep(_, carry):
        core, factors = carry
        factors = list(factors)
        y = x if mask is None else x + (1 - mask) * _expand(core, factors, modes)
        for i, m in enumerate(modes):
            factors[i] = leading_vectors(unfold(_project(y, factors, modes, skip=m), m),
                                         ranks[i])
        return _project(y, factors, modes), tuple(factors)

    if n_iter:
        core, factors = jax.lax.fori_loop(0, n_iter, sweep, (core, tuple(factors)))
    return core, tuple(factors)


def masked_hooi(x, rank, n_iter, mask):
    """``tucker.hooi(x, rank, n_iter, mask=mask)`` (arguments already checked)."""
    mask = check_mask(mask, x.shape)
    core, factors = _hooi_loop(x, rank, tuple(range(x.ndim)), n_iter, mask, 5)
    return Tucker(core, factors)


def partial_hooi(x, rank, modes, n_iter: int = 10, *, mask=None):
    """Tucker decomposition of only some modes by HOOI (tensorly's ``partial_tucker``).

    ``x ~ core x_{modes[0]} factors[0] x_{modes[1]} factors[1] ...``: the modes not in
    ``modes`` keep their full size in ``core``. Starts from the truncated HOSVD of
    those modes and runs exactly ``n_iter`` HOOI sweeps (``lax.fori_loop``, jittable;
    every sweep replaces each factor by the leading left singular vectors of ``x``
    projected on the other factors, so the error never increases).

    Args:
      x: dense array.
      rank: an int (every decomposed mode) or one rank per entry of ``modes``, each at
        most ``min(n_k, prod_{j != k} n_j)``; static.
      modes: static sequence of distinct modes to decompose (negative values count from
        the end), in the order ``factors`` follows.
      n_iter: static number of sweeps (>= 0; 0 returns the truncated HOSVD).
      mask: None, or an array of ``x.shape`` with 1 where ``x`` is observed and 0 where it
        is missing: each sweep first fills the missing entries with the current fit (an
        EM step, as tensorly does), and the start fills each unfolding 5 times with its
        own truncated SVD (tensorly's ``svd_mask_repeats=5``).

    Returns:
      ``(core, factors)``: ``core`` of shape ``x.shape`` with ``rank`` on ``modes``, and a
      tuple of orthonormal ``(n_k, r_k)`` factors, one per entry of ``modes``.
    """
    x = as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    modes = _check_modes(modes, x.ndim)
    n_iter = _check_n_iter(n_iter)
    dims = x.shape
    if isinstance(rank, int) and not isinstance(rank, bool):
        rank = (rank,) * len(modes)
    if not isinstance(rank, Sequence) or isinstance(rank, str) or len(rank) != len(modes):
        raise ValueError(f"rank must be an int or a sequence of {len(modes)} ranks (one per "
                         f"entry of modes), got {rank!r}")
    full = list(dims)
    for r, m in zip(rank, modes, strict=True):
        full[m] = r
    checked = check_ranks(tuple(full), dims, "rank")
    ranks = tuple(checked[m] for m in modes)
    if mask is not None:
        mask = check_mask(mask, dims)
    return _hooi_loop(x, ranks, modes, n_iter, mask, 5)


def nonneg_hals(x, rank, n_iter: int = 100, *, n_inner: int = 5, n_core_iter: int | None = None,
                return_errors: bool = False) -> Tucker:
    """Non-negative Tucker decomposition by HALS factor updates and a projected FISTA core
    update (tensorly's ``non_negative_tucker_hals``).

    Each of the exactly ``n_iter`` sweeps (a ``lax.fori_loop``, jittable) updates every
    factor by ``n_inner`` HALS passes over its columns (each column the exact
    non-negative minimizer given the others, from ``U^T U`` and ``U^T M`` of the
    mode-``k`` least-squares problem), then the core by ``n_core_iter`` steps of FISTA
    projected on ``core >= 0`` with step ``1 / prod_k lambda_max(F_k^T F_k)``. The start
    is NNDSVDa of each unfolding (tensorly's ``init='svd'`` with ``non_negative``) with
    the core ``|x x_k F_k^T|``.

    Args:
      x: real dense array (integers become the default float; bfloat16 / float16 are
        fitted in float32 and the result cast back).
      rank: an int or one rank per mode, each at most ``min(n_k, prod_{j != k} n_j)``.
      n_iter: static number of sweeps (>= 1).
      n_inner: HALS passes per factor update (>= 1; tensorly uses 5).
      n_core_iter: FISTA steps per core update (>= 1); None uses ``n_iter``, as tensorly.
      return_errors: also return ``||x - t||_F / ||x||_F`` after each sweep.

    Returns:
      ``Tucker`` with a non-negative core and non-negative factors (or ``(t, errors)``).
    """
    x = as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    _nnls.check_real(x)
    ranks = check_ranks(rank, x.shape, "rank")
    n_iter = _check_n_iter(n_iter, low=1)
    n_inner = _check_n_iter(n_inner, "n_inner", 1)
    n_core_iter = n_iter if n_core_iter is None else _check_n_iter(n_core_iter, "n_core_iter", 1)
    if _numerics.low_precision(x.dtype):
        out = nonneg_hals(x.astype(jnp.float32), ranks, n_iter, n_inner=n_inner,
                          n_core_iter=n_core_iter, return_errors=return_errors)
        return jax.tree.map(lambda a: a.astype(x.dtype), out)
    L = x.ndim
    modes = tuple(range(L))
    fill = jnp.mean(x)
    factors = [_nnls.nndsvda(unfold(x, k), ranks[k], fill)[0] for k in range(L)]
    factors = [jnp.abs(f) for f in factors]
    core = jnp.abs(_project(x, factors, modes))
    x_norm = jnp.linalg.norm(x.ravel())
    errors = jnp.zeros((n_iter,), x.dtype)

    def sweep(i, carry):
        core, factors, errors = carry
        factors = list(factors)
        for k in range(L):
            grams = [f.T @ f for f in factors]
            cross = core
            for j in range(L):
                if j != k:
                    cross = dense_mode_product(cross, grams[j], j)
            utu = unfold(cross, k) @ unfold(core, k).T
            mtu = unfold(_project(x, factors, modes, skip=k), k) @ unfold(core, k).T
            factors[k] = _nnls.hals(mtu.T, utu, factors[k].T, n_inner).T
        grams = [f.T @ f for f in factors]

        def apply(c):
            for j, g in enumerate(grams):
                c = dense_mode_product(c, g, j)
            return c

        core = _nnls.fista(_project(x, factors, modes), grams, core, n_core_iter, apply)
        if return_errors:
            err = jnp.linalg.norm((x - _expand(core, factors, modes)).ravel())
            errors = errors.at[i].set(err / jnp.where(x_norm > 0, x_norm, 1.0))
        return core, tuple(factors), errors

    core, factors, errors = jax.lax.fori_loop(0, n_iter, sweep, (core, tuple(factors), errors))
    out = Tucker(core, factors)
    return (out, errors) if return_errors else out
