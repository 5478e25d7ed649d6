"""Structured dense replacements (LowRank, Kronecker, Monarch, BTT, TT): dense reference,
from_dense / from_linear round trips, construction from (in_features, out_features)
alone, rank fractions, kernel_init, init scale, counts, lr_multipliers shaped like the
parameters and structured_optimizer, training through nnx.jit and through the Linen
bridge, bad arguments (absurd ranks, factors costlier than dense)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from sklearn.datasets import load_digits
from train_checks import flat_multipliers, linen_classifier_losses, nnx_classifier_losses

from tnlib import btt, tt
from tnlib.models import (
    BTTLinear,
    KroneckerLinear,
    LowRankLinear,
    MonarchLinear,
    TTLinear,
    factorize_dims,
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
CLASSES = [LowRankLinear, KroneckerLinear, MonarchLinear, BTTLinear, TTLinear]
RANKED = [LowRankLinear, BTTLinear, TTLinear]  # the layers that take a rank


def core_dense(layer):
    """The (d_out, d_in) matrix from the tnlib core's own to_dense, built from the params."""
    if isinstance(layer, TTLinear):
        return tt.to_dense(tt.TTMatrix(tuple(c[...] for c in layer.cores)))
    types = {LowRankLinear: (btt.LowRank, "u", "v"), KroneckerLinear: (btt.Kronecker, "a", "b")}
    t, *names = types.get(type(layer), (btt.BlockTT, "left", "right"))
    return btt.to_dense(t(*[getattr(layer, n)[...] for n in names]))


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
    tt_layer = TTLinear.from_dense(k, in_factors=(3, 4), out_factors=(2, 3), rank=6,
                                   rngs=nnx.Rngs(0))
    np.testing.assert_allclose(tt_layer.to_dense(), k, rtol=1e-10, atol=1e-12)
    assert tt_layer.ranks == (1, 6, 1) and tt_layer.rank == (6,)  # the largest useful bond


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
    assert factorize_dims(16, 2) == (4, 4)
    assert factorize_dims(12, 2) == (3, 4)
    assert factorize_dims(7, 2) == (1, 7)
    assert factorize_dims(1024, 4) == (4, 4, 8, 8)
    assert factorize_dims(256, 3) == (4, 8, 8)
    assert factorize_dims(1, 3) == (1, 1, 1) and factorize_dims(30, 1) == (30,)
    for n in range(1, 200):  # against brute force: no triple has a smaller largest factor
        f = factorize_dims(n, 3)
        divs = [d for d in range(1, n + 1) if n % d == 0]
        best = min(max(a, b, n // (a * b)) for a in divs for b in divs if (n // a) % b == 0)
        assert math.prod(f) == n and list(f) == sorted(f) and f[-1] == best, (n, f)
    for bad in ((0, 2), (12, 0), (12.0, 2), (True, 2)):
        with pytest.raises(ValueError, match="must be an int"):
            factorize_dims(*bad)
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
    table = flat_multipliers(layer_lr_multipliers(model))
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


# every layer as built from (in_features, out_features) alone: default factors and rank
TRAIN_SPECS = {"lowrank": (LowRankLinear, {}), "kronecker": (KroneckerLinear, {}),
               "monarch": (MonarchLinear, {}), "btt": (BTTLinear, {}), "tt": (TTLinear, {})}


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


# ------------------------------------------------- one signature for every sibling


@pytest.mark.parametrize("cls", CLASSES)
def test_builds_from_sizes_alone(cls):
    layer = cls(64, 32, rngs=nnx.Rngs(0))
    y = layer(jnp.ones((2, 64), jnp.float32))
    assert y.shape == (2, 32) and y.dtype == jnp.float32
    assert 0 < layer.num_params() - 32 <= 64 * 32  # default rank: half the dense kernel
    if cls is not LowRankLinear:
        n = len(layer.in_factors)
        assert layer.in_factors == factorize_dims(64, n)
        assert layer.out_factors == factorize_dims(32, n)
    if cls is TTLinear:
        assert layer.in_factors == (4, 4, 4) and layer.rank == (7, 7)
    else:
        assert isinstance(layer.rank, int)


def core_params(layer):
    return layer.num_params() - (layer.out_features if layer.bias is not None else 0)


@pytest.mark.parametrize("cls", RANKED)
def test_rank_fraction_resolves_to_the_largest_rank_within_budget(cls):
    dense = 64 * 48
    layer = nnx.eval_shape(lambda: cls(64, 48, rank=0.25, rngs=nnx.Rngs(0)))
    assert 0 < core_params(layer) <= 0.25 * dense
    r = layer.rank if isinstance(layer.rank, int) else max(layer.rank)
    bigger = nnx.eval_shape(lambda: cls(64, 48, rank=r + 1, rngs=nnx.Rngs(0)))
    assert core_params(bigger) > 0.25 * dense  # one more would exceed the budget
    full = nnx.eval_shape(lambda: cls(64, 48, rank=1.0, rngs=nnx.Rngs(0)))
    assert core_params(layer) < core_params(full) <= dense
    # a fraction smaller than rank 1 costs still gives rank 1
    assert nnx.eval_shape(lambda: cls(64, 48, rank=1e-6, rngs=nnx.Rngs(0))).rank in (1, (1, 1))


def test_rank_fraction_hand_counts():
    def rank(cls):
        return nnx.eval_shape(lambda: cls(64, 48, rank=0.25, rngs=nnx.Rngs(0))).rank

    assert rank(LowRankLinear) == 6  # r (64 + 48) <= 0.25 * 3072
    assert rank(BTTLinear) == 1  # (8, 8) -> (6, 8): r (n2 m1 n1 + m1 m2 n2) = 768 r <= 768
    assert rank(TTLinear) == (6, 6)  # (4, 4, 4) -> (3, 4, 4): 12 r + 16 r^2 + 16 r <= 768


@pytest.mark.parametrize("cls", CLASSES)
def test_from_linear(cls):
    """At full rank from_linear reproduces the Linear; at a lower rank it approximates
    (Kronecker and Monarch have rank 1: a Linear with that structure comes back)."""
    lin = nnx.Linear(12, 6, bias_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 12))
    full = {LowRankLinear: dict(rank=6), BTTLinear: dict(rank=3, in_factors=(3, 4)),
            TTLinear: dict(rank=6, n_factors=2), KroneckerLinear: {}, MonarchLinear: {}}[cls]
    if cls in (KroneckerLinear, MonarchLinear):  # give the Linear that structure
        lin.kernel[...] = cls(12, 6, rngs=nnx.Rngs(2)).to_dense()
    layer = cls.from_linear(lin, **full, rngs=nnx.Rngs(3))
    np.testing.assert_array_equal(layer.bias[...], lin.bias[...])
    np.testing.assert_allclose(layer(x), lin(x), rtol=1e-5, atol=1e-5)
    assert layer.param_dtype == lin.param_dtype and layer.dtype == lin.dtype
    if cls in RANKED:
        low = cls.from_linear(lin, **{**full, "rank": 1}, rngs=nnx.Rngs(3))
        k = lin.kernel[...]
        err = float(jnp.linalg.norm(low.to_dense() - k) / jnp.linalg.norm(k))
        assert 0.05 < err < 1.0, err
    no_bias = cls.from_linear(nnx.Linear(12, 6, use_bias=False, rngs=nnx.Rngs(0)), **full,
                              rngs=nnx.Rngs(3))
    assert no_bias.bias is None
    with pytest.raises(TypeError, match="nnx.Linear"):
        cls.from_linear(layer, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("cls", CLASSES)
def test_lr_multipliers_are_shaped_like_the_params(cls):
    for kw in ({}, {"use_bias": False}):
        layer = nnx.eval_shape(lambda kw=kw: cls(64, 32, **kw, rngs=nnx.Rngs(0)))
        mults = layer.lr_multipliers()
        assert jax.tree.structure(mults) == jax.tree.structure(nnx.state(layer, nnx.Param))
        values = jax.tree.leaves(mults)
        assert all(isinstance(v, float) and v > 0 for v in values)


@pytest.mark.parametrize("cls", CLASSES)
def test_kernel_init(cls):
    zero = cls(12, 6, kernel_init=nnx.initializers.zeros_init(), rngs=nnx.Rngs(0))
    assert not np.any(np.asarray(zero.to_dense()))
    ones = cls(12, 6, kernel_init=nnx.initializers.ones_init(), use_bias=False,
               rngs=nnx.Rngs(0))
    assert all(np.all(np.asarray(p) == 1) for p in jax.tree.leaves(nnx.state(ones, nnx.Param)))
    # the default is the muP draw of tnlib.btt.random / tt.random, unchanged
    default = cls(12, 6, use_bias=False, rngs=nnx.Rngs(0))
    again = cls(12, 6, kernel_init=None, use_bias=False, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(default.to_dense(), again.to_dense())
    if cls is BTTLinear:
        ref = btt.random(nnx.Rngs(0).params(), (default.out_factors, default.in_factors),
                         default.rank, kind="btt")
        np.testing.assert_array_equal(default.left[...], ref.left)


@pytest.mark.parametrize("make,match", [
    # the examples: a rank no bond can use, a prime in_features
    (lambda: TTLinear(64, 64, in_factors=(8, 8), out_factors=(8, 8), rank=1000,
                      rngs=nnx.Rngs(0)),
     r"rank 1000 is larger than 64, the largest rank TTLinear can use .*pass rank <= 64"),
    (lambda: BTTLinear(97, 64, rank=2, rngs=nnx.Rngs(0)),
     r"BTTLinear\(97, 64\) costs 6984 parameters even at rank 1, more than the dense "
     r"kernel's 6208: in_factors=\(1, 97\).*Use LowRankLinear, pad in_features to 98"),
    (lambda: MonarchLinear(97, 64, rngs=nnx.Rngs(0)), r"costs .* more than the dense"),
    (lambda: KroneckerLinear(7, 5, rngs=nnx.Rngs(0)),
     r"pad in_features to 8 and out_features to 6"),
    (lambda: TTLinear(7, 7, rank=2, rngs=nnx.Rngs(0)), r"in_factors=\(1, 1, 7\)"),
    (lambda: LowRankLinear(1, 5, rngs=nnx.Rngs(0)), r"more than the dense .*; use nnx.Linear"),
    (lambda: LowRankLinear(64, 32, rank=33, rngs=nnx.Rngs(0)),
     r"rank 33 is larger than 32, .*min\(in_features, out_features\) = min\(64, 32\)"),
    (lambda: BTTLinear(64, 64, rank=9, rngs=nnx.Rngs(0)),
     r"rank 9 is larger than 8, .*min\(m2, n1\)"),
    (lambda: TTLinear(12, 6, in_factors=(3, 4), out_factors=(2, 3), rank=(7,),
                      rngs=nnx.Rngs(0)), r"largest useful ranks are \(6,\)"),
    (lambda: LowRankLinear.from_dense(jnp.ones((64, 32)), rank=33, rngs=nnx.Rngs(0)),
     r"rank 33 is larger than 32"),
    (lambda: TTLinear.from_dense(jnp.ones((12, 6)), rank=(2,), n_factors=2, rngs=nnx.Rngs(0)),
     r"one int or a fraction"),
    (lambda: BTTLinear(64, 64, rank=1.5, rngs=nnx.Rngs(0)),
     r"rank must be an int >= 1 or a float in \(0, 1\]"),
    (lambda: LowRankLinear(64, 64, rank=0.0, rngs=nnx.Rngs(0)), r"float in \(0, 1\]"),
    (lambda: TTLinear(12, 6, n_factors=3, in_factors=(3, 4), rngs=nnx.Rngs(0)),
     r"n_factors=3 disagrees"),
])
def test_absurd_ranks_and_costly_factors_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
