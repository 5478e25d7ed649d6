"""Mixup and label smoothing in the classification task (Qiu et al. 2024's training
setting): the mixed batch, the loss against a hand-written one, the accuracy rule, the
config checks, a smoke run of configs/scaling_mlp_mnist.py, and the muP table a model
defines for itself winning over its layers'."""

import math
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from tnlib.experiments import classification
from tnlib.experiments.config import ConfigError, load_config
from tnlib.models import BTTLinear, layer_lr_multipliers

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "scaling_mlp_mnist.py"


def test_mixup_batch_mixes_one_lambda_and_a_permutation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 10, 64)
    xm, y1, y2, lam = classification.mixup_batch(x, y, 0.8, np.random.default_rng(1))
    assert 0.0 < lam < 1.0 and xm.dtype == x.dtype
    np.testing.assert_array_equal(y1, y)
    # the permutation is recoverable from y2 only up to ties; recompute it from the draw
    r = np.random.default_rng(1)
    lam_again, perm = np.float32(r.beta(0.8, 0.8)), None
    perm = r.permutation(64)
    assert lam_again == lam
    np.testing.assert_array_equal(y2, y[perm])
    np.testing.assert_allclose(xm, lam * x + (1 - lam) * x[perm], rtol=1e-6)
    # alpha 0: untouched
    x0, _, y0, lam0 = classification.mixup_batch(x, y, 0.0, np.random.default_rng(1))
    assert x0 is x and lam0 == 1.0
    np.testing.assert_array_equal(y0, y)
    # the lambdas of Beta(0.8, 0.8) spread over (0, 1) with mean 1/2
    lams = [classification.mixup_batch(x, y, 0.8, np.random.default_rng(s))[3]
            for s in range(400)]
    assert abs(np.mean(lams) - 0.5) < 0.05 and min(lams) < 0.1 and max(lams) > 0.9


class _Linear(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 3, rngs=rngs)

    def __call__(self, x):
        return self.lin(x)


def test_train_step_loss_is_smoothed_mixed_cross_entropy():
    model = _Linear(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    eps, lam = 0.3, 0.7
    train_step, _ = classification.make_steps(graphdef, rest, optax.sgd(0.0), eps)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    y, y2 = np.array([0, 1, 2, 0, 1, 2]), np.array([2, 2, 0, 1, 0, 1])
    _, _, loss, acc = train_step(params, optax.sgd(0.0).init(params), x, y, y2, lam)
    logits = np.asarray(model(x), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))

    def ce(t):  # PyTorch CrossEntropyLoss(label_smoothing=eps)
        target = (1 - eps) * np.eye(3)[t] + eps / 3
        return -(target * logp).sum(-1)

    want = (lam * ce(y) + (1 - lam) * ce(y2)).mean()
    assert math.isclose(float(loss), want, rel_tol=1e-5)
    pred = logits.argmax(-1)
    assert float(acc) == pytest.approx(max((pred == y).mean(), (pred == y2).mean()))
    # without y2 and lam: plain (smoothed) cross-entropy
    _, _, loss1, _ = train_step(params, optax.sgd(0.0).init(params), x, y)
    assert math.isclose(float(loss1), ce(y).mean(), rel_tol=1e-5)


def test_bad_mixup_and_smoothing_are_config_errors(tmp_path):
    for key, value, match in (("train.mixup", -1.0, "train.mixup"),
                              ("train.label_smoothing", 1.0, "train.label_smoothing")):
        config, _, _ = load_config(f"{CONFIG}:smoke")
        config[key.split(".")[0]][key.split(".")[1]] = value
        with pytest.raises(ConfigError, match=match):
            classification.train_and_evaluate(config, tmp_path / key)


def test_scaling_config_smoke_run_trains(tmp_path):
    config, _, _ = load_config(f"{CONFIG}:layer=btt,width=32,smoke")
    summary = classification.train_and_evaluate(config, tmp_path)
    assert summary["test_accuracy"] > 0.5  # 2 epochs on 5k images, mixup and all
    with pytest.raises(ConfigError, match="layer"):
        load_config(f"{CONFIG}:layer=conv")


class _Outer(nnx.Module):
    def __init__(self, rngs):
        self.inner = BTTLinear(16, 16, rank=1, rngs=rngs)
        self.head = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.inner(x))

    def lr_multipliers(self):
        return jax.tree.map(lambda _: 0.5, nnx.state(self, nnx.Param))


def test_a_model_s_own_multipliers_win_over_its_layers():
    m = _Outer(nnx.Rngs(0))
    mult = layer_lr_multipliers(m)
    assert {float(v.get_value()) for _, v in nnx.to_flat_state(mult)} == {0.5}
    inner = layer_lr_multipliers(m.inner)  # the layer alone keeps its own
    assert {float(v.get_value()) for _, v in nnx.to_flat_state(inner)} != {0.5}
