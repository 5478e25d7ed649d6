"""BTT / Monarch matvec layouts against a dense layer of the same shape.

For widths 1024 (factors 32 x 32) and 4096 (64 x 64), ranks 1 (Monarch), 2 and 4,
batches 256 and 1024, float32 and bfloat16, times forward (``matvec``) and
forward+backward (``jax.grad`` of ``sum(y**2)`` with respect to ``x`` and the weights)
of:

  * ``old``: the pre-issue-7 implementation (``x`` transposed to ``(n2, n1, B)``, two
    ``jnp.matmul`` with the batch as the GEMM's column dimension, explicit transposes of
    the activations between and after; bf16 accumulates in bf16 where XLA does);
  * ``new``: ``tnlib.btt.matvec`` (two ``lax.dot_general``; rank 1: the batch as the
    GEMMs' row dimension, no activation transposed before the products; rank > 1: the
    ``old`` layout; bf16 inputs with float32 accumulation, bf16 intermediate);
  * ``rows``: the batch-as-rows layout at every rank (the candidate ``new`` keeps for
    rank 1 only, where it measured faster), same precision;
  * ``dense``: ``x @ W.T`` (``dot_general``, float32 accumulation for bf16).

Reports medians (rounds interleave the implementations so machine load hits them
alike), achieved GFLOP/s (``btt.flops``; backward counted as twice the forward) and the
fraction of the dense layer's FLOP/s. A second table compares the bf16 precision
choices (intermediate rounded to bf16 or kept float32; pure bf16 accumulation) by the
error against the float64 product of the same bf16-rounded inputs. Writes
``benchmarks/out/btt_layout.json`` and ``.md``.

    python benchmarks/btt_layout.py            # full grid
    python benchmarks/btt_layout.py --quick    # width 1024 only, 3 rounds
"""

from __future__ import annotations

import argparse
import itertools
import time

from _bench import threads_from_argv

THREADS = threads_from_argv()  # before jax is imported

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _bench import add_thread_args, markdown_table, meta, meta_line, write  # noqa: E402
from jax import lax  # noqa: E402

from tnlib import _numerics, btt  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 reference of the accuracy table


def old_matvec(left, right, xf):
    """The pre-issue-7 BlockTT matvec (as it was in tnlib/btt.py)."""
    n2, m1, n1, r = left.shape
    m2 = right.shape[1]
    xs = xf.reshape(-1, n1, n2).transpose(2, 1, 0)  # (n2, n1, B)
    lmat = left.transpose(0, 1, 3, 2).reshape(n2, m1 * r, n1)
    z = jnp.matmul(lmat, xs).reshape(n2, m1, r, -1)
    zs = z.transpose(1, 0, 2, 3).reshape(m1, n2 * r, -1)  # (m1, n2 r, B)
    y = jnp.matmul(right.reshape(m1, m2, n2 * r), zs)
    return y.transpose(2, 0, 1).reshape(-1, m1 * m2)


def new_matvec(left, right, xf):
    return btt.matvec(btt.BlockTT(left, right), xf)


def rows_matvec(left, right, xf):
    """Batch as the GEMMs' row dimension at every rank (what ``new`` does at rank 1):
    z (n2, B, m1, r), y (m1, B, m2); no activation transposed before the products."""
    n2, m1, n1, r = left.shape
    m2 = right.shape[1]
    dt, acc = _numerics.accumulation_dtypes(xf, left, right)
    x3 = xf.reshape(-1, n1, n2)
    z = lax.dot_general(x3, left, (((1,), (2,)), ((2,), (0,))),
                        preferred_element_type=acc).astype(dt)
    y = lax.dot_general(z, right, (((0, 3), (2, 3)), ((2,), (0,))),
                        preferred_element_type=acc).astype(dt)
    return y.transpose(1, 0, 2).reshape(-1, m1 * m2)


def mid_f32_matvec(left, right, xf):
    """``rows`` with the stage-1 result kept in float32 (stage 2 mixes f32 and bf16)."""
    n2, m1, n1, r = left.shape
    dt, acc = _numerics.accumulation_dtypes(xf, left, right)
    x3 = xf.reshape(-1, n1, n2)
    z = lax.dot_general(x3, left, (((1,), (2,)), ((2,), (0,))), preferred_element_type=acc)
    y = lax.dot_general(z, right, (((0, 3), (2, 3)), ((2,), (0,))), preferred_element_type=acc)
    return y.transpose(1, 0, 2).astype(dt).reshape(-1, m1 * right.shape[1])


def pure_bf16_matvec(left, right, xf):
    """Both GEMMs asked for bf16 results (``preferred_element_type=bf16``)."""
    n2, m1, n1, r = left.shape
    x3 = xf.reshape(-1, n1, n2)
    z = lax.dot_general(x3, left, (((1,), (2,)), ((2,), (0,))), preferred_element_type=xf.dtype)
    y = lax.dot_general(z, right, (((0, 3), (2, 3)), ((2,), (0,))),
                        preferred_element_type=xf.dtype)
    return y.transpose(1, 0, 2).reshape(-1, m1 * right.shape[1])


def dense_matvec(w, xf):
    dt, acc = _numerics.accumulation_dtypes(xf, w)
    return lax.dot_general(xf, w, (((1,), (1,)), ((), ())), preferred_element_type=acc).astype(dt)


def _loss(f):
    return lambda *a: jnp.sum(jnp.square(f(*a).astype(jnp.float32)))


IMPLS = {"old": old_matvec, "new": new_matvec, "rows": rows_matvec}


def interleaved_medians(fns: dict, args: dict, rounds: int) -> dict:
    """Median seconds per function; each round calls every function once (after two
    warm-up calls each), so load changes affect all of them alike."""
    for name, f in fns.items():
        for _ in range(2):
            jax.block_until_ready(f(*args[name]))
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args[name]))
            samples[name].append(time.perf_counter() - t0)
    return {name: float(np.median(s)) for name, s in samples.items()}


def timing_rows(widths, ranks, batches, dtypes, rounds):
    rows, records = [], []
    key = jax.random.PRNGKey(0)
    for width, dtype, batch in itertools.product(widths, dtypes, batches):
        f = int(round(width ** 0.5))
        kx, kw = jax.random.split(jax.random.fold_in(key, width))
        x = jax.random.normal(kx, (batch, width), jnp.float32).astype(dtype)
        dense_w = (jax.random.normal(kw, (width, width), jnp.float32) / width ** 0.5).astype(dtype)
        dense_flops = 2 * batch * width * width
        for mode in ("fwd", "fwd+bwd"):
            fns, args = {}, {}
            for rank in ranks:
                w = btt.random(jax.random.fold_in(kw, rank), ((f, f), (f, f)), rank)
                w = jax.tree.map(lambda a, dt=dtype: a.astype(dt), w)
                for name, impl in IMPLS.items():
                    fn = impl if mode == "fwd" else jax.grad(_loss(impl), argnums=(0, 1, 2))
                    fns[(name, rank)] = jax.jit(fn)
                    args[(name, rank)] = (w.left, w.right, x)
            fn = dense_matvec if mode == "fwd" else jax.grad(_loss(dense_matvec), argnums=(0, 1))
            fns[("dense", 0)], args[("dense", 0)] = jax.jit(fn), (dense_w, x)
            med = interleaved_medians(fns, args, rounds)
            mult = 1 if mode == "fwd" else 3
            t_dense = med[("dense", 0)]
            dense_rate = mult * dense_flops / t_dense
            for rank in ranks:
                w = btt.BlockTT(jnp.zeros((f, f, f, rank)), jnp.zeros((f, f, f, rank)))
                fl = mult * btt.flops(w, batch)
                rate = {n: fl / med[(n, rank)] for n in IMPLS}
                rec = dict(width=width, factors=f"{f}x{f}", rank=rank, batch=batch,
                           dtype=jnp.dtype(dtype).name, mode=mode, dense_ms=1e3 * t_dense,
                           dense_gflops=dense_rate / 1e9,
                           **{f"{n}_ms": 1e3 * med[(n, rank)] for n in IMPLS},
                           **{f"{n}_gflops": rate[n] / 1e9 for n in IMPLS},
                           **{f"{n}_frac_dense": rate[n] / dense_rate for n in IMPLS})
                records.append(rec)
                rows.append([width, rank, batch, rec["dtype"], mode,
                             *[rec[f"{n}_ms"] for n in IMPLS], rec["dense_ms"],
                             *[rec[f"{n}_frac_dense"] for n in IMPLS],
                             rec["old_ms"] / rec["new_ms"]])
                print(rows[-1], flush=True)
    header = ["width", "rank", "batch", "dtype", "mode", "old ms", "new ms", "rows ms",
              "dense ms", "old frac dense", "new frac dense", "rows frac dense", "old/new"]
    return header, rows, records


def accuracy_rows(rounds):
    """bf16 precision choices at width 4096 (64 x 64), batch 256: max and relative
    Frobenius error against float64 of the same bf16-rounded inputs, and times."""
    rows, records = [], []
    variants = {"new (f32 acc, bf16 mid)": new_matvec, "f32 acc, f32 mid": mid_f32_matvec,
                "bf16 results (preferred bf16)": pure_bf16_matvec, "old (jnp.matmul)": old_matvec}
    for rank in (1, 4):
        w = btt.random(jax.random.PRNGKey(rank), ((64, 64), (64, 64)), rank)
        w = jax.tree.map(lambda a: a.astype(jnp.bfloat16), w)
        x = jax.random.normal(jax.random.PRNGKey(9), (256, 4096)).astype(jnp.bfloat16)
        w64 = jax.tree.map(lambda a: a.astype(jnp.float64), w)
        ref = np.asarray(btt.matvec(w64, x.astype(jnp.float64)))
        jitted = {n: jax.jit(f) for n, f in variants.items()}
        med = interleaved_medians(jitted, {n: (w.left, w.right, x) for n in variants}, rounds)
        for name, f in jitted.items():
            y = np.asarray(f(w.left, w.right, x).astype(jnp.float64))
            err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
            rec = dict(rank=rank, variant=name, rel_fro_err=float(err),
                       max_abs_err=float(np.max(np.abs(y - ref))), ms=1e3 * med[name])
            records.append(rec)
            rows.append([rank, name, rec["rel_fro_err"], rec["max_abs_err"], rec["ms"]])
            print(rows[-1], flush=True)
    header = ["rank", "bf16 variant", "rel. Frobenius error", "max abs error", "fwd ms"]
    return header, rows, records


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="width 1024 only, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    add_thread_args(parser)
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    widths = (1024,) if args.quick else (1024, 4096)
    m = meta(threads=THREADS)
    h1, r1, rec1 = timing_rows(widths, (1, 2, 4), (256, 1024), (jnp.float32, jnp.bfloat16),
                               rounds)
    h2, r2, rec2 = accuracy_rows(rounds)
    cmd = "python benchmarks/btt_layout.py" + (" --quick" if args.quick else "")
    md = (f"`{cmd}` ({meta_line(m)}; median of {rounds} interleaved rounds; fwd+bwd = "
          "grad of sum(y**2) wrt x and weights, counted as 3x the forward FLOPs)\n\n"
          + markdown_table(h1, r1) + "\n\nbf16 accuracy (width 4096, batch 256, error "
          "against float64 on the same bf16 inputs)\n\n" + markdown_table(h2, r2))
    write("btt_layout", {"meta": m, "timing": rec1, "accuracy": rec2}, md)


if __name__ == "__main__":
    main()
