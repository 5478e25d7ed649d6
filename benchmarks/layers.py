"""Structured layers against a dense layer of the same width: time, FLOP/s, fraction of dense.

For each width ``d``, batch ``B`` and dtype (float32; bfloat16 inputs and parameters),
times the pure apply functions of the structured layers (what ``tnlib.models``' layers
call), jitted, on ``x`` ``(B, d)``:

* ``dense``: ``x @ W`` with ``W`` ``(d, d)``;
* ``btt``: ``tnlib.btt.matvec`` of a ``BlockTT`` of rank 4 (balanced factor pairs);
* ``monarch``: the same with rank 1 (``btt.random(..., kind="monarch")``);
* ``tt``: a 3-site ``TTMatrix`` of rank 16 through ``jax.vmap(tnlib.tt.matvec)`` (as
  ``TTLinear``);
* ``lowrank``: ``tnlib.btt.LowRank`` of rank ``d / 8``.

Forward = ``y = layer(x)``; forward+backward = the gradient of ``sum(y**2)`` (computed
in float32) with respect to the input and every parameter. FLOPs are the layer's own
count of the products it computes (``tnlib.btt.flops``; for the TT-matrix
``tnlib.tt.flops``, the sum over sites of ``tt.matvec``'s contractions, ``2 r_{k-1} m_k
n_k r_k prod(n_{>k}) prod(m_{<k})`` per vector; dense ``2 B d^2``); forward+backward is
counted as 3x forward (the backward of every product is two products of the same size).
"frac dense" is the layer's FLOP/s over the dense matmul's on the same device, dtype,
width and batch; "speed-up" is dense time over layer time. For bfloat16 the table
records the relative error of each layer against float32 arithmetic on the same
(bf16-rounded) inputs, and the header says whether XLA's default bf16 dot accumulates in
more than bf16 precision (a dot of 4096 ones returns exactly 4096 only then: bf16 stops
counting at 256).

A second table runs tensorly-torch's ``FactorizedLinear`` (CP, Tucker and its TT-matrix
``blocktt``, ``rank=0.1`` i.e. about 10% of the dense parameters, both its
``factorized`` and ``reconstructed`` implementations) against ``torch.nn.Linear`` on the
same inputs (float32), to test the issue's claim that tltorch's factorized layers are
far slower than dense on small layers. Torch's intra-op threads = the machine's cores
(XLA's CPU pool uses all cores by default).

Runs on ``jax.devices()[0]``; torch on ``--device`` (default cuda when available). On a
GPU the default sizes are widths 4096-16384 and batches 1024, 4096.

    python benchmarks/layers.py            # CPU: widths 256, 1024, 4096; batch 256
    python benchmarks/layers.py --quick    # width 256 only (seconds)
"""

from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _bench import threads_from_argv  # noqa: E402

THREADS = threads_from_argv()  # before jax and torch are imported


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _bench import (  # noqa: E402
    add_thread_args,
    alternate,
    markdown_table,
    meta,
    meta_line,
    ratio_stats,
    write,
)

from tnlib import btt, tt  # noqa: E402

BTT_RANK, TT_RANK, TT_SITES, LOWRANK_DIV = 4, 16, 3, 8
TLTORCH_RANK = 0.1
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def balanced(d: int, k: int) -> tuple[int, ...]:
    """``k`` factors of ``d`` as equal as the divisors allow, ascending."""
    if k == 1:
        return (d,)
    target = d ** (1.0 / k)
    divs = [a for a in range(1, d + 1) if d % a == 0]
    a = min(divs, key=lambda a: (abs(math.log(a / target)), a))
    return tuple(sorted((a,) + balanced(d // a, k - 1)))


def layers(d: int, key):
    """``{name: (params, apply(params, x), flops(batch), num_params)}`` at width ``d``."""
    k = jax.random.split(key, 5)
    f2 = balanced(d, 2)
    f3 = balanced(d, TT_SITES)
    w_dense = jax.random.normal(k[0], (d, d), jnp.float32) / math.sqrt(d)
    w_btt = btt.random(k[1], (f2, f2), BTT_RANK)
    w_mon = btt.random(k[2], (f2, f2), 1, kind="monarch")
    w_tt = tt.random(k[3], f3, TT_RANK, col_dims=f3)
    w_lr = btt.random(k[4], (d, d), max(1, d // LOWRANK_DIV), kind="lowrank")
    tt_apply = jax.vmap(tt.matvec, (None, 0))
    return {
        "dense": (w_dense, lambda w, x: x @ w, lambda b: 2 * b * d * d, d * d),
        f"btt r{BTT_RANK}": (w_btt, btt.matvec, lambda b: btt.flops(w_btt, b),
                             btt.num_params(w_btt)),
        "monarch": (w_mon, btt.matvec, lambda b: btt.flops(w_mon, b), btt.num_params(w_mon)),
        f"tt {'x'.join(map(str, f3))} r{TT_RANK}": (
            w_tt, tt_apply, lambda b: tt.flops(w_tt, b), tt.num_params(w_tt)),
        f"lowrank r{d // LOWRANK_DIV}": (w_lr, btt.matvec, lambda b: btt.flops(w_lr, b),
                                          btt.num_params(w_lr)),
    }


def bf16_accumulates_wider() -> bool:
    ones = jnp.ones((4096,), jnp.bfloat16)
    return float(jax.jit(jnp.dot)(ones, ones)) == 4096.0


def _fwd_bwd(apply):
    def loss(w, x):
        return jnp.sum(jnp.square(apply(w, x).astype(jnp.float32)))

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def bench_jax(widths, batches, dtypes, repeats, min_time):
    """Every layer of a (width, batch, dtype) cell timed in alternation with the dense
    one (``_bench.alternate``): speed-ups are medians of per-round ratios."""
    rows = []
    key = jax.random.PRNGKey(0)
    for d in widths:
        specs = layers(d, key)
        for b in batches:
            x32 = jax.random.normal(jax.random.PRNGKey(1), (b, d), jnp.float32)
            for dname in dtypes:
                dt = DTYPES[dname]
                x = x32.astype(dt)
                cell, calls = {}, {"fwd": {}, "fwdbwd": {}}
                for name, (w, apply, flops, n_params) in specs.items():
                    w = jax.tree.map(lambda a, dt=dt: a.astype(dt), w)
                    fwd, fb = jax.jit(apply), _fwd_bwd(apply)
                    calls["fwd"][name], calls["fwdbwd"][name] = (fwd, (w, x)), (fb, (w, x))
                    row = {"width": d, "batch": b, "dtype": dname, "layer": name,
                           "params": int(n_params), "fwd_flops": int(flops(b))}
                    y = fwd(w, x)
                    row["out_dtype"] = str(y.dtype)
                    if dname != "float32":
                        w32 = jax.tree.map(lambda a: a.astype(jnp.float32), w)
                        ref = np.asarray(fwd(w32, x.astype(jnp.float32)), np.float64)
                        err = np.linalg.norm(np.asarray(y, np.float64) - ref)
                        row["rel_err_vs_f32"] = float(err / np.linalg.norm(ref))
                    cell[name] = row
                for mode, group in calls.items():
                    stats = ratio_stats(alternate(group, rounds=repeats, min_time=min_time,
                                                  budget=30), "dense")
                    for name, st in stats.items():
                        row = cell[name]
                        row[f"{mode}_s"] = st["s"]
                        scale = 3 if mode == "fwdbwd" else 1
                        row[f"{mode}_flops_per_s"] = scale * row["fwd_flops"] / st["s"]
                        row[f"{mode}_speedup"] = 1 / st["ratio"]  # dense time / layer time
                        row[f"{mode}_speedup_iqr"] = [1 / st["q3"], 1 / st["q1"]]
                for row in cell.values():
                    for mode in ("fwd", "fwdbwd"):
                        row[f"{mode}_frac_dense"] = (row[f"{mode}_flops_per_s"]
                                                     / cell["dense"][f"{mode}_flops_per_s"])
                    rows.append(row)
                    print(row, flush=True)
    return rows


def bench_tltorch(widths, batch, device, repeats, min_time):
    import tltorch
    import torch

    rows = []
    torch.manual_seed(0)
    for d in widths:
        f2 = balanced(d, 2)
        x = torch.randn(batch, d, device=device)
        cands = {"nn.Linear": lambda d=d: torch.nn.Linear(d, d, device=device)}
        for fac in ("cp", "tucker", "blocktt"):
            for impl in ("factorized", "reconstructed"):
                cands[f"tltorch {fac} {impl}"] = (
                    lambda fac=fac, impl=impl, f2=f2: tltorch.FactorizedLinear(
                        f2, f2, factorization=fac, rank=TLTORCH_RANK, implementation=impl,
                        device=device))
        built, calls = {}, {"fwd": {}, "fwdbwd": {}}
        for name, make in cands.items():
            row = {"width": d, "batch": batch, "layer": name}
            try:
                layer = make()
                xg = x.clone().requires_grad_(True)

                def fwd(layer=layer, x=x):
                    with torch.no_grad():
                        return layer(x)

                def fwdbwd(layer=layer, xg=xg):
                    layer.zero_grad(set_to_none=True)
                    xg.grad = None
                    y = layer(xg)
                    (y * y).sum().backward()
                    return xg.grad

                row["params"] = sum(p.numel() for p in layer.parameters())
                fwd(), fwdbwd()  # a peer failing is a result to report
            except Exception as e:  # noqa: BLE001
                row["error"] = f"{type(e).__name__}: {e}"[:200]
                rows.append(row)
                print(row, flush=True)
                continue
            built[name] = row
            calls["fwd"][name], calls["fwdbwd"][name] = (fwd, ()), (fwdbwd, ())
        for mode, group in calls.items():  # every layer in alternation with nn.Linear
            stats = ratio_stats(alternate(group, rounds=repeats, min_time=min_time, budget=30),
                                "nn.Linear")
            for name, st in stats.items():
                built[name][f"{mode}_s"] = st["s"]
                built[name][f"{mode}_slowdown"] = st["ratio"]
        for row in built.values():
            rows.append(row)
            print(row, flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="width 256, batch 256 only")
    parser.add_argument("--widths", type=int, nargs="*", default=None)
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    parser.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--tltorch-widths", type=int, nargs="*", default=None)
    add_thread_args(parser)
    parser.add_argument("--device", default=None,
                        help="torch device (default cuda when available, else cpu)")
    args = parser.parse_args(argv)
    import torch

    on_gpu = jax.devices()[0].platform == "gpu"
    if args.quick:
        widths, batches, tl_widths = [256], [256], [256]
    elif on_gpu:
        widths, batches, tl_widths = [4096, 8192, 16384], [1024, 4096], [256, 1024, 4096]
    else:
        widths, batches, tl_widths = [256, 1024, 4096], [256], [256, 1024]
    widths = args.widths or widths
    batches = args.batches or batches
    tl_widths = args.tltorch_widths if args.tltorch_widths is not None else tl_widths
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 1
    threads = THREADS or cores
    torch.set_num_threads(threads)
    repeats = 3 if args.quick else 5
    min_time = 0.02 if args.quick else 0.1

    acc_wide = bf16_accumulates_wider()
    rows = bench_jax(widths, batches, args.dtypes, repeats, min_time)
    tl_rows = bench_tltorch(tl_widths, batches[0], device, repeats, min_time)

    m = meta(peers=("torch", "tensorly-torch", "tensorly"), threads=THREADS)
    m.update(torch_device=device, torch_threads=torch.get_num_threads(), cpu_count=cores,
             threads=threads, xla_flags=os.environ.get("XLA_FLAGS", ""),
             bf16_dot_accumulates_wider_than_bf16=acc_wide, load_average=os.getloadavg(),
             quick=args.quick)
    cmd = ("python benchmarks/layers.py" + (" --quick" if args.quick else "")
           + (f" --threads {THREADS}" if THREADS else ""))
    gf = 1e-9
    table = markdown_table(
        ["width", "batch", "dtype", "layer", "params", "fwd ms", "fwd GFLOP/s",
         "fwd frac dense", "fwd+bwd ms", "fwd+bwd GFLOP/s", "fwd+bwd frac dense",
         "fwd+bwd speed-up vs dense", "bf16 rel. err"],
        [[r["width"], r["batch"], r["dtype"], r["layer"], r["params"], 1e3 * r["fwd_s"],
          gf * r["fwd_flops_per_s"], r["fwd_frac_dense"], 1e3 * r["fwdbwd_s"],
          gf * r["fwdbwd_flops_per_s"], r["fwdbwd_frac_dense"], r["fwdbwd_speedup"],
          r.get("rel_err_vs_f32", "-")] for r in rows])
    tl_table = markdown_table(
        ["width", "batch", "layer", "params", "fwd ms", "fwd+bwd ms", "fwd / nn.Linear",
         "fwd+bwd / nn.Linear"],
        [[r["width"], r["batch"], r["layer"], r.get("params", "-"),
          1e3 * r["fwd_s"] if "fwd_s" in r else r["error"],
          1e3 * r["fwdbwd_s"] if "fwdbwd_s" in r else "-",
          r.get("fwd_slowdown", "-"), r.get("fwdbwd_slowdown", "-")] for r in tl_rows])
    acc = ("wider than bf16 (a dot of 4096 ones is exact)" if acc_wide
           else "bf16 (a dot of 4096 ones is not exact)")
    md = "\n".join([
        f"`{cmd}` (jitted pure apply; fwd+bwd = grad of sum(y**2) w.r.t. input and params, "
        "counted as 3x the forward FLOPs; frac dense = FLOP/s over the dense x @ W's on the "
        f"same device and dtype; bf16: inputs and parameters bf16, XLA's default dot "
        f"accumulation here: {acc})",
        "", table, "",
        f"tensorly-torch FactorizedLinear (rank={TLTORCH_RANK}) against torch.nn.Linear, "
        f"float32, torch device {device}, {m['torch_threads']} threads:", "", tl_table, "",
        f"{meta_line(m)}; cpu cores {cores}, XLA and torch intra-op threads {threads}"
        + ("" if THREADS else " (XLA default pool)")
        + f", load average at end {m['load_average'][0]:.2f}",
    ])
    name = ("layers" + ("_quick" if args.quick else "")
            + (f"_threads{THREADS}" if THREADS else ""))
    write(name, {"meta": m, "rows": rows, "tltorch_rows": tl_rows}, md)


if __name__ == "__main__":
    main()
