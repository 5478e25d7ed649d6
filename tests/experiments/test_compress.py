"""The compress task: factorizing a trained model is exact where the weights allow it, the
reported compression is the parameter counts' ratio, the from-scratch baseline has the
factorized model's parameter count, the adapters get equal budgets, and a smoke run of
each mode goes through the runner to the figure."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnlib.configs.compress_mnist import get_config
from tnlib.experiments import compress, data, figures
from tnlib.experiments.config import ConfigError
from tnlib.models import factorize


@pytest.fixture(scope="module")
def digits():
    s = data.load_digits()
    return {k: (x.astype(np.float32), y.astype(np.int32)) for k, (x, y) in s.items()}


def test_factorizing_at_the_planted_rank_keeps_the_accuracy(digits):
    c = get_config("model=cnn,smoke")
    dense = compress.build_model(c.model, 8, 10, 0)
    x, y = digits["test"]
    # plant rank 2 in fc (32 -> 16): a rank ratio of 0.5 keeps rank 5 >= 2
    # in the model's float32: a float64 kernel (the tests run with x64 on) made the whole
    # forward pass mixed-precision, and jaxlib 0.10.0 (the declared floor) segfaulted on it
    k = jax.random.normal(jax.random.PRNGKey(1), (32, 2)) @ jax.random.normal(
        jax.random.PRNGKey(2), (2, 16))
    dense.fc.kernel.set_value(k.astype(dense.fc.kernel.dtype))
    want = compress.accuracy(dense, x, y)
    model = compress._clone(dense)
    report = factorize(model, "lowrank", rank=0.5, where=compress._not_head)
    assert [r.path for r in report if r.replaced] == [("fc",)]
    assert report[0].rel_error < 1e-5
    assert type(dense.fc) is nnx.Linear  # the clone was factorized, not the original
    assert compress.accuracy(model, x, y) == want
    # compression = dense params / compressed params, counted by hand
    conv = 9 * 1 * 4 + 4 + 9 * 4 * 8 + 8
    head = 16 * 10 + 10
    r = model.fc.rank
    assert compress.n_params(dense) == conv + 32 * 16 + 16 + head
    assert compress.n_params(model) == conv + r * (32 + 16) + 16 + head


@pytest.mark.slow
def test_from_scratch_rebuild_matches_each_structure(digits):
    c = get_config("model=cnn,smoke")
    dense = compress.build_model(c.model, 8, 10, 0)
    for structure, where in (("tt", compress._not_head), ("tucker", None)):
        model = compress._clone(dense)
        report = factorize(model, structure, rank=0.5, where=where)
        fresh = compress.build_model(c.model, 8, 10, 3)
        for r in report:
            if r.replaced:
                new = compress._fresh(compress._get(model, r.path), structure, 0.5,
                                      nnx.Rngs(0))
                compress._set(fresh, r.path, new)
                assert compress.n_params(new) == r.new_params, (structure, r.path)
        assert compress.n_params(fresh) == compress.n_params(model), structure


def test_adapter_budgets_are_equalized():
    ranks = compress.adapter_ranks(64, 8, 2)
    lora = 8 * 2 * (64 + 64)
    assert ranks["lora"] == 2
    assert ranks["lotr"] == 10  # 10 * 128 + 8 * 100 = 2080, closest to 2048
    assert ranks["dota"] == 3  # 8 * (16 * 3 + 3 * 16 * 3 + 3 * 16) = 1920
    assert abs(ranks["lotr"] * 128 + 8 * 100 - lora) < abs(9 * 128 + 8 * 81 - lora)


def test_config_errors():
    c = get_config("model=vit,smoke")
    c.study.structures = ["tucker"]
    with pytest.raises(ConfigError, match="convolutions"):
        compress.check_config(c)
    c = get_config("model=cnn,adapt,smoke")
    with pytest.raises(ConfigError, match="model.name='vit'"):
        compress.check_config(c)


@pytest.mark.slow
def test_smoke_runs_and_figure(tmp_path):
    specs = [figures.RunSpec("configs/compress_mnist.py:model=cnn,smoke"),
             figures.RunSpec("configs/compress_mnist.py:model=vit,adapt,smoke")]
    files = figures.make_figure("compress_finetune", root=tmp_path / "runs",
                                out_dir=tmp_path / "out", runs=specs, quick=True)
    cnn = json.loads((specs[0].workdir(tmp_path / "runs") / "summary.json").read_text())
    row = cnn["rows"][1]
    assert row["structure"] == "lowrank" and row["compression"] == pytest.approx(
        row["dense_params"] / row["params"])
    assert 0 <= row["acc_before"] <= 1 and 0 <= row["acc_scratch"] <= 1
    adapt = json.loads((specs[1].workdir(tmp_path / "runs") / "summary.json").read_text())
    assert [r["method"] for r in adapt["rows"][1:]] == ["lotr", "dota"]
    md = files["md"].read_text()
    assert f"{100 * row['acc_after']:.2f}" in md and "## Every run" in md
    assert all(p.stat().st_size > 0 for p in files.values())
    assert jnp.isfinite(cnn["dense_accuracy"])
