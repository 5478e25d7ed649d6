"""benchmarks/gpu_session.sh, the script a session with a lent GPU runs: its --quick
mode runs the sweep part end to end on the CPU and returns the run without checkpoints."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"


def run(tmp_path, *args):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow  # ~12 s of CPU (a subprocess that imports jax and trains); make test-all
def test_sweeps_part_quick_returns_the_run_without_checkpoints(tmp_path):
    res = run(tmp_path, "sweeps", "--quick")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sweep max_bond=4: rc=0" in res.stdout and "mps_sweep: rc=0" in res.stdout
    run_dir = tmp_path / "out" / "runs" / "mps_mnist_sweep" / "max_bond=4" / "seed0"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert (run_dir / "metrics.jsonl").stat().st_size > 0
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "run.lock").exists()
    log = (tmp_path / "out" / "gpu_session_sweeps.log").read_text()
    assert "failed: none" in log
    assert not (ROOT / "runs" / "mps_mnist_sweep" / "max_bond=4").exists()  # quick runs stay out


def test_bad_arguments_are_errors(tmp_path):
    res = run(tmp_path, "cifar")
    assert res.returncode == 2 and "unknown part 'cifar'" in res.stderr
    res = run(tmp_path, "sweeps", "--fast")
    assert res.returncode == 2 and "unknown option '--fast'" in res.stderr


def test_a_failing_step_fails_the_part(tmp_path):
    env_python = tmp_path / "python"
    # the header's version check passes, every step's interpreter fails
    env_python.write_text('#!/bin/sh\n[ "$1" = -c ] && exit 0\nexit 3\n')
    env_python.chmod(0o755)
    env = {**os.environ, "PYTHON": str(env_python), "OUT": str(tmp_path / "out")}
    res = subprocess.run(["bash", str(SCRIPT), "sweeps", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    assert "rc=3" in res.stdout and "failed: mps_sweep sweep max_bond=4" in res.stdout
