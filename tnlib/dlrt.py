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

**Tucker tensors** (convolution kernels, tensor weights) take the rank-adaptive BUG
integrator of Ceruti, Lubich & Walach in the same :func:`step`: a
:class:`TuckerFactors` (core and one factor per mode, padded to ``max_ranks``) has one
K-step per mode (``K_i = U_i R_i^T`` from ``Mat_i(C)^T = Q_i R_i``, the other factors
fixed), augmented bases ``qr([K_i, U_i])``, an S-step on the augmented core, and a HOSVD
truncation of that core keeping, per mode, the smallest rank whose discarded tail is
``<= rtol ||C|| / sqrt(d)`` (so the whole truncation error is ``<= rtol ||C||``).
:func:`as_tucker` gives the :class:`tnlib.tucker.Tucker` view for the operations of
:mod:`tnlib.tucker`.

A parameter pytree may hold any number of :class:`USV` and :class:`TuckerFactors`
leaves among ordinary arrays; :func:`init` builds the optimizer states and :func:`step`
does one integrator step on all of them (``jit`` it with the loss closed over the batch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import linalg
from ._validate import as_key, check_int, check_shape
from .struct import pytree_dataclass

__all__ = ["USV", "random", "from_dense", "to_dense", "apply", "active_params", "truncate",
           "shrink", "TuckerFactors", "random_tucker", "tucker_from_dense", "tucker_to_dense",
           "as_tucker", "State", "init", "step"]


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


@pytree_dataclass
class TuckerFactors:
    """A Tucker tensor ``core x_1 factors[0] ... x_d factors[d-1]`` at active ranks
    ``ranks`` (int32 ``(d,)``): ``core`` ``(R_1, ..., R_d)``, ``factors[i]`` ``(n_i, R_i)``
    with orthonormal active columns, zero beyond ``ranks[i]``."""

    core: jax.Array
    factors: tuple
    ranks: jax.Array

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(f.shape[-2] for f in self.factors)

    @property
    def max_ranks(self) -> tuple[int, ...]:
        return tuple(self.core.shape)


def _is_factorization(x) -> bool:
    return isinstance(x, USV | TuckerFactors)


def _dtype_of(f):
    return f.s.dtype if isinstance(f, USV) else f.core.dtype


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
    leaves, treedef = jax.tree.flatten(params, is_leaf=_is_factorization)
    return leaves, treedef, [i for i, x in enumerate(leaves) if _is_factorization(x)]


def _kl_shapes(f):
    return [f.u, f.v] if isinstance(f, USV) else list(f.factors)


def _aug_shape(f):
    return (2 * f.max_rank,) * 2 if isinstance(f, USV) else tuple(2 * r for r in f.max_ranks)


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
        raise ValueError("params holds no dlrt.USV / dlrt.TuckerFactors to train")
    kl = [_kl_shapes(leaves[i]) for i in where]
    aug = [jnp.zeros(_aug_shape(leaves[i]), _dtype_of(leaves[i])) for i in where]
    return State(optimizer.init(kl), optimizer.init(_s_tree(leaves, where, aug)))


def _augment(new, old, rank, fixed=False):
    """Orthonormal basis of the first ``rank`` columns of ``new`` and of ``old``, laid out
    contiguously in ``2R`` columns (zero beyond ``2 rank``); with ``fixed``, of ``new``
    alone (zero beyond ``rank``: the fixed-rank integrator's ``qr(K)``)."""
    n, width = old.shape
    j = jnp.arange(2 * width)
    cols = jnp.concatenate([new, old, jnp.zeros((n, 1), old.dtype)], axis=1)
    rest = 2 * width if fixed else jnp.where(j < 2 * rank, width + j - rank, 2 * width)
    idx = jnp.where(j < rank, j, rest)
    q, _ = jnp.linalg.qr(cols[:, idx])
    return q * _mask(rank if fixed else 2 * rank, 2 * width, q.dtype)


def _usv_kind():
    """The matrix case as the generic step sees it: modes 0 / 1 are the K- / L-steps."""

    def k_start(f):
        return [f.u @ f.s, f.v @ f.s.T]

    def k_form(f, j, k):
        eye = jnp.diag(_mask(f.rank, f.max_rank, f.s.dtype))
        return USV(k, eye, f.v, f.rank) if j == 0 else USV(f.u, eye, k, f.rank)

    def augment(f, ks, fixed):
        m = _mask(f.rank, f.max_rank, f.s.dtype)
        uh = _augment(ks[0] * m, f.u, f.rank, fixed)
        vh = _augment(ks[1] * m, f.v, f.rank, fixed)
        return (uh, vh), (uh.T @ f.u) @ f.s @ (f.v.T @ vh)

    def s_form(f, bases, s):
        return USV(bases[0], s, bases[1], 2 * f.rank)

    def finish(f, bases, s, rtol, min_rank):
        width = f.max_rank
        if rtol is None:  # fixed rank: the new bases and S as they are (r columns each)
            return USV(bases[0][:, :width], s[:width, :width], bases[1][:, :width],
                       f.rank), f.rank
        m2 = _mask(2 * f.rank, 2 * width, f.s.dtype)
        p, sig, q, r = truncate(s * m2[:, None] * m2[None, :], rtol, max_rank=width,
                                min_rank=min_rank)
        m = _mask(r, width, f.s.dtype)
        return USV((bases[0] @ p[:, :width]) * m, jnp.diag(sig[:width] * m),
                   (bases[1] @ q[:, :width]) * m, r), r

    return k_start, k_form, augment, s_form, finish


def _kind(f):
    return _usv_kind() if isinstance(f, USV) else _tucker_kind()


# ------------------------------------------------------------------------- Tucker


def _unfold_t(c, i):
    """``Mat_i(c)^T``: ``(prod of the other sizes, c.shape[i])``."""
    return jnp.moveaxis(c, i, -1).reshape(-1, c.shape[i])


def _fold_t(a, i, shape):
    """The inverse of :func:`_unfold_t`."""
    moved = tuple(shape[:i]) + tuple(shape[i + 1:]) + (shape[i],)
    return jnp.moveaxis(a.reshape(moved), -1, i)


def _mode_mul(c, m, i):
    """``c x_i m`` for ``m`` ``(p, c.shape[i])``."""
    return jnp.moveaxis(jnp.tensordot(m, c, axes=(1, i)), 0, i)


def _check_tucker_ranks(dims, ranks, max_ranks):
    d = len(dims)
    ranks = tuple(check_int(r, "ranks") for r in ranks)
    max_ranks = ranks if max_ranks is None else tuple(check_int(r, "max_ranks")
                                                      for r in max_ranks)
    if len(ranks) != d or len(max_ranks) != d:
        raise ValueError(f"ranks and max_ranks need one entry per mode ({d}), got {ranks} "
                         f"and {max_ranks}")
    for i in range(d):
        if ranks[i] > max_ranks[i]:
            raise ValueError(f"ranks[{i}]={ranks[i]} is above max_ranks[{i}]={max_ranks[i]}")
        if 2 * max_ranks[i] > dims[i]:
            raise ValueError(f"max_ranks[{i}]={max_ranks[i]} is too large for mode size "
                             f"{dims[i]}: the augmented bases are twice as wide, so it must "
                             f"be <= {dims[i] // 2}")
        others = math.prod(max_ranks[:i] + max_ranks[i + 1:])
        if max_ranks[i] > others:
            raise ValueError(f"max_ranks={max_ranks}: mode {i}'s rank exceeds the product "
                             f"of the others ({others}), which no Tucker core can use")
    return ranks, max_ranks


def _hosvd(x, ranks, max_ranks):
    """Truncated HOSVD of ``x`` at the (traced or static) ``ranks``, padded."""
    factors, core = [], x
    for i, (r, width) in enumerate(zip(ranks, max_ranks, strict=True)):
        u = jnp.linalg.svd(_unfold_t(x, i).T, full_matrices=False)[0][:, :width]
        factors.append(u * _mask(r, width, u.dtype))
    for i, u in enumerate(factors):
        core = _mode_mul(core, u.T, i)
    return TuckerFactors(core, tuple(factors), jnp.asarray(ranks, jnp.int32))


def random_tucker(key, dims, ranks, *, max_ranks=None, dtype=jnp.float32) -> TuckerFactors:
    """The truncated HOSVD of a Gaussian tensor of ``dims`` with entries of variance
    ``1 / prod(dims[1:])`` (fan-in scaling for a kernel ``(out, in, ...)``), at
    ``ranks``, padded to ``max_ranks`` (default ``ranks``)."""
    dims = check_shape(dims, "dims")
    ranks, max_ranks = _check_tucker_ranks(dims, ranks, max_ranks)
    dtype = _check_dtype(dtype, "dtype")
    x = jax.random.normal(as_key(key), dims, dtype) / jnp.sqrt(
        math.prod(dims[1:])).astype(dtype)
    return _hosvd(x, ranks, max_ranks)


def tucker_from_dense(x, *, max_ranks, ranks=None, rtol: float | None = None
                      ) -> TuckerFactors:
    """Truncated HOSVD of ``x`` padded to ``max_ranks``: at ``ranks``, or per mode at
    the smallest rank whose discarded tail is ``<= rtol ||x|| / sqrt(d)`` (concrete
    ``x``), or at ``max_ranks``."""
    x = jnp.asarray(x)
    _check_dtype(x.dtype, "x")
    if ranks is not None and rtol is not None:
        raise ValueError("give ranks or rtol, not both")
    max_ranks = tuple(max_ranks)
    if rtol is not None:
        tol = rtol * jnp.linalg.norm(x) / math.sqrt(x.ndim)
        ranks = tuple(min(w, linalg.tolerance_rank(jnp.linalg.svd(
            _unfold_t(x, i), compute_uv=False), tol)) for i, w in enumerate(max_ranks))
    ranks, max_ranks = _check_tucker_ranks(x.shape, max_ranks if ranks is None else ranks,
                                           max_ranks)
    return _hosvd(x, ranks, max_ranks)


def tucker_to_dense(t: TuckerFactors) -> jax.Array:
    """The dense tensor ``core x_1 factors[0] ... x_d factors[d-1]``."""
    out = t.core
    for i, u in enumerate(t.factors):
        out = _mode_mul(out, u, i)
    return out


def as_tucker(t: TuckerFactors):
    """The :class:`tnlib.tucker.Tucker` of ``t`` (padded: its zero blocks add nothing), for
    the operations of :mod:`tnlib.tucker`."""
    from .tucker import Tucker

    return Tucker(t.core, tuple(t.factors))


def _tucker_kind():
    """Rank-adaptive BUG for Tucker tensors (Ceruti, Lubich & Walach): the K-step of mode
    ``i`` trains ``K_i = U_i R_i^T`` with ``Mat_i(C)^T = Q_i R_i`` and the other factors
    fixed; the augmented core ``C x_i (U_hat_i^T U_i)`` takes the S-step; the HOSVD of the
    result truncates each mode's tail to ``rtol ||C|| / sqrt(d)``."""

    def k_start(t):
        return [u @ jnp.linalg.qr(_unfold_t(t.core, i))[1].T for i, u in enumerate(t.factors)]

    def k_form(t, j, k):
        q = jnp.linalg.qr(_unfold_t(t.core, j))[0]
        factors = list(t.factors)
        factors[j] = k
        return TuckerFactors(_fold_t(q, j, t.core.shape), tuple(factors), t.ranks)

    def augment(t, ks, fixed):
        bases, core = [], t.core
        for i, (k, u) in enumerate(zip(ks, t.factors, strict=True)):
            uh = _augment(k * _mask(t.ranks[i], u.shape[1], u.dtype), u, t.ranks[i], fixed)
            bases.append(uh)
            core = _mode_mul(core, uh.T @ u, i)
        return tuple(bases), core

    def s_form(t, bases, s):
        return TuckerFactors(s, tuple(bases), 2 * t.ranks)

    def finish(t, bases, s, rtol, min_rank):
        d = s.ndim
        if rtol is None:  # fixed ranks: the new bases and core as they are
            core = s[tuple(slice(0, w) for w in t.max_ranks)]
            factors = tuple(b[:, :w] for b, w in zip(bases, t.max_ranks, strict=True))
            return TuckerFactors(core, factors, t.ranks), t.ranks
        for i in range(d):
            m2 = _mask(2 * t.ranks[i], s.shape[i], s.dtype)
            s = s * m2.reshape((-1,) + (1,) * (d - 1 - i))
        tol = rtol * jnp.linalg.norm(s) / math.sqrt(d)
        factors, ranks, core = [], [], s
        for i, width in enumerate(t.max_ranks):
            p, sig, _ = jnp.linalg.svd(_unfold_t(s, i).T, full_matrices=False)
            r = jnp.clip(jnp.sum(linalg.tolerance_mask(sig, tol)), min_rank,
                         width).astype(jnp.int32)
            p = p[:, :width] * _mask(r, width, s.dtype)
            core = _mode_mul(core, p.T, i)
            factors.append(bases[i] @ p)
            ranks.append(r)
        ranks = jnp.stack(ranks)
        return TuckerFactors(core, tuple(factors), ranks), ranks

    return k_start, k_form, augment, s_form, finish


def step(loss: Callable[[Any], jax.Array], params, state: State,
         optimizer: optax.GradientTransformation, *, rtol: float, min_rank: int = 1):
    """One rank-adaptive integrator step (module docstring) on every :class:`USV` and
    :class:`TuckerFactors` leaf of ``params``; other leaves are updated in the S-step
    with the same optimizer.

    Args:
      loss: ``loss(params) -> scalar`` (close it over the batch).
      params: a pytree with :class:`USV` / :class:`TuckerFactors` leaves among arrays.
      state: from :func:`init` with the same ``optimizer``.
      optimizer: an optax transformation; the official MNIST code uses Adam 1e-3 for
        K, L and S alike.
      rtol: the relative truncation tolerance ``tau`` (``0 <= rtol < 1``), or ``None``
        for the fixed-rank unconventional integrator (no augmentation: ``U_hat =
        qr(K_new)``, ``V_hat = qr(L_new)``, ``S`` carried over and stepped at the current
        rank, no truncation), the second phase of the paper's MNIST runs (its official
        ``mnist_DLRA_fixed_rank.py`` fine-tunes the adapted ranks for 100 epochs).
      min_rank: the smallest rank kept (the official code keeps 2); unused with
        ``rtol=None``.

    Returns ``(params, state, info)``; ``info`` holds ``loss`` (at the start of the
    step) and ``ranks``, a tuple with each factorization's new active rank (an int32
    scalar for a :class:`USV`, one per mode for a :class:`TuckerFactors`).
    """
    if rtol is not None and not 0 <= rtol < 1:
        raise ValueError(f"rtol must be None (fixed rank) or in [0, 1), got {rtol}")
    min_rank = check_int(min_rank, "min_rank")
    leaves, treedef, where = _split(params)
    if not where:
        raise ValueError("params holds no dlrt.USV / dlrt.TuckerFactors to train")
    facs = [leaves[i] for i in where]
    kinds = [_kind(f) for f in facs]
    for f in facs:
        _check_dtype(_dtype_of(f), "params (a dlrt factorization)")

    def rebuild(parts):
        out = list(leaves)
        for i, f in zip(where, parts, strict=True):
            out[i] = f
        return jax.tree.unflatten(treedef, out)

    # K-steps from the same point, mode by mode: every factorization in its mode-j form
    # (the same weights; those with fewer modes stay as they are).
    ks = [kind[0](f) for kind, f in zip(kinds, facs, strict=True)]
    grads = [[None] * len(k) for k in ks]
    value = None
    for j in range(max(map(len, ks))):
        has = [j < len(k) for k in ks]

        def mode_loss(kj, j=j, has=has):
            parts = [kind[1](f, j, k) if h else f
                     for kind, f, k, h in zip(kinds, facs, kj, has, strict=True)]
            return loss(rebuild(parts))

        kj = [k[j] if h else jnp.zeros(()) for k, h in zip(ks, has, strict=True)]
        v, g = jax.value_and_grad(mode_loss)(kj)
        value = v if value is None else value
        for a, (gj, h) in enumerate(zip(g, has, strict=True)):
            if h:
                grads[a][j] = gj
    upd, kl_state = optimizer.update(grads, state.kl, ks)
    ks = optax.apply_updates(ks, upd)

    aug = [kind[2](f, k, rtol is None) for kind, f, k in zip(kinds, facs, ks, strict=True)]
    # S-step: the augmented cores and every non-factorized parameter.
    s_leaves = _s_tree(leaves, where, [a[1] for a in aug])

    def s_loss(s_leaves):
        out = list(s_leaves)
        for i, kind, (bases, _), f in zip(where, kinds, aug, facs, strict=True):
            out[i] = kind[3](f, bases, s_leaves[i])
        return loss(jax.tree.unflatten(treedef, out))

    g = jax.grad(s_loss)(s_leaves)
    upd, s_state = optimizer.update(g, state.s, s_leaves)
    s_leaves = optax.apply_updates(s_leaves, upd)

    new, ranks = list(s_leaves), []
    for i, kind, (bases, _), f in zip(where, kinds, aug, facs, strict=True):
        new[i], r = kind[4](f, bases, s_leaves[i], rtol, min_rank)
        ranks.append(r)
    return (jax.tree.unflatten(treedef, new), State(kl_state, s_state),
            {"loss": value, "ranks": tuple(ranks)})
