"""Sliced and sharded contraction (tnlib.network.contract with max_intermediate / mesh)
against the plain contraction: greedy and cotengra slice choices, the per-slice peak
bound from the path's own size estimate, jit and grad, bad input; and, in a
subprocess with 8 simulated CPU devices, the slices spread over a mesh with
shard_map give the same value and gradient."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dense_checks import F64, close, key

from tnlib import network

# A loopy network whose unsliced contraction has a large intermediate.
ADJ = np.array([[4, 6, 6, 1, 6], [6, 4, 6, 6, 1], [6, 6, 4, 6, 6],
                [1, 6, 6, 4, 6], [6, 1, 6, 6, 4]])
LIMIT = 2000


@pytest.fixture(scope="module")
def net():
    return network.random(key(0), network.dims_of(ADJ), ADJ, F64)


@pytest.mark.parametrize("method", ["greedy", "cotengra"])
def test_sliced_contraction_matches_and_respects_the_limit(net, method):
    spec = network.einsum_spec(ADJ)
    plan = network.slice_plan(spec, *(c.shape for c in net.cores), max_intermediate=LIMIT,
                              method=method)
    assert plan.peak_unsliced > LIMIT >= plan.peak
    assert plan.n_slices == int(np.prod(plan.sizes)) > 1
    assert set(plan.sliced) <= set(spec.split("->")[0]) - set(spec.split("->")[1])
    full = network.contract(net.cores, spec)
    close(network.contract(net.cores, spec, max_intermediate=LIMIT, slice_method=method), full)
    f = jax.jit(lambda c: network.contract(c, spec, max_intermediate=LIMIT, slice_method=method))
    close(f(net.cores), full)


def test_sliced_contraction_gradient(net):
    spec = network.einsum_spec(ADJ)

    def loss(cores, limit):
        return jnp.sum(network.contract(cores, spec, max_intermediate=limit) ** 2)

    g_ref = jax.grad(loss)(net.cores, None)
    g = jax.jit(jax.grad(loss), static_argnums=1)(net.cores, LIMIT)
    for a, b in zip(g, g_ref, strict=True):
        close(a, b)


def test_slice_plan_errors(net):
    spec = network.einsum_spec(ADJ)
    shapes = [c.shape for c in net.cores]
    with pytest.raises(ValueError, match="max_intermediate"):
        network.slice_plan(spec, *shapes, max_intermediate=0)
    with pytest.raises(ValueError, match="smallest per-slice peak"):
        network.slice_plan(spec, *shapes, max_intermediate=10)  # below the output size
    with pytest.raises(ValueError, match="method"):
        network.slice_plan(spec, *shapes, max_intermediate=LIMIT, method="magic")
    with pytest.raises(ValueError, match="min_slices"):
        network.slice_plan(spec, *shapes, min_slices=0)


_SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from tnlib import network
    assert jax.device_count() == 8, jax.devices()
    adj = np.array({adj})
    net = network.random(jax.random.PRNGKey(0), network.dims_of(adj), adj, jnp.float64)
    spec = network.einsum_spec(adj)
    full = network.contract(net.cores, spec)
    mesh = jax.make_mesh((4, 2), ("data", "model"))
    plan = network.slice_plan(spec, *(c.shape for c in net.cores), max_intermediate={limit},
                              min_slices=4)
    assert plan.peak <= {limit} < plan.peak_unsliced and plan.n_slices >= 4, plan
    f = jax.jit(lambda c: network.contract(c, spec, max_intermediate={limit}, mesh=mesh))
    err = float(jnp.max(jnp.abs(f(net.cores) - full)) / jnp.max(jnp.abs(full)))
    assert err < 1e-12, err
    # No memory limit: one slice per device at least along the mesh axis.
    g = jax.jit(lambda c: network.contract(c, spec, mesh=mesh, axis="model"))
    assert float(jnp.max(jnp.abs(g(net.cores) - full))) < 1e-12 * float(jnp.max(jnp.abs(full)))
    loss = lambda c, m: jnp.sum(network.contract(c, spec, max_intermediate={limit}, mesh=m) ** 2)
    g_ref = jax.grad(loss)(net.cores, None)
    g_sh = jax.jit(jax.grad(loss), static_argnums=1)(net.cores, mesh)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(g_sh, g_ref, strict=True)) < 1e-10
    print("sharded ok", plan.sliced, plan.peak, plan.peak_unsliced)
""")


def test_sharded_contraction_on_8_simulated_devices():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ["XLA_FLAGS"] + " --xla_force_host_platform_device_count=8")
    code = _SHARDED.format(adj=ADJ.tolist(), limit=LIMIT)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "sharded ok" in res.stdout
