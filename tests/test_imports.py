"""No module uses another module's private names.

A name that starts with ``_`` (and is not a dunder) may only be used inside the module
that defines it. Helpers shared between modules live under public names in a private
module made for sharing (``tnlib/_numerics.py``, ``tnlib/_validate.py``, ...), which
may be imported on purpose (``from tnlib._numerics import safe_sqrt``,
``from tnlib import _numerics``). This test parses every ``.py`` file of the packages
and fails on

- ``from X import _name`` where ``_name`` is not a module file of package ``X``;
- ``mod._name`` (or ``pkg.mod._name``) where ``mod`` / ``pkg`` is a name the file bound
  by an ``import`` statement (``self._x`` and ``cls._x`` are attributes, not imports).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("tnlib", "models", "experiments", "configs", "paper_figures", "benchmarks")
# Installed as tnlib.<name> (pyproject): the import path of each top-level directory.
ALIASES = {"models": "tnlib.models", "experiments": "tnlib.experiments",
           "configs": "tnlib.configs", "paper_figures": "tnlib.paper_figures"}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _package_dir(module: str) -> pathlib.Path | None:
    """The directory of an in-tree package given its dotted import name, else None."""
    parts = module.split(".")
    if parts[0] == "tnlib" and len(parts) > 1 and parts[1] in ALIASES:
        parts = parts[1:]
    path = ROOT.joinpath(*parts)
    return path if path.is_dir() else None


def _is_module(package: str | None, name: str) -> bool:
    d = _package_dir(package) if package else None
    return d is not None and ((d / f"{name}.py").is_file() or (d / name).is_dir())


def _resolve(node: ast.ImportFrom, path: pathlib.Path) -> str | None:
    if node.level == 0:
        return node.module
    base = path.parent
    for _ in range(node.level - 1):
        base = base.parent
    rel = ".".join(base.relative_to(ROOT).parts)
    return f"{rel}.{node.module}" if node.module else rel


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def violations(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    imported: set[str] = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                imported.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, path)
            for alias in node.names:
                imported.add(alias.asname or alias.name)
                if _private(alias.name) and not _is_module(module, alias.name):
                    out.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                               f"from {module} import {alias.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and _root_name(node.value) in imported):
            # pkg._module.name is an import of a private sharing module: allowed
            if not _is_module(ast.unparse(node.value), node.attr):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno}: "
                           f"{ast.unparse(node.value)}.{node.attr}")
    return out


FILES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if ".venv" not in p.parts)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_private_names_across_modules(package):
    found = [v for p in FILES if p.relative_to(ROOT).parts[0] == package
             for v in violations(p)]
    assert not found, "private names used outside their module:\n" + "\n".join(found)


def test_checker_catches_both_forms(tmp_path, monkeypatch):
    src = ("from tnlib.linalg import _safe_sqrt\nfrom tnlib import linalg\n"
           "from tnlib import _validate\nx = linalg._low_precision\n"
           "y = _validate.check_dims\nclass A:\n    def f(self):\n        return self._z\n")
    f = ROOT / "tnlib" / "linalg.py"  # any in-tree path: only its location is used
    monkeypatch.setattr(pathlib.Path, "read_text", lambda self: src)
    found = violations(f)
    assert len(found) == 2 and "_safe_sqrt" in found[0] and "_low_precision" in found[1]
