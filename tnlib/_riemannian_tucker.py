"""The fixed-multilinear-rank Tucker manifold, for ``tnlib.riemannian`` (which dispatches
here when the point is a ``tnlib.tucker.Tucker``).

A Tucker ``x = G x_1 U_1 ... x_N U_N`` with orthonormal factors ``U_k`` (``n_k x r_k``)
and a core whose unfoldings have full row rank (``r_k <= n_k`` and ``r_k <= prod_{j!=k}
r_j``) is a point of the smooth manifold of tensors of multilinear rank ``r`` (Koch &
Lubich 2010; Kressner, Steinlechner & Vandereycken 2014). Its tangent vectors are

    xi = dG x_k U_k  +  sum_k  G x_k dU_k x_{j != k} U_j,      U_k^H dU_k = 0,

unique under that gauge. With ``M_k = G_(k) G_(k)^H`` (the Gram matrix of the core's
mode-``k`` unfolding) the norm of the ``k``-th term is ``||dU_k M_k^{1/2}||``, so a
tangent is stored as the deltas ``(dG, W_1, ..., W_N)`` with ``W_k = dU_k M_k^{1/2}``:
the ``N + 1`` terms are mutually orthogonal and ``<xi, eta> = sum <delta^xi, delta^eta>``
exactly as for the TT deltas, so ``riemannian.inner`` / ``norm`` / ``add`` / ``scale``
serve both manifolds. This module offers the private interface described in
``tnlib._riemannian_tt``; the public layer in ``tnlib.riemannian`` checks arguments
and builds ``Tangent``s.

* projection of a dense ``Z``: ``dG = Z x_k U_k^H``, ``W_k = (I - U_k U_k^H) Y_k G_(k)^H
  M_k^{-1/2}`` with ``Y_k`` the mode-``k`` unfolding of ``Z x_{j != k} U_j^H``;
* the tangent vector as a Tucker of ranks ``2r``: bases ``[U_k, dU_k]`` and a block core;
* retraction: ``x + xi`` in that form, its bases orthonormalized by QR, then a truncated
  HOSVD of the small ``(2r_1, ..., 2r_N)`` core back to ``r`` (quasi-optimal, so
  ``||R(x, xi) - (x + xi)|| = O(||xi||^2)``).

A point whose core is (near) rank-deficient in some mode is not on the manifold; the
inverse square roots of ``M_k`` are then regularized at machine precision relative to
its largest eigenvalue, so the results stay finite.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from tnlib import linalg
from tnlib._tucker_ops import dense_mode_product as _dense_mode_product
from tnlib._tucker_ops import leading_vectors as _leading_vectors
from tnlib._tucker_ops import project as _project
from tnlib._tucker_ops import unfold as _unfold
from tnlib.tucker import Tucker
from tnlib.tucker import check as _check_tucker

TYPE = Tucker


class Frame(NamedTuple):
    core: jax.Array     # G, the core in the orthonormal-factor frame
    factors: tuple      # U_k, orthonormal columns
    r: tuple            # R_k: params' factor k = U_k R_k
    isqrt: tuple        # M_k^{-1/2}
    sqrt: tuple         # M_k^{1/2}


def check_point(x, name: str = "x") -> Tucker:
    """``x`` is a ``Tucker`` whose ranks are feasible for a fixed-rank manifold."""
    _check_tucker(x, name)
    ranks, dims = x.ranks, x.dims
    for k, (r, n) in enumerate(zip(ranks, dims, strict=True)):
        rest = math.prod(ranks) // r
        if r > n or r > rest:
            raise ValueError(
                f"{name}: mode {k} has rank {r} with size {n} and the other ranks' product "
                f"{rest}; a fixed-rank Tucker needs r_k <= n_k and r_k <= prod_(j!=k) r_j")
    return x


def manifold_dim(x: Tucker) -> int:
    """``prod r_k + sum_k (n_k r_k - r_k^2)``."""
    return math.prod(x.ranks) + sum(n * r - r * r for n, r in zip(x.dims, x.ranks, strict=True))


def _mode_apply(x, mats):
    """``x x_k mats[k]`` for every ``k`` with ``mats[k]`` not None."""
    for k, m in enumerate(mats):
        if m is not None:
            x = _dense_mode_product(x, m, k)
    return x


def _sym_pow(m, power):
    """``m^power`` of a Hermitian positive semi-definite matrix; eigenvalues below
    ``eps * max`` are raised to that floor (finite on rank-deficient cores)."""
    w, v = jnp.linalg.eigh(m)
    floor = jnp.finfo(w.dtype).eps * jnp.maximum(jnp.max(w), jnp.finfo(w.dtype).tiny)
    w = jnp.maximum(w, floor)
    return (v * (w ** power).astype(v.dtype)) @ jnp.conj(v).T


def frame(x: Tucker) -> Frame:
    """Orthonormalize ``x``'s factors (QR), move the R factors into the core, and form
    the metric's square roots ``M_k^{+-1/2}``."""
    qs, rs = zip(*(linalg.qr(f) for f in x.factors), strict=True)
    core = _mode_apply(x.core, rs)
    grams = []
    for k in range(core.ndim):
        g = _unfold(core, k)
        grams.append(g @ jnp.conj(g).T)
    return Frame(core, tuple(qs), tuple(rs), tuple(_sym_pow(m, -0.5) for m in grams),
                 tuple(_sym_pow(m, 0.5) for m in grams))


def _gauge_factor(u, g):
    return g - u @ (jnp.conj(u).T @ g)


def _finish(fr: Frame, dg, gs) -> tuple:
    """Deltas from ``dG`` and ``g_k = Y_k G_(k)^H``: gauge, then the metric."""
    ws = tuple(_gauge_factor(u, g) @ s for u, g, s in zip(fr.factors, gs, fr.isqrt,
                                                          strict=True))
    return (dg,) + ws


def _core_unfold_h(fr: Frame, k):
    return jnp.conj(_unfold(fr.core, k)).T


def project_dense(fr: Frame, z) -> tuple:
    dg = _project(z, fr.factors)
    gs = tuple(_unfold(_project(z, fr.factors, skip=k), k) @ _core_unfold_h(fr, k)
               for k in range(len(fr.factors)))
    return _finish(fr, dg, gs)


def project_net(fr: Frame, w: Tucker) -> tuple:
    """Projection of a Tucker ``w = C x_k B_k`` without forming it densely."""
    ps = [jnp.conj(u).T @ b for u, b in zip(fr.factors, w.factors, strict=True)]
    dg = _mode_apply(w.core, ps)
    gs = []
    for k, b in enumerate(w.factors):
        ck = _mode_apply(w.core, [None if j == k else p for j, p in enumerate(ps)])
        gs.append(b @ (_unfold(ck, k) @ _core_unfold_h(fr, k)))
    return _finish(fr, dg, tuple(gs))


def from_core_grads(fr: Frame, grads: Tucker) -> tuple:
    """Projection of the Euclidean gradient from the gradients w.r.t. the params' core
    ``G'`` and factors ``A_k = U_k R_k`` (real dtypes): ``dG = grad_G' x_k R_k^{-T}``
    (triangular solves) and ``g_k = grad_{A_k} R_k^T``."""
    dg = grads.core
    for k, r in enumerate(fr.r):
        unf = solve_triangular(r, _unfold(dg, k), trans=1, lower=False)
        dg = jnp.moveaxis(unf.reshape((r.shape[1],) + tuple(
            s for j, s in enumerate(dg.shape) if j != k)), 0, k)
    gs = tuple(ga @ r.T for ga, r in zip(grads.factors, fr.r, strict=True))
    return _finish(fr, dg, gs)


def gauge(fr: Frame, ds) -> tuple:
    """Project factor deltas onto the gauge (the core delta is free)."""
    return (ds[0],) + tuple(_gauge_factor(u, w) for u, w in zip(fr.factors, ds[1:],
                                                                  strict=True))


def tangent_net(fr: Frame, ds, plus_point: bool) -> Tucker:
    """``xi`` (``x + xi`` when ``plus_point``) as a Tucker of ranks ``2r``: bases
    ``[U_k, dU_k]`` (``dU_k = W_k M_k^{-1/2}``) and a block core."""
    ranks = fr.core.shape
    dt = jnp.result_type(fr.core, *ds)
    core = jnp.zeros(tuple(2 * r for r in ranks), dt)
    first = tuple(slice(0, r) for r in ranks)
    core = core.at[first].set(ds[0] + fr.core if plus_point else ds[0])
    for k, r in enumerate(ranks):
        idx = tuple(slice(r, 2 * r) if j == k else s for j, s in enumerate(first))
        core = core.at[idx].set(fr.core.astype(dt))
    bases = tuple(jnp.concatenate([u, w @ s], axis=1).astype(dt)
                  for u, w, s in zip(fr.factors, ds[1:], fr.isqrt, strict=True))
    return Tucker(core, bases)


def truncate(t: Tucker, ranks) -> Tucker:
    """Orthonormalize ``t``'s bases (QR), then truncated HOSVD of the small core to
    ``ranks``; the result has orthonormal factors."""
    qs, rs = zip(*(linalg.qr(b) for b in t.factors), strict=True)
    core = _mode_apply(t.core, rs)
    vs = [_leading_vectors(_unfold(core, k), r) for k, r in enumerate(ranks)]
    core = _mode_apply(core, [jnp.conj(v).T for v in vs])
    return Tucker(core, tuple(q @ v for q, v in zip(qs, vs, strict=True)))


def retract(fr: Frame, ds, ranks) -> Tucker:
    return truncate(tangent_net(fr, ds, plus_point=True), ranks)


def step(fr: Frame, params: Tucker, ds, lr) -> Tucker:
    """``retract(params, -lr * ds) - params`` componentwise (what ``apply_updates`` adds)."""
    new = retract(fr, tuple(-lr * d for d in ds), params.ranks)
    return Tucker((new.core - params.core).astype(params.core.dtype),
                  tuple((n - o).astype(o.dtype)
                        for n, o in zip(new.factors, params.factors, strict=True)))


def zero_trace(x: Tucker) -> Tucker:
    """The zero tangent vector in ``tangent_net``'s shapes (momentum's initial state)."""
    return Tucker(jnp.zeros(tuple(2 * r for r in x.ranks), x.dtype),
                  tuple(jnp.zeros((n, 2 * r), x.dtype) for n, r in zip(x.dims, x.ranks,
                                                                          strict=True)))


def delta_shapes(x: Tucker) -> list[tuple[int, ...]]:
    return [tuple(x.core.shape)] + [tuple(f.shape) for f in x.factors]


grad_shapes = delta_shapes  # jax.grad of a loss of a Tucker: core and factor shapes


def check_net(x: Tucker, g):
    _check_tucker(g, "g")
    if g.dims != x.dims:
        raise ValueError(f"g has mode sizes {g.dims}; x has {x.dims}")


def target_ranks(x: Tucker, max_rank) -> tuple[int, ...]:
    """``x``'s ranks (``None``), or a static int / one rank per mode."""
    if max_rank is None:
        return x.ranks
    n = x.n_modes
    if isinstance(max_rank, int) and not isinstance(max_rank, bool):
        want = (max_rank,) * n
    elif isinstance(max_rank, tuple | list) and len(max_rank) == n:
        want = tuple(max_rank)
    else:
        raise ValueError(f"max_rank must be an int or {n} ranks (one per mode), got "
                         f"{max_rank!r}")
    if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in want):
        raise ValueError(f"max_rank entries must be Python ints >= 1 (static), got {want}")
    # the doubled-rank sum has at most 2 r_k (and n_k) directions per mode
    return tuple(min(r, 2 * q, d) for r, q, d in zip(want, x.ranks, x.dims, strict=True))
