"""jit compile time of MPS feature contraction against chain length, ours and the peers.

Contracts an MPS (bond 10, local dim 2, float32) with one feature vector per site (the
MPS classifier's contraction) for L in (16, 64, 256, 1024) sites:

  * ``scan``: ``tnlib.tt.sweep_features(..., method="scan")`` on stacked ``(L, r, n, r)``
    cores (one ``lax.scan``);
  * ``tree``: ``sweep_features(..., method="tree")``, the log-depth pairwise product
    (when this tnlib has it);
  * ``contract_features``: the public function on a ``TensorTrain`` (a tuple of L cores,
    stacked inside the jitted function; the method its ``auto`` rule picks: the
    log-depth tree for one chain of 128 sites or more);
  * ``contract_features (scan)``: the same tuple API with ``method="scan"``, the like-for-
    like comparison with ``scan`` (the peers also receive L separate arrays);
  * ``stack``: ``tt.stack`` alone, the tuple -> ``(L, r, n, r)`` copy that the tuple API
    adds to the scan (one XLA concatenate of L operands);
  * ``unrolled``: the scan's step as a Python loop over the sites, up to 256 sites;
  * ``quimb``: ``jax.jit`` of a function that builds a quimb ``MatrixProductState`` from
    the L cores (JAX arrays, autoray's jax backend) and the product state
    ``MPS_product_state`` of the features, and returns their overlap ``mps.H @ prod``;
  * ``tensornetwork``: ``jax.jit`` of a function that wraps the cores in a
    ``FiniteMPS`` (JAX backend) and contracts them with the features in one ``tn.ncon``
    call, labels ordered so that each site's feature is absorbed before the next bond.

Every contender's value is checked against ours at the smallest L (relative difference
< 1e-3 in float32). Compile time is ``jit(f).lower(*args).compile()`` wall time
(tracing included) after ``jax.clear_caches()``: the median of 3 compilations for scan,
tree and contract_features, one for the others. The unrolled path and the peers grow
with L: a length is skipped when the previous length's time scaled linearly to it
exceeds CAP_S (60 s); the skipped lengths are recorded as the cap. Writes
``benchmarks/out/compile_time.json`` and ``.md``.

    python benchmarks/compile_time.py [--quick]   # --quick: 8 and 16 sites
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
import warnings

# before jax / numpy are imported: they read the thread settings at import
from _bench import threads_from_argv  # noqa: E402

THREADS = threads_from_argv()  # one thread for XLA, OpenMP and BLAS, ours and peers alike

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _bench import add_thread_args, markdown_table, meta, meta_line, write  # noqa: E402

from tnlib import _features, tt  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)

import quimb.tensor as qtn  # noqa: E402
import tensornetwork as tn  # noqa: E402

BOND, LOCAL = 10, 2
LENGTHS = (16, 64, 256, 1024)
UNROLL_MAX = 256
CAP_S = 60.0
OURS = ("scan", "tree", "contract_features", "contract_features (scan)", "stack")
TOL = 1e-3  # float32, and the value is a sum with cancellations
HAS_METHOD = "method" in inspect.signature(tt.sweep_features).parameters


def _sweep(method):
    if not HAS_METHOD:
        return tt.sweep_features
    return lambda cores, feats, start: tt.sweep_features(cores, feats, start, method=method)


def _unrolled(cores, feats, start):
    vec, acc = start, jnp.zeros((), jnp.float32)
    for k in range(cores.shape[0]):
        (vec, acc), _ = _features.feature_step((vec, acc), (cores[k], feats[k]))
    return vec, acc


def _quimb(arrays, feats):
    mps = qtn.MatrixProductState(arrays, shape="lrp")
    prod = qtn.MPS_product_state([feats[k] for k in range(feats.shape[0])])
    return mps.H @ prod


def _tensornetwork(cores, feats):
    mps = tn.FiniteMPS(list(cores), canonicalize=False, backend="jax")
    L = len(cores)
    tensors, labels = [], []
    for k, core in enumerate(mps.tensors):
        phys = 2 * k + 1
        left = -1 if k == 0 else 2 * k
        right = -2 if k == L - 1 else 2 * k + 2
        tensors += [core, feats[k]]
        labels += [[left, phys, right], [phys]]
    return tn.ncon(tensors, labels, backend="jax")[0, 0]


def _value(method, out):
    """The contraction's value from each contender's output."""
    if method in ("scan", "tree", "unrolled"):
        vec, acc = out
        return float(vec[0] * jnp.exp(acc))
    if method.startswith("contract_features"):
        mant, acc = out
        return float(mant * jnp.exp(acc))
    return float(np.asarray(out))


def compile_seconds(f, *args, repeats=3):
    times = []
    for _ in range(repeats):
        jax.clear_caches()  # otherwise an identical program is served from the cache
        jitted = jax.jit(f)
        t0 = time.perf_counter()
        jitted.lower(*args).compile()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def contenders(L):
    """``{name: (function, args, repeats)}`` for an L-site chain."""
    chain = tt.random(jax.random.PRNGKey(0), (LOCAL,) * L, BOND, jnp.float32)
    # features near the "flat" state scaled so the value stays O(1) at 16 sites
    feats = jnp.ones((L, LOCAL), jnp.float32) + 0.1 * jax.random.normal(
        jax.random.PRNGKey(1), (L, LOCAL), jnp.float32)
    stacked = tt.stack(chain)
    start = jnp.zeros((BOND,), jnp.float32).at[0].set(1)
    c = [jnp.asarray(x) for x in chain.cores]
    q_arrays = [c[0][0].T] + [x.transpose(0, 2, 1) for x in c[1:-1]] + [c[-1][..., 0]]
    out = {"scan": (_sweep("scan"), (stacked, feats, start), 3)}
    if HAS_METHOD:
        out["tree"] = (_sweep("tree"), (stacked, feats, start), 3)
    out["contract_features"] = (tt.contract_features, (chain, feats), 3)
    out["contract_features (scan)"] = (
        lambda c, f: tt.contract_features(c, f, method="scan"), (chain, feats), 3)
    out["stack"] = (tt.stack, (chain,), 3)
    out["unrolled"] = (_unrolled, (stacked, feats, start), 1)
    out["quimb"] = (_quimb, (q_arrays, feats), 1)
    out["tensornetwork"] = (_tensornetwork, (c, feats), 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_thread_args(ap)
    ap.add_argument("--quick", action="store_true", help="8 and 16 sites, one compilation")
    args = ap.parse_args()
    lengths = (8, 16) if args.quick else LENGTHS
    rows, caps, last, agreement = [], {}, {}, {}
    for L in lengths:
        row = {"sites": L}
        for name, (f, fargs, repeats) in contenders(L).items():
            if name == "unrolled" and L > UNROLL_MAX:
                caps.setdefault(name, f"not run beyond {UNROLL_MAX} sites")
                continue
            if name in last:
                prev_L, prev_s = last[name]
                predicted = prev_s * L / prev_L
                if predicted > CAP_S and name not in OURS:
                    caps.setdefault(name, f"largest L = {prev_L}: {L} sites predicted "
                                          f"{predicted:.0f} s > {CAP_S:.0f} s")
                    continue
            if L == lengths[0] and name != "stack":
                agreement[name] = _value(name, jax.jit(f)(*fargs))
            row[f"{name}_s"] = compile_seconds(f, *fargs, repeats=1 if args.quick else repeats)
            last[name] = (L, row[f"{name}_s"])
            if row[f"{name}_s"] > CAP_S and name not in OURS:
                caps.setdefault(name, f"{L} sites took {row[f'{name}_s']:.0f} s > {CAP_S:.0f} s "
                                      "(longer lengths not run)")
                last[name] = (L, float("inf"))
        rows.append(row)
        print(row, flush=True)
    ref = agreement["scan"]
    rel = {k: abs(v - ref) / abs(ref) for k, v in agreement.items()}
    bad = {k: v for k, v in rel.items() if not v < TOL}
    assert not bad, f"values at {lengths[0]} sites differ from the scan's: {bad} (ref {ref})"

    names = [n for n in ("scan", "tree", "contract_features", "contract_features (scan)",
                         "stack", "unrolled", "quimb", "tensornetwork")
             if any(f"{n}_s" in r for r in rows)]
    hi, lo = lengths[-1], 64 if 64 in lengths else lengths[0]
    by = {r["sites"]: r for r in rows}
    growth = {}
    for n in names:
        key = f"{n}_s"
        if key in by.get(hi, {}) and key in by.get(lo, {}):
            growth[n] = {"ratio": by[hi][key] / by[lo][key], "over": f"{hi}/{lo}"}
        else:  # capped: the growth up to the largest length it reached
            done = [r["sites"] for r in rows if key in r and r["sites"] > lo]
            if done and key in by.get(lo, {}):
                top = max(done)
                growth[n] = {"ratio": by[top][key] / by[lo][key], "over": f"{top}/{lo}"}
    m = meta(("quimb", "tensornetwork", "autoray", "cotengra"), threads=THREADS)
    command = "python benchmarks/compile_time.py" + (" --quick" if args.quick else "")
    header = ["sites", *[f"{n} (s)" for n in names]]
    body = [[r["sites"], *[r.get(f"{n}_s", "-") for n in names]] for r in rows]
    growth_txt = ", ".join(f"{n} {g['ratio']:.2f}x" + ("" if g["over"] == f"{hi}/{lo}"
                                                       else f" (L={g['over']})")
                           for n, g in growth.items())
    md = "\n".join([
        f"`{command}` (bond {BOND}, local dim {LOCAL}, float32; jit lower+compile wall "
        "time after clearing caches, median of 3 for scan / tree / contract_features, "
        f"one compilation for the others; values agree with the scan's to < {TOL:g} "
        f"at {lengths[0]} sites)", "",
        markdown_table(header, body), "",
        f"compile({hi}) / compile({lo}): {growth_txt}", "",
        *[f"- {n}: {c}" for n, c in caps.items()], "", meta_line(m)])
    payload = {"meta": m, "command": command, "bond_dim": BOND, "local_dim": LOCAL,
               "cap_s": CAP_S, "rows": rows, "caps": caps, "growth": growth,
               "agreement_rel_diff": rel, "tnlib_has_method_arg": HAS_METHOD}
    write("compile_time" + ("_quick" if args.quick else ""), payload, md)


if __name__ == "__main__":
    sys.exit(main())
