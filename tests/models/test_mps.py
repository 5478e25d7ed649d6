"""MPSClassifier: dense reference, long chains, gradients, training through nnx.jit
and through the Linen bridge."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from jax.test_util import check_grads
from train_checks import linen_classifier_losses, nnx_classifier_losses

from tnlib.models import MPSClassifier, local_feature_map

F64 = jnp.float64


def dense_reference(model, x):
    """Class amplitudes by building the full weight tensor W[c, s_1..s_L] (float64)."""
    left = np.asarray(model.left[...], np.float64)
    right = np.asarray(model.right[...], np.float64)
    label = np.asarray(model.label[...], np.float64)
    e0 = np.eye(model.bond_dim)[0]
    # left chain: row vector e0 through the cores, keeping the physical indices open
    t = e0[None, :]  # (prod s, r)
    for core in left:
        t = np.einsum("Pa,asb->Psb", t, core).reshape(-1, core.shape[-1])
    t = np.einsum("Pa,acb->Pcb", t, label)  # (P, C, r)
    P, C = t.shape[0], t.shape[1]
    t = t.reshape(P * C, -1)
    for core in right:
        t = np.einsum("Qa,asb->Qsb", t, core).reshape(-1, core.shape[-1])
    w = (t @ e0).reshape((P, C) + (model.local_dim,) * right.shape[0])
    w = np.moveaxis(w, 1, -1).reshape((model.local_dim,) * model.n_sites + (C,))
    feats = np.asarray(local_feature_map(jnp.asarray(x, F64), model.local_dim, model.feature_map))
    out = []
    for f in feats:
        v = w
        for site in range(model.n_sites):
            v = np.tensordot(f[site], v, axes=(0, 0))
        out.append(v)
    return np.stack(out)


@pytest.mark.parametrize("label_site", [0, 2, 5])
@pytest.mark.parametrize("local_dim,feature_map", [(2, "cos_sin"), (3, "cos_sin"), (2, "linear")])
def test_amplitudes_match_dense_tensor(label_site, local_dim, feature_map):
    model = MPSClassifier(5, 3, bond_dim=3, local_dim=local_dim, label_site=label_site,
                          feature_map=feature_map, init_std=0.5, param_dtype=F64,
                          rngs=nnx.Rngs(label_site))
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 5), F64)
    ref = dense_reference(model, x)
    for f in (model.amplitudes, nnx.jit(lambda m, x: m.amplitudes(x)).__get__(model)):
        mant, scale = f(x)
        np.testing.assert_allclose(mant * jnp.exp(scale)[:, None], ref, rtol=1e-10, atol=1e-12)
    # the linear readout is the amplitudes with unit environments: same argmax, same signs
    np.testing.assert_array_equal(np.argmax(model(x), -1), np.argmax(ref, -1))


def test_feature_map_has_unit_norm_and_matches_paper_for_d2():
    x = jnp.linspace(0, 1, 11, dtype=F64)
    for d in (2, 3, 5):
        f = local_feature_map(x, d)
        np.testing.assert_allclose(jnp.linalg.norm(f, axis=-1), 1.0, atol=1e-12)
    np.testing.assert_allclose(local_feature_map(x, 2),
                               np.stack([np.cos(np.pi * x / 2), np.sin(np.pi * x / 2)], -1))


def test_batch_shapes_and_vmap():
    model = MPSClassifier(6, 4, bond_dim=3, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 3, 6))
    out = model(x)
    assert out.shape == (2, 3, 4)
    single = jnp.stack([model(x[i, j]) for i in range(2) for j in range(3)]).reshape(2, 3, 4)
    np.testing.assert_allclose(out, single, rtol=1e-5, atol=1e-6)
    graphdef, state = nnx.split(model)
    vm = jax.vmap(lambda xi: nnx.merge(graphdef, state)(xi))(x.reshape(6, 6))
    np.testing.assert_allclose(vm.reshape(2, 3, 4), out, rtol=1e-5, atol=1e-6)


def test_784_sites_float32_logits_finite():
    model = MPSClassifier(784, 10, bond_dim=8, init_std=0.1, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 784), jnp.float32)
    mant, scale = nnx.jit(lambda m, x: m.amplitudes(x))(model, x)
    logits = nnx.jit(lambda m, x: m(x))(model, x)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits))) and np.all(np.isfinite(np.asarray(scale)))
    # the true amplitudes are far outside float32's range: only the log-scale keeps them
    assert float(jnp.max(jnp.abs(scale))) > math.log(np.finfo(np.float32).max) or float(
        jnp.min(scale)) < math.log(np.finfo(np.float32).tiny)
    born = MPSClassifier(784, 10, bond_dim=8, init_std=0.1, readout="born", rngs=nnx.Rngs(0))
    assert np.all(np.isfinite(np.asarray(born(x))))


def test_gradients_match_finite_differences():
    model = MPSClassifier(4, 3, bond_dim=2, init_std=0.5, param_dtype=F64, rngs=nnx.Rngs(2))
    x = jax.random.uniform(jax.random.PRNGKey(3), (2, 4), F64)
    graphdef, params = nnx.split(model, nnx.Param)

    @jax.jit  # compiled once: check_grads evaluates f and its derivative several times
    def f(pure):
        state = jax.tree.map(lambda v: v, params)
        nnx.replace_by_pure_dict(state, pure)
        return nnx.merge(graphdef, state)(x)

    # numpy leaves: check_grads's perturbations then stay numpy arithmetic, not eager ops
    pure = jax.tree.map(np.asarray, nnx.to_pure_dict(params))
    check_grads(f, (pure,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def _digits_like(n=256, sites=16, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    protos = rng.uniform(0, 1, (classes, sites))
    x = np.clip(protos[y] + 0.1 * rng.normal(size=(n, sites)), 0, 1).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(y)


def test_trains_inside_a_flax_model_with_nnx_jit():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.mps = MPSClassifier(16, 3, bond_dim=4, init_std=1e-3, rngs=rngs)

        def __call__(self, x):
            return self.mps(x)

    x, y = _digits_like()
    net = Net(nnx.Rngs(0))
    losses = nnx_classifier_losses(net, x, y, steps=40, tx=optax.adam(1e-2))
    assert losses[-1] < 0.5 * losses[0]
    assert float(jnp.mean(net(x).argmax(-1) == y)) > 0.9


def test_trains_through_the_linen_bridge():
    x, y = _digits_like(seed=1)

    class Head(linen.Module):
        @linen.compact
        def __call__(self, x):
            return bridge.to_linen(MPSClassifier, 16, 3, bond_dim=4, init_std=1e-3)(x)

    model = Head()
    losses = linen_classifier_losses(model, x, y, steps=40, lr=1e-2)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("kwargs,match", [
    (dict(bond_dim=0), "bond_dim"),
    (dict(local_dim=1), "local_dim"),
    (dict(label_site=9), "label_site"),
    (dict(readout="softmax"), "readout"),
    (dict(feature_map="rbf"), "feature_map"),
    (dict(local_dim=3, feature_map="linear"), "local_dim=2"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        m = MPSClassifier(8, 3, rngs=nnx.Rngs(0), **kwargs)
        m(jnp.zeros((1, 8)))


def test_wrong_input_width_raises():
    m = MPSClassifier(8, 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 8\)"):
        m(jnp.zeros((2, 7)))


# --------------------------------------------------------------------------- one layout


def _features(x):
    return np.stack([np.cos(0.5 * np.pi * x), np.sin(0.5 * np.pi * x)], -1)


def _assert_same_predictions(chain, want, feats):
    """``tnlib.sweep.logits`` of ``chain`` are ``want`` times a positive factor per sample."""
    import tnlib.sweep as sw

    got = np.asarray(sw.logits(chain, feats)[0])
    ratio = got / want
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, want.shape[1])), rtol=1e-4)
    assert np.all(ratio > 0)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(want, -1))


def test_labelled_mps_round_trips_through_the_classifier():
    """A sweep chain with the label at site 0 (where sweeps end) converts to an
    ``MPSClassifier`` and back: same predictions each way (outputs equal up to a
    positive factor per sample), the round trip gives the untouched cores back (the
    label then sits at site 1), and the classification task's evaluate agrees with the
    sweep task's."""
    import tnlib.sweep as sw
    from tnlib.experiments import classification, sweep
    from tnlib.models.mps import from_labelled_mps, to_labelled_mps

    rng = np.random.default_rng(1)
    x = rng.uniform(size=(12, 6)).astype(np.float32)
    feats = _features(x)
    ranks = (1, 2, 3, 3, 3, 2, 1)
    cores = [rng.standard_normal((ranks[k], 2, ranks[k + 1])).astype(np.float32)
             for k in range(6)]
    label = rng.standard_normal((1, 2, 3, 2)).astype(np.float32)
    mps = sw.from_cores(cores, label, 0, max_bond=3)
    model = from_labelled_mps(mps)
    assert isinstance(model, MPSClassifier) and model.label_site == 1
    want = np.asarray(model(jnp.asarray(x)))
    back = to_labelled_mps(model)
    assert int(back.center) == 1 and back.cores.shape == mps.cores.shape
    # the cores the label never touched come back as they were (the classifier keeps no
    # ranks: every bond of the round trip is the padded one)
    np.testing.assert_array_equal(np.asarray(back.cores[2:]), np.asarray(mps.cores[2:]))
    for chain in (mps, back):
        _assert_same_predictions(chain, want, feats)
    # the classifier again (label at site 2 now): the same predictions
    again = from_labelled_mps(back)
    assert again.label_site == 2
    np.testing.assert_array_equal(np.argmax(np.asarray(again(jnp.asarray(x))), -1),
                                  np.argmax(want, -1))

    y = (np.arange(12) % 3).astype(np.int32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    _, eval_step = classification.make_steps(graphdef, rest, optax.sgd(0.1))
    got = classification.evaluate(eval_step, params, (x, y), 12)["acc"]
    assert got == sweep.evaluate(mps, (x, y), 12, "cos_sin", "squared")["acc"]


@pytest.mark.parametrize("label_site", [0, 3, 6])
def test_classifier_round_trips_through_the_labelled_mps(label_site):
    """A trained-looking classifier (random cores, label anywhere, boundary rows and
    columns past e_0 filled) converts to a ``LabelledMPS`` and back with the same
    predictions, exactly where the label is kept in the chain's bond."""
    from tnlib.models.mps import from_labelled_mps, to_labelled_mps

    model = MPSClassifier(6, 3, bond_dim=3, label_site=label_site, init_std=0.5,
                          rngs=nnx.Rngs(2))
    x = np.random.default_rng(3).uniform(size=(10, 6)).astype(np.float32)
    want = np.asarray(model(jnp.asarray(x)))
    mps = to_labelled_mps(model, max_bond=9)  # any padding at least the bond
    assert mps.max_bond == 9 and int(mps.center) == min(label_site, 5)
    _assert_same_predictions(mps, want, _features(x))
    back = from_labelled_mps(mps)
    np.testing.assert_array_equal(np.argmax(np.asarray(back(jnp.asarray(x))), -1),
                                  np.argmax(want, -1))
    with pytest.raises(ValueError, match="max_bond=2 is below"):
        to_labelled_mps(model, max_bond=2)
