"""The low_rank task's second phase (``train.finetune_from``): fixed-rank training from
a finished rank-adaptive run, as the paper's ``mnist_DLRA_fixed_rank.py``."""

from pathlib import Path

import numpy as np
import pytest

from tnlib import dlrt
from tnlib.experiments import get_task, low_rank, records
from tnlib.experiments.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "dlrt_mnist.py"


def smoke(arg="smoke", **overrides):
    config = load_config(f"{CONFIG}:{arg}")[0]
    return apply_overrides(config, [f"{k}={v}" for k, v in overrides.items()])


@pytest.fixture(scope="module")
def adapted(tmp_path_factory):
    config = smoke(**{"train.tau": 0.3})
    workdir = tmp_path_factory.mktemp("adaptive") / "seed0"
    summary = get_task("low_rank").train_and_evaluate(config, workdir)
    return workdir, summary


def test_finetune_keeps_the_adapted_ranks_and_trains(adapted, tmp_path):
    src, summary = adapted
    assert summary["ranks"] != [8, 8]  # tau 0.3 truncated something
    config = smoke("smoke,finetune=2", **{"train.tau": 0.3,
                                          "train.finetune_from": str(src.parent / "seed{seed}")})
    task = get_task("low_rank")
    out = task.train_and_evaluate(config, tmp_path / "ft")
    assert out["ranks"] == summary["ranks"]
    lines = records.read_metrics(tmp_path / "ft" / "metrics.jsonl")
    for line in lines:
        for k in range(2):
            if f"rank_{k}" in line:
                assert line[f"rank_{k}"] == summary["ranks"][k]
    assert out["test_accuracy"] >= summary["test_accuracy"] - 0.05
    assert out["steps"] == summary["steps"]  # 2 epochs each


def test_finetune_starts_from_the_source_parameters_cut_to_their_ranks(adapted):
    src, summary = adapted
    config = smoke(**{"train.tau": 0.3, "train.finetune_from": str(src)})
    got = low_rank.adapted_params(config, 64)
    for layer, r in zip(got["hidden"], summary["ranks"], strict=True):
        w = layer["w"]
        assert int(w.rank) == r and w.max_rank == r
        u = np.asarray(w.u)
        np.testing.assert_allclose(u.T @ u, np.eye(r), atol=1e-5)
        assert np.isfinite(np.asarray(dlrt.to_dense(w))).all()


def test_finetune_source_errors(adapted, tmp_path):
    src, _ = adapted
    task = get_task("low_rank")
    missing = smoke("smoke,finetune=1", **{"train.finetune_from": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="not a finished run"):
        task.train_and_evaluate(missing, tmp_path / "a")
    other = smoke("smoke,finetune=1", **{"train.finetune_from": str(src),
                                         "model.width": 40})
    with pytest.raises(ConfigError, match="was run with model"):
        task.train_and_evaluate(other, tmp_path / "b")
    wrong_seed = smoke("smoke,finetune=1", **{"train.finetune_from": str(src), "seed": 1})
    with pytest.raises(ConfigError, match="seed"):
        task.train_and_evaluate(wrong_seed, tmp_path / "c")
    dense = smoke("smoke,dense,finetune=1", **{"train.finetune_from": str(src)})
    with pytest.raises(ConfigError, match="model.kind='dlrt'"):
        task.train_and_evaluate(dense, tmp_path / "d")
