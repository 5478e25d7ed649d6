"""GaLore (``tnlib.optim.galore``) against plain Adam on an MNIST MLP: training curves
at equal steps, test accuracy and optimizer-state size.

The network is ``784 -> 1024 -> 1024 -> 10`` (ReLU); both optimizers see the same
batches (size 128) for the same number of steps, each at the learning rates listed
(the best final training loss of each is reported), for several seeds. GaLore wraps
``optax.adam`` with rank 128, ``update_proj_gap`` 200 and scale 0.25 (the official
pre-training settings); the 1-D biases and the ``1024 x 10`` output layer (shorter side
below the rank) pass through plain Adam, as the official code leaves non-projected
parameters to AdamW. Writes ``docs/galore_mlp.png`` and prints a markdown table.
Not part of the test suite (it trains; about five minutes on a 2-core CPU):

    python docs/galore_mlp.py [--steps 3000] [--seeds 3] [--data mnist|digits]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tnlib import optim  # noqa: E402
from tnlib.experiments import data  # noqa: E402

WIDTHS = (1024, 1024)


def init(key, n_in):
    sizes = (n_in, *WIDTHS, 10)
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (i, o)) / jnp.sqrt(i), "b": jnp.zeros(o)}
            for k, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def logits(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss(params, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


def state_floats(state) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))


def train(tx, x, y, steps, batch, seed, log_every=50):
    params = init(jax.random.PRNGKey(seed), x.shape[1])
    state = tx.init(params)

    @jax.jit
    def chunk(carry, start):
        def body(carry, i):
            p, s = carry
            idx = jax.random.randint(jax.random.fold_in(jax.random.PRNGKey(seed + 1000), i),
                                     (batch,), 0, len(x))
            value, g = jax.value_and_grad(loss)(p, x[idx], y[idx])
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), value
        carry, values = jax.lax.scan(body, carry, start + jnp.arange(log_every))
        return carry, values.mean()

    carry, curve = (params, state), []
    for start in range(0, steps, log_every):
        carry, v = chunk(carry, start)
        curve.append(float(v))
    return carry[0], curve, state_floats(state)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--data", default="mnist", choices=("mnist", "digits"))
    ap.add_argument("--out", default=str(pathlib.Path(__file__).with_name("galore_mlp.png")))
    args = ap.parse_args(argv)
    splits = data.load(args.data)
    (xt, yt), (xe, ye) = splits["train"], splits["test"]
    x, y = jnp.asarray(xt.reshape(len(xt), -1)), jnp.asarray(yt)
    xe, ye = jnp.asarray(xe.reshape(len(xe), -1)), jnp.asarray(ye)
    runs = {"Adam": [(lr, optax.adam(lr)) for lr in (1e-3, 3e-3)],
            "GaLore-Adam r=128": [(lr, optim.galore(optax.adam(lr), 128, update_proj_gap=200,
                                                    scale=0.25)) for lr in (3e-3, 1e-2)]}
    results = {}
    t0 = time.perf_counter()
    for name, options in runs.items():
        best = None
        for lr, tx in options:
            per_seed = []
            for seed in range(args.seeds):
                params, curve, floats = train(tx, x, y, args.steps, args.batch, seed)
                acc = float(jnp.mean(jnp.argmax(logits(params, xe), -1) == ye))
                per_seed.append({"curve": curve, "test_accuracy": acc, "state_floats": floats})
            final = statistics.mean(r["curve"][-1] for r in per_seed)
            print(f"{name} lr {lr:g}: final train loss {final:.4f}, test accuracy "
                  + ", ".join(f"{r['test_accuracy']:.4f}" for r in per_seed), flush=True)
            if best is None or final < best[0]:
                best = (final, lr, per_seed)
        results[name] = best
    wall = time.perf_counter() - t0

    fig, ax = plt.subplots(figsize=(6, 3.6), constrained_layout=True)
    steps = np.arange(1, len(next(iter(results.values()))[2][0]["curve"]) + 1) * 50
    rows = []
    for (name, (final, lr, per_seed)), color in zip(results.items(), ("C0", "C3"), strict=True):
        curves = np.array([r["curve"] for r in per_seed])
        ax.plot(steps, curves.mean(0), color=color, label=f"{name}, lr {lr:g}")
        ax.fill_between(steps, curves.min(0), curves.max(0), color=color, alpha=0.2)
        accs = [r["test_accuracy"] for r in per_seed]
        rows.append((name, f"{lr:g}", f"{final:.4f} [{curves[:, -1].min():.4f}, "
                     f"{curves[:, -1].max():.4f}]",
                     f"{statistics.mean(accs):.4f} [{min(accs):.4f}, {max(accs):.4f}]",
                     f"{per_seed[0]['state_floats']:,}"))
    ax.set(xlabel="step", ylabel="train loss (mean of 50 steps)", yscale="log",
           title=f"MLP 784-1024-1024-10 on {args.data}, {args.seeds} seeds (band: min-max)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.savefig(args.out, dpi=150)
    print()
    print("| optimizer | lr (best of 2) | final train loss mean [min, max] | test accuracy "
          "mean [min, max] | optimizer state (floats) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print(f"\n{args.steps} steps, batch {args.batch}, {args.seeds} seeds; {wall:.0f} s; "
          f"wrote {args.out}")
    print(json.dumps({k: {"lr": v[1], "final_loss": v[0]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
