"""The sweep task: a ``:smoke`` run, resuming mid-sweep exactly, a diverging run,
config errors naming the key and its optax step-size schedule (damaged checkpoints
and the lock, as for every task: test_exp_tasks.py; the conversions to and from
``MPSClassifier``: tests/models/test_mps.py).

One reference run (configs/mps_digits_sweep.py:smoke, two sweeps) is shared by the
tests of this module; the other runs have its shapes, so nothing compiles twice.
"""

import contextlib
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orbax.checkpoint as ocp
import pytest

import tnlib.sweep as sw
from tnlib.experiments import records, training
from tnlib.experiments import sweep as task
from tnlib.experiments.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "mps_digits_sweep.py") + ":smoke"


def metrics(workdir):
    return records.read_metrics(workdir / "metrics.jsonl")


def without_wall(lines):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in lines]


def steps(workdir):
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def saved_state(workdir, step):
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state")


def assert_bitwise_equal(a, b):
    assert sorted(a) == sorted(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), k


@pytest.fixture(scope="module")
def config():
    return load_config(SMOKE)[0]


@pytest.fixture(scope="module")
def reference(config, tmp_path_factory):
    """The uninterrupted smoke run."""
    workdir = tmp_path_factory.mktemp("sweep") / "reference"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = task.train_and_evaluate(config, workdir)
    return SimpleNamespace(workdir=workdir, summary=summary, lines=metrics(workdir),
                           out=out.getvalue(), last=saved_state(workdir, steps(workdir)[-1]))


def test_smoke_run_logs_bond_dims(config, reference, capsys):
    """configs/mps_digits_sweep.py:smoke end to end: bond dimensions logged per sweep,
    checkpoints with manifests; started again, a finished run only re-evaluates, and a
    different config refuses the directory."""
    lines, summary, workdir = reference.lines, reference.summary, reference.workdir
    per_sweep = 2 * (64 - 1)  # one runner step is one bond update
    assert summary["updates_per_sweep"] == per_sweep
    assert [r["step"] for r in lines] == [per_sweep * (s + 1)
                                          for s in range(config.train.num_sweeps)]
    assert [r["epoch"] for r in lines] == list(range(1, config.train.num_sweeps + 1))
    # checkpoints every train.checkpoint_every updates, mid-sweep, and at the end
    assert steps(workdir)[-1] == per_sweep * config.train.num_sweeps
    assert 0 < config.train.checkpoint_every < per_sweep
    for r in lines:
        dims = r["bond_dims"]
        assert len(dims) == 64 + 1 and dims[0] == dims[-1] == 1
        assert 1 < max(dims) <= config.model.max_bond
        assert {"train_loss", "train_acc", "test_acc", "test_loss", "lr", "wall_s", "local_loss",
                "discarded", "padded_bond"} <= set(r)
        assert r["padded_bond"] <= config.model.max_bond
    assert 0 <= summary["test_accuracy"] <= 1 and summary["bond_dims"] == lines[-1]["bond_dims"]
    for f in ("config.json", "meta.json", "summary.json", "curves.png", records.LOCK_FILE):
        assert (workdir / f).is_file()
    for s in steps(workdir):
        assert training.verify_manifest(workdir / "checkpoints" / str(s)) == (True, None)
    assert reference.out.strip().splitlines()[-1].startswith("test_accuracy=")

    again = task.train_and_evaluate(config, workdir)
    assert f"resumed from step {2 * per_sweep}" in capsys.readouterr().out
    assert again["test_accuracy"] == summary["test_accuracy"]
    assert metrics(workdir) == lines
    with pytest.raises(ConfigError, match="different config"):
        task.train_and_evaluate(apply_overrides(config, ["train.lr=0.5"]), workdir)


@pytest.mark.slow  # ~6 s of CPU (MNIST loading, its own compilations); digits:smoke above
def test_mnist_smoke_run(tmp_path):  # runs the same code in the default suite
    config = load_config(str(ROOT / "configs" / "mps_mnist_sweep.py") + ":smoke")[0]
    task.check_config(config)
    summary = task.train_and_evaluate(config, tmp_path)
    dims = summary["bond_dims"]
    per_sweep = 2 * (7 * 7 - 1)
    assert len(dims) == 7 * 7 + 1 and 1 < max(dims) <= config.model.max_bond
    assert summary["steps"] == config.train.num_sweeps * per_sweep
    assert 0 <= summary["test_accuracy"] <= 1
    assert steps(tmp_path)[-1] == config.train.num_sweeps * per_sweep


def test_a_diverging_run_stops_with_an_error(config, tmp_path):
    """The gradient solver with a step size far too large: the bond tensors overflow
    within the first sweep, whose end raises (the SVD of a non-finite bond tensor
    returns NaN instead of spinning)."""
    bad = apply_overrides(config, ["train.solver=gd", "train.lr=1000.0", "train.momentum=0.8"])
    with pytest.raises(FloatingPointError, match=r"update 126 diverged .*train\.lr"):
        task.train_and_evaluate(bad, tmp_path / "w")


def test_ctrl_c_in_a_sweep_resumes_exactly(config, reference, tmp_path, monkeypatch, capsys):
    """Ctrl-C at bond update 200 (mid-sweep 2, the label moving left) leaves the
    mid-sweep checkpoint 168 committed; the run started again resumes from it (recomputing the
    environments at the label's site) and ends bitwise equal to the uninterrupted one.
    (Damaged checkpoints and the lock: test_exp_tasks.py.)"""
    real, calls = sw.update, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 200:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    run = tmp_path / "run"
    monkeypatch.setattr(records, "plot_curves", lambda *args, **kwargs: None)  # not tested here
    monkeypatch.setattr(sw, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        task.train_and_evaluate(config, run)
    monkeypatch.setattr(sw, "update", real)
    assert [r["step"] for r in metrics(run)] == [126] and steps(run) == [84, 168]
    assert training.verify_manifest(run / "checkpoints" / "168") == (True, None)
    # mid-sweep: from site 32, 31 updates right to site 63, then 11 left
    assert int(saved_state(run, 168)["center"]) == 63 - 11

    resumed = task.train_and_evaluate(config, run)
    assert "resumed from step 168" in capsys.readouterr().out
    assert resumed["test_accuracy"] == reference.summary["test_accuracy"]
    assert without_wall(metrics(run)) == without_wall(reference.lines)
    assert_bitwise_equal(saved_state(run, 252), reference.last)


@pytest.mark.parametrize(
    "key, value, needle",
    [("model.max_bnd", 3, "unknown config key 'model.max_bnd'"),
     ("train.num_sweep", 3, "unknown config key 'train.num_sweep'"),
     ("mesh.model", 2, "set mesh.model=1"), ("mesh.data", 0, "a positive int"),
     ("model.max_bond", 2.5, "expected an int"), ("model.max_bond", True, "expected an int"),
     ("train.lr", "1e-3", "expected a float"), ("train.cutoff", float("nan"), "finite"),
     ("train.num_sweeps", 0, "an int >= 1"), ("train.momentum", 1.0, "[0, 1)"),
     ("train.loss", "hinge", "is not one of"), ("train.cutoff", None, "may not be None"),
     ("model.init_bond", 9, "exceeds model.max_bond"),
     ("model.min_bond", 9, "exceeds model.max_bond"), ("model.init", "zeros", "is not one of"),
     ("train.solver", "newton", "is not one of"), ("train.passes", -1, "an int >= 0"),
     ("train.l2", -1.0, "a float >= 0"), ("train.loss", "cross_entropy", "squared loss")])
def test_config_errors_name_the_key(config, key, value, needle):
    c = config.copy_and_resolve_references()
    with c.ignore_type():  # as a config file would write it (bypassing --set's checks)
        *parents, leaf = key.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        task.check_config(c)
    assert needle in str(e.value)


def test_errors_known_after_loading_leave_no_directory(config, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.n_test=1000 exceeds"):
        task.train_and_evaluate(apply_overrides(config, ["data.n_test=1000"]), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_schedule_is_the_former_hand_written_cosine(config):
    """The optax schedule gives the step sizes of the cosine the task used to write by
    hand (from lr at the first sweep to lr * end_lr_factor at the last) and a
    constant lr when asked or for a single sweep."""
    def by_hand(lr, end_factor, n, i):
        end = lr * end_factor
        return end + 0.5 * (lr - end) * (1 + math.cos(math.pi * i / (n - 1)))

    for n, end_factor in ((2, 0.0), (7, 0.1), (40, 0.01)):
        tc = apply_overrides(config, ["train.schedule=cosine", f"train.num_sweeps={n}",
                                      f"train.end_lr_factor={end_factor}",
                                      "train.lr=0.3"]).train
        schedule = task.make_schedule(tc)
        got = [float(schedule(i)) for i in range(n)]
        np.testing.assert_allclose(got, [by_hand(0.3, end_factor, n, i) for i in range(n)],
                                   rtol=1e-6)
        assert got[0] == pytest.approx(0.3) and got[-1] == pytest.approx(0.3 * end_factor)
    for sets in (["train.schedule=constant", "train.num_sweeps=5"],
                 ["train.schedule=cosine", "train.num_sweeps=1"]):
        schedule = task.make_schedule(apply_overrides(config, sets + ["train.lr=0.3"]).train)
        assert [float(schedule(i)) for i in range(5)] == [pytest.approx(0.3)] * 5

