"""Search spaces of tensor-network structures: edge ranks on a support graph, and a
permutation of the modes onto the nodes.

A :class:`SearchSpace` fixes the mode sizes ``dims`` of the target, a *support* graph
(the candidate edges, e.g. all pairs as in TNGA, or the ring of TR-rank search as in
TNLS / TnALE), a maximum rank ``max_rank`` and whether the permutation is searched. A
point of the space is a :class:`Structure`: one rank in ``1..max_rank`` per support
edge (``1`` = no edge) and a permutation ``perm`` (node ``k`` carries mode
``perm[k]``, the convention of :mod:`tnlib.network`). ``space.adjacency(s)`` turns a
structure into the ``N x N`` matrix that :func:`tnlib.network.fit` and friends take.

Everything here is plain Python on hashable tuples: structures are dictionary keys
(the evaluation engine caches them) and never traced.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import NamedTuple

import numpy as np

from tnlib import network

__all__ = ["Structure", "SearchSpace", "search_space", "check_structure"]


class Structure(NamedTuple):
    """A point of a search space: ``ranks[e]`` on ``space.edges[e]``, and ``perm``."""

    ranks: tuple[int, ...]
    perm: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Edge ranks on ``edges`` (pairs ``i < j``) in ``1..max_rank`` and a permutation.

    Built (and validated) by :func:`search_space`. ``perm`` is the fixed permutation
    when ``search_perm`` is False and the default starting one otherwise.
    """

    dims: tuple[int, ...]
    edges: tuple[tuple[int, int], ...]
    max_rank: int
    perm: tuple[int, ...]
    search_perm: bool = False
    max_params: int | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.dims)

    @property
    def size(self) -> int:
        """Number of entries of the target tensor, ``prod(dims)``."""
        return math.prod(self.dims)

    def node_dims(self, perm) -> tuple[int, ...]:
        """Mode size carried by each node under ``perm``."""
        return tuple(self.dims[p] for p in perm)

    def adjacency(self, s: Structure) -> tuple[tuple[int, ...], ...]:
        """The ``N x N`` structure matrix of ``s`` (node sizes on the diagonal)."""
        n = self.n_nodes
        a = [[1] * n for _ in range(n)]
        for k, d in enumerate(self.node_dims(s.perm)):
            a[k][k] = d
        for (i, j), r in zip(self.edges, s.ranks, strict=True):
            a[i][j] = a[j][i] = int(r)
        return tuple(tuple(row) for row in a)

    def num_params(self, s: Structure) -> int:
        """Parameter count of ``s``: ``sum_k n_k prod_(bonds of k) r``."""
        return network.num_params(self.adjacency(s))

    def feasible(self, s: Structure) -> bool:
        """Whether ``s`` respects ``max_params`` (always True without a budget)."""
        return self.max_params is None or self.num_params(s) <= self.max_params

    def uniform(self, rank: int, perm=None) -> Structure:
        """Every support edge at ``rank`` (clipped to ``1..max_rank``)."""
        r = min(max(int(rank), 1), self.max_rank)
        return Structure((r,) * len(self.edges), tuple(perm or self.perm))

    def clip(self, ranks, perm=None) -> Structure:
        """``ranks`` clipped to ``1..max_rank`` (a Structure; ``perm`` defaults to the space's)."""
        return Structure(tuple(min(max(int(r), 1), self.max_rank) for r in ranks),
                         tuple(self.perm if perm is None else perm))

    def structure(self, adjacency, perm=None, name: str = "init") -> Structure:
        """The Structure of an ``N x N`` adjacency matrix (validated against the space).

        Raises ValueError when the matrix is not symmetric, its diagonal does not match
        the mode sizes under ``perm``, it has an edge outside the support, a rank above
        ``max_rank``, or ``perm`` differs from the space's when it is not searched.
        """
        adj = network.check_adjacency(adjacency, name)
        n = self.n_nodes
        if len(adj) != n:
            raise ValueError(f"{name} has {len(adj)} nodes but the target has {n} modes")
        perm = self.perm if perm is None else network.check_perm(perm, n, f"{name} perm")
        if not self.search_perm and perm != self.perm:
            raise ValueError(f"{name} perm {perm} differs from the search space's fixed perm "
                             f"{self.perm} (search_perm=False)")
        want = self.node_dims(perm)
        got = tuple(adj[k][k] for k in range(n))
        if got != want:
            raise ValueError(f"mode sizes of {name} (its diagonal {got}) do not match the "
                             f"target's mode sizes {want} under perm {tuple(perm)}")
        support = set(self.edges)
        for i, j in itertools.combinations(range(n), 2):
            r = adj[i][j]
            if r > 1 and (i, j) not in support:
                raise ValueError(f"{name} has an edge ({i}, {j}) of rank {r} outside the "
                                 f"search space's support edges {self.edges}")
            if r > self.max_rank:
                raise ValueError(f"{name} has rank {r} on edge ({i}, {j}) above "
                                 f"max_rank={self.max_rank}")
        return Structure(tuple(adj[i][j] for i, j in self.edges), tuple(perm))


def check_structure(space: SearchSpace, s, name: str = "structure") -> Structure:
    """``s`` as a Structure of ``space`` (ints), or ValueError naming ``name``: one rank
    in ``1..max_rank`` per support edge and a permutation of the nodes."""
    try:
        ranks, perm = s
        ranks = tuple(ranks)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a Structure (ranks, perm), got {s!r}") from e
    if len(ranks) != len(space.edges) or any(
            isinstance(r, bool) or not isinstance(r, int | np.integer) or not
            1 <= r <= space.max_rank for r in ranks):
        raise ValueError(f"{name} must hold one rank in 1..{space.max_rank} per support edge "
                         f"({len(space.edges)} edges), got ranks {ranks}")
    perm = network.check_perm(perm, space.n_nodes, f"{name} perm")
    if not space.search_perm and perm != space.perm:
        raise ValueError(f"{name} perm {perm} differs from the search space's fixed perm "
                         f"{space.perm} (search_perm=False)")
    return Structure(tuple(int(r) for r in ranks), perm)


def _edges_of(edges, n: int) -> tuple[tuple[int, int], ...]:
    if isinstance(edges, str):
        if edges == "all":
            return tuple(itertools.combinations(range(n), 2))
        if edges == "ring":
            if n == 2:
                return ((0, 1),)
            return tuple((k, k + 1) for k in range(n - 1)) + ((0, n - 1),)
        if edges == "chain":
            return tuple((k, k + 1) for k in range(n - 1))
        raise ValueError(f"edges must be 'all', 'ring', 'chain' or a sequence of node pairs, "
                         f"got {edges!r}")
    out = set()
    for e in edges:
        pair = tuple(int(v) for v in e)
        if len(pair) != 2 or not all(0 <= v < n for v in pair) or pair[0] == pair[1]:
            raise ValueError(f"edges must be pairs (i, j) of distinct nodes in range({n}), "
                             f"got {tuple(e)}")
        out.add((min(pair), max(pair)))
    return tuple(sorted(out))


def search_space(dims, max_rank: int, *, edges="all", support=None, perm=None,
                 search_perm: bool = False, max_params: int | None = None) -> SearchSpace:
    """A validated :class:`SearchSpace`.

    Args:
      dims: mode sizes of the target tensor (at least two modes).
      max_rank: largest rank on any edge (an int >= 1; rank one means "no edge").
      edges: the support graph: ``"all"`` (every pair, TNGA), ``"ring"`` (TR ranks,
        TNLS / TnALE), ``"chain"`` (TT ranks) or a sequence of node pairs.
      support: alternatively an ``N x N`` symmetric matrix whose diagonal holds the
        node mode sizes (under ``perm``) and whose off-diagonal entries > 1 mark the
        support edges; overrides ``edges``.
      perm: the (starting) permutation of modes onto nodes; identity when None.
      search_perm: whether the permutation is part of the search.
      max_params: optional parameter budget; structures above it are infeasible.

    Raises ValueError for fewer than two modes, ``max_rank < 1``, a budget below the
    smallest network (all ranks one: ``sum(dims)`` parameters), a support matrix that
    is not symmetric or whose mode sizes do not match ``dims``.
    """
    dims = tuple(dims)
    if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1
                            for d in dims):
        raise ValueError(f"dims must hold at least two ints >= 1 (the target's mode sizes), "
                         f"got {dims}")
    dims = tuple(int(d) for d in dims)
    n = len(dims)
    if isinstance(max_rank, bool) or not isinstance(max_rank, int | np.integer) or max_rank < 1:
        raise ValueError(f"max_rank must be an int >= 1 (rank one = no edge is the smallest "
                         f"network), got {max_rank!r}")
    perm = network.check_perm(perm, n)
    if support is not None:
        adj = network.check_adjacency(support, "support")
        if len(adj) != n:
            raise ValueError(f"support has {len(adj)} nodes but dims has {n} modes")
        got = tuple(adj[k][k] for k in range(n))
        want = tuple(dims[p] for p in perm)
        if got != want:
            raise ValueError(f"mode sizes of support (its diagonal {got}) do not match the "
                             f"target's mode sizes {want} under perm {perm}")
        edge_set = tuple((i, j) for i, j in itertools.combinations(range(n), 2) if adj[i][j] > 1)
    else:
        edge_set = _edges_of(edges, n)
    if max_params is not None:
        smallest = sum(dims)
        if isinstance(max_params, bool) or not isinstance(max_params, int | np.integer) or \
                max_params < smallest:
            raise ValueError(f"max_params={max_params!r} is smaller than the smallest network "
                             f"(all ranks one: sum(dims) = {smallest} parameters)")
        max_params = int(max_params)
    return SearchSpace(dims, edge_set, int(max_rank), perm, bool(search_perm), max_params)
