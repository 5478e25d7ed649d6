"""Devices for a run: the mesh, multi-host start-up, and how batches and parameters are laid out.

Everything goes through JAX's own SPMD machinery: a :class:`jax.sharding.Mesh`
built from the config's ``mesh`` section, ``NamedSharding`` for batches (split
over the ``data`` axis) and parameters (replicated, or split over the ``model``
axis where a layer declares how through a ``partition_specs()`` method), and
``jax.distributed.initialize`` when the run is one process of many. A training
step jitted on sharded inputs compiles to one SPMD program.

The ``mesh`` config section maps axis names to sizes, e.g. ``{"data": -1,
"model": 1}``; ``-1`` (at most one axis) takes all remaining devices. The mesh may
use fewer devices than there are (the first ones), never more.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .config import ConfigError

__all__ = [
    "DATA",
    "MODEL",
    "default_mesh_config",
    "initialize_distributed",
    "is_main_process",
    "make_mesh",
    "mesh_shape",
    "replicate",
    "shard_batch",
    "shard_params",
    "throttle",
]

DATA, MODEL = "data", "model"

# Environment variables that say this process is one of several (jax.distributed
# reads JAX_COORDINATOR_ADDRESS itself and auto-detects SLURM and Open MPI).
_MULTI_PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def default_mesh_config() -> ml_collections.ConfigDict:
    """``{"data": -1, "model": 1}``: all devices on the data axis."""
    return ml_collections.ConfigDict({DATA: -1, MODEL: 1})


def initialize_distributed(environ: Mapping[str, str] | None = None) -> bool:
    """Call ``jax.distributed.initialize()`` when the environment says this is one
    process of many; returns whether it did.

    Triggers: ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID``), or a SLURM / Open MPI launch with more than one task. Must
    run before anything touches the devices.

    Before initializing, selects gloo (over TCP) for the collectives between CPU
    processes (``jax_cpu_collectives_implementation``) where it is unset (recent JAX
    defaults to gloo; unset, collectives across CPU processes are unavailable). A value
    the user set (``"mpi"``, or ``JAX_CPU_COLLECTIVES_IMPLEMENTATION`` in the
    environment) is kept. The option configures only JAX's CPU client, so it changes
    nothing for GPU or TPU devices.
    """
    env = os.environ if environ is None else environ
    multi = "JAX_COORDINATOR_ADDRESS" in env or any(
        int(env.get(var, "1") or "1") > 1 for var in _MULTI_PROCESS_ENV[1:])
    if multi and jax.config.jax_cpu_collectives_implementation in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if "JAX_COORDINATOR_ADDRESS" in env:
        kwargs = {}
        if "JAX_NUM_PROCESSES" in env:
            kwargs["num_processes"] = int(env["JAX_NUM_PROCESSES"])
        if "JAX_PROCESS_ID" in env:
            kwargs["process_id"] = int(env["JAX_PROCESS_ID"])
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], **kwargs)
        return True
    for var in _MULTI_PROCESS_ENV[1:]:
        if int(env.get(var, "1") or "1") > 1:
            jax.distributed.initialize()
            return True
    return False


def is_main_process() -> bool:
    """Process 0 writes logs, metrics and figures; the others stay quiet."""
    return jax.process_index() == 0


def mesh_shape(cfg: Mapping | None, n_devices: int) -> dict[str, int]:
    """Axis name -> size from the ``mesh`` config, ``-1`` resolved; ConfigError if impossible."""
    cfg = dict(default_mesh_config() if cfg is None else cfg)
    if not cfg:
        raise ConfigError("mesh: needs at least one axis, e.g. {'data': -1}")
    if DATA not in cfg:
        raise ConfigError(f"mesh: needs a {DATA!r} axis (batches are split over it); got "
                          f"{sorted(cfg)}")
    for name, size in cfg.items():
        if isinstance(size, bool) or not isinstance(size, int) or (size < 1 and size != -1):
            raise ConfigError(f"mesh.{name}={size!r}: expected a positive int, or -1 for "
                              "all remaining devices")
    free = [name for name, size in cfg.items() if size == -1]
    if len(free) > 1:
        raise ConfigError(f"mesh: at most one axis may be -1, got {free}")
    fixed = int(np.prod([s for s in cfg.values() if s != -1]))
    if fixed > n_devices or (free and n_devices % fixed):
        what = f"{fixed} devices" if not free else f"a multiple of {fixed} devices"
        raise ConfigError(f"mesh={dict(cfg)} needs {what} but this run has {n_devices} "
                          f"({jax.default_backend()}); lower the mesh sizes")
    if free:
        cfg[free[0]] = n_devices // fixed
    if jax.process_count() > 1 and int(np.prod(list(cfg.values()))) != n_devices:
        raise ConfigError(f"mesh={dict(cfg)} uses {int(np.prod(list(cfg.values())))} of the "
                          f"{n_devices} devices, but a run of {jax.process_count()} processes "
                          "must use them all (every process steps the mesh); use -1 for one "
                          "axis")
    return cfg


def make_mesh(cfg: Mapping | None = None, devices=None) -> Mesh:
    """The :class:`Mesh` for the config's ``mesh`` section over ``devices`` (default: all)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(cfg, len(devices))
    n = int(np.prod(list(shape.values())))
    grid = np.asarray(devices[:n], dtype=object).reshape(tuple(shape.values()))
    return Mesh(grid, tuple(shape))


def shard_batch(mesh: Mesh, *arrays):
    """Split host arrays of the global batch over the mesh's ``data`` axis.

    Single process: ``device_put`` of the whole batch. Several processes: each
    passes the full global batch (the data order is a pure function of the seed, so
    every process computes the same one) and copies to its own devices only the rows
    their shards hold (``jax.make_array_from_callback``). Which rows those are
    follows from the mesh, whatever the order of its axes and devices: a process
    need not hold one contiguous block of the batch.
    """
    n = mesh.shape[DATA]
    out = []
    for a in arrays:
        if a.shape[0] % n:
            raise ValueError(f"batch of {a.shape[0]} rows does not split over the {n} devices "
                             f"of the {DATA!r} axis; make train.batch_size a multiple of {n}")
        sharding = NamedSharding(mesh, PartitionSpec(DATA, *([None] * (a.ndim - 1))))
        if jax.process_count() == 1:
            out.append(jax.device_put(a, sharding))
        else:
            out.append(jax.make_array_from_callback(a.shape, sharding,
                                                    lambda index, a=a: a[index]))
    return out[0] if len(out) == 1 else tuple(out)


def _layer_specs(model: nnx.Module, mesh: Mesh) -> dict[tuple, PartitionSpec]:
    """Path -> spec of the parameters whose layer declares ``partition_specs(axis)``."""
    specs = {}
    if mesh.shape.get(MODEL, 1) == 1:
        return specs
    for path, module in nnx.iter_modules(model):
        declare = getattr(module, "partition_specs", None)
        if callable(declare):
            for name, spec in declare(MODEL).items():
                specs[tuple(path) + (name,)] = PartitionSpec(*spec)
    return specs


def shard_params(model: nnx.Module, params: nnx.State, mesh: Mesh) -> nnx.State:
    """Place ``params`` (``nnx.split(model, nnx.Param, ...)[1]``) on ``mesh``.

    A parameter is split over the ``model`` axis where its layer's
    ``partition_specs("model")`` names it (and the axis divides that dimension),
    and replicated otherwise.
    """
    specs = _layer_specs(model, mesh)

    def place(path, leaf):
        key = tuple(getattr(k, "key", getattr(k, "idx", k)) for k in path)
        spec = PartitionSpec()
        for p, s in specs.items():
            if key[:len(p)] == p:
                dims = [d for d, ax in enumerate(s) if ax is not None]
                if all(leaf.shape[d] % mesh.shape[MODEL] == 0 for d in dims):
                    spec = s
        return jax.device_put(leaf, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(place, params)


def replicate(tree, mesh: Mesh):
    """Replicate over ``mesh`` every array leaf of ``tree`` not already laid out on it
    (optimizer step counts, RNG state), so one jitted step sees one device set."""

    def place(leaf):
        sh = getattr(leaf, "sharding", None)
        if isinstance(sh, NamedSharding) and sh.mesh == mesh:
            return leaf
        return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec()))

    return jax.tree.map(place, tree)


# At most this many multi-device steps queued ahead of the devices (see ``throttle``).
MAX_IN_FLIGHT = 16


def throttle(mesh: Mesh, step: int, value, every: int = MAX_IN_FLIGHT):
    """On a mesh of more than one device, wait for ``value`` every ``every`` steps.

    XLA:CPU runs the per-device parts of multi-device programs on one pool of
    ``max(cores, devices)`` threads and lets the host queue at most 32 programs per
    device, taking that semaphore *on a pool thread*. When the host runs further
    ahead, pool threads block on the semaphore while parts of the running program
    wait for a free thread, and the devices that did start it wait forever in its
    all-reduce (``rendezvous.cc: ... Expected 8 threads to join``): a deadlock seen
    with simulated CPU devices. Waiting every 16 steps never lets the queue fill; on
    GPUs it costs one dispatch latency per 16 steps. Returns ``value``.
    """
    if mesh.size > 1 and step % every == 0:
        jax.block_until_ready(value)
    return value
