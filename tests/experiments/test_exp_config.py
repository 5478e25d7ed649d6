"""Config loading, ``--set`` overrides, config arguments and validation."""

from pathlib import Path

import ml_collections
import numpy as np
import pytest
from ml_collections import config_dict

from tnlib.experiments import config as cfg
from tnlib.experiments.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if not p.name.startswith("_"))


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = ml_collections.ConfigDict(dict(bond_dim=10, init_std=1e-2, readout="born"))
    c.model.label_site = config_dict.placeholder(int)
    c.train = ml_collections.ConfigDict(dict(lr=1e-3, batch_size=32, schedule="cosine"))
    c.train.flag = False
    return c


def test_overrides_parse_and_keep_types():
    c = cfg.apply_overrides(
        base(),
        ["train.lr=3e-3", "model.bond_dim=16", "model.readout=linear", "train.flag=True",
         "model.label_site=5", "seed=7"],
    )
    assert c.train.lr == 3e-3 and c.model.bond_dim == 16 and c.model.readout == "linear"
    assert c.train.flag is True and c.model.label_site == 5 and c.seed == 7


def test_overrides_do_not_mutate_the_input():
    c = base()
    cfg.apply_overrides(c, ["model.bond_dim=3"])
    assert c.model.bond_dim == 10


def test_int_is_accepted_for_float_and_none_for_optional():
    c = cfg.apply_overrides(base(), ["train.lr=1", "model.label_site=None"])
    assert c.train.lr == 1.0 and isinstance(c.train.lr, float)
    assert c.model.label_site is None


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        cfg.apply_overrides(base(), ["train.learning_rate=1e-3"])
    msg = str(e.value)
    assert "train.learning_rate" in msg
    for key in ("model.bond_dim", "train.lr", "train.batch_size", "seed"):
        assert key in msg


@pytest.mark.parametrize(
    "item, key",
    [("model.bond_dim=abc", "model.bond_dim"), ("model.bond_dim=2.5", "model.bond_dim"),
     ("train.flag=1", "train.flag"), ("model.bond_dim=True", "model.bond_dim"),
     ("train.lr=fast", "train.lr"), ("model.bond_dim=None", "model.bond_dim")],
)
def test_wrong_type_names_the_key(item, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.apply_overrides(base(), [item])


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        cfg.apply_overrides(base(), ["train.lr"])


@pytest.mark.parametrize(
    "key, value",
    [("model.bond_dim", 0), ("train.batch_size", 0), ("train.lr", 0.0), ("train.lr", -1e-3),
     ("train.schedule", "linear"), ("seed", -1)],
)
def test_impossible_values_name_the_key(key, value):
    c = base()
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.validate(c)


def test_validate_choices():
    c = base()
    c.task = "regression"
    with pytest.raises(ConfigError, match="task"):
        cfg.validate(c, choices={"task": ["classification"]})


def test_parse_spec():
    assert cfg.parse_spec("configs/a.py") == ("configs/a.py", None)
    assert cfg.parse_spec("configs/a.py:smoke") == ("configs/a.py", "smoke")
    assert cfg.parse_spec("configs/a.py:chi=20,smoke") == ("configs/a.py", "chi=20,smoke")
    assert cfg.parse_spec("configs/a.py:") == ("configs/a.py", None)


def test_parse_arg():
    defaults = {"smoke": False, "chi": 20}
    assert cfg.parse_arg(None, defaults) == defaults
    assert cfg.parse_arg("chi=32,smoke", defaults) == {"smoke": True, "chi": 32}
    with pytest.raises(ConfigError, match="chi=<int>"):
        cfg.parse_arg("bond=3", defaults)
    with pytest.raises(ConfigError, match="chi"):
        cfg.parse_arg("chi=big", defaults)
    with pytest.raises(ConfigError, match="needs a value"):
        cfg.parse_arg("chi", defaults)


def test_run_dir_is_sanitized():
    assert cfg.run_dir("configs/mps_mnist.py", "chi=20", 3) == Path("runs/mps_mnist/chi=20/seed3")
    assert cfg.run_dir("configs/x.py", None, 0) == Path("runs/x/default/seed0")
    assert cfg.run_dir("c/x.py", "a/../b c", 1).parts[2] == "a_.._b_c"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_configs_load_and_validate(path, arg):
    module = cfg.load_config_module(path)
    assert "tnlib run configs/" in module.__doc__
    c = module.get_config(arg)
    from tnlib.experiments import TASKS, get_task

    if c.task in TASKS:  # each task owns its rules (a sweep's init_std may be 0)
        get_task(c.task).check_config(c)
    else:  # a task module not registered yet: types only
        cfg.validate(c, rules=())
    with pytest.raises(ConfigError, match="unknown config argument"):
        module.get_config("no_such_option")


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfg.load_config(str(tmp_path / "missing.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="get_config"):
        cfg.load_config(str(tmp_path / "empty.py"))


# --------------------------------------------------------------------------- reliability:
# every way a config can be wrong stops the run before any work, naming the key.

DIGITS = ROOT / "configs" / "mps_digits.py"


def digits(arg="smoke", **changes):
    """The digits smoke config with ``changes`` ({dotted key: value}) written in directly,
    as a config file would (bypassing --set's type checks)."""
    c = cfg.load_config_module(DIGITS).get_config(arg)
    with c.ignore_type():
        for key, value in changes.items():
            *parents, leaf = key.split(".")
            node = c
            for p in parents:
                node = node[p]
            node[leaf] = value
    return c


@pytest.mark.parametrize(
    "key, value, needle",
    [("model.bond_dim", 2.5, "expected an int"), ("model.bond_dim", True, "expected an int"),
     ("train.lr", "3e-3", "expected a float"), ("train.lr", float("inf"), "a finite float"),
     ("train.lr", float("nan"), "a finite float"), ("train.num_epochs", 2.0, "expected an int"),
     ("seed", 2**40, "[0, 2**32)"), ("model.init_std", -1.0, "a float >= 0"),
     ("train.lr", None, "may not be None"), ("train.batch_size", 300, "exceeds data.n_train"),
     ("train.augment_shift", -1.0, "a float >= 0"),
     ("train.augment_shift", "1", "expected a float")],
)
def test_config_file_errors_name_the_key(key, value, needle):
    from tnlib.experiments import classification

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        classification.check_config(digits(**{key: value}))
    assert needle in str(e.value)


def test_inf_from_the_command_line_is_rejected():
    c = cfg.apply_overrides(digits(), ["train.lr=1e999"])  # Python reads 1e999 as inf
    with pytest.raises(ConfigError, match=r"train\.lr=inf .*finite"):
        cfg.validate(c)


@pytest.mark.parametrize("key", ["train.num_epoch", "model.bond_dimension", "trian", "model.nme"])
def test_unknown_keys_in_a_config_file(key):
    from tnlib.experiments import classification

    c = digits()
    *parents, leaf = key.split(".")
    node = c
    for p in parents:
        node = node[p]
    node[leaf] = 3
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'"):
        classification.check_config(c)


def test_missing_required_key():
    from tnlib.experiments import classification

    c = digits()
    del c.train["lr"]
    with pytest.raises(ConfigError, match=r"train\.lr is missing"):
        classification.check_config(c)


@pytest.mark.parametrize(
    "changes, key, needle",
    [({"train.warmup_steps": 16}, "train.warmup_steps", "smaller than the run's 16 steps"),
     ({"model.label_site": 65}, "label_site", "must be an int in [0, 64]"),
     ({"data.n_train": None, "train.batch_size": 2000}, "train.batch_size",
      "exceeds the 1437 training examples"),
     ({"data.n_test": 1000}, "data.n_test", "exceeds the 360 test examples"),
     ({"data.test_fraction": 1.5}, "test_fraction", "must lie in (0, 1)")],
)
def test_combinations_known_after_loading_stop_before_any_work(changes, key, needle, tmp_path):
    """Checks that need the data (its size, the number of sites) still run before the run
    directory is created."""
    from tnlib.experiments import classification

    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as e:
        classification.train_and_evaluate(digits(**changes), tmp_path / "w")
    assert needle in str(e.value)
    assert not (tmp_path / "w").exists()


def test_augment_shift_needs_square_images(tmp_path, monkeypatch):
    from tnlib.experiments import classification, data

    def loader(cfg):  # 63-pixel examples: not a square image
        rng = np.random.default_rng(0)
        return {k: (rng.random((n, 63), dtype=np.float32), np.arange(n, dtype=np.int32) % 10)
                for k, n in (("train", 200), ("test", 50))}

    monkeypatch.setattr(data, "from_config", loader)
    with pytest.raises(ConfigError, match=r"train\.augment_shift=1 needs square images.*63"):
        classification.train_and_evaluate(digits(**{"train.augment_shift": 1}), tmp_path / "w")
    assert not (tmp_path / "w").exists()


def test_mup_flag_is_a_checked_bool():
    from tnlib.experiments import classification

    root = Path(__file__).resolve().parents[2]
    c, _, _ = cfg.load_config(f"{root}/configs/structured_mlp_mnist.py:smoke")
    assert c.train.mup is True
    classification.check_config(cfg.apply_overrides(c, ["train.mup=False"]))
    with pytest.raises(ConfigError, match="train.mup"):
        cfg.apply_overrides(c, ["train.mup=1"])
