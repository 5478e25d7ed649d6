"""tnlib.riemannian against dense references in float64: the tangent projection equals
the orthogonal projector built from a basis of the tangent space, the three gradient
routes agree, the retraction is second order and keeps the rank, the optimizers work
inside an optax loop, and Riemannian gradient descent completes a TT tensor from 10% of
its entries with every iterate of rank r."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dense_checks import close
from jax.test_util import check_grads

from tnlib import riemannian as rm
from tnlib import tt

# (dims, internal ranks): non-uniform ranks, a two-site chain and a single site.
CASES = [((3, 4, 3, 2), (2, 3, 2)), ((4, 5), 3), ((5,), 1)]


# Random data comes from NumPy: eager jax.random calls would compile once per shape.


def normal(seed, shape, dtype=np.float64):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def point(dims, rank, seed=0, dtype=np.float64, batch=()):
    """A random TT (cores scaled like ``tt.random``), optionally a stacked batch."""
    ranks = (1,) + ((rank,) * (len(dims) - 1) if isinstance(rank, int) else tuple(rank)) + (1,)
    rng = np.random.default_rng(seed)
    cores = tuple(
        jnp.asarray(rng.standard_normal((*batch, ranks[k], n, ranks[k + 1])).astype(dtype)
                    / np.sqrt(n * np.sqrt(ranks[k] * ranks[k + 1])))
        for k, n in enumerate(dims))
    return tt.TensorTrain(cores)


def dense_tangent(x, xi):
    return tt.to_dense(rm.to_tangent_tt(x, xi))


def dense_projector(x):
    """``Q Q^T`` for an orthonormal basis ``Q`` of the tangent space at ``x``, in NumPy and
    without ``project``: the span of the derivatives of the TT map w.r.t. each core,
    ``d x / d C_k = A_{<k} (x) I_{n_k} (x) B_{>k}^T`` (partial products of x's cores)."""
    cores = [np.asarray(c) for c in x.cores]
    columns = []
    for k, c in enumerate(cores):
        a = np.ones((1, 1))
        for d in cores[:k]:
            a = (a @ d.reshape(d.shape[0], -1)).reshape(-1, d.shape[-1])
        b = np.ones((1, 1))
        for d in reversed(cores[k + 1:]):
            b = (d.reshape(-1, d.shape[-1]) @ b).reshape(d.shape[0], -1)
        basis = np.einsum("ia,nm,bj->injamb", a, np.eye(c.shape[1]), b)
        columns.append(basis.reshape(-1, c.size))
    u, s, _ = np.linalg.svd(np.concatenate(columns, axis=1), full_matrices=False)
    q = u[:, : int(np.sum(s > 1e-10 * s[0]))]
    return q @ q.T, q.shape[1]


def bond_singular_values(x):
    """Singular values of every unfolding ``(n_1..n_k) x (n_{k+1}..n_L)`` of a TT."""
    out = []
    for k in range(x.n_sites - 1):
        c = tt.orthogonalize(x, k).cores[k]
        out.append(jnp.linalg.svd(c.reshape(-1, c.shape[-1]), compute_uv=False))
    return out


# ------------------------------------------------------------------ the projection


@jax.jit
def _projection_facts(x, y, z, w, z2):
    pz, eta = rm.project(x, z), rm.project(x, z2)
    tz, te = dense_tangent(x, pz), dense_tangent(x, eta)
    at_y = rm.project(y, z2)
    return dict(
        pz=tz, pw=dense_tangent(x, rm.project(x, w)),
        again=dense_tangent(x, rm.project(x, rm.to_tangent_tt(x, pz))),
        resid=jnp.vdot(te, z - tz), inner=(rm.inner(eta, pz), jnp.vdot(te, tz)),
        norm=(rm.norm(pz), jnp.linalg.norm(tz)),
        lin=(dense_tangent(x, rm.add(rm.scale(eta, 2.0), pz)), 2 * te + tz),
        moved=dense_tangent(x, rm.transport(y, at_y, x)), at_y=dense_tangent(y, at_y))


@pytest.mark.parametrize("dims,rank", CASES)
def test_project_is_the_orthogonal_projector_onto_the_tangent_space(dims, rank):
    x, y = point(dims, rank, 0), point(dims, rank, 1)
    proj, dim = dense_projector(x)
    assert dim == rm.manifold_dim(x)
    z, z2 = normal(1, (2, *dims))
    w = point(dims, 2, 2)  # a TT argument of other ranks
    f = _projection_facts(x, y, z, w, z2)
    close(f["pz"].ravel(), proj @ z.ravel())
    close(f["pw"].ravel(), proj @ tt.to_dense(w).ravel())
    close(f["again"], f["pz"])  # idempotent
    close(f["resid"], 0.0)  # the residual is orthogonal to the tangent space
    for k in ("inner", "norm", "lin"):  # gauge-exact inner product, linearity
        close(*f[k])
    # transport from another point y is the projection at x
    close(f["moved"].ravel(), proj @ f["at_y"].ravel())


def test_gradient_routes_agree_with_projected_dense_gradient():
    dims, rank = CASES[0]
    x = point(dims, rank)
    a = normal(4, dims)

    def dense_loss(t):
        return 0.5 * jnp.sum((t - a) ** 2) + jnp.sum(jnp.sin(t))

    def loss(x):
        return dense_loss(tt.to_dense(x))

    @jax.jit
    def routes(x):
        want = dense_tangent(x, rm.project(x, jax.grad(dense_loss)(tt.to_dense(x))))
        value, from_deltas = rm.riemannian_value_and_grad(loss, x)
        return want, (value, loss(x)), (
            dense_tangent(x, rm.project_core_grad(x, jax.grad(loss)(x))),
            dense_tangent(x, from_deltas), dense_tangent(x, rm.riemannian_grad(loss, x)))

    want, value, got = routes(x)
    for g in got:
        close(g, want)
    close(*value)


def test_project_under_vmap_eval_shape_and_check_grads():
    dims, rank = (3, 4, 2), 2
    xs, zs = point(dims, rank, 5, batch=(3,)), normal(6, (3, *dims))

    def f(x, z):
        return dense_tangent(x, rm.project(x, z))

    batched, f_jit = jax.jit(jax.vmap(f))(xs, zs), jax.jit(f)
    for i in range(3):
        close(batched[i], f_jit(jax.tree.map(lambda c, i=i: c[i], xs), zs[i]))
    x0 = jax.tree.map(lambda c: c[0], xs)
    shape = jax.eval_shape(rm.project, x0, zs[0])
    assert [d.shape for d in shape.deltas] == [c.shape for c in x0.cores]
    # the projection is strongly curved in x: a small finite-difference step
    check_grads(f_jit, (x0, zs[0]), order=1, modes=("fwd",), atol=1e-6, rtol=1e-6, eps=1e-6)


# ------------------------------------------------------------------ the retraction


def test_retract_keeps_rank_and_is_second_order():
    dims, rank = CASES[0]
    x = point(dims, rank)

    @jax.jit
    def facts(x, z):
        xi = rm.project(x, z)
        xi = rm.scale(xi, 1 / rm.norm(xi))
        out = {}
        for name, t in (("big", 1e-2), ("small", 2.5e-3), ("zero", 0.0)):
            y = rm.retract(x, rm.scale(xi, t))
            out[name] = (y.ranks, jnp.min(jnp.stack([s[-1] for s in bond_singular_values(y)])),
                         jnp.linalg.norm(tt.to_dense(y) - tt.to_dense(x)
                                         - t * dense_tangent(x, xi)))
        out["capped"] = rm.retract(x, xi, max_rank=1).ranks
        out["given"] = rm.retract(x, xi, max_rank=(2, 3, 2)).ranks
        return out

    f = facts(x, normal(7, dims))
    for name in ("big", "small"):
        assert f[name][0] == x.ranks and float(f[name][1]) > 1e-3
    assert float(f["small"][2]) < float(f["big"][2]) / 8  # O(t^2): t / 4 gives error / 16
    close(f["zero"][2], 0.0)
    assert f["capped"] == (1, 1, 1, 1, 1) and f["given"] == x.ranks


# ---------------------------------------------------------------- the optimizers


def completion_problem(seed=0, dims=(8, 8, 8, 8), rank=2, fraction=0.1):
    target = point(dims, rank, seed)
    a = tt.to_dense(target)
    n_obs = int(fraction * a.size)
    idx = np.random.default_rng(seed + 1).choice(a.size, n_obs, replace=False)
    mask = jnp.asarray(np.isin(np.arange(a.size), idx).reshape(dims))

    def loss(x):
        return 0.5 * jnp.sum(jnp.where(mask, tt.to_dense(x) - a, 0) ** 2)

    return target, mask, loss


def test_optimizer_steps_through_optax_follow_their_definitions():
    _, _, loss = completion_problem(dims=(4, 3, 4), rank=2, fraction=0.5)
    x = point((4, 3, 4), 2, 3)
    lr, sched, count1 = 0.3, optax.linear_schedule(0.2, 0.1, 4), jnp.ones((), jnp.int32)
    sgd, heavy = rm.riemannian_sgd(lr), rm.riemannian_sgd(sched, momentum=0.5)
    chained = optax.chain(optax.scale(2.0), rm.riemannian_sgd(lr / 2))
    adam = rm.riemannian_adam(0.05, second_moment="site")
    dense = tt.to_dense

    def step(opt, x, state, grads=None):
        grads = jax.grad(loss)(x) if grads is None else grads
        updates, state = opt.update(grads, state, x)
        return optax.apply_updates(x, updates), state

    @jax.jit
    def facts(x):
        g = rm.riemannian_grad(loss, x)
        want = rm.retract(x, rm.scale(g, -lr))
        out = {"sgd": (dense(step(sgd, x, sgd.init(x))[0]), dense(want)),
               "tangent": (dense(step(sgd, x, sgd.init(x), g)[0]), dense(want)),
               "chain": (dense(step(chained, x, chained.init(x))[0]), dense(want))}
        x1, state = step(heavy, x, heavy.init(x))
        x2, _ = step(heavy, x1, state)
        m1 = rm.add(rm.scale(rm.transport(x, g, x1), 0.5), rm.riemannian_grad(loss, x1))
        out["momentum"] = (dense(x2), dense(rm.retract(x1, rm.scale(m1, -sched(count1)))))
        rms = [jnp.sqrt(jnp.mean(d**2)) + 1e-8 for d in g.deltas]
        direction = rm.Tangent(tuple(d / s for d, s in zip(g.deltas, rms, strict=True)))
        xa, state = step(adam, x, adam.init(x))
        out["adam"] = (dense(xa), dense(rm.retract(x, rm.scale(direction, -0.05))))
        return out, (x2.ranks, xa.ranks), state

    out, ranks, adam_state = facts(x)
    for got, want in out.values():
        close(got, want, 1e-9)
    assert ranks == (x.ranks, x.ranks)
    assert adam_state.nu.shape == (3,) and int(adam_state.count) == 1


def test_optax_loop_decreases_loss_and_stays_on_the_manifold():
    _, _, loss = completion_problem(dims=(6, 6, 6), fraction=0.2)
    x0 = point((6, 6, 6), 2, 9)
    opts = (rm.riemannian_sgd(0.5, momentum=0.5), rm.riemannian_adam(0.01))

    def run(x0, opt):
        def body(carry, _):
            x, state = carry
            updates, state = opt.update(jax.grad(loss)(x), state, x)
            x = optax.apply_updates(x, updates)
            smin = jnp.min(jnp.stack([s[-1] for s in bond_singular_values(x)]))
            return (x, state), (loss(x), smin)

        (x, _), hist = jax.lax.scan(body, (x0, opt.init(x0)), None, 10)
        return x.ranks, hist

    results = jax.jit(lambda x0: [run(x0, opt) for opt in opts])(x0)
    for ranks, (losses, smin) in results:
        assert ranks == x0.ranks
        assert float(losses[-1]) < 0.9 * float(loss(x0))
        assert float(jnp.min(smin)) > 1e-6


def test_tt_completion_from_ten_percent_of_entries():
    """Riemannian gradient descent with the exact step along the gradient for the
    quadratic loss (Steinlechner 2016), from the rank-r TT-SVD of the rescaled
    zero-filled observations. 409 observed entries for a manifold of dimension 84."""
    target, mask, loss = completion_problem()
    a = tt.to_dense(target)
    assert int(mask.sum()) > 4 * rm.manifold_dim(target)

    def body(x, _):
        g = rm.riemannian_grad(loss, x)
        d = jnp.where(mask, dense_tangent(x, g), 0)
        res = jnp.where(mask, tt.to_dense(x) - a, 0)
        x = rm.retract(x, rm.scale(g, -jnp.sum(d * res) / jnp.sum(d * d)))
        ratio = jnp.min(jnp.stack([v[-1] / v[0] for v in bond_singular_values(x)]))
        return x, (jnp.linalg.norm(tt.to_dense(x) - a) / jnp.linalg.norm(a), ratio)

    @jax.jit
    def complete(observed):
        x0 = tt.from_dense(observed / 0.1, max_rank=2)
        return jax.lax.scan(body, x0, None, 300)

    x, (errs, ratio) = complete(jnp.where(mask, a, 0))
    assert x.ranks == target.ranks
    assert float(errs[-1]) < 1e-3
    assert float(jnp.min(ratio)) > 1e-6  # rank exactly r after every step


# ----------------------------------------------------------------------- bad input


def test_bad_input_raises_naming_the_argument():
    x = point((3, 4, 3), 2)
    xi = rm.Tangent(tuple(jnp.zeros_like(c) for c in x.cores))
    with pytest.raises(ValueError, match=r"x: core 0 has shape \(1, 2, 4\)"):
        rm.project(point((2, 2, 2), 4), jnp.zeros((2, 2, 2)))
    with pytest.raises(TypeError, match="x must be a TensorTrain"):
        rm.project(jnp.zeros((3, 4, 3)), jnp.zeros((3, 4, 3)))
    with pytest.raises(ValueError, match=r"g must be .* shape \(3, 4, 3\)"):
        rm.project(x, jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="g has mode sizes"):
        rm.project(x, point((3, 4, 4), 2))
    with pytest.raises(ValueError, match="xi: deltas have shapes"):
        rm.retract(x, rm.Tangent(xi.deltas[:2]))
    with pytest.raises(TypeError, match="xi must be a Tangent"):
        rm.to_tangent_tt(x, x)
    with pytest.raises(ValueError, match="max_rank must be an int or 2 internal ranks"):
        rm.retract(x, xi, max_rank=(2, 2, 2))
    with pytest.raises(ValueError, match="core_grads must have the core shapes"):
        rm.project_core_grad(x, point((3, 4, 3), 1))
    with pytest.raises(TypeError, match="real"):
        rm.riemannian_grad(lambda t: 0.0, point((3, 4, 3), 2, dtype=np.complex128))
    opt = rm.riemannian_sgd(0.1)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(x, opt.init(x))
    with pytest.raises(TypeError, match="grads must be the core gradients"):
        opt.update({"a": 1.0}, opt.init(x), x)
    with pytest.raises(ValueError, match="momentum must be a number in"):
        rm.riemannian_sgd(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="learning_rate must be"):
        rm.riemannian_adam(-1.0)
    with pytest.raises(ValueError, match="second_moment must be"):
        rm.riemannian_adam(0.1, second_moment="entrywise")
