"""Optimizer transformations for tensor-structured training (optax-shaped).

:func:`galore` is GaLore ("GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
Projection", Zhao et al. 2024; official code ``jiaweizzhao/GaLore``) as an optax
``GradientTransformation`` wrapping any inner optimizer: each matrix gradient is
projected onto its top-``rank`` singular subspace (refreshed every ``update_proj_gap``
steps from the current gradient), the inner optimizer runs on the small projected
gradient (so its moments are ``rank``-sized), and its update is projected back and
multiplied by ``scale``. With ``tucker=True`` parameters with three or more axes are
projected by the leading singular vectors of every unfolding (a Tucker / HOSVD
projector). Other parameters pass through the inner optimizer unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._validate import check_int

__all__ = ["GaLoreState", "galore", "projected_shape"]


class GaLoreState(NamedTuple):
    """``count``: steps taken; ``proj``: per parameter, the projector (``None`` where a
    parameter is not projected); ``inner``: the inner optimizer's state, built on the
    projected shapes."""

    count: jax.Array
    proj: Any
    inner: optax.OptState


def _projects(shape, rank: int, tucker: bool) -> bool:
    """Whether galore projects a parameter of ``shape``."""
    if len(shape) == 2:
        return min(shape) > rank
    return tucker and len(shape) >= 3 and any(n > rank for n in shape)


def _matrix_side(shape) -> str:
    # GaLore's "std" projector cuts the shorter side to the rank: m >= n projects from
    # the right (G P^T, (m, r)), m < n from the left (P^T G, (r, n)).
    return "right" if shape[0] >= shape[1] else "left"


def projected_shape(shape, rank: int, *, tucker: bool = False) -> tuple[int, ...]:
    """The shape of a parameter's gradient after :func:`galore`'s projection."""
    shape = tuple(shape)
    if not _projects(shape, rank, tucker):
        return shape
    if len(shape) == 2:
        return (shape[0], rank) if _matrix_side(shape) == "right" else (rank, shape[1])
    return tuple(min(n, rank) for n in shape)


def _new_projector(g, rank: int):
    """Top-``rank`` singular vectors of ``g`` on the side GaLore projects."""
    if g.ndim == 2:
        u, _, vh = jnp.linalg.svd(g, full_matrices=False)
        return vh[:rank] if _matrix_side(g.shape) == "right" else u[:, :rank]
    factors = []
    for k, n in enumerate(g.shape):
        unfold = jnp.moveaxis(g, k, 0).reshape(n, -1)
        u = jnp.linalg.svd(unfold, full_matrices=False)[0]
        factors.append(u[:, :min(n, rank)])
    return tuple(factors)


def _mode_products(x, factors, transpose: bool):
    for k, f in enumerate(factors):
        m = f.T if transpose else f
        x = jnp.moveaxis(jnp.tensordot(m, x, axes=(1, k)), 0, k)
    return x


def _project(g, p):
    if isinstance(p, tuple):
        return _mode_products(g, p, transpose=True)
    return g @ p.T if _matrix_side(g.shape) == "right" else p.T @ g


def _project_back(low, p, shape):
    if isinstance(p, tuple):
        return _mode_products(low, p, transpose=False)
    return low @ p if _matrix_side(shape) == "right" else p @ low


def galore(inner: optax.GradientTransformation, rank: int, *,
           update_proj_gap: int = 200, scale: float = 0.25,
           tucker: bool = False) -> optax.GradientTransformation:
    """GaLore around ``inner`` (module docstring).

    Args:
      inner: the optimizer run in the projected space, e.g. ``optax.adam(1e-3,
        eps=1e-6)`` (the official AdamW's defaults are lr 1e-3, betas (0.9, 0.999),
        eps 1e-6).
      rank: the projection rank ``r``; matrices whose shorter side is ``<= r`` are not
        projected (nothing to save).
      update_proj_gap: ``T``, steps between projector refreshes (the first step
        computes one). The official code's README and scripts use 200.
      scale: ``alpha``, multiplies the projected-back update (0.25 in the official
        scripts for pre-training).
      tucker: also project parameters with three or more axes (a Tucker projector:
        leading singular vectors of each unfolding, every axis cut to ``rank``).

    The inner optimizer's moments are kept when the projector changes, as in the
    official code. Weight decay on the full parameter goes after this transform
    (``optax.chain(galore(...), optax.add_decayed_weights(wd))`` with the learning rate
    folded in as usual in optax).
    """
    rank = check_int(rank, "rank")
    update_proj_gap = check_int(update_proj_gap, "update_proj_gap")

    def init(params):
        proj = jax.tree.map(lambda x: _init_projector(x, rank, tucker), params)
        shapes = jax.tree.map(lambda x: jnp.zeros(projected_shape(jnp.shape(x), rank,
                                                                   tucker=tucker), x.dtype),
                              params)
        return GaLoreState(jnp.zeros((), jnp.int32), proj, inner.init(shapes))

    def update(grads, state, params=None):
        refresh = state.count % update_proj_gap == 0

        def proj_of(g, p):
            if p is None:
                return None
            return jax.lax.cond(refresh, lambda: _new_projector(g, rank), lambda: p)

        is_none = lambda x: x is None
        proj = jax.tree.map(proj_of, grads, state.proj, is_leaf=is_none)
        low = jax.tree.map(lambda g, p: g if p is None else _project(g, p), grads, proj,
                           is_leaf=is_none)
        low_params = None if params is None else jax.tree.map(
            lambda x, p: x if p is None else _project(x, p), params, proj, is_leaf=is_none)
        upd, inner_state = inner.update(low, state.inner, low_params)
        out = jax.tree.map(
            lambda u, p, g: u if p is None else scale * _project_back(u, p, g.shape),
            upd, proj, grads, is_leaf=is_none)
        return out, GaLoreState(state.count + 1, proj, inner_state)

    return optax.GradientTransformation(init, update)


def _init_projector(x, rank: int, tucker: bool):
    """A placeholder of the projector's shape (replaced at the first step), or None."""
    if not _projects(jnp.shape(x), rank, tucker):
        return None
    shape, dtype = jnp.shape(x), x.dtype
    if len(shape) == 2:
        m, n = shape
        return jnp.zeros((rank, n) if _matrix_side(shape) == "right" else (m, rank), dtype)
    return tuple(jnp.zeros((n, min(n, rank)), dtype) for n in shape)
