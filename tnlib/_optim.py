"""Optimizer loops shared by the fits (private to tnlib, public names).

``minimize`` runs a fixed number of steps of an optax ``GradientTransformation`` in
``lax.fori_loop`` (jit-safe, compile time independent of the step count).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["minimize"]


def minimize(loss, params, n_iter: int, optimizer: optax.GradientTransformation):
    """``n_iter`` steps of ``optimizer`` on the real scalar ``loss(params)``.

    Complex parameters step along ``conj(grad)``, the direction of steepest descent
    (JAX's gradient of a real function of complex inputs is its conjugate). Returns the
    final parameters.
    """
    grad = jax.grad(loss)

    def step(_, carry):
        p, state = carry
        g = jax.tree.map(jnp.conj, grad(p))
        updates, state = optimizer.update(g, state, p)
        return optax.apply_updates(p, updates), state

    return jax.lax.fori_loop(0, n_iter, step, (params, optimizer.init(params)))[0]
