"""Issue 26, items 5, 6 and 8 (core): bad input is a ValueError naming the argument or
the size, never a silent wrong result, a ZeroDivisionError / KeyError, or an
allocation until the machine runs out of memory. The checks live in the shared helpers
(``_numerics.check_rank_args``, ``_validate.check_shape`` / ``check_size`` /
``check_float``), so every format gets them; these tests walk the formats."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tnlib import _validate, btt, cp, network, tr, tree, tt, tucker
from tnlib.models import MPSBornMachine, MPSClassifier

X = np.random.default_rng(0).standard_normal((3, 4, 5))
DECOMPOSERS = {  # every from_dense that takes rtol, and the HOSVD under its own name
    "tt": lambda x, **kw: tt.from_dense(x, **kw),
    "tucker": lambda x, **kw: tucker.from_dense(x, **kw),
    "tucker.hosvd": lambda x, **kw: tucker.hosvd(x, rtol=kw.get("rtol")),
    "tree": lambda x, **kw: tree.from_dense(x, **kw),
    "tr": lambda x, **kw: tr.from_dense(x, **kw),
    "cp": lambda x, **kw: cp.from_dense(x, **kw),
}


@pytest.mark.parametrize("rtol", [float("nan"), float("inf"), -1.0])
@pytest.mark.parametrize("name", sorted(DECOMPOSERS))
def test_a_non_finite_or_negative_rtol_is_an_error_naming_it(name, rtol):
    # before: NaN compared False everywhere and truncated to rank 1 (error 0.80)
    with pytest.raises(ValueError, match="rtol"):
        DECOMPOSERS[name](X, max_rank=2, rtol=rtol)


@pytest.mark.parametrize("rtol", [float("nan"), float("inf")])
def test_round_refuses_a_non_finite_rtol(rtol):
    t = tt.from_dense(X)
    with pytest.raises(ValueError, match="rtol"):
        tt.round(t, rtol=rtol)
    with pytest.raises(ValueError, match="rtol"):
        tree.round(tree.from_dense(X), rtol=rtol)
    with pytest.raises(ValueError, match="rtol"):
        btt.from_dense(X[0], rtol=rtol, kind="lowrank")


@pytest.mark.parametrize("name", sorted(DECOMPOSERS))
def test_an_axis_of_size_zero_is_a_value_error_naming_it(name):
    # before: tt.from_dense raised ZeroDivisionError
    with pytest.raises(ValueError, match=r"axis 1 has size 0"):
        DECOMPOSERS[name](np.zeros((3, 0, 5)), max_rank=3)
    with pytest.raises(ValueError, match=r"axis 0 has size 0"):
        btt.from_dense(np.zeros((0, 5)), max_rank=3, kind="lowrank")


@pytest.mark.parametrize("spec", ["ij,jk->ik,", "ij,jk->iz", "ij,jk,kl->il", "ijk,jk->i"])
def test_a_bad_einsum_spec_is_a_value_error_naming_it(spec):
    # before: "ij,jk->ik," raised KeyError(',') from opt_einsum
    a, b = jnp.ones((2, 3)), jnp.ones((3, 4))
    with pytest.raises(ValueError, match="subscripts"):
        network.contract([a, b], spec)
    assert network.contract([a, b], "ij,jk->ik").shape == (2, 4)


def test_to_dense_of_a_long_train_is_refused_before_allocating():
    # before: a 10,000-site train ate memory until killed
    t = tt.random(jax.random.PRNGKey(0), (2,) * 10_000, 2)
    with pytest.raises(ValueError, match=r"tt.to_dense would materialize about 10\*\*3010"):
        tt.to_dense(t)


@pytest.mark.parametrize("module,make", [
    (tt, lambda: tt.from_dense(X)),
    (tucker, lambda: tucker.from_dense(X)),
    (tree, lambda: tree.from_dense(X)),
    (tr, lambda: tr.from_dense(X, max_rank=2)),
    (cp, lambda: cp.from_dense(X, max_rank=2)),
    (network, lambda: network.from_dense(X)),
    (btt, lambda: btt.from_dense(X[0], kind="lowrank")),
])
def test_every_to_dense_obeys_the_configurable_limit(module, make, monkeypatch):
    tn = make()
    assert module.to_dense(tn).size in (60, 20)
    monkeypatch.setenv("TNLIB_MAX_BYTES", "64")
    with pytest.raises(ValueError, match=r"to_dense would materialize .*TNLIB_MAX_BYTES"):
        module.to_dense(tn)
    monkeypatch.setenv("TNLIB_MAX_BYTES", "0")  # the opt-out
    assert module.to_dense(tn).size in (60, 20)


def test_the_default_limit_is_a_fraction_of_physical_memory(monkeypatch):
    monkeypatch.delenv("TNLIB_MAX_BYTES", raising=False)
    phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert _validate.max_bytes() == int(phys * _validate.MEMORY_FRACTION)
    monkeypatch.setenv("TNLIB_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="TNLIB_MAX_BYTES"):
        _validate.max_bytes()


def test_model_constructors_refuse_impossible_sizes_before_allocating():
    # before: MPSClassifier(bond_dim=10**9) reached XLA: RESOURCE_EXHAUSTED 4e18 bytes
    with pytest.raises(ValueError, match=r"MPSClassifier\(n_sites=64, bond_dim=1000000000\)"):
        MPSClassifier(64, 10, bond_dim=10**9, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"MPSBornMachine\(n_sites=8, bond_dim=10000000\)"):
        MPSBornMachine(8, 4, bond_dim=10**7, rngs=nnx.Rngs(0))
    # the structured layers already refuse ranks their shape cannot use
    from tnlib.models import BTTLinear

    with pytest.raises(ValueError, match="largest rank"):
        BTTLinear(64, 64, rank=10**6, rngs=nnx.Rngs(0))
    # and sizes: the cores of a 10**6 x 10**6 layer (default rank) are counted first
    with pytest.raises(ValueError, match=r"the layer's cores would materialize 500000000000"):
        BTTLinear(10**6, 10**6, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("value,problem", [
    (float("nan"), "finite"), (float("inf"), "finite"), (1e39, "overflows"),
    (1e-320, "smallest normal"), (1e-40, "smallest normal"),
])
def test_check_float_refuses_what_float32_cannot_hold(value, problem):
    with pytest.raises(ValueError, match=f"train.lr.*{problem}|{problem}.*train.lr|train.lr="):
        _validate.check_float(value, "train.lr")
    assert _validate.check_float(3e-3, "train.lr") == 3e-3
    assert _validate.check_float(0, "x") == 0.0
    assert math.isfinite(_validate.check_float(1e38, "x"))
