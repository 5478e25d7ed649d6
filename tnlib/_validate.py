"""Argument checks shared by the format modules (static: they read Python values and
array shapes only, so they work under jit)."""

from __future__ import annotations

import math
import os

import numpy as np


def check_int(value, name: str, low: int = 1) -> int:
    """``value`` as a Python int ``>= low`` (numpy ints accepted, bools not), or
    ValueError naming ``name``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer) or (
        value < low
    ):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def check_dims(dims, name: str = "dims") -> tuple[int, ...]:
    """``dims`` as a tuple of ints >= 1, or ValueError naming ``name``."""
    dims = tuple(dims)
    if not dims or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in dims):
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {dims}")
    return dims


def check_same_dims(a, b) -> None:
    """ValueError unless the networks ``a`` and ``b`` have the same mode sizes."""
    if a.dims != b.dims:
        raise ValueError(f"mode sizes differ: a has {a.dims}, b has {b.dims}")


def check_bonds(cores, name: str, closed: bool = False) -> None:
    """ValueError naming both sites and shapes where the right rank of a core differs
    from the left rank of the next; ``closed`` also checks the last-to-first bond."""
    L = len(cores)
    for k in range(L if closed else L - 1):
        j = (k + 1) % L
        a, b = cores[k].shape, cores[j].shape
        if a[-1] != b[0]:
            where = " (the closing bond of the ring)" if closed and j == 0 else ""
            raise ValueError(
                f"{name}: bond between site {k} and site {j}{where} does not match: "
                f"core {k} has shape {tuple(a)} (right rank {a[-1]}), core {j} has "
                f"shape {tuple(b)} (left rank {b[0]})"
            )


def rank_sequence(rank, count: int, name: str, what: str) -> tuple[int, ...]:
    """``rank`` (an int, or a sequence of ``count`` ints >= 1) as a tuple of ``count``."""
    if isinstance(rank, int) and not isinstance(rank, bool):
        ranks = (rank,) * count
    elif isinstance(rank, bool) or not hasattr(rank, "__iter__"):
        raise TypeError(f"{name} must be an int or a sequence of {count} {what}, got {rank!r}")
    else:
        ranks = tuple(rank)
        if len(ranks) != count:
            raise ValueError(f"{name} must be an int or a sequence of {count} {what}, got {ranks}")
    for r in ranks:
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"{name} entries must be ints >= 1, got {ranks}")
    return ranks


def as_inexact(x):
    """``x`` as a JAX array with a floating or complex dtype (ints become the default float)."""
    import jax.numpy as jnp

    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(jnp.result_type(float))
    return x


def check_cores(cores, name: str, ndim: int, layout: str, closed: bool = False) -> None:
    """A non-empty tuple of cores with ``ndim`` axes each (``layout`` names them) whose
    neighbouring bonds match (``closed``: the last-to-first bond too)."""
    if not isinstance(cores, tuple | list) or len(cores) == 0:
        raise ValueError(f"{name}: cores must be a non-empty tuple of arrays")
    for k, c in enumerate(cores):
        if c.ndim != ndim:
            raise ValueError(
                f"{name}: core {k} has shape {tuple(c.shape)}; expected {ndim} axes {layout}"
            )
    check_bonds(cores, name, closed=closed)


def as_key(seed, name: str = "key"):
    """A PRNG key from an int seed (Python or NumPy) or a key (typed, or raw ``uint32[2]``);
    TypeError naming ``name`` otherwise."""
    import jax
    import jax.numpy as jnp

    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return jax.random.PRNGKey(int(seed))
    dtype, shape = getattr(seed, "dtype", None), getattr(seed, "shape", None)
    if dtype is not None and shape is not None:
        if jnp.issubdtype(dtype, jax.dtypes.prng_key) and tuple(shape) == ():
            return seed
        if dtype == np.uint32 and tuple(shape) == (2,):
            return jnp.asarray(seed)
    raise TypeError(f"{name} must be an int seed or a PRNG key (jax.random.key / PRNGKey), "
                    f"got {seed!r}")


# ----------------------------------------------------------------- sizes and resource guard

MAX_BYTES_ENV = "TNLIB_MAX_BYTES"
MEMORY_FRACTION = 0.5  # of the machine's physical memory, when TNLIB_MAX_BYTES is unset


def max_bytes() -> int | None:
    """The most bytes one array may take before :func:`check_size` refuses it: the
    environment variable ``TNLIB_MAX_BYTES`` (bytes; ``0`` or ``none`` turns the guard
    off), else half the machine's physical memory (``os.sysconf``); None: no limit."""
    text = os.environ.get(MAX_BYTES_ENV, "").strip()
    if text:
        if text.lower() in ("0", "none", "off"):
            return None
        try:
            value = int(float(text))
        except ValueError:
            raise ValueError(f"{MAX_BYTES_ENV}={text!r} must be a number of bytes "
                             "(0 or 'none' turns the size guard off)") from None
        return value if value > 0 else None
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * MEMORY_FRACTION)
    except (ValueError, OSError, AttributeError):  # no sysconf: no limit
        return None


def _count(n: int) -> str:
    """``n`` for a message: exact below 10**15, else ``about 10**k`` (no float overflow)."""
    return str(n) if n < 10**15 else f"about 10**{len(str(n)) - 1}"


def _human(n: int) -> str:
    if n >= 1024**7:
        return f"{_count(n)} bytes"
    x = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if x < 1024 or unit == "EiB":
            return f"{n} {unit}" if unit == "bytes" else f"{x:.3g} {unit}"
        x /= 1024
    return f"{x:.3g} EiB"


def check_size(count, dtype, what: str) -> None:
    """ValueError naming ``what`` and the size when ``count`` elements (an int or a
    shape) of ``dtype`` would take more than :func:`max_bytes`. Static (reads Python
    ints only), so it works under jit; called before anything is allocated."""
    if not isinstance(count, int | np.integer):
        count = math.prod(int(n) for n in count)
    limit = max_bytes()
    if limit is None:
        return
    nbytes = int(count) * np.dtype(dtype).itemsize
    if nbytes > limit:
        raise ValueError(
            f"{what} would materialize {_count(int(count))} elements of {np.dtype(dtype).name} "
            f"({_human(nbytes)}), more than the limit of {_human(limit)}; set "
            f"{MAX_BYTES_ENV}=<bytes> to change the limit or {MAX_BYTES_ENV}=0 to turn it off"
        )


def check_shape(shape, name: str = "x") -> tuple[int, ...]:
    """``shape`` as a tuple, or ValueError naming ``name`` and the axis of size 0 (an
    empty tensor has no decomposition)."""
    shape = tuple(int(n) for n in shape)
    for k, n in enumerate(shape):
        if n < 1:
            raise ValueError(f"{name} has shape {shape}: axis {k} has size {n}; every "
                             "axis must have size >= 1")
    return shape


def check_float(value, name: str, dtype=np.float32) -> float:
    """``value`` as a Python float, or ValueError naming ``name`` unless it is a finite
    number that ``dtype`` represents: not NaN or inf, not overflowing to inf in
    ``dtype``, and not a nonzero value below ``dtype``'s smallest normal number (it would
    be flushed to 0, e.g. ``lr=1e-320`` in float32)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    info = np.finfo(dtype)
    if not np.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if abs(v) > float(info.max):
        raise ValueError(f"{name}={v!r} overflows {np.dtype(dtype).name} (largest "
                         f"{float(info.max):.4g})")
    if v != 0 and abs(v) < float(info.tiny):
        raise ValueError(f"{name}={v!r} is below the smallest normal {np.dtype(dtype).name} "
                         f"({float(info.tiny):.4g}) and would compute as 0")
    return v


def check_mask(mask, shape):
    """``mask`` as a real array of ``shape`` (1 observed, 0 missing), else ValueError /
    TypeError naming it (the masked decompositions of ``cp`` and ``tucker``)."""
    import jax.numpy as jnp

    mask = jnp.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"mask must have the shape of x, {tuple(shape)} (1 where observed, 0 where "
            f"missing), got {tuple(mask.shape)}"
        )
    if jnp.issubdtype(mask.dtype, jnp.complexfloating):
        raise TypeError("mask must be real (1 where observed, 0 where missing)")
    return mask
