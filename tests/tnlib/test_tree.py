"""tnlib.tree against the dense tensors it represents: float64, eager / jit / vmap,
eval_shape, check_grads, and the hierarchical-SVD error bounds computed from dense
matricizations.

Compilation dominates the cost of these tests, so most of them share a few network
structures (the jit caches are keyed on shapes and trees), references are computed
in numpy (``np_dense`` contracts a network by the Kronecker-product definition, a
second implementation beside ``tree.to_dense``), and hypothesis examples run in
one jit each.
"""

import functools
import math
import random as pyrandom

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from tnlib import tree

DIMS = (2, 3, 2, 3)
TREES = {
    "balanced": ((0, 1), (2, 3)),
    "left_comb": (((0, 1), 2), 3),
    "permuted": ((2, 0), (1, 3)),
    "ternary": ((0, 1, 2), 3),
    "mixed": (0, ((3, 1), 2)),
}


def gaussian(dims, seed):
    # numpy's generator: jax.random would compile a kernel for every new shape
    return jnp.asarray(np.random.default_rng(seed).standard_normal(tuple(dims)), F64)


@functools.cache
def net(name, rank, seed=0, dims=DIMS, dtype=F64):
    """A random network with ``tree.random``'s structure and scaling, filled by numpy
    (``tree.random`` itself is tested below; here we spare its compilations)."""
    tr = name if not isinstance(name, str) else TREES[name]
    rank = dict(rank) if isinstance(rank, tuple) else rank  # per-node ranks as items
    shapes = jax.eval_shape(lambda k: tree.random(k, dims, rank, dtype, tree=tr), key(0))
    rng = np.random.default_rng(seed)

    def fill(sd):
        a = rng.standard_normal(sd.shape) / math.sqrt(math.prod(sd.shape[:-1]))
        if jnp.issubdtype(dtype, jnp.complexfloating):
            a = (a + 1j * rng.standard_normal(sd.shape) / math.sqrt(math.prod(sd.shape[:-1])))
            a = a / math.sqrt(2)
        return jnp.asarray(a, dtype)

    return jax.tree.map(fill, shapes)


def modes_of(node):
    return [node] if isinstance(node, int) else [m for c in node for m in modes_of(c)]


def np_dense(t):
    """Reference: U_t = kron(U_children) @ B_t.reshape(-1, r_t), then put the modes
    (in tree order) back into 0..N-1 order."""
    leaves = [np.asarray(u) for u in t.leaves]
    transfers = iter([np.asarray(b) for b in t.transfers])

    def frame(node):
        if isinstance(node, int):
            return leaves[node]
        kids = [frame(c) for c in node]
        b = next(transfers)  # post-order: children's transfers are consumed first
        k = functools.reduce(np.kron, kids)
        return k @ b.reshape(-1, b.shape[-1])

    order = modes_of(t.tree)
    x = frame(t.tree).reshape([t.dims[m] for m in order])
    return np.transpose(x, np.argsort(order))


def matricize(x, node):
    x = np.asarray(x)
    rows = modes_of(node)
    cols = [m for m in range(x.ndim) if m not in rows]
    return np.transpose(x, rows + cols).reshape(math.prod(x.shape[m] for m in rows), -1)


def dense_tails(x, tr, ranks):
    """Best error of a rank-``ranks[t]`` approximation of each counted node's
    matricization (the second child of a binary root has the first one's values)."""
    out = {}
    for node in tree.nodes(tr)[:-1]:
        if isinstance(tr, tuple) and len(tr) == 2 and node == tr[1]:
            continue
        s = np.linalg.svd(matricize(x, node), compute_uv=False)
        out[node] = float(np.sqrt(np.sum(s[ranks[node]:] ** 2)))
    return out


def orthonormal_columns(m):
    m = np.asarray(m).reshape(-1, m.shape[-1])
    close(np.conj(m).T @ m, np.eye(m.shape[1]))


def rel_err(t, x):
    x = np.asarray(x)
    return float(np.linalg.norm(np_dense(t) - x) / np.linalg.norm(x))


# ------------------------------------------------------------------- trees


def test_balanced_tree_node_order_and_random():
    assert tree.balanced_tree(1) == 0
    assert tree.balanced_tree(2) == (0, 1)
    assert tree.balanced_tree(4) == TREES["balanced"]
    assert tree.balanced_tree(5) == ((0, 1), (2, (3, 4)))
    assert tree.nodes(((2, 0), 1)) == (2, 0, (2, 0), 1, ((2, 0), 1))
    t = tree.random(key(0), DIMS, 2, dtype=F64)
    assert t.tree == TREES["balanced"] and t.dims == DIMS and t.n_modes == 4
    assert t.ranks == {0: 2, 1: 2, 2: 2, 3: 2, (0, 1): 2, (2, 3): 2, TREES["balanced"]: 1}
    assert tree.num_params(t) == sum(a.size for a in jax.tree.leaves(t))
    close(tree.to_dense(t), np_dense(t))
    # an int rank is capped at each matricization's size
    big = jax.eval_shape(lambda k: tree.random(k, DIMS, 9, dtype=F64), key(0))
    assert big.ranks == {0: 2, 1: 3, 2: 2, 3: 3, (0, 1): 6, (2, 3): 6, TREES["balanced"]: 1}


# ------------------------------------------------------------ construction


@pytest.mark.parametrize("name,mode", [(n, "eager") for n in TREES]
                         + [("balanced", "jit"), ("permuted", "jit")])
def test_from_dense_exact_roundtrip_at_full_rank(name, mode):
    x = gaussian(DIMS, 1)
    tr = TREES[name]
    f = lambda x: tree.from_dense(x, tree=tr)  # noqa: E731
    t = f(x) if mode == "eager" else jax.jit(f)(x)
    assert t.tree == tr
    close(np_dense(t), x)
    close(tree.to_dense(t), x)


def test_from_dense_default_tree_one_mode_and_lists():
    x1 = gaussian((5,), 2)
    t1 = tree.from_dense(x1)
    assert t1.tree == 0 and t1.transfers == () and t1.ranks == {0: 1}
    close(tree.to_dense(t1), x1)
    close(tree.norm(t1), jnp.linalg.norm(x1))
    close(np_dense(tree.round(t1, rtol=0.5)), x1)
    x3 = gaussian((3, 2, 4), 3)
    t3 = tree.from_dense(x3, tree=[[1, 2], 0])  # lists are normalized to tuples
    assert t3.tree == ((1, 2), 0)
    close(np_dense(t3), x3)
    assert tree.from_dense(x3, max_rank=1).tree == tree.balanced_tree(3)


def random_tree(n_modes, seed):
    """A random dimension tree: shuffled modes, split into 2 or 3 groups recursively."""
    rng = pyrandom.Random(seed)
    modes = list(range(n_modes))
    rng.shuffle(modes)

    def build(ms):
        if len(ms) == 1:
            return ms[0]
        k = rng.choice([2, 3]) if len(ms) >= 3 else 2
        cuts = sorted(rng.sample(range(1, len(ms)), k - 1))
        return tuple(build(ms[a:b]) for a, b in zip([0] + cuts, cuts + [len(ms)], strict=True))

    return build(modes)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _all_operations(k, dims, rank, tr):
    a = tree.random(k, dims, rank, F64, tree=tr)
    b = tree.random(jax.random.fold_in(k, 1), dims, rank + 1, F64, tree=tr)
    A, B = tree.to_dense(a), tree.to_dense(b)
    return dict(
        a=a, b=b, A=A, B=B, refit=tree.to_dense(tree.from_dense(A, tree=tr)),
        inner=tree.inner(a, b), norm=tree.norm(a), orth=tree.orthogonalize(b),
        sv=tuple(tree.singular_values(b).values()),
    )


@settings(max_examples=3)
@given(st.lists(st.integers(1, 3), min_size=2, max_size=4), st.integers(1, 3),
       st.integers(0, 2**16))
def test_random_trees_match_dense(dims, rank, seed):
    tr = random_tree(len(dims), seed)
    out = _all_operations(key(seed), tuple(dims), rank, tr)
    A, B = np_dense(out["a"]), np_dense(out["b"])
    close(out["A"], A)
    close(out["B"], B)
    close(out["refit"], A)
    close(out["inner"], np.vdot(A, B))
    close(out["norm"], np.linalg.norm(A))
    close(np_dense(out["orth"]), B)
    for node, s in zip(tree.nodes(tr)[:-1], out["sv"], strict=True):
        ref = np.linalg.svd(matricize(B, node), compute_uv=False)
        k = min(len(s), len(ref))
        close(s[:k], ref[:k])
        close(ref[k:], np.zeros(len(ref) - k))


@pytest.mark.parametrize("name", ["permuted", "ternary"])
def test_from_dense_error_bounds(name):
    tr = TREES[name]
    x = gaussian((3, 3, 3, 3), 4)
    t = tree.from_dense(x, tree=tr, max_rank=2)
    err = rel_err(t, x) * float(np.linalg.norm(x))
    tails = dense_tails(x, tr, t.ranks)
    m = len(tails)
    if name != "ternary":
        assert m == 2 * 4 - 3
    assert max(tails.values()) <= err + 1e-12  # no tensor of these ranks does better
    assert err**2 <= sum(v**2 for v in tails.values()) + 1e-10
    assert err <= math.sqrt(m) * max(tails.values()) + 1e-10
    for rtol in (1e-3, 0.2, 0.5, 0.8):
        f = tree.from_dense(x, tree=tr, rtol=rtol)
        assert rel_err(f, x) <= rtol + 1e-12
    assert sum(tree.from_dense(x, tree=tr, rtol=0.8).ranks.values()) < sum(
        tree.from_dense(x, tree=tr).ranks.values())


def test_from_dense_and_round_recover_planted_ranks():
    tr = TREES["permuted"]
    ranks = {2: 2, 0: 2, (2, 0): 2, 1: 2, 3: 1, (1, 3): 2}
    x = np_dense(net("permuted", tuple(ranks.items()), 5))
    ranks[tr] = 1
    f = tree.from_dense(x, tree=tr, max_rank=3)
    assert rel_err(f, x) < 1e-12
    g = tree.from_dense(x, tree=tr, rtol=1e-9)
    assert g.ranks == ranks and rel_err(g, x) < 1e-12
    full = tree.from_dense(x, tree=tr)
    assert full.ranks[(2, 0)] == 4
    r = tree.round(full, rtol=1e-9)
    assert r.ranks == ranks and rel_err(r, x) < 1e-12


def test_jit_from_dense_with_static_max_rank():
    x = gaussian((3, 4, 3, 2, 3), 6)
    t = jax.jit(lambda x: tree.from_dense(x, max_rank=3))(x)
    assert t.tree == ((0, 1), (2, (3, 4)))
    assert max(t.ranks.values()) == 3 and t.ranks[3] == 2
    tails = dense_tails(x, t.tree, t.ranks)
    err = rel_err(t, x) * float(np.linalg.norm(x))
    assert max(tails.values()) <= err <= math.sqrt(2 * 5 - 3) * max(tails.values()) + 1e-10
    # rtol with a static max_rank under jit: shapes stay, the tolerance only zeroes
    z = jax.jit(lambda x: tree.from_dense(x, max_rank=9, rtol=0.4))(x)
    assert z.ranks == {k: min(9, v) for k, v in tree.from_dense(x).ranks.items()}
    assert 0.05 < rel_err(z, x) <= 0.4 + 1e-12


# ------------------------------------------------------------- contractions


def test_inner_norm_match_dense():
    a, b = net("mixed", 2), net("mixed", 3, 1)
    A, B = np_dense(a), np_dense(b)
    close(tree.to_dense(a), A)
    close(tree.inner(a, b), np.vdot(A, B))
    close(tree.norm(a), np.linalg.norm(A))
    close(tree.log_norm(b), np.log(np.linalg.norm(B)))
    out = jax.jit(lambda a, b: (tree.to_dense(b), tree.inner(a, b), tree.norm(a)))(a, b)
    close(out[0], B)
    close(out[1], np.vdot(A, B))
    close(out[2], np.linalg.norm(A))


def test_complex_networks_conjugate_the_first_argument():
    tr = TREES["permuted"]
    a = net("permuted", 2, 0, dtype=jnp.complex128)
    b = net("permuted", 3, 1, dtype=jnp.complex128)

    @jax.jit
    def ops(a, b):
        return dict(inner=tree.inner(a, b), norm=tree.norm(a), rb=tree.round(b, max_rank=2),
                    refit=tree.from_dense(tree.to_dense(b), tree=tr))

    out = ops(a, b)
    A, B = np_dense(a), np_dense(b)
    close(out["inner"], np.sum(np.conj(A) * B))
    close(out["norm"], np.linalg.norm(A))
    close(np_dense(out["refit"]), B)
    for u in out["refit"].leaves:
        orthonormal_columns(u)
    tails = dense_tails(B, tr, out["rb"].ranks)
    assert np.linalg.norm(np_dense(out["rb"]) - B) ** 2 <= sum(v**2 for v in tails.values()) + 1e-10


def test_log_norm_of_a_deep_float32_tree_stays_finite():
    # 8 modes, leaves scaled by 1e-6: the norm (~1e-48) underflows float32.
    t = net(tree.balanced_tree(8), 2, 11, dims=(2,) * 8)
    t = tree.TreeTN(tuple(1e-6 * u for u in t.leaves), t.transfers, t.tree)
    ref = float(np.log(np.linalg.norm(np_dense(t))))
    assert ref < -100
    low = jax.tree.map(lambda a: a.astype(jnp.float32), t)
    assert float(np.sum(np_dense(low) ** 2)) == 0.0  # the dense route underflows
    got = float(tree.log_norm(low))
    assert np.isfinite(got) and abs(got - ref) <= 1e-5 * abs(ref)


# ------------------------------------------------- orthogonalize and round


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_orthogonalize_puts_the_norm_in_the_root(mode):
    ranks = {0: 2, 1: 2, (0, 1): 5, 2: 2, 3: 3, (2, 3): 5}  # (0, 1): 5 > 2 * 2
    t = net("balanced", tuple(ranks.items()), 12)
    o = tree.orthogonalize(t) if mode == "eager" else jax.jit(tree.orthogonalize)(t)
    x = np_dense(t)
    close(np_dense(o), x)
    for u in o.leaves:
        orthonormal_columns(u)
    for b in o.transfers[:-1]:
        orthonormal_columns(b)
    assert o.ranks[(0, 1)] == 4  # shrinks to the product of its children's ranks
    close(np.linalg.norm(np.asarray(o.transfers[-1])), np.linalg.norm(x))


@pytest.mark.parametrize("name,mode", [("balanced", "eager"), ("balanced", "jit"),
                                       ("ternary", "eager")])
def test_round_error_bound_and_ranks(name, mode):
    t = net(name, 3, 1)
    x = np_dense(t)
    f = lambda t: tree.round(t, max_rank=2)  # noqa: E731
    r = f(t) if mode == "eager" else jax.jit(f)(t)
    assert max(r.ranks.values()) <= 2
    err = rel_err(r, x) * float(np.linalg.norm(x))
    tails = dense_tails(x, t.tree, r.ranks)
    assert max(tails.values()) <= err + 1e-12
    assert err**2 <= sum(v**2 for v in tails.values()) + 1e-10  # Grasedyck's bound
    assert err <= math.sqrt(len(tails)) * max(tails.values()) + 1e-10
    for u in r.leaves:
        orthonormal_columns(u)


@given(st.sampled_from([0.0, 1e-6, 0.1, 0.3, 0.6]))
def test_round_rtol_bound(rtol):
    t = net("permuted", 3, 1)
    x = np_dense(t)
    r = tree.round(t, rtol=rtol)
    assert rel_err(r, x) <= rtol + 1e-12
    assert all(r.ranks[k] <= v for k, v in t.ranks.items())


# -------------------------------------------------------- vmap and eval_shape


def test_operations_under_vmap_over_a_batch_of_networks():
    tr = TREES["permuted"]

    @jax.jit
    def batched(keys):
        batch = jax.vmap(lambda k: tree.random(k, DIMS, 3, F64, tree=tr))(keys)
        dense = jax.vmap(tree.to_dense)(batch)
        return dict(
            batch=batch, dense=dense, norm=jax.vmap(tree.norm)(batch),
            inner=jax.vmap(tree.inner)(batch, batch),
            rounded=jax.vmap(lambda t: tree.round(t, max_rank=2))(batch),
            zeroed=jax.vmap(lambda t: tree.round(t, max_rank=3, rtol=0.3))(batch),
            refit=jax.vmap(lambda x: tree.from_dense(x, tree=tr, max_rank=3))(dense),
        )

    out = batched(jax.random.split(key(15), 3))
    batch = out["batch"]
    assert batch.dims == DIMS and batch.ranks[(2, 0)] == 3  # read from trailing axes
    assert out["rounded"].ranks[(2, 0)] == 2
    for i in range(3):
        one = jax.tree.map(lambda a, i=i: a[i], out)
        x = np_dense(one["batch"])
        close(one["dense"], x)
        close(one["norm"], np.linalg.norm(x))
        close(one["inner"], np.sum(x**2))
        close(np_dense(one["refit"]), x)
        tails = dense_tails(x, tr, one["rounded"].ranks)
        e = np.linalg.norm(np_dense(one["rounded"]) - x)
        assert e**2 <= sum(v**2 for v in tails.values()) + 1e-10
        # rtol with a static max_rank: shapes stay, the tolerance only zeroes
        assert one["zeroed"].ranks == one["batch"].ranks
        assert 0 < rel_err(one["zeroed"], x) <= 0.3 + 1e-12


def test_eval_shape_and_tree_map():
    t = jax.eval_shape(lambda k: tree.random(k, (3, 4, 5), 3, dtype=F64), key(0))
    assert isinstance(t, tree.TreeTN) and t.dims == (3, 4, 5)
    assert t.ranks == {0: 3, 1: 3, 2: 3, (1, 2): 3, (0, (1, 2)): 1}
    out = jax.eval_shape(lambda t: tree.round(t, max_rank=2), t)
    assert max(out.ranks.values()) == 2
    x = jax.ShapeDtypeStruct((3, 4, 5), F64)
    assert jax.eval_shape(lambda x: tree.from_dense(x, max_rank=2), x).ranks[(1, 2)] == 2
    o = jax.eval_shape(tree.orthogonalize, t)
    assert o.ranks == t.ranks and jax.eval_shape(tree.norm, t).shape == ()
    doubled = jax.tree.map(lambda a: 2 * a, tree.random(key(0), DIMS, 2, dtype=F64))
    assert isinstance(doubled, tree.TreeTN) and doubled.tree == TREES["balanced"]


# ------------------------------------------------------------------ gradients


GRAD_TREE = ((2, 0), 1)


def _refit(x):
    return tree.to_dense(tree.from_dense(x, max_rank=2))


def test_check_grads():
    # Reverse mode transposes the linearization that forward mode evaluates, so "rev"
    # alone checks the custom SVD/QR derivatives too; compiling the derivative
    # programs is what these checks cost, so each is done once, on jitted functions
    # (check_grads evaluates them several times; eagerly every op would be re-dispatched).
    a, b = net(GRAD_TREE, 2, dims=(2, 3, 2)), net(GRAD_TREE, 3, 1, dims=(2, 3, 2))
    kw = dict(order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    contractions = lambda a, b: (tree.to_dense(a), tree.inner(a, b), tree.norm(a))  # noqa: E731
    check_grads(jax.jit(contractions), (a, b), **kw)
    check_grads(jax.jit(_refit), (gaussian((3, 2, 2), 18),), **kw)
    # round = orthogonalize (QR) + node SVDs + projections
    check_grads(jax.jit(lambda t: tree.to_dense(tree.round(t, max_rank=2))), (b,), **kw)


def test_gradients_finite_at_degenerate_spectra():
    # rank 1 everywhere, truncated at rank 2: zero singular values
    x = jnp.einsum("i,j,k->ijk", *(gaussian((n,), n) for n in (3, 2, 2)))
    y, vjp = jax.vjp(_refit, x)
    close(y, x)
    (g,) = vjp(2 * y)
    close(g, 2 * x, 1e-8)  # the truncation is exact, so d/dx ||x||^2 = 2x


# ------------------------------------------------------------------- bad input


def test_bad_trees_name_the_modes():
    x = jnp.ones((2, 2, 2, 2))
    with pytest.raises(ValueError, match=r"missing modes \[2\]"):
        tree.from_dense(x, tree=((0, 1), 3))
    with pytest.raises(ValueError, match=r"repeated modes \[1\]"):
        tree.from_dense(x, tree=((0, 1), (1, 2), 3))
    with pytest.raises(ValueError, match=r"missing modes \[3\]; modes \[4\] outside 0..3"):
        tree.random(key(0), (2, 2, 2, 2), 2, tree=((0, 1), (2, 4)))
    with pytest.raises(ValueError, match=r"interior node \(0,\) has 1 child"):
        tree.from_dense(x, tree=((0,), (1, 2, 3)))
    with pytest.raises(TypeError, match="tree"):
        tree.from_dense(x, tree=((0, 1), (2, "3")))
    with pytest.raises(ValueError, match="n_modes"):
        tree.balanced_tree(0)


def test_bad_ranks_and_shapes():
    with pytest.raises(ValueError, match=r"node \(0, 1\) is 5.*largest allowed value is 4"):
        tree.random(key(0), (2, 2, 5), {0: 2, 1: 2, (0, 1): 5, 2: 3}, tree=((0, 1), 2))
    with pytest.raises(ValueError, match=r"missing nodes \[2\]"):
        tree.random(key(0), (2, 2, 3), {0: 2, 1: 2, (0, 1): 3}, tree=((0, 1), 2))
    with pytest.raises(ValueError, match="rank must be >= 1"):
        tree.random(key(0), (2, 2, 3), 0)
    x = gaussian(DIMS, 1)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        tree.from_dense(x, max_rank=0)
    with pytest.raises(ValueError, match="rtol must be >= 0"):
        tree.round(net("balanced", 2), rtol=-1.0)
    with pytest.raises(TypeError, match="static max_rank"):
        jax.jit(lambda x: tree.from_dense(x, rtol=0.1))(x)
    with pytest.raises(TypeError, match="static max_rank"):
        jax.jit(lambda t: tree.round(t, rtol=0.1))(net("balanced", 2))
    a = net("balanced", 2)
    with pytest.raises(ValueError, match="trees differ"):
        tree.inner(a, net("left_comb", 2))
    with pytest.raises(ValueError, match="mode sizes differ"):
        tree.inner(a, tree.random(key(0), (2, 3, 2, 2), 2, dtype=F64))
    bad = tree.TreeTN(a.leaves, (a.transfers[0][:1],) + a.transfers[1:], a.tree)
    with pytest.raises(ValueError, match=r"node \(0, 1\) has shape \(1, 2, 2\)"):
        tree.to_dense(bad)
    with pytest.raises(ValueError, match="3 interior nodes"):
        tree.norm(tree.TreeTN(a.leaves, a.transfers[:2], a.tree))
    with pytest.raises(ValueError, match="root rank must be 1"):
        root = jnp.concatenate([a.transfers[2]] * 2, axis=-1)
        tree.to_dense(tree.TreeTN(a.leaves, a.transfers[:2] + (root,), a.tree))
