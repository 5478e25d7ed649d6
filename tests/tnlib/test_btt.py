"""tnlib.btt against the dense matrices it represents (float64; eager / jit / vmap,
eval_shape, check_grads and gradients of the dense product), projections of structured
and random matrices, hand counts of parameters and flops, the initialization scale, and
the dot_general fast path of matvec: GEMM layout (no activation transposed before the
products) and the 16-bit path (float32 accumulation, bf16 output, error no worse than a
pure bf16-accumulation baseline on a long contraction)."""

import math

import chex
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from dense_checks import F64, MODES, close, key, run
from jax.test_util import check_grads

from tnlib import btt


def normal(seed, shape, dtype=F64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return jnp.asarray(x, dtype)


def rbg_key(i=0):
    """A typed "rbg" PRNG key: random() accepts any key, and XLA compiles rbg sampling
    in a fraction of the time threefry takes on the CPU (keeps this file fast)."""
    return jax.random.key(i, impl="rbg")


def dense_of(w):
    """The dense matrix from the definitions, ``W[(i, j), (p, q)] = sum_k right[i, j, q, k]
    left[q, i, p, k]`` and its siblings (jnp.einsum: differentiable, independent of
    btt.to_dense)."""
    if isinstance(w, btt.LowRank):
        return w.u @ w.v
    if isinstance(w, btt.Kronecker):
        return jnp.einsum("ip,jq->ijpq", w.a, w.b).reshape(w.d_out, w.d_in)
    return jnp.einsum("ijqk,qipk->ijpq", w.right, w.left).reshape(w.d_out, w.d_in)


def reference_dense(w):
    return np.asarray(dense_of(w))


def blocktt(seed, out_factors, in_factors, rank, dtype=F64):
    (m1, m2), (n1, n2) = out_factors, in_factors
    return btt.BlockTT(normal(seed, (n2, m1, n1, rank), dtype),
                       normal(seed + 1, (m1, m2, n2, rank), dtype))


def make(kind, seed, dtype=F64):
    """Small structures with Gaussian (numpy) entries: d_out = 6, d_in = 10."""
    if kind == "lowrank":
        return btt.LowRank(normal(seed, (6, 2), dtype), normal(seed + 1, (2, 10), dtype))
    if kind == "kronecker":
        return btt.Kronecker(normal(seed, (2, 5), dtype), normal(seed + 1, (3, 2), dtype))
    if kind == "monarch":
        return btt.BlockTT(normal(seed, (2, 2, 5, 1), dtype), normal(seed + 1, (2, 3, 2, 1), dtype))
    return btt.BlockTT(normal(seed, (2, 2, 5, 2), dtype), normal(seed + 1, (2, 3, 2, 2), dtype))


KINDS = ["lowrank", "kronecker", "btt", "monarch"]


def project(kind, dense):
    if kind == "lowrank":
        return btt.from_dense(dense, max_rank=2, kind="lowrank")
    if kind == "kronecker":
        return btt.from_dense(dense, kind="kronecker", dims=((2, 3), (5, 2)))
    if kind == "monarch":
        return btt.from_dense(dense, kind="monarch", dims=((2, 3), (5, 2)))
    return btt.from_dense(dense, max_rank=2, dims=((2, 3), (5, 2)))


def randomize(kind, k, dtype=F64):
    if kind == "lowrank":
        return btt.random(k, (6, 10), 2, dtype, kind="lowrank")
    if kind == "kronecker":
        return btt.random(k, ((2, 3), (5, 2)), 1, dtype, kind="kronecker")
    if kind == "monarch":
        return btt.random(k, ((2, 3), (5, 2)), 1, dtype, kind="monarch")
    return btt.random(k, ((2, 3), (5, 2)), 2, dtype)


# ------------------------------------------------------------------ dense agreement


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_matvec_and_to_dense_match_dense(mode, kind):
    w = make(kind, 0)
    assert (w.d_out, w.d_in) == (6, 10)
    W, other = reference_dense(w), make("btt", 1)
    x = normal(5, (4, 3, 10))

    def verbs(w, other, x):  # one compilation per kind under jit
        return (btt.to_dense(w), btt.matvec(w, x), btt.matvec(w, x[0, 0]), btt.norm(w),
                btt.inner(w, other), btt.inner(w, w))

    dense, y, y1, nrm, ip, ip_self = run(mode, verbs, w, other, x)
    close(dense, W)
    chex.assert_shape(y, (4, 3, 6))
    close(y, np.asarray(x) @ W.T)
    close(y1, W @ np.asarray(x[0, 0]))  # a single vector
    close(nrm, np.linalg.norm(W))
    close(ip, np.vdot(W, reference_dense(other)))
    close(ip_self, np.vdot(W, W))  # same-kind shortcut (lowrank, kronecker)


@pytest.mark.parametrize("kind", ["lowrank", "kronecker", "btt"])
def test_complex_matvec(kind):
    w = make(kind, 3, jnp.complex128)
    x = normal(4, (2, 10), jnp.complex128)
    close(btt.matvec(w, x), np.asarray(x) @ reference_dense(w).T)


def test_block_tt_stages_as_written_in_the_docstring():
    """The two-stage definition, spelled out with numpy loops over the batch indices."""
    w = make("btt", 7)
    x = np.asarray(normal(8, (10,))).reshape(5, 2)  # (n1, n2)
    left, right = np.asarray(w.left), np.asarray(w.right)
    z = np.stack([np.einsum("ipk,p->ik", left[q], x[:, q]) for q in range(2)])  # (n2, m1, r)
    y = np.stack([np.einsum("jqk,qk->j", right[i], z[:, i]) for i in range(2)])  # (m1, m2)
    close(btt.matvec(w, x.reshape(-1)), y.reshape(-1))


def test_vmap_over_a_batch_of_structures_and_eval_shape():
    keys = jax.random.split(rbg_key(1), 3)
    x = normal(2, (3, 4, 10))

    @jax.jit  # one compilation for all kinds
    def build_and_apply(keys, x):
        out = {}
        for kind in KINDS:
            batch = jax.vmap(lambda k, kind=kind: randomize(kind, k))(keys)
            out[kind] = batch, jax.vmap(btt.matvec)(batch, x), jax.vmap(btt.to_dense)(batch)
        return out

    for kind, (batch, ys, dense) in build_and_apply(keys, x).items():
        assert (batch.d_out, batch.d_in) == (6, 10)  # read from trailing axes
        for b in range(3):
            one = jax.tree.map(lambda a, b=b: np.asarray(a)[b], batch)
            close(dense[b], reference_dense(one))
            close(ys[b], np.asarray(x[b]) @ reference_dense(one).T)
        shaped = jax.eval_shape(lambda k, kind=kind: randomize(kind, k), key(0))
        assert btt.num_params(shaped) == btt.num_params(make(kind, 0))
        out = jax.eval_shape(btt.matvec, shaped, jax.ShapeDtypeStruct((7, 10), F64))
        assert out.shape == (7, 6) and out.dtype == F64


@pytest.mark.parametrize("kind", KINDS)
def test_check_grads(kind):
    w, x = make(kind, 11), normal(12, (2, 10))
    check_grads(jax.jit(btt.matvec), (w, x), order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)
    check_grads(jax.jit(btt.to_dense), (w,), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)


# (out_factors, in_factors, rank): non-square blocks (m1 != n1, m2 != n2), Monarch and r > 1
SHAPES = [((2, 3), (5, 2), 1), ((3, 2), (2, 4), 3), ((4, 1), (3, 5), 2)]
LEADS = [(), (4,), (2, 3)]


def test_blocktt_matvec_equals_dense_for_shapes_and_batch_shapes():
    ws = [blocktt(3 * s, *shape) for s, shape in enumerate(SHAPES)]
    cases = [(w, normal(10 + i, (*lead, w.d_in))) for w in ws for i, lead in enumerate(LEADS)]
    jitted = jax.jit(lambda cases: [btt.matvec(w, x) for w, x in cases])(cases)  # one compile
    for (w, x), y in zip(cases, jitted, strict=True):
        chex.assert_shape(y, (*x.shape[:-1], w.d_out))
        assert y.dtype == F64
        close(y, np.asarray(x) @ reference_dense(w).T, tol=1e-12)
    # vmap over vectors is the batched product
    w, x = ws[1], normal(21, (5, 3, ws[1].d_in))
    chex.assert_trees_all_close(jax.vmap(btt.matvec, in_axes=(None, 0))(w, x),
                                btt.matvec(w, x), atol=1e-12, rtol=0)


def test_grad_wrt_x_and_cores_equals_grad_of_dense_product():
    """Monarch and rank 3; gradients of the structured and the dense loss in one jit."""
    ws = [blocktt(40, (3, 2), (2, 4), 1), blocktt(43, (3, 2), (2, 4), 3)]
    x, c = normal(41, (3, 8)), normal(42, (3, 6))
    loss = lambda w, x: jnp.sum(jnp.sin(btt.matvec(w, x)) * c)  # noqa: E731
    dense_loss = lambda w, x: jnp.sum(jnp.sin(x @ dense_of(w).T) * c)  # noqa: E731
    both = jax.jit(lambda ws: [(jax.grad(loss, (0, 1))(w, x), jax.grad(dense_loss, (0, 1))(w, x))
                               for w in ws])
    for got, want in both(ws):
        chex.assert_trees_all_close(got, want, atol=1e-12, rtol=0)


def test_monarch_layout_has_no_transpose_before_the_products():
    """Rank 1: two dot_generals with the batch of vectors as the GEMM rows; the only
    transpose of activations is the one of the output after the last product."""
    for rank in (1, 2):
        w = blocktt(50, (3, 2), (2, 4), rank)
        eqns = jax.make_jaxpr(btt.matvec)(w, normal(51, (4, w.d_in))).jaxpr.eqns
        assert [e.primitive.name for e in eqns].count("dot_general") == 2
    names = [e.primitive.name for e in jax.make_jaxpr(btt.matvec)(
        blocktt(52, (3, 2), (2, 4), 1), normal(53, (4, 8))).jaxpr.eqns]
    first_dot = names.index("dot_general")
    assert "transpose" not in names[: names.index("dot_general", first_dot + 1)]


# ---------------------------------------------------------------------- projections


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_from_dense_reproduces_structured_matrices(mode, kind):
    W = btt.to_dense(make(kind, 20))
    fitted = run(mode, lambda d: project(kind, d), W)
    close(btt.to_dense(fitted), W)
    assert btt.num_params(fitted) == btt.num_params(make(kind, 20))


def test_monarch_is_rank_one_block_tt():
    w = jax.eval_shape(lambda k: btt.random(k, ((2, 3), (5, 2)), 1, F64, kind="monarch"), key(3))
    assert isinstance(w, btt.BlockTT) and w.rank == 1
    assert w.left.shape == (2, 2, 5, 1) and w.right.shape == (2, 3, 2, 1)


def test_block_tt_projection_is_blockwise_optimal():
    """The error of btt.from_dense equals the sum of the per-block SVD tails, and
    no perturbation of the optimum lowers it."""
    W = np.asarray(normal(30, (6, 10)))
    fitted = btt.from_dense(W, max_rank=2, dims=((2, 3), (5, 2)))
    blocks = W.reshape(2, 3, 5, 2).transpose(0, 3, 1, 2)  # (m1, n2, m2, n1)
    tails = np.linalg.svd(blocks, compute_uv=False)[..., 2:]
    err = np.linalg.norm(np.asarray(btt.to_dense(fitted)) - W)
    np.testing.assert_allclose(err, np.sqrt(np.sum(tails ** 2)), rtol=1e-10)
    for s in range(3):
        moved = jax.tree.map(lambda a, s=s: a + 1e-3 * normal(40 + s, a.shape), fitted)
        assert np.linalg.norm(np.asarray(btt.to_dense(moved)) - W) > err


def test_kronecker_projection_matches_van_loan_pitsianis_and_is_optimal():
    W = np.asarray(normal(31, (6, 10)))
    fitted = btt.from_dense(W, kind="kronecker", dims=((2, 3), (5, 2)))
    rearranged = W.reshape(2, 3, 5, 2).transpose(0, 2, 1, 3).reshape(10, 6)
    s = np.linalg.svd(rearranged, compute_uv=False)
    err = np.linalg.norm(np.asarray(btt.to_dense(fitted)) - W)
    np.testing.assert_allclose(err, np.sqrt(np.sum(s[1:] ** 2)), rtol=1e-10)
    moved = btt.Kronecker(fitted.a + 1e-3 * normal(1, (2, 5)), fitted.b)
    assert np.linalg.norm(np.asarray(btt.to_dense(moved)) - W) > err


def test_low_rank_projection_is_eckart_young():
    W = np.asarray(normal(32, (6, 10)))
    fitted = btt.from_dense(W, max_rank=3, kind="lowrank")
    s = np.linalg.svd(W, compute_uv=False)
    err = np.linalg.norm(np.asarray(btt.to_dense(fitted)) - W)
    np.testing.assert_allclose(err, np.sqrt(np.sum(s[3:] ** 2)), rtol=1e-10)


def test_block_tt_beats_low_rank_at_equal_parameter_count():
    """A 64 x 64 Gaussian matrix, BTT (8, 8) x (8, 8) at rank 1 (1024 params) against
    LowRank at rank 8 (1024 params) and rank 7 (fewer)."""
    W = normal(33, (64, 64))
    b = btt.from_dense(W, max_rank=1, dims=((8, 8), (8, 8)))
    errs = {}
    for r in (7, 8):
        lr = btt.from_dense(W, max_rank=r, kind="lowrank")
        assert btt.num_params(lr) <= btt.num_params(b) == 1024
        errs[r] = float(jnp.linalg.norm(btt.to_dense(lr) - W))
    e_btt = float(jnp.linalg.norm(btt.to_dense(b) - W))
    assert e_btt < errs[8] <= errs[7]


# ------------------------------------------------------------ counts, init, scaling


@pytest.mark.parametrize("out_f,in_f,r", [((2, 3), (5, 2), 1), ((4, 4), (2, 8), 3),
                                          ((1, 7), (3, 1), 2)])
def test_num_params_and_flops_hand_counts(out_f, in_f, r):
    (m1, m2), (n1, n2) = out_f, in_f
    # Shapes only (eval_shape): counts read array shapes and need no values.
    w = jax.eval_shape(lambda k: btt.random(k, (out_f, in_f), r, F64), key(0))
    per_vector = n2 * (m1 * r) * n1 + m1 * m2 * (n2 * r)  # two batched matmuls
    assert btt.num_params(w) == w.left.size + w.right.size == r * (n2 * m1 * n1 + m1 * m2 * n2)
    assert btt.flops(w, 5) == 2 * 5 * per_vector
    k = jax.eval_shape(lambda k: btt.random(k, (out_f, in_f), 1, F64, kind="kronecker"), key(0))
    assert btt.num_params(k) == m1 * n1 + m2 * n2
    assert btt.flops(k, 3) == 2 * 3 * (n1 * n2 * m2 + m1 * n1 * m2)
    d_out, d_in = m1 * m2, n1 * n2
    lr = jax.eval_shape(lambda k: btt.random(k, (d_out, d_in), r, F64, kind="lowrank"), key(0))
    assert btt.num_params(lr) == d_out * r + r * d_in
    assert btt.flops(lr, 4) == 2 * 4 * (d_in * r + r * d_out)


def test_init_gives_dense_entry_variance_one_over_d_in():
    d_in = 16 * 16
    makers = {
        "lowrank": lambda k: btt.random(k, (192, d_in), 8, F64, kind="lowrank"),
        "kronecker": lambda k: btt.random(k, ((12, 16), (16, 16)), 1, F64, kind="kronecker"),
        "btt": lambda k: btt.random(k, ((12, 16), (16, 16)), 4, F64),
        "monarch": lambda k: btt.random(k, ((12, 16), (16, 16)), 1, F64, kind="monarch"),
    }

    @jax.jit  # one compilation; Kronecker entries share factors, so average a few draws
    def variances(keys):
        return {kind: jnp.mean(jax.vmap(lambda k, f=f: jnp.var(btt.to_dense(f(k))))(keys))
                for kind, f in makers.items()}

    for kind, var in variances(jax.random.split(rbg_key(9), 4)).items():
        assert abs(float(var) * d_in - 1) < 0.2, (kind, float(var) * d_in)


def test_lr_multipliers_follow_fan_in_rule():
    w = btt.BlockTT(normal(0, (8, 4, 3, 2)), normal(1, (4, 6, 8, 2)))
    m = btt.lr_multipliers(w)
    assert isinstance(m, btt.BlockTT)
    assert m.left == pytest.approx(w.d_in / 3) and m.right == pytest.approx(w.d_in / (8 * 2))
    lr = btt.lr_multipliers(btt.LowRank(normal(2, (5, 3)), normal(3, (3, 12))))
    assert (lr.u, lr.v) == (pytest.approx(4.0), pytest.approx(1.0))
    kr = btt.lr_multipliers(make("kronecker", 0))
    assert (kr.a, kr.b) == (pytest.approx(2.0), pytest.approx(5.0))
    # Same tree structure as the parameters, so it maps against them (e.g. scaling updates).
    scaled = jax.tree.map(lambda g, s: g * s, w, m)
    close(scaled.left, w.left * w.d_in / 3)
    assert math.isclose(btt.lr_multipliers(make("monarch", 0)).right, 5.0)


# ----------------------------------------------------------------------- 16-bit path

BF16 = jnp.bfloat16


def bf16_sequential(terms):
    """Sum of float32 ``terms`` accumulated in bfloat16 (rounded after every addition)."""
    acc = None
    for t in terms:
        acc = t.astype(ml_dtypes.bfloat16) if acc is None else (
            acc.astype(np.float32) + t).astype(ml_dtypes.bfloat16)
    return acc


def lowrank_pure_bf16(w, x):
    x, u, v = (np.asarray(a.astype(jnp.float32)) for a in (x, w.u, w.v))
    t = bf16_sequential(x[:, None, p] * v[None, :, p] for p in range(x.shape[1]))
    t = t.astype(np.float32)
    return bf16_sequential(t[:, None, k] * u[None, :, k] for k in range(u.shape[1]))


def blocktt_pure_bf16(w, x):
    left, right, x = (np.asarray(a.astype(jnp.float32)) for a in (w.left, w.right, x))
    n2, m1, n1, r = left.shape
    x3 = x.reshape(-1, n1, n2)
    z = bf16_sequential(np.einsum("bq,qik->bqik", x3[:, p], left[:, :, p]) for p in range(n1))
    z = z.astype(np.float32)
    y = bf16_sequential(np.einsum("bi,ij->bij", z[:, q, :, k], right[:, :, q, k])
                        for q in range(n2) for k in range(r))
    return y.reshape(x.shape[0], -1)


def rel_err(y, ref):
    y = np.asarray(y, np.float64)
    return np.linalg.norm(y - ref) / np.linalg.norm(ref)


def test_bf16_accumulates_in_float32_and_returns_bf16():
    for w in (blocktt(60, (3, 2), (2, 4), 2, BF16), btt.LowRank(normal(61, (5, 2), BF16),
              normal(62, (2, 8), BF16)), btt.Kronecker(normal(63, (2, 3), BF16),
              normal(64, (3, 4), BF16))):
        x = normal(65, (4, w.d_in), BF16)
        jaxpr = jax.make_jaxpr(btt.matvec)(w, x)
        dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
        assert len(dots) == 2
        assert all(e.params["preferred_element_type"] == jnp.float32 for e in dots)
        assert all(v.aval.dtype == BF16 for e in dots for v in e.invars)  # 16-bit GEMMs
        assert jaxpr.out_avals[0].dtype == BF16
    # a float32 input promotes: float32 throughout
    w = blocktt(66, (3, 2), (2, 4), 2, BF16)
    assert btt.matvec(w, normal(67, (4, 8), jnp.float32)).dtype == jnp.float32


@pytest.mark.parametrize("kind", ["lowrank", "blocktt"])
def test_bf16_error_within_tolerance_and_no_worse_than_bf16_accumulation(kind):
    """Width 4096: LowRank contracts 4096 terms, BlockTT (64 x 64, rank 2) 64 then 128."""
    if kind == "lowrank":
        w = btt.LowRank(normal(70, (64, 2), BF16), normal(71, (2, 4096), BF16))
        baseline = lowrank_pure_bf16
    else:
        w = blocktt(72, (64, 64), (64, 64), 2, BF16)
        baseline = blocktt_pure_bf16
    x = normal(73, (4, w.d_in), BF16)
    w64 = jax.tree.map(lambda a: a.astype(F64), w)
    ref = np.asarray(x.astype(F64) @ dense_of(w64).T)
    y = jax.jit(btt.matvec)(w, x)
    assert y.dtype == BF16
    ours, pure = rel_err(y, ref), rel_err(baseline(w, x), ref)
    assert ours < 1e-2  # a few bf16 roundings (unit roundoff 2**-9)
    assert ours <= pure, (ours, pure)


def test_bf16_grad_close_to_float64():
    w = blocktt(80, (8, 8), (8, 8), 2, BF16)
    x = normal(81, (4, w.d_in), BF16)
    loss = lambda w, x: jnp.sum(jnp.square(btt.matvec(w, x).astype(jnp.float32)))  # noqa: E731
    dense_loss = lambda w, x: jnp.sum(jnp.square(x @ dense_of(w).T))  # noqa: E731
    w64, x64 = jax.tree.map(lambda a: a.astype(F64), (w, x))
    got, want = jax.jit(lambda: (jax.grad(loss, (0, 1))(w, x),
                                 jax.grad(dense_loss, (0, 1))(w64, x64)))()
    for g, h in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == BF16
        assert rel_err(g, np.asarray(h)) < 3e-2


# ------------------------------------------------------------------------ errors


def test_bad_input_raises_naming_the_argument():
    w = make("btt", 0)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 10\)"):
        btt.matvec(w, jnp.zeros((3, 9)))
    with pytest.raises(ValueError, match=r"x must have shape \(6, 10\)"):
        btt.from_dense(jnp.zeros((6, 9)), max_rank=1, dims=((2, 3), (5, 2)))
    # max_rank caps (as in every format): the block / matrix rank bounds it
    assert btt.from_dense(jnp.zeros((6, 10)), max_rank=4, dims=((2, 3), (5, 2))).rank == 3
    assert btt.from_dense(jnp.zeros((6, 10)), max_rank=7, kind="lowrank").rank == 6
    with pytest.raises(TypeError, match="max_rank must be a Python int"):
        btt.from_dense(jnp.zeros((6, 10)), max_rank=2.0, kind="lowrank")
    with pytest.raises(ValueError, match="kind must be one of"):
        btt.random(key(0), (3, 2), 1, kind="dense")
    with pytest.raises(ValueError, match="needs dims"):
        btt.from_dense(jnp.zeros((6, 10)))
    with pytest.raises(ValueError, match="kind='kronecker' has rank 1"):
        btt.from_dense(jnp.zeros((6, 10)), max_rank=2, kind="kronecker", dims=((2, 3), (5, 2)))
    with pytest.raises(ValueError, match="largest allowed value"):
        btt.random(key(0), ((2, 3), (5, 2)), 2, kind="monarch")
    with pytest.raises(ValueError, match="in_factors must be a pair"):
        btt.random(key(0), ((2, 3), (5, 2, 1)), 1)
    with pytest.raises(ValueError, match="out_factors"):
        btt.random(key(0), ((0, 3), (5, 2)), 1, kind="kronecker")
    with pytest.raises(ValueError, match="d_in must be"):
        btt.random(key(0), (3, 0), 1, kind="lowrank")
    with pytest.raises(ValueError, match="batch must be"):
        btt.flops(w, 0)
    bad = btt.BlockTT(jnp.zeros((2, 2, 5, 2)), jnp.zeros((2, 3, 3, 2)))
    with pytest.raises(ValueError, match="w: left .* and right .* disagree"):
        btt.to_dense(bad)
    with pytest.raises(ValueError, match="w: u must be"):
        btt.matvec(btt.LowRank(jnp.zeros((6, 2)), jnp.zeros((3, 10))), jnp.zeros(10))
    with pytest.raises(TypeError, match="LowRank, Kronecker or BlockTT"):
        btt.to_dense(jnp.zeros((3, 3)))


# ------------------------------------- Kronecker: det, slogdet, inv, cholesky (issue 24)


def _kron(m1, m2, seed, dtype=F64, spd=False):
    rng = np.random.default_rng(seed)

    def draw(m):
        x = rng.standard_normal((m, m))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            x = x + 1j * rng.standard_normal((m, m))
        return x @ x.conj().T + m * np.eye(m) if spd else x

    return btt.Kronecker(jnp.asarray(draw(m1), dtype), jnp.asarray(draw(m2), dtype))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [F64, jnp.complex128])
def test_kronecker_det_slogdet_inv_match_dense(mode, dtype):
    for (m1, m2), seed in [((3, 4), 0), ((2, 5), 1), ((4, 1), 2), ((3, 3), 3)]:
        w = _kron(m1, m2, seed, dtype)
        W = np.kron(np.asarray(w.a), np.asarray(w.b))
        close(run(mode, btt.det, w), np.linalg.det(W), 1e-9)
        sign, logabs = run(mode, btt.slogdet, w)
        ref_sign, ref_log = np.linalg.slogdet(W)
        close(sign, ref_sign, 1e-10)
        close(logabs, ref_log, 1e-10)
        inv = run(mode, btt.inv, w)
        assert isinstance(inv, btt.Kronecker) and inv.out_factors == (m1, m2)
        close(btt.to_dense(inv), np.linalg.inv(W), 1e-9)


def test_kronecker_slogdet_signs_both_ways():
    # det(a) < 0 with m2 odd flips the sign; with m2 even it does not
    a = jnp.asarray([[0.0, 1.0], [1.0, 0.0]], F64)  # det -1
    for m2, want in [(3, -1.0), (2, 1.0)]:
        b = jnp.eye(m2, dtype=F64) * 2.0
        w = btt.Kronecker(a, b)
        sign, logabs = btt.slogdet(w)
        ref = np.linalg.slogdet(np.kron(np.asarray(a), np.asarray(b)))
        assert float(sign) == want == ref[0]
        close(logabs, ref[1])
        close(btt.det(w), np.linalg.det(np.kron(np.asarray(a), np.asarray(b))))
    # singular: sign 0, log|det| = -inf, as jnp.linalg.slogdet
    sign, logabs = btt.slogdet(btt.Kronecker(jnp.zeros((2, 2), F64), jnp.eye(3, dtype=F64)))
    assert float(sign) == 0.0 and float(logabs) == -np.inf
    # float32: the product overflows where the log-determinant does not
    w = btt.Kronecker(30.0 * jnp.eye(8, dtype=jnp.float32), 30.0 * jnp.eye(8, dtype=jnp.float32))
    assert not np.isfinite(float(btt.det(w)))
    np.testing.assert_allclose(float(btt.slogdet(w)[1]), 128 * np.log(30.0), rtol=1e-6)


def test_kronecker_cholesky_ported_from_t3f():
    # Ported from t3f's kronecker_test.py, KroneckerTest.testCholesky: np.random.seed(8),
    # K_1 = L_1 L_1^T (2 x 2) and K_2 = L_2 L_2^T (3 x 3) from lower-triangular normal
    # draws (scale 2); the Cholesky factor of kron(K_1, K_2) equals numpy's.
    np.random.seed(8)
    L_1 = np.tril(np.random.normal(scale=2.0, size=(2, 2)))
    L_2 = np.tril(np.random.normal(scale=2.0, size=(3, 3)))
    K_1, K_2 = L_1 @ L_1.T, L_2 @ L_2.T
    K = np.kron(K_1, K_2)
    w = btt.Kronecker(jnp.asarray(K_1), jnp.asarray(K_2))
    c = btt.cholesky(w)
    assert isinstance(c, btt.Kronecker)
    close(btt.to_dense(c), np.linalg.cholesky(K), 1e-10)
    # t3f's testDet / testInv: the dense determinant and inverse of the same matrix
    close(btt.det(w), np.linalg.det(K), 1e-10)
    close(btt.to_dense(btt.inv(w)), np.linalg.inv(K), 1e-10)
    # both factors negative definite: W is still positive definite
    neg = btt.Kronecker(-w.a, -w.b)
    close(jax.jit(btt.cholesky)(neg).a @ jax.jit(btt.cholesky)(neg).a.T, K_1, 1e-10)
    close(btt.to_dense(btt.cholesky(neg)), np.linalg.cholesky(K), 1e-10)


def test_kronecker_cholesky_complex_under_jit():
    w = _kron(3, 2, 4, jnp.complex128, spd=True)
    W = np.kron(np.asarray(w.a), np.asarray(w.b))
    c = btt.to_dense(jax.jit(btt.cholesky)(w))
    close(c, np.linalg.cholesky(W), 1e-10)
    close(c @ c.conj().T, W, 1e-10)


def test_kronecker_ops_under_vmap():
    ws = [_kron(3, 2, s, spd=True) for s in range(3)]
    batch = jax.tree.map(lambda *t: jnp.stack(t), *ws)
    dets = jax.vmap(btt.det)(batch)
    signs, logs = jax.vmap(btt.slogdet)(batch)
    invs = jax.vmap(btt.inv)(batch)
    chols = jax.vmap(btt.cholesky)(batch)
    for i, w in enumerate(ws):
        W = np.kron(np.asarray(w.a), np.asarray(w.b))
        close(dets[i], np.linalg.det(W), 1e-9)
        close(signs[i], 1.0)
        close(logs[i], np.linalg.slogdet(W)[1], 1e-10)
        close(btt.to_dense(jax.tree.map(lambda t, i=i: t[i], invs)), np.linalg.inv(W), 1e-10)
        close(btt.to_dense(jax.tree.map(lambda t, i=i: t[i], chols)), np.linalg.cholesky(W),
              1e-10)


def test_kronecker_ops_check_grads():
    w = _kron(3, 2, 5)
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    check_grads(jax.jit(btt.det), (w,), **kw)
    check_grads(jax.jit(lambda w: btt.slogdet(w)[1]), (w,), **kw)
    check_grads(jax.jit(lambda w: btt.to_dense(btt.inv(w))), (w,), **kw)
    # Cholesky reads the lower triangle only: differentiate through a symmetric input
    spd = _kron(3, 2, 6, spd=True)

    def chol(a, b):
        sym = btt.Kronecker((a + a.T) / 2, (b + b.T) / 2)
        return btt.to_dense(btt.cholesky(sym))

    check_grads(jax.jit(chol), (spd.a, spd.b), **kw)


def test_kronecker_ops_bad_input():
    rect = btt.Kronecker(jnp.ones((2, 3)), jnp.eye(2))
    for fn in (btt.det, btt.slogdet, btt.inv, btt.cholesky):
        with pytest.raises(ValueError, match=r"square factors: w.a has shape \(2, 3\)"):
            fn(rect)
        with pytest.raises(TypeError, match="w must be a tnlib.btt.Kronecker"):
            fn(btt.LowRank(jnp.eye(2), jnp.eye(2)))
    with pytest.raises(ValueError, match="a and b must be matrices"):
        btt.det(btt.Kronecker(jnp.ones((2, 2, 2)), jnp.eye(2)))
