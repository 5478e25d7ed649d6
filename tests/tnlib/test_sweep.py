"""tnlib.sweep against the dense classifier it represents (float64): outputs and
bond-tensor outputs, padded vs unpadded chains, a sweep lowering the training loss with
bonds growing from 1 and capped, and a sweep compiling a number of times that does not
depend on the chain length."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key

from tnlib import sweep as sw

D_, C_ = 2, 3  # local dimension, classes of the small chains


def random_chain(seed, ranks, center, d=D_, n_classes=C_):
    """Unpadded random cores with the given bonds and a label core at ``center``."""
    ks = jax.random.split(key(seed), len(ranks))
    cores = [jax.random.normal(ks[k], (ranks[k], d, ranks[k + 1]), F64)
             for k in range(len(ranks) - 1)]
    label = jax.random.normal(ks[-1], (ranks[center], d, n_classes, ranks[center + 1]), F64)
    return cores, label


def features(seed, n, n_sites, d=D_):
    x = jax.random.uniform(key(seed), (n, n_sites), F64)
    c, s = jnp.cos(0.5 * jnp.pi * x), jnp.sin(0.5 * jnp.pi * x)
    return jnp.stack([c, s] if d == 2 else [c * c, np.sqrt(2) * c * s, s * s], -1)


def dense_amplitudes(cores, label, center, feats):
    """``(N, C)`` amplitudes of the chain contracted as one dense tensor."""
    w = np.ones((1, 1))  # (prefix, bond)
    for k in range(len(cores)):
        core = np.asarray(label if k == center else cores[k])
        core = core.reshape(core.shape[0], -1, core.shape[-1])
        w = np.einsum("pa,asb->psb", w, core).reshape(-1, core.shape[-1])
    L, d, C = len(cores), feats.shape[-1], label.shape[2]
    w = w.reshape([d] * center + [d, C] + [d] * (L - center - 1))
    f = np.asarray(feats)
    letters = "abcdefghijklmnopqrstuvw"[:L]
    spec_w = letters[:center + 1] + "z" + letters[center + 1:]
    spec_f = ",".join("n" + ch for ch in letters)
    return np.einsum(f"{spec_w},{spec_f}->nz", w, *[f[:, k] for k in range(L)])


# One chain shape for the whole file (5 sites, bonds up to 3, padded to 6, 16 samples):
# every jitted function compiles once for it.
RANKS = (1, 2, 3, 3, 2, 1)
PAD, N = 6, 16


@pytest.mark.parametrize("center", [0, 2])
def test_outputs_and_bond_tensor_match_dense(center):
    cores, label = random_chain(0, RANKS, center)
    mps = sw.from_cores(cores, label, center, max_bond=PAD)
    feats = features(1, N, 5)
    want = dense_amplitudes(cores, label, center, feats)
    out, scale = sw.logits(mps, feats)
    close(out * np.exp(scale)[:, None], want)
    envs = sw.environments(mps, feats, jnp.zeros(N, jnp.int32))
    for direction in ("right", "left") if center else ("right",):
        p = center if direction == "right" else center - 1
        B = sw.bond_tensor(mps, direction)
        assert B.shape == (PAD, 2, 2, C_, PAD)
        got = sw.bond_logits(B, envs.left[p], envs.features[p], envs.features[p + 1],
                             envs.right[p + 2])
        close(got * np.exp(envs.left_scale[p] + envs.right_scale[p + 2])[:, None], want)


def test_to_cores_round_trip_and_errors():
    cores, label = random_chain(2, RANKS, 1)
    mps = sw.from_cores(cores, label, 1, max_bond=PAD)
    assert mps.cores.shape == (5, PAD, 2, PAD) and mps.label.shape == (PAD, 2, C_, PAD)
    assert np.asarray(mps.ranks).tolist() == list(RANKS)
    back, lab, c = sw.to_cores(mps)
    assert c == 1 and back[1] is None
    close(lab, label)
    for k in (0, 2, 3, 4):
        close(back[k], cores[k])
    with pytest.raises(ValueError, match="max_bond"):
        sw.from_cores(cores, label, 1, max_bond=2)
    with pytest.raises(ValueError, match="bond between sites 3 and 4"):
        sw.from_cores(cores[:4] + [jnp.ones((3, 2, 1))], label, 1, max_bond=PAD)
    with pytest.raises(ValueError, match="center"):
        sw.from_cores(cores, label, 5, max_bond=PAD)
    with pytest.raises(ValueError, match="init_bond"):
        sw.init(key(0), 4, 2, max_bond=2, init_bond=3)
    with pytest.raises(ValueError, match="features must have shape"):
        sw.logits(mps, jnp.ones((3, 4, 2)))
    with pytest.raises(ValueError, match="direction"):
        sw.update(mps, None, direction="up")


def test_padded_chain_equals_unpadded():
    """A sweep with bonds padded to 6 and capped at 3 matches the same chain of shape 3."""
    cores, label = random_chain(3, RANKS, 0)
    feats = features(4, N, 5)
    y = jnp.arange(N) % C_
    results = []
    for pad in (3, PAD):
        mps = sw.from_cores(cores, label, 0, max_bond=pad)
        envs = sw.environments(mps, feats, y)
        mps, _, info = sw.sweep(mps, envs, lr=0.3, cutoff=1e-9, max_rank=3, steps=2)
        results.append((mps, info))
        assert int(mps.center) == 0
    (small, info_s), (big, info_b) = results
    assert np.asarray(small.ranks).tolist() == np.asarray(big.ranks).tolist()
    close(info_s["loss_after"], info_b["loss_after"], 1e-9)
    close(sw.logits(big, feats)[0], sw.logits(small, feats)[0], 1e-8)
    r = np.asarray(big.ranks)
    for k in range(5):  # padding stays exactly zero
        assert not np.any(np.asarray(big.cores[k, r[k]:])) and not np.any(
            np.asarray(big.cores[k, :, :, r[k + 1]:]))


def test_sweep_trains_grows_bonds_and_compiles_per_direction_only(monkeypatch):
    """A sweep from a product state lowers the training loss, bonds grow from 1 and
    never pass max_bond, and the update traces as often for 6 sites as for 12."""
    traces = []
    real = sw._local_logits

    def counting(*args):
        traces.append(1)
        return real(*args)

    monkeypatch.setattr(sw, "_local_logits", counting)
    counts = []
    for n_sites in (6, 12):
        n = 24
        x = jax.random.uniform(key(n_sites), (n, n_sites), F64)
        y = (x[:, 0] + x[:, -1] > x[:, 1] + x[:, -2]).astype(jnp.int32)  # uses both ends
        c, s = jnp.cos(0.5 * jnp.pi * x), jnp.sin(0.5 * jnp.pi * x)
        feats = jnp.stack([c * c, np.sqrt(2) * c * s, s * s], -1)  # local_dim 3: own shapes
        mps = sw.init(key(1), n_sites, 2, max_bond=3, local_dim=3, dtype=F64)
        assert np.asarray(mps.ranks).tolist() == [1] * (n_sites + 1)
        envs = sw.environments(mps, feats, y)

        start = len(traces)
        before = sw.logits(mps, feats)[0] if n_sites == 6 else None
        mps, envs, info = sw.sweep(mps, envs, lr=1.0, steps=3, cutoff=1e-6)
        counts.append(len(traces) - start)
        # every update's gradient steps lower its local loss, and the sweep the global one
        assert np.all(np.asarray(info["loss_after"]) < np.asarray(info["loss_before"]))
        if before is not None:
            after = sw.logits(mps, feats)[0]
            ce = [float(jnp.mean(jax.nn.logsumexp(o, -1) - o[jnp.arange(n), y]))
                  for o in (before, after)]
            assert ce[1] < ce[0]
        ranks = np.asarray(mps.ranks)
        assert ranks[0] == ranks[-1] == 1 and ranks.max() <= 3 and ranks.max() > 1
        assert info["rank"].shape == (2 * (n_sites - 1),) and int(mps.center) == 0
    assert counts[0] == counts[1] > 0
