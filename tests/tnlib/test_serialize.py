"""tnlib.serialize: every tnlib type round-trips exactly (arrays bit for bit, dtypes, static
structure) through ``np.savez`` / ``np.load`` and through orbax's PyTreeCheckpointer."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp
import pytest
from dense_checks import F64

from tnlib import btt, cp, network, serialize, tr, tree, tt, tucker

DTYPES = {"float32": np.float32, "float64": np.float64, "complex128": np.complex128,
          "bfloat16": ml_dtypes.bfloat16}


def _filled(make):
    """``make()``'s structure (from ``jax.eval_shape``: nothing is compiled) with random
    float64 numpy leaves."""
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape), jax.eval_shape(make))


@functools.cache
def objects():
    """One small instance of each registered type, with non-trivial static structure."""
    k = jax.random.PRNGKey(0)
    makers = {
        "tt.TensorTrain": lambda: tt.random(k, (2, 3, 2), 2, F64),
        "tt.TTMatrix": lambda: tt.random(k, (2, 3), 2, F64, col_dims=(3, 2)),
        "tucker.Tucker": lambda: tucker.random(k, (3, 4, 2), (2, 2, 1), F64),
        "tree.TreeTN": lambda: tree.random(k, (2, 3, 2, 2), 2, tree=((0, 2), (1, 3)), dtype=F64),
        "cp.CP": lambda: cp.random(k, (3, 2, 4), 2, F64),
        "tr.TensorRing": lambda: tr.random(k, (2, 3, 2), 2, F64),
        "network.Network": lambda: network.random(k, (3, 2, 2), [[2, 2, 1], [2, 3, 3], [1, 3, 2]],
                                                  F64, perm=(2, 0, 1)),
        "btt.LowRank": lambda: btt.random(k, (6, 4), 2, F64, kind="lowrank"),
        "btt.Kronecker": lambda: btt.random(k, ((2, 3), (2, 2)), 1, F64, kind="kronecker"),
        "btt.BlockTT": lambda: btt.random(k, ((2, 3), (3, 2)), 2, F64),
    }
    return {name: _filled(make) for name, make in makers.items()}


def cast(obj, name):
    """``obj`` with ``jax.Array`` leaves of dtype ``name`` (complex: a non-zero imaginary part)."""
    dtype = DTYPES[name]
    if name == "complex128":
        return jax.tree.map(lambda a: jnp.asarray((a + 1j * a * a).astype(dtype)), obj)
    return jax.tree.map(lambda a: jnp.asarray(a.astype(dtype)), obj)


def assert_identical(a, b):
    """Same type, same treedef (static aux data included), same dtypes and bits."""
    assert type(a) is type(b)
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for f in dataclasses.fields(a):
        if f.name in type(a).__tnlib_static__:
            assert getattr(a, f.name) == getattr(b, f.name), f.name
            assert type(getattr(a, f.name)) is type(getattr(b, f.name)), f.name
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        width = np.dtype(f"u{x.dtype.itemsize}") if x.dtype.itemsize <= 8 else None
        if width is None:  # complex128: compare the two float64 halves bitwise
            x, y, width = x.view(np.float64), y.view(np.float64), np.dtype(np.uint64)
        np.testing.assert_array_equal(x.view(width), y.view(width))


def test_registry_covers_every_exported_type():
    import tnlib

    exported = {getattr(tnlib, n) for n in tnlib.__all__ if isinstance(getattr(tnlib, n), type)}
    exported |= {btt.LowRank, btt.Kronecker, btt.BlockTT}
    assert exported == set(serialize.TYPES.values())
    assert set(objects()) == set(serialize.TYPES)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_savez_and_orbax_round_trip_every_type(dtype, tmp_path):
    ckptr = ocp.PyTreeCheckpointer()
    objs = {name: cast(obj, dtype) for name, obj in objects().items()}
    for name, obj in objs.items():
        d = serialize.to_arrays(obj)
        assert json.loads(d[serialize.META_KEY].tobytes())["type"] == name
        assert all(isinstance(v, np.ndarray) for v in d.values())
        assert_identical(serialize.from_arrays(d), obj)

        np.savez(tmp_path / f"{name}.npz", **d)
        with np.load(tmp_path / f"{name}.npz") as f:
            assert_identical(serialize.from_arrays(f), obj)
    # orbax: one checkpoint holding every type (one save keeps the test fast)
    ckptr.save(tmp_path / "orbax", {n: serialize.to_arrays(o) for n, o in objs.items()})
    restored = ckptr.restore(tmp_path / "orbax")
    for name, obj in objs.items():
        assert_identical(serialize.from_arrays(restored[name]), obj)


def test_numpy_output_batched_objects_and_one_mode_tree():
    batch = _filled(lambda: jax.vmap(lambda k: tt.random(k, (2, 3), 2, F64))(
        jax.random.split(jax.random.PRNGKey(0), 3)))
    back = serialize.from_arrays(serialize.to_arrays(batch), to_jax=False)
    assert all(isinstance(c, np.ndarray) for c in back.cores)
    assert_identical(back, batch)
    assert back.cores[0].shape == (3, 1, 2, 2)
    one = _filled(lambda: tree.random(jax.random.PRNGKey(1), (3,), 1, dtype=F64))  # tree: 0
    assert_identical(serialize.from_arrays(serialize.to_arrays(one)), one)


def test_errors_name_the_problem():
    d = serialize.to_arrays(objects()["tt.TensorTrain"])
    with pytest.raises(ValueError, match=r"missing array 'cores\.1'"):
        serialize.from_arrays({k: v for k, v in d.items() if k != "cores.1"})
    with pytest.raises(ValueError, match="unexpected entries"):
        serialize.from_arrays({**d, "extra": np.zeros(2)})
    with pytest.raises(ValueError, match=r"cores\.0: expected dtype float64 and shape"):
        serialize.from_arrays({**d, "cores.0": d["cores.0"].astype(np.float32)})
    with pytest.raises(ValueError, match="no '__tnlib__' entry"):
        serialize.from_arrays({k: v for k, v in d.items() if k != serialize.META_KEY})

    meta = json.loads(d[serialize.META_KEY].tobytes())
    for change, needle in [({"type": "os.system"}, "unknown type name 'os.system'"),
                           ({"version": 99}, "format version 99"),
                           ({"static": {"tree": 0}}, "static fields")]:
        bad = json.dumps({**meta, **change}).encode()
        with pytest.raises(ValueError, match=needle):
            serialize.from_arrays({**d, serialize.META_KEY: np.frombuffer(bad, np.uint8)})
    with pytest.raises(ValueError, match="not valid JSON"):
        serialize.from_arrays({**d, serialize.META_KEY: np.frombuffer(b"{x", np.uint8)})

    with pytest.raises(TypeError, match="cannot serialize type"):
        serialize.to_arrays(jnp.zeros(3))
    with pytest.raises(TypeError, match="traced array"):
        jax.jit(lambda t: serialize.to_arrays(t)[serialize.META_KEY])(objects()["cp.CP"])


def test_float64_needs_x64_when_loading_into_jax():
    d = serialize.to_arrays(objects()["tt.TensorTrain"])
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            serialize.from_arrays(d)
        assert serialize.from_arrays(d, to_jax=False).cores[0].dtype == np.float64
