"""Sliced contraction: bound the largest intermediate, and spread slices over devices.

A contraction whose largest intermediate does not fit in memory is split by
*slicing*: fixing the value of a few contracted indices turns it into
``prod(sizes of the sliced indices)`` independent, smaller contractions whose
results sum to the full one. :func:`slice_plan` chooses the indices (cotengra's
``ContractionTree.slice`` where cotengra is importable, our own greedy choice
otherwise) and reports the per-slice peak from the path's own size estimate;
:func:`contract_sliced` runs the slices one after another on one device
(``lax.fori_loop``, so memory holds one slice at a time), or deals them out over
one axis of a :class:`jax.sharding.Mesh` with ``shard_map`` and sums them with
``psum``. Only contracted indices are sliced, so every slice has the full output
shape. Used through :func:`tnlib.network.contract`.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import opt_einsum
from jax import lax
from jax.sharding import PartitionSpec

try:  # jax >= 0.7
    from jax import shard_map as _shard_map
except ImportError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

try:
    import cotengra as _cotengra
except ImportError:  # pragma: no cover - cotengra is optional
    _cotengra = None

__all__ = ["SlicePlan", "contract_sliced", "slice_plan"]

_METHODS = ("auto", "greedy", "cotengra")


class SlicePlan(NamedTuple):
    """How a contraction is sliced.

    ``sliced``/``sizes``: the sliced index symbols and their sizes; ``n_slices`` is
    their product. ``path``: the contraction path for one slice. ``peak`` and
    ``peak_unsliced``: the largest intermediate (number of elements) of one slice
    and of the whole contraction, from opt_einsum's size estimate along the path.
    """

    subscripts: str
    sliced: tuple[str, ...]
    sizes: tuple[int, ...]
    path: tuple[tuple[int, ...], ...]
    peak: int
    peak_unsliced: int

    @property
    def n_slices(self) -> int:
        return math.prod(self.sizes)


def _parse(subscripts: str, shapes):
    if "->" not in subscripts:
        raise ValueError(
            f"subscripts must have an explicit output ('...->...'), got {subscripts!r}")
    lhs, out = subscripts.split("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"subscripts has {len(terms)} inputs but {len(shapes)} arrays were given")
    size = {}
    for t, s in zip(terms, shapes, strict=True):
        if len(t) != len(s):
            raise ValueError(f"term {t!r} has {len(t)} indices but its array has shape {s}")
        for c, d in zip(t, s, strict=True):
            if size.setdefault(c, d) != d:
                raise ValueError(f"index {c!r} has sizes {size[c]} and {d}")
    return terms, out, size


def _sliced_shapes(terms, size, sliced):
    return [tuple(1 if c in sliced else size[c] for c in t) for t in terms]


def _path_peak(subscripts, shapes):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*kahypar.*")
        path, info = opt_einsum.contract_path(subscripts, *shapes, shapes=True, optimize="auto-hq")
    return tuple(tuple(int(i) for i in p) for p in path), int(info.largest_intermediate)


def _greedy(subscripts, terms, out, size, max_intermediate, min_slices):
    """Slice, one index at a time, the index whose slicing lowers the peak most."""
    sliced: list[str] = []
    path, peak = _path_peak(subscripts, _sliced_shapes(terms, size, sliced))
    inner = sorted({c for t in terms for c in t if c not in out and size[c] > 1})
    while peak > max_intermediate or math.prod(size[c] for c in sliced) < min_slices:
        trials = []
        for c in inner:
            if c not in sliced:
                p, pk = _path_peak(subscripts, _sliced_shapes(terms, size, sliced + [c]))
                trials.append((pk, size[c], c, p))
        if not trials:
            break
        peak, _, c, path = min(trials)
        sliced.append(c)
    return sliced, path, peak


def _cotengra_slices(terms, out, size, path, max_intermediate):
    if max_intermediate == math.inf:
        return []
    tree = _cotengra.ContractionTree.from_path([tuple(t) for t in terms], tuple(out), size,
                                                path=[list(p) for p in path])
    try:
        sliced_tree = tree.slice(target_size=max_intermediate, allow_outer=False, seed=0)
    except RuntimeError:  # "ran out of valid indices": the greedy finish reports it
        return []
    return list(sliced_tree.sliced_inds)


@functools.lru_cache(maxsize=1024)
def _plan(subscripts, shapes, max_intermediate, min_slices, method) -> SlicePlan:
    terms, out, size = _parse(subscripts, shapes)
    path0, peak0 = _path_peak(subscripts, shapes)
    if method == "auto":
        method = "greedy" if _cotengra is None else "cotengra"
    if method == "cotengra":
        if _cotengra is None:
            raise ValueError(
                "slice_method='cotengra' needs cotengra installed (pip install cotengra)")
        sliced = _cotengra_slices(terms, out, size, path0, max_intermediate)
        # Re-pathing can differ from cotengra's tree, and a mesh may want more slices
        # than the memory limit needs: finish greedily from cotengra's choice.
        rest = {c: (1 if c in sliced else d) for c, d in size.items()}
        more = -(-min_slices // math.prod(size[c] for c in sliced))
        extra, path, peak = _greedy(subscripts, terms, out, rest, max_intermediate, more)
        sliced = sliced + extra
    else:
        sliced, path, peak = _greedy(subscripts, terms, out, size, max_intermediate, min_slices)
    if peak > max_intermediate:
        raise ValueError(
            f"max_intermediate={max_intermediate} cannot be met by slicing contracted indices: "
            f"the smallest per-slice peak reachable is {peak} elements")
    sliced = tuple(sorted(sliced, key=lambda c: subscripts.index(c)))
    return SlicePlan(subscripts, sliced, tuple(size[c] for c in sliced), path, peak, peak0)


def slice_plan(subscripts: str, *shapes, max_intermediate: int | None = None,
               min_slices: int = 1, method: str = "auto") -> SlicePlan:
    """Choose contracted indices to slice so each slice's largest intermediate fits.

    Args:
      subscripts: einsum subscripts with an explicit output.
      *shapes: the input shapes.
      max_intermediate: the largest intermediate allowed per slice, in elements
        (``None``: no limit).
      min_slices: slice until there are at least this many slices (e.g. the number
        of devices to spread them over).
      method: ``"cotengra"`` (``ContractionTree.slice``), ``"greedy"`` (slice the
        index that lowers the peak most, repeatedly) or ``"auto"`` (cotengra when
        importable).

    Returns a :class:`SlicePlan`; cached per signature. Raises ValueError when no
    slicing of contracted indices meets ``max_intermediate``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if max_intermediate is not None and (
            isinstance(max_intermediate, bool) or not isinstance(max_intermediate, int)
            or max_intermediate < 1):
        raise ValueError(f"max_intermediate must be a positive int, got {max_intermediate!r}")
    if isinstance(min_slices, bool) or not isinstance(min_slices, int) or min_slices < 1:
        raise ValueError(f"min_slices must be a positive int, got {min_slices!r}")
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    limit = max_intermediate if max_intermediate is not None else math.inf
    return _plan(subscripts, shapes, limit, min_slices, method)


def _one_slice(arrays, terms, plan: SlicePlan, k):
    """The contraction with the sliced indices fixed to the ``k``-th combination."""
    idx, rem = {}, k
    for c, size in reversed(list(zip(plan.sliced, plan.sizes, strict=True))):
        idx[c], rem = rem % size, rem // size
    parts = []
    for a, t in zip(arrays, terms, strict=True):
        for ax, c in enumerate(t):
            if c in idx:
                a = lax.dynamic_slice_in_dim(a, idx[c], 1, axis=ax)
        parts.append(a)
    return jnp.einsum(plan.subscripts, *parts, optimize=list(plan.path))


def contract_sliced(arrays, plan: SlicePlan, *, mesh=None, axis: str = "data"):
    """Sum of the ``plan.n_slices`` slice contractions.

    Without ``mesh``: one slice after another in a ``lax.fori_loop`` (one slice's
    intermediates live at a time). With ``mesh``: the slices are dealt out in
    contiguous blocks over the mesh axis ``axis`` (padded to a multiple of its size;
    padding slices contribute zero), each device loops over its block, and ``psum``
    adds the partial sums; inputs and output are replicated. Works under ``jit``
    and ``grad``.
    """
    terms = plan.subscripts.split("->")[0].split(",")
    n = plan.n_slices
    out = jax.eval_shape(lambda *a: _one_slice(a, terms, plan, 0), *arrays)
    zeros = jnp.zeros(out.shape, out.dtype)
    if mesh is None:
        return lax.fori_loop(0, n, lambda k, acc: acc + _one_slice(arrays, terms, plan, k), zeros)
    if axis not in mesh.shape:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh (axes: {tuple(mesh.shape)})")
    per = -(-n // mesh.shape[axis])

    def local(*arrs):
        first = lax.axis_index(axis) * per

        def step(j, acc):
            k = first + j
            val = _one_slice(arrs, terms, plan, jnp.minimum(k, n - 1))
            return acc + jnp.where(k < n, val, jnp.zeros_like(val))

        return lax.psum(lax.fori_loop(0, per, step, zeros), axis)

    specs = tuple(PartitionSpec() for _ in arrays)
    try:  # the accumulator starts replicated and becomes device-varying: skip that check
        mapped = _shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(),
                            check_vma=False)
    except TypeError:  # pragma: no cover - jax < 0.7 names it check_rep
        mapped = _shard_map(local, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(),
                            check_rep=False)
    return mapped(*arrays)
