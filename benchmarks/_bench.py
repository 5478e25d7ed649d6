"""Shared pieces of the side-by-side benchmarks: timing, run metadata, output files.

Every benchmark times our code and a peer on the same inputs in one process, after
warm-up, and writes ``benchmarks/out/<name>.json`` plus ``<name>.md`` (git-ignored;
copy the table into ``benchmarks/README.md`` under the command that produced it).

    from _bench import alternate, ratio_stats, meta, write

Timing on a shared machine: ``alternate`` runs the contenders of one row in turn,
round after round (ABCABC..., the order rotated each round), so a burst of load from
another process hits all of them alike; ``ratio_stats`` then reports, for each
contender, the median over rounds of its time divided by the reference's time *in the
same round*, with the quartiles as the spread. A lone ``median_seconds`` (one
contender) remains for rows with nothing to compare against.

Threads: every script accepts ``--threads N`` and ``--single-thread`` (= ``--threads
1``), applied by ``threads_from_argv()`` *before* jax / numpy / torch are imported (they
read the settings at import): on a machine shared with other jobs, oversubscribed BLAS
and XLA thread pools distort timings by 10-100x.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

OUT = pathlib.Path(__file__).parent / "out"


def threads_from_argv(argv: list[str] | None = None) -> int | None:
    """Read ``--threads N`` / ``--single-thread`` from ``argv`` (default ``sys.argv``) and
    set XLA's CPU intra-op threads and OpenMP / OpenBLAS / MKL to ``N``; call it before
    importing jax or numpy. Returns ``N``, or None when neither flag is given."""
    argv = sys.argv if argv is None else argv
    n = None
    for i, arg in enumerate(argv):
        if arg == "--single-thread":
            n = 1
        elif arg == "--threads" and i + 1 < len(argv):
            n = int(argv[i + 1])
        elif arg.startswith("--threads="):
            n = int(arg.split("=", 1)[1])
    if n is not None:
        os.environ.update(OMP_NUM_THREADS=str(n), OPENBLAS_NUM_THREADS=str(n),
                          MKL_NUM_THREADS=str(n))
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={str(n > 1).lower()}"
            f" intra_op_parallelism_threads={n}").strip()
    return n


def add_thread_args(parser) -> None:
    """``--threads N`` and ``--single-thread`` on an argparse parser (already applied by
    ``threads_from_argv``; declared so argparse accepts and documents them)."""
    parser.add_argument("--threads", type=int, default=None,
                        help="XLA / OpenMP / BLAS (and torch) threads (default: all cores)")
    parser.add_argument("--single-thread", action="store_true", help="same as --threads 1")


def _block(x):
    """Wait for ``x``: JAX arrays (``block_until_ready``), torch tensors (a CUDA sync
    when on the GPU), anything else as is; pytrees and tuples are walked."""
    try:
        import jax

        leaves = jax.tree.leaves(x)
    except ImportError:  # pragma: no cover - jax is a dependency
        leaves = [x]
    for leaf in leaves:
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
        elif type(leaf).__module__.startswith("torch") and getattr(leaf, "is_cuda", False):
            import torch

            torch.cuda.synchronize()
    return x


def median_seconds(fn: Callable, *args, warmup: int = 2, repeats: int = 7,
                   min_time: float = 0.0) -> float:
    """Median wall time of ``fn(*args)`` (result waited for) after ``warmup`` calls.

    With ``min_time`` > 0 each sample loops until it has run that long and reports the
    time per call, so microsecond-scale operations are not dominated by timer noise.
    """
    for _ in range(warmup):
        _block(fn(*args))
    samples = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            _block(fn(*args))
            n += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return statistics.median(samples)


def alternate(contenders: dict, *, rounds: int = 15, min_time: float = 0.02,
              budget: float = 60.0, warmup: int = 1) -> dict[str, list[float]]:
    """Per-call seconds of each contender in each round, timed in alternation.

    Args:
      contenders: ``{name: (fn, args)}``; ``fn(*args)`` is waited for (``_block``).
      rounds: rounds wanted; fewer when one round is estimated to take longer than
        ``budget / rounds`` (never fewer than 3).
      min_time: each sample repeats its call until it has run this long (the count is
        fixed per contender from the warm-up, so every round runs the same calls) and
        reports the time per call: microsecond calls are not lost in timer noise.
      budget: seconds the whole row may take, roughly.
      warmup: untimed calls per contender before the first round.

    Returns:
      ``{name: [seconds per call, one entry per round]}``.
    """
    if not contenders:
        raise ValueError("contenders must name at least one function")
    est = {}
    for name, (fn, args) in contenders.items():
        for _ in range(warmup):  # compilation, caches
            _block(fn(*args))
        n, t0 = 0, time.perf_counter()
        while n < 3 and time.perf_counter() - t0 < min_time:
            _block(fn(*args))
            n += 1
        est[name] = max((time.perf_counter() - t0) / n, 1e-7)
    loops = {name: max(1, int(min_time / t)) for name, t in est.items()}
    per_round = sum(est[n] * loops[n] for n in contenders)
    rounds = max(3, min(rounds, int(budget / max(per_round, 1e-9))))
    names = list(contenders)
    samples = {name: [] for name in names}
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            fn, args = contenders[name]
            t0 = time.perf_counter()
            for _ in range(loops[name]):
                _block(fn(*args))
            samples[name].append((time.perf_counter() - t0) / loops[name])
    return samples


def _quartiles(values):
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return q[0], statistics.median(values), q[2]


def ratio_stats(samples: dict[str, list[float]], ref: str) -> dict[str, dict]:
    """For each contender: its median time and the median, quartiles, min and max over
    rounds of ``time / time of ref in the same round`` (> 1: ``ref`` is faster)."""
    base = samples[ref]
    out = {}
    for name, times in samples.items():
        ratios = [t / b for t, b in zip(times, base, strict=True)]
        q1, med, q3 = _quartiles(ratios)
        out[name] = {"s": statistics.median(times), "ratio": med, "q1": q1, "q3": q3,
                     "min": min(ratios), "max": max(ratios), "rounds": len(times)}
    return out


def best_of(samples: dict[str, list[float]], names) -> list[float]:
    """Per round, the fastest of ``names``: a "fastest peer" contender whose ratio is
    taken round by round like any other."""
    names = list(names)
    return [min(samples[n][k] for n in names) for k in range(len(samples[names[0]]))]


def fmt_ratio(stat: dict) -> str:
    """``1.23x [1.10-1.31]``: the median ratio and its interquartile range."""
    return f"{stat['ratio']:.3g}x [{stat['q1']:.3g}-{stat['q3']:.3g}]"


def jit_or_eager(fn, *args):
    """``(callable, mode)``: ``jax.jit(fn)`` when it traces and runs on ``args``, else
    ``fn`` itself (eager; a peer whose code cannot be traced)."""
    import jax

    jitted = jax.jit(fn)
    try:
        jax.block_until_ready(jitted(*args))
        return jitted, "jit"
    except Exception as e:  # noqa: BLE001 - any tracing failure means eager
        return fn, f"eager ({type(e).__name__})"


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=OUT.parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def meta(peers: Iterable[str] = (), threads: int | None = None) -> dict:
    """Device, versions (jax and each peer package), commit, threads (``threads_from_argv``'s
    value; None: the libraries' defaults) and load average (1 / 5 / 15 min) of this run."""
    import jax

    dev = jax.devices()[0]
    return {"device": f"{dev.platform}:{getattr(dev, 'device_kind', dev)}",
            "cpu": platform.processor() or platform.machine(),
            "python": platform.python_version(), "jax": jax.__version__,
            "versions": {p: version(p) for p in peers}, "commit": commit(),
            "threads": threads or "default",
            "load": " / ".join(f"{x:.1f}" for x in os.getloadavg())}


def meta_line(m: dict) -> str:
    peers = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (f"device {m['device']}, jax {m['jax']}" + (f", {peers}" if peers else "")
            + f", commit {m['commit']}, threads {m.get('threads', 'default')}, load average "
            f"(1/5/15 min) {m.get('load', '?')}")


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write(name: str, payload: dict, md: str) -> pathlib.Path:
    """Write ``out/<name>.json`` and ``out/<name>.md``; print the markdown."""
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (OUT / f"{name}.md").write_text(md + "\n")
    print(md)
    return OUT / f"{name}.md"
