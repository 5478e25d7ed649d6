"""Private helpers of ``tnlib.tt``'s feature contraction (``sweep_features``,
``contract_features``): the sequential scan, the log-depth pairwise product, and
the rule that picks between them.

Both paths return ``(v, log_scale)`` with ``v`` the exact row vector divided by
its Euclidean norm (or zero) and ``log_scale`` the log of that norm, so their
outputs are the same function of the inputs (up to rounding), gradients included.

* ``scan``: one ``lax.scan`` over the sites; each step forms the site matrix
  ``M_s = sum_d f_{s,d} A_s[:, d, :]``, multiplies the running vector by it and
  renormalizes. ``L`` sequential steps of ``O(r^2 n)`` work.
* ``tree``: all site matrices at once (one batched contraction), then neighbours
  multiplied pairwise in ``ceil(log2 L)`` levels of batched matmuls (an odd level
  is padded with the identity), each product divided by its largest entry and
  the log of that entry added to a per-product log-scale. ``O(L r^3)`` work
  (``r`` times the scan's) in ``log2 L`` sequential steps.

Compute dtypes are chosen by the caller (at least float32, log-scales at least
float32); nothing here validates arguments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

METHODS = ("auto", "scan", "tree")


def feature_step(carry, inputs):
    """One scan step: ``vec @ (sum_n f_n core[:, n, :])``, renormalized.

    The vector meets the core first (``(r) @ (r, n r)``), then the features: under
    ``vmap`` over a batch that is one ``(B, r) @ (r, n r)`` GEMM per site, where
    forming each sample's site matrix first would build (and, for the backward pass,
    keep) a ``(B, r, r)`` tensor per site: 7-12x slower training on CPU at bond 32."""
    vec, acc = carry
    core, feat = inputs
    a, n, b = core.shape
    vec = feat @ (vec @ core.reshape(a, n * b)).reshape(n, b)
    nrm = jnp.linalg.norm(vec)
    nrm = jnp.where(nrm > 0, nrm, 1.0)
    return (vec / nrm, acc + jnp.log(nrm).astype(acc.dtype)), None


def scan_sweep(cores, features, vector, acc_dtype):
    """``vector`` swept through stacked ``(L, r, n, r)`` cores with one ``lax.scan``."""
    carry = (vector, jnp.zeros((), acc_dtype))
    (vec, acc), _ = jax.lax.scan(feature_step, carry, (cores, features))
    return vec, acc


def _rescale(mats, acc_dtype):
    """Divide each trailing ``(a, b)`` matrix by its largest |entry|; return the logs.

    The scale is a constant to autodiff: the outputs (a unit vector and the log of
    its norm) do not depend on it, so the gradients stay exact and the backward
    pass skips the max.
    """
    s = jax.lax.stop_gradient(jnp.max(jnp.abs(mats), axis=(-2, -1)))
    s = jnp.where(s > 0, s, 1.0)
    return mats / s[..., None, None].astype(mats.dtype), jnp.log(s).astype(acc_dtype)


def _finish(vector, mat, log_scale):
    """``vector @ mat`` normalized to unit norm, its log-norm added to ``log_scale``."""
    vec = vector @ mat
    nrm = jnp.linalg.norm(vec)
    nrm = jnp.where(nrm > 0, nrm, 1.0)
    return vec / nrm, log_scale + jnp.log(nrm).astype(log_scale.dtype)


def tree_product(mats, acc_dtype):
    """Product ``M_0 @ M_1 @ ... @ M_{L-1}`` of stacked ``(L, r, r)`` matrices.

    Returns ``(P, log_scale)`` with the exact product ``P * exp(log_scale)`` and
    ``max |P| = 1`` (or ``P = 0``). ``ceil(log2 L)`` levels of batched matmuls.
    """
    mats, logs = _rescale(mats, acc_dtype)
    r = mats.shape[-1]
    while mats.shape[0] > 1:
        if mats.shape[0] % 2:
            mats = jnp.concatenate([mats, jnp.eye(r, dtype=mats.dtype)[None]], axis=0)
            logs = jnp.concatenate([logs, jnp.zeros((1,), acc_dtype)])
        pairs, lpairs = mats.reshape(-1, 2, r, r), logs.reshape(-1, 2)
        mats, lp = _rescale(pairs[:, 0] @ pairs[:, 1], acc_dtype)
        logs = lpairs[:, 0] + lpairs[:, 1] + lp
    return mats[0], logs[0]


def tree_sweep(cores, features, vector, acc_dtype):
    """The scan's result from the site matrices multiplied pairwise (log depth)."""
    if cores.shape[0] == 0:  # nothing to sweep: the scan returns the vector as given
        return vector, jnp.zeros((), acc_dtype)
    mats = jnp.einsum("ln,lanb->lab", features, cores)
    prod, logs = tree_product(mats, acc_dtype)
    return _finish(vector, prod, logs)


def tree_chain(cores, feats, vector, acc_dtype):
    """``tree_sweep`` for a chain of cores of any shapes (a Python list, unrolled)."""
    mats = [_rescale(jnp.einsum("n,anb->ab", f, c), acc_dtype) for c, f in zip(cores, feats,
                                                                               strict=True)]
    while len(mats) > 1:
        nxt = []
        for k in range(0, len(mats) - 1, 2):
            (a, la), (b, lb) = mats[k], mats[k + 1]
            p, lp = _rescale(a @ b, acc_dtype)
            nxt.append((p, la + lb + lp))
        if len(mats) % 2:
            nxt.append(mats[-1])
        mats = nxt
    prod, logs = mats[0]
    return _finish(vector, prod, logs)


# CPU measurements behind ``choose`` (float32, 2 shared cores, min of 9 runs, vmapped
# over the batch; forward / forward+backward ms, scan vs tree): batch 1, L 196, bond 8:
# 0.11/0.45 vs 0.08/0.27; bond 32: 0.56/1.04 vs 0.73/1.45; batch 1, L 1000, bond 8:
# 0.59/1.51 vs 0.21/1.01, bond 32: 13.4/10.8 vs 3.4/7.5; bond 4 at any L and every
# batch >= 4: the scan (the tree does r times the work; at batch 256, bond 32 it is
# 100x slower).
def unstacked_chain(cores, feats, method: str, acc_dtype):
    """``(v, log_scale)`` of a chain whose cores cannot be stacked (``cores`` and
    ``feats`` lists, already in the compute dtype): the log-depth tree for
    ``method="tree"``, else the scan step unrolled site by site."""
    start = jnp.ones((1,), cores[0].dtype)
    if method == "tree":
        return tree_chain(cores, feats, start, acc_dtype)
    carry = (start, jnp.zeros((), acc_dtype))
    for core, f in zip(cores, feats, strict=True):
        carry, _ = feature_step(carry, (core, f))
    return carry


def choose(method: str, n_sites: int, bond: int, batch: int = 1) -> str:
    """Resolve ``method`` (``"auto" | "scan" | "tree"``) to ``"scan"`` or ``"tree"``.

    ``"auto"`` picks ``"tree"`` for one chain (``batch`` 1) of at least
    ``TREE_MIN_SITES`` sites with bond at least ``TREE_MIN_BOND``, where the scan's
    ``L`` dependent small steps cost more than the tree's ``r``-fold batched work;
    otherwise ``"scan"``. Measured on CPU; to be revisited on GPU, where the tree's
    batched matmuls should win more often.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method != "auto":
        return method
    if batch == 1 and n_sites >= TREE_MIN_SITES and bond >= TREE_MIN_BOND:
        return "tree"
    return "scan"


TREE_MIN_SITES = 128
TREE_MIN_BOND = 8
