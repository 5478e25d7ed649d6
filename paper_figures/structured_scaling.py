"""Scaling laws of MLPs with dense and structured layers (Qiu et al. 2024, "Compute Better
Spent"): train error against forward FLOPs per example, one power law per structure.

    tnlib figures structured_scaling [--quick]

Reads the ``configs/scaling_mlp_mnist.py:layer=...,width=...`` runs (several seeds each):
``metrics.jsonl`` (per-epoch means of the training accuracy and loss under mixup),
``summary.json`` (test accuracy and loss) and ``model_cost.json`` (forward FLOPs per
example, ``ResidualMLP.flops()``). The statistic is the official one
(``notebooks/scaling_laws.ipynb``): the training error under augmentation and mixup (a
prediction counts when it matches either mixed label; per batch, the larger of the two
accuracies), averaged over the last epochs, then over seeds. As there, each structure's
law is an ordinary least-squares line of log error against log FLOPs, its exponent the
negated slope and its uncertainty the slope's standard error; we add the spread of the
exponent fitted to each seed alone, and the same fits for the final train loss and the
test error. Writes ``structured_scaling.png``, ``.pdf`` and ``.md``. Reading and
arithmetic only.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "structured_scaling"
LAYERS = ("dense", "btt", "monarch", "lowrank", "kronecker", "tt")  # the paper's legend order
LABELS = {"dense": "Dense", "btt": "BTT", "monarch": "Monarch", "lowrank": "Low Rank",
          "kronecker": "Kron", "tt": "TT"}
LAST_EPOCHS = 3  # the statistic averages the last 3 epochs (official: last 10 of 500)

# The paper's CIFAR-10 exponents (train error ~ FLOPs^-a) and their standard errors, read
# off the bar chart the official notebook stores (github.com/shikaiqiu/compute-better-
# spent, notebooks/scaling_laws.ipynb, first plotting cell, output "mlp_cifar10_slopes"):
# to about +-0.003, as bar heights on a 0-0.12 axis allow.
PAPER_EXPONENT = {"dense": (0.104, 0.006), "btt": (0.119, 0.004), "monarch": (0.095, 0.005),
                  "lowrank": (0.095, 0.005), "kronecker": (0.037, 0.001), "tt": (0.050, 0.006)}
PAPER_ORDER = "BTT > Dense > Monarch = Low Rank > TT > Kron"
# The order of the error levels at equal FLOPs in the same stored figure (mlp_cifar10.pdf,
# around 1e7 FLOPs, where every structure has points): lowest error first.
PAPER_LEVEL_ORDER = ("btt", "monarch", "dense", "lowrank", "tt", "kronecker")

# paper / official code (experiments/mlp.sh, train_cifar.py, nn/fcnet.py, nn/cola_nn.py,
# scaling_mlps/) / ours
SETTINGS = [
    ("data", "CIFAR-10 (and CIFAR-100)", "CIFAR-10 via ffcv, 32x32x3, per-channel "
     "mean / std normalized", "MNIST 28x28, pixels in [0, 1] (50k train; CIFAR-10 is not "
     "installable here without a download)"),
    ("augmentation", "augmentation, mixup: models stay under-fit",
     "random resized crop (scale 0.08-1) + horizontal flip, mixup alpha 0.8 (one lambda per "
     "batch), label smoothing 0.3", "random shift of up to 3 pixels, the same mixup and "
     "label smoothing"),
    ("network", "MLP, 3 residual blocks", "fixed pixel shuffle, input layer + GELU, 3 blocks "
     "LN -> W1 (w -> 4w) -> GELU -> W2 (4w -> w) + residual, readout; W2 and readout "
     "zero-initialized; PyTorch LayerNorm (eps 1e-5), exact GELU",
     "same (tnlib.models.ResidualMLP), flax LayerNorm (eps 1e-6)"),
    ("structured layers", "all but the last", "layers=all_but_last; the figure's low-rank "
     "runs use layers=intermediate (input layer dense)", "same"),
    ("structures", "dense, BTT, Monarch, low rank, Kronecker, TT",
     "BTT: 2 cores rank 1; Monarch: 4 blocks; low rank: rank ceil(sqrt(min(d_in, d_out))); "
     "Kron: 2-core TT rank 1; TT: 2 cores rank 16",
     "same (tnlib.models.scaling_layer; Monarch as the equal BTT up to a fixed reordering "
     "of inputs and outputs)"),
    ("structured init", "muP", "per core: std sqrt(1/d_in(core)) min(1, sqrt(d_out/d_in))",
     "tnlib's structured-layer init (dense entries of variance 1/d_in); dense layers as "
     "official"),
    ("learning rates", "muP", "AdamW lr 3e-3 x (64 / width) for hidden and readout "
     "matrices, x0.1 for the input layer, structured cores x d_in / d_in(core) / n_cores",
     "same multipliers (ResidualMLP.lr_multipliers); Adam = AdamW at weight decay 0"),
    ("schedule", "500 epochs", "batch 1024, 500 epochs, cosine to 0, no warmup",
     "batch 1024, **8 epochs**, cosine to 0, no warmup (a 2-core CPU)"),
    ("widths", "64 x scale", "dense 32-4096, structured up to 64 x 256",
     "dense 32-256, structured 32-1024 (see the run table)"),
    ("x axis", "FLOPs", "forward FLOPs per example (fvcore: 1 per multiply-add)",
     "forward FLOPs per example, 2 per multiply-add (the exponents are unchanged)"),
    ("statistic", "train error", "train error under mixup, mean of the last 10 epochs, "
     "mean over seeds, best run per point", f"the same, mean of the last {LAST_EPOCHS} "
     "epochs, mean over 3 seeds (one learning rate: nothing to pick the best of)"),
    ("fit", "power law", "OLS of log error on log FLOPs; slope's standard error",
     "same, plus the exponent fitted to each seed alone (range)"),
]


def _layer(run) -> str:
    return run["config"]["model"]["layer"]


def _last(run, key):
    vals = [m[key] for m in run["metrics"] if m.get(key) is not None]
    tail = vals[-LAST_EPOCHS:]
    return statistics.mean(tail) if tail else None


def _stats(run) -> dict[str, float]:
    s = run["summary"]
    return {"train_err": 100 * (1 - _last(run, "train_acc")),
            "train_loss": _last(run, "train_loss"),
            "test_err": 100 * (1 - s["test_accuracy"]), "test_loss": s["test_loss"]}


def fit_power_law(xs, ys) -> tuple[float, float, float]:
    """``(a, se, b)`` of ``y = exp(b) x^-a``: OLS of ``log y`` on ``log x`` (as
    ``scipy.stats.linregress``), ``se`` the slope's standard error (nan below 3 points)."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    n = len(lx)
    mx, my = statistics.mean(lx), statistics.mean(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    slope = sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / sxx
    b = my - slope * mx
    if n < 3:
        return -slope, math.nan, b
    resid = sum((y - (b + slope * x)) ** 2 for x, y in zip(lx, ly, strict=True))
    return -slope, math.sqrt(resid / (n - 2) / sxx), b


def _groups(runs):
    """``{layer: [(flops, width, [stats per seed], [seeds])...]}`` sorted by FLOPs."""
    out: dict[str, dict[int, list]] = {}
    for r in runs:
        out.setdefault(_layer(r), {}).setdefault(r["config"]["model"]["width"], []).append(r)
    return {layer: sorted((rs[0]["model_cost"]["flops_per_example"], w, [_stats(r) for r in rs],
                           [r["config"]["seed"] for r in rs]) for w, rs in by_w.items())
            for layer, by_w in out.items()}


def _fits(points, key):
    """Fit on the seed means, and on each seed alone (seeds present at every point)."""
    xs = [p[0] for p in points]
    means = [statistics.mean(s[key] for s in p[2]) for p in points]
    a, se, b = fit_power_law(xs, means)
    common = set.intersection(*(set(p[3]) for p in points))
    per_seed = []
    for seed in sorted(common):
        ys = [p[2][p[3].index(seed)][key] for p in points]
        per_seed.append(fit_power_law(xs, ys)[0])
    return {"a": a, "se": se, "b": b, "per_seed": per_seed, "xs": xs, "means": means}


def _pm(a, se):
    return f"{a:.3f} +- {se:.3f}" if math.isfinite(se) else f"{a:.3f}"


def _order_agreement(ours, paper) -> str:
    """Which pairs of structures the two orders put the same way round."""
    pairs = [(a, b) for i, a in enumerate(paper) for b in paper[i + 1:]]
    same = [p for p in pairs if ours.index(p[0]) < ours.index(p[1])]
    swapped = [f"{LABELS[b]} below {LABELS[a]}" for a, b in pairs if (a, b) not in same]
    return (f"{len(same)} of {len(pairs)} pairs in the paper's order"
            + (f"; ours has {', '.join(swapped)}." if swapped else "."))


def _z(diff, se_a, se_b):
    se = math.hypot(se_a, se_b)
    return diff / se if se > 0 and math.isfinite(se) else math.nan


def _versus_dense(layer, f, d) -> str:
    """One structure's exponent against dense's, ours and the paper's, in standard errors:
    a difference counts when it exceeds 2 standard errors."""
    pa, pse = PAPER_EXPONENT[layer]
    pd, pdse = PAPER_EXPONENT["dense"]
    ours, paper = f["a"] - d["a"], pa - pd
    zo, zp = _z(ours, f["se"], d["se"]), _z(paper, pse, pdse)
    if not abs(zp) >= 2:
        verdict = ("the paper's difference is within 2 standard errors, so there is no "
                   "order to agree with")
    elif not abs(zo) >= 2:
        verdict = "ours is within 2 standard errors: inconclusive"
    elif (ours > 0) == (paper > 0):
        verdict = "**agrees**"
    else:
        verdict = "**disagrees**"
    z_ours = f"{zo:+.1f} s.e." if math.isfinite(zo) else "no s.e. from 2 widths"
    return (f"{LABELS[layer]} vs Dense exponent: ours {f['a']:.3f} vs {d['a']:.3f} "
            f"({ours:+.3f}, {z_ours}); paper {pa:.3f} vs {pd:.3f} ({paper:+.3f}, "
            f"{zp:+.1f} s.e.): {verdict}.")


def plot(runs, out_dir, *, quick: bool = False):
    runs = [C.load_run(r) for r in runs]
    missing = [r["dir"] for r in runs if "model_cost" not in r]
    if missing:
        raise FileNotFoundError(f"{missing[0]}/model_cost.json is missing; rerun "
                                "`tnlib figures structured_scaling` to write it")
    groups = _groups(runs)
    layers = [layer for layer in LAYERS if layer in groups and len(groups[layer]) >= 2]
    fits = {key: {layer: _fits(groups[layer], key) for layer in layers}
            for key in ("train_err", "train_loss", "test_err")}

    plt = C.pyplot()
    fig, (ax, axb, axt) = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True,
                                       gridspec_kw={"width_ratios": [1.5, 1, 1.3]})
    colors = {layer: f"C{i}" for i, layer in enumerate(LAYERS)}
    for axis, key, label in ((ax, "train_err", "train error under mixup (%)"),
                             (axt, "test_err", "test error (%)")):
        for layer in layers:
            pts, f = groups[layer], fits[key][layer]
            ys = [[s[key] for s in p[2]] for p in pts]
            mean = f["means"]
            axis.errorbar(f["xs"], mean, yerr=[[m - min(y) for m, y in zip(mean, ys, strict=True)],
                                              [max(y) - m for m, y in zip(mean, ys, strict=True)]],
                          fmt="o", color=colors[layer], ms=6, capsize=2,
                          label=f"{LABELS[layer]}: a = {_pm(f['a'], f['se'])}")
            lo, hi = min(f["xs"]), max(f["xs"])
            axis.plot([lo, hi], [math.exp(f["b"]) * x ** -f["a"] for x in (lo, hi)], "--",
                      color=colors[layer], lw=1.5)
        axis.set(xscale="log", yscale="log", xlabel="forward FLOPs per example",
                 ylabel=label)
        axis.yaxis.set_major_formatter(C.plain_ticks())
        axis.yaxis.set_minor_formatter(C.plain_ticks(minor=True))
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7, title="fit: error ~ FLOPs^-a", title_fontsize=7)
    ax.set_title("MNIST MLPs, shift + mixup + label smoothing" + (" (quick)" if quick else "")
                 + "\n(mean over seeds, bars: min-max)", fontsize=10)
    axt.set_title("held-out test error, same runs")
    # exponents: ours (train error) beside the paper's CIFAR-10 values
    xs = range(len(layers))
    ours = [fits["train_err"][layer]["a"] for layer in layers]
    ours_se = [fits["train_err"][layer]["se"] for layer in layers]
    axb.bar([x - 0.2 for x in xs], ours, 0.4, yerr=[0 if math.isnan(s) else s for s in ours_se],
            color=[colors[layer] for layer in layers], capsize=3, label="ours (MNIST)")
    axb.bar([x + 0.2 for x in xs], [PAPER_EXPONENT[layer][0] for layer in layers], 0.4,
            yerr=[PAPER_EXPONENT[layer][1] for layer in layers],
            color=[colors[layer] for layer in layers], alpha=0.4, hatch="//", capsize=3,
            label="paper (CIFAR-10)")
    axb.set_xticks(list(xs), [LABELS[layer] for layer in layers], rotation=30, fontsize=8)
    axb.set(ylabel="exponent a (train error ~ FLOPs^-a)", title="fitted exponents +- s.e.")
    axb.legend(fontsize=7)
    axb.grid(alpha=0.3, axis="y")
    files = C.save(fig, out_dir, NAME)

    # ------------------------------------------------------------------ the .md
    te = fits["train_err"]
    exp_rows = []
    for layer in layers:
        f, fl, ft = te[layer], fits["train_loss"][layer], fits["test_err"][layer]
        spread = (f"[{min(f['per_seed']):.3f}, {max(f['per_seed']):.3f}]"
                  if f["per_seed"] else "n/a")
        pa, pse = PAPER_EXPONENT[layer]
        exp_rows.append((LABELS[layer], len(groups[layer]), _pm(f["a"], f["se"]), spread,
                         f"{pa:.3f} +- {pse:.3f}", C.difference(f["a"], pa),
                         _pm(fl["a"], fl["se"]), _pm(ft["a"], ft["se"])))
    lines = []
    if layers:
        order = sorted(layers, key=lambda layer: -te[layer]["a"])
        lines.append("Exponent order, ours: " + " > ".join(
            f"{LABELS[layer]} {te[layer]['a']:.3f}" for layer in order)
            + f"; the paper's (CIFAR-10): {PAPER_ORDER}.")
        # the error each law predicts at one FLOPs value inside every structure's range
        lo = max(min(te[layer]["xs"]) for layer in layers)
        hi = min(max(te[layer]["xs"]) for layer in layers)
        if hi >= lo:
            at = math.sqrt(lo * hi)
            level = {layer: math.exp(te[layer]["b"]) * at ** -te[layer]["a"] for layer in layers}
            ours_order = sorted(layers, key=level.get)
            paper_order = [layer for layer in PAPER_LEVEL_ORDER if layer in layers]
            lines.append(f"Train error each fitted law gives at {at:.3g} FLOPs per example "
                         "(inside every structure's range), lowest first: " + ", ".join(
                             f"{LABELS[layer]} {level[layer]:.2f}%" for layer in ours_order)
                         + "; the paper's order at equal FLOPs (its figure, CIFAR-10): "
                         + " < ".join(LABELS[layer] for layer in paper_order) + ". "
                         + _order_agreement(ours_order, paper_order))
        if "dense" in te:
            for layer in layers:
                if layer != "dense":
                    lines.append(_versus_dense(layer, te[layer], te["dense"]))
    run_rows = []
    for layer in layers:
        for flops, width, stats, seeds in groups[layer]:
            r = next(r for r in runs if _layer(r) == layer
                     and r["config"]["model"]["width"] == width)
            col = {k: [s[k] for s in stats] for k in stats[0]}
            run_rows.append((LABELS[layer], width, r["summary"]["n_params"], f"{flops:.3g}",
                             len(seeds), *(f"{statistics.mean(v):.3f} [{min(v):.3f}, "
                                           f"{max(v):.3f}]" for v in
                                           (col["train_err"], col["train_loss"],
                                            col["test_err"]))))
    sections = [
        C.table(["setting", "paper", "official code", "ours"], SETTINGS), "",
        ("Paper (Fig. 4, CIFAR-10 MLPs): at equal training compute, BTT and Monarch reach "
         "lower training error than dense layers, and BTT's error falls fastest with "
         f"compute; the fitted exponents are {PAPER_ORDER} "
         "(values below, read off the official notebook's stored chart to about +-0.003; "
         "the paper prints no table of them)."), "",
        "Ours:", "", *[f"- {x}" for x in lines], "",
        "Fitted exponents a (error ~ FLOPs^-a) on the seed means, +- the slope's standard "
        "error; the per-seed column is the range of the exponent fitted to each seed alone:",
        "",
        C.table(["structure", "widths", "a, train error (ours)", "per-seed a",
                 "a, paper CIFAR-10", "ours - paper, ours / paper", "a, final train loss",
                 "a, test error"], exp_rows), "",
        "The final train loss carries the floor that label smoothing and mixup put under it "
        "(about 1.5 nats here), so its exponents are small; the test error is measured on "
        "clean images and falls faster than the train error under mixup.", "",
        "Every point, mean [min, max] over seeds (the figure's points and bars; train "
        f"statistics: mean of the last {LAST_EPOCHS} epochs). The seeds differ mostly by an "
        "offset shared by every width: each seed draws one stream of shifts and mixup "
        "weights that all models of that seed see.", "",
        C.table(["structure", "width", "params", "forward FLOPs / example", "seeds",
                 "train error % (mixup)", "train loss", "test error %"], run_rows), "",
        ("Where we differ from the paper: MNIST instead of CIFAR-10 and 8 epochs instead of "
         "500 (MNIST with shifts and mixup stays under-fit at these sizes, but the error "
         "floor of mixup on MNIST is not CIFAR-10's), so the exponents are not expected to "
         "match in value; the comparison is of their order and of each structure against "
         "dense. The FLOPs range is about 1.5 decades against the paper's 3."),
    ]
    files["md"] = C.write_md(out_dir, NAME, "Scaling laws of structured MLPs (Qiu et al. 2024)",
                             sections, runs, quick)
    return files


if __name__ == "__main__":
    from tnlib.experiments.figures import main

    sys.exit(main([NAME, "--plot-only", *sys.argv[1:]]))
