"""MPS classifier on scikit-learn's 8x8 digits trained by two-site sweeps (Stoudenmire &
Schwab 2016; TNML's settings as in ``configs/mps_mnist_sweep.py``), the counterpart of
``configs/mps_digits.py``:

    tnlib run configs/mps_digits_sweep.py             # 64 sites, bonds up to 20, 4 sweeps
    tnlib run configs/mps_digits_sweep.py:chi=10      # another maximum bond dimension
    tnlib run configs/mps_digits_sweep.py:smoke       # a few seconds (used by the test suite)
    tnlib run configs/mps_digits_sweep.py --set mesh.data=1   # one device of several

Arguments (comma-separated): ``chi=<int>`` (maximum bond dimension, default 20),
``smoke``. The chain starts from TNML's data-driven state and its bonds grow by
truncated SVD up to ``chi``; ``metrics.jsonl`` logs them after every sweep.
The ``mesh`` splits the training images over ``mesh.data`` devices and must divide
them: the 1437 digits split over 1 or 3 devices; on 2, 4 or 8 add
``--set data.n_train=1432`` (the smoke run's 128 split over 1, 2, 4 or 8).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"smoke": False, "chi": 20})
    c = ml_collections.ConfigDict()
    c.task = "sweep"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.n_train = config_dict.placeholder(int)  # None: all 1437 training images
    c.data.n_test = config_dict.placeholder(int)  # None: all 360 test images

    c.model = ml_collections.ConfigDict()
    c.model.name = "mps_sweep"
    c.model.max_bond = opts["chi"]
    c.model.min_bond = min(c.model.max_bond, max(10, c.model.max_bond // 2))  # TNML's minm
    c.model.init = "data"  # TNML's start: training images summed per class, compressed
    c.model.init_bond = min(10, c.model.max_bond)
    c.model.init_per_class = 100
    c.model.local_dim = 2
    c.model.feature_map = "cos_sin"
    c.model.init_std = 0.0  # read by init="product" only

    # Devices: the training samples (and their environments) split over `data` (-1: all
    # devices; it must divide the training set), the chain replicated (`model` stays 1).
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    c.train = ml_collections.ConfigDict()
    c.train.num_sweeps = 4
    c.train.solver = "cg"  # each bond's squared loss by conjugate gradient (TNML)
    c.train.passes = 4
    c.train.l2 = 0.0
    c.train.loss = "squared"
    c.train.cutoff = 1e-10  # largest discarded weight per split
    # the gradient solver's settings (train.solver="gd"; any train.loss)
    c.train.lr = 1.0
    c.train.momentum = 0.8
    c.train.schedule = "constant"
    c.train.end_lr_factor = 1.0
    c.train.local_steps = 10
    c.train.eval_batch_size = 512
    c.train.checkpoint_every = 42  # bond updates (a sweep has 126)
    c.train.keep_checkpoints = 3

    if opts["smoke"]:
        c.data.n_train = 128
        c.data.n_test = 64
        c.model.max_bond = min(c.model.max_bond, 4)
        c.model.min_bond = 1
        c.model.init_bond = 2
        c.model.init_per_class = 5
        c.train.num_sweeps = 2
        c.train.passes = 2
        c.train.l2 = 1.0  # 128 samples, 64 unknowns per class: keep the solve well posed
        c.train.eval_batch_size = 64  # train and test in batches of one shape: one compile
        c.train.checkpoint_every = 84  # mid-sweep: updates 84, 126 (sweep 1), 168, 252
    return c
