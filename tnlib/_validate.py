"""Argument checks shared by the format modules (static: they read Python values and
array shapes only, so they work under jit)."""

from __future__ import annotations

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
