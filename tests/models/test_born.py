"""MPSBornMachine: exact probabilities against a dense |psi|^2 / Z, exact sampling
(chi-square), long chains in float32, NLL training through nnx.jit and the Linen
bridge, argument checks."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from scipy import stats

from tnlib.models.born import MPSBornMachine

F64 = jnp.float64
L, V, R = 4, 3, 3
ALL = np.array(list(itertools.product(range(V), repeat=L)))  # (81, 4), row-major order


def dense_probs(model):
    """|psi(x)|^2 / Z for every sequence, from the full amplitude tensor (float64 numpy)."""
    emb = np.asarray(model.embedding[...])
    cores = np.asarray(model.cores[...])
    mats = np.einsum("vj,kajb->kvab", emb, cores)  # token matrices per site
    e0 = np.eye(model.bond_dim)[0]
    t = e0[None, :]
    for k in range(model.n_sites):
        t = np.einsum("Pa,vab->Pvb", t, mats[k]).reshape(-1, model.bond_dim)
    psi = t @ e0
    p = np.abs(psi) ** 2
    return p / p.sum()


def small_model(seed=0, **kw):
    kw = dict(dict(bond_dim=R, init_std=0.5, param_dtype=F64), **kw)
    return MPSBornMachine(L, V, rngs=nnx.Rngs(seed), **kw)


@pytest.mark.parametrize("kw", [
    {},
    dict(embedding_dim=2),
    dict(embedding_dim=5, param_dtype=jnp.complex128,
         embedding_init=lambda k, s, dt: jax.random.normal(k, s + (2,), F64).view(dt)[..., 0]),
])
def test_probabilities_match_dense_and_sum_to_one(kw):
    model = small_model(**kw)
    if "embedding_init" not in kw:
        # make the embedding non-trivial so the Gram matrix is not the identity
        model.embedding[...] = model.embedding[...] + 0.3 * jax.random.normal(
            jax.random.PRNGKey(5), model.embedding.shape, F64).astype(model.embedding.dtype)
    ref = dense_probs(model)
    for f in (model.log_prob, nnx.jit(lambda m, x: m(x)).__get__(model)):
        p = np.exp(np.asarray(f(jnp.asarray(ALL))))
        assert abs(p.sum() - 1) < 1e-10
        np.testing.assert_allclose(p, ref, rtol=1e-9, atol=1e-14)
    # batch shapes are kept
    assert model(jnp.asarray(ALL).reshape(9, 9, L)).shape == (9, 9)


def test_default_embedding_is_one_hot_and_out_of_range_tokens_have_zero_probability():
    model = small_model()
    np.testing.assert_array_equal(model.embedding[...], np.eye(V))
    lp = model.log_prob(jnp.array([[0, 1, 2, 3], [0, -1, 0, 0], [0, 1, 2, 0]]))
    assert np.isneginf(lp[0]) and np.isneginf(lp[1]) and np.isfinite(lp[2])


def test_samples_match_exact_probabilities():
    model = small_model(seed=1)
    n = 20000
    samples = nnx.jit(lambda m, k: m.sample(k, n))(model, jax.random.PRNGKey(0))
    assert samples.shape == (n, L) and samples.dtype == jnp.int32
    idx = np.ravel_multi_index(np.asarray(samples).T, (V,) * L)
    counts = np.bincount(idx, minlength=V**L)
    p = np.exp(np.asarray(model.log_prob(jnp.asarray(ALL))))
    np.testing.assert_allclose(p, dense_probs(model), rtol=1e-9, atol=1e-14)
    # chi-square on the sequences with enough expected counts, the rest pooled
    expected = n * p
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    assert big.sum() > 10
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3
    # the test has power: the same counts reject another chain's distribution
    other = n * dense_probs(small_model(seed=2))
    assert stats.chisquare(counts, other * n / other.sum()).pvalue < 1e-6


def test_200_sites_float32_finite():
    model = MPSBornMachine(200, 4, bond_dim=6, init_std=0.2, rngs=nnx.Rngs(0))
    x = jax.random.randint(jax.random.PRNGKey(1), (5, 200), 0, 4)

    @nnx.jit
    def run(m, x, key):
        s = m.sample(key, 3)
        return m(x), m.log_norm(), s, m(s)

    lp, log_z, s, lp_s = run(model, x, jax.random.PRNGKey(2))
    assert lp.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(lp)))
    # Z alone is far outside float32's range: only the running log-scale keeps it
    assert float(log_z) > np.log(np.finfo(np.float32).max)
    assert s.shape == (3, 200) and np.all(np.isfinite(np.asarray(lp_s)))
    # sampled sequences are far more likely than random ones under a peaked chain
    assert float(lp_s.mean()) > float(lp.mean())


def _target_data(n=512):
    """Samples of a fixed sparse target distribution over 3^4 sequences."""
    rng = np.random.default_rng(0)
    support = ALL[rng.choice(len(ALL), 6, replace=False)]
    return jnp.asarray(support[rng.integers(0, 6, n)]), np.log(6.0)


def test_nll_training_with_nnx_jit_lowers_nll():
    x, entropy = _target_data()

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.born = MPSBornMachine(L, V, bond_dim=4, init_std=0.1, rngs=rngs)

        def __call__(self, x):
            return self.born(x)

    net = Net(nnx.Rngs(0))
    opt = nnx.Optimizer(net, optax.adam(5e-2), wrt=nnx.Param)

    @nnx.jit
    def step(net, opt, x):
        loss, grads = nnx.value_and_grad(lambda n: -n(x).mean())(net)
        opt.update(net, grads)
        return loss

    losses = [float(step(net, opt, x)) for _ in range(60)]
    assert losses[0] > L * np.log(V) - 0.5  # starts near uniform
    assert losses[-1] < losses[0] - 0.5 * (losses[0] - entropy)


def test_trains_through_the_linen_bridge():
    x, _ = _target_data()

    class Density(linen.Module):
        @linen.compact
        def __call__(self, x):
            return bridge.to_linen(MPSBornMachine, L, V, bond_dim=4, init_std=0.1)(x)

    model = Density()
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    lp = model.apply({"params": params}, x)
    assert lp.shape == (x.shape[0],) and np.all(np.isfinite(np.asarray(lp)))
    tx = optax.adam(5e-2)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(lambda p: -model.apply({"params": p}, x).mean())(params)
        upd, state = tx.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss

    losses = []
    for _ in range(30):
        params, state, loss = step(params, state)
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 1.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(bond_dim=0), "bond_dim"),
    (dict(bond_dim=2, embedding_dim=0), "embedding_dim"),
    (dict(bond_dim=2, init_std=-1.0), "init_std"),
    (dict(bond_dim=2, embedding_init=3), "embedding_init"),
    (dict(bond_dim=2, embedding_init=lambda k, s, dt: jnp.zeros((2, 2), dt)), "shape"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MPSBornMachine(4, 3, rngs=nnx.Rngs(0), **kwargs)


def test_bad_sizes_and_inputs_raise():
    with pytest.raises(ValueError, match="n_sites"):
        MPSBornMachine(0, 3, bond_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="vocab_size"):
        MPSBornMachine(4, 0, bond_dim=2, rngs=nnx.Rngs(0))
    m = MPSBornMachine(4, 3, bond_dim=2, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        m(jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        m(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="n must"):
        m.sample(jax.random.PRNGKey(0), 0)


def test_born_mps_conversions_keep_probabilities():
    """``to_born_mps`` folds the embedding into the cores of a canonical
    ``tnlib.sweep_born.BornMPS``; ``from_born_mps`` takes those cores as they are (the
    one shared layout, identity embedding). Both ways the probabilities of every
    sequence agree with the dense ones, and the round trip from the sweep's form gives
    back the very same cores."""
    from tnlib import sweep_born
    from tnlib.models.born import from_born_mps, to_born_mps

    model = small_model(embedding_dim=2)  # a non-identity embedding (V=3 into d=2)
    model.embedding[...] = jax.random.normal(jax.random.PRNGKey(7), (V, 2), F64)
    ref = dense_probs(model)
    mps = to_born_mps(model, center=1)
    assert mps.local_dim == V and mps.max_bond == R and int(mps.center) == 1
    nll = float(sweep_born.nll(mps, jnp.asarray(ALL)))
    np.testing.assert_allclose(nll, -np.mean(np.log(ref)), rtol=1e-10)
    back = from_born_mps(mps)
    np.testing.assert_array_equal(np.asarray(back.embedding[...]), np.eye(V))
    np.testing.assert_array_equal(np.asarray(back.cores[...]), np.asarray(mps.cores))
    np.testing.assert_allclose(dense_probs(back), ref, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.exp(np.asarray(back.log_prob(jnp.asarray(ALL)))), ref,
                               rtol=1e-9, atol=1e-14)
    again = to_born_mps(back, center=1)  # already canonical there: the same cores
    np.testing.assert_allclose(np.abs(np.asarray(again.cores)), np.abs(np.asarray(mps.cores)),
                               atol=1e-12)
