"""The one run loop (experiments/runner.py) with a tiny fake task: every guarantee of
README "Guarantees" that the runner owns, once, in a few seconds. Each real task then
shows them through its :smoke run (test_exp_tasks.py; SIGKILL of a `tnlib run`
subprocess in test_exp_reliability.py)."""

import dataclasses
import json
import os
import shutil
import warnings

import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tnlib.experiments import records, runner, training
from tnlib.experiments.config import ConfigError

TOTAL = 6


def make_config(**kw):
    return ml_collections.ConfigDict({"task": "fake", "seed": 3, "rate": 0.5, **kw})


class Fake:
    """A task: ``w <- w * (1 + rate) + index`` with loss ``sum(w)``; counts its calls."""

    def __init__(self, interrupt_at=None, total=TOTAL, **task_kw):
        self.calls, self.setups, self.interrupt_at = [], 0, interrupt_at
        self.total, self.task_kw = total, task_kw

    def setup(self, config):
        self.setups += 1

        def step(state, index, tick):
            if index == self.interrupt_at:
                raise KeyboardInterrupt
            self.calls.append(index)
            tick(2)
            w = state["w"] * (1 + config.rate) + index
            return {"w": w}, {"train_loss": jnp.sum(w)}

        def evaluate(state):
            return {"test_loss": float(jnp.sum(state["w"])), "test_acc": 0.5}

        kw = {"checkpoint_every": 2, "keep_checkpoints": 3, "log_every": 2, "eval_every": 3,
              **self.task_kw}
        return runner.Task(state={"w": jnp.arange(3.0)}, total_steps=self.total, step=step,
                           evaluate=evaluate, ticks_per_step=4,
                           summarize=lambda s, final: records.eval_summary(final), **kw)

    def run(self, workdir, config=None):
        return runner.run(config or make_config(), workdir, self.setup)


def saved_w(workdir, step):
    with ocp.StandardCheckpointer() as ckptr:
        return np.asarray(ckptr.restore(workdir / "checkpoints" / str(step) / "state")["w"])


def metrics(workdir):
    return [{k: v for k, v in r.items() if k != "wall_s"}
            for r in records.read_metrics(workdir / "metrics.jsonl")]


@pytest.fixture
def reference(tmp_path, capsys):
    summary = Fake().run(tmp_path / "ref")
    return tmp_path / "ref", summary, capsys.readouterr().out


def test_a_run_logs_evaluates_checkpoints_and_summarizes(reference, capsys):
    workdir, summary, out = reference
    lines = records.read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in lines] == [2, 3, 4, 6]  # log every 2, eval every 3, the last
    assert {"train_loss", "test_loss"} <= set(lines[-1]) and "test_loss" not in lines[0]
    w = np.arange(3.0)
    losses = []
    for i in range(TOTAL):
        w = w * 1.5 + i
        losses.append(w.sum())
    assert lines[0]["train_loss"] == pytest.approx(np.mean(losses[:2]))  # mean over the window
    assert saved_w(workdir, TOTAL).tolist() == w.tolist()
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()) == [2, 4, 6]
    for s in (2, 4, 6):
        assert training.verify_manifest(workdir / "checkpoints" / str(s)) == (True, None)
    assert summary == {"test_accuracy": 0.5, "test_loss": pytest.approx(w.sum()), "steps": 6,
                       "wall_s": lines[-1]["wall_s"]}
    assert records.read_json(workdir / "summary.json") == summary
    assert records.read_json(workdir / "config.json") == json.loads(make_config().to_json())
    assert records.read_json(workdir / "meta.json")["task"] == "fake"
    assert out.strip().endswith(f"steps=6 wall_s={summary['wall_s']:.1f}")

    again = Fake()  # finished: re-evaluates only
    assert again.run(workdir)["test_loss"] == summary["test_loss"] and again.calls == []
    assert "resumed from step 6" in capsys.readouterr().out
    assert len(records.read_metrics(workdir / "metrics.jsonl")) == len(lines)


def test_ctrl_c_commits_the_save_in_flight_and_the_rerun_matches(reference, tmp_path, capsys):
    ref, _, _ = reference
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Fake(interrupt_at=5).run(run)
    assert sorted(int(p.name) for p in (run / "checkpoints").iterdir()) == [2, 4]
    assert training.verify_manifest(run / "checkpoints" / "4") == (True, None)
    assert [r["step"] for r in metrics(run)] == [2, 3, 4]
    with open(run / "metrics.jsonl", "a") as f:  # a line past the checkpoint, half written
        f.write('{"step": 5, "train_lo')
    fake = Fake()
    fake.run(run)
    assert "resumed from step 4\n" in capsys.readouterr().out and fake.calls == [4, 5]
    assert saved_w(run, TOTAL).tobytes() == saved_w(ref, TOTAL).tobytes()
    assert metrics(run) == metrics(ref)  # no step logged twice, the torn line gone
    sessions = records.read_json(run / "meta.json")["sessions"]
    assert [s["start_step"] for s in sessions] == [0, 4]


def test_damaged_checkpoints_are_set_aside_and_the_previous_one_used(reference, tmp_path,
                                                                       capsys):
    ref, summary, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    files = [p for p in (run / "checkpoints" / "6").rglob("*")
             if p.is_file() and p.name != training.MANIFEST]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    fake = Fake()
    with pytest.warns(records.CheckpointWarning, match="checkpoint step 6 is corrupt"):
        again = fake.run(run)
    assert "resumed from step 4\n" in capsys.readouterr().out and fake.calls == [4, 5]
    assert [p.name for p in (run / "checkpoints.corrupt").iterdir()] == ["6"]
    assert saved_w(run, TOTAL).tobytes() == saved_w(ref, TOTAL).tobytes()
    assert again["test_loss"] == summary["test_loss"] and metrics(run) == metrics(ref)


def test_a_checkpoint_that_does_not_fit_is_an_error_and_nothing_moves(reference, tmp_path):
    ref, _, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)

    class Wider(Fake):
        def setup(self, config):
            task = super().setup(config)
            return dataclasses.replace(task, state={"w": jnp.zeros(5)})

    with warnings.catch_warnings():
        warnings.simplefilter("error", records.CheckpointWarning)
        with pytest.raises(records.CheckpointError, match="step 6 .* is intact"):
            Wider().run(run)
    assert not (run / "checkpoints.corrupt").exists()


def test_the_lock_and_the_config_check_come_before_setup(reference, tmp_path):
    ref, _, _ = reference
    fake = Fake()
    with records.lock_run_dir(ref):  # as another process holding the directory
        with pytest.raises(records.RunLockedError, match=f"{ref}.*PID {os.getpid()}"):
            fake.run(ref)
    with pytest.raises(ConfigError, match="different config"):
        fake.run(ref, make_config(rate=0.25))
    assert fake.setups == 0  # neither loaded anything
    # only the mesh may change between sessions, and an unused key (None) may appear
    assert Fake().run(ref, make_config(mesh={"data": 1}))["steps"] == TOTAL
    assert Fake().run(ref, make_config(extra=None))["steps"] == TOTAL
    with pytest.raises(ConfigError, match="different config"):
        Fake().run(ref, make_config(extra=1))


def test_same_config_ignores_the_mesh_and_unused_keys_at_any_depth():
    a = {"task": "t", "train": {"lr": 0.1, "finetune_from": None}, "mesh": {"data": 2}}
    assert runner.same_config(a, {"task": "t", "train": {"lr": 0.1}})
    assert runner.same_config(make_config(x=None), make_config())
    assert not runner.same_config(a, {"task": "t", "train": {"lr": 0.2}})
    assert not runner.same_config(a, {"task": "t", "train": {"lr": 0.1, "finetune_from": "d"}})


def test_config_errors_of_setup_leave_no_directory(tmp_path):
    def setup(config):
        raise ConfigError("data.n_train=9999 exceeds the data")

    with pytest.raises(ConfigError, match="n_train"):
        runner.run(make_config(), tmp_path / "w", setup)
    assert not (tmp_path / "w").exists()


def test_divergence_and_early_end(tmp_path):
    with pytest.raises(FloatingPointError, match=r"diverged at step 2 \(train loss nan\)"):
        Fake(diverged="diverged at step {step} (train loss {loss})").run(
            tmp_path / "a", make_config(rate=float("inf")))
    fake = Fake(done=lambda state: float(state["w"][0]) > 1.0)
    assert fake.run(tmp_path / "b")["steps"] == 3 and fake.calls == [0, 1, 2]
    assert records.read_metrics(tmp_path / "b" / "metrics.jsonl")[-1]["step"] == 3


# ------------------------------------------------- issue 26: the guarantees in every window


def flip_a_bit(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.name != training.MANIFEST]
    victim = max(files, key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))


def test_every_checkpoint_has_its_manifest_before_the_next_step(tmp_path):
    # item 1: the newest checkpoint was unprotected until the next save
    workdir, seen = tmp_path / "run", []

    class Watch(Fake):
        def setup(self, config):
            task = super().setup(config)
            inner = task.step

            def step(state, index, tick):
                for d in (workdir / "checkpoints").glob("[0-9]*"):
                    seen.append((index, d.name, (d / training.MANIFEST).exists()))
                return inner(state, index, tick)

            return dataclasses.replace(task, step=step)

    Watch().run(workdir)
    assert (3, "2", True) in seen and all(has for _, _, has in seen)


def test_a_checkpoint_without_its_manifest_is_set_aside_not_trusted(reference, tmp_path,
                                                                    capsys):
    # item 1: a finished run whose newest manifest is gone and a bit flipped was
    # restored silently and its summary.json rewritten
    ref, summary, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "checkpoints" / "6" / training.MANIFEST).unlink()
    flip_a_bit(run / "checkpoints" / "6")
    fake = Fake()
    with pytest.warns(records.CheckpointWarning, match="step 6 is not verified.*integrity"):
        again = fake.run(run)
    assert "resumed from step 4\n" in capsys.readouterr().out and fake.calls == [4, 5]
    assert [p.name for p in (run / "checkpoints.corrupt").iterdir()] == ["6"]
    assert saved_w(run, TOTAL).tobytes() == saved_w(ref, TOTAL).tobytes()
    assert again["test_loss"] == summary["test_loss"] and metrics(run) == metrics(ref)


def test_a_kill_before_the_manifest_keeps_the_previous_checkpoint(reference, tmp_path,
                                                                  monkeypatch):
    # item 1: with keep_checkpoints=1 orbax deleted the previous checkpoint at the save,
    # before the new one had a manifest; now pruning waits for the manifest
    ref, _, _ = reference
    run = tmp_path / "run"

    def killed(step_dir, step):  # the process dies between orbax's save and the record
        if step == 4:
            raise SystemExit("killed")
        return write(step_dir, step)

    write = training.write_manifest
    monkeypatch.setattr(training, "write_manifest", killed)
    with pytest.raises(SystemExit):
        Fake(keep_checkpoints=1).run(run)
    monkeypatch.setattr(training, "write_manifest", write)
    assert sorted(p.name for p in (run / "checkpoints").glob("[0-9]*")) == ["2", "4"]
    assert training.verify_manifest(run / "checkpoints" / "2") == (True, None)
    with pytest.warns(records.CheckpointWarning, match="step 4 is not verified"):
        Fake(keep_checkpoints=1).run(run)
    assert saved_w(run, TOTAL).tobytes() == saved_w(ref, TOTAL).tobytes()
    assert sorted(p.name for p in (run / "checkpoints").glob("[0-9]*")) == ["6"]


def test_a_missing_config_json_keeps_the_config_check(reference, tmp_path):
    # item 2: rm config.json turned the different-config check off
    ref, _, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "config.json").unlink()
    fake = Fake()
    with pytest.raises(ConfigError, match=r"different config .*checkpoints/6/meta"):
        fake.run(run, make_config(rate=0.25))
    assert fake.setups == 0 and not (run / "config.json").exists()
    assert Fake().run(run)["steps"] == TOTAL  # the same config still resumes
    # config.json replaced by another config's: the checkpoint's own copy still refuses
    shutil.rmtree(run / "checkpoints.corrupt", ignore_errors=True)
    records.write_json(run / "config.json", json.loads(make_config(rate=0.25).to_json()))
    with pytest.raises(ConfigError, match="step 6 .* different config"):
        Fake().run(run, make_config(rate=0.25))


def test_checkpoints_with_no_config_anywhere_are_refused(reference, tmp_path):
    ref, _, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "config.json").unlink()
    shutil.rmtree(run / "checkpoints" / "2")  # keep one step; strip its stored config
    for step in ("4", "6"):
        meta = next((run / "checkpoints" / step / "meta").glob("*"))
        stored = json.loads(meta.read_text())
        del stored["config"]
        meta.write_text(json.dumps(stored))
    with pytest.raises(ConfigError, match="no config.json, and no checkpoint stores"):
        Fake().run(run)


def test_ctrl_c_at_a_save_start_waits_for_the_save_and_its_manifest(reference, tmp_path,
                                                                    monkeypatch):
    # item 3: Ctrl-C within ~10 ms of a save's start lost that save
    import signal

    from tnlib.experiments import faults

    ref, _, _ = reference
    run = tmp_path / "run"
    for window in ("save", "commit"):
        shutil.rmtree(run, ignore_errors=True)
        monkeypatch.setattr(faults, "_PLAN", (window, 2, signal.SIGINT))
        monkeypatch.setattr(faults, "_seen", {})
        fake = Fake()
        with pytest.raises(KeyboardInterrupt):
            fake.run(run)
        assert fake.calls == [0, 1, 2, 3]  # stopped right after the save of step 4
        assert training.verify_manifest(run / "checkpoints" / "4") == (True, None)
    monkeypatch.setattr(faults, "_PLAN", None)
    fake = Fake()
    fake.run(run)
    assert fake.calls == [4, 5]
    assert saved_w(run, TOTAL).tobytes() == saved_w(ref, TOTAL).tobytes()


def test_metrics_after_resume_equal_the_uninterrupted_run_off_the_log_cadence(tmp_path):
    # item 4: checkpoint_every=2, log_every=3: the line at step 3 after a resume from
    # step 2 averaged one step instead of three
    kw = {"checkpoint_every": 2, "log_every": 3, "eval_every": 0}
    Fake(**kw).run(tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        Fake(interrupt_at=2, **kw).run(tmp_path / "run")
    Fake(**kw).run(tmp_path / "run")
    assert [r["step"] for r in metrics(tmp_path / "ref")] == [3, 6]
    assert metrics(tmp_path / "run") == metrics(tmp_path / "ref")


def test_a_damaged_line_inside_metrics_jsonl_is_reported_and_kept(reference, tmp_path):
    # item 4: a corrupt line in the middle was silently deleted on resume
    ref, _, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    shutil.rmtree(run / "checkpoints" / "6")
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    original = "\n".join([lines[0], "{garbage", *lines[1:]]) + "\n"
    path.write_text(original)
    with pytest.warns(records.MetricsWarning, match=r"line 2\).*metrics.jsonl.damaged"):
        Fake().run(run)
    assert (run / "metrics.jsonl.damaged").read_text() == original
    assert metrics(run) == metrics(ref)


def test_a_workdir_that_cannot_hold_a_run_is_a_config_error(tmp_path, monkeypatch):
    # item 7: raw FileExistsError / PermissionError tracebacks before
    (tmp_path / "file").write_text("x")
    for bad, match in ((tmp_path / "file", "is a file"),
                       (tmp_path / "file" / "run", "cannot be created")):
        with pytest.raises(ConfigError, match=match):
            Fake().run(bad)
    real_touch = type(tmp_path).touch

    def read_only(self, *a, **kw):
        if ".tnlib-write-probe" in self.name:
            raise PermissionError(30, "Read-only file system")
        return real_touch(self, *a, **kw)

    monkeypatch.setattr(type(tmp_path), "touch", read_only)
    with pytest.raises(ConfigError, match="cannot be written .*Read-only file system"):
        Fake().run(tmp_path / "ro")


def test_an_unreadable_config_json_is_a_config_error_naming_it(reference, tmp_path):
    ref, _, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "config.json").write_text('{"task": "fake", "se')
    with pytest.raises(ConfigError, match=f"cannot read {run / 'config.json'}"):
        Fake().run(run)


def test_an_unreadable_meta_json_is_reported_and_kept(reference, tmp_path):
    ref, _, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    (run / "meta.json").write_text("{torn")
    with pytest.warns(records.MetricsWarning, match=r"meta.json is not valid JSON.*damaged"):
        Fake().run(run)
    assert (run / "meta.json.damaged").read_text() == "{torn"
    assert records.read_json(run / "meta.json")["task"] == "fake"
