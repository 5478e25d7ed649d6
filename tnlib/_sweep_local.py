"""The local problem of ``tnlib.sweep``'s two-site update and its data-driven start:
the bond tensor's squared loss as two GEMM-shaped maps and its conjugate-gradient
solve, ITensor's discarded-weight truncation rule, and the host (NumPy) construction
of TNML's start. Private to tnlib; ``tnlib.sweep`` re-exports ``kept_count`` and
``solve_cg`` and the padded-bond helpers
``bucket``, ``needed_bond`` and ``pad``."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tnlib._mps_sweep import local_logits as _local_logits
from tnlib._validate import check_int

__all__ = ["kept_count", "normal_ops", "solve_cg", "rescaled", "compress", "sum_chain",
           "left_orthogonalize", "data_chain", "bucket", "needed_bond", "pad", "loss_value",
           "loss_grad"]


def compress(cores, max_bond, cutoff):
    """Host (NumPy float64) compression of an open chain ``[(r, d_k, r')]``: QR from the
    left, then truncated SVDs from the right (:func:`kept_count`'s rule), leaving
    sites ``1..L-1`` right-orthogonal and the norm on site 0."""
    cores = left_orthogonalize(list(cores), len(cores) - 1)
    for k in range(len(cores) - 1, 0, -1):
        a = cores[k]
        u, s, vh = np.linalg.svd(a.reshape(a.shape[0], -1), full_matrices=False)
        tail = np.cumsum((s**2)[::-1])[::-1] / max(np.sum(s**2), np.finfo(float).tiny)
        keep = max(1, min(max_bond, int(np.sum(tail > cutoff)),
                          int(np.sum(s > s[0] * np.finfo(s.dtype).eps * 4 * s.size))))
        cores[k] = vh[:keep].reshape(keep, *a.shape[1:])
        cores[k - 1] = np.einsum("asb,bc->asc", cores[k - 1], u[:, :keep] * s[:keep])
    return cores


def sum_chain(blocks):
    """The chain of the sum of chains (each ``[(r, d_k, r')]``): block-diagonal cores."""
    out = []
    L = len(blocks[0])
    for k in range(L):
        parts = [b[k] for b in blocks]
        rl = 1 if k == 0 else sum(p.shape[0] for p in parts)
        rr = 1 if k == L - 1 else sum(p.shape[2] for p in parts)
        core = np.zeros((rl, parts[0].shape[1], rr))
        i = j = 0
        for p in parts:
            core[i:i + p.shape[0], :, j:j + p.shape[2]] = p
            i += 0 if k == 0 else p.shape[0]
            j += 0 if k == L - 1 else p.shape[2]
        out.append(core)
    return out


def loss_value(out, labels, kind):
    """The mean cross-entropy or half squared error of outputs ``(N, C)``."""
    if kind == "cross_entropy":
        lse = jax.nn.logsumexp(out, axis=-1)
        return jnp.mean(lse - jnp.take_along_axis(out, labels[:, None], -1)[:, 0])
    onehot = jax.nn.one_hot(labels, out.shape[-1], dtype=out.dtype)
    return 0.5 * jnp.mean(jnp.sum((out - onehot) ** 2, axis=-1))


def loss_grad(out, labels, kind):
    """Derivative of :func:`loss_value` with respect to the outputs ``(N, C)``."""
    onehot = jax.nn.one_hot(labels, out.shape[-1], dtype=out.dtype)
    if kind == "cross_entropy":
        return (jax.nn.softmax(out, axis=-1) - onehot) / out.shape[0]
    return (out - onehot) / out.shape[0]


def kept_count(s, total, cutoff, max_rank, min_rank=1):
    """How many of the singular values ``s`` (descending) a split keeps.

    ITensor's rule (as in TNML): the fewest values whose *discarded weight*
    ``sum_{i >= k} s_i^2 / total`` is at most ``cutoff``, raised to ``min_rank`` and
    capped at ``max_rank``, and never a value that is numerically zero
    (``s_i <= s_0 * eps * len(s)``, NumPy's ``matrix_rank`` tolerance), nor fewer than
    one. ``total`` is the squared norm of the whole matrix (values past ``s`` included).
    All arguments may be traced."""
    w = s**2 / jnp.where(total > 0, total, 1)
    # tail[k]: the weight discarded when k values are kept (k = 0 .. len(s) - 1), summed
    # from the smallest so that tiny weights are not lost to rounding
    tail = jnp.cumsum(w[::-1])[::-1]
    k = jnp.sum(tail > cutoff)
    k = jnp.minimum(jnp.maximum(k, min_rank), max_rank)
    tol = s[0] * jnp.finfo(s.dtype).eps * 4 * s.shape[0]
    return jnp.maximum(jnp.minimum(k, jnp.sum(s > tol)), 1)


def normal_ops(lf, rf, shape):
    """The local least-squares problem of a bond tensor as two GEMM-shaped maps:
    ``forward(b) (N, C)`` the outputs and ``adjoint(g (N, C)) -> (D, d, d, C, D)``
    ``sum_n lf_n (x) g_n (x) rf_n`` (so the normal matrix is ``adjoint o forward``)."""
    D, d, _, C, _ = shape

    def forward(b):
        return _local_logits(b, lf, rf)

    def adjoint(g):
        w = (g[:, :, None] * rf[:, None, :]).reshape(g.shape[0], -1)  # (N, C * d * D)
        out = (lf.T @ w).reshape(D, d, C, d, D)
        return jnp.transpose(out, (0, 1, 3, 2, 4))

    return forward, adjoint


def solve_cg(B, lf, rf, labels, passes: int, l2=0.0, mask=None, out=None):
    """Conjugate gradient on the bond's squared loss, started from ``B`` ``(D, d, d, C,
    D)`` (padded bonds; ``lf`` ``(N, D d)`` and ``rf`` ``(N, d D)`` from the environments).

    Minimizes ``J(B) = sum_n ||f_n(B) - y_n||^2 + l2 ||B||^2`` (TNML's cost: a sum
    over the samples, ``y_n`` one-hot) where ``f_n(B) = <lf_n (x) rf_n, B>`` per class.
    The normal equations ``(G + l2 I) B = sum_n y_n (x) lf_n (x) rf_n`` (``G`` the
    samples' Gram operator, the same for every class) are solved by ``passes``
    (static) CG iterations; each costs one :func:`normal_ops` forward and adjoint
    (two GEMMs over the samples). ``mask`` (broadcastable to ``B``) confines the
    solution to the kept bonds. Exact in at most ``d^2 r_l r_r`` iterations in exact
    arithmetic; stops moving once the residual is zero. ``out``: the outputs
    ``f(B)`` when the caller has them (saves one forward product).

    Returns ``(B, residual_norm, cost)``: ``cost`` is ``J`` at the returned ``B``,
    tracked without another pass over the samples (each CG step lowers ``J`` by
    ``alpha |r|^2``).
    """
    forward, adjoint = normal_ops(lf, rf, B.shape)
    mask = jnp.ones((), B.dtype) if mask is None else mask.astype(B.dtype)
    onehot = jax.nn.one_hot(labels, B.shape[3], dtype=B.dtype)
    out = forward(B) if out is None else out

    def apply(p):
        return mask * (adjoint(forward(p)) + l2 * p)

    r = mask * (adjoint(onehot - out) - l2 * B)
    rs = jnp.vdot(r, r)
    cost = jnp.sum((out - onehot) ** 2) + l2 * jnp.vdot(B, B)

    def body(_, carry):
        x, r, p, rs, cost = carry
        ap = apply(p)
        pap = jnp.vdot(p, ap)
        alpha = jnp.where(pap > 0, rs / jnp.where(pap > 0, pap, 1), 0)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = jnp.vdot(r, r)
        beta = jnp.where(rs > 0, rs_new / jnp.where(rs > 0, rs, 1), 0)
        return x, r, r + beta * p, rs_new, cost - alpha * rs

    x, r, _, rs, cost = jax.lax.fori_loop(0, passes, body, (B, r, r, rs, cost))
    return x, jnp.sqrt(rs), cost


def rescaled(B, out, labels, l2):
    """``(a B, a out)`` with ``a`` minimizing the CG cost ``sum_n ||a f_n(B) - y_n||^2 +
    l2 a^2 |B|^2`` given the outputs ``out = f(B)`` (1 when ``B`` is zero): an exact
    line search along ``B`` that makes the start of the solve independent of the
    chain's overall scale (TNML rescales ``B`` to unit norm instead; this start is
    never worse than ``B`` itself)."""
    num = jnp.sum(out * jax.nn.one_hot(labels, out.shape[-1], dtype=out.dtype))
    den = jnp.sum(out**2) + l2 * jnp.sum(B**2)
    a = jnp.where(den > 0, num / jnp.where(den > 0, den, 1), 1)
    return a * B, a * out


def left_orthogonalize(cores, stop: int):
    """Exact QRs from the left over sites ``0..stop-1`` (host, in place): those sites
    become left-orthogonal and the norm moves to site ``stop``."""
    for k in range(stop):
        a = cores[k]
        q, r = np.linalg.qr(a.reshape(-1, a.shape[-1]))
        cores[k] = q.reshape(a.shape[0], a.shape[1], q.shape[1])
        cores[k + 1] = np.einsum("ab,bsc->asc", r, cores[k + 1])
    return cores


def data_chain(feats, y, n_classes, init_bond, per_class, center, label_weight, rng):
    """The chain of ``tnlib.sweep.init_from_data`` (float64 NumPy cores, the label index
    merged into site ``center``'s, which holds the norm)."""
    L, d = feats.shape[1:]
    per_label = []
    for c in range(n_classes):
        idx = np.flatnonzero(y == c)
        if idx.size == 0:
            continue
        pick = feats[rng.choice(idx, min(per_class, idx.size), replace=False)]  # (K, L, d)
        K = pick.shape[0]
        chain = []
        for k in range(L):
            core = np.zeros((1 if k == 0 else K, d, 1 if k == L - 1 else K))
            for m in range(K):
                core[0 if k == 0 else m, :, 0 if k == L - 1 else m] = pick[m, k]
            chain.append(core)
        chain = compress(chain, init_bond, 1e-10)
        lab = np.zeros((chain[center].shape[0], d, n_classes, chain[center].shape[2]))
        lab[:, :, c] = label_weight * chain[center]
        chain[center] = lab.reshape(lab.shape[0], d * n_classes, -1)
        per_label.append(chain)
    return left_orthogonalize(compress(sum_chain(per_label), init_bond, 1e-8), center)


def bucket(n: int, cap: int) -> int:
    """The padded bond for ``n`` kept: the next power of two, at most ``cap``."""
    return min(cap, 1 << max(0, int(n) - 1).bit_length())


def needed_bond(mps, direction: str, max_rank: int) -> int:
    """The largest bond the next update in ``direction`` can keep (host; reads
    ``ranks`` and ``center``): the rank bound of its split, at most ``max_rank``."""
    ranks = np.asarray(mps.ranks)
    c, d, C = int(mps.center), mps.local_dim, mps.n_classes
    p = c if direction == "right" else c - 1
    r_l, r_r = int(ranks[p]), int(ranks[p + 2])
    rows, cols = (r_l * d, d * C * r_r) if direction == "right" else (r_l * d * C, d * r_r)
    return min(max_rank, rows, cols)


def pad(mps, max_bond: int):
    """The same chain padded to a larger ``max_bond`` (zeros; host-side shapes)."""
    D = mps.max_bond
    check_int(max_bond, "max_bond", D)
    e = max_bond - D
    if e == 0:
        return mps
    cores = jnp.pad(mps.cores, ((0, 0), (0, e), (0, 0), (0, e)))
    label = jnp.pad(mps.label, ((0, e), (0, 0), (0, 0), (0, e)))
    return dataclasses.replace(mps, cores=cores, label=label)
