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
import importlib.util
from types import ModuleType

__all__ = ["TASKS", "get_task"]

# What the extra ``tnlib[experiments]`` installs (import name: distribution); checked
# by name only (no import), so a bare ``pip install tnlib`` gets the command to run.
EXTRA_MODULES = {"ml_collections": "ml_collections", "orbax": "orbax-checkpoint",
                 "matplotlib": "matplotlib", "sklearn": "scikit-learn", "tqdm": "tqdm"}
_missing = [dist for mod, dist in EXTRA_MODULES.items() if importlib.util.find_spec(mod) is None]
if _missing:
    raise ImportError(f"tnlib.experiments (and the tnlib command) needs {', '.join(_missing)}: "
                      "pip install 'tnlib[experiments]'")

# config.task -> task module (relative to this package).
TASKS: dict[str, str] = {
    "classification": ".classification",
    "compress": ".compress",
    "low_rank": ".low_rank",
    "rank_study": ".rank_study",
    "search": ".search",
    "sweep": ".sweep",
}


def get_task(name: str) -> ModuleType:
    """The task module registered for ``name`` (has ``check_config`` and ``train_and_evaluate``)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return importlib.import_module(TASKS[name], __name__)
