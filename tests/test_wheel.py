"""The wheel as users install it (``make test-wheel``; CI runs it after ``make test``).

Builds the wheel, installs it into a fresh venv and uses it from a directory outside
the checkout:

* with the ``experiments`` extra (resolved offline against the project venv's
  packages, which the fresh venv sees through a ``.pth`` line, so no download):
  ``import tnlib, tnlib.search, tnlib.models, tnlib.experiments``, ``tnlib run
  NAME:smoke`` for every shipped config, by name, and ``tnlib figures core_shapes
  --quick``;
* base only (a real ``pip install`` from the index into an empty venv): ``import
  tnlib, tnlib.models`` with none of the experiments extra installed.

Slow (minutes), so marked ``slow``: ``make test`` leaves it out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
EXTRA_ONLY = ("skimage", "matplotlib", "sklearn", "ml_collections", "tqdm", "tensorboardX")


def sh(*args, cwd, env=None, timeout=900):
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    command = " ".join(map(str, args))
    assert res.returncode == 0, f"{command}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", out, ROOT,
       cwd=out)
    (whl,) = out.glob("tnlib-*.whl")
    return whl


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_wheel_with_experiments_extra(wheel, tmp_path):
    venv = tmp_path / "venv"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    py, bindir = venv / "bin" / "python", venv / "bin"
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                   cwd=tmp_path).strip())
    # The project's installed dependencies, appended after the venv's own site-packages
    # (a plain path line: the editable tnlib's own .pth there is not processed).
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Offline: every requirement of tnlib[experiments] must already be satisfied.
    sh(py, "-m", "pip", "install", "-q", "--no-index", f"tnlib[experiments] @ {wheel.as_uri()}",
       cwd=tmp_path)
    work = tmp_path / "user"
    work.mkdir()
    env = _clean_env()
    where = sh(py, "-c", "import tnlib, tnlib.search, tnlib.models, tnlib.experiments, "
               "tnlib.configs, tnlib.paper_figures; print(tnlib.__file__)", cwd=work, env=env)
    assert Path(where.strip()).is_relative_to(site), where
    names = json.loads(sh(py, "-c", "import json; from tnlib.experiments.config import "
                          "shipped_configs; print(json.dumps(list(shipped_configs())))",
                          cwd=work, env=env))
    assert {"mps_digits", "search_planted", "core_shapes"} <= set(names), names
    for name in names:
        out = sh(bindir / "tnlib", "run", f"{name}:smoke", cwd=work, env=env)
        assert f"runs/{name}/smoke/seed0" in out, out
        meta = json.loads((work / "runs" / name / "smoke" / "seed0" / "meta.json").read_text())
        assert meta["tnlib_version"] and meta["git_commit"] is None
    sh(bindir / "tnlib", "figures", "core_shapes", "--quick", cwd=work, env=env)
    assert (work / "paper_figures_out" / "quick" / "core_shapes.png").is_file()


def test_base_install_without_extras(wheel, tmp_path):
    venv = tmp_path / "base"
    sh(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    py = venv / "bin" / "python"
    sh(py, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    code = ("import importlib.util, sys; import tnlib, tnlib.models, tnlib.search\n"
            f"present = [m for m in {EXTRA_ONLY!r} if importlib.util.find_spec(m)]\n"
            "assert not present, present\n"
            "assert 'orbax' not in sys.modules  # flax requires it; tnlib never loads it\n"
            "try:\n    import tnlib.experiments\nexcept ImportError as e:\n"
            "    assert \"pip install 'tnlib[experiments]'\" in str(e), e\n"
            "else:\n    raise AssertionError('tnlib.experiments imported without its extra')\n")
    sh(py, "-c", code, cwd=tmp_path, env=_clean_env())
