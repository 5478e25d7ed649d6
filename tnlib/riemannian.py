"""Riemannian optimization on the manifold of tensor trains of fixed TT rank.

A ``TensorTrain`` ``x`` with ranks ``r = (1, r_1, ..., r_{L-1}, 1)`` is a point of the
smooth manifold ``M_r`` of tensors whose unfoldings have exactly these ranks
(Holtz, Rohwedder & Schneider 2012), provided every bond is feasible:
``r_k <= r_{k-1} n_k`` and ``r_{k-1} <= n_k r_k``. With ``U_k`` the left-orthogonal
cores of ``x`` (``orthogonalize(x, L-1)``) and ``V_k`` its right-orthogonal ones
(``orthogonalize(x, 0)``), every tangent vector at ``x`` is

    xi = sum_k  U_1 ... U_{k-1}  delta_k  V_{k+1} ... V_L,

with ``delta_k`` of the shape of core ``k``. Under the gauge condition
``unfold(U_k)^H unfold(delta_k) = 0`` for ``k < L`` (unfoldings ``(r_{k-1} n_k, r_k)``)
the ``delta``'s are unique, the ``L`` terms are mutually orthogonal and
``<xi, eta> = sum_k <delta_k, eta_k>`` (Steinlechner 2016; t3f's "deltas"). A
``Tangent`` holds these deltas; its base point is always passed beside it.

* ``project(x, g)``: orthogonal projection onto the tangent space of a dense tensor or
  a ``TensorTrain`` ``g`` (``delta_k = (I - U_k U_k^H) U_{<k}^H g V_{>k}^H``).
* ``project_core_grad(x, core_grads)``: the same projection of the Euclidean gradient
  ``grad F`` of a loss, from its gradient w.r.t. ``x``'s cores (``jax.grad`` of a loss of
  the ``TensorTrain``). Core ``k``'s gradient is ``A_{<k}^T grad F B_{>k}^T`` with the
  partial products ``A``, ``B`` of ``x``'s own cores; the QR sweeps that orthogonalize
  ``x`` give ``A_{<k} = U_{<k} R`` and ``B_{>k} = R' V_{>k}``, so two triangular solves
  recover ``U_{<k}^T grad F V_{>k}^T`` (needs ``x`` of full rank ``r``; the error
  grows like the condition number of ``x``'s unfoldings times the machine epsilon).
* ``riemannian_grad(loss_fn, x)``: the same projection without any solve: the gradient of
  ``loss_fn(x + xi(delta))`` w.r.t. the deltas at ``delta = 0`` (``x + xi`` is a TT of rank
  ``2r``), then the gauge projection.
* ``to_tangent_tt(x, xi)``: the tangent vector as a ``TensorTrain`` of rank ``2r``;
  ``retract(x, xi)``: ``x + xi`` rounded back to ``x``'s ranks (static; jit-safe, a
  second-order retraction); ``transport(x, xi, x_new)``: ``project(x_new, xi)``.

Optimizers: ``riemannian_sgd`` and ``riemannian_adam`` return a ``GradientTransformation``
(a NamedTuple ``(init, update)`` that optax accepts as its own; this module does not
import optax). ``update(grads, state, params)`` takes either the Euclidean gradient
w.r.t. the cores (a ``TensorTrain`` shaped like ``params``) or a ``Tangent`` from
``riemannian_grad(loss_fn, params)`` (exact, no solve). It forms the Riemannian
direction, retracts ``x_new = retract(params, -lr * direction)`` and returns
``x_new - params`` core-wise, so ``optax.apply_updates`` lands on ``x_new``: the
iterates keep rank ``r`` exactly. Momentum lives in the state as the rank-``2r`` TT of
the previous tangent vector and is transported to the current point by projection.
Real dtypes only for the gradient routes and the optimizers (``project``,
``to_tangent_tt``, ``retract`` also take complex)::

    import optax
    from tnlib import riemannian, tt

    def loss(x):                      # any differentiable loss of a TensorTrain
        return 0.5 * jnp.sum((tt.to_dense(x)[mask] - target[mask]) ** 2)

    opt = riemannian.riemannian_sgd(0.5, momentum=0.9)   # or riemannian_adam(1e-2)
    state = opt.init(x)

    @jax.jit
    def step(x, state):
        grads = jax.grad(loss)(x)     # or riemannian.riemannian_grad(loss, x)
        updates, state = opt.update(grads, state, x)
        return optax.apply_updates(x, updates), state   # same ranks as x, on the manifold
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

from tnlib import linalg
from tnlib.struct import pytree_dataclass
from tnlib.tt import TensorTrain, _transfer
from tnlib.tt import check as _check_tt

__all__ = [
    "Tangent", "check_point", "manifold_dim", "project", "project_core_grad",
    "riemannian_grad", "riemannian_value_and_grad", "to_tangent_tt", "retract",
    "transport", "inner", "norm", "add", "scale", "GradientTransformation", "SGDState",
    "AdamState", "riemannian_sgd", "riemannian_adam",
]


@pytree_dataclass
class Tangent:
    """A tangent vector at a TT point ``x`` (passed separately): ``deltas[k]`` has the
    shape of ``x.cores[k]`` and, for ``k < L-1``, satisfies the gauge condition
    ``unfold(U_k)^H unfold(deltas[k]) = 0`` w.r.t. ``x``'s left-orthogonal cores."""

    deltas: tuple


class _Frame(NamedTuple):
    left: tuple    # U_0 .. U_{L-2}, left-orthogonal
    center: Any    # last core of the left-canonical form: x = U_0 ... U_{L-2} center
    right: tuple   # V_1 .. V_{L-1}, right-orthogonal (right[k-1] is V_k)
    r_left: tuple  # cores 0..k of x = U_{<=k} r_left[k]  (k = 0..L-2)
    r_right: tuple  # cores k..L-1 of x = r_right[k-1]^T V_{>=k}  (k = 1..L-1)


# ----------------------------------------------------------------------------- checks


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


def manifold_dim(x) -> int:
    """Dimension of the manifold of TTs with ``x``'s mode sizes and ranks:
    ``sum_k r_{k-1} n_k r_k - sum_{k=1}^{L-1} r_k^2``."""
    check_point(x)
    r = x.ranks
    return sum(a * n * b for a, n, b in zip(r[:-1], x.dims, r[1:], strict=True)) - sum(
        q * q for q in r[1:-1])


def _check_tangent_type(xi, name: str = "xi"):
    if not isinstance(xi, Tangent):
        raise TypeError(f"{name} must be a Tangent, got {type(xi).__name__}")


def _check_tangent(x, xi, name: str = "xi"):
    _check_tangent_type(xi, name)
    shapes = [tuple(d.shape) for d in xi.deltas]
    want = [tuple(c.shape) for c in x.cores]
    if shapes != want:
        raise ValueError(f"{name}: deltas have shapes {shapes}; the point has cores {want}")
    return xi


def _check_real(x, what: str, name: str = "x"):
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name}: {what} takes real tensor trains, got dtype {x.dtype}")


def _check_pair(a, b):
    """``a`` and ``b`` are Tangents with deltas of the same shapes (at the same point)."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tangent):
            raise TypeError(f"{name} must be a Tangent, got {type(t).__name__}")
    sa, sb = [tuple(d.shape) for d in a.deltas], [tuple(d.shape) for d in b.deltas]
    if sa != sb:
        raise ValueError(f"a and b must be tangents at the same point: a has deltas {sa}, "
                         f"b has {sb}")


# ---------------------------------------------------------------------------- frames


def _unf(c):
    return c.reshape(-1, c.shape[-1])


def _frame(x: TensorTrain) -> _Frame:
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
    return _Frame(tuple(left), center, tuple(right), tuple(r_left), tuple(r_right))


def _gauge(fr: _Frame, ds) -> tuple:
    """Project each delta onto the gauge ``U_k^H delta_k = 0`` (all but the last)."""
    out = []
    for k, d in enumerate(ds):
        if k < len(fr.left):
            u = _unf(fr.left[k])
            dm = _unf(d)
            d = (dm - u @ (jnp.conj(u).T @ dm)).reshape(d.shape)
        out.append(d)
    return tuple(out)


def _tangent_cores(fr: _Frame, ds, plus_point: bool) -> tuple:
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


def _project_dense(fr: _Frame, z) -> tuple:
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


def _project_tt(fr: _Frame, w: TensorTrain) -> tuple:
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


# ------------------------------------------------------------------- tangent vectors


def project(x: TensorTrain, g) -> Tangent:
    """Orthogonal projection of ``g`` onto the tangent space of the TT manifold at ``x``.

    Args:
      x: the point, a ``TensorTrain`` with feasible ranks (``check_point``).
      g: a dense array of shape ``x.dims`` or a ``TensorTrain`` with ``x``'s mode sizes
        (any ranks; e.g. ``to_tangent_tt`` of a tangent at another point).

    Returns:
      ``Tangent`` with gauge deltas: ``delta_k = (I - U_k U_k^H) U_{<k}^H g V_{>k}^H``.
      Cost ``O(L n r R (r + R))`` for a TT of ranks ``R``; ``O(N r)`` for a dense ``g``.
    """
    check_point(x)
    fr = _frame(x)
    if isinstance(g, TensorTrain):
        _check_tt(g, "g")
        if g.dims != x.dims:
            raise ValueError(f"g has mode sizes {g.dims}; x has {x.dims}")
        return Tangent(_gauge(fr, _project_tt(fr, g)))
    g = jnp.asarray(g)
    if g.shape != x.dims:
        raise ValueError(f"g must be a TensorTrain or a dense array of shape {x.dims}, "
                         f"got shape {g.shape}")
    return Tangent(_gauge(fr, _project_dense(fr, g.astype(jnp.result_type(g, x.dtype)))))


def _from_core_grads(fr: _Frame, grads) -> tuple:
    out, L = [], len(grads)
    for k, g in enumerate(grads):
        a, n, b = g.shape
        m = g.reshape(a, n * b)
        if k > 0:  # left factor: solve R^T y = g
            m = solve_triangular(fr.r_left[k - 1], m, trans=1, lower=False)
        m = m.reshape(a * n, b)
        if k < L - 1:  # right factor: y R = g  <=>  R^T y^T = g^T
            m = solve_triangular(fr.r_right[k], m.T, trans=1, lower=False).T
        out.append(m.reshape(a, n, b))
    return tuple(out)


def project_core_grad(x: TensorTrain, core_grads: TensorTrain) -> Tangent:
    """Riemannian gradient at ``x`` from the Euclidean gradient w.r.t. ``x``'s cores.

    ``core_grads`` is ``jax.grad(loss)(x)`` for a real loss of the ``TensorTrain``: a
    ``TensorTrain`` with the shapes of ``x``. Returns ``project(x, grad F)`` where
    ``grad F`` is the gradient w.r.t. the full tensor (which is never formed). Needs
    ``x`` of full TT rank (the QR factors of its partial products are inverted).
    """
    check_point(x)
    _check_real(x, "project_core_grad")
    if not isinstance(core_grads, TensorTrain):
        raise TypeError(f"core_grads must be a TensorTrain, got {type(core_grads).__name__}")
    if [c.shape for c in core_grads.cores] != [c.shape for c in x.cores]:
        raise ValueError("core_grads must have the core shapes of x, got "
                         f"{[tuple(c.shape) for c in core_grads.cores]} for "
                         f"{[tuple(c.shape) for c in x.cores]}")
    fr = _frame(x)
    return Tangent(_gauge(fr, _from_core_grads(fr, core_grads.cores)))


def riemannian_value_and_grad(loss_fn: Callable, x: TensorTrain):
    """``(loss_fn(x), grad)`` with ``grad`` the Riemannian gradient at ``x`` (a ``Tangent``).

    ``loss_fn`` maps a ``TensorTrain`` to a real scalar and must accept any ranks: it
    is evaluated on ``x + xi(delta)``, a TT of ranks ``2r``; the gradient w.r.t. the
    deltas at ``delta = 0`` is ``U_{<k}^T grad F V_{>k}^T`` (no solve), then gauged.
    """
    check_point(x)
    _check_real(x, "riemannian_grad")
    fr = _frame(x)

    def f(ds):
        return loss_fn(TensorTrain(_tangent_cores(fr, ds, plus_point=True)))

    zeros = tuple(jnp.zeros_like(c) for c in x.cores)
    value, ds = jax.value_and_grad(f)(zeros)
    return value, Tangent(_gauge(fr, ds))


def riemannian_grad(loss_fn: Callable, x: TensorTrain) -> Tangent:
    """Riemannian gradient of ``loss_fn`` at ``x`` (see ``riemannian_value_and_grad``)."""
    return riemannian_value_and_grad(loss_fn, x)[1]


def to_tangent_tt(x: TensorTrain, xi: Tangent) -> TensorTrain:
    """The tangent vector ``xi`` at ``x`` as a ``TensorTrain`` of ranks ``2 r``
    (internal bonds; the cores are ``[[U_k, delta_k], [0, V_k]]``)."""
    check_point(x)
    _check_tangent(x, xi)
    return TensorTrain(_tangent_cores(_frame(x), xi.deltas, plus_point=False))


def _target_ranks(x, max_rank) -> tuple[int, ...]:
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


def _retract(fr: _Frame, ds, ranks) -> TensorTrain:
    return TensorTrain(_round_to(_tangent_cores(fr, ds, plus_point=True), ranks))


def retract(x: TensorTrain, xi: Tangent, max_rank=None) -> TensorTrain:
    """``x + xi`` rounded back to fixed ranks (TT-SVD truncation of the rank-``2r`` sum).

    Args:
      x: the point; xi: a ``Tangent`` at ``x``.
      max_rank: ``None`` (default) keeps ``x``'s ranks, so the result lies on the same
        manifold; otherwise a static int or ``L - 1`` internal ranks (capped by what the
        sum allows).

    Returns:
      A right-canonical ``TensorTrain``; ``||retract(x, xi) - (x + xi)|| = O(||xi||^2)``
      (a quasi-optimal truncation of ``x + xi``, a second-order retraction). Jit-safe.
    """
    check_point(x)
    _check_tangent(x, xi)
    return _retract(_frame(x), xi.deltas, _target_ranks(x, max_rank))


def transport(x: TensorTrain, xi: Tangent, x_new: TensorTrain) -> Tangent:
    """Vector transport by projection: the tangent ``xi`` at ``x`` as a tangent at
    ``x_new`` (``project(x_new, to_tangent_tt(x, xi))``)."""
    check_point(x_new, "x_new")
    return project(x_new, to_tangent_tt(x, xi))


def inner(a: Tangent, b: Tangent):
    """``<a, b>`` of two tangents at the same point: ``sum_k <delta^a_k, delta^b_k>``
    (exact thanks to the gauge and the orthonormal frame; conjugates ``a``)."""
    _check_pair(a, b)
    return sum(jnp.vdot(p, q) for p, q in zip(a.deltas, b.deltas, strict=True))


def norm(xi: Tangent):
    """Frobenius norm of the tangent vector ``xi``."""
    _check_tangent_type(xi)
    return jnp.sqrt(sum(jnp.sum(jnp.abs(d) ** 2) for d in xi.deltas))


def add(a: Tangent, b: Tangent) -> Tangent:
    """``a + b`` for two tangents at the same point."""
    _check_pair(a, b)
    return Tangent(tuple(p + q for p, q in zip(a.deltas, b.deltas, strict=True)))


def scale(xi: Tangent, alpha) -> Tangent:
    """``alpha * xi``."""
    _check_tangent_type(xi)
    return Tangent(tuple(alpha * d for d in xi.deltas))


# ------------------------------------------------------------------------ optimizers


class GradientTransformation(NamedTuple):
    """``(init, update)``, the shape of ``optax.GradientTransformation``: optax's
    ``chain`` and ``apply_updates`` take it as their own (this core does not import
    optax). ``init(params) -> state``; ``update(grads, state, params) -> (updates, state)``."""

    init: Callable
    update: Callable


class SGDState(NamedTuple):
    count: jax.Array
    trace: Any  # the momentum as a rank-2r TensorTrain at the previous point, or ()


class AdamState(NamedTuple):
    count: jax.Array
    mu: Any      # first moment as a rank-2r TensorTrain at the previous point
    nu: jax.Array  # second moment: mean squared gradient entry, () or (L,) per site
    # (in at least float32)


def _zero_trace(x: TensorTrain) -> TensorTrain:
    r = (1,) + tuple(2 * q for q in x.ranks[1:-1]) + (1,)
    return TensorTrain(tuple(jnp.zeros((r[k], n, r[k + 1]), x.dtype)
                             for k, n in enumerate(x.dims)))


def _check_update_args(grads, params, who: str) -> _Frame:
    """Validate ``update``'s arguments (all static checks first), then frame ``params``."""
    if params is None:
        raise ValueError(f"{who}.update needs params (the current TensorTrain): "
                         "update(grads, state, params)")
    check_point(params, "params")
    _check_real(params, who, "params")
    if isinstance(grads, Tangent):
        _check_tangent(params, grads, "grads")
    elif isinstance(grads, TensorTrain):
        if [c.shape for c in grads.cores] != [c.shape for c in params.cores]:
            raise ValueError("grads must have the core shapes of params (jax.grad of a loss "
                             f"of params), got {[tuple(c.shape) for c in grads.cores]} for "
                             f"{[tuple(c.shape) for c in params.cores]}")
    else:
        raise TypeError("grads must be the core gradients of params (a TensorTrain) or a "
                        f"Tangent from riemannian_grad, got {type(grads).__name__}")
    return _frame(params)


def _riemannian_direction(fr: _Frame, grads) -> tuple:
    """Gauge deltas of the Riemannian gradient from a ``Tangent`` or core gradients."""
    if isinstance(grads, Tangent):
        return grads.deltas
    return _gauge(fr, _from_core_grads(fr, grads.cores))


def _learning_rate(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _step(fr, params, ds, lr):
    """``retract(params, -lr * ds) - params`` core-wise (what ``apply_updates`` adds)."""
    new = _retract(fr, tuple(-lr * d for d in ds), params.ranks)
    return TensorTrain(tuple((n - o).astype(o.dtype)
                             for n, o in zip(new.cores, params.cores, strict=True)))


def _check_rate(name, value, low, high=None):
    if callable(value):
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not (
            low <= value and (high is None or value < high)):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a number {bound} or a schedule, got {value!r}")


def riemannian_sgd(learning_rate, momentum: float | None = None) -> GradientTransformation:
    """Riemannian gradient descent (heavy-ball momentum optional) on fixed-rank TTs.

    Each update: ``g`` = Riemannian gradient at ``params`` (from core gradients or a
    ``Tangent``); with momentum ``m = momentum * transport(m_prev) + g`` (transport by
    projection onto the current tangent space), else ``m = g``; ``x_new =
    retract(params, -lr * m)`` keeps ``params``' ranks; returns ``x_new - params``.

    Args:
      learning_rate: a float, or a schedule ``count -> lr`` (optax schedules work).
      momentum: ``None`` or a float in ``[0, 1)``.
    """
    _check_rate("learning_rate", learning_rate, 0.0)
    if momentum is not None:
        _check_rate("momentum", momentum, 0.0, 1.0)

    def init(params):
        check_point(params, "params")
        trace = _zero_trace(params) if momentum is not None else ()
        return SGDState(jnp.zeros((), jnp.int32), trace)

    def update(grads, state, params=None):
        fr = _check_update_args(grads, params, "riemannian_sgd")
        ds = _riemannian_direction(fr, grads)
        trace = state.trace
        if momentum is not None:
            prev = _gauge(fr, _project_tt(fr, state.trace))
            ds = tuple(momentum * p + d for p, d in zip(prev, ds, strict=True))
            trace = TensorTrain(_tangent_cores(fr, ds, plus_point=False))
        lr = _learning_rate(learning_rate, state.count)
        return _step(fr, params, ds, lr), SGDState(state.count + 1, trace)

    return GradientTransformation(init, update)


def riemannian_adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                    second_moment: str = "global") -> GradientTransformation:
    """Riemannian Adam (Becigneul & Ganea 2019) on fixed-rank TTs.

    ``m = b1 * transport(m_prev) + (1 - b1) g`` (a tangent vector, transported by
    projection), ``v = b2 * v_prev + (1 - b2) * mean(g^2)``; the step is
    ``retract(params, -lr * m_hat / (sqrt(v_hat) + eps))`` with Adam's bias corrections.
    Entrywise second moments are not intrinsic on the manifold (they depend on the
    gauge of the deltas), so ``v`` is a scalar: the mean squared entry of the whole
    gradient (``second_moment="global"``, Becigneul & Ganea's choice for one manifold),
    or one per site (``"site"``: the mean square of ``delta_k``; each site's term
    ``U_{<k} delta_k V_{>k}`` is the orthogonal component of ``g`` in a subspace fixed
    by the point, not by the gauge, so this is intrinsic as well). The mean, not the
    sum, keeps ``lr`` on the scale of optax's entrywise Adam.

    Args:
      learning_rate: a float or a schedule ``count -> lr``.
      b1, b2: decay rates in ``[0, 1)``; eps: added to ``sqrt(v_hat)``.
      second_moment: ``"global"`` or ``"site"``.
    """
    _check_rate("learning_rate", learning_rate, 0.0)
    _check_rate("b1", b1, 0.0, 1.0)
    _check_rate("b2", b2, 0.0, 1.0)
    _check_rate("eps", eps, 0.0)
    if second_moment not in ("global", "site"):
        raise ValueError(f"second_moment must be 'global' or 'site', got {second_moment!r}")

    def init(params):
        check_point(params, "params")
        shape = () if second_moment == "global" else (params.n_sites,)
        # at least float32: in bfloat16, b2 = 0.999 rounds to 1 and the bias correction
        # 1 - b2**t would be 0
        real = jnp.finfo(jnp.promote_types(params.dtype, jnp.float32)).dtype
        return AdamState(jnp.zeros((), jnp.int32), _zero_trace(params), jnp.zeros(shape, real))

    def update(grads, state, params=None):
        fr = _check_update_args(grads, params, "riemannian_adam")
        g = _riemannian_direction(fr, grads)
        prev = _gauge(fr, _project_tt(fr, state.mu))
        m = tuple(b1 * p + (1 - b1) * d for p, d in zip(prev, g, strict=True))
        sq = jnp.stack([jnp.sum(jnp.abs(d) ** 2) for d in g])
        sizes = jnp.asarray([d.size for d in g], sq.dtype)
        msq = sq / sizes if second_moment == "site" else jnp.sum(sq) / jnp.sum(sizes)
        nu = b2 * state.nu + (1 - b2) * msq.astype(state.nu.dtype)
        count = state.count + 1
        t = count.astype(state.nu.dtype)
        v_hat = nu / (1 - b2 ** t)
        denom = jnp.sqrt(v_hat) + eps
        if second_moment == "global":
            denom = jnp.broadcast_to(denom, (len(g),))
        c1 = 1 / (1 - b1 ** t)
        ds = tuple((c1 * d / denom[k]).astype(d.dtype) for k, d in enumerate(m))
        lr = _learning_rate(learning_rate, state.count)
        mu = TensorTrain(_tangent_cores(fr, m, plus_point=False))
        return _step(fr, params, ds, lr), AdamState(count, mu, nu)

    return GradientTransformation(init, update)
