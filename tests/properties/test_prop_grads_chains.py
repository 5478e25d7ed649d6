"""Gradients through SVD, QR and rounding at degenerate spectra (repeated and exactly
zero singular values), and 1000-site MPS contractions in float32 and bfloat16.

Gradients: ``check_grads`` where the quantity is differentiable and its derivative is
reachable through the factors (norms, projections ``U U^H x`` that keep whole
degenerate clusters, rounding of redundant bonds); finite everywhere else (the zero
tensor, reconstructions through ``u * s`` at exactly repeated / zero values, whose
exact derivative needs the 0/0 limits ``s / s`` that a broadened rule cannot see).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads
from props import BF16, F32, F64, covers, finite, key

from tnlib import btt, linalg, tree, tt, tucker

KW = dict(order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-6)


def low_rank(dims, rank, seed=0):
    """A float64 tensor of exact TT rank ``rank`` (zero singular values beyond it)."""
    return tt.to_dense(tt.random(key(seed), dims, rank, F64))


@covers("tt.from_dense", "tt.round", "tt.orthogonalize", "tt.norm", "tt.log_norm",
        "tucker.hosvd", "tucker.norm")
def test_gradients_correct_at_exact_low_rank():
    x = low_rank((2, 3, 2), 1)  # unfoldings of rank 1: zero singular values kept
    jit = jax.jit  # compiled once: finite differences call each function many times
    check_grads(jit(lambda x: tt.norm(tt.from_dense(x, max_rank=3))), (x,), **KW)
    check_grads(jit(lambda x: tt.log_norm(tt.round(tt.from_dense(x), max_rank=2))), (x,), **KW)
    check_grads(jit(lambda x: tucker.to_dense(tucker.hosvd(x))), (x,), **KW)
    # redundant bonds (rank 4 > the bound 2): rounding to the bound is exact and smooth
    t = tt.random(key(1), (2, 2, 2), 4, F64)
    check_grads(jit(lambda c: tt.to_dense(tt.round(tt.TensorTrain(c), max_rank=2))), (t.cores,),
                **KW)


@covers("linalg.svd", "linalg.qr", "linalg.tail_norms", "tree.from_dense", "tree.round",
        "btt.LowRank", "btt.BlockTT", "btt.Kronecker", "tt.norm", "tt.log_norm")
def test_gradients_finite_at_repeated_and_zero_values():
    eye = jnp.eye(4, dtype=F64)  # four equal singular values
    rank_def = jnp.outer(jnp.arange(1.0, 5.0), jnp.ones(4))  # rank 1
    x = low_rank((2, 3, 2), 1, seed=2)
    z = jnp.zeros((4, 4), F64)
    fs = [lambda a: jnp.sum(jnp.sin((lambda u, s, vh: (u * s) @ vh)(*linalg.svd(a)))),
          lambda a: jnp.sum(jnp.sin((lambda q, r: q @ r)(*linalg.qr(a)))),
          lambda a: jnp.sum(linalg.tail_norms(linalg.svd(a)[1])),
          lambda a: jnp.sum(jnp.sin(btt.to_dense(btt.from_dense(a, max_rank=3, kind="lowrank")))),
          lambda a: jnp.sum(btt.to_dense(btt.from_dense(a, kind="kronecker",
                                                        dims=((2, 2), (2, 2))))),
          lambda a: jnp.sum(btt.to_dense(btt.from_dense(a, max_rank=2, dims=((2, 2), (2, 2))))),
          lambda a: jnp.sum(jnp.sin(tree.to_dense(tree.round(tree.from_dense(a), max_rank=3)))),
          lambda a: tt.norm(tt.from_dense(a)) + tt.log_norm(tt.from_dense(a + 1))]
    inputs = jnp.stack([eye, rank_def, z, jnp.kron(jnp.eye(2, dtype=F64), x[:, :2, 0])])
    for f in fs:  # one compilation per function, the four inputs as a batch
        finite(jax.jit(jax.vmap(jax.grad(f)))(inputs), "gradient")
    # the zero tensor: log-norm -inf (not NaN) with a zero gradient
    assert tt.log_norm(tt.from_dense(z)) == -jnp.inf
    finite(jax.grad(lambda a: tt.log_norm(tt.from_dense(a)))(z))


@covers("tt.log_norm", "tt.contract_features", "tt.sweep_features", "tt.stack")
def test_thousand_site_chain_float32_and_bfloat16():
    """1000 sites, bond 3: the norm is about 1.3**1000 (beyond float32's range); the
    log-norm and a feature contraction match float64 (numpy) on the same rounded cores
    to relative 1e-3. One jit per dtype."""
    L, r, n = 1000, 3, 2
    rng = np.random.default_rng(0)  # numpy draws and casts: no eager jax op to compile
    body = 1.3 * rng.standard_normal((L - 2, r, n, r)) / np.sqrt(n * r)
    first = rng.standard_normal((1, n, r))
    last = rng.standard_normal((r, n, 1))
    feats = np.abs(rng.standard_normal((L, n))) + 0.5

    @jax.jit
    def run(t, feats):
        mant, logs = tt.contract_features(t, feats)
        return tt.log_norm(t), jnp.log(jnp.abs(mant)) + logs

    for dt in (F32, BF16):
        args = [a.astype(dt) for a in (body, first, last, feats)]  # rounded on the host
        # the cores as L separate device arrays, the features as the sequence of L
        # vectors contract_features accepts (an (L, n) array would be cut into L slices
        # inside the jit and restacked, which XLA:CPU compiles ~10x slower in bfloat16)
        t = tt.TensorTrain(tuple(jnp.asarray(c) for c in (args[1], *args[0], args[2])))
        out = run(t, [jnp.asarray(f) for f in args[3]])
        finite(out, f"{jnp.dtype(dt).name} 1000-site contraction")
        ref = np_reference(*[a.astype(F64) for a in args])  # same rounded cores
        for got, want in zip(out, ref, strict=True):
            assert abs(float(got) - want) <= 1e-3 * abs(want), (dt, got, want)
        assert ref[0] > 100  # the norm itself overflows float32 (log > 88.7)


def np_reference(body, first, last, feats):
    """log-norm and log|features contraction| in numpy float64 with running rescaling."""
    cores = [first, *body, last]
    env, acc = np.ones((1, 1)), 0.0
    vec, acc_f = np.ones(1), 0.0
    for c, f in zip(cores, feats, strict=True):
        env = np.einsum("ab,anc,bnd->cd", env, c, c)
        s = np.abs(env).max()
        env, acc = env / s, acc + np.log(s)
        vec = vec @ np.einsum("n,anb->ab", f, c)
        s = np.linalg.norm(vec)
        vec, acc_f = vec / s, acc_f + np.log(s)
    return 0.5 * (acc + np.log(env[0, 0])), np.log(abs(vec[0])) + acc_f
