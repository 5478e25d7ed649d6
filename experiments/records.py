"""What a run leaves in its directory: ``config.json``, ``meta.json``, ``metrics.jsonl``,
``summary.json``, ``curves.png`` and ``run.lock``.

``run.lock`` is held with ``fcntl.flock`` for the lifetime of a run (:func:`lock_run_dir`),
so a second run on the same directory fails at once; the operating system drops the
lock when its process dies, even by SIGKILL, so a stale file never blocks a new run.

``metrics.jsonl`` holds one JSON object per line, one line per logged step, with
strictly increasing ``step``; a resumed run first drops the lines past its checkpoint
(:func:`truncate_metrics`) so nothing is logged twice. A torn last line (a run killed
while writing it) is dropped quietly; an unreadable line anywhere else is damage: the
file is copied aside and a :class:`MetricsWarning` names the copy and the line.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import importlib.metadata
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_FILE",
    "PACKAGES",
    "CheckpointError",
    "CheckpointWarning",
    "MetricsWarning",
    "RunLockedError",
    "accuracy_line",
    "append_metrics",
    "eval_summary",
    "finish_run",
    "jsonable",
    "git_state",
    "lock_run_dir",
    "make_meta",
    "package_versions",
    "plot_curves",
    "read_json",
    "read_metrics",
    "tensorboard_writer",
    "truncate_metrics",
    "write_json",
    "write_run_start",
    "write_scalars",
]

PACKAGES = ("tnlib", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def jsonable(value: Any) -> Any:
    """Plain Python for JSON: numpy / jax scalars become floats or ints, NaN becomes None."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a file that is not one is a ValueError naming it."""
    try:
        obj = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return obj


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- lock

LOCK_FILE = "run.lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run directory's lock."""


class CheckpointWarning(UserWarning):
    """A checkpoint was found corrupt or truncated and set aside; an older one is used
    (raised by :func:`tnlib.experiments.training.restore_checkpoint`)."""


class MetricsWarning(UserWarning):
    """A run record was damaged: ``metrics.jsonl`` held an unreadable line before its
    last one (:func:`truncate_metrics`), or ``meta.json`` was unreadable
    (:func:`write_run_start`); the original was copied aside before it was rewritten."""


class CheckpointError(RuntimeError):
    """A checkpoint whose files are intact (its manifest matches) but that cannot be
    restored into the current model: the code changed, not the disk."""


@contextlib.contextmanager
def lock_run_dir(workdir: Path) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``workdir/run.lock`` for the ``with`` block.

    The directory must exist. The lock file records the holder's PID and host; it is
    left in place afterwards (deleting lock files races with the next holder). The lock
    is advisory and local to one machine: on network file systems that do not support
    ``flock`` two hosts are not kept apart.

    Raises:
      RunLockedError: another process holds the lock; the message names the directory
        and the holder's PID.
    """
    path = Path(workdir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        try:
            holder = path.read_text().strip() or "PID unknown"
        except OSError:
            holder = "PID unknown"
        raise RunLockedError(
            f"run directory {Path(workdir)} is in use by another tnlib run ({holder}; lock "
            f"file {path}); wait for it to finish or pass another --workdir"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"PID {os.getpid()} on {socket.gethostname()} since {now_iso()}\n".encode())
        yield path
    finally:
        os.close(fd)  # releases the flock


# --------------------------------------------------------------------------- meta


def git_state(directory: Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding ``directory``.

    ``dirty`` means tracked files differ from the commit; untracked files (run outputs,
    figures being written) do not count."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(directory), *args],
                capture_output=True, text=True, timeout=10, check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "commit": commit.strip() if commit else None,
        "dirty": bool(status.strip()) if status is not None else None,
    }


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` where a package is missing)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def make_meta(
    previous: Mapping[str, Any] | None, *, start_step: int, devices: list[str]
) -> dict[str, Any]:
    """``meta.json`` for this invocation; earlier invocations are kept under ``"sessions"``.

    The top level describes the latest invocation (tnlib's version; the git commit and
    dirty flag of the tnlib checkout, None when tnlib is installed from a wheel; python
    and package versions, devices, start time).
    """
    import tnlib

    source = Path(tnlib.__file__).resolve().parent.parent
    checkout = (source / "pyproject.toml").is_file()  # not a site-packages inside some repo
    git = git_state(source) if checkout else {"commit": None, "dirty": None}
    session = {"start_time": now_iso(), "start_step": start_step, "git_commit": git["commit"],
               "tnlib_version": tnlib.__version__}
    sessions = list((previous or {}).get("sessions", [])) + [session]
    return {
        "tnlib_version": tnlib.__version__,
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "devices": devices,
        "start_time": sessions[0]["start_time"],
        "sessions": sessions,
    }


def eval_summary(final: Mapping[str, Any]) -> dict[str, Any]:
    """``test_accuracy`` / ``test_loss`` (and ``validation_*`` when present) of a
    classifier's last evaluation ``final`` (``test_acc``, ``test_loss``, ...)."""
    summary = {"test_accuracy": final["test_acc"], "test_loss": final["test_loss"]}
    if "validation_acc" in final:
        summary.update(validation_accuracy=final["validation_acc"],
                       validation_loss=final["validation_loss"])
    return summary


def accuracy_line(summary: Mapping[str, Any]) -> str:
    """``test_accuracy=... test_loss=... steps=... wall_s=...``: a classifier's last line."""
    return (f"test_accuracy={summary['test_accuracy']:.4f} "
            f"test_loss={summary['test_loss']:.4f} steps={summary['steps']} "
            f"wall_s={summary['wall_s']:.1f}")


def finish_run(workdir: Path, summary: Mapping[str, Any], *, main: bool,
               title: str | None = None, line=None) -> dict[str, Any]:
    """End a run: process 0 writes ``summary.json``, ``curves.png`` (when ``title`` is
    given) and prints ``line(summary)`` (default :func:`accuracy_line`). Returns the
    summary as a dict."""
    summary = dict(summary)
    if main:
        write_json(workdir / "summary.json", summary)
        if title is not None:
            plot_curves(read_metrics(workdir / "metrics.jsonl"), workdir / "curves.png",
                        title=title)
        print((line or accuracy_line)(summary), flush=True)
    return summary


def write_run_start(workdir: Path, config, *, restored: bool, step: int,
                    **fields: Any) -> None:
    """Write ``config.json`` and ``meta.json`` (``make_meta`` plus ``fields``) at the
    start of a run or a resumed session; the previous sessions are kept when
    ``restored``. Process 0 only."""
    import jax

    write_json(workdir / "config.json", json.loads(config.to_json()))
    meta_path = workdir / "meta.json"
    previous = None
    if meta_path.exists() and restored:
        try:
            previous = read_json(meta_path)
        except (OSError, ValueError) as e:  # damaged: start its history afresh, say so
            copy = _set_aside_copy(meta_path)
            warnings.warn(f"{e}; kept it as {copy} and started a new {meta_path.name} (the "
                          "earlier sessions are listed only in the copy)", MetricsWarning,
                          stacklevel=2)
    meta = make_meta(previous, start_step=step, devices=[str(d) for d in jax.devices()])
    meta.update(fields)
    write_json(meta_path, meta)


# --------------------------------------------------------------------------- metrics


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All complete lines of a ``metrics.jsonl`` (a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_metrics(path: Path, record: Mapping[str, Any]) -> None:
    """Append one line and flush it, so a killed run loses at most that line (a torn
    last line, which :func:`truncate_metrics` drops)."""
    from . import faults

    line = json.dumps(jsonable(record), sort_keys=True) + "\n"
    with open(path, "a") as f:
        half = len(line) // 2
        f.write(line[:half])
        f.flush()
        faults.point("metrics")
        f.write(line[half:])
        f.flush()


def tensorboard_writer(logdir: Path):
    """A TensorBoard event writer (tensorboardX) into ``logdir``, or None when tensorboardX
    is not installed or ``TNLIB_TENSORBOARD=0``. :func:`write_scalars` feeds it the same
    records as ``metrics.jsonl``."""
    if os.environ.get("TNLIB_TENSORBOARD", "1") == "0":
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(logdir), flush_secs=10)


def write_scalars(writer, record: Mapping[str, Any]) -> None:
    """Every finite number of one metrics record as a scalar at ``record["step"]``."""
    step = int(record["step"])
    for key, value in record.items():
        if key != "step" and isinstance(value, int | float) and not isinstance(value, bool) \
                and math.isfinite(value):
            writer.add_scalar(key, value, step)


def _set_aside_copy(path: Path) -> Path:
    """Copy ``path`` to ``<name>.damaged`` (``.damaged.1``, ... when taken); the copy."""
    copy, i = path.with_name(path.name + ".damaged"), 1
    while copy.exists():
        copy, i = path.with_name(f"{path.name}.damaged.{i}"), i + 1
    shutil.copy2(path, copy)
    return copy


def truncate_metrics(path: Path, max_step: int) -> int:
    """Keep only the lines with ``step <= max_step`` (and drop a torn last line); returns
    how many. An unreadable line before the last is not dropped silently: the original
    file is first copied to ``metrics.jsonl.damaged[.k]`` and a :class:`MetricsWarning`
    names the line and the copy."""
    path = Path(path)
    if not path.exists():
        return 0
    lines = path.read_text().splitlines()
    kept, bad = [], []
    for k, line in enumerate(lines, start=1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            if k < len(lines):  # the last line may be torn by a kill; others may not
                bad.append(k)
            continue
        if isinstance(r, dict) and r.get("step", 0) <= max_step:
            kept.append(r)
    if bad:
        copy = _set_aside_copy(path)
        warnings.warn(f"{path} has {len(bad)} unreadable line(s) before its last (line "
                      f"{', '.join(map(str, bad[:5]))}); kept a copy of it as {copy} and "
                      "dropped those lines", MetricsWarning, stacklevel=2)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    tmp.replace(path)
    return len(kept)


# --------------------------------------------------------------------------- plot


def plot_curves(records: Iterable[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Train loss and test accuracy against step, side by side, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = list(records)
    train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
    test = [(r["step"], r["test_acc"]) for r in records if r.get("test_acc") is not None]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), constrained_layout=True)
    if train:
        ax_loss.plot(*zip(*train, strict=True), lw=1)
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="step", ylabel="train loss (cross-entropy)")
    if test:
        ax_acc.plot(*zip(*test, strict=True), marker="o", ms=3)
    ax_acc.set(xlabel="step", ylabel="test accuracy")
    ax_acc.grid(alpha=0.3)
    ax_loss.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
