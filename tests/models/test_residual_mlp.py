"""ResidualMLP (Qiu et al. 2024's scaling MLP) and scaling_layer: the forward pass against
the network composed by hand from dense kernels, eager / jit / vmap / grad; the official
initialization (zero readout and second-layer cores); the official muP multipliers by hand;
the 4-block Monarch against a transcription of the official block-diagonal multiply."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from train_checks import nnx_classifier_losses

from tnlib import btt
from tnlib.models import (
    ResidualMLP,
    layer_lr_multipliers,
    scaling_layer,
    structured_optimizer,
)
from tnlib.models.mlp import SCALING_LAYERS

PERM16 = np.random.default_rng(42).permutation(16)


def _kernel(lay):
    return np.asarray(lay.kernel[...] if isinstance(lay, nnx.Linear) else lay.to_dense())


def _reference(m, x):
    """The network by hand from dense kernels (jnp, so it can be differentiated too): erf
    GELU, LayerNorm eps 1e-6."""

    def gelu(z):
        return 0.5 * z * (1 + jax.scipy.special.erf(z / math.sqrt(2)))

    def lin(lay, h):
        return h @ _kernel(lay) + jnp.asarray(lay.bias[...])

    h = gelu(lin(m.inp, x[..., PERM16]))
    for norm, up, down in zip(m.norms, m.up, m.down, strict=True):
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        z = (h - mu) / jnp.sqrt(var + 1e-6) * jnp.asarray(norm.scale[...]) + jnp.asarray(
            norm.bias[...])
        h = h + lin(down, gelu(lin(up, z)))
    return lin(m.out, h)


def _randomize(m, seed):
    """Every parameter redrawn (the zero-initialized ones too), so the test sees them all."""
    state = nnx.state(m, nnx.Param)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    nnx.update(m, jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, a.shape, a.dtype)
                                            for k, a in zip(keys, leaves, strict=True)]))


@pytest.mark.parametrize("layer", SCALING_LAYERS)
def test_forward_is_the_dense_composition_eager_jit_vmap(layer):
    m = ResidualMLP(16, 3, width=16, depth=2, layer=layer, rank=2 if layer == "tt" else None,
                    param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    _randomize(m, 1)
    x = np.random.default_rng(0).normal(size=(5, 16))
    ref = _reference(m, x)
    np.testing.assert_allclose(m(x), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(m, x), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(jax.vmap(m)(x), ref, rtol=1e-9, atol=1e-9)
    # grad: the input gradient of a scalar loss, through the layers and through the
    # dense composition
    g = jax.grad(lambda x: jnp.sum(jnp.sin(m(x))))(x)
    g_ref = jax.grad(lambda x: jnp.sum(jnp.sin(_reference(m, x))))(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-8, atol=1e-9)


def test_gradient_matches_finite_differences():
    m = ResidualMLP(16, 3, width=16, depth=1, layer="btt", param_dtype=jnp.float64,
                    rngs=nnx.Rngs(0))
    _randomize(m, 2)
    x = np.random.default_rng(1).normal(size=(4, 16))
    graphdef, params = nnx.split(m, nnx.Param)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

    g = jax.grad(loss)(params)
    flat, tree = jax.tree.flatten(params)
    gflat = jax.tree.leaves(g)
    rng = np.random.default_rng(3)
    for i in rng.choice(len(flat), 4, replace=False):
        d = rng.normal(size=flat[i].shape)
        def bumped(s, i=i, d=d):
            return jax.tree.unflatten(tree, [a + s * d if j == i else a
                                             for j, a in enumerate(flat)])

        fd = (loss(bumped(1e-6)) - loss(bumped(-1e-6))) / 2e-6
        np.testing.assert_allclose(float(jnp.sum(gflat[i] * d)), float(fd), rtol=1e-5)


@pytest.mark.parametrize("layer", SCALING_LAYERS)
def test_official_init_zero_output_and_second_layer_cores(layer):
    m = ResidualMLP(32, 4, width=32, depth=2, layer=layer, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(3, 32))
    np.testing.assert_array_equal(m(x), 0.0)  # zero readout
    for down in m.down:  # each block starts as the identity
        np.testing.assert_array_equal(_kernel(down), 0.0)
    for up in m.up:
        assert np.abs(_kernel(up)).max() > 0
    # the zeroed core still gets a gradient: training can leave the start
    graphdef, params = nnx.split(m, nnx.Param)
    g = jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x)[:, 0]))(params)
    assert float(jnp.abs(g["out"]["kernel"][...]).max()) > 0
    if isinstance(m.inp, nnx.Linear):  # dense: the official cola_init std
        k = np.asarray(m.inp.kernel[...])
        assert abs(k.std() - 32 ** -0.5) < 0.2 * 32 ** -0.5


def test_structures_as_the_official_code_builds_them():
    def make(kind, d_in, d_out):
        return scaling_layer(kind, d_in, d_out, rngs=nnx.Rngs(0))

    assert make("lowrank", 64, 256).rank == 8  # ceil(sqrt(64))
    assert make("lowrank", 50, 200).rank == 8  # ceil(sqrt(50))
    assert make("btt", 64, 256).rank == 1
    tt = make("tt", 64, 256)
    assert len(tt.cores) == 2 and tt.ranks == (1, 16, 1)
    mon = make("monarch", 64, 256)
    assert (mon.rank, mon.in_factors, mon.out_factors) == (4, (16, 4), (4, 64))
    assert mon.num_params() - 256 == 4 * 16 * 16 + 4 * 64 * 16  # blkdiag1 + blkdiag2
    kron = make("kronecker", 64, 256)
    assert kron.num_params() - 256 == 8 * 16 + 8 * 16
    with pytest.raises(ValueError, match="multiples of 16"):
        make("monarch", 40, 64)
    with pytest.raises(ValueError, match="layer must be one of"):
        make("conv", 16, 16)


def _official_monarch(w1, w2, x):
    """numpy transcription of blockdiag_butterfly_multiply (compute-better-spent,
    mm/blockdiag_butterfly_multiply.py, forward)."""
    b = x.shape[0]
    k, q, p = w1.shape
    l_, s, r = w2.shape
    out1 = np.einsum("bkp,kqp->bkq", x.reshape(b, k, p), w1)
    out1 = out1.reshape(b, r, l_).transpose(0, 2, 1)
    out2 = np.einsum("blr,lsr->bls", out1, w2)
    return out2.transpose(0, 2, 1).reshape(b, s * l_)


@pytest.mark.parametrize("d_in,d_out", [(64, 256), (256, 64), (128, 128)])
def test_monarch_is_the_official_4_block_product_up_to_reordering(d_in, d_out):
    rng = np.random.default_rng(0)
    ib, ob = d_in // 4, d_out // 4
    w1 = rng.normal(size=(4, ib, ib) if d_in < d_out else (4, ob, ib))
    w2 = rng.normal(size=(4, ob, ib) if d_in < d_out else (4, ob, ob))
    official = _official_monarch(w1, w2, np.eye(d_in))  # (d_in, d_out) kernel
    # the fixed reorderings: inputs (4, d_in/4) -> transposed, outputs (d_out/4, 4) -> transposed
    p_in = np.arange(d_in).reshape(4, ib).T.reshape(-1)
    p_out = np.arange(d_out).reshape(ob, 4).T.reshape(-1)
    target = official[p_in][:, p_out]
    layer = scaling_layer("monarch", d_in, d_out, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    w = btt.from_dense(target.T, max_rank=layer.rank, kind="btt",
                       dims=(layer.out_factors, layer.in_factors))
    assert btt.num_params(w) == w1.size + w2.size  # same parameter count
    np.testing.assert_allclose(np.asarray(btt.to_dense(w)).T, target, atol=1e-8 * np.abs(
        target).max())


def test_lr_multipliers_are_the_official_mup_rates():
    m = ResidualMLP(784, 10, width=256, depth=1, layer="monarch", rngs=nnx.Rngs(0))
    mult = layer_lr_multipliers(m)  # the model's own table wins over its layers'
    assert mult["out"]["kernel"].get_value() == 64 / 256  # readout: base width / width
    assert mult["out"]["bias"].get_value() == 1.0
    assert mult["norms"][0]["scale"].get_value() == 1.0
    # input Monarch 784 -> 256: rank 16, left fan-in 196, right fan-in 16 * 4; x0.1, / 2 cores
    assert mult["inp"]["left"].get_value() == pytest.approx(0.1 * (784 / 196) / 2)
    assert mult["inp"]["right"].get_value() == pytest.approx(0.1 * (784 / 64) / 2)
    # up 256 -> 1024 (fan-ins 64 and 64) and down 1024 -> 256 (fan-ins 256 and 64): x 64/256
    assert mult["up"][0]["left"].get_value() == pytest.approx(0.25 * 4 / 2)
    assert mult["down"][0]["right"].get_value() == pytest.approx(0.25 * (1024 / 64) / 2)
    dense = layer_lr_multipliers(ResidualMLP(784, 10, width=128, depth=1, rngs=nnx.Rngs(0)))
    assert dense["inp"]["kernel"].get_value() == pytest.approx(0.1)
    assert dense["up"][0]["kernel"].get_value() == dense["down"][0]["kernel"].get_value() == 0.5
    assert dense["up"][0]["bias"].get_value() == 1.0


def test_counts_and_bad_arguments():
    m = ResidualMLP(16, 3, width=16, depth=2, layer="dense", rngs=nnx.Rngs(0))
    assert m.flops() == 2 * (16 * 16 + 2 * 2 * 16 * 64 + 16 * 3)
    assert m.num_params() == sum(int(p.size) for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
    with pytest.raises(ValueError, match="layer must be one of"):
        ResidualMLP(16, 3, layer="conv", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        ResidualMLP(16, 3, width=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rank"):
        ResidualMLP(16, 3, layer="tt", rank=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_lr_mult"):
        ResidualMLP(16, 3, input_lr_mult=0.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 16\)"):
        m(np.ones((2, 15)))


@pytest.mark.parametrize("layer", ["btt", "tt", "monarch"])
def test_trains_inside_a_flax_model_with_its_mup_rates(layer):
    """ResidualMLP as a submodule of a small nnx model, Adam scaled by the model's own muP
    table (structured_optimizer): the loss halves and every parameter moves, the
    zero-initialized readout and second-layer cores included."""

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.body = ResidualMLP(16, 2, width=16, depth=1, layer=layer,
                                    rank=2 if layer == "tt" else None, rngs=rngs)

        def __call__(self, x):
            return self.body(x)

    g = np.random.default_rng(0)
    x = jnp.asarray(g.normal(size=(64, 16)), jnp.float32)
    y = jnp.asarray((x[:, 0] - x[:, 9] > 0).astype(np.int32))
    net = Net(nnx.Rngs(0))
    before = jax.tree.map(np.asarray, nnx.state(net, nnx.Param))
    losses = nnx_classifier_losses(net, x, y, steps=80,
                                   tx=structured_optimizer(net, optax.adam(1e-2)))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    after = nnx.state(net, nnx.Param)
    for (path, b), (_, a) in zip(nnx.to_flat_state(before), nnx.to_flat_state(after),
                                 strict=True):
        assert not np.allclose(b.get_value(), np.asarray(a.get_value())), path
