"""Dense Tucker helpers shared by ``tnlib.tucker`` and ``tnlib._riemannian_tucker``
(private to tnlib, public names): rank checks, unfoldings, mode products, projections
onto factor bases and leading singular vectors. Pure jax.numpy; shapes are static."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp

from tnlib import linalg

__all__ = ["max_ranks", "check_ranks", "unfold", "dense_mode_product", "project",
           "leading_vectors"]


def max_ranks(dims) -> tuple[int, ...]:
    """Largest useful rank per mode: the rank bound of the mode-k unfolding."""
    total = math.prod(dims)
    return tuple(min(n, total // n) for n in dims)


def check_ranks(ranks, dims, name: str = "ranks") -> tuple[int, ...]:
    """Per-mode ranks from an int or a sequence; each at most the unfolding's rank bound."""
    n_modes = len(dims)
    if isinstance(ranks, int) and not isinstance(ranks, bool):
        ranks = (ranks,) * n_modes
    elif isinstance(ranks, Sequence) and not isinstance(ranks, str):
        ranks = tuple(ranks)
        if len(ranks) != n_modes:
            raise ValueError(
                f"{name} must be an int or a sequence of {n_modes} ranks (one per mode), "
                f"got {ranks}"
            )
    else:
        raise TypeError(
            f"{name} must be a Python int or a sequence of ints (static), got "
            f"{type(ranks).__name__}"
        )
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"{name} entries must be Python ints >= 1, got {ranks}")
    total = math.prod(dims)
    for k, (r, n) in enumerate(zip(ranks, dims, strict=True)):
        allowed = min(n, total // n)
        if r > allowed:
            raise ValueError(
                f"{name}[{k}] = {r} is larger than the mode-{k} unfolding of a {tuple(dims)} "
                f"tensor ({n} x {total // n}) allows; the largest allowed value is {allowed}"
            )
    return ranks


def unfold(x, mode: int):
    """Mode-``mode`` unfolding: ``(n_mode, prod of the other sizes)``."""
    return jnp.moveaxis(x, mode, 0).reshape(x.shape[mode], -1)


def dense_mode_product(x, matrix, mode: int):
    return jnp.moveaxis(jnp.tensordot(matrix, x, axes=(1, mode)), 0, mode)


def project(x, factors, skip: int | None = None):
    """``x x_k factors[k]^H`` over every mode except ``skip``."""
    for k, f in enumerate(factors):
        if k != skip:
            x = dense_mode_product(x, jnp.conj(f).T, k)
    return x


def leading_vectors(mat, r: int, method: str = "lapack"):
    """``r`` orthonormal leading left singular vectors of ``mat`` (``r <= mat.shape[0]``).

    When ``mat`` has fewer than ``r`` columns it is padded with zero columns, so the
    extra vectors complete the basis (they carry zero singular values). ``method`` is a
    route of ``linalg.svd`` or ``"randomized"``; the Gram route is taken only when
    ``mat`` is not tall (its eigenvectors are then the orthonormal left side), a tall
    matrix goes to LAPACK.
    """
    if mat.shape[1] < r:
        mat = jnp.pad(mat, ((0, 0), (0, r - mat.shape[1])))
    if method == "randomized":
        return linalg.randomized_svd(mat, r)[0]
    if method == "gram" and mat.shape[0] > mat.shape[1]:
        method = "lapack"
    u, _, _ = linalg.svd(mat, method=method)
    return u[:, :r]
