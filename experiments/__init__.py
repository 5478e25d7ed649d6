"""tnlib.experiments: the runner behind ``tnlib run``, its data loaders and tasks.

A task is a module with ``check_config(config)`` (raises ConfigError before any work)
and ``train_and_evaluate(config, workdir) -> dict``, selected by ``config.task``
through :data:`TASKS` and imported lazily so ``tnlib --help`` stays fast. Each task's
``train_and_evaluate`` is ``runner.run(config, workdir, setup)``: its ``setup`` builds a
:class:`~tnlib.experiments.runner.Task` (state, step, evaluate, checkpoint mapping) and
the one run loop of :mod:`tnlib.experiments.runner` does the rest (lock, resumption,
checkpoints, metrics, summary), the same for every task.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["TASKS", "get_task"]

# config.task -> task module (relative to this package).
TASKS: dict[str, str] = {
    "classification": ".classification",
    "rank_study": ".rank_study",
    "search": ".search",
    "sweep": ".sweep",
}


def get_task(name: str) -> ModuleType:
    """The task module registered for ``name`` (has ``check_config`` and ``train_and_evaluate``)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name], __name__)
