"""tnlib.network against dense references: tensor-train, tensor-ring and fully
connected (TNGA) structures in float64, eager / jit / vmap, eval_shape, check_grads,
tensornetwork's ncon and hand-written einsums as independent references, the cached
contraction path, fit (ALS and gradient) under jit, and tensorly's TT-SVD as a peer."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import opt_einsum
import pytest
import tensorly as tl
import tensornetwork as tn
from dense_checks import F64, close, key
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from tensorly.decomposition import tensor_train

from tnlib import network


def adjacency(dims, edges):
    """Structure matrix from mode sizes and ``{(i, j): rank}``."""
    a = np.diag(dims).astype(int)
    a[a == 0] = 1
    for (i, j), r in edges.items():
        a[i, j] = a[j, i] = r
    return a


# Distinct ranks on every edge so that a wrong axis order cannot go unnoticed.
TT = adjacency((2, 3, 2, 3, 2), {(0, 1): 2, (1, 2): 3, (2, 3): 3, (3, 4): 2})
TR = adjacency((2, 3, 2, 3), {(0, 1): 2, (1, 2): 3, (2, 3): 2, (0, 3): 3})
FULL = adjacency((2, 3, 2, 3),
                 {(0, 1): 2, (0, 2): 3, (0, 3): 2, (1, 2): 2, (1, 3): 3, (2, 3): 2})
# ncon labels per node (positive: bond, negative: output mode) in the core axis order.
NCON = {
    "tt": [[-1, 1], [-2, 1, 2], [-3, 2, 3], [-4, 3, 4], [-5, 4]],
    "tr": [[-1, 1, 4], [-2, 1, 2], [-3, 2, 3], [-4, 4, 3]],
    "full": [[-1, 1, 2, 3], [-2, 1, 4, 5], [-3, 2, 4, 6], [-4, 3, 5, 6]],
}
# The same networks as hand-written einsums.
EINSUM = {
    "tt": "ap,bpq,cqr,drs,es->abcde",
    "tr": "apq,bpr,crs,dqs->abcd",
    "full": "apqr,bpst,cqsu,drtu->abcd",
}
STRUCTS = {"tt": TT, "tr": TR, "full": FULL}


@functools.lru_cache
def make(name, seed=0, perm=None, dtype=F64):
    """Cached random networks (immutable), so tests share compiled constructors."""
    adj = STRUCTS[name]
    return network.random(key(seed), network.dims_of(adj, perm), adj, dtype, perm=perm)


# ------------------------------------------------------------------- construction


@pytest.mark.parametrize("name", ["tt", "tr", "full"])
def test_to_dense_matches_ncon_and_einsum(name):
    net = make(name)
    cores = [np.asarray(c) for c in net.cores]
    ref = tn.ncon(cores, NCON[name])
    close(np.einsum(EINSUM[name], *cores), ref)
    assert net.dims == tuple(np.diag(STRUCTS[name]))
    close(network.to_dense(net), ref)
    close(jax.jit(network.to_dense)(net), ref)
    assert network.einsum_spec(STRUCTS[name]).count(",") == len(cores) - 1


def test_einsum_spec_of_a_chain_and_permutation():
    assert network.einsum_spec(TT) == "af,bfg,cgh,dhi,ei->abcde"
    perm = (2, 0, 3, 1)
    # node k carries mode perm[k]: its mode symbol moves, the output stays in mode order
    assert network.einsum_spec(TR, perm) == "cef,aeg,dgh,bfh->abcd"
    net = make("tr", 1, perm)
    plain = network.Network(net.cores, net.adjacency, (0, 1, 2, 3))
    dense = network.to_dense(net)
    close(dense, network.to_dense(plain).transpose(np.argsort(perm)))
    assert net.dims == tuple(np.diag(TR)[np.argsort(perm)]) == dense.shape


def test_num_params_hand_counts():
    tt_count = 2 * 2 + 3 * 2 * 3 + 2 * 3 * 3 + 3 * 3 * 2 + 2 * 2
    tr_count = 2 * 2 * 3 + 3 * 2 * 3 + 2 * 3 * 2 + 3 * 3 * 2
    full_count = 2 * 2 * 3 * 2 + 3 * 2 * 2 * 3 + 2 * 3 * 2 * 2 + 3 * 2 * 3 * 2
    for name, want in [("tt", tt_count), ("tr", tr_count), ("full", full_count)]:
        assert network.num_params(STRUCTS[name]) == want
        assert network.num_params(STRUCTS[name].tolist()) == want
        net = make(name)
        assert network.num_params(net) == want == sum(c.size for c in net.cores)


# Random structures: 2-4 nodes, sizes 1-3, ranks 1-3 (1 = no edge), random permutation.
@st.composite
def structures(draw):
    n = draw(st.integers(2, 4))
    a = np.ones((n, n), int)
    for i in range(n):
        a[i, i] = draw(st.integers(1, 3))
        for j in range(i + 1, n):
            a[i, j] = a[j, i] = draw(st.integers(1, 3))
    return a, tuple(draw(st.permutations(range(n)))), draw(st.integers(0, 2**16))


def ncon_dense(net):
    """Dense tensor through tensornetwork's ncon with labels built from the adjacency."""
    a, n = net.adjacency, len(net.adjacency)
    labels = {}
    for i in range(n):
        for j in range(i + 1, n):
            if a[i][j] > 1:
                labels[i, j] = labels[j, i] = len(labels) // 2 + 1
    nets = [[-(net.perm[k] + 1)] + [labels[k, j] for j in range(n) if j != k and a[k][j] > 1]
            for k in range(n)]
    return tn.ncon([np.asarray(c) for c in net.cores], nets)


@settings(max_examples=4)
@given(structures())
def test_random_structures_match_ncon(args):
    a, perm, seed = args
    net = network.random(key(seed), network.dims_of(a, perm), a, F64, perm=perm)
    other = network.random(key(seed + 1), network.dims_of(a), a, F64)  # same sizes, other placement
    ref, ref_other = ncon_dense(net), ncon_dense(other)
    perm_sizes = tuple(np.diag(a)[np.argsort(perm)])
    if perm_sizes == tuple(np.diag(a)):
        close(network.inner(net, other), np.vdot(ref, ref_other))
    else:
        with pytest.raises(ValueError, match="mode sizes differ"):
            network.inner(net, other)
    close(network.to_dense(net), ref)
    close(network.norm(net), np.linalg.norm(ref))


# ---------------------------------------------------------------------- algebra


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_inner_and_norm_match_dense_across_structures(mode):
    run = (lambda f, *a: f(*a)) if mode == "eager" else (lambda f, *a: jax.jit(f)(*a))
    tr, full = make("tr", 0), make("full", 1)
    A, B = network.to_dense(tr), network.to_dense(full)
    close(run(network.inner, tr, full), jnp.vdot(A, B))
    close(run(network.norm, full), jnp.linalg.norm(B))


def test_inner_conjugates_first_argument():
    a, b = make("tr", 0, dtype=jnp.complex128), make("tr", 1, dtype=jnp.complex128)
    A, B = network.to_dense(a), network.to_dense(b)
    close(network.inner(a, b), jnp.sum(jnp.conj(A) * B))
    close(network.norm(a), jnp.linalg.norm(A))


def test_vmap_over_a_batch_of_networks_and_eval_shape():
    perm, n = (1, 0, 3, 2), 400
    dims = network.dims_of(FULL, perm)
    batch = jax.jit(jax.vmap(lambda k: network.random(k, dims, FULL, F64, perm=perm)))(
        jax.random.split(key(7), n))
    assert batch.dims == (3, 2, 3, 2)  # read from the trailing axes
    dense = jax.vmap(network.to_dense)(batch)
    singles = [network.Network(tuple(c[i] for c in batch.cores), batch.adjacency, perm)
               for i in range(2)]
    close(dense[:2], jnp.stack([network.to_dense(s) for s in singles]))
    sq = jnp.sum(dense**2, axis=(1, 2, 3, 4))
    close(jax.vmap(network.norm)(batch), jnp.sqrt(sq))
    close(jax.vmap(network.inner)(batch, batch), sq)
    # random() is scaled so that E ||net||^2 = 1 (mean within 5 standard errors)
    assert abs(float(jnp.mean(sq)) - 1.0) < 5 * float(jnp.std(sq)) / np.sqrt(n)
    shaped = jax.eval_shape(lambda k: network.random(k, network.dims_of(TR), TR, F64), key(0))
    assert isinstance(shaped, network.Network) and shaped.dims == (2, 3, 2, 3)
    assert jax.eval_shape(network.to_dense, shaped).shape == (2, 3, 2, 3)
    assert jax.eval_shape(network.norm, shaped).shape == ()
    fitted, rse = jax.eval_shape(
        lambda x, k: network.fit(x, TR, key=k, n_iter=3), jnp.zeros((2, 3, 2, 3)), key(0))
    assert [c.shape for c in fitted.cores] == [c.shape for c in shaped.cores]
    assert rse.shape == ()


def test_check_grads():
    kw = dict(order=1, modes=("rev", "fwd"), atol=1e-6, rtol=1e-6)
    tr, full = make("tr", 2), make("full", 3, perm=(2, 1, 0, 3))
    # numpy leaves: check_grads perturbs the inputs with numpy arithmetic (on jax arrays
    # every perturbation would compile an eager add / subtract per core shape)
    tr, full = jax.tree.map(np.asarray, (tr, full))
    # jitted once each: check_grads then compiles a handful of programs, not every op
    check_grads(jax.jit(network.to_dense), (full,), **kw)
    check_grads(jax.jit(network.norm), (tr,), **kw)
    check_grads(jax.jit(network.inner), (tr, full), **kw)


# ------------------------------------------------------------- contraction paths


def test_contract_path_is_chosen_once_per_signature(monkeypatch):
    searches = []
    real = opt_einsum.contract_path

    def counting(*args, **kwargs):
        if kwargs.get("shapes"):  # a path search (jnp.einsum's own call passes our path)
            searches.append((args[0], kwargs["optimize"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(opt_einsum, "contract_path", counting)
    network.contract_path.cache_clear()
    net = make("full")
    spec = network.einsum_spec(FULL)
    first = network.to_dense(net)
    close(network.contract(net.cores, spec), first)
    jax.jit(network.to_dense)(net)
    shapes = [c.shape for c in net.cores]
    path = network.contract_path(spec, *shapes)
    assert path == network.contract_path(spec, *[list(s) for s in shapes])
    assert searches == [(spec, "auto-hq")]  # one search for all of the above
    close(jnp.einsum(spec, *net.cores, optimize=list(path)), first)
    other = network.random(key(1), (2, 3, 2, 3), adjacency((2, 3, 2, 3), {
        (0, 1): 3, (0, 2): 3, (0, 3): 2, (1, 2): 2, (1, 3): 3, (2, 3): 2}))
    network.to_dense(other)  # new shapes, same subscripts: a second search
    assert len(searches) == 2
    # More than 12 tensors: greedy (cotengra is not installed in the test environment).
    chain = adjacency((2,) * 7, {(k, k + 1): 2 for k in range(6)})
    big = network.random(key(2), network.dims_of(chain), chain, F64)
    dense = network.to_dense(big)
    close(network.norm(big), jnp.linalg.norm(dense))
    if network._cotengra is None:
        assert searches[-1][1] == "greedy"
    else:  # cotengra's HyperOptimizer object
        assert not isinstance(searches[-1][1], str)
    assert len(searches) == 4


# ---------------------------------------------------------------------------- fit


@pytest.mark.parametrize("name,perm", [("tt", None), ("tr", (2, 0, 3, 1)), ("full", None)])
def test_als_recovers_a_planted_network_under_jit_and_vmap(name, perm):
    x = network.to_dense(make(name, 100, perm))
    fit = jax.jit(jax.vmap(
        lambda x, k: network.fit(x, STRUCTS[name], perm=perm, key=k, n_iter=1000), (None, 0)))
    # Restarts over a vmapped batch of keys, as structure searches do: ALS on loopy
    # structures can stall in a local minimum from some starts.
    nets, rse = fit(x, jax.random.split(key(5), 3))
    best = int(jnp.argmin(rse))
    assert float(rse[best]) < 1e-6, rse
    net = network.Network(tuple(c[best] for c in nets.cores), nets.adjacency, nets.perm)
    err = jnp.sum((network.to_dense(net) - x) ** 2) / jnp.sum(x**2)
    close(err, rse[best], 1e-9)


def test_gradient_fit_decreases_and_warm_starts():
    x = network.to_dense(make("tr", 100))
    init = make("tr", 4)
    start = float(jnp.sum((network.to_dense(init) - x) ** 2) / jnp.sum(x**2))
    fit = jax.jit(lambda x, init: network.fit(x, TR, init=init, n_iter=60, method="gradient",
                                              learning_rate=2e-2))
    net1, rse1 = fit(x, init)
    net2, rse2 = fit(x, net1)  # warm start: continues from net1
    assert float(rse2) < float(rse1) < start
    close(jnp.sum((network.to_dense(net2) - x) ** 2) / jnp.sum(x**2), rse2, 1e-9)


def test_als_warm_started_from_tensorly_tt_svd_never_gets_worse():
    # Peer: tensorly's TT-SVD at the same ranks; ALS is monotone, so warm-started from
    # that solution our error is at most tensorly's.
    x = np.asarray(jax.random.normal(key(9), (2, 3, 2, 3, 2), F64))
    tt = tensor_train(tl.tensor(x), rank=[1, 2, 3, 3, 2, 1])
    theirs = float(np.sum((tl.to_numpy(tt.to_tensor()) - x) ** 2) / np.sum(x**2))
    c = [np.asarray(f) for f in tt.factors]
    cores = (c[0][0], *(f.transpose(1, 0, 2) for f in c[1:-1]), c[-1][:, :, 0].T)
    structure = tuple(tuple(row) for row in TT.tolist())  # static fields must be hashable
    init = network.Network(tuple(jnp.asarray(k) for k in cores), structure, (0, 1, 2, 3, 4))
    close(network.to_dense(init), tl.to_numpy(tt.to_tensor()))
    _, ours = network.fit(jnp.asarray(x), TT, init=init, n_iter=5)
    assert float(ours) <= theirs + 1e-12


# -------------------------------------------------------------------- bad input


def test_bad_structures_name_the_argument():
    with pytest.raises(ValueError, match="adjacency must be a non-empty square"):
        network.random(key(0), network.dims_of(np.ones((2, 3), int)), np.ones((2, 3), int))
    with pytest.raises(ValueError, match=r"adjacency must be symmetric: entry \(0, 1\)"):
        network.einsum_spec([[2, 3], [2, 2]])
    with pytest.raises(ValueError, match=r"adjacency entries must be >= 1.*bond rank"):
        network.num_params([[2, 0], [0, 2]])
    with pytest.raises(ValueError, match="adjacency entries must be integers"):
        network.num_params([[2.5, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"perm must be a permutation of range\(4\)"):
        network.random(key(0), network.dims_of(TR, (0, 1, 1, 2)), TR, perm=(0, 1, 1, 2))
    with pytest.raises(TypeError, match="adjacency must be concrete"):
        jax.jit(network.num_params)(jnp.asarray(TR))
    bad = network.Network((jnp.ones((2, 2)), jnp.ones((3, 3))), ((2, 2), (2, 3)), (0, 1))
    with pytest.raises(ValueError, match=r"core 1 has shape \(3, 3\).*\(3, 2\)"):
        network.to_dense(bad)
    with pytest.raises(ValueError, match="mode sizes differ"):
        network.inner(make("tr"), make("tt"))


def test_bad_fit_arguments():
    x = jnp.ones((2, 3, 2, 3))
    with pytest.raises(ValueError, match=r"adjacency do not match x.shape.*node 0"):
        network.fit(x, TR, perm=(1, 0, 2, 3), key=key(0))
    with pytest.raises(ValueError, match="x has 3 modes"):
        network.fit(jnp.ones((2, 3, 2)), TR, key=key(0))
    with pytest.raises(ValueError, match="method must be"):
        network.fit(x, TR, key=key(0), method="newton")
    with pytest.raises(ValueError, match="n_iter"):
        network.fit(x, TR, key=key(0), n_iter=-1)
    with pytest.raises(ValueError, match="PRNG key"):
        network.fit(x, TR)
    with pytest.raises(ValueError, match="init must have the fitted structure"):
        network.fit(x, TR, init=make("full"))
