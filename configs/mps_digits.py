"""MPS classifier (Stoudenmire & Schwab 2016) on scikit-learn's bundled 8x8 digits.

This is what ``make demo`` runs:

    tnlib run configs/mps_digits.py            # 64 sites, bond dimension 20, test accuracy >= 0.95
    tnlib run configs/mps_digits.py:smoke      # a few seconds (used by the test suite)
    tnlib run configs/mps_digits.py:chi=10     # another bond dimension

Arguments (comma-separated): ``smoke``, ``chi=<int>`` (bond dimension, default 20).

Measured: seeds 0-4 reach test accuracy 0.972-0.986 in 6-8 s of training each on a
2-core CPU (`tnlib run configs/mps_digits.py --seed K`).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"smoke": False, "chi": 20})
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"
    c.data.n_train = config_dict.placeholder(int)  # None: all 1437 training images
    c.data.n_test = config_dict.placeholder(int)  # None: all 360 test images

    c.model = ml_collections.ConfigDict()
    c.model.name = "mps_classifier"
    c.model.bond_dim = opts["chi"]
    c.model.local_dim = 2
    c.model.label_site = config_dict.placeholder(int)  # None: the middle site
    c.model.init_std = 1e-2
    c.model.readout = "linear"

    # Devices: all of them on the data axis (see "Running on many devices" in the README).
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32
    c.train.eval_batch_size = 512
    c.train.num_epochs = 40
    c.train.lr = 3e-3
    c.train.schedule = "cosine"
    c.train.end_lr_factor = 0.05
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 1.0
    c.train.log_every = 20
    c.train.eval_every = 400
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3

    if opts["smoke"]:
        c.data.n_train = 256
        c.data.n_test = 128
        c.train.num_epochs = 2
        c.train.warmup_steps = 2
        c.train.log_every = 2
        c.train.eval_every = 8
        c.train.checkpoint_every = 8
    return c
