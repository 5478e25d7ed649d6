"""Round trips between tnlib types and tensornetwork, quimb and tensorly, each checked
against the dense tensor on both sides."""

import builtins

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quimb.tensor as qtn
import tensorly as tl
import tensornetwork as tn

from tnlib import interop, tt

F64 = jnp.float64


def chain(dims=(2, 3, 4, 2), rank=3, seed=0):
    return tt.random(jax.random.PRNGKey(seed), dims, rank, F64)


def test_tensornetwork_finite_mps_round_trip():
    a = chain()
    for backend in ("jax", "numpy"):
        mps = interop.to_tensornetwork_mps(a, backend=backend)
        assert mps.bond_dimensions == list(a.ranks)
        back = interop.from_tensornetwork_mps(mps)
        np.testing.assert_allclose(tt.to_dense(back), tt.to_dense(a), atol=1e-12)


def test_tensornetwork_nodes_contract_to_dense():
    a = chain()
    nodes = interop.to_tensornetwork_nodes(a, backend="numpy")
    out_edges = [nodes[0]["left"]] + [n["phys"] for n in nodes] + [nodes[-1]["right"]]
    dense = tn.contractors.greedy(nodes, output_edge_order=out_edges).tensor
    np.testing.assert_allclose(dense.reshape(a.dims), tt.to_dense(a), atol=1e-12)
    back = interop.from_tensornetwork_nodes(interop.to_tensornetwork_nodes(a))
    np.testing.assert_allclose(tt.to_dense(back), tt.to_dense(a), atol=1e-12)


def test_quimb_mps_round_trip_and_dense():
    a = chain((2, 3, 2, 3, 2), 2)
    mps = interop.to_quimb_mps(a)
    assert mps.L == 5 and mps.max_bond() == 2
    np.testing.assert_allclose(np.asarray(mps.to_dense()).reshape(a.dims), tt.to_dense(a),
                               atol=1e-12)
    np.testing.assert_allclose(mps.H @ mps, tt.inner(a, a), rtol=1e-12)
    back = interop.from_quimb_mps(mps)
    assert back.ranks == a.ranks
    np.testing.assert_allclose(tt.to_dense(back), tt.to_dense(a), atol=1e-12)
    # an MPS made by quimb itself, canonicalized in quimb
    q = qtn.MPS_rand_state(6, bond_dim=3, phys_dim=2, dtype="float64", seed=1)
    q.left_canonize()
    ours = interop.from_quimb_mps(q)
    np.testing.assert_allclose(tt.to_dense(ours).ravel(), np.asarray(q.to_dense()).ravel(),
                               atol=1e-12)
    with pytest.raises(ValueError, match="at least 2 sites"):
        interop.to_quimb_mps(chain((3,), 1))


def test_tensorly_tt_round_trip_and_tt_svd_agreement():
    a = chain()
    t = interop.to_tensorly_tt(a)
    np.testing.assert_allclose(tl.tt_to_tensor(t), tt.to_dense(a), atol=1e-12)
    back = interop.from_tensorly_tt(t)
    np.testing.assert_allclose(tt.to_dense(back), tt.to_dense(a), atol=1e-12)
    # Same TT-SVD at the same ranks: the same error as tensorly's tensor_train.
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(3), (4, 5, 4, 3), F64))
    theirs = tl.tt_to_tensor(tl.decomposition.tensor_train(x, rank=[1, 3, 3, 3, 1]))
    ours = tt.to_dense(tt.from_dense(jnp.asarray(x), max_rank=3))
    e_theirs = np.linalg.norm(theirs - x)
    e_ours = float(jnp.linalg.norm(ours - x))
    np.testing.assert_allclose(e_ours, e_theirs, rtol=1e-10)


def test_missing_package_error_names_it(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("quimb"):
            raise ImportError("No module named 'quimb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(interop.importlib, "import_module",
                        lambda n: fake_import(n))
    with pytest.raises(ImportError, match="pip install quimb"):
        interop.to_quimb_mps(chain())


def test_quimb_network_round_trip_with_permutation():
    from tnlib import network

    adjacency = ((3, 2, 1, 2), (2, 2, 3, 1), (1, 3, 4, 2), (2, 1, 2, 3))  # a ring
    net = network.random(jax.random.PRNGKey(0), network.dims_of(adjacency, (1, 0, 2, 3)),
                         adjacency, F64, perm=(1, 0, 2, 3))
    q = interop.to_quimb_network(net)
    dense_q = q.contract(output_inds=[f"k{m}" for m in range(4)]).data
    np.testing.assert_allclose(dense_q, network.to_dense(net), atol=1e-12)
    back = interop.from_quimb_network(q, [f"k{m}" for m in range(4)])
    assert back.perm == (0, 1, 2, 3)
    np.testing.assert_allclose(network.to_dense(back), network.to_dense(net), atol=1e-12)
    assert network.num_params(back) == network.num_params(net)


def test_tensorly_cp_round_trip():
    from tnlib import cp

    a = cp.random(jax.random.PRNGKey(0), (3, 4, 5), 3, F64)
    t = interop.to_tensorly_cp(a)
    np.testing.assert_allclose(tl.cp_to_tensor(t), cp.to_dense(a), atol=1e-12)
    back = interop.from_tensorly_cp(t)
    np.testing.assert_allclose(cp.to_dense(back), cp.to_dense(a), atol=1e-12)


def test_tensorly_tucker_round_trip():
    from tnlib import tucker

    a = tucker.random(jax.random.PRNGKey(0), (3, 4, 5), (2, 3, 2), F64)
    t = interop.to_tensorly_tucker(a)
    np.testing.assert_allclose(tl.tucker_to_tensor(t), tucker.to_dense(a), atol=1e-12)
    back = interop.from_tensorly_tucker(t)
    np.testing.assert_allclose(tucker.to_dense(back), tucker.to_dense(a), atol=1e-12)
