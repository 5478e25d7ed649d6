"""Riemannian optimization on fixed-rank manifolds: tensor trains of fixed TT rank and
Tucker tensors of fixed multilinear rank.

Every function below takes a ``TensorTrain`` or a ``tnlib.tucker.Tucker`` point and
dispatches on its type; the Tucker geometry (Koch & Lubich 2010: deltas ``(dG, W_1,
..., W_N)`` for the core and the gauged factor directions, HOSVD retraction) is
described in ``tnlib/_riemannian_tucker.py``, the TT geometry here.

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
* ``to_tangent(x, xi)``: the tangent vector in the point's format at ranks ``2r``
  (``to_tangent_tt`` for TTs);
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

from tnlib import _riemannian_tt, _riemannian_tucker
from tnlib.struct import pytree_dataclass
from tnlib.tt import TensorTrain

__all__ = [
    "Tangent", "check_point", "manifold_dim", "project", "project_core_grad",
    "riemannian_grad", "riemannian_value_and_grad", "to_tangent", "to_tangent_tt", "retract",
    "transport", "inner", "norm", "add", "scale", "GradientTransformation", "SGDState",
    "AdamState", "riemannian_sgd", "riemannian_adam",
]

_MANIFOLDS = (_riemannian_tt, _riemannian_tucker)


@pytree_dataclass
class Tangent:
    """A tangent vector at a point ``x`` (passed separately). For a TT, ``deltas[k]``
    has the shape of ``x.cores[k]`` and, for ``k < L-1``, satisfies the gauge condition
    ``unfold(U_k)^H unfold(deltas[k]) = 0`` w.r.t. ``x``'s left-orthogonal cores; for a
    Tucker, ``deltas = (dG, W_1, ..., W_N)`` with the shapes of its core and factors."""

    deltas: tuple


# ----------------------------------------------------------------------------- checks


def _manifold(x, name: str = "x"):
    for m in _MANIFOLDS:
        if isinstance(x, m.TYPE):
            return m
    raise TypeError(f"{name} must be a TensorTrain or a Tucker, got {type(x).__name__}")


def _point(x, name: str = "x"):
    """The manifold module of ``x`` after checking ``x`` is a point of it."""
    m = _manifold(x, name)
    m.check_point(x, name)
    return m


def check_point(x, name: str = "x"):
    """Validate that ``x`` lies on a fixed-rank manifold (static); returns ``x``.

    A ``TensorTrain`` needs every bond feasible, ``r_k <= r_{k-1} n_k`` and ``r_{k-1}
    <= n_k r_k`` (``tt.round`` shrinks redundant bonds); a ``Tucker`` needs ``r_k <=
    n_k`` and ``r_k <= prod_{j != k} r_j``. Otherwise ValueError naming the site / mode.
    """
    _point(x, name)
    return x


def manifold_dim(x) -> int:
    """Dimension of the manifold through ``x``: ``sum_k r_{k-1} n_k r_k - sum_k r_k^2``
    (TT), ``prod_k r_k + sum_k (n_k r_k - r_k^2)`` (Tucker)."""
    return _point(x).manifold_dim(x)


def _check_tangent_type(xi, name: str = "xi"):
    if not isinstance(xi, Tangent):
        raise TypeError(f"{name} must be a Tangent, got {type(xi).__name__}")


def _check_tangent(m, x, xi, name: str = "xi"):
    _check_tangent_type(xi, name)
    shapes = [tuple(d.shape) for d in xi.deltas]
    want = m.delta_shapes(x)
    if shapes != want:
        raise ValueError(f"{name}: deltas have shapes {shapes}; the point needs {want}")
    return xi


def _check_real(x, what: str, name: str = "x"):
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name}: {what} takes real tensor networks, got dtype {x.dtype}")


def _check_pair(a, b):
    """``a`` and ``b`` are Tangents with deltas of the same shapes (at the same point)."""
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tangent):
            raise TypeError(f"{name} must be a Tangent, got {type(t).__name__}")
    sa, sb = [tuple(d.shape) for d in a.deltas], [tuple(d.shape) for d in b.deltas]
    if sa != sb:
        raise ValueError(f"a and b must be tangents at the same point: a has deltas {sa}, "
                         f"b has {sb}")



# ------------------------------------------------------------------- tangent vectors


def project(x, g) -> Tangent:
    """Orthogonal projection of ``g`` onto the tangent space of the manifold at ``x``.

    Args:
      x: the point, a ``TensorTrain`` or ``Tucker`` with feasible ranks (``check_point``).
      g: a dense array of shape ``x.dims``, or a tensor of ``x``'s format with ``x``'s
        mode sizes (any ranks; e.g. ``to_tangent`` of a tangent at another point).

    Returns:
      ``Tangent`` with gauge deltas; TT: ``delta_k = (I - U_k U_k^H) U_{<k}^H g V_{>k}^H``,
      cost ``O(L n r R (r + R))`` for a TT of ranks ``R``, ``O(N r)`` for a dense ``g``.
      A TT / Tucker ``g`` is projected without forming it densely.
    """
    m = _point(x)
    fr = m.frame(x)
    if isinstance(g, m.TYPE):
        m.check_net(x, g)
        return Tangent(m.gauge(fr, m.project_net(fr, g)))
    g = jnp.asarray(g)
    if g.shape != x.dims:
        raise ValueError(f"g must be a {m.TYPE.__name__} or a dense array of shape {x.dims}, "
                         f"got shape {g.shape}")
    return Tangent(m.gauge(fr, m.project_dense(fr, g.astype(jnp.result_type(g, x.dtype)))))


def project_core_grad(x, core_grads) -> Tangent:
    """Riemannian gradient at ``x`` from the Euclidean gradient w.r.t. ``x``'s arrays.

    ``core_grads`` is ``jax.grad(loss)(x)`` for a real loss of ``x`` (a ``TensorTrain``
    or ``Tucker`` with the shapes of ``x``). Returns ``project(x, grad F)`` where ``grad
    F`` is the gradient w.r.t. the full tensor (which is never formed). Needs ``x`` of
    full rank (the R factors of its QR decompositions are inverted).
    """
    m = _point(x)
    _check_real(x, "project_core_grad")
    if not isinstance(core_grads, m.TYPE):
        raise TypeError(f"core_grads must be a {m.TYPE.__name__}, got "
                        f"{type(core_grads).__name__}")
    if m.grad_shapes(core_grads) != m.grad_shapes(x):
        raise ValueError(f"core_grads must have the core shapes of x, got "
                         f"{m.grad_shapes(core_grads)} for {m.grad_shapes(x)}")
    fr = m.frame(x)
    return Tangent(m.gauge(fr, m.from_core_grads(fr, core_grads)))


def riemannian_value_and_grad(loss_fn: Callable, x):
    """``(loss_fn(x), grad)`` with ``grad`` the Riemannian gradient at ``x`` (a ``Tangent``).

    ``loss_fn`` maps a point of ``x``'s format to a real scalar and must accept any
    ranks: it is evaluated on ``x + xi(delta)`` at doubled ranks; the gradient w.r.t.
    the deltas at ``delta = 0`` is the projected gradient before the gauge (TT:
    ``U_{<k}^T grad F V_{>k}^T``; no solve), which is then gauged.
    """
    m = _point(x)
    _check_real(x, "riemannian_grad")
    fr = m.frame(x)

    def f(ds):
        return loss_fn(m.tangent_net(fr, ds, plus_point=True))

    zeros = tuple(jnp.zeros(s, x.dtype) for s in m.delta_shapes(x))
    value, ds = jax.value_and_grad(f)(zeros)
    return value, Tangent(m.gauge(fr, ds))


def riemannian_grad(loss_fn: Callable, x) -> Tangent:
    """Riemannian gradient of ``loss_fn`` at ``x`` (see ``riemannian_value_and_grad``)."""
    return riemannian_value_and_grad(loss_fn, x)[1]


def to_tangent(x, xi: Tangent):
    """The tangent vector ``xi`` at ``x`` in ``x``'s format at doubled ranks: a TT with
    cores ``[[U_k, delta_k], [0, V_k]]``, or a Tucker with bases ``[U_k, dU_k]``."""
    m = _point(x)
    _check_tangent(m, x, xi)
    return m.tangent_net(m.frame(x), xi.deltas, plus_point=False)


def to_tangent_tt(x: TensorTrain, xi: Tangent) -> TensorTrain:
    """``to_tangent`` for a ``TensorTrain`` point (a TT of internal ranks ``2 r``)."""
    if not isinstance(x, TensorTrain):
        raise TypeError(f"x must be a TensorTrain, got {type(x).__name__} (use to_tangent)")
    return to_tangent(x, xi)


def retract(x, xi: Tangent, max_rank=None):
    """``x + xi`` truncated back to fixed ranks (TT-SVD rounding of the rank-``2r`` TT;
    truncated HOSVD of the rank-``2r`` Tucker).

    Args:
      x: the point; xi: a ``Tangent`` at ``x``.
      max_rank: ``None`` (default) keeps ``x``'s ranks, so the result lies on the same
        manifold; otherwise a static int, or the ``L - 1`` internal ranks of a TT / the
        ``N`` mode ranks of a Tucker (capped by what the sum allows).

    Returns:
      A right-canonical TT / a Tucker with orthonormal factors; ``||retract(x, xi) - (x
      + xi)|| = O(||xi||^2)`` (a quasi-optimal truncation of ``x + xi``, a second-order
      retraction). Jit-safe.
    """
    m = _point(x)
    _check_tangent(m, x, xi)
    return m.retract(m.frame(x), xi.deltas, m.target_ranks(x, max_rank))


def transport(x, xi: Tangent, x_new) -> Tangent:
    """Vector transport by projection: the tangent ``xi`` at ``x`` as a tangent at
    ``x_new`` (``project(x_new, to_tangent(x, xi))``)."""
    check_point(x_new, "x_new")
    return project(x_new, to_tangent(x, xi))


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
    trace: Any  # the momentum at the previous point (to_tangent's format), or ()


class AdamState(NamedTuple):
    count: jax.Array
    mu: Any      # first moment at the previous point (to_tangent's format)
    nu: jax.Array  # second moment: mean squared gradient entry, () or one per delta
    # (in at least float32)


def _check_update_args(grads, params, who: str):
    """Validate ``update``'s arguments (all static checks first); the manifold and the
    frame of ``params``."""
    if params is None:
        raise ValueError(f"{who}.update needs params (the current point): "
                         "update(grads, state, params)")
    m = _point(params, "params")
    _check_real(params, who, "params")
    if isinstance(grads, Tangent):
        _check_tangent(m, params, grads, "grads")
    elif isinstance(grads, m.TYPE):
        if m.grad_shapes(grads) != m.grad_shapes(params):
            raise ValueError("grads must have the core shapes of params (jax.grad of a loss "
                             f"of params), got {m.grad_shapes(grads)} for "
                             f"{m.grad_shapes(params)}")
    else:
        raise TypeError(f"grads must be the core gradients of params (a {m.TYPE.__name__}) "
                        f"or a Tangent from riemannian_grad, got {type(grads).__name__}")
    return m, m.frame(params)


def _riemannian_direction(m, fr, grads) -> tuple:
    """Gauge deltas of the Riemannian gradient from a ``Tangent`` or core gradients."""
    if isinstance(grads, Tangent):
        return grads.deltas
    return m.gauge(fr, m.from_core_grads(fr, grads))


def _learning_rate(learning_rate, count):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _check_rate(name, value, low, high=None):
    if callable(value):
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not (
            low <= value and (high is None or value < high)):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be a number {bound} or a schedule, got {value!r}")


def riemannian_sgd(learning_rate, momentum: float | None = None) -> GradientTransformation:
    """Riemannian gradient descent (heavy-ball momentum optional) on fixed-rank TTs or Tuckers.

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
        m = _point(params, "params")
        trace = m.zero_trace(params) if momentum is not None else ()
        return SGDState(jnp.zeros((), jnp.int32), trace)

    def update(grads, state, params=None):
        m, fr = _check_update_args(grads, params, "riemannian_sgd")
        ds = _riemannian_direction(m, fr, grads)
        trace = state.trace
        if momentum is not None:
            prev = m.gauge(fr, m.project_net(fr, state.trace))
            ds = tuple(momentum * p + d for p, d in zip(prev, ds, strict=True))
            trace = m.tangent_net(fr, ds, plus_point=False)
        lr = _learning_rate(learning_rate, state.count)
        return m.step(fr, params, ds, lr), SGDState(state.count + 1, trace)

    return GradientTransformation(init, update)


def riemannian_adam(learning_rate, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                    second_moment: str = "global") -> GradientTransformation:
    """Riemannian Adam (Becigneul & Ganea 2019) on fixed-rank TTs or Tuckers.

    ``m = b1 * transport(m_prev) + (1 - b1) g`` (a tangent vector, transported by
    projection), ``v = b2 * v_prev + (1 - b2) * mean(g^2)``; the step is
    ``retract(params, -lr * m_hat / (sqrt(v_hat) + eps))`` with Adam's bias corrections.
    Entrywise second moments are not intrinsic on the manifold (they depend on the
    gauge of the deltas), so ``v`` is a scalar: the mean squared entry of the whole
    gradient (``second_moment="global"``, Becigneul & Ganea's choice for one manifold),
    or one per site (``"site"``: the mean square of ``delta_k``; for a Tucker one per
    delta, the core's and each factor's; each site's term
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
        m = _point(params, "params")
        shape = () if second_moment == "global" else (len(m.delta_shapes(params)),)
        # at least float32: in bfloat16, b2 = 0.999 rounds to 1 and the bias correction
        # 1 - b2**t would be 0
        real = jnp.finfo(jnp.promote_types(params.dtype, jnp.float32)).dtype
        return AdamState(jnp.zeros((), jnp.int32), m.zero_trace(params),
                         jnp.zeros(shape, real))

    def update(grads, state, params=None):
        m, fr = _check_update_args(grads, params, "riemannian_adam")
        g = _riemannian_direction(m, fr, grads)
        prev = m.gauge(fr, m.project_net(fr, state.mu))
        mom = tuple(b1 * p + (1 - b1) * d for p, d in zip(prev, g, strict=True))
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
        ds = tuple((c1 * d / denom[k]).astype(d.dtype) for k, d in enumerate(mom))
        lr = _learning_rate(learning_rate, state.count)
        mu = m.tangent_net(fr, mom, plus_point=False)
        return m.step(fr, params, ds, lr), AdamState(count, mu, nu)

    return GradientTransformation(init, update)

