"""Rank-adaptive training on the low-rank manifold: DLRT's integrator.

"Low-rank lottery tickets: finding efficient low-rank neural networks via matrix
differential equations" (Schotthoefer, Zangrando, Kusch, Ceruti & Tudisco, NeurIPS
2022) trains a weight ``W = U S V^T`` directly as its factors with the rank-adaptive
unconventional (BUG / KLS) integrator of the gradient flow. One :func:`step` on a batch:

1. **K- and L-steps** from the same point: ``K = U S`` takes an optimizer step on the
   loss of ``W = K V^T``, ``L = V S^T`` one on the loss of ``W = U L^T``;
2. **basis augmentation**: ``U_hat = qr([K_new, U])``, ``V_hat = qr([L_new, V])`` (twice
   the rank), and ``S`` is carried into the new bases, ``S_tilde = (U_hat^T U) S
   (V_hat^T V)^T``;
3. **S-step**: ``S_tilde`` (and every parameter that is not a factorization: biases,
   dense layers) takes an optimizer step on the loss of ``U_hat S_tilde V_hat^T``;
4. **truncation**: ``S_tilde = P diag(sigma) Q^T``; the new rank is the smallest count
   whose discarded singular values have norm ``<= rtol * ||sigma||`` (the paper's
   ``theta = tau ||Sigma||``), between ``min_rank`` and ``max_rank``; ``U = U_hat P``,
   ``V = V_hat Q``, ``S = diag(sigma)``, each cut to the new rank.

So each weight's rank grows (up to doubling per step) or shrinks as training asks.

**Static shapes.** The factors are stored padded to a static ``max_rank`` ``R``: ``u``
``(n, R)``, ``s`` ``(R, R)``, ``v`` ``(m, R)`` and the active rank ``rank`` (an int32
array); columns of ``u``, ``v`` and rows / columns of ``s`` at or beyond ``rank`` are
zero. Inside ``jit`` the rank only moves a mask, so one compiled step serves every rank
and the optimizer states keep their shapes; the cost of a step is that of rank ``R``
(choose ``R`` near the largest rank you expect; :func:`shrink` cuts it outside ``jit``).
The augmented bases are ``2R`` wide, so ``2 max_rank <= min(n, m)`` (the official code
caps the rank at ``min(n, m) / 2`` too).

A parameter pytree may hold any number of :class:`USV` leaves among ordinary arrays;
:func:`init` builds the optimizer states and :func:`step` does one integrator step on
all of them (``jit`` it with the loss closed over the batch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import linalg
from ._validate import as_key, check_int, check_shape
from .struct import pytree_dataclass

__all__ = ["USV", "random", "from_dense", "to_dense", "apply", "active_params", "truncate",
           "shrink", "State", "init", "step"]


@pytree_dataclass
class USV:
    """``W = u @ s @ v.T`` at active rank ``rank``: ``u`` ``(n, R)``, ``s`` ``(R, R)``,
    ``v`` ``(m, R)``, zero beyond ``rank``; ``R`` (``max_rank``) is ``s.shape[-1]``."""

    u: jax.Array
    s: jax.Array
    v: jax.Array
    rank: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        return (self.u.shape[-2], self.v.shape[-2])

    @property
    def max_rank(self) -> int:
        return self.s.shape[-1]


def _is_usv(x) -> bool:
    return isinstance(x, USV)


def _mask(rank, width, dtype):
    return (jnp.arange(width) < rank).astype(dtype)


def _check_dtype(dtype, name: str):
    """DLRT is written for real float32 / float64 weights (QR and SVD of the bases)."""
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise TypeError(f"{name} must be float32 or float64 (real QR / SVD of the bases), "
                        f"got {dtype.name}")
    return dtype


def _check_ranks(shape, rank, max_rank):
    n, m = shape
    rank = check_int(rank, "rank")
    max_rank = rank if max_rank is None else check_int(max_rank, "max_rank")
    if rank > max_rank:
        raise ValueError(f"rank={rank} is above max_rank={max_rank}")
    if 2 * max_rank > min(n, m):
        raise ValueError(
            f"max_rank={max_rank} is too large for a {n} x {m} weight: the augmented bases "
            f"are 2 max_rank wide, so max_rank must be <= min(n, m) // 2 = {min(n, m) // 2}")
    return rank, max_rank


def _from_svd(u, sig, vh, rank, max_rank):
    m = _mask(rank, max_rank, sig.dtype)
    return USV(u[:, :max_rank] * m, jnp.diag(sig[:max_rank] * m), vh[:max_rank].T * m,
               jnp.asarray(rank, jnp.int32))


def random(key, shape, rank: int, *, max_rank: int | None = None,
           dtype=jnp.float32) -> USV:
    """The best rank-``rank`` part of a LeCun-normal ``(n, m)`` weight (entries of
    variance ``1 / m``): orthonormal ``u``, ``v`` and the leading singular values in
    ``s`` (the official PyTorch code draws orthonormal factors and a sorted positive
    diagonal the same way), padded to ``max_rank`` (default ``rank``)."""
    n, m = check_shape(shape, "shape")
    rank, max_rank = _check_ranks((n, m), rank, max_rank)
    dtype = _check_dtype(dtype, "dtype")
    w = jax.random.normal(as_key(key), (n, m), dtype) / jnp.sqrt(m).astype(dtype)
    u, sig, vh = jnp.linalg.svd(w, full_matrices=False)
    return _from_svd(u, sig, vh, rank, max_rank)


def from_dense(x, *, max_rank: int, rank: int | None = None,
               rtol: float | None = None) -> USV:
    """Truncated SVD of the ``(n, m)`` matrix ``x`` padded to ``max_rank``: at ``rank``
    (static), or at the smallest rank whose discarded tail is ``<= rtol ||x||_F``
    (concrete ``x``), or at ``max_rank`` when both are None."""
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a matrix (n, m), got shape {x.shape}")
    _check_dtype(x.dtype, "x")
    if rank is not None and rtol is not None:
        raise ValueError("give rank or rtol, not both")
    _check_ranks(x.shape, rank or 1, max_rank)
    u, sig, vh = jnp.linalg.svd(x, full_matrices=False)
    if rtol is not None:
        rank = min(max_rank, linalg.tolerance_rank(sig, rtol * jnp.linalg.norm(sig)))
    rank, _ = _check_ranks(x.shape, max_rank if rank is None else rank, max_rank)
    return _from_svd(u, sig, vh, rank, max_rank)


def to_dense(f: USV) -> jax.Array:
    """The ``(n, m)`` matrix ``u @ s @ v.T``."""
    return f.u @ f.s @ f.v.T


def apply(f: USV, x: jax.Array) -> jax.Array:
    """``x @ W.T`` for ``x`` ``(..., m)``, through the factors (never forming ``W``)."""
    return ((x @ f.v) @ f.s.T) @ f.u.T


def active_params(f: USV) -> jax.Array:
    """Parameters of the trained factorization at its active rank ``r``: ``r (n + m)``
    (``s`` absorbed into a factor, as the paper counts evaluation parameters)."""
    n, m = f.shape
    return f.rank * (n + m)


def truncate(s, rtol, *, max_rank: int, min_rank: int = 1):
    """SVD of the square ``s`` and DLRT's new rank: the smallest ``k`` whose discarded
    singular values have norm ``<= rtol * ||sigma||``, clipped to ``[min_rank,
    max_rank]``. Returns ``(p, sigma, q, k)`` with ``s = p diag(sigma) q.T``. Jit-safe
    (``k`` is an int32 array)."""
    p, sig, qh = jnp.linalg.svd(s)
    keep = linalg.tolerance_mask(sig, rtol * jnp.linalg.norm(sig))
    k = jnp.clip(jnp.sum(keep), min_rank, max_rank).astype(jnp.int32)
    return p, sig, qh.T, k


def shrink(f: USV, max_rank: int) -> USV:
    """``f`` with its padding cut (or grown) to ``max_rank >= f.rank``; outside ``jit``
    (the rank must be concrete). Optimizer states built for the old width must be
    rebuilt with :func:`init`."""
    r = int(f.rank)
    max_rank = check_int(max_rank, "max_rank")
    _check_ranks(f.shape, max(r, 1), max_rank)
    pad = max_rank - f.max_rank
    if pad >= 0:
        return USV(jnp.pad(f.u, ((0, 0), (0, pad))), jnp.pad(f.s, ((0, pad), (0, pad))),
                   jnp.pad(f.v, ((0, 0), (0, pad))), f.rank)
    return USV(f.u[:, :max_rank], f.s[:max_rank, :max_rank], f.v[:, :max_rank], f.rank)


class State(NamedTuple):
    """Optimizer states of :func:`step`: ``kl`` for the ``(K, L)`` pairs, ``s`` for the
    augmented ``S`` matrices and every other parameter."""

    kl: Any
    s: Any


def _split(params):
    leaves, treedef = jax.tree.flatten(params, is_leaf=_is_usv)
    return leaves, treedef, [i for i, x in enumerate(leaves) if _is_usv(x)]


def _kl_shapes(f: USV):
    return (f.u, f.v)


def _s_tree(leaves, where, aug):
    """The S-step's parameters: ``aug[k]`` for the k-th factorization, others as is."""
    out = list(leaves)
    for k, i in enumerate(where):
        out[i] = aug[k]
    return out


def init(params, optimizer: optax.GradientTransformation) -> State:
    """Optimizer states for :func:`step` on ``params`` (a pytree with :class:`USV`
    leaves among arrays)."""
    leaves, _, where = _split(params)
    if not where:
        raise ValueError("params holds no dlrt.USV factorization to train")
    kl = [_kl_shapes(leaves[i]) for i in where]
    aug = [jnp.zeros((2 * leaves[i].max_rank,) * 2, leaves[i].s.dtype) for i in where]
    return State(optimizer.init(kl), optimizer.init(_s_tree(leaves, where, aug)))


def _augment(new, old, rank):
    """Orthonormal basis of the first ``rank`` columns of ``new`` and of ``old``, laid out
    contiguously in ``2R`` columns (zero beyond ``2 rank``)."""
    n, width = old.shape
    j = jnp.arange(2 * width)
    cols = jnp.concatenate([new, old, jnp.zeros((n, 1), old.dtype)], axis=1)
    idx = jnp.where(j < rank, j, jnp.where(j < 2 * rank, width + j - rank, 2 * width))
    q, _ = jnp.linalg.qr(cols[:, idx])
    return q * _mask(2 * rank, 2 * width, q.dtype)


def step(loss: Callable[[Any], jax.Array], params, state: State,
         optimizer: optax.GradientTransformation, *, rtol: float, min_rank: int = 1):
    """One rank-adaptive integrator step (module docstring) on every :class:`USV` leaf
    of ``params``; other leaves are updated in the S-step with the same optimizer.

    Args:
      loss: ``loss(params) -> scalar`` (close it over the batch).
      params: a pytree with :class:`USV` leaves among arrays.
      state: from :func:`init` with the same ``optimizer``.
      optimizer: an optax transformation; the official MNIST code uses Adam 1e-3 for
        K, L and S alike.
      rtol: the relative truncation tolerance ``tau`` (``0 <= rtol < 1``).
      min_rank: the smallest rank kept (the official code keeps 2).

    Returns ``(params, state, info)``; ``info`` holds ``loss`` (at the start of the
    step) and ``ranks`` (the new active ranks, an int32 array per factorization).
    """
    if not 0 <= rtol < 1:
        raise ValueError(f"rtol must be in [0, 1), got {rtol}")
    min_rank = check_int(min_rank, "min_rank")
    leaves, treedef, where = _split(params)
    if not where:
        raise ValueError("params holds no dlrt.USV factorization to train")
    facs = [leaves[i] for i in where]
    for f in facs:
        _check_dtype(f.s.dtype, "params (a dlrt.USV)")

    def rebuild(parts):
        out = list(leaves)
        for i, f in zip(where, parts, strict=True):
            out[i] = f
        return jax.tree.unflatten(treedef, out)

    eye = [jnp.diag(_mask(f.rank, f.max_rank, f.s.dtype)) for f in facs]
    ks = [f.u @ f.s for f in facs]
    ls = [f.v @ f.s.T for f in facs]
    # K- and L-steps from the same point: W = K V^T and W = U L^T (with s = identity on
    # the active block, the USV forward computes exactly these products).
    value, gk = jax.value_and_grad(lambda ks: loss(rebuild(
        [USV(k, e, f.v, f.rank) for k, e, f in zip(ks, eye, facs, strict=True)])))(ks)
    gl = jax.grad(lambda ls: loss(rebuild(
        [USV(f.u, e, v, f.rank) for v, e, f in zip(ls, eye, facs, strict=True)])))(ls)
    kl = list(zip(ks, ls, strict=True))
    upd, kl_state = optimizer.update(list(zip(gk, gl, strict=True)), state.kl, kl)
    kl = optax.apply_updates(kl, upd)

    bases = []
    for (k, l), f in zip(kl, facs, strict=True):
        m = _mask(f.rank, f.max_rank, f.s.dtype)
        uh = _augment(k * m, f.u, f.rank)
        vh = _augment(l * m, f.v, f.rank)
        s_aug = (uh.T @ f.u) @ f.s @ (f.v.T @ vh)
        bases.append((uh, vh, s_aug))

    # S-step: the augmented cores and every non-factorized parameter.
    s_leaves = _s_tree(leaves, where, [b[2] for b in bases])

    def s_loss(s_leaves):
        out = list(s_leaves)
        for i, (uh, vh, _), f in zip(where, bases, facs, strict=True):
            out[i] = USV(uh, s_leaves[i], vh, 2 * f.rank)
        return loss(jax.tree.unflatten(treedef, out))

    g = jax.grad(s_loss)(s_leaves)
    upd, s_state = optimizer.update(g, state.s, s_leaves)
    s_leaves = optax.apply_updates(s_leaves, upd)

    new, ranks = list(s_leaves), []
    for i, (uh, vh, _), f in zip(where, bases, facs, strict=True):
        width = f.max_rank
        m2 = _mask(2 * f.rank, 2 * width, f.s.dtype)
        p, sig, q, r = truncate(s_leaves[i] * m2[:, None] * m2[None, :], rtol,
                                max_rank=width, min_rank=min_rank)
        m = _mask(r, width, f.s.dtype)
        new[i] = USV((uh @ p[:, :width]) * m, jnp.diag(sig[:width] * m),
                     (vh @ q[:, :width]) * m, r)
        ranks.append(r)
    return (jax.tree.unflatten(treedef, new), State(kl_state, s_state),
            {"loss": value, "ranks": jnp.stack(ranks)})
