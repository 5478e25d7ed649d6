"""LoRA, LoTR, FLoRA and DoTA adapters on frozen dense weights: equal to the base at
init, delta equals its dense formula (DoTA: the truncated MPO of the weight), parameter
counts, only adapter parameters train (through nnx.jit and through the Linen bridge),
bad arguments."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.nnx import bridge
from sklearn.datasets import load_digits
from train_checks import linen_classifier_losses, nnx_classifier_losses

from tnlib.models.adapters import DoTA, FLoRA, Frozen, LoRA, LoTR

F64 = jnp.float64
DIMS = ("NHWC", "HWIO", "NHWC")


def _weights(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype) / np.sqrt(shape[-2])


def _adapters():
    """One of each adapter on float64 frozen weights (dense 6 -> 4, a stack of 3, a
    3x3 conv 3 -> 5)."""
    rngs = nnx.Rngs(0)
    lora = LoRA(_weights(6, 4), _weights(1, 4, seed=1)[0], rank=2, alpha=4.0,
                param_dtype=F64, rngs=rngs)
    lotr = LoTR(_weights(3, 6, 4, seed=2), _weights(3, 1, 4, seed=3)[:, 0], rank=2,
                param_dtype=F64, rngs=rngs)
    flora_conv = FLoRA(_weights(3, 3, 3, 5, seed=4), _weights(1, 5, seed=5)[0],
                       rank=(2, 3, 2, 3), scale=0.5, strides=(2, 1), padding="SAME",
                       param_dtype=F64, rngs=rngs)
    flora_dense = FLoRA(_weights(6, 4, seed=6), rank=3, param_dtype=F64, rngs=rngs)
    return lora, lotr, flora_conv, flora_dense


def _conv(x, kernel, strides):
    return jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(kernel), strides, "SAME",
                                        dimension_numbers=DIMS)


def _randomize(module, seed):
    """Give every nnx.Param of ``module`` Gaussian entries (the zero factors included)."""
    rng = np.random.default_rng(seed)
    nnx.update(module, jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)),
                                    nnx.state(module, nnx.Param)))


def test_adapters_equal_the_base_at_init_and_their_delta_formula():
    lora, lotr, flora_conv, flora_dense = _adapters()
    x = np.random.default_rng(7).normal(size=(2, 3, 6))
    img = np.random.default_rng(8).normal(size=(2, 5, 5, 3))
    k, b = np.asarray(lora.kernel[...]), np.asarray(lora.bias[...])
    kc, bc = np.asarray(flora_conv.kernel[...]), np.asarray(flora_conv.bias[...])
    kl, bl = np.asarray(lotr.kernel[...]), np.asarray(lotr.bias[...])
    kd = np.asarray(flora_dense.kernel[...])
    # at init every delta is exactly zero and each adapter is its base layer
    for m in (lora, lotr, flora_conv, flora_dense):
        assert not np.any(np.asarray(m.delta()))
    # the base layer computed by XLA too: numpy's matmul may sum in another order (1 ulp)
    xj = jnp.asarray(x)
    np.testing.assert_array_equal(lora(x), xj @ k + b)
    np.testing.assert_array_equal(lotr(x, 1), xj @ kl[1] + bl[1])
    np.testing.assert_array_equal(flora_dense(x), xj @ kd)
    np.testing.assert_allclose(flora_conv(img), _conv(img, kc, (2, 1)) + bc, rtol=1e-13)
    # with every factor random, delta is the dense formula and __call__ uses W + delta
    for i, m in enumerate((lora, lotr, flora_conv, flora_dense)):
        _randomize(m, i)
    a, bb = np.asarray(lora.lora_a[...]), np.asarray(lora.lora_b[...])
    np.testing.assert_allclose(lora.delta(), (4.0 / 2) * a @ bb, rtol=1e-12, atol=1e-13)
    u, g, v = (np.asarray(p[...]) for p in (lotr.u, lotr.cores, lotr.v))
    d_lotr = np.einsum("ia,lab,ob->lio", u, g, v)  # alpha = rank: scale 1
    np.testing.assert_allclose(lotr.delta(), d_lotr, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(lotr.delta(2), d_lotr[2], rtol=1e-12, atol=1e-13)
    core, *fs = [np.asarray(p[...]) for p in (flora_conv.core, *flora_conv.factors)]
    d_conv = 0.5 * np.einsum("abcd,ha,wb,ic,od->hwio", core, *fs)
    np.testing.assert_allclose(flora_conv.delta(), d_conv, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(flora_conv.merged_kernel(), kc + d_conv, rtol=1e-12, atol=1e-13)
    core, f1, f2 = (np.asarray(p[...]) for p in (flora_dense.core, *flora_dense.factors))
    np.testing.assert_allclose(flora_dense.delta(), f1 @ core @ f2.T, rtol=1e-12, atol=1e-13)
    call = nnx.jit(lambda m, x: m(x))
    for y in (lora(x), call(lora, x)):
        np.testing.assert_allclose(y, x @ (k + (4.0 / 2) * a @ bb) + b, rtol=1e-12, atol=1e-13)
    for y in (flora_dense(x), call(flora_dense, x)):
        np.testing.assert_allclose(y, x @ (kd + f1 @ core @ f2.T), rtol=1e-12, atol=1e-13)
    for y in (flora_conv(img), call(flora_conv, img)):
        np.testing.assert_allclose(y, _conv(img, kc + d_conv, (2, 1)) + bc, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(flora_conv(img[0]), flora_conv(img)[0], rtol=1e-13)
    # LoTR: a concrete or traced layer index (as in a scan over blocks)
    traced = nnx.jit(lambda m, x, layer: m(x, layer))
    for layer in range(3):
        ref = x @ (kl[layer] + d_lotr[layer]) + bl[layer]
        np.testing.assert_allclose(lotr(x, layer), ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(traced(lotr, x, jnp.int32(layer)), ref, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(lotr.merged_kernel(layer), kl[layer] + d_lotr[layer],
                                   rtol=1e-12, atol=1e-13)


def test_from_layers_and_parameter_counts_by_hand():
    """Shapes only (nnx.eval_shape): nothing is computed."""
    def shaped(make):
        return nnx.eval_shape(lambda: make(nnx.Rngs(0)))

    lora = shaped(lambda r: LoRA.from_linear(nnx.Linear(6, 4, rngs=r), rank=3, rngs=r))
    assert lora.num_params() == 3 * 6 + 3 * 4 and lora.scale == 1.0
    lotr = shaped(lambda r: LoTR.from_linears(
        [nnx.Linear(6, 4, use_bias=False, rngs=r) for _ in range(5)], rank=2, rngs=r))
    assert lotr.kernel.shape == (5, 6, 4) and lotr.bias is None
    assert lotr.num_params() == 2 * 6 + 2 * 4 + 5 * 2 * 2  # vs LoRA on each: 5 * 20
    flora = shaped(lambda r: FLoRA.from_conv(nnx.Conv(3, 8, (3, 3), strides=2, rngs=r),
                                             rank=2, rngs=r))
    assert flora.strides == (2, 2) and flora.ranks == (2, 2, 2, 2)
    assert flora.num_params() == 2**4 + 2 * (3 + 3 + 3 + 8)
    assert shaped(lambda r: FLoRA.from_linear(nnx.Linear(6, 4, rngs=r), rank=9,
                                              rngs=r)).ranks == (6, 4)  # capped
    # 24 = 2*3*4 in, 8 = 2*2*2 out: bonds capped at min(4, 48) = 4 and min(32, 8) = 8
    dota = shaped(lambda r: DoTA.from_linear(nnx.Linear(24, 8, rngs=r), rank=5))
    assert dota.in_factors == (2, 3, 4) and dota.out_factors == (2, 2, 2)
    assert dota.ranks == (1, 4, 5, 1)
    assert dota.num_params() == 1 * 2 * 2 * 4 + 4 * 2 * 3 * 5 + 5 * 2 * 4 * 1
    for m in (lora, lotr, flora, dota):
        params = sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
        assert params == m.num_params()
        assert jax.tree.leaves(nnx.state(m, Frozen))  # the base weights are there, frozen


class _Net(nnx.Module):
    """A frozen random conv -> 2 dense blocks -> head, every layer adapted."""

    def __init__(self, rngs):
        g = np.random.default_rng(0)
        w = lambda fan_in, *s: (g.normal(size=s) / np.sqrt(fan_in)).astype(np.float32)
        self.conv = FLoRA(w(9, 3, 3, 1, 8), np.zeros(8, np.float32), rank=(3, 3, 1, 4),
                          strides=2, rngs=rngs)
        self.blocks = LoTR(w(128, 2, 128, 128), np.zeros((2, 128), np.float32), rank=4,
                           rngs=rngs)
        self.head = LoRA(w(128, 128, 10), np.zeros(10, np.float32), rank=4, rngs=rngs)

    def __call__(self, x):
        h = jax.nn.relu(self.conv(x)).reshape(x.shape[0], -1)
        for layer in range(2):
            h = jax.nn.relu(self.blocks(h, layer))
        return self.head(h)


def _digits(n=256):
    d = load_digits()
    return jnp.asarray(d.images[:n, :, :, None] / 16.0, jnp.float32), jnp.asarray(d.target[:n])


def test_only_the_adapters_train_on_digits_with_nnx_jit():
    x, y = _digits()
    net = _Net(nnx.Rngs(0))
    frozen = jax.tree.map(np.array, nnx.state(net, Frozen))
    params = jax.tree.map(np.array, nnx.state(net, nnx.Param))
    losses = nnx_classifier_losses(net, x, y, steps=30, tx=optax.adam(1e-2))
    assert losses[-1] < 0.5 * losses[0], losses
    jax.tree.map(np.testing.assert_array_equal, frozen, nnx.state(net, Frozen))
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), params,
                         nnx.state(net, nnx.Param))
    assert len(jax.tree.leaves(moved)) == 5 + 3 + 2 and all(
        m > 0 for m in jax.tree.leaves(moved)), moved


def test_adapters_train_through_the_linen_bridge():
    x, y = _digits(128)
    g = np.random.default_rng(1)
    conv_k = g.normal(size=(3, 3, 1, 4)).astype(np.float32) / 3
    blocks = g.normal(size=(2, 64, 64)).astype(np.float32) / 8
    head = g.normal(size=(64, 10)).astype(np.float32) / 8

    class Net(linen.Module):
        @linen.compact
        def __call__(self, x):
            h = jax.nn.relu(bridge.to_linen(FLoRA, conv_k, rank=2, strides=2)(x))
            h = h.reshape(x.shape[0], -1)
            lotr = bridge.to_linen(LoTR, blocks, rank=2)
            h = jax.nn.relu(lotr(jax.nn.relu(lotr(h, 0)), 1))
            return bridge.to_linen(LoRA, head, rank=4)(h)

    model = Net()
    variables = model.init(jax.random.PRNGKey(0), x)
    assert set(variables) == {"params", "Frozen"}  # the base weights are not params
    paths = [jax.tree_util.keystr(p) for p, _ in
             jax.tree_util.tree_flatten_with_path(variables["params"])[0]]
    assert len(paths) == 5 + 3 + 2 and not any("kernel" in p or "bias" in p for p in paths)
    losses = linen_classifier_losses(model, x, y, steps=30, lr=2e-2)
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("make,match", [
    (lambda: LoRA(np.ones(6), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LoRA(np.ones((6, 4), np.int32), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LoRA(np.ones((6, 4)), np.ones(6), rank=1, rngs=nnx.Rngs(0)), "bias"),
    (lambda: LoRA(np.ones((6, 4)), rank=5, rngs=nnx.Rngs(0)), "rank"),
    (lambda: LoRA(np.ones((6, 4)), rank=0, rngs=nnx.Rngs(0)), "rank"),
    (lambda: LoRA(np.ones((6, 4)), rank=1, alpha=float("nan"), rngs=nnx.Rngs(0)), "alpha"),
    (lambda: LoRA(np.ones((6, 4)), rank=2, param_dtype=F64, rngs=nnx.Rngs(0))(np.ones((2, 5))),
     r"x must have shape \(\.\.\., 6\)"),
    (lambda: LoTR(np.ones((6, 4)), rank=1, rngs=nnx.Rngs(0)), "kernel"),
    (lambda: LoTR(np.ones((2, 6, 4)), np.ones((3, 4)), rank=1, rngs=nnx.Rngs(0)), "bias"),
    (lambda: LoTR(np.ones((3, 6, 4)), rank=2, param_dtype=F64, rngs=nnx.Rngs(0))(
        np.ones(6), 3), "layer"),
    (lambda: LoTR(np.ones((3, 6, 4)), rank=2, param_dtype=F64, rngs=nnx.Rngs(0))(
        np.ones(6), 0.5), "layer"),
    (lambda: nnx.eval_shape(lambda: LoTR.from_linears(
        [nnx.Linear(6, 4, rngs=nnx.Rngs(0)), nnx.Linear(6, 3, rngs=nnx.Rngs(0))], rank=1,
        rngs=nnx.Rngs(0))), "linears"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=(2, 2, 3, 2), rngs=nnx.Rngs(0)), "rank"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=2, strides=(1, 0), rngs=nnx.Rngs(0)),
     "strides"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=2, padding="FULL", rngs=nnx.Rngs(0)),
     "padding"),
    (lambda: FLoRA(np.ones((3, 3, 3, 5)), rank=(2, 3, 2, 3), param_dtype=F64,
                   rngs=nnx.Rngs(0))(
        np.ones((5, 5, 4))), "x must"),
    (lambda: nnx.eval_shape(lambda: FLoRA.from_conv(
        nnx.Conv(2, 4, (3, 3), kernel_dilation=2, rngs=nnx.Rngs(0)), rank=2,
        rngs=nnx.Rngs(0))), "dilation"),
    (lambda: DoTA(np.ones(6), rank=1), "kernel"),
    (lambda: DoTA(np.ones((6, 4)), np.ones(6), rank=1), "bias"),
    (lambda: DoTA(np.ones((6, 4)), rank=0), "rank"),
    (lambda: DoTA(np.ones((6, 4)), rank=2.0), "rank"),
    (lambda: DoTA(np.ones((6, 4)), rank=5, n_factors=2), "rank"),  # bonds: min(4, 6) = 4
    (lambda: DoTA(np.ones((6, 4)), rank=1, in_factors=(2, 2)), "in_factors"),
    (lambda: DoTA(np.ones((6, 4)), rank=1, out_factors=(2, 3)), "out_factors"),
    (lambda: DoTA(np.ones((6, 4)), rank=1, n_factors=0), "n_factors"),
    (lambda: DoTA(np.ones((6, 4)), rank=1, in_factors=(2, 3), n_factors=3), "n_factors"),
    (lambda: DoTA(np.ones((6, 4)), rank=1, n_factors=2)(np.ones((2, 4))),
     r"x must have shape \(\.\.\., 6\)"),
])
def test_bad_arguments_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ----------------------------------------------------------------------------- DoTA


def _dota_base(seed=0):
    """A float32 nnx.Linear 12 -> 8 (factors (3, 4) x (2, 4) on two sites)."""
    return nnx.Linear(12, 8, rngs=nnx.Rngs(seed))


def _tt_svd_matrix(a, rows, cols, rank):
    """The TT-SVD (bonds capped at ``rank``) of the matrix ``a`` with row modes ``rows``
    and column modes ``cols``, reassembled dense: a float64 NumPy reference."""
    n = len(rows)
    t = a.reshape(rows + cols).transpose([ax for k in range(n) for ax in (k, n + k)])
    sizes = [r * c for r, c in zip(rows, cols, strict=True)]
    left, rest = np.ones((1, 1)), t.reshape(sizes[0], -1)
    for k in range(n - 1):
        u, s, vh = np.linalg.svd(rest, full_matrices=False)
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
        left = (left @ u.reshape(left.shape[1], -1)).reshape(-1, u.shape[1]) if k else u
        rest = (s[:, None] * vh).reshape(len(s) * sizes[k + 1], -1)
    full = (left @ rest.reshape(left.shape[1], -1)).reshape(
        [x for r, c in zip(rows, cols, strict=True) for x in (r, c)])
    return full.transpose(list(range(0, 2 * n, 2)) + list(range(1, 2 * n, 2))).reshape(
        int(np.prod(rows)), int(np.prod(cols)))


def test_dota_equals_the_base_at_init_and_starts_from_the_truncated_mpo():
    lin = _dota_base()
    w = np.asarray(lin.kernel[...], np.float64)
    lin.bias[...] = jnp.asarray(np.random.default_rng(1).normal(size=8), jnp.float32)
    m = DoTA.from_linear(lin, rank=3, n_factors=2)
    assert (m.in_factors, m.out_factors, m.ranks) == ((3, 4), (2, 4), (1, 3, 1))
    x = np.random.default_rng(2).normal(size=(5, 12)).astype(np.float32)
    want = np.asarray(lin(x), np.float64)
    np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(m.merged_kernel(), w, rtol=1e-5, atol=1e-6)
    # two sites: the MPO of W^T is the best rank-3 approximation of W^T regrouped as
    # (m1 n1, m2 n2) (Van Loan-Pitsianis), an independent float64 reference
    t = w.T.reshape(2, 4, 3, 4).transpose(0, 2, 1, 3).reshape(6, 16)
    u, s, vh = np.linalg.svd(t)
    best = ((u[:, :3] * s[:3]) @ vh[:3]).reshape(2, 3, 4, 4).transpose(0, 2, 1, 3)
    np.testing.assert_allclose(m.delta(), best.reshape(8, 12).T, rtol=1e-5, atol=1e-6)
    # three sites: a NumPy TT-SVD of W^T with the same cap, residual = W - MPO(W)
    m3 = DoTA(w.astype(np.float32), rank=2, in_factors=(2, 2, 3), out_factors=(2, 2, 2))
    ref = _tt_svd_matrix(w.T, (2, 2, 2), (2, 2, 3), 2).T
    np.testing.assert_allclose(m3.delta(), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m3.kernel[...], w - np.asarray(ref), rtol=1e-5, atol=1e-6)
    assert float(np.linalg.norm(np.asarray(m3.kernel[...]))) > 1e-2  # truncated: a residual
    assert m3.kernel[...].dtype == jnp.float32 and m3.cores[0][...].dtype == jnp.float32
    y = m3(x)
    np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5 * np.abs(x @ w).max())
    # one example, jax.vmap over a batch and nnx.jit agree with the batched call
    np.testing.assert_allclose(m3(x[0]), y[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jax.vmap(m3)(x), y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(m3, x), y, rtol=1e-6, atol=1e-6)


def test_dota_trains_only_its_cores_under_nnx_jit():
    lin = _dota_base(3)
    m = DoTA.from_linear(lin, rank=2, n_factors=2)
    params = nnx.state(m, nnx.Param)
    assert [p for p, _ in nnx.to_flat_state(params)] == [("cores", 0), ("cores", 1)]
    assert sum(v.size for v in jax.tree.leaves(params)) == m.num_params() == 2 * 6 + 2 * 16
    assert {p for p, _ in nnx.to_flat_state(nnx.state(m, Frozen))} == {("kernel",), ("bias",)}
    frozen = jax.tree.map(np.array, nnx.state(m, Frozen))
    g = np.random.default_rng(4)
    x = jnp.asarray(g.normal(size=(32, 12)), jnp.float32)
    y = x @ jnp.asarray(g.normal(size=(12, 8)) / 4, jnp.float32)  # a new task
    opt = nnx.Optimizer(m, optax.adam(3e-2), wrt=nnx.Param)

    def loss(m):
        return jnp.mean((m(x) - y) ** 2)

    @nnx.jit
    def step(m, opt):
        value, grads = nnx.value_and_grad(loss)(m)
        assert not jax.tree.leaves(nnx.state(grads, Frozen))  # only the cores differentiate
        opt.update(m, grads)
        return value

    losses = [float(step(m, opt)) for _ in range(25)]
    assert losses[-1] < 0.5 * losses[0], losses
    jax.tree.map(np.testing.assert_array_equal, frozen,
                 jax.tree.map(np.asarray, nnx.state(m, Frozen)))
