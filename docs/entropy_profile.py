"""The entanglement entropy profiles of an MPS classifier and an MPS Born machine
trained on the 8x8 digits.

Trains, on scikit-learn's bundled digits, an MPS classifier (``tnlib.sweep``: the
two-site sweeps of Stoudenmire & Schwab with TNML's settings, cos / sin features, the
label on the middle pixel; its label index is read as part of that pixel's site) and
a Born machine (``tnlib.sweep_born``, the digits binarized to one token per pixel),
both over 64 sites, and plots ``tnlib.tt.entropy`` across every bond of each, next to
the Born machine's mutual information between the centre pixel and every other pixel
(``tnlib.tt.mutual_information``). Writes ``docs/entropy_profile.png``. Not part of
the test suite (it trains; about two minutes on a CPU):

    python docs/entropy_profile.py [--sweeps 2] [--max-bond 8] [--classifier-bond 20]
"""

from __future__ import annotations

import argparse
import pathlib

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from tnlib import sweep, sweep_born, tt  # noqa: E402
from tnlib.models.mps import local_feature_map  # noqa: E402

OUT = pathlib.Path(__file__).parent / "entropy_profile.png"


def train_classifier(digits, n_sweeps: int, max_bond: int):
    """The digits classifier trained by ``tnlib.sweep`` as a ``tt.TensorTrain`` whose
    middle site carries pixel and label (dimension 2 x 10), and its train accuracy."""
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    feats = np.asarray(local_feature_map(x, 2, "cos_sin"))
    n_sites, center = x.shape[1], x.shape[1] // 2
    mps = sweep.init_from_data(jax.random.PRNGKey(0), feats, y, 10, center=center)
    envs = sweep.environments(mps, feats, y)
    for k in range(n_sweeps):
        mps, envs, _ = sweep.sweep(mps, envs, min_rank=min(10, max_bond), grow_to=max_bond)
        out, _ = sweep.logits(mps, feats)
        accuracy = float(np.mean(np.argmax(np.asarray(out), -1) == y))
        print(f"classifier sweep {k + 1}: train accuracy {accuracy:.4f}, max bond "
              f"{int(np.max(np.asarray(mps.ranks)))}", flush=True)
    cores, label, c = sweep.to_cores(mps)
    cores[c] = label.reshape(label.shape[0], -1, label.shape[-1])  # (pixel, class) as one
    assert c == center and len(cores) == n_sites
    return tt.TensorTrain(tuple(cores)), accuracy


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--max-bond", type=int, default=8)
    ap.add_argument("--classifier-bond", type=int, default=20)
    args = ap.parse_args()
    digits = load_digits()
    classifier, accuracy = train_classifier(digits, args.sweeps, args.classifier_bond)
    tokens = (digits.data > 7).astype(np.int32)  # (1797, 64)
    mps = sweep_born.init(jax.random.PRNGKey(0), tokens.shape[1], 2, max_bond=args.max_bond)
    envs = sweep_born.environments(mps, tokens)
    for k in range(args.sweeps):
        mps, envs, _ = sweep_born.sweep(mps, envs, lr=0.05, max_rank=args.max_bond)
        print(f"sweep {k + 1}: train NLL {float(sweep_born.nll(mps, tokens)):.3f}, bonds "
              f"{np.asarray(mps.ranks).tolist()}", flush=True)
    t = tt.TensorTrain(tuple(sweep_born.to_cores(mps)))
    entropy = np.asarray(tt.entropy(t))
    centre = 8 * 3 + 3  # pixel (3, 3)
    mi = np.zeros(64)
    for j in range(64):
        if j != centre:
            mi[j] = float(tt.mutual_information(t, centre, j))
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax0.plot(np.arange(1, 64), np.asarray(tt.entropy(classifier)), marker=".",
             label=f"classifier (sweeps, bond <= {args.classifier_bond}, train acc "
                   f"{accuracy:.3f})")
    ax0.plot(np.arange(1, 64), entropy, marker=".",
             label=f"Born machine (bond <= {args.max_bond})")
    ax0.set_xlabel("bond (cut after pixel k, row-major)")
    ax0.set_ylabel("entanglement entropy (bits)")
    ax0.set_title("MPS trained on 8x8 digits")
    ax0.legend(fontsize=8)
    im = ax1.imshow(mi.reshape(8, 8), cmap="viridis")
    ax1.plot(centre % 8, centre // 8, "r+", ms=12)
    ax1.set_title("mutual information with pixel (3, 3) (bits)")
    fig.colorbar(im, ax=ax1)
    fig.tight_layout()
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
