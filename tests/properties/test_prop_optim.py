"""Properties of tnlib.riemannian, tnlib.sweep, tnlib.sweep_born, tnlib.serialize and
tnlib.struct over random shapes, ranks (1, and above what the unfoldings allow), the five
dtypes and batch shapes: every call agrees with the dense float64 computation or raises
ValueError / TypeError naming the argument; no NaN / inf from finite inputs.

dtype policy. riemannian: ``project``, ``to_tangent_tt``, ``retract``, ``transport`` and
the tangent algebra take all five dtypes (QR / SVD of bfloat16 in float32); the gradient
routes and the optimizers are real-only (TypeError naming ``x`` / ``params`` for complex).
sweep: outputs and environments take all five (computed in at least float32); training
(``update`` / ``sweep``) is real-only (TypeError naming ``mps``). sweep_born: all five,
training included (``|psi|^2`` of complex amplitudes). serialize: every type, every dtype,
bit for bit.

Cost: random data comes from NumPy (no compile per shape); every checked function is
jitted once per dtype and shape, the sweep updates once per direction on one chain shape.
"""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import (
    ALL_DTYPES,
    BF16,
    C64,
    C128,
    F32,
    F64,
    close,
    covers,
    dims_st,
    dtype_id,
    finite,
    raises,
    seeds,
    tol,
    wide,
)

from tnlib import btt, cp, network, serialize, struct, tr, tree, tt, tucker
from tnlib import riemannian as rm
from tnlib import sweep as sw
from tnlib import sweep_born as sb

REAL = [BF16, F32, F64]
COMPLEX = [C64, C128]
DT = pytest.mark.parametrize("dtype", ALL_DTYPES, ids=dtype_id)


def is_complex(dtype):
    return jnp.issubdtype(jnp.dtype(dtype), jnp.complexfloating)


def np_random(rng, shape, dtype, scale=1.0):
    """Gaussian ``jax.Array`` of ``dtype`` drawn with NumPy (complex: both parts)."""
    a = scale * rng.standard_normal(shape)
    if is_complex(dtype):
        a = a + 1j * scale * rng.standard_normal(shape)
    return jnp.asarray(a.astype(jnp.dtype(dtype)))


def np64(a):
    """``a`` as a float64 / complex128 NumPy array."""
    a = jnp.asarray(a)
    return np.asarray(a.astype(wide(a.dtype)))


def np_chain(cores):
    """Dense tensor of a chain of ``(r, n, r')`` cores (float64 / complex128)."""
    res = np.ones((1, 1))
    for c in cores:
        res = np.tensordot(res, np64(c), axes=([-1], [0]))
    return res[0, ..., 0]


# ======================================================================= riemannian


def feasible(dims, ranks):
    """The largest ranks ``<=`` the given ones with every bond feasible
    (``r_k <= r_{k-1} n_k`` and ``r_{k-1} <= n_k r_k``)."""
    r = list(ranks)
    for k in range(1, len(dims)):
        r[k] = min(r[k], r[k - 1] * dims[k - 1])
    for k in range(len(dims) - 1, 0, -1):
        r[k] = min(r[k], r[k + 1] * dims[k])
    return tuple(r)


def point(rng, dims, ranks, dtype, batch=()):
    """A TT with Gaussian cores scaled so that the tensor has norm about 1."""
    return tt.TensorTrain(tuple(
        np_random(rng, (*batch, ranks[k], n, ranks[k + 1]), dtype,
                  1 / math.sqrt(n * math.sqrt(ranks[k] * ranks[k + 1])))
        for k, n in enumerate(dims)))


def bases(X, ranks):
    """Orthonormal bases of the column spaces (``left[k]``: modes ``< k``) and row spaces
    (``right[k]``: modes ``> k``) of ``X``'s unfoldings at ``ranks``, from NumPy SVDs."""
    dims, L = X.shape, X.ndim
    left, right = [np.ones((1, 1))], []
    for k in range(1, L):
        u, _, vh = np.linalg.svd(X.reshape(math.prod(dims[:k]), -1), full_matrices=False)
        left.append(u[:, :ranks[k]])
        right.append(vh[:ranks[k]])
    return left, right + [np.ones((1, 1))]


def tangent_projection(frame, Z):
    """``P_X Z``: the orthogonal projection onto the tangent space of the fixed-rank TT
    manifold, ``sum_k P^L_{<k} x I x P^R_{>k} - sum_k P^L_{<=k} x P^R_{>k}`` (dense)."""
    left, right = frame
    PL = [u @ u.conj().T for u in left]
    PR = [v.T @ v.conj() for v in right]
    dims, L = Z.shape, Z.ndim
    out = np.zeros(dims, np.result_type(Z, *PL, *PR))
    for k in range(L):
        z = Z.reshape(PL[k].shape[0], dims[k], PR[k].shape[0])
        out += np.einsum("ab,bmc,dc->amd", PL[k], z, PR[k]).reshape(dims)
    for k in range(L - 1):
        out -= (PL[k + 1] @ Z.reshape(PL[k + 1].shape[0], -1) @ PR[k].T).reshape(dims)
    return out


def tails(Y, ranks):
    """Frobenius norms of the singular values of ``Y``'s unfoldings past ``ranks``."""
    return [np.linalg.norm(np.linalg.svd(Y.reshape(math.prod(Y.shape[:k]), -1),
                                         compute_uv=False)[ranks[k]:])
            for k in range(1, Y.ndim)]


@jax.jit
def _tangent_facts(x, y, z):
    dense = lambda p, xi: tt.to_dense(rm.to_tangent_tt(p, xi))  # noqa: E731
    pz, py = rm.project(x, z), rm.project(x, y)  # a dense and a TT argument
    xi = rm.scale(pz, 0.5)
    return dict(
        pz=dense(x, pz), py=dense(x, py), deltas=pz.deltas,
        again=rm.project(x, rm.to_tangent_tt(x, pz)).deltas,
        inner=rm.inner(pz, py), norm=rm.norm(pz),
        lin=dense(x, rm.add(rm.scale(pz, 2.0), py)),
        retract=rm.retract(x, xi), big=rm.retract(x, xi, max_rank=64),
        one=rm.retract(x, xi, max_rank=1), moved=dense(y, rm.transport(x, pz, y)))


@covers("riemannian.Tangent", "riemannian.check_point", "riemannian.manifold_dim",
        "riemannian.project", "riemannian.to_tangent_tt", "riemannian.retract",
        "riemannian.transport", "riemannian.inner", "riemannian.norm", "riemannian.add",
        "riemannian.scale")
@DT
@settings(max_examples=1)
@given(dims_st(1, 4, 3), st.lists(st.integers(1, 5), min_size=3, max_size=3), seeds)
def test_riemannian_tangent_space_matches_dense(dtype, dims, raw, seed):
    rng = np.random.default_rng(seed)
    raw = (1,) + tuple(raw[:len(dims) - 1]) + (1,)
    ranks = feasible(dims, raw)
    if ranks != raw:  # a rank above what an unfolding allows: not a manifold point
        bad = point(rng, dims, raw, dtype)
        raises(lambda: rm.check_point(bad), "x")
        raises(lambda: rm.manifold_dim(bad), "x")
        raises(lambda: rm.project(bad, jnp.zeros(dims, dtype)), "x")
        raises(lambda: rm.check_point(bad, "params"), "params")
    x, y = point(rng, dims, ranks, dtype), point(rng, dims, ranks, dtype)
    assert rm.check_point(x) is x
    z = np_random(rng, dims, dtype)
    f = _tangent_facts(x, y, z)
    X, Y, Z = np_chain(x.cores), np_chain(y.cores), np64(z)
    W = np_chain(y.cores)
    fx, fy = bases(X, ranks), bases(Y, ranks)
    # the tangent space's dimension is manifold_dim: the trace of the dense projector
    N = math.prod(dims)
    proj = np.stack([tangent_projection(fx, e.reshape(dims)).ravel() for e in np.eye(N)])
    assert rm.manifold_dim(x) == round(np.trace(proj).real)
    PZ, PW = tangent_projection(fx, Z), tangent_projection(fx, W)
    s = 1 + np.linalg.norm(Z)
    for key in ("pz", "py", "lin", "moved"):
        assert f[key].dtype == jnp.dtype(dtype)
    close(f["pz"], PZ, dtype, 8, s)
    close(f["py"], PW, dtype, 8, s)
    close(tangent_projection(fx, PZ), PZ, F64, scale=s)  # a projection: idempotent
    for d, e, c in zip(f["again"], f["deltas"], x.cores, strict=True):
        assert d.shape == e.shape == c.shape and d.dtype == jnp.dtype(dtype)
        close(d, np64(e), dtype, 8, s)  # the gauge deltas are unique
    close(f["inner"], np.vdot(PZ, PW), dtype, 8, s * s)
    close(f["norm"], np.linalg.norm(PZ), dtype, 8, s)
    close(f["lin"], 2 * PZ + PW, dtype, 8, s)
    # transport: a tangent vector at y, the projection of xi at y
    close(f["moved"], tangent_projection(fy, PZ), dtype, 8, s)
    # retraction: rank r kept, quasi-optimal truncation of x + xi
    T = X + 0.5 * PZ
    for key in ("retract", "big", "one"):
        finite(f[key], key)
        assert f[key].dims == dims and f[key].dtype == jnp.dtype(dtype)
    assert f["retract"].ranks == ranks and max(f["one"].ranks) == 1
    err = np.linalg.norm(np_chain(f["retract"].cores) - T)
    bound = np.linalg.norm(tails(T, ranks))
    assert err <= bound + 8 * tol(dtype) * s, (err, bound)
    bounds = [min(math.prod(dims[:k]), math.prod(dims[k:])) for k in range(1, len(dims))]
    assert all(r <= min(b, 2 * q) for r, b, q in zip(f["big"].ranks[1:-1], bounds,
                                                         ranks[1:-1], strict=True))
    close(np_chain(f["big"].cores), T, dtype, 8, s)  # a cap above 2r: exact


@jax.jit
def _gradient_facts(x, a):
    def loss(t):
        d = tt.to_dense(t)
        return 0.5 * jnp.sum((d - a) ** 2) + jnp.sum(jnp.sin(d))

    dense = lambda xi: tt.to_dense(rm.to_tangent_tt(x, xi))  # noqa: E731
    value, g = rm.riemannian_value_and_grad(loss, x)
    out = dict(core=dense(rm.project_core_grad(x, jax.grad(loss)(x))), deltas=dense(g),
               grad=dense(rm.riemannian_grad(loss, x)), value=value)
    opts = dict(sgd=rm.riemannian_sgd(0.1),
                heavy=rm.riemannian_sgd(lambda c: 0.1 / (1 + c), momentum=0.5),
                adam=rm.riemannian_adam(0.05), site=rm.riemannian_adam(0.05, second_moment="site"))
    for name, opt in opts.items():  # momentum and Adam: two steps (the state transported)
        xs, state = x, opt.init(x)
        for step in range(2 if name in ("heavy", "adam") else 1):
            # core gradients first, then a Tangent (plain SGD: core gradients only)
            tangent = name == "site" or step == 1
            grads = rm.riemannian_grad(loss, xs) if tangent else jax.grad(loss)(xs)
            updates, state = opt.update(grads, state, xs)
            xs = jax.tree.map(jnp.add, xs, updates)  # optax.apply_updates
        out[name] = (xs, state, loss(xs))
    return out


@covers("riemannian.project_core_grad", "riemannian.riemannian_grad",
        "riemannian.riemannian_value_and_grad", "riemannian.GradientTransformation",
        "riemannian.SGDState", "riemannian.AdamState", "riemannian.riemannian_sgd",
        "riemannian.riemannian_adam")
@DT
@settings(max_examples=1)
@given(dims_st(2, 3, 3), st.integers(1, 3), seeds)
def test_riemannian_gradients_and_optimizers(dtype, dims, rank, seed):
    rng = np.random.default_rng(seed)
    ranks = feasible(dims, (1,) + (rank,) * (len(dims) - 1) + (1,))
    x = point(rng, dims, ranks, dtype)
    a = np_random(rng, dims, dtype)
    sgd = rm.riemannian_sgd(0.1)
    adam = rm.riemannian_adam(0.1)
    assert isinstance(sgd, rm.GradientTransformation) and sgd._fields == ("init", "update")
    if is_complex(dtype):  # the gradient routes and optimizers are real-only
        raises(lambda: rm.riemannian_grad(lambda t: 0.0, x), "x")
        raises(lambda: rm.riemannian_value_and_grad(lambda t: 0.0, x), "x")
        raises(lambda: rm.project_core_grad(x, x), "x")
        raises(lambda: sgd.update(x, sgd.init(x), x), "params")
        raises(lambda: adam.update(x, adam.init(x), x), "params")
        return
    f = _gradient_facts(x, a)
    X, A = np_chain(x.cores), np64(a)
    G = tangent_projection(bases(X, ranks), X - A + np.cos(X))
    s = 1 + np.linalg.norm(G)
    for key in ("core", "deltas", "grad"):  # three routes to the Riemannian gradient
        close(f[key], G, dtype, 16, s)
    terms = 0.5 * (X - A) ** 2 + np.sin(X)
    close(f["value"], terms.sum(), dtype, 4, 1 + np.abs(terms).sum())
    # one SGD step: the rank-r retraction of x - lr grad, quasi-optimal
    T = X - 0.1 * G
    err = np.linalg.norm(np_chain(f["sgd"][0].cores) - T)
    assert err <= np.linalg.norm(tails(T, ranks)) + 16 * tol(dtype) * s
    for name in ("sgd", "heavy", "adam", "site"):
        xs, state, value = f[name]
        assert xs.ranks == ranks and xs.dtype == jnp.dtype(dtype)  # on the manifold
        finite((xs, state, value), name)
        assert int(state.count) == (2 if name in ("heavy", "adam") else 1)
    assert isinstance(f["sgd"][1], rm.SGDState) and f["sgd"][1].trace == ()
    assert f["heavy"][1].trace.ranks == (1,) + tuple(2 * r for r in ranks[1:-1]) + (1,)
    for name, shape in (("adam", ()), ("site", (len(dims),))):
        state = f[name][1]
        assert isinstance(state, rm.AdamState) and state.nu.shape == shape
        assert float(jnp.min(state.nu)) >= 0


@covers("riemannian.project", "riemannian.retract", "riemannian.to_tangent_tt")
def test_riemannian_batched_points():
    """A (2, 2) batch of points through nested vmap: every member equals its own dense
    projection and retraction."""
    dims, ranks = (2, 3, 2), (1, 2, 2, 1)
    rng = np.random.default_rng(0)
    xs = point(rng, dims, ranks, F64, batch=(2, 2))
    zs = np_random(rng, (2, 2, *dims), F64)

    def f(x, z):
        xi = rm.project(x, z)
        return tt.to_dense(rm.to_tangent_tt(x, xi)), tt.to_dense(rm.retract(x, xi))

    pz, ret = jax.jit(jax.vmap(jax.vmap(f)))(xs, zs)
    assert pz.shape == ret.shape == (2, 2, *dims)
    for i in range(2):
        for j in range(2):
            X = np_chain([c[i, j] for c in xs.cores])
            PZ = tangent_projection(bases(X, ranks), np64(zs[i, j]))
            close(pz[i, j], PZ, F64)
            T = X + PZ
            assert np.linalg.norm(np64(ret[i, j]) - T) <= np.linalg.norm(tails(T, ranks)) + 1e-9


@covers("riemannian.check_point", "riemannian.manifold_dim", "riemannian.project",
        "riemannian.project_core_grad", "riemannian.riemannian_grad",
        "riemannian.riemannian_value_and_grad", "riemannian.to_tangent_tt",
        "riemannian.retract", "riemannian.transport", "riemannian.inner", "riemannian.norm",
        "riemannian.add", "riemannian.scale", "riemannian.riemannian_sgd",
        "riemannian.riemannian_adam", "riemannian.Tangent")
def test_riemannian_bad_input_names_the_argument():
    rng = np.random.default_rng(0)
    x = point(rng, (3, 4, 3), (1, 2, 2, 1), F64)
    other = point(rng, (3, 4, 3), (1, 1, 1, 1), F64)
    xi = rm.Tangent(tuple(jnp.zeros_like(c) for c in x.cores))
    eta = rm.Tangent(tuple(jnp.zeros_like(c) for c in other.cores))
    sgd, adam = rm.riemannian_sgd(0.1), rm.riemannian_adam(0.1)
    cases = [
        (lambda: rm.check_point(jnp.zeros((3, 4, 3))), "x"),
        (lambda: rm.project(x, jnp.zeros((3, 4))), "g"),
        (lambda: rm.project(x, point(rng, (3, 4, 4), (1, 2, 2, 1), F64)), "g"),
        (lambda: rm.project_core_grad(x, jnp.zeros(3)), "core_grads"),
        (lambda: rm.project_core_grad(x, other), "core_grads"),
        (lambda: rm.to_tangent_tt(x, x), "xi"),
        (lambda: rm.to_tangent_tt(x, eta), "xi"),
        (lambda: rm.retract(x, xi, max_rank=0), "max_rank"),
        (lambda: rm.retract(x, xi, max_rank=(2, 2, 2)), "max_rank"),
        (lambda: rm.retract(x, xi, max_rank=2.0), "max_rank"),
        (lambda: rm.transport(x, xi, point(rng, (3, 4, 3), (1, 5, 2, 1), F64)), "x_new"),
        (lambda: rm.transport(x, eta, other), "xi"),
        (lambda: rm.inner(xi, eta), "b"),
        (lambda: rm.inner(xi, x), "b"),
        (lambda: rm.add(xi, eta), "b"),
        (lambda: rm.add(x, xi), "a"),
        (lambda: rm.norm(x), "xi"),
        (lambda: rm.scale(x, 2.0), "xi"),
        (lambda: rm.riemannian_sgd(-0.1), "learning_rate"),
        (lambda: rm.riemannian_sgd(True), "learning_rate"),
        (lambda: rm.riemannian_sgd(0.1, momentum=1.0), "momentum"),
        (lambda: rm.riemannian_adam(0.1, b1=1.0), "b1"),
        (lambda: rm.riemannian_adam(0.1, b2=-0.5), "b2"),
        (lambda: rm.riemannian_adam(0.1, eps=-1.0), "eps"),
        (lambda: rm.riemannian_adam(0.1, second_moment="entry"), "second_moment"),
        (lambda: sgd.init(jnp.zeros(3)), "params"),
        (lambda: sgd.update(x, sgd.init(x)), "params"),
        (lambda: sgd.update({"a": 1.0}, sgd.init(x), x), "grads"),
        (lambda: adam.update(other, adam.init(x), x), "grads"),
        (lambda: adam.update(eta, adam.init(x), x), "grads"),
    ]
    for fn, name in cases:
        raises(fn, name)


# ============================================================================ sweep

L_, D_, C_, PAD, N_ = 4, 2, 3, 3, 6  # the one chain shape sweeps are compiled for


def np_amplitudes(cores, label, center, feats):
    """``(N, C)`` amplitudes of the labelled chain contracted as one dense tensor."""
    cores = list(cores)
    cores[center] = label
    vec = None
    for k, c in enumerate(cores):
        c, f = np64(c), np64(feats[:, k])
        if k == center:
            m = np.einsum("ascb,ns->ncab", c, f)
            vec = m[:, :, 0] if vec is None else np.einsum("na,ncab->ncb", vec, m)
        else:
            m = np.einsum("asb,ns->nab", c, f)
            if vec is None:
                vec = m[:, 0]
            elif vec.ndim == 2:
                vec = np.einsum("na,nab->nb", vec, m)
            else:
                vec = np.einsum("nca,nab->ncb", vec, m)
    return vec[:, :, 0]


def random_labelled(rng, ranks, center, d, C, dtype):
    cores = [np_random(rng, (ranks[k], d, ranks[k + 1]), dtype) for k in range(len(ranks) - 1)]
    label = np_random(rng, (ranks[center], d, C, ranks[center + 1]), dtype)
    return cores, label


@jax.jit
def _classifier_facts(mps, feats, labels):
    at = lambda a, k: jax.lax.dynamic_index_in_dim(a, k, keepdims=False)  # noqa: E731
    out, scale = sw.logits(mps, feats)
    e = sw.environments(mps, feats, labels)
    res = {"out": out, "scale": scale, "envs": e}
    for direction, p in (("right", mps.center), ("left", mps.center - 1)):
        B = sw.bond_tensor(mps, direction)
        f = sw.bond_logits(B, at(e.left, p), at(e.features, p), at(e.features, p + 1),
                           at(e.right, p + 2))
        res[direction] = (B, f, at(e.left_scale, p) + at(e.right_scale, p + 2))
    return res


@covers("sweep.LabelledMPS", "sweep.Environments", "sweep.from_cores", "sweep.to_cores",
        "sweep.environments", "sweep.logits", "sweep.bond_tensor", "sweep.bond_logits")
@DT
@settings(max_examples=1)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4),
       st.lists(st.integers(1, 4), min_size=4, max_size=4), st.integers(0, 1),
       st.integers(0, 4), seeds)
def test_classifier_outputs_match_dense(dtype, L, d, C, N, raw, extra, center, seed):
    rng = np.random.default_rng(seed)
    ranks = (1,) + tuple(raw[:L - 1]) + (1,)
    center = center % L
    D = max(ranks) + extra
    cores, label = random_labelled(rng, ranks, center, d, C, dtype)
    mps = sw.from_cores(cores, label, center, max_bond=D)
    assert mps.cores.shape == (L, D, d, D) and mps.label.shape == (D, d, C, D)
    assert (mps.n_sites, mps.max_bond, mps.local_dim, mps.n_classes) == (L, D, d, C)
    assert np.asarray(mps.ranks).tolist() == list(ranks)
    back, lab, c = sw.to_cores(mps)  # exact round trip
    assert c == center and back[center] is None
    np.testing.assert_array_equal(np64(lab), np64(label))
    for k in range(L):
        if k != center:
            np.testing.assert_array_equal(np64(back[k]), np64(cores[k]))
    feats = np_random(rng, (N, L, d), dtype)
    labels = jnp.asarray(rng.integers(C, size=N), jnp.int32)
    f = _classifier_facts(mps, feats, labels)
    want = np_amplitudes(cores, label, center, feats)
    s = 1 + np.abs(want).max()
    finite(f, "outputs")
    assert f["out"].shape == (N, C) and f["scale"].shape == (N,)
    close(np64(f["out"]) * np.exp(np64(f["scale"]))[:, None], want, dtype, 8, s)
    for direction, ok in (("right", center < L - 1), ("left", center > 0)):
        if ok:
            B, out, scale = f[direction]
            assert B.shape == (D, d, d, C, D)
            close(np64(out) * np.exp(np64(scale))[:, None], want, dtype, 8, s)
    e = f["envs"]
    assert e.left.shape == e.right.shape == (L + 1, N, D)
    assert e.left_scale.shape == (L + 1, N)


@jax.jit
def _split(B, max_rank, cutoff):
    return {d: sw.split_bond(B, d, max_rank, cutoff) for d in ("right", "left")}


@covers("sweep.split_bond")
@DT
@settings(max_examples=3)
@given(st.integers(0, 5), st.sampled_from([0.0, 1e-3, 0.3]), st.sampled_from([0, 1, 2]), seeds)
def test_split_bond_reconstructs_up_to_what_it_reports(dtype, max_rank, cutoff, kind, seed):
    """One shape (compiled once per dtype); random, exactly rank-1 and zero bond tensors,
    caps from 0 (at least one value is kept) to above ``D``."""
    D, d, C = 3, 2, 2
    rng = np.random.default_rng(seed)
    B = np_random(rng, (D, d, d, C, D), dtype)
    if kind:  # an exactly rank-1 bond tensor, or zero
        B = jnp.einsum("ab,cde->abcde", B[:, :, 0, 0, 0], B[0, 0]) * (kind - 1)
    Bn = np64(B)
    for direction, (lp, rp, rank, disc) in _split(B, max_rank, cutoff).items():
        finite((lp, rp, rank, disc), f"split_bond {direction}")
        rank = int(rank)
        assert 1 <= rank <= max(1, min(max_rank, D))  # never above max_rank or max_bond
        if direction == "right":
            assert lp.shape == (D, d, D) and rp.shape == (D, d, C, D)
            rec = np.einsum("asb,btcd->astcd", np64(lp), np64(rp))
            m = Bn.reshape(D * d, -1)
            orth = np64(lp).reshape(D * d, D)
        else:
            assert lp.shape == (D, d, C, D) and rp.shape == (D, d, D)
            rec = np.einsum("ascb,btd->astcd", np64(lp), np64(rp))
            m = Bn.transpose(0, 1, 3, 2, 4).reshape(D * d * C, d * D)
            orth = np64(rp).reshape(D, d * D).T
        sv = np.linalg.svd(m, compute_uv=False)
        total = np.sum(sv ** 2)
        want = 0.0 if total == 0 else 1 - np.sum(sv[:rank] ** 2) / total
        close(disc, want, dtype, 8)
        err = np.linalg.norm(rec - Bn) ** 2
        close(err, want * total, dtype, 8, 1 + total)  # drops exactly what it reports
        # orthonormal kept vectors, zero past the rank
        close(orth.conj().T @ orth, np.diag(np.arange(D) < rank).astype(float), dtype, 8)


@covers("sweep.init", "sweep.update", "sweep.sweep", "sweep.LOSSES", "sweep.environments",
        "sweep.logits", "sweep.to_cores")
@pytest.mark.parametrize("dtype", [F64], ids=dtype_id)  # each dtype: 3 slow compiles
@settings(max_examples=2)
@given(st.integers(1, PAD + 2), st.sampled_from([0.0, 1e-3]), st.floats(0.1, 1.0),
       st.sampled_from([0.0, 0.5]), st.integers(1, 3), st.sampled_from(["cg", "gd"]), seeds)
def test_classifier_update_and_sweep(dtype, max_rank, cutoff, lr, momentum, init_bond, solver,
                                     seed):
    rng = np.random.default_rng(seed)
    init_bond = min(init_bond, PAD)
    mps = sw.init(jax.random.PRNGKey(seed), L_, C_, max_bond=PAD, local_dim=D_,
                  init_bond=init_bond, init_std=0.1, dtype=dtype)
    assert mps.cores.dtype == mps.label.dtype == jnp.dtype(dtype) and int(mps.center) == 0
    cores, _, _ = sw.to_cores(mps)
    for c in cores[1:]:  # right-orthogonal start
        m = np64(c).reshape(c.shape[0], -1)
        close(m @ m.T, np.eye(c.shape[0]), dtype, 4)
    x = rng.uniform(size=(N_, L_)) * np.pi / 2
    feats = jnp.asarray(np.stack([np.cos(x), np.sin(x)], -1).astype(dtype))
    labels = jnp.asarray(rng.integers(C_, size=N_), jnp.int32)
    envs = sw.environments(mps, feats, labels)
    kw = dict(lr=lr, momentum=momentum, cutoff=cutoff, max_rank=max_rank, steps=2, passes=2,
              solver=solver, loss="squared" if solver == "cg" else "cross_entropy")
    new, envs, info = sw.update(mps, envs, direction="right", **kw)
    new, envs, infos = sw.sweep(new, envs, **kw)  # from site 1 and back to it
    assert sorted(sw.LOSSES) == ["cross_entropy", "squared"]
    new, envs, info2 = sw.update(new, envs, direction="right", **{**kw, "loss": "squared"})
    finite((info, infos, info2, new, envs), "training")
    assert int(new.center) == 2 and infos["rank"].shape == (2 * L_ - 2,)
    r = np.asarray(new.ranks)
    assert r[0] == r[-1] == 1 and r.max() <= min(max_rank, PAD)  # capped, never above D
    assert np.all((infos["discarded"] >= -1e-6) & (infos["discarded"] <= 1 + 1e-6))
    c = np.asarray(new.cores)
    for k in range(L_):  # padding stays exactly zero
        assert not np.any(c[k, r[k]:]) and not np.any(c[k, :, :, r[k + 1]:])
    # the outputs of the trained chain are the dense contraction of its cores
    cores, label, center = sw.to_cores(new)
    out, scale = sw.logits(new, feats)
    want = np_amplitudes(cores, label, center, feats)
    close(np64(out) * np.exp(np64(scale))[:, None], want, dtype, 8, 1 + np.abs(want).max())
    # the cached environments are those of the trained chain (valid left of the label)
    fresh = sw.environments(new, feats, labels)
    close(envs.left[:center + 1], fresh.left[:center + 1], dtype, 8)
    close(envs.right[center + 1:], fresh.right[center + 1:], dtype, 8)


@covers("sweep.kept_count", "sweep.solve_cg", "sweep.SOLVERS")
@settings(max_examples=4)
@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from([0.0, 0.3]), seeds)
def test_classifier_cg_solve_and_kept_count(r_l, r_r, l2, seed):
    """The CG solve of a random bond problem reaches the normal equations' solution
    (dense solve, float64) in as many passes as unknowns per class; kept_count keeps
    the fewest leading values whose dropped squared weight is at most the cutoff."""
    rng = np.random.default_rng(seed)
    pad, k = max(r_l, r_r), r_l * D_ * D_ * r_r
    n = 4 * k + 3
    left, right = np.zeros((n, pad)), np.zeros((n, pad))  # padded bonds, as in a chain
    left[:, :r_l], right[:, :r_r] = rng.standard_normal((n, r_l)), rng.standard_normal((n, r_r))
    f1, f2 = rng.standard_normal((n, D_)), rng.standard_normal((n, D_))
    y = rng.integers(0, C_, n)
    lf, rf = sw._mps_sweep.sides(*map(jnp.asarray, (left, f1, f2, right)))
    idx = np.arange(pad)
    mask = ((idx < r_l)[:, None, None, None, None] * (idx < r_r)).astype(float)
    b0 = jnp.asarray(rng.standard_normal((pad, D_, D_, C_, pad)) * mask)
    b, res, cost = jax.jit(sw.solve_cg, static_argnums=4)(b0, lf, rf, jnp.asarray(y), 2 * k,
                                                          l2, jnp.asarray(mask))
    x = np.einsum("na,ns,nt,nb->nastb", left[:, :r_l], f1, f2, right[:, :r_r]).reshape(n, -1)
    w = np.linalg.solve(x.T @ x + l2 * np.eye(k), x.T @ np.eye(C_)[y])
    want = np.zeros((pad, D_, D_, C_, pad))
    want[:r_l, :, :, :, :r_r] = w.reshape(r_l, D_, D_, r_r, C_).transpose(0, 1, 2, 4, 3)
    close(b, want, F64, 1e4, 1 + np.abs(want).max())
    close(cost, np.sum((x @ w - np.eye(C_)[y]) ** 2) + l2 * np.sum(w**2), F64, 1e4, 1 + n)
    assert sw.SOLVERS == ("cg", "gd")
    s = np.sort(rng.exponential(size=6))[::-1]
    for cutoff in (0.0, 0.01, 0.2):
        got = int(sw.kept_count(jnp.asarray(s), jnp.sum(jnp.asarray(s) ** 2), cutoff, 6))
        w2 = s**2 / np.sum(s**2)
        assert got == next(j for j in range(7) if np.sum(w2[j:]) <= cutoff)


@covers("sweep.init_from_data", "sweep.bucket", "sweep.needed_bond", "sweep.pad", "sweep.grow",
        "sweep.sweep_directions")
@settings(max_examples=3)
@given(st.integers(3, 6), st.integers(1, 3), seeds)
def test_classifier_start_padding_and_growth(n_sites, init_bond, seed):
    """init_from_data puts the label on the requested site with the chain mixed
    canonical about it; pad and grow change the padding, not the outputs; grow makes
    room for exactly what the next split can keep; a sweep's directions bring the
    label back."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(N_, n_sites)) * np.pi / 2
    feats = jnp.asarray(np.stack([np.cos(x), np.sin(x)], -1))
    y = jnp.asarray(rng.integers(C_, size=N_), jnp.int32)
    center = n_sites // 2
    mps = sw.init_from_data(jax.random.PRNGKey(seed), feats, y, C_, init_bond=init_bond,
                            per_class=3, center=center, dtype=F64)
    assert int(mps.center) == center and max(np.asarray(mps.ranks)) <= init_bond
    out = np64(sw.logits(mps, feats)[0])
    padded = sw.pad(mps, mps.max_bond + 2)
    assert padded.max_bond == mps.max_bond + 2
    close(sw.logits(padded, feats)[0], out, F64, 8)
    envs = sw.environments(mps, feats, y)
    need = sw.needed_bond(mps, "right", 2 * PAD)
    grown, envs2 = sw.grow(mps, envs, "right", 2 * PAD)
    assert grown.max_bond == max(mps.max_bond, sw.bucket(need, 2 * PAD))
    close(sw.logits(grown, feats)[0], out, F64, 8)
    assert envs2.left.shape[-1] == grown.max_bond
    assert [sw.bucket(v, 12) for v in (1, 3, 5, 9, 13)] == [1, 4, 8, 12, 12]
    dirs = sw.sweep_directions(n_sites, center, back=True)
    moves = sum(1 if d == "right" else -1 for d in dirs)
    assert moves == 0 and len(dirs) == 2 * (n_sites - 1)


@covers("sweep.init", "sweep.from_cores", "sweep.environments", "sweep.logits",
        "sweep.bond_tensor", "sweep.update", "sweep.sweep", "sweep.split_bond")
def test_classifier_bad_input_names_the_argument():
    rng = np.random.default_rng(0)
    cores, label = random_labelled(rng, (1, 2, 2, 1), 1, 2, 3, F64)
    mps = sw.from_cores(cores, label, 1, max_bond=3)
    feats = jnp.ones((2, 3, 2))
    envs = sw.environments(mps, feats, jnp.zeros(2, jnp.int32))
    at0 = sw.from_cores(cores, jnp.ones((1, 2, 3, 2)), 0, max_bond=3)
    at_end = sw.from_cores(cores, jnp.ones((2, 2, 3, 1)), 2, max_bond=3)
    cmps = sw.from_cores([c.astype(C128) for c in cores], label.astype(C128), 1, max_bond=3)
    cenv = sw.environments(cmps, feats, jnp.zeros(2, jnp.int32))
    cases = [
        (lambda: sw.init(jax.random.PRNGKey(0), 1, 2, max_bond=2), "n_sites"),
        (lambda: sw.init(jax.random.PRNGKey(0), 3, 0, max_bond=2), "n_classes"),
        (lambda: sw.init(jax.random.PRNGKey(0), 3, 2, max_bond=0), "max_bond"),
        (lambda: sw.init(jax.random.PRNGKey(0), 3, 2, max_bond=2, init_bond=3), "init_bond"),
        (lambda: sw.init(jax.random.PRNGKey(0), 3, 2, max_bond=2, init_std=-1.0), "init_std"),
        (lambda: sw.from_cores(cores, label, 1, max_bond=1), "max_bond"),
        (lambda: sw.from_cores(cores, label, 3, max_bond=3), "center"),
        (lambda: sw.from_cores(cores, label[0], 1, max_bond=3), "label"),
        (lambda: sw.from_cores(cores[:1], label, 0, max_bond=3), "cores"),
        (lambda: sw.logits(mps, jnp.ones((2, 4, 2))), "features"),
        (lambda: sw.logits(mps, jnp.ones((3, 2))), "features"),
        (lambda: sw.environments(mps, feats, jnp.zeros(3, jnp.int32)), "labels"),
        (lambda: sw.environments(mps, feats, jnp.zeros(2)), "labels"),
        (lambda: sw.update(mps, envs, direction="up"), "direction"),
        (lambda: sw.update(mps, envs, direction="left", loss="hinge"), "loss"),
        (lambda: sw.update(mps, envs, direction="left", steps=-1), "steps"),
        (lambda: sw.update(mps, envs, direction="left", max_rank=0), "max_rank"),
        (lambda: sw.update(at0, envs, direction="left"), "center"),
        (lambda: sw.update(at_end, envs, direction="right"), "center"),
        (lambda: sw.bond_tensor(at0, "left"), "center"),
        (lambda: sw.update(cmps, cenv, direction="left"), "mps"),
        (lambda: sw.sweep(cmps, cenv), "mps"),
        (lambda: sw.split_bond(jnp.ones((2, 2, 2, 2, 2)), "up", 1, 0.0), "direction"),
    ]
    for fn, name in cases:
        raises(fn, name)


# ======================================================================= sweep_born


def np_nll(cores, tokens):
    psi = np_chain(cores)
    p = np.abs(psi) ** 2 / np.sum(np.abs(psi) ** 2)
    return -np.mean(np.log(p[tuple(np.asarray(tokens).T)]))


@jax.jit
def _born_facts(mps, tokens):
    e = sb.environments(mps, tokens)
    return {"nll": sb.nll(mps, tokens), "envs": e,
            "right": sb.bond_nll(sb.bond_tensor(mps, "right"), e, mps.center),
            "left": sb.bond_nll(sb.bond_tensor(mps, "left"), e, mps.center - 1),
            "Z": jnp.sum(jnp.abs(sb.bond_tensor(mps, "right")) ** 2)}


@covers("sweep_born.BornMPS", "sweep_born.BornEnvironments", "sweep_born.from_cores",
        "sweep_born.to_cores", "sweep_born.environments", "sweep_born.nll",
        "sweep_born.bond_tensor", "sweep_born.bond_nll")
@DT
@settings(max_examples=1)
@given(st.integers(2, 5), st.integers(1, 3), st.integers(1, 4),
       st.lists(st.integers(1, 4), min_size=4, max_size=4), st.integers(0, 4), seeds)
def test_born_nll_matches_dense(dtype, L, d, N, raw, center, seed):
    rng = np.random.default_rng(seed)
    ranks = (1,) + tuple(raw[:L - 1]) + (1,)
    center = center % L
    cores = [np_random(rng, (ranks[k], d, ranks[k + 1]), dtype) for k in range(L)]
    mps = sb.from_cores(cores, max_bond=max(ranks), center=center)
    assert mps.cores.dtype == jnp.dtype(dtype) and int(mps.center) == center
    back = sb.to_cores(mps)
    s = 1 + np.abs(np_chain(cores)).max()
    close(np_chain(back), np_chain(cores), dtype, 8, s)  # the gauge keeps psi
    r = np.asarray(mps.ranks)
    assert all(r[k] <= min(d ** k, d ** (L - k)) for k in range(L + 1))  # redundant bonds cut
    tokens = jnp.asarray(rng.integers(d, size=(N, L)), jnp.int32)
    f = _born_facts(mps, tokens)
    finite(f, "nll")
    want = np_nll(cores, tokens)
    close(f["nll"], want, dtype, 8, 1 + abs(want))
    close(f["Z"], np.sum(np.abs(np_chain(cores)) ** 2), dtype, 8, s * s)  # ||B||^2 = Z
    for direction, ok in (("right", center < L - 1), ("left", center > 0)):
        if ok:
            close(f[direction], want, dtype, 8, 1 + abs(want))
    assert f["envs"].left.shape == (L + 1, N, mps.max_bond)


@covers("sweep_born.init", "sweep_born.update", "sweep_born.sweep", "sweep_born.nll",
        "sweep_born.to_cores", "sweep_born.environments")
@pytest.mark.parametrize("dtype", [F64, C128], ids=dtype_id)
@settings(max_examples=2)
@given(st.integers(1, PAD + 2), st.sampled_from([0.0, 1e-3]), st.floats(0.01, 0.2),
       st.sampled_from([0.0, 0.5]), st.integers(1, 3), seeds)
def test_born_update_and_sweep(dtype, max_rank, cutoff, lr, momentum, init_bond, seed):
    rng = np.random.default_rng(seed)
    init_bond = min(init_bond, PAD)
    mps = sb.init(jax.random.PRNGKey(seed), L_, D_, max_bond=PAD, init_bond=init_bond,
                  dtype=dtype)
    tokens = jnp.asarray(rng.integers(D_, size=(N_, L_)), jnp.int32)
    close(sb.nll(mps, tokens), np_nll(sb.to_cores(mps), tokens), dtype, 4)
    envs = sb.environments(mps, tokens)
    kw = dict(lr=lr, momentum=momentum, cutoff=cutoff, max_rank=max_rank, steps=2)
    new, envs, info = sb.update(mps, envs, direction="right", **kw)
    close(info["nll_before"], np_nll(sb.to_cores(mps), tokens), dtype, 4)
    new, envs, infos = sb.sweep(new, envs, **kw)
    finite((info, infos, new, envs), "training")
    assert int(new.center) == 0 and infos["rank"].shape == (2 * L_ - 3,)
    r = np.asarray(new.ranks)
    assert r[0] == r[-1] == 1 and r.max() <= min(max_rank, PAD)
    cores = sb.to_cores(new)
    for c in cores[1:]:  # canonical at site 0, Z = 1
        m = np64(c).reshape(c.shape[0], -1)
        close(m @ m.conj().T, np.eye(c.shape[0]), dtype, 8)
    close(np.sum(np.abs(np64(cores[0])) ** 2), 1.0, dtype, 8)
    want = np_nll(cores, tokens)
    close(sb.nll(new, tokens), want, dtype, 8, 1 + abs(want))
    fresh = sb.environments(new, tokens)
    close(envs.right[1:], fresh.right[1:], dtype, 8)


@covers("sweep_born.init", "sweep_born.from_cores", "sweep_born.environments",
        "sweep_born.nll", "sweep_born.bond_tensor", "sweep_born.update", "sweep_born.sweep")
def test_born_bad_input_names_the_argument():
    rng = np.random.default_rng(0)
    cores = [np_random(rng, s, F64) for s in ((1, 2, 2), (2, 2, 2), (2, 2, 1))]
    mps = sb.from_cores(cores, max_bond=2, center=0)
    last = sb.from_cores(cores, max_bond=2, center=2)
    envs = sb.environments(mps, jnp.zeros((2, 3), jnp.int32))
    cases = [
        (lambda: sb.init(jax.random.PRNGKey(0), 1, 2, max_bond=2), "n_sites"),
        (lambda: sb.init(jax.random.PRNGKey(0), 3, 0, max_bond=2), "local_dim"),
        (lambda: sb.init(jax.random.PRNGKey(0), 3, 2, max_bond=2, init_bond=3), "init_bond"),
        (lambda: sb.from_cores(cores, max_bond=1), "max_bond"),
        (lambda: sb.from_cores(cores, max_bond=2, center=3), "center"),
        (lambda: sb.from_cores(cores[:1], max_bond=2), "cores"),
        (lambda: sb.from_cores([cores[0], cores[0], cores[2]], max_bond=2), "cores"),
        (lambda: sb.nll(mps, jnp.zeros((2, 4), jnp.int32)), "tokens"),
        (lambda: sb.nll(mps, jnp.zeros((2, 3))), "tokens"),
        (lambda: sb.environments(mps, jnp.zeros((3,), jnp.int32)), "tokens"),
        (lambda: sb.bond_tensor(mps, "down"), "direction"),
        (lambda: sb.bond_tensor(mps, "left"), "center"),
        (lambda: sb.update(mps, envs, direction="up"), "direction"),
        (lambda: sb.update(mps, envs, direction="right", steps=-1), "steps"),
        (lambda: sb.update(mps, envs, direction="right", max_rank=0), "max_rank"),
        (lambda: sb.update(mps, envs, direction="left"), "center"),
        (lambda: sb.update(last, envs, direction="right"), "center"),
    ]
    for fn, name in cases:
        raises(fn, name)


# ======================================================================== serialize


def _fill(rng, make, dtype, batch=()):
    """``make()``'s structure (``jax.eval_shape``: nothing is compiled), batched, with random
    ``jax.Array`` leaves of ``dtype``."""
    shapes = jax.eval_shape(make)
    return jax.tree.map(lambda s: np_random(rng, (*batch, *s.shape), dtype), shapes)


def _makers(dims, rank, seed):
    k = jax.random.PRNGKey(seed)
    L = len(dims)
    adj = [[dims[i] if i == j else 1 + (i + j + seed) % 3 for j in range(L)] for i in range(L)]
    order = list(range(L))
    np.random.default_rng(seed).shuffle(order)
    tree_ = None if L == 1 else tuple(order) if L == 2 else (tuple(order[:2]), *order[2:])
    tk = tuple(min(rank, n, math.prod(dims) // n) for n in dims)
    return {
        "tt.TensorTrain": lambda: tt.random(k, dims, rank, F64),
        "tt.TTMatrix": lambda: tt.random(k, dims, rank, F64, col_dims=dims[::-1]),
        "tucker.Tucker": lambda: tucker.random(k, dims, tk, F64),
        "tree.TreeTN": lambda: tree.random(k, dims, rank, tree=tree_, dtype=F64),
        "cp.CP": lambda: cp.random(k, dims, rank, F64),
        "tr.TensorRing": lambda: tr.random(k, dims, rank, F64),
        "network.Network": lambda: network.random(k, network.dims_of(adj, tuple(order)), adj,
                                                  F64, perm=tuple(order)),
        "btt.LowRank": lambda: btt.random(k, (sum(dims), L + 1), rank, F64, kind="lowrank"),
        "btt.Kronecker": lambda: btt.random(k, (dims[:2] + (2,) * (2 - len(dims[:2])), (2, 3)), 1,
                                            F64, kind="kronecker"),
        "btt.BlockTT": lambda: btt.random(k, ((2, dims[0]), (dims[-1], 2)), rank, F64),
    }


def identical(a, b):
    """Same type, treedef (static structure included), dtypes, shapes and bits."""
    assert type(a) is type(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for name in type(a).__tnlib_static__:
        assert getattr(a, name) == getattr(b, name) and type(getattr(a, name)) is type(
            getattr(b, name)), name
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@covers("serialize.TYPES", "serialize.to_arrays", "serialize.from_arrays",
        "serialize.type_name", "serialize.META_KEY", "serialize.FORMAT_VERSION")
@DT
@settings(max_examples=2)
@given(dims_st(1, 4, 3), st.integers(1, 4), st.sampled_from([(), (2,), (2, 1)]), seeds)
def test_serialize_round_trips_every_type_bitwise(dtype, tmp_path_factory, dims, rank, batch,
                                                  seed):
    tmp_path = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(seed)
    makers = _makers(dims, rank, seed)
    assert set(makers) == set(serialize.TYPES)
    for name, make in makers.items():
        obj = _fill(rng, make, dtype, batch)
        assert serialize.type_name(obj) == name and serialize.TYPES[name] is type(obj)
        assert serialize.type_name(type(obj)) == name
        d = serialize.to_arrays(obj)
        meta = json.loads(d[serialize.META_KEY].tobytes())
        assert meta["type"] == name and meta["version"] == serialize.FORMAT_VERSION
        assert all(isinstance(v, np.ndarray) for v in d.values())
        identical(serialize.from_arrays(d), obj)
        back = serialize.from_arrays(d, to_jax=False)
        assert all(isinstance(v, np.ndarray) for v in jax.tree.leaves(back))
        identical(back, obj)
        path = tmp_path / f"{name}-{seed}.npz"
        np.savez(path, **d)
        with np.load(path) as z:
            identical(serialize.from_arrays(z), obj)


def _mutations(meta, rng):
    """Records that differ from ``meta``: every node replaced by junk, once."""
    junk = [None, 0, -1, 2.5, "x", [], {}, [1, "a"], {"array": 3}, {"tuple": 5}]

    def walk(node, path):
        yield path
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, path + (k,))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, path + (i,))

    for path in list(walk(meta, ()))[1:]:
        m = json.loads(json.dumps(meta))
        parent = m
        for p in path[:-1]:
            parent = parent[p]
        old = parent[path[-1]]
        new = junk[rng.integers(len(junk))]
        if json.dumps(new) == json.dumps(old):
            new = "junk"
        parent[path[-1]] = new
        yield path, m


@covers("serialize.from_arrays", "serialize.to_arrays", "serialize.type_name",
        "serialize.META_KEY")
@settings(max_examples=3)
@given(st.sampled_from(sorted(serialize.TYPES)), seeds)
def test_serialize_corrupted_record_raises_naming_the_problem(name, seed):
    rng = np.random.default_rng(seed)
    obj = _fill(rng, _makers((2, 3, 2), 2, seed)[name], F32)
    d = serialize.to_arrays(obj)
    raw = d[serialize.META_KEY].tobytes()
    meta = json.loads(raw)
    key_ = serialize.META_KEY

    def load(record):
        return serialize.from_arrays({**d, key_: np.frombuffer(record, np.uint8)})

    def raises_or_same(record, what):
        try:
            back = load(record)
        except (ValueError, TypeError) as e:
            msg = str(e)
            assert key_ in msg or "d:" in msg or "d[" in msg or any(
                k in msg for k in d), (what, msg)
            return
        identical(back, obj)  # only a change that means the same record may load

    for cut in sorted({0, 1, len(raw) // 2, len(raw) - 1} | set(rng.integers(len(raw), size=4))):
        raises_or_same(raw[:cut], f"truncated at {cut}")
    for pos in rng.choice(len(raw), size=min(24, len(raw)), replace=False):
        for flip in (1, 2, 16, 128):
            b = bytearray(raw)
            b[pos] ^= flip
            raises_or_same(bytes(b), f"byte {pos} ^ {flip}")
    for path, m in _mutations(meta, rng):
        raises_or_same(json.dumps(m).encode(), f"node {path}")
    raises(lambda: serialize.from_arrays({**d, key_: np.zeros((2, 2), np.uint8)}), key_)
    raises(lambda: serialize.from_arrays({k: v for k, v in d.items() if k != key_}), key_)
    raises(lambda: serialize.type_name(3.0), "obj")
    raises(lambda: serialize.to_arrays(rm.Tangent((jnp.ones(2),))), "obj")


# =========================================================================== struct


names_st = st.lists(st.sampled_from(["a", "b", "cores", "tree", "perm", "w", "z"]),
                    min_size=1, max_size=4, unique=True)


@covers("struct.pytree_dataclass", "struct.field_names")
@settings(max_examples=4)
@given(names_st, st.data())
def test_pytree_dataclass_round_trips_under_transformations(names, data):
    static = tuple(n for n in names if data.draw(st.booleans(), label=f"{n} static"))
    inits = []

    class Base:
        def __post_init__(self):  # validation in __init__ must never run on unflatten
            inits.append(1)
            for n in names:
                if n not in static and not isinstance(getattr(self, n), jax.Array | tuple):
                    raise TypeError(f"{n} must hold arrays")

    cls = struct.pytree_dataclass(
        type("Random", (Base,), {"__annotations__": {n: object for n in names}}),
        static=static)
    rng = np.random.default_rng(len(names))
    values = {}
    for i, n in enumerate(names):
        if n in static:
            values[n] = tuple(range(i + 1)) if i % 2 else f"s{i}"
        elif i % 2:
            values[n] = (jnp.asarray(rng.standard_normal((2, i + 1))), jnp.ones((2,)))
        else:
            values[n] = jnp.asarray(rng.standard_normal((2, 3)))
    obj = cls(**values)
    assert struct.field_names(obj) == tuple(names) and len(inits) == 1
    leaves, treedef = jax.tree.flatten(obj)
    assert len(leaves) == len(jax.tree.leaves([values[n] for n in names if n not in static]))
    back = jax.tree.unflatten(treedef, leaves)
    assert type(back) is cls and len(inits) == 1  # no __init__ / __post_init__
    for n in names:
        if n in static:
            assert getattr(back, n) == values[n]
        else:
            for u, v in zip(jax.tree.leaves(getattr(back, n)), jax.tree.leaves(values[n]),
                            strict=True):
                assert u is v
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(obj)[0]]
    assert all(p.split("[")[0].split(".")[1] not in static for p in paths)
    # static fields stay Python values inside jit and vmap; arrays are traced
    seen = []

    def f(o):
        for n in static:
            assert getattr(o, n) == values[n]
            seen.append(n)
        return jax.tree.map(lambda a: 2 * a, o)

    out = jax.jit(f)(obj)
    assert type(out) is cls and jax.tree.structure(out) == treedef
    for u, v in zip(jax.tree.leaves(out), leaves, strict=True):
        np.testing.assert_array_equal(u, 2 * v)
    vm = jax.vmap(f)(obj)  # every leaf has a leading axis of 2
    for u, v in zip(jax.tree.leaves(vm), leaves, strict=True):
        np.testing.assert_array_equal(u, 2 * v)
    shapes = jax.eval_shape(lambda o: o, obj)
    assert type(shapes) is cls and jax.tree.structure(shapes) == treedef
    nones = jax.tree.map(lambda a: None, obj)  # None leaves: unflatten never validates
    assert type(nones) is cls and len(inits) == 1
    if static:  # a different static value is a different treedef
        changed = dataclasses.replace(obj, **{static[0]: "other"})
        assert jax.tree.structure(changed) != treedef
    # bad field use
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, names[0], 1)
    raises(lambda: struct.pytree_dataclass(static=("nope",))(
        type("Bad", (), {"__annotations__": {n: object for n in names}})), "nope")
    raises(lambda: struct.pytree_dataclass(static=names[0])(
        type("Bad", (), {"__annotations__": {n: object for n in names}})), "static")
