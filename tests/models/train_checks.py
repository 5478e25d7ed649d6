"""Shared helpers of the layer tests: training loops (a Linen model wrapping a layer by
``flax.nnx.bridge.to_linen``, or an NNX model under ``nnx.jit``) on a small
classification set, and the flat view of a muP multiplier tree."""

import jax
import optax


def linen_classifier_losses(model, x, y, *, steps: int, lr: float, seed: int = 0):
    """Initialize ``model`` on ``x``, take ``steps`` jitted Adam steps on the mean
    cross-entropy against integer labels ``y``, and return the loss of every step."""
    params = model.init(jax.random.PRNGKey(seed), x)["params"]
    tx = optax.adam(lr)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(steps):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    return losses


def nnx_classifier_losses(net, x, y, *, steps: int, tx):
    """Train the NNX module ``net`` in place with the optax transform ``tx`` for
    ``steps`` ``nnx.jit`` steps on the mean cross-entropy; return every step's loss."""
    from flax import nnx

    opt = nnx.Optimizer(net, tx, wrt=nnx.Param)

    @nnx.jit
    def step(net, opt, x, y):
        loss_fn = lambda n: optax.softmax_cross_entropy_with_integer_labels(n(x), y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(net)
        opt.update(net, grads)
        return loss

    return [float(step(net, opt, x, y)) for _ in range(steps)]


def flat_multipliers(tree) -> dict:
    """``{path: float}`` of a multiplier tree shaped like ``nnx.state(model, nnx.Param)``
    (``lr_multipliers()`` / ``layer_lr_multipliers``), paths as ``nnx.to_flat_state``."""
    from flax import nnx

    return {path: var.get_value() for path, var in nnx.to_flat_state(tree)}
