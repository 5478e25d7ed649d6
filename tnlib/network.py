"""General tensor networks given by an adjacency matrix (TNGA / TnALE style).

A network on ``N`` nodes is described by a symmetric ``N x N`` integer matrix ``A``
as in TNGA (Li & Sun 2020) and TnALE (Li et al. 2023): ``A[k][k]`` is the size of
the tensor mode carried by node ``k``, ``A[i][j] = A[j][i]`` is the rank of the
bond between nodes ``i`` and ``j``, and ``1`` means "no edge". An optional
permutation ``perm`` places the modes on the nodes: node ``k`` carries mode
``perm[k]`` of the represented tensor, so ``A[k][k] == x.shape[perm[k]]`` (the
diagonal follows the nodes, i.e. the permuted tensor ``x.transpose(perm)``).

A ``Network`` holds one core per node; core ``k`` has axes ``(mode, bonds...)``:
its mode first, then its bonds to the other nodes in increasing node order, with
rank-1 edges omitted. The adjacency (a tuple of tuples) and ``perm`` are static
pytree aux data; the cores are the children, so ``jit``, ``vmap`` (a batch of
networks with stacked cores), ``eval_shape`` and ``grad`` work. Sizes are read
from the cores' trailing axes.

Contraction goes through ``contract(arrays, subscripts)``: the contraction path
is chosen once per ``(subscripts, shapes)`` signature by ``opt_einsum`` and cached
(``contract_path``), then ``jnp.einsum`` runs with that fixed path. Choosing the
path is separate from running it (as in quimb): small networks (at most
``_LARGE`` tensors) use ``optimize="auto-hq"``; larger ones use cotengra's
``HyperOptimizer`` when ``cotengra`` is importable, else opt_einsum's ``"greedy"``.
cotengra is an optional dependency (not installed by tnlib); the import is guarded.

``fit`` fits the cores of a fixed structure to a dense target by alternating least
squares or by gradient descent (hand-written Adam), with fixed iteration counts
inside ``lax.fori_loop``: it runs under ``jit`` for each static structure.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import opt_einsum

from tnlib import _numerics, linalg
from tnlib._slicing import SlicePlan, contract_sliced, slice_plan
from tnlib.struct import pytree_dataclass

try:  # optional: better paths for large networks
    import cotengra as _cotengra
except ImportError:  # pragma: no cover - cotengra is not a dependency
    _cotengra = None

__all__ = [
    "Network", "random", "to_dense", "inner", "norm", "num_params", "einsum_spec",
    "contract", "contract_path", "slice_plan", "SlicePlan", "fit", "check",
]

# Networks with more tensors than this get greedy / cotengra paths instead of auto-hq.
_LARGE = 12


@pytree_dataclass(static=("adjacency", "perm"))
class Network:
    """General tensor network: ``cores[k]`` has axes ``(n_k, r_{k,j} for j != k, r > 1)``.

    ``adjacency`` is the static ``N x N`` tuple-of-tuples structure matrix and
    ``perm`` the static tuple placing mode ``perm[k]`` on node ``k``.
    """

    cores: tuple
    adjacency: tuple
    perm: tuple

    @property
    def n_nodes(self) -> int:
        return len(self.adjacency)

    @property
    def dims(self) -> tuple[int, ...]:
        """Mode sizes of the represented tensor in its original mode order (from the cores)."""
        sizes = {}
        for k, c in enumerate(self.cores):
            nd = len(_core_shape(self.adjacency, k))
            sizes[self.perm[k]] = c.shape[-nd]
        return tuple(sizes[m] for m in range(len(self.cores)))

    @property
    def dtype(self):
        return jnp.result_type(*self.cores)


# ----------------------------------------------------------------------------- checks


def _check_adjacency(adjacency, name: str = "adjacency") -> tuple[tuple[int, ...], ...]:
    """Validate a structure matrix and return it as a tuple of tuples of ints."""
    if isinstance(adjacency, Network):
        return adjacency.adjacency
    if not linalg.is_concrete(adjacency):
        raise TypeError(f"{name} must be concrete (it is static structure), not a traced value")
    try:
        a = np.asarray(adjacency)
    except ValueError as e:  # ragged nested lists
        raise ValueError(f"{name} must be a square matrix (N x N), got a ragged sequence") from e
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix (N x N), got shape {a.shape}")
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or
                               (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a)))):
        raise ValueError(f"{name} entries must be integers (sizes and ranks), got dtype {a.dtype}")
    a = a.astype(np.int64)
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            if a[i, j] < 1:
                what = "mode size" if i == j else "bond rank"
                raise ValueError(
                    f"{name} entries must be >= 1 (1 = no edge); the {what} at ({i}, {j}) "
                    f"is {a[i, j]}"
                )
            if a[i, j] != a[j, i]:
                raise ValueError(
                    f"{name} must be symmetric: entry ({i}, {j}) = {a[i, j]} but "
                    f"({j}, {i}) = {a[j, i]}"
                )
    return tuple(tuple(int(v) for v in row) for row in a)


def _check_perm(perm, n: int, name: str = "perm") -> tuple[int, ...]:
    if perm is None:
        return tuple(range(n))
    if not linalg.is_concrete(perm):
        raise TypeError(f"{name} must be concrete (it is static structure), not a traced value")
    p = tuple(int(v) for v in np.asarray(perm).ravel())
    if np.asarray(perm).ndim != 1 or sorted(p) != list(range(n)):
        raise ValueError(f"{name} must be a permutation of range({n}) (one entry per node), "
                         f"got {tuple(np.asarray(perm).tolist())}")
    return p


def _core_shape(adjacency, k: int) -> tuple[int, ...]:
    row = adjacency[k]
    return (row[k],) + tuple(r for j, r in enumerate(row) if j != k and r > 1)


def check(net: Network, name: str = "net") -> Network:
    """Validate a Network's core shapes against its adjacency (static; works under jit).

    Raises ValueError naming the node and both shapes when a core's trailing axes
    differ from ``(mode size, bond ranks...)``. Returns ``net`` unchanged.
    """
    adj, n = net.adjacency, len(net.adjacency)
    if not isinstance(net.cores, tuple | list) or len(net.cores) != n:
        raise ValueError(f"{name}: expected {n} cores (one per node), got "
                         f"{len(net.cores) if isinstance(net.cores, tuple | list) else net.cores}")
    for k, c in enumerate(net.cores):
        want = _core_shape(adj, k)
        if c.ndim < len(want) or tuple(c.shape[c.ndim - len(want):]) != want:
            raise ValueError(
                f"{name}: core {k} has shape {tuple(c.shape)}; the adjacency gives "
                f"{want} (mode size, then bonds to nodes in increasing order)"
            )
    return net


# ----------------------------------------------------------------- einsum and paths


def _terms(adjacency, perm, mode_syms, start: int):
    """Einsum terms of one network whose mode ``m`` has symbol ``mode_syms[m]``.

    Bond symbols are numbered from ``start``; returns ``(terms, next_start)``.
    """
    n = len(adjacency)
    bond = {}
    nxt = start
    for i in range(n):
        for j in range(i + 1, n):
            if adjacency[i][j] > 1:
                bond[i, j] = bond[j, i] = opt_einsum.get_symbol(nxt)
                nxt += 1
    terms = []
    for k in range(n):
        bonds = "".join(bond[k, j] for j in range(n) if j != k and adjacency[k][j] > 1)
        terms.append(mode_syms[perm[k]] + bonds)
    return terms, nxt


def einsum_spec(adjacency, perm=None) -> str:
    """Einsum subscripts contracting the cores of a network to its dense tensor.

    One input term per node (its mode symbol, then its bond symbols in increasing
    neighbour order, rank-1 edges omitted); the output lists the mode symbols in
    the tensor's original mode order ``0..N-1``.
    """
    adjacency = _check_adjacency(adjacency)
    n = len(adjacency)
    perm = _check_perm(perm, n)
    mode_syms = [opt_einsum.get_symbol(m) for m in range(n)]
    terms, _ = _terms(adjacency, perm, mode_syms, n)
    return ",".join(terms) + "->" + "".join(mode_syms)


@functools.lru_cache(maxsize=4096)
def _cached_path(subscripts: str, shapes: tuple[tuple[int, ...], ...]):
    if len(shapes) > _LARGE and _cotengra is not None:
        # A fresh optimizer per signature: cotengra's optimizers keep their trials.
        with warnings.catch_warnings():  # "Couldn't import kahypar": a fine fallback
            warnings.filterwarnings("ignore", message=".*kahypar.*")
            optimize = _cotengra.HyperOptimizer(max_repeats=32, parallel=False, progbar=False)
    elif len(shapes) > _LARGE:
        optimize = "greedy"
    else:
        optimize = "auto-hq"
    path, _ = opt_einsum.contract_path(subscripts, *shapes, shapes=True, optimize=optimize)
    return tuple(tuple(int(i) for i in step) for step in path)


def contract_path(subscripts: str, *shapes) -> tuple[tuple[int, ...], ...]:
    """Contraction path (opt_einsum's linear format) for ``subscripts`` on ``shapes``.

    Chosen once per ``(subscripts, shapes)`` signature and cached: ``"auto-hq"`` for
    at most ``_LARGE`` (12) tensors, otherwise cotengra's ``HyperOptimizer`` when
    cotengra is importable, else ``"greedy"``. Pure Python: call it outside or
    inside ``jit`` (shapes are static). ``contract_path.cache_clear()`` empties the
    cache.
    """
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    return _cached_path(subscripts, shapes)


contract_path.cache_clear = _cached_path.cache_clear
contract_path.cache_info = _cached_path.cache_info


def contract(arrays: Sequence[jax.Array], subscripts: str, *, max_intermediate: int | None = None,
             mesh=None, axis: str = "data", slice_method: str = "auto") -> jax.Array:
    """``jnp.einsum(subscripts, *arrays)`` along the cached path of ``contract_path``.

    Works eagerly and under ``jit``/``vmap``/``grad`` (inside ``vmap`` the path is
    chosen for the per-example shapes).

    Sliced and sharded contraction: with ``max_intermediate`` (elements) the
    contraction is split by slicing contracted indices (:func:`slice_plan`) so that
    no intermediate of one slice exceeds it, and the slices are summed one after
    another. With ``mesh`` (a :class:`jax.sharding.Mesh`) the slices are spread over
    the mesh axis ``axis`` with ``shard_map`` (at least one slice per device) and
    summed with ``psum``; the result is replicated. ``slice_plan(subscripts,
    *shapes, max_intermediate=...)`` shows the plan, its per-slice ``peak`` and the
    unsliced ``peak_unsliced``.
    """
    arrays = [jnp.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("arrays must hold at least one array")
    if max_intermediate is None and mesh is None:
        path = contract_path(subscripts, *(a.shape for a in arrays))
        return jnp.einsum(subscripts, *arrays, optimize=list(path))
    if mesh is not None and axis not in mesh.shape:
        raise ValueError(f"axis {axis!r} is not an axis of mesh (axes: {tuple(mesh.shape)})")
    plan = slice_plan(subscripts, *(a.shape for a in arrays), max_intermediate=max_intermediate,
                      min_slices=1 if mesh is None else mesh.shape[axis], method=slice_method)
    return contract_sliced(arrays, plan, mesh=mesh, axis=axis)


# ------------------------------------------------------------------------ construction


def random(key, adjacency, perm=None, dtype=jnp.float32) -> Network:
    """Random network with Gaussian cores scaled so that ``E ||net||_F^2 = 1``.

    Core ``k`` has i.i.d. entries of variance ``1 / (n_k prod_e sqrt(r_e))`` over its
    bonds ``e``; each bond appears at two nodes, so the expectation is exactly one.
    """
    adjacency = _check_adjacency(adjacency)
    n = len(adjacency)
    perm = _check_perm(perm, n)
    shapes = [_core_shape(adjacency, k) for k in range(n)]
    # One draw for all cores: a single PRNG call compiles much faster than one per core.
    flat = jax.random.normal(key, (sum(math.prod(s) for s in shapes),), dtype)
    cores, start = [], 0
    for shape in shapes:
        std = 1.0 / math.sqrt(shape[0] * math.sqrt(math.prod(shape[1:])))
        size = math.prod(shape)
        cores.append(std * flat[start:start + size].reshape(shape))
        start += size
    return Network(tuple(cores), adjacency, perm)


def num_params(adjacency) -> int:
    """Number of core entries: ``sum_k prod_j A[k][j]`` (mode size times bond ranks).

    Takes the structure matrix alone or a ``Network`` (its adjacency).
    """
    adjacency = _check_adjacency(adjacency)
    return sum(math.prod(row) for row in adjacency)


def to_dense(net: Network) -> jax.Array:
    """The dense tensor represented, modes in their original order ``0..N-1``."""
    check(net)
    return contract(net.cores, einsum_spec(net.adjacency, net.perm))


# --------------------------------------------------------------------------- algebra


def inner(a: Network, b: Network) -> jax.Array:
    """``<a, b> = sum conj(a) * b``, contracting both networks together (never dense).

    ``a`` and ``b`` may have different structures and permutations; their mode
    sizes (original order) must agree.
    """
    check(a, "a")
    check(b, "b")
    if a.dims != b.dims:
        raise ValueError(f"mode sizes differ: a has {a.dims}, b has {b.dims}")
    n = len(a.adjacency)
    mode_syms = [opt_einsum.get_symbol(m) for m in range(n)]
    ta, nxt = _terms(a.adjacency, a.perm, mode_syms, n)
    tb, _ = _terms(b.adjacency, b.perm, mode_syms, nxt)
    spec = ",".join(ta + tb) + "->"
    return contract([jnp.conj(c) for c in a.cores] + list(b.cores), spec)


def norm(net: Network) -> jax.Array:
    """Frobenius norm ``sqrt(<net, net>)``, from the network contracted with its conjugate."""
    sq = jnp.real(inner(net, net))
    return jnp.sqrt(jnp.maximum(sq, 0))


# ------------------------------------------------------------------------------- fit


def _check_fit_args(x, adjacency, perm, key, init, method, n_iter):
    adjacency = _check_adjacency(adjacency)
    n = len(adjacency)
    perm = _check_perm(perm, n)
    if x.ndim != n:
        raise ValueError(f"x has {x.ndim} modes (shape {x.shape}) but adjacency has {n} nodes")
    for k in range(n):
        if adjacency[k][k] != x.shape[perm[k]]:
            raise ValueError(
                f"mode sizes of adjacency do not match x.shape {x.shape}: node {k} carries mode "
                f"{perm[k]} of size {x.shape[perm[k]]} but adjacency[{k}][{k}] = "
                f"{adjacency[k][k]}"
            )
    if method not in ("als", "gradient"):
        raise ValueError(f"method must be 'als' or 'gradient', got {method!r}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be a Python int >= 0 (static), got {n_iter!r}")
    if init is None and key is None:
        raise ValueError("fit needs a PRNG key (or an init network to start from)")
    if init is not None:
        if not isinstance(init, Network):
            raise TypeError(f"init must be a Network, got {type(init).__name__}")
        if init.adjacency != adjacency or init.perm != perm:
            raise ValueError(
                f"init must have the fitted structure: init has adjacency {init.adjacency} and "
                f"perm {init.perm}, fit was given {adjacency} and perm {perm}"
            )
        check(init, "init")
    return adjacency, perm


def _als_update(cores, k, x, adjacency, perm, ridge):
    """Least-squares update of core ``k`` with all other cores fixed."""
    n = len(adjacency)
    shape = _core_shape(adjacency, k)
    mode_syms = [opt_einsum.get_symbol(m) for m in range(n)]
    terms, _ = _terms(adjacency, perm, mode_syms, n)
    others = [m for m in range(n) if m != perm[k]]
    out = "".join(mode_syms[m] for m in others) + terms[k][1:]
    spec = ",".join(t for j, t in enumerate(terms) if j != k) + "->" + out
    if n == 1:  # a one-node network: no other cores, the environment is the scalar 1
        env = jnp.ones((), x.dtype)
    else:
        env = contract([c for j, c in enumerate(cores) if j != k], spec)
    rank = math.prod(shape[1:])
    e = env.reshape(-1, rank)  # (prod of other modes, bonds of node k)
    rhs = jnp.moveaxis(x, perm[k], 0).reshape(shape[0], -1).T  # (prod others, n_k)
    if not (isinstance(ridge, int | float) and ridge == 0):
        # ridge regression as least squares on the system augmented by sqrt(ridge) * I
        e = jnp.concatenate([e, jnp.sqrt(ridge) * jnp.eye(rank, dtype=e.dtype)], axis=0)
        rhs = jnp.concatenate([rhs, jnp.zeros((rank, shape[0]), rhs.dtype)], axis=0)
    sol = jnp.linalg.lstsq(e, rhs)[0]  # (bonds, n_k): x_(k)^T = env @ core_(k)^T
    return sol.T.reshape(shape).astype(cores[k].dtype)


def _balance(cores):
    """Rescale cores to equal Frobenius norms (their product, the tensor, is unchanged)."""
    norms = [jnp.linalg.norm(c.ravel()) for c in cores]
    ok = jnp.all(jnp.stack(norms) > 0)
    logmean = sum(jnp.log(jnp.where(ok, v, 1.0)) for v in norms) / len(cores)
    return tuple(
        c * jnp.where(ok, jnp.exp(logmean) / jnp.where(ok, v, 1.0), 1.0).astype(c.dtype)
        for c, v in zip(cores, norms, strict=True)
    )


def _adam(loss, cores, n_iter, lr, b1=0.9, b2=0.999, eps=1e-12):
    grad = jax.grad(loss)

    def step(t, carry):
        cs, m, v = carry
        g = tuple(jnp.conj(gi) for gi in grad(cs))  # steepest descent (complex too)
        m = tuple(b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True))
        v = tuple(b2 * vi + (1 - b2) * jnp.abs(gi) ** 2 for vi, gi in zip(v, g, strict=True))
        c1, c2 = 1 - b1 ** (t + 1.0), 1 - b2 ** (t + 1.0)
        cs = tuple(
            c - (lr * (mi / c1) / (jnp.sqrt(vi / c2) + eps)).astype(c.dtype)
            for c, mi, vi in zip(cs, m, v, strict=True)
        )
        return cs, m, v

    zeros = tuple(jnp.zeros_like(c) for c in cores)
    vzeros = tuple(jnp.zeros(c.shape, jnp.finfo(c.dtype).dtype) for c in cores)
    return jax.lax.fori_loop(0, n_iter, step, (cores, zeros, vzeros))[0]


def fit(x, adjacency, *, perm=None, key=None, n_iter: int = 50, method: str = "als",
        init: Network | None = None, ridge: float = 0.0, learning_rate: float = 1e-2,
        optimizer: str = "adam"):
    """Fit the cores of a network with a fixed structure to a dense tensor ``x``.

    Args:
      x: dense target; ``x.shape[perm[k]] == adjacency[k][k]`` for every node ``k``
        (bfloat16 / float16 targets are fitted in float32 and the result cast back).
      adjacency: static ``N x N`` structure matrix (sizes on the diagonal, ranks off it).
      perm: node ``k`` carries mode ``perm[k]`` (identity when None).
      key: PRNG key for the random start (``random``); not needed with ``init``.
      n_iter: static number of ALS sweeps (one least-squares update per node each)
        or gradient steps.
      method: ``"als"``: each core in turn is replaced by the least-squares solution
        against the contraction of all the other cores (``jnp.linalg.lstsq``, ridge
        ``ridge`` on the problem scaled to ``||x|| = 1``), and the cores are rebalanced
        to equal norms after each sweep. ``"gradient"``: descent on
        ``||x - net||^2 / ||x||^2`` with ``optimizer="adam"`` (hand-written Adam) or
        ``"sgd"`` (fixed step), step size ``learning_rate``.
      init: a Network of the same structure to start from (warm start).

    Returns:
      ``(network, rse)`` with ``rse = ||x - to_dense(network)||^2 / ||x||^2`` (a real
      scalar; the absolute squared error when ``x`` is zero). Fixed iteration counts
      in ``lax.fori_loop``, so ``fit`` runs under ``jit`` for each static structure
      (keep ``adjacency``, ``perm``, ``n_iter`` and ``method`` static) and under
      ``vmap`` over targets or keys.

    ALS never increases the error, but on structures with loops (rings, fully
    connected graphs) it can stall in a local minimum or a slow "swamp" from some
    starts: run a few restarts with ``jax.vmap`` over keys and keep the best, as
    TNGA/TnALE do when they score a structure.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    adjacency, perm = _check_fit_args(x, adjacency, perm, key, init, method, n_iter)
    if _numerics.low_precision(x.dtype):  # no least squares below float32: fit in float32
        init32 = None if init is None else jax.tree.map(lambda c: c.astype(jnp.float32), init)
        net, rse = fit(x.astype(jnp.float32), adjacency, perm=perm, key=key, n_iter=n_iter,
                       method=method, init=init32, ridge=ridge, learning_rate=learning_rate,
                       optimizer=optimizer)
        return jax.tree.map(lambda c: c.astype(x.dtype), net), rse.astype(x.dtype)
    if method == "gradient" and optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    n = len(adjacency)
    # Work on x / ||x|| (scale-free ridge and step size); scale the cores back at the end.
    xnorm = jnp.linalg.norm(x.ravel())
    safe = jnp.where(xnorm > 0, xnorm, 1.0)
    xn = x / safe.astype(x.dtype)
    per_core = safe ** (1.0 / n)
    if init is None:
        cores = random(key, adjacency, perm, x.dtype).cores
    else:
        cores = tuple((c / per_core.astype(c.dtype)).astype(x.dtype) for c in init.cores)
    spec = einsum_spec(adjacency, perm)

    if method == "als":
        def sweep(_, cs):
            cs = list(cs)
            for k in range(n):
                cs[k] = _als_update(cs, k, xn, adjacency, perm, ridge)
            return _balance(tuple(cs))

        cores = jax.lax.fori_loop(0, n_iter, sweep, tuple(cores))
    else:
        def loss(cs):
            return jnp.sum(jnp.abs(xn - contract(cs, spec)) ** 2)

        if optimizer == "adam":
            cores = _adam(loss, tuple(cores), n_iter, learning_rate)
        else:
            def step(_, cs):
                g = jax.grad(loss)(cs)
                return tuple(c - learning_rate * jnp.conj(gi) for c, gi in zip(cs, g, strict=True))

            cores = jax.lax.fori_loop(0, n_iter, step, tuple(cores))

    rse = jnp.sum(jnp.abs(xn - contract(cores, spec)) ** 2)
    cores = tuple(c * per_core.astype(c.dtype) for c in cores)
    return Network(cores, adjacency, perm), rse
