"""DLRTLinear: the layer equals the dense map its factors stand for, from_linear keeps a
low-rank nnx.Linear's outputs, a model holding the layer in a list trains with
tnlib.dlrt.step through nnx.split / merge under jit (the rank adapts, the loss falls),
and the Linen bridge runs it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tnlib import dlrt
from tnlib.models import DLRTLinear


def test_layer_is_the_dense_map_of_its_factors():
    layer = DLRTLinear(12, 10, rank=3, max_rank=5, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 2, 12)), jnp.float32)
    w = np.asarray(dlrt.to_dense(layer.w.get_value()))
    np.testing.assert_allclose(layer(x), np.asarray(x) @ w.T, atol=1e-5)
    assert layer.rank == 3 and layer.num_params() == 3 * 22 + 10
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 12\)"):
        layer(jnp.ones((3, 11)))
    with pytest.raises(ValueError, match="max_rank=6 is too large"):
        DLRTLinear(12, 10, rank=3, max_rank=6, rngs=nnx.Rngs(0))


def test_from_linear_keeps_a_low_rank_linear():
    lin = nnx.Linear(16, 12, rngs=nnx.Rngs(1))
    g = np.random.default_rng(1)
    lin.kernel[...] = jnp.asarray(g.standard_normal((16, 2)) @ g.standard_normal((2, 12)),
                                  jnp.float32)
    layer = DLRTLinear.from_linear(lin, max_rank=4, rtol=1e-6, rngs=nnx.Rngs(0))
    assert layer.rank == 2
    x = jnp.asarray(g.standard_normal((5, 16)), jnp.float32)
    np.testing.assert_allclose(layer(x), lin(x), atol=1e-5 * float(jnp.abs(lin(x)).max()))
    with pytest.raises(TypeError, match="linear must be an nnx.Linear"):
        DLRTLinear.from_linear(layer, max_rank=4, rngs=nnx.Rngs(0))


class Net(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.List([DLRTLinear(20, 16, rank=6, max_rank=8, rngs=rngs),
                                DLRTLinear(16, 16, rank=6, max_rank=8, rngs=rngs)])
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        for layer in self.hidden:
            x = jax.nn.relu(layer(x))
        return self.out(x)


def test_a_model_trains_with_the_integrator_and_ranks_adapt():
    g = np.random.default_rng(2)
    x = jnp.asarray(g.standard_normal((64, 20)), jnp.float32)
    y = jnp.argmax(x @ jnp.asarray(g.standard_normal((20, 3)), jnp.float32), -1)
    model = Net(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(1e-2)
    state = dlrt.init(params, opt)

    def loss(p):
        logits = nnx.merge(graphdef, p, rest)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    step = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=0.5, min_rank=2))
    first = float(loss(params))
    for _ in range(100):
        params, state, info = step(params, state)
    assert float(loss(params)) < 0.7 * first
    nnx.update(model, params)
    ranks = [layer.rank for layer in model.hidden]
    assert list(np.asarray(info["ranks"])) == ranks and any(r != 6 for r in ranks), ranks
    np.testing.assert_allclose(model(x), nnx.merge(graphdef, params, rest)(x), atol=1e-6)


def test_linen_bridge():
    layer = nnx.bridge.to_linen(DLRTLinear, 12, 10, rank=2, max_rank=4)
    x = jnp.ones((3, 12))
    variables = layer.init(jax.random.PRNGKey(0), x)
    assert layer.apply(variables, x).shape == (3, 10)


def test_builds_from_the_sizes_alone_and_from_a_fraction():
    layer = DLRTLinear(64, 32, rngs=nnx.Rngs(0))  # rank 0.5: r (64 + 32) <= 1024
    assert layer.rank == 10 and layer.w.get_value().max_rank == 10
    assert DLRTLinear(64, 32, rank=0.25, rngs=nnx.Rngs(0)).rank == 5
    assert DLRTLinear(64, 32, rank=1.0, rngs=nnx.Rngs(0)).rank == 16  # capped at 32 // 2
    with pytest.raises(ValueError, match="rank 17 is larger than 16"):
        DLRTLinear(64, 32, rank=17, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rank must be an int >= 1 or a float"):
        DLRTLinear(64, 32, rank=0, rngs=nnx.Rngs(0))


def test_conv_layer_is_the_convolution_of_its_dense_kernel():
    from tnlib.models import DLRTConv

    layer = DLRTConv(3, 8, (3, 3), rank=3, max_rank=4, rngs=nnx.Rngs(0))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 6, 3)), jnp.float32)
    want = jax.lax.conv_general_dilated(x, layer.to_dense(), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(layer(x), want, atol=1e-5)
    assert layer.rank == 3 and layer.num_params() == 3 * (8 + 27) + 8
    # a planted rank-2 kernel comes back exactly
    g = np.random.default_rng(1)
    kernel = (g.standard_normal((27, 2)) @ g.standard_normal((2, 8))).reshape(3, 3, 3, 8)
    conv = DLRTConv.from_dense(kernel, np.zeros(8), max_rank=4, rtol=1e-6, rngs=nnx.Rngs(0))
    assert conv.rank == 2
    np.testing.assert_allclose(conv.to_dense(), kernel, atol=1e-5)


def test_a_cnn_with_dlrt_convs_trains():
    from tnlib.models import DLRTConv

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = DLRTConv(1, 8, (3, 3), rank=4, max_rank=4, rngs=rngs)
            self.out = nnx.Linear(8 * 6 * 6, 2, rngs=rngs)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1))

    g = np.random.default_rng(3)
    x = jnp.asarray(g.standard_normal((32, 6, 6, 1)), jnp.float32)
    y = (x[:, :3].sum((1, 2, 3)) > 0).astype(jnp.int32)
    model = CNN(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(1e-2)
    state = dlrt.init(params, opt)
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        nnx.merge(graphdef, p, rest)(x), y).mean()
    step = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=0.1, min_rank=1))
    first = float(loss(params))
    for _ in range(60):
        params, state, info = step(params, state)
    assert float(loss(params)) < 0.5 * first
