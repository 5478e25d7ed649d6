"""Tensor-network structure search on a planted tensor ring (TnALE / TNLS / TNGA / greedy),
in the setting of TnALE's official code (github.com/ChaoLiAtRIKEN/TnALE, ``TNALE_TR.py``):
a tensor ring of mode size 3 with ranks in 1..4, its modes placed on the ring in a random
order (TN permutation search), searched over ranks 1..7 and permutations with the
objective ``params / size + 200 RSE``, TnALE and TNLS starting from random ranks and a
random permutation drawn from the seed.

    tnlib run configs/search_planted.py                        # TnALE, order 6, instance 0
    tnlib run configs/search_planted.py:algo=tnls,order=8,instance=2 --seed 3
    tnlib run configs/search_planted.py:noperm                 # ranks only, modes in order
    tnlib run configs/search_planted.py:smoke                  # order 4, a handful of fits

Arguments (comma-separated): ``algo=<tnale|tnls|tnga|greedy>``, ``order=<int>``,
``instance=<int>`` (which planted tensor: the seed of its ranks, permutation and cores),
``noperm`` (modes in order, permutation not searched), ``smoke``. ``--seed`` seeds the
search (its random start, samples, mutations and fits), not the planted tensor. Greedy
rank growth never moves the permutation: on a permuted ring it searches ranks at the
identity placement. Running it again resumes the search from the evaluations saved in
the run directory. Settings, paper / official code / ours, are in
``paper_figures/out/structure_search.md``.
"""

from __future__ import annotations

import ml_collections

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"smoke": False, "algo": "tnale", "order": 6, "instance": 0,
                           "noperm": False})
    c = ml_collections.ConfigDict()
    c.task = "search"
    c.seed = 0

    c.problem = ml_collections.ConfigDict()
    c.problem.kind = "planted_ring"
    c.problem.seed = int(opts["instance"])  # the planted tensor
    c.problem.order = int(opts["order"])
    c.problem.dim = 3  # official data.npz: order 6, mode size 3
    c.problem.planted_max_rank = 4  # official data.npz: ring ranks 2-4
    c.problem.permute = not opts["noperm"]
    c.problem.max_rank = 7  # official: ranks drawn from randint(1, 8), grids within 1..7
    c.problem.lam = 200.0  # official fitness: s + 200 * RSE
    c.problem.n_iter = 30  # ALS sweeps per fit (official: up to 10000 Adam steps)
    c.problem.restarts = 2  # official: evaluate_repeat = 2

    c.search = ml_collections.ConfigDict()
    c.search.algorithm = opts["algo"]
    c.search.max_evals = 500
    c.search.options = ml_collections.ConfigDict()
    if opts["algo"] in ("tnale", "tnls"):
        c.search.options.init = "random"  # as TNALE_TR.py's __init_adj_matrix__
    if opts["algo"] == "tnale":
        # TNALE_TR.py never stops at a stalled neighbourhood: it re-evaluates it
        # (local_reupdate_flag) until max_generation; here until the evaluation budget
        c.search.options.n_refit = 1000
        c.search.options.stall_rounds = 1000
        c.search.options.max_sweeps = 1000

    if opts["smoke"]:
        c.problem.order = 4
        c.problem.planted_max_rank = 2
        c.problem.max_rank = 3
        c.problem.n_iter = 5
        c.problem.restarts = 1
        c.search.max_evals = 6
    return c
