"""Tensor rings (periodic MPS).

A ``TensorRing`` holds cores of shape ``(r_k, n_k, r_{k+1})`` for ``k = 0, ..., L-1``
with the closing bond ``r_L = r_0``; it represents

    x[i_0, ..., i_{L-1}] = trace(G_0[:, i_0, :] @ G_1[:, i_1, :] @ ... @ G_{L-1}[:, i_{L-1}, :]).

Unlike a tensor train, the closing rank ``r_0`` may exceed 1 (with ``r_0 = 1`` a
ring is a TT). Sizes and ranks are read from the arrays' trailing axes, so a
batch of rings stacked by ``vmap`` reports them right; nothing else is stored.

``from_dense`` is TR-SVD (Zhao et al. 2016, "Tensor Ring Decomposition"), ``als``
fits given ranks with a fixed number of alternating least-squares sweeps inside
one ``lax.fori_loop`` (jittable). ``inner`` and ``norm`` contract transfer
matrices around the ring and never form the dense tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from tnlib import _numerics, linalg
from tnlib._validate import as_inexact as _as_inexact
from tnlib._validate import check_cores as _check_cores
from tnlib._validate import check_dims as _check_dims
from tnlib._validate import check_same_dims as _check_same_dims
from tnlib._validate import check_size as _check_size
from tnlib._validate import rank_sequence as _rank_sequence
from tnlib.struct import pytree_dataclass

__all__ = [
    "TensorRing", "random", "from_dense", "als", "to_dense", "inner", "norm", "num_params",
    "check",
]


@pytree_dataclass
class TensorRing:
    """Tensor ring: ``cores[k]`` has shape ``(r_k, n_k, r_{k+1})``, ``r_L = r_0``."""

    cores: tuple

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(c.shape[-2] for c in self.cores)

    @property
    def ranks(self) -> tuple[int, ...]:
        """The ``L`` bond dimensions ``(r_0, ..., r_{L-1})``; ``r_0`` closes the ring
        (core ``k`` has shape ``(ranks[k], dims[k], ranks[(k + 1) % L])``)."""
        return tuple(c.shape[-3] for c in self.cores)

    @property
    def n_sites(self) -> int:
        return len(self.cores)

    @property
    def dtype(self):
        return jnp.result_type(*self.cores)


# ----------------------------------------------------------------------------- checks


def check(tr, name: str = "tr"):
    """Validate a TensorRing's core shapes (static; works under jit).

    Raises ValueError naming the sites and both shapes when neighbouring bonds
    disagree, the closing bond between the last site and site 0 included, and when
    a core does not have 3 axes. Returns ``tr`` unchanged.
    """
    if not isinstance(tr, TensorRing):
        raise TypeError(f"{name} must be a tnlib.tr.TensorRing, got {type(tr).__name__}")
    _check_cores(tr.cores, name, 3, "(r_left, n, r_right)", closed=True)
    return tr


def _ring_ranks(rank, n_sites: int, name: str = "rank") -> tuple[int, ...]:
    return _rank_sequence(rank, n_sites, name, f"ring ranks (r_0, ..., r_{n_sites - 1})")


# ------------------------------------------------------------------------ construction


def random(key, dims: Sequence[int], rank, dtype=jnp.float32) -> TensorRing:
    """Random ring with Gaussian cores scaled so that ``E ||tr||_F^2 = 1``.

    Args:
      key: PRNG key.
      dims: mode sizes ``(n_0, ..., n_{L-1})``.
      rank: an int (every bond, the closing one included) or a sequence of ``L``
        ranks ``(r_0, ..., r_{L-1})``, core ``k`` being ``(r_k, n_k, r_{k+1 mod L})``.
      dtype: float or complex dtype.
    """
    dims = _check_dims(dims)
    ranks = _ring_ranks(rank, len(dims))
    L = len(dims)
    keys = jax.random.split(key, L)
    cores = []
    for k, n in enumerate(dims):
        rl, rr = ranks[k], ranks[(k + 1) % L]
        std = 1.0 / math.sqrt(n * math.sqrt(rl * rr))
        cores.append(std * jax.random.normal(keys[k], (rl, n, rr), dtype))
    return TensorRing(tuple(cores))


def to_dense(tn: TensorRing):
    """The dense tensor of shape ``dims``: the chain product traced over the closing bond
    (a ValueError naming the size when it exceeds ``_validate.max_bytes()``)."""
    check(tn)
    r0 = tn.cores[0].shape[0]
    _check_size((*tn.dims, r0 * r0), tn.cores[0].dtype, "tr.to_dense")
    res = tn.cores[0].reshape(-1, tn.cores[0].shape[-1])
    for c in tn.cores[1:]:
        res = (res @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
    return jnp.einsum("aXa->X", res.reshape(r0, -1, r0)).reshape(tn.dims)


def num_params(tn: TensorRing) -> int:
    """Number of stored scalars, ``sum_k r_k n_k r_{k+1}`` (per network for a batch)."""
    if not isinstance(tn, TensorRing):  # a type check only: a stacked batch has extra axes
        raise TypeError(f"tn must be a tnlib.tr.TensorRing, got {type(tn).__name__}")
    return sum(math.prod(c.shape[-3:]) for c in tn.cores)


# ------------------------------------------------------------------- contractions


def _transfer(env, x, y):
    """``env (ra0, rb0, ra, rb)`` through conj(x) ``(ra, n, ra')`` and y ``(rb, n, rb')``."""
    t = jnp.einsum("abcd,dne->abcne", env, y)
    return jnp.einsum("abcne,cnf->abfe", t, jnp.conj(x))


def _env0(a, b, dtype):
    ia = jnp.eye(a.shape[0], dtype=dtype)
    ib = jnp.eye(b.shape[0], dtype=dtype)
    return jnp.einsum("ac,bd->abcd", ia, ib)


def inner(a: TensorRing, b: TensorRing):
    """``<a, b> = sum conj(a) * b`` (first argument conjugated), as the trace of the
    product of the transfer matrices ``sum_n conj(A_k[:, n, :]) (x) B_k[:, n, :]``."""
    check(a, "a")
    check(b, "b")
    _check_same_dims(a, b)
    dt = jnp.result_type(a.dtype, b.dtype)
    env = _env0(a.cores[0], b.cores[0], dt)
    for x, y in zip(a.cores, b.cores, strict=True):
        env = _transfer(env, x, y)
    return jnp.einsum("abab->", env)


def norm(tn: TensorRing):
    """Frobenius norm ``||tn||_F`` via the transfer matrices, rescaled at every site
    (a running log-scale) so long rings neither overflow nor underflow."""
    check(tn)
    dt = jnp.promote_types(tn.dtype, jnp.float32)
    real = jnp.finfo(dt).dtype
    env = _env0(tn.cores[0], tn.cores[0], dt)
    acc = jnp.zeros((), real)
    for c in tn.cores:
        c = c.astype(dt)
        env = _transfer(env, c, c)
        s = jnp.max(jnp.abs(env))
        s = jnp.where(s > 0, s, 1.0)
        env, acc = env / s, acc + jnp.log(s).astype(real)
    sq = jnp.maximum(jnp.real(jnp.einsum("abab->", env)), 0)
    return _numerics.safe_sqrt(sq) * jnp.exp(0.5 * acc)


# ------------------------------------------------------------------------- TR-SVD


def _split(k: int, cap: int | None) -> tuple[int, int]:
    """Factor the first unfolding's kept rank: the largest ``k' <= k`` with a split
    ``k' = r_0 * r_1``, ``r_0 <= r_1 <= cap``; ``r_0`` is the largest divisor of ``k'``
    not above ``sqrt(k')`` (the most balanced split)."""
    for kk in range(k, 0, -1):
        r0 = next(d for d in range(math.isqrt(kk), 0, -1) if kk % d == 0)
        if cap is None or kk // r0 <= cap:
            return r0, kk // r0
    return 1, 1


def _sign_fixed(u, s, vh):
    """Fix the SVD's sign (phase) freedom: the largest-magnitude entry of each column
    of ``u`` becomes real and positive (vh's rows get the inverse phase). This is
    scikit-learn's / tensorly's ``svd_flip`` convention; TR-SVD's first split is not
    invariant under these flips, so without it results would depend on the backend."""
    idx = jnp.argmax(jnp.abs(u), axis=0)
    top = jnp.take_along_axis(u, idx[None, :], axis=0)[0]
    mag = jnp.abs(top)
    phase = jnp.where(mag > 0, top / jnp.where(mag > 0, mag, 1), 1).astype(u.dtype)
    return u * jnp.conj(phase)[None, :], s, vh * phase[:, None]


def _tr_svd(x, max_rank, rtol):
    """TR-SVD from mode 0. ``max_rank``: None, an int cap on every bond, or a tuple of
    ``L`` per-bond caps ``(r_0, ..., r_{L-1})`` whose first two split the first
    unfolding exactly (checked by ``from_dense``)."""
    dims = x.shape
    L = len(dims)
    if L == 1:
        return [x.reshape(1, dims[0], 1)]
    per_bond = isinstance(max_rank, tuple)
    abs_tol = None
    if rtol is not None:
        abs_tol = rtol * jnp.linalg.norm(x.ravel()) / math.sqrt(L)

    def keep_of(s, tol, j):
        cap = max_rank[j + 1] if per_bond else max_rank
        keep = s.shape[-1] if cap is None else min(cap, s.shape[-1])
        if tol is not None and max_rank is None:
            keep = linalg.tolerance_rank(s, tol)
        return keep

    u, s, vh = _sign_fixed(*linalg.svd(x.reshape(dims[0], -1)))
    first_tol = None if abs_tol is None else math.sqrt(2.0) * abs_tol
    k = s.shape[-1]
    if per_bond:
        r0, r1 = max_rank[0], max_rank[1]
    else:
        if max_rank is not None:
            k = min(k, max_rank * max_rank)
        elif first_tol is not None:
            k = linalg.tolerance_rank(s, first_tol)
        r0, r1 = _split(k, max_rank)
    k = r0 * r1
    u, s, vh = u[:, :k], s[:k], vh[:k]
    if first_tol is not None and max_rank is not None:
        s = s * linalg.tolerance_mask(s, first_tol)
    cores = [u.reshape(dims[0], r0, r1).transpose(1, 0, 2)]
    z = (s[:, None].astype(vh.dtype) * vh).reshape(r0, r1, -1)
    rest = jnp.moveaxis(z, 0, -1).reshape(r1 * dims[1], -1)  # (r_1 n_1, ... n_{L-1} r_0)
    r = r1
    for j in range(1, L - 1):
        u, s, vh = linalg.svd(rest)
        keep = keep_of(s, abs_tol, j)
        u, s, vh = u[:, :keep], s[:keep], vh[:keep]
        if abs_tol is not None and max_rank is not None:
            s = s * linalg.tolerance_mask(s, abs_tol)
        cores.append(u.reshape(r, dims[j], keep))
        r = keep
        rest = (s[:, None].astype(vh.dtype) * vh).reshape(r * dims[j + 1], -1)
    cores.append(rest.reshape(r, dims[-1], r0))
    return cores


def _check_start_mode(mode, n_modes: int) -> int:
    if isinstance(mode, bool) or not isinstance(mode, int) or not -n_modes <= mode < n_modes:
        raise ValueError(
            f"mode must be a Python int in [{-n_modes}, {n_modes - 1}] (the mode whose "
            f"unfolding is split first), got {mode!r}"
        )
    return mode % n_modes


def from_dense(x, *, max_rank=None, rtol: float | None = None, mode: int = 0) -> TensorRing:
    """TR-SVD (Zhao et al. 2016) of a dense tensor.

    The first unfolding ``x.reshape(n_0, -1)`` is decomposed by SVD and its kept rank
    ``k`` is split into the closing rank and the first bond, ``k = r_0 * r_1``:
    ``r_0`` is the largest divisor of ``k`` not above ``sqrt(k)`` and ``r_1 = k / r_0``
    (so ``r_0 <= r_1``; a prime ``k`` gives ``r_0 = 1``). With ``max_rank``, ``k`` is
    the largest value ``<= min(n_0, prod(rest), max_rank**2)`` that has such a split
    with ``r_1 <= max_rank`` (``max_rank=m`` with ``m**2 <= n_0`` keeps ``r_0 = r_1 = m``,
    as tensorly's ``tensor_ring(x, rank=m)``). The left singular vectors, reshaped
    ``(n_0, r_0, r_1)``, give core 0; the rest ``S V^H`` is reshaped to
    ``(r_1, n_1, ..., n_{L-1}, r_0)`` and split by TT-SVD into cores 1..L-1.

    The later bonds are the ranks of that TT-SVD. The SVD's basis of the first
    unfolding mixes the closing and first bonds, so for a planted ring of ranks
    ``r`` the first split recovers ``(r_0, r_1)`` but bond ``k >= 2`` can reach
    ``r_k * r_0**2``; ``max_rank >= max(r) * r_0**2`` reconstructs such a ring exactly
    (``als`` fits exact ranks). That basis is fixed by the SVD sign convention
    (largest entry of each left singular vector real and positive, as tensorly's
    ``svd_flip``), so results do not depend on the LAPACK backend; with
    ``m**2 <= n_0``, ``from_dense(x, max_rank=m)`` is tensorly's ``tensor_ring(x, rank=m)``.

    Args:
      x: dense array with at least one axis.
      max_rank: static cap on the bonds: a Python int >= 1 (every bond; bonds larger
        than the unfoldings allow are capped to what they allow, read them from
        ``ranks``), or a sequence of ``L`` per-bond ranks ``(r_0, ..., r_{L-1})`` in the
        layout of ``TensorRing.ranks`` (core ``k`` is ``(r_k, n_k, r_{k+1 mod L})``).
        Per bond, the two bonds around the starting core, ``r_mode`` and
        ``r_{mode+1}``, split its unfolding exactly (their product may not exceed the
        smaller side of that unfolding: a ValueError names the largest allowed value;
        choose another ``mode`` then); later bonds are capped to what their unfolding
        allows. ``tensor_ring(x, rank=[r_0, ..., r_{L-1}, r_0], mode=m)`` of tensorly
        is ``from_dense(x, max_rank=[r_0, ..., r_{L-1}], mode=m)`` here.
      rtol: relative Frobenius tolerance. With only ``rtol`` (concrete ``x``, outside
        jit) the result satisfies ``||x - tr||_F <= rtol * ||x||_F``: the first SVD
        discards at most ``sqrt(2) * delta``, each later one at most ``delta``, with
        ``delta = rtol * ||x||_F / sqrt(L)``. With ``max_rank`` too, ranks come from
        ``max_rank`` and ``rtol`` only zeroes singular values.
      mode: static index of the core computed first (default 0): the SVD of the
        mode-``mode`` unfolding gives core ``mode`` and the bonds around it, the ring
        is then split in the order ``mode + 1, ..., L - 1, 0, ..., mode - 1`` (tensorly's
        ``mode``). Negative values count from the end.

    Returns:
      ``TensorRing``; at full rank (both arguments None) ``to_dense`` of it equals ``x``
      to rounding.
    """
    x = _as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    L = x.ndim
    per_bond = max_rank is not None and not isinstance(max_rank, int | bool)
    _numerics.check_rank_args(None if per_bond else max_rank, rtol, x)
    mode = _check_start_mode(mode, L)
    if rtol is not None and max_rank is None and not linalg.is_concrete(x):
        raise TypeError(
            "from_dense with only rtol picks a data-dependent rank and needs a concrete "
            "tensor; inside jit also pass a static max_rank"
        )
    order = list(range(mode, L)) + list(range(mode))
    xr = jnp.transpose(x, order)
    caps = max_rank
    if per_bond:
        ranks = _ring_ranks(max_rank, L, "max_rank")
        caps = ranks[mode:] + ranks[:mode]
        n_row, n_col = xr.shape[0], math.prod(xr.shape[1:])
        if L > 1 and caps[0] * caps[1] > min(n_row, n_col):
            raise ValueError(
                f"max_rank[{mode}] * max_rank[{(mode + 1) % L}] = {caps[0] * caps[1]} is "
                f"larger than the mode-{mode} unfolding ({n_row} x {n_col}) allows; the "
                f"largest allowed value is {min(n_row, n_col)} (lower those ranks or start "
                f"from another mode)"
            )
    cores = _tr_svd(xr, caps, rtol)
    return TensorRing(tuple(cores[L - mode:] + cores[:L - mode]) if mode else tuple(cores))


# ----------------------------------------------------------------------------- ALS


def _check_als_ranks(ranks, dims):
    """Core ``k`` is solved against a ``(prod_{j != k} n_j) x (r_k r_{k+1})`` matrix:
    more columns than rows would leave it underdetermined for every tensor."""
    L = len(dims)
    total = math.prod(dims)
    for k in range(L):
        rows = total // dims[k]
        prod = ranks[k] * ranks[(k + 1) % L]
        if prod > rows:
            raise ValueError(
                f"ranks[{k}] * ranks[{(k + 1) % L}] = {prod} at core {k} is larger than {rows}, "
                f"the largest allowed value (the product of the other mode sizes of "
                f"shape {tuple(dims)})"
            )


def _subchain(cores, k):
    """Product of the cores after ``k`` around the ring back to ``k``:
    ``(r_{k+1}, prod of their mode sizes, r_k)``, modes in ring order k+1, ..., k-1."""
    L = len(cores)
    if L == 1:
        r = cores[0].shape[0]
        return jnp.eye(r, dtype=cores[0].dtype).reshape(r, 1, r)
    first = cores[(k + 1) % L]
    res = first.reshape(-1, first.shape[-1])
    for j in range(2, L):
        c = cores[(k + j) % L]
        res = (res @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
    return res.reshape(first.shape[0], -1, res.shape[-1])


def _init_cores(x, ranks, key):
    """Random cores (``key`` given) or the TR-SVD of ``x`` cut / padded to ``ranks``."""
    L = x.ndim
    if key is not None:
        cores = random(key, x.shape, ranks, x.dtype).cores
        scale = jnp.linalg.norm(x.ravel()) / jnp.maximum(norm(TensorRing(cores)), 1e-30)
        return [c * scale ** (1.0 / L) for c in cores]
    svd_cores = _tr_svd(x, max(ranks), None)
    pad_key = jax.random.PRNGKey(0)
    cores = []
    for k, c in enumerate(svd_cores):
        rl, rr = ranks[k], ranks[(k + 1) % L]
        c = c[:rl, :, :rr]
        rms = jnp.sqrt(jnp.mean(jnp.abs(c) ** 2))
        # bonds the TR-SVD left smaller get small random entries (exact zeros would
        # keep the minimum-norm updates at zero forever)
        new = 1e-2 * rms * jax.random.normal(jax.random.fold_in(pad_key, k),
                                            (rl, x.shape[k], rr), x.dtype)
        cores.append(new.at[: c.shape[0], :, : c.shape[2]].set(c))
    return cores


def als(x, ranks, n_iter: int = 20, key=None, *, return_errors: bool = False):
    """Fit a tensor ring of the given ranks by alternating least squares.

    Runs exactly ``n_iter`` sweeps in a ``lax.fori_loop`` (jittable). A sweep
    updates cores 0, 1, ..., L-1; core ``k`` is the least-squares solution (minimum
    norm, ``jnp.linalg.lstsq``) of ``X_k^T = S_k G_k``, where ``X_k`` is ``x``
    unfolded along mode ``k`` with the other modes in ring order and ``S_k`` the
    ``(prod_{j != k} n_j) x (r_k r_{k+1})`` contraction of the other cores. Each
    update minimizes the error over one core, so the error never increases from
    sweep to sweep (up to rounding).

    Args:
      x: dense array (float or complex; bfloat16 / float16 are fitted in float32 and
        the result cast back).
      ranks: static int (every bond) or sequence of ``L`` ring ranks
        ``(r_0, ..., r_{L-1})``; ``r_k * r_{k+1}`` may not exceed the product of the
        other mode sizes (the error names the largest allowed value).
      n_iter: static number of sweeps (>= 1).
      key: None (default) starts from ``from_dense(x, max_rank=max(ranks))`` cut to
        ``ranks`` (bonds it leaves smaller are padded with small deterministic random
        entries); a PRNG key starts from ``random`` cores scaled to ``||x||_F``.
      return_errors: also return the relative error ``||x - tr||_F / ||x||_F`` after
        each sweep, shape ``(n_iter,)``.

    Returns:
      ``TensorRing`` with ``ranks`` (or ``(tr, errors)``).
    """
    x = _as_inexact(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    L = x.ndim
    ranks = _ring_ranks(ranks, L, "ranks")
    _check_als_ranks(ranks, x.shape)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a Python int >= 1 (static), got {n_iter!r}")
    if _numerics.low_precision(x.dtype):  # fit in float32, return x's dtype
        out = als(x.astype(jnp.float32), ranks, n_iter, key, return_errors=return_errors)
        return jax.tree.map(lambda a: a.astype(x.dtype), out)
    cores = tuple(_init_cores(x, ranks, key))
    x_norm = jnp.linalg.norm(x.ravel())
    errors = jnp.zeros((n_iter,), jnp.finfo(x.dtype).dtype)
    # targets X_k^T: rows are the other modes in ring order k+1, ..., k-1
    targets = [jnp.transpose(x, [(k + j) % L for j in range(1, L)] + [k]).reshape(-1, x.shape[k])
               for k in range(L)]

    def sweep(i, carry):
        cores, errors = carry
        cores = list(cores)
        for k in range(L):
            s = _subchain(cores, k)  # (r_{k+1}, rows, r_k)
            rl, rr = ranks[k], ranks[(k + 1) % L]
            mat = jnp.transpose(s, (1, 2, 0)).reshape(-1, rl * rr)  # (rows, (a, b))
            g = jnp.linalg.lstsq(mat, targets[k])[0]  # ((a, b), n_k)
            cores[k] = g.reshape(rl, rr, -1).transpose(0, 2, 1)
        if return_errors:
            err = jnp.linalg.norm((x - to_dense(TensorRing(tuple(cores)))).ravel())
            errors = errors.at[i].set(err / jnp.where(x_norm > 0, x_norm, 1.0))
        return tuple(cores), errors

    cores, errors = jax.lax.fori_loop(0, n_iter, sweep, (cores, errors))
    out = TensorRing(cores)
    return (out, errors) if return_errors else out
