"""Padded layout and the jitted masked fitting kernels of :mod:`tnlib.search.engine`.

Private to the search package (a module made for sharing: its names are public inside
it, the module itself is not). A search space's candidates are embedded in one padded
network (:class:`Layout`: every support edge at ``max_rank``, every mode at its padded
size); a candidate is a pair of masks (edge masks ``(E, max_rank)``, mode masks
``(N, max padded size)``) whose outer products per node (:func:`core_masks`) zero the
cores beyond its ranks and sizes. :func:`fitter` returns the jitted fit of one
candidate, or of a batch of candidates (vmapped), by masked ALS (:func:`als_sweep`:
each core solves its normal equations restricted to the unmasked entries) or by masked
Adam, (``FitConfig.optimizer``, optax), each from ``restarts`` random starts (the best is kept).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnlib import _numerics, _optim, network
from tnlib.network import Network

# ------------------------------------------------------------------ padded layout


class Layout(NamedTuple):
    node_dims: tuple[int, ...]  # padded mode size per node
    n_edges: int
    max_rank: int
    incident: tuple[tuple[int, ...], ...]  # per node: its bond axes' edge indices, in order
    adjacency: tuple[tuple[int, ...], ...]
    spec: str


@functools.lru_cache(maxsize=256)
def layout(space) -> Layout:
    """The padded layout of a :class:`~tnlib.search.space.SearchSpace` (cached)."""
    n = space.n_nodes
    node_dims = ((max(space.dims),) * n if space.search_perm else space.node_dims(space.perm))
    adj = [[1] * n for _ in range(n)]
    for k in range(n):
        adj[k][k] = node_dims[k]
    r = space.max_rank
    index = {}
    for e, (i, j) in enumerate(space.edges):
        if r > 1:
            adj[i][j] = adj[j][i] = r
            index[i, j] = index[j, i] = e
    incident = tuple(tuple(index[k, j] for j in range(n) if (k, j) in index) for k in range(n))
    adj = tuple(tuple(row) for row in adj)
    return Layout(node_dims, len(space.edges), r, incident, adj, network.einsum_spec(adj))


def core_masks(lay: Layout, em, pm):
    """Per node, the outer product of its mode mask and its bonds' edge masks."""
    out = []
    for k, nk in enumerate(lay.node_dims):
        m = pm[k, :nk]
        for e in lay.incident[k]:
            m = m[..., None] * em[e]
        out.append(m)
    return tuple(out)


# --------------------------------------------------------------------- fitting


@functools.lru_cache(maxsize=256)
def als_specs(spec: str) -> tuple[tuple[str, str], ...]:
    """Per node ``k``: the einsum of ``E^T b`` (target with the other cores: mode ``k``,
    then the bonds of ``k``) and of the Gram matrix ``E^T E`` (the other cores with a
    second copy of themselves: bonds of ``k``, then their copies), where ``E`` is the
    unfolded environment of core ``k``. Neither forms ``E`` itself."""
    import opt_einsum

    terms = spec.split("->")[0].split(",")
    n = len(terms)
    modes = "".join(t[0] for t in terms)
    used = set("".join(terms))
    fresh = (opt_einsum.get_symbol(i) for i in range(10 * len(used) + 100))
    prime = {}
    for c in sorted(used - set(modes)):
        prime[c] = next(f for f in fresh if f not in used and f not in prime.values())
    out = []
    for k in range(n):
        others = [t for j, t in enumerate(terms) if j != k]
        copies = ["".join(prime.get(c, c) for c in t) for t in others]
        bonds = terms[k][1:]
        rhs = modes + "," + ",".join(others) + "->" + terms[k]
        gram = ",".join(others + copies) + "->" + bonds + "".join(prime[c] for c in bonds)
        out.append((rhs, gram))
    return tuple(out)


def als_sweep(cores, xn, masks, lay: Layout, ridge):
    """One masked ALS sweep: core ``k`` solves its normal equations restricted to the
    unmasked bond entries (masked rows and columns replaced by the identity)."""
    specs = als_specs(lay.spec)
    cores = list(cores)
    for k, (rhs_spec, gram_spec) in enumerate(specs):
        others = [c for j, c in enumerate(cores) if j != k]
        nk = lay.node_dims[k]
        d = math.prod(cores[k].shape[1:])
        rhs = network.contract([xn] + others, rhs_spec).reshape(nk, d).T
        g = network.contract(others + others, gram_spec).reshape(d, d)
        mb = jnp.max(masks[k].reshape(nk, d), axis=0)  # bond mask (the mode mask factors out)
        scale = jnp.trace(g * mb) / jnp.maximum(jnp.sum(mb), 1.0)
        g = g * jnp.outer(mb, mb) + jnp.diag(1.0 - mb + ridge * scale * mb)
        sol = jnp.linalg.solve(g, rhs * mb[:, None])
        cores[k] = sol.T.reshape(cores[k].shape) * masks[k]
    return _numerics.balance_norms(tuple(cores))


def make_fit_one(lay: Layout, cfg, loss):
    n = len(lay.node_dims)

    def start(key, masks, init, noise_scale, dtype):
        # one draw for all cores (one random-bits kernel to compile, not one per core)
        sizes_all = [math.prod(m.shape) for m in masks]
        z = jax.random.normal(key, (sum(sizes_all),), dtype)
        offsets = np.cumsum([0] + sizes_all)
        out = []
        for k, m in enumerate(masks):
            # network.random's scale for the candidate's own (unpadded) sizes
            sizes = jnp.sum(m > 0).astype(dtype)
            nk = jnp.sum(jnp.max(m.reshape(m.shape[0], -1), axis=1) > 0).astype(dtype)
            std = 1.0 / jnp.sqrt(nk * jnp.sqrt(sizes / nk))
            noise = std * z[offsets[k]:offsets[k + 1]].reshape(m.shape)
            # a cold start (init all zero, noise_scale 1) is the noise itself, exactly
            c = init[k] + jnp.where(init[k] == 0, noise_scale * noise, 0)
            out.append(c * m)
        return tuple(out)

    def fit_one(x, em, pm, base_key, index, init, noise_scale):
        key = jax.random.fold_in(base_key, index)
        masks = core_masks(lay, em, pm)
        if loss is not None:
            dtype = em.dtype
            xn, per_core = None, jnp.ones((), dtype)
        else:
            dtype = x.dtype
            xnorm = jnp.linalg.norm(x.ravel())
            safe = jnp.where(xnorm > 0, xnorm, 1.0)
            xn, per_core = x / safe, safe ** (1.0 / n)
        masks = tuple(m.astype(dtype) for m in masks)
        init = tuple(c.astype(dtype) / per_core for c in init)
        noise_scale = noise_scale.astype(dtype)

        def err_of(cs):
            if loss is not None:
                return loss(Network(cs, lay.adjacency, tuple(range(n))))
            return jnp.sum((xn - network.contract(cs, lay.spec)) ** 2)

        def run(k):
            cs = start(k, masks, init, noise_scale, dtype)
            if cfg.method == "als":
                ridge = cfg.ridge if cfg.ridge is not None else (
                    1e-10 if dtype == jnp.float64 else 1e-6)
                cs = jax.lax.fori_loop(0, cfg.n_iter,
                                       lambda _, c: als_sweep(c, xn, masks, lay, ridge), cs)
            else:
                def obj(raw):
                    return err_of(tuple(r * m for r, m in zip(raw, masks, strict=True)))

                opt = cfg.optimizer or optax.adam(cfg.learning_rate, eps=1e-12)
                cs = _optim.minimize(obj, cs, cfg.n_iter, opt)
                cs = tuple(c * m for c, m in zip(cs, masks, strict=True))
            err = jnp.real(err_of(cs))
            return cs, jnp.where(jnp.isfinite(err), err, jnp.inf)

        cs, errs = jax.vmap(run)(jax.random.split(key, cfg.restarts))
        best = jnp.argmin(errs)
        cs = tuple(c[best] * per_core.astype(dtype) for c in cs)
        return cs, errs[best]

    return fit_one


@functools.lru_cache(maxsize=64)
def fitter(lay: Layout, cfg, loss, batched: bool, shared_x: bool):
    """The jitted fit of one candidate (``batched=False``) or of a batch (vmapped).

    Cold and warm starts share one compiled function: a cold start passes zero cores
    and ``noise_scale`` 1, a warm start the incumbent's cores and 0.1."""
    fit_one = make_fit_one(lay, cfg, loss)
    if not batched:
        return jax.jit(fit_one)
    return jax.jit(jax.vmap(fit_one, in_axes=(None if shared_x else 0, 0, 0, None, 0, 0, 0)))


def bucket(n: int, min_batch: int, max_batch: int) -> int:
    """The batch size for ``n`` candidates: the next power of two in ``[min_batch, max_batch]``."""
    b = 1
    while b < max(n, min_batch):
        b *= 2
    return min(b, max_batch)
