"""TT / MPS operations side by side: tnlib against tensornetwork, quimb and tensorly (CPU).

Every operation runs on the same float64 inputs (``jax_enable_x64``) for ours and each
peer, in one process, after warm-up; the table gives median wall times and the ratio
``peer time / our time`` (> 1: we are faster). Before timing, each peer's result is
checked against ours: the relative difference of the results (the dense reconstruction,
or the TT difference ``||ours - peer|| / ||ours||`` computed exactly by orthogonalizing
``ours - peer``, or the scalar) must be below 1e-6, and is recorded.

Operations (``L`` sites, local dim ``n``, bond ``chi``; random TTs from ``tt.random``):

  * ``inner``: ``<a, b>`` of two TTs of bond ``chi``;
  * ``norm``: ``||a||_F``;
  * ``tt_svd``: TT-SVD of a dense tensor (a bond-``r`` TT plus 1% Gaussian noise) at a
    fixed ``max_rank = r``;
  * ``round``: rounding of ``a + 1e-2 b`` (bond ``2 chi``) to bond ``chi``;
  * ``matmul``: a TT-matrix of bond 4 times a TT of bond ``chi`` (exact; bonds multiply).

Contenders (float64 throughout):

  * ours: the ``tnlib.tt`` function under ``jax.jit``, compiled once, the compiled call
    timed;
  * ``tensornetwork``: JAX backend, ``tn.ncon`` site by site under ``jax.jit`` (what a
    tensornetwork user writes: ``FiniteMPS`` has no overlap, norm, compression, TT-SVD
    or MPO application of its own);
  * ``quimb (numpy)``: ``MatrixProductState`` with NumPy arrays, eager: ``a.H @ b``,
    ``a.norm()``, ``MatrixProductState.from_dense(..., max_bond=r, cutoff=0)``,
    ``.compress(max_bond=chi, cutoff=0)``, ``MatrixProductOperator.apply``;
  * ``quimb (jax)``: the same calls on JAX arrays (autoray dispatch), the whole function
    (building the quimb objects included) under ``jax.jit``; eager when it does not trace
    (the JSON records which);
  * ``tensorly (numpy)`` / ``tensorly (jax)``: ``tensorly.decomposition.tensor_train``
    for the TT-SVD; tensorly has no TT inner product or norm, so those are computed
    through the dense tensor (``tt_to_tensor``) where it fits (at most 2^22 entries);
    the JAX backend is run under ``jax.jit`` when it traces, else eagerly.

Writes ``benchmarks/out/peers_tt.json`` and ``peers_tt.md``.

    python benchmarks/peers_tt.py [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
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

from tnlib import tt  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning)

import quimb.tensor as qtn  # noqa: E402
import tensorly as tl  # noqa: E402
import tensornetwork as tn  # noqa: E402
from tensorly.decomposition import tensor_train  # noqa: E402

PEERS = ("tensornetwork", "quimb (numpy)", "quimb (jax)", "tensorly (numpy)", "tensorly (jax)")
PACKAGES = ("tensornetwork", "quimb", "tensorly", "autoray", "cotengra", "numpy")
DENSE_MAX = 2**22
TOL = 1e-6
MPO_BOND = 4

# Why a peer has no entry (footnotes of the table).
MISSING = {
    ("tensornetwork", "tt_svd"): "tensornetwork has no TT-SVD (only per-node split_node)",
    ("tensornetwork", "round"): "tensornetwork has no MPS compression to a target bond "
                                "(only two-site gates with truncation)",
    ("tensorly (numpy)", "round"): "tensorly has no TT rounding",
    ("tensorly (jax)", "round"): "tensorly has no TT rounding",
    ("tensorly (numpy)", "matmul"): "tensorly has no TT-matrix times TT product",
    ("tensorly (jax)", "matmul"): "tensorly has no TT-matrix times TT product",
    ("tensorly (numpy)", "inner"): "tensorly has no TT inner product: dense, only up to "
                                   "2^22 entries",
    ("tensorly (jax)", "inner"): "tensorly has no TT inner product: dense, only up to "
                                 "2^22 entries",
    ("tensorly (numpy)", "norm"): "tensorly has no TT norm: dense, only up to 2^22 entries",
    ("tensorly (jax)", "norm"): "tensorly has no TT norm: dense, only up to 2^22 entries",
}


# --------------------------------------------------------------------------- helpers


def _jax_peer(name, fn, args):
    """A peer entry ``(name, callable, args, mode)`` jitted when ``fn`` traces."""
    f, mode = jit_or_eager(fn, *args)
    return name, f, args, mode


def _rel(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return float(np.linalg.norm((x - y).ravel()) / max(np.linalg.norm(x.ravel()), 1e-300))


def _tt_rel_diff(x: tt.TensorTrain, y: tt.TensorTrain) -> float:
    """``||x - y|| / ||x||`` exactly: dense when small, else the norm of the last core
    of the left-orthogonalized difference (no cancellation of squared norms)."""
    if math.prod(x.dims) <= DENSE_MAX:
        return _rel(tt.to_dense(x), tt.to_dense(y))
    d = tt.orthogonalize(tt.add(x, tt.scale(y, -1.0)), x.n_sites - 1)
    return float(jnp.linalg.norm(d.cores[-1]) / jnp.exp(tt.log_norm(x)))


def _quimb_mps_arrays(t: tt.TensorTrain, xp=np):
    """Cores in quimb's ``'lrp'`` layout (boundary bonds dropped)."""
    c = [xp.asarray(x) for x in t.cores]
    return [c[0][0].T] + [x.transpose(0, 2, 1) for x in c[1:-1]] + [c[-1][..., 0]]


def _quimb_mpo_arrays(m: tt.TTMatrix, xp=np):
    """TT-matrix cores ``(l, out, in, r)`` in quimb's ``'lrud'`` layout (upper = out)."""
    c = [xp.asarray(x) for x in m.cores]
    return ([c[0][0].transpose(2, 0, 1)] + [x.transpose(0, 3, 1, 2) for x in c[1:-1]]
            + [c[-1][..., 0]])


def _from_quimb(mps) -> tt.TensorTrain:
    cores = []
    L = mps.L
    for i in range(L):
        left = mps.bond(i - 1, i) if i > 0 else None
        right = mps.bond(i, i + 1) if i < L - 1 else None
        order = [ix for ix in (left, mps.site_ind(i), right) if ix is not None]
        data = jnp.asarray(np.asarray(mps[i].transpose(*order).data))
        if left is None:
            data = data[None]
        if right is None:
            data = data[..., None]
        cores.append(data)
    return tt.TensorTrain(tuple(cores))


# tensornetwork: ncon sweeps (JAX backend)


def _tn_inner(xs, ys):
    env = jnp.ones((1, 1), xs[0].dtype)
    for x, y in zip(xs, ys, strict=True):
        env = tn.ncon([env, jnp.conj(x), y], [[1, 2], [1, 3, -1], [2, 3, -2]], backend="jax")
    return env[0, 0]


def _tn_norm(xs):
    return jnp.sqrt(jnp.abs(_tn_inner(xs, xs)))


def _tn_matmul(ws, xs):
    out = []
    for w, x in zip(ws, xs, strict=True):
        z = tn.ncon([w, x], [[-1, -3, 1, -4], [-2, 1, -5]], backend="jax")
        out.append(z.reshape(w.shape[0] * x.shape[0], w.shape[1], w.shape[-1] * x.shape[-1]))
    return out


# quimb


def _q_mps(arrays):
    return qtn.MatrixProductState(arrays, shape="lrp")


def _q_inner(xa, ya):
    return _q_mps(xa).H @ _q_mps(ya)


def _q_norm(xa):
    return _q_mps(xa).norm()


def _q_from_dense(x, dims, r):
    return qtn.MatrixProductState.from_dense(x, dims, max_bond=r, cutoff=0.0)


def _q_round(xa, chi):
    mps = _q_mps(xa)
    mps.compress(max_bond=chi, cutoff=0.0)  # in place
    return mps


def _q_round_arrays(xa, chi):
    return tuple(t.data for t in _q_round(xa, chi))


def _q_matmul(wa, xa):
    return qtn.MatrixProductOperator(wa, shape="lrud").apply(_q_mps(xa))


def _q_from_dense_arrays(x, dims, r):
    return tuple(t.data for t in _q_from_dense(x, dims, r))


def _q_matmul_arrays(wa, xa):
    return tuple(t.data for t in _q_matmul(wa, xa))


def _q_rebuild(arrays, like):
    """A quimb MPS with ``like``'s indices and the (jitted) ``arrays`` as data."""
    out = like.copy()
    for t, a in zip(out, arrays, strict=True):
        t.modify(data=np.asarray(a))
    return out


# tensorly


def _tl_dense(cores):
    return tl.tt_to_tensor(list(cores))


def _tl_inner(xs, ys):
    return tl.sum(_tl_dense(xs) * _tl_dense(ys))


def _tl_norm(xs):
    return tl.norm(_tl_dense(xs))


def _tl_tt_svd(x, r):
    return tuple(tensor_train(x, rank=r).factors)


# ---------------------------------------------------------------------- benchmark


class Runner:
    def __init__(self, quick: bool):
        self.quick = quick
        self.rows = []

    def time(self, fn, *args):
        est = median_seconds(fn, *args, warmup=1, repeats=1)
        if est > 1.0:
            return median_seconds(fn, *args, warmup=0, repeats=3)
        return median_seconds(fn, *args, warmup=1, repeats=5 if self.quick else 7,
                              min_time=min(0.05, 20 * est))

    def record(self, op, size, ours_fn, ours_args, peers, check):
        """Time ours and each peer ``(name, fn, args, mode)``; ``check(result)`` gives the
        relative difference of a peer's result from ours (asserted below TOL)."""
        row = {"op": op, "size": size, "ours_s": self.time(ours_fn, *ours_args), "peers": {}}
        for name, fn, args, mode in peers:
            _tl_backend(name)  # tensorly peers run on their own backend; the rest ignore it
            out = fn(*args)
            seconds = self.time(fn, *args)
            tl.set_backend("numpy")
            diff = check(name, out)
            assert diff < TOL, f"{op} {size}: {name} differs from ours by {diff:.2e}"
            row["peers"][name] = {"s": seconds, "mode": mode, "rel_diff": diff}
        self.rows.append(row)
        print(op, size, f"ours {row['ours_s'] * 1e3:.3f} ms",
              {k: f"{v['s'] * 1e3:.3f} ms ({v['mode']}, diff {v['rel_diff']:.1e})"
               for k, v in row["peers"].items()}, flush=True)


def _tl_backend(name):
    if name.startswith("tensorly"):
        tl.set_backend("jax" if name.endswith("(jax)") else "numpy")


def bench_inner_norm(run: Runner, L, n, chi):
    ka, kb = jax.random.split(jax.random.PRNGKey(L * 1000 + chi))
    a = tt.random(ka, (n,) * L, chi, jnp.float64)
    b = tt.random(kb, (n,) * L, chi, jnp.float64)
    size = f"L={L}, n={n}, chi={chi}"
    ref_inner, ref_norm = float(tt.inner(a, b)), float(tt.norm(a))
    ca, cb = list(a.cores), list(b.cores)
    qa_np, qb_np = _quimb_mps_arrays(a), _quimb_mps_arrays(b)
    qa_j, qb_j = _quimb_mps_arrays(a, jnp), _quimb_mps_arrays(b, jnp)
    dense = math.prod(a.dims) <= DENSE_MAX
    na, nb = [np.asarray(c) for c in ca], [np.asarray(c) for c in cb]

    peers_inner = [("tensornetwork", jax.jit(_tn_inner), (ca, cb), "jit"),
                   ("quimb (numpy)", _q_inner, (qa_np, qb_np), "eager"),
                   _jax_peer("quimb (jax)", _q_inner, (qa_j, qb_j))]
    peers_norm = [("tensornetwork", jax.jit(_tn_norm), (ca,), "jit"),
                  ("quimb (numpy)", _q_norm, (qa_np,), "eager"),
                  _jax_peer("quimb (jax)", _q_norm, (qa_j,))]
    if dense:
        tl.set_backend("numpy")
        peers_inner.append(("tensorly (numpy)", _tl_inner, (na, nb), "eager, dense"))
        peers_norm.append(("tensorly (numpy)", _tl_norm, (na,), "eager, dense"))
        tl.set_backend("jax")
        fi, mi = jit_or_eager(_tl_inner, ca, cb)
        fn_, mn = jit_or_eager(_tl_norm, ca)
        peers_inner.append(("tensorly (jax)", fi, (ca, cb), mi + ", dense"))
        peers_norm.append(("tensorly (jax)", fn_, (ca,), mn + ", dense"))

    tl.set_backend("numpy")

    def scalar_check(ref):
        return lambda name, value: abs(float(np.asarray(value)) - ref) / abs(ref)

    run.record("inner", size, jax.jit(tt.inner), (a, b), peers_inner, scalar_check(ref_inner))
    run.record("norm", size, jax.jit(tt.norm), (a,), peers_norm, scalar_check(ref_norm))


def bench_tt_svd(run: Runner, dims, r):
    key_tt, key_noise = jax.random.split(jax.random.PRNGKey(len(dims) * 100 + r))
    signal = tt.to_dense(tt.random(key_tt, dims, r, jnp.float64))
    noise = jax.random.normal(key_noise, dims, jnp.float64)
    x = signal + 1e-2 * noise * jnp.linalg.norm(signal) / jnp.linalg.norm(noise)
    x_np = np.asarray(x)
    size = f"{'x'.join(map(str, dims)) if len(set(dims)) > 1 else f'{dims[0]}^{len(dims)}'}" \
           f" ({x.size} entries), r={r}"
    ours = jax.jit(functools.partial(tt.from_dense, max_rank=r))
    ref = np.asarray(tt.to_dense(ours(x)))

    tl.set_backend("jax")
    f_tlj, m_tlj = jit_or_eager(functools.partial(_tl_tt_svd, r=r), x)
    tl.set_backend("numpy")
    f_qj, m_qj = jit_or_eager(functools.partial(_q_from_dense_arrays, dims=dims, r=r), x)
    template = _q_from_dense(x_np, dims, r)
    peers = [("quimb (numpy)", functools.partial(_q_from_dense, dims=dims, r=r), (x_np,),
              "eager"),
             ("quimb (jax)", f_qj, (x,), m_qj),
             ("tensorly (numpy)", functools.partial(_tl_tt_svd, r=r), (x_np,), "eager"),
             ("tensorly (jax)", f_tlj, (x,), m_tlj)]

    def check(name, out):
        if name.startswith("quimb"):
            mps = out if name == "quimb (numpy)" else _q_rebuild(out, template)
            dense = mps.to_dense().reshape(dims)
        else:
            dense = tl.tt_to_tensor([np.asarray(f) for f in out])
        return _rel(ref, dense)

    run.record( "tt_svd", size, ours, (x,), peers, check)


def bench_round(run: Runner, L, n, chi):
    ka, kb = jax.random.split(jax.random.PRNGKey(7 * L + chi))
    a = tt.random(ka, (n,) * L, chi, jnp.float64)
    b = tt.random(kb, (n,) * L, chi, jnp.float64)
    c = tt.add(a, tt.scale(b, 1e-2))
    size = f"L={L}, n={n}, 2chi={2 * chi} -> {chi}"
    ours = jax.jit(functools.partial(tt.round, max_rank=chi))
    ref = ours(c)
    qc_np, qc_j = _quimb_mps_arrays(c), _quimb_mps_arrays(c, jnp)
    template = _q_round(qc_np, chi)
    f_qj, m_qj = jit_or_eager(functools.partial(_q_round_arrays, chi=chi), qc_j)
    peers = [("quimb (numpy)", functools.partial(_q_round, chi=chi), (qc_np,), "eager"),
             ("quimb (jax)", f_qj, (qc_j,), m_qj)]

    def check(name, out):
        mps = out if name == "quimb (numpy)" else _q_rebuild(out, template)
        return _tt_rel_diff(ref, _from_quimb(mps))

    run.record("round", size, ours, (c,), peers, check)


def bench_matmul(run: Runner, L, n, chi):
    ka, kw = jax.random.split(jax.random.PRNGKey(11 * L + chi))
    a = tt.random(ka, (n,) * L, chi, jnp.float64)
    w = tt.random(kw, (n,) * L, MPO_BOND, jnp.float64, col_dims=(n,) * L)
    size = f"L={L}, n={n}, chi={chi}, mpo bond {MPO_BOND}"
    ours = jax.jit(tt.matmul)
    ref = ours(w, a)
    wa_np, xa_np = _quimb_mpo_arrays(w), _quimb_mps_arrays(a)
    wa_j, xa_j = _quimb_mpo_arrays(w, jnp), _quimb_mps_arrays(a, jnp)
    template = _q_matmul(wa_np, xa_np)
    f_qj, m_qj = jit_or_eager(_q_matmul_arrays, wa_j, xa_j)
    peers = [("tensornetwork", jax.jit(_tn_matmul), (list(w.cores), list(a.cores)), "jit"),
             ("quimb (numpy)", _q_matmul, (wa_np, xa_np), "eager"),
             ("quimb (jax)", f_qj, (wa_j, xa_j), m_qj)]

    def check(name, out):
        if name == "tensornetwork":
            return _tt_rel_diff(ref, tt.TensorTrain(tuple(out)))
        mps = out if name == "quimb (numpy)" else _q_rebuild(out, template)
        return _tt_rel_diff(ref, _from_quimb(mps))

    run.record("matmul", size, ours, (w, a), peers, check)


def _cell(row, name):
    p = row["peers"].get(name)
    if p is None:
        return "-"
    return f"{p['s'] * 1e3:.3g} ({p['s'] / row['ours_s']:.3g}x)"


def table(rows, m, command):
    header = ["op", "size", "ours (ms)", *[f"{p} ms (ratio)" for p in PEERS],
              "fastest peer / ours"]
    body, notes = [], {}
    for r in rows:
        cells = []
        for p in PEERS:
            c = _cell(r, p)
            if c == "-" or (r["op"] in ("inner", "norm") and p.startswith("tensorly")):
                note = MISSING.get((p, r["op"]))
                if note:
                    mark = notes.setdefault(note, f"[{len(notes) + 1}]")
                    c = f"{c} {mark}"
            cells.append(c)
        fastest = min((v["s"] for v in r["peers"].values()), default=float("nan"))
        body.append([r["op"], r["size"], r["ours_s"] * 1e3, *cells, fastest / r["ours_s"]])
    modes = sorted({f"{name}: {v['mode']}" for r in rows for name, v in r["peers"].items()
                    if name.endswith("(jax)")})
    lines = [f"`{command}` (float64, CPU; median wall time after warm-up, ratio = peer time /"
             " our time, > 1 means tnlib is faster; every peer's result agrees with ours to "
             f"relative difference < {TOL:g}, max "
             f"{max(v['rel_diff'] for r in rows for v in r['peers'].values()):.1e})", "",
             markdown_table(header, body), ""]
    lines += [f"{mark} {note}" for note, mark in notes.items()]
    lines += ["", "Modes of the JAX-backend peers: " + "; ".join(modes) + ". tensornetwork is"
              " always ncon under jax.jit.", "", meta_line(m)]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_thread_args(ap)
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    args = ap.parse_args()
    run = Runner(args.quick)
    if args.quick:
        tt_sizes, svd_sizes, mm_sizes = [(8, 2, 8)], [((2,) * 10, 8)], [(8, 2, 8)]
    else:
        tt_sizes = [(8, 2, 8), (16, 2, 32), (32, 4, 64)]
        svd_sizes = [((2,) * 16, 16), ((4,) * 9, 32), ((2,) * 20, 32), ((4,) * 11, 32)]
        mm_sizes = tt_sizes + [(64, 2, 64)]
    for L, n, chi in tt_sizes:
        bench_inner_norm(run, L, n, chi)
    for dims, r in svd_sizes:
        bench_tt_svd(run, dims, r)
    for L, n, chi in tt_sizes:
        bench_round(run, L, n, chi)
    for L, n, chi in mm_sizes:
        bench_matmul(run, L, n, chi)
    m = meta(PACKAGES, threads=THREADS)
    command = "python benchmarks/peers_tt.py" + (" --quick" if args.quick else "")
    payload = {"meta": m, "command": command, "dtype": "float64", "tolerance": TOL,
               "mpo_bond": MPO_BOND, "rows": run.rows}
    write("peers_tt" + ("_quick" if args.quick else ""), payload, table(run.rows, m, command))


if __name__ == "__main__":
    sys.exit(main())
