"""Non-negative least-squares pieces shared by ``tnlib.cp.nonneg_hals`` and
``tnlib.tucker.nonneg_hals`` (private to tnlib, public names): the HALS row update of
Gillis and Glineur (2012), FISTA with projection for a multilinear system (the Tucker
core), and the NNDSVDa start of Boutsidis and Gallopoulos (2008), as tensorly uses
them. Pure jax.numpy with static iteration counts (``lax.fori_loop``): jit / vmap-safe.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnlib import linalg

__all__ = ["hals", "fista", "nndsvda", "check_real"]


def check_real(x, name: str = "x"):
    """TypeError naming ``name`` for complex input (non-negativity needs real numbers)."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real for a non-negative decomposition, got {x.dtype}")
    return x


def hals(utm, utu, v, n_iter: int):
    """``n_iter`` HALS sweeps on ``min_{V >= 0} ||M - U V||_F`` given ``U^T M`` (``utm``,
    ``(R, n)``) and ``U^T U`` (``utu``, ``(R, R)``), from ``v`` (``(R, n)``).

    Each sweep updates the rows ``r = 0..R-1`` in turn by the exact minimizer over that
    row, ``V[r] = max(0, V[r] + (utm[r] - utu[r] @ V) / utu[r, r])`` (tensorly's
    ``hals_nnls`` with ``epsilon=0``); a row whose ``utu[r, r]`` is 0 is left unchanged.
    The rows run in a ``lax.fori_loop``, so compile time does not grow with ``R``.
    """
    R = utm.shape[0]
    diag = jnp.diagonal(utu)

    def row(r, v):
        d = diag[r]
        new = v[r] + (utm[r] - utu[r] @ v) / jnp.where(d > 0, d, 1)
        return v.at[r].set(jnp.where(d > 0, jnp.maximum(new, 0), v[r]))

    def sweep(_, v):
        return jax.lax.fori_loop(0, R, row, v)

    return jax.lax.fori_loop(0, n_iter, sweep, v)


def fista(utm, grams, x, n_iter: int, apply):
    """``n_iter`` steps of projected FISTA (Beck and Teboulle 2009) on
    ``min_{x >= 0} 1/2 ||m - U x||^2`` given ``utm = U^T m`` and the operator
    ``apply(x) = U^T U x``, with step ``1 / L`` where ``L = prod(lambda_max(grams))``
    (the Lipschitz constant of a Kronecker product of Gram matrices), started from ``x``
    with fresh momentum, as tensorly's ``fista`` (which clips at 1e-8, here at 0)."""
    lip = 1.0
    for g in grams:
        lip = lip * jnp.max(jnp.abs(jnp.linalg.eigvalsh(g)))
    step = 1.0 / jnp.where(lip > 0, lip, 1.0)

    def body(_, carry):
        x, y, t = carry
        x_new = jnp.maximum(y - step * (apply(y) - utm), 0)
        t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        y = x_new + ((t - 1) / t_new) * (x_new - x)
        return x_new, y, t_new

    one = jnp.ones((), jnp.finfo(x.dtype).dtype)
    x, _, _ = jax.lax.fori_loop(0, n_iter, body, (x, x, one))
    return x


def nndsvda(mat, rank: int, fill):
    """``rank`` non-negative columns from the SVD of ``mat`` (``(n, P)``): NNDSVDa.

    Column 0 is ``sqrt(s_0) |u_0|``; column ``j`` keeps the positive or the negative
    part of ``(u_j, v_j)``, whichever has the larger product of norms ``sigma``, scaled
    to ``sqrt(s_j sigma)``; entries below machine epsilon become ``fill`` (tensorly passes
    the mean of the tensor). Also returns the singular values (zero-padded to
    ``rank``). Columns beyond ``min(n, P)`` are ``fill`` times deterministic uniform
    draws (``PRNGKey(0)``).
    """
    u, s, vh = linalg.svd(mat)
    # tensorly's svd_flip: the largest entry of each left vector positive
    idx = jnp.argmax(jnp.abs(u), axis=0)
    sign = jnp.sign(jnp.take_along_axis(u, idx[None, :], axis=0)[0])
    sign = jnp.where(sign == 0, 1, sign)
    u, vh = u * sign, vh * sign[:, None]
    k = min(rank, s.shape[0])
    u, s, vh = u[:, :k], s[:k], vh[:k]
    up, un = jnp.maximum(u, 0), jnp.maximum(-u, 0)
    vp, vn = jnp.maximum(vh, 0), jnp.maximum(-vh, 0)
    nup, nun = jnp.linalg.norm(up, axis=0), jnp.linalg.norm(un, axis=0)
    nvp, nvn = jnp.linalg.norm(vp, axis=1), jnp.linalg.norm(vn, axis=1)
    mp, mn = nup * nvp, nun * nvn
    pos = mp > mn
    col = jnp.where(pos, up / jnp.where(nup > 0, nup, 1), un / jnp.where(nun > 0, nun, 1))
    sigma = jnp.where(pos, mp, mn)
    w = jnp.sqrt(s * sigma) * col
    w = w.at[:, 0].set(jnp.sqrt(s[0]) * jnp.abs(u[:, 0]))
    eps = jnp.finfo(mat.dtype).eps
    w = jnp.where(w < eps, fill, w)
    if k < rank:
        extra = jax.random.uniform(jax.random.PRNGKey(0), (mat.shape[0], rank - k), mat.dtype)
        w = jnp.concatenate([w, fill * extra], axis=1)
        s = jnp.concatenate([s, jnp.zeros((rank - k,), s.dtype)])
    return w, s
