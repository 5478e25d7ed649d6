"""TuckerConv, CPConv and TTEmbedding: dense references, from_dense on truly structured
kernels, training through nnx.jit and through the Linen bridge, argument checks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from sklearn.datasets import load_digits
from train_checks import flat_multipliers, linen_classifier_losses, nnx_classifier_losses

from tnlib import cp, tt, tucker
from tnlib.models import layer_lr_multipliers, structured_optimizer
from tnlib.models.conv import CPConv, TuckerConv
from tnlib.models.embedding import TTEmbedding

DIMS = ("NHWC", "HWIO", "NHWC")


def _make(kind, c_in, c_out, kernel_size, **kw):
    if kind == "tucker":
        return TuckerConv(c_in, c_out, kernel_size, ranks=(min(2, c_in), 3), **kw)
    return CPConv(c_in, c_out, kernel_size, rank=4, **kw)


def _dense_conv(x, kernel, layer):
    pad = layer.padding
    return jax.lax.conv_general_dilated(x, kernel, layer.strides, pad, dimension_numbers=DIMS)


def _digits(n=256):
    d = load_digits()
    x = jnp.asarray(d.images[:n, :, :, None] / 16.0, jnp.float32)
    return x, jnp.asarray(d.target[:n])


# ------------------------------------------------------------------ convolutions


@pytest.mark.parametrize("kind", ["tucker", "cp"])
@pytest.mark.parametrize("kernel_size,strides,padding", [
    (3, 1, "SAME"), ((2, 3), (2, 1), ((1, 0), (2, 1))),
])
def test_conv_equals_dense_kernel(kind, kernel_size, strides, padding):
    layer = _make(kind, 3, 5, kernel_size, strides=strides, padding=padding, rngs=nnx.Rngs(0))
    layer.bias[...] = jax.random.normal(jax.random.PRNGKey(2), (5,), jnp.float32)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 6, 3), jnp.float32)
    kernel = layer.to_dense()
    kh, kw = layer.kernel_size
    assert kernel.shape == (kh, kw, 3, 5)
    ref = _dense_conv(x, kernel, layer) + layer.bias[...]
    out = layer(x)
    assert out.shape == ref.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(ref).max()))
    # unbatched and extra leading batch axes, like nnx.Conv
    np.testing.assert_allclose(layer(x[0]), ref[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(x.reshape(1, 2, 7, 6, 3))[0], ref, rtol=1e-5, atol=1e-5)


def test_dense_kernel_is_the_tnlib_decomposition():
    t = _make("tucker", 3, 5, 3, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(t.to_dense(), tucker.to_dense(t.as_tucker()), rtol=1e-5,
                               atol=1e-6)
    c = _make("cp", 3, 5, 3, rngs=nnx.Rngs(0))
    dense = np.einsum("hr,wr,ir,or->hwio", *(np.asarray(f) for f in c.as_cp().factors))
    np.testing.assert_allclose(c.to_dense(), dense, rtol=1e-5, atol=1e-6)
    # LeCun-normal budget: E ||K||_F^2 = C_out (dense entries of variance 1 / (kh kw C_in))
    for layer in (t, c):
        assert 0.25 < float(jnp.sum(layer.to_dense() ** 2)) / 5 < 4.0


def _rel_error(ref, approx):
    """``||approx - ref||_F / ||ref||_F`` in float64."""
    ref, approx = np.asarray(ref, np.float64), np.asarray(approx, np.float64)
    return np.linalg.norm(approx - ref) / np.linalg.norm(ref)


def test_tucker_from_dense_reproduces_a_tucker2_kernel():
    key = jax.random.PRNGKey(0)
    # multilinear rank (3, 2, 2, 3): the spatial modes are full, the channel modes low
    k_core, k_in, k_out = jax.random.split(key, 3)
    core = jax.random.normal(k_core, (3, 2, 2, 3), jnp.float32)
    factors = (jnp.eye(3, dtype=jnp.float32), jnp.eye(2, dtype=jnp.float32),
               jax.random.normal(k_in, (6, 2), jnp.float32),
               jax.random.normal(k_out, (5, 3), jnp.float32))
    kernel = tucker.to_dense(tucker.Tucker(core, factors))
    bias = jnp.arange(5.0, dtype=jnp.float32)
    layer = TuckerConv.from_dense(kernel, bias, ranks=(2, 3), padding="VALID",
                                  rngs=nnx.Rngs(0))
    assert layer.core.shape == (3, 2, 2, 3) and layer.first.shape == (6, 2)
    assert layer.to_dense().dtype == jnp.float32
    assert _rel_error(kernel, layer.to_dense()) <= 1e-6  # the float32 tolerance
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 6), jnp.float32)
    ref = _dense_conv(x, kernel, layer) + bias
    np.testing.assert_allclose(layer(x), ref, atol=1e-5 * float(jnp.abs(ref).max()))
    # a truncation loses exactly the discarded channel singular values (HOSVD bound)
    low = TuckerConv.from_dense(kernel, ranks=(1, 3), rngs=nnx.Rngs(0))
    assert low.bias is None
    err = float(jnp.linalg.norm(low.to_dense() - kernel))
    s_in = tucker.multilinear_singular_values(kernel)[2]
    np.testing.assert_allclose(err, float(jnp.linalg.norm(s_in[1:])), rtol=1e-4)


def test_cp_from_dense_reproduces_a_cp_kernel():
    kernel = cp.to_dense(cp.random(jax.random.PRNGKey(3), (3, 3, 4, 5), 3, jnp.float32))
    layer = CPConv.from_dense(kernel, jnp.ones(5, jnp.float32), rank=3, n_iter=200,
                              rngs=nnx.Rngs(0))
    assert layer.first.shape == (4, 3) and layer.vertical.shape == (3, 3)
    assert layer.to_dense().dtype == jnp.float32
    assert _rel_error(kernel, layer.to_dense()) <= 1e-6  # the float32 tolerance
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 4), jnp.float32)
    np.testing.assert_allclose(layer(x), _dense_conv(x, kernel, layer) + 1.0, atol=1e-5)


def _applies_multipliers(model, expected):
    """structured_optimizer(model, sgd) scales each update by ``expected[path]`` (else 1).
    ``model`` may be abstract (nnx.eval_shape): unit gradients are made from the shapes."""
    params = nnx.state(model, nnx.Param)
    grads = jax.tree.map(lambda p: jnp.ones(p.shape, p.dtype), params)
    tx = structured_optimizer(model, optax.sgd(0.5))
    upd, _ = jax.jit(tx.update)(grads, tx.init(grads))
    seen = set()
    for path, u in jax.tree_util.tree_flatten_with_path(upd)[0]:
        key = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in path)
        key = key[:3] if "cores" in key else key[:2]
        seen.add(key)
        np.testing.assert_allclose(u, -0.5 * expected.get(key, 1.0) * np.ones(u.shape),
                                   rtol=1e-6)
    assert set(expected) <= seen


def test_structured_optimizer_applies_conv_and_embedding_multipliers():
    """muP rule: multiplier = dense fan-in / fan-in of the stage (module docstrings)."""
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.tucker = TuckerConv(4, 6, (3, 2), ranks=(2, 3), rngs=rngs)
            self.cp = CPConv(4, 6, (3, 2), rank=5, use_bias=False, rngs=rngs)
            self.embed = TTEmbedding(50, 12, vocab_factors=(4, 5, 3), feature_factors=(2, 3, 2),
                                     rank=(3, 4), rngs=rngs)

    net = nnx.eval_shape(lambda: Net(nnx.Rngs(0)))
    fan = 3 * 2 * 4  # kh kw C_in of the dense kernel
    expected = {
        ("tucker", "first"): fan / 4, ("tucker", "core"): fan / (3 * 2 * 2),
        ("tucker", "last"): fan / 3, ("tucker", "bias"): 1.0,
        ("cp", "first"): fan / 4, ("cp", "vertical"): fan / 3, ("cp", "horizontal"): fan / 2,
        ("cp", "last"): fan / 5,
        ("embed", "cores", 0): 1.0, ("embed", "cores", 1): 1 / 3, ("embed", "cores", 2): 1 / 4,
    }
    mults = layer_lr_multipliers(net)  # shaped like the parameters
    assert jax.tree.structure(mults) == jax.tree.structure(nnx.state(net, nnx.Param))
    assert flat_multipliers(mults) == pytest.approx(expected)
    _applies_multipliers(net, expected)


class _ConvNet(nnx.Module):
    def __init__(self, kind, rngs):
        self.conv1 = _make(kind, 1, 8, 3, rngs=rngs)
        self.conv2 = _make(kind, 8, 8, 3, strides=2, rngs=rngs)
        self.head = nnx.Linear(4 * 4 * 8, 10, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x))))
        return self.head(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("kind", ["tucker", "cp"])
def test_conv_trains_on_digits_with_nnx_jit(kind):
    x, y = _digits()
    net = _ConvNet(kind, nnx.Rngs(0))
    before = nnx.state(net.conv1, nnx.Param)
    before = jax.tree.map(lambda v: v.copy(), before)
    losses = nnx_classifier_losses(net, x, y, steps=30, tx=optax.adam(3e-2))
    assert losses[-1] < 0.7 * losses[0], losses
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), before,
                         nnx.state(net.conv1, nnx.Param))
    assert all(v > 0 for v in jax.tree.leaves(moved))


@pytest.mark.parametrize("cls,kwargs", [(TuckerConv, dict(ranks=(1, 4))), (CPConv, dict(rank=4))])
def test_conv_trains_through_the_linen_bridge(cls, kwargs):
    x, y = _digits(128)

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = jax.nn.relu(bridge.to_linen(cls, 1, 8, 3, **kwargs)(x))
            return linen.Dense(10)(h.reshape(h.shape[0], -1))

    model = Net()
    losses = linen_classifier_losses(model, x, y, steps=30, lr=3e-2)
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("make,match", [
    (lambda: TuckerConv(4, 6, 3, ranks=(5, 2), rngs=nnx.Rngs(0)), "ranks"),
    (lambda: TuckerConv(4, 6, 3, ranks=(0, 2), rngs=nnx.Rngs(0)), "r_in"),
    (lambda: TuckerConv(4, 6, 3, ranks=3, rngs=nnx.Rngs(0)), "ranks"),
    (lambda: TuckerConv(0, 6, 3, ranks=(1, 1), rngs=nnx.Rngs(0)), "in_features"),
    (lambda: CPConv(4, 6, (3, 3, 3), rank=2, rngs=nnx.Rngs(0)), "kernel_size"),
    (lambda: CPConv(4, 6, 3, rank=0, rngs=nnx.Rngs(0)), "rank"),
    (lambda: CPConv(4, 6, 3, rank=2, strides=0, rngs=nnx.Rngs(0)), "strides"),
    (lambda: CPConv(4, 6, 3, rank=2, padding="CIRCULAR", rngs=nnx.Rngs(0)), "padding"),
    (lambda: CPConv(4, 6, 3, rank=2, rngs=nnx.Rngs(0))(jnp.zeros((1, 5, 5, 3))), "x must"),
    (lambda: TuckerConv.from_dense(jnp.zeros((3, 4, 5)), ranks=(1, 1), rngs=nnx.Rngs(0)),
     "kernel"),
    (lambda: CPConv.from_dense(jnp.ones((3, 3, 4, 5)), jnp.ones(4), rank=2, rngs=nnx.Rngs(0)),
     "bias"),
])
def test_conv_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# --------------------------------------------------------------------- embedding


def _embedding(**kw):
    args = dict(vocab_factors=(4, 5, 3), feature_factors=(2, 3, 2), rank=(3, 4))
    args.update(kw)
    return TTEmbedding(50, 12, rngs=nnx.Rngs(0), **args)


def test_embedding_lookup_equals_dense_table_rows():
    e = _embedding(param_dtype=jnp.float64)
    table = e.embedding()
    assert table.shape == (50, 12)
    np.testing.assert_allclose(table, tt.to_dense(e.ttm())[:50], rtol=1e-12)
    ids = jnp.array([[0, 1, 49], [17, 33, 4]])
    out = e(ids)
    assert out.shape == (2, 3, 12) and out.dtype == jnp.float64
    np.testing.assert_allclose(out, table[ids], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(nnx.jit(lambda m, i: m(i))(e, ids), table[ids], rtol=1e-12)
    np.testing.assert_allclose(e(jnp.arange(50)), table, rtol=1e-12, atol=1e-14)
    # one site: the table is the single core; float32 default
    one = TTEmbedding(7, 4, vocab_factors=(8,), feature_factors=(4,), rank=(), rngs=nnx.Rngs(1))
    np.testing.assert_allclose(one(jnp.arange(7)), one.cores[0][...][0, :7, :, 0], rtol=1e-6)
    assert one(3).shape == (4,) and one(3).dtype == jnp.float32


def test_embedding_gradient_equals_the_dense_tables():
    e = _embedding(param_dtype=jnp.float64)
    ids = jnp.array([3, 3, 40, 7])
    w = jax.random.normal(jax.random.PRNGKey(0), (4, 12), jnp.float64)
    g_lookup = nnx.grad(lambda m: jnp.sum(m(ids) * w))(e)
    g_dense = nnx.grad(lambda m: jnp.sum(m.embedding()[ids] * w))(e)
    leaves_l, leaves_d = jax.tree.leaves(g_lookup), jax.tree.leaves(g_dense)
    assert len(leaves_l) == 3 and all(float(jnp.abs(g).max()) > 0 for g in leaves_l)
    for a, b in zip(leaves_l, leaves_d, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def _toy_tokens(n=256, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, n)
    return jnp.asarray(ids), jnp.asarray(ids % 3)


def test_embedding_trains_with_nnx_jit():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.embed = TTEmbedding(50, 12, vocab_factors=(5, 10), feature_factors=(3, 4),
                                     rank=4, rngs=rngs)
            self.head = nnx.Linear(12, 3, rngs=rngs)

        def __call__(self, ids):
            return self.head(self.embed(ids))

    ids, y = _toy_tokens()
    net = Net(nnx.Rngs(0))
    losses = nnx_classifier_losses(net, ids, y, steps=40, tx=optax.adam(3e-2))
    assert losses[-1] < 0.5 * losses[0], losses


def test_embedding_trains_through_the_linen_bridge():
    ids, y = _toy_tokens(seed=1)

    class Net(linen.Module):
        @linen.compact
        def __call__(self, ids):
            h = bridge.to_linen(TTEmbedding, 50, 12, vocab_factors=(5, 10),
                                feature_factors=(3, 4), rank=4)(ids)
            return linen.Dense(3)(h)

    model = Net()
    losses = linen_classifier_losses(model, ids, y, steps=40, lr=3e-2)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("kwargs,match", [
    (dict(vocab_factors=(4, 5, 2)), "num_embeddings"),
    (dict(feature_factors=(2, 3, 3)), "features"),
    (dict(feature_factors=(3, 4)), "same length"),
    (dict(vocab_factors=(4, 0, 3)), "vocab_factors"),
    (dict(rank=(3,)), "rank"),
    (dict(rank=0), "rank"),
    (dict(init_scale=0.0), "init_scale"),
])
def test_embedding_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _embedding(**kwargs)


def test_embedding_float_ids_raise_and_init_scale():
    e = _embedding(init_scale=2.0)
    with pytest.raises(ValueError, match="integer"):
        e(jnp.zeros((3,)))
    # entries have variance init_scale^2 / features: rows of norm about init_scale
    rms_norm = jnp.sqrt(jnp.mean(jnp.sum(e.embedding() ** 2, axis=-1)))
    assert 1.0 < float(rms_norm) < 4.0


def test_tt_embedding_rejects_out_of_range_ids():
    emb = TTEmbedding(10, 4, vocab_factors=(3, 4), feature_factors=(2, 2), rank=2,
                      rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 10\)"):
        emb(jnp.array([1, 10]))
    with pytest.raises(ValueError, match="ids must lie"):
        emb(jnp.array([-1]))
    out = nnx.jit(lambda m, i: m(i))(emb, jnp.array([3, 11]))  # traced: NaN, not another row
    assert np.all(np.isfinite(np.asarray(out[0]))) and np.all(np.isnan(np.asarray(out[1])))
