"""jit compile time of MPS feature contraction against chain length.

Measures, for L in (16, 64, 256, 1024) sites (bond 10, local dim 2):
  * ``scan``: ``tnlib.tt.sweep_features`` on stacked ``(L, r, n, r)`` cores, the path
    the MPS classifier uses (one ``lax.scan``);
  * ``contract_features``: the public function on a ``TensorTrain`` (a tuple of L
    cores, stacked inside the jitted function, then the scan);
  * ``unrolled``: the same sweep as a Python loop over the sites (what the scan
    replaces), up to 256 sites (it grows linearly).
Compile time is ``jit(f).lower(*args).compile()`` wall time (tracing included), the
median of 3 fresh compilations (caches cleared before each). Writes
``benchmarks/out/compile_time.json`` and a markdown table.

    python benchmarks/compile_time.py
"""

from __future__ import annotations

import json
import pathlib
import platform
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp

from tnlib import tt

BOND, LOCAL = 10, 2
LENGTHS = (16, 64, 256, 1024)
UNROLL_MAX = 256


def _unrolled(cores, feats, start):
    vec, acc = start, jnp.zeros((), jnp.float32)
    for k in range(cores.shape[0]):
        (vec, acc), _ = tt._feature_step((vec, acc), (cores[k], feats[k]))
    return vec, acc


def compile_seconds(f, *args, repeats=3):
    times = []
    for _ in range(repeats):
        jax.clear_caches()  # otherwise an identical program is served from the cache
        jitted = jax.jit(f)
        t0 = time.perf_counter()
        jitted.lower(*args).compile()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    rows = []
    key = jax.random.PRNGKey(0)
    for L in LENGTHS:
        chain = tt.random(key, (LOCAL,) * L, BOND, jnp.float32)
        stacked = tt.stack(chain)
        feats = jnp.ones((L, LOCAL), jnp.float32) / jnp.sqrt(2.0)
        start = jnp.zeros((BOND,), jnp.float32).at[0].set(1)
        row = {"sites": L,
               "scan_s": compile_seconds(tt.sweep_features, stacked, feats, start),
               "contract_features_s": compile_seconds(tt.contract_features, chain, feats)}
        if L <= UNROLL_MAX:
            row["unrolled_s"] = compile_seconds(_unrolled, stacked, feats, start, repeats=1)
        rows.append(row)
        print(row, flush=True)
    by = {r["sites"]: r for r in rows}
    ratio_scan = by[1024]["scan_s"] / by[64]["scan_s"]
    ratio_cf = by[1024]["contract_features_s"] / by[64]["contract_features_s"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    meta = {"device": str(jax.devices()[0]), "jax": jax.__version__,
            "machine": platform.processor() or platform.machine(), "commit": commit,
            "bond_dim": BOND, "local_dim": LOCAL}
    out = pathlib.Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "compile_time.json").write_text(json.dumps({"meta": meta, "rows": rows,
                                                       "ratio_1024_over_64": {
                                                           "scan": ratio_scan,
                                                           "contract_features": ratio_cf}},
                                                      indent=2))
    lines = ["| sites | scan (s) | contract_features (s) | unrolled (s) |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        unrolled = f"{r['unrolled_s']:.3f}" if "unrolled_s" in r else "-"
        lines.append(f"| {r['sites']} | {r['scan_s']:.3f} | {r['contract_features_s']:.3f} "
                     f"| {unrolled} |")
    lines.append("")
    lines.append(f"compile(1024) / compile(64): scan {ratio_scan:.2f}x, "
                 f"contract_features {ratio_cf:.2f}x  ({meta['device']}, jax {jax.__version__}, "
                 f"commit {commit})")
    table = "\n".join(lines)
    (out / "compile_time.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
