"""The distribution as users get it (fast checks; the wheel itself: tests/wheel_check.py).

The package list in pyproject.toml is compared with the folders: every folder under a
mapped root that holds an ``__init__.py`` must ship, so a new subpackage cannot be
forgotten (the way ``tnlib.search`` once was).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _folder_packages() -> set[str]:
    mapping = PYPROJECT["tool"]["setuptools"]["package-dir"]
    found = set()
    for name, folder in mapping.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([name, *rel.parts]))
    return found


def test_every_package_folder_ships():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = _folder_packages()
    assert found - listed == set(), "package folders missing from pyproject.toml"
    assert listed - found == set(), "listed packages without a folder"
    assert {"tnlib.search", "tnlib.configs", "tnlib.paper_figures"} <= listed


def test_every_top_level_package_folder_is_mapped():
    mapped = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    top = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert top - {"benchmarks", "tests"} <= mapped


def test_metadata():
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert project["dynamic"] == ["version"] and "version" not in project
    assert (ROOT / "tnlib" / "py.typed").is_file()
    import tnlib

    assert re.fullmatch(r"\d+\.\d+\.\d+.*", tnlib.__version__)
    assert f"## [{tnlib.__version__}]" in (ROOT / "CHANGELOG.md").read_text()
    extras = project["optional-dependencies"]
    assert {"experiments", "interop", "cuda", "all", "dev"} <= set(extras)
    base = " ".join(project["dependencies"])
    for heavy in ("scikit-image", "matplotlib", "scikit-learn", "orbax", "ml_collections",
                  "tqdm", "chex"):
        assert heavy not in base, heavy


def test_floors_match_constraints():
    """constraints-min.txt (``make test-min``) pins exactly the declared floors."""
    pins = dict(line.split("==") for line in (ROOT / "constraints-min.txt").read_text().split()
                if "==" in line and not line.startswith("#"))
    deps = PYPROJECT["project"]["dependencies"] + PYPROJECT["project"]["optional-dependencies"][
        "experiments"]
    for dep in deps:
        m = re.match(r"([A-Za-z0-9_.\-]+)(?:\[.*\])?>=([^,;\s]+)", dep)
        assert m, dep
        assert pins.get(m.group(1)) == m.group(2), (dep, pins.get(m.group(1)))
