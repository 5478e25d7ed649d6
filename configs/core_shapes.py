"""Tucker core shapes under a parameter budget (Ghadiri et al. 2023, "Approximately
Optimal Core Shapes for Tensor Decompositions"): the packing DP of
``tnlib.search.core_shapes`` against the greedy true-loss baseline and uniform ranks,
on image tensors and on MNIST / digits as tensors of images.

    tnlib run configs/core_shapes.py           # 4 tensors x 7 budgets (~14 minutes on one core)
    tnlib run configs/core_shapes.py:quick     # 4 smaller tensors x 2 budgets (~2 minutes)
    tnlib run configs/core_shapes.py:smoke     # 2 small tensors x 1 budget (seconds)

Arguments (comma-separated): ``quick``, ``smoke``. Everything runs in numpy on the host
CPU (an accelerator does not help); the greedy baseline dominates the time. The
``core_shapes`` figure (``tnlib figures core_shapes``) reads this run. A rerun skips the
finished cases.
"""

from __future__ import annotations

import ml_collections

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"quick": False, "smoke": False})
    c = ml_collections.ConfigDict()
    c.task = "rank_study"
    c.seed = 0
    c.study = ml_collections.ConfigDict()
    c.study.tensors = ["flower", "china", "digits", "mnist"]
    # budget / tensor size; the paper's budgets are 0.003%-0.5% of its (larger) tensors
    c.study.fractions = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]
    c.study.mnist_images = 10000  # (10000, 28, 28): 7.8M entries
    c.study.greedy_n_iter = 2  # HOOI sweeps per greedy candidate, as the paper's baseline
    c.study.eval_n_iter = 10  # HOOI sweeps that score every chosen shape
    c.study.timing_repeats = 3
    if opts["quick"]:
        c.study.fractions = [0.02, 0.1]
        c.study.mnist_images = 500
    if opts["smoke"]:
        c.study.tensors = ["flower", "mnist"]
        c.study.fractions = [0.02]
        c.study.mnist_images = 100
        c.study.eval_n_iter = 2
        c.study.timing_repeats = 1
    return c
