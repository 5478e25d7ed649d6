"""Candidates fitted per second: batched (one jitted vmapped call) vs sequential.

For a planted tensor-ring problem (order 6, mode size 4, max rank 4, 30 ALS sweeps,
2 restarts, float32, CPU) and ``--n`` random candidate structures, measures
  * ``batched``: ``Evaluator(batched=True)``: the candidates in buckets of 64, one call each;
  * ``sequential``: ``Evaluator(batched=False)``: the same padded fit, one call per candidate;
  * ``per-structure jit``: ``tnlib.network.fit`` at each candidate's own shapes (one
    compilation per distinct structure, the way the reference code fits), 2 restarts
    under vmap, compilation included (that is what a search pays for it).
Both engine modes are warmed up first (compilation excluded). Writes
``benchmarks/out/search_batched.json`` and ``.md``.

    python benchmarks/search_batched.py            # --n 128 --order 6
    python benchmarks/search_batched.py --quick    # --n 32 --order 4
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

from tnlib import network
from tnlib.search import Evaluator, problem, problems

OUT = pathlib.Path(__file__).parent / "out"


def candidates(space, n, seed):
    rng = np.random.default_rng(seed)
    out = set()
    while len(out) < n:
        out.add(space.clip(rng.integers(1, space.max_rank + 1, len(space.edges))))
    return sorted(out)


def rate(prob, cands, batched):
    warm = Evaluator(prob, 0, batched=batched, max_batch=64, min_batch=64)
    warm.evaluate(cands[:64] if batched else cands[:1])  # compile
    ev = Evaluator(prob, 1, batched=batched, max_batch=64, min_batch=64)
    t0 = time.perf_counter()
    ev.evaluate(cands)
    dt = time.perf_counter() - t0
    return len(cands) / dt, dt, float(np.median([e.rse for e in ev.log]))


def per_structure_rate(prob, cands, n_iter):
    x = prob.target
    t0 = time.perf_counter()
    for i, s in enumerate(cands):
        adj = prob.space.adjacency(s)
        keys = jax.random.split(jax.random.PRNGKey(i), prob.fit.restarts)
        f = jax.jit(jax.vmap(lambda k, a=adj: network.fit(x, a, key=k, n_iter=n_iter)[1]))
        jax.block_until_ready(f(keys))
    dt = time.perf_counter() - t0
    return len(cands) / dt, dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--order", type=int, default=None)
    ap.add_argument("--n-structure", type=int, default=8,
                    help="candidates timed with per-structure jit (it compiles each)")
    args = ap.parse_args()
    n = args.n or (32 if args.quick else 128)
    order = args.order or (4 if args.quick else 6)
    p = problems.planted_ring(jax.random.PRNGKey(0), order, 4)
    prob = problem(p.tensor, max_rank=4, edges="ring", n_iter=30, restarts=2)
    cands = candidates(prob.space, n, 0)
    rb, tb, mb = rate(prob, cands, True)
    rs, ts, ms = rate(prob, cands, False)
    rp, tp = per_structure_rate(prob, cands[:args.n_structure], prob.fit.n_iter)
    res = {
        "order": order, "mode_size": 4, "max_rank": 4, "n_candidates": n,
        "fit": prob.fit._asdict(), "device": str(jax.devices()[0]),
        "platform": platform.platform(), "cpu_count": __import__("os").cpu_count(),
        "batched_per_s": rb, "batched_s": tb, "sequential_per_s": rs, "sequential_s": ts,
        "per_structure_jit_per_s": rp, "per_structure_jit_n": args.n_structure,
        "ratio_batched_over_sequential": rb / rs, "ratio_batched_over_per_structure": rb / rp,
        "median_rse_batched": mb, "median_rse_sequential": ms,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "search_batched.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        f"# Batched vs sequential candidate fitting (order {order} ring, mode 4, max rank 4, "
        f"{prob.fit.n_iter} ALS sweeps x {prob.fit.restarts} restarts, float32, {res['device']})",
        "",
        "| mode | candidates | seconds | candidates / s | batched speed-up |",
        "|---|---|---|---|---|",
        f"| batched (vmap, buckets of 64) | {n} | {tb:.2f} | {rb:.2f} | 1.0x |",
        f"| sequential (same padded fit, one call each) | {n} | {ts:.2f} | {rs:.2f} | "
        f"{rb / rs:.1f}x |",
        f"| per-structure jit (network.fit, compile included) | {args.n_structure} | {tp:.2f} | "
        f"{rp:.2f} | {rb / rp:.1f}x |",
        "",
    ]
    (OUT / "search_batched.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
