"""tnlib.search.core_shapes: Tucker core shapes and TT ranks under a parameter budget.

Planted structures are recovered when the budget allows exactly them; the DP is
optimal for its surrogate (brute-force enumeration with independently computed
spectra); budgets are respected; reported errors match dense decompositions
(tnlib.tucker) and sit between the spectral bounds; bad input raises."""

import importlib
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tnlib import tucker
from tnlib.search import _spectra

# the module, not the function tnlib.search.core_shapes that the package re-exports
cs = importlib.import_module("tnlib.search.core_shapes")


def planted_tucker(dims, ranks, seed, noise=0.0, complex_=False):
    rng = np.random.default_rng(seed)

    def gauss(*shape):
        g = rng.standard_normal(shape)
        return g + 1j * rng.standard_normal(shape) if complex_ else g

    x = gauss(*ranks)
    for k, (n, r) in enumerate(zip(dims, ranks, strict=True)):
        x = np.moveaxis(np.tensordot(gauss(n, r), x, axes=(1, k)), 0, k)
    x = x / np.linalg.norm(x)
    return x + noise * gauss(*dims) / math.sqrt(math.prod(dims))


def planted_tt(dims, ranks, seed, noise=0.0):
    rng = np.random.default_rng(seed)
    x = np.ones((1,))
    for k, n in enumerate(dims):
        x = np.tensordot(x, rng.standard_normal((ranks[k], n, ranks[k + 1])), axes=(-1, 0))
    x = x.reshape(dims) / np.linalg.norm(x)
    return x + noise * rng.standard_normal(dims) / math.sqrt(math.prod(dims))


def svd_tails(mat):
    """Reference tails from a plain SVD (independent of the module's Gram spectra)."""
    s = np.linalg.svd(mat, compute_uv=False)
    return np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])


def ref_tucker_tails(x):
    return [svd_tails(np.moveaxis(x, k, 0).reshape(x.shape[k], -1)) for k in range(x.ndim)]


def ref_tt_tails(x):
    return [svd_tails(x.reshape(math.prod(x.shape[: k + 1]), -1)) for k in range(x.ndim - 1)]


def svd_bases(x):
    return [np.linalg.svd(np.moveaxis(x, k, 0).reshape(x.shape[k], -1), full_matrices=False)[0]
            for k in range(x.ndim)]


def np_hosvd_rel_error(x, ranks, bases=None):
    """Truncated HOSVD error by plain numpy SVDs (a reference for the predicted bounds)."""
    approx = x
    for u, (k, r) in zip(bases or svd_bases(x), enumerate(ranks), strict=True):
        p = u[:, :r] @ u[:, :r].conj().T
        approx = np.moveaxis(np.tensordot(p, approx, axes=(1, k)), 0, k)
    return float(np.linalg.norm(approx - x) / np.linalg.norm(x))


# ------------------------------------------------------------------ planted recovery


@pytest.mark.parametrize("dims, ranks, complex_", [
    ((5, 6, 7), (2, 3, 4), False),
    ((4, 5, 3, 6), (3, 2, 3, 2), False),
    ((5, 6, 7), (3, 2, 4), True),
])
def test_core_shapes_recovers_planted_tucker(dims, ranks, complex_):
    x = planted_tucker(dims, ranks, seed=sum(dims), noise=1e-3, complex_=complex_)
    budget = cs.tucker_params(dims, ranks)
    sel = cs.core_shapes(x, budget)
    assert sel.ranks == ranks and sel.shape == ranks
    assert sel.params == budget and sel.budget == budget and sel.evaluations == 0
    assert sel.rel_error < 3e-3  # only the noise is discarded
    # exact structure: nothing is discarded at all
    exact = planted_tucker(dims, ranks, seed=1, complex_=complex_)
    sel = cs.core_shapes(exact, budget)
    assert sel.ranks == ranks and sel.rel_error < 1e-7
    sel = cs.core_shapes(x, budget, objective="hosvd")
    assert sel.ranks == ranks and sel.method == "core_shapes_hosvd"
    assert sel.rel_error == pytest.approx(np_hosvd_rel_error(x, ranks), rel=1e-6)
    sel = cs.core_shapes(x, budget, refine=1)
    assert sel.ranks == ranks and sel.method == "core_shapes_surrogate_refine1"
    assert sel.rel_error == pytest.approx(np_hosvd_rel_error(x, ranks), rel=1e-6)


def test_refine_covering_every_shape_is_the_hosvd_optimum_tall_and_complex():
    # mode 0 is longer than the other modes together: its vectors come from the short side
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 2, 3)) + 1j * rng.standard_normal((9, 2, 3))
    x[:, :, 0] *= 3.0
    for budget in (30, 45, 70):
        full = cs.core_shapes(x, budget, refine=9)
        exact = cs.core_shapes(x, budget, objective="hosvd")
        assert full.ranks == exact.ranks
        assert full.rel_error == pytest.approx(exact.rel_error, rel=1e-9, abs=1e-12)
        assert full.rel_error == pytest.approx(np_hosvd_rel_error(x, full.ranks), rel=1e-6)


def test_greedy_recovers_planted_tucker_and_matches_tucker_module():
    dims, ranks = (5, 6, 7), (2, 3, 4)
    x = planted_tucker(dims, ranks, seed=3, noise=1e-3)
    budget = cs.tucker_params(dims, ranks)
    for method, n_iter in (("hooi", 2), ("hosvd", 1)):
        sel = cs.greedy_core_shapes(x, budget, method=method, n_iter=n_iter)
        assert sel.ranks == ranks and sel.params <= budget
        # each step tries at most N increments: sum(r) - N steps plus the final try
        steps = sum(ranks) - len(dims)
        assert steps <= sel.evaluations <= len(dims) * (steps + 1)
        # the measured loss is the tnlib.tucker decomposition's (one jit per method)
        if method == "hooi":
            fit = jax.jit(lambda a: tucker.to_dense(tucker.hooi(a, ranks, n_iter=2)))
        else:
            fit = jax.jit(lambda a: tucker.to_dense(tucker.hosvd(a, ranks)))
        dense = np.asarray(fit(jnp.asarray(x)))
        rel = np.linalg.norm(dense - x) / np.linalg.norm(x)
        np.testing.assert_allclose(sel.rel_error, rel, rtol=1e-6)


@pytest.mark.parametrize("dims, ranks", [
    ((3, 4, 5, 4), (1, 2, 3, 2, 1)),
    ((2, 3, 4, 3, 2), (1, 2, 4, 5, 2, 1)),
])
def test_tt_ranks_recovers_planted_tt(dims, ranks):
    x = planted_tt(dims, ranks, seed=len(dims), noise=1e-3)
    budget = cs.tt_params(dims, ranks)
    sel = cs.tt_ranks(x, budget)
    assert sel.ranks == ranks and sel.params == budget
    assert sel.rel_error < 3e-3
    greedy = cs.greedy_tt_ranks(x, budget)
    assert greedy.params <= budget and greedy.evaluations > 0
    # the TT-SVD error of the greedy result lies between the spectral bounds
    bound = math.sqrt(cs.tt_surrogate(x, greedy.ranks)) / np.linalg.norm(x)
    assert greedy.rel_error_lower <= greedy.rel_error * (1 + 1e-9) + 1e-12
    assert greedy.rel_error <= bound * (1 + 1e-9) + 1e-12


# ------------------------------------------------------------------------- spectra


@pytest.mark.parametrize("dims", [
    (5, 6, 2, 3),  # trailing modes 1..3 share one Gram (partial traces)
    (30, 2, 3),  # tall mode 0: its short side is that shared Gram
    (4, 3, 5, 20),  # middle modes: batched blocks (mode 1), moved-axis copy (mode 2)
    (3, 4, 40, 2),  # tall middle mode
    (2, 3, 11),  # tall last mode
    (7,),
])
def test_tucker_tails_match_svd_spectra_on_every_gram_path(dims):
    rng = np.random.default_rng(len(dims))
    real = rng.standard_normal(dims)
    for x in (real, real + 1j * rng.standard_normal(dims)):
        tails, ref = _spectra.tucker_tails(x), ref_tucker_tails(x)
        for t, r in zip(tails, ref, strict=True):
            assert t.shape == r.shape
            np.testing.assert_allclose(t, r, rtol=1e-10, atol=1e-12 * r[0])


# ------------------------------------------------------- optimality and budget (random)


def feasible_tucker_shapes(dims, budget):
    caps = [min(n, math.prod(dims) // n) for n in dims]
    for shape in itertools.product(*(range(1, c + 1) for c in caps)):
        consistent = max(shape) ** 2 <= math.prod(shape)
        if consistent and cs.tucker_params(dims, shape) <= budget:
            yield shape


def feasible_tt_ranks(dims, budget):
    caps = [min(math.prod(dims[: k + 1]), math.prod(dims[k + 1:])) for k in range(len(dims) - 1)]
    for inner in itertools.product(*(range(1, c + 1) for c in caps)):
        r = (1, *inner, 1)
        ok = all(r[k + 1] <= r[k] * n and r[k] <= n * r[k + 1] for k, n in enumerate(dims))
        if ok and cs.tt_params(dims, r) <= budget:
            yield r


problems = st.tuples(
    st.lists(st.integers(2, 5), min_size=2, max_size=4),
    st.floats(0.0, 1.0),
    st.integers(0, 2**16),
)


@settings(max_examples=5)
@given(problems)
def test_dp_is_optimal_for_its_surrogate_and_respects_budget(problem):
    dims, frac, seed = problem
    dims = tuple(dims)
    rng = np.random.default_rng(seed)
    # decaying spectra make the choice non-trivial
    x = rng.standard_normal(dims) * np.exp(-np.arange(dims[0]))[(...,) + (None,) * (len(dims) - 1)]
    norm2 = float(np.sum(x**2))

    lo, hi = 1 + sum(dims), cs.tucker_params(dims, [min(n, x.size // n) for n in dims])
    budget = lo + int(frac * (hi - lo))
    sel = cs.core_shapes(x, budget)
    assert sel.params == cs.tucker_params(dims, sel.ranks) <= budget
    tails = ref_tucker_tails(x)
    value = sum(t[r] for t, r in zip(tails, sel.ranks, strict=True))
    best = min(sum(t[r] for t, r in zip(tails, s, strict=True))
               for s in feasible_tucker_shapes(dims, budget))
    assert value <= best + 1e-10 * norm2
    assert sel.rel_error == pytest.approx(math.sqrt(value / norm2), rel=1e-6, abs=1e-7)
    # the HOSVD at the chosen shape achieves the predicted bound
    bases = svd_bases(x)
    hosvd_err = np_hosvd_rel_error(x, sel.ranks, bases)
    assert sel.rel_error_lower - 1e-7 <= hosvd_err <= sel.rel_error + 1e-7
    # objective="hosvd" is the exact HOSVD-error optimum (brute force over shapes)
    exact = cs.core_shapes(x, budget, objective="hosvd")
    assert exact.params <= budget
    best = min(np_hosvd_rel_error(x, s, bases) for s in feasible_tucker_shapes(dims, budget))
    assert exact.rel_error == pytest.approx(best, rel=1e-6, abs=1e-7)
    assert np_hosvd_rel_error(x, exact.ranks, bases) == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert best <= hosvd_err + 1e-12
    # refine=w: the exact-HOSVD optimum over the box of +-w around the DP's shape
    for w in (1, 2):
        ref = cs.core_shapes(x, budget, refine=w)
        assert ref.params == cs.tucker_params(dims, ref.ranks) <= budget
        assert max(abs(a - b) for a, b in zip(ref.ranks, sel.ranks, strict=True)) <= w
        box = min(np_hosvd_rel_error(x, s, bases) for s in feasible_tucker_shapes(dims, budget)
                  if max(abs(a - b) for a, b in zip(s, sel.ranks, strict=True)) <= w)
        assert ref.rel_error == pytest.approx(box, rel=1e-6, abs=1e-7)
        assert np_hosvd_rel_error(x, ref.ranks, bases) == pytest.approx(box, rel=1e-9, abs=1e-12)
        assert best - 1e-12 <= ref.rel_error <= hosvd_err + 1e-7

    lo, hi = sum(dims), x.size + 1
    budget = lo + int(frac * (hi - lo))
    sel = cs.tt_ranks(x, budget)
    assert sel.params == cs.tt_params(dims, sel.ranks) <= budget
    tails = ref_tt_tails(x)
    value = sum(t[r] for t, r in zip(tails, sel.ranks[1:-1], strict=True))
    best = min(sum(t[r] for t, r in zip(tails, rr[1:-1], strict=True))
               for rr in feasible_tt_ranks(dims, budget))
    assert value <= best + 1e-10 * norm2


@settings(max_examples=3)
@given(problems)
def test_greedy_respects_budget(problem):
    dims, frac, seed = problem
    dims = tuple(dims)
    x = np.random.default_rng(seed).standard_normal(dims)
    lo = 1 + sum(dims)
    budget = lo + int(frac * (cs.tucker_params(dims, [min(n, x.size // n) for n in dims]) - lo))
    sel = cs.greedy_core_shapes(x, budget, method="hosvd")
    assert sel.params == cs.tucker_params(dims, sel.ranks) <= budget
    # no single increment would still fit (the greedy stops only when the budget is used)
    caps = [min(n, x.size // n) for n in dims]
    for k in range(len(dims)):
        bigger = list(sel.ranks)
        bigger[k] += 1
        assert bigger[k] > caps[k] or cs.tucker_params(dims, bigger) > budget
    lo = sum(dims)
    sel = cs.greedy_tt_ranks(x, lo + int(frac * x.size))
    assert sel.params == cs.tt_params(dims, sel.ranks) <= lo + int(frac * x.size)


def test_larger_budget_never_hurts_and_dp_beats_uniform():
    x = planted_tucker((6, 7, 8), (3, 4, 5), seed=0, noise=0.3)
    previous = math.inf
    for budget in (30, 60, 120, 240, 400):
        sel = cs.core_shapes(x, budget)
        assert sel.rel_error <= previous + 1e-12
        previous = sel.rel_error
    r = 3
    uniform = cs.tucker_surrogate(x, (r, r, r))
    sel = cs.core_shapes(x, cs.tucker_params((6, 7, 8), (r, r, r)))
    assert sel.rel_error**2 * np.sum(np.abs(x) ** 2) <= uniform * (1 + 1e-9)


def test_zero_tensor_and_vector():
    sel = cs.core_shapes(np.zeros((3, 4)), 100)
    assert sel.ranks == (1, 1) and sel.rel_error == 0.0
    sel = cs.core_shapes(np.arange(1.0, 6.0), 6)
    assert sel.ranks == (1,) and sel.params == 6
    sel = cs.tt_ranks(np.arange(1.0, 6.0), 5)
    assert sel.ranks == (1, 1) and sel.params == 5 and sel.rel_error == 0.0


# --------------------------------------------------------------------------- errors


def test_errors():
    x = np.ones((3, 4, 5))
    with pytest.raises(ValueError, match=r"budget 12 .*needs 13 parameters"):
        cs.core_shapes(x, 12)
    with pytest.raises(ValueError, match=r"budget 12 .*needs 13 parameters"):
        cs.greedy_core_shapes(x, 12)
    with pytest.raises(ValueError, match=r"budget 11 .*tensor train.*needs 12 parameters"):
        cs.tt_ranks(x, 11)
    with pytest.raises(ValueError, match=r"budget 11 .*needs 12"):
        cs.greedy_tt_ranks(x, 11)
    for bad in (20.0, True, "20", None):
        with pytest.raises(TypeError, match="budget must be an int"):
            cs.core_shapes(x, bad)
    with pytest.raises(ValueError, match="x must be finite"):
        cs.core_shapes(np.full((2, 3), np.nan), 20)
    with pytest.raises(ValueError, match="x must not be empty"):
        cs.tt_ranks(np.ones((2, 0)), 20)
    with pytest.raises(ValueError, match="x must have at least 1 axis"):
        cs.core_shapes(np.float64(3.0), 20)
    with pytest.raises(TypeError, match="x must be a numeric array"):
        cs.core_shapes(np.array([["a", "b"]]), 20)
    with pytest.raises(ValueError, match="objective must be 'surrogate' or 'hosvd'"):
        cs.core_shapes(x, 40, objective="hooi")
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="refine must be an int >= 0"):
            cs.core_shapes(x, 40, refine=bad)
    with pytest.raises(ValueError, match="refine applies to objective='surrogate'"):
        cs.core_shapes(x, 40, objective="hosvd", refine=1)
    with pytest.raises(ValueError, match="method must be 'hooi' or 'hosvd'"):
        cs.greedy_core_shapes(x, 40, method="als")
    with pytest.raises(ValueError, match="n_iter must be an int >= 1"):
        cs.greedy_core_shapes(x, 40, n_iter=0)
    with pytest.raises(ValueError, match="ranks must hold 4 bond ranks"):
        cs.tt_surrogate(x, (1, 2, 1))
    with pytest.raises(ValueError, match=r"ranks\[1\] = 9 must be in \[1, 3\]"):
        cs.tt_surrogate(x, (1, 9, 2, 1))
    with pytest.raises(ValueError, match="larger than the mode-0 unfolding"):
        cs.tucker_surrogate(x, (4, 1, 1))
