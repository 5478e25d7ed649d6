"""tnlib.sweep_born against the dense Born machine it represents (float64): the NLL from
the whole chain and from the sweep's bond tensor equal the dense ``|psi|^2 / Z``
computation, ``||B||^2 = Z``, the gauge keeps ``psi``; a sweep lowers the training NLL
with bonds growing from 1 and capped, and leaves the chain canonical; conversions to
and from ``tnlib.models.MPSBornMachine`` keep ``log p``.

One chain shape for the whole file (5 sites, 3 tokens, bonds padded to 4, 24
sequences): every jitted function compiles once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key
from flax import nnx

from tnlib import sweep_born as sb
from tnlib.models import MPSBornMachine

L_, V_, PAD, N = 5, 3, 4, 24
RANKS = (1, 3, 4, 4, 3, 1)


def random_chain(seed, ranks=RANKS, d=V_):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((ranks[k], d, ranks[k + 1])) for k in range(len(ranks) - 1)]


def sequences(seed, n=N, n_sites=L_, d=V_):
    """Correlated tokens: each repeats the previous one with probability 0.8."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, n_sites), np.int32)
    x[:, 0] = rng.integers(d, size=n)
    for k in range(1, n_sites):
        fresh = rng.integers(d, size=n)
        x[:, k] = np.where(rng.uniform(size=n) < 0.8, x[:, k - 1], fresh)
    return jnp.asarray(x)


def dense_psi(cores):
    """``psi`` as a dense ``(d,) * L`` array."""
    w = np.ones((1, 1))
    for c in cores:
        c = np.asarray(c)
        w = np.einsum("pa,asb->psb", w, c).reshape(-1, c.shape[-1])
    return w.reshape([np.asarray(c).shape[1] for c in cores])


def dense_nll(cores, tokens):
    psi = dense_psi(cores)
    z = np.sum(np.abs(psi) ** 2)
    return -np.mean(np.log(np.abs(psi[tuple(np.asarray(tokens).T)]) ** 2 / z)), z


bond_nll = jax.jit(sb.bond_nll)


def test_nll_and_bond_tensor_match_dense():
    cores = random_chain(0)
    tokens = sequences(1)
    want, z = dense_nll(cores, tokens)
    mps = sb.from_cores(cores, max_bond=PAD, center=2)
    assert mps.cores.shape == (L_, PAD, V_, PAD) and int(mps.center) == 2
    back = [np.asarray(c) for c in sb.to_cores(mps)]
    close(dense_psi(back), dense_psi(cores))  # the gauge keeps psi
    for k, c in enumerate(back):  # left- / right-orthogonal around the centre
        if k < 2:
            m = c.reshape(-1, c.shape[2])
            close(m.T @ m, np.eye(c.shape[2]))
        elif k > 2:
            m = c.reshape(c.shape[0], -1)
            close(m @ m.T, np.eye(c.shape[0]))
    close(sb.nll(mps, tokens), want)
    envs = sb.environments(mps, tokens)
    for direction, p in (("right", 2), ("left", 1)):
        B = sb.bond_tensor(mps, direction)
        assert B.shape == (PAD, V_, V_, PAD)
        close(jnp.sum(B**2), z)
        close(bond_nll(B, envs, p), want)


def test_sweep_lowers_nll_caps_bonds_and_stays_canonical(monkeypatch):
    """Two sweeps from the uniform distribution; the update traces once per direction
    in the first (not once per site) and never in the second."""
    traces, real = [], sb._sides

    def counting(*args):  # called once per trace of the update
        traces.append(1)
        return real(*args)

    monkeypatch.setattr(sb, "_sides", counting)
    tokens = sequences(2)
    mps = sb.init(key(0), L_, V_, max_bond=PAD, dtype=F64)
    assert np.asarray(mps.ranks).tolist() == [1] * (L_ + 1)
    close(sb.nll(mps, tokens), L_ * np.log(V_))  # the uniform distribution
    envs = sb.environments(mps, tokens)
    history = [float(sb.nll(mps, tokens))]
    counts = []
    for _ in range(2):
        start = len(traces)
        mps, envs, info = sb.sweep(mps, envs, lr=0.05, steps=3, cutoff=1e-9, max_rank=3)
        counts.append(len(traces) - start)
        # the bond tensor's NLL is the whole chain's; every update's steps lower it
        close(info["nll_before"][0], history[-1])
        assert np.all(info["nll_after"] < info["nll_before"])
        history.append(float(sb.nll(mps, tokens)))
        ranks = np.asarray(mps.ranks)
        assert ranks[0] == ranks[-1] == 1 and 1 < ranks.max() <= 3
        assert info["rank"].shape == (2 * (L_ - 1),) and int(mps.center) == 0
        # the chain is canonical again, its centre normalized: Z = ||B||^2 = 1
        B = sb.bond_tensor(mps, "right")
        close(jnp.sum(B**2), 1.0)
        close(bond_nll(B, envs, 0), history[-1])
    assert history[2] < history[1] < history[0]
    assert counts == [2, 0]
    want, _ = dense_nll([np.asarray(c) for c in sb.to_cores(mps)], tokens)
    close(history[-1], want)


def born_machine(cores, embedding):
    """An ``MPSBornMachine`` with the given stacked cores ``(L, r, d, r)`` and embedding
    ``(V, d)`` (built abstractly: no random initialization to compute)."""
    L, r, d, _ = cores.shape
    model = nnx.eval_shape(lambda: MPSBornMachine(L, embedding.shape[0], bond_dim=r,
                                                  embedding_dim=d, param_dtype=cores.dtype,
                                                  rngs=nnx.Rngs(0)))
    model.cores = nnx.Param(cores)
    model.embedding = nnx.Param(embedding)
    return model


def to_born_machine(mps):
    """An ``MPSBornMachine`` with the same ``p(x)``: the padded cores are its stacked
    cores, the embedding the identity (one-hot tokens)."""
    return born_machine(mps.cores, jnp.eye(mps.local_dim, dtype=mps.cores.dtype))


def from_born_machine(model, max_bond):
    """The embedding folded into the cores (``A'[v] = sum_j emb[v, j] A[j]``), boundary
    rows / columns ``e_0`` cut, then gauged by :func:`tnlib.sweep_born.from_cores`."""
    cores = jnp.einsum("vj,kajb->kavb", model.embedding[...], model.cores[...])
    cores = list(np.asarray(cores))
    cores[0], cores[-1] = cores[0][:1], cores[-1][..., :1]
    return sb.from_cores(cores, max_bond=max_bond)


@nnx.jit
def log_prob(model, x):
    return model.log_prob(x)


def test_conversions_to_and_from_born_machine_keep_log_prob():
    tokens = sequences(3)
    mps = sb.from_cores(random_chain(4), max_bond=PAD, center=1)
    close(-jnp.mean(log_prob(to_born_machine(mps), tokens)), sb.nll(mps, tokens))

    # a trained (non-identity) embedding folds into the cores
    rng = np.random.default_rng(5)
    model = born_machine(jnp.asarray(rng.standard_normal((L_, PAD, V_, PAD))),
                         jnp.asarray(rng.standard_normal((V_, V_))))
    back = from_born_machine(model, PAD)
    close(sb.nll(back, tokens), -jnp.mean(log_prob(model, tokens)))


def test_errors_name_the_argument():
    cores = random_chain(5)
    with pytest.raises(ValueError, match="max_bond"):
        sb.from_cores(cores, max_bond=3)
    with pytest.raises(ValueError, match="bond between sites 1 and 2"):
        sb.from_cores(cores[:2] + [np.ones((3, V_, 3))] + cores[3:], max_bond=PAD)
    with pytest.raises(ValueError, match="center"):
        sb.from_cores(cores, max_bond=PAD, center=L_)
    with pytest.raises(ValueError, match="init_bond"):
        sb.init(key(0), L_, V_, max_bond=2, init_bond=3)
    mps = sb.init(key(0), L_, V_, max_bond=PAD, dtype=F64)
    with pytest.raises(ValueError, match="tokens must have shape"):
        sb.nll(mps, jnp.zeros((2, L_ + 1), jnp.int32))
    with pytest.raises(ValueError, match="integer tokens"):
        sb.environments(mps, jnp.zeros((2, L_)))
    with pytest.raises(ValueError, match="direction"):
        sb.update(mps, None, direction="up")
    with pytest.raises(ValueError, match="direction"):
        sb.bond_tensor(mps, "down")
