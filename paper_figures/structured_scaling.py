"""Training loss against training compute for MLPs with dense and structured hidden
layers (Qiu et al. 2024, "Compute Better Spent"), on MNIST.

    tnlib figures structured_scaling [--quick]

Reads the ``configs/structured_mlp_mnist.py:layer=...,width=...`` runs: ``metrics.jsonl``
(train loss per logged step), ``config.json`` (batch size) and ``model_cost.json``
(forward FLOPs per example, ``StructuredMLP.flops()``). Training compute after ``s``
steps is ``3 * flops_per_example * batch_size * s`` (forward plus backward, the usual
factor 3). Each structure's compute frontier is the running minimum of the train loss
over all its runs' curves; frontiers are compared by log-log interpolation.
Reading and arithmetic only.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "structured_scaling"
LAYERS = ("dense", "lowrank", "kronecker", "monarch", "btt", "tt")

# S. Qiu, A. Potapczynski, M. Finzi, M. Goldblum, A. G. Wilson, "Compute Better Spent:
# Replacing Dense Layers with Structured Matrices", ICML 2024 (arXiv:2406.06248): for
# MLPs trained on CIFAR-10 with muP learning rates, BTT reaches a lower training loss
# than dense layers at equal training compute (their scaling-law figures). The claim
# is qualitative here: the sign of (dense loss - BTT loss) at equal compute.
PAPER_CLAIM = "BTT train loss < dense train loss at equal training compute (CIFAR-10 MLPs)"
PAPER_SIGN = +1  # dense - BTT > 0


def _curve(run):
    cost = run["model_cost"]["flops_per_example"]
    batch = run["config"]["train"]["batch_size"]
    return [(3.0 * cost * batch * m["step"], m["train_loss"]) for m in run["metrics"]
            if m.get("train_loss") is not None]


def _frontiers(runs):
    out = {}
    for layer in LAYERS:
        pts = [p for r in runs if r["config"]["model"]["layer"] == layer for p in _curve(r)]
        if pts:
            out[layer] = C.lower_envelope(pts)
    return out


def _at(front, c):
    return C.interp_loglog([x for x, _ in front], [y for _, y in front], c)


def plot(runs, out_dir, *, quick: bool = False):
    runs = [C.load_run(r) for r in runs]
    missing = [r["dir"] for r in runs if "model_cost" not in r]
    if missing:
        raise FileNotFoundError(f"{missing[0]}/model_cost.json is missing; rerun "
                                "`tnlib figures structured_scaling` to write it")
    fronts = _frontiers(runs)
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    colors = {layer: f"C{i}" for i, layer in enumerate(LAYERS)}
    for r in runs:
        xs, ys = zip(*_curve(r), strict=True)
        ax.plot(xs, ys, color=colors[r["config"]["model"]["layer"]], lw=0.6, alpha=0.35)
        ax.plot(xs[-1], ys[-1], "o", ms=3, color=colors[r["config"]["model"]["layer"]])
    for layer, front in fronts.items():
        ax.plot(*zip(*front, strict=True), color=colors[layer], lw=2, label=layer)
    ax.set(xscale="log", yscale="log", xlabel="training compute (FLOPs)",
           ylabel="train loss (cross-entropy)",
           title="Structured MLPs on MNIST" + (" (quick)" if quick else "")
           + ": compute frontiers")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2)
    files = C.save(fig, out_dir, NAME)

    # equal-compute comparison: the largest compute every frontier reaches
    lo = max(f[0][0] for f in fronts.values())
    hi = min(f[-1][0] for f in fronts.values())
    dense = fronts.get("dense")
    comp_rows, headline = [], "dense or BTT runs are missing"
    if dense is not None and hi > lo:
        # log-spaced, with the ends exactly lo and hi (exp(log(lo)) can fall an ulp
        # outside a frontier, where the interpolation is undefined)
        grid = [lo] + [math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * k / 19)
                       for k in range(1, 19)] + [hi]
        for layer, front in fronts.items():
            at_hi, d_hi = _at(front, hi), _at(dense, hi)
            wins = sum(_at(front, c) < _at(dense, c) for c in grid)
            comp_rows.append((layer, C.fmt(at_hi), C.fmt(d_hi / at_hi) if at_hi else "n/a",
                              f"{wins}/{len(grid)}"))
        if "btt" in fronts:
            b, d = _at(fronts["btt"], hi), _at(dense, hi)
            sign = (d > b) - (d < b)
            headline = (f"at {hi:.3g} training FLOPs (the largest compute every structure "
                        f"reached) the frontier train loss is dense {d:.4g} vs BTT {b:.4g}: "
                        f"dense / BTT = {d / b:.3g}; the paper's claim (BTT lower) "
                        f"{'holds' if sign == PAPER_SIGN else 'does not hold'} here, by "
                        f"{C.difference(d, b)} (dense - BTT, dense / BTT)")
    run_rows = []
    for r in sorted(runs, key=lambda r: (LAYERS.index(r["config"]["model"]["layer"]),
                                         r["config"]["model"]["width"])):
        m, s = r["config"]["model"], r["summary"]
        curve = _curve(r)
        run_rows.append((m["layer"], m["width"], m.get("rank") or "-", s["n_params"],
                         r["model_cost"]["flops_per_example"], f"{curve[-1][0]:.3g}",
                         C.fmt(curve[-1][1]), f"{s['test_accuracy']:.4f}"))
    ds = runs[0]["config"]["data"]
    why = ("Differences from the paper: MNIST instead of CIFAR-10 (not available offline), "
           f"inputs {'28x28' if ds['downsample'] == 1 else 'pooled by ' + str(ds['downsample'])}"
           + (", Adam with the layers' muP initialization and per-core muP learning-rate "
              "multipliers (train.mup)" if runs[0]["config"]["train"].get("mup") else
              ", plain Adam with the layers' muP initialization but without the per-core muP "
              "learning-rate multipliers")
           + ", one learning rate for every width, and "
           f"{runs[0]['config']['train']['num_epochs']} epochs. MNIST is nearly separable by "
           "small MLPs, so train losses reach small values where minibatch noise is large.")
    sections = [f"Paper: {PAPER_CLAIM}.", "", f"Ours: {headline}.", "",
                "Frontier at the largest common compute (loss, dense / layer; wins = grid "
                "points of the common compute range where the layer's frontier is below "
                "dense's):", "",
                C.table(["layer", "frontier train loss", "dense / layer", "wins vs dense"],
                        comp_rows), "",
                C.table(["layer", "width", "rank", "params", "forward FLOPs / example",
                         "training FLOPs", "final train loss", "test acc"], run_rows), "", why]
    files["md"] = C.write_md(out_dir, NAME, "Train loss against training compute, dense vs "
                             "structured MLPs (Qiu et al. 2024)", sections, runs, quick)
    return files


if __name__ == "__main__":
    from tnlib.experiments.figures import main

    sys.exit(main([NAME, "--plot-only", *sys.argv[1:]]))
