"""Argument checks shared by the format modules (static: they read Python values and
array shapes only, so they work under jit)."""

from __future__ import annotations


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
