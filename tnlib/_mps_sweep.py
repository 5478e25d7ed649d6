"""Pieces shared by the two-site sweeps of ``tnlib.sweep`` (classifier) and
``tnlib.sweep_born`` (Born machine): padded-chain sizes, argument checks, the
right-orthogonal start, unit environments by ``lax.scan``, the local contractions, the
host loop of a sweep and the optimizer loop on a bond tensor (optax). Private to tnlib;
its names are public so both sweep modules can import them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from tnlib.linalg import is_concrete

__all__ = [
    "DIRECTIONS", "PaddedChain", "check_center", "check_max_rank", "right_orthogonal_cores",
    "unit", "left_step", "right_step", "e0", "scan_environments", "sides", "local_logits",
    "sweep_directions", "sweep_loop", "check_optimizer", "descend",
]

DIRECTIONS = ("right", "left")


class PaddedChain:
    """Sizes of a padded chain, read from its stacked ``cores`` ``(L, D, d, D)``."""

    @property
    def n_sites(self) -> int:
        return self.cores.shape[-4]

    @property
    def max_bond(self) -> int:
        return self.cores.shape[-1]

    @property
    def local_dim(self) -> int:
        return self.cores.shape[-2]


def check_center(mps, direction):
    """The label / centre can move in ``direction`` (checked when ``center`` is concrete:
    under jit the bounds are the caller's business)."""
    if not is_concrete(mps.center):
        return
    c, L = int(mps.center), mps.n_sites
    if not 0 <= c < L:
        raise ValueError(f"mps.center must be in [0, {L - 1}], got {c}")
    if direction == "right" and c > L - 2:
        raise ValueError(f"mps.center={c} is the last site: direction='right' needs "
                         f"center <= {L - 2}")
    if direction == "left" and c < 1:
        raise ValueError("mps.center=0 is the first site: direction='left' needs center >= 1")


def check_max_rank(max_rank):
    """A concrete ``max_rank`` is a positive int (traced values are the caller's business)."""
    if max_rank is None or not is_concrete(max_rank):
        return
    if isinstance(max_rank, bool | np.bool_) or not (
            isinstance(max_rank, int | np.integer) or (
                isinstance(max_rank, jax.Array | np.ndarray) and max_rank.ndim == 0
                and jnp.issubdtype(max_rank.dtype, jnp.integer))) or int(max_rank) < 1:
        raise ValueError(f"max_rank must be an int >= 1 (or None for max_bond), got {max_rank!r}")


def right_orthogonal_cores(key, n_sites, d, init_bond, dtype):
    """Unpadded right-orthogonal cores (on the host) and their bonds ``(L + 1,)``: the
    product state ``(1, ..., 1) / sqrt(d)`` for ``init_bond=1``, else random cores with
    bonds ``min(init_bond, d ** min(k, L - k))`` (orthonormal rows from a QR drawn
    with a NumPy generator seeded by ``key``)."""
    L = n_sites
    ranks = [1] + [min(init_bond, d ** min(k, L - k)) for k in range(1, L)] + [1]
    if init_bond == 1:
        return [np.full((1, d, 1), 1 / np.sqrt(d), dtype)] * L, ranks
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    cores = []
    for k in range(L):
        rl, rr = ranks[k], ranks[k + 1]
        q, _ = np.linalg.qr(rng.standard_normal((d * rr, rl)))  # orthonormal columns
        cores.append(q.T.reshape(rl, d, rr).astype(dtype))
    return cores, ranks


def unit(v):
    """Rows of ``v`` scaled to unit norm (zero rows stay zero) and the logs of the scales."""
    nrm = jnp.linalg.norm(v, axis=-1)
    nrm = jnp.where(nrm > 0, nrm, 1.0)
    return v / nrm[..., None], jnp.log(nrm)


def left_step(vec, core, feat):
    """``(N, D)`` left vectors through one core ``(D, d, D)`` with features ``(N, d)``."""
    t = (vec @ core.reshape(core.shape[0], -1)).reshape(vec.shape[0], *core.shape[1:])
    return jnp.einsum("nsb,ns->nb", t, feat)


def right_step(vec, core, feat):
    """``(N, D)`` right vectors through one core ``(D, d, D)`` with features ``(N, d)``."""
    t = (vec @ core.reshape(-1, core.shape[-1]).T).reshape(vec.shape[0], *core.shape[:2])
    return jnp.einsum("nas,ns->na", t, feat)


def e0(n, D, dt):
    """``(n, D)`` rows ``e_0``: the boundary vector of every environment."""
    return jnp.zeros((n, D), dt).at[:, 0].set(1)


def scan_environments(cores, feats, max_bond):
    """Unit left / right environments ``(L + 1, N, D)`` of ``cores`` ``(L, D, d, D)`` for
    features ``(L, N, d)`` and their log-scales ``(L + 1, N)``: ``left[j]`` contracts
    sites ``0..j-1``, ``right[j]`` sites ``j..L-1``. One ``lax.scan`` each way."""
    L, n, _ = feats.shape
    dt = jnp.promote_types(cores.dtype, jnp.float32)
    cores = cores.astype(dt)
    feats = feats.astype(dt)
    start = (e0(n, max_bond, dt), jnp.zeros((n,), jnp.finfo(dt).dtype))

    def go(step):
        def body(carry, inp):
            vec, acc = carry
            v, ls = unit(step(vec, *inp))
            return (v, acc + ls), (v, acc + ls)
        return body

    _, (lv, ls) = jax.lax.scan(go(left_step), start, (cores, feats))
    _, (rv, rs) = jax.lax.scan(go(right_step), start, (cores, feats), reverse=True)
    cat = lambda first, rest: jnp.concatenate([first[None], rest])  # noqa: E731
    left, left_scale = cat(start[0], lv), cat(start[1], ls)
    right = jnp.concatenate([rv, start[0][None]])
    right_scale = jnp.concatenate([rs, start[1][None]])
    return feats, left, right, left_scale, right_scale


def sides(left, f1, f2, right):
    """``left (N, D) x f1 (N, d)`` and ``f2 (N, d) x right (N, D)`` flattened."""
    n = left.shape[0]
    lf = (left[:, :, None] * f1[:, None, :]).reshape(n, -1)
    rf = (f2[:, :, None] * right[:, None, :]).reshape(n, -1)
    return lf, rf


def local_logits(B, lf, rf):
    D, d, _, C, _ = B.shape
    m = jnp.transpose(B, (0, 1, 3, 2, 4)).reshape(D * d, C * d * D)
    t = (lf @ m).reshape(lf.shape[0], C, -1)
    return jnp.einsum("ncj,nj->nc", t, rf)


def sweep_directions(n_sites: int, center: int, back: bool = False) -> list[str]:
    """The directions of one sweep's updates from the label at ``center``: ``L - 1 -
    center`` right then ``L - 1`` left, then (``back``) ``center`` right again, which
    returns the label to ``center``."""
    L = n_sites
    return ["right"] * (L - 1 - center) + ["left"] * (L - 1) + ["right"] * (center if back else 0)


def sweep_loop(update_fn, mps, envs, callback, back=False, **kwargs):
    """The calls ``update_fn(mps, envs, direction=..., **kwargs)`` of one sweep
    (:func:`sweep_directions`); returns ``(mps, envs, infos)`` with the infos stacked
    on the host (one transfer, and no eager stack compiled per length and dtype)."""
    L = mps.n_sites
    c = int(mps.center)
    if not 0 <= c < L:
        raise ValueError(f"mps.center must be in [0, {L - 1}], got {c}")
    infos = []
    for direction in sweep_directions(L, c, back):
        mps, envs, info = update_fn(mps, envs, direction=direction, **kwargs)
        infos.append(info)
        if callback is not None:
            callback(info)
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *jax.device_get(infos)) if infos else {}
    return mps, envs, stacked


def check_optimizer(optimizer) -> None:
    """TypeError unless ``optimizer`` is None or an optax ``GradientTransformation``."""
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation or None, got "
                        f"{type(optimizer).__name__}")


def descend(grad, b, mask, steps: int, lr, momentum, optimizer=None):
    """``steps`` steps of ``optimizer`` (optax) on the bond tensor ``b`` along the masked
    descent direction ``mask * grad(b)`` (``grad`` returns the descent gradient, the
    conjugate one for complex ``b``); entries outside ``mask`` never move.

    ``optimizer=None`` is Nesterov momentum with step ``lr`` and momentum ``momentum``
    (plain gradient descent for ``momentum = 0``; both may be traced):
    ``v <- momentum v - lr mask grad(b + momentum v)``, ``b <- b + v``. It runs as
    ``optax.sgd(lr, momentum, nesterov=True)``, whose iterate is the look-ahead point
    ``b + momentum v``; the returned tensor is ``b`` itself (the look-ahead point minus
    ``momentum v = -momentum lr trace``), as the classic formulation returns it.
    """
    opt = optax.sgd(lr, momentum, nesterov=True) if optimizer is None else optimizer

    def step(_, carry):
        p, state = carry
        updates, state = opt.update(mask * grad(p), state, p)
        return optax.apply_updates(p, updates), state

    b, state = jax.lax.fori_loop(0, steps, step, (b, opt.init(b)))
    if optimizer is None:
        b = b + (lr * momentum * otu.tree_get(state, "trace")).astype(b.dtype)
    return b
