"""The entanglement entropy profile of an MPS Born machine trained on the 8x8 digits.

Trains a Born machine (``tnlib.sweep_born``, two-site sweeps) briefly on scikit-learn's
bundled digits, binarized to one token per pixel (64 sites, 2 values), and plots
``tnlib.tt.entropy`` across every bond, next to the mutual information between the
centre pixel and every other pixel (``tnlib.tt.mutual_information``). Writes
``docs/entropy_profile.png``. Not part of the test suite (it trains; about a minute on
a CPU):

    python docs/entropy_profile.py [--sweeps 2] [--max-bond 8]
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

from tnlib import sweep_born, tt  # noqa: E402

OUT = pathlib.Path(__file__).parent / "entropy_profile.png"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweeps", type=int, default=2)
    ap.add_argument("--max-bond", type=int, default=8)
    args = ap.parse_args()
    tokens = (load_digits().data > 7).astype(np.int32)  # (1797, 64)
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
    ax0.plot(np.arange(1, 64), entropy, marker=".")
    ax0.set_xlabel("bond (cut after pixel k, row-major)")
    ax0.set_ylabel("entanglement entropy (bits)")
    ax0.set_title(f"Born machine on 8x8 digits, max bond {args.max_bond}")
    im = ax1.imshow(mi.reshape(8, 8), cmap="viridis")
    ax1.plot(centre % 8, centre // 8, "r+", ms=12)
    ax1.set_title("mutual information with pixel (3, 3) (bits)")
    fig.colorbar(im, ax=ax1)
    fig.tight_layout()
    fig.savefig(OUT, dpi=120)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
