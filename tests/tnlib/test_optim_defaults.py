"""The optax optimizers reproduce the hand-written ones they replaced.

``network.fit`` / the search fits ran a hand-written Adam (``network._adam``) and the
sweeps a hand-written Nesterov loop (``sweep._update``); both now run optax
``GradientTransformation`` s through ``tnlib._optim.minimize`` and
``tnlib._mps_sweep.descend``. Copies of the old loops, verbatim, are the references.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dense_checks import F64, close, key

from tnlib import _mps_sweep, _optim, network, sweep


def old_adam(loss, cores, n_iter, lr, b1=0.9, b2=0.999, eps=1e-12):
    """``tnlib.network._adam`` before optax (commit 4e5aede)."""
    grad = jax.grad(loss)

    def step(t, carry):
        cs, m, v = carry
        g = tuple(jnp.conj(gi) for gi in grad(cs))  # steepest descent (complex too)
        m = tuple(b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True))
        v = tuple(b2 * vi + (1 - b2) * jnp.abs(gi) ** 2 for vi, gi in zip(v, g, strict=True))
        c1, c2 = 1 - b1 ** (t + 1.0), 1 - b2 ** (t + 1.0)
        cs = tuple(
            c - (lr * (mi / c1) / (jnp.sqrt(vi / c2) + eps)).astype(c.dtype)
            for c, mi, vi in zip(cs, m, v, strict=True)
        )
        return cs, m, v

    zeros = tuple(jnp.zeros_like(c) for c in cores)
    vzeros = tuple(jnp.zeros(c.shape, jnp.finfo(c.dtype).dtype) for c in cores)
    return jax.lax.fori_loop(0, n_iter, step, (cores, zeros, vzeros))[0]


def old_nesterov(grad, B, mask, steps, lr, momentum):
    """The bond-tensor steps of ``tnlib.sweep._update`` / ``sweep_born._update`` before optax."""
    def step(_, carry):  # Nesterov momentum (plain gradient descent when momentum = 0)
        b, v = carry
        v = momentum * v - lr * mask * grad(b + momentum * v)
        return b + v, v

    return jax.lax.fori_loop(0, steps, step, (B, jnp.zeros_like(B)))[0]


@pytest.mark.parametrize("dtype", [F64, jnp.complex128])
def test_default_adam_is_the_old_adam(dtype):
    """The loss of ``network.fit(method="gradient")`` on a ring, 40 steps."""
    ring = ((2, 2, 1, 2), (2, 3, 2, 1), (1, 2, 2, 2), (2, 1, 2, 3))
    dims = network.dims_of(ring)
    x = network.to_dense(network.random(key(1), dims, ring, dtype))
    cores = network.random(key(2), dims, ring, dtype).cores
    spec = network.einsum_spec(ring)

    def loss(cs):
        return jnp.sum(jnp.abs(x - network.contract(cs, spec)) ** 2)

    new = jax.jit(lambda c: _optim.minimize(loss, c, 40, optax.adam(0.01, eps=1e-12)))(cores)
    old = jax.jit(lambda c: old_adam(loss, c, 40, 0.01))(cores)
    for a, b in zip(new, old, strict=True):
        close(a, b, 1e-10)
    assert float(loss(new)) < float(loss(cores))  # it did descend


def test_fit_gradient_default_is_adam_and_takes_an_optax_optimizer():
    ring = ((2, 2, 1, 2), (2, 3, 2, 1), (1, 2, 2, 2), (2, 1, 2, 3))
    x = network.to_dense(network.random(key(3), network.dims_of(ring), ring, F64))
    fit = lambda **kw: network.fit(x, ring, key=key(4), n_iter=30, method="gradient", **kw)  # noqa: E731
    _, rse = fit(learning_rate=0.02)
    _, rse_adam = fit(optimizer=optax.adam(0.02, eps=1e-12))
    close(rse, rse_adam, 1e-12)
    _, rse_sgd = fit(optimizer=optax.sgd(0.05))
    assert np.isfinite(float(rse_sgd)) and float(rse_sgd) != float(rse)
    with pytest.raises(TypeError, match="optimizer must be an optax GradientTransformation"):
        fit(optimizer="adam")


@pytest.mark.parametrize("momentum", [0.0, 0.8])
@pytest.mark.parametrize("dtype", [F64, jnp.complex128])
def test_default_sweep_steps_are_the_old_nesterov(momentum, dtype):
    """A nonlinear descent gradient (cross-entropy-like) with a mask, 6 steps."""
    shape = (3, 2, 2, 3)
    B = jax.random.normal(key(5), shape, F64).astype(dtype)
    target = jax.random.normal(key(6), shape, F64).astype(dtype)
    mask = jnp.ones(shape, F64).at[2].set(0).at[..., 2].set(0)

    def grad(b):
        return jnp.tanh(jnp.abs(b - target)) * (b - target) + 0.1 * b ** 2

    new = jax.jit(lambda b, lr, m: _mps_sweep.descend(grad, b, mask, 6, lr, m))(
        B, 0.3, momentum)
    old = jax.jit(lambda b, lr, m: old_nesterov(grad, b, mask, 6, lr, m))(B, 0.3, momentum)
    close(new, old, 1e-12)
    close(new * (1 - mask), B * (1 - mask), 0)  # masked entries never move


def test_sweep_update_default_matches_old_nesterov_and_takes_an_optimizer():
    """One classifier update, end to end: the default (lr, momentum) path against the same
    update with the old loop swapped in for ``descend``."""
    feats = jax.random.uniform(key(7), (12, 6, 2), F64)
    labels = jnp.arange(12) % 3
    mps = sweep.init(key(8), 6, 3, max_bond=4, init_bond=2, init_std=0.1, dtype=F64)
    kw = dict(direction="right", solver="gd", loss="cross_entropy", lr=0.2, momentum=0.8,
              steps=3)
    new, _, info = sweep.update(mps, sweep.environments(mps, feats, labels), **kw)

    def old_descend(grad, b, mask, steps, lr, momentum, optimizer=None):
        assert optimizer is None
        return old_nesterov(grad, b, mask, steps, lr, momentum)

    sweep._update_jit.clear_cache()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_mps_sweep, "descend", old_descend)
        ref, _, ref_info = sweep.update(mps, sweep.environments(mps, feats, labels), **kw)
    sweep._update_jit.clear_cache()
    close(new.label, ref.label, 1e-10)
    close(new.cores, ref.cores, 1e-10)
    close(info["loss_after"], ref_info["loss_after"], 1e-12)
    # any optax optimizer: here Adam, one more compilation
    adam, _, adam_info = sweep.update(mps, sweep.environments(mps, feats, labels),
                                      optimizer=optax.adam(0.05), **kw)
    assert float(adam_info["loss_after"]) < float(adam_info["loss_before"])
    with pytest.raises(TypeError, match="optimizer must be an optax"):
        sweep.sweep(mps, sweep.environments(mps, feats, labels), optimizer="sgd")
    with pytest.raises(ValueError, match="solver='gd'"):  # the CG solver takes none
        sweep.update(mps, sweep.environments(mps, feats, labels), direction="right",
                     optimizer=optax.adam(0.05))
