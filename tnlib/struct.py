"""Frozen dataclasses registered as JAX pytrees.

Every tnlib format is a ``pytree_dataclass``: array-valued fields are pytree
children, fields listed in ``static`` are hashable aux data. Unflattening builds
the object with ``object.__new__`` and never re-runs ``__init__``; that is what
lets ``jax.eval_shape``, ``jax.tree.map``, ``vmap`` and ``jacobian`` put tracers,
``ShapeDtypeStruct`` or ``None`` into the leaves. Validation belongs in the
constructors of each format module (``random``, ``from_dense``, ...), not here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TypeVar

import jax

T = TypeVar("T")

__all__ = ["pytree_dataclass", "field_names"]


def pytree_dataclass(cls: type[T] | None = None, *, static: Iterable[str] = ()):
    """Turn ``cls`` into a frozen dataclass registered as a JAX pytree.

    Args:
      cls: the class to decorate (the decorator may also be called with only
        keyword arguments).
      static: names of fields holding hashable structure (tuples of ints, strings)
        that go to the treedef instead of being traced.

    Example::

        @pytree_dataclass(static=("center",))
        class Chain:
            cores: tuple
            center: int | None = None
    """
    if isinstance(static, str):  # tuple("cores") would be its letters
        raise TypeError(f"static must be an iterable of field names, got the string {static!r}; "
                        f"write static=({static!r},)")
    static = tuple(static)

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        names = tuple(f.name for f in dataclasses.fields(cls))
        unknown = set(static) - set(names)
        if unknown:
            raise ValueError(f"static names {sorted(unknown)} are not fields of {cls.__name__}")
        children = tuple(n for n in names if n not in static)

        def flatten_with_keys(obj):
            kids = tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in children)
            return kids, tuple(getattr(obj, n) for n in static)

        def flatten(obj):
            return tuple(getattr(obj, n) for n in children), tuple(getattr(obj, n) for n in static)

        def unflatten(aux, kids):
            obj = object.__new__(cls)
            for n, v in zip(children, kids, strict=True):
                object.__setattr__(obj, n, v)
            for n, v in zip(static, aux, strict=True):
                object.__setattr__(obj, n, v)
            return obj

        jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
        cls.__tnlib_static__ = static
        return cls

    return wrap if cls is None else wrap(cls)


def field_names(obj) -> tuple[str, ...]:
    """Names of the dataclass fields of a tnlib object (children and static)."""
    return tuple(f.name for f in dataclasses.fields(obj))
