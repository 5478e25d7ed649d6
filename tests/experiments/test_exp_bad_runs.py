"""Issue 26 items 5, 7 and 8 at the command line: hostile values and run directories
end in ``tnlib: error: ...`` (exit 2) naming the key, the file or the size, never in a
traceback, a silent fallback or a run that trains nothing."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tnlib.experiments import classification
from tnlib.experiments.cli import main
from tnlib.models import MPSClassifier

ROOT = Path(__file__).resolve().parents[2]
SMOKE = str(ROOT / "configs" / "mps_digits.py") + ":smoke"


def run_main(argv, capsys):
    try:
        code = main(["run", SMOKE, *argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.err


@pytest.mark.parametrize("value,needle", [
    ("1e-320", "float32"),  # passed "lr > 0" and was 0.0 in float32: trained nothing
    ("1e-40", "float32"), ("1e39", "float32"), ("1e999", "finite"),
])
def test_a_float_float32_cannot_hold_is_refused(value, needle, capsys, tmp_path):
    code, err = run_main(["--set", f"train.lr={value}", "--workdir", str(tmp_path / "w")],
                         capsys)
    assert code == 2 and err.startswith("tnlib: error: train.lr=") and needle in err
    assert not (tmp_path / "w").exists()


def test_an_empty_workdir_is_an_error_not_the_default(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["--workdir", ""], capsys)
    assert code == 2 and "--workdir is empty" in err
    assert not (tmp_path / "runs").exists()


def test_a_workdir_that_is_a_file(capsys, tmp_path):
    (tmp_path / "f").write_text("x")
    code, err = run_main(["--workdir", str(tmp_path / "f")], capsys)
    assert code == 2 and err.startswith(f"tnlib: error: workdir {tmp_path / 'f'} is a file")


def test_a_corrupt_config_json_is_an_error_naming_the_file(capsys, tmp_path):
    w = tmp_path / "w"
    (w / "checkpoints" / "8").mkdir(parents=True)
    (w / "config.json").write_text('{"task": "classifi')
    code, err = run_main(["--workdir", str(w)], capsys)
    assert code == 2 and f"cannot read {w / 'config.json'}" in err and "Traceback" not in err


def test_an_impossible_bond_dimension_is_caught_before_allocating(capsys, tmp_path):
    # before: RESOURCE_EXHAUSTED ... 4e18 bytes from XLA, a raw traceback
    code, err = run_main(["--set", "model.bond_dim=1000000000", "--workdir",
                          str(tmp_path / "w")], capsys)
    assert code == 2 and "MPSClassifier(n_sites=64, bond_dim=1000000000)" in err
    assert "TNLIB_MAX_BYTES" in err


def test_an_empty_batch_is_an_error_not_nan_parameters():
    # before: one step on an empty batch turned every parameter into NaN, silently
    model = MPSClassifier(4, 3, bond_dim=2, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = optax.adam(1e-2)
    train_step, _ = classification.make_steps(graphdef, rest, opt)
    with pytest.raises(ValueError, match="empty batch"):
        train_step(params, opt.init(params), jnp.zeros((0, 4)), jnp.zeros((0,), jnp.int32))
    new, *_ = train_step(params, opt.init(params), jnp.full((2, 4), 0.5),
                         jnp.array([0, 1]))
    assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(new))
