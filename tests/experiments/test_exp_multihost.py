"""Multi-process training: ``tnlib run`` as two CPU processes of one run.

Two processes (``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``,
two simulated CPU devices each, gloo collectives) train the digits MPS in one shared
run directory, as several hosts do on a shared file system. Checked: both exit 0;
their loss curve equals a one-process run on a 4-device mesh with the same global
batch; only process 0 wrote the records and the run lock; batches land on the right
devices whatever the order of the mesh's axes and devices; and the checkpoint they
saved restores in one process on one device, and training continues to the curve of
the uninterrupted run. In this process: gloo is selected for CPU collectives
unless the user chose otherwise, and a multi-process mesh must use every device.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from tnlib.experiments import sharding
from tnlib.experiments.config import ConfigError

# Slow tier (make test-slow, which CI runs right after make test): two jax processes (~60 s)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 240  # a hang (a process waiting forever in a collective) fails the test

ARGS = ["run", str(ROOT / "configs/mps_digits.py") + ":smoke,chi=4",
        "--set", "data.n_train=64", "--set", "data.n_test=32", "--set", "train.batch_size=16",
        "--set", "train.eval_batch_size=32", "--set", "train.log_every=1",
        "--set", "train.checkpoint_every=4", "--set", "train.warmup_steps=1"]

# `tnlib run` once per entry of the JSON list argv[1]; a string entry instead waits
# until that file exists (the one-process reference resumes the 2-process run's
# checkpoint only once that run is over, without paying the start-up and compilations
# of a new process). With several processes, then checks that shard_batch puts the
# right rows on each device for meshes whose data axis is not process-major.
_DRIVER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from tnlib.experiments import cli
    for step in json.loads(sys.argv[1]):
        if isinstance(step, str):
            while not Path(step).exists():
                time.sleep(0.05)
        elif cli.main(step):
            sys.exit(1)
    import jax
    if jax.process_count() > 1:
        import numpy as np
        from jax.experimental import multihost_utils
        from jax.sharding import Mesh
        from tnlib.experiments import sharding
        grid = np.asarray(jax.devices(), dtype=object).reshape(2, 2)
        a = np.arange(24.0).reshape(8, 3)
        for mesh in (Mesh(grid, ("model", "data")), Mesh(grid.T, ("data", "model"))):
            x = sharding.shard_batch(mesh, a)
            np.testing.assert_array_equal(multihost_utils.process_allgather(x, tiled=True), a)
        print("layouts ok", flush=True)
""")


def _run_args(workdir, *overrides):
    return [*ARGS, "--workdir", str(workdir), *(a for o in overrides for a in ("--set", o))]


def _env(n_devices, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count="
               f"{n_devices} --xla_cpu_multi_thread_eigen=false "
               + os.environ.get("XLA_FLAGS", ""), **extra)
    return env


def _start(steps, n_devices, **extra):
    return subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps(steps)],
                            env=_env(n_devices, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs):
    """Wait for all of ``procs``; kill the rest when one hangs. Returns (rc, out, err)s."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=TIMEOUT_S)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rc, _, err in results:
        assert rc == 0, err[-4000:]
    return results


def _curve(workdir):
    lines = [json.loads(s) for s in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in lines], [r["train_loss"] for r in lines]


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_and_their_checkpoint_resumes_on_one_device(tmp_path):
    multi, ref, resumed = tmp_path / "multi", tmp_path / "ref", tmp_path / "resumed"
    go = tmp_path / "go"
    coordinator = {"JAX_COORDINATOR_ADDRESS": f"localhost:{_free_port()}",
                   "JAX_NUM_PROCESSES": "2"}
    procs = [_start([_run_args(multi)], 2, JAX_PROCESS_ID=str(i), **coordinator)
             for i in range(2)]
    # One process with the same 4-device data mesh; later it resumes the 2-process run's
    # step-4 checkpoint on a mesh of one device.
    single = _start([_run_args(ref), str(go), _run_args(resumed, "mesh.data=1")], 4)
    try:
        (_, out0, _), (_, out1, _) = _finish(procs)
        shutil.copytree(multi, resumed)
        shutil.rmtree(resumed / "checkpoints/8")
    except BaseException:
        single.kill()
        single.communicate()
        raise
    go.touch()
    (_, out, _), = _finish([single])

    steps, multi_curve = _curve(multi)
    ref_steps, ref_curve = _curve(ref)
    assert steps == ref_steps == list(range(1, 9))  # 4 steps per epoch, 2 epochs, once each
    np.testing.assert_allclose(multi_curve, ref_curve, rtol=2e-5)
    assert ref_curve[-1] < ref_curve[0]
    assert "layouts ok" in out0 and "layouts ok" in out1

    # Process 0 alone wrote the records and holds the lock; process 1 wrote none.
    assert (multi / "run.lock").read_text().startswith(f"PID {procs[0].pid} ")
    meta = json.loads((multi / "meta.json").read_text())
    assert meta["processes"] == 2 and len(meta["devices"]) == 4
    assert meta["mesh"] == {"data": 4, "model": 1} and len(meta["sessions"]) == 1
    assert (multi / "summary.json").exists() and (multi / "curves.png").exists()
    assert "test_accuracy=" in out0 and "test_accuracy=" not in out1
    summary = json.loads((multi / "summary.json").read_text())
    assert summary == {**summary, "steps": 8, "n_train": 64, "n_test": 32}
    # Both processes wrote their shards of the orbax checkpoint.
    assert {p.name for p in (multi / "checkpoints/4/state").glob("ocdbt.process_*")} == {
        "ocdbt.process_0", "ocdbt.process_1"}

    # The resumed run: the 2-process run's first 4 steps, then 4 steps on one device,
    # together the uninterrupted run's curve.
    assert "resumed from step 4" in out
    steps, resumed_curve = _curve(resumed)
    assert steps == list(range(1, 9))
    np.testing.assert_allclose(resumed_curve, ref_curve, rtol=2e-5)
    meta = json.loads((resumed / "meta.json").read_text())
    assert meta["processes"] == 1 and meta["mesh"] == {"data": 1, "model": 1}
    assert [s["start_step"] for s in meta["sessions"]] == [0, 4]
    assert json.loads((resumed / "summary.json").read_text())["steps"] == 8
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_gloo_is_selected_for_cpu_collectives_unless_set(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
    name = "jax_cpu_collectives_implementation"
    before = getattr(jax.config, name)
    env = {"JAX_COORDINATOR_ADDRESS": "localhost:1234", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "0"}
    try:
        for preset, env_, expected in ((None, env, "gloo"), ("mpi", env, "mpi"),
                                       (None, {"SLURM_NTASKS": "4"}, "gloo"), (None, {}, None)):
            jax.config.update(name, preset)
            assert sharding.initialize_distributed(env_) == bool(env_)
            assert getattr(jax.config, name) == expected
    finally:
        jax.config.update(name, before)
    assert len(calls) == 3


def test_a_multi_process_mesh_uses_every_device(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert sharding.mesh_shape({"data": -1, "model": 2}, 8) == {"data": 4, "model": 2}
    with pytest.raises(ConfigError, match=r"uses 2 of the 8 devices.*2 processes"):
        sharding.mesh_shape({"data": 2}, 8)
