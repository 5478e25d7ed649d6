"""TT / MPS operations side by side: tnlib against tensornetwork, quimb and tensorly (CPU).

Every operation runs on the same float64 inputs (``jax_enable_x64``) for ours and each
peer, in one process, after warm-up. Each peer runs in every documented mode that may be
faster (quimb's ``method=`` of its SVD splits, tensorly's ``svd=``, each on NumPy and on
JAX); ours and all those modes are timed in alternation, round after round
(``_bench.alternate``), and each ratio ``peer time / our time`` (> 1: we are faster) is
the median over rounds of the ratio within a round, with its interquartile range. Before
timing, each result is checked against ours: the relative difference of the results
(the dense reconstruction, or the TT difference ``||ours - peer|| / ||ours||`` computed
exactly by orthogonalizing ``ours - peer``, or the scalar). A peer's default mode must
agree to 1e-6 (asserted); a faster mode that does not is still timed and shown with its
difference, but is not counted as the fastest peer at equal accuracy. TT-SVD and
rounding rows also give each result's relative error against the exact input.

Operations (``L`` sites, local dim ``n``, bond ``chi``; random TTs from ``tt.random``):

  * ``inner``: ``<a, b>`` of two TTs of bond ``chi``;
  * ``norm``: ``||a||_F``;
  * ``inner (vmap)``: ``<a_i, b_i>`` of ``B`` independent pairs of small TTs, each
    library's function under ``jax.vmap`` (tiny chains are dispatch-bound one at a time;
    this is how many of them should be run);
  * ``tt_svd``: TT-SVD of a dense tensor (a bond-``r`` TT plus 1% Gaussian noise) at a
    fixed ``max_rank = r``;
  * ``round``: rounding of ``a + 1e-2 b`` (bond ``2 chi``) to bond ``chi``;
  * ``matmul``: a TT-matrix of bond 4 times a TT of bond ``chi`` (exact; bonds multiply);
  * ``gram``: the kernel under every Gram-route split, ``b @ b^T`` of a wide float64
    unfolding, by XLA (what tnlib and quimb-jax run) and by NumPy (OpenBLAS, which
    recognizes the product as a ``syrk`` and does half the work): not a peer comparison
    but the reason the NumPy-backed ``svd:eig`` can win on large tensors.

Contenders (float64 throughout):

  * ours: the ``tnlib.tt`` function under ``jax.jit``, compiled once, the compiled call
    timed, with its defaults (``svd="auto"``: the Gram route in float64); ``svd="lapack"``
    and ``svd="randomized"`` are timed too and kept in the JSON;
  * ``tensornetwork``: JAX backend, ``tn.ncon`` site by site under ``jax.jit`` (what a
    tensornetwork user writes: ``FiniteMPS`` has no overlap, norm, compression, TT-SVD
    or MPO application of its own);
  * ``quimb (numpy)``: ``MatrixProductState`` with NumPy arrays, eager: ``a.H @ b``,
    ``a.norm()``, ``MatrixProductState.from_dense(..., max_bond=r, cutoff=0, method=M)``,
    ``.compress(max_bond=chi, cutoff=0, method=M)`` for ``M`` in ``svd`` (default),
    ``svd:eig`` (Gram + eigendecomposition) and, for the TT-SVD, ``svd:rand``,
    ``MatrixProductOperator.apply``;
  * ``quimb (jax)``: the same calls on JAX arrays (autoray dispatch), the whole function
    (building the quimb objects included) under ``jax.jit``; eager when it does not trace
    (the JSON records which);
  * ``tensorly (numpy)`` / ``tensorly (jax)``: ``tensorly.decomposition.tensor_train``
    for the TT-SVD with ``svd=`` ``truncated_svd`` (default), ``symeig_svd`` and
    ``randomized_svd``; tensorly has no TT inner product or norm, so those are computed
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


def _jax_peer(name, fn, args, mode="default"):
    """A peer entry ``(name, mode, callable, args, how)`` jitted when ``fn`` traces."""
    f, how = jit_or_eager(fn, *args)
    return name, mode, f, args, how


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


def _q_from_dense(x, dims, r, method="svd"):
    return qtn.MatrixProductState.from_dense(x, dims, max_bond=r, cutoff=0.0, method=method)


def _q_round(xa, chi, method="svd"):
    mps = _q_mps(xa)
    mps.compress(max_bond=chi, cutoff=0.0, method=method)  # in place
    return mps


def _q_round_arrays(xa, chi, method="svd"):
    return tuple(t.data for t in _q_round(xa, chi, method))


def _q_matmul(wa, xa):
    return qtn.MatrixProductOperator(wa, shape="lrud").apply(_q_mps(xa))


def _q_from_dense_arrays(x, dims, r, method="svd"):
    return tuple(t.data for t in _q_from_dense(x, dims, r, method))


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


def _tl_tt_svd(x, r, svd="truncated_svd"):
    return tuple(tensor_train(x, rank=r, svd=svd).factors)


QUIMB_SVD_MODES = ("svd", "svd:eig", "svd:rand")  # quimb's method= of tensor splits
TL_SVD_MODES = ("truncated_svd", "symeig_svd", "randomized_svd")  # tensorly's svd=
# tensorly 0.10's symeig_svd decomposes the Gram matrix of the *long* side of each
# unfolding (m x m for a tall m x n matrix): 2^15 x 2^15 for the first 2^16-entry TT-SVD
# unfolding, which filled 18 GB before it was stopped; a 64^3 HOSVD with it took 66 s
# per call. It runs only while that side is small.
SYMEIG_MAX = 1024


def tl_modes(long_side):
    return tuple(m for m in TL_SVD_MODES if m != "symeig_svd" or long_side <= SYMEIG_MAX)


# ---------------------------------------------------------------------- benchmark


class Runner:
    def __init__(self, quick: bool):
        self.quick = quick
        self.rows = []

    def record(self, op, size, ours, peers, check, error=None):
        """Check, then time in alternation, ours and every peer mode.

        Args:
          ours: ``{label: (fn, args)}``; the first entry is tnlib's default, the reference
            of every ratio.
          peers: ``(peer, mode, fn, args, how)`` entries; the first entry of each peer is
            its default mode, which must agree with ours to TOL.
          check: ``check(peer, out)``, the relative difference of a result from ours.
          error: optional ``error(label, out)``, a result's relative error against the
            exact input (decompositions).
        """
        ref_label = next(iter(ours))
        contenders, info = {}, {}
        for label, (fn, args) in ours.items():
            contenders[label] = (fn, args)
            info[label] = {"peer": "tnlib", "mode": label, "how": "jit"}
            if error is not None:
                info[label]["error"] = error(label, fn(*args))
        seen = set()
        for peer, mode, fn, args, how in peers:
            _tl_backend(peer)  # tensorly peers run on their own backend; the rest ignore it
            out = fn(*args)
            diff = check(peer, out)
            key = f"{peer} [{mode}]"
            info[key] = {"peer": peer, "mode": mode, "how": how, "rel_diff": diff,
                         "agrees": diff < TOL}
            if error is not None:
                info[key]["error"] = error(peer, out)
            tl.set_backend("numpy")
            if peer not in seen:  # the default mode must give our result
                assert diff < TOL, f"{op} {size}: {key} differs from ours by {diff:.2e}"
                seen.add(peer)
            contenders[key] = (_with_backend(peer, fn), args)
        samples = alternate(contenders, rounds=7 if self.quick else 15,
                            budget=10 if self.quick else 90)
        agreeing = [k for k, v in info.items() if v.get("agrees")]
        samples["fastest peer"] = best_of(samples, agreeing)
        stats = ratio_stats(samples, ref_label)
        for key, st in stats.items():
            info.setdefault(key, {}).update(st)
        fastest = min(agreeing, key=lambda k: stats[k]["s"])
        info["fastest peer"]["mode"] = fastest
        row = {"op": op, "size": size, "ours_s": stats[ref_label]["s"], "ref": ref_label,
               "contenders": info}
        self.rows.append(row)
        print(op, size, f"ours {row['ours_s'] * 1e3:.3f} ms",
              {k: f"{v['s'] * 1e3:.3f} ms ({fmt_ratio(v)}, diff {v.get('rel_diff', 0):.1e})"
               for k, v in info.items() if k != ref_label}, flush=True)


def _with_backend(peer, fn):
    """``fn`` called with tensorly's backend set to the peer's (a jitted tensorly function
    no longer needs it, an eager one does; alternation interleaves the two)."""
    if not peer.startswith("tensorly"):
        return fn
    backend = "jax" if peer.endswith("(jax)") else "numpy"

    def call(*args):
        tl.set_backend(backend)
        try:
            return fn(*args)
        finally:
            tl.set_backend("numpy")

    return call


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

    peers_inner = [("tensornetwork", "ncon", jax.jit(_tn_inner), (ca, cb), "jit"),
                   ("quimb (numpy)", "default", _q_inner, (qa_np, qb_np), "eager"),
                   _jax_peer("quimb (jax)", _q_inner, (qa_j, qb_j))]
    peers_norm = [("tensornetwork", "ncon", jax.jit(_tn_norm), (ca,), "jit"),
                  ("quimb (numpy)", "default", _q_norm, (qa_np,), "eager"),
                  _jax_peer("quimb (jax)", _q_norm, (qa_j,))]
    if dense:
        tl.set_backend("numpy")
        peers_inner.append(("tensorly (numpy)", "dense", _tl_inner, (na, nb), "eager"))
        peers_norm.append(("tensorly (numpy)", "dense", _tl_norm, (na,), "eager"))
        tl.set_backend("jax")
        fi, mi = jit_or_eager(_tl_inner, ca, cb)
        fn_, mn = jit_or_eager(_tl_norm, ca)
        peers_inner.append(("tensorly (jax)", "dense", fi, (ca, cb), mi))
        peers_norm.append(("tensorly (jax)", "dense", fn_, (ca,), mn))

    tl.set_backend("numpy")

    def scalar_check(ref):
        return lambda name, value: abs(float(np.asarray(value)) - ref) / abs(ref)

    run.record("inner", size, {"tnlib": (jax.jit(tt.inner), (a, b))}, peers_inner,
               scalar_check(ref_inner))
    run.record("norm", size, {"tnlib": (jax.jit(tt.norm), (a,))}, peers_norm,
               scalar_check(ref_norm))


def bench_inner_vmap(run: Runner, L, n, chi, batch):
    ka, kb = jax.random.split(jax.random.PRNGKey(5 * L + chi))
    keys_a, keys_b = jax.random.split(ka, batch), jax.random.split(kb, batch)
    rand = jax.vmap(lambda k: tt.random(k, (n,) * L, chi, jnp.float64))
    a, b = rand(keys_a), rand(keys_b)  # TensorTrains with a leading batch axis
    size = f"B={batch} pairs, L={L}, n={n}, chi={chi}"
    ours = jax.jit(jax.vmap(tt.inner))
    ref = np.asarray(ours(a, b))
    ca, cb = list(a.cores), list(b.cores)
    qa = [c[:, 0].transpose(0, 2, 1) if i == 0 else c[..., 0] if i == L - 1
          else c.transpose(0, 1, 3, 2) for i, c in enumerate(ca)]
    qb = [c[:, 0].transpose(0, 2, 1) if i == 0 else c[..., 0] if i == L - 1
          else c.transpose(0, 1, 3, 2) for i, c in enumerate(cb)]
    peers = [("tensornetwork", "ncon, vmap", jax.jit(jax.vmap(_tn_inner)), (ca, cb), "jit"),
             _jax_peer("quimb (jax)", jax.vmap(_q_inner), (qa, qb), "vmap")]
    run.record("inner (vmap)", size, {"tnlib": (ours, (a, b))}, peers,
               lambda name, out: _rel(ref, out))


def bench_tt_svd(run: Runner, dims, r):
    key_tt, key_noise = jax.random.split(jax.random.PRNGKey(len(dims) * 100 + r))
    signal = tt.to_dense(tt.random(key_tt, dims, r, jnp.float64))
    noise = jax.random.normal(key_noise, dims, jnp.float64)
    x = signal + 1e-2 * noise * jnp.linalg.norm(signal) / jnp.linalg.norm(noise)
    x_np = np.asarray(x)
    size = f"{'x'.join(map(str, dims)) if len(set(dims)) > 1 else f'{dims[0]}^{len(dims)}'}" \
           f" ({x.size} entries), r={r}"
    ours = {f"tnlib [svd={m}]": (jax.jit(functools.partial(tt.from_dense, max_rank=r, svd=m)),
                                 (x,)) for m in ("auto", "lapack", "randomized")}
    ref = np.asarray(tt.to_dense(next(iter(ours.values()))[0](x)))
    templates = {m: _q_from_dense(x_np, dims, r, m) for m in QUIMB_SVD_MODES}
    peers = []
    for m in QUIMB_SVD_MODES:
        peers.append(("quimb (numpy)", m, functools.partial(_q_from_dense, dims=dims, r=r,
                                                            method=m), (x_np,), "eager"))
    for m in QUIMB_SVD_MODES:
        fn = functools.partial(_q_from_dense_arrays, dims=dims, r=r, method=m)
        if m == "svd:rand":  # its PRNG state (autoray's jax random) leaks a tracer from jit
            peers.append(("quimb (jax)", m, fn, (x,), "eager (svd:rand does not jit)"))
        else:
            peers.append(_jax_peer("quimb (jax)", fn, (x,), m))
    modes = tl_modes(x.size // min(dims[0], dims[-1]))
    for m in modes:
        peers.append(("tensorly (numpy)", m, functools.partial(_tl_tt_svd, r=r, svd=m),
                      (x_np,), "eager"))
    tl.set_backend("jax")
    for m in modes:
        f, how = jit_or_eager(functools.partial(_tl_tt_svd, r=r, svd=m), x)
        peers.append(("tensorly (jax)", m, f, (x,), how))
    tl.set_backend("numpy")

    def dense_of(name, out):
        if isinstance(out, tt.TensorTrain):
            return np.asarray(tt.to_dense(out))
        if name.startswith("quimb"):
            if name == "quimb (numpy)":
                return out.to_dense().reshape(dims)
            shapes = tuple(np.shape(a) for a in out)
            like = next(t for t in templates.values()
                        if tuple(np.shape(u.data) for u in t) == shapes)
            return _q_rebuild(out, like).to_dense().reshape(dims)
        return tl.tt_to_tensor([np.asarray(f) for f in out])

    run.record("tt_svd", size, ours, peers, lambda name, out: _rel(ref, dense_of(name, out)),
               error=lambda name, out: _rel(x_np, dense_of(name, out)))


def bench_gram(run: Runner, k, n):
    b = jax.random.normal(jax.random.PRNGKey(k + n), (k, n), jnp.float64)
    b_np = np.asarray(b)
    ref = np.asarray(b_np @ b_np.T)
    ours = {"XLA (jax.jit)": (jax.jit(lambda b: b @ b.T), (b,))}
    run.record("gram", f"b @ b^T, b {k} x {n}", ours,
               [("numpy", "OpenBLAS", lambda b: b @ b.T, (b_np,), "eager")],
               lambda name, out: _rel(ref, out))


def bench_round(run: Runner, L, n, chi):
    ka, kb = jax.random.split(jax.random.PRNGKey(7 * L + chi))
    a = tt.random(ka, (n,) * L, chi, jnp.float64)
    b = tt.random(kb, (n,) * L, chi, jnp.float64)
    c = tt.add(a, tt.scale(b, 1e-2))
    size = f"L={L}, n={n}, 2chi={2 * chi} -> {chi}"
    ours = {f"tnlib [svd={m}]": (jax.jit(functools.partial(tt.round, max_rank=chi, svd=m)),
                                 (c,)) for m in ("auto", "lapack")}
    ref = next(iter(ours.values()))[0](c)
    qc_np, qc_j = _quimb_mps_arrays(c), _quimb_mps_arrays(c, jnp)
    template = _q_round(qc_np, chi)
    peers = [("quimb (numpy)", m, functools.partial(_q_round, chi=chi, method=m), (qc_np,),
              "eager") for m in ("svd", "svd:eig")]
    peers += [_jax_peer("quimb (jax)", functools.partial(_q_round_arrays, chi=chi, method=m),
                        (qc_j,), m) for m in ("svd", "svd:eig")]

    def as_tt(name, out):
        if isinstance(out, tt.TensorTrain):
            return out
        return _from_quimb(out if name == "quimb (numpy)" else _q_rebuild(out, template))

    run.record("round", size, ours, peers, lambda name, out: _tt_rel_diff(ref, as_tt(name, out)),
               error=lambda name, out: _tt_rel_diff(c, as_tt(name, out)))


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
    peers = [("tensornetwork", "ncon", jax.jit(_tn_matmul), (list(w.cores), list(a.cores)),
              "jit"),
             ("quimb (numpy)", "default", _q_matmul, (wa_np, xa_np), "eager"),
             ("quimb (jax)", "default", f_qj, (wa_j, xa_j), m_qj)]

    def check(name, out):
        if name == "tensornetwork":
            return _tt_rel_diff(ref, tt.TensorTrain(tuple(out)))
        mps = out if name == "quimb (numpy)" else _q_rebuild(out, template)
        return _tt_rel_diff(ref, _from_quimb(mps))

    run.record("matmul", size, {"tnlib": (ours, (w, a))}, peers, check)


def _best(row, peer):
    """The fastest mode of ``peer`` whose result agrees with ours (None when none ran)."""
    modes = [(k, v) for k, v in row["contenders"].items()
             if v.get("peer") == peer and v.get("agrees")]
    return min(modes, key=lambda kv: kv[1]["s"]) if modes else None


def _cell(row, peer):
    best = _best(row, peer)
    if best is None:
        return "-"
    _, v = best
    mode = "" if v["mode"] in ("default", "ncon", "dense") else f" `{v['mode']}`"
    return f"{v['s'] * 1e3:.3g} ({fmt_ratio(v)}){mode}"


def table(rows, m, command):
    header = ["op", "size", "ours (ms)", *[f"{p}: ms (ratio [IQR]) fastest mode" for p in PEERS],
              "fastest peer / ours", "rel. error: ours / fastest peer"]
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
        info = r["contenders"]
        fast = info["fastest peer"]
        err = "-"
        if "error" in info[r["ref"]]:
            err = f"{info[r['ref']]['error']:.3g} / {info[fast['mode']]['error']:.3g}"
        body.append([r["op"], r["size"], r["ours_s"] * 1e3, *cells, fmt_ratio(fast), err])
    lost = sorted({f"{k} on {r['op']} {r['size']}: differs from ours by {v['rel_diff']:.1e}"
                   f" (its error {v.get('error', float('nan')):.2e})"
                   for r in rows for k, v in r["contenders"].items()
                   if v.get("agrees") is False})
    ours_modes = sorted({f"{r['op']} {r['size']}: {k} {v['s'] * 1e3:.3g} ms"
                         + (f", error {v['error']:.3g}" if "error" in v else "")
                         for r in rows for k, v in r["contenders"].items()
                         if v.get("peer") == "tnlib" and k != r["ref"]})
    hows = sorted({f"{v['peer']}: {v['how']}" for r in rows for v in r["contenders"].values()
                   if str(v.get("peer", "")).endswith("(jax)")})
    lines = [f"`{command}` (float64, CPU; every contender of a row timed in alternation, "
             "ratio = peer time / our time in the same round, median over rounds with the "
             "interquartile range, > 1 means tnlib is faster; each peer's fastest mode whose "
             f"result agrees with ours to relative difference < {TOL:g} is shown)", "",
             markdown_table(header, body), ""]
    lines += [f"{mark} {note}" for note, mark in notes.items()]
    if lost:
        lines += ["", "Faster modes that do not give our result (timed, not counted):", ""]
        lines += [f"- {x}" for x in lost]
    lines += ["", f"tensorly's `symeig_svd` runs only where the long side of every unfolding is "
              f"at most {SYMEIG_MAX}: tensorly 0.10 decomposes the Gram matrix of the long side "
              "(the first 2^16-entry unfolding needed a 2^15 x 2^15 one and filled 18 GB; "
              "at 64^3 a HOSVD call took 66 s)."]
    lines += ["", "tnlib's other SVD routes (same run):", ""] + [f"- {x}" for x in ours_modes]
    lines += ["", "JAX-backend peers: " + "; ".join(hows) + ". tensornetwork is always ncon "
              "under jax.jit.", "", meta_line(m)]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_thread_args(ap)
    ap.add_argument("--quick", action="store_true", help="small smoke run (seconds)")
    args = ap.parse_args()
    run = Runner(args.quick)
    if args.quick:
        tt_sizes, svd_sizes, mm_sizes = [(8, 2, 8)], [((2,) * 10, 8)], [(8, 2, 8)]
        vmap_sizes = [(8, 2, 8, 100)]
        gram_sizes = [(16, 4096)]
    else:
        tt_sizes = [(8, 2, 8), (16, 2, 32), (32, 4, 64)]
        svd_sizes = [((2,) * 16, 16), ((4,) * 9, 32), ((2,) * 20, 32), ((4,) * 11, 32)]
        mm_sizes = tt_sizes + [(64, 2, 64)]
        vmap_sizes = [(8, 2, 8, 1000), (16, 2, 8, 1000)]
        gram_sizes = [(64, 4**8), (128, 4**7)]  # the two costliest splits of the 4^11 TT-SVD
    for L, n, chi in tt_sizes:
        bench_inner_norm(run, L, n, chi)
    for L, n, chi, batch in vmap_sizes:
        bench_inner_vmap(run, L, n, chi, batch)
    for dims, r in svd_sizes:
        bench_tt_svd(run, dims, r)
    for L, n, chi in tt_sizes:
        bench_round(run, L, n, chi)
    for L, n, chi in mm_sizes:
        bench_matmul(run, L, n, chi)
    for k, n in gram_sizes:
        bench_gram(run, k, n)
    m = meta(PACKAGES, threads=THREADS)
    command = "python benchmarks/peers_tt.py" + (" --quick" if args.quick else "")
    payload = {"meta": m, "command": command, "dtype": "float64", "tolerance": TOL,
               "mpo_bond": MPO_BOND, "rows": run.rows}
    write("peers_tt" + ("_quick" if args.quick else ""), payload, table(run.rows, m, command))


if __name__ == "__main__":
    sys.exit(main())
