"""Model surgery: replace the dense layers of a trained NNX model by structured ones.

:func:`factorize` walks an ``nnx.Module`` graph (attributes, ``nnx.List``, ``nnx.Dict``,
nested modules) and replaces, in place, each ``nnx.Linear`` (structures ``"lowrank"``,
``"tt"``, ``"btt"``, ``"monarch"``, ``"kronecker"``) or ``nnx.Conv`` (``"tucker"``,
``"cp"``) that ``where`` selects by the structured layer decomposed from its weights
(``from_linear`` / ``from_dense``), as tltorch's ``FactorizedLinear.from_linear`` does
for one PyTorch layer. A layer whose factorization would not save parameters stays
dense; every candidate gets a row in the returned report.

Linen models: a Linen module wrapped by ``flax.nnx.bridge.ToNNX`` (and initialized,
``nnx.bridge.lazy_init``) is factorized in place too. Its ``nn.Dense`` layers are found
by their parameters (a ``kernel`` ``(in, out)`` and an optional ``bias`` ``(out,)``,
nothing else), replaced by structured NNX layers held by the wrapper, and their Linen
parameters are dropped; when the Linen module runs, an ``nn.intercept_methods`` hook
sends each replaced ``nn.Dense`` call to its structured layer (the wrapper's class
becomes a ``ToNNX`` subclass that installs the hook). The result is an ordinary NNX
module: ``nnx.jit``, ``nnx.grad`` and ``nnx.Optimizer`` see the structured layers'
``nnx.Param`` beside the Linen parameters that stayed. Linen ``nn.Conv`` layers are not
factorized through the bridge (their strides and padding live in the Linen module, not
in its parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen, nnx
from flax.nnx import bridge

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


# ----------------------------------------------------------------- the Linen bridge


class _FactorizedToNNX(bridge.ToNNX):
    """A ``bridge.ToNNX`` whose Linen ``nn.Dense`` calls at the Linen module paths
    ``to_nnx__factorized_paths`` run the NNX layers ``to_nnx__factorized`` instead.
    :func:`factorize` switches a ``ToNNX``'s class to this one in place (the ``to_nnx__``
    prefix keeps both attributes out of the Linen variables the wrapper passes on)."""

    def __call__(self, *args, **kwargs):
        layers = dict(zip(self.to_nnx__factorized_paths, self.to_nnx__factorized,
                          strict=True))

        def hook(next_fun, hook_args, hook_kwargs, context):
            path = tuple(context.module.path)
            if context.method_name != "__call__" or path not in layers:
                return next_fun(*hook_args, **hook_kwargs)
            if not isinstance(context.module, linen.Dense):
                raise TypeError(f"factorize replaced the Linen layer at {path} as an "
                                f"nn.Dense (by its kernel and bias), but it is a "
                                f"{type(context.module).__name__}")
            return layers[path](*hook_args, **hook_kwargs)

        with linen.intercept_methods(hook):
            return super().__call__(*args, **kwargs)


def _linen_attrs(wrapper) -> dict:
    return {k: v for k, v in vars(wrapper).items()
            if not k.startswith(("to_nnx__", "_pytree__"))}


def _is_dense(node) -> bool:
    """A Linen ``nn.Dense``'s variables: ``kernel`` ``(in, out)`` and maybe ``bias``
    ``(out,)``, both ``nnx.Param``, nothing else."""
    if not isinstance(node, dict) or "kernel" not in node or not set(node) <= {"kernel",
                                                                                "bias"}:
        return False
    if not all(type(v) is nnx.Param for v in node.values()):
        return False
    kernel = node["kernel"]
    return len(kernel.shape) == 2 and ("bias" not in node or tuple(node["bias"].shape) == (
        kernel.shape[1],))


def _linen_dense(wrapper) -> list[tuple[tuple, nnx.Linear]]:
    """``(Linen module path, nnx.Linear view of its weights)`` for every ``nn.Dense`` of
    an initialized ``bridge.ToNNX``, in the order of its variables."""
    found = []

    def walk(node, path):
        if _is_dense(node):
            found.append((path, node))
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + (key,))

    walk(_linen_attrs(wrapper), ())
    views = []
    for path, node in found:
        kernel = node["kernel"][...]
        bias = node["bias"][...] if "bias" in node else None
        view = nnx.eval_shape(lambda k=kernel, b=bias: nnx.Linear(
            k.shape[0], k.shape[1], use_bias=b is not None, param_dtype=k.dtype,
            rngs=nnx.Rngs(0)))
        view.kernel.set_value(kernel)
        if bias is not None:
            view.bias.set_value(bias)
        views.append((path, view))
    return views


def _without(node: dict, path: tuple) -> dict:
    """A copy of the nested dict ``node`` without the entry at ``path``, dicts left
    empty removed."""
    out = dict(node)
    if len(path) == 1:
        del out[path[0]]
    else:
        rest = _without(out[path[0]], path[1:])
        if rest:
            out[path[0]] = rest
        else:
            del out[path[0]]
    return out


def _install(wrapper, path: tuple, layer):
    """Drop the Linen ``nn.Dense`` variables at ``path`` from ``wrapper`` and route its
    calls to ``layer``."""
    if not isinstance(wrapper, _FactorizedToNNX):
        object.__setattr__(wrapper, "__class__", _FactorizedToNNX)
        wrapper.to_nnx__factorized = nnx.List([])
        wrapper.to_nnx__factorized_paths = ()
    attrs = _linen_attrs(wrapper)
    if not path:  # the wrapped module is the nn.Dense itself
        for name in ("kernel", "bias"):
            if name in attrs:
                delattr(wrapper, name)
    else:
        rest = _without(attrs, path)
        if path[0] in rest:
            setattr(wrapper, path[0], rest[path[0]])
        else:
            delattr(wrapper, path[0])
    wrapper.to_nnx__factorized.append(layer)
    wrapper.to_nnx__factorized_paths = wrapper.to_nnx__factorized_paths + (path,)


def factorize(model: nnx.Module, structure: str, *, rank=0.5,
              where: Callable[[tuple, nnx.Module], bool] | None = None,
              rngs: nnx.Rngs | None = None, verbose: bool = False) -> list[Replacement]:
    """Replace, in place, the dense layers of ``model`` by ``structure`` (module docstring).

    Args:
      model: an NNX module (layers may sit in attributes, lists, dicts, sub-modules),
        or one holding initialized ``nnx.bridge.ToNNX`` Linen modules (itself one).
      structure: one of :data:`LINEAR_STRUCTURES` (replaces ``nnx.Linear`` and, through
        the bridge, Linen ``nn.Dense``) or :data:`CONV_STRUCTURES` (replaces
        ``nnx.Conv``).
      rank: an int, a float in ``(0, 1]`` (the fraction of the dense layer's parameters
        to keep), or ``rank(path, layer)`` returning one of those per layer; ignored by
        ``"monarch"`` / ``"kronecker"``, whose structure fixes it.
      where: ``where(path, layer) -> bool`` selects the layers (default: all of the
        replaced type). A Linen ``nn.Dense``'s ``path`` is the wrapper's path followed
        by the Linen module path (``("Dense_0",)``, ``("block", "inner")``) and its
        ``layer`` an ``nnx.Linear`` holding its weights.
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
    found = []  # (path, layer, its kind, the ToNNX and Linen path when bridged)
    for path, node in nnx.iter_graph(model):
        path = tuple(path)
        if type(node) is kind and (where is None or where(path, node)):
            found.append((path, node, kind.__name__, None))
        elif kind is nnx.Linear and isinstance(node, bridge.ToNNX):
            found.extend((path + sub, view, "linen.Dense", (node, sub))
                         for sub, view in _linen_dense(node)
                         if where is None or where(path + sub, view))
    if not found:
        raise ValueError(f"no {kind.__name__} layer of the model is selected"
                         + (" by where" if where is not None else ""))
    report = []
    for path, layer, name, bridged in found:
        r = rank(path, layer) if callable(rank) else rank
        if callable(rank):
            _check_rank(r)
        old = _count(layer)
        shape = tuple(layer.kernel[...].shape)
        try:
            new = _build(structure, layer, r, rngs)
        except ValueError as e:
            report.append(Replacement(path, name, shape, old, old, None, False,
                                      f"kept dense: {e}"))
            continue
        n = _count(new)
        if n >= old:
            report.append(Replacement(path, name, shape, old, n, _error(layer, new),
                                      False, "kept dense: no parameter saving"))
            continue
        report.append(Replacement(path, name, shape, old, n, _error(layer, new), True))
        if bridged is None:
            _set(model, path, new)
        else:
            _install(*bridged, new)
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

