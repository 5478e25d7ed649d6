"""training.make_optimizer / make_schedule: TensorNet's SGD (momentum, weight decay on
kernels only) and its per-epoch log-spaced learning rate, against hand computations."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from tnlib.experiments import training


def cfg(**kw):
    base = dict(lr=1e-2, warmup_steps=0, schedule="constant", end_lr_factor=0.0,
                weight_decay=0.0, grad_clip_norm=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_logspace_epochs_schedule_steps_per_epoch_then_holds_the_last_rate():
    tc = cfg(schedule="logspace_epochs", end_lr_factor=1e-3, decay_epochs=4)
    sched = training.make_schedule(tc, total_steps=60, steps_per_epoch=10)
    want = np.logspace(-2, -5, 4)
    for step, epoch in ((0, 0), (9, 0), (10, 1), (25, 2), (39, 3), (40, 3), (59, 3)):
        np.testing.assert_allclose(float(sched(jnp.asarray(step))), want[epoch], rtol=1e-6)
    with pytest.raises(ValueError, match="needs train.decay_epochs >= 1"):
        training.make_schedule(cfg(schedule="logspace_epochs"), 60, 10)
    with pytest.raises(ValueError, match="needs train.decay_epochs"):
        training.make_schedule(tc, 60)  # no steps per epoch


def test_sgd_momentum_and_weight_decay_on_kernels_only():
    tc = cfg(optimizer="sgd", momentum=0.9, weight_decay=5e-4)
    opt = training.make_optimizer(tc, optax.constant_schedule(0.1))
    params = {"w": jnp.asarray([[1.0, -2.0], [3.0, 0.5]]), "b": jnp.asarray([1.0, -1.0])}
    g1 = {"w": jnp.asarray([[0.1, 0.2], [-0.3, 0.4]]), "b": jnp.asarray([0.5, 0.25])}
    g2 = {"w": jnp.asarray([[-0.2, 0.1], [0.0, 0.3]]), "b": jnp.asarray([-0.5, 1.0])}
    state = opt.init(params)
    u1, state = opt.update(g1, state, params)
    p1 = optax.apply_updates(params, u1)
    u2, _ = opt.update(g2, state, p1)
    # hand: d = g + wd * w on kernels (g on biases); t = d + 0.9 t_prev; update = -lr t
    w0 = np.asarray(params["w"])
    t1w = np.asarray(g1["w"]) + 5e-4 * w0
    t1b = np.asarray(g1["b"])
    np.testing.assert_allclose(u1["w"], -0.1 * t1w, rtol=1e-6)
    np.testing.assert_allclose(u1["b"], -0.1 * t1b, rtol=1e-6)
    w1 = w0 - 0.1 * t1w
    t2w = np.asarray(g2["w"]) + 5e-4 * w1 + 0.9 * t1w
    t2b = np.asarray(g2["b"]) + 0.9 * t1b
    np.testing.assert_allclose(u2["w"], -0.1 * t2w, rtol=1e-6)
    np.testing.assert_allclose(u2["b"], -0.1 * t2b, rtol=1e-6)


def test_default_is_adam_and_a_bad_optimizer_is_an_error():
    params = {"w": jnp.ones((2, 2))}
    g = {"w": jnp.full((2, 2), 0.3)}
    opt = training.make_optimizer(cfg(), optax.constant_schedule(0.1))
    got, _ = opt.update(g, opt.init(params), params)
    want, _ = optax.adam(0.1).update(g, optax.adam(0.1).init(params), params)
    np.testing.assert_allclose(got["w"], want["w"])
    with pytest.raises(ValueError, match="train.optimizer='rmsprop': expected 'adam' or 'sgd'"):
        training.make_optimizer(cfg(optimizer="rmsprop"), optax.constant_schedule(0.1))
