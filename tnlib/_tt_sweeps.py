"""Private kernels of ``tnlib.tt``: the transfer-matrix sweeps behind ``inner`` and
``log_norm``, and the per-site product behind ``matmul``, in the forms that measured
fastest on XLA:CPU (``benchmarks/peers_tt.py``).

* ``log_norm`` sweeps short chains with a Python loop (one transfer step and one
  rescaling per site, on the cores as given) and long uniform chains with
  ``lax.scan`` over the stacked cores (compile time independent of the length). On
  the CPU a scan iteration costs a few microseconds of loop overhead, and stacking
  copies every core, which at 8-32 sites is a large part of the whole sweep.
* ``matmul`` forms each output core ``(a c, m, b d)`` with one elementwise
  multiply-add fusion over the contracted mode ``n`` when ``n`` is small: the output
  is written once, in its final order. A GEMM followed by the transpose into that
  order moves the (large) output twice: 2-4x slower at 8-64 sites and mode size 2-4.
  From mode size 16 on the GEMM wins again, as the fusion does ``n`` passes of
  broadcast multiply-adds.

Nothing here validates arguments (``tnlib.tt`` does).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnlib import _numerics

SCAN_MIN_SITES = 64  # log_norm: uniform chains of at least this many sites use lax.scan
MATMUL_FUSED_MAX = 8  # matmul: contracted mode sizes up to this use the multiply-add fusion
DENSE_END_MAX = 8  # sweeps: at most this many sites at each end are contracted densely


def compute_dtype(dtype):
    """Sweeps compute in at least float32: bfloat16 / float16 cores are stored as
    given but accumulated in float32, as accelerator matmuls do."""
    return jnp.promote_types(dtype, jnp.float32)


def acc_dtype(dtype):
    """Real dtype of the running log-scale: at least float32 (a bfloat16 sum over
    hundreds of sites would lose the scale)."""
    return jnp.promote_types(jnp.finfo(dtype).dtype, jnp.float32)


def transfer(env, x, y):
    """One step of ``<x|y>``: ``env (ra, rb)`` through conj(x) ``(ra,n,ra')`` and y."""
    t = jnp.einsum("ab,bnd->and", env, y)
    return jnp.einsum("anc,and->cd", jnp.conj(x), t)


def split(dims, ranks) -> tuple[int, int]:
    """``(kl, kr)``: how many sites the dense ends of a sweep take, left and right.

    The first ``kl`` sites are contracted into their dense unfolding ``(N, r)``
    (``N = prod`` of their mode sizes) as long as it is no larger than the ``(r, r)``
    environment it replaces, and likewise the last ``kr`` sites into ``(r, M)``: one
    plain GEMM per site there, where a transfer step is two GEMMs and a transpose.
    ``1 <= kl <= DENSE_END_MAX``, ``kr <= DENSE_END_MAX``, ``kl + kr <= L``.
    """
    L = len(dims)
    kl, size = 1, dims[0]
    while kl < min(L, DENSE_END_MAX) and size * dims[kl] <= ranks[kl + 1]:
        size *= dims[kl]
        kl += 1
    kr, size = 0, 1
    while kl + kr < L and kr < DENSE_END_MAX and (
            kr == 0 or size * dims[L - kr - 1] <= ranks[L - kr - 1]):
        size *= dims[L - kr - 1]
        kr += 1
    return kl, kr


def _left(cores):
    """The dense ``(N, r)`` unfolding of the leading ``cores`` (boundary rank 1)."""
    p = cores[0].reshape(-1, cores[0].shape[-1])
    for c in cores[1:]:
        p = (p @ c.reshape(c.shape[0], -1)).reshape(-1, c.shape[-1])
    return p


def _right(cores):
    """The dense ``(r, M)`` unfolding of the trailing ``cores`` (boundary rank 1)."""
    q = cores[-1].reshape(cores[-1].shape[0], -1)
    for c in cores[-2::-1]:
        q = (c.reshape(-1, c.shape[-1]) @ q).reshape(c.shape[0], -1)
    return q


def _close(env, qa, qb):
    """``sum env[a, b] conj(qa[a, m]) qb[b, m]``, or ``env[0, 0]`` without a right end."""
    if qa is None:
        return env[0, 0]
    return jnp.sum(jnp.conj(qa) * (env @ qb))


def inner(xs, ys):
    """``sum conj(x) * y`` of two chains of equal mode sizes: dense ends, transfer
    steps through the middle (no rescaling: the caller gets the plain value)."""
    dims = tuple(c.shape[-2] for c in xs)
    ranks = (1,) + tuple(max(a.shape[-1], b.shape[-1]) for a, b in zip(xs, ys, strict=True))
    kl, kr = split(dims, ranks)
    L = len(xs)
    env = jnp.conj(_left(xs[:kl])).T @ _left(ys[:kl])
    for x, y in zip(xs[kl:L - kr], ys[kl:L - kr], strict=True):
        env = transfer(env, x, y)
    if kr == 0:
        return _close(env, None, None)
    return _close(env, _right(xs[L - kr:]), _right(ys[L - kr:]))


def _norm_step(carry, core):
    """One site of ``log_norm``: ``(env, s, acc)`` through ``core`` and its conjugate.

    The exact environment is ``env * exp(acc)``, and ``s`` is the largest |entry| of
    ``env``, not yet divided out: the step divides the conjugated core by it instead,
    where XLA folds the division into the copy it makes of that core anyway (one
    elementwise pass over the environment fewer per site). ``s`` is a constant to
    autodiff: the result does not depend on it, so gradients stay exact and the
    backward pass skips the max.
    """
    env, s, acc = carry
    t = jnp.einsum("ab,bnd->and", env, core)
    env = jnp.einsum("anc,and->cd", jnp.conj(core) / s.astype(core.dtype), t)
    return _scaled(env, acc + jnp.log(s).astype(acc.dtype)), None


def _scaled(env, acc):
    """``(env, s, acc)`` with ``s`` the largest |entry| of ``env`` (1 if it is zero)."""
    s = jax.lax.stop_gradient(jnp.max(jnp.abs(env)))
    return env, jnp.where(s > 0, s, 1).astype(s.dtype), acc


def log_norm(cores, stacked):
    """``log`` of the Frobenius norm of the chain ``cores`` (``(r, n, r')`` each).

    ``stacked`` is ``tt.stack`` of the chain (None when it is not uniform): chains of
    at least ``SCAN_MIN_SITES`` sites with one are swept by ``lax.scan`` over it.
    Shorter ones are swept site by site, with dense ends (``split``: at most
    ``DENSE_END_MAX`` sites each, unscaled); the environment between them is rescaled
    at every site, so the result is finite for any length. Computed in at least
    float32.
    """
    dt = compute_dtype(jnp.result_type(*cores))
    real = acc_dtype(dt)
    acc = jnp.zeros((), real)
    if stacked is not None and len(cores) >= SCAN_MIN_SITES:
        r = stacked.shape[-1]
        env0 = jnp.zeros((r, r), dt).at[0, 0].set(1)
        one = jnp.ones((), jnp.finfo(dt).dtype)
        (env, _, acc), _ = jax.lax.scan(_norm_step, (env0, one, acc), stacked.astype(dt))
        value = env[0, 0]  # the last scale is not divided out: env[0, 0] is exact
    else:
        cores = [c.astype(dt) for c in cores]
        L = len(cores)
        kl, kr = split(tuple(c.shape[-2] for c in cores), (1,) + tuple(c.shape[-1] for c in cores))
        p = _left(cores[:kl])
        carry = _scaled(jnp.conj(p).T @ p, acc)
        for core in cores[kl:L - kr]:
            carry, _ = _norm_step(carry, core)
        env, s, acc = carry
        q = _right(cores[L - kr:]) if kr else None
        value = _close(env, q, q)
    # -inf for the zero tensor, with a zero (not NaN) derivative
    return 0.5 * (acc + _numerics.safe_log(jnp.abs(jnp.real(value))))


def matmul_matrices_core(x, y):
    """One site of a TT-matrix times a TT-matrix: ``x (a, m, k, b)`` and ``y (c, k, n, e)``
    give ``(a c, m, n, b e)``, in the dtype ``jnp.result_type(x, y)``.

    For ``k <= MATMUL_FUSED_MAX`` the sum over ``k`` is unrolled into broadcast
    multiply-adds (computed in at least float32) that XLA fuses into one loop writing the
    output in order (5x faster than the GEMM and transpose at 12 sites, mode 2, bonds 16
    and 4, on one CPU thread); larger ``k`` is one GEMM then one transpose.
    """
    a, m, k, b = x.shape
    c, _, n, e = y.shape
    if k <= MATMUL_FUSED_MAX:
        dt = jnp.result_type(x, y)
        ct = compute_dtype(dt)
        x, y = x.astype(ct), y.astype(ct)
        z = x[:, None, :, None, 0, :, None] * y[None, :, None, 0, :, None, :]
        for j in range(1, k):
            z = z + x[:, None, :, None, j, :, None] * y[None, :, None, j, :, None, :]
        z = z.astype(dt)
    else:
        z = jnp.einsum("amkb,ckne->acmnbe", x, y)
    return z.reshape(a * c, m, n, b * e)


def matmul_core(w, x):
    """One site of a TT-matrix times a TT: ``w (a, m, n, b)`` and ``x (c, n, d)`` give
    ``(a c, m, b d)``, in the dtype ``jnp.result_type(w, x)``: ``matmul_matrices_core``
    with ``x`` as a one-column TT-matrix core (bitwise the same result and speed as the
    separate kernel it replaces, measured in alternation)."""
    a, m, _, b = w.shape
    c, _, d = x.shape
    return matmul_matrices_core(w, x[:, :, None, :]).reshape(a * c, m, b * d)
