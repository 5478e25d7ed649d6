"""Experiment configs: load ``get_config(arg)`` from a file, apply ``--set`` overrides, validate.

Every function here is pure (apart from importing the config file) and raises
:class:`ConfigError` with a message meant for the person at the command line.

A config file is a Python module with ``get_config(arg: str | None) -> ConfigDict``;
``arg`` is the text after the colon in ``configs/name.py:arg``, a comma-separated
list of tokens such as ``smoke`` or ``chi=20,smoke`` that the module parses with
:func:`parse_arg`.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

__all__ = [
    "ConfigError",
    "apply_overrides",
    "check_keys",
    "find_config",
    "flat_keys",
    "load_config",
    "load_config_module",
    "parse_arg",
    "parse_override",
    "parse_spec",
    "parse_value",
    "run_dir",
    "shipped_configs",
    "validate",
]


class ConfigError(ValueError):
    """A config, an override or a config argument that cannot be used as given."""


# --------------------------------------------------------------------------- loading


def parse_spec(spec: str) -> tuple[str, str | None]:
    """Split ``"configs/x.py:chi=20"`` into ``("configs/x.py", "chi=20")``.

    The argument starts after the first ``.py:``; without one the whole string is
    the path and the argument is ``None``. An empty argument (``"x.py:"``) is ``None``.
    A shipped config named without a path takes its argument after the first colon:
    ``"mps_digits:smoke"`` is ``("mps_digits", "smoke")``.
    """
    head, sep, tail = spec.partition(".py:")
    if sep:
        return head + ".py", (tail or None)
    name, sep, tail = spec.partition(":")
    if sep and _is_name(name):
        return name, (tail or None)
    return spec, None


def _is_name(text: str) -> bool:
    """``text`` names a shipped config (``mps_digits``), not a path."""
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text))


def shipped_configs() -> dict[str, Path]:
    """The configs that ship with tnlib (the package :mod:`tnlib.configs`), by name."""
    import tnlib.configs

    folder = Path(tnlib.configs.__file__).parent
    return {p.stem: p for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")}


def find_config(path: str | Path) -> Path:
    """The config file ``path`` names.

    A file that exists (absolute, or relative to the current directory) is used as is;
    otherwise a shipped config is looked up by name: ``mps_digits``, or the
    checkout-relative ``configs/mps_digits.py``, is ``tnlib/configs/mps_digits.py``
    wherever tnlib is installed.
    """
    p = Path(path)
    if p.is_file():
        return p
    name = p.stem if (p.suffix == ".py" and p.parent == Path("configs")) else str(path)
    shipped = shipped_configs() if _is_name(name) else {}
    if name in shipped:
        return shipped[name]
    raise ConfigError(f"config file not found: {path} (a .py file, or one of the shipped "
                      f"configs: {', '.join(shipped_configs())})")


def load_config_module(path: str | Path) -> ModuleType:
    """Import the config file at ``path`` as a fresh module (by path, not by name)."""
    path = find_config(path)
    name = "tnlib_config_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import config file {path} (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
        raise ConfigError(f"{path} defines no get_config(arg) function")
    return module


def load_config(spec: str) -> tuple[ml_collections.ConfigDict, str, str | None]:
    """Load ``CONFIG[:ARG]``; returns ``(config, path, arg)``."""
    path, arg = parse_spec(spec)
    config = load_config_module(path).get_config(arg)
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config must return an ml_collections.ConfigDict")
    return config, path, arg


def parse_arg(arg: str | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Parse a config argument such as ``"chi=20,smoke"`` against ``defaults``.

    A bare token ``name`` sets a boolean option to True; ``name=value`` sets an
    option to ``value`` parsed with :func:`parse_value` and checked against the
    default's type. Unknown tokens are an error that lists the valid ones.

    >>> parse_arg("chi=32,smoke", {"chi": 20, "smoke": False})
    {'chi': 32, 'smoke': True}
    """
    opts = dict(defaults)
    if not arg:
        return opts
    for token in (t.strip() for t in arg.split(",")):
        if not token:
            continue
        name, sep, text = token.partition("=")
        if name not in defaults:
            valid = ", ".join(
                f"{k}" if isinstance(v, bool) else f"{k}=<{type(v).__name__}>"
                for k, v in defaults.items()
            )
            raise ConfigError(f"unknown config argument {token!r}; valid: {valid}")
        default = defaults[name]
        if not sep:
            if not isinstance(default, bool):
                raise ConfigError(f"config argument {name!r} needs a value: {name}=...")
            opts[name] = True
        else:
            opts[name] = _coerce(name, parse_value(text), type(default), text)
    return opts


# --------------------------------------------------------------------------- overrides


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All dotted leaf keys of ``config`` (nested ConfigDicts are descended into)."""
    keys = []
    for key in sorted(config.keys()):
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, f"{prefix}{key}."))
        else:
            keys.append(prefix + key)
    return keys


def parse_value(text: str) -> Any:
    """The Python literal ``text`` spells (``3``, ``1e-3``, ``True``, ``'a'``), else ``text``."""
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_override(item: str) -> tuple[str, str]:
    """Split ``"train.lr=3e-3"`` into ``("train.lr", "3e-3")``."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value")
    return key.strip(), text


def _coerce(key: str, value: Any, want: type | None, text: str) -> Any:
    """Check ``value`` against the field type ``want``; ints are accepted for floats."""
    if want is None:  # the field has no declared type (a plain None default)
        return value
    if want is str:
        return value if isinstance(value, str) else text.strip()
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected True or False, got {text.strip()!r}")
    if want is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an int, got {text.strip()!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{key}: expected {want.__name__}, got {text.strip()!r}")
    return value


def _field_type(config: ml_collections.ConfigDict, key: str) -> tuple[type | None, bool]:
    """(type of the field at dotted ``key``, whether it may be None)."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    value = node[leaf]
    want = node.get_type(leaf)
    if want is type(None):  # a plain None default: no declared type, anything goes
        return None, True
    nullable = value is None  # placeholders (config_dict.placeholder(int)) are nullable
    return want, nullable


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Iterable[str]
) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``key=value`` overrides applied (dotted keys).

    Unknown keys raise :class:`ConfigError` listing every valid key. A value must
    match the existing field's type (an int is accepted for a float field); ``None``
    is accepted only for optional fields (those whose current value is ``None``).
    """
    config = copy.deepcopy(config)  # deepcopy keeps placeholder types; to_dict() would not
    valid = flat_keys(config)
    for item in overrides:
        key, text = parse_override(item)
        if key not in valid:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")
        want, nullable = _field_type(config, key)
        value = parse_value(text)
        if value is None and not nullable and text.strip() == "None":
            raise ConfigError(f"{key}: may not be None")
        if not (value is None and nullable):
            value = _coerce(key, value, want, text)
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config


# --------------------------------------------------------------------------- validation

# (dotted key, predicate, what a valid value looks like). A rule applies only when
# the config has the key and the value is not None (None means "not used").
Rule = tuple[str, Callable[[Any], bool], str]

RULES: tuple[Rule, ...] = (
    ("seed", lambda v: 0 <= v < 2**32, "an int in [0, 2**32)"),
    ("model.bond_dim", lambda v: v >= 1, "an int >= 1"),
    ("model.local_dim", lambda v: v >= 2, "an int >= 2"),
    ("model.init_std", lambda v: v >= 0, "a float >= 0 (0: identity cores)"),
    ("model.label_site", lambda v: v >= 0, "None (the middle site) or an int >= 0"),
    ("data.downsample", lambda v: v >= 1, "an int >= 1"),
    ("data.n_train", lambda v: v >= 1, "None (all) or an int >= 1"),
    ("data.n_test", lambda v: v >= 1, "None (all) or an int >= 1"),
    ("train.batch_size", lambda v: v >= 1, "an int >= 1"),
    ("train.eval_batch_size", lambda v: v >= 1, "an int >= 1"),
    ("train.num_epochs", lambda v: v >= 1, "an int >= 1"),
    ("train.lr", lambda v: v > 0, "a float > 0"),
    ("train.end_lr_factor", lambda v: 0 <= v <= 1, "a float in [0, 1]"),
    ("train.warmup_steps", lambda v: v >= 0, "an int >= 0"),
    ("train.weight_decay", lambda v: v >= 0, "a float >= 0"),
    ("train.grad_clip_norm", lambda v: v >= 0, "a float >= 0 (0 turns clipping off)"),
    ("train.schedule", lambda v: v in ("constant", "cosine", "logspace_epochs"),
     "'constant', 'cosine' or 'logspace_epochs'"),
    ("train.optimizer", lambda v: v in ("adam", "sgd"), "'adam' or 'sgd'"),
    ("train.momentum", lambda v: 0 <= v < 1, "a float in [0, 1)"),
    ("train.decay_epochs", lambda v: v >= 1, "an int >= 1"),
    ("data.pad_to", lambda v: v >= 1, "None or an int >= 1 (the padded image side)"),
    ("data.scale", lambda v: v > 0, "a float > 0"),
    ("train.log_every", lambda v: v >= 1, "an int >= 1"),
    ("train.eval_every", lambda v: v >= 0, "an int >= 0 (0: only at the end)"),
    ("train.checkpoint_every", lambda v: v >= 1, "an int >= 1"),
    ("train.keep_checkpoints", lambda v: v >= 1, "an int >= 1"),
    ("train.augment_shift", lambda v: v >= 0, "a float >= 0 (0 turns augmentation off)"),
    ("train.label_smoothing", lambda v: 0 <= v < 1, "a float in [0, 1)"),
    ("train.mixup", lambda v: v >= 0, "a float >= 0 (mixup's Beta alpha; 0 turns it off)"),
)


# Dotted key -> the type its value must have (when present and not None). An int is
# accepted for a float; a bool is never accepted for an int or a float; floats must
# be finite (``1e999`` parses as inf) and held by float32, the dtype runs compute in
# (``1e-320`` passes ``> 0`` but is 0.0 in float32).
TYPES: dict[str, type] = {
    "task": str, "seed": int,
    "data.name": str, "data.n_train": int, "data.n_test": int, "data.downsample": int,
    "data.use_validation_for_training": bool, "data.test_fraction": float,
    "data.split_seed": int,
    "model.name": str, "model.bond_dim": int, "model.local_dim": int, "model.label_site": int,
    "model.init_std": float, "model.readout": str, "model.feature_map": str,
    "train.batch_size": int, "train.eval_batch_size": int, "train.num_epochs": int,
    "train.lr": float, "train.schedule": str, "train.end_lr_factor": float,
    "train.warmup_steps": int, "train.weight_decay": float, "train.grad_clip_norm": float,
    "train.log_every": int, "train.eval_every": int, "train.checkpoint_every": int,
    "train.keep_checkpoints": int, "train.mup": bool,
    "train.augment_shift": float, "train.optimizer": str, "train.momentum": float,
    "train.decay_epochs": int, "train.label_smoothing": float, "train.mixup": float,
    "data.pad_to": int, "data.scale": float, "data.center": bool,
}


FLOAT32_TINY, FLOAT32_MAX = 1.1754943508222875e-38, 3.4028234663852886e38  # normal range


def _type_problem(value: Any, want: type) -> str | None:
    """Why ``value`` is not a ``want`` (None when it is)."""
    if want is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "a float"
        if not math.isfinite(value):
            return "a finite float"
        if value != 0 and not FLOAT32_TINY <= abs(value) <= FLOAT32_MAX:
            # runs compute in float32: 1e-320 would be 0 there, 1e39 inf
            return (f"a float that float32 holds (0, or magnitude in [{FLOAT32_TINY:.4g}, "
                    f"{FLOAT32_MAX:.4g}]); runs compute in float32")
        return None
    if want is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an int"
    if want is bool:
        return None if isinstance(value, bool) else "True or False"
    return None if isinstance(value, want) else f"a {want.__name__}"


def check_keys(config: ml_collections.ConfigDict, known: Mapping[str, Iterable[str]]) -> None:
    """Raise :class:`ConfigError` for a key the task does not read (a typo in a config file).

    ``known`` maps a section (``""`` for the top level, ``"train"``, ...) to its keys;
    sections not in ``known`` are not checked.
    """
    for section, keys in known.items():
        present, node = _get(config, section) if section else (True, config)
        if not present or not isinstance(node, ml_collections.ConfigDict):
            continue
        keys = sorted(keys)
        for key in sorted(node.keys()):
            if key not in keys:
                dotted = f"{section}.{key}" if section else key
                raise ConfigError(f"unknown config key {dotted!r}; "
                                  f"{section or 'the top level'} takes: {', '.join(keys)}")


def _get(config: ml_collections.ConfigDict, key: str) -> tuple[bool, Any]:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate(
    config: ml_collections.ConfigDict,
    *,
    choices: Mapping[str, Iterable[str]] = (),
    rules: Iterable[Rule] = RULES,
    types: Mapping[str, type] = TYPES,
    required: Iterable[str] = (),
) -> None:
    """Raise :class:`ConfigError` naming the first key whose value is impossible.

    Checked in this order: each key in ``required`` is present and not None; each key
    in ``types`` that is present and not None has that type (ints pass for floats,
    floats must be finite); ``choices`` maps a dotted key to its allowed values (the
    runner passes the registered tasks, data sets and models); then ``rules``.
    """
    for key in required:
        present, value = _get(config, key)
        if not present or value is None:
            what = "is missing" if not present else "may not be None"
            raise ConfigError(f"{key} {what}; the task needs it")
    for key, want in dict(types).items():
        present, value = _get(config, key)
        if present and value is not None:
            problem = _type_problem(value, want)
            if problem:
                raise ConfigError(f"{key}={value!r} has the wrong type; expected {problem}")
    for key, allowed in dict(choices).items():
        present, value = _get(config, key)
        allowed = sorted(allowed)
        if present and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(repr, allowed))}")
    for key, ok, expect in rules:
        present, value = _get(config, key)
        if not present or value is None:
            continue
        try:
            good = bool(ok(value))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"{key}={value!r} is impossible; expected {expect}")


# --------------------------------------------------------------------------- run directory


def sanitize(text: str) -> str:
    """Make ``text`` safe as one path component (keeps letters, digits and ``._,=+-``)."""
    clean = re.sub(r"[^A-Za-z0-9._,=+-]+", "_", text).strip("._")
    return clean or "_"


def run_dir(config_path: str, arg: str | None, seed: int, root: str | Path = "runs") -> Path:
    """``runs/<config stem>/<arg or 'default'>/seed<k>``."""
    return Path(root) / Path(config_path).stem / sanitize(arg or "default") / f"seed{seed}"
