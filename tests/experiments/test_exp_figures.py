"""``tnlib figures``: every run the registry names has a config its task accepts, and
the cheapest figure (core_shapes, smoke size) runs end to end: its run is made through
the task, reused on a second call, resumed when cut short, refused when its config
changed, and the figure's PNG, PDF and markdown carry our numbers and the paper's
claim, the commit and the device."""

import json
import shutil

import pytest

from tnlib.experiments import TASKS, figures, get_task
from tnlib.experiments.config import ConfigError


@pytest.fixture
def rank_study_task(monkeypatch):
    # the rank_study registry line may not be applied yet; harmless once it is
    monkeypatch.setitem(TASKS, "rank_study", ".rank_study")


def test_registry_configs_pass_their_task_checks(rank_study_task):
    assert set(figures.FIGURES) == {"mps_bond_dim", "structured_scaling", "structure_search",
                                    "core_shapes", "tt_layer_compression", "low_rank_training",
                                    "compress_finetune"}
    for fig in figures.FIGURES.values():
        assert fig.script.is_file(), fig.script
        for quick in (True, False):
            specs = fig.runs(quick)
            assert specs
            dirs = [s.workdir("runs") for s in specs]
            assert len(set(dirs)) == len(dirs), fig.name  # no two runs share a directory
            for spec in specs:
                config = spec.load()  # config file, argument and overrides
                get_task(config.task).check_config(config)
                assert config.seed == spec.seed


def test_core_shapes_figure_end_to_end(tmp_path, rank_study_task, capsys):
    spec = figures.RunSpec("configs/core_shapes.py:smoke")
    out = tmp_path / "out"
    files = figures.make_figure("core_shapes", root=tmp_path / "runs", out_dir=out,
                                runs=[spec], quick=True)
    assert {k: p.name for k, p in files.items()} == {
        "png": "core_shapes.png", "pdf": "core_shapes.pdf", "md": "core_shapes.md"}
    for p in files.values():
        assert p.is_file() and p.stat().st_size > 0
    run = spec.workdir(tmp_path / "runs")
    assert run == tmp_path / "runs" / "core_shapes" / "smoke" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    md = files["md"].read_text()
    # our numbers (as the script formats them) beside the paper's claim and provenance
    assert f"geometric mean {summary['error_ratio_gmean']:.4f} (paper: ~1" in md
    for row in summary["rows"]:
        assert f"{row['error_ratio']:.4f}" in md and str(tuple(row["greedy"]["shape"])) in md
    assert "Paper: packing core shapes" in md
    # the worst case and every row where packing loses to uniform ranks are named
    worst = max(row["error_ratio"] for row in summary["rows"])
    assert f"worst {worst:.4f}" in md
    losses = [row for row in summary["rows"]
              if row["error_ratio"] > row["error_ratio_uniform"]]
    assert f"better or equal in {len(summary['rows']) - len(losses)}/" in md
    for row in losses:
        assert f"{row['tensor']} at {row['budget_fraction']:.0%} (relative error" in md
    assert (meta["git_commit"] or "unknown")[:12] in md and meta["devices"][0] in md
    assert "tnlib run configs/core_shapes.py:smoke" in md

    # a second call reuses the finished run (nothing is recomputed) and re-plots
    capsys.readouterr()
    figures.make_figure("core_shapes", root=tmp_path / "runs", out_dir=out, runs=[spec])
    assert "[figures] tnlib run" not in capsys.readouterr().out
    # a study cut short (as if killed before its second case was saved) resumes: the
    # finished case is kept, the missing one recomputed
    shutil.rmtree(run / "checkpoints" / "2")
    (run / "summary.json").unlink()
    figures.make_figure("core_shapes", root=tmp_path / "runs", out_dir=out, runs=[spec])
    assert "resumed from step 1\n" in capsys.readouterr().out
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
    again = json.loads((run / "summary.json").read_text())
    assert again["rows"][0] == summary["rows"][0]
    assert [r["greedy"]["shape"] for r in again["rows"]] == \
        [r["greedy"]["shape"] for r in summary["rows"]]
    # --plot-only with a run missing is an error; --allow-missing plots the rest and
    # says in the markdown which run is missing and how to make it
    other = figures.RunSpec("configs/core_shapes.py:smoke", seed=1)
    with pytest.raises(ConfigError, match="1 of 2 run.*--allow-missing"):
        figures.make_figure("core_shapes", root=tmp_path / "runs", out_dir=out,
                            runs=[spec, other], plot_only=True)
    files = figures.make_figure("core_shapes", root=tmp_path / "runs", out_dir=out,
                                runs=[spec, other], plot_only=True, allow_missing=True)
    md = files["md"].read_text()
    assert "## Not run (1 of 2 runs)" in md
    assert f"- `{other.command(tmp_path / 'runs')}`" in md.split("## Not run")[1]
    assert f"{again['rows'][0]['error_ratio']:.4f}" in md.split("## Not run")[0]
    assert not other.workdir(tmp_path / "runs").exists()  # nothing was run
    with pytest.raises(ConfigError, match="2 of 2 run"):  # nothing to plot at all
        figures.make_figure("core_shapes", root=tmp_path / "none", out_dir=out,
                            runs=[spec, other], plot_only=True, allow_missing=True)
    # a run directory whose config no longer matches is refused, not silently reused
    cfg = json.loads((run / "config.json").read_text())
    cfg["study"]["eval_n_iter"] += 1
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="different config"):
        figures.make_figure("core_shapes", root=tmp_path / "runs", out_dir=out, runs=[spec])
    with pytest.raises(ConfigError, match="unknown figure"):
        figures.make_figure("nope", root=tmp_path)


def test_mps_bond_dim_plot_reports_seeds_spread_and_the_paper(tmp_path):
    """The mps_bond_dim script on hand-made run directories (its runs take minutes to
    hours): per bond and series, the mean test error over seeds with its range and worst
    seed against the paper's value, train errors, the bonds the sweeps reached and the
    paper / TNML / ours settings table."""
    from tnlib.experiments.figures import load_script

    def run(task, bond, seed, test_acc, train_acc, dims):
        d = tmp_path / f"{task}{bond}s{seed}"
        d.mkdir()
        model = {"max_bond": bond} if task == "sweep" else {"bond_dim": bond}
        (d / "config.json").write_text(json.dumps({"task": task, "seed": seed,
                                                   "model": model, "train": {}}))
        (d / "meta.json").write_text(json.dumps({"git_commit": "abc", "devices": ["cpu:0"]}))
        (d / "summary.json").write_text(json.dumps(
            {"test_accuracy": test_acc, "n_train": 60000, "wall_s": 10.0, "bond_dims": dims}))
        (d / "metrics.jsonl").write_text(json.dumps({"train_acc": train_acc}) + "\n")
        return {"dir": str(d), "seed": seed, "command": f"tnlib run {task} {bond} {seed}"}

    runs = [run("sweep", 10, 0, 0.954, 0.95, [1, 2, 10, 9, 1]),
            run("sweep", 10, 1, 0.950, 0.94, [1, 2, 8, 10, 1]),
            run("sweep", 120, 0, 0.9905, 0.999, [1, 2, 120, 60, 1]),
            run("classification", 10, 0, 0.978, 0.99, [])]
    script = load_script(figures.FIGURES["mps_bond_dim"])
    (tmp_path / "out").mkdir()
    files = script.plot(runs, tmp_path / "out")
    assert files["png"].is_file() and files["pdf"].is_file()
    md = files["md"].read_text()
    sweep10 = next(line for line in md.splitlines() if line.startswith("| 10 | two-site"))
    assert "4.80 [4.60, 5.00]" in sweep10 and "| ~5 |" in sweep10  # mean [min, max]
    assert "| 0,1 |" in sweep10 and "max 10, mean" in sweep10 and "5.50" in sweep10
    assert "-0.2 pp" in sweep10 and "+0 pp" in sweep10  # mean and worst seed vs paper
    assert "0.97" in md and "< 1" not in md  # the paper's value, not a bound
    assert "| label index | moves with the sweep | fixed on site N / 2 |" in md
    assert "Adam on all cores" in md and "2.20 [2.20, 2.20]" in md


def test_low_rank_training_figure_sets_our_runs_beside_the_papers_table(tmp_path):
    specs = [figures.RunSpec("configs/dlrt_mnist.py:tau=0.4,smoke"),
             figures.RunSpec("configs/dlrt_mnist.py:tau=0.4,smoke", seed=1),
             figures.RunSpec("configs/dlrt_mnist.py:dense,smoke"),
             figures.RunSpec("configs/dlrt_mnist.py:tau=0.4,smoke,finetune=1")]
    files = figures.make_figure("low_rank_training", root=tmp_path / "runs",
                                out_dir=tmp_path / "out", runs=specs, quick=True)
    md = files["md"].read_text()
    summaries = [json.loads((s.workdir(tmp_path / "runs") / "summary.json").read_text())
                 for s in specs]
    acc = [100 * s["test_accuracy"] for s in summaries[:2]]
    # the spread over seeds, each seed's ranks, the dense baseline and the paper's values
    assert f"{sum(acc) / 2:.2f} [{min(acc):.2f}, {max(acc):.2f}]" in md
    for s in summaries[:2]:
        assert ",".join(map(str, s["ranks"])) in md
    assert f"dense baseline {100 * summaries[2]['test_accuracy']:.2f}%" in md
    assert "paper 98.54%" in md and "| setting | paper | official code | ours |" in md
    assert f"worst single run {min(acc):.2f}% (tau 0.4)" in md
    assert "| 2 epochs | 0.4 | 2 |" in md  # per schedule (smoke: 2 epochs), tau, seeds
    # the fixed-rank phase from seed 0's run: its own row, the adapted ranks kept
    ft = summaries[3]
    assert ft["ranks"] == summaries[0]["ranks"]
    assert (f"| 2 + 1 fixed-rank epochs | 0.4 | 1 | {100 * ft['test_accuracy']:.2f} "
            in md)
    # the official logs beside ours (ours at 30 fixed-rank epochs: not run here)
    assert "| 0.09 | 188 | 90.23 | 97.74 / 97.06 / 97.81 | 98.34 | not run |" in md


def test_structure_search_figure_counts_successes_per_order_and_instance(tmp_path):
    specs = [figures.RunSpec(f"configs/search_planted.py:algo={a},instance={i},smoke")
             for a in ("tnale", "tnls") for i in range(2)]
    files = figures.make_figure("structure_search", root=tmp_path / "runs",
                                out_dir=tmp_path / "out", runs=specs, quick=True)
    md = files["md"].read_text()
    assert "| setting | paper | official code | ours |" in md
    assert "params / size + 200 RSE" in md and "not shown" in md
    for spec in specs:
        s = json.loads((spec.workdir(tmp_path / "runs") / "summary.json").read_text())
        # the task's own success flag (relative error <= 1e-2, params <= planted) is the
        # figure's criterion; its final counts appear in the per-instance rows
        assert s["size"] == 3 ** 4 and s["planted_params"] >= 1
        assert len(s["planted_perm"]) == 4
    for algo in ("tnale", "tnls"):
        ok = sum(json.loads((sp.workdir(tmp_path / "runs") / "summary.json").read_text())
                 ["success"] for sp in specs if f"algo={algo}" in sp.config)
        assert f"| 4 | {algo} | 2 | {ok}/2 |" in md


def test_tt_layer_compression_figure_is_whole_network_compression_vs_error(tmp_path):
    specs = [figures.RunSpec(f"configs/tensornet_mnist.py:{p},smoke")
             for p in ("layer=dense", "layer=none", "rank=1")]
    files = figures.make_figure("tt_layer_compression", root=tmp_path / "runs",
                                out_dir=tmp_path / "out", runs=specs, quick=True)
    md = files["md"].read_text()
    s = [json.loads((sp.workdir(tmp_path / "runs") / "summary.json").read_text())
         for sp in specs]
    dense, none, tt1 = s
    # TensorNet's network: 1024 -> 625 -> 10 dense; 1024 -> 10; TT rank 1
    assert dense["n_params"] == 1024 * 625 + 625 + 625 * 10 + 10
    assert none["n_params"] == 1024 * 10 + 10
    assert tt1["n_params"] == (4 * 5 + 8 * 5 + 8 * 5 + 4 * 5) + 625 + 6260
    for row, (kind, rank) in zip(s, (("dense", "-"), ("none", "-"), ("tt", 1)), strict=True):
        comp = dense["n_params"] / row["n_params"]
        err = 100 * (1 - row["test_accuracy"])
        assert f"| {kind} | {rank} | {row['n_params']} | {comp:.1f} | 1 | {err:.2f} " in md
    assert "| setting | paper | official code | ours |" in md and "not shown" in md
