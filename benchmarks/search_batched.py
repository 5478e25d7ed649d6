"""Candidates fitted per second: batched (one jitted vmapped call) vs sequential.

For planted tensor-ring problems (orders ``--orders``, mode size 4, max rank 4, 30 ALS
sweeps, best of 2 restarts, float32, CPU) and ``--n`` random candidate structures,
measures
  * ``batched``: ``Evaluator(batched=True)``: the candidates in buckets of
    ``--batch``, one jitted vmapped call per bucket;
  * ``sequential``: ``Evaluator(batched=False)``: the same jitted fit of one
    candidate, called once per candidate (the honest baseline: same function, same
    host preparation, no extra work);
  * ``per-structure jit``: ``tnlib.network.fit`` at each candidate's own shapes (one
    compilation per distinct structure, the way the reference code fits), 2 restarts
    under vmap, compilation included (that is what a search pays for it).
Both engine modes are compiled first (compilation excluded) and then timed in
``--rounds`` alternating rounds (batched, sequential, batched, ...), so both see the
same machine load; the table reports the median rate over the rounds. Writes
``benchmarks/out/search_batched.json`` and ``.md``.

    python benchmarks/search_batched.py                 # orders 4 and 6, --n 128
    python benchmarks/search_batched.py --quick         # order 4, --n 32, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
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


def timed(prob, cands, batched, batch, seed):
    ev = Evaluator(prob, seed, batched=batched, max_batch=batch, min_batch=batch)
    t0 = time.perf_counter()
    ev.evaluate(cands)
    dt = time.perf_counter() - t0
    return len(cands) / dt, float(np.median([e.rse for e in ev.log]))


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


def measure(order, n, batch, rounds, n_structure):
    p = problems.planted_ring(jax.random.PRNGKey(0), order, 4)
    prob = problem(p.tensor, max_rank=4, edges="ring", n_iter=30, restarts=2)
    cands = candidates(prob.space, n, 0)
    timed(prob, cands[:batch], True, batch, 0)  # compile both
    timed(prob, cands[:1], False, batch, 0)
    rb, rs = [], []
    for k in range(rounds):
        rate_b, med_b = timed(prob, cands, True, batch, k + 1)
        rate_s, med_s = timed(prob, cands, False, batch, k + 1)
        rb.append(rate_b)
        rs.append(rate_s)
        print(f"order {order} round {k}: batched {rate_b:.1f}/s sequential {rate_s:.1f}/s",
              flush=True)
    res = {"order": order, "n_candidates": n, "batch": batch, "rounds": rounds,
           "batched_per_s": rb, "sequential_per_s": rs,
           "batched_median_per_s": statistics.median(rb),
           "sequential_median_per_s": statistics.median(rs),
           "ratio_of_medians": statistics.median(rb) / statistics.median(rs),
           "ratio_per_round": [b / s for b, s in zip(rb, rs, strict=True)],
           "median_rse_batched": med_b, "median_rse_sequential": med_s}
    if n_structure:
        rp, tp = per_structure_rate(prob, cands[:n_structure], prob.fit.n_iter)
        res.update(per_structure_jit_per_s=rp, per_structure_jit_s=tp,
                   per_structure_jit_n=n_structure)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--orders", type=int, nargs="+", default=None)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--n-structure", type=int, default=4,
                    help="candidates timed with per-structure jit (it compiles each)")
    args = ap.parse_args()
    n = args.n or (32 if args.quick else 128)
    orders = args.orders or ([4] if args.quick else [4, 6])
    rounds = args.rounds or (2 if args.quick else 3)
    results = [measure(o, n, args.batch, rounds, args.n_structure) for o in orders]
    meta = {"mode_size": 4, "max_rank": 4, "fit": {"method": "als", "n_iter": 30,
            "restarts": 2}, "dtype": "float32", "device": str(jax.devices()[0]),
            "platform": platform.platform(), "cpu_count": os.cpu_count()}
    OUT.mkdir(exist_ok=True)
    (OUT / "search_batched.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    md = [f"# Batched vs sequential candidate fitting (tensor-ring problems, mode 4, max rank "
          f"4, 30 ALS sweeps x 2 restarts, float32, {meta['device']}, "
          f"{meta['cpu_count']} CPUs)", "",
          "Median candidates / s over alternating rounds (compilation excluded, except in "
          "the per-structure row).", "",
          "| order | mode | candidates | candidates / s | batched speed-up |",
          "|---|---|---|---|---|"]
    for r in results:
        o, b, s = r["order"], r["batched_median_per_s"], r["sequential_median_per_s"]
        md.append(f"| {o} | batched (vmap, buckets of {r['batch']}) | {r['n_candidates']} | "
                  f"{b:.1f} | 1.0x |")
        md.append(f"| {o} | sequential (same fit, one call each) | {r['n_candidates']} | "
                  f"{s:.1f} | {b / s:.1f}x |")
        if "per_structure_jit_per_s" in r:
            p = r["per_structure_jit_per_s"]
            md.append(f"| {o} | per-structure jit (network.fit, compile included) | "
                      f"{r['per_structure_jit_n']} | {p:.2f} | {b / p:.0f}x |")
    md.append("")
    (OUT / "search_batched.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
