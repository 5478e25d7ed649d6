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

``--pieces`` adds where the time goes: the three parts of a masked ALS core update
(the right-hand side ``E^T x``: the target contracted with the other cores; the Gram
``E^T E``; the ``d x d`` linear solve) timed alone, jitted, for one candidate's
restarts (vmap over 2) and for a whole bucket (vmap over ``2 * --batch``), in
microseconds per fit and sweep (all cores).

    python benchmarks/search_batched.py                 # orders 4 and 6, --n 128
    python benchmarks/search_batched.py --quick         # order 4, --n 32, 2 rounds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tnlib import network
from tnlib.search import Evaluator, _fit, problem, problems

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


def _per_fit_us(f, args, n_fits, reps=20):
    """Microseconds per fit of ``f(*args)`` (jitted; ``reps`` calls in one loop; best of 5)."""
    def loop(*a):
        def body(i, acc):  # perturb the inputs so XLA cannot hoist the work
            return acc + jnp.sum(f(*[t * (1 + i * 1e-7).astype(t.dtype) for t in a]))
        return jax.lax.fori_loop(0, reps, body, jnp.zeros((), jnp.float32))
    g = jax.jit(loop)
    jax.block_until_ready(g(*args))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(g(*args))
        times.append(time.perf_counter() - t0)
    return min(times) / reps / n_fits * 1e6


def pieces(order, batch):
    """Microseconds per fit and sweep of the parts of a masked ALS sweep, for one
    candidate's restarts (2 fits) and for a bucket (``2 * batch`` fits)."""
    p = problems.planted_ring(jax.random.PRNGKey(0), order, 4)
    prob = problem(p.tensor, max_rank=4, edges="ring", n_iter=30, restarts=2)
    lay = _fit.layout(prob.space)
    specs = _fit.als_specs(lay.spec)
    x = jnp.asarray(p.tensor, jnp.float32)
    x = x / jnp.linalg.norm(x)
    shapes = [(d,) + (lay.max_rank,) * len(inc) for d, inc in zip(lay.node_dims, lay.incident,
                                                                  strict=True)]
    d = max(math.prod(s[1:]) for s in shapes)

    def rhs_all(*cs):
        return sum(jnp.sum(network.contract([x] + [c for j, c in enumerate(cs) if j != k], r))
                   for k, (r, _) in enumerate(specs))

    def gram_all(*cs):
        return sum(jnp.sum(network.contract([c for j, c in enumerate(cs) if j != k] * 2, g))
                   for k, (_, g) in enumerate(specs))

    def solve_all(g, b):  # one solve per core, as in a sweep
        return sum(jnp.sum(jnp.linalg.solve(g * (1 + k * 1e-7), b)) for k in range(order))

    out = {}
    for label, fits in (("one candidate (2 restarts)", 2), (f"bucket of {batch}", 2 * batch)):
        keys = jax.random.split(jax.random.PRNGKey(1), len(shapes) + 1)
        cs = [jax.random.normal(k, (fits,) + s, jnp.float32)
              for k, s in zip(keys, shapes, strict=False)]
        a = jax.random.normal(keys[-1], (fits, d, d), jnp.float32)
        g = a @ jnp.swapaxes(a, 1, 2) + d * jnp.eye(d, dtype=jnp.float32)
        b = a[..., :4]
        row = {"rhs": _per_fit_us(jax.vmap(rhs_all), cs, fits),
               "gram": _per_fit_us(jax.vmap(gram_all), cs, fits),
               "solve": _per_fit_us(jax.vmap(solve_all), (g, b), fits)}
        out[label] = row
        print(f"order {order} {label}: " + ", ".join(f"{k} {v:.1f} us" for k, v in row.items()),
              flush=True)
    return out


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
    ap.add_argument("--pieces", action="store_true",
                    help="also time the parts of an ALS sweep (rhs, Gram, solve) alone")
    args = ap.parse_args()
    n = args.n or (32 if args.quick else 128)
    orders = args.orders or ([4] if args.quick else [4, 6])
    rounds = args.rounds or (2 if args.quick else 3)
    results = [measure(o, n, args.batch, rounds, args.n_structure) for o in orders]
    if args.pieces:
        for r in results:
            r["pieces_us_per_fit_sweep"] = pieces(r["order"], args.batch)
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
    if args.pieces:
        md += ["", "Where the time goes: microseconds per fit and ALS sweep (all cores) of each "
               "part alone, jitted, float32.", "",
               "| order | batch | rhs (x with the other cores) | Gram | solve (LU) | sum |",
               "|---|---|---|---|---|---|"]
        for r in results:
            for label, row in r["pieces_us_per_fit_sweep"].items():
                md.append(f"| {r['order']} | {label} | {row['rhs']:.1f} | {row['gram']:.1f} | "
                          f"{row['solve']:.1f} | {sum(row.values()):.1f} |")
    md.append("")
    (OUT / "search_batched.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
