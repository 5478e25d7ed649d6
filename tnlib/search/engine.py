"""The evaluation engine: a search problem, its objective, and batched masked fitting.

A :class:`Problem` pairs a :class:`~tnlib.search.space.SearchSpace` with a target (a
dense tensor, or any differentiable ``loss(network)`` over a network's cores) and the
objective of TNGA / TNLS / TnALE,

    objective(s) = num_params(s) / size + lam * RSE(s),

``size = prod(dims)`` and ``RSE = ||x - fit||^2 / ||x||^2`` the relative squared error
of the fitted network (for a loss problem, the loss value replaces the RSE).

Batched masked fitting. Every candidate of a space is embedded in one *padded*
network: the support graph with every edge at ``max_rank`` (and, when the permutation
is searched, every mode padded to the largest size). A candidate is a set of masks
(``1`` on the first ``r_e`` slices of bond ``e``, ``0`` beyond); the cores are
multiplied by their masks, so the padded network represents *exactly* the smaller one
(:func:`mask` / :func:`unpad` / :func:`pad`). Fitting (masked ALS by default: each
core is the solution of its normal equations restricted to the unmasked entries; or
masked Adam) runs a whole batch of candidates, each with a few random restarts, in one
jitted ``vmap`` call. Batches are padded to power-of-two buckets (at most
``max_batch``), so a search compiles once per bucket and never again. The sequential
mode fits the same function one candidate at a time (for comparison); both modes draw
candidate ``i``'s start from ``fold_in(key, i)``, so they agree up to rounding.

:class:`Evaluator` counts evaluations exactly (a structure seen before is answered from
its cache and not counted; infeasible ones are not fitted; an explicit
:meth:`Evaluator.refit` from fresh starts is a new, counted evaluation), keeps a log of
every evaluation (structure, parameters, objective, RSE, wall time) and the fitted
cores of each, and stops at ``max_evals``. The padded layout and the jitted fitting
kernels live in :mod:`tnlib.search._fit`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnlib._validate import as_key
from tnlib.network import Network
from tnlib.search._fit import bucket, core_masks, fitter, layout
from tnlib.search.space import SearchSpace, Structure, check_structure, search_space

__all__ = [
    "FitConfig", "Problem", "problem", "objective", "Evaluation", "EvalRecord",
    "SearchResult", "Evaluator", "padded_adjacency", "pad", "mask", "unpad",
]


class FitConfig(NamedTuple):
    """How a candidate is fitted.

    ``method``: ``"als"`` (masked alternating least squares; needs a dense target) or
    ``"adam"`` (masked gradient descent). ``n_iter``: ALS sweeps or Adam steps.
    ``restarts``: random starts per candidate (the best is kept). ``ridge``: relative
    ridge of the ALS normal equations (None: 1e-10 in float64, 1e-6 in float32).
    ``optimizer``: the optax ``GradientTransformation`` of ``"adam"`` fits (None:
    ``optax.adam(learning_rate, eps=1e-12)``); fits are cached per config, so reuse
    one optimizer object across calls.
    """

    method: str = "als"
    n_iter: int = 30
    restarts: int = 2
    learning_rate: float = 0.02
    ridge: float | None = None
    optimizer: optax.GradientTransformation | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A search problem: the space, a dense ``target`` or a ``loss``, ``lam`` and the fit."""

    space: SearchSpace
    target: Any
    loss: Callable | None
    lam: float
    fit: FitConfig


def objective(n_params: int, size: int, rse, lam: float):
    """``n_params / size + lam * rse``: the TNGA / TNLS / TnALE objective.

    ``n_params`` (int >= 0) and ``size`` (int >= 1) are counts; ``lam`` must be >= 0.
    """
    for name, v, low in (("n_params", n_params, 0), ("size", size, 1)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if isinstance(lam, int | float | np.number) and not lam >= 0:
        raise ValueError(f"lam must be a number >= 0, got {lam!r}")
    return n_params / size + lam * rse


def problem(target=None, *, max_rank: int, loss: Callable | None = None, dims=None,
            edges="all", support=None, perm=None, search_perm: bool = False,
            max_params: int | None = None, lam: float = 10.0, method: str | None = None,
            n_iter: int | None = None, restarts: int = 2, learning_rate: float = 0.02,
            ridge: float | None = None, dtype=None,
            optimizer: optax.GradientTransformation | None = None) -> Problem:
    """A validated :class:`Problem`.

    Give either ``target`` (a dense tensor; its shape gives ``dims``) or ``loss``
    (``loss(net) -> scalar`` for a :class:`tnlib.network.Network` ``net``, differentiable
    in its cores; then ``dims`` is required, the permutation is not searched, and the
    fit is masked Adam on the loss). The search space arguments are those of
    :func:`~tnlib.search.space.search_space`. ``method`` defaults to ``"als"`` for a
    target and ``"adam"`` for a loss; ``n_iter`` to 30 ALS sweeps or 500 Adam steps.
    ``dtype`` casts the target (default: its own floating dtype; integers become
    the default float). The fits are real (float32 / float64): a complex target or
    ``dtype`` is a TypeError, a half-precision one (bfloat16, float16) is fitted in
    float32 (XLA has no half-precision linear solves), a non-finite target a ValueError.
    """
    if (target is None) == (loss is None):
        raise ValueError("give exactly one of target (a dense tensor) and loss (a callable)")
    if target is not None:
        target = jnp.asarray(target)
        if jnp.issubdtype(target.dtype, jnp.complexfloating):
            raise TypeError(f"target must be real (the fits are real), got dtype "
                            f"{target.dtype}")
        if dtype is not None:
            if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
                raise TypeError(f"dtype must be a real floating dtype (the fits are real), "
                                f"got {jnp.dtype(dtype)}")
            target = target.astype(dtype)
        elif not jnp.issubdtype(target.dtype, jnp.floating):
            target = target.astype(jnp.result_type(float))
        if jnp.finfo(target.dtype).bits < 32:
            target = target.astype(jnp.float32)
        if not bool(jnp.all(jnp.isfinite(target))):
            raise ValueError("target must be finite (it has NaN or inf entries)")
        if dims is not None and tuple(dims) != tuple(target.shape):
            raise ValueError(f"dims {tuple(dims)} do not match the target's shape "
                             f"{tuple(target.shape)}")
        dims = tuple(target.shape)
    else:
        if not callable(loss):
            raise TypeError(f"loss must be callable, got {type(loss).__name__}")
        if dims is None:
            raise ValueError("a loss problem needs dims (the mode sizes of the network)")
        if search_perm:
            raise ValueError("search_perm needs a dense target; a loss problem fixes perm")
    space = search_space(dims, max_rank, edges=edges, support=support, perm=perm,
                         search_perm=search_perm, max_params=max_params)
    method = method or ("als" if loss is None else "adam")
    if method not in ("als", "adam"):
        raise ValueError(f"method must be 'als' or 'adam', got {method!r}")
    if method == "als" and loss is not None:
        raise ValueError("method='als' needs a dense target; use method='adam' with a loss")
    n_iter = (30 if method == "als" else 500) if n_iter is None else n_iter
    for name, v in (("n_iter", n_iter), ("restarts", restarts)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "n_iter" else 1):
            raise ValueError(f"{name} must be an int >= {0 if name == 'n_iter' else 1}, got {v!r}")
    if not (isinstance(lam, int | float) and lam >= 0):
        raise ValueError(f"lam must be a number >= 0, got {lam!r}")
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float) or \
            not learning_rate > 0:
        raise ValueError(f"learning_rate must be a number > 0, got {learning_rate!r}")
    if ridge is not None and (isinstance(ridge, bool) or not isinstance(ridge, int | float)
                              or not ridge >= 0):
        raise ValueError(f"ridge must be None or a number >= 0, got {ridge!r}")
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax GradientTransformation, got "
                        f"{type(optimizer).__name__}")
    return Problem(space, target, loss, float(lam),
                   FitConfig(method, n_iter, restarts, float(learning_rate), ridge, optimizer))


# ------------------------------------------------------------------ padded layout


def _check_space(space) -> SearchSpace:
    if not isinstance(space, SearchSpace):
        raise TypeError(f"space must be a tnlib.search.SearchSpace (see search_space), got "
                        f"{type(space).__name__}")
    return space


def padded_adjacency(space: SearchSpace) -> tuple[tuple[int, ...], ...]:
    """Structure matrix of the padded network: every support edge at ``max_rank``."""
    return layout(_check_space(space)).adjacency


def _masks_np(space: SearchSpace, s: Structure) -> tuple[np.ndarray, np.ndarray]:
    """Edge masks ``(E, max_rank)`` and mode masks ``(N, max padded size)`` of ``s``."""
    lay = layout(space)
    em = np.zeros((lay.n_edges, lay.max_rank))
    for e, r in enumerate(s.ranks):
        em[e, :r] = 1
    pm = np.zeros((space.n_nodes, max(lay.node_dims)))
    for k, d in enumerate(space.node_dims(s.perm)):
        pm[k, :d] = 1
    return em, pm


def _check_padded(space: SearchSpace, cores, name: str = "cores") -> tuple:
    """``cores`` as a tuple of arrays with the padded layout's shapes, or ValueError."""
    lay = layout(space)
    shapes = tuple((d,) + (lay.max_rank,) * len(inc)
                   for d, inc in zip(lay.node_dims, lay.incident, strict=True))
    cores = tuple(cores)
    got = tuple(tuple(jnp.shape(c)) for c in cores)
    if got != shapes:
        raise ValueError(f"{name} must be the padded cores of the search space, shapes "
                         f"{shapes}, got {got}")
    return cores


def mask(space: SearchSpace, s: Structure, cores) -> tuple:
    """Padded cores multiplied by the masks of ``s``: the padded network then equals
    ``unpad(space, s, cores)`` exactly."""
    s = check_structure(_check_space(space), s, "s")
    cores = _check_padded(space, cores)
    em, pm = _masks_np(space, s)
    ms = core_masks(layout(space), em, pm)
    return tuple(c * m.astype(c.dtype) for c, m in zip(cores, ms, strict=True))


def unpad(space: SearchSpace, s: Structure, cores) -> Network:
    """The :class:`~tnlib.network.Network` of structure ``s`` held in padded ``cores``
    (their leading slices; rank-one bonds dropped)."""
    s = check_structure(_check_space(space), s, "s")
    cores = _check_padded(space, cores)
    lay = layout(space)
    out = []
    for k, c in enumerate(cores):
        idx = [slice(0, space.dims[s.perm[k]])]
        for e in lay.incident[k]:
            r = s.ranks[e]
            idx.append(slice(0, r) if r > 1 else 0)
        out.append(jnp.asarray(c)[tuple(idx)])
    return Network(tuple(out), space.adjacency(s), tuple(s.perm))


def pad(space: SearchSpace, net: Network) -> tuple:
    """Padded cores (zeros beyond the network's ranks and sizes) holding ``net``."""
    if not isinstance(net, Network):
        raise TypeError(f"net must be a tnlib.network.Network, got {type(net).__name__}")
    s = _check_space(space).structure(net.adjacency, net.perm, "net")
    lay = layout(space)
    out = []
    for k, c in enumerate(net.cores):
        shape = (lay.node_dims[k],) + (lay.max_rank,) * len(lay.incident[k])
        c = jnp.asarray(c)
        for ax, e in enumerate(lay.incident[k]):
            if s.ranks[e] == 1:
                c = jnp.expand_dims(c, ax + 1)
        widths = [(0, t - d) for t, d in zip(shape, c.shape, strict=True)]
        out.append(jnp.pad(c, widths))
    return tuple(out)


def _target_for(space: SearchSpace, x, perm):
    """``x`` with node ``k`` carrying mode ``perm[k]``, zero-padded to the layout."""
    lay = layout(space)
    xt = jnp.transpose(x, perm)
    return jnp.pad(xt, [(0, t - d) for t, d in zip(lay.node_dims, xt.shape, strict=True)])


# --------------------------------------------------------------------- evaluator


class Evaluation(NamedTuple):
    """One answered candidate: ``index`` is its evaluation number (-1: infeasible,
    not fitted); ``cores`` the fitted padded cores (host arrays; None when infeasible)."""

    structure: Structure
    objective: float
    rse: float
    n_params: int
    index: int
    cores: tuple | None


class EvalRecord(NamedTuple):
    """A log line: evaluation number, structure, parameters, objective, RSE, wall time
    (seconds, the batch's time shared among its candidates; the first batch of each
    size includes compilation) and the batch number."""

    index: int
    structure: Structure
    n_params: int
    objective: float
    rse: float
    wall_s: float
    batch: int


class SearchResult(NamedTuple):
    """What every search returns: the best structure (lowest objective; earliest on
    ties), its adjacency matrix, its fitted :class:`~tnlib.network.Network`, objective,
    RSE and parameter count, the number of evaluations and their log."""

    algorithm: str
    structure: Structure
    adjacency: tuple
    network: Network
    objective: float
    rse: float
    n_params: int
    n_evals: int
    log: tuple[EvalRecord, ...]


class Evaluator:
    """Fits and scores candidate structures of ``problem``; counts and logs them.

    Args:
      problem: the :class:`Problem`.
      key: PRNG key (or int seed); candidate ``i`` starts from ``fold_in(key, i)``.
      batched: one jitted vmapped call per batch (True) or one call per candidate.
      max_evals: budget of evaluations (None: unlimited); ``exhausted`` turns True
        when it is reached and further candidates are left unanswered (None).
      max_batch: the largest batch; larger requests are split.
      min_batch: the smallest bucket: batches are padded to the next power of two in
        ``[min_batch, max_batch]`` (so at most ``log2(max_batch / min_batch) + 2``
        compilations, however many generations run; cold and warm starts share them).
      replay: ``(EvalRecord, cores)`` pairs of an earlier run with the same problem and
        key: a structure found there is answered from it (counted and logged as the
        evaluation it was, not refitted; a structure fitted ``m`` times there answers
        its first ``m`` fits in order), so a deterministic search resumes where it
        stopped.
      on_batch: called as ``on_batch(evaluator)`` after every fitted batch (to save
        the state).

    State: ``count`` (evaluations so far), ``log`` (one :class:`EvalRecord` each),
    ``fits`` (the fitted padded cores of evaluation ``i`` at ``fits[i]``), ``cache``
    (the best fit per structure) and ``best``.
    """

    def __init__(self, problem: Problem, key, *, batched: bool = True,
                 max_evals: int | None = None, max_batch: int = 64, min_batch: int = 1,
                 replay=None, on_batch: Callable | None = None):
        if not isinstance(problem, Problem):
            raise TypeError(f"problem must be a tnlib.search.Problem, got {type(problem).__name__}")
        if max_evals is not None and (isinstance(max_evals, bool) or
                                      not isinstance(max_evals, int) or max_evals < 1):
            raise ValueError(f"max_evals must be an int >= 1 or None, got {max_evals!r}")
        self.problem = problem
        self.space = problem.space
        self.key = as_key(key)
        self.batched = batched
        self.max_evals = max_evals
        if not 1 <= min_batch <= max_batch:
            raise ValueError(f"need 1 <= min_batch <= max_batch, got {min_batch}, {max_batch}")
        self.max_batch = max_batch
        self.min_batch = min_batch
        self.count = 0
        self.n_batches = 0
        self.log: list[EvalRecord] = []
        self.cache: dict[Structure, Evaluation] = {}
        self.best: Evaluation | None = None
        self._lay = layout(self.space)
        self._x = None  # the padded target, once
        self.fits: list[tuple] = []  # the fitted cores of every evaluation, by index
        self._replay: dict[Structure, list] = {}
        for rec, cores in sorted(replay or (), key=lambda rc: rc[0].index):
            self._replay.setdefault(rec.structure, []).append((rec, cores))
        self.on_batch = on_batch

    @property
    def exhausted(self) -> bool:
        return self.max_evals is not None and self.count >= self.max_evals

    def lookup(self, s: Structure) -> Evaluation | None:
        return self.cache.get(s)

    def evaluate(self, structures: Sequence[Structure], init: Sequence | None = None
                 ) -> list[Evaluation | None]:
        """Evaluate ``structures`` (in order; duplicates and cached ones are free).

        ``init``: optional padded cores per structure to warm-start from (entries that
        are exactly zero, the slices a larger rank opens, start from small noise).
        Returns one :class:`Evaluation` per structure, None for those left over when
        the budget ran out.
        """
        structures = [check_structure(self.space, s, "structures") for s in structures]
        if init is not None:
            if len(init) != len(structures):
                raise ValueError(f"init must hold one set of padded cores per structure "
                                 f"({len(structures)}), got {len(init)}")
            init = [_check_padded(self.space, c, "init") for c in init]
        todo, todo_init = [], []
        for i, s in enumerate(structures):
            if s in self.cache or s in todo:
                continue
            if not self.space.feasible(s):
                self.cache[s] = Evaluation(s, math.inf, math.inf, self.space.num_params(s),
                                           -1, None)
                continue
            if self.max_evals is not None and self.count + len(todo) >= self.max_evals:
                break
            todo.append(s)
            todo_init.append(None if init is None else init[i])
        self._fit_all(todo, None if init is None else todo_init)
        return [self.cache.get(s) for s in structures]

    def refit(self, structures: Sequence[Structure]) -> list[Evaluation | None]:
        """Fit ``structures`` again from fresh random starts (evaluation ``i`` starts
        from ``fold_in(key, i)``, so a refit never repeats an earlier start).

        A fit is random and can miss; a search that suspects it (TnALE when a sweep
        stalls) asks for another. Each refit is a new evaluation: counted, logged and
        bounded by ``max_evals``. The cache then answers the better of the fits (lower
        objective; the earlier on ties). Structures never evaluated or infeasible are
        skipped (use :meth:`evaluate`). Returns the cached (best) Evaluation per
        structure, None for those not refitted because the budget ran out.
        """
        structures = [check_structure(self.space, s, "structures") for s in structures]
        todo = []
        for s in structures:
            e = self.cache.get(s)
            if e is None or e.index < 0 or s in todo:
                continue
            if self.max_evals is not None and self.count + len(todo) >= self.max_evals:
                break
            todo.append(s)
        self._fit_all(todo, None)
        done = set(todo)
        return [self.cache[s] if s in done else None for s in structures]

    def _fit_all(self, todo: list[Structure], todo_init) -> None:
        """Fit ``todo`` (answering from the replay what it holds) in batches."""
        fresh, fresh_init = [], []
        for j, s in enumerate(todo):
            if self._replay.get(s):
                rec, cores = self._replay[s].pop(0)
                self._record(s, rec.rse, tuple(cores), rec.wall_s, rec.batch)
            else:
                fresh.append(s)
                fresh_init.append(None if todo_init is None else todo_init[j])
        step = self.max_batch if self.batched else 1
        for start in range(0, len(fresh), step):
            self._run(fresh[start:start + step],
                      None if todo_init is None else fresh_init[start:start + step])

    def _run(self, batch: list[Structure], init) -> None:
        sp, prob = self.space, self.problem
        n_real = len(batch)
        masks = [_masks_np(sp, s) for s in batch]
        index = np.arange(self.count, self.count + n_real, dtype=np.int32)
        shared = prob.target is None or not sp.search_perm
        if prob.target is None:
            xs = None
        elif shared:
            if self._x is None:
                self._x = _target_for(sp, prob.target, sp.perm)
            xs = self._x
        else:
            xs = np.stack([np.asarray(_target_for(sp, prob.target, s.perm)) for s in batch])
        dt = np.dtype(prob.target.dtype if prob.target is not None
                      else jnp.result_type(float))
        # host arrays: the candidates' masks, starts and keys (one transfer per call)
        em = np.stack([m[0] for m in masks]).astype(dt)
        pm = np.stack([m[1] for m in masks]).astype(dt)
        lay = self._lay
        shapes = [(d,) + (lay.max_rank,) * len(inc)
                  for d, inc in zip(lay.node_dims, lay.incident, strict=True)]
        if init is None:
            ini = tuple(np.zeros((n_real,) + sh, dt) for sh in shapes)
            scale = np.ones(n_real, dt)
        else:
            ini = tuple(np.stack([np.asarray(c[k], dt) for c in init]) for k in range(sp.n_nodes))
            scale = np.full(n_real, 0.1, dt)
        t0 = time.perf_counter()
        if self.batched:
            size = bucket(n_real, self.min_batch, self.max_batch)

            def padb(a):
                return np.concatenate([a, np.repeat(a[-1:], size - n_real, axis=0)])

            f = fitter(self._lay, prob.fit, prob.loss, True, shared)
            cores, errs = f(xs if shared else padb(xs), padb(em), padb(pm), self.key,
                            padb(index), tuple(padb(c) for c in ini), padb(scale))
            cores, errs = jax.device_get((cores, errs))
            per = [(tuple(c[i] for c in cores), float(errs[i])) for i in range(n_real)]
        else:
            f = fitter(self._lay, prob.fit, prob.loss, False, True)
            per = []
            for i in range(n_real):
                out = f(xs if shared else xs[i], em[i], pm[i], self.key, index[i],
                        tuple(c[i] for c in ini), scale[i])
                cs, err = jax.device_get(out)
                per.append((tuple(cs), float(err)))
        wall = (time.perf_counter() - t0) / n_real
        batch_id = max([self.n_batches] + [r.batch + 1 for r in self.log])
        for s, (cs, err) in zip(batch, per, strict=True):
            self._record(s, err, cs, wall, batch_id)
        self.n_batches = batch_id + 1
        if self.on_batch is not None:
            self.on_batch(self)

    def _record(self, s: Structure, err: float, cs, wall: float, batch_id: int) -> None:
        n_params = self.space.num_params(s)
        obj = objective(n_params, self.space.size, err, self.problem.lam)
        ev = Evaluation(s, obj, err, n_params, self.count, cs)
        old = self.cache.get(s)
        if old is None or old.index < 0 or obj < old.objective:
            self.cache[s] = ev
        self.log.append(EvalRecord(self.count, s, n_params, obj, err, wall, batch_id))
        self.fits.append(cs)
        self.count += 1
        if self.best is None or obj < self.best.objective:
            self.best = ev

    def result(self, algorithm: str) -> SearchResult:
        """The :class:`SearchResult` of everything evaluated so far."""
        b = self.best
        if b is None:
            raise ValueError("nothing was evaluated (every candidate was infeasible under "
                             f"max_params={self.space.max_params})")
        net = unpad(self.space, b.structure, b.cores)
        return SearchResult(algorithm, b.structure, self.space.adjacency(b.structure), net,
                            b.objective, b.rse, b.n_params, self.count, tuple(self.log))
