"""Two-site sweeping (DMRG-style) training of MPS Born machines (Han et al. 2018).

The model is an MPS over ``L`` sites with ``d`` values per site (one-hot tokens):
``psi(x) = A_0[x_0] A_1[x_1] ... A_{L-1}[x_{L-1}]`` (``A_k[j]`` the ``(D, D)`` slice of
the core ``(D, d, D)``, open boundaries ``e_0``), and ``p(x) = |psi(x)|^2 / Z`` with
``Z = sum_x |psi(x)|^2``: the stacked cores are those of
:class:`tnlib.models.MPSBornMachine` with the identity embedding (a trained embedding
``emb`` ``(V, d)`` folds into the cores: ``A'_k[v] = sum_j emb[v, j] A_k[j]``).

The chain is kept in mixed canonical form around its orthogonality ``center``: cores
left of it are left-orthogonal, cores right of it right-orthogonal, so the bond tensor
``B`` ``(D, d, d, D)`` of the centre and a neighbour carries the whole norm,
``Z = ||B||^2``. One *update* merges the two cores into ``B``, takes gradient steps on
the training negative log-likelihood::

    NLL(B) = -(1/N) sum_n log |<l_n, B[:, x_p, x_{p+1}, :] r_n>|^2 + log ||B||^2
             - (2/N) sum_n (log-scales of l_n and r_n)

with the per-sequence left / right environments ``l_n``, ``r_n`` of the rest of the
chain cached (unit vectors and their log-scales, as in :mod:`tnlib.sweep`), normalizes
``B``, splits it by a truncated SVD (:func:`tnlib.sweep.split_bond`: at most
``max_rank`` singular values, those above ``cutoff`` times the largest) and moves the
centre one site on. A *sweep* moves the centre from its site to the right end and back
to site 0.

Static padded shapes as in :mod:`tnlib.sweep`: bonds are padded to ``D = max_bond``,
the kept ones are in ``ranks`` and entries past them are exactly zero, so an update
compiles once per direction whatever the chain length or the site.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnlib import _mps_sweep
from tnlib._mps_sweep import DIRECTIONS as _DIRECTIONS
from tnlib._mps_sweep import PaddedChain as _PaddedChain
from tnlib._mps_sweep import check_center as _check_center
from tnlib._mps_sweep import check_max_rank as _check_max_rank
from tnlib._mps_sweep import left_step as _left_step
from tnlib._mps_sweep import local_logits as _local_logits
from tnlib._mps_sweep import right_orthogonal_cores as _right_orthogonal_cores
from tnlib._mps_sweep import right_step as _right_step
from tnlib._mps_sweep import scan_environments as _scan_environments
from tnlib._mps_sweep import sides as _sides
from tnlib._mps_sweep import sweep_loop as _sweep_loop
from tnlib._mps_sweep import unit as _unit
from tnlib._validate import check_int
from tnlib.struct import pytree_dataclass
from tnlib.sweep import split_bond

__all__ = [
    "BornMPS", "BornEnvironments", "init", "from_cores", "to_cores", "environments", "nll",
    "bond_tensor", "bond_nll", "update", "sweep",
]


@pytree_dataclass
class BornMPS(_PaddedChain):
    """An MPS Born machine in padded, mixed canonical form.

    Fields:
      cores: ``(L, D, d, D)``; cores left of ``center`` are left-orthogonal, cores right
        of it right-orthogonal, so ``Z = ||cores[center]||^2``.
      center: int32 scalar, the orthogonality centre (an array: moving it does not
        recompile).
      ranks: ``(L + 1,)`` int32 kept bond dimensions (1 at both ends); entries of the
        cores beyond them are zero.
    """

    cores: jax.Array
    center: jax.Array
    ranks: jax.Array


@pytree_dataclass
class BornEnvironments:
    """Per-sequence environments of a training set for the current centre.

    Fields: ``features`` ``(L, N, d)`` the one-hot tokens; ``left`` and ``right``
    ``(L + 1, N, D)`` unit vectors; ``left_scale`` and ``right_scale`` ``(L + 1, N)``
    the logs of the norms divided out. ``left[j]`` contracts sites ``0..j-1``,
    ``right[j]`` sites ``j..L-1``; those on the centre's side are the valid ones.
    """

    features: jax.Array
    left: jax.Array
    right: jax.Array
    left_scale: jax.Array
    right_scale: jax.Array


# ----------------------------------------------------------------------------- checks


def _check_tokens(mps: BornMPS, tokens, name="tokens"):
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[1] != mps.n_sites:
        raise ValueError(f"{name} must have shape (N, n_sites) = (N, {mps.n_sites}), got "
                         f"{tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{name} must hold integer tokens in [0, {mps.local_dim}), got dtype "
                         f"{tokens.dtype}")
    return tokens


def _check_direction(direction):
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")


# ----------------------------------------------------------------------- construction


def from_cores(cores, max_bond: int, center: int = 0) -> BornMPS:
    """Pad an unpadded chain into a :class:`BornMPS` in canonical form at ``center``.

    Args:
      cores: ``L`` arrays ``(r_{k-1}, d, r_k)`` with ``r_0 = r_L = 1`` (real or complex).
      max_bond: the padded bond dimension ``D``, at least every bond after the gauge.
      center: the orthogonality centre, in ``[0, L)``.

    The gauge is fixed by QR sweeps on the host (outside jit): ``psi`` is unchanged,
    bonds may shrink to ``min(r_{k-1} d, r_k)``.
    """
    cores = [np.asarray(c) for c in cores]
    L = len(cores)
    check_int(L, "len(cores)", 2)
    check_int(max_bond, "max_bond", 1)
    check_int(center, "center", 0)
    if center >= L:
        raise ValueError(f"center must be in [0, {L - 1}], got {center}")
    d = cores[0].shape[1] if cores[0].ndim == 3 else None
    for k, c in enumerate(cores):
        if c.ndim != 3 or c.shape[1] != d:
            raise ValueError(f"cores[{k}] must have shape (r_left, {d}, r_right), got {c.shape}")
        if k + 1 < L and c.shape[2] != cores[k + 1].shape[0]:
            raise ValueError(f"cores: bond between sites {k} and {k + 1} does not match: "
                             f"{c.shape} and {cores[k + 1].shape}")
    if cores[0].shape[0] != 1 or cores[-1].shape[2] != 1:
        raise ValueError(f"cores: open-boundary ranks must be 1, got {cores[0].shape} and "
                         f"{cores[-1].shape}")
    dt = np.result_type(*cores)
    cores = [c.astype(dt) for c in cores]
    for k in range(center):  # left-orthogonal: A = Q R, R moves right
        q, r = np.linalg.qr(cores[k].reshape(-1, cores[k].shape[2]))
        cores[k] = q.reshape(cores[k].shape[0], d, -1)
        cores[k + 1] = np.einsum("ab,bsc->asc", r, cores[k + 1])
    for k in range(L - 1, center, -1):  # right-orthogonal: A^T = Q R, R^T moves left
        q, r = np.linalg.qr(cores[k].reshape(cores[k].shape[0], -1).T)
        cores[k] = q.T.reshape(-1, d, cores[k].shape[2])
        cores[k - 1] = np.einsum("asb,cb->asc", cores[k - 1], r)
    ranks = [1] + [c.shape[2] for c in cores]
    if max(ranks) > max_bond:
        raise ValueError(f"max_bond={max_bond} is below the chain's largest bond {max(ranks)}")
    stacked = np.zeros((L, max_bond, d, max_bond), dt)
    for k, c in enumerate(cores):
        stacked[k, : c.shape[0], :, : c.shape[2]] = c
    return BornMPS(jnp.asarray(stacked), jnp.asarray(center, jnp.int32),
                   jnp.asarray(ranks, jnp.int32))


def to_cores(mps: BornMPS):
    """The unpadded cores ``(r_{k-1}, d, r_k)`` (reads ``ranks``: outside jit)."""
    ranks = [int(r) for r in np.asarray(mps.ranks)]
    host = np.asarray(mps.cores)
    return [jnp.asarray(host[k, : ranks[k], :, : ranks[k + 1]]) for k in range(mps.n_sites)]


def init(key, n_sites: int, local_dim: int, *, max_bond: int, init_bond: int = 1,
         dtype=jnp.float32) -> BornMPS:
    """A small-bond start, centre at site 0, ``Z = 1``: with ``init_bond=1`` (default)
    the uniform distribution (every core ``(1, ..., 1) / sqrt(d)``), otherwise random
    right-orthogonal cores with bonds up to ``init_bond``."""
    for name, v, low in (("n_sites", n_sites, 2), ("local_dim", local_dim, 1),
                         ("max_bond", max_bond, 1), ("init_bond", init_bond, 1)):
        check_int(v, name, low)
    if init_bond > max_bond:
        raise ValueError(f"init_bond={init_bond} exceeds max_bond={max_bond}")
    cores, ranks = _right_orthogonal_cores(key, n_sites, local_dim, init_bond, dtype)
    stacked = np.zeros((n_sites, max_bond, local_dim, max_bond), dtype)
    for k, c in enumerate(cores):
        stacked[k, : ranks[k], :, : ranks[k + 1]] = c
    return BornMPS(jnp.asarray(stacked), jnp.asarray(0, jnp.int32),
                   jnp.asarray(ranks, jnp.int32))


# ----------------------------------------------------------------------- environments


def _one_hot(mps, tokens):
    dt = jnp.promote_types(mps.cores.dtype, jnp.float32)
    return jax.nn.one_hot(jnp.swapaxes(tokens, 0, 1), mps.local_dim, dtype=dt)


@jax.jit
def _environments(mps, tokens):
    feats, left, right, left_scale, right_scale = _scan_environments(
        mps.cores, _one_hot(mps, tokens), mps.max_bond)
    return BornEnvironments(feats, left, right, left_scale, right_scale)


def environments(mps: BornMPS, tokens) -> BornEnvironments:
    """Cache the environments of training sequences ``tokens`` ``(N, L)`` (ints in
    ``[0, d)``; others embed to zero) for the centre at ``mps.center``."""
    return _environments(mps, _check_tokens(mps, tokens))


@jax.jit
def _nll(mps, tokens):
    feats = _one_hot(mps, tokens)
    cores = mps.cores.astype(feats.dtype)
    n, D = tokens.shape[0], mps.max_bond
    rdt = jnp.finfo(feats.dtype).dtype

    def amp(carry, inp):
        vec, acc = carry
        v, ls = _unit(_left_step(vec, *inp))
        return (v, acc + ls), None

    start = (jnp.zeros((n, D), feats.dtype).at[:, 0].set(1), jnp.zeros((n,), rdt))
    (vec, log_scale), _ = jax.lax.scan(amp, start, (cores, feats))
    log_psi2 = 2 * (jnp.log(jnp.abs(vec[:, 0])) + log_scale)

    def transfer(carry, core):  # sum_j A[j]^T M conj(A[j]): the identity metric
        env, acc = carry
        env = jnp.einsum("ac,ajb,cjd->bd", env, core, jnp.conj(core))
        nrm = jnp.linalg.norm(env)
        nrm = jnp.where(nrm > 0, nrm, 1.0)
        return (env / nrm, acc + jnp.log(nrm)), None

    e00 = jnp.zeros((D, D), feats.dtype).at[0, 0].set(1)
    (env, acc), _ = jax.lax.scan(transfer, (e00, jnp.zeros((), rdt)), cores)
    log_z = jnp.log(jnp.real(env[0, 0])) + acc
    return log_z - jnp.mean(log_psi2)


def nll(mps: BornMPS, tokens):
    """Mean negative log-likelihood ``-(1/N) sum_n log p(x_n)`` of ``tokens`` ``(N, L)``,
    computed from the whole chain (any gauge): ``log |psi|`` and ``log Z`` by
    ``lax.scan`` with running log-scales. Jitted; compiles once per shape."""
    return _nll(mps, _check_tokens(mps, tokens))


# ------------------------------------------------------------------------ bond tensor


def _bond(mps, p):
    at = lambda k: jax.lax.dynamic_index_in_dim(mps.cores, k, keepdims=False)  # noqa: E731
    return jnp.einsum("asb,btc->astc", at(p), at(p + 1))


def bond_tensor(mps: BornMPS, direction: str = "right"):
    """The bond tensor ``B`` ``(D, d, d, D)`` of the centre and its neighbour: sites
    ``(center, center+1)`` for ``"right"``, ``(center-1, center)`` for ``"left"``.
    In canonical form ``||B||^2 = Z``."""
    _check_direction(direction)
    _check_center(mps, direction)
    c = mps.center
    return _bond(mps, c if direction == "right" else c - 1)


def _amplitudes(B, lf, rf):
    """``<l_n, B[:, x_p, x_{p+1}, :] r_n>`` ``(N,)`` from :func:`tnlib.sweep._sides`."""
    return _local_logits(B[:, :, :, None, :], lf, rf)[:, 0]


def _local_nll(B, lf, rf):
    """The NLL of ``B`` up to the environments' log-scales: ``log ||B||^2 - mean
    log |amp|^2``."""
    a = _amplitudes(B, lf, rf)
    return jnp.log(jnp.sum(jnp.abs(B) ** 2)) - jnp.mean(jnp.log(jnp.abs(a) ** 2))


def bond_nll(B, envs: BornEnvironments, site):
    """The training NLL of the chain whose bond tensor on sites ``(site, site+1)`` is
    ``B`` ``(D, d, d, D)``, from the cached environments (exact when the rest of the
    chain is canonical, as in a sweep). ``site`` may be traced."""
    at = lambda a, k: jax.lax.dynamic_index_in_dim(a, k, keepdims=False)  # noqa: E731
    lf, rf = _sides(at(envs.left, site), at(envs.features, site),
                    at(envs.features, site + 1), at(envs.right, site + 2))
    scale = at(envs.left_scale, site) + at(envs.right_scale, site + 2)
    return _local_nll(B.astype(lf.dtype), lf, rf) - 2 * jnp.mean(scale)


# ----------------------------------------------------------------------------- update


def _normalized(a):
    nrm = jnp.linalg.norm(a)
    return a / jnp.where(nrm > 0, nrm, 1)


def _update(mps, envs, lr, momentum, cutoff, max_rank, *, direction, steps, optimizer):
    D = mps.max_bond
    c = mps.center
    p = c if direction == "right" else c - 1
    at = lambda a, k: jax.lax.dynamic_index_in_dim(a, k, keepdims=False)  # noqa: E731
    dt = envs.left.dtype
    B = _bond(mps, p).astype(dt)
    B = _normalized(B)  # p(x) does not see the norm; steps start from a unit B
    f1, f2 = at(envs.features, p), at(envs.features, p + 1)
    left, right = at(envs.left, p), at(envs.right, p + 2)
    lf, rf = _sides(left, f1, f2, right)
    scale = 2 * jnp.mean(at(envs.left_scale, p) + at(envs.right_scale, p + 2))
    idx = jnp.arange(D)
    lmask = (idx < at(mps.ranks, p)).astype(dt)
    rmask = (idx < at(mps.ranks, p + 2)).astype(dt)
    mask = lmask[:, None, None, None] * rmask
    n = lf.shape[0]
    tiny = jnp.sqrt(jnp.finfo(dt).tiny)  # a zero amplitude: large but finite steps

    def grad(b):  # 2 dNLL/d conj(B) = 2 B / Z - (2/N) sum_n conj(lf_n (x) rf_n / amp_n)
        a = _amplitudes(b, lf, rf)
        a = jnp.where(jnp.abs(a) > 0, a, tiny)
        data = jnp.einsum("ni,nj->ij", lf / a[:, None], rf).reshape(b.shape) / n
        return 2 * (b / jnp.sum(jnp.abs(b) ** 2) - jnp.conj(data))

    nll_before = _local_nll(B, lf, rf) - scale
    B = _mps_sweep.descend(grad, B, mask, steps, lr, momentum, optimizer)
    nll_after = _local_nll(B, lf, rf) - scale
    B = _normalized(B)
    lpart, rpart, rank, discarded = split_bond(B[:, :, :, None, :], direction,
                                               jnp.minimum(max_rank, D), cutoff)
    lpart = lpart.reshape(D, -1, D) * lmask[:, None, None]
    rpart = rpart.reshape(D, -1, D) * rmask
    dtc = mps.cores.dtype
    if direction == "right":  # the centre moves to p + 1, with unit norm
        rpart = _normalized(rpart)
        v, ls = _unit(_left_step(left, lpart, f1))
        envs = BornEnvironments(envs.features, envs.left.at[p + 1].set(v), envs.right,
                                envs.left_scale.at[p + 1].set(at(envs.left_scale, p) + ls),
                                envs.right_scale)
        center = c + 1
    else:
        lpart = _normalized(lpart)
        v, ls = _unit(_right_step(right, rpart, f2))
        envs = BornEnvironments(envs.features, envs.left, envs.right.at[p + 1].set(v),
                                envs.left_scale,
                                envs.right_scale.at[p + 1].set(at(envs.right_scale, p + 2) + ls))
        center = c - 1
    cores = mps.cores.at[p].set(lpart.astype(dtc)).at[p + 1].set(rpart.astype(dtc))
    ranks = mps.ranks.at[p + 1].set(rank.astype(mps.ranks.dtype))
    new = BornMPS(cores, center.astype(c.dtype), ranks)
    info = {"nll_before": nll_before, "nll_after": nll_after, "rank": rank,
            "discarded": discarded, "site": p}
    return new, envs, info


_update_jit = jax.jit(_update, static_argnames=("direction", "steps", "optimizer"),
                      donate_argnames=("envs",))


def update(mps: BornMPS, envs: BornEnvironments, *, direction: str, lr=0.1, momentum=0.0,
           cutoff=1e-6, max_rank=None, steps: int = 4,
           optimizer: optax.GradientTransformation | None = None):
    """One two-site update: optimize the bond tensor at the centre, split it, move on.

    Args:
      mps: the model; the centre moves to ``center + 1`` (``"right"``, needs
        ``center <= L - 2``) or ``center - 1`` (``"left"``, ``center >= 1``; outside
        jit a centre that cannot move raises ValueError).
      envs: the cached environments (from :func:`environments`); **donated**.
      direction: ``"right"`` or ``"left"`` (static: one compilation each).
      lr: gradient step size on the unit-norm ``B`` (traced).
      momentum: Nesterov momentum of the steps (traced; 0: plain descent).
      optimizer: an optax ``GradientTransformation`` for the steps (static; as in
        ``tnlib.sweep.update``); None: Nesterov with ``lr`` and ``momentum``.
      cutoff: relative singular-value threshold of the split (traced).
      max_rank: cap on the kept bond (traced; default and upper bound ``D``).
      steps: number of gradient steps (static).

    Returns ``(mps, envs, info)``; ``info`` holds the exact training NLL before and
    after the gradient steps (``nll_before``, ``nll_after``; before truncation), the
    kept ``rank``, the ``discarded`` relative weight and the bond's left ``site``.
    The new centre core has unit norm (``Z = 1``).
    """
    _check_max_rank(max_rank)
    _check_center(mps, direction)
    return _update_unchecked(mps, envs, direction=direction, lr=lr, momentum=momentum,
                             cutoff=cutoff, max_rank=max_rank, steps=steps,
                             optimizer=optimizer)


def _update_unchecked(mps, envs, *, direction, lr, momentum, cutoff, max_rank, steps,
                      optimizer=None):
    _check_direction(direction)
    check_int(steps, "steps", 0)
    _mps_sweep.check_optimizer(optimizer)
    max_rank = mps.max_bond if max_rank is None else max_rank
    return _update_jit(mps, envs, lr, momentum, cutoff, max_rank, direction=direction,
                       steps=steps, optimizer=optimizer)


def sweep(mps: BornMPS, envs: BornEnvironments, *, lr=0.1, momentum=0.0, cutoff=1e-6,
          max_rank=None, steps: int = 4, callback=None,
          optimizer: optax.GradientTransformation | None = None):
    """One sweep: move the centre from its site to the right end, then back to site 0.

    See :func:`update` for the arguments (``envs`` is donated); ``callback(info)`` is
    called after every update. Returns ``(mps, envs, infos)``, ``infos`` the per-update
    ``info`` stacked in order (NumPy arrays); the kept bonds are ``mps.ranks``.
    """
    _check_max_rank(max_rank)
    check_int(steps, "steps", 0)
    _mps_sweep.check_optimizer(optimizer)
    return _sweep_loop(_update_unchecked, mps, envs, callback, lr=lr, momentum=momentum,
                       cutoff=cutoff, max_rank=max_rank, steps=steps, optimizer=optimizer)
