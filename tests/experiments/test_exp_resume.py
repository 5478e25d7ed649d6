"""A run killed mid-training resumes from its last checkpoint with the same data order."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS_PER_EPOCH = 8  # digits:smoke trains on 256 images in batches of 32
EPOCHS = 60


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
