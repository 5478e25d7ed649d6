"""DLRT (Schotthoefer et al. 2022): rank-adaptive low-rank training of the paper's fully
connected MNIST network (4 low-rank hidden layers of width 500, dense output layer).

    tnlib run configs/dlrt_mnist.py:tau=0.09         # one tolerance of the paper's table
    tnlib run configs/dlrt_mnist.py:dense            # the dense baseline, same optimizer
    tnlib run configs/dlrt_mnist.py:smoke            # digits, seconds
    tnlib run configs/dlrt_mnist.py:tau=0.09,epochs=50,finetune=20   # the paper's 2nd phase

The paper's runs have two phases (official ``run_tests_e2e.sh``, then
``run_tests_fixed_rank.sh``): rank-adaptive training, then 100 epochs of fixed-rank
training from the adapted network with a fresh Adam; the paper's table reports the
network after the second phase. ``finetune=<int>`` is that second phase: it starts from
the finished run of the same argument without ``finetune=``, beside this run's
directory (``runs/dlrt_mnist/tau=0.09,epochs=50/seed<k>`` above; ``--set
train.finetune_from=DIR`` names another: ``{seed}`` in it is the seed, a relative path
is relative to this run's directory) and trains ``<int>`` epochs at its ranks.

Arguments (comma-separated): ``tau=<float>`` (relative truncation tolerance, default
0.09), ``dense``, ``epochs=<int>``, ``finetune=<int>``, ``smoke``. Settings, paper /
official code / ours, are in ``paper_figures/out/low_rank_training.md``; the differences
that cost accuracy or time on a 2-core CPU: ``epochs`` (250 in the paper's runs,
default 10 here) and the rank cap (``model.max_rank`` 128 here; the official code caps
at 250 for width 500 and starts at 150 to 350).
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from tnlib.experiments.config import parse_arg, sanitize


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    opts = parse_arg(arg, {"tau": 0.09, "dense": False, "epochs": 10, "finetune": 0,
                           "smoke": False})
    c = ml_collections.ConfigDict()
    c.task = "low_rank"
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "mnist"  # Nielsen's: 50k train (validation: the other 10k), 10k test
    c.data.n_train = config_dict.placeholder(int)
    c.data.n_test = config_dict.placeholder(int)

    c.model = ml_collections.ConfigDict()
    c.model.kind = "dense" if opts["dense"] else "dlrt"
    c.model.width = 500
    c.model.depth = 4
    c.model.rank = 128  # start rank (official: 150 at HEAD, 300-350 for the paper's runs)
    c.model.max_rank = 128  # static cap (official: min(max_rank, width / 2) = 250)
    c.model.min_rank = 2  # as the official truncation

    c.train = ml_collections.ConfigDict()
    c.train.tau = float(opts["tau"])
    c.train.lr = 1e-3  # Adam, shared by K, L and S, no schedule (official mnist_DLRT.py)
    c.train.batch_size = 256
    c.train.num_epochs = int(opts["epochs"])
    c.train.log_every = 50
    c.train.eval_every = 390  # about two epochs of 195 batches
    c.train.checkpoint_every = 195
    c.train.finetune_from = config_dict.placeholder(str)

    if opts["smoke"]:
        c.data.name = "digits"
        c.model.width = 32
        c.model.depth = 2
        c.model.rank = 8
        c.model.max_rank = 8
        c.train.batch_size = 64
        c.train.num_epochs = 2
        c.train.lr = 3e-3
        c.train.log_every = 5
        c.train.eval_every = 20
        c.train.checkpoint_every = 10
    if opts["finetune"]:
        # the run of the same argument without ``finetune=``, in its default directory
        source = ",".join(p for p in (arg or "").split(",")
                          if p.strip() and not p.strip().startswith("finetune"))
        # relative to this run's directory <root>/dlrt_mnist/<arg>/seed<k>
        c.train.finetune_from = str(Path("..", "..", sanitize(source or "default"),
                                         "seed{seed}"))
        c.train.num_epochs = int(opts["finetune"])
    return c
