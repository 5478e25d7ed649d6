"""tnlib.experiments.sharding: mesh sizes from the config (and the errors for meshes
that cannot be built), multi-process detection from the environment, and batch /
parameter placement on a one-device mesh in this process. Runs on 8 simulated
devices are in test_exp_multidevice.py (a subprocess)."""

import jax
import numpy as np
import pytest
from flax import nnx

from tnlib.experiments import sharding
from tnlib.experiments.config import ConfigError


@pytest.mark.parametrize("cfg, n, expected", [
    (None, 8, {"data": 8, "model": 1}),
    ({"data": -1, "model": 2}, 8, {"data": 4, "model": 2}),
    ({"data": 2, "model": -1}, 8, {"data": 2, "model": 4}),
    ({"data": 2}, 8, {"data": 2}),  # fewer devices than there are is allowed
])
def test_mesh_shape(cfg, n, expected):
    assert sharding.mesh_shape(cfg, n) == expected


@pytest.mark.parametrize("cfg, match", [
    ({"data": 16}, r"needs 16 devices but this run has 8"),
    ({"data": -1, "model": 3}, r"multiple of 3 devices"),
    ({"data": -1, "model": -1}, r"at most one axis may be -1"),
    ({"data": 0}, r"mesh.data=0"),
    ({"data": 2.5}, r"mesh.data=2.5"),
    ({"model": 2}, r"needs a 'data' axis"),
    ({}, r"at least one axis"),
])
def test_impossible_meshes_are_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        sharding.mesh_shape(cfg, 8)


def test_initialize_distributed_reads_the_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    assert not sharding.initialize_distributed({})
    assert not sharding.initialize_distributed({"SLURM_NTASKS": "1"})
    assert sharding.initialize_distributed({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
                                            "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "2"})
    assert calls[-1] == (("10.0.0.1:1234",), {"num_processes": 4, "process_id": 2})
    assert sharding.initialize_distributed({"SLURM_NTASKS": "8"})
    assert calls[-1] == ((), {})
    assert len(calls) == 2


def test_batches_and_params_on_a_one_device_mesh():
    mesh = sharding.make_mesh({"data": -1})
    x, y = sharding.shard_batch(mesh, np.ones((4, 3), np.float32), np.arange(4))
    assert x.shape == (4, 3) and y.shape == (4,)
    assert x.sharding.spec == jax.sharding.PartitionSpec("data", None)
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    placed = sharding.shard_params(model, params, mesh)
    for a, b in zip(jax.tree.leaves(placed), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.sharding.spec == jax.sharding.PartitionSpec()
