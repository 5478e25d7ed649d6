"""Every classification config's ``:smoke`` size trains end to end through the Python
API and writes its records. (configs/mps_digits.py and the configs of the other tasks
run in test_exp_tasks.py, with the README guarantees.)"""

import json
from pathlib import Path

import pytest

from tnlib.experiments import get_task
from tnlib.experiments.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
# Training configs (task "classification") but the one test_exp_tasks.py runs.
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py")
                 if not p.name.startswith("_") and p.name != "mps_digits.py"
                 and load_config(f"{p}:smoke")[0].task == "classification")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_smoke_run_writes_everything(path, tmp_path, capsys):
    config, _, _ = load_config(f"{path}:smoke")
    task = get_task(config.task)
    task.check_config(config)
    summary = task.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out

    for name in ("config.json", "meta.json", "metrics.jsonl", "summary.json", "curves.png"):
        assert (tmp_path / name).is_file(), name
    steps = [int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()]
    assert summary["steps"] in steps

    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(config.to_json())
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert {"git_commit", "git_dirty", "python", "packages", "devices", "start_time"} <= set(meta)
    assert {"jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "tnlib"} <= set(
        meta["packages"])

    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps_logged = [r["step"] for r in lines]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == summary["steps"]
    train = [r for r in lines if "train_loss" in r]
    assert train and {"epoch", "train_acc", "lr", "wall_s"} <= set(train[0])
    assert "test_acc" in lines[-1] and "test_loss" in lines[-1]

    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"test_accuracy={summary['test_accuracy']:.4f} test_loss=")
    assert f"steps={summary['steps']} wall_s=" in last

    # Started again, a finished run only re-evaluates: same summary, no new metrics lines.
    again = task.train_and_evaluate(config, tmp_path)
    out = capsys.readouterr().out
    assert f"resumed from step {summary['steps']}" in out
    assert again["test_accuracy"] == summary["test_accuracy"] and again["steps"] == summary["steps"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == len(lines)

    # A different config refuses to resume in the same directory.
    changed = apply_overrides(config, ["train.lr=0.5"])
    with pytest.raises(ConfigError, match="different config"):
        task.train_and_evaluate(changed, tmp_path)
