"""Every task through its ``:smoke`` config (one per task; test_exp_smoke.py runs the
other classification configs): the run writes its records, and README "Guarantees"
hold: a run whose newest checkpoint is damaged sets it aside, resumes from the
previous one and ends as the uninterrupted run (same checkpointed state, bitwise; same
metrics and summary but for wall-clock fields); a locked directory fails before any
work; a directory of another config is refused. The run loop itself is tested in
test_exp_runner.py; SIGKILL of a `tnlib run` subprocess in test_exp_reliability.py."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tnlib.experiments import get_task, records, training
from tnlib.experiments.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
# task -> (its smoke config, an override that changes the run)
TASKS = {"classification": ("mps_digits.py", "train.lr=0.5"),
         "sweep": ("mps_digits_sweep.py", "train.lr=0.5"),
         "search": ("search_planted.py", "problem.lam=1.0"),
         "rank_study": ("core_shapes.py", "study.eval_n_iter=3"),
         "low_rank": ("dlrt_mnist.py", "train.tau=0.2")}
# measured times differ between runs
VOLATILE = {"wall_s", "seconds", "speedup", "speedup_median", "speedup_min"}


def stable(x):
    if isinstance(x, dict):
        return {k: stable(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [stable(v) for v in x]
    return x


def checkpoint_steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def saved_state(workdir, step):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state")


@pytest.fixture(scope="module", params=list(TASKS))
def reference(request, tmp_path_factory):
    config = load_config(f"{ROOT / 'configs' / TASKS[request.param][0]}:smoke")[0]
    assert config.task == request.param
    task = get_task(config.task)
    workdir = tmp_path_factory.mktemp(request.param) / "run"
    summary = task.train_and_evaluate(config, workdir)
    return SimpleNamespace(config=config, task=task, workdir=workdir, summary=summary,
                           lines=records.read_metrics(workdir / "metrics.jsonl"),
                           steps=checkpoint_steps(workdir), change=TASKS[request.param][1])


def test_the_run_writes_its_records(reference):
    workdir, summary = reference.workdir, reference.summary
    for name in ("config.json", "meta.json", "metrics.jsonl", "summary.json", records.LOCK_FILE):
        assert (workdir / name).is_file(), name
    assert records.read_json(workdir / "config.json") == json.loads(reference.config.to_json())
    meta = records.read_json(workdir / "meta.json")
    assert {"git_commit", "git_dirty", "python", "packages", "devices", "start_time",
            "sessions"} <= set(meta) and meta["task"] == reference.config.task
    steps = [r["step"] for r in reference.lines]
    assert steps == sorted(set(steps)) and steps[-1] <= summary["steps"]
    assert summary["steps"] == reference.steps[-1]  # the last step is checkpointed
    for s in reference.steps:
        assert training.verify_manifest(workdir / "checkpoints" / str(s)) == (True, None)
    assert records.read_json(workdir / "summary.json") == summary
    assert summary["wall_s"] > 0


def test_a_damaged_checkpoint_is_set_aside_and_the_run_ends_as_the_uninterrupted_one(
        reference, tmp_path, capsys):
    assert len(reference.steps) >= 2, "the smoke run must keep two checkpoints"
    run = tmp_path / "run"
    shutil.copytree(reference.workdir, run)
    newest, previous = reference.steps[-1], reference.steps[-2]
    files = [p for p in (run / "checkpoints" / str(newest)).rglob("*")
             if p.is_file() and p.name != training.MANIFEST]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    with pytest.warns(records.CheckpointWarning, match=f"checkpoint step {newest} is corrupt"):
        summary = reference.task.train_and_evaluate(reference.config, run)
    assert f"resumed from step {previous}\n" in capsys.readouterr().out
    assert [p.name for p in (run / "checkpoints.corrupt").iterdir()] == [str(newest)]
    assert checkpoint_steps(run)[-1] == newest
    assert stable(summary) == stable(reference.summary)
    assert stable(records.read_metrics(run / "metrics.jsonl")) == stable(reference.lines)
    a, b = saved_state(run, newest), saved_state(reference.workdir, newest)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for (path, x), y in zip(jax.tree.leaves_with_path(a), jax.tree.leaves(b), strict=True):
        if jax.tree_util.keystr(path, simple=True) in VOLATILE:  # the search's fit times
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), path


def test_a_locked_directory_fails_before_any_work(reference, monkeypatch):
    monkeypatch.setattr(reference.task, "setup", lambda config: pytest.fail("setup ran"))
    with records.lock_run_dir(reference.workdir):  # as another process holding it
        with pytest.raises(records.RunLockedError, match=str(reference.workdir)):
            reference.task.train_and_evaluate(reference.config, reference.workdir)


def test_a_directory_of_another_config_is_refused(reference, monkeypatch):
    monkeypatch.setattr(reference.task, "setup", lambda config: pytest.fail("setup ran"))
    changed = apply_overrides(reference.config, [reference.change])
    with pytest.raises(ConfigError, match="different config"):
        reference.task.train_and_evaluate(changed, reference.workdir)
