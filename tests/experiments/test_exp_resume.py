"""A run killed mid-training resumes from its last checkpoint with the same data order."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tnlib.experiments import classification, training
from tnlib.experiments.config import apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 8  # digits:smoke trains on 256 images in batches of 32
EPOCHS = 40


def command(workdir: Path) -> list[str]:
    return [
        sys.executable, "-m", "tnlib.experiments.cli", "run",
        str(ROOT / "configs" / "mps_digits.py") + ":smoke", "--workdir", str(workdir),
        "--set", f"train.num_epochs={EPOCHS}", "--set", "train.checkpoint_every=10",
        "--set", "train.eval_every=100",
    ]


def checkpoint_steps(workdir: Path) -> list[int]:
    ckpt = workdir / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    env = dict(os.environ, TQDM_DISABLE="1")
    total = STEPS_PER_EPOCH * EPOCHS
    proc = subprocess.Popen(command(tmp_path), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint_steps(tmp_path):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    killed_at = max(checkpoint_steps(tmp_path))
    assert 0 < killed_at < total, "the first run should have been killed mid-training"

    second = subprocess.run(command(tmp_path), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stderr
    resumed = [l for l in second.stdout.splitlines() if l.startswith("resumed from step ")]
    assert resumed, second.stdout
    k = int(resumed[0].split()[-1])
    assert 0 < k < total and k >= killed_at

    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines]
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False)), steps
    assert steps[-1] == total
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == total
    assert second.stdout.strip().splitlines()[-1].startswith("test_accuracy=")
    assert max(checkpoint_steps(tmp_path)) == total


def test_resumed_run_matches_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """Interrupt in-process after step 13, resume from the step-10 checkpoint, and get
    exactly the metrics of a run that was never interrupted (same data order)."""

    config, _, _ = load_config(str(ROOT / "configs" / "mps_digits.py") + ":smoke")
    config = apply_overrides(config, ["train.num_epochs=3", "train.checkpoint_every=5",
                                      "train.log_every=1", "train.eval_every=6"])
    reference = classification.train_and_evaluate(config, tmp_path / "reference")

    real = training.batch_indices
    calls = []

    def interrupt_after_13(seed, step, n, batch_size):
        calls.append(step)
        if step == 13:
            raise KeyboardInterrupt
        return real(seed, step, n, batch_size)

    monkeypatch.setattr(training, "batch_indices", interrupt_after_13)
    with pytest.raises(KeyboardInterrupt):
        classification.train_and_evaluate(config, tmp_path / "resumed")
    monkeypatch.setattr(training, "batch_indices", real)
    capsys.readouterr()
    resumed = classification.train_and_evaluate(config, tmp_path / "resumed")
    assert "resumed from step 10\n" in capsys.readouterr().out

    def metrics(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(l).items() if k != "wall_s"} for l in lines]

    assert metrics("resumed") == metrics("reference")
    assert resumed["test_accuracy"] == reference["test_accuracy"]
    assert resumed["test_loss"] == pytest.approx(reference["test_loss"], rel=1e-6)
    meta = json.loads((tmp_path / "resumed" / "meta.json").read_text())
    assert [s["start_step"] for s in meta["sessions"]] == [0, 10]
