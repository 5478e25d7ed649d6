"""The structure-search task: its :smoke config runs end to end, writes its records,
and a run cut short resumes from the saved evaluations to the same result."""

import json
from pathlib import Path

import pytest

from tnlib.experiments import search as task
from tnlib.experiments.config import ConfigError, apply_overrides, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_search_smoke_runs_and_resumes(tmp_path, capsys):
    config, _, _ = load_config(f"{ROOT / 'configs' / 'search_planted.py'}:smoke")
    task.check_config(config)
    summary = task.train_and_evaluate(config, tmp_path)
    for name in ("config.json", "meta.json", "metrics.jsonl", "summary.json",
                 "search_state.json", "search_state.npz"):
        assert (tmp_path / name).is_file(), name
    state = json.loads((tmp_path / "search_state.json").read_text())
    assert summary["n_evals"] == state["count"] == len(state["log"]) <= config.search.max_evals
    best = min(state["log"], key=lambda r: (r["objective"], r["index"]))
    assert summary["ranks"] == best["ranks"] and summary["objective"] == best["objective"]

    # cut the run back to its first batch: resuming replays it and refits the rest
    first = [r for r in state["log"] if r["batch"] == 0]
    (tmp_path / "search_state.json").write_text(json.dumps({"count": len(first), "log": first}))
    capsys.readouterr()
    again = task.train_and_evaluate(config, tmp_path)
    assert f"resumed from {len(first)} evaluations" in capsys.readouterr().out
    state2 = json.loads((tmp_path / "search_state.json").read_text())
    assert [(r["ranks"], r["rse"]) for r in state2["log"]] == \
        [(r["ranks"], r["rse"]) for r in state["log"]]
    assert again["objective"] == summary["objective"] and again["n_evals"] == summary["n_evals"]

    with pytest.raises(ConfigError, match="different config"):
        task.train_and_evaluate(apply_overrides(config, ["problem.lam=1.0"]), tmp_path)
    with pytest.raises(ConfigError, match="search.algorithm"):
        task.check_config(apply_overrides(config, ["search.algorithm=nope"]))
