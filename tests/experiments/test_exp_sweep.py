"""The sweep task: a ``:smoke`` run, resuming between sweeps, and the conversions to and
from ``MPSClassifier`` (same predictions; the classification evaluate runs on it)."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import tnlib.sweep as sw
from tnlib.experiments import classification
from tnlib.experiments import sweep as task
from tnlib.experiments.config import ConfigError, apply_overrides, load_config
from tnlib.models import MPSClassifier
from tnlib.models.mps import local_feature_map

ROOT = Path(__file__).resolve().parents[2]


def metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_logs_bond_dims_and_resumes_between_sweeps(tmp_path, monkeypatch, capsys):
    """configs/mps_digits_sweep.py:smoke end to end; an interrupted run resumes from its
    last finished sweep and ends exactly as the uninterrupted one. (The ``:smoke`` run of
    configs/mps_mnist_sweep.py goes through the same function in test_exp_smoke.py.)"""
    config, _, _ = load_config(str(ROOT / "configs" / "mps_digits_sweep.py") + ":smoke")
    summary = task.train_and_evaluate(config, tmp_path / "reference")
    lines = metrics(tmp_path / "reference")
    assert [r["step"] for r in lines] == list(range(1, config.train.num_sweeps + 1))
    for r in lines:
        dims = r["bond_dims"]
        assert len(dims) == 64 + 1 and dims[0] == dims[-1] == 1
        assert 1 < max(dims) <= config.model.max_bond
        assert {"train_loss", "train_acc", "test_acc", "test_loss", "lr", "wall_s"} <= set(r)
    assert 0 <= summary["test_accuracy"] <= 1 and summary["bond_dims"] == lines[-1]["bond_dims"]
    for f in ("config.json", "meta.json", "summary.json", "curves.png"):
        assert (tmp_path / "reference" / f).is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("test_accuracy=")
    with pytest.raises(ConfigError, match="different config"):
        task.train_and_evaluate(apply_overrides(config, ["train.lr=0.5"]), tmp_path / "reference")

    real, calls = sw.sweep, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sw, "sweep", interrupted)
    with pytest.raises(KeyboardInterrupt):
        task.train_and_evaluate(config, tmp_path / "run")
    monkeypatch.setattr(sw, "sweep", real)
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1]
    resumed = task.train_and_evaluate(config, tmp_path / "run")
    assert "resumed from step 1" in capsys.readouterr().out
    assert resumed["test_accuracy"] == summary["test_accuracy"]
    strip = lambda r: {k: v for k, v in r.items() if k != "wall_s"}  # noqa: E731
    assert [strip(r) for r in metrics(tmp_path / "run")] == [strip(r) for r in lines]
    # started again, a finished run only re-evaluates
    again = task.train_and_evaluate(config, tmp_path / "run")
    assert "resumed from step 2" in capsys.readouterr().out
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert len(metrics(tmp_path / "run")) == len(lines)


def test_classifier_conversions_keep_predictions():
    x = jax.random.uniform(jax.random.key(0), (12, 6), jnp.float32)
    feats = local_feature_map(x)
    model = MPSClassifier(6, 3, bond_dim=3, label_site=3, init_std=0.5, rngs=nnx.Rngs(0))
    out, _ = sw.logits(task.from_classifier(model), feats)
    ratio = np.asarray(out / model(x))  # a positive factor per sample
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 3)), rtol=1e-4)
    assert np.all(ratio > 0)

    # the label at site 0, where sweeps end, converts exactly; evaluate runs on the result
    rng = np.random.default_rng(1)
    ranks = (1, 2, 3, 3, 3, 2, 1)
    cores = [rng.standard_normal((ranks[k], 2, ranks[k + 1])).astype(np.float32)
             for k in range(6)]
    label = rng.standard_normal((1, 2, 3, 2)).astype(np.float32)
    mps = sw.from_cores(cores, label, 0, max_bond=3)
    model = task.to_classifier(mps)
    out, _ = sw.logits(mps, feats)
    ratio = np.asarray(out / model(x))
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 3)), rtol=1e-4)
    assert np.all(ratio > 0)
    y = np.arange(12) % 3
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    _, eval_step = classification.make_steps(graphdef, rest, optax.sgd(0.1))
    split = (np.asarray(x), y.astype(np.int32))
    got = classification.evaluate(eval_step, params, split, 12)["acc"]
    assert got == task.evaluate(mps, split, 12, "cos_sin", "squared")["acc"]
