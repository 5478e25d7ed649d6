"""Structured dense replacements (LowRank, Kronecker, Monarch, BTT, TT): dense reference,
from_dense round trips, init scale, counts, structured_optimizer, training through
nnx.jit and through the Linen bridge, bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from sklearn.datasets import load_digits
from train_checks import linen_classifier_losses, nnx_classifier_losses

from tnlib import btt, tt
from tnlib.models.structured import (
    BTTLinear,
    KroneckerLinear,
    LowRankLinear,
    MonarchLinear,
    TTLinear,
    balanced_factors,
    layer_lr_multipliers,
    structured_optimizer,
)

F64 = jnp.float64

# (class, structure kwargs) for a 12 -> 6 layer
SPECS = {
    "lowrank": (LowRankLinear, dict(rank=2)),
    "kronecker": (KroneckerLinear, dict(in_factors=(3, 4), out_factors=(2, 3))),
    "monarch": (MonarchLinear, dict(in_factors=(4, 3), out_factors=(3, 2))),
    "btt": (BTTLinear, dict(rank=2, in_factors=(3, 4), out_factors=(2, 3))),
    "tt": (TTLinear, dict(in_factors=(2, 3, 2), out_factors=(1, 3, 2), rank=2)),
}


def core_dense(layer):
    """The (d_out, d_in) matrix from the tnlib core's own to_dense, built from the params."""
    if isinstance(layer, TTLinear):
        return tt.to_dense(tt.TTMatrix(tuple(c[...] for c in layer.cores)))
    arrays = [getattr(layer, n)[...] for n in layer._names]
    return btt.to_dense(type(layer)._type(*arrays))


@pytest.mark.parametrize("name", list(SPECS))
def test_forward_matches_dense_kernel(name):
    cls, kw = SPECS[name]
    layer = cls(12, 6, **kw, param_dtype=F64, bias_init=nnx.initializers.normal(1.0),
                rngs=nnx.Rngs(0))
    kernel = np.asarray(core_dense(layer)).T
    np.testing.assert_allclose(layer.to_dense(), kernel, rtol=1e-12, atol=1e-14)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, 12), F64)
    ref = np.asarray(x) @ kernel + np.asarray(layer.bias[...])
    assert np.abs(np.asarray(layer.bias[...])).max() > 0
    jitted = nnx.jit(lambda m, x: m(x))
    for y in (layer(x), jitted(layer, x)):
        assert y.shape == (2, 3, 6) and y.dtype == F64
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", list(SPECS))
def test_from_dense_reproduces_a_structured_kernel(name):
    cls, kw = SPECS[name]
    source = cls(12, 6, **kw, rngs=nnx.Rngs(3))
    kernel = source.to_dense()
    bias = jnp.arange(6, dtype=jnp.float32)
    layer = cls.from_dense(kernel, bias, **kw, rngs=nnx.Rngs(4))
    assert layer.to_dense().dtype == jnp.float32
    # the tolerance: relative Frobenius error <= 1e-6 in float32
    k64, back = np.asarray(kernel, np.float64), np.asarray(layer.to_dense(), np.float64)
    rel = np.linalg.norm(back - k64) / np.linalg.norm(k64)
    assert rel <= 1e-6, rel
    np.testing.assert_array_equal(layer.bias[...], bias)
    x = jax.random.normal(jax.random.PRNGKey(5), (4, 12))
    np.testing.assert_allclose(layer(x), x @ kernel + bias, rtol=1e-5, atol=1e-5)
    no_bias = cls.from_dense(kernel, **kw, rngs=nnx.Rngs(4))
    assert no_bias.bias is None and no_bias.num_params() == layer.num_params() - 6


def test_from_dense_projects_a_generic_kernel():
    """On an unstructured kernel each from_dense is the tnlib projection (LowRank: the
    truncated SVD, whose error is the tail of the singular values)."""
    k = jax.random.normal(jax.random.PRNGKey(0), (12, 6), F64)
    layer = LowRankLinear.from_dense(k, rank=2, rngs=nnx.Rngs(0))
    s = np.linalg.svd(np.asarray(k), compute_uv=False)
    np.testing.assert_allclose(np.linalg.norm(layer.to_dense() - k), np.linalg.norm(s[2:]),
                               rtol=1e-10)
    tt_layer = TTLinear.from_dense(k, in_factors=(3, 4), out_factors=(2, 3), rank=64,
                                   rngs=nnx.Rngs(0))
    np.testing.assert_allclose(tt_layer.to_dense(), k, rtol=1e-10, atol=1e-12)
    assert tt_layer.ranks == (1, 6, 1)  # capped by the unfolding, not by rank=64


@pytest.mark.parametrize("name,cls,kw", [
    ("lowrank", LowRankLinear, dict(rank=8)),
    ("kronecker", KroneckerLinear, dict(in_factors=(8, 8), out_factors=(4, 8))),
    ("monarch", MonarchLinear, {}),
    ("btt", BTTLinear, dict(rank=4)),
    ("tt", TTLinear, dict(in_factors=(4, 4, 4), out_factors=(2, 4, 4), rank=4)),
])
def test_init_dense_entries_have_variance_one_over_in_features(name, cls, kw):
    sq = [float(jnp.mean(cls(64, 32, **kw, rngs=nnx.Rngs(s)).to_dense() ** 2))
          for s in range(16)]  # 16 independent layers: Kronecker and TT entries are heavy-tailed
    assert 0.75 < np.mean(sq) * 64 < 1.33, np.mean(sq) * 64


def test_default_factors_are_the_most_balanced():
    assert balanced_factors(16) == (4, 4)
    assert balanced_factors(12) == (3, 4)
    assert balanced_factors(7) == (1, 7)
    m = nnx.eval_shape(lambda: MonarchLinear(24, 10, rngs=nnx.Rngs(0)))
    assert m.in_factors == (4, 6) and m.out_factors == (2, 5) and m.rank == 1
    b = nnx.eval_shape(lambda: BTTLinear(64, 36, rank=3, rngs=nnx.Rngs(0)))
    assert b.left.shape == (8, 6, 8, 3) and b.right.shape == (6, 6, 8, 3)


def shaped(cls, **kw):
    """The layer 12 -> 6 with abstract parameters (shapes only, nothing computed)."""
    return nnx.eval_shape(lambda: cls(12, 6, **kw, rngs=nnx.Rngs(0)))


def test_num_params_hand_count():
    assert shaped(LowRankLinear, rank=2).num_params() == 2 * 18 + 6
    assert shaped(KroneckerLinear, in_factors=(3, 4), out_factors=(2, 3),
                  use_bias=False).num_params() == 2 * 3 + 3 * 4
    # left (n2, m1, n1, r) = (4, 2, 3, 2), right (m1, m2, n2, r) = (2, 3, 4, 2)
    layer = shaped(BTTLinear, rank=2, in_factors=(3, 4), out_factors=(2, 3))
    assert layer.num_params() == 48 + 48 + 6
    assert shaped(MonarchLinear, in_factors=(3, 4), out_factors=(2, 3)).num_params() == 24 + 24 + 6
    # cores (1, 1, 2, 2), (2, 3, 3, 2), (2, 2, 2, 1)
    layer = shaped(TTLinear, in_factors=(2, 3, 2), out_factors=(1, 3, 2), rank=2)
    assert [c.shape for c in layer.cores] == [(1, 1, 2, 2), (2, 3, 3, 2), (2, 2, 2, 1)]
    assert layer.num_params() == 4 + 36 + 8 + 6
    params = nnx.state(layer, nnx.Param)
    assert sum(x.size for x in jax.tree.leaves(params)) == layer.num_params()


class _Mixed(nnx.Module):
    def __init__(self, rngs):
        self.btt = BTTLinear(12, 6, rank=2, in_factors=(3, 4), out_factors=(2, 3), rngs=rngs)
        self.tt = TTLinear(6, 4, in_factors=(3, 2), out_factors=(2, 2), rank=2, rngs=rngs)
        self.dense = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.dense(jnp.tanh(self.tt(jnp.tanh(self.btt(x)))))


def test_structured_optimizer_scales_btt_cores_exactly():
    model = _Mixed(nnx.Rngs(0))
    table = layer_lr_multipliers(model)
    # BlockTT in_factors (n1, n2) = (3, 4), rank 2: left n2 = 4, right n1 / r = 1.5
    assert table[("btt", "left")] == 4.0 and table[("btt", "right")] == 1.5
    # TT in_factors (3, 2), ranks (1, 2, 1): in / (r_0 n_1) = 6 / 3, in / (r_1 n_2) = 6 / 4
    assert table[("tt", "cores", 0)] == 2.0 and table[("tt", "cores", 1)] == 1.5
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 12))
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x) ** 2)))(model)
    params = nnx.state(model, nnx.Param)
    base = optax.sgd(0.1)
    tx = structured_optimizer(model, base)
    # eager, so the check is bitwise (under jit XLA may refold -lr * g * m)
    upd, _ = tx.update(grads, tx.init(params), params)
    ref, _ = base.update(grads, base.init(params), params)
    mults = {("btt", "left"): 4.0, ("btt", "right"): 1.5, ("tt", "cores", 0): 2.0,
             ("tt", "cores", 1): 1.5}
    flat_u = dict(jax.tree_util.tree_flatten_with_path(upd)[0])
    flat_r = dict(jax.tree_util.tree_flatten_with_path(ref)[0])
    assert flat_u.keys() == flat_r.keys() and len(flat_u) == 3 + 3 + 2
    seen = 0
    for path, u in flat_u.items():
        key = tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
                    for k in path)
        key = key[:3] if key[:2] == ("tt", "cores") else key[:2]
        m = mults.get(key, 1.0)
        seen += key in mults
        assert np.any(np.asarray(u) != 0)
        np.testing.assert_array_equal(u, flat_r[path] * np.float32(m))
    assert seen == 4
    # the same through nnx.Optimizer: one step moves the left core by -0.1 * 4 * grad
    before = model.btt.left[...]
    opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
    opt.update(model, grads)
    np.testing.assert_allclose(model.btt.left[...] - before, -0.4 * grads["btt"]["left"][...],
                               rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return jnp.asarray(x[:256] / 16.0, jnp.float32), jnp.asarray(y[:256])


TRAIN_SPECS = {
    "lowrank": (LowRankLinear, dict(rank=4)),
    "kronecker": (KroneckerLinear, dict(in_factors=(8, 8), out_factors=(4, 4))),
    "monarch": (MonarchLinear, {}),
    "btt": (BTTLinear, dict(rank=2)),
    "tt": (TTLinear, dict(in_factors=(4, 4, 4), out_factors=(2, 2, 4), rank=3)),
}


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_trains_on_digits_with_nnx_jit(name, digits):
    cls, kw = TRAIN_SPECS[name]
    x, y = digits

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.hidden = cls(64, 16, **kw, rngs=rngs)
            self.head = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            return self.head(jax.nn.relu(self.hidden(x)))

    net = Net(nnx.Rngs(0))
    tx = structured_optimizer(net, optax.adam(1e-2))
    losses = nnx_classifier_losses(net, x, y, steps=30, tx=tx)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("name", ["btt", "tt"])
def test_trains_through_the_linen_bridge(name, digits):
    cls, kw = TRAIN_SPECS[name]
    x, y = digits

    class Head(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = jax.nn.relu(bridge.to_linen(cls, 64, 16, **kw)(x))
            return linen.Dense(10)(h)

    model = Head()
    losses = linen_classifier_losses(model, x, y, steps=30, lr=2e-2)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("make,match", [
    (lambda: LowRankLinear(12, 6, rank=0, rngs=nnx.Rngs(0)), "rank"),
    (lambda: LowRankLinear(0, 6, rank=1, rngs=nnx.Rngs(0)), "in_features"),
    (lambda: KroneckerLinear(12, 6, in_factors=(3, 5), out_factors=(2, 3),
                             rngs=nnx.Rngs(0)), "in_factors"),
    (lambda: KroneckerLinear(12, 6, in_factors=(3, 4), out_factors=(6,),
                             rngs=nnx.Rngs(0)), "out_factors"),
    (lambda: MonarchLinear(12, 6, out_factors=(4, 2), rngs=nnx.Rngs(0)), "out_factors"),
    (lambda: BTTLinear(12, 6, rank=0, rngs=nnx.Rngs(0)), "rank"),
    (lambda: BTTLinear(12, 6, rank=2, in_factors=(2, 2, 3), rngs=nnx.Rngs(0)), "in_factors"),
    (lambda: TTLinear(12, 6, in_factors=(3, 4), out_factors=(1, 2, 3), rank=2,
                      rngs=nnx.Rngs(0)), "out_factors"),
    (lambda: TTLinear(12, 6, in_factors=(3, 4), out_factors=(2, 3), rank=0,
                      rngs=nnx.Rngs(0)), "rank"),
    (lambda: LowRankLinear.from_dense(jnp.ones(12), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LowRankLinear.from_dense(jnp.ones((12, 6)), jnp.ones(5), rank=1,
                                      rngs=nnx.Rngs(0)), "bias"),
    (lambda: LowRankLinear.from_dense(jnp.ones((12, 6)), rank=7, rngs=nnx.Rngs(0)), "rank"),
    (lambda: BTTLinear.from_dense(jnp.ones((12, 6)), rank=4, in_factors=(3, 4),
                                  out_factors=(2, 3), rngs=nnx.Rngs(0)), "rank"),
    (lambda: TTLinear.from_dense(jnp.ones((12, 6)), in_factors=(3, 5), out_factors=(2, 3),
                                 rank=2, rngs=nnx.Rngs(0)), "in_factors"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("name", list(SPECS))
def test_wrong_input_width_raises(name):
    cls, kw = SPECS[name]
    with pytest.raises(ValueError, match=r"\(\.\.\., 12\)"):
        cls(12, 6, **kw, rngs=nnx.Rngs(0))(jnp.zeros((2, 11)))
