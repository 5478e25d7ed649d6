"""Compress-then-fine-tune (factorize a trained model at several rank ratios per
structure, accuracy before and after a short fine-tune, against the same structure
trained from scratch) and tensor adapters (LoRA / LoTR / DoTA at equal trainable
parameters, digits 0-4 -> 5-9) on MNIST, with a small CNN or a small ViT.

    tnlib run configs/compress_mnist.py:model=cnn --seed 0    # compress the CNN
    tnlib run configs/compress_mnist.py:model=vit --seed 0    # compress the ViT
    tnlib run configs/compress_mnist.py:model=vit,adapt --seed 0   # adapters, 0-4 -> 5-9
    tnlib run configs/compress_mnist.py:model=cnn,smoke       # digits, seconds

Arguments (comma-separated): ``model=cnn|vit``, ``adapt``, ``smoke``. The figure
``tnlib figures compress_finetune`` reads three seeds of each; its ``.md`` lists the
settings and what each run cost.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import ConfigError, parse_arg

LINEAR = ["lowrank", "tt", "btt", "monarch", "kronecker"]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"model": "cnn", "adapt": False, "smoke": False})
    if opts["model"] not in ("cnn", "vit"):
        raise ConfigError(f"model={opts['model']!r}: expected cnn or vit")
    c = ml_collections.ConfigDict()
    c.task = "compress"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"  # Nielsen's: 50k train, 10k test (validation unused)
    # the first 5000 training images (10000 for the ViT, 20000 for the adapters: 0-4 and
    # 5-9 get ~half each), so the 3-seed grid fits about 45 minutes of one CPU core
    c.data.n_train = 20000 if opts["adapt"] else 5000
    c.data.n_test = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict()
    c.model.name = opts["model"]
    c.model.c1, c.model.c2, c.model.hidden = 16, 32, 128  # CNN: 28 -> 14 -> 7, fc 1568 -> 128
    c.model.patch, c.model.dim, c.model.depth = 7, 64, 2  # ViT: 16 patches of 7x7
    c.model.mlp, c.model.heads = 128, 4

    c.train = ml_collections.ConfigDict()
    c.train.lr = 1e-3  # Adam: pretraining and the from-scratch baseline
    c.train.finetune_lr = 3e-4  # Adam: fine-tune after compression, adapters
    c.train.batch_size = 128
    c.train.pretrain_epochs = 3
    c.train.finetune_epochs = 1

    c.study = ml_collections.ConfigDict()
    c.study.mode = "adapt" if opts["adapt"] else "compress"
    c.study.structures = LINEAR + (["tucker", "cp"] if opts["model"] == "cnn" else [])
    c.study.ratios = [0.1, 0.3]  # fractions of each layer's dense parameters
    c.study.methods = ["head", "full", "lora", "lotr", "dota"]
    c.study.lora_ranks = [2, 8]
    if opts["model"] == "vit" and not opts["adapt"]:
        # measured: 5000 images, Adam 1e-3, 3 epochs left the ViT at 78% test accuracy
        # (seed 0), too undertrained to say anything about compression; 10000 images
        # at 2e-3 reach about 90% for twice the cost
        c.data.n_train = 10000
        c.train.lr = 2e-3
        c.train.finetune_lr = 1e-3
    if opts["adapt"]:
        c.train.finetune_lr = 1e-3
        c.train.finetune_epochs = 2

    if opts["smoke"]:
        c.data.name = "digits"  # 8x8: CNN 8 -> 4 -> 2, ViT patch 2 (16 patches)
        c.model.c1, c.model.c2, c.model.hidden = 4, 8, 16
        c.model.patch, c.model.dim, c.model.mlp, c.model.heads = 2, 16, 32, 2
        c.data.n_train = None
        c.train.batch_size = 128
        c.train.pretrain_epochs = 1
        c.train.finetune_epochs = 1
        c.study.structures = ["lowrank"]
        c.study.ratios = [0.5]
        c.study.methods = ["lotr", "dota"]
        c.study.lora_ranks = [1]
    return c
