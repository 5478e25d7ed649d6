"""Tucker (HOSVD, HOOI) and CP-ALS side by side: tnlib against tensorly (CPU).

Same float64 tensor (``jax_enable_x64``) for every contender, in one process, after
warm-up. Ours is the ``tnlib`` function under ``jax.jit`` (compiled once, the compiled
call timed); tensorly runs with its NumPy backend (eager) and its JAX backend (under
``jax.jit`` when the call traces, else eagerly; the JSON records which).

  * ``hosvd``: ``tnlib.tucker.hosvd(x, ranks)`` against
    ``tensorly.decomposition.tucker(x, rank, init='svd', n_iter_max=0)`` (its HOSVD
    initialization, no HOOI sweep);
  * ``hooi``: ``tnlib.tucker.hooi(x, ranks, n_iter=N_ITER)`` against
    ``tucker(x, rank, init='svd', n_iter_max=N_ITER, tol=0)`` (all sweeps run);
  * ``cp_als``: ``tnlib.cp.als(x, rank, n_iter=N_ITER)`` against
    ``tensorly.decomposition.parafac(x, rank, init='svd', n_iter_max=N_ITER, tol=0)``.

The tensors have planted structure (a random Tucker / CP tensor of the fitted rank plus
1% Gaussian noise). Before timing, the relative reconstruction errors
``||x - fit|| / ||x||`` are compared: ours must be at most tensorly's times 1.001 (as
the unit tests require); both are recorded. The table gives medians and
``peer time / our time`` (> 1: we are faster).

    python benchmarks/peers_decomp.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings

# before jax / numpy are imported: they read the thread settings at import
from _bench import threads_from_argv  # noqa: E402

THREADS = threads_from_argv()  # one thread for XLA, OpenMP and BLAS, ours and peers alike

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _bench import (  # noqa: E402
    add_thread_args,
    jit_or_eager,
    markdown_table,
    median_seconds,
    meta,
    meta_line,
    write,
)

from tnlib import cp, tucker  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)

import tensorly as tl  # noqa: E402
from tensorly.decomposition import parafac  # noqa: E402
from tensorly.decomposition import tucker as tl_tucker  # noqa: E402

PEERS = ("tensorly (numpy)", "tensorly (jax)")
N_ITER = 10
RATIO = 1.001


def _rel_err(x, dense):
    x, dense = np.asarray(x), np.asarray(dense)
    return float(np.linalg.norm((x - dense).ravel()) / np.linalg.norm(x.ravel()))


# tensorly calls return plain tuples of arrays so that jax.jit can return them


def _tl_tucker(x, ranks, n_iter):
    core, factors = tl_tucker(x, rank=list(ranks), init="svd", n_iter_max=n_iter, tol=0)
    return core, tuple(factors)


def _tl_parafac(x, rank, n_iter):
    weights, factors = parafac(x, rank, init="svd", n_iter_max=n_iter, tol=0)
    return weights, tuple(factors)


def _tl_dense(kind, out):
    with tl.backend_context("numpy"):
        if kind == "cp_als":
            w, f = out
            return tl.cp_to_tensor((np.asarray(w), [np.asarray(a) for a in f]))
        core, f = out
        return tl.tucker_to_tensor((np.asarray(core), [np.asarray(a) for a in f]))


def _time(fn, *args, quick=False):
    est = median_seconds(fn, *args, warmup=1, repeats=1)
    if est > 1.0:
        return median_seconds(fn, *args, warmup=0, repeats=3)
    return median_seconds(fn, *args, warmup=1, repeats=5 if quick else 7,
                          min_time=min(0.05, 20 * est))


def planted(kind, dims, rank, seed):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    if kind == "cp_als":
        signal = cp.to_dense(cp.random(k1, dims, rank, jnp.float64))
    else:
        signal = tucker.to_dense(tucker.random(k1, dims, rank, jnp.float64))
    noise = jax.random.normal(k2, dims, jnp.float64)
    return signal + 1e-2 * noise * jnp.linalg.norm(signal) / jnp.linalg.norm(noise)


def bench(kind, dims, rank, quick):
    x = planted(kind, dims, rank, seed=len(dims) * 1000 + dims[0] + rank)
    x_np = np.asarray(x)
    ranks = (rank,) * len(dims)
    if kind == "hosvd":
        ours = jax.jit(functools.partial(tucker.hosvd, ranks=ranks))
        peer = functools.partial(_tl_tucker, ranks=ranks, n_iter=0)
        to_dense = tucker.to_dense
    elif kind == "hooi":
        ours = jax.jit(functools.partial(tucker.hooi, ranks=ranks, n_iter=N_ITER))
        peer = functools.partial(_tl_tucker, ranks=ranks, n_iter=N_ITER)
        to_dense = tucker.to_dense
    else:
        ours = jax.jit(functools.partial(cp.als, rank=rank, n_iter=N_ITER))
        peer = functools.partial(_tl_parafac, rank=rank, n_iter=N_ITER)
        to_dense = cp.to_dense
    our_err = _rel_err(x_np, to_dense(ours(x)))
    row = {"op": kind, "dims": dims, "rank": rank, "ours_s": _time(ours, x, quick=quick),
           "ours_err": our_err, "peers": {}}
    for name in PEERS:
        backend = "jax" if name.endswith("(jax)") else "numpy"
        with tl.backend_context(backend):
            if backend == "jax":
                fn, mode = jit_or_eager(peer, x)
                arg = x
            else:
                fn, mode, arg = peer, "eager", x_np
            out = fn(arg)
            seconds = _time(fn, arg, quick=quick)
        err = _rel_err(x_np, _tl_dense(kind, out))
        assert our_err <= err * RATIO + 1e-12, (
            f"{kind} {dims} rank {rank}: our error {our_err:.6e} > {name}'s {err:.6e} * {RATIO}")
        row["peers"][name] = {"s": seconds, "mode": mode, "err": err,
                              "err_ratio": our_err / err}
    print(kind, dims, rank, f"ours {row['ours_s'] * 1e3:.2f} ms err {our_err:.4e}",
          {k: f"{v['s'] * 1e3:.2f} ms ({v['mode']}) err {v['err']:.4e}"
           for k, v in row["peers"].items()}, flush=True)
    return row


def table(rows, m, command):
    header = ["op", "tensor", "rank", "ours (ms)", *[f"{p} ms (ratio)" for p in PEERS],
              "rel. error ours", "error ours / tensorly (numpy)"]
    body = []
    for r in rows:
        cells = [f"{v['s'] * 1e3:.3g} ({v['s'] / r['ours_s']:.3g}x)"
                 for v in (r["peers"][p] for p in PEERS)]
        body.append([r["op"], "x".join(map(str, r["dims"])), r["rank"], r["ours_s"] * 1e3,
                     *cells, f"{r['ours_err']:.4e}",
                     f"{r['peers']['tensorly (numpy)']['err_ratio']:.6f}"])
    modes = sorted({f"{r['op']}: {r['peers']['tensorly (jax)']['mode']}" for r in rows})
    return "\n".join([
        f"`{command}` (float64, CPU; {N_ITER} sweeps for HOOI and CP-ALS, SVD "
        "initialization, no early stop; median wall time after warm-up; ratio = peer time "
        f"/ our time, > 1 means tnlib is faster; our reconstruction error is at most "
        f"tensorly's x {RATIO} in every row)", "",
        markdown_table(header, body), "",
        "tensorly (jax) modes: " + "; ".join(modes) + ".", "", meta_line(m)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_thread_args(ap)
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    args = ap.parse_args()
    if args.quick:
        cases = [("hosvd", (16, 16, 16), 4), ("hooi", (16, 16, 16), 4),
                 ("cp_als", (16, 16, 16), 4)]
    else:
        tucker_sizes = [((32, 32, 32), 8), ((64, 64, 64), 16), ((16, 16, 16, 16), 6),
                        ((100, 100, 100), 10)]
        cp_sizes = [((32, 32, 32), 8), ((64, 64, 64), 10), ((16, 16, 16, 16), 6),
                    ((100, 100, 100), 10)]
        cases = ([("hosvd", d, r) for d, r in tucker_sizes]
                 + [("hooi", d, r) for d, r in tucker_sizes]
                 + [("cp_als", d, r) for d, r in cp_sizes])
    rows = [bench(kind, dims, rank, args.quick) for kind, dims, rank in cases]
    m = meta(("tensorly", "numpy"), threads=THREADS)
    command = "python benchmarks/peers_decomp.py" + (" --quick" if args.quick else "")
    payload = {"meta": m, "command": command, "dtype": "float64", "n_iter": N_ITER,
               "error_ratio_bound": RATIO, "rows": rows}
    write("peers_decomp" + ("_quick" if args.quick else ""), payload,
          table(rows, m, command))


if __name__ == "__main__":
    sys.exit(main())
