"""tnlib.search: tensor-network structure search and rank selection.

A :class:`Problem` (built by :func:`problem`) pairs a target tensor, or a
differentiable loss over a network's cores, with a :class:`SearchSpace` of edge ranks
(and optionally a permutation of modes onto nodes); the objective is
``num_params / size + lam * RSE``. The :class:`Evaluator` fits batches of candidate
structures in one jitted, vmapped, masked call. The searches :func:`tnga`,
:func:`tnls`, :func:`tnale` and :func:`greedy` each take a seed and return a
:class:`SearchResult`. :mod:`tnlib.search.problems` holds planted benchmark problems;
:func:`core_shapes` and :func:`tt_ranks` allocate Tucker / TT ranks under a budget.
"""

from tnlib.search import problems
from tnlib.search.algorithms import greedy, tnale, tnga, tnls
from tnlib.search.core_shapes import (
    RankSelection,
    core_shapes,
    greedy_core_shapes,
    greedy_tt_ranks,
    tt_ranks,
)
from tnlib.search.engine import (
    EvalRecord,
    Evaluation,
    Evaluator,
    FitConfig,
    Problem,
    SearchResult,
    mask,
    objective,
    pad,
    padded_adjacency,
    problem,
    unpad,
)
from tnlib.search.space import SearchSpace, Structure, search_space

__all__ = [
    "EvalRecord", "Evaluation", "Evaluator", "FitConfig", "Problem", "SearchResult",
    "SearchSpace", "Structure", "greedy", "mask", "objective", "pad", "padded_adjacency",
    "problem", "problems", "search_space", "tnale", "tnga", "tnls", "unpad",
    "RankSelection", "core_shapes", "greedy_core_shapes", "greedy_tt_ranks", "tt_ranks",
]
