"""MNIST test accuracy against the compression ratio of an MLP's hidden layer when it
is a TT-matrix (MPO), a BTT or a low-rank matrix (in the spirit of Novikov et al. 2015).

    tnlib figures tt_layer_compression [--quick]

Reads the ``configs/structured_mlp_mnist.py:width=W,depth=2,...`` runs (one dense,
several ranks of each structure). The hidden W x W layer's compression ratio is
``(W^2 + W) / (its parameters)``, with its parameters the run's total minus those of
the dense input and readout layers (the same in every run: the dense run's total less
``W^2 + W``). Reading and arithmetic only.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "tt_layer_compression"
LAYERS = ("tt", "btt", "lowrank")
TOLERANCE_PP = 1.0  # "keeps the accuracy": within this many percentage points of dense

# A. Novikov, D. Podoprikhin, A. Osokin, D. Vetrov, "Tensorizing Neural Networks",
# NeurIPS 2015 (arXiv:1509.06569): replacing fully connected layers by TT-layers
# compresses them by large factors with little loss of accuracy, and TT-layers keep
# more accuracy than low-rank layers at the same number of parameters (their MNIST
# experiments and Fig. 1). Qualitative: accuracy within TOLERANCE_PP of dense at high
# compression, and TT >= low-rank at equal compression.
PAPER_CLAIM = ("TT layers compress a fully connected layer by large factors with little "
               "accuracy loss, and beat low-rank layers at equal compression")


def _acc_at(points, ratio):
    """Test accuracy at ``ratio`` on a structure's (compression, accuracy) curve
    (linear in log compression); None outside its range."""
    pts = sorted(points)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= ratio <= x1:
            t = 0.0 if x1 == x0 else (math.log(ratio) - math.log(x0)) / (
                math.log(x1) - math.log(x0))
            return (1 - t) * y0 + t * y1
    return pts[0][1] if len(pts) == 1 and pts[0][0] == ratio else None


def plot(runs, out_dir, *, quick: bool = False):
    runs = [C.load_run(r) for r in runs]
    dense = [r for r in runs if r["config"]["model"]["layer"] == "dense"]
    if len(dense) != 1:
        raise ValueError(f"{NAME} needs exactly one dense run, got {len(dense)}")
    dense = dense[0]
    width = dense["config"]["model"]["width"]
    hidden_dense = width * width + width
    outer = dense["summary"]["n_params"] - hidden_dense
    dense_acc = 100.0 * dense["summary"]["test_accuracy"]
    points = {layer: [] for layer in LAYERS}
    rows = []
    for r in runs:
        m, s = r["config"]["model"], r["summary"]
        hidden = s["n_params"] - outer
        ratio = hidden_dense / hidden
        acc = 100.0 * s["test_accuracy"]
        if m["layer"] in points:
            points[m["layer"]].append((ratio, acc))
        rows.append((m["layer"], m.get("rank") or "-", hidden, f"{ratio:.1f}",
                     f"{dense['summary']['n_params'] / s['n_params']:.2f}", f"{acc:.2f}",
                     f"{acc - dense_acc:+.2f}"))
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    for i, layer in enumerate(LAYERS):
        if points[layer]:
            ax.plot(*zip(*sorted(points[layer]), strict=True), "o-", color=f"C{i}",
                    label={"tt": "TT / MPO", "btt": "BTT", "lowrank": "low rank"}[layer])
    ax.axhline(dense_acc, color="k", lw=1, ls="--", label=f"dense ({dense_acc:.2f}%)")
    ax.set(xscale="log", xlabel=f"compression of the hidden {width}x{width} layer",
           ylabel="MNIST test accuracy (%)",
           title="Compressed MLP layers on MNIST" + (" (quick)" if quick else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    files = C.save(fig, out_dir, NAME)

    tt = sorted(points["tt"])
    kept = [q for q in tt if q[1] >= dense_acc - TOLERANCE_PP]
    best = max(kept) if kept else None
    cmp = [(q[1] - a) for q in tt if (a := _acc_at(points["lowrank"], q[0])) is not None]
    part1 = (f"TT keeps accuracy within {TOLERANCE_PP:g} pp of dense ({dense_acc:.2f}%) up to "
             f"a compression of {best[0]:.1f}x ({best[1]:.2f}%, {best[1] - dense_acc:+.2f} pp)"
             if best else f"no TT run is within {TOLERANCE_PP:g} pp of dense ({dense_acc:.2f}%)")
    part2 = (f"at the compressions both cover, TT minus low-rank accuracy averages "
             f"{sum(cmp) / len(cmp):+.2f} pp over {len(cmp)} TT runs (TT "
             f"{'better' if sum(cmp) > 0 else 'not better'}, as the paper claims "
             f"{'and we confirm' if sum(cmp) > 0 else 'but we do not confirm'})"
             if cmp else "TT and low-rank runs cover no common compression range")
    ds, tr = dense["config"]["data"], dense["config"]["train"]
    why = (f"Setup: dense input layer, one {width}x{width} hidden layer of the given structure"
           f" (TT: {dense['config']['model']['n_factors']} sites), dense readout, Adam for "
           f"{tr['num_epochs']} epochs on {dense['summary']['n_train']} images "
           f"({'28x28' if ds['downsample'] == 1 else 'pooled'}). Novikov et al. TT-ize "
           "the 1024x1024 layers of their MNIST nets; their exact accuracies and "
           "architectures are not reproduced, so only the claim is compared.")
    sections = [f"Paper: {PAPER_CLAIM}.", "", f"Ours: {part1}; {part2}.", "",
                C.table(["layer", "rank", "hidden params", "hidden compression",
                         "whole-net compression", "test acc %", "vs dense (pp)"],
                        sorted(rows, key=lambda q: (q[0], float(q[3])))), "", why]
    files["md"] = C.write_md(out_dir, NAME, "Test accuracy against layer compression: TT, BTT "
                             "and low-rank MLP layers (Novikov et al. 2015)", sections, runs,
                             quick)
    return files


if __name__ == "__main__":
    from tnlib.experiments.figures import main

    sys.exit(main([NAME, "--plot-only", *sys.argv[1:]]))
