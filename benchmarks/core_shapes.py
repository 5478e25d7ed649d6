"""Tucker core shapes under a parameter budget: spectral DP against the true-loss greedy.

For real image tensors and digits-as-a-tensor, at several budgets (fractions of the
tensor's size), compares these ways to pick a Tucker core shape:

  * ``core_shapes``: ``tnlib.search.core_shapes`` (multilinear singular values + an
    exact DP for the Tucker packing surrogate of Ghadiri et al. 2023);
  * ``core_shapes_refine``: ``core_shapes(..., refine=1)``: the DP's shape, then the
    shape with the smallest exact HOSVD error within +-1 of it on every mode (singular
    vectors from the same Gram eigendecompositions, one small projection);
  * ``core_shapes_hosvd``: ``core_shapes(..., objective="hosvd")``, the shape with the
    smallest exact HOSVD error (prefix sums of the full HOSVD core's energy);
  * ``greedy``: ``tnlib.search.core_shapes.greedy_core_shapes`` (from rank 1, raise the
    mode rank that most reduces the true Tucker loss, a 2-sweep HOOI per candidate,
    the paper's baseline); ``--greedy-hosvd`` adds the same with HOSVD as the loss;
  * ``uniform``: the largest equal rank ``r`` on every mode (capped by the mode's
    largest rank) that fits the budget.

Every shape is scored the same way: relative error ``||x - t|| / ||x||`` of
``tnlib.tucker.hooi(x, shape, n_iter=10)`` in float64 (the HOSVD error too). Runtime
is wall time of the selection call (the spectral methods: one warm-up call, then the
median of 5; greedy: one call). BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1``
unless set): on a loaded 2-core machine multithreaded OpenBLAS made some small
eigendecompositions and SVDs 100x slower, for every method. Writes
``benchmarks/out/core_shapes.json`` and ``.md`` with error ratios
``err(method) / err(greedy)`` and speedups ``time(greedy) / time(method)``.

Data: scikit-image's bundled images (camera, astronaut) when scikit-image is
installed, else scikit-learn's bundled sample images (china, flower); digits from
``sklearn.datasets.load_digits``. Nothing is downloaded.

    python benchmarks/core_shapes.py [--quick] [--greedy-hosvd]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads BLAS; see the docstring

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from tnlib import tucker  # noqa: E402

# the module, not the function tnlib.search.core_shapes that the package re-exports
cs = importlib.import_module("tnlib.search.core_shapes")

FRACTIONS = (0.01, 0.02, 0.05, 0.10)
DIGIT_FRACTIONS = (0.02, 0.05, 0.10, 0.20)


def _gray(img):
    img = np.asarray(img, np.float64)
    return img.mean(axis=-1) if img.ndim == 3 else img


def image_tensors():
    """``{name: tensor}`` of real images reshaped to higher order, values in [0, 1]."""
    try:
        import skimage.data as skd  # lazy: optional dependency
    except ImportError:
        skd = None
    if skd is not None:
        camera = np.asarray(skd.camera(), np.float64) / 255.0  # 512 x 512
        astro = np.asarray(skd.astronaut(), np.float64)[::2, ::2] / 255.0  # 256 x 256 x 3
        return {
            "camera (8^6)": camera.reshape((8,) * 6),
            "astronaut (16,16,16,16,3)": astro.reshape(16, 16, 16, 16, 3),
        }
    from sklearn.datasets import load_sample_images  # ships with scikit-learn, offline

    china, flower = load_sample_images().images  # 427 x 640 x 3 each
    china = np.asarray(china, np.float64)[85:341, 192:448] / 255.0  # central 256 x 256 x 3
    flower = _gray(flower)[85:341, 192:448] / 255.0
    return {
        "china rgb (16,16,16,16,3)": china.reshape(16, 16, 16, 16, 3),
        "flower gray (4^8)": flower.reshape((4,) * 8),
    }


def digits_tensor():
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().images, np.float64) / 16.0  # (1797, 8, 8)


def uniform_shape(dims, budget):
    """Largest equal rank (capped per mode) whose Tucker fits the budget."""
    caps = [min(n, math.prod(dims) // n) for n in dims]
    best, r = tuple(1 for _ in dims), 1
    while r <= max(caps):
        shape = tuple(min(r, c) for c in caps)
        if cs.tucker_params(dims, shape) > budget:
            break
        best, r = shape, r + 1
    return best


def rel_errors(x, shape, norm):
    e_hooi = np.linalg.norm(np.asarray(tucker.to_dense(tucker.hooi(x, shape, n_iter=10))) - x)
    e_hosvd = np.linalg.norm(np.asarray(tucker.to_dense(tucker.hosvd(x, shape))) - x)
    return float(e_hooi / norm), float(e_hosvd / norm)


def timed(f, repeats):
    times, out = [], None
    if repeats > 1:
        f()  # warm-up
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def run_case(name, x, fractions, greedy_hosvd=False):
    rows = []
    dims, size, norm = x.shape, x.size, float(np.linalg.norm(x))
    for frac in fractions:
        budget = max(int(frac * size), 1 + sum(dims))
        sel, t_dp = timed(lambda b=budget: cs.core_shapes(x, b), 5)
        rsel, t_rf = timed(lambda b=budget: cs.core_shapes(x, b, refine=1), 5)
        hsel, t_hs = timed(lambda b=budget: cs.core_shapes(x, b, objective="hosvd"), 5)
        gsel, t_g = timed(lambda b=budget: cs.greedy_core_shapes(x, b), 1)
        shapes = {"core_shapes": sel.ranks, "core_shapes_refine": rsel.ranks,
                  "core_shapes_hosvd": hsel.ranks, "greedy": gsel.ranks,
                  "uniform": uniform_shape(dims, budget)}
        times = {"core_shapes": t_dp, "core_shapes_refine": t_rf, "core_shapes_hosvd": t_hs,
                 "greedy": t_g}
        if greedy_hosvd:
            ghs, t_h = timed(lambda b=budget: cs.greedy_core_shapes(x, b, method="hosvd"), 1)
            shapes["greedy_hosvd"], times["greedy_hosvd"] = ghs.ranks, t_h
        row = {"tensor": name, "dims": list(dims), "budget": budget,
               "budget_fraction": frac, "predicted_rel_error": sel.rel_error,
               "predicted_rel_error_lower": sel.rel_error_lower,
               "greedy_evaluations": gsel.evaluations}
        for method, shape in shapes.items():
            e_hooi, e_hosvd = rel_errors(x, shape, norm)
            row[method] = {"shape": list(shape), "params": cs.tucker_params(dims, shape),
                           "rel_error_hooi": e_hooi, "rel_error_hosvd": e_hosvd,
                           "seconds": times.get(method)}
        ref = row["greedy"]["rel_error_hooi"]
        row["error_ratio"] = row["core_shapes"]["rel_error_hooi"] / ref
        row["error_ratio_refine"] = row["core_shapes_refine"]["rel_error_hooi"] / ref
        row["error_ratio_hosvd"] = row["core_shapes_hosvd"]["rel_error_hooi"] / ref
        row["error_ratio_uniform"] = row["uniform"]["rel_error_hooi"] / ref
        row["speedup"] = t_g / t_dp
        row["speedup_refine"] = t_g / t_rf
        row["speedup_hosvd"] = t_g / t_hs
        if greedy_hosvd:
            row["speedup_vs_greedy_hosvd"] = times["greedy_hosvd"] / t_dp
        rows.append(row)
        keys = ("tensor", "budget", "error_ratio", "error_ratio_refine", "error_ratio_hosvd",
                "speedup", "speedup_refine", "speedup_hosvd")
        print(json.dumps({k: row[k] for k in keys}), flush=True)
    return rows


def _version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def _summary(rows, key, speed_key):
    ratios = [r[key] for r in rows]
    speed = [r[speed_key] for r in rows]
    gmean = math.exp(statistics.mean(map(math.log, ratios)))
    return (f"err ratio max {max(ratios):.4f}, geometric mean {gmean:.4f}, within 1% of "
            f"greedy: {sum(q <= 1.01 for q in ratios)}/{len(ratios)}; speedup min "
            f"{min(speed):.0f}x, median {statistics.median(speed):.0f}x, at least 100x: "
            f"{sum(v >= 100 for v in speed)}/{len(speed)}")


def markdown(rows, meta):
    lines = [
        "| tensor | budget (frac) | greedy shape | greedy err | greedy (s) | core_shapes shape "
        "| err ratio | speedup | refine=1 shape | err ratio | speedup "
        "| core_shapes_hosvd shape | err ratio | speedup | uniform shape | err ratio |",
        "|---|---:|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|",
    ]
    for r in rows:
        c, h, g, u = r["core_shapes"], r["core_shapes_hosvd"], r["greedy"], r["uniform"]
        f = r["core_shapes_refine"]
        lines.append(
            f"| {r['tensor']} | {r['budget']} ({r['budget_fraction']:.0%}) | "
            f"{tuple(g['shape'])} | {g['rel_error_hooi']:.4f} | {g['seconds']:.2f} | "
            f"{tuple(c['shape'])} | {r['error_ratio']:.4f} | {r['speedup']:.0f}x | "
            f"{tuple(f['shape'])} | {r['error_ratio_refine']:.4f} | {r['speedup_refine']:.0f}x | "
            f"{tuple(h['shape'])} | {r['error_ratio_hosvd']:.4f} | {r['speedup_hosvd']:.0f}x | "
            f"{tuple(u['shape'])} | {r['error_ratio_uniform']:.4f} |"
        )
    lines += [
        "",
        "err = relative error ||x - t|| / ||x|| of a 10-sweep HOOI (tnlib.tucker.hooi, "
        "float64) at each shape; err ratio = err(method) / err(greedy); speedup = "
        "time(greedy) / time(method), selection only (greedy: one call; others: median of 5 "
        "after a warm-up), BLAS single-threaded.",
        "",
        f"- core_shapes (surrogate DP): {_summary(rows, 'error_ratio', 'speedup')}",
        f"- core_shapes refine=1: {_summary(rows, 'error_ratio_refine', 'speedup_refine')}",
        f"- core_shapes_hosvd: {_summary(rows, 'error_ratio_hosvd', 'speedup_hosvd')}",
        "",
        f"({meta['device']}, {meta['machine']}, jax {meta['jax']}, numpy {meta['numpy']}, "
        f"scikit-learn {meta['scikit-learn']}, scikit-image {meta['scikit-image']}, "
        f"commit {meta['commit']}; images: {meta['images']}; greedy: {meta['greedy']})",
    ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one budget per tensor")
    parser.add_argument("--greedy-hosvd", action="store_true",
                        help="also run the greedy with the HOSVD loss")
    args = parser.parse_args()
    images = image_tensors()
    rows = []
    for name, x in images.items():
        rows += run_case(name, x, FRACTIONS[1:2] if args.quick else FRACTIONS,
                         args.greedy_hosvd)
    rows += run_case("digits (1797,8,8)", digits_tensor(),
                     DIGIT_FRACTIONS[1:2] if args.quick else DIGIT_FRACTIONS, args.greedy_hosvd)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    meta = {"device": str(jax.devices()[0]), "jax": jax.__version__, "numpy": np.__version__,
            "scikit-learn": _version("scikit-learn"), "scikit-image": _version("scikit-image"),
            "machine": platform.processor() or platform.machine(), "commit": commit,
            "images": "scikit-image" if _version("scikit-image") else
            "scikit-learn sample images (scikit-image not installed)",
            "greedy": "greedy_core_shapes(method='hooi', n_iter=2)",
            "evaluator": "tnlib.tucker.hooi(n_iter=10), float64"}
    out = pathlib.Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "core_shapes.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = markdown(rows, meta)
    (out / "core_shapes.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
