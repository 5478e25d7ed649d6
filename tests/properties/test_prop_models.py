"""Properties of the Flax NNX layers of tnlib.models: random shapes, ranks (1 and above
what the matricization / block allows), dtypes and batch shapes (none, one, several
leading dims). Every call agrees with the dense float64 computation done in numpy from
the layer's own parameters (``x @ kernel``, the dense convolution, the dense table
lookup, the dense MPS amplitude), or raises ValueError / TypeError naming the argument;
gradients of a scalar loss are finite.

dtype policy checked here: every layer computes in the promotion of its parameters' and
the input's dtype (bfloat16 and complex included); the MPS models contract in at least
float32 (``tnlib.tt.sweep_features``), so bfloat16 parameters give float32 outputs.

Cost: a new shape or dtype means XLA compilations, so each layer class is built in one or
two hand-picked (dtype, shape, rank, batch) cases, the dtypes rotating so that every
family meets bfloat16, float32/64 and complex64/128; parameters are filled from numpy on
an abstract build (``build``) except for the QR-based initializers, and the forward pass
and its gradient run as one compiled program (``probe``). Properties that depend on
shapes only (parameter and flop counts, muP multipliers) run under hypothesis.
"""

import functools
import math
from itertools import product

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import sliding_window_view
from props import (
    BF16,
    C64,
    C128,
    F32,
    F64,
    close,
    covers,
    finite,
    raises,
)

from tnlib.models import (
    BTTLinear,
    CPConv,
    FLoRA,
    Frozen,
    KroneckerLinear,
    LoRA,
    LoTR,
    LowRankLinear,
    MonarchLinear,
    MPSBornMachine,
    MPSClassifier,
    ResidualMLP,
    StructuredMLP,
    TensorRegression,
    TTEmbedding,
    TTInputMLP,
    TTLinear,
    TuckerConv,
    factorize_dims,
    layer_lr_multipliers,
    local_feature_map,
    scaling_layer,
    structured_optimizer,
)

small = st.integers(1, 3)


def rand(seed, shape, dtype) -> np.ndarray:
    """Gaussian numpy array of ``dtype`` (complex: both parts), made without a JAX op."""
    g = np.random.default_rng(seed)
    a = g.standard_normal(shape)
    if jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating):
        a = a + 1j * g.standard_normal(shape)
    return np.asarray(a).astype(jnp.dtype(dtype))


def np64(a) -> np.ndarray:
    """``a`` as a numpy complex128 array (the exact reference; imaginary part 0 if real)."""
    return np.asarray(a).astype(np.complex128)


def real_of(dtype):
    """The real dtype of the same precision (inputs that must be real, e.g. pixels)."""
    return jnp.finfo(jnp.dtype(dtype)).dtype


def lin_scale(x, k) -> float:
    """Size of the sums in ``x @ k``: the rounding of the computation is relative to it."""
    return max(1.0, float(np.max(np.abs(x).reshape(-1, k.shape[0]) @ np.abs(k), initial=0)))


def _call(m, x):
    return m(x)


@functools.partial(nnx.jit, static_argnums=2)
def _probe(module, x, call):
    def loss(m):
        y = call(m, x)
        return jnp.sum(jnp.abs(y).astype(jnp.float32) ** 2), y

    (_, y), g = nnx.value_and_grad(loss, has_aux=True)(module)
    return y, g


def probe(module, x, call=_call):
    """``call(module, x)`` and the gradient of ``sum |.|^2`` w.r.t. the Params, in one
    compiled program (op-by-op execution would compile every primitive for every new
    shape); the gradient must be finite. Returns the output as complex128 numpy."""
    y, g = _probe(module, x, call)
    assert jax.tree.leaves(g), "no gradient leaves"
    finite(jax.tree.map(np64, g), "gradient")
    return y


def build(make, seed, real=False):
    """``make(rngs)`` with Gaussian parameters of their own dtypes.

    ``real=False``: the module is traced abstractly (``nnx.eval_shape``: every check and
    shape / dtype rule of the constructor runs) and its variables are filled from numpy,
    so no initializer is compiled (a new shape costs ~1 s of XLA compilation for
    ``jax.random.normal``). ``real=True`` runs the initializer itself (with the cheap
    ``rbg`` PRNG): for the QR-based ones, whose bfloat16 / complex lowering is a property.
    """
    if real:
        return make(nnx.Rngs(params=rbg_key(seed)))
    graphdef, state = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(params=seed))))
    flat = [(path, v.replace(jnp.asarray(rand(seed + j, v.shape, v.dtype))))
            for j, (path, v) in enumerate(nnx.to_flat_state(state))]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


def rbg_key(seed):
    """A PRNG key whose samplers compile fast (threefry's take ~1 s per new shape)."""
    return jax.random.key(seed, impl="rbg")


def set_random(param, seed):
    """Overwrite a (zero-initialized) Param with Gaussian entries of its own dtype."""
    param[...] = jnp.asarray(rand(seed, param.shape, param.dtype))


def tt_dense(cores) -> np.ndarray:
    """TT-matrix ``(r, m_k, n_k, r')`` cores -> dense ``(prod m, prod n)``, numpy float64."""
    cores = [np64(c) for c in cores]
    t = cores[0]
    for c in cores[1:]:
        t = np.tensordot(t, c, axes=(-1, 0))
    t = t.reshape(t.shape[1:-1])  # (m1, n1, m2, n2, ...)
    L = len(cores)
    t = t.transpose(list(range(0, 2 * L, 2)) + list(range(1, 2 * L, 2)))
    rows = math.prod(c.shape[1] for c in cores)
    return t.reshape(rows, -1)


# ---------------------------------------------------------------- structured linear


# One layer per case and dtype (every dtype appears; building a layer compiles its
# initializer for that shape and dtype, the dominant cost): rank 1 and the largest ranks
# the shape can use (BTT min(m2, n1), low rank min(in, out), TT the unfoldings' bonds).
LINEAR_CASES = [
    (F64, lambda kw: LowRankLinear(4, 3, rank=1, **kw), (2, 1)),
    (BF16, lambda kw: KroneckerLinear(6, 4, in_factors=(3, 2), out_factors=(2, 2), **kw), (3,)),
    (C64, lambda kw: MonarchLinear(6, 6, in_factors=(2, 3), out_factors=(3, 2), use_bias=False,
                                   **kw), ()),
    (F32, lambda kw: BTTLinear(4, 6, rank=2, **kw), (3,)),
    (C128, lambda kw: TTLinear(12, 6, in_factors=(2, 3, 2), out_factors=(1, 3, 2), rank=4,
                               **kw), (2, 1)),
    (BF16, lambda kw: LowRankLinear(3, 5, rank=3, **kw), ()),
    (C64, lambda kw: TTLinear(1, 1, in_factors=(1,), out_factors=(1,), rank=1, **kw), (2,)),
]


def structured_kernel(layer) -> np.ndarray:
    """The layer's kernel ``(in, out)`` from its parameters, in numpy float64."""
    if isinstance(layer, LowRankLinear):
        return (np64(layer.u[...]) @ np64(layer.v[...])).T
    if isinstance(layer, KroneckerLinear):
        return np.kron(np64(layer.a[...]), np64(layer.b[...])).T
    if isinstance(layer, BTTLinear):  # W[(i, j), (p, q)] = sum_k right[i,j,q,k] left[q,i,p,k]
        right, left = np64(layer.right[...]), np64(layer.left[...])
        w = np.einsum("ijqk,qipk->ijpq", right, left)
        return w.reshape(layer.out_features, layer.in_features).T
    return tt_dense([c[...] for c in layer.cores]).T


@covers("models.LowRankLinear", "models.KroneckerLinear", "models.MonarchLinear",
        "models.BTTLinear", "models.TTLinear")
@pytest.mark.parametrize("i", range(len(LINEAR_CASES)))
def test_structured_linears_match_dense_kernel(i):
    dtype, make, batch = LINEAR_CASES[i]
    layer = build(lambda rngs: make(dict(param_dtype=dtype, rngs=rngs)), i)
    name = type(layer).__name__
    K = structured_kernel(layer)
    assert K.shape == (layer.in_features, layer.out_features), name
    x = rand(i, (*batch, layer.in_features), dtype)
    y = probe(layer, x)
    assert y.dtype == jnp.dtype(dtype) and y.shape == (*batch, layer.out_features), name
    ref = np64(x) @ K + (np64(layer.bias[...]) if layer.bias is not None else 0)
    close(np64(y), ref, dtype, factor=2, scale=lin_scale(np64(x), K))
    stored = sum(p.size for p in jax.tree.leaves(nnx.state(layer, nnx.Param)))
    assert layer.num_params() == stored, name
    assert all(v > 0 and math.isfinite(v) for v in jax.tree.leaves(layer.lr_multipliers()))
    raises(lambda: layer(np.ones((2, layer.in_features + 1), dtype)), "x must")
    raises(lambda: layer(np.ones((), dtype)), "x must")


# ---------------------------------------------------------------------- adapters


def conv_nd(x, k, strides, padding) -> np.ndarray:
    """Cross-correlation ``(N, *S, C) * (*ks, C, O)`` in numpy (XLA's SAME split)."""
    n_sp = k.ndim - 2
    if padding == "SAME":
        pads = []
        for n, kk, s in zip(x.shape[1:-1], k.shape[:n_sp], strides, strict=True):
            total = max((-(-n // s) - 1) * s + kk - n, 0)
            pads.append((total // 2, total - total // 2))
    elif padding == "VALID":
        pads = [(0, 0)] * n_sp
    else:
        pads = list(padding)
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    win = sliding_window_view(xp, k.shape[:n_sp], axis=tuple(range(1, n_sp + 1)))
    win = win[(slice(None), *(slice(None, None, s) for s in strides))]
    sp = "hwd"[:n_sp]
    return np.einsum(f"n{sp}c{sp.upper()},{sp.upper()}co->n{sp}o", win, k)


def tucker_dense(core, factors) -> np.ndarray:
    w = np64(core)
    for k, u in enumerate(factors):
        w = np.moveaxis(np.tensordot(np64(u), w, axes=(1, k)), 0, k)
    return w


# (dtype, adapter, kernel shape, rank, batch, strides, padding)
ADAPTER_CASES = [
    (C64, "lora", (4, 3), 2, (2, 1), None, None),
    (BF16, "lotr", (3, 4, 2), 2, (3,), None, None),
    (C128, "flora", (3, 4), 9, (), None, None),  # an int rank above n_k is capped
    (F32, "flora", (2, 3, 2, 3), (1, 2, 2, 3), (2,), (2, 1), ((1, 0), (0, 2))),
    (F64, "flora", (3, 1, 2), 1, (), 1, "SAME"),
]


@covers("models.LoRA", "models.LoTR", "models.FLoRA", "models.Frozen")
@pytest.mark.parametrize("i", range(len(ADAPTER_CASES)))
def test_adapters_match_dense_merged_kernel(i):
    dtype, kind, shape, rank, b, strides, padding = ADAPTER_CASES[i]
    n_in, n_out = shape[-2:]
    n_sp = len(shape) - 2 if kind == "flora" else 0
    x = rand(i + 2, (*b, *(4,) * n_sp, n_in), dtype)
    xr = np64(x).reshape(-1, *(4,) * n_sp, n_in)
    W0 = rand(i, shape, dtype)
    b0 = rand(i + 1, (shape[0], n_out) if kind == "lotr" else (n_out,), dtype)
    call = _call
    real = dtype in (BF16, C128)  # the QR-based initializers in the odd dtypes
    if kind == "lora":
        m = build(lambda rngs: LoRA(W0, b0, rank=rank, alpha=2.0, param_dtype=dtype, rngs=rngs),
                  i, real)
        set_random(m.lora_b, i)  # zero at init
        K = np64(m.kernel[...]) + 2.0 / rank * np64(m.lora_a[...]) @ np64(m.lora_b[...])
    elif kind == "lotr":
        m = build(lambda rngs: LoTR(W0, b0, rank=rank, param_dtype=dtype, rngs=rngs), i, real)
        set_random(m.cores, i)
        layer = shape[0] - 1
        u, v, g = np64(m.u[...]), np64(m.v[...]), np64(m.cores[...])
        K = np64(m.kernel[...][layer]) + u @ g[layer] @ v.T
        call = functools.partial(_call_layer, layer=layer)
        raises(lambda: m(x, shape[0]), "layer must")
    else:
        m = build(lambda rngs: FLoRA(W0, b0, rank=rank, scale=0.5, strides=strides or 1,
                                     padding=padding or "SAME", param_dtype=dtype, rngs=rngs),
                  i, real)
        want = (tuple(min(rank, n) for n in shape) if isinstance(rank, int) else rank)
        assert m.ranks == want
        set_random(m.core, i)
        K = np64(m.kernel[...]) + 0.5 * tucker_dense(m.core[...], m.factors)
    bias = np64(m.bias[...])[layer] if kind == "lotr" else np64(m.bias[...])
    if n_sp:
        st_ = (strides,) * n_sp if isinstance(strides, int) else strides
        ref = conv_nd(xr, K, st_, padding)
    else:
        ref = xr @ K
    ref = ref + bias
    frozen = jax.tree.map(np.asarray, nnx.state(m, Frozen))
    assert jax.tree.leaves(frozen) and all(
        v.dtype == jnp.dtype(dtype) for v in jax.tree.leaves(frozen))
    y = probe(m, x, call)
    assert y.dtype == jnp.dtype(dtype) and y.shape == b + ref.shape[1:], (y.shape, ref.shape)
    scale = max(1.0, np.abs(K).reshape(-1, n_out).sum(0).max() * np.abs(xr).max())
    close(np64(y).reshape(ref.shape), ref, dtype, factor=2, scale=scale)
    # Frozen weights: never differentiated, never updated by an optimizer on nnx.Param
    _, grads = _probe(m, x, call)
    assert not jax.tree.leaves(nnx.state(grads, Frozen))
    nnx.Optimizer(m, optax.sgd(0.1), wrt=nnx.Param).update(m, grads)
    jax.tree.map(np.testing.assert_array_equal, frozen,
                 jax.tree.map(np.asarray, nnx.state(m, Frozen)))
    raises(lambda: type(m)(W0, rank=0, rngs=nnx.Rngs(0)), "rank")
    raises(lambda: m(np.ones((*(4,) * n_sp, n_in + 1), dtype), *([0] if kind == "lotr" else [])),
           "x must")


def _call_layer(m, x, layer):
    return m(x, layer)


# ----------------------------------------------------------------------- convolutions


# (dtype, layer, kernel size, strides, padding, batch); CP rank 30 is above the rank bound
CONV_CASES = [
    (BF16, lambda kw: TuckerConv(3, 2, (2, 3), ranks=(1, 2), **kw), (2, 1), "SAME", (2,)),
    (C128, lambda kw: CPConv(2, 3, 3, rank=30, **kw), 1, ((0, 1), (2, 0)), ()),
    (F32, lambda kw: CPConv(1, 2, (3, 1), rank=1, use_bias=False, **kw), (1, 2), "VALID",
     (2, 1)),
    (C64, lambda kw: TuckerConv(2, 3, 1, ranks=(2, 3), **kw), 2, 1, (3,)),
]


def conv_kernel(layer) -> np.ndarray:
    if isinstance(layer, TuckerConv):
        return np.einsum("hwab,ia,ob->hwio", np64(layer.core[...]), np64(layer.first[...]),
                         np64(layer.last[...]))
    return np.einsum("hr,wr,ir,or->hwio", *(np64(p[...]) for p in (
        layer.vertical, layer.horizontal, layer.first, layer.last)))


@covers("models.TuckerConv", "models.CPConv")
@pytest.mark.parametrize("i", range(len(CONV_CASES)))
def test_convs_match_dense_convolution(i):
    dtype, make, strides, padding, b = CONV_CASES[i]
    layer = build(lambda rngs: make(dict(strides=strides, padding=padding, param_dtype=dtype,
                                         rngs=rngs)), i, real=dtype == BF16)
    K = conv_kernel(layer)
    c_in = K.shape[2]
    pad = [(padding, padding)] * 2 if isinstance(padding, int) else padding
    x = rand(i, (*b, 4, 5, c_in), dtype)
    xr = np64(x).reshape(-1, 4, 5, c_in)
    ref = conv_nd(xr, K, layer.strides, pad)
    if layer.bias is not None:
        ref = ref + np64(layer.bias[...])
    y = probe(layer, x)
    assert y.dtype == jnp.dtype(dtype) and y.shape == b + ref.shape[1:], (y.shape, ref.shape)
    scale = max(1.0, np.abs(K).sum((0, 1, 2)).max() * np.abs(xr).max())
    close(np64(y).reshape(ref.shape), ref, dtype, factor=4, scale=scale)
    assert all(v > 0 and math.isfinite(v) for v in jax.tree.leaves(layer.lr_multipliers()))
    raises(lambda: layer(np.ones((4, 5, c_in + 1), dtype)), "x must")
    raises(lambda: layer(np.ones((5, c_in), dtype)), "x must")


# ------------------------------------------------------------------------ embedding


# (dtype, vocab_factors, feature_factors, rank, batch)
EMB_CASES = [(C64, (2, 3, 2), (1, 2, 3), 9, (2, 1)), (BF16, (5,), (3,), 1, ())]


@covers("models.TTEmbedding")
@pytest.mark.parametrize("i", range(len(EMB_CASES)))
def test_tt_embedding_matches_dense_table(i):
    dtype, vf, ff, rank, batch = EMB_CASES[i]
    V, F = math.prod(vf), math.prod(ff)
    N = V - 1  # a vocabulary that does not fill the TT-matrix
    emb = build(lambda rngs: TTEmbedding(N, F, vocab_factors=vf, feature_factors=ff, rank=rank,
                                         param_dtype=dtype, rngs=rngs), i)
    table = tt_dense([c[...] for c in emb.cores])[:N]
    ids = np.random.default_rng(i).integers(0, N, batch)
    out = probe(emb, ids)
    assert out.dtype == jnp.dtype(dtype) and out.shape == (*batch, F)
    close(np64(out), table[ids], dtype, factor=2, scale=max(1.0, np.abs(table).max()))
    assert all(v > 0 for v in jax.tree.leaves(emb.lr_multipliers()))
    raises(lambda: emb(np.array([N])), "ids must")
    raises(lambda: emb(np.array([-1])), "ids must")
    raises(lambda: emb(np.array([0.0])), "ids must")
    raises(lambda: TTEmbedding(V + 1, F, vocab_factors=vf, feature_factors=ff, rank=1,
                               rngs=nnx.Rngs(0)), "vocab_factors")
    raises(lambda: TTEmbedding(N, F, vocab_factors=vf, feature_factors=ff, rank=0,
                               rngs=nnx.Rngs(0)), "rank")


# ------------------------------------------------------------------ tensor regression

# (dtype, form, in_shape, out_features, rank, batch): Tucker int ranks above a mode size
# are capped (documented); CP rank 40 is above the rank bound of the weight
REG_CASES = [
    (BF16, "tucker", (2, 3), 2, 9, (3,)),
    (C64, "cp", (3, 1, 2), 3, 1, (2, 1)),
    (F64, "cp", (2,), 1, 40, ()),
]


def _call_drop(m, x, k):
    return m(x, deterministic=False, rngs=k)


def _call_eval(m, x):
    return m(x, deterministic=True)


def regression_weight(d) -> np.ndarray:
    if hasattr(d, "core"):
        return tucker_dense(d.core, d.factors)
    letters = "abcdefg"[: len(d.factors)]
    spec = ",".join(f"{s}r" for s in letters) + ",r->" + letters
    return np.einsum(spec, *(np64(f) for f in d.factors), np64(d.weights))


@covers("models.TensorRegression")
@pytest.mark.parametrize("i", range(len(REG_CASES)))
def test_tensor_regression_matches_dense_weight(i):
    dtype, form, in_shape, out, rank, batch = REG_CASES[i]
    n = len(in_shape)
    x = rand(i, (*batch, *in_shape), dtype)
    xr = np64(x)
    layer = build(lambda rngs: TensorRegression(in_shape, out, rank=rank, form=form,
                                                dropout_rate=0.5, param_dtype=dtype, rngs=rngs),
                  i, real=form == "tucker")
    if form == "tucker":
        assert layer.rank == tuple(min(rank, d) for d in (*in_shape, out))
    set_random(layer.bias, i)
    k = rbg_key(i)
    modes = [(_call_eval, layer.decomposition())]  # eval mode, and one tensor-dropout draw
    if form == "cp":
        modes.append((functools.partial(_call_drop, k=k), layer.decomposition(k)))
    for call, d in modes:
        W = regression_weight(d)
        ref = np.tensordot(xr, W, axes=(list(range(len(batch), xr.ndim)), list(range(n))))
        ref = ref + np64(layer.bias[...])
        y = probe(layer, x, call)
        assert y.dtype == jnp.dtype(dtype) and y.shape == (*batch, out)
        scale = max(1.0, np.abs(W).reshape(-1, out).sum(0).max() * np.abs(xr).max())
        close(np64(y), ref, dtype, factor=4, scale=scale)
    raises(lambda: layer(np.ones((*in_shape[:-1], in_shape[-1] + 1))), "x must")
    raises(lambda: TensorRegression(in_shape, out, rank=(*in_shape, out + 1),
                                    rngs=nnx.Rngs(0)), "rank")
    raises(lambda: TensorRegression(in_shape, out, rank=0, form=form, rngs=nnx.Rngs(0)), "rank")


# ------------------------------------------------------------------------------ MPS


def np_features(x, d, kind) -> np.ndarray:
    x = np.asarray(x).astype(np.float64)
    if kind == "linear":
        return np.stack([1 - x, x], -1)
    c, s = np.cos(np.pi * x / 2), np.sin(np.pi * x / 2)
    return np.stack([math.sqrt(math.comb(d - 1, k)) * c ** (d - 1 - k) * s**k
                     for k in range(d)], -1)


_feature_map = jax.jit(local_feature_map, static_argnums=(1, 2))


@covers("models.local_feature_map")
@pytest.mark.parametrize("dtype,d,kind,batch", [
    (BF16, 3, "cos_sin", (2, 1)), (F32, 2, "linear", ()), (F64, 1, "cos_sin", (3,)),
    (C64, 5, "cos_sin", ()), (C128, 2, "linear", (2, 1))],
    ids=["bfloat16", "float32", "float64", "complex64", "complex128"])
def test_local_feature_map_matches_formula(dtype, d, kind, batch):
    x = np.random.default_rng(d).uniform(size=(*batch, 3)).astype(dtype)
    phi = _feature_map(x, d, kind)
    assert phi.shape == (*batch, 3, d) and phi.dtype == jnp.dtype(dtype)
    ref = np_features(np.real(x), d, kind)
    close(np64(phi), ref, dtype, factor=2)
    if kind == "cos_sin":  # unit norm for every pixel
        close(np.linalg.norm(np64(phi), axis=-1), np.ones(ref.shape[:-1]), dtype, factor=2)
    raises(lambda: local_feature_map(x, 3, "linear"), "local_dim")
    raises(lambda: local_feature_map(x, 2, "nope"), "feature_map")


def _logits_and_amplitudes(m, x):
    """The logits and the exact amplitudes ``mantissa * exp(log_scale)``, stacked."""
    mant, log_scale = m.amplitudes(x)
    return jnp.stack([m(x), mant * jnp.exp(log_scale)[..., None].astype(mant.dtype)])


# (param dtype, readout, n_sites, label_site, bond_dim, n_classes, local_dim, feature map,
# batch); pixels are real of the parameters' precision
MPS_CASES = [
    (C128, "linear", 3, 0, 2, 2, 3, "cos_sin", (2, 1)),
    (BF16, "born", 4, 4, 3, 3, 2, "linear", (3,)),
]


@covers("models.MPSClassifier")
@pytest.mark.parametrize("i", range(len(MPS_CASES)))
def test_mps_classifier_matches_dense_amplitude(i):
    dtype, readout, n, k, bond, classes, d, fmap, batch = MPS_CASES[i]
    m = build(lambda rngs: MPSClassifier(n, classes, bond_dim=bond, local_dim=d, label_site=k,
                                         feature_map=fmap, readout=readout, param_dtype=dtype,
                                         rngs=rngs), i)
    x = np.random.default_rng(i).uniform(size=(*batch, n)).astype(real_of(dtype))
    phi = np_features(x, d, fmap).reshape(-1, n, d)
    left, right, label = np64(m.left[...]), np64(m.right[...]), np64(m.label[...])
    e0, eye = np.eye(bond)[0], np.eye(bond)
    lv = np.stack([np.linalg.multi_dot([e0, *(np.einsum("anb,n->ab", left[s], f[s])
                                              for s in range(k)), eye]) for f in phi])
    rv = np.stack([np.linalg.multi_dot([eye, *(np.einsum("anb,n->ab", right[s - k], f[s])
                                               for s in range(k, n)), e0]) for f in phi])
    amp = np.einsum("ba,acd,bd->bc", lv, label, rv)  # the exact amplitudes
    unit = amp / (np.linalg.norm(lv, axis=1) * np.linalg.norm(rv, axis=1))[:, None]
    if readout == "linear":  # logits: amplitudes from unit-norm environments
        y, exact = probe(m, x, _logits_and_amplitudes)
        close(np64(exact).reshape(amp.shape), amp, dtype, factor=4,
              scale=max(1.0, np.abs(amp).max()))
        close(np64(y).reshape(unit.shape), unit, dtype, factor=4)
    else:
        y = probe(m, x)
    assert y.shape == (*batch, classes)
    if readout == "born":
        p = np.abs(unit) ** 2  # log |amplitude|^2 up to its eps floor
        close(np.exp(np64(y).real).reshape(p.shape), p, dtype, factor=4, scale=p.max())
    raises(lambda: m(np.ones((2, n + 1))), "x must")


# (param dtype, n_sites, vocab_size, bond_dim, embedding_dim, batch layout of the V^L
# sequences); bfloat16 parameters are contracted in float32 like MPSClassifier's
BORN_CASES = [(C64, 2, 3, 2, 3, (3, -1))]


@covers("models.MPSBornMachine")
@pytest.mark.parametrize("i", range(len(BORN_CASES)))
def test_born_machine_matches_dense_distribution(i):
    dtype, n, vocab, bond, emb_dim, layout = BORN_CASES[i]
    m = build(lambda rngs: MPSBornMachine(n, vocab, bond_dim=bond, embedding_dim=emb_dim,
                                          param_dtype=dtype, rngs=rngs), i)
    emb, cores = np64(m.embedding[...]), np64(m.cores[...])
    seqs = np.array(list(product(range(vocab), repeat=n)))  # every sequence
    e0 = np.eye(bond)[0]
    psi = np.array([np.linalg.multi_dot([e0, *(np.einsum("ajb,j->ab", cores[s], emb[t])
                                               for s, t in enumerate(q)), np.eye(bond), e0])
                    for q in seqs])
    p = np.abs(psi) ** 2
    p = p / p.sum()
    logp = probe(m, seqs.reshape(*layout, n))
    assert logp.shape == seqs.reshape(*layout, n).shape[:-1]
    close(np.exp(np64(logp).real.reshape(-1)), p, dtype, factor=4)
    raises(lambda: m.sample(rbg_key(i), 0), "n must")
    raises(lambda: m(np.zeros((n,))), "x must hold integer")
    raises(lambda: m(np.zeros((n + 1,), int)), "x must")


# ---------------------------------------------------------------------------- MLP


def expected_flops(kind, w, rank, layer) -> int:
    """Multiply-adds (x2) of one hidden layer from the documented per-structure rules."""
    if kind == "dense":
        return 2 * w * w
    if kind == "lowrank":
        return 2 * rank * 2 * w
    if kind == "kronecker":
        (m1, m2), (n1, n2) = layer.out_factors, layer.in_factors
        return 2 * (n1 * n2 * m2 + m1 * n1 * m2)
    if kind in ("monarch", "btt"):  # 2 x the cores' entries
        return 2 * (math.prod(layer.left.shape) + math.prod(layer.right.shape))
    total, cols, rows = 0, layer.in_factors, layer.out_factors
    for k, core in enumerate(layer.cores):  # tt.matvec contracts site by site
        r0, m, nn, r1 = core.shape
        total += 2 * r0 * nn * math.prod(cols[k + 1:]) * math.prod(rows[:k]) * m * r1
    return total


@covers("models.StructuredMLP")
@settings(max_examples=5)
@given(st.sampled_from(["dense", "lowrank", "kronecker", "monarch", "btt", "tt"]),
       st.sampled_from([4, 6, 8, 9, 12, 16]), st.integers(1, 4), st.integers(1, 5),
       st.integers(2, 3))
def test_structured_mlp_counts_match_its_layers(kind, width, depth, rank, n_factors):
    n_in, n_cls = 5, 3
    # shapes only (nnx.eval_shape): counting needs no arrays
    mlp = nnx.eval_shape(lambda: StructuredMLP(n_in, n_cls, width=width, depth=depth, layer=kind,
                                               rank=rank, n_factors=n_factors, rngs=nnx.Rngs(0)))
    hidden = list(mlp.hidden)
    assert len(hidden) == depth - 1
    want = 2 * n_in * width + 2 * width * n_cls + sum(
        expected_flops(kind, width, rank, h) for h in hidden)
    assert mlp.flops() == want, (kind, mlp.flops(), want)
    stored = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(mlp, nnx.Param)))
    by_layer = (n_in + 1) * width + (width + 1) * n_cls + sum(
        (width * width + width) if kind == "dense" else h.num_params() for h in hidden)
    assert mlp.num_params() == stored == by_layer, kind


def _layer_cost(lay) -> int:
    """FLOPs (2 per multiply-add) of one ResidualMLP layer by the structure's own rule."""
    if isinstance(lay, nnx.Linear):
        return 2 * lay.in_features * lay.out_features
    if isinstance(lay, LowRankLinear):
        return 2 * lay.rank * (lay.in_features + lay.out_features)
    if isinstance(lay, KroneckerLinear):
        return expected_flops("kronecker", None, None, lay)
    if isinstance(lay, BTTLinear):
        return expected_flops("btt", None, None, lay)
    return expected_flops("tt", None, None, lay)


@covers("models.ResidualMLP", "models.scaling_layer")
@settings(max_examples=6)
@given(st.sampled_from(["dense", "lowrank", "kronecker", "monarch", "btt", "tt"]),
       st.sampled_from([16, 32, 48]), st.integers(1, 3), st.sampled_from([2, 4]),
       st.booleans())
def test_residual_mlp_counts_and_multipliers_follow_its_layers(kind, width, depth, expansion,
                                                               structure_input):
    n_in, n_cls, base = 32, 3, 16
    mlp = nnx.eval_shape(lambda: ResidualMLP(n_in, n_cls, width=width, depth=depth,
                                             expansion=expansion, layer=kind, base_width=base,
                                             structure_input=structure_input,
                                             rngs=nnx.Rngs(0)))
    layers = [mlp.inp, *mlp.up, *mlp.down, mlp.out]
    assert mlp.flops() == sum(_layer_cost(lay) for lay in layers)
    stored = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(mlp, nnx.Param)))
    assert mlp.num_params() == stored
    # every up / down layer is the structure scaling_layer builds for its shape
    for lay in (*mlp.up, *mlp.down):
        ref = nnx.eval_shape(lambda lay=lay: scaling_layer(kind, lay.in_features,
                                                           lay.out_features, rngs=nnx.Rngs(0)))
        assert jax.tree.map(jnp.shape, nnx.state(lay, nnx.Param)) == jax.tree.map(
            jnp.shape, nnx.state(ref, nnx.Param))
    assert isinstance(mlp.inp, nnx.Linear) == (kind == "dense" or not structure_input)
    assert isinstance(mlp.out, nnx.Linear)
    # muP: the readout's kernel base / width; a structured layer's cores multiply to its
    # dense rate times the product of (d_in / fan_in(core)) / n_cores
    mult = layer_lr_multipliers(mlp)
    assert mult["out"]["kernel"].get_value() == pytest.approx(base / width)
    for i, up in enumerate(mlp.up):
        if isinstance(up, nnx.Linear):
            assert mult["up"][i]["kernel"].get_value() == pytest.approx(base / width)
            continue
        own = dict(nnx.to_flat_state(up.lr_multipliers()))
        cores = [p for p in own if p[-1] != "bias"]
        for p in cores:
            got = mult["up"][i]
            for k in p:
                got = got[k]
            assert got.get_value() == pytest.approx(
                base / width * own[p].get_value() / len(cores))


@covers("models.TTInputMLP")
@settings(max_examples=6)
@given(st.sampled_from(["tt", "lowrank", "dense", "none"]),
       st.lists(st.integers(2, 4), min_size=2, max_size=3), st.integers(1, 3),
       st.integers(0, 2**16))
def test_tt_input_mlp_counts_match_its_layers(kind, in_factors, rank, seed):
    out_factors = [2 + (seed >> (2 * k)) % 3 for k in range(len(in_factors))]
    n_in, hidden, n_cls = math.prod(in_factors), math.prod(out_factors), 3
    mlp = nnx.eval_shape(lambda: TTInputMLP(n_in, n_cls, hidden=hidden, layer=kind, rank=rank,
                                            in_factors=tuple(in_factors),
                                            out_factors=tuple(out_factors), rngs=nnx.Rngs(0)))
    stored = sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(mlp, nnx.Param)))
    if kind == "none":
        assert mlp.flops() == 2 * n_in * n_cls
        assert mlp.num_params() == stored == (n_in + 1) * n_cls
        return
    inp = {"tt": lambda: expected_flops("tt", None, rank, mlp.inp),
           "lowrank": lambda: 2 * rank * (n_in + hidden),
           "dense": lambda: 2 * n_in * hidden}[kind]()
    assert mlp.flops() == inp + 2 * hidden * n_cls, (kind, mlp.flops())
    n_inp = (n_in * hidden if kind == "dense" else mlp.inp.num_params() - hidden) + hidden
    if kind == "tt":  # the cores (1, m1, n1, r) ... (r, mL, nL, 1) and the bias
        ranks = [1] + [min(rank, math.prod(out_factors[:k]) * math.prod(in_factors[:k]),
                           math.prod(out_factors[k:]) * math.prod(in_factors[k:]))
                       for k in range(1, len(in_factors))] + [1]
        assert n_inp == hidden + sum(ranks[k] * o * i * ranks[k + 1] for k, (o, i) in
                                     enumerate(zip(out_factors, in_factors, strict=True)))
    assert mlp.num_params() == stored == n_inp + (hidden + 1) * n_cls


@covers("models.StructuredMLP")
@pytest.mark.parametrize("dtype,kind,width,batch", [(C64, "tt", 8, (2,))],
                         ids=["complex64-tt"])
def test_structured_mlp_forward_is_the_dense_composition(dtype, kind, width, batch):
    n_in, n_cls = 5, 3
    mlp = build(lambda rngs: StructuredMLP(n_in, n_cls, width=width, depth=3, layer=kind, rank=2,
                                           n_factors=2, param_dtype=dtype, rngs=rngs), 0)
    x = rand(0, (*batch, n_in), dtype)
    h = np64(x).reshape(-1, n_in)
    for lay in (mlp.inp, *mlp.hidden):
        k = np64(lay.kernel[...]) if lay is mlp.inp else structured_kernel(lay)
        h = h @ k + np64(lay.bias[...])
        h = np.where(h.real > 0, h, 0)  # jax.nn.relu (complex: by the real part)
    ref = h @ np64(mlp.out.kernel[...]) + np64(mlp.out.bias[...])
    y = probe(mlp, x)
    assert y.shape == (*batch, n_cls) and y.dtype == jnp.dtype(dtype)
    close(np64(y).reshape(ref.shape), ref, dtype, factor=8, scale=float(np.abs(ref).max() + 1))
    raises(lambda: mlp(np.ones((n_in + 1,), dtype)), "x must")
    raises(lambda: nnx.eval_shape(lambda: StructuredMLP(n_in, n_cls, width=7, layer="tt", rank=1,
                                                        rngs=nnx.Rngs(0))), "width")


# -------------------------------------------------------- muP multipliers and optimizer


class _Zoo(nnx.Module):
    def __init__(self, s, dtype=F64):
        (n1, n2, m1, m2, r, kh, kw, c_in, c_out) = s
        kw_ = dict(param_dtype=dtype, rngs=nnx.Rngs(0))
        self.lowrank = LowRankLinear(n1 * n2, m1 * m2, rank=r, **kw_)
        self.kron = KroneckerLinear(n1 * n2, m1 * m2, in_factors=(n1, n2), out_factors=(m1, m2),
                                    **kw_)
        self.btt = BTTLinear(n1 * n2, m1 * m2, rank=min(r, m2, n1), in_factors=(n1, n2),
                             out_factors=(m1, m2), use_bias=False, **kw_)
        self.tt = TTLinear(n1 * n2, m1 * m2, in_factors=(n1, n2), out_factors=(m1, m2), rank=r,
                           **kw_)
        self.tucker = TuckerConv(c_in, c_out, (kh, kw), ranks=(min(r, c_in), min(r, c_out)),
                                 **kw_)
        self.cp = CPConv(c_in, c_out, (kh, kw), rank=r, **kw_)
        self.emb = TTEmbedding(n1 * n2, m1 * m2, vocab_factors=(n1, n2),
                               feature_factors=(m1, m2), rank=r, **kw_)
        self.dense = nnx.Linear(m1 * m2, 2, **kw_)


def documented_multipliers(s) -> dict:
    """The muP table from the docstrings' rules, computed from the sizes alone."""
    (n1, n2, m1, m2, r, kh, kw, c_in, c_out) = s
    d_in = n1 * n2
    t = {("lowrank", "u"): d_in / r, ("lowrank", "v"): 1.0, ("kron", "a"): n2, ("kron", "b"): n1,
         ("btt", "left"): n2, ("btt", "right"): n1 / min(r, m2, n1)}
    # TTLinear: in_features / (r_{k-1} n_k); the bond is r (r <= 4 <= min(m1 n1, m2 n2))
    t.update({("tt", "cores", 0): d_in / n1, ("tt", "cores", 1): d_in / (r * n2)})
    fan = kh * kw * c_in
    ri, ro = min(r, c_in), min(r, c_out)
    t.update({("tucker", "first"): kh * kw, ("tucker", "core"): c_in / ri,
              ("tucker", "last"): fan / ro})
    t.update({("cp", "first"): kh * kw, ("cp", "vertical"): kw * c_in,
              ("cp", "horizontal"): kh * c_in, ("cp", "last"): fan / r})
    t.update({("emb", "cores", 0): 1.0, ("emb", "cores", 1): 1.0 / r})
    for name in ("lowrank", "kron", "tt", "tucker", "cp"):
        t[(name, "bias")] = 1.0
    return {k: float(v) for k, v in t.items()}


# factors >= 2: smaller ones make the structured layers cost more than dense (an error)
SIZES = st.tuples(*[st.integers(2, 3)] * 4, st.integers(1, 4), small, small, small, small)


def multiplier_table(model) -> dict:
    """``layer_lr_multipliers`` as ``{path: float}``, the structured layers' only."""
    return {p: v.get_value() for p, v in nnx.to_flat_state(layer_lr_multipliers(model))
            if p[0] != "dense"}


@covers("models.layer_lr_multipliers")
@settings(max_examples=5)
@given(SIZES)
def test_multipliers_follow_the_documented_rules(s):
    z = nnx.eval_shape(lambda: _Zoo(s))  # the table depends on shapes only
    assert multiplier_table(z) == documented_multipliers(s)


@nnx.jit
def _sgd_step(opt, model, grads):
    opt.update(model, grads)


@covers("models.structured_optimizer")
def test_structured_optimizer_is_sgd_times_the_multiplier():
    dtype, s = C64, (2, 3, 3, 2, 2, 2, 1, 2, 3)
    z = build(lambda rngs: _Zoo(s, dtype), 0)
    table = multiplier_table(z)
    params = nnx.state(z, nnx.Param)
    flat = nnx.to_flat_state(params)
    grads = nnx.from_flat_state([(p, type(v)(jnp.asarray(rand(j, v.shape, v.dtype))))
                                 for j, (p, v) in enumerate(flat)])
    before = {p: np64(v[...]) for p, v in flat}
    lr = 0.3
    _sgd_step(nnx.Optimizer(z, structured_optimizer(z, optax.sgd(lr)), wrt=nnx.Param), z, grads)
    g = {p: np64(v[...]) for p, v in nnx.to_flat_state(grads)}
    for p, v in nnx.to_flat_state(nnx.state(z, nnx.Param)):
        mult = table.get(p, 1.0)  # parameters of layers without multipliers: 1
        assert (p in table) == (p[0] != "dense"), p
        close(before[p] - np64(v[...]), lr * mult * g[p], dtype, factor=2,
              scale=max(1.0, lr * mult * np.abs(g[p]).max()))
    # the transform also takes the pure dict of the state
    tx = structured_optimizer(z, optax.sgd(lr))
    pure = nnx.to_pure_dict(grads)
    upd, _ = jax.jit(tx.update)(pure, tx.init(pure))
    close(np64(upd["btt"]["left"]), -lr * table[("btt", "left")] * g[("btt", "left")], dtype)


@covers("models.factorize_dims")
@settings(max_examples=5)
@given(st.integers(1, 10**5))
def test_factorize_dims_is_the_most_balanced_pair(n):
    a, b = factorize_dims(n, 2)
    assert a * b == n and 1 <= a <= b
    assert not any(n % d == 0 for d in range(a + 1, math.isqrt(n) + 1))
    for bad in (0, -n, float(n), True):
        raises(lambda bad=bad: factorize_dims(bad, 2), "n")


# ------------------------------------------------------------------- bad arguments

def R():
    return dict(rngs=nnx.Rngs(0))


BAD = [
    (lambda: LowRankLinear(6, 4, rank=0, **R()), "rank"),
    (lambda: LowRankLinear(-6, 4, rank=1, **R()), "in_features"),
    (lambda: LowRankLinear(6, 0, rank=1, **R()), "out_features"),
    (lambda: KroneckerLinear(6, 4, in_factors=(2, 2), out_factors=(2, 2), **R()), "in_factors"),
    (lambda: KroneckerLinear(6, 4, in_factors=(2, 3), out_factors=(4, 2), **R()), "out_factors"),
    (lambda: MonarchLinear(6, 4, in_factors=(1, 2, 3), **R()), "in_factors"),
    (lambda: BTTLinear(6, 4, rank=0, **R()), "rank"),
    (lambda: BTTLinear(6, 4, rank=1, in_factors=(-2, -3), **R()), "in_factors"),
    (lambda: TTLinear(6, 4, in_factors=(2, 3), out_factors=(2, 2), rank=0, **R()), "rank"),
    (lambda: TTLinear(6, 4, in_factors=(2, 3), out_factors=(2, 2), rank=(2, 2), **R()), "rank"),
    (lambda: TTLinear(6, 4, in_factors=(2, 3), out_factors=(4,), rank=2, **R()), "out_factors"),
    (lambda: TTLinear.from_dense(np.ones((6, 4)), in_factors=(2, 3), out_factors=(2, 2),
                                 rank=0, **R()), "rank"),
    (lambda: TuckerConv(2, 4, 0, ranks=(1, 1), **R()), "kernel_size"),
    (lambda: TuckerConv(2, 4, 3, ranks=(0, 1), **R()), "ranks"),
    (lambda: TuckerConv(2, 4, 3, ranks=(1, 1), strides=0, **R()), "strides"),
    (lambda: CPConv(2, 4, 3, rank=1, padding=-1, **R()), "padding"),
    (lambda: CPConv(-2, 4, 3, rank=1, **R()), "in_features"),
    (lambda: TTEmbedding(10, 7, vocab_factors=(3, 4), feature_factors=(2, 3), rank=1, **R()),
     "feature_factors"),
    (lambda: TTEmbedding(0, 6, vocab_factors=(3, 4), feature_factors=(2, 3), rank=1, **R()),
     "num_embeddings"),
    (lambda: TensorRegression((3, -4), 2, rank=1, **R()), "in_shape"),
    (lambda: TensorRegression((3, 4), 2, rank=1, dropout_rate=1.0, **R()), "dropout_rate"),
    (lambda: TensorRegression.from_dense(np.ones((3, 4, 2)), rank=1000, form="cp", **R()), "rank"),
    (lambda: MPSClassifier(5, 3, bond_dim=0, **R()), "bond_dim"),
    (lambda: MPSClassifier(5, 3, bond_dim=2, label_site=6, **R()), "label_site"),
    (lambda: MPSClassifier(5, 3, bond_dim=2, local_dim=1, **R()), "local_dim"),
    (lambda: MPSBornMachine(4, 0, bond_dim=1, **R()), "vocab_size"),
    (lambda: MPSBornMachine(4, 3, bond_dim=0, **R()), "bond_dim"),
    (lambda: StructuredMLP(5, 3, width=0, **R()), "width"),
    (lambda: StructuredMLP(5, 3, width=8, depth=0, **R()), "depth"),
    (lambda: StructuredMLP(5, 3, width=8, layer="btt", **R()), "rank"),
    (lambda: StructuredMLP(5, 3, width=8, layer="nope", **R()), "layer"),
    (lambda: LoRA(np.ones((5,)), rank=1, **R()), "kernel"),
    (lambda: LoRA(np.ones((5, 3)), np.ones(4), rank=1, **R()), "bias"),
    (lambda: LoRA(np.ones((5, 3)), rank=1, alpha=float("nan"), **R()), "alpha"),
    (lambda: LoTR(np.ones((2, 5, 3)), rank=4, **R()), "rank"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=1, strides=0, **R()), "strides"),
    (lambda: FLoRA(np.ones((3, 3, 2, 4)), rank=1, padding="FULL", **R()), "padding"),
    (lambda: local_feature_map(jnp.ones(3), 0), "local_dim"),
    (lambda: local_feature_map(jnp.ones(3), 2.5), "local_dim"),
]


@pytest.mark.parametrize("make,name", BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
def test_bad_arguments_name_the_argument(make, name):
    raises(lambda: nnx.eval_shape(make), name)  # abstractly: the checks run before any maths

