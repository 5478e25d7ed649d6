"""MPS classifier training step: tnlib.models.MPSClassifier against TensorKrowch's MPSLayer.

One training step = forward (logits), softmax cross-entropy, backward, Adam update, on
the same random batch ``x ~ U(0, 1)`` of shape ``(batch, 196)`` and random labels, with
the same cos/sin feature map ``[cos(pi x / 2), sin(pi x / 2)]``, 196 pixel sites plus one
label core in the middle (``label_site = 98`` / ``out_position = 98``), ``out_dim`` 10,
bond dimension 32, float32, Adam with learning rate 1e-3 (optax / torch.optim).

* ours: ``MPSClassifier(196, 10, bond_dim=32, readout="linear")``; the step is one
  ``jax.jit`` of ``value_and_grad`` + ``optax.adam`` on the model's ``nnx.split`` state
  (the caller's training loop does the same; ``nnx.jit`` would add per-call graph
  traversal in Python).
* TensorKrowch: ``tk.models.MPSLayer(n_features=197, in_dim=2, out_dim=10, bond_dim=32,
  out_position=98)`` with its documented fast settings (``auto_stack=True``,
  ``auto_unbind=False``, ``trace()`` once with an example input before timing). Both of
  its contraction schedules are timed: the default ``inline_mats=False`` (pairwise
  products of the stacked site matrices, log depth, ``O(L B r^3)``) and
  ``inline_mats=True`` (a left-to-right sweep, ``O(L B r^2)``); the ratio is taken
  against the faster one.

Both models start from the same tensors: our near-identity initialization, every pixel
core divided by ``exp(mean log(cos + sin))`` over the batch so TensorKrowch's unnormalized
product stays of order one (ours is invariant to that scale: its linear readout is
computed from unit-norm environments).

Sanity checks (asserted): logits of shape ``(batch, 10)``; TensorKrowch's logits equal
ours times ``exp(log_scale)`` (same function); a few steps on the batch lower the loss
for every model.

Torch's intra-op threads are set to the machine's core count; XLA's CPU thread pool uses
all cores by default. ``--device cuda`` puts the torch models on the GPU (ours runs on
``jax.devices()[0]``).

    python benchmarks/mps_train.py            # batches 100 and 500
    python benchmarks/mps_train.py --quick    # batch 100, fewer repeats (seconds)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _bench import threads_from_argv  # noqa: E402

THREADS = threads_from_argv()  # before jax and torch are imported


import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _bench import (  # noqa: E402
    add_thread_args,
    alternate,
    fmt_ratio,
    markdown_table,
    meta,
    meta_line,
    ratio_stats,
    write,
)
from flax import nnx  # noqa: E402

from tnlib.models import MPSClassifier  # noqa: E402

N_SITES, N_CLASSES, LOCAL, BOND, LR = 196, 10, 2, 32, 1e-3
LABEL_SITE = N_SITES // 2


def make_batch(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch, N_SITES), dtype=np.float32)
    y = rng.integers(0, N_CLASSES, batch).astype(np.int32)
    return x, y


def init_ours(x):
    """Our model, its pixel cores rescaled by ``exp(mean log(cos + sin))`` of the batch."""
    model = MPSClassifier(N_SITES, N_CLASSES, bond_dim=BOND, local_dim=LOCAL,
                          label_site=LABEL_SITE, readout="linear", rngs=nnx.Rngs(0))
    half = 0.5 * np.pi * x.astype(np.float64)
    gamma = float(np.exp(np.mean(np.log(np.cos(half) + np.sin(half)))))
    model.left.set_value(model.left.get_value() / gamma)
    model.right.set_value(model.right.get_value() / gamma)
    return model


def ours_step_fn(model):
    graphdef, params = nnx.split(model)
    tx = optax.adam(LR)

    def loss_fn(p, x, y):
        logits = nnx.merge(graphdef, p)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(p, opt_state, x, y):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        updates, opt_state = tx.update(g, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    return step, params, tx.init(params)


def tk_tensors(model):
    """Our cores in TensorKrowch's obc layout: ends ``(n, r)`` / ``(r, n)``, middle
    ``(r, n, r)``, the label core ``(r, 10, r)`` at ``out_position = LABEL_SITE``."""
    left = np.asarray(model.left.get_value())
    right = np.asarray(model.right.get_value())
    label = np.asarray(model.label.get_value())
    cores = [left[0, 0]] + list(left[1:]) + [label] + list(right[:-1]) + [right[-1, :, :, 0]]
    return [np.ascontiguousarray(c) for c in cores]


def tk_model(tensors, inline_mats: bool, device):
    import tensorkrowch as tk
    import torch

    mps = tk.models.MPSLayer(tensors=[torch.tensor(t, device=device) for t in tensors],
                             out_position=LABEL_SITE)
    mps.auto_stack = True
    mps.auto_unbind = False
    mps.trace(torch.zeros(1, N_SITES, LOCAL, device=device), inline_input=False,
              inline_mats=inline_mats)
    return mps


def torch_features(x):
    import torch

    half = 0.5 * torch.pi * x
    return torch.stack([torch.cos(half), torch.sin(half)], dim=-1)


def tk_step_fn(mps, inline_mats: bool):
    import torch

    opt = torch.optim.Adam(mps.parameters(), lr=LR)
    loss_fun = torch.nn.CrossEntropyLoss()

    def step(x, y):
        logits = mps(torch_features(x), inline_input=False, inline_mats=inline_mats)
        loss = loss_fun(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def check_same_function(model, mps, x, inline_mats):
    """TensorKrowch's logits == ours' amplitudes * exp(log_scale) at the shared init."""
    import torch

    amp, log_scale = model.amplitudes(jnp.asarray(x))
    ref = np.asarray(amp, np.float64) * np.exp(np.asarray(log_scale, np.float64))[:, None]
    with torch.no_grad():
        got = mps(torch_features(torch.tensor(x, device=mps_device(mps))), inline_input=False,
                  inline_mats=inline_mats).cpu().double().numpy()
    assert got.shape == (x.shape[0], N_CLASSES), got.shape
    err = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert err < 1e-3, f"TensorKrowch and tnlib logits differ (max rel. error {err:.2e})"
    return float(err)


def mps_device(mps):
    return next(iter(mps.parameters())).device


def decreasing(losses) -> bool:
    return losses[-1] < losses[0]


def run_config(batch, device, repeats, sanity_steps=5):
    import torch

    x, y = make_batch(batch)
    row = {"batch": batch, "sites": N_SITES, "bond_dim": BOND}

    model = init_ours(x)
    logits = model(jnp.asarray(x))
    assert logits.shape == (batch, N_CLASSES), logits.shape
    tensors = tk_tensors(model)
    xj, yj = jax.device_put(jnp.asarray(x)), jax.device_put(jnp.asarray(y))
    step, params, opt_state = ours_step_fn(model)
    t0 = time.perf_counter()
    step.lower(params, opt_state, xj, yj).compile()
    row["ours_compile_s"] = time.perf_counter() - t0

    # sanity: a few steps lower the loss (fresh copies of the state)
    p, s, losses = params, opt_state, []
    for _ in range(sanity_steps):
        p, s, loss = step(p, s, xj, yj)
        losses.append(float(loss))
    assert decreasing(losses), f"ours: loss did not decrease {losses}"
    row["ours_loss"] = [losses[0], losses[-1]]

    state = [params, opt_state]

    def ours_call():
        state[0], state[1], loss = step(state[0], state[1], xj, yj)
        return loss

    contenders = {"ours": (ours_call, ())}

    xt = torch.tensor(x, device=device)
    yt = torch.tensor(y, dtype=torch.long, device=device)
    for name, inline in (("tk_pairwise", False), ("tk_inline", True)):
        mps = tk_model(tensors, inline, device)
        row[f"{name}_logit_err"] = check_same_function(model, mps, x, inline)
        tstep = tk_step_fn(mps, inline)
        losses = [float(tstep(xt, yt)) for _ in range(sanity_steps)]
        assert decreasing(losses), f"{name}: loss did not decrease {losses}"
        row[f"{name}_loss"] = [losses[0], losses[-1]]
        contenders[name] = (tstep, (xt, yt))

    # ours and both TensorKrowch modes in alternation, round after round
    samples = alternate(contenders, rounds=repeats, min_time=0.05, budget=60)
    stats = ratio_stats(samples, "ours")
    for name, st in stats.items():
        row[f"{name}_s"] = st["s"]
    row["tk_best"] = min(("tk_pairwise", "tk_inline"), key=lambda n: row[f"{n}_s"])
    row["ratio_stats"] = stats[row["tk_best"]]

    for name in ("ours", "tk_pairwise", "tk_inline"):
        row[f"{name}_samples_per_s"] = batch / row[f"{name}_s"]
    row["ratio_ours_over_tk"] = row["ratio_stats"]["ratio"]
    print({k: v for k, v in row.items() if not k.endswith("_loss")}, flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 100 only, 3 repeats")
    add_thread_args(parser)
    parser.add_argument("--device", default=None,
                        help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--batches", type=int, nargs="*", default=None)
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cores = os.cpu_count() or 1
    threads = THREADS or cores
    torch.set_num_threads(threads)
    batches = args.batches or ((100,) if args.quick else (100, 500))
    repeats = 3 if args.quick else 7
    rows = [run_config(b, device, repeats) for b in batches]

    m = meta(peers=("tensorkrowch", "torch", "flax", "optax"), threads=THREADS)
    m.update(torch_device=device, torch_threads=torch.get_num_threads(), cpu_count=cores,
             threads=threads, xla_flags=os.environ.get("XLA_FLAGS", ""),
             load_average=os.getloadavg(), quick=args.quick)
    cmd = ("python benchmarks/mps_train.py" + (" --quick" if args.quick else "")
           + (f" --threads {THREADS}" if THREADS else ""))
    header = ["batch", "ours samples/s", "TK pairwise samples/s", "TK inline samples/s",
              "ours / best TK", "ours step (ms)", "ours compile (s)"]
    table = markdown_table(header, [
        [r["batch"], r["ours_samples_per_s"], r["tk_pairwise_samples_per_s"],
         r["tk_inline_samples_per_s"], fmt_ratio(r["ratio_stats"]), 1e3 * r["ours_s"],
         r["ours_compile_s"]]
        for r in rows])
    md = "\n".join([
        f"`{cmd}` (196 sites + label, bond {BOND}, in_dim 2, 10 classes, float32, Adam; "
        "steps timed in alternation, ours / best TK = median over rounds of the per-round "
        "time ratio [interquartile range]; TK = TensorKrowch MPSLayer, auto_stack, "
        "traced; pairwise = its default inline_mats=False, inline = inline_mats=True)",
        "", table, "",
        f"{meta_line(m)}; torch device {device}, "
        f"cpu cores {cores}, XLA and torch intra-op threads {threads}"
        + ("" if THREADS else " (XLA default pool)")
        + f", load average at end {m['load_average'][0]:.2f}",
    ])
    write("mps_train" + ("_quick" if args.quick else "")
          + (f"_threads{THREADS}" if THREADS else ""), {"meta": m, "rows": rows}, md)


if __name__ == "__main__":
    main()
