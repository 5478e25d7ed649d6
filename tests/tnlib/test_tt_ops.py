"""The TT / TT-matrix operations of tnlib/_tt_ops.py (re-exported by tnlib.tt) against
the dense tensors they stand for, in float64 / complex128, under jit and vmap, with
check_grads where differentiable; t3f's exact test cases ported with their sources; the
bond diagnostics against quimb on the same state. Several operations share one compiled
function to keep compile time down."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, np_tt
from jax.test_util import check_grads

from tnlib import tt

C128 = jnp.complex128


def batch(*tns):
    """Stack networks of equal shapes along a new leading axis (for vmap)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *tns)


# ------------------------------------------------------------------------ constructors


def test_ones_zeros_eye_t3f_cases():
    # t3f/initializers_test.py testTensorOnesAndZeros, testMatrixOnesAndZeros, testEye
    got = jax.jit(lambda: [tt.to_dense(t) for t in (
        tt.ones([2, 3, 4]), tt.zeros([2, 3, 4]), tt.ones([2, 3, 4], col_dims=[1, 2, 5]),
        tt.zeros([2, 3, 4], col_dims=[1, 2, 5]), tt.eye([4, 5, 6]))])()
    want = [np.ones((2, 3, 4)), np.zeros((2, 3, 4)), np.ones((24, 10)), np.zeros((24, 10)),
            np.eye(120)]
    for g, w in zip(got, want, strict=True):
        close(g, w)
    assert tt.eye([2, 3], C128).dtype == C128
    # num_params (tensorly tt_n_param): read from shapes, TT-matrices included
    assert tt.num_params(tt.ones([2, 3, 4])) == 9
    assert tt.num_params(tt.eye([4, 5])) == 16 + 25
    a = np_tt((2, 3), 2, 0, col_dims=(3, 2))
    assert tt.num_params(a) == 1 * 2 * 3 * 2 + 2 * 3 * 2 * 1


def test_pad_rank_renormalize_keep_the_tensor(dtype=F64):
    t = np_tt((2, 3, 2, 3), 2, 1, dtype)
    m = np_tt((2, 3), 2, 2, dtype, col_dims=(3, 2))

    def f(t, m):
        p, q, r = tt.pad_rank(t, [3, 5, 4]), tt.pad_rank(m, 4), tt.renormalize(t)
        return (p, q, tt.to_dense(p), tt.to_dense(q), tt.to_dense(r),
                jnp.stack([jnp.linalg.norm(c) for c in r.cores]))

    p, q, pd, qd, rd, norms = jax.jit(f)(t, m)
    assert p.ranks == (1, 3, 5, 4, 1) and q.ranks == (1, 4, 1)
    close(pd, tt.to_dense(t))
    close(qd, tt.to_dense(m))
    close(rd, tt.to_dense(t))
    close(norms, np.full(4, float(norms[0])))
    # under jit and vmap: the same values
    dense = jax.jit(jax.vmap(lambda t: tt.to_dense(tt.renormalize(tt.pad_rank(t, 4)))))(
        batch(t, tt.scale(t, 2.0)))
    close(dense[1], 2 * tt.to_dense(t))
    check_grads(jax.jit(lambda t: tt.norm(tt.renormalize(tt.pad_rank(t, 3)))),
                (np_tt((2, 3), 2, 3),), order=1, modes=("rev",))


def test_constructor_errors():
    t = np_tt((2, 3, 2), 3, 0)
    with pytest.raises(ValueError, match="cannot shrink"):
        tt.pad_rank(t, 2)
    with pytest.raises(ValueError, match="rank must be an int or a sequence of 2"):
        tt.pad_rank(t, [3])
    with pytest.raises(ValueError, match="dims"):
        tt.eye([2, 0])
    with pytest.raises(ValueError, match="col_dims"):
        tt.ones([2, 3], col_dims=[2])
    with pytest.raises(TypeError, match="tn must be"):
        tt.renormalize(np.ones(3))


# --------------------------------------------------------------------- TT-matrices


def _matrix_ops(a, b, x, y, z):
    """Every TT-matrix operation on one set of operands (one compile)."""
    at = tt.transpose(a)
    return dict(
        transpose=tt.to_dense(at), conj_transpose=tt.to_dense(tt.conj_transpose(a)),
        trace=tt.trace(tt.matmul(a, b)), matmul=tt.to_dense(tt.matmul(a, b)),
        bilinear=tt.bilinear_form(a, x, y), quadratic=tt.quadratic_form(a, x),
        two_mat=tt.bilinear_form_two_mat(x, a, b, z),
        trace_eye=tt.trace(tt.eye(a.row_dims, a.dtype)),
    )


def _matrix_dense(a, b, x, y, z):
    A, B = tt.to_dense(a), tt.to_dense(b)
    xv, yv, zv = (tt.to_dense(v).ravel() for v in (x, y, z))
    return dict(
        transpose=A.T, conj_transpose=A.conj().T, trace=jnp.trace(A @ B), matmul=A @ B,
        bilinear=xv.conj() @ A @ yv, quadratic=xv.conj() @ A @ xv,
        two_mat=xv.conj() @ A @ B @ zv, trace_eye=jnp.asarray(math.prod(a.row_dims), A.dtype),
    )


def test_matrix_ops_match_dense_jit_and_vmap(dtype=C128):
    # complex128 covers the conjugations; float64 runs in the gradient test below
    rows, cols = (2, 3, 2), (2, 3, 2)  # square sites: trace(a @ b) is defined
    a = np_tt(rows, 2, 10, dtype, col_dims=cols)
    b = np_tt(cols, 3, 11, dtype, col_dims=rows)
    x, y, z = (np_tt(d, 2, s, dtype) for d, s in ((rows, 12), (cols, 13), (rows, 14)))
    want = _matrix_dense(a, b, x, y, z)
    got = jax.jit(_matrix_ops)(a, b, x, y, z)
    for k in want:
        close(got[k], want[k])
    # non-square sites: the product's ranks and shape
    c = np_tt((2, 3), 2, 15, dtype, col_dims=(1, 2))
    d = np_tt((1, 2), 3, 16, dtype, col_dims=(4, 1))
    cd = tt.matmul(c, d)
    assert cd.ranks == (1, 6, 1) and cd.shape == (6, 4)
    close(tt.to_dense(cd), tt.to_dense(c) @ tt.to_dense(d))
    # vmap over a batch of the first matrix
    a2 = np_tt(rows, 2, 17, dtype, col_dims=cols)
    got = jax.jit(jax.vmap(_matrix_ops, in_axes=(0, None, None, None, None)))(
        batch(a, a2), b, x, y, z)
    want2 = _matrix_dense(a2, b, x, y, z)
    for k in want:
        close(got[k][1], want2[k])


def test_matrix_ops_grads_and_errors():
    a = np_tt((2, 2), 2, 20, col_dims=(2, 2))
    b = np_tt((2, 2), 2, 21, col_dims=(2, 2))
    x, y = np_tt((2, 2), 2, 22), np_tt((2, 2), 2, 23)

    def f(a, b, x, y):
        return (tt.trace(tt.matmul(tt.transpose(a), b)) + tt.bilinear_form(a, x, y)
                + tt.bilinear_form_two_mat(x, a, b, y) + tt.quadratic_form(b, y))

    check_grads(jax.jit(f), (a, b, x, y), order=1, modes=("rev",))
    with pytest.raises(ValueError, match="row_dims == col_dims"):
        tt.trace(np_tt((2, 3), 2, 0, col_dims=(3, 2)))
    with pytest.raises(TypeError, match="ttm must be a TTMatrix"):
        tt.transpose(x)
    with pytest.raises(ValueError, match="x.dims"):
        tt.bilinear_form(a, np_tt((4,), 1, 0), y)
    with pytest.raises(ValueError, match="b.row_dims"):
        tt.matmul(a, np_tt((3, 2), 2, 0, col_dims=(2, 2)))


# ------------------------------------------------------------------------ indexing


def test_getitem_t3f_cases():
    # t3f/tensor_train_test.py testTensorIndexing: the same indices on a (3, 3, 4) TT
    t = np_tt((3, 3, 4), 2, 30)
    full = np.asarray(tt.to_dense(t))
    for index in [(slice(None),) * 3, (1, slice(None), slice(None)),
                  (slice(1, 2), 1, slice(None)), (slice(0, 3), slice(None), 3),
                  (1, slice(None), 3)]:
        close(tt.to_dense(t[index]), full[index])
    # wrong number of indices (t3f: tens[1, :, 3, :] and tens[1, 1] raise ValueError)
    with pytest.raises(ValueError, match="one int or slice per site"):
        t[1, :, 3, :]
    with pytest.raises(ValueError, match="one int or slice per site"):
        t[1, 1]
    with pytest.raises(ValueError, match="out of range"):
        t[3, :, :]
    with pytest.raises(TypeError, match="int or a slice"):
        t[1.0, :, :]
    with pytest.raises(TypeError, match="not iterable"):
        list(t)


def test_getitem_gather_jit_vmap_grad():
    t = np_tt((3, 2, 4), 2, 31, C128)
    full = np.asarray(tt.to_dense(t))
    idx = np.array([[0, 1, 3], [2, 0, 1], [1, 1, 0], [2, 1, 3]])

    def f(t, i, idx):  # a traced integer index and a gather, one compile
        return tt.to_dense(t[::2, i, 1:]), t[i, i, -1], tt.gather(t, idx)

    sl, entry, g = jax.jit(f)(t, 1, idx)
    close(sl, full[::2, 1, 1:])
    close(entry, full[1, 1, -1])
    close(g, full[tuple(idx.T)])
    close(tt.gather(t, idx.reshape(2, 2, 3)), full[tuple(idx.T)].reshape(2, 2))
    t2 = np_tt((3, 2, 4), 2, 32, C128)
    g2 = jax.vmap(lambda t: tt.gather(t, idx))(batch(t, t2))
    close(g2[1], np.asarray(tt.to_dense(t2))[tuple(idx.T)])
    check_grads(jax.jit(lambda t: tt.gather(t, idx).sum() + tt.norm(t[1:, 0, :])),
                (np_tt((3, 2, 4), 2, 33),), order=1, modes=("rev",))
    with pytest.raises(ValueError, match="indices must be an integer array"):
        tt.gather(t, idx[:, :2])


# ------------------------------------------------------------------ bond diagnostics


def _dense_diagnostics(t, i, j):
    psi = np.asarray(tt.to_dense(t))
    psi = psi / np.linalg.norm(psi)
    dims, L = psi.shape, psi.ndim
    schmidt = [np.linalg.svd(psi.reshape(math.prod(dims[:k + 1]), -1), compute_uv=False) ** 2
               for k in range(L - 1)]

    def rho(sites):
        rest = [k for k in range(L) if k not in sites]
        m = psi.transpose(list(sites) + rest).reshape(math.prod(dims[s] for s in sites), -1)
        return m @ m.conj().T

    def s(r):
        p = np.clip(np.linalg.eigvalsh(r), 0, None)
        p = p[p > 1e-15]
        return -np.sum(p * np.log2(p))

    ij = sorted([i, j])  # reduced_density_matrix orders the sites increasingly
    mi = s(rho([i])) + s(rho([j])) - s(rho(ij))
    return schmidt, [-np.sum(p * np.log2(p)) for p in schmidt], rho(ij), mi


def test_schmidt_entropy_mutual_information_match_dense(dtype=C128):
    # complex128 here; float64 against quimb and under check_grads below
    t = tt.scale(np_tt((2, 3, 2, 2), 3, 40, dtype), 3.0)  # unnormalized on purpose
    schmidt, ent, rho, mi = _dense_diagnostics(t, 3, 1)

    def f(t):
        return (tt.schmidt_values(t), tt.entropy(t), tt.reduced_density_matrix(t, (1, 3)),
                tt.mutual_information(t, 3, 1), tt.entropy(t, base=math.e))

    s, e, r, m, e_nats = jax.jit(f)(t)
    for k, p in enumerate(schmidt):
        close(s[k], p[: s[k].shape[0]])
    close(e, np.asarray(ent))
    close(e_nats, np.asarray(ent) * math.log(2))
    close(r, rho)
    close(m, mi)
    # vmap over two states
    t2 = np_tt((2, 3, 2, 2), 3, 41, dtype)
    e2, m2 = jax.jit(jax.vmap(lambda t: (tt.entropy(t), tt.mutual_information(t, 1, 3))))(
        batch(t, t2))
    _, ent2, _, mi2 = _dense_diagnostics(t2, 1, 3)
    close(e2[1], np.asarray(ent2))
    close(m2[1], mi2)


@pytest.mark.slow  # importing quimb costs seconds; the dense reference above runs by default
def test_diagnostics_agree_with_quimb():
    qtn = pytest.importorskip("quimb.tensor")
    t = np_tt((2, 2, 2, 2, 2), 2, 50)
    arrays = [np.asarray(c) for c in t.cores]
    arrays[0], arrays[-1] = arrays[0][0], arrays[-1][..., 0]
    mps = qtn.MatrixProductState(arrays, shape="lpr")
    mps = mps / mps.norm()
    sv, ent = jax.jit(lambda t: (tt.schmidt_values(t), tt.entropy(t)))(t)
    for k in range(4):  # quimb's i = k + 1 sites on the left
        close(sv[k], np.sort(mps.schmidt_values(k + 1))[::-1][:2])
        close(ent[k], mps.entropy(k + 1))


def test_diagnostics_product_state_gradients_errors():
    t = np_tt((2, 2, 2, 2, 2), 2, 50)
    p = tt.ones([2, 3, 2], F64)  # a product state: no entanglement, no mutual information
    ent_p, mi_p = jax.jit(lambda p: (tt.entropy(p), tt.mutual_information(p, 0, 2)))(p)
    close(ent_p, np.zeros(2))
    close(mi_p, 0.0)
    assert tt.entropy(tt.ones([3])).shape == (0,)
    check_grads(jax.jit(lambda t: tt.entropy(t).sum() + tt.mutual_information(t, 0, 2)),
                (np_tt((2, 3, 2), 2, 51),), order=1, modes=("rev",))
    with pytest.raises(ValueError, match="sites must be"):
        tt.reduced_density_matrix(t, (0, 5))
    with pytest.raises(ValueError, match="different sites"):
        tt.mutual_information(t, 2, 2)
    with pytest.raises(ValueError, match="base"):
        tt.entropy(t, base=1)


# ------------------------------------------- per-bond ranks, TT-matrix round / orthogonalize


def _tt_svd_dense(x, caps):
    """Numpy TT-SVD, left to right, bond ``k`` truncated to ``caps[k]``: the dense tensor."""
    dims, r, rest, cores = x.shape, 1, x.reshape(x.shape[0], -1), []
    for k in range(len(dims) - 1):
        u, s, vh = np.linalg.svd(rest, full_matrices=False)
        keep = min(caps[k], s.size)
        cores.append(u[:, :keep].reshape(r, dims[k], keep))
        r, rest = keep, (s[:keep, None] * vh[:keep]).reshape(keep * dims[k + 1], -1)
    out = np.ones((1, 1))
    for c in [*cores, rest.reshape(r, dims[-1], 1)]:
        out = np.tensordot(out, c, axes=([-1], [0]))
    return out[0, ..., 0]


def test_tensorly_tensor_train_per_bond_rank_cases():
    # tensorly/decomposition/tests/test_tt_decomposition.py test_tensor_train, tests 1-3
    rng = np.random.RandomState(1234)
    x = jnp.asarray(rng.random_sample([3, 4, 5, 6, 2, 10]))
    x3 = jnp.asarray(rng.random_sample([3, 3, 3]))
    rank = [1, 5, 4, 3, 8, 10, 1]

    def f(x, x3):
        t3 = tt.from_dense(x3, max_rank=(1, 3, 3, 1))
        return (tt.from_dense(x, max_rank=[1, 3, 3, 4, 2, 2, 1]), tt.from_dense(x, max_rank=rank),
                jnp.linalg.norm(tt.to_dense(t3) - x3) / jnp.linalg.norm(x3))

    t, t2, err3 = jax.jit(f)(x, x3)
    assert t.ranks == (1, 3, 3, 4, 2, 2, 1) and t.dims == x.shape  # test 1: the ranks asked for
    assert all(r <= c for r, c in zip(t2.ranks, rank, strict=True))  # test 2: at most those
    assert float(err3) < 10e-5  # test 3: full ranks reconstruct


def test_per_bond_ranks_match_dense_tt_svd_and_rounding():
    x = jnp.asarray(np.random.default_rng(60).standard_normal((2, 3, 4, 3)))
    caps = [2, 5, 2]

    def f(x):  # from_dense and round with per-bond caps (internal or with the 1s), one jit
        t = tt.from_dense(x, max_rank=caps)
        full = tt.from_dense(x)
        r = tt.round(full, max_rank=[1, *caps, 1])
        return t, tt.to_dense(t), r, tt.to_dense(r), tt.round(full, max_rank=2)

    t, td, r, rd, r2 = jax.jit(f)(x)
    assert t.ranks == (1, 2, 5, 2, 1) and r.ranks == (1, 2, 5, 2, 1)
    close(td, _tt_svd_dense(np.asarray(x), caps))
    # rounding truncates right to left: the TT-SVD of the mirrored tensor
    rev = np.asarray(x).transpose(3, 2, 1, 0)
    close(rd, _tt_svd_dense(rev, caps[::-1]).transpose(3, 2, 1, 0))
    # an int still caps every bond
    assert r2.ranks == (1, 2, 2, 2, 1)
    with pytest.raises(ValueError, match="max_rank must be an int or a sequence of 3"):
        tt.from_dense(x, max_rank=[2, 2])
    with pytest.raises(ValueError, match="boundary rank 1"):
        tt.round(t, max_rank=[2, 2, 2, 2, 2])
    with pytest.raises(TypeError, match="max_rank must be a Python int"):
        tt.round(t, max_rank=2.0)


def test_ttmatrix_round_orthogonalize_match_dense():
    a = np_tt((2, 3, 2), 2, 70, C128, col_dims=(3, 2, 2))
    b = np_tt((2, 3, 2), 3, 71, C128, col_dims=(3, 2, 2))

    def f(a, b):
        s = tt.add(a, b)  # rank 5: exactly rank <= 5 after rounding
        o = tt.orthogonalize(s, 1)
        flat = tt.round(tt.TensorTrain(tuple(c.reshape(c.shape[0], -1, c.shape[-1])
                                             for c in s.cores)), max_rank=[2, 3])
        return (tt.to_dense(s), tt.to_dense(tt.round(s, max_rank=5)),
                tt.to_dense(o), tt.round(s, max_rank=[2, 3]), o.cores[0], tt.to_dense(flat))

    dense, rounded, orth, small, left, flat = jax.jit(f)(a, b)
    close(rounded, dense)
    close(orth, dense)
    m = left.reshape(-1, left.shape[-1])  # left-orthogonal over the merged mode
    close(m.conj().T @ m, np.eye(m.shape[1]))
    assert isinstance(small, tt.TTMatrix) and small.ranks == (1, 2, 3, 1)
    assert small.row_dims == (2, 3, 2) and small.col_dims == (3, 2, 2)
    # the truncation is the rounding of the TT over merged modes m_k n_k
    merged = np.asarray(flat).reshape(2, 3, 3, 2, 2, 2).transpose(0, 2, 4, 1, 3, 5)
    close(tt.to_dense(small).reshape(-1), merged.reshape(-1))


@pytest.mark.slow  # a second and third compile of TT-matrix rounding (~4 s)
def test_ttmatrix_round_vmap_and_grads():
    a = np_tt((2, 3, 2), 2, 70, C128, col_dims=(3, 2, 2))
    a2 = np_tt((2, 3, 2), 2, 73, C128, col_dims=(3, 2, 2))

    def g(a):
        return tt.to_dense(tt.round(tt.matmul(a, tt.transpose(a)), max_rank=3))

    rb, want = jax.jit(lambda ab, a2: (jax.vmap(g)(ab), g(a2)))(batch(a, a2), a2)
    close(rb[1], want)
    check_grads(jax.jit(lambda a: tt.norm(tt.round(a, max_rank=[2, 2]))),
                (np_tt((2, 2, 2), 3, 72, col_dims=(2, 2, 2)),), order=1, modes=("rev",))


# ------------------------------------------------------------------------- Riemannian


def test_project_tangent_of_ttmatrix():
    # t3f/riemannian_test.py checks project against an explicit tangent basis; here the
    # defining properties, in dense float64: P is idempotent and self-adjoint, P x = x
    x = tt.round(np_tt((2, 3, 2), 2, 80, col_dims=(2, 2, 3)), max_rank=2)
    g = np_tt((2, 3, 2), 3, 81, col_dims=(2, 2, 3))
    h = jnp.asarray(np.random.default_rng(82).standard_normal(x.shape))

    def f(x, g, h):
        pg, ph = tt.project_tangent(x, g), tt.project_tangent(x, h)
        return (pg, tt.to_dense(pg), tt.to_dense(ph), tt.to_dense(tt.project_tangent(x, pg)),
                tt.to_dense(tt.project_tangent(x, tt.to_dense(g))),
                tt.to_dense(tt.project_tangent(x, x)))

    pg, pgd, phd, ppg, pg_dense, px = jax.jit(f)(x, g, h)
    assert isinstance(pg, tt.TTMatrix) and pg.ranks == (1, 4, 4, 1)
    close(ppg, pgd)  # idempotent
    close(pg_dense, pgd)  # dense g and TT-matrix g agree
    close(px, tt.to_dense(x))
    close(jnp.vdot(pgd, h), jnp.vdot(tt.to_dense(g), phd))  # self-adjoint
    # gradients: riemannian.project's own (tests/tnlib/test_riemannian.py); the map is linear
    with pytest.raises(ValueError, match="dense matrix of shape"):
        tt.project_tangent(x, jnp.ones((3, 3)))


def test_hessian_vector_product_matches_dense():
    # P_x H P_x v with the dense Hessian of F(X) = sum(X^4) / 4 + <C, X> (H = diag(3 X^2))
    x = tt.round(np_tt((2, 3, 2), 2, 90), max_rank=2)
    c = jnp.asarray(np.random.default_rng(91).standard_normal(x.dims))
    v = jnp.asarray(np.random.default_rng(92).standard_normal(x.dims))
    m = tt.round(np_tt((2, 2), 2, 93, col_dims=(2, 2)), max_rank=2)
    u, w = (jnp.asarray(np.random.default_rng(s).standard_normal(m.shape)) for s in (94, 95))

    def F(t):
        d = tt.to_dense(t)
        return jnp.sum(d ** 4) / 4 + jnp.sum(c.reshape(d.shape) * d) if d.shape == c.shape \
            else jnp.sum(d ** 4) / 4

    def f(x, v, m, u, w):
        eye = jnp.eye(v.size).reshape(-1, *x.dims)
        P = jax.vmap(lambda e: tt.to_dense(tt.project_tangent(x, e)).ravel())(eye)  # symmetric
        X = tt.to_dense(x).ravel()
        want = P @ (3 * X ** 2 * (P @ v.ravel()))
        hm_w = tt.hessian_vector_product(F, m, w)
        return (tt.to_dense(tt.hessian_vector_product(F, x, v)).ravel(), want, hm_w,
                jnp.vdot(tt.to_dense(tt.project_tangent(m, u)), tt.to_dense(hm_w)),
                jnp.vdot(tt.to_dense(tt.hessian_vector_product(F, m, u)),
                         tt.to_dense(tt.project_tangent(m, w))))

    got, want, hm_w, uhw, hu_w = jax.jit(f)(x, v, m, u, w)
    close(got, want)
    assert isinstance(hm_w, tt.TTMatrix) and hm_w.ranks == (1, 4, 1)
    close(uhw, hu_w)  # the restricted Hessian is symmetric on the TT-matrix tangent space
    with pytest.raises(TypeError, match="real TT"):
        tt.hessian_vector_product(F, np_tt((2, 2), 1, 0, C128), jnp.ones((2, 2)))
