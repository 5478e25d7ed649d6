"""muP learning rates of the structured layers as an optax transform.

Every structured layer (``BTTLinear`` and its siblings, ``TTLinear``, ``TuckerConv``,
``CPConv``, ``TTEmbedding``) has ``lr_multipliers()``: its cores' Adam learning-rate
multipliers relative to the dense layer it replaces, as a tree shaped like
``nnx.state(layer, nnx.Param)``. ``layer_lr_multipliers(model)`` assembles them for a
whole model (1 for every other parameter) and ``structured_optimizer`` multiplies the
updates of any optax optimizer by them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

__all__ = ["layer_lr_multipliers", "structured_optimizer"]


def layer_lr_multipliers(model: nnx.Module) -> nnx.State:
    """The muP multiplier of every parameter of ``model``, as a tree shaped like
    ``nnx.state(model, nnx.Param)``: each sub-module's ``lr_multipliers()`` (a tree
    shaped like its own parameters) in place, 1.0 for parameters of modules without
    one. Where modules nest, the outer module's table wins (the model itself may define
    ``lr_multipliers()`` for all its parameters)."""
    owners = [(tuple(path), node) for path, node in nnx.iter_graph(model)
              if isinstance(node, nnx.Module) and callable(getattr(node, "lr_multipliers", None))]
    table = {}
    # innermost first, so a module that defines lr_multipliers for its whole subtree
    # (e.g. ResidualMLP's width-relative muP) overrides its layers' own
    for path, node in sorted(owners, key=lambda o: -len(o[0])):
        for rel, var in nnx.to_flat_state(node.lr_multipliers()):
            table[path + tuple(rel)] = float(var.get_value())
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return nnx.from_flat_state([(p, v.replace(table.get(p, 1.0))) for p, v in flat])


def structured_optimizer(model: nnx.Module,
                         base_optimizer: optax.GradientTransformation
                         ) -> optax.GradientTransformation:
    """``optax.chain(base_optimizer, scale_by_multipliers)``: each update is multiplied
    by its parameter's muP multiplier (``layer_lr_multipliers(model)``).

    The multipliers are read once from ``model``'s structure (static floats); the
    transform accepts updates shaped like ``nnx.state(model, nnx.Param)``, with or
    without the ``Param`` wrappers (``nnx.Optimizer(model, tx, wrt=nnx.Param)`` passes
    them without), or as its pure dict (``nnx.to_pure_dict``).
    """
    pure = nnx.as_pure(layer_lr_multipliers(model))  # State of floats
    as_dict = nnx.to_pure_dict(pure)

    def scale(m, u):
        if isinstance(u, nnx.Variable):
            return u.replace(u.get_value() * jnp.asarray(m, u.dtype))
        return u * jnp.asarray(m, u.dtype)

    def update(updates, state, params=None):
        del params
        mults = pure if isinstance(updates, nnx.State) else as_dict
        return jax.tree.map(scale, mults, updates), state

    return optax.chain(base_optimizer,
                       optax.GradientTransformation(lambda params: optax.EmptyState(), update))
