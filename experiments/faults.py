"""Fault injection for the run loop: ``TNLIB_FAULT=window:count[:signal]`` makes the
process send itself a signal the ``count``-th time it reaches ``window``.

The windows are the moments where a kill could break a guarantee of README
"Guarantees"; the runner marks each with :func:`point`:

``start``    after the restore, before the first step of this session;
``step``     just after a step computed its new state, before it is logged or saved;
``save``     right after an orbax save started (its files are being written);
``commit``   after orbax finished the save, before its integrity record (manifest);
``metrics``  halfway through writing a ``metrics.jsonl`` line.

``signal`` is ``KILL`` (default: no cleanup at all, like a power cut or the OOM
killer) or ``INT`` (Ctrl-C). The fault-injection harness (``tests/fault_harness.py``,
``make soak``) sets it in the environment of a ``tnlib run`` subprocess. Unset, a
point costs one global lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV", "WINDOWS", "parse", "point"]

ENV = "TNLIB_FAULT"
WINDOWS = ("start", "step", "save", "commit", "metrics")
SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}


def parse(text: str | None) -> tuple[str, int, int] | None:
    """``"save:2:INT"`` as ``("save", 2, SIGINT)``; None for an empty or unset value."""
    if not text:
        return None
    window, _, rest = text.partition(":")
    count, _, sig = rest.partition(":")
    if window not in WINDOWS:
        raise ValueError(f"{ENV}={text!r}: window must be one of {', '.join(WINDOWS)}")
    try:
        n = int(count or 1)
    except ValueError:
        raise ValueError(f"{ENV}={text!r}: count must be an int >= 1") from None
    if n < 1 or (sig or "KILL") not in SIGNALS:
        raise ValueError(f"{ENV}={text!r}: expected window:count[:KILL|INT], count >= 1")
    return window, n, SIGNALS[sig or "KILL"]


_PLAN = parse(os.environ.get(ENV))
_seen: dict[str, int] = {}


def point(window: str) -> None:
    """Mark ``window``; with a matching ``TNLIB_FAULT`` plan, signal this process."""
    if _PLAN is None:
        return
    _seen[window] = _seen.get(window, 0) + 1
    if window == _PLAN[0] and _seen[window] == _PLAN[1]:
        os.kill(os.getpid(), _PLAN[2])
