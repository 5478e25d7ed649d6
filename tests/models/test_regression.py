"""TensorRegression (Tucker / CP tensor regression layer with tensor dropout): dense
reference, from_dense round trips, dropout masks and modes, counts, training through
nnx.jit and through the Linen bridge, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from sklearn.datasets import load_digits
from train_checks import nnx_classifier_losses

from tnlib import cp, tucker
from tnlib.models.regression import TensorRegression

F64 = jnp.float64
IN_SHAPE = (3, 4, 2)
SPECS = {"tucker": dict(form="tucker", rank=(2, 3, 2, 4)), "cp": dict(form="cp", rank=3)}


def dense_weight(layer):
    """The weight (*in_shape, out) from the parameters, in numpy float64."""
    fs = [np.asarray(f[...], np.float64) for f in layer.factors]
    if layer.form == "tucker":
        return np.einsum("abcd,ia,jb,kc,od->ijko", np.asarray(layer.core[...], np.float64), *fs)
    return np.einsum("ir,jr,kr,or->ijko", *fs)


def apply_dense(w, x, bias):
    return np.einsum("...ijk,ijko->...o", np.asarray(x, np.float64), w) + np.asarray(bias)


@pytest.mark.parametrize("form", list(SPECS))
def test_forward_matches_dense_weight(form):
    layer = TensorRegression(IN_SHAPE, 5, **SPECS[form], dropout_rate=0.5,
                             param_dtype=F64, rngs=nnx.Rngs(0))
    layer.bias[...] = jax.random.normal(jax.random.PRNGKey(2), (5,), F64)
    layer.eval()
    w = dense_weight(layer)
    np.testing.assert_allclose(layer.to_dense(), w, rtol=1e-12, atol=1e-14)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3) + IN_SHAPE, F64)
    ref = apply_dense(w, x, layer.bias[...])
    jitted = nnx.jit(lambda m, x: m(x))
    for y in (layer(x), jitted(layer, x)):
        assert y.shape == (2, 3, 5) and y.dtype == F64
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    # LeCun budget: E ||W||_F^2 = out_features (entries of variance 1 / prod(in_shape))
    sq = [float(jnp.sum(TensorRegression(IN_SHAPE, 5, **SPECS[form], param_dtype=F64,
                                         rngs=nnx.Rngs(s)).to_dense() ** 2)) for s in range(8)]
    assert 0.4 < np.mean(sq) / 5 < 2.5, np.mean(sq)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / np.linalg.norm(a)


@pytest.mark.parametrize("form", list(SPECS))
def test_from_dense_reproduces_a_structured_weight(form):
    """float32 weight of exact structure -> from_dense -> to_dense: relative error <= 1e-6."""
    source = TensorRegression(IN_SHAPE, 5, **SPECS[form], rngs=nnx.Rngs(3))
    w = source.to_dense()
    bias = jnp.arange(5, dtype=jnp.float32)
    layer = TensorRegression.from_dense(w, bias, **SPECS[form], rngs=nnx.Rngs(4))
    assert layer.to_dense().dtype == jnp.float32 and layer.rank == source.rank
    assert _rel(w, layer.to_dense()) <= 1e-6, _rel(w, layer.to_dense())
    np.testing.assert_array_equal(layer.bias[...], bias)
    x = jax.random.normal(jax.random.PRNGKey(5), (4,) + IN_SHAPE)
    np.testing.assert_allclose(layer(x), apply_dense(np.asarray(w), x, bias), rtol=1e-5,
                               atol=1e-5)


def test_tensor_dropout_masks_and_modes():
    x = jax.random.normal(jax.random.PRNGKey(1), (4,) + IN_SHAPE)
    for form, kw in SPECS.items():
        layer = TensorRegression(IN_SHAPE, 5, **kw, dropout_rate=0.4, rngs=nnx.Rngs(0))
        full = layer.decomposition()
        key = jax.random.PRNGKey(7)
        dropped = layer.decomposition(key)
        # training-mode output with a key is x applied to that draw's weight
        dense = (tucker.to_dense(dropped) if form == "tucker" else cp.to_dense(dropped))
        np.testing.assert_allclose(layer(x, rngs=key), apply_dense(np.asarray(dense), x, 0.0),
                                   rtol=1e-5, atol=1e-5)
        # masks are 0 or 1 / keep on whole rank components
        if form == "tucker":
            scales = [np.asarray(d[0] / f[0])
                      for d, f in zip(dropped.factors, full.factors, strict=True)]
            np.testing.assert_array_equal(dropped.core, full.core)
        else:
            scales = [np.asarray(dropped.weights)]
        for s in scales:
            assert np.all(np.isclose(s, 0.0) | np.isclose(s, 1 / 0.6, rtol=1e-5)), s
        # eval mode and deterministic=True drop nothing; train mode draws new masks
        layer.eval()
        y_eval = layer(x)
        np.testing.assert_allclose(y_eval, apply_dense(dense_weight(layer), x, 0.0),
                                   rtol=1e-5, atol=1e-5)
        layer.train()
        a, b = layer(x), layer(x)
        assert not np.allclose(a, b) and not np.allclose(a, y_eval)
        np.testing.assert_array_equal(layer(x, deterministic=True), y_eval)
        np.testing.assert_array_equal(nnx.view(layer, deterministic=True)(x), y_eval)
    # over many draws each component is kept with probability 1 - rate
    keys = jax.random.split(jax.random.PRNGKey(3), 2000)
    w = jax.vmap(lambda k: layer.decomposition(k).weights)(keys)
    np.testing.assert_allclose(float(jnp.mean(w == 0)), 0.4, atol=0.03)
    np.testing.assert_allclose(float(jnp.mean(w)), 1.0, atol=0.05)  # unbiased


def test_num_params_hand_count():
    t = nnx.eval_shape(lambda: TensorRegression(IN_SHAPE, 5, **SPECS["tucker"],
                                                rngs=nnx.Rngs(0)))
    # core 2*3*2*4 = 48, factors 3*2 + 4*3 + 2*2 + 5*4 = 42, bias 5
    assert t.num_params() == 48 + 42 + 5 and t.rank == (2, 3, 2, 4)
    c = nnx.eval_shape(lambda: TensorRegression(IN_SHAPE, 5, **SPECS["cp"], use_bias=False,
                                                rngs=nnx.Rngs(0)))
    assert c.num_params() == 3 * (3 + 4 + 2 + 5) and c.rank == 3
    for layer in (t, c):
        assert sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param))) == \
            layer.num_params()
    capped = nnx.eval_shape(lambda: TensorRegression((8, 8), 10, rank=9, rngs=nnx.Rngs(0)))
    assert capped.rank == (8, 8, 9)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x[:256].reshape(-1, 8, 8) / 16.0, jnp.float32), jnp.asarray(y[:256])


def _eval_loss(model, x, y):
    model.eval()
    loss = optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()
    model.train()
    return float(loss)


def test_trains_on_digits_with_nnx_jit_and_dropout(digits):
    x, y = digits
    layer = TensorRegression((8, 8), 10, rank=(6, 6, 10), dropout_rate=0.1, rngs=nnx.Rngs(0))
    before = _eval_loss(layer, x, y)
    losses = nnx_classifier_losses(layer, x, y, steps=40, tx=optax.adam(0.1))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses  # dropout makes them noisy
    assert _eval_loss(layer, x, y) < 0.3 * before


def test_trains_through_the_linen_bridge_with_dropout(digits):
    x, y = digits

    class Head(linen.Module):
        @linen.compact
        def __call__(self, x, train: bool):
            return bridge.to_linen(TensorRegression, (8, 8), 10, rank=6, form="cp",
                                   dropout_rate=0.2)(x, deterministic=not train)

    model = Head()
    keys = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}
    params = model.init(keys, x, train=False)["params"]
    tx = optax.adam(5e-2)
    state = tx.init(params)

    def loss_fn(p, key):
        logits = model.apply({"params": p}, x, train=True, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, state, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for k in jax.random.split(jax.random.PRNGKey(2), 40):
        params, state, loss = step(params, state, k)
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * losses[0], losses  # dropout makes them noisy


@pytest.mark.parametrize("make,match", [
    (lambda: TensorRegression((), 5, rank=2, rngs=nnx.Rngs(0)), "in_shape"),
    (lambda: TensorRegression((3, 0), 5, rank=2, rngs=nnx.Rngs(0)), "in_shape"),
    (lambda: TensorRegression((3, 4), 0, rank=2, rngs=nnx.Rngs(0)), "out_features"),
    (lambda: TensorRegression((3, 4), 5, rank=2, form="tt", rngs=nnx.Rngs(0)), "form"),
    (lambda: TensorRegression((3, 4), 5, rank=(2, 2), rngs=nnx.Rngs(0)), "rank"),
    (lambda: TensorRegression((3, 4), 5, rank=(4, 2, 2), rngs=nnx.Rngs(0)), "rank"),
    (lambda: TensorRegression((3, 4), 5, rank=0, form="cp", rngs=nnx.Rngs(0)), "rank"),
    (lambda: TensorRegression((3, 4), 5, rank=2, dropout_rate=1.0, rngs=nnx.Rngs(0)),
     "dropout_rate"),
    (lambda: TensorRegression(IN_SHAPE, 5, **SPECS["tucker"], rngs=nnx.Rngs(0))(
        jnp.ones((2, 4, 3, 2))), r"x must have shape \(\.\.\., 3, 4, 2\)"),
    (lambda: TensorRegression(IN_SHAPE, 5, **SPECS["tucker"], dropout_rate=0.5,
                              rngs=nnx.Rngs(params=0))(jnp.ones(IN_SHAPE)), "no rngs"),
    (lambda: TensorRegression.from_dense(jnp.ones(5), rank=2, rngs=nnx.Rngs(0)), "weight"),
    (lambda: TensorRegression.from_dense(jnp.ones((3, 5)), jnp.ones(3), rank=2,
                                         rngs=nnx.Rngs(0)), "bias"),
    (lambda: TensorRegression.from_dense(jnp.ones((3, 5)), rank=4, form="cp",
                                         rngs=nnx.Rngs(0)), "rank"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
