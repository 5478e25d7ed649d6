"""The fixed-TT-rank manifold, for ``tnlib.riemannian`` (which dispatches here when the
point is a ``tnlib.tt.TensorTrain``; the geometry is described in its docstring).

Every manifold module of ``tnlib.riemannian`` offers the same private interface, used
by the public functions and optimizers there: ``check_point``, ``manifold_dim``,
``frame`` (the point's orthonormal frame), ``delta_shapes``, ``gauge``,
``project_dense`` / ``project_net`` (projection of a dense tensor / a tensor of the
point's format), ``from_core_grads`` (projection from the gradient w.r.t. the point's
own arrays), ``tangent_net`` (a tangent, or point plus tangent, in the point's format
at doubled ranks), ``target_ranks``, ``retract``, ``step`` and ``zero_trace``. All take
and return tuples of deltas; the public layer checks arguments and builds ``Tangent``s.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from tnlib import linalg
from tnlib._tt_sweeps import transfer as _transfer
from tnlib.tt import TensorTrain
from tnlib.tt import check as _check_tt

TYPE = TensorTrain


class Frame(NamedTuple):
    left: tuple    # U_0 .. U_{L-2}, left-orthogonal
    center: Any    # last core of the left-canonical form: x = U_0 ... U_{L-2} center
    right: tuple   # V_1 .. V_{L-1}, right-orthogonal (right[k-1] is V_k)
    r_left: tuple  # cores 0..k of x = U_{<=k} r_left[k]  (k = 0..L-2)
    r_right: tuple  # cores k..L-1 of x = r_right[k-1]^T V_{>=k}  (k = 1..L-1)



def check_point(x, name: str = "x") -> TensorTrain:
    """Validate that ``x`` is a ``TensorTrain`` on a fixed-rank manifold (static).

    Every bond must be feasible, ``r_k <= r_{k-1} n_k`` and ``r_{k-1} <= n_k r_k``;
    otherwise ValueError naming the site (``tt.round`` shrinks redundant bonds).
    Returns ``x``.
    """
    if not isinstance(x, TensorTrain):
        raise TypeError(f"{name} must be a TensorTrain, got {type(x).__name__}")
    _check_tt(x, name)
    for k, c in enumerate(x.cores):
        a, n, b = c.shape
        if b > a * n or a > n * b:
            raise ValueError(
                f"{name}: core {k} has shape {tuple(c.shape)}; a fixed-rank TT needs "
                f"r_right <= r_left * n and r_left <= n * r_right (round the TT first)"
            )
    return x


def _unf(c):
    return c.reshape(-1, c.shape[-1])


def frame(x: TensorTrain) -> Frame:
    """Left- and right-orthogonal cores of ``x`` and the R factors of both QR sweeps."""
    cores = list(x.cores)
    L = len(cores)
    left, r_left = [], []
    c = cores[0]
    for k in range(L - 1):
        r, n, _ = c.shape
        q, rr = linalg.qr(_unf(c))
        left.append(q.reshape(r, n, -1))
        r_left.append(rr)
        c = jnp.einsum("ab,bnc->anc", rr, cores[k + 1])
    center = c
    right, r_right = [None] * (L - 1), [None] * (L - 1)
    c = cores[-1]
    for k in range(L - 1, 0, -1):
        _, n, r = c.shape
        q, rr = linalg.qr(c.reshape(c.shape[0], n * r).T)
        right[k - 1] = q.T.reshape(-1, n, r)
        r_right[k - 1] = rr
        c = jnp.einsum("anb,cb->anc", cores[k - 1], rr)
    return Frame(tuple(left), center, tuple(right), tuple(r_left), tuple(r_right))


def gauge(fr: Frame, ds) -> tuple:
    """Project each delta onto the gauge ``U_k^H delta_k = 0`` (all but the last)."""
    out = []
    for k, d in enumerate(ds):
        if k < len(fr.left):
            u = _unf(fr.left[k])
            dm = _unf(d)
            d = (dm - u @ (jnp.conj(u).T @ dm)).reshape(d.shape)
        out.append(d)
    return tuple(out)


def _tangent_cores(fr: Frame, ds, plus_point: bool) -> tuple:
    """Cores of ``sum_k U_{<k} delta_k V_{>k}`` (``+ x`` when ``plus_point``), ranks 2r."""
    L = len(ds)
    last = ds[-1] + fr.center if plus_point else ds[-1]
    if L == 1:
        return (last,)
    dt = jnp.result_type(*ds, fr.center)
    cores = [jnp.concatenate([fr.left[0], ds[0]], axis=-1).astype(dt)]
    for k in range(1, L - 1):
        u, d, v = fr.left[k], ds[k], fr.right[k - 1]
        top = jnp.concatenate([u, d], axis=-1)
        bot = jnp.concatenate([jnp.zeros(v.shape[:-1] + (u.shape[-1],), dt), v], axis=-1)
        cores.append(jnp.concatenate([top, bot], axis=0).astype(dt))
    cores.append(jnp.concatenate([last, fr.right[-1]], axis=0).astype(dt))
    return tuple(cores)


def project_dense(fr: Frame, z) -> tuple:
    L = len(fr.right) + 1
    dims = tuple(c.shape[1] for c in fr.left) + (fr.center.shape[1],)
    # right[k]: V_{>k}^H as (rest, r_k)
    vd = [None] * L
    vd[L - 1] = jnp.ones((1, 1), z.dtype)
    for k in range(L - 2, -1, -1):
        v = fr.right[k]
        vd[k] = jnp.einsum("anb,Rb->nRa", jnp.conj(v), vd[k + 1]).reshape(-1, v.shape[0])
    ds, zl = [], z.reshape(1, -1)
    for k in range(L):
        t = zl.reshape(zl.shape[0], dims[k], -1)
        ds.append(jnp.einsum("anR,Rb->anb", t, vd[k]))
        if k < L - 1:
            zl = jnp.einsum("anb,anR->bR", jnp.conj(fr.left[k]), t)
    return tuple(ds)


def project_net(fr: Frame, w: TensorTrain) -> tuple:
    """Projection of a TT ``w`` (any ranks) without forming it densely."""
    L = len(w.cores)
    dt = jnp.result_type(w.dtype, fr.center)
    rights = [None] * L
    rights[L - 1] = jnp.ones((1, 1), dt)
    for k in range(L - 2, -1, -1):  # rights[k] = W_{>k} V_{>k}^H, (R_k, r_k)
        rights[k] = jnp.einsum("bnc,cd,and->ba", w.cores[k + 1], rights[k + 1],
                               jnp.conj(fr.right[k]))
    ds, env = [], jnp.ones((1, 1), dt)
    for k in range(L):
        ds.append(jnp.einsum("ab,bnc,cd->and", env, w.cores[k], rights[k]))
        if k < L - 1:
            env = _transfer(env, fr.left[k], w.cores[k])
    return tuple(ds)



def from_core_grads(fr: Frame, grads: TensorTrain) -> tuple:
    """Projection from the gradient w.r.t. ``x``'s cores (triangular solves with the
    R factors of the frame's QR sweeps)."""
    out, L = [], len(grads.cores)
    for k, g in enumerate(grads.cores):
        a, n, b = g.shape
        m = g.reshape(a, n * b)
        if k > 0:  # left factor: solve R^T y = g
            m = solve_triangular(fr.r_left[k - 1], m, trans=1, lower=False)
        m = m.reshape(a * n, b)
        if k < L - 1:  # right factor: y R = g  <=>  R^T y^T = g^T
            m = solve_triangular(fr.r_right[k], m.T, trans=1, lower=False).T
        out.append(m.reshape(a, n, b))
    return tuple(out)



def target_ranks(x, max_rank) -> tuple[int, ...]:
    L = x.n_sites
    if max_rank is None:
        return x.ranks
    if isinstance(max_rank, int) and not isinstance(max_rank, bool):
        want = (max_rank,) * (L - 1)
    else:
        if not isinstance(max_rank, tuple | list):
            raise ValueError(f"max_rank must be an int or {L - 1} internal ranks, got "
                             f"{max_rank!r}")
        want = tuple(max_rank)
        if len(want) != L - 1:
            raise ValueError(f"max_rank must be an int or {L - 1} internal ranks, got {want}")
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in want):
        raise ValueError(f"max_rank entries must be Python ints >= 1 (static), got {want}")
    return (1,) + want + (1,)


def _round_to(cores, ranks) -> tuple:
    """Left-orthogonalize, then truncate bond ``k`` to at most ``ranks[k]`` by SVD from
    the right (static shapes; right-canonical result, the norm in the first core)."""
    cores = list(cores)
    L = len(cores)
    for k in range(L - 1):
        r, n, _ = cores[k].shape
        q, rr = linalg.qr(_unf(cores[k]))
        cores[k] = q.reshape(r, n, -1)
        cores[k + 1] = jnp.einsum("ab,bnc->anc", rr, cores[k + 1])
    for k in range(L - 1, 0, -1):
        _, n, r = cores[k].shape
        u, s, vh = linalg.truncated_svd(cores[k].reshape(-1, n * r), ranks[k])
        cores[k] = vh.reshape(-1, n, r)
        cores[k - 1] = jnp.einsum("anb,bc->anc", cores[k - 1], u * s.astype(u.dtype))
    return tuple(cores)


def retract(fr: Frame, ds, ranks) -> TensorTrain:
    return TensorTrain(_round_to(_tangent_cores(fr, ds, plus_point=True), ranks))



def zero_trace(x: TensorTrain) -> TensorTrain:
    r = (1,) + tuple(2 * q for q in x.ranks[1:-1]) + (1,)
    return TensorTrain(tuple(jnp.zeros((r[k], n, r[k + 1]), x.dtype)
                             for k, n in enumerate(x.dims)))



def step(fr, params, ds, lr):
    """``retract(params, -lr * ds) - params`` core-wise (what ``apply_updates`` adds)."""
    new = retract(fr, tuple(-lr * d for d in ds), params.ranks)
    return TensorTrain(tuple((n - o).astype(o.dtype)
                             for n, o in zip(new.cores, params.cores, strict=True)))



def manifold_dim(x: TensorTrain) -> int:
    """``sum_k r_{k-1} n_k r_k - sum_{k=1}^{L-1} r_k^2``."""
    r = x.ranks
    return sum(a * n * b for a, n, b in zip(r[:-1], x.dims, r[1:], strict=True)) - sum(
        q * q for q in r[1:-1])


def delta_shapes(x: TensorTrain) -> list[tuple[int, ...]]:
    return [tuple(c.shape) for c in x.cores]


def grad_shapes(x: TensorTrain) -> list[tuple[int, ...]]:
    """Shapes of the arrays of ``x`` (what ``jax.grad`` of a loss of ``x`` returns)."""
    return [tuple(c.shape) for c in x.cores]


def tangent_net(fr: Frame, ds, plus_point: bool) -> TensorTrain:
    return TensorTrain(_tangent_cores(fr, ds, plus_point))


def check_net(x: TensorTrain, g: TensorTrain):
    _check_tt(g, "g")
    if g.dims != x.dims:
        raise ValueError(f"g has mode sizes {g.dims}; x has {x.dims}")
