"""The format protocol (``tnlib/__init__.py``): every format module answers the same
verbs with the same signatures, and each verb agrees with the dense tensor under jit.

The signature check compares parameter names, kinds (positional / keyword-only) and
which have defaults; a module may add keyword-only parameters after the shared ones
(``from_dense(x, *, max_rank, rtol, tree=None)``) but never rename, reorder or drop one.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key

from tnlib import btt, cp, network, tr, tree, tt, tucker

FORMATS = {"tt": tt, "tucker": tucker, "tree": tree, "btt": btt, "cp": cp, "tr": tr,
           "network": network}
P, K = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
REQUIRED = inspect.Parameter.empty
# verb -> the shared parameters: (name, kind, has a default)
PROTOCOL = {
    "random": [("key", P, False), ("dims", P, False), ("rank", P, False), ("dtype", P, True)],
    "from_dense": [("x", P, False), ("max_rank", K, True), ("rtol", K, True)],
    "to_dense": [("tn", P, False)],
    "inner": [("a", P, False), ("b", P, False)],
    "norm": [("tn", P, False)],
    "num_params": [("tn", P, False)],
}
# verbs a format has where they make sense: same leading parameters wherever present
OPTIONAL = {
    "round": [("tn", P, False), ("max_rank", K, True), ("rtol", K, True)],
    "orthogonalize": [("tn", P, False)],
    "flops": [("tn", P, False), ("batch", P, True)],
}
HAS = {"round": {"tt", "tree"}, "orthogonalize": {"tt", "tree"}, "flops": {"tt", "btt"}}


def shared(fn, n):
    params = list(inspect.signature(fn).parameters.values())
    return [(p.name, p.kind, p.default is not REQUIRED) for p in params[:n]], params[n:]


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_every_format_module_answers_the_protocol_with_one_signature(name):
    mod = FORMATS[name]
    verbs = dict(PROTOCOL)
    verbs.update({v: sig for v, sig in OPTIONAL.items() if name in HAS[v]})
    for verb, want in verbs.items():
        fn = getattr(mod, verb, None)
        assert callable(fn), f"tnlib.{name} lacks {verb}"
        assert verb in mod.__all__, f"tnlib.{name}.{verb} is not in __all__"
        got, extra = shared(fn, len(want))
        assert got == want, f"tnlib.{name}.{verb}{inspect.signature(fn)}: expected {want}"
        if verb != "orthogonalize":  # (tt's takes the centre site, tree's nothing)
            # a format's own options come after the shared ones, keyword-only
            assert all(p.kind == K for p in extra), (
                f"tnlib.{name}.{verb}{inspect.signature(fn)}: extra parameters must be "
                "keyword-only")
    for verb in OPTIONAL:
        if name not in HAS[verb]:
            assert not hasattr(mod, verb), f"tnlib.{name}.{verb} exists: add it to HAS"


def test_the_checker_catches_a_differing_signature():
    def from_dense(x, max_rank=None, rtol=None):  # max_rank positional: not the protocol
        return x

    got, _ = shared(from_dense, 3)
    assert got != PROTOCOL["from_dense"]


# ------------------------------------------------------------------- against dense

# (module, dims, rank, from_dense keywords that reproduce a network of that rank)
CASES = {
    "tt": (tt, (2, 3, 4), 2, {}),
    "tucker": (tucker, (2, 3, 4), 2, {}),
    "tree": (tree, (2, 3, 2, 2), 2, {}),
    "btt": (btt, ((2, 3), (4, 2)), 2, {"dims": ((2, 3), (4, 2))}),
    "cp": (cp, (2, 3, 4), 2, {"max_rank": 2, "n_iter": 60}),
    "tr": (tr, (2, 3, 4), 2, {}),
    "network": (network, (2, 3, 4), 2, {}),
}


def leaf_size(tn):
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tn))


@pytest.mark.parametrize("name", sorted(CASES))
def test_verbs_agree_with_the_dense_tensor_under_jit(name):
    mod, dims, rank, kw = CASES[name]
    a = mod.random(key(0), dims, rank, F64)
    b = mod.random(key(1), dims, rank, F64)

    @jax.jit
    def verbs(a, b):
        da, db = mod.to_dense(a), mod.to_dense(b)
        back = mod.to_dense(mod.from_dense(da, **kw)) if name != "cp" else da
        return da, db, back, mod.inner(a, b), mod.norm(a)

    da, db, back, ab, na = verbs(a, b)
    close(ab, jnp.vdot(da, db))
    close(na, jnp.linalg.norm(da.ravel()))
    assert mod.num_params(a) == leaf_size(a)
    if name == "cp":  # ALS, a data-dependent fit: outside jit, on a planted CP tensor
        back = mod.to_dense(mod.from_dense(da, **kw))
        np.testing.assert_allclose(back, da, atol=1e-6 * float(jnp.abs(da).max()))
    else:
        close(back, da)
    # the rank argument is read from shapes: under vmap a batch reports one network's size
    batch = jax.vmap(lambda k: mod.random(k, dims, rank, F64))(jax.random.split(key(2), 2))
    assert mod.num_params(batch) == mod.num_params(a)


def test_from_dense_truncates_with_rtol_in_every_format_that_can():
    x = jax.random.normal(key(3), (3, 4, 5), F64)
    nx = float(jnp.linalg.norm(x.ravel()))
    for mod in (tt, tucker, tree, tr):
        approx = mod.to_dense(mod.from_dense(x, rtol=0.3))
        assert float(jnp.linalg.norm((approx - x).ravel())) <= 0.3 * nx * (1 + 1e-9), mod
        assert mod.num_params(mod.from_dense(x, rtol=0.3)) < x.size + 60
    w = jax.random.normal(key(4), (6, 8), F64)
    for kind, dims in (("lowrank", None), ("btt", ((2, 3), (4, 2)))):
        approx = btt.to_dense(btt.from_dense(w, rtol=0.3, kind=kind, dims=dims))
        assert float(jnp.linalg.norm(approx - w)) <= 0.3 * float(jnp.linalg.norm(w)) * (1 + 1e-9)
