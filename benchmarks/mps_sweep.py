"""Two-site sweep of the MPS classifier (``tnlib.sweep``) against this machine's GEMM rate.

Stoudenmire & Schwab's sweep spends its time in one bond update, repeated ``2 (L - 1)``
times per sweep: the conjugate-gradient solve of the bond tensor's squared loss over
all training samples (each CG pass is one forward and one adjoint product, two GEMMs
of ``N x (d chi)`` by ``(d chi) x (C d chi)``), the SVD split and one environment step.
This script measures, in one process:

* **GEMM rate**: float32 ``jnp.dot`` of two ``--gemm x --gemm`` matrices (jitted),
  timed in alternation with the bond update so both see the same machine state;
* **bond update** at each ``--chis`` bond (all bonds at ``chi``, ``--n`` samples, 10
  classes, ``--passes`` CG passes): its median time and achieved FLOP/s, counting the
  GEMM work it must do (the outputs at the start and the initial residual, then one
  forward and one adjoint product per CG pass, and the environment step; the SVD
  and element-wise work are not counted, so the ratio is a lower bound), reported as
  a ratio to the GEMM rate;
* **one full sweep** at ``--sweep-chi`` on a 196-site chain over ``--n`` samples of
  random pixels (the shapes of 14x14 MNIST): its wall time, the environment cache it
  keeps (``2 (L + 1) N chi`` float32) and the process's peak resident memory; and the
  time of a ``chi = 120`` sweep extrapolated from the measured update (``2 (L - 1)``
  updates; the bonds near the ends are smaller, so this is an upper bound).

    python benchmarks/mps_sweep.py                 # chi 20, 60, 120; a chi 20 sweep
    python benchmarks/mps_sweep.py --quick         # small shapes (seconds)

Writes ``benchmarks/out/mps_sweep.json`` and ``.md`` (see ``_bench.py``).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

from _bench import add_thread_args, markdown_table, meta, meta_line, threads_from_argv, write

THREADS = threads_from_argv()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from tnlib import sweep as sw  # noqa: E402

C, D_LOCAL = 10, 2


def update_flops(n: int, chi: int, passes: int) -> float:
    """GEMM FLOPs of one bond update (see the module docstring)."""
    k, m = D_LOCAL * chi, C * D_LOCAL * chi
    forward = 2.0 * n * k * m + 2.0 * n * m  # lf @ B, then the per-sample contraction
    adjoint = 2.0 * n * k * m + 1.0 * n * m  # lf^T @ (g (x) rf)
    env = 2.0 * n * chi * k
    return (passes + 1) * (forward + adjoint) + env


def bond_problem(n: int, chi: int, seed: int = 0):
    """A 6-site chain with every inner bond at ``chi`` and the label on site 2, and the
    environments of ``n`` random samples: an update at bond (2, 3) has the full size."""
    rng = np.random.default_rng(seed)
    L = 6
    ranks = [1] + [chi] * (L - 1) + [1]
    cores = [(rng.standard_normal((ranks[k], D_LOCAL, ranks[k + 1])) / np.sqrt(ranks[k]))
             .astype(np.float32) for k in range(L)]
    label = (rng.standard_normal((chi, D_LOCAL, C, chi)) / chi).astype(np.float32)
    mps = sw.from_cores(cores, label, 2, chi)
    x = rng.uniform(size=(n, L)).astype(np.float32) * np.pi / 2
    feats = jnp.asarray(np.stack([np.cos(x), np.sin(x)], -1))
    labels = jnp.asarray(rng.integers(0, C, n), jnp.int32)
    return mps, feats, labels


def time_update(n: int, chi: int, passes: int, gemm, a, repeats: int):
    """Median seconds of the bond update and of the GEMM, timed in alternation."""
    mps, feats, labels = bond_problem(n, chi)
    envs = sw.environments(mps, feats, labels)
    kw = dict(direction="right", passes=passes, max_rank=chi, min_rank=chi, cutoff=0.0)

    def one(envs):
        new, envs, info = sw.update(mps, envs, **kw)
        jax.block_until_ready((new, envs, info))
        return envs

    for _ in range(2):  # compile and warm up both
        envs = one(envs)
        jax.block_until_ready(gemm(a))
    t_up, t_mm = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(gemm(a))
        t_mm.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        envs = one(envs)
        t_up.append(time.perf_counter() - t0)
    return statistics.median(t_up), statistics.median(t_mm)


def time_sweep(n: int, chi: int, passes: int, n_sites: int, seed: int = 0):
    """Wall time of one sweep (from a data-driven start of bond ``chi``, the label in
    the middle, bonds grown to ``chi``) after a warm-up sweep that compiles."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, n_sites)).astype(np.float32) * np.pi / 2
    feats = np.stack([np.cos(x), np.sin(x)], -1)
    labels = rng.integers(0, C, n).astype(np.int32)
    mps = sw.init_from_data(jax.random.key(seed), feats, labels, C, init_bond=min(10, chi),
                            per_class=20, center=n_sites // 2)
    feats, labels = jnp.asarray(feats), jnp.asarray(labels)
    kw = dict(passes=passes, cutoff=0.0, min_rank=chi, grow_to=chi)
    envs = sw.environments(mps, feats, labels)
    mps, envs, _ = sw.sweep(mps, envs, **kw)  # compiles (and grows the bonds to chi)
    t0 = time.perf_counter()
    mps, envs, info = sw.sweep(mps, envs, **kw)
    jax.block_until_ready((mps, envs))
    seconds = time.perf_counter() - t0
    env_bytes = sum(a.nbytes for a in (envs.left, envs.right, envs.left_scale, envs.right_scale))
    return seconds, env_bytes, int(np.max(np.asarray(mps.ranks))), len(info["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
    parser.add_argument("--n", type=int, default=60000, help="training samples")
    parser.add_argument("--chis", default="20,60,120", help="bond dims of the update")
    parser.add_argument("--passes", type=int, default=4, help="CG passes per update")
    parser.add_argument("--gemm", type=int, default=2048, help="side of the GEMM")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep-chi", type=int, default=20)
    parser.add_argument("--sites", type=int, default=196)
    add_thread_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.n, args.chis, args.gemm, args.repeats = 2000, "8,16", 512, 3
        args.sweep_chi, args.sites = 8, 20
    chis = [int(c) for c in args.chis.split(",")]

    a = jax.random.normal(jax.random.key(0), (args.gemm, args.gemm), jnp.float32)
    gemm = jax.jit(lambda m: m @ m)
    gemm_flops = 2.0 * args.gemm**3
    rows, results = [], {}
    for chi in chis:
        t_up, t_mm = time_update(args.n, chi, args.passes, gemm, a, args.repeats)
        rate, peak = update_flops(args.n, chi, args.passes) / t_up, gemm_flops / t_mm
        results[chi] = {"update_s": t_up, "update_gflops": rate / 1e9, "gemm_gflops": peak / 1e9,
                        "ratio": rate / peak}
        rows.append([chi, f"{t_up * 1e3:.1f}", f"{rate / 1e9:.1f}", f"{peak / 1e9:.1f}",
                     f"{rate / peak:.2f}"])
        print(f"chi={chi}: update {t_up * 1e3:.1f} ms, {rate / 1e9:.1f} GFLOP/s; GEMM "
              f"{peak / 1e9:.1f} GFLOP/s; ratio {rate / peak:.2f}", flush=True)

    per_sweep = 2 * (args.sites - 1)
    sweep_s, env_bytes, reached, updates = time_sweep(args.n, args.sweep_chi, args.passes,
                                                      args.sites)
    assert updates == per_sweep, (updates, per_sweep)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    env_120 = 2 * (args.sites + 1) * args.n * (120 + 1) * 4
    sweep = {"chi": args.sweep_chi, "reached": reached, "seconds": sweep_s,
             "env_bytes": env_bytes, "peak_rss_bytes": peak_rss, "updates": updates,
             "env_bytes_chi120": env_120}
    if 120 in results:
        sweep["chi120_sweep_s_extrapolated"] = per_sweep * results[120]["update_s"]
    print(f"sweep chi={args.sweep_chi} (reached {reached}) over {args.n} samples, "
          f"{args.sites} sites: {sweep_s:.1f} s; environments {env_bytes / 2**30:.2f} GiB; "
          f"peak RSS {peak_rss / 2**30:.2f} GiB", flush=True)

    m = meta(threads=THREADS)
    md = [f"Bond update of `tnlib.sweep` (CG, {args.passes} passes, {args.n} samples, "
          f"10 classes) against a {args.gemm}^2 float32 GEMM timed in alternation. "
          + meta_line(m), "",
          markdown_table(["chi", "update ms", "update GFLOP/s", "GEMM GFLOP/s",
                          "update / GEMM"], rows), "",
          f"One sweep at chi = {args.sweep_chi} (bond reached {reached}), {args.sites} sites, "
          f"{args.n} samples: {sweep_s:.1f} s, environments {env_bytes / 2**30:.2f} GiB, "
          f"peak RSS {peak_rss / 2**30:.2f} GiB. Environments at chi = 120: "
          f"{env_120 / 2**30:.1f} GiB."]
    if "chi120_sweep_s_extrapolated" in sweep:
        md.append(f"A chi = 120 sweep, extrapolated from the update ({per_sweep} updates): "
                  f"{sweep['chi120_sweep_s_extrapolated'] / 60:.0f} min (upper bound).")
    write("mps_sweep", {"meta": m, "args": vars(args), "update": results, "sweep": sweep},
          "\n".join(md))


if __name__ == "__main__":
    main()
