"""Properties of tnlib.dlrt and tnlib.optim over random shapes, ranks and the real
dtypes: the factors agree with the dense float64 matrix they stand for, the truncation
count with a brute-force count, one integrator step keeps the bases orthonormal and the
rank within its bounds, GaLore's update with a linear inner optimizer is the projected
gradient; bad arguments and unsupported dtypes raise errors naming the argument.

dtype policy: dlrt is real float32 / float64 only (TypeError naming the argument
otherwise); galore takes whatever its inner optimizer takes (checked here in float32 /
float64).

Cost: data from NumPy; every example shape compiles, so the examples are few (3-5 per
property, against the suite's 12).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import BF16, C64, F32, F64, close, covers, dtype_id, finite, raises, seeds

from tnlib import dlrt, optim

REAL = [F32, F64]


@st.composite
def factor_shapes(draw):
    n, m = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    max_rank = draw(st.integers(1, min(n, m) // 2))
    return n, m, draw(st.integers(1, max_rank)), max_rank


@covers("dlrt.USV", "dlrt.random", "dlrt.from_dense", "dlrt.to_dense", "dlrt.apply",
        "dlrt.active_params", "dlrt.shrink")
@pytest.mark.parametrize("dtype", REAL, ids=dtype_id)
@settings(max_examples=5)
@given(shape=factor_shapes(), seed=seeds)
def test_factors_are_the_dense_matrix(dtype, shape, seed):
    n, m, r, big = shape
    f = dlrt.random(jax.random.PRNGKey(seed), (n, m), r, max_rank=big, dtype=dtype)
    assert f.shape == (n, m) and f.max_rank == big and int(f.rank) == r
    u, s, v = (np.asarray(a, np.float64) for a in (f.u, f.s, f.v))
    w = u @ s @ v.T
    close(dlrt.to_dense(f), w, dtype)
    assert np.linalg.matrix_rank(w, tol=1e-4 * max(1, np.abs(w).max())) == r
    x = np.random.default_rng(seed).standard_normal((3, m))
    close(jax.jit(dlrt.apply)(f, jnp.asarray(x, dtype)), x @ w.T, dtype, factor=4)
    assert int(dlrt.active_params(f)) == r * (n + m)
    close(dlrt.to_dense(dlrt.shrink(f, r)), w, dtype)
    g = dlrt.from_dense(jnp.asarray(w, dtype), max_rank=big, rank=r)
    close(dlrt.to_dense(g), w, dtype, factor=8)
    raises(lambda: dlrt.random(jax.random.PRNGKey(0), (n, m), r, max_rank=min(n, m) // 2 + 1),
           "max_rank")
    for bad in (BF16, C64):
        raises(lambda bad=bad: dlrt.random(jax.random.PRNGKey(0), (n, m), r, dtype=bad),
               "dtype", TypeError)


@covers("dlrt.truncate")
@given(size=st.integers(1, 8), seed=seeds, rtol=st.floats(0, 0.99), lo=st.integers(1, 3))
def test_truncation_count_is_the_brute_force_count(size, seed, rtol, lo):
    s = np.random.default_rng(seed).standard_normal((size, size))
    sig = np.linalg.svd(s, compute_uv=False)
    tails = [np.sqrt(np.sum(sig[k:] ** 2)) for k in range(size + 1)]
    want = next(k for k in range(size + 1) if tails[k] <= rtol * np.linalg.norm(sig) * (1 + 1e-12))
    hi = max(lo, size - 1)
    p, got, q, k = dlrt.truncate(jnp.asarray(s), rtol, max_rank=hi, min_rank=lo)
    assert int(k) in {min(max(want, lo), hi), min(max(want + 1, lo), hi)}  # ties at rounding
    close((np.asarray(p) * np.asarray(got)) @ np.asarray(q).T, s, F64)


@covers("dlrt.State", "dlrt.init", "dlrt.step")
@pytest.mark.parametrize("dtype", REAL, ids=dtype_id)
@settings(max_examples=4)
@given(shape=factor_shapes(), seed=seeds, rtol=st.sampled_from([0.0, 0.05, 0.3]))
def test_a_step_keeps_orthonormal_bases_and_bounded_ranks(dtype, shape, seed, rtol):
    n, m, r, big = shape
    g = np.random.default_rng(seed)
    x, y = jnp.asarray(g.standard_normal((16, m)), dtype), jnp.asarray(g.standard_normal((16, n)),
                                                                       dtype)
    params = {"w": dlrt.random(jax.random.PRNGKey(seed), (n, m), r, max_rank=big, dtype=dtype),
              "b": jnp.zeros(n, dtype)}
    opt = optax.sgd(0.05)
    state = dlrt.init(params, opt)
    assert isinstance(state, dlrt.State)
    loss = lambda p: jnp.mean((dlrt.apply(p["w"], x) + p["b"] - y) ** 2)
    new, state, info = jax.jit(lambda p, s: dlrt.step(loss, p, s, opt, rtol=rtol))(params, state)
    finite((new, info))
    k = int(new["w"].rank)
    assert 1 <= k <= big and k <= 2 * r and int(info["ranks"][0]) == k
    eye = np.diag((np.arange(big) < k).astype(float))
    u, v = np.asarray(new["w"].u, np.float64), np.asarray(new["w"].v, np.float64)
    close(u.T @ u, eye, dtype, factor=10)
    close(v.T @ v, eye, dtype, factor=10)
    raises(lambda: dlrt.step(loss, params, state, opt, rtol=-0.1), "rtol")
    raises(lambda: dlrt.init({"b": params["b"]}, opt), "dlrt.USV")


@covers("optim.galore", "optim.GaLoreState", "optim.projected_shape")
@pytest.mark.parametrize("dtype", REAL, ids=dtype_id)
@given(m=st.integers(1, 9), n=st.integers(1, 9), rank=st.integers(1, 5), seed=seeds,
       scale=st.sampled_from([0.25, 1.0]))
def test_galore_sgd_update_is_the_scaled_projected_gradient(dtype, m, n, rank, seed, scale):
    g = np.random.default_rng(seed)
    grads = {"w": g.standard_normal((m, n)), "b": g.standard_normal(m)}
    tx = optim.galore(optax.sgd(1.0), rank, scale=scale)
    state = tx.init(jax.tree.map(lambda a: jnp.asarray(a, dtype), grads))
    assert isinstance(state, optim.GaLoreState)
    upd, state = jax.jit(tx.update)(jax.tree.map(lambda a: jnp.asarray(a, dtype), grads), state)
    w = grads["w"]
    if min(m, n) > rank:
        u, _, vh = np.linalg.svd(w, full_matrices=False)
        proj = w @ vh[:rank].T @ vh[:rank] if m >= n else u[:, :rank] @ u[:, :rank].T @ w
        want = -scale * proj
        shape = (m, rank) if m >= n else (rank, n)
    else:
        want, shape = -w, (m, n)
    assert optim.projected_shape((m, n), rank) == shape
    close(upd["w"], want, dtype, factor=50)
    close(upd["b"], -grads["b"], dtype)
    raises(lambda: optim.galore(optax.sgd(1.0), 0), "rank")


@covers("models.DLRTLinear")
@settings(max_examples=6)
@given(shape=factor_shapes(), seed=seeds, bias=st.booleans())
def test_dlrt_layer_is_its_dense_map(shape, seed, bias):
    from flax import nnx

    from tnlib.models import DLRTLinear

    n_out, n_in, r, big = shape
    layer = DLRTLinear(n_in, n_out, rank=r, max_rank=big, use_bias=bias,
                       param_dtype=jnp.float64, rngs=nnx.Rngs(seed))
    x = np.random.default_rng(seed).standard_normal((2, n_in))
    w = np.asarray(dlrt.to_dense(layer.w.get_value()))
    close(layer(jnp.asarray(x)), x @ w.T, F64)
    assert layer.rank == r and layer.num_params() == r * (n_in + n_out) + bias * n_out
    raises(lambda: DLRTLinear(n_in, n_out, rank=big + 1, max_rank=big, rngs=nnx.Rngs(0)),
           "rank")


@st.composite
def tucker_shapes(draw):
    d = draw(st.integers(2, 3))
    dims = tuple(draw(st.integers(2, 7)) for _ in range(d))
    while True:
        big = tuple(draw(st.integers(1, n // 2)) for n in dims)
        if all(big[i] <= int(np.prod(big[:i] + big[i + 1:])) for i in range(d)):
            break
    ranks = tuple(draw(st.integers(1, b)) for b in big)
    return dims, ranks, big


@covers("dlrt.TuckerFactors", "dlrt.random_tucker", "dlrt.tucker_from_dense",
        "dlrt.tucker_to_dense", "dlrt.as_tucker")
@pytest.mark.parametrize("dtype", REAL, ids=dtype_id)
@settings(max_examples=4)
@given(shape=tucker_shapes(), seed=seeds)
def test_tucker_factors_are_the_dense_tensor(dtype, shape, seed):
    from tnlib import tucker

    dims, ranks, big = shape
    t = dlrt.random_tucker(jax.random.PRNGKey(seed), dims, ranks, max_ranks=big, dtype=dtype)
    assert t.dims == dims and t.max_ranks == big and tuple(np.asarray(t.ranks)) == ranks
    ref = np.asarray(t.core, np.float64)
    for i, u in enumerate(t.factors):
        u = np.asarray(u, np.float64)
        assert not np.any(u[:, ranks[i]:])  # zero beyond the active rank
        close(u.T @ u, np.diag((np.arange(big[i]) < ranks[i]).astype(float)), dtype, factor=10)
        ref = np.moveaxis(np.tensordot(u, ref, axes=(1, i)), 0, i)
    close(jax.jit(dlrt.tucker_to_dense)(t), ref, dtype)
    close(tucker.to_dense(dlrt.as_tucker(t)), ref, dtype)
    back = dlrt.tucker_from_dense(jnp.asarray(ref, dtype), max_ranks=big, ranks=ranks)
    close(dlrt.tucker_to_dense(back), ref, dtype, factor=10)
    raises(lambda: dlrt.random_tucker(jax.random.PRNGKey(0), dims, ranks, max_ranks=big,
                                      dtype=C64), "dtype",
           TypeError)


@covers("models.factorize", "models.Replacement")
@settings(max_examples=2)
@given(widths=st.lists(st.integers(4, 12), min_size=2, max_size=3), r=st.integers(1, 2),
       seed=seeds)
def test_factorize_is_exact_at_the_planted_rank(widths, r, seed):
    from flax import nnx

    from tnlib.models import factorize

    g = np.random.default_rng(seed)
    layers = []
    for i, o in zip(widths[:-1], widths[1:], strict=True):
        lin = nnx.Linear(i, o, param_dtype=jnp.float64, rngs=nnx.Rngs(seed))
        lin.kernel[...] = jnp.asarray(g.standard_normal((i, r)) @ g.standard_normal((r, o)))
        layers.append(lin)
    model = nnx.List(layers)

    def run(x):
        for layer in model:
            x = layer(x)
        return x

    x = jnp.asarray(g.standard_normal((3, widths[0])))
    before = np.asarray(run(x))
    report = factorize(model, "lowrank", rank=r)
    assert [rep.path for rep in report] == [(k,) for k in range(len(layers))]
    for rep, (i, o) in zip(report, zip(widths[:-1], widths[1:], strict=True), strict=True):
        assert rep.old_params == i * o + o
        assert rep.replaced == (r * (i + o) + o < i * o + o)
        assert rep.new_params == (r * (i + o) + o)
        assert rep.rel_error < 1e-9
    close(run(x), before, F64, scale=max(1.0, float(np.abs(before).max())))


@covers("models.DLRTConv")
@settings(max_examples=4)
@given(c_in=st.integers(1, 3), c_out=st.integers(2, 6), k=st.integers(1, 3), seed=seeds)
def test_dlrt_conv_is_its_dense_convolution(c_in, c_out, k, seed):
    from flax import nnx

    from tnlib.models import DLRTConv

    largest = min(c_out, k * k * c_in) // 2
    if largest < 1:
        raises(lambda: DLRTConv(c_in, c_out, k, rngs=nnx.Rngs(0)), "DLRTConv needs")
        return
    layer = DLRTConv(c_in, c_out, k, rank=1.0, param_dtype=jnp.float64, rngs=nnx.Rngs(seed))
    assert layer.rank == largest
    x = np.random.default_rng(seed).standard_normal((2, 5, 5, c_in))
    want = jax.lax.conv_general_dilated(jnp.asarray(x), layer.to_dense(), (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    close(layer(jnp.asarray(x)), np.asarray(want), F64)
