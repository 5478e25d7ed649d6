"""Tree tensor networks / the hierarchical Tucker (HT) format.

A ``TreeTN`` represents an N-mode tensor over a static *dimension tree*: nested
tuples of mode indices such as ``((0, 1), (2, (3, 4)))`` holding every mode
``0 .. N-1`` exactly once (a one-mode tensor uses the tree ``0``). A node is an
int (a leaf) or a tuple of at least two children; node ``t`` owns the modes below
it and a *frame* ``U_t`` of shape ``(prod of its mode sizes, r_t)``, stored
hierarchically:

- ``leaves[mu]``: ``U_mu`` of shape ``(n_mu, r_mu)``, indexed by mode;
- ``transfers``: for each interior node ``t`` with children ``t_1 .. t_k``, in
  post-order (children first, the root last; see ``nodes``), ``B_t`` of shape
  ``(r_{t_1}, ..., r_{t_k}, r_t)`` with
  ``U_t = (U_{t_1} kron ... kron U_{t_k}) @ B_t.reshape(-1, r_t)``;
- ``r_root = 1``: the tensor is ``U_root`` reshaped to the mode sizes of the
  tree's left-to-right modes, then transposed to mode order ``0 .. N-1``.

Binary trees give Hackbusch & Kuehn's HT format (``balanced_tree`` is the
default); nodes with more children work everywhere. The tree is static aux data;
ranks and sizes are read from trailing array axes, so a ``vmap``-ed batch reports
them right. ``from_dense`` and ``round`` take a static ``max_rank`` (jittable);
``rtol`` alone picks data-dependent ranks (concrete inputs only); with both, shapes
come from ``max_rank`` and the tolerance only zeroes directions. Error bounds
(Grasedyck 2010, "Hierarchical singular value decomposition of tensors"): with
``m`` truncated nodes (``2N - 3`` for a binary tree: the non-root nodes, the two
children of a binary root counted once),
``||x - y|| <= sqrt(sum_t tail_t**2) <= sqrt(m) * max_t tail_t``, where ``tail_t``
is the best error of a rank-``r_t`` approximation of ``x``'s ``t``-matricization.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from tnlib import _numerics, linalg
from tnlib._validate import check_dims as _check_dims
from tnlib._validate import check_size as _check_size
from tnlib.struct import pytree_dataclass

__all__ = [
    "TreeTN", "balanced_tree", "nodes", "check", "random", "from_dense", "to_dense",
    "inner", "norm", "log_norm", "orthogonalize", "round", "singular_values", "num_params",
]


@pytree_dataclass(static=("tree",))
class TreeTN:
    """Tree tensor network: ``leaves[mu]`` is ``(n_mu, r_mu)``, ``transfers[j]`` is
    ``(r_{child_1}, ..., r_{child_k}, r_t)`` for the ``j``-th interior node in
    post-order, ``tree`` the static dimension tree (nested tuples of modes)."""

    leaves: tuple
    transfers: tuple
    tree: object

    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(u.shape[-2] for u in self.leaves)

    @property
    def n_modes(self) -> int:
        return len(self.leaves)

    @property
    def ranks(self) -> dict:
        """``{node: r_t}`` for every node (ints for leaves, tuples for interior
        nodes), the root (rank 1) included."""
        return _ranks(self)

    @property
    def dtype(self):
        return jnp.result_type(*self.leaves, *self.transfers)


# ------------------------------------------------------------------------- trees


def balanced_tree(n_modes: int):
    """The balanced binary dimension tree over modes ``0 .. n_modes-1``.

    The modes are split as ``[:n//2]`` and ``[n//2:]`` recursively, e.g.
    ``balanced_tree(4) == ((0, 1), (2, 3))``, ``balanced_tree(5) ==
    ((0, 1), (2, (3, 4)))``, ``balanced_tree(1) == 0``.
    """
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"n_modes must be an int >= 1, got {n_modes!r}")

    def build(lo, hi):
        mid = lo + (hi - lo) // 2
        return lo if hi - lo == 1 else (build(lo, mid), build(mid, hi))

    return build(0, n_modes)


def _is_leaf(node) -> bool:
    return not isinstance(node, tuple)


@functools.lru_cache(maxsize=512)
def nodes(tree) -> tuple:
    """All nodes of ``tree`` in post-order (children before parents, root last).

    Interior nodes appear in the order of ``TreeTN.transfers``; nodes are the
    keys of ``TreeTN.ranks`` and of per-node ``rank`` mappings.
    """
    if _is_leaf(tree):
        return (tree,)
    return tuple(n for c in tree for n in nodes(c)) + (tree,)


@functools.lru_cache(maxsize=512)
def _modes(node) -> tuple:
    """Modes below ``node``, left to right (with repetitions if the tree is bad)."""
    return (node,) if _is_leaf(node) else tuple(m for c in node for m in _modes(c))


@functools.lru_cache(maxsize=512)
def _interior(tree) -> tuple:
    return tuple(n for n in nodes(tree) if not _is_leaf(n))


def _normalize(tree, name):
    if isinstance(tree, bool):
        raise TypeError(f"{name}: a leaf must be an int mode index, got {tree!r}")
    if isinstance(tree, int):
        return int(tree)
    if isinstance(tree, tuple | list):
        if len(tree) < 2:
            raise ValueError(
                f"{name}: interior node {tree!r} has {len(tree)} child(ren); every interior "
                "node needs at least 2 (a one-mode tensor uses the tree 0)"
            )
        return tuple(_normalize(c, name) for c in tree)
    raise TypeError(f"{name}: nodes must be int modes or tuples of nodes, got {tree!r}")


def _check_tree(tree, n_modes: int, name: str = "tree"):
    """Normalize lists to tuples and check that the leaves are ``0..n_modes-1``
    exactly once; the ValueError names the missing, repeated and foreign modes."""
    tree = _normalize(tree, name)
    counts = Counter(_modes(tree))
    problems = [
        ("missing modes", sorted(set(range(n_modes)) - set(counts)), ""),
        ("repeated modes", sorted(m for m, c in counts.items() if c > 1), ""),
        ("modes", sorted(m for m in counts if not 0 <= m < n_modes), f" outside 0..{n_modes - 1}"),
    ]
    parts = [f"{what} {modes}{where}" for what, modes, where in problems if modes]
    if parts:
        raise ValueError(
            f"{name} {tree!r} must cover every mode of the {n_modes}-mode tensor exactly "
            f"once: {'; '.join(parts)}"
        )
    return tree


def _paired(tree):
    """``(first, second)`` children of a binary root (their matricizations are
    transposes of each other, so only ``first`` is truncated), else ``None``."""
    return tree if not _is_leaf(tree) and len(tree) == 2 else None


def _n_truncated(tree) -> int:
    """Number of nodes whose truncation errors add up (``2N - 3`` for binary trees)."""
    return len(nodes(tree)) - 1 - (1 if _paired(tree) else 0)


def _max_ranks(tree, dims) -> dict:
    """Largest useful rank of each non-root node: ``min(rows, cols)`` of its matricization."""
    rows = {node: math.prod(dims[m] for m in _modes(node)) for node in nodes(tree)[:-1]}
    return {node: min(r, math.prod(dims) // r) for node, r in rows.items()}


def _arrays(t) -> dict:
    """``{node: leaf frame or transfer tensor}``."""
    return {**dict(enumerate(t.leaves)),
            **dict(zip(_interior(t.tree), t.transfers, strict=True))}


def _ranks(t) -> dict:
    return {node: a.shape[-1] for node, a in _arrays(t).items()}


# ------------------------------------------------------------------------ checks


def check(t, name: str = "t"):
    """Validate a TreeTN's tree and array shapes (static; works under jit).

    Raises ValueError naming the node and the shapes when a transfer tensor's
    child axes disagree with its children's ranks, when an array has the wrong
    number of axes, or when the root rank is not 1. Returns ``t`` unchanged.
    """
    if not isinstance(t, TreeTN):
        raise TypeError(f"{name} must be a TreeTN, got {type(t).__name__}")
    if not isinstance(t.leaves, tuple | list) or len(t.leaves) == 0:
        raise ValueError(f"{name}: leaves must be a non-empty tuple of arrays")
    if _normalize(t.tree, f"{name}.tree") != t.tree:
        raise TypeError(f"{name}.tree must be nested tuples (hashable), got {t.tree!r}")
    _check_tree(t.tree, len(t.leaves), f"{name}.tree")
    interior = _interior(t.tree)
    if len(t.transfers) != len(interior):
        raise ValueError(f"{name}: the tree {t.tree!r} has {len(interior)} interior nodes "
                         f"but {len(t.transfers)} transfer tensors were given")
    for mu, u in enumerate(t.leaves):
        if u.ndim != 2:
            raise ValueError(f"{name}: leaf {mu} has shape {tuple(u.shape)}; expected (n, r)")
    ranks = _ranks(t)
    for node, b in zip(interior, t.transfers, strict=True):
        want = tuple(ranks[c] for c in node)
        if b.ndim != len(node) + 1 or tuple(b.shape[:-1]) != want:
            raise ValueError(f"{name}: transfer tensor of node {node!r} has shape "
                             f"{tuple(b.shape)}; its children's ranks need {want + ('r',)}")
    if ranks[t.tree] != 1:
        raise ValueError(f"{name}: the root rank must be 1, got {ranks[t.tree]}")
    return t


def _check_same(a, b):
    if a.tree != b.tree:
        raise ValueError(f"trees differ: a has {a.tree!r}, b has {b.tree!r}")
    if a.dims != b.dims:
        raise ValueError(f"mode sizes differ: a has {a.dims}, b has {b.dims}")


def _node_ranks(rank, tree, dims) -> dict:
    bounds = _max_ranks(tree, dims)
    if isinstance(rank, int) and not isinstance(rank, bool):
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        return {node: min(rank, b) for node, b in bounds.items()}
    if not isinstance(rank, Mapping):
        raise TypeError(f"rank must be an int or a mapping {{node: rank}}, got {rank!r}")
    given = {_normalize(k, "rank key"): v for k, v in rank.items()}
    unknown = [k for k in given if k not in bounds]
    missing = [k for k in bounds if k not in given]
    if unknown or missing:
        raise ValueError(f"rank must give one rank per non-root node of {tree!r}: unknown "
                         f"nodes {unknown}, missing nodes {missing}")
    for node, r in given.items():
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"rank for node {node!r} must be an int >= 1, got {r!r}")
        if r > bounds[node]:
            raise ValueError(f"rank for node {node!r} is {r}, larger than its matricization "
                             f"allows: the largest allowed value is {bounds[node]}")
    return given


# ------------------------------------------------------------------ construction


def _apply_children(b, mats):
    """Replace child axis ``i`` of ``b`` (size ``r_i``) by ``mats[i] @`` it: ``mats[i]``
    has shape ``(new_i, r_i)``."""
    for i, m in enumerate(mats):
        b = jnp.moveaxis(jnp.tensordot(b, m, axes=([i], [1])), -1, i)
    return b


def random(key, dims: Sequence[int], rank, dtype=jnp.float32, *, tree=None):
    """Random TreeTN with Gaussian leaves and transfer tensors, ``E ||t||_F^2 = 1``.

    Leaves have entry variance ``1/n_mu`` and transfer tensors ``1/prod(r_children)``,
    so every frame satisfies ``E[U_t^H U_t] = I``.

    Args:
      key: PRNG key.
      dims: mode sizes ``(n_0, ..., n_{N-1})``.
      rank: an int for every non-root node, capped at each node's matricization
        bound ``min(prod n_t, prod n_rest)`` (the capped ranks are ``t.ranks``); or
        a mapping ``{node: rank}`` over all non-root nodes (see ``nodes``), where
        a rank above the bound is a ValueError stating the largest allowed value.
      tree: dimension tree (nested tuples of modes); default ``balanced_tree(N)``.
      dtype: float or complex dtype.
    """
    dims = _check_dims(dims)
    tree = balanced_tree(len(dims)) if tree is None else _check_tree(tree, len(dims))
    ranks = _node_ranks(rank, tree, dims)
    ranks[tree] = 1
    return _random(key, dims, tuple(ranks[k] for k in nodes(tree)), tree, jnp.dtype(dtype))


@functools.partial(jax.jit, static_argnames=("dims", "ranks", "tree", "dtype"))
def _random(key, dims, ranks, tree, dtype):
    """Gaussian arrays for ``random``; ``ranks`` in ``nodes`` order (one compile per
    structure, so eager calls do not dispatch one op per node)."""
    ranks = dict(zip(nodes(tree), ranks, strict=True))
    shapes = [(dims[n], ranks[n]) if _is_leaf(n) else (*(ranks[c] for c in n), ranks[n])
              for n in nodes(tree)]
    # one draw for all arrays: a single RNG computation compiles much faster
    flat = jax.random.normal(key, (sum(math.prod(sh) for sh in shapes),), dtype)
    arrays, start = {}, 0
    for node, shape in zip(nodes(tree), shapes, strict=True):
        size = math.prod(shape)
        arrays[node] = flat[start:start + size].reshape(shape) / math.sqrt(size // shape[-1])
        start += size
    return _assemble(arrays, tree)


def _assemble(arrays, tree):
    """A TreeTN from ``{node: leaf frame or transfer tensor}``."""
    return TreeTN(tuple(arrays[mu] for mu in range(len(_modes(tree)))),
                  tuple(arrays[n] for n in _interior(tree)), tree)


def _rtol_only_error(fn):
    return TypeError(
        f"{fn} with only rtol picks data-dependent ranks and needs concrete values; "
        "inside jit also pass a static max_rank"
    )


def from_dense(x, *, max_rank: int | None = None, rtol: float | None = None, tree=None):
    """Leaves-to-root hierarchical SVD (Grasedyck 2010) of a dense tensor.

    Nodes are processed in post-order: each node's matricization of the tensor
    projected onto the frames found so far is factored by an SVD, its left singular
    vectors become the node's leaf frame / transfer tensor and the tensor is
    projected onto them. The projections are nested, so the errors are orthogonal:
    ``||x - y||^2 <= sum_t tail_t^2 <= (2N - 3) * max_t tail_t^2`` (binary tree;
    in general the number of truncated nodes, see the module docstring), where
    ``tail_t`` is the best rank-``r_t`` error of ``x``'s ``t``-matricization.

    Args:
      x: dense array with ``N >= 1`` axes.
      tree: dimension tree over ``range(N)``; default ``balanced_tree(N)``.
      max_rank: static cap on every node's rank (Python int >= 1): jittable; ranks
        above a matricization's size are capped at it.
      rtol: relative tolerance. With only ``rtol`` each node is truncated to the
        smallest rank whose discarded tail is ``<= rtol * ||x|| / sqrt(m)`` (``m``
        truncated nodes), so ``||x - y|| <= rtol * ||x||`` (needs concrete ``x``).
        With ``max_rank`` too, shapes come from ``max_rank`` and directions beyond
        the tolerance rank are zeroed.

    Returns:
      ``TreeTN``; full rank (no ``max_rank``/``rtol``) reproduces ``x`` exactly.
    """
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must have at least one axis")
    tree = balanced_tree(x.ndim) if tree is None else _check_tree(tree, x.ndim)
    _numerics.check_rank_args(max_rank, rtol, x)
    rtol_only = rtol is not None and max_rank is None
    if rtol_only and not linalg.is_concrete(x):
        raise _rtol_only_error("from_dense")
    t, counts = _hsvd(x, tree, max_rank, None if rtol is None else float(rtol))
    return _shrink(t, counts) if rtol_only else t


def _abs_tol(rtol, norm_x, tree):
    """Per-node tolerance ``rtol * ||x|| / sqrt(m)`` (``m`` truncated nodes), or None."""
    m = _n_truncated(tree)
    return None if rtol is None or m == 0 else rtol * norm_x / math.sqrt(m)


def _choose(s, max_rank, abs_tol, paired_count=None):
    """Static rank ``keep`` and optional 0/1 mask (a prefix) for singular values ``s``.

    ``paired_count``: the kept count of the first child of a binary root, which
    bounds the second child's rank; then no tolerance is charged again.
    """
    keep = s.shape[-1] if max_rank is None else min(max_rank, s.shape[-1])
    if abs_tol is None:
        return keep, None
    if paired_count is not None:
        return keep, jnp.arange(keep) < paired_count
    return keep, linalg.tolerance_mask(s, abs_tol)[:keep]


def _shrink(t, counts):
    """Slice every non-root rank to the concrete ``counts`` (node order of ``nodes``):
    the zeroed directions of a tolerance truncation are a suffix, so this is exact."""
    if not counts:
        return t
    r = dict(zip(nodes(t.tree)[:-1], (max(1, int(c)) for c in counts), strict=True))
    r[t.tree] = 1
    arrays = {node: a[tuple(slice(0, r[c]) for c in (() if _is_leaf(node) else node))
                      + (..., slice(0, r[node]))] for node, a in _arrays(t).items()}
    return _assemble(arrays, t.tree)


@functools.partial(jax.jit, static_argnames=("tree", "max_rank"))
def _hsvd(x, tree, max_rank, rtol):
    """Hierarchical SVD at static shapes: ranks ``min(max_rank, size)``; a tolerance
    zeroes directions. Returns the network and, with ``rtol``, the number of kept
    directions per non-root node (in ``nodes`` order; else ``()``)."""
    abs_tol = _abs_tol(rtol, jnp.linalg.norm(x.ravel()), tree)
    pair = _paired(tree)
    labels, core = [("x", mu) for mu in range(x.ndim)], x
    arrays, counts = {}, {}
    for node in nodes(tree):
        ins = [("x", node)] if _is_leaf(node) else list(node)
        pos = [labels.index(lab) for lab in ins]
        rest = [i for i in range(len(labels)) if i not in pos]
        core = jnp.transpose(core, pos + rest)
        in_shape, rest_shape = core.shape[:len(pos)], core.shape[len(pos):]
        labels = ins + [labels[i] for i in rest]
        if node == tree:
            arrays[node] = core.reshape(*in_shape, 1)
        else:
            u, s, vh = linalg.svd(core.reshape(math.prod(in_shape), -1))
            # pair[1]'s matricization has rank <= pair[0]'s kept rank: lossless
            paired = counts.get(pair[0]) if pair and node == pair[1] else None
            keep, mask = _choose(s, max_rank, abs_tol, paired)
            u, s, vh = u[:, :keep], s[:keep], vh[:keep]
            if mask is not None:
                counts[node] = jnp.sum(mask)
                u, s = u * mask.astype(u.dtype), s * mask
            core = (s[:, None].astype(vh.dtype) * vh).reshape(keep, *rest_shape)
            labels = [node] + labels[len(ins):]
            arrays[node] = u.reshape(*in_shape, keep)
    return _assemble(arrays, tree), tuple(counts[k] for k in nodes(tree)[:-1] if counts)


def to_dense(tn):
    """The dense tensor represented, shape ``tn.dims`` (axes in mode order); a
    ValueError naming the size when it exceeds ``_validate.max_bytes()`` (checked on
    every call, outside the jitted contraction, so the limit is read each time)."""
    check(tn)
    _check_size(tn.dims, tn.leaves[0].dtype, "tree.to_dense")
    return _contract_dense(tn)


@jax.jit
def _contract_dense(tn):
    frames = _arrays(tn)
    for node in _interior(tn.tree):
        b = frames[node]
        frames[node] = _apply_children(b, [frames.pop(c) for c in node]).reshape(-1, b.shape[-1])
    modes = _modes(tn.tree)
    dense = frames[tn.tree].reshape([tn.dims[m] for m in modes])
    return jnp.transpose(dense, sorted(range(len(modes)), key=modes.__getitem__))


def num_params(tn) -> int:
    """Number of scalars stored in one network (read from trailing axes)."""
    if not isinstance(tn, TreeTN):  # a type check only: a stacked batch has extra axes
        raise TypeError(f"tn must be a TreeTN, got {type(tn).__name__}")
    total = sum(math.prod(u.shape[-2:]) for u in tn.leaves)
    for node, b in zip(_interior(tn.tree), tn.transfers, strict=True):
        total += math.prod(b.shape[-(len(node) + 1):])
    return total


# ----------------------------------------------------------------- contractions


def _gram(a, b):
    """``(G, log_scale)`` with ``G * exp(log_scale) = U_root(a)^H U_root(b)`` (1x1).

    Gram matrices ``G_t = U_t(a)^H U_t(b)`` are formed leaves to root; each is divided
    by its largest magnitude (a constant for differentiation, the result does not
    depend on it) and the logs are summed, so deep trees neither overflow nor
    underflow.
    """
    dt = jnp.promote_types(jnp.result_type(a.dtype, b.dtype), jnp.float32)
    real = jnp.finfo(dt).dtype
    xa, xb, grams = _arrays(a), _arrays(b), {}
    for node in nodes(a.tree):
        ua, ub = xa[node].astype(dt), xb[node].astype(dt)
        kids = [] if _is_leaf(node) else [grams.pop(c) for c in node]
        ub = _apply_children(ub, [k[0] for k in kids])
        g = jnp.conj(ua.reshape(-1, ua.shape[-1])).T @ ub.reshape(-1, ub.shape[-1])
        acc = sum((k[1] for k in kids), jnp.zeros((), real))
        s = jax.lax.stop_gradient(jnp.max(jnp.abs(g)))
        s = jnp.where(s > 0, s, jnp.ones((), s.dtype))
        grams[node] = (g / s.astype(dt), acc + jnp.log(s).astype(real))
    return grams[a.tree]


@jax.jit
def inner(a, b):
    """``<a, b> = sum conj(a) * b`` (the first argument is conjugated), via Gram
    matrices from the leaves to the root; never densifies. Both networks must have
    the same tree and mode sizes (ranks may differ)."""
    check(a, "a")
    check(b, "b")
    _check_same(a, b)
    g, acc = _gram(a, b)
    return g[0, 0] * jnp.exp(acc).astype(g.dtype)


@jax.jit
def log_norm(tn):
    """``log ||tn||_F`` via rescaled Gram matrices: finite when the norm itself is not."""
    check(tn)
    g, acc = _gram(tn, tn)
    return 0.5 * (_numerics.safe_log(jnp.abs(jnp.real(g[0, 0]))) + acc)


@jax.jit
def norm(tn):
    """Frobenius norm ``||tn||_F`` via Gram matrices from the leaves to the root
    (``exp(log_norm(tn))``); never densifies."""
    return jnp.exp(log_norm(tn))


# --------------------------------------------------------------- canonical form


@jax.jit
def orthogonalize(tn):
    """Orthonormal frames: QR from the leaves to the root.

    Each leaf ``U_mu`` and each non-root transfer tensor (reshaped to
    ``(prod r_children, r_t)``) is replaced by the ``Q`` of its QR decomposition and
    its ``R`` is pushed into the parent's transfer tensor. Afterwards every frame
    ``U_t`` has orthonormal columns, so ``||tn|| = ||transfers[-1]||`` (the norm sits
    in the root). The tensor is unchanged; a rank larger than its node's input size
    shrinks to it.
    """
    check(tn)
    arrays, rs = _arrays(tn), {}
    for node in nodes(tn.tree)[:-1] if not _is_leaf(tn.tree) else ():
        f = arrays[node] if _is_leaf(node) else _apply_children(
            arrays[node], [rs.pop(c) for c in node])
        q, rs[node] = linalg.qr(f.reshape(-1, f.shape[-1]))
        arrays[node] = q.reshape(*f.shape[:-1], q.shape[-1])
    if not _is_leaf(tn.tree):
        arrays[tn.tree] = _apply_children(arrays[tn.tree], [rs.pop(c) for c in tn.tree])
    return _assemble(arrays, tn.tree)


def _node_svds(o) -> tuple:
    """``(u, s)`` per non-root node (``nodes`` order) of an orthogonalized network
    ``o``, from the root down: the singular values ``s`` of the tensor's
    ``t``-matricization and its left singular vectors ``U_t @ u`` in frame coordinates.

    The matricization is ``U_t F_t Q^T`` with orthonormal ``Q``; ``F_root = [[1]]``
    and a child's ``F`` is ``u * s`` of the SVD of its parent's transfer tensor
    contracted with the parent's ``F``, unfolded along the child's axis.
    """
    fs = {o.tree: jnp.ones((1, 1), o.dtype)}
    out = {}
    for node, b in zip(reversed(_interior(o.tree)), reversed(o.transfers), strict=True):
        c = jnp.tensordot(b, fs.pop(node), axes=([-1], [0]))
        for i, child in enumerate(node):
            ci = jnp.moveaxis(c, i, 0)
            u, s, _ = linalg.svd(ci.reshape(ci.shape[0], -1))
            out[child] = (u, s)
            if not _is_leaf(child):
                fs[child] = u * s.astype(u.dtype)
    return tuple(out[k] for k in nodes(o.tree)[:-1])


def singular_values(t) -> dict:
    """``{node: s}``: singular values of the represented tensor's ``t``-matricization
    (modes of ``t`` as rows) for every non-root node, computed from the network
    (orthogonalize, then SVDs of small matrices from the root down); zeros beyond
    the node's rank are not listed."""
    check(t)
    return dict(zip(nodes(t.tree)[:-1], _singular_values(t), strict=True))


@jax.jit
def _singular_values(t):
    return tuple(s for _, s in _node_svds(orthogonalize(t)))


def round(tn, *, max_rank: int | None = None, rtol: float | None = None):
    """HT truncation (Grasedyck 2010): orthogonalize, then project every
    node onto the leading left singular vectors of its matricization.

    The singular vectors come from small SVDs from the root down (``singular_values``),
    never from the dense tensor; all nodes are truncated at once (root-to-leaves
    HSVD), with ``||tn - y|| <= sqrt(sum_t tail_t^2) <= sqrt(2N - 3) * max_t tail_t``
    for a binary tree (``tail_t``: best rank-``r_t`` error of the ``t``-matricization).

    Args:
      tn: a TreeTN.
      max_rank: static cap on every node's rank: jittable.
      rtol: with only ``rtol`` (concrete ``tn``), each node keeps the smallest rank
        whose tail is ``<= rtol * ||tn|| / sqrt(m)`` (``m`` truncated nodes), so
        ``||tn - y|| <= rtol * ||tn||``. With ``max_rank`` too, shapes come from
        ``max_rank`` and directions beyond the tolerance rank are zeroed.
    """
    check(tn)
    _numerics.check_rank_args(max_rank, rtol)
    rtol_only = rtol is not None and max_rank is None
    if rtol_only and not linalg.is_concrete(tn):
        raise _rtol_only_error("round")
    out, counts = _round(tn, max_rank, None if rtol is None else float(rtol))
    return _shrink(out, counts) if rtol_only else out


@functools.partial(jax.jit, static_argnames=("max_rank",))
def _round(t, max_rank, rtol):
    """HT truncation at static shapes (a tolerance zeroes directions); returns the
    network and, with ``rtol``, the kept directions per non-root node (or ``()``)."""
    o = orthogonalize(t)
    if _is_leaf(o.tree):
        return o, ()
    order = nodes(o.tree)[:-1]
    svds = dict(zip(order, _node_svds(o), strict=True))
    abs_tol = _abs_tol(rtol, jnp.linalg.norm(o.transfers[-1].ravel()), o.tree)
    pair = _paired(o.tree)
    proj, counts = {}, {}
    for node in order:
        u, s = svds[node]
        if pair and node == pair[1]:  # same singular values as pair[0]: reuse its rank
            u = u[:, :proj[pair[0]].shape[-1]]
        paired = counts.get(pair[0]) if pair and node == pair[1] else None
        keep, mask = _choose(s[:u.shape[-1]], max_rank, abs_tol, paired)
        p = u[:, :keep]
        if mask is not None:
            p = p * mask.astype(p.dtype)
            counts[node] = jnp.sum(mask)
        proj[node] = p
    proj[o.tree] = jnp.ones((1, 1), o.dtype)
    arrays = {node: jnp.tensordot(
        a if _is_leaf(node) else _apply_children(a, [jnp.conj(proj[c]).T for c in node]),
        proj[node], axes=([-1], [0])) for node, a in _arrays(o).items()}
    return _assemble(arrays, o.tree), tuple(counts[k] for k in order if counts)
