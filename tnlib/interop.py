"""Conversion to and from the peers: tensornetwork, quimb and tensorly.

Each peer is imported only when a function that needs it is called; a missing
package raises ImportError naming the package and the pip command. Arrays come
back as JAX arrays; going out they are handed over as NumPy arrays (tensorly,
quimb) or on the requested tensornetwork backend.

=============================  ==========================================
tnlib                          peer
=============================  ==========================================
``TensorTrain``                tensornetwork ``FiniteMPS`` / connected ``Node`` list,
                               quimb ``MatrixProductState``, tensorly ``TTTensor``
``Tucker``                     tensorly ``TuckerTensor``
``CP``                         tensorly ``CPTensor``
``Network``                    quimb ``TensorNetwork`` (both ways)
=============================  ==========================================
"""

from __future__ import annotations

import importlib

import jax.numpy as jnp
import numpy as np

from tnlib import tt as _tt

__all__ = [
    "to_tensornetwork_mps", "from_tensornetwork_mps", "to_tensornetwork_nodes",
    "from_tensornetwork_nodes", "to_quimb_mps", "from_quimb_mps", "to_tensorly_tt",
    "from_tensorly_tt", "to_tensorly_tucker", "from_tensorly_tucker", "to_tensorly_cp",
    "from_tensorly_cp", "to_quimb_network", "from_quimb_network",
]


def _require(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            f"this conversion needs the optional package {package!r}: pip install {package} "
            "(or all the peers: pip install 'tnlib[interop]')"
        ) from e


def _np(x):
    return np.asarray(x)


# ---------------------------------------------------------------- tensornetwork


def to_tensornetwork_mps(tt: _tt.TensorTrain, backend: str = "jax"):
    """A ``tensornetwork.FiniteMPS`` with the same cores (no canonicalization)."""
    tn = _require("tensornetwork", "tensornetwork")
    _tt.check(tt)
    cores = list(tt.cores) if backend == "jax" else [_np(c) for c in tt.cores]
    return tn.FiniteMPS(cores, canonicalize=False, backend=backend)


def from_tensornetwork_mps(mps) -> _tt.TensorTrain:
    """A ``TensorTrain`` from a ``tensornetwork.FiniteMPS`` (or any ``BaseMPS``)."""
    return _tt.check(_tt.TensorTrain(tuple(jnp.asarray(t) for t in mps.tensors)), "mps")


def to_tensornetwork_nodes(tt: _tt.TensorTrain, backend: str = "jax"):
    """Connected ``tensornetwork.Node`` objects, one per core (axes ``left, phys, right``).

    Neighbouring bonds are connected; the two boundary bonds (size 1) and the
    physical edges are left dangling. Contract with ``tensornetwork.contractors``.
    """
    tn = _require("tensornetwork", "tensornetwork")
    _tt.check(tt)
    nodes = [tn.Node(c if backend == "jax" else _np(c), name=f"site{k}", backend=backend,
                     axis_names=["left", "phys", "right"]) for k, c in enumerate(tt.cores)]
    for a, b in zip(nodes[:-1], nodes[1:], strict=True):
        a["right"] ^ b["left"]
    return nodes


def from_tensornetwork_nodes(nodes) -> _tt.TensorTrain:
    """A ``TensorTrain`` from a chain of nodes with axes ``(left, phys, right)``."""
    return _tt.check(_tt.TensorTrain(tuple(jnp.asarray(n.tensor) for n in nodes)), "nodes")


# ------------------------------------------------------------------------ quimb


def to_quimb_mps(tt: _tt.TensorTrain, site_ind_id: str = "k{}"):
    """A quimb ``MatrixProductState`` (open boundaries; at least 2 sites)."""
    qtn = _require("quimb.tensor", "quimb")
    _tt.check(tt)
    if tt.n_sites < 2:
        raise ValueError("quimb's MatrixProductState needs at least 2 sites, got 1")
    arrays = [_np(c) for c in tt.cores]
    arrays[0] = arrays[0][0].T  # (r, p): quimb drops the boundary bond
    arrays[-1] = arrays[-1][..., 0]  # (l, p)
    arrays[1:-1] = [a.transpose(0, 2, 1) for a in arrays[1:-1]]  # (l, r, p)
    return qtn.MatrixProductState(arrays, shape="lrp", site_ind_id=site_ind_id)


def from_quimb_mps(mps) -> _tt.TensorTrain:
    """A ``TensorTrain`` from a quimb ``MatrixProductState`` (open boundaries)."""
    cores = []
    L = mps.L
    for i in range(L):
        t = mps[i]
        left = mps.bond(i - 1, i) if i > 0 else None
        right = mps.bond(i, i + 1) if i < L - 1 else None
        order = [ix for ix in (left, mps.site_ind(i), right) if ix is not None]
        data = t.transpose(*order).data
        if left is None:
            data = data[None]
        if right is None:
            data = data[..., None]
        cores.append(jnp.asarray(data))
    return _tt.check(_tt.TensorTrain(tuple(cores)), "mps")


def to_quimb_network(net, mode_ind_id: str = "k{}"):
    """A quimb ``TensorNetwork`` with one tensor per node of a ``tnlib.Network``.

    Mode ``m`` gets the index name ``mode_ind_id.format(m)``; the bond between nodes
    ``i < j`` is named ``b{i}_{j}``; node ``k`` is tagged ``N{k}``.
    """
    qtn = _require("quimb.tensor", "quimb")
    names = _network_index_names(net, mode_ind_id)
    tensors = [qtn.Tensor(_np(core), inds=inds, tags={f"N{k}"})
               for k, (core, inds) in enumerate(zip(net.cores, names, strict=True))]
    return qtn.TensorNetwork(tensors)


def from_quimb_network(tn, mode_inds, dtype=None):
    """A ``tnlib.Network`` from a quimb ``TensorNetwork`` whose tensors each carry
    exactly one of ``mode_inds`` (the order of ``mode_inds`` is the order of modes).

    Tensors are matched to modes by their outer index; bonds between two tensors
    become adjacency entries (several shared indices between a pair are merged).
    """
    from tnlib import network as _network

    mode_inds = list(mode_inds)
    tensors = list(tn.tensors)
    if len(tensors) != len(mode_inds):
        raise ValueError(f"the network has {len(tensors)} tensors but mode_inds names "
                         f"{len(mode_inds)} modes; each tensor must carry exactly one mode")
    owner = {}
    for t in tensors:
        found = [ix for ix in t.inds if ix in mode_inds]
        if len(found) != 1:
            raise ValueError(f"tensor with inds {t.inds} carries {len(found)} of mode_inds "
                             f"{mode_inds}; expected exactly one")
        owner[found[0]] = t
    nodes = [owner[ix] for ix in mode_inds]  # node k carries mode k
    n = len(nodes)
    adjacency = [[1] * n for _ in range(n)]
    shared = {}
    for i in range(n):
        adjacency[i][i] = nodes[i].ind_size(mode_inds[i])
        for j in range(i + 1, n):
            common = [ix for ix in nodes[i].inds if ix in nodes[j].inds]
            shared[i, j] = common
            size = int(np.prod([nodes[i].ind_size(ix) for ix in common])) if common else 1
            adjacency[i][j] = adjacency[j][i] = size
    adjacency = tuple(tuple(row) for row in adjacency)
    cores = []
    for i in range(n):
        groups = [[mode_inds[i]]]
        for j in range(n):
            if j != i and adjacency[i][j] > 1:
                groups.append(shared[min(i, j), max(i, j)])
        order = [ix for g in groups for ix in g]
        data = nodes[i].transpose(*order).data
        shape = [adjacency[i][i]] + [adjacency[i][j] for j in range(n) if j != i
                                     and adjacency[i][j] > 1]
        arr = jnp.asarray(np.reshape(data, shape))
        cores.append(arr if dtype is None else arr.astype(dtype))
    return _network.Network(tuple(cores), adjacency, tuple(range(n)))


def _network_index_names(net, mode_ind_id):
    """Index names per node of a ``tnlib.Network`` in its core axis order."""
    adj, perm = net.adjacency, net.perm
    n = len(adj)
    names = []
    for k in range(n):
        inds = [mode_ind_id.format(perm[k])]
        for j in range(n):
            if j != k and adj[k][j] > 1:
                inds.append(f"b{min(k, j)}_{max(k, j)}")
        names.append(tuple(inds))
    return names


# ---------------------------------------------------------------------- tensorly


def to_tensorly_tt(tt: _tt.TensorTrain):
    """A tensorly ``TTTensor`` (same core layout, NumPy arrays)."""
    tl = _require("tensorly", "tensorly")
    _tt.check(tt)
    return tl.tt_tensor.TTTensor([_np(c) for c in tt.cores])


def from_tensorly_tt(t) -> _tt.TensorTrain:
    """A ``TensorTrain`` from a tensorly ``TTTensor`` or its list of factors."""
    factors = t.factors if hasattr(t, "factors") else t
    return _tt.check(_tt.TensorTrain(tuple(jnp.asarray(_np(f)) for f in factors)), "t")


def to_tensorly_tucker(x):
    """A tensorly ``TuckerTensor`` from a ``tnlib.Tucker``."""
    tl = _require("tensorly", "tensorly")
    return tl.tucker_tensor.TuckerTensor((_np(x.core), [_np(f) for f in x.factors]))


def from_tensorly_tucker(t):
    """A ``tnlib.Tucker`` from a tensorly ``TuckerTensor`` or ``(core, factors)``."""
    from tnlib.tucker import Tucker

    core, factors = t
    return Tucker(jnp.asarray(_np(core)), tuple(jnp.asarray(_np(f)) for f in factors))


def to_tensorly_cp(x):
    """A tensorly ``CPTensor`` from a ``tnlib.CP``."""
    tl = _require("tensorly", "tensorly")
    return tl.cp_tensor.CPTensor((_np(x.weights), [_np(f) for f in x.factors]))


def from_tensorly_cp(t):
    """A ``tnlib.CP`` from a tensorly ``CPTensor`` or ``(weights, factors)``."""
    from tnlib.cp import CP

    weights, factors = t
    return CP(jnp.asarray(_np(weights)), tuple(jnp.asarray(_np(f)) for f in factors))
