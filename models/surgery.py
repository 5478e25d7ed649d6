"""Model surgery: replace the dense layers of a trained NNX model by structured ones.

:func:`factorize` walks an ``nnx.Module`` graph (attributes, ``nnx.List``, ``nnx.Dict``,
nested modules) and replaces, in place, each ``nnx.Linear`` (structures ``"lowrank"``,
``"tt"``, ``"btt"``, ``"monarch"``, ``"kronecker"``) or ``nnx.Conv`` (``"tucker"``,
``"cp"``) that ``where`` selects by the structured layer decomposed from its weights
(``from_linear`` / ``from_dense``), as tltorch's ``FactorizedLinear.from_linear`` does
for one PyTorch layer. A layer whose factorization would not save parameters stays
dense; every candidate gets a row in the returned report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ._shapes import resolve_rank
from .conv import CPConv, TuckerConv
from .structured import BTTLinear, KroneckerLinear, LowRankLinear, MonarchLinear, TTLinear

__all__ = ["LINEAR_STRUCTURES", "CONV_STRUCTURES", "Replacement", "factorize"]

LINEAR_STRUCTURES = {"lowrank": LowRankLinear, "tt": TTLinear, "btt": BTTLinear,
                     "monarch": MonarchLinear, "kronecker": KroneckerLinear}
CONV_STRUCTURES = {"tucker": TuckerConv, "cp": CPConv}
_RANKLESS = {"monarch", "kronecker"}  # their structure fixes the rank


@dataclasses.dataclass(frozen=True)
class Replacement:
    """One row of :func:`factorize`'s report: the layer at ``path`` (a tuple of
    attribute names and indices), its kernel shape, parameter counts before and after
    (bias included), the relative Frobenius error of the factorized kernel, and whether
    it was replaced (``note`` says why not)."""

    path: tuple
    kind: str
    shape: tuple
    old_params: int
    new_params: int
    rel_error: float | None
    replaced: bool
    note: str = ""


def _count(layer) -> int:
    """Stored parameters (every ``nnx.Param`` entry, bias included)."""
    return sum(int(np.size(x)) for x in jax.tree.leaves(nnx.state(layer, nnx.Param)))


def _conv_rank(structure, rank, kernel_shape):
    """An int rank for a Tucker / CP convolution from ``rank`` (int or fraction)."""
    kh, kw, c_in, c_out = kernel_shape
    dense = kh * kw * c_in * c_out
    if structure == "tucker":
        cost = lambda r: c_in * min(r, c_in) + kh * kw * min(r, c_in) * min(r, c_out) \
            + c_out * min(r, c_out)
        largest = max(c_in, c_out)
    else:
        cost = lambda r: r * (kh + kw + c_in + c_out)
        largest = dense
    if isinstance(rank, float):
        return resolve_rank(rank, cost, largest, dense, "", structure)
    return rank


def _build(structure, layer, rank, rngs):
    if structure in LINEAR_STRUCTURES:
        cls = LINEAR_STRUCTURES[structure]
        kwargs = {} if structure in _RANKLESS else {"rank": rank}
        return cls.from_linear(layer, rngs=rngs, **kwargs)
    if layer.feature_group_count != 1 or any(d != 1 for d in _pair(layer.kernel_dilation)) \
            or any(d != 1 for d in _pair(layer.input_dilation)):
        raise ValueError("grouped or dilated convolutions are not factorized")
    kernel = layer.kernel[...]
    if kernel.ndim != 4:
        raise ValueError(f"only 2-D convolutions are factorized (kernel {kernel.shape})")
    r = _conv_rank(structure, rank, kernel.shape)
    bias = None if layer.bias is None else layer.bias[...]
    common = dict(strides=layer.strides, padding=layer.padding, dtype=layer.dtype,
                  param_dtype=layer.param_dtype, rngs=rngs)
    if structure == "tucker":
        return TuckerConv.from_dense(kernel, bias, ranks=(min(r, kernel.shape[2]),
                                                          min(r, kernel.shape[3])), **common)
    return CPConv.from_dense(kernel, bias, rank=r, **common)


def _pair(v):
    return (v, v) if v is None or isinstance(v, int) else tuple(v)


def _error(layer, new) -> float:
    """``||W - W_new||_F / ||W||_F`` of the kernels (dense map of the new layer)."""
    if isinstance(layer, nnx.Linear):
        eye = jnp.eye(layer.in_features, dtype=layer.kernel[...].dtype)
        got = new(eye) - (0 if new.bias is None else new.bias[...])
        want = layer.kernel[...]
    else:
        got, want = new.to_dense(), layer.kernel[...]
    want = np.asarray(want, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - want) / np.linalg.norm(want))


def _set(model, path, value):
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) or not hasattr(parent, str(key)) \
            else getattr(parent, key)
    key = path[-1]
    if isinstance(key, int) or not hasattr(parent, str(key)):
        parent[key] = value
    else:
        setattr(parent, key, value)


def factorize(model: nnx.Module, structure: str, *, rank=0.5,
              where: Callable[[tuple, nnx.Module], bool] | None = None,
              rngs: nnx.Rngs | None = None, verbose: bool = False) -> list[Replacement]:
    """Replace, in place, the dense layers of ``model`` by ``structure`` (module docstring).

    Args:
      model: an NNX module (layers may sit in attributes, lists, dicts, sub-modules).
      structure: one of :data:`LINEAR_STRUCTURES` (replaces ``nnx.Linear``) or
        :data:`CONV_STRUCTURES` (replaces ``nnx.Conv``).
      rank: an int, a float in ``(0, 1]`` (the fraction of the dense layer's parameters
        to keep), or ``rank(path, layer)`` returning one of those per layer; ignored by
        ``"monarch"`` / ``"kronecker"``, whose structure fixes it.
      where: ``where(path, layer) -> bool`` selects the layers (default: all of the
        replaced type).
      rngs: for the new layers' construction (their weights come from the old ones).
      verbose: print the report as a table.

    Returns the report, one :class:`Replacement` per selected layer. Raises ValueError
    for an unknown structure, an impossible rank, or a ``where`` that selects nothing.
    """
    if structure not in LINEAR_STRUCTURES and structure not in CONV_STRUCTURES:
        raise ValueError(f"structure={structure!r} is not one of "
                         f"{sorted(LINEAR_STRUCTURES) + sorted(CONV_STRUCTURES)}")
    if not callable(rank):
        _check_rank(rank)
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module, got {type(model).__name__}")
    kind = nnx.Linear if structure in LINEAR_STRUCTURES else nnx.Conv
    rngs = rngs or nnx.Rngs(0)
    found = [(tuple(path), node) for path, node in nnx.iter_graph(model)
             if type(node) is kind and (where is None or where(tuple(path), node))]
    if not found:
        raise ValueError(f"no {kind.__name__} layer of the model is selected"
                         + (" by where" if where is not None else ""))
    report = []
    for path, layer in found:
        r = rank(path, layer) if callable(rank) else rank
        if callable(rank):
            _check_rank(r)
        old = _count(layer)
        shape = tuple(layer.kernel[...].shape)
        try:
            new = _build(structure, layer, r, rngs)
        except ValueError as e:
            report.append(Replacement(path, kind.__name__, shape, old, old, None, False,
                                      f"kept dense: {e}"))
            continue
        n = _count(new)
        if n >= old:
            report.append(Replacement(path, kind.__name__, shape, old, n, _error(layer, new),
                                      False, "kept dense: no parameter saving"))
            continue
        report.append(Replacement(path, kind.__name__, shape, old, n, _error(layer, new), True))
        _set(model, path, new)
    if verbose:
        print(_table(report, structure))
    return report


def _check_rank(rank):
    ok_int = isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1
    ok_frac = isinstance(rank, float) and 0 < rank <= 1
    if not (ok_int or ok_frac):
        raise ValueError(f"rank must be an int >= 1, a float in (0, 1] (a fraction of each "
                         f"layer's parameters) or a callable, got {rank!r}")


def _table(report, structure) -> str:
    lines = [f"factorize -> {structure}",
             "| layer | kernel | params before | after | rel. error | |",
             "|---|---|---|---|---|---|"]
    for r in report:
        err = "n/a" if r.rel_error is None else f"{r.rel_error:.3g}"
        lines.append(f"| {'.'.join(map(str, r.path))} | {r.shape} | {r.old_params} | "
                     f"{r.new_params} | {err} | {'replaced' if r.replaced else r.note} |")
    before = sum(r.old_params for r in report)
    after = sum(r.new_params if r.replaced else r.old_params for r in report)
    lines.append(f"selected layers: {before} -> {after} parameters "
                 f"({before / max(after, 1):.2f}x)")
    return "\n".join(lines)

