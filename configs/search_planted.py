"""Tensor-network structure search on a planted tensor ring (TnALE / TNLS / TNGA / greedy).

    tnlib run configs/search_planted.py                      # TnALE, order 6, 500 evaluations
    tnlib run configs/search_planted.py:smoke                # order 4, a handful of evaluations
    tnlib run configs/search_planted.py:algo=tnls,order=8    # another algorithm / order

Arguments (comma-separated): ``smoke``, ``algo=<tnale|tnls|tnga|greedy>``,
``order=<int>`` (mode size 4 up to order 6, 3 above). Running it again resumes the
search from the evaluations saved in the run directory.
"""

from __future__ import annotations

import ml_collections

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"smoke": False, "algo": "tnale", "order": 6})
    c = ml_collections.ConfigDict()
    c.task = "search"
    c.seed = 0

    c.problem = ml_collections.ConfigDict()
    c.problem.kind = "planted_ring"
    c.problem.seed = 0  # the planted tensor
    c.problem.order = opts["order"]
    c.problem.dim = 4 if opts["order"] <= 6 else 3
    c.problem.planted_max_rank = 4
    c.problem.max_rank = 4
    c.problem.lam = 100.0
    c.problem.n_iter = 30
    c.problem.restarts = 2

    c.search = ml_collections.ConfigDict()
    c.search.algorithm = opts["algo"]
    c.search.max_evals = 500
    c.search.options = ml_collections.ConfigDict()

    if opts["smoke"]:
        c.problem.order = 4
        c.problem.dim = 3
        c.problem.planted_max_rank = 2
        c.problem.max_rank = 2
        c.problem.n_iter = 5
        c.problem.restarts = 1
        c.search.max_evals = 6
    return c
