"""Fast paths: the log-depth ("tree") feature contraction against the dense tensor and
the sequential scan (float64, jit, vmap, grad, 1000 sites in float32 / bfloat16), and
trace / path-optimizer counts showing that repeated calls with the same shapes never
retrace or re-plan."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dense_checks import F64, close
from flax import nnx
from jax.test_util import check_grads

from tnlib import network, tt
from tnlib.models import MPSClassifier

METHODS = ("scan", "tree")


def normal(seed, shape, dtype=F64):
    """NumPy draws: test inputs without compiling a random-number kernel per shape."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def uniform(seed, shape, dtype=F64):
    return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), dtype)


def random_tt(seed, dims, rank):
    ranks = (1, *((rank,) * (len(dims) - 1) if isinstance(rank, int) else rank), 1)
    return tt.TensorTrain(tuple(normal(seed + k, (ranks[k], n, ranks[k + 1]))
                                / np.sqrt(n * ranks[k]) for k, n in enumerate(dims)))


def dense_value(t, feats):
    ref = tt.to_dense(t)
    for f in feats:
        ref = jnp.tensordot(f, ref, axes=(0, 0))
    return ref


# ------------------------------------------------------------ tree vs scan vs dense


def test_both_methods_match_dense_for_short_chains():
    # L = 1 (one core), 2, 6 (an even level, then an odd one padded with the identity)
    # and a non-uniform chain; one compilation per chain computes both methods
    cases = [((3,), 1), ((3, 3), 2), ((2,) * 6, 3), ((2, 3, 2), (2, 3))]

    @jax.jit
    def run_all(inputs):  # dense references and both methods for every chain, one compile
        out = []
        for t, feats in inputs:
            arg = jnp.stack(feats) if len(set(t.dims)) == 1 else feats
            out.append((dense_value(t, feats),
                        [tt.contract_features(t, arg, method=m) for m in METHODS]))
        return out

    inputs = [(random_tt(i, dims, rank), [normal(10 * i + j + 100, (n,)) for j, n in
                                          enumerate(dims)]) for i, (dims, rank) in enumerate(cases)]
    for ref, results in run_all(inputs):
        for mant, logs in results:
            close(mant * jnp.exp(logs), ref)
            assert abs(abs(float(mant)) - 1.0) < 1e-12  # unit mantissa: v / ||v||


def test_sweep_features_methods_agree_on_vector_and_scale():
    cores = normal(1, (7, 3, 2, 3))
    feats = normal(2, (7, 2))
    start = normal(3, (3,))

    @jax.jit
    def both(c, f, v):  # 1 site (no pairing level) and 7 sites (odd levels padded)
        return [[tt.sweep_features(c[:L], f[:L], v, method=m) for m in METHODS] for L in (1, 7)]

    for (v1, s1), (v2, s2) in both(cores, feats, start):
        close(v2, v1)
        close(s2, s1)
    empty = jnp.zeros((0, 3, 2, 3), F64)  # no sites: the vector comes back unchanged
    v, s = tt.sweep_features(empty, jnp.zeros((0, 2), F64), start, method="tree")
    close(v, start)
    assert float(s) == 0.0


def test_methods_agree_under_vmap_and_grad():
    t = random_tt(3, (2,) * 5, 2)
    feats = normal(4, (4, 5, 2))

    def value(t, f, m):
        mant, logs = tt.contract_features(t, f, method=m)
        return mant * jnp.exp(logs)

    @jax.jit
    def batched_and_grads(t):
        vals = [jax.vmap(lambda f, m=m: value(t, f, m))(feats) for m in METHODS]
        grads = [jax.grad(lambda t, m=m: jnp.sum(jax.vmap(lambda f: value(t, f, m))(feats)))(t)
                 for m in METHODS]
        return vals, grads

    (v_scan, v_tree), (g_scan, g_tree) = batched_and_grads(t)
    ref = jnp.stack([dense_value(t, f) for f in feats])
    close(v_scan, ref)
    close(v_tree, ref)
    for a, b in zip(g_tree.cores, g_scan.cores, strict=True):
        close(a, b)
    kw = dict(order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    small = random_tt(5, (2, 2, 2), 2)
    check_grads(jax.jit(lambda t: value(t, feats[0, :3], "tree")), (small,), **kw)


def test_thousand_sites_low_precision_match_float64_log_value():
    L, r, n = 1000, 4, 2
    noise = 0.3 * normal(0, (L, r, n, r))
    cores = 2.0 * (jnp.eye(r, dtype=F64)[None, :, None, :] + noise)  # grows ~2x per site
    feats = uniform(1, (L, n))
    e0 = jnp.zeros((r,), F64).at[0].set(1)

    def log_value(c, f, m):
        v, s = tt.sweep_features(c, f, e0.astype(c.dtype), method=m)
        return jnp.log(jnp.abs(v[0].astype(F64))) + s.astype(F64)

    @jax.jit
    def all_log_values(cores, feats):  # one compile for both dtypes and both methods
        out = []
        for dtype in (jnp.float32, jnp.bfloat16):
            c, f = cores.astype(dtype), feats.astype(dtype)
            c64, f64 = c.astype(F64), f.astype(F64)  # the same (rounded) inputs in float64
            out.append((log_value(c64, f64, "scan"), [log_value(c, f, m) for m in METHODS]))
        return out

    for ref, got in all_log_values(cores, feats):
        assert abs(float(ref)) > 200  # exp(ref) would over- or underflow float32
        for g in got:
            assert np.isfinite(float(g))
            np.testing.assert_allclose(float(g), float(ref), rtol=1e-3)


def test_auto_rule_and_bad_method():
    assert tt.feature_method(1000, 8) == "tree"
    assert tt.feature_method(1000, 8, batch=16) == "scan"
    assert tt.feature_method(64, 32) == "scan"
    assert tt.feature_method(1000, 4) == "scan"
    assert tt.feature_method(5, 2, method="tree") == "tree"
    t = random_tt(0, (2, 2), 2)
    with pytest.raises(ValueError, match="method"):
        tt.contract_features(t, jnp.ones((2, 2), F64), method="dense")
    with pytest.raises(ValueError, match="method"):
        tt.sweep_features(jnp.ones((2, 2, 2, 2)), jnp.ones((2, 2)), jnp.ones(2), method="x")
    with pytest.raises(ValueError, match="contraction"):
        MPSClassifier(4, 2, contraction="dense", rngs=nnx.Rngs(0))


def test_mps_classifier_contraction_choices_agree():
    x = uniform(5, (3, 5))
    models = [MPSClassifier(5, 2, bond_dim=2, init_std=0.3, contraction=c, param_dtype=F64,
                            rngs=nnx.Rngs(0)) for c in ("auto", "scan", "tree")]
    assert tt.feature_method(3, 2, batch=3) == "scan"  # what "auto" resolves to here
    amps = nnx.jit(lambda ms, x: [m.amplitudes(x) for m in ms])(models, x)
    # auto: the same computation as the scan (as before this option existed), bit for bit
    np.testing.assert_array_equal(amps[0][0], amps[1][0])
    np.testing.assert_array_equal(amps[0][1], amps[1][1])
    val = [a * jnp.exp(s)[..., None] for a, s in amps]
    close(val[2], val[1])


# ----------------------------------------------------------------- trace counting


def counted(f):
    """``jax.jit(f)`` and a list whose length is the number of times ``f`` was traced."""
    traces = []

    def wrapped(*args):
        traces.append(1)
        return f(*args)

    return jax.jit(wrapped), traces


def test_jitted_tt_ops_trace_once_per_shape():
    ops = {
        "inner": lambda a, f: tt.inner(a, a),
        "round": lambda a, f: tt.to_dense(tt.round(a, max_rank=2)),
        "scan": lambda a, f: tt.contract_features(a, f, method="scan"),
        "tree": lambda a, f: tt.contract_features(a, f, method="tree"),
    }
    for name, op in ops.items():
        fn, traces = counted(op)
        for seed in range(3):  # new values, same shapes: one trace
            fn(random_tt(seed, (2,) * 3, 2), normal(seed, (3, 2)))
        assert len(traces) == 1, name
        for seed in range(2):  # a new shape: exactly one more
            fn(random_tt(seed, (2,) * 4, 2), normal(seed, (4, 2)))
        assert len(traces) == 2, name


def test_contract_path_is_planned_once_and_contract_traces_once(monkeypatch):
    calls = []
    real = network.opt_einsum.contract_path

    def counting(*args, **kwargs):  # jnp.einsum also calls it, with the fixed path
        calls.append(kwargs.get("shapes", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(network.opt_einsum, "contract_path", counting)
    network.contract_path.cache_clear()
    planned = lambda: sum(1 for c in calls if c)  # noqa: E731
    spec = "ab,bc,cd,de->ae"
    arrays = [normal(k, (3, 3)) for k in range(4)]
    ref = arrays[0] @ arrays[1] @ arrays[2] @ arrays[3]
    for _ in range(3):
        close(network.contract(arrays, spec), ref)
    assert planned() == 1
    assert network.contract_path.cache_info().hits == 2
    fn, traces = counted(lambda *xs: network.contract(xs, spec))
    for k in range(3):
        close(fn(*[a + k for a in arrays]), network.contract([a + k for a in arrays], spec))
    assert len(traces) == 1 and planned() == 1  # the jitted trace reuses the cached path
    network.contract(arrays[:3], "ab,bc,cd->ad")  # a new signature: planned once more
    assert planned() == 2


def test_mps_classifier_train_step_traces_once():
    model = MPSClassifier(4, 3, bond_dim=2, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    traces = []

    @nnx.jit
    def step(model, opt, x, y):
        traces.append(1)

        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    @nnx.jit
    def forward(model, x):
        traces.append(2)
        return model(x)

    for k in range(3):
        x = uniform(k, (4, 4), jnp.float32)
        y = jnp.arange(4) % 3
        step(model, opt, x, y)
        forward(model, x)
    assert traces.count(1) == 1 and traces.count(2) == 1
