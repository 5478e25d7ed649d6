"""Properties of Riemannian optimization on the fixed-multilinear-rank Tucker manifold
(``tnlib.riemannian`` with ``tnlib.tucker.Tucker`` points), against dense float64
linear algebra: the projection is the orthogonal projector onto the tangent space
(dimension, idempotence, orthogonality), every gradient route agrees with it, the
retraction is second order and keeps the ranks, and an optax loop stays on the manifold.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from props import covers

from tnlib import riemannian as rm
from tnlib import tucker

DIMS, RANKS = (5, 4, 6), (2, 3, 3)


def point(seed=0, dims=DIMS, ranks=RANKS, dtype=jnp.float64):
    """A Tucker with non-orthonormal factors (the frame has to orthonormalize them)."""
    rng = np.random.default_rng(seed)

    def draw(shape):
        a = rng.standard_normal(shape)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            a = a + 1j * rng.standard_normal(shape)
        return jnp.asarray(a, dtype)

    return tucker.Tucker(draw(ranks), tuple(draw((n, r)) for n, r in zip(dims, ranks,
                                                                          strict=True)))


@jax.jit
def _dense(x, xi):
    return tucker.to_dense(rm.to_tangent(x, xi))


def dense(x, xi):
    return np.asarray(_dense(x, xi))


project = jax.jit(rm.project)  # compiled once per shape: eigh / QR op by op are slow


@jax.jit
def projector(x):
    """The tangent-space projector as a dense (n, n) matrix, column by column."""
    n = int(np.prod(x.dims))
    cols = jax.vmap(lambda e: tucker.to_dense(rm.to_tangent(x, rm.project(x, e.reshape(x.dims))))
                    .ravel())(jnp.eye(n, dtype=x.dtype))
    return cols.T


@covers("riemannian.to_tangent", "riemannian.project", "riemannian.manifold_dim",
        "riemannian.check_point")
@pytest.mark.parametrize("dims, ranks, dtype", [(DIMS, RANKS, jnp.float64),
                                                ((3, 2, 2, 3), (2, 2, 1, 2), jnp.complex128)],
                         ids=["float64", "complex128"])
def test_projection_is_the_orthogonal_projector_onto_a_space_of_the_manifold_dimension(
        dims, ranks, dtype):
    x = point(0, dims, ranks, dtype)
    p = np.asarray(projector(x))
    np.testing.assert_allclose(p @ p, p, atol=1e-10)
    np.testing.assert_allclose(p, p.conj().T, atol=1e-10)
    want = int(np.prod(ranks)) + sum(n * r - r * r for n, r in zip(dims, ranks, strict=True))
    assert np.linalg.matrix_rank(p, 1e-8) == rm.manifold_dim(x) == want
    # x itself and every curve through it move inside the tangent space
    xd = np.asarray(tucker.to_dense(x)).ravel()
    np.testing.assert_allclose(p @ xd, xd, atol=1e-10)
    f = jax.jacfwd(lambda c: tucker.to_dense(tucker.Tucker(c, x.factors)).ravel(),
                   holomorphic=jnp.iscomplexobj(x.core))(x.core)
    f = np.asarray(f).reshape(xd.size, -1)
    np.testing.assert_allclose(p @ f, f, atol=1e-9)


@covers("riemannian.inner", "riemannian.norm", "riemannian.add", "riemannian.scale")
def test_tangent_algebra_matches_dense():
    x = point(1)
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    a = project(x, jax.random.normal(k1, x.dims, jnp.float64))
    b = project(x, jax.random.normal(k2, x.dims, jnp.float64))
    da, db = dense(x, a), dense(x, b)
    np.testing.assert_allclose(rm.inner(a, b), np.vdot(da, db), rtol=1e-10)
    np.testing.assert_allclose(rm.norm(a), np.linalg.norm(da), rtol=1e-10)
    np.testing.assert_allclose(dense(x, rm.add(a, rm.scale(b, -2.0))), da - 2 * db, atol=1e-10)


@covers("riemannian.project_core_grad", "riemannian.riemannian_grad",
        "riemannian.riemannian_value_and_grad")
def test_gradient_routes_agree_under_jit():
    x = point(3)
    z = jax.random.normal(jax.random.PRNGKey(4), x.dims, jnp.float64)

    def loss(t):
        return jnp.sum(jnp.sin(tucker.to_dense(t)) * z)

    want = project(x, jnp.cos(tucker.to_dense(x)) * z)  # the Euclidean gradient, densely
    by_cores = jax.jit(lambda t: rm.project_core_grad(t, jax.grad(loss)(t)))(x)
    by_rgrad = jax.jit(lambda t: rm.riemannian_grad(loss, t))(x)
    value, by_vg = rm.riemannian_value_and_grad(loss, x)
    np.testing.assert_allclose(value, loss(x), rtol=1e-12)
    for got in (by_cores, by_rgrad, by_vg):
        for g, w in zip(got.deltas, want.deltas, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-9)


@covers("riemannian.retract", "riemannian.transport")
def test_retraction_keeps_ranks_and_is_second_order():
    x = point(5)
    xi = project(x, jax.random.normal(jax.random.PRNGKey(6), x.dims, jnp.float64))
    xd, d = np.asarray(tucker.to_dense(x)), dense(x, xi)
    errs = []
    for t in (1e-2, 1e-3):
        r = jax.jit(rm.retract)(x, rm.scale(xi, t))
        assert r.ranks == x.ranks
        errs.append(np.linalg.norm(np.asarray(tucker.to_dense(r)) - xd - t * d))
    assert errs[1] < errs[0] / 50  # O(t^2): a tenth of the step, a hundredth of the error
    # transport: a tangent at x moved to the retracted point lies in its tangent space
    y = rm.retract(x, rm.scale(xi, 1e-1))
    moved = rm.transport(x, xi, y)
    dm = dense(y, moved).ravel()
    np.testing.assert_allclose(projector(y) @ dm, dm, atol=1e-9)
    np.testing.assert_allclose(dm, projector(y) @ d.ravel(), atol=1e-9)


@covers("riemannian.riemannian_sgd", "riemannian.riemannian_adam", "riemannian.SGDState",
        "riemannian.AdamState", "riemannian.GradientTransformation", "riemannian.Tangent")
@pytest.mark.parametrize("make", [lambda: rm.riemannian_sgd(0.3, momentum=0.5),
                                  lambda: rm.riemannian_adam(3e-2)],
                         ids=["sgd-momentum", "adam"])
def test_optax_loop_fits_a_low_rank_tensor_on_the_manifold(make):
    target = tucker.to_dense(tucker.random(jax.random.PRNGKey(7), (6, 5, 4), (2, 2, 2),
                                           jnp.float64))
    target = target / jnp.linalg.norm(target)
    x = tucker.hosvd(target + 0.3 * jax.random.normal(jax.random.PRNGKey(8), target.shape,
                                                      jnp.float64), (2, 2, 2))

    def loss(t):
        return 0.5 * jnp.sum((tucker.to_dense(t) - target) ** 2)

    opt = optax.chain(make())
    state = opt.init(x)

    @jax.jit
    def step(x, state):
        updates, state = opt.update(jax.grad(loss)(x), state, x)
        return optax.apply_updates(x, updates), state

    start = loss(x)
    for _ in range(100):
        x, state = step(x, state)
        assert x.ranks == (2, 2, 2)
        np.testing.assert_allclose(np.asarray(x.factors[0]).T @ np.asarray(x.factors[0]),
                                   np.eye(2), atol=1e-9)  # the retraction's orthonormal form
    assert np.isfinite(float(loss(x))) and loss(x) < 1e-3 * start


def test_bad_points_and_tangents_raise():
    with pytest.raises(TypeError, match="x: riemannian_grad takes real"):
        rm.riemannian_grad(lambda t: 0.0, point(0, DIMS, RANKS, jnp.complex128))
    with pytest.raises(TypeError, match="x must be a TensorTrain, got Tucker"):
        rm.to_tangent_tt(point(), project(point(), jnp.zeros(DIMS)))
    with pytest.raises(ValueError, match="max_rank must be an int or 3 ranks"):
        rm.retract(point(), project(point(), jnp.zeros(DIMS)), max_rank=(2, 2))
    with pytest.raises(ValueError, match="mode 0"):
        rm.project(tucker.random(jax.random.PRNGKey(0), (4, 2, 2), (4, 1, 1)),
                   jnp.zeros((4, 2, 2)))
    x = point()
    with pytest.raises(ValueError, match="xi"):
        rm.retract(x, rm.Tangent((jnp.zeros((2, 2, 2)),) + tuple(
            jnp.zeros(f.shape) for f in x.factors)))
    with pytest.raises(ValueError, match="g"):
        rm.project(x, jnp.zeros((5, 4, 5)))


def test_projection_and_retraction_under_vmap_match_one_by_one():
    x = point(9)
    zs = jax.random.normal(jax.random.PRNGKey(10), (3,) + x.dims, jnp.float64)
    batched = jax.jit(jax.vmap(lambda z: rm.retract(x, rm.scale(rm.project(x, z), 1e-2))))(zs)
    for k in range(3):
        one = rm.retract(x, rm.scale(project(x, zs[k]), 1e-2))
        np.testing.assert_allclose(tucker.to_dense(jax.tree.map(lambda a, k=k: a[k], batched)),
                                   tucker.to_dense(one), atol=1e-10)
