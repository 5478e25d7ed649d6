"""The structure-search task: its :smoke config runs end to end through the runner, one
step per fitted batch, and its records agree with the search's own result. (Resuming,
damaged checkpoints and the lock are tested for every task in test_exp_tasks.py.)"""

from pathlib import Path

import pytest

from tnlib.experiments import records
from tnlib.experiments import search as task
from tnlib.experiments.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_search_smoke_run_records_every_batch(tmp_path, capsys):
    config, _, _ = load_config(f"{ROOT / 'configs' / 'search_planted.py'}:smoke")
    task.check_config(config)
    summary = task.train_and_evaluate(config, tmp_path)
    for name in ("config.json", "meta.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).is_file(), name
    lines = records.read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in lines] == list(range(1, len(lines) + 1))
    evals = [r["n_evals"] for r in lines]
    assert evals == sorted(evals) and evals[-1] == summary["n_evals"] <= config.search.max_evals
    best = [r["best_objective"] for r in lines]
    assert best == sorted(best, reverse=True)  # the best so far never gets worse
    assert best[-1] == summary["objective"] and lines[-1]["best_params"] == summary["n_params"]
    assert summary["steps"] >= len(lines) and summary["planted_params"] > 0
    assert records.read_json(tmp_path / "meta.json")["planted_params"] == summary["planted_params"]
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(
        f"n_params={summary['n_params']} (planted {summary['planted_params']})")

    # the state the checkpoints hold gives back the search's log
    state = task.setup(config).load(*_last_checkpoint(tmp_path))
    assert len(state.log) == summary["n_evals"]
    assert min(r.objective for r, _ in state.log) == summary["objective"]
    with pytest.raises(ConfigError, match="search.algorithm"):
        task.check_config(apply_overrides(config, ["search.algorithm=nope"]))


def _last_checkpoint(workdir):
    import orbax.checkpoint as ocp

    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(workdir / "checkpoints" / str(step) / "state"), {}
