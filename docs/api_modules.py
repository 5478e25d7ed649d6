"""The modules the API reference covers and their public names (docs/conf.py and
tests/test_docs.py share this list)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

# Packages whose non-underscore modules are public; every module found is documented.
PACKAGES = ("tnlib", "tnlib.search", "tnlib.models", "tnlib.experiments")
# Not API: scripts and data, or modules run as programs.
SKIP = {"tnlib.configs", "tnlib.paper_figures"}


def _modules() -> list[str]:
    names = []
    for pkg_name in PACKAGES:
        names.append(pkg_name)
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__):
            full = f"{pkg_name}.{info.name}"
            if info.name.startswith("_") or full in SKIP or full in PACKAGES:
                continue
            names.append(full)
    return sorted(set(names))


MODULES = _modules()


def public_names(module: ModuleType) -> list[str]:
    """``__all__``, else the module's own non-underscore functions, classes and constants."""
    if hasattr(module, "__all__"):
        return [n for n in module.__all__ if not n.startswith("_")]
    own = []
    for name, obj in vars(module).items():
        if name.startswith("_") or isinstance(obj, ModuleType):
            continue
        if getattr(obj, "__module__", module.__name__) != module.__name__:
            continue
        own.append(name)
    return own


def is_reexport(modname: str, name: str, obj) -> bool:
    """``modname.name`` re-exports an object another public module documents under the
    same name (``tnlib.TensorTrain`` is ``tnlib.tt.TensorTrain``): its page shows it,
    the index points at its home."""
    home = getattr(obj, "__module__", None)
    if home == modname or home not in MODULES or getattr(obj, "__name__", name) != name:
        return False
    return name in public_names(importlib.import_module(home))
