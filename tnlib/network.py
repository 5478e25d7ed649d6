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

``from_dense`` is the format verb every module shares (the chain by TT-SVD, or a given
structure fitted by ``fit``); ``fit`` fits the cores of a fixed structure to a dense
target by alternating least squares or by gradient descent (an optax optimizer), with
fixed iteration counts inside ``lax.fori_loop``: it runs under ``jit`` for each static
structure.
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
import optax

from tnlib import _numerics, _optim, linalg
from tnlib._slicing import SlicePlan, contract_sliced, slice_plan
from tnlib._validate import check_dims as _check_dims
from tnlib._validate import check_size as _check_size
from tnlib.struct import pytree_dataclass

try:  # optional: better paths for large networks
    import cotengra as _cotengra
except ImportError:  # pragma: no cover - cotengra is not a dependency
    _cotengra = None

__all__ = [
    "Network", "random", "from_dense", "structure", "dims_of", "to_dense", "inner", "norm",
    "num_params", "einsum_spec", "contract", "contract_path", "slice_plan", "SlicePlan", "fit",
    "check", "check_adjacency", "check_perm",
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


def check_adjacency(adjacency, name: str = "adjacency") -> tuple[tuple[int, ...], ...]:
    """Validate a structure matrix (or a Network's) and return it as a tuple of tuples of
    ints; ValueError / TypeError naming ``name``."""
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


def check_perm(perm, n: int, name: str = "perm") -> tuple[int, ...]:
    """``perm`` as a tuple permutation of ``range(n)`` (identity when None), or ValueError."""
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
    adjacency = check_adjacency(adjacency)
    n = len(adjacency)
    perm = check_perm(perm, n)
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
    _check_subscripts(subscripts, shapes)
    try:
        return _cached_path(subscripts, shapes)
    except (KeyError, IndexError, ValueError) as e:  # opt_einsum's errors for a bad spec
        raise ValueError(f"subscripts {subscripts!r} do not describe a contraction of "
                         f"shapes {shapes}: {type(e).__name__}: {e}") from None


def _check_subscripts(subscripts, shapes) -> None:
    """ValueError naming the spec unless it is ``in,in,...->out`` with one input term
    per array, an output of input letters only (no comma) and, without ``...``, one
    letter per axis."""
    if not isinstance(subscripts, str):
        raise TypeError(f"subscripts must be a str, got {type(subscripts).__name__}")
    lhs, arrow, out = subscripts.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"subscripts {subscripts!r} has {len(terms)} input terms for "
                         f"{len(shapes)} arrays")
    if arrow:
        letters = set(lhs) - {",", " ", "."}
        bad = sorted(set(out) - letters - {" ", "."})
        if bad:
            raise ValueError(f"subscripts {subscripts!r}: output {out!r} has {bad} that no "
                             "input has (an output takes no comma)")
    for term, shape in zip(terms, shapes, strict=True):
        term = term.strip()
        if "..." not in term and len(term) != len(shape):
            raise ValueError(f"subscripts {subscripts!r}: term {term!r} has {len(term)} "
                             f"letters for an array of shape {shape}")


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


def structure(dims: Sequence[int], rank, perm=None) -> tuple[tuple[int, ...], ...]:
    """The structure matrix of a network for a tensor of shape ``dims``.

    Args:
      dims: mode sizes of the represented tensor (original mode order).
      rank: an int (every pair of nodes joined by a bond of that rank: a fully
        connected network; 1 gives no bonds) or an ``N x N`` symmetric integer matrix
        of bond ranks (1 = no edge) whose diagonal is either ignored-as-1 or already
        the node sizes ``dims[perm[k]]`` (so a structure matrix passes unchanged).
      perm: node ``k`` carries mode ``perm[k]`` (identity when None).
    """
    dims = _check_dims(dims)
    n = len(dims)
    perm = check_perm(perm, n)
    sizes = [dims[perm[k]] for k in range(n)]
    if isinstance(rank, int) and not isinstance(rank, bool):
        if rank < 1:
            raise ValueError(f"rank must be >= 1 (1 = no edge), got {rank}")
        a = [[rank] * n for _ in range(n)]
    else:
        a = np.array(rank, dtype=object)
        if a.shape != (n, n):
            raise ValueError(f"rank must be an int or an {n} x {n} matrix of bond ranks "
                             f"(one row per mode of dims {dims}), got shape {a.shape}")
        a = a.tolist()
        for k in range(n):
            if a[k][k] not in (1, sizes[k]):
                raise ValueError(f"rank[{k}][{k}] = {a[k][k]} must be 1 or the node's mode "
                                 f"size dims[perm[{k}]] = {sizes[k]}")
    for k in range(n):
        a[k][k] = sizes[k]
    return check_adjacency(a, "rank")


def dims_of(adjacency, perm=None) -> tuple[int, ...]:
    """Mode sizes (original order) of the tensor a structure matrix represents:
    ``dims[perm[k]] = adjacency[k][k]``."""
    adjacency = check_adjacency(adjacency)
    perm = check_perm(perm, len(adjacency))
    dims = [0] * len(adjacency)
    for k, m in enumerate(perm):
        dims[m] = adjacency[k][k]
    return tuple(dims)


def random(key, dims: Sequence[int], rank, dtype=jnp.float32, *, perm=None) -> Network:
    """Random network with Gaussian cores scaled so that ``E ||net||_F^2 = 1``.

    Core ``k`` has i.i.d. entries of variance ``1 / (n_k prod_e sqrt(r_e))`` over its
    bonds ``e``; each bond appears at two nodes, so the expectation is exactly one.

    Args:
      key: PRNG key.
      dims: mode sizes of the represented tensor.
      rank: an int (fully connected, every bond that rank) or an ``N x N`` matrix of
        bond ranks, 1 = no edge (``structure``; a structure matrix is accepted as is).
      dtype: float or complex dtype.
      perm: node ``k`` carries mode ``perm[k]`` (identity when None).
    """
    adjacency = structure(dims, rank, perm)
    return _random(key, adjacency, check_perm(perm, len(adjacency)), dtype)


def _random(key, adjacency, perm, dtype) -> Network:
    shapes = [_core_shape(adjacency, k) for k in range(len(adjacency))]
    # One draw for all cores: a single PRNG call compiles much faster than one per core.
    flat = jax.random.normal(key, (sum(math.prod(s) for s in shapes),), dtype)
    cores, start = [], 0
    for shape in shapes:
        std = 1.0 / math.sqrt(shape[0] * math.sqrt(math.prod(shape[1:])))
        size = math.prod(shape)
        cores.append(std * flat[start:start + size].reshape(shape))
        start += size
    return Network(tuple(cores), adjacency, perm)


def num_params(tn) -> int:
    """Number of core entries: ``sum_k prod_j A[k][j]`` (mode size times bond ranks).

    Takes a ``Network`` or its structure matrix alone.
    """
    adjacency = check_adjacency(tn)
    return sum(math.prod(row) for row in adjacency)


def to_dense(tn: Network) -> jax.Array:
    """The dense tensor represented, modes in their original order ``0..N-1`` (a
    ValueError naming the size when it exceeds ``_validate.max_bytes()``)."""
    check(tn)
    _check_size(tn.dims, tn.cores[0].dtype, "network.to_dense")
    return contract(tn.cores, einsum_spec(tn.adjacency, tn.perm))


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


def norm(tn: Network) -> jax.Array:
    """Frobenius norm ``sqrt(<tn, tn>)``, from the network contracted with its conjugate."""
    sq = jnp.real(inner(tn, tn))
    return jnp.sqrt(jnp.maximum(sq, 0))


# ------------------------------------------------------------------------------- fit


def _check_fit_args(x, adjacency, perm, key, init, method, n_iter):
    adjacency = check_adjacency(adjacency)
    n = len(adjacency)
    perm = check_perm(perm, n)
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


def fit(x, adjacency, *, perm=None, key=None, n_iter: int = 50, method: str = "als",
        init: Network | None = None, ridge: float = 0.0, learning_rate: float = 1e-2,
        optimizer: optax.GradientTransformation | None = None):
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
        ``||x - net||^2 / ||x||^2`` with ``optimizer``.
      learning_rate: step size of the default optimizer.
      optimizer: an optax ``GradientTransformation`` for ``method="gradient"``
        (complex cores step along the conjugate gradient); default
        ``optax.adam(learning_rate, eps=1e-12)``. Schedules go in as optax schedules.
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
    if optimizer is None:
        optimizer = optax.adam(learning_rate, eps=1e-12)
    elif not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")
    n = len(adjacency)
    # Work on x / ||x|| (scale-free ridge and step size); scale the cores back at the end.
    xnorm = jnp.linalg.norm(x.ravel())
    safe = jnp.where(xnorm > 0, xnorm, 1.0)
    xn = x / safe.astype(x.dtype)
    per_core = safe ** (1.0 / n)
    if init is None:
        cores = _random(key, adjacency, perm, x.dtype).cores
    else:
        cores = tuple((c / per_core.astype(c.dtype)).astype(x.dtype) for c in init.cores)
    spec = einsum_spec(adjacency, perm)

    if method == "als":
        def sweep(_, cs):
            cs = list(cs)
            for k in range(n):
                cs[k] = _als_update(cs, k, xn, adjacency, perm, ridge)
            return _numerics.balance_norms(tuple(cs))

        cores = jax.lax.fori_loop(0, n_iter, sweep, tuple(cores))
    else:
        def loss(cs):
            return jnp.sum(jnp.abs(xn - contract(cs, spec)) ** 2)

        cores = _optim.minimize(loss, tuple(cores), n_iter, optimizer)

    rse = jnp.sum(jnp.abs(xn - contract(cores, spec)) ** 2)
    cores = tuple(c * per_core.astype(c.dtype) for c in cores)
    return Network(cores, adjacency, perm), rse


def from_dense(x, *, max_rank: int | None = None, rtol: float | None = None,
               adjacency=None, perm=None, key=None, n_iter: int = 50, method: str = "als",
               optimizer: optax.GradientTransformation | None = None) -> Network:
    """A network representing the dense tensor ``x``.

    Without ``adjacency`` the structure is the chain (an open tensor train, node ``k``
    carrying mode ``k``) and the cores come from TT-SVD (``tnlib.tt.from_dense``):
    ``max_rank`` caps the bonds, ``rtol`` bounds the relative error as there, and
    with neither the network equals ``x`` to rounding. With ``adjacency`` (any fixed
    structure) the cores are fitted by ``fit`` from ``key`` (default
    ``jax.random.PRNGKey(0)``) with ``perm``, ``n_iter``, ``method`` and ``optimizer``;
    the ranks are those of ``adjacency``, so ``max_rank`` / ``rtol`` must be None.
    """
    if adjacency is not None:
        if max_rank is not None or rtol is not None:
            raise ValueError("from_dense with an adjacency takes its ranks from it: pass "
                             "max_rank / rtol only for the default chain structure")
        key = jax.random.PRNGKey(0) if key is None else key
        return fit(x, adjacency, perm=perm, key=key, n_iter=n_iter, method=method,
                   optimizer=optimizer)[0]
    if perm is not None:
        raise ValueError("perm needs an adjacency (the chain places mode k on node k)")
    from tnlib import tt  # local: tt is only needed for the chain

    cores = tt.from_dense(x, max_rank=max_rank, rtol=rtol).cores
    n = len(cores)
    adj = [[1] * n for _ in range(n)]
    for k, c in enumerate(cores):
        adj[k][k] = c.shape[1]
        if k + 1 < n:
            adj[k][k + 1] = adj[k + 1][k] = c.shape[2]
    adj = tuple(tuple(row) for row in adj)
    return Network(tuple(c.transpose(1, 0, 2).reshape(_core_shape(adj, k))
                         for k, c in enumerate(cores)), adj, tuple(range(n)))
