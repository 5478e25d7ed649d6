"""Runs survive SIGKILL, corrupt checkpoints and a second run on the same directory.

- A ``tnlib run`` subprocess killed with SIGKILL mid-training and started again ends
  with parameters bitwise equal to an uninterrupted run with the same seed.
- While it runs, its directory is locked: a second run fails at once naming the
  directory and the PID; after the SIGKILL the stale lock does not block.
- Garbled or truncated checkpoints are reported, set aside, and the previous good one
  is used; the run still ends bitwise equal to the uninterrupted one.
"""

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tnlib.experiments import records, training
from tnlib.experiments.cli import main

# Slow tier (make test-slow, which CI runs right after make test): tnlib run
# subprocesses killed and rerun (~65 s); make test keeps the fault harness's seeded
# kills (test_exp_faults.py) and each task's guarantees (test_exp_tasks.py,
# test_exp_runner.py).
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "mps_digits.py") + ":smoke"
# digits:smoke trains on 256 images in batches of 32: 8 steps per epoch.
OVERRIDES = ["model.bond_dim=6", "train.num_epochs=10", "train.checkpoint_every=8",
             "train.keep_checkpoints=4", "train.eval_every=0", "train.log_every=8"]
TOTAL = 8 * 10


# `tnlib run` with a Ctrl-C (KeyboardInterrupt) raised when training reaches a given step.
CTRL_C = """
import sys
from tnlib.experiments import training
from tnlib.experiments.cli import main

real = training.batch_indices
def interrupt(seed, step, n, batch_size):
    if step == {step}:
        raise KeyboardInterrupt
    return real(seed, step, n, batch_size)
training.batch_indices = interrupt
sys.exit(main(sys.argv[1:]))
"""


def command(workdir: Path) -> list[str]:
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    return [sys.executable, "-m", "tnlib.experiments.cli", "run", DIGITS, "--workdir",
            str(workdir), *sets]


def subprocess_env(cache: Path) -> dict[str, str]:
    # Same numerics as this process (the test suite enables x64; XLA_FLAGS is inherited);
    # a persistent compilation cache shared by the subprocesses saves recompiling.
    x64 = "1" if jax.config.jax_enable_x64 else "0"
    return dict(os.environ, TQDM_DISABLE="1", JAX_ENABLE_X64=x64,
                JAX_COMPILATION_CACHE_DIR=str(cache),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")


def checkpoint_steps(workdir: Path, verified: bool = False) -> list[int]:
    """Steps on disk (``verified``: only those whose manifest is written: a step killed
    before it is set aside on resume, and the previous one used)."""
    ckpt = workdir / "checkpoints"
    steps = sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []
    return [s for s in steps if not verified or (ckpt / str(s) / training.MANIFEST).exists()]


def saved_params(workdir: Path, step: int):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state")["params"]


def assert_bitwise_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def metrics_without_wall(workdir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_s"}
            for r in records.read_metrics(workdir / "metrics.jsonl")]


def _largest_data_file(step_dir: Path) -> Path:
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    return max(files, key=lambda p: p.stat().st_size)


def damage_latest_checkpoints(run: Path) -> list[Path]:
    """Damage the three newest checkpoints of ``run`` in three ways; returns the files."""
    # newest: bytes flipped in place (same size; orbax alone would restore wrong numbers)
    garbled = _largest_data_file(run / "checkpoints" / str(TOTAL))
    data = bytearray(garbled.read_bytes())
    data[len(data) // 2] ^= 0xFF
    garbled.write_bytes(bytes(data))
    # next: truncated, and no manifest (as if killed before it was written): orbax notices
    no_manifest = run / "checkpoints" / str(TOTAL - 8)
    (no_manifest / training.MANIFEST).unlink()
    truncated = _largest_data_file(no_manifest)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    # third: a file truncated to nothing, manifest present
    emptied = _largest_data_file(run / "checkpoints" / str(TOTAL - 16))
    emptied.write_bytes(b"")
    return [garbled, truncated, emptied]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``tnlib run`` subprocesses, run side by side: ``reference`` runs uninterrupted
    while ``victim`` is SIGKILLed after its first checkpoint (once a second run has been
    tried on its locked directory); then ``resumed`` runs the same command on the
    victim's directory, ``repaired`` on a copy of the reference whose three newest
    checkpoints were damaged, and ``interrupted`` gets a Ctrl-C on a copy of the
    reference cut back to an earlier checkpoint.
    """
    root = tmp_path_factory.mktemp("runs")
    env = subprocess_env(root / "jax_cache")
    out = SimpleNamespace(reference=root / "reference", victim=root / "victim",
                          damaged=root / "damaged", interrupted=root / "interrupted")

    def start(workdir, argv=None):
        return subprocess.Popen(argv or command(workdir), cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    procs = [start(out.reference), start(out.victim)]
    ref, proc = procs
    out.victim_pid = proc.pid
    lock = out.victim / records.LOCK_FILE
    try:
        deadline = time.monotonic() + 300

        def wait_for(ready, what):
            while not ready():
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, f"no {what} within 300 s"
                time.sleep(0.01)

        # The lock is taken before compiling, so there is time to try a second run.
        wait_for(lambda: lock.exists() and "PID" in lock.read_text(), "lock")
        try:
            with records.lock_run_dir(out.victim):
                out.api_error = None
        except records.RunLockedError as e:
            out.api_error = str(e)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            out.cli_code = main(command(out.victim)[3:])  # the same command, in this process
        out.cli_err = err.getvalue()
        wait_for(lambda: checkpoint_steps(out.victim, verified=True), "checkpoint")
        proc.send_signal(signal.SIGKILL)  # at whatever step it has reached by now
        proc.communicate()
        out.victim_code = proc.returncode
        out.killed_at = max(checkpoint_steps(out.victim, verified=True))
        out.lock_after_kill = lock.read_text()
        procs.append(resumed := start(out.victim))

        ref_out, ref_err = ref.communicate(timeout=300)
        assert ref.returncode == 0, ref_err
        shutil.copytree(out.reference, out.damaged)
        out.damaged_steps = checkpoint_steps(out.damaged)
        out.manifests = [(out.damaged / "checkpoints" / str(s) / training.MANIFEST).is_file()
                         for s in out.damaged_steps]
        out.damaged_files = damage_latest_checkpoints(out.damaged)
        procs.append(repaired := start(out.damaged))
        shutil.copytree(out.reference, out.interrupted)
        for s in (TOTAL - 8, TOTAL):  # as if stopped after the checkpoint at TOTAL - 16
            shutil.rmtree(out.interrupted / "checkpoints" / str(s))
        argv = [sys.executable, "-c", CTRL_C.format(step=TOTAL - 6),
                *command(out.interrupted)[3:]]
        procs.append(interrupted := start(out.interrupted, argv))
        for name, p in (("resumed", resumed), ("repaired", repaired),
                        ("interrupted_result", interrupted)):
            stdout, stderr = p.communicate(timeout=300)
            setattr(out, name, SimpleNamespace(stdout=stdout, stderr=stderr,
                                               returncode=p.returncode))
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    return out


def test_sigkill_then_rerun_is_bitwise_equal_to_an_uninterrupted_run(runs):
    assert runs.victim_code == -signal.SIGKILL
    assert 0 < runs.killed_at < TOTAL, "the run ended before it was killed"
    assert runs.resumed.returncode == 0, runs.resumed.stderr  # the stale lock did not block
    out = runs.resumed.stdout
    resumed = [ln for ln in out.splitlines() if ln.startswith("resumed from step ")]
    assert resumed and int(resumed[0].split()[-1]) == runs.killed_at, out
    assert_bitwise_equal(saved_params(runs.victim, TOTAL), saved_params(runs.reference, TOTAL))
    # every logged step once, in order, with the reference's values
    assert [r["step"] for r in metrics_without_wall(runs.victim)] == list(range(8, TOTAL + 1, 8))
    assert metrics_without_wall(runs.victim) == metrics_without_wall(runs.reference)
    summary = records.read_json(runs.victim / "summary.json")
    assert summary["steps"] == TOTAL
    assert summary["test_accuracy"] == records.read_json(
        runs.reference / "summary.json")["test_accuracy"]
    assert out.strip().splitlines()[-1].startswith("test_accuracy=")
    sessions = records.read_json(runs.victim / "meta.json")["sessions"]
    assert [s["start_step"] for s in sessions] == [0, runs.killed_at]


def test_second_run_on_a_locked_directory_fails_naming_dir_and_pid(runs):
    pid = f"PID {runs.victim_pid} "
    assert runs.api_error is not None and pid in runs.api_error
    assert str(runs.victim) in runs.api_error
    assert runs.cli_code == 2
    assert runs.cli_err.startswith(f"tnlib: error: run directory {runs.victim} is in use")
    assert pid in runs.cli_err and "Traceback" not in runs.cli_err
    assert pid in runs.lock_after_kill  # the SIGKILLed holder left its (stale) lock file


def test_damaged_checkpoints_are_reported_and_skipped(runs):
    assert runs.damaged_steps == [TOTAL - 24, TOTAL - 16, TOTAL - 8, TOTAL]
    assert all(runs.manifests)
    assert runs.repaired.returncode == 0, runs.repaired.stderr
    assert f"resumed from step {TOTAL - 24}\n" in runs.repaired.stdout
    # found anywhere in a line: orbax's reader threads print tracebacks to the same stderr,
    # which can land in front of a warning on its line
    warned = [m.group(0) for m in re.finditer(r"tnlib: warning:.*", runs.repaired.stderr)]
    assert len(warned) == 3, runs.repaired.stderr
    # a step without its manifest is not trusted, whether orbax could read it or not
    for line, step, path, why in zip(
        warned, (TOTAL, TOTAL - 8, TOTAL - 16), runs.damaged_files,
        ("SHA-256", "no integrity record", "bytes, the manifest says"), strict=True,
    ):
        what = "is not verified" if why == "no integrity record" else "is corrupt or truncated"
        assert line.startswith(f"tnlib: warning: checkpoint step {step} {what}")
        assert why in line
        if why != "no integrity record":
            assert str(path) in line
    assert sorted(p.name for p in (runs.damaged / "checkpoints.corrupt").iterdir()) == [
        str(TOTAL - 16), str(TOTAL - 8), str(TOTAL)]
    assert records.read_json(runs.damaged / "summary.json")["steps"] == TOTAL
    assert_bitwise_equal(saved_params(runs.damaged, TOTAL), saved_params(runs.reference, TOTAL))
    assert metrics_without_wall(runs.damaged) == metrics_without_wall(runs.reference)


def test_ctrl_c_commits_the_pending_checkpoint(runs):
    """Ctrl-C (here two steps after the asynchronous save of TOTAL - 8 started) exits with
    status 130 after waiting for that save and writing its manifest."""
    run, res = runs.interrupted, runs.interrupted_result
    assert res.returncode == 130, res.stderr
    assert f"resumed from step {TOTAL - 16}\n" in res.stdout
    assert "interrupted; run the same command again to resume" in res.stderr
    assert checkpoint_steps(run) == [TOTAL - 24, TOTAL - 16, TOTAL - 8]
    step_dir = run / "checkpoints" / str(TOTAL - 8)
    assert training.verify_manifest(step_dir) == (True, None)  # committed on the way out
    assert_bitwise_equal(saved_params(run, TOTAL - 8), saved_params(runs.reference, TOTAL - 8))
    assert metrics_without_wall(run) == metrics_without_wall(runs.reference)[: TOTAL // 8 - 1]


def test_intact_checkpoint_that_does_not_fit_is_an_error(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.reference / "checkpoints", run / "checkpoints")
    mngr = training.checkpoint_manager(run / "checkpoints", 4)
    wrong = {"params": {"w": jax.ShapeDtypeStruct((3,), np.float32)}, "opt_state": ()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", training.CheckpointWarning)  # nothing is set aside
        with pytest.raises(training.CheckpointError, match=f"step {TOTAL} .* is intact"):
            training.restore_checkpoint(mngr, wrong, quarantine=run / "corrupt")
    mngr.close()
    assert checkpoint_steps(run) == [TOTAL - 24, TOTAL - 16, TOTAL - 8, TOTAL]
    assert not (run / "corrupt").exists()


def test_lock_is_exclusive_and_released(tmp_path):
    with records.lock_run_dir(tmp_path) as path:
        assert f"PID {os.getpid()} " in path.read_text()
        with pytest.raises(records.RunLockedError, match=str(tmp_path)):
            with records.lock_run_dir(tmp_path):  # a second open file description conflicts
                pass
    with records.lock_run_dir(tmp_path):  # released on exit
        pass
