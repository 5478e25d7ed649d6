"""TT-matrix (MPO) operations of issue 24 side by side: tnlib against quimb (CPU).

Same float64 inputs for ours and the peer, in one process, after warm-up; the table
gives median wall times and the ratios ``quimb time / our time`` (> 1: we are faster).
Before timing, quimb's result is checked against ours (relative difference of the dense
results, or of the scalar, below 1e-6).

Operations (``L`` sites of square mode size ``n``; random TT-matrices from
``tt.random``):

  * ``matmul``: TT-matrix x TT-matrix, bonds ``chi`` and 4 (exact; bonds multiply):
    ``tt.matmul`` vs ``MatrixProductOperator.apply`` (an MPO applied to an MPO);
  * ``trace``: ``tt.trace`` vs ``MatrixProductOperator.trace``, bond ``chi``;
  * ``round``: TT-matrix of stored bond ``2 chi`` and exact rank ``chi`` (``a + 0.5 a``
    through ``tt.add``) rounded to ``chi``: ``tt.round`` vs ``MPO.compress(max_bond=chi,
    cutoff=0)`` (both exact here, so the results agree);
  * ``bilinear``: ``x^T A y`` with ``x``, ``y`` of bond ``chi`` and ``A`` of bond 4:
    ``tt.bilinear_form`` (one sweep) vs quimb contracting the network ``x.H & A & y``
    (``contract(all, optimize="auto-hq")``).

Contenders: ours, the ``tnlib.tt`` function under ``jax.jit``, the compiled call timed;
``quimb (numpy)``, eager with NumPy arrays; ``quimb (jax)``, the same calls on JAX
arrays (autoray dispatch), the whole function (building the quimb objects included)
under ``jax.jit`` when it traces, else eager (the table says which). The quimb objects
are built inside the timed call for both, as the JAX one must be.
tensorly has no TT-matrix product, trace, rounding or bilinear form (its ``tt_matrix``
module converts to and from dense only), so it has no column here.

Writes ``benchmarks/out/peers_tt_matrix.json`` and ``.md``.

    python benchmarks/peers_tt_matrix.py --single-thread [--quick]
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings

from _bench import threads_from_argv  # noqa: E402

THREADS = threads_from_argv()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import quimb.tensor as qtn  # noqa: E402
from _bench import (  # noqa: E402
    add_thread_args,
    alternate,
    best_of,
    fmt_ratio,
    jit_or_eager,
    markdown_table,
    meta,
    meta_line,
    ratio_stats,
    write,
)

from tnlib import tt  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
TOL = 1e-6
MPO_BOND = 4


def mpo_arrays(m: tt.TTMatrix, xp=np):
    """TT-matrix cores ``(l, out, in, r)`` in quimb's ``'lrud'`` layout (upper = out)."""
    c = [xp.asarray(x) for x in m.cores]
    return ([c[0][0].transpose(2, 0, 1)] + [x.transpose(0, 3, 1, 2) for x in c[1:-1]]
            + [c[-1][..., 0]])


def mps_arrays(t: tt.TensorTrain, xp=np):
    c = [xp.asarray(x) for x in t.cores]
    return [c[0][0].T] + [x.transpose(0, 2, 1) for x in c[1:-1]] + [c[-1][..., 0]]


def mpo(arrays):
    return qtn.MatrixProductOperator(list(arrays), shape="lrud")


def mps(arrays, site_ind: str = "k{}"):
    return qtn.MatrixProductState(list(arrays), shape="lrp", site_ind_id=site_ind)


def data(out):
    """A quimb result as arrays (what a jitted function can return)."""
    return [t.data for t in out] if hasattr(out, "tensors") else out


def rel(x, y) -> float:
    x, y = np.asarray(x), np.asarray(y)
    return float(np.linalg.norm((x - y).ravel()) / max(np.linalg.norm(x.ravel()), 1e-300))


def q_matmul(aa, wa):
    return mpo(aa).apply(mpo(wa))


def q_trace(aa):
    return mpo(aa).trace()


def q_round(aa, chi, method="svd"):
    out = mpo(aa)
    out.compress(max_bond=chi, cutoff=0.0, method=method)
    return out


def q_bilinear(xa, wa, ya):
    return (mps(xa, "k{}").H & mpo(wa) & mps(ya, "b{}")).contract(all, optimize="auto-hq")


def row(op, size, ours, args, peer, np_args, jax_args, ref, peer_value, modes=(None,)):
    """Check quimb (numpy objects, and JAX arrays eagerly) against ``ref`` in each of its
    ``modes`` (``method=`` values, None: the call as it is), then time ours, quimb numpy
    and quimb jax (jitted when it traces, returning the result's arrays) in alternation
    (``_bench.alternate``); each side of quimb is reported in its fastest mode."""
    contenders, diffs, how = {"ours": (ours, args)}, [], {}
    for m in modes:
        fn = peer if m is None else functools.partial(peer, method=m)
        diff = max(rel(ref, peer_value(fn(*np_args))), rel(ref, peer_value(fn(*jax_args))))
        assert diff < TOL, (op, size, m, diff)
        diffs.append(diff)
        f_jax, how[m] = jit_or_eager(lambda *a, fn=fn: data(fn(*a)), *jax_args)
        contenders[f"quimb (numpy) [{m or 'default'}]"] = (fn, np_args)
        contenders[f"quimb (jax) [{m or 'default'}]"] = (f_jax, jax_args)
    samples = alternate(contenders, rounds=15, budget=40)
    stats = ratio_stats(samples, "ours")
    out = {"op": op, "size": size, "ours_s": stats["ours"]["s"], "rel_diff": max(diffs),
           "quimb_jax_mode": "; ".join(sorted(set(how.values()))), "contenders": stats}
    for side in ("numpy", "jax"):
        best = min((k for k in stats if k.startswith(f"quimb ({side})")),
                   key=lambda k: stats[k]["s"])
        out[f"quimb_{side}"] = {"best": best, **stats[best]}
    samples["fastest"] = best_of(samples, [k for k in samples if k != "ours"])
    out["fastest"] = ratio_stats(samples, "ours")["fastest"]
    print(f"{op:9s} {size:28s} ours {out['ours_s'] * 1e3:8.3f} ms  "
          + "  ".join(f"{k} {v['s'] * 1e3:8.3f} ms ({fmt_ratio(v)})" for k, v in stats.items()
                      if k != "ours"), flush=True)
    return out


def bench(L, n, chi):
    keys = jax.random.split(jax.random.PRNGKey(100 * L + chi), 5)
    dims = (n,) * L
    a = tt.random(keys[0], dims, chi, jnp.float64, col_dims=dims)
    w = tt.random(keys[1], dims, MPO_BOND, jnp.float64, col_dims=dims)
    x = tt.random(keys[2], dims, chi, jnp.float64)
    y = tt.random(keys[3], dims, chi, jnp.float64)
    size = f"L={L}, n={n}, chi={chi}"
    an, aj, wn, wj = mpo_arrays(a), mpo_arrays(a, jnp), mpo_arrays(w), mpo_arrays(w, jnp)
    small = n ** L <= 4096  # dense check of the MPO results
    rows = []
    ours = jax.jit(tt.matmul)
    if small:
        rows.append(row("matmul", size + f", x bond {MPO_BOND}", ours, (a, w), q_matmul,
                        (an, wn), (aj, wj), tt.to_dense(ours(a, w)), lambda m: m.to_dense()))
    ours = jax.jit(tt.trace)
    rows.append(row("trace", size, ours, (a,), q_trace, (an,), (aj,), ours(a), lambda v: v))
    s = tt.add(a, tt.scale(a, 0.5))  # stored bond 2 chi, exact rank chi
    ours = jax.jit(functools.partial(tt.round, max_rank=chi))
    q_r = functools.partial(q_round, chi=chi)
    if small:
        rows.append(row("round", size + " (2chi -> chi)", ours, (s,), q_r, (mpo_arrays(s),),
                        (mpo_arrays(s, jnp),), tt.to_dense(ours(s)), lambda m: m.to_dense(),
                        modes=("svd", "svd:eig")))
    ours = jax.jit(tt.bilinear_form)
    rows.append(row("bilinear", size + f", A bond {MPO_BOND}", ours, (w, x, y), q_bilinear,
                    (mps_arrays(x), wn, mps_arrays(y)),
                    (mps_arrays(x, jnp), wj, mps_arrays(y, jnp)), ours(w, x, y), lambda v: v))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_thread_args(ap)
    ap.add_argument("--quick", action="store_true", help="one small size (seconds)")
    args = ap.parse_args()
    sizes = [(6, 2, 4)] if args.quick else [(8, 2, 8), (12, 2, 16), (6, 4, 16)]
    rows = [r for L, n, chi in sizes for r in bench(L, n, chi)]
    m = meta(["quimb"], threads=THREADS)
    command = ("python benchmarks/peers_tt_matrix.py"
               + (" --single-thread" if THREADS == 1 else "") + (" --quick" if args.quick else ""))
    def cell(v):
        mode = v["best"].split("[", 1)[1].rstrip("]")
        return f"{v['s'] * 1e3:.3g} ({fmt_ratio(v)})" + ("" if mode == "default" else f" `{mode}`")

    body = [[r["op"], r["size"], r["ours_s"] * 1e3, cell(r["quimb_numpy"]), cell(r["quimb_jax"]),
             fmt_ratio(r["fastest"])] for r in rows]
    modes = "; ".join(sorted({f"{r['op']}: {r['quimb_jax_mode']}" for r in rows}))
    md = "\n".join([
        f"`{command}` (float64, CPU; ours and every quimb mode timed in alternation; ratio = "
        "quimb time / our time in the same round, median over rounds [interquartile range], "
        "> 1 means tnlib is faster; rounding also with quimb's `method='svd:eig'`; "
        f"quimb's results agree with ours to relative "
        f"difference < {TOL:g}, max {max(r['rel_diff'] for r in rows):.1e})", "",
        markdown_table(["op", "size", "ours (ms)", "quimb (numpy) ms (ratio [IQR])",
                        "quimb (jax) ms (ratio [IQR])", "fastest peer / ours"], body), "",
        f"quimb (jax) modes: {modes}.", "", meta_line(m)])
    write("peers_tt_matrix" + ("_quick" if args.quick else ""),
          {"meta": m, "command": command, "rows": rows}, md)


if __name__ == "__main__":
    sys.exit(main())
