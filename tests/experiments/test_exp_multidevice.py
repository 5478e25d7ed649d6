"""Data-parallel and resharded training on 8 simulated CPU devices (a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``): an MPS classifier and a BTT
MLP give the same loss curve on an 8-device data mesh as on one device with the same
global batch, and a checkpoint written on 8 devices resumes on 2 devices and on 1
device and training continues to the same curve."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

# Slow tier (make test-slow, which CI runs right after make test): 8-device subprocesses (~50 s)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    import jax
    import ml_collections
    from tnlib.experiments import classification
    from tnlib.experiments.config import load_config, apply_overrides
    assert jax.device_count() == 8, jax.devices()
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    common = ["data.n_train=128", "data.n_test=64", "train.batch_size=32",
              "train.log_every=1", "train.checkpoint_every=4", "train.warmup_steps=1"]
    mlp = {"name": "structured_mlp", "width": 64, "depth": 2, "layer": "btt", "rank": 2}
    curves = {}

    def run(name, mesh, model=None, workdir=None):
        config, _, _ = load_config(str(root / "configs/mps_digits.py:smoke"))
        if model:  # a BTT MLP instead of the MPS
            config.model = ml_collections.ConfigDict(model)
        config = apply_overrides(config, common + [f"mesh.{k}={v}" for k, v in mesh.items()])
        wd = workdir or out / name
        summary = classification.train_and_evaluate(config, wd)
        lines = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
        curves[name] = [r["train_loss"] for r in lines if "train_loss" in r]
        return summary

    run("mps_1", {"data": 1})
    run("mps_8", {"data": 8})
    run("mlp_1", {"data": 1}, mlp)
    run("mlp_8", {"data": 8}, mlp)
    # Resume the 8-device run from its step-4 checkpoint on 2 devices and on 1 device.
    for n in (2, 1):
        wd = out / f"mps_8_to_{n}"
        shutil.copytree(out / "mps_8", wd)
        for p in (wd / "checkpoints").iterdir():
            if p.name.isdigit() and int(p.name) > 4:
                shutil.rmtree(p)
        run(f"mps_8_to_{n}", {"data": n}, workdir=wd)
    (out / "curves.json").write_text(json.dumps(curves))
""")


def test_data_parallel_and_resharded_runs_match_single_device(tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8")
    res = subprocess.run([sys.executable, "-c", _SCRIPT, str(ROOT), str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert len(curves["mps_1"]) == 8  # 4 steps per epoch, 2 epochs, logged every step
    for one, many in (("mps_1", "mps_8"), ("mlp_1", "mlp_8"), ("mps_8", "mps_8_to_2"),
                      ("mps_8", "mps_8_to_1")):
        np.testing.assert_allclose(curves[many], curves[one], rtol=2e-5, err_msg=many)
    assert curves["mps_1"][-1] < curves["mps_1"][0]
    assert curves["mlp_1"][-1] < curves["mlp_1"][0]
    meta = json.loads((tmp_path / "mps_8_to_2" / "meta.json").read_text())
    assert meta["mesh"] == {"data": 2, "model": 1}
    meta = json.loads((tmp_path / "mps_8" / "meta.json").read_text())
    assert meta["mesh"] == {"data": 8, "model": 1}
    shutil.rmtree(tmp_path, ignore_errors=True)


_MODEL_SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import PartitionSpec as P
    from tnlib.experiments import sharding
    from tnlib.models import BTTLinear, LowRankLinear, TTLinear
    mesh = sharding.make_mesh({"data": 2, "model": 4})
    x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
    layers = {"btt": BTTLinear(64, 64, rank=4, rngs=nnx.Rngs(0)),
              "lowrank": LowRankLinear(64, 64, rank=8, rngs=nnx.Rngs(1)),
              "tt": TTLinear(64, 64, in_factors=(4, 4, 4), out_factors=(4, 4, 4), rank=4,
                             rngs=nnx.Rngs(2))}
    for name, layer in layers.items():
        graphdef, params, rest = nnx.split(layer, nnx.Param, ...)
        placed = sharding.shard_params(layer, params, mesh)
        specs = {p.sharding.spec for p in jax.tree.leaves(placed)}
        assert any("model" in s for s in specs), (name, specs)
        f = jax.jit(lambda p, x: nnx.merge(graphdef, p, rest)(x))
        y_ref = layer(x)
        y = f(placed, sharding.shard_batch(mesh, x))
        err = float(jnp.max(jnp.abs(y - y_ref)) / jnp.max(jnp.abs(y_ref)))
        assert err < 1e-5, (name, err)
        g_ref = jax.grad(lambda p: jnp.sum(f(p, x) ** 2))(params)
        g = jax.jit(jax.grad(lambda p, x: jnp.sum(f(p, x) ** 2)))(
            placed, sharding.shard_batch(mesh, x))
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
            assert float(jnp.max(jnp.abs(a - b))) <= 1e-4 * float(jnp.max(jnp.abs(b))), name
        print(name, sorted(map(str, specs)), err)
    print("model-sharded ok")
""")


def test_model_sharded_layers_match_unsharded():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8")
    res = subprocess.run([sys.executable, "-c", _MODEL_SHARDED], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    assert "model-sharded ok" in res.stdout
