"""Properties of the operations of tnlib/_tt_ops.py (re-exported by tnlib.tt) over
random shapes and ranks, float64 / complex128: each agrees with the dense computation
in numpy, and the diagnostics obey their bounds (entropies within ``[0, log2 of the
smaller side]``, mutual information ``>= 0``). The dense, jit, vmap and check_grads
tests are in tests/tnlib/test_tt_ops.py."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from props import C128, F64, close, covers, dims_st, dtype_id, key, seeds

from tnlib import tt


@covers("tt.ones", "tt.zeros", "tt.eye", "tt.pad_rank", "tt.renormalize", "tt.transpose",
        "tt.conj_transpose", "tt.trace", "tt.bilinear_form", "tt.bilinear_form_two_mat",
        "tt.quadratic_form", "tt.matmul_matrices", "tt.getitem", "tt.gather",
        "tt.schmidt_values", "tt.entropy", "tt.reduced_density_matrix",
        "tt.mutual_information", "tt.project_tangent", "tt.hessian_vector_product")
@pytest.mark.parametrize("dtype", [F64, C128], ids=dtype_id)
@settings(max_examples=1, deadline=None)
@given(dims_st(2, 3, 3), st.integers(1, 3), seeds, st.data())
def test_tt_ops_match_dense(dtype, dims, rank, seed, data):
    a = tt.random(key(seed), dims, rank, dtype, col_dims=dims)
    b = tt.random(key(seed + 1), dims, rank, dtype, col_dims=dims)
    x = tt.random(key(seed + 2), dims, rank, dtype)
    y = tt.random(key(seed + 3), dims, 1, dtype)
    A, B = np.asarray(tt.to_dense(a)), np.asarray(tt.to_dense(b))
    X, xv, yv = np.asarray(tt.to_dense(x)), np.ravel(tt.to_dense(x)), np.ravel(tt.to_dense(y))
    N = math.prod(dims)
    close(tt.to_dense(tt.ones(dims, dtype)), np.ones(dims), dtype)
    close(tt.to_dense(tt.zeros(dims, dtype, col_dims=dims)), np.zeros((N, N)), dtype)
    close(tt.to_dense(tt.eye(dims, dtype)), np.eye(N), dtype)
    close(tt.to_dense(tt.pad_rank(x, rank + 1)), X, dtype)
    close(tt.to_dense(tt.renormalize(a)), A, dtype)
    close(tt.to_dense(tt.transpose(a)), A.T, dtype)
    close(tt.to_dense(tt.conj_transpose(a)), A.conj().T, dtype)
    close(tt.trace(a), np.trace(A), dtype)
    close(tt.to_dense(tt.matmul_matrices(a, b)), A @ B, dtype)
    close(tt.bilinear_form(a, x, y), xv.conj() @ A @ yv, dtype)
    close(tt.quadratic_form(a, x), xv.conj() @ A @ xv, dtype)
    close(tt.bilinear_form_two_mat(x, a, b, y), xv.conj() @ A @ B @ yv, dtype)
    index = tuple(data.draw(st.one_of(st.integers(0, n - 1), st.just(slice(None, None, 2))))
                  for n in dims)
    sub = tt.getitem(x, index)
    close(sub if all(isinstance(i, int) for i in index) else tt.to_dense(sub), X[index], dtype)
    idx = np.array([[data.draw(st.integers(0, n - 1)) for n in dims] for _ in range(3)])
    close(tt.gather(x, idx), X[tuple(idx.T)], dtype)
    P = X / np.linalg.norm(X)
    ent = np.asarray(tt.entropy(x))
    for k, p in enumerate(tt.schmidt_values(x)):
        s = np.linalg.svd(P.reshape(math.prod(dims[:k + 1]), -1), compute_uv=False) ** 2
        close(p, s[: p.shape[0]], dtype)
        side = min(math.prod(dims[:k + 1]), math.prod(dims[k + 1:]))
        assert -1e-9 <= ent[k] <= math.log2(side) + 1e-9
    rest = P.reshape(dims[0], dims[1], -1)
    rho = np.einsum("ijk,lmk->ijlm", rest, rest.conj()).reshape(dims[0] * dims[1], -1)
    close(tt.reduced_density_matrix(x, (0, 1)), rho, dtype)
    assert float(tt.mutual_information(x, 0, 1)) >= -1e-9
    p = tt.round(a, max_rank=rank)  # feasible ranks: a point of the manifold
    close(tt.to_dense(tt.project_tangent(p, p)), np.asarray(tt.to_dense(p)), dtype)  # P x = x
    if dtype == F64:  # the Hessian of ||X||^2 / 2 is the identity: P H P b = P b
        hv = tt.hessian_vector_product(lambda t: tt.norm(t) ** 2 / 2, p, b)
        close(tt.to_dense(hv), np.asarray(tt.to_dense(tt.project_tangent(p, b))), dtype)
