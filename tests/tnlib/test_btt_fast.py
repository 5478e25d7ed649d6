"""The dot_general fast path of tnlib.btt.matvec: agreement with the dense product
(float64) for non-square factors, ranks 1 and > 1 and several batch shapes, under jit,
vmap and grad; the GEMM layout (no transposes of the activations before the products);
and the 16-bit path (float32 accumulation, bf16 output, error no worse than a pure
bf16-accumulation baseline on a long contraction)."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from dense_checks import F64, close

from tnlib import btt

BF16 = jnp.bfloat16

# (out_factors, in_factors, rank): non-square blocks (m1 != n1, m2 != n2), Monarch and r > 1
SHAPES = [((2, 3), (5, 2), 1), ((3, 2), (2, 4), 3), ((4, 1), (3, 5), 2)]
LEADS = [(), (4,), (2, 3)]


def normal(seed, shape, dtype=F64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def blocktt(seed, out_factors, in_factors, rank, dtype=F64):
    (m1, m2), (n1, n2) = out_factors, in_factors
    return btt.BlockTT(normal(seed, (n2, m1, n1, rank), dtype),
                       normal(seed + 1, (m1, m2, n2, rank), dtype))


def dense_of(w):
    """The dense matrix from the definition ``W[(i, j), (p, q)] = sum_k right[i, j, q, k]
    left[q, i, p, k]`` (jnp.einsum, differentiable, independent of btt)."""
    if isinstance(w, btt.LowRank):
        return w.u @ w.v
    if isinstance(w, btt.Kronecker):
        return jnp.einsum("ip,jq->ijpq", w.a, w.b).reshape(w.d_out, w.d_in)
    return jnp.einsum("ijqk,qipk->ijpq", w.right, w.left).reshape(w.d_out, w.d_in)


def test_blocktt_matvec_equals_dense_for_shapes_and_batch_shapes():
    ws = [blocktt(3 * s, *shape) for s, shape in enumerate(SHAPES)]
    cases = [(w, normal(10 + i, (*lead, w.d_in))) for w in ws for i, lead in enumerate(LEADS)]
    eager = [btt.matvec(w, x) for w, x in cases[:3]]
    jitted = jax.jit(lambda cases: [btt.matvec(w, x) for w, x in cases])(cases)  # one compile
    for (w, x), y in zip(cases, jitted, strict=True):
        assert y.shape == (*x.shape[:-1], w.d_out) and y.dtype == F64
        close(y, np.asarray(x) @ np.asarray(dense_of(w)).T, tol=1e-12)
    for (w, x), y in zip(cases, eager, strict=False):
        close(y, np.asarray(x) @ np.asarray(dense_of(w)).T, tol=1e-12)


def test_lowrank_and_kronecker_match_dense_non_square():
    for w in (btt.LowRank(normal(1, (7, 3)), normal(2, (3, 11))),
              btt.Kronecker(normal(3, (2, 5)), normal(4, (3, 2)))):
        x = normal(5, (2, 3, w.d_in))
        close(btt.matvec(w, x), np.asarray(x) @ np.asarray(dense_of(w)).T, tol=1e-12)


def test_vmap_over_vectors_and_structures():
    w = blocktt(20, (3, 2), (2, 4), 2)
    x = normal(21, (5, 3, w.d_in))
    close(jax.vmap(btt.matvec, in_axes=(None, 0))(w, x), btt.matvec(w, x), tol=1e-12)
    ws = jax.tree.map(lambda *a: jnp.stack(a), *[blocktt(30 + 2 * k, (3, 2), (2, 4), 2)
                                                 for k in range(3)])
    ys = jax.jit(jax.vmap(btt.matvec))(ws, x[:3])
    for k in range(3):
        wk = jax.tree.map(lambda a, k=k: a[k], ws)
        close(ys[k], np.asarray(x[k]) @ np.asarray(dense_of(wk)).T, tol=1e-12)


def test_grad_wrt_x_and_cores_equals_grad_of_dense_product():
    """Monarch and rank 3; gradients of the structured and the dense loss in one jit."""
    ws = [blocktt(40, (3, 2), (2, 4), 1), blocktt(43, (3, 2), (2, 4), 3)]
    x, c = normal(41, (3, 8)), normal(42, (3, 6))
    loss = lambda w, x: jnp.sum(jnp.sin(btt.matvec(w, x)) * c)
    dense_loss = lambda w, x: jnp.sum(jnp.sin(x @ dense_of(w).T) * c)
    both = jax.jit(lambda ws: [(jax.grad(loss, (0, 1))(w, x), jax.grad(dense_loss, (0, 1))(w, x))
                               for w in ws])
    for got, want in both(ws):
        for g, h in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            close(g, h, tol=1e-12)


def test_monarch_layout_has_no_transpose_before_the_products():
    """Rank 1: two dot_generals with the batch of vectors as the GEMM rows; the only
    transpose of activations is the one of the output after the last product."""
    for rank in (1, 2):
        w = blocktt(50, (3, 2), (2, 4), rank)
        eqns = jax.make_jaxpr(btt.matvec)(w, normal(51, (4, w.d_in))).jaxpr.eqns
        names = [e.primitive.name for e in eqns]
        dots = [i for i, n in enumerate(names) if n == "dot_general"]
        assert len(dots) == 2
    names = [e.primitive.name for e in jax.make_jaxpr(btt.matvec)(
        blocktt(52, (3, 2), (2, 4), 1), normal(53, (4, 8))).jaxpr.eqns]
    first_dot = names.index("dot_general")
    assert "transpose" not in names[: names.index("dot_general", first_dot + 1)]


# ----------------------------------------------------------------------- 16-bit path


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
    loss = lambda w, x: jnp.sum(jnp.square(btt.matvec(w, x).astype(jnp.float32)))
    dense_loss = lambda w, x: jnp.sum(jnp.square(x @ dense_of(w).T))
    w64, x64 = jax.tree.map(lambda a: a.astype(F64), (w, x))
    got, want = jax.jit(lambda: (jax.grad(loss, (0, 1))(w, x),
                                 jax.grad(dense_loss, (0, 1))(w64, x64)))()
    for g, h in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == BF16
        assert rel_err(g, np.asarray(h)) < 3e-2
