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


# ----------------------------------------------------------- the published algorithm


def bond_problem(seed, r_l=2, r_r=3, pad=4, n=120):
    """Environments ``(n, pad)`` valid on their first ``r_l`` / ``r_r`` entries, features,
    labels and the mask of a bond tensor ``(pad, 2, 2, C_, pad)`` (float64)."""
    rng = np.random.default_rng(seed)
    left = np.zeros((n, pad))
    left[:, :r_l] = rng.standard_normal((n, r_l))
    right = np.zeros((n, pad))
    right[:, :r_r] = rng.standard_normal((n, r_r))
    f1, f2 = rng.standard_normal((n, D_)), rng.standard_normal((n, D_))
    y = rng.integers(0, C_, n)
    idx = np.arange(pad)
    mask = ((idx < r_l)[:, None, None, None, None] * (idx < r_r)).astype(float)
    mask = np.broadcast_to(mask, (pad, D_, D_, C_, pad))
    b0 = rng.standard_normal(mask.shape) * mask
    return left, f1, f2, right, y, mask, b0


def dense_least_squares(left, f1, f2, right, y, mask, l2):
    """The minimizer of ``sum_n ||f_n(B) - y_n||^2 + l2 ||B||^2`` over the masked entries,
    by a dense solve of the normal equations (NumPy, float64)."""
    x = np.einsum("na,ns,nt,nb->nastb", left, f1, f2, right).reshape(len(y), -1)
    keep = mask[:, :, :, 0, :].reshape(-1) > 0
    xv = x[:, keep]
    w = np.linalg.solve(xv.T @ xv + l2 * np.eye(xv.shape[1]), xv.T @ np.eye(C_)[y])
    full = np.zeros((keep.size, C_))
    full[keep] = w
    pad = mask.shape[0]
    return full.reshape(pad, D_, D_, pad, C_).transpose(0, 1, 2, 4, 3)


@pytest.mark.parametrize("l2", [0.0, 0.7])
def test_cg_reaches_the_dense_least_squares_minimum(l2):
    """solve_cg (jitted, from a random start) on a bond problem of 2*2*2*3 = 24 unknowns
    per class reaches the normal equations' solution; entries outside the mask stay 0."""
    left, f1, f2, right, y, mask, b0 = bond_problem(0)
    lf, rf = sw._mps_sweep.sides(*map(jnp.asarray, (left, f1, f2, right)))
    solve = jax.jit(sw.solve_cg, static_argnums=4)
    b, res, tracked = solve(jnp.asarray(b0), lf, rf, jnp.asarray(y), 40, l2, jnp.asarray(mask))
    want = dense_least_squares(left, f1, f2, right, y, mask, l2)
    close(b, want, 1e-10)
    assert float(res) < 1e-8 and not np.any(np.asarray(b)[mask == 0])
    few, _, tracked_few = solve(jnp.asarray(b0), lf, rf, jnp.asarray(y), 3, l2,
                                jnp.asarray(mask))
    cost = lambda t: np.sum((np.asarray(sw.bond_logits(  # noqa: E731
        t, *map(jnp.asarray, (left, f1, f2, right)))) - np.eye(C_)[y]) ** 2) + l2 * np.sum(
        np.asarray(t) ** 2)
    assert cost(want) <= cost(few) < cost(b0)  # three passes: between start and minimum
    close(tracked, cost(want), 1e-9)  # the cost it tracks without another pass
    close(tracked_few, cost(few), 1e-9)


def kept_by_rule(s, cutoff, max_rank, min_rank):
    """The discarded-weight rule written out: the fewest values whose dropped squared
    weight is <= cutoff, within [min_rank, max_rank] and not past the non-zero ones."""
    w = s**2 / np.sum(s**2)
    k = next(k for k in range(len(s) + 1) if np.sum(w[k:]) <= cutoff)
    k = min(max(k, min_rank), max_rank)
    return max(1, min(k, int(np.sum(s > 0))))


def test_kept_count_is_the_discarded_weight_rule():
    rng = np.random.default_rng(5)
    count = jax.jit(sw.kept_count)
    for trial in range(20):
        s = np.sort(rng.exponential(size=8) ** 3)[::-1]
        s[8 - trial % 3:] = 0  # some exact zeros
        for cutoff in (0.0, 1e-6, 1e-3, 0.05, 0.3):
            for lo, hi in ((1, 8), (1, 3), (5, 8), (2, 2)):
                want = kept_by_rule(s, cutoff, hi, lo)
                got = int(count(jnp.asarray(s), jnp.sum(jnp.asarray(s) ** 2), cutoff, hi, lo))
                assert got == want, (s, cutoff, lo, hi)
    # split_bond keeps exactly those values (at most D = 3) and reports their dropped weight
    B = jnp.asarray(rng.standard_normal((3, 2, 2, C_, 3)) * np.geomspace(1, 1e-3, 3))
    s = np.linalg.svd(np.asarray(B).reshape(6, -1), compute_uv=False)
    for cutoff in (1e-9, 1e-3, 0.05, 0.2, 0.6):
        _, _, k, discarded = sw.split_bond(B, "right", 3, cutoff)
        assert int(k) == kept_by_rule(s, cutoff, 3, 1)
        close(discarded, np.sum(s[int(k):] ** 2) / np.sum(s**2), 1e-12)


def test_growing_bonds_match_a_fixed_padding():
    """sweep(grow_to=6) from a bond-1 chain pads in powers of two (1, 2, 4, 6) and keeps
    the bonds, losses and outputs of the same sweep run at padding 6 from the start."""
    n_sites = 5
    x = uniform(n_sites, N, n_sites)
    feats, y = features(n_sites, N, n_sites), labels(x)
    runs = {}
    for start in (1, PAD):
        mps = sw.init(key(1), n_sites, C_, max_bond=start, dtype=F64)
        envs = sw.environments(mps, feats, y)
        kw = dict(passes=STEPS, cutoff=1e-12, min_rank=2)
        mps, _, info = (sw.sweep(mps, envs, grow_to=PAD, **kw) if start == 1 else
                        sw.sweep(mps, envs, max_rank=PAD, **kw))
        runs[start] = (mps, info)
    (grown, info_g), (fixed, info_f) = runs[1], runs[PAD]
    assert grown.max_bond <= PAD and fixed.max_bond == PAD
    assert np.asarray(grown.ranks).tolist() == np.asarray(fixed.ranks).tolist()
    close(info_g["loss_after"], info_f["loss_after"], 1e-9)
    close(sw.logits(grown, feats)[0], sw.logits(fixed, feats)[0], 1e-8)
    assert [sw.bucket(n, 6) for n in (1, 2, 3, 4, 5, 7)] == [1, 2, 4, 4, 6, 6]


def test_cg_sweeps_lower_the_training_loss_on_a_tiny_problem():
    """Three CG sweeps without truncation: every local solve lowers its own loss and
    each sweep lowers the training loss. (Not every update lowers the *global* loss:
    the outputs are computed with per-sample unit environments, which change with
    the bond, as in TNML.)"""
    n_sites = 5
    x = uniform(7, N, n_sites)
    feats, y = features(7, N, n_sites), labels(x)
    mps = sw.init_from_data(key(2), feats, y, C_, init_bond=2, per_class=4, center=2,
                            dtype=F64)
    envs = sw.environments(mps, feats, y)

    def loss(m):
        out = np.asarray(sw.logits(m, feats)[0])
        return 0.5 * np.mean(np.sum((out - np.eye(C_)[np.asarray(y)]) ** 2, -1))

    losses = [loss(mps)]
    for _ in range(3):
        mps, envs, info = sw.sweep(mps, envs, passes=8, cutoff=0.0, grow_to=PAD)
        assert np.all(info["loss_after"] <= info["loss_before"] + 1e-12)
        # right to the end, left to the start, right back to the label's site
        assert info["site"].tolist() == [2, 3, 3, 2, 1, 0, 0, 1] and int(mps.center) == 2
        losses.append(loss(mps))
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses


def test_data_driven_start_and_solver_errors():
    """init_from_data gives a right-orthogonal chain with the label on site 0 whose
    bonds are at most init_bond; cg refuses a loss it does not solve."""
    n_sites = 6
    feats, y = features(3, 40, n_sites), labels(uniform(3, 40, n_sites))
    mps = sw.init_from_data(key(0), feats, y, C_, init_bond=3, per_class=6, center=3,
                            dtype=F64)
    cores, label, c = sw.to_cores(mps)
    assert c == 3 and max(np.asarray(mps.ranks)) == mps.max_bond == 3
    close(np.linalg.norm(np.asarray(label)), 1.0)
    for k, core in enumerate(cores):  # mixed canonical about the label
        if k != c:
            m = np.asarray(core).reshape(core.shape[0], -1)
            m = m @ m.T if k > c else np.asarray(core).reshape(-1, core.shape[-1]).T @ np.asarray(
                core).reshape(-1, core.shape[-1])
            close(m, np.eye(m.shape[0]), 1e-10)
    # the same start as the data-driven sum it compresses: a chain of the sampled images
    # classifies better than chance on this separable toy
    out = np.asarray(sw.logits(mps, feats)[0])
    assert np.mean(np.argmax(out, -1) == np.asarray(y)) > 1 / C_ + 0.1
    envs = sw.environments(mps, feats, y)
    with pytest.raises(ValueError, match="solver='cg' solves the squared loss"):
        sw.update(mps, envs, direction="right", loss="cross_entropy")
    with pytest.raises(ValueError, match="solver must be one of"):
        sw.update(mps, envs, direction="right", solver="newton")
    with pytest.raises(ValueError, match="labels must have shape"):
        sw.init_from_data(key(0), feats, y[:3], C_)


def test_environments_recomputed_mid_growth_continue_bitwise():
    """What a resumed run does: take the chain after a few updates (bonds still growing),
    recompute its environments from scratch (``environments``) and continue; the chain
    and the losses are bitwise those of the run that kept its cached environments."""
    n_sites = 8
    x = uniform(11, N, n_sites)
    feats, y = features(11, N, n_sites), labels(x)
    directions = sw.sweep_directions(n_sites, 3, back=True)
    kw = dict(passes=2, cutoff=1e-12, min_rank=1)

    def run(mps, envs, steps):
        infos = []
        for direction in steps:
            mps, envs = sw.grow(mps, envs, direction, PAD)
            mps, envs, info = sw.update(mps, envs, direction=direction, max_rank=PAD, **kw)
            infos.append(float(info["loss_after"]))
        return mps, envs, infos

    start = sw.init(key(3), n_sites, C_, max_bond=1, center=3, dtype=F64)
    mid, envs, _ = run(start, sw.environments(start, feats, y), directions[:2])
    assert mid.max_bond < PAD  # still growing
    whole, _, whole_infos = run(mid, envs, directions[2:])
    fresh = sw.environments(mid, feats, y)
    resumed, _, resumed_infos = run(mid, fresh, directions[2:])
    assert whole.max_bond == resumed.max_bond == PAD and int(resumed.center) == 3
    assert whole_infos == resumed_infos
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
