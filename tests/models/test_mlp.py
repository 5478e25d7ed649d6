"""StructuredMLP: every hidden-layer kind against the same network composed by hand
from its layers' dense kernels, FLOP and parameter counts by hand, and bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from train_checks import nnx_classifier_losses

from tnlib.models import StructuredMLP, TTInputMLP
from tnlib.models.mlp import INPUT_LAYERS, LAYERS


@pytest.mark.parametrize("layer", LAYERS)
def test_forward_equals_dense_composition_and_counts(layer):
    m = StructuredMLP(16, 3, width=64, depth=3, layer=layer, rank=2, n_factors=2,
                      param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(5, 16))
    h = jax.nn.relu(x @ m.inp.kernel[...] + m.inp.bias[...])
    for lay in m.hidden:
        kernel = lay.kernel[...] if layer == "dense" else lay.to_dense()
        h = jax.nn.relu(h @ kernel + lay.bias[...])
    np.testing.assert_allclose(m(x), h @ m.out.kernel[...] + m.out.bias[...], rtol=1e-10,
                               atol=1e-10)
    n_hidden = sum(int(p.size) for p in jax.tree.leaves(nnx.state(m.hidden, nnx.Param)))
    assert m.num_params() == (16 * 64 + 64) + n_hidden + (64 * 3 + 3)
    dense_flops = 2 * (16 * 64 + 64 * 3)
    per_hidden = {"dense": 2 * 64 * 64, "lowrank": 2 * 2 * (64 + 64),
                  "kronecker": 2 * (8 * 8 * 8 + 8 * 8 * 8),  # 64 = 8 x 8 on both sides
                  "monarch": 2 * 1 * (8 * 8 * 8 + 8 * 8 * 8),
                  "btt": 2 * 2 * (8 * 8 * 8 + 8 * 8 * 8),
                  # TT 8 x 8, rank 2: site 1 (1, 8, 8, 2) on 8 x 8, site 2 (2, 8, 8, 1)
                  "tt": 2 * (1 * 8 * 8 * 8 * 2) + 2 * (2 * 8 * 8 * 8 * 1)}
    assert m.flops() == dense_flops + 2 * per_hidden[layer]


def test_bad_arguments_name_them():
    with pytest.raises(ValueError, match="layer must be one of"):
        StructuredMLP(4, 2, layer="conv", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="width"):
        StructuredMLP(4, 2, width=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs a rank"):
        StructuredMLP(4, 2, width=16, layer="btt", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="no 3 factors"):
        StructuredMLP(4, 2, width=7, layer="tt", rank=2, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("layer", INPUT_LAYERS)
def test_tt_input_mlp_equals_its_dense_composition_under_jit(layer):
    """TensorNet's network at toy size: input modes 2x3x2 -> output modes 2x2x2."""
    m = TTInputMLP(12, 3, hidden=8, layer=layer, rank=2, in_factors=(2, 3, 2),
                   out_factors=(2, 2, 2), param_dtype=jnp.float64, rngs=nnx.Rngs(1))
    x = np.random.default_rng(0).normal(size=(5, 12))
    if layer == "none":
        want = x @ m.out.kernel[...] + m.out.bias[...]
        assert m.num_params() == 12 * 3 + 3 and m.flops() == 2 * 12 * 3
    else:
        kernel = m.inp.kernel[...] if layer == "dense" else m.inp.to_dense()
        assert kernel.shape == (12, 8)
        h = jax.nn.relu(x @ kernel + m.inp.bias[...])
        want = h @ m.out.kernel[...] + m.out.bias[...]
        n_inp = sum(int(p.size) for p in jax.tree.leaves(nnx.state(m.inp, nnx.Param)))
        assert m.num_params() == n_inp + 8 * 3 + 3
        if layer == "tt":  # cores (1,2,2,2), (2,2,3,2), (2,2,2,1) and the bias
            assert n_inp == 8 + 24 + 8 + 8
    np.testing.assert_allclose(nnx.jit(lambda mod, v: mod(v))(m, x), want, rtol=1e-10,
                               atol=1e-10)


def test_tt_input_mlp_bad_arguments_name_them():
    with pytest.raises(ValueError, match="layer must be one of"):
        TTInputMLP(12, 3, layer="btt", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs rank, a positive int"):
        TTInputMLP(12, 3, hidden=8, layer="lowrank", rank=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden must be a positive int"):
        TTInputMLP(12, 3, hidden=0, rngs=nnx.Rngs(0))
    m = TTInputMLP(12, 3, hidden=8, layer="none", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 12\)"):
        m(jnp.ones((2, 11)))


def test_tt_input_mlp_trains_inside_a_flax_model():
    """A TT input network as a submodule of a small nnx model: optax steps under nnx.jit
    move every core and lower the loss on a separable toy problem."""
    import optax

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.body = TTInputMLP(12, 2, hidden=8, layer="tt", rank=2, in_factors=(2, 3, 2),
                                   out_factors=(2, 2, 2), rngs=rngs)

        def __call__(self, x):
            return self.body(x)

    g = np.random.default_rng(0)
    x = jnp.asarray(g.normal(size=(64, 12)), jnp.float32)
    y = jnp.asarray((x[:, 0] + x[:, 5] > 0).astype(np.int32))
    model = Net(nnx.Rngs(0))
    before = [np.asarray(c[...]) for c in model.body.inp.cores]
    losses = nnx_classifier_losses(model, x, y, steps=61, tx=optax.adam(3e-2))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    for b, c in zip(before, model.body.inp.cores, strict=True):
        assert not np.allclose(b, np.asarray(c[...]))
