"""tnlib.optim.galore against a hand transcription of the official GaLore-Adam step
(projector refreshes, kept moments, scale), its optimizer-state size, the Tucker
projector, and training under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from dense_checks import close

from tnlib import optim


def grads_sequence(steps, seed=0):
    g = np.random.default_rng(seed)
    return [{"w": g.standard_normal((6, 4)), "w2": g.standard_normal((3, 8)),
             "b": g.standard_normal(5)} for _ in range(steps)]


def reference(grads, rank, gap, scale, lr, b1=0.9, b2=0.999, eps=1e-6):
    """GaLore's AdamW (weight decay 0) written out: project, Adam moments in the
    projected space (kept across refreshes), project back, scale. The projector comes
    from the same LAPACK SVD (jnp.linalg.svd) so singular-vector signs agree."""
    m, v, proj, out = {}, {}, {}, []
    for t, g in enumerate(grads, start=1):
        upd = {}
        for name, x in g.items():
            if x.ndim == 2 and min(x.shape) > rank:
                if (t - 1) % gap == 0:
                    u, _, vh = (np.asarray(a) for a in jnp.linalg.svd(x, full_matrices=False))
                    proj[name] = vh[:rank] if x.shape[0] >= x.shape[1] else u[:, :rank]
                p = proj[name]
                low = x @ p.T if x.shape[0] >= x.shape[1] else p.T @ x
            else:
                low = x
            m[name] = b1 * m.get(name, 0) + (1 - b1) * low
            v[name] = b2 * v.get(name, 0) + (1 - b2) * low ** 2
            step = -lr * (m[name] / (1 - b1 ** t)) / (np.sqrt(v[name] / (1 - b2 ** t)) + eps)
            if low is not x:
                p = proj[name]
                step = scale * (step @ p if x.shape[0] >= x.shape[1] else p @ step)
            upd[name] = step
        out.append(upd)
    return out


def test_matches_the_hand_written_galore_adam_across_refreshes():
    grads = grads_sequence(5)
    tx = optim.galore(optax.adam(0.1, eps=1e-6), 2, update_proj_gap=2, scale=0.25)
    params = jax.tree.map(jnp.zeros_like, grads[0])
    state = tx.init(params)
    assert state.proj["b"] is None and state.proj["w"].shape == (2, 4)
    assert state.proj["w2"].shape == (3, 2)
    update = jax.jit(tx.update)
    want = reference(grads, 2, 2, 0.25, 0.1)
    for g, w in zip(grads, want, strict=True):
        u, state = update(jax.tree.map(jnp.asarray, g), state, params)
        for name in g:
            close(u[name], w[name], 1e-9)


def test_state_holds_rank_sized_moments():
    m, n, r = 64, 48, 4
    params = {"w": jnp.zeros((m, n)), "wt": jnp.zeros((n, m)), "b": jnp.zeros(m)}
    size = lambda s: sum(x.size for x in jax.tree.leaves(s))
    adam = size(optax.adam(1e-3).init(params))
    gal = size(optim.galore(optax.adam(1e-3), r).init(params))
    # per matrix: two moments of max(m, n) x r plus the r x min(m, n) projector
    assert gal == 2 + 2 * (2 * m * r + r * n) + 2 * m, gal  # + two step counts, b's moments
    assert adam == 1 + 2 * (2 * m * n) + 2 * m
    assert gal < adam / 5


def test_sgd_update_is_the_projected_gradient_matrix_and_tucker():
    g = np.random.default_rng(3)
    x = {"w": g.standard_normal((10, 7)), "t": g.standard_normal((5, 6, 4))}
    tx = optim.galore(optax.sgd(1.0), 2, scale=0.5, tucker=True)
    state = tx.init(jax.tree.map(jnp.asarray, x))
    assert optim.projected_shape((5, 6, 4), 2, tucker=True) == (2, 2, 2)
    u, state = jax.jit(tx.update)(jax.tree.map(jnp.asarray, x), state)
    vh = np.linalg.svd(x["w"], full_matrices=False)[2][:2]
    close(u["w"], -0.5 * x["w"] @ vh.T @ vh, 1e-10)
    want = x["t"]
    for k in range(3):  # project every mode onto the top-2 left singular vectors
        unf = np.moveaxis(x["t"], k, 0).reshape(x["t"].shape[k], -1)
        p = np.linalg.svd(unf, full_matrices=False)[0][:, :2]
        want = np.moveaxis(np.tensordot(p @ p.T, want, axes=(1, k)), 0, k)
    close(u["t"], -0.5 * want, 1e-10)


def test_trains_a_small_mlp_under_jit_and_rejects_bad_arguments():
    g = np.random.default_rng(0)
    x = jnp.asarray(g.standard_normal((256, 32)))
    y = jnp.tanh(x @ jnp.asarray(g.standard_normal((32, 16))) / 6)
    params = {"w1": jnp.asarray(g.standard_normal((32, 64)) / 6), "b1": jnp.zeros(64),
              "w2": jnp.asarray(g.standard_normal((64, 16)) / 8), "b2": jnp.zeros(16)}
    loss = lambda p: jnp.mean((jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"] - y) ** 2)
    tx = optim.galore(optax.adam(3e-3), 8, update_proj_gap=20, scale=1.0)

    @jax.jit
    def train(p):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(body, (p, tx.init(p)), None, length=300)[0][0]

    assert float(loss(train(params))) < 0.3 * float(loss(params))
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        optim.galore(optax.adam(1e-3), 0)
    with pytest.raises(ValueError, match="update_proj_gap must be an int >= 1"):
        optim.galore(optax.adam(1e-3), 4, update_proj_gap=0)
