"""tnlib.linalg: decompositions agree with numpy, gradients match finite differences
away from degeneracies and stay finite at them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import rand
from jax.test_util import check_grads

from tnlib import linalg

F64 = jnp.float64
KW = dict(order=1, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4), (2, 6, 3)])
@pytest.mark.parametrize("dtype", [F64, jnp.complex128])
def test_svd_reconstructs_and_matches_numpy(shape, dtype):
    a = rand(shape, 1, dtype)
    for f in (linalg.svd, jax.jit(linalg.svd)):
        u, s, vh = f(a)
        np.testing.assert_allclose((u * s[..., None, :]) @ vh, a, atol=1e-12)
        np.testing.assert_allclose(s, np.linalg.svd(np.asarray(a), compute_uv=False), atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_svd_gradients_match_finite_differences(shape):
    a = rand(shape, 2)
    # Gauge-invariant functions of the factors: singular values, projectors, truncation.
    # Jitted: check_grads evaluates each function and its derivatives several times, and
    # a compiled function is reused where an eager one re-dispatches every op.
    jit = jax.jit
    check_grads(jit(lambda a: linalg.svd(a)[1]), (a,), **KW)
    check_grads(jit(lambda a: (lambda u, s, vh: u[:, :2] @ (s[:2, None] * vh[:2]))(
        *linalg.svd(a))), (a,), **KW)
    check_grads(jit(lambda a: jnp.abs(linalg.svd(a)[0][:, 0])), (a,), **KW)


def test_svd_gradients_agree_with_jax_when_nondegenerate():
    a = rand((6, 4), 3)
    f_ours = lambda a: jnp.sum(jnp.sin(linalg.svd(a)[0] * linalg.svd(a)[2][:, :1].T))
    f_jax = lambda a: jnp.sum(jnp.sin(jnp.linalg.svd(a, full_matrices=False)[0]
                                      * jnp.linalg.svd(a, full_matrices=False)[2][:, :1].T))
    np.testing.assert_allclose(jax.jit(jax.grad(f_ours))(a), jax.jit(jax.grad(f_jax))(a),
                               atol=1e-8)


def test_svd_gradient_finite_for_repeated_and_zero_singular_values():
    q1, _ = np.linalg.qr(np.asarray(rand((6, 6), 4)))  # built in numpy: no eager op to compile
    q2, _ = np.linalg.qr(np.asarray(rand((5, 5), 5)))
    s = np.array([2.0, 1.0, 1.0, 0.0, 0.0])  # repeated and zero values
    a = jnp.asarray(q1[:, :5] @ np.diag(s) @ q2.T)
    # (derivatives jitted: one program each instead of op-by-op dispatch)
    jax_grad = jax.jit(jax.grad(lambda a: jnp.sum(jnp.linalg.svd(a, full_matrices=False)[0])))(a)
    # the failure we guard against: JAX's own derivative is infinite or astronomically large
    jg = np.asarray(jax_grad)
    assert not np.all(np.isfinite(jg)) or np.abs(jg).max() > 1e10
    for k in (2, 3, 5):
        f = lambda a, k=k: jnp.sum(linalg.truncated_svd(a, k)[0] ** 3)
        assert np.all(np.isfinite(np.asarray(jax.jit(jax.grad(f))(a))))
    # Gauge-invariant quantity: exact gradient of ||A_k||_F^2 is 2 A_k when s_k > s_{k+1}.
    g = jax.jit(jax.grad(lambda a: jnp.sum(linalg.truncated_svd(a, 3)[1] ** 2)))(a)
    np.testing.assert_allclose(g, 2 * a, atol=1e-10)


@pytest.mark.parametrize("shape", [(6, 3), (3, 3), (3, 6), (2, 4, 7)])
def test_qr_tall_square_wide(shape):
    a = rand(shape, 6)
    q, r = linalg.qr(a)
    k = min(shape[-2:])
    assert q.shape[-1] == k and r.shape[-2] == k
    np.testing.assert_allclose(q @ r, a, atol=1e-12)
    np.testing.assert_allclose(jnp.swapaxes(q, -1, -2) @ q, np.broadcast_to(np.eye(k), q.shape[:-2]
                               + (k, k)), atol=1e-12)
    assert np.allclose(np.tril(np.asarray(r)[..., :, :k], -1), 0)
    check_grads(jax.jit(lambda a: linalg.qr(a)[0] @ linalg.qr(a)[1]), (a,), **KW)  # compiled once
    check_grads(jax.jit(lambda a: linalg.qr(a)[1]), (a,), **KW)


def test_qr_gradient_finite_when_rank_deficient():
    a = rand((5, 1), 7) @ rand((1, 3), 8)  # rank 1, R has zero diagonal entries
    g = jax.jit(jax.grad(lambda a: jnp.sum(linalg.qr(a)[0][:, 0]) + jnp.sum(linalg.qr(a)[1][0])))(a)
    assert np.all(np.isfinite(np.asarray(g)))


def test_tolerance_helpers():
    s = jnp.array([3.0, 2.0, 1.0, 0.5])
    np.testing.assert_allclose(linalg.tail_norms(s), [np.sqrt(14.25), np.sqrt(5.25),
                                                      np.sqrt(1.25), 0.5])
    assert linalg.tolerance_rank(s, 1.2) == 2  # tail (1, .5) has norm 1.118
    assert linalg.tolerance_rank(s, 0.0) == 4
    assert linalg.tolerance_rank(s, 100.0) == 1  # at least one value kept
    np.testing.assert_array_equal(jax.jit(linalg.tolerance_mask)(s, 1.2), [1, 1, 0, 0])
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda s: linalg.tolerance_rank(s, 0.1))(s)
    with pytest.raises(ValueError, match="max_rank must be >= 1"):
        linalg.truncated_svd(rand((3, 3)), 0)


_HANG_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
from tnlib import linalg
a = np.zeros((3, 20, 200), np.float32)
a[0, 0, :2] = [np.inf, 1.0]     # this pattern sends LAPACK's gesdd into an endless loop
a[1] = np.random.default_rng(0).standard_normal((20, 200))
a[2, :, :20] = np.nan
for m in (a, a[:, :, :20]):     # the wide (QR first) and the square path
    for f in (linalg.svd, jax.jit(linalg.svd), jax.vmap(linalg.svd)):
        u, s, vh = f(jnp.asarray(m))
        assert np.isnan(np.asarray(s[0])).all() and np.isnan(np.asarray(u[0])).all()
        assert np.isnan(np.asarray(s[2])).all() and np.isnan(np.asarray(vh[2])).all()
        np.testing.assert_allclose(s[1], np.linalg.svd(m[1], compute_uv=False), rtol=1e-4)
print("ok")
"""


def test_svd_of_a_non_finite_matrix_is_nan_not_a_hang():
    """A matrix with inf among finite entries gives NaN factors promptly (gesdd alone
    spins on it); the other matrices of the batch are decomposed as usual. In a
    subprocess with a time limit, so a regression fails instead of hanging the suite."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", _HANG_SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
