"""Rank selection under a parameter budget: Tucker core shapes and TT bond ranks.

``core_shapes(x, budget)`` picks the Tucker core shape ``(r_1, ..., r_N)`` of a dense
tensor from its multilinear singular values, following Ghadiri, Fahrbach, Fu and
Mirrokni, "Approximately Optimal Core Shapes for Tensor Decompositions" (ICML 2023).
Their *Tucker packing* problem maximizes the energy the truncated HOSVD keeps,

    maximize   sum_k sum_{i <= r_k} s_i^(k)^2
    subject to prod_k r_k + sum_k n_k r_k <= budget,

with ``s^(k)`` the singular values of the mode-``k`` unfolding. Equivalently it
minimizes the sum of discarded tails ``T(r) = sum_k tail_k(r_k)``, which brackets
the best Tucker error with that core shape:

    max_k tail_k(r_k)  <=  min_{Tucker with core r} ||x - t||_F^2  <=  HOSVD error^2  <=  T(r),

so the minimizer of ``T`` is within a factor ``N`` of the best shape's squared error.
The paper solves the packing problem (NP-hard) with an integer program; here an
exact dynamic program over the modes does it: states are partial shapes keyed by
their core product (and largest rank), pruned to the Pareto front of (factor
parameters, discarded energy) and by the budget, so the returned shape is optimal
for the surrogate (tested against brute-force enumeration). ``objective="hosvd"``
minimizes the exact truncated-HOSVD error instead: with the full HOSVD core ``C``
the HOSVD at shape ``r`` keeps ``||C[:r_1, ..., :r_N]||^2``, so one N-dimensional
prefix sum of ``|C|^2`` scores every shape (one HOSVD's cost; no packing bound).
``refine=w`` runs the same exact scoring only in the box of +-w around the DP's shape.

``greedy_core_shapes`` is the paper's baseline: from rank one everywhere, raise the
rank of the mode whose increment most reduces the true Tucker loss (HOOI or HOSVD
at each candidate) while the budget allows. ``tt_ranks`` / ``greedy_tt_ranks`` do the
same for tensor-train bond ranks, with the TT-SVD bound (Oseledets 2011)
``max_k tail_k <= ||x - tt||^2 <= sum_k tail_k`` over the sequential unfoldings and
the TT parameter count ``sum_k r_{k-1} n_k r_k``.

Everything here reads concrete values (data-dependent shapes): call it outside
``jit``. The spectra (those of ``tnlib.tucker.multilinear_singular_values``, and of
the sequential unfoldings for TT) and the search are computed with numpy in float64,
the spectra as eigenvalues of the unfoldings' Gram matrices on their short side.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from tnlib import tt
from tnlib._tucker_ops import check_ranks
from tnlib.search._core_shapes_dp import tt_dp, tucker_dp
from tnlib.search._spectra import leading_vectors as _leading_vectors
from tnlib.search._spectra import squared_spectrum as _squared_spectrum
from tnlib.search._spectra import tails as _tails
from tnlib.search._spectra import tt_tails as _tt_tails
from tnlib.search._spectra import tucker_tails as _tucker_tails
from tnlib.search._spectra import tucker_tails_and_bases as _tucker_tails_and_bases

__all__ = [
    "RankSelection", "core_shapes", "greedy_core_shapes", "tt_ranks", "greedy_tt_ranks",
    "tucker_params", "tt_params", "tucker_surrogate", "tt_surrogate", "tucker_error",
]


@dataclasses.dataclass(frozen=True)
class RankSelection:
    """A chosen rank structure and what is known about its error.

    Attributes:
      ranks: Tucker core shape ``(r_1, ..., r_N)``, or the ``N + 1`` TT bond ranks
        ``(1, r_1, ..., r_{N-1}, 1)`` (as ``TensorTrain.ranks`` reports them).
      params: parameter count of that structure (at most ``budget``).
      budget: the budget it was chosen under.
      rel_error: relative Frobenius error ``||x - approx||_F / ||x||_F``: for the
        spectral methods the predicted upper bound ``sqrt(sum_k tail_k) / ||x||``
        (the HOSVD / TT-SVD error is at most this); for the greedy baselines the
        error their evaluator measured at the chosen ranks.
      rel_error_lower: ``sqrt(max_k tail_k) / ||x||``, a lower bound on the error of
        every decomposition with these ranks.
      evaluations: number of true-loss evaluations (decompositions computed); 0 for
        the spectral methods.
      method: name of the method that chose it.
    """

    ranks: tuple[int, ...]
    params: int
    budget: int
    rel_error: float
    rel_error_lower: float
    evaluations: int
    method: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Alias of ``ranks`` (the Tucker core shape)."""
        return self.ranks


# ----------------------------------------------------------------------------- checks


def _as_array(x, name: str = "x", min_ndim: int = 1) -> np.ndarray:
    """A finite, non-empty float64 / complex128 numpy array with ``>= min_ndim`` axes
    (``x`` itself, not a copy, when it already is one)."""
    try:
        arr = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is a type error
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from e
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                   or arr.dtype == np.bool_
                                   or jnp.issubdtype(arr.dtype, jnp.floating)):  # bfloat16
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axis, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = arr.astype(np.complex128 if np.iscomplexobj(arr) else np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (it has NaN or inf entries)")
    return arr


def _check_budget(budget, minimum: int, what: str) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer):
        raise TypeError(f"budget must be an int (a parameter count), got {budget!r}")
    budget = int(budget)
    if budget < minimum:
        raise ValueError(
            f"budget {budget} is smaller than the smallest possible network: {what} with "
            f"all ranks 1 needs {minimum} parameters"
        )
    return budget


def tucker_params(dims, ranks) -> int:
    """Tucker parameter count ``prod_k r_k + sum_k n_k r_k``."""
    return math.prod(ranks) + sum(n * r for n, r in zip(dims, ranks, strict=True))


def tt_params(dims, ranks) -> int:
    """TT parameter count ``sum_k r_{k-1} n_k r_k`` for ``N + 1`` bond ranks
    ``(r_0, ..., r_N)`` (boundaries included): ``tnlib.tt.num_params`` of an abstract
    train with those core shapes (nothing is allocated)."""
    if len(ranks) != len(dims) + 1:
        raise ValueError(f"ranks must hold {len(dims) + 1} bond ranks, got {ranks}")
    return tt.num_params(tt.TensorTrain(tuple(
        jax.ShapeDtypeStruct((ranks[k], n, ranks[k + 1]), jnp.float32)
        for k, n in enumerate(dims))))


def _rel(value: float, normsq: float) -> float:
    return math.sqrt(max(value, 0.0) / normsq) if normsq > 0 else 0.0


def _bounds(tails, ranks) -> tuple[float, float]:
    parts = [float(t[r]) for t, r in zip(tails, ranks, strict=True)]
    return sum(parts), max(parts, default=0.0)


def tucker_surrogate(x, ranks) -> float:
    """The packing objective's loss ``sum_k tail_k(r_k)`` (discarded squared multilinear
    singular values; an upper bound on the squared HOSVD error) at a core shape."""
    x = _as_array(x)
    tails = _tucker_tails(x)
    ranks = check_ranks(tuple(ranks), x.shape)
    return _bounds(tails, ranks)[0]


def tt_surrogate(x, ranks) -> float:
    """``sum_k tail_k(r_k)`` over the sequential unfoldings for bond ranks
    ``(1, r_1, ..., r_{N-1}, 1)``: an upper bound on the squared TT-SVD error."""
    x = _as_array(x)
    ranks = tuple(ranks)
    if len(ranks) != x.ndim + 1:
        raise ValueError(f"ranks must hold {x.ndim + 1} bond ranks, got {ranks}")
    tails = _tt_tails(x)
    for k, (r, t) in enumerate(zip(ranks[1:-1], tails, strict=True)):
        if not 1 <= r < len(t):
            raise ValueError(f"ranks[{k + 1}] = {r} must be in [1, {len(t) - 1}]")
    return _bounds(tails, ranks[1:-1])[0]


# ---------------------------------------------------------------------- Tucker (DP)


def _caps(dims, budget: int) -> list[int]:
    """Largest usable rank per mode: a mode's rank r alone costs r + n r + sum_{j != k} n_j."""
    return [min(n, math.prod(dims) // n, (budget - sum(dims) + n) // (n + 1)) for n in dims]


def _hosvd_energy_search(x, dims, budget: int, consistent: bool, bases=None,
                         low=None) -> tuple[tuple, float]:
    """Shape with the smallest exact HOSVD error under the budget, by enumeration.

    With the full HOSVD core ``C = x x_k U_k^H`` (all singular vectors), the HOSVD at
    shape ``r`` keeps ``||C[:r_1, ..., :r_N]||^2``: a prefix sum of ``|C|^2``, so one
    N-dimensional cumulative sum scores every shape at once (``O(prod_k n_k)``; the
    grid is first cut to the ranks the budget allows on each mode). ``bases`` (leading
    singular vectors per mode, ``c_k`` columns) and ``low`` restrict the search to the
    box ``low_k <= r_k <= c_k`` (a local search: the projection is cheap when the
    ``c_k`` are small)."""
    if bases is None:
        caps = _caps(dims, budget)
        bases = [_leading_vectors(np.moveaxis(x, k, 0).reshape(dims[k], -1), caps[k])
                 for k in range(x.ndim)]
    caps = [b.shape[1] for b in bases]
    low = [1] * len(dims) if low is None else low
    core = _project(x, bases)
    kept = np.abs(core) ** 2
    for k in range(x.ndim):
        kept = np.cumsum(kept, axis=k)
    kept = kept[tuple(slice(lo - 1, None) for lo in low)]
    grids = np.meshgrid(*(np.arange(lo, c + 1) for lo, c in zip(low, caps, strict=True)),
                        indexing="ij", sparse=True)
    prod, linear, largest = 1, 0, 1
    for g, n in zip(grids, dims, strict=True):
        prod, linear, largest = prod * g, linear + n * g, np.maximum(largest, g)
    params = np.broadcast_to(prod + linear, kept.shape)
    ok = params <= budget
    if consistent:
        ok &= largest * largest <= prod
    normsq = float(np.vdot(x, x).real)
    loss = np.where(ok, normsq - kept, np.inf)
    ties = np.flatnonzero(loss == loss.min())
    index = np.unravel_index(ties[np.argmin(params.ravel()[ties])], kept.shape)
    return (tuple(int(i) + lo for i, lo in zip(index, low, strict=True)),
            max(float(loss[index]), 0.0))


def core_shapes(x, budget: int, *, objective: str = "surrogate",
                consistent: bool = True, refine: int = 0) -> RankSelection:
    """Tucker core shape of ``x`` under a parameter budget, from its multilinear
    singular values (Ghadiri et al. 2023's Tucker packing, solved exactly).

    With ``objective="surrogate"`` (the paper's), returns the shape minimizing
    ``sum_k tail_k(r_k)`` (the discarded squared singular values of the mode-``k``
    unfoldings, an upper bound on the squared HOSVD error) subject to
    ``prod_k r_k + sum_k n_k r_k <= budget`` and ``r_k <= min(n_k, prod_{j != k} n_j)``;
    ties go to the fewer parameters. Cost: one Gram eigendecomposition per unfolding
    plus a dynamic program over the modes (no decompositions). With
    ``objective="hosvd"`` it minimizes the exact truncated-HOSVD error instead, over
    every feasible shape at once (prefix sums of the full HOSVD core's energy; one
    HOSVD's cost and ``O(prod_k n_k)`` memory).

    Args:
      x: dense tensor with ``N >= 1`` axes (real or complex; concrete, outside jit).
      budget: parameter budget (int), at least ``1 + sum_k n_k`` (all ranks 1).
      objective: ``"surrogate"`` (default) or ``"hosvd"``.
      consistent: keep only shapes with ``r_k <= prod_{j != k} r_j`` (a core mode
        larger than the product of the others cannot be used; default True).
      refine: with ``"surrogate"``, ``refine = w > 0`` then moves to the shape with the
        smallest exact HOSVD error in the box ``r_k - w <= r'_k <= r_k + w`` around the
        DP's shape (same budget and constraints; singular vectors from the same Gram
        eigendecompositions, one projection onto ``r_k + w`` of them per mode: a
        local, cheap version of ``"hosvd"``). Default 0: the DP's shape.

    Returns:
      ``RankSelection`` with ``ranks`` the core shape; ``rel_error`` is the predicted
      relative error bound ``sqrt(sum_k tail_k) / ||x||`` (``"surrogate"``) or the
      HOSVD's relative error (``"hosvd"``, or ``refine > 0``); ``rel_error_lower`` is
      ``sqrt(max_k tail_k) / ||x||`` (no Tucker with that shape does better).
      Energies are exact to ``~eps * ||x||^2``.
    """
    x = _as_array(x)
    dims = x.shape
    budget = _check_budget(budget, 1 + sum(dims), f"a Tucker decomposition of a {dims} tensor")
    if objective not in ("surrogate", "hosvd"):
        raise ValueError(f"objective must be 'surrogate' or 'hosvd', got {objective!r}")
    if isinstance(refine, bool) or not isinstance(refine, int | np.integer) or refine < 0:
        raise ValueError(f"refine must be an int >= 0, got {refine!r}")
    if refine and objective != "surrogate":
        raise ValueError("refine applies to objective='surrogate' only")
    caps = _caps(dims, budget)
    if refine:  # the DP needs only the tails; the refinement, leading vectors as well
        tails, bases = _tucker_tails_and_bases(x, [max(c, 1) for c in caps])
    else:
        tails = _tucker_tails(x)
    normsq = float(tails[0][0])
    if objective == "hosvd":
        ranks, total = _hosvd_energy_search(x, dims, budget, consistent)
    else:
        ranks = tucker_dp(dims, tails, budget, consistent)
        total = _bounds(tails, ranks)[0]
        if refine:
            top = [min(r + refine, c, b.shape[1]) for r, c, b in zip(ranks, caps, bases,
                                                                     strict=True)]
            ranks, total = _hosvd_energy_search(
                x, dims, budget, consistent, [b[:, :t] for b, t in zip(bases, top, strict=True)],
                [max(r - refine, 1) for r in ranks])
    worst = _bounds(tails, ranks)[1]
    method = f"core_shapes_{objective}" + (f"_refine{refine}" if refine else "")
    return RankSelection(ranks, tucker_params(dims, ranks), budget, _rel(total, normsq),
                         _rel(worst, normsq), 0, method)


# ----------------------------------------------------------------- Tucker (greedy)


def _project(x: np.ndarray, factors, skip: int | None = None) -> np.ndarray:
    """``x x_k factors[k]^H`` over every mode except ``skip`` (most shrinking first)."""
    order = sorted((k for k in range(x.ndim) if k != skip),
                   key=lambda k: factors[k].shape[1] / factors[k].shape[0])
    for k in order:
        x = np.moveaxis(np.tensordot(factors[k].conj().T, x, axes=(1, k)), 0, k)
    return x


def _tucker_factors(x, bases, ranks, n_iter: int) -> list[np.ndarray]:
    """Factors of the HOSVD (``n_iter = 0``) or of ``n_iter`` HOOI sweeps from it at
    ``ranks``; ``bases[k]`` are the left singular vectors of unfolding ``k``."""
    factors = [b[:, :r] for b, r in zip(bases, ranks, strict=True)]
    for _ in range(n_iter):
        for k in range(x.ndim):
            y = np.moveaxis(_project(x, factors, skip=k), k, 0).reshape(x.shape[k], -1)
            factors[k] = _leading_vectors(y, ranks[k])
    return factors


def _tucker_loss(x, normsq, bases, ranks, n_iter: int) -> float:
    """Squared error ``||x||^2 - ||core||^2`` (orthonormal factors) at ``ranks``."""
    core = _project(x, _tucker_factors(x, bases, ranks, n_iter))
    return max(normsq - float(np.vdot(core, core).real), 0.0)


def _tucker_residual(x, bases, ranks, n_iter: int) -> float:
    """``||x - core x_k U_k||_F^2`` formed explicitly (no cancellation near 0)."""
    factors = _tucker_factors(x, bases, ranks, n_iter)
    approx = _project(x, factors)
    for k, f in enumerate(factors):
        approx = np.moveaxis(np.tensordot(f, approx, axes=(1, k)), 0, k)
    diff = (x - approx).ravel()
    return float(np.vdot(diff, diff).real)


def tucker_error(x, ranks, n_iter: int = 0) -> float:
    """Relative error ``||x - t||_F / ||x||_F`` of the truncated HOSVD (``n_iter=0``) or
    of ``n_iter`` HOOI sweeps from it at core shape ``ranks`` (numpy, float64, the
    reconstruction formed: no cancellation near 0). The numpy twin of
    ``tnlib.tucker.hosvd`` / ``hooi`` for rank studies on large tensors."""
    x = _as_array(x)
    ranks = check_ranks(tuple(ranks), x.shape)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be an int >= 0, got {n_iter!r}")
    bases = [_leading_vectors(np.moveaxis(x, k, 0).reshape(x.shape[k], -1), r)
             for k, r in enumerate(ranks)]
    return _rel(_tucker_residual(x, bases, ranks, n_iter), float(np.vdot(x, x).real))


def greedy_core_shapes(x, budget: int, *, method: str = "hooi", n_iter: int = 2
                       ) -> RankSelection:
    """Greedy baseline: grow the core shape one rank at a time by the true Tucker loss.

    From ranks ``(1, ..., 1)``, every step evaluates each single-mode increment that
    keeps ``prod r + sum n_k r_k <= budget`` (and ``r_k <= min(n_k, prod_{j != k} n_j)``),
    computing its decomposition, and keeps the one with the smallest squared error
    (ties: the fewest parameters); it stops when no increment fits. ``evaluations``
    counts the decompositions computed: ``O(N)`` per step, each a HOOI, so this is far
    slower than ``core_shapes``.

    Args:
      x: dense tensor with ``N >= 1`` axes (concrete).
      budget: parameter budget (int), at least ``1 + sum_k n_k``.
      method: ``"hooi"`` (``n_iter`` sweeps of higher-order orthogonal iteration from
        the HOSVD, as ``tnlib.tucker.hooi``) or ``"hosvd"`` (truncated HOSVD).
      n_iter: HOOI sweeps per evaluation (int >= 1; ignored for ``"hosvd"``).

    Returns:
      ``RankSelection``; ``rel_error`` is the measured relative error at the result.
    """
    x = _as_array(x)
    dims = x.shape
    budget = _check_budget(budget, 1 + sum(dims), f"a Tucker decomposition of a {dims} tensor")
    if method not in ("hooi", "hosvd"):
        raise ValueError(f"method must be 'hooi' or 'hosvd', got {method!r}")
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1, got {n_iter!r}")
    sweeps = n_iter if method == "hooi" else 0
    bases, tails = [], []
    for k in range(x.ndim):
        unfolding = np.moveaxis(x, k, 0).reshape(dims[k], -1)
        bases.append(_leading_vectors(unfolding, min(unfolding.shape)))
        tails.append(_tails(_squared_spectrum(unfolding)))
    normsq = float(tails[0][0])
    ranks = [1] * x.ndim
    evaluations = 0
    while True:
        best = None
        for k in range(x.ndim):
            trial = ranks.copy()
            trial[k] += 1
            if trial[k] >= len(tails[k]) or tucker_params(dims, trial) > budget:
                continue
            value = _tucker_loss(x, normsq, bases, trial, sweeps)
            evaluations += 1
            score = (value, tucker_params(dims, trial))
            if best is None or score < best[0]:
                best = (score, trial)
        if best is None:
            break
        ranks = best[1]
    loss = _tucker_residual(x, bases, ranks, sweeps)
    worst = _bounds(tails, ranks)[1]
    return RankSelection(tuple(ranks), tucker_params(dims, ranks), budget, _rel(loss, normsq),
                         _rel(worst, normsq), evaluations, f"greedy_{method}")


# ------------------------------------------------------------------------------- TT


def tt_ranks(x, budget: int) -> RankSelection:
    """TT bond ranks of ``x`` under a parameter budget, from the singular values of its
    sequential unfoldings (the ``core_shapes`` idea for tensor trains).

    Minimizes ``sum_k tail_k(r_k)`` (discarded squared singular values of the
    unfolding ``(n_1...n_k) x (n_{k+1}...n_N)``; an upper bound on the squared TT-SVD
    error) subject to ``sum_k r_{k-1} n_k r_k <= budget`` over consistent ranks
    (``r_k <= r_{k-1} n_k``, ``r_{k-1} <= n_k r_k``), exactly, by a dynamic program
    along the chain.

    Args:
      x: dense tensor with ``N >= 1`` axes (concrete).
      budget: parameter budget (int), at least ``sum_k n_k`` (all ranks 1).

    Returns:
      ``RankSelection`` with ``ranks = (1, r_1, ..., r_{N-1}, 1)``.
    """
    x = _as_array(x)
    dims = x.shape
    budget = _check_budget(budget, sum(dims), f"a tensor train of a {dims} tensor")
    tails = _tt_tails(x)
    normsq = float(np.vdot(x, x).real)
    ranks = tt_dp(dims, tails, budget)
    total, worst = _bounds(tails, ranks[1:-1])
    return RankSelection(ranks, tt_params(dims, ranks), budget, _rel(total, normsq),
                         _rel(worst, normsq), 0, "tt_ranks")


def _tt_svd_loss(x: np.ndarray, ranks) -> float:
    """Squared error of the TT-SVD of ``x`` truncated to the bond ranks ``ranks``."""
    discarded, rest, r = 0.0, x.reshape(x.shape[0], -1), 1
    for k in range(x.ndim - 1):
        u, s, vh = np.linalg.svd(rest, full_matrices=False)
        keep = min(ranks[k + 1], s.size)
        discarded += float(np.sum(np.abs(s[keep:]) ** 2))
        r = keep
        rest = (s[:keep, None] * vh[:keep]).reshape(r * x.shape[k + 1], -1)
    return discarded


def greedy_tt_ranks(x, budget: int) -> RankSelection:
    """Greedy baseline for ``tt_ranks``: from all bonds 1, repeatedly raise the bond
    whose increment gives the smallest true TT-SVD error (ties: fewest parameters),
    over consistent increments that fit ``sum_k r_{k-1} n_k r_k <= budget``.

    Each evaluation is a full TT-SVD (``O(N)`` per step). ``rel_error`` is the
    measured TT-SVD error at the result."""
    x = _as_array(x)
    dims = x.shape
    budget = _check_budget(budget, sum(dims), f"a tensor train of a {dims} tensor")
    tails = _tt_tails(x)
    normsq = float(np.vdot(x, x).real)
    ranks = [1] * (x.ndim + 1)
    evaluations = 0
    while True:
        best = None
        for k in range(1, x.ndim):
            trial = ranks.copy()
            trial[k] += 1
            if (trial[k] >= len(tails[k - 1]) or trial[k] > trial[k - 1] * dims[k - 1]
                    or trial[k] > dims[k] * trial[k + 1]
                    or tt_params(dims, trial) > budget):
                continue
            value = _tt_svd_loss(x, trial)
            evaluations += 1
            score = (value, tt_params(dims, trial))
            if best is None or score < best[0]:
                best = (score, trial)
        if best is None:
            break
        ranks = best[1]
    loss = _tt_svd_loss(x, ranks)
    worst = _bounds(tails, ranks[1:-1])[1]
    return RankSelection(tuple(ranks), tt_params(dims, ranks), budget, _rel(loss, normsq),
                         _rel(worst, normsq), evaluations, "greedy_tt")

