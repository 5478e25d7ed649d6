"""tnlib.models.factorize on a model written here (Linear and Conv layers in
attributes, nnx.List and sub-modules): exact at the planted rank, the report's counts
are the new layers', non-saving layers stay dense, the result trains under nnx.jit, and
bad arguments are errors naming them; a Linen model wrapped by nnx.bridge.ToNNX has its
nn.Dense layers factorized in place."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge

from tnlib.models import factorize


class Block(nnx.Module):
    def __init__(self, rngs):
        self.fc = nnx.Linear(48, 48, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.fc(x))


class Net(nnx.Module):
    def __init__(self, rngs):
        self.convs = nnx.List([nnx.Conv(3, 16, (3, 3), rngs=rngs),
                               nnx.Conv(16, 16, (3, 3), rngs=rngs)])
        self.proj = nnx.Linear(16 * 4 * 4, 48, rngs=rngs)
        self.blocks = nnx.List([Block(rngs), Block(rngs)])
        self.head = nnx.Linear(48, 10, rngs=rngs)

    def __call__(self, x):
        for conv in self.convs:
            x = jax.nn.relu(conv(x))
        x = self.proj(x.reshape(x.shape[0], -1))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def planted(model, rank):
    """Every Linear kernel of rank ``rank``; every Conv kernel of channel ranks ``rank``."""
    g = np.random.default_rng(0)
    for _, node in nnx.iter_graph(model):
        if type(node) is nnx.Linear:
            i, o = node.kernel[...].shape
            node.kernel[...] = jnp.asarray(g.standard_normal((i, rank)) @ g.standard_normal(
                (rank, o)) / np.sqrt(i * rank), jnp.float32)
        elif type(node) is nnx.Conv:
            kh, kw, i, o = node.kernel[...].shape
            core = g.standard_normal((kh, kw, rank, rank))
            k = np.einsum("hwab,ia,ob->hwio", core, g.standard_normal((i, rank)),
                          g.standard_normal((o, rank))) / np.sqrt(kh * kw * i * rank)
            node.kernel[...] = jnp.asarray(k, jnp.float32)


X = jnp.asarray(np.random.default_rng(1).standard_normal((4, 4, 4, 3)), jnp.float32)


@pytest.mark.parametrize("structure", ["lowrank", "tucker"])
def test_exact_at_the_planted_rank_and_counts_match(structure):
    model = Net(nnx.Rngs(0))
    planted(model, 2)
    before = model(X)
    report = factorize(model, structure, rank=2)
    replaced = [r for r in report if r.replaced]
    assert replaced and all(r.rel_error < 1e-5 for r in replaced)
    np.testing.assert_allclose(model(X), before, rtol=0,
                               atol=1e-5 * float(jnp.abs(before).max()))
    for r in replaced:  # the report's count is the new layer's
        node = model
        for key in r.path:
            node = node[key] if isinstance(key, int) else getattr(node, key)
        count = sum(x.size for x in jax.tree.leaves(nnx.state(node, nnx.Param)))
        assert count == r.new_params < r.old_params
    kinds = {"lowrank": "Linear", "tucker": "Conv"}[structure]
    assert {r.kind for r in report} == {kinds}


def test_non_saving_layers_stay_dense_and_the_model_trains():
    model = Net(nnx.Rngs(0))
    report = factorize(model, "lowrank", rank=9, verbose=True)
    head = next(r for r in report if r.path == ("head",))
    # rank 9 of a 48 x 10 map costs 9 * 58 + 10 = 532 > 490 dense: kept
    assert not head.replaced and "no parameter saving" in head.note
    assert type(model.head) is nnx.Linear
    assert all(r.replaced for r in report if r.path != ("head",))
    factorize(model, "cp", rank=0.25, where=lambda path, layer: path == ("convs", 1))
    assert type(model.convs[0]) is nnx.Conv and type(model.convs[1]).__name__ == "CPConv"

    y = jnp.arange(4) % 10
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(X), y).mean()
        value, g = nnx.value_and_grad(loss)(model)
        opt.update(model, g)
        return value

    first = float(step(model, opt))
    for _ in range(20):
        last = float(step(model, opt))
    assert last < 0.5 * first


@pytest.mark.parametrize("structure", ["tt", "btt", "monarch", "kronecker"])
def test_every_linear_structure_reports_its_layers(structure):
    model = Net(nnx.Rngs(0))
    report = factorize(model, structure, rank=0.5,
                       where=lambda path, layer: path[0] == "blocks")
    assert [r.path for r in report] == [("blocks", 0, "fc"), ("blocks", 1, "fc")]
    for r in report:
        assert r.replaced == (r.new_params < r.old_params)
        assert r.rel_error is None or 0 <= r.rel_error <= 1.5


def test_bad_arguments_are_errors():
    model = Net(nnx.Rngs(0))
    with pytest.raises(ValueError, match="structure='svd' is not one of"):
        factorize(model, "svd")
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        factorize(model, "lowrank", rank=0)
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        factorize(model, "lowrank", rank=1.5)
    with pytest.raises(ValueError, match="no Linear layer of the model is selected by where"):
        factorize(model, "lowrank", where=lambda path, layer: False)
    with pytest.raises(TypeError, match="model must be an nnx.Module"):
        factorize({"a": 1}, "lowrank")


def test_layers_in_a_dict_are_found_and_replaced():
    class M(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.Dict({"a": nnx.Linear(16, 16, rngs=rngs),
                                    "b": nnx.Linear(16, 16, rngs=rngs)})

    m = M(nnx.Rngs(0))
    report = factorize(m, "lowrank", rank=2)
    assert [r.path for r in report] == [("layers", "a"), ("layers", "b")]
    assert all(type(m.layers[k]).__name__ == "LowRankLinear" for k in ("a", "b"))


class LinenBlock(linen.Module):
    @linen.compact
    def __call__(self, x):
        return jax.nn.relu(linen.Dense(16, name="inner")(x))


class LinenMLP(linen.Module):
    """Dense layers at the top, in a nested module and without a bias, a LayerNorm (not
    a Dense: kept) between them."""

    @linen.compact
    def __call__(self, x):
        x = jax.nn.relu(linen.Dense(16)(x))
        x = linen.LayerNorm()(LinenBlock(name="block")(x))
        return linen.Dense(4, use_bias=False)(x)


def _linen_model(rank):
    """The ToNNX-wrapped LinenMLP (12 -> 4), its Dense kernels of rank ``rank``, and the
    Linen variables it holds."""
    x = jnp.ones((1, 12), jnp.float32)
    variables = LinenMLP().init(jax.random.PRNGKey(0), x)
    g = np.random.default_rng(2)

    def plant(path, leaf):
        if jax.tree_util.keystr(path).endswith("['kernel']"):
            i, o = leaf.shape
            return jnp.asarray(g.standard_normal((i, rank)) @ g.standard_normal((rank, o))
                               / np.sqrt(i * rank), jnp.float32)
        return leaf

    variables = jax.tree_util.tree_map_with_path(plant, variables)
    model = bridge.ToNNX(LinenMLP(), rngs=nnx.Rngs(0))
    bridge.lazy_init(model, x)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        leaf = variables["params"]
        for key in path:
            leaf = leaf[key]
        var.set_value(leaf)
    return model, variables


def test_a_linen_model_through_the_bridge_is_factorized_in_place():
    model, variables = _linen_model(rank=2)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((5, 12)), jnp.float32)
    want = LinenMLP().apply(variables, x)
    np.testing.assert_allclose(model(x), want, rtol=1e-6, atol=1e-6)
    report = factorize(model, "lowrank", rank=2)  # the planted rank: exact
    assert [(r.path, r.kind, r.replaced) for r in report] == [
        (("Dense_0",), "linen.Dense", True), (("Dense_1",), "linen.Dense", True),
        (("block", "inner"), "linen.Dense", True)]
    assert [r.old_params for r in report] == [12 * 16 + 16, 16 * 4, 16 * 16 + 16]
    assert [r.new_params for r in report] == [2 * 28 + 16, 2 * 20, 2 * 32 + 16]
    assert all(r.rel_error < 1e-5 for r in report)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5 * scale)
    call = nnx.jit(lambda m, x: m(x))
    np.testing.assert_allclose(call(model, x), want, rtol=1e-5, atol=1e-5 * scale)
    # the Dense kernels are gone; the structured layers and the LayerNorm are the params
    flat = [p for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert not any("kernel" in p for p in flat) and ("LayerNorm_0", "scale") in flat
    n_params = sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n_params == sum(r.new_params for r in report) + 2 * 16
    # it trains: a few Adam steps on the structured and the remaining Linen params
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(m, opt):
        value, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - 1.0) ** 2))(m)
        opt.update(m, grads)
        return value

    losses = [float(step(model, opt)) for _ in range(10)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_a_linen_model_at_a_lower_rank_reports_every_dense_layer(capsys):
    model, _ = _linen_model(rank=4)
    report = factorize(model, "lowrank", rank=1,
                       where=lambda path, layer: path != ("Dense_1",), verbose=True)
    assert [r.path for r in report] == [("Dense_0",), ("block", "inner")]
    assert all(r.replaced and 0.1 < r.rel_error < 1 for r in report)
    assert "| block.inner | (16, 16) | 272 | 48 |" in capsys.readouterr().out
    assert [r.path for r in factorize(model, "lowrank", rank=1)] == [("Dense_1",)]  # the rest
    assert model.to_nnx__factorized_paths == (("Dense_0",), ("block", "inner"), ("Dense_1",))
    assert model(jnp.ones((2, 12))).shape == (2, 4)
    with pytest.raises(ValueError, match="no Conv layer"):  # Linen convs: not bridged
        factorize(model, "tucker")
