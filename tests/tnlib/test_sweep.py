"""tnlib.sweep against the dense classifier it represents (float64): outputs and
bond-tensor outputs, padded vs unpadded chains, a sweep lowering the training loss with
bonds growing from 1 and capped, and a sweep compiling a number of times that does not
depend on the chain length.

Every jitted function compiles for few shapes: one chain shape (5 sites padded to 6,
16 samples) is shared by all tests; the padded-vs-unpadded test adds the same chain
padded to 3, the trace count a chain of 8 sites."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key

from tnlib import sweep as sw

D_, C_ = 2, 3  # local dimension, classes of the small chains


def random_chain(seed, ranks, center, d=D_, n_classes=C_):
    """Unpadded random cores with the given bonds and a label core at ``center``
    (NumPy's generator: no compilation per core shape)."""
    rng = np.random.default_rng(seed)
    cores = [jnp.asarray(rng.standard_normal((ranks[k], d, ranks[k + 1])))
             for k in range(len(ranks) - 1)]
    label = jnp.asarray(rng.standard_normal((ranks[center], d, n_classes, ranks[center + 1])))
    return cores, label


def uniform(seed, n, n_sites):
    return np.random.default_rng(seed).uniform(size=(n, n_sites))


def features(seed, n, n_sites):
    """``(n, n_sites, 2)`` cos / sin features of uniform pixels (float64)."""
    x = 0.5 * np.pi * uniform(seed, n, n_sites)
    return jnp.asarray(np.stack([np.cos(x), np.sin(x)], -1))


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


# The shared chain shape: 5 sites, bonds up to 3, padded to 6, N samples; a sweep takes
# STEPS gradient steps per update (static: the same compilation everywhere).
RANKS = (1, 2, 3, 3, 2, 1)
PAD, N, STEPS = 6, 16, 3


def labels(x):
    """Three classes that depend on both ends of the chain (so bonds must grow)."""
    z = np.asarray(x[:, 0] + x[:, -1] - x[:, 1] - x[:, -2])
    return jnp.asarray(np.digitize(z, np.quantile(z, [1 / 3, 2 / 3])), jnp.int32)


@pytest.fixture(scope="module")
def swept():
    """Sweeps from a product state on chains of 5 (the shared shape) and 8 sites,
    counting the traces of the update. Module-scoped and requested by every test that
    sweeps the shared shape, so it is the first to compile it."""
    traces, out = [], {}
    real = sw._local_logits

    def counting(*args):
        traces.append(1)
        return real(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sw, "_local_logits", counting)
        for n_sites in (5, 8):
            x = uniform(n_sites, N, n_sites)
            feats = features(n_sites, N, n_sites)
            y = labels(x)
            mps0 = sw.init(key(1), n_sites, C_, max_bond=PAD, dtype=F64)
            envs = sw.environments(mps0, feats, y)
            start = len(traces)
            mps, _, info = sw.sweep(mps0, envs, lr=1.0, steps=STEPS, cutoff=1e-6, max_rank=3)
            out[n_sites] = SimpleNamespace(before=mps0, after=mps, info=info, feats=feats, y=y,
                                           traces=len(traces) - start)
    return out


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
        e = jax.device_get(envs)  # indexed on the host
        got = sw.bond_logits(B, e.left[p], e.features[p], e.features[p + 1], e.right[p + 2])
        close(got * np.exp(e.left_scale[p] + e.right_scale[p + 2])[:, None], want)


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
    with pytest.raises(ValueError, match="steps"):
        sw.update(mps, None, direction="left", steps=-1)


def test_padded_chain_equals_unpadded(swept):
    """A sweep with bonds padded to 6 and capped at 3 matches the same chain of shape 3."""
    cores, label = random_chain(3, RANKS, 0)
    feats = features(4, N, 5)
    y = jnp.arange(N, dtype=jnp.int32) % C_
    results = []
    for pad in (3, PAD):
        mps = sw.from_cores(cores, label, 0, max_bond=pad)
        envs = sw.environments(mps, feats, y)
        mps, _, info = sw.sweep(mps, envs, lr=0.3, cutoff=1e-9, max_rank=3, steps=STEPS)
        results.append((mps, info))
        assert int(mps.center) == 0
    (small, info_s), (big, info_b) = results
    assert np.asarray(small.ranks).tolist() == np.asarray(big.ranks).tolist()
    close(info_s["loss_after"], info_b["loss_after"], 1e-9)
    close(sw.logits(big, feats)[0], sw.logits(small, feats)[0], 1e-8)
    r, cores = np.asarray(big.ranks), np.asarray(big.cores)
    for k in range(5):  # padding stays exactly zero
        assert not np.any(cores[k, r[k]:]) and not np.any(cores[k, :, :, r[k + 1]:])


def test_sweep_trains_grows_bonds_and_compiles_per_direction_only(swept):
    """A sweep from a product state lowers the training loss, bonds grow from 1 and
    never pass the cap, and the update traces as often for 5 sites as for 8."""
    for n_sites, run in swept.items():
        assert np.asarray(run.before.ranks).tolist() == [1] * (n_sites + 1)
        info = run.info
        # every update's gradient steps lower its local loss, and the sweep the global one
        assert np.all(info["loss_after"] < info["loss_before"])
        ranks = np.asarray(run.after.ranks)
        assert ranks[0] == ranks[-1] == 1 and ranks.max() <= 3 and ranks.max() > 1
        assert info["rank"].shape == (2 * (n_sites - 1),) and int(run.after.center) == 0
        assert info["site"].tolist() == list(range(n_sites - 1)) + list(range(n_sites - 2,
                                                                               -1, -1))
    run = swept[5]  # the shared shape: the outputs compile once for the whole file
    ce = []
    for mps in (run.before, run.after):
        out = np.asarray(sw.logits(mps, run.feats)[0])
        ce.append(np.mean(np.log(np.exp(out).sum(-1)) - out[np.arange(N), run.y]))
    assert ce[1] < ce[0]
    assert swept[5].traces == swept[8].traces > 0
