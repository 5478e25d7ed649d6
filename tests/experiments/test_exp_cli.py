"""The ``tnlib`` command line: help, error paths (exit status 2, no traceback), dry run."""

from pathlib import Path

import pytest

from tnlib.experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "configs" / "mps_digits.py")


def run_main(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "argv, needle",
    [
        ([f"{DIGITS}:smoke", "--set", "train.nope=1"], "valid keys: data.n_test"),
        ([f"{DIGITS}:smoke", "--set", "model.bond_dim=ten"], "model.bond_dim"),
        ([f"{DIGITS}:smoke", "--set", "model.bond_dim=0"], "model.bond_dim=0 is impossible"),
        ([f"{DIGITS}:smoke", "--set", "train.batch_size=0"], "train.batch_size"),
        ([f"{DIGITS}:smoke", "--set", "train.lr=0"], "train.lr"),
        ([f"{DIGITS}:smoke", "--set", "data.name=cifar"], "data.name"),
        ([f"{DIGITS}:smoke", "--set", "task=regression"], "task"),
        ([f"{DIGITS}:bogus"], "unknown config argument 'bogus'"),
        ([f"{DIGITS}:smoke", "--set", "data.n_train=5000"], "data.n_train=5000 exceeds"),
        (["configs/no_such_config.py"], "config file not found"),
    ],
)
def test_errors_exit_2_with_message(argv, needle, capsys, tmp_path):
    code, out, err = run_main(["run", *argv, "--workdir", str(tmp_path / "w")], capsys)
    assert code == 2
    assert err.startswith("tnlib: error: ") and needle in err
    assert "Traceback" not in err
    assert not (tmp_path / "w").exists()  # stopped before any work


def test_help(capsys):
    code, out, _ = run_main(["--help"], capsys)
    assert code == 0 and "run" in out
    code, out, _ = run_main(["run", "--help"], capsys)
    assert code == 0
    for word in ("CONFIG[:ARG]", "--set", "--workdir", "--seed", "resumes", "smoke"):
        assert word in out
    code, _, err = run_main([], capsys)
    assert code == 2 and "usage" in err


def test_print_config_shows_default_run_dir(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_main(["run", f"{DIGITS}:chi=6,smoke", "--seed", "3",
                             "--set", "train.lr=0.01", "--print-config"], capsys)
    assert code == 0
    assert "bond_dim: 6" in out and "lr: 0.01" in out and "seed: 3" in out
    assert "workdir: runs/mps_digits/chi=6,smoke/seed3" in out
    assert not (tmp_path / "runs").exists()
