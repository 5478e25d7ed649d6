"""Save and load tnlib objects as flat dictionaries of numpy arrays (pure functions).

``to_arrays(obj)`` turns any registered tnlib type into ``{name: np.ndarray}``;
``from_arrays(d)`` rebuilds it exactly: same type, same static structure (tree
edges, adjacency, index permutation), same array shapes, dtypes and bits. The
core writes no files; the caller does::

    np.savez(path, **serialize.to_arrays(tn))
    tn = serialize.from_arrays(np.load(path))

    ckptr = orbax.checkpoint.PyTreeCheckpointer()
    ckptr.save(path, serialize.to_arrays(tn))
    tn = serialize.from_arrays(ckptr.restore(path))

Layout of the dictionary:

- ``"__tnlib__"``: a 1-D ``uint8`` array holding UTF-8 JSON with the type name
  (a key of :data:`TYPES`), the static fields and, for every child field, its
  container layout (nested tuples/lists, ``None``) with the dtype and shape of
  each array. Bytes rather than a string array because orbax's tensorstore
  backend has no string dtype.
  The record carries a ``"crc32"`` of its own canonical JSON, so a corrupted record
  is an error, never a silently different object (records without it still load).
- one entry per array leaf, keyed by field name and position: ``"cores.0"``,
  ``"core"``, ``"factors.2"``.

Arrays whose dtype numpy does not know natively (``bfloat16`` and the other
``ml_dtypes``) are stored as unsigned-integer views of the same width, because
``np.savez`` would write them as opaque ``V2`` records; the JSON records the true
dtype and ``from_arrays`` views them back. The type table is explicit: nothing is
pickled and no name is ever imported, so loading an untrusted file can build only
the types listed in :data:`TYPES`.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from tnlib import btt, cp, network, tr, tree, tt, tucker

__all__ = ["TYPES", "FORMAT_VERSION", "META_KEY", "to_arrays", "from_arrays", "type_name"]

META_KEY = "__tnlib__"
FORMAT_VERSION = 1

# Serialized name -> class. Explicit on purpose: no import by name, no pickle.
TYPES: dict[str, type] = {
    "tt.TensorTrain": tt.TensorTrain,
    "tt.TTMatrix": tt.TTMatrix,
    "tucker.Tucker": tucker.Tucker,
    "tree.TreeTN": tree.TreeTN,
    "cp.CP": cp.CP,
    "tr.TensorRing": tr.TensorRing,
    "network.Network": network.Network,
    "btt.LowRank": btt.LowRank,
    "btt.Kronecker": btt.Kronecker,
    "btt.BlockTT": btt.BlockTT,
}
_NAMES = {cls: name for name, cls in TYPES.items()}


def type_name(obj_or_cls) -> str:
    """The serialized name of a tnlib type (``"tt.TensorTrain"``, ...)."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    if cls not in _NAMES:
        raise TypeError(
            f"obj: cannot serialize type {cls.__module__}.{cls.__qualname__}; "
            f"known tnlib types: {', '.join(TYPES)}"
        )
    return _NAMES[cls]


# ----------------------------------------------------------------------------- dtypes


def _dtype_name(dtype: np.dtype) -> str:
    return np.dtype(dtype).name


def _dtype_from_name(name: str, key: str) -> np.dtype:
    """Inverse of ``_dtype_name`` for numpy's and ml_dtypes' dtypes, by table, not import."""
    extra = getattr(ml_dtypes, name, None)
    if extra is not None and isinstance(extra, type) and name.isidentifier():
        try:
            return np.dtype(extra)
        except TypeError:
            pass
    try:
        dt = np.dtype(name)
    except TypeError:
        raise ValueError(f"{key}: unknown dtype {name!r} in the {META_KEY} record") from None
    if dt.kind not in "biufc":
        raise ValueError(f"{key}: dtype {name!r} is not a numeric array dtype")
    return dt


def _is_native(dtype: np.dtype) -> bool:
    """numpy writes and reads this dtype faithfully (ml_dtypes' types have kind 'V')."""
    return dtype.kind in "biufc"


def _storage(x: np.ndarray) -> np.ndarray:
    if _is_native(x.dtype):
        return x
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


# ----------------------------------------------------------------------------- encode


def _encode_static(value: Any, field: str) -> Any:
    """JSON for a hashable static value: None, bool, int, float, str and tuples of them."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is tuple:
        return [_encode_static(v, field) for v in value]
    raise TypeError(
        f"static field {field!r}: cannot encode {type(value).__name__} {value!r}; "
        "expected None, bool, int, float, str or (nested) tuples of them"
    )


def _decode_static(value: Any, field: str) -> Any:
    # Static fields are hashable, so they never hold lists: every JSON list was a tuple.
    if isinstance(value, list):
        return tuple(_decode_static(v, field) for v in value)
    if isinstance(value, dict):
        raise ValueError(f"d[{META_KEY!r}]: static field {field!r} holds a JSON object {value!r}; "
                         "static values are None, bool, int, float, str or lists of them")
    return value


def _encode_child(value: Any, key: str, out: dict[str, np.ndarray]) -> Any:
    """Layout of a child field; array leaves go into ``out`` under ``key``."""
    if value is None:
        return None
    if isinstance(value, tuple | list):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [_encode_child(v, f"{key}.{i}", out) for i, v in enumerate(value)]}
    if isinstance(value, jax.Array | np.ndarray | np.generic):
        try:
            arr = np.asarray(jax.device_get(value))
        except (TypeError, jax.errors.ConcretizationTypeError) as e:
            raise TypeError(f"{key}: cannot serialize a traced array (call outside jit)") from e
        out[key] = _storage(arr)
        return {"array": key, "dtype": _dtype_name(arr.dtype), "shape": list(arr.shape)}
    raise TypeError(
        f"{key}: cannot serialize a {type(value).__name__}; children must be arrays, "
        "tuples or lists of arrays, or None"
    )


def to_arrays(obj) -> dict[str, np.ndarray]:
    """``{name: np.ndarray}`` holding ``obj`` exactly (see the module docstring for the layout).

    Args:
      obj: an instance of a type in :data:`TYPES` with concrete (not traced) arrays;
        batched (vmapped) objects work, their leading axes are kept.

    Raises:
      TypeError: ``obj`` is not a registered tnlib type, or holds a traced array.
    """
    name = type_name(obj)
    cls = type(obj)
    static = tuple(getattr(cls, "__tnlib_static__", ()))
    out: dict[str, np.ndarray] = {}
    children, statics = {}, {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in static:
            statics[f.name] = _encode_static(value, f.name)
        else:
            children[f.name] = _encode_child(value, f.name, out)
    meta = {"format": "tnlib.serialize", "version": FORMAT_VERSION, "type": name,
            "static": statics, "children": children}
    if META_KEY in out:  # a field named like the record itself
        raise TypeError(f"field name {META_KEY!r} is reserved")
    meta["crc32"] = _crc(meta)
    out[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    return out


_META_FIELDS = {"format", "version", "type", "static", "children", "crc32"}


def _crc(meta: dict) -> int:
    """CRC-32 of the canonical JSON of the record without its ``"crc32"`` entry."""
    body = {k: v for k, v in meta.items() if k != "crc32"}
    return zlib.crc32(json.dumps(body, sort_keys=True).encode())


# ----------------------------------------------------------------------------- decode


def _read_meta(d: Mapping[str, Any]) -> dict[str, Any]:
    if META_KEY not in d:
        raise ValueError(f"d: no {META_KEY!r} entry; not written by tnlib.serialize.to_arrays")
    raw = np.asarray(d[META_KEY])
    try:
        if raw.dtype == np.uint8 and raw.ndim == 1:
            text = raw.tobytes().decode("utf-8")
        elif raw.ndim == 0 and raw.dtype.kind in "SU":
            item = raw.item()
            text = item.decode("utf-8") if isinstance(item, bytes) else item
        else:
            raise ValueError(f"d[{META_KEY!r}]: expected a 1-D uint8 array of JSON, got "
                             f"{raw.dtype} of shape {raw.shape}")
    except UnicodeDecodeError as e:
        raise ValueError(f"d[{META_KEY!r}]: not UTF-8 text ({e})") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"d[{META_KEY!r}]: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "tnlib.serialize":
        raise ValueError(f"d[{META_KEY!r}]: not a tnlib.serialize record")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"d[{META_KEY!r}]: format version {meta.get('version')!r}; this "
                         f"tnlib reads version {FORMAT_VERSION}")
    unknown = sorted(set(meta) - _META_FIELDS)
    if unknown:
        raise ValueError(f"d[{META_KEY!r}]: unknown record entries {unknown}")
    for part in ("static", "children"):
        if not isinstance(meta.get(part), dict):
            raise ValueError(f"d[{META_KEY!r}]: {part!r} must be a JSON object, got "
                             f"{meta.get(part)!r}")
    return meta


def _check_crc(meta: dict) -> None:
    if "crc32" in meta and meta["crc32"] != _crc(meta):
        raise ValueError(f"d[{META_KEY!r}]: checksum mismatch (crc32 {meta['crc32']!r}, "
                         f"content {_crc(meta)}): the record is corrupted")


def _bad_layout(layout, field: str):
    return ValueError(f"d[{META_KEY!r}]: malformed layout {layout!r} of child field {field!r}")


def _decode_child(layout: Any, d: Mapping[str, Any], used: set[str], to_jax: bool,
                  field: str) -> Any:
    if layout is None:
        return None
    if not isinstance(layout, dict):
        raise _bad_layout(layout, field)
    for kind, make in (("tuple", tuple), ("list", list)):
        if kind in layout:
            if set(layout) != {kind} or not isinstance(layout[kind], list):
                raise _bad_layout(layout, field)
            return make(_decode_child(v, d, used, to_jax, field) for v in layout[kind])
    if set(layout) != {"array", "dtype", "shape"} or not isinstance(layout["array"], str) or (
            not isinstance(layout["dtype"], str)) or not isinstance(layout["shape"], list) or (
            not all(type(n) is int and n >= 0 for n in layout["shape"])):
        raise _bad_layout(layout, field)
    key = layout["array"]
    if key not in d:
        raise ValueError(f"d: missing array {key!r} (the {META_KEY} record lists it)")
    used.add(key)
    dtype = _dtype_from_name(layout["dtype"], key)
    arr = np.asarray(d[key])
    want_store = np.dtype(f"u{dtype.itemsize}") if not _is_native(dtype) else dtype
    if arr.dtype != want_store or list(arr.shape) != list(layout["shape"]):
        raise ValueError(
            f"{key}: expected dtype {want_store} and shape {tuple(layout['shape'])} as "
            f"recorded, got {arr.dtype} and {arr.shape}"
        )
    if not _is_native(dtype):
        arr = arr.view(dtype)
    if not to_jax:
        return arr
    if dtype.itemsize == 8 and dtype.kind in "iuf" or dtype == np.complex128:
        if not jax.config.jax_enable_x64:
            raise ValueError(
                f"{key}: dtype {dtype} needs jax_enable_x64 (JAX would silently narrow it); "
                "enable it or pass to_jax=False for numpy arrays"
            )
    return jnp.asarray(arr, dtype=dtype)


def from_arrays(d: Mapping[str, Any], *, to_jax: bool = True):
    """Rebuild the object ``to_arrays`` encoded in ``d`` (a dict, ``np.load``'s NpzFile or
    an orbax restore).

    Args:
      d: mapping from names to arrays, with the ``"__tnlib__"`` record.
      to_jax: return ``jax.Array`` leaves (default) or the numpy arrays as stored.

    Raises:
      ValueError: no or malformed record, an unknown type name, a missing array, an
        array whose dtype or shape differs from the record, an unexpected extra
        entry, or a 64-bit array with ``to_jax=True`` while ``jax_enable_x64`` is off.
    """
    meta = _read_meta(d)
    name = meta.get("type")
    if not isinstance(name, str) or name not in TYPES:
        raise ValueError(f"d: unknown type name {name!r}; known: {', '.join(TYPES)}")
    cls = TYPES[name]
    static = tuple(getattr(cls, "__tnlib_static__", ()))
    fields = [f.name for f in dataclasses.fields(cls)]
    want = {"static": set(static), "children": set(fields) - set(static)}
    for part, names in want.items():
        got = set(meta.get(part, {}))
        if got != names:
            raise ValueError(f"d: {name} record has {part} fields {sorted(got)}, "
                             f"expected {sorted(names)}")
    _check_crc(meta)
    used: set[str] = set()
    obj = object.__new__(cls)  # like pytree unflatten: never re-run __init__
    for f in fields:
        if f in static:
            value = _decode_static(meta["static"][f], f)
        else:
            value = _decode_child(meta["children"][f], d, used, to_jax, f)
        object.__setattr__(obj, f, value)
    extra = sorted(set(d.keys()) - used - {META_KEY})
    if extra:
        raise ValueError(f"d: unexpected entries {extra} not listed in the {META_KEY} record")
    return obj
