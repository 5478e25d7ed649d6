"""LoRA, LoTR and FLoRA adapters on frozen dense weights: equal to the base at init,
delta equals its dense formula, parameter counts, only adapter parameters train (through
nnx.jit and through the Linen bridge), bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from sklearn.datasets import load_digits
from train_checks import linen_classifier_losses, nnx_classifier_losses

from tnlib.models.adapters import FLoRA, Frozen, LoRA, LoTR

F64 = jnp.float64
DIMS = ("NHWC", "HWIO", "NHWC")


def _weights(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype) / np.sqrt(shape[-2])


def _adapters():
    """One of each adapter on float64 frozen weights (dense 6 -> 4, a stack of 3, a
    3x3 conv 3 -> 5)."""
    rngs = nnx.Rngs(0)
    lora = LoRA(_weights(6, 4), _weights(1, 4, seed=1)[0], rank=2, alpha=4.0,
                param_dtype=F64, rngs=rngs)
    lotr = LoTR(_weights(3, 6, 4, seed=2), _weights(3, 1, 4, seed=3)[:, 0], rank=2,
                param_dtype=F64, rngs=rngs)
    flora_conv = FLoRA(_weights(3, 3, 3, 5, seed=4), _weights(1, 5, seed=5)[0],
                       rank=(2, 3, 2, 3), scale=0.5, strides=(2, 1), padding="SAME",
                       param_dtype=F64, rngs=rngs)
    flora_dense = FLoRA(_weights(6, 4, seed=6), rank=3, param_dtype=F64, rngs=rngs)
    return lora, lotr, flora_conv, flora_dense


def _conv(x, kernel, strides):
    return jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(kernel), strides, "SAME",
                                        dimension_numbers=DIMS)


def _randomize(module, seed):
    """Give every nnx.Param of ``module`` Gaussian entries (the zero factors included)."""
    rng = np.random.default_rng(seed)
    nnx.update(module, jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)),
                                    nnx.state(module, nnx.Param)))


def test_adapters_equal_the_base_at_init_and_their_delta_formula():
    lora, lotr, flora_conv, flora_dense = _adapters()
    x = np.random.default_rng(7).normal(size=(2, 3, 6))
    img = np.random.default_rng(8).normal(size=(2, 5, 5, 3))
    k, b = np.asarray(lora.kernel[...]), np.asarray(lora.bias[...])
    kc, bc = np.asarray(flora_conv.kernel[...]), np.asarray(flora_conv.bias[...])
    kl, bl = np.asarray(lotr.kernel[...]), np.asarray(lotr.bias[...])
    kd = np.asarray(flora_dense.kernel[...])
    # at init every delta is exactly zero and each adapter is its base layer
    for m in (lora, lotr, flora_conv, flora_dense):
        assert not np.any(np.asarray(m.delta()))
    # the base layer computed by XLA too: numpy's matmul may sum in another order (1 ulp)
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(lora(x), xj @ k + b)
    np.testing.assert_array_equal(lotr(x, 1), xj @ kl[1] + bl[1])
    np.testing.assert_array_equal(flora_dense(x), xj @ kd)
    np.testing.assert_allclose(flora_conv(img), _conv(img, kc, (2, 1)) + bc, rtol=1e-13)
    # with every factor random, delta is the dense formula and __call__ uses W + delta
    for i, m in enumerate((lora, lotr, flora_conv, flora_dense)):
        _randomize(m, i)
    a, bb = np.asarray(lora.lora_a[...]), np.asarray(lora.lora_b[...])
    np.testing.assert_allclose(lora.delta(), (4.0 / 2) * a @ bb, rtol=1e-12, atol=1e-13)
    u, g, v = (np.asarray(p[...]) for p in (lotr.u, lotr.cores, lotr.v))
    d_lotr = np.einsum("ia,lab,ob->lio", u, g, v)  # alpha = rank: scale 1
    np.testing.assert_allclose(lotr.delta(), d_lotr, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lotr.delta(2), d_lotr[2], rtol=1e-12, atol=1e-13)
    core, *fs = [np.asarray(p[...]) for p in (flora_conv.core, *flora_conv.factors)]
    d_conv = 0.5 * np.einsum("abcd,ha,wb,ic,od->hwio", core, *fs)
    np.testing.assert_allclose(flora_conv.delta(), d_conv, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(flora_conv.merged_kernel(), kc + d_conv, rtol=1e-12, atol=1e-13)
    core, f1, f2 = (np.asarray(p[...]) for p in (flora_dense.core, *flora_dense.factors))
    np.testing.assert_allclose(flora_dense.delta(), f1 @ core @ f2.T, rtol=1e-12, atol=1e-13)
    call = nnx.jit(lambda m, x: m(x))
    for y in (lora(x), call(lora, x)):
        np.testing.assert_allclose(y, x @ (k + (4.0 / 2) * a @ bb) + b, rtol=1e-12, atol=1e-13)
    for y in (flora_dense(x), call(flora_dense, x)):
        np.testing.assert_allclose(y, x @ (kd + f1 @ core @ f2.T), rtol=1e-12, atol=1e-13)
    for y in (flora_conv(img), call(flora_conv, img)):
        np.testing.assert_allclose(y, _conv(img, kc + d_conv, (2, 1)) + bc, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(flora_conv(img[0]), flora_conv(img)[0], rtol=1e-13)
    # LoTR: a concrete or traced layer index (as in a scan over blocks)
    traced = nnx.jit(lambda m, x, layer: m(x, layer))
    for layer in range(3):
        ref = x @ (kl[layer] + d_lotr[layer]) + bl[layer]
        np.testing.assert_allclose(lotr(x, layer), ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(traced(lotr, x, jnp.int32(layer)), ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(lotr.merged_kernel(layer), kl[layer] + d_lotr[layer],
                                   rtol=1e-12, atol=1e-13)


def test_from_layers_and_parameter_counts_by_hand():
    """Shapes only (nnx.eval_shape): nothing is computed."""
    def shaped(make):
        return nnx.eval_shape(lambda: make(nnx.Rngs(0)))

    lora = shaped(lambda r: LoRA.from_linear(nnx.Linear(6, 4, rngs=r), rank=3, rngs=r))
    assert lora.num_params() == 3 * 6 + 3 * 4 and lora.scale == 1.0
    lotr = shaped(lambda r: LoTR.from_linears(
        [nnx.Linear(6, 4, use_bias=False, rngs=r) for _ in range(5)], rank=2, rngs=r))
    assert lotr.kernel.shape == (5, 6, 4) and lotr.bias is None
    assert lotr.num_params() == 2 * 6 + 2 * 4 + 5 * 2 * 2  # vs LoRA on each: 5 * 20
    flora = shaped(lambda r: FLoRA.from_conv(nnx.Conv(3, 8, (3, 3), strides=2, rngs=r),
                                             rank=2, rngs=r))
    assert flora.strides == (2, 2) and flora.ranks == (2, 2, 2, 2)
    assert flora.num_params() == 2**4 + 2 * (3 + 3 + 3 + 8)
    assert shaped(lambda r: FLoRA.from_linear(nnx.Linear(6, 4, rngs=r), rank=9,
                                              rngs=r)).ranks == (6, 4)  # capped
    for m in (lora, lotr, flora):
        params = sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
        assert params == m.num_params()
        assert jax.tree.leaves(nnx.state(m, Frozen))  # the base weights are there, frozen


class _Net(nnx.Module):
    """A frozen random conv -> 2 dense blocks -> head, every layer adapted."""

    def __init__(self, rngs):
        g = np.random.default_rng(0)
        w = lambda fan_in, *s: (g.normal(size=s) / np.sqrt(fan_in)).astype(np.float32)
        self.conv = FLoRA(w(9, 3, 3, 1, 8), np.zeros(8, np.float32), rank=(3, 3, 1, 4),
                          strides=2, rngs=rngs)
        self.blocks = LoTR(w(128, 2, 128, 128), np.zeros((2, 128), np.float32), rank=4,
                           rngs=rngs)
        self.head = LoRA(w(128, 128, 10), np.zeros(10, np.float32), rank=4, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1)
        for layer in range(2):
            h = jax.nn.relu(self.blocks(h, layer))
        return self.head(h)


def _digits(n=256):
    d = load_digits()
    return jnp.asarray(d.images[:n, :, :, None] / 16.0, jnp.float32), jnp.asarray(d.target[:n])


def test_only_the_adapters_train_on_digits_with_nnx_jit():
    x, y = _digits()
    net = _Net(nnx.Rngs(0))
    frozen = jax.tree.map(np.array, nnx.state(net, Frozen))
    params = jax.tree.map(np.array, nnx.state(net, nnx.Param))
    losses = nnx_classifier_losses(net, x, y, steps=30, tx=optax.adam(1e-2))
    assert losses[-1] < 0.5 * losses[0], losses
    jax.tree.map(np.testing.assert_array_equal, frozen, nnx.state(net, Frozen))
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params,
                         nnx.state(net, nnx.Param))
    assert len(jax.tree.leaves(moved)) == 5 + 3 + 2 and all(
        m > 0 for m in jax.tree.leaves(moved)), moved


def test_adapters_train_through_the_linen_bridge():
    x, y = _digits(128)
    g = np.random.default_rng(1)
    conv_k = g.normal(size=(3, 3, 1, 4)).astype(np.float32) / 3
    blocks = g.normal(size=(2, 64, 64)).astype(np.float32) / 8
    head = g.normal(size=(64, 10)).astype(np.float32) / 8

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = jax.nn.relu(bridge.to_linen(FLoRA, conv_k, rank=2, strides=2)(x))
            h = h.reshape(x.shape[0], -1)
            lotr = bridge.to_linen(LoTR, blocks, rank=2)
            h = jax.nn.relu(lotr(jax.nn.relu(lotr(h, 0)), 1))
            return bridge.to_linen(LoRA, head, rank=4)(h)

    model = Net()
    variables = model.init(jax.random.PRNGKey(0), x)
    assert set(variables) == {"params", "Frozen"}  # the base weights are not params
    paths = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(variables["params"])[0]]
    assert len(paths) == 5 + 3 + 2 and not any("kernel" in p or "bias" in p for p in paths)
    losses = linen_classifier_losses(model, x, y, steps=30, lr=2e-2)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("make,match", [
    (lambda: LoRA(np.ones(6), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LoRA(np.ones((6, 4), np.int32), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LoRA(np.ones((6, 4)), np.ones(6), rank=1, rngs=nnx.Rngs(0)), "bias"),
    (lambda: LoRA(np.ones((6, 4)), rank=5, rngs=nnx.Rngs(0)), "rank"),
    (lambda: LoRA(np.ones((6, 4)), rank=0, rngs=nnx.Rngs(0)), "rank"),
    (lambda: LoRA(np.ones((6, 4)), rank=1, alpha=float("nan"), rngs=nnx.Rngs(0)), "alpha"),
    (lambda: LoRA(np.ones((6, 4)), rank=2, param_dtype=F64, rngs=nnx.Rngs(0))(np.ones((2, 5))),
     r"x must have shape \(\.\.\., 6\)"),
    (lambda: LoTR(np.ones((6, 4)), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LoTR(np.ones((2, 6, 4)), np.ones((3, 4)), rank=1, rngs=nnx.Rngs(0)), "bias"),
    (lambda: LoTR(np.ones((3, 6, 4)), rank=2, param_dtype=F64, rngs=nnx.Rngs(0))(
        np.ones(6), 3), "layer"),
    (lambda: LoTR(np.ones((3, 6, 4)), rank=2, param_dtype=F64, rngs=nnx.Rngs(0))(
        np.ones(6), 0.5), "layer"),
    (lambda: nnx.eval_shape(lambda: LoTR.from_linears(
        [nnx.Linear(6, 4, rngs=nnx.Rngs(0)), nnx.Linear(6, 3, rngs=nnx.Rngs(0))], rank=1,
        rngs=nnx.Rngs(0))), "linears"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=(2, 2, 3, 2), rngs=nnx.Rngs(0)), "rank"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=2, strides=(1, 0), rngs=nnx.Rngs(0)),
     "strides"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=2, padding="FULL", rngs=nnx.Rngs(0)),
     "padding"),
    (lambda: FLoRA(np.ones((3, 3, 3, 5)), rank=(2, 3, 2, 3), param_dtype=F64,
                   rngs=nnx.Rngs(0))(
        np.ones((5, 5, 4))), "x must"),
    (lambda: nnx.eval_shape(lambda: FLoRA.from_conv(
        nnx.Conv(2, 4, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0)), rank=2,
        rngs=nnx.Rngs(0))), "dilation"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
