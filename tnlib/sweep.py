"""Two-site sweeping (DMRG-style) training of MPS classifiers (Stoudenmire & Schwab 2016).

The classifier is an MPS over ``L`` pixel sites whose core at the orthogonality
``center`` carries the class index: ``label`` has shape ``(D, d, C, D)``. One *update*
merges the labelled core with its neighbour into a bond tensor ``B`` of shape
``(D, d, d, C, D)``, solves for ``B`` with the rest of the chain frozen (its
per-sample left and right environments are cached): by default the squared loss by
conjugate gradient (:func:`solve_cg`, as the authors' code TNML does), or gradient
steps on any loss; then splits ``B`` by a truncated SVD (:func:`kept_count`:
ITensor's discarded-weight ``cutoff`` between ``min_rank`` and ``max_rank``), leaves
the class index on the neighbour, and updates the cached environment it has just
passed. A *sweep* moves the label from its site to the right end, to the left end
and back (:func:`sweep_directions`); the chain's middle is the natural home of the
label (TNML's), since a label at an end sees only ``d * bond`` features of the rest.

Padded shapes. Bonds are padded to ``D = max_bond`` (the array shape); the bond
dimensions actually kept are in ``ranks`` and every row or column past them is
exactly zero, so an update compiles once per direction and ``D`` whatever the chain
length or the site (``update`` is jitted with the site read from the traced
``center``). :func:`grow` raises ``D`` in powers of two as the kept bonds need it
(``sweep(grow_to=...)``), so the work follows the bonds reached, not the maximum.

Outputs. As in :class:`tnlib.models.MPSClassifier` (``readout="linear"``), the
outputs (logits) of a sample are the class amplitudes computed from *unit*
environments: ``f_c(x) = <l(x), B_c(phi) r(x)> / (|l(x)| |r(x)|)`` (TNML normalizes
its environments the same way). The exact amplitude is ``f_c(x)`` times a positive
per-sample factor (``exp`` of the running log-scales kept beside the environments),
so the predicted class is the amplitude's argmax whatever the label position, while
the loss stays finite for hundreds of sites in float32. The loss is the paper's
squared loss ``1/2 sum_c (f_c - y_c)^2`` or cross-entropy on ``f``, averaged over
the batch (the CG solver minimizes the same squared loss summed, plus ``l2 |B|^2``).

Environment convention: ``left[j]`` contracts sites ``0..j-1`` (``left[0] = e_0``),
``right[j]`` sites ``j..L-1`` (``right[L] = e_0``); the bond tensor on sites
``(p, p+1)`` sees ``left[p]`` and ``right[p+2]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tnlib import _mps_sweep, linalg
from tnlib._mps_sweep import DIRECTIONS as _DIRECTIONS
from tnlib._mps_sweep import PaddedChain as _PaddedChain
from tnlib._mps_sweep import check_center as _check_center
from tnlib._mps_sweep import check_max_rank as _check_max_rank
from tnlib._mps_sweep import e0 as _e0
from tnlib._mps_sweep import left_step as _left_step
from tnlib._mps_sweep import local_logits as _local_logits
from tnlib._mps_sweep import right_orthogonal_cores as _right_orthogonal_cores
from tnlib._mps_sweep import right_step as _right_step
from tnlib._mps_sweep import scan_environments as _scan_environments
from tnlib._mps_sweep import sides as _sides
from tnlib._mps_sweep import sweep_directions
from tnlib._mps_sweep import sweep_loop as _sweep_loop
from tnlib._mps_sweep import unit as _unit
from tnlib._sweep_local import (
    bucket,
    data_chain,
    kept_count,
    loss_grad,
    loss_value,
    needed_bond,
    normal_ops,
    pad,
    rescaled,
    solve_cg,
)
from tnlib._validate import check_int
from tnlib.linalg import is_concrete
from tnlib.struct import pytree_dataclass

__all__ = [
    "LabelledMPS", "Environments", "init", "init_from_data", "from_cores", "to_cores",
    "environments", "logits", "bond_tensor", "bond_logits", "kept_count", "split_bond",
    "solve_cg", "update", "bucket", "needed_bond", "pad", "grow", "sweep", "sweep_directions",
    "LOSSES", "SOLVERS",
]

LOSSES = ("cross_entropy", "squared")


@pytree_dataclass
class LabelledMPS(_PaddedChain):
    """An MPS classifier in padded form.

    Attributes:
      cores: ``(L, D, d, D)`` pixel cores; the slot at ``center`` is zero.
      label: ``(D, d, C, D)`` the core at site ``center``, carrying the class index.
      center: int32 scalar, the site holding the label (an array, so moving it does
        not recompile).
      ranks: ``(L + 1,)`` int32 kept bond dimensions (1 at both ends); entries of the
        cores beyond them are zero. These are data (set by truncation inside jit),
        not shapes: the shapes are all ``D``.
    """

    cores: jax.Array
    label: jax.Array
    center: jax.Array
    ranks: jax.Array

    @property
    def n_classes(self) -> int:
        return self.label.shape[-2]


@pytree_dataclass
class Environments:
    """Per-sample environments of a training batch for the current label position.

    Fields: ``features`` ``(L, N, d)``; ``labels`` ``(N,)`` int; ``left`` and
    ``right`` ``(L + 1, N, D)`` unit vectors (zero where not valid); ``left_scale``
    and ``right_scale`` ``(L + 1, N)``, the logs of the norms divided out.
    """

    features: jax.Array
    labels: jax.Array
    left: jax.Array
    right: jax.Array
    left_scale: jax.Array
    right_scale: jax.Array


# ----------------------------------------------------------------------------- checks


def _check_features(mps: LabelledMPS, features, name="features"):
    features = jnp.asarray(features)
    want = (mps.n_sites, mps.local_dim)
    if features.ndim != 3 or features.shape[1:] != want:
        raise ValueError(f"{name} must have shape (N, n_sites, local_dim) = (N, {want[0]}, "
                         f"{want[1]}), got {features.shape}")
    return features


def _check_update_args(direction, loss, steps):
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    check_int(steps, "steps", 0)


# ----------------------------------------------------------------------- construction


def from_cores(cores, label, center: int, max_bond: int) -> LabelledMPS:
    """Pad an unpadded chain into a :class:`LabelledMPS` (on the host: outside jit).

    Args:
      cores: ``L`` arrays ``(r_{k-1}, d, r_k)`` with ``r_0 = r_L = 1`` (the entry at
        ``center`` is ignored).
      label: ``(r_{c-1}, d, C, r_c)`` the labelled core at site ``center``.
      center: site of the label, in ``[0, L)``.
      max_bond: the padded bond dimension ``D``, at least every ``r_k``.
    """
    cores = [jnp.asarray(c) for c in cores]
    label = jnp.asarray(label)
    L = len(cores)
    check_int(L, "len(cores)", 2)
    check_int(max_bond, "max_bond", 1)
    check_int(center, "center", 0)
    if center >= L:
        raise ValueError(f"center must be in [0, {L - 1}], got {center}")
    if label.ndim != 4:
        raise ValueError(f"label must have shape (r_left, d, C, r_right), got {label.shape}")
    shapes = [tuple(c.shape) for c in cores]
    shapes[center] = (label.shape[0], label.shape[1], label.shape[3])
    d = shapes[0][1]
    for k, s in enumerate(shapes):
        if len(s) != 3 or s[1] != d:
            raise ValueError(f"cores[{k}] must have shape (r_left, {d}, r_right), got {s}")
        if k + 1 < L and s[2] != shapes[k + 1][0]:
            raise ValueError(f"cores: bond between sites {k} and {k + 1} does not match: "
                             f"{s} and {shapes[k + 1]}")
    if shapes[0][0] != 1 or shapes[-1][2] != 1:
        raise ValueError(f"cores: open-boundary ranks must be 1, got {shapes[0]} and "
                         f"{shapes[-1]}")
    ranks = [1] + [s[2] for s in shapes]
    if max(ranks) > max_bond:
        raise ValueError(f"max_bond={max_bond} is below the chain's largest bond {max(ranks)}")
    dt = jnp.result_type(label, *cores)
    D, C = max_bond, label.shape[2]
    stacked = np.zeros((L, D, d, D), dt)  # padded on the host: one transfer, no compiles
    for k, (s, c) in enumerate(zip(shapes, cores, strict=True)):
        if k != center:
            stacked[k, : s[0], :, : s[2]] = np.asarray(c)
    lab = np.zeros((D, d, C, D), dt)
    lab[: label.shape[0], :, :, : label.shape[3]] = np.asarray(label)
    return LabelledMPS(jnp.asarray(stacked), jnp.asarray(lab), jnp.asarray(center, jnp.int32),
                       jnp.asarray(ranks, jnp.int32))


def to_cores(mps: LabelledMPS):
    """The unpadded chain: ``(cores, label, center)`` as in :func:`from_cores`, the
    labelled site's core being ``None``. Reads ``ranks`` and ``center``: outside jit."""
    ranks = [int(r) for r in np.asarray(mps.ranks)]
    c = int(mps.center)
    host = np.asarray(mps.cores)  # sliced on the host: no compile per core shape
    cores = [None if k == c else jnp.asarray(host[k, : ranks[k], :, : ranks[k + 1]])
             for k in range(mps.n_sites)]
    return cores, jnp.asarray(np.asarray(mps.label)[: ranks[c], :, :, : ranks[c + 1]]), c


def init(key, n_sites: int, n_classes: int, *, max_bond: int, local_dim: int = 2,
         init_bond: int = 1, init_std: float = 0.0, center: int = 0,
         dtype=jnp.float32) -> LabelledMPS:
    """A small-bond start for sweeping: the label at ``center``, the rest right-orthogonal.

    With ``init_bond=1`` (default) the pixel cores are the product state
    ``(1, ..., 1) / sqrt(d)`` (every pixel contributes ``<1, phi(x)> / sqrt(d)``);
    larger ``init_bond`` gives random right-orthogonal cores of that bond. The label
    core starts as ``init_std`` times Gaussian noise (zero by default: the first
    update learns it from the data).
    """
    for name, v, low in (("n_sites", n_sites, 2), ("n_classes", n_classes, 1),
                         ("max_bond", max_bond, 1), ("local_dim", local_dim, 1),
                         ("init_bond", init_bond, 1)):
        check_int(v, name, low)
    if init_bond > max_bond:
        raise ValueError(f"init_bond={init_bond} exceeds max_bond={max_bond}")
    check_int(center, "center", 0)
    if center >= n_sites:
        raise ValueError(f"center must be in [0, {n_sites - 1}], got {center}")
    if not init_std >= 0:
        raise ValueError(f"init_std must be >= 0, got {init_std!r}")
    k_cores, k_label = jax.random.split(key)
    cores, ranks = _right_orthogonal_cores(k_cores, n_sites, local_dim, init_bond, dtype)
    d = local_dim
    shape = (ranks[center], d, n_classes, ranks[center + 1])
    label = init_std * jax.random.normal(k_label, shape, dtype) if init_std else np.zeros(
        shape, dtype)
    return from_cores(cores, label, center, max_bond)


def init_from_data(key, features, labels, n_classes: int, *, init_bond: int = 10,
                   per_class: int = 100, center: int = 0, max_bond: int | None = None,
                   label_weight: float = 0.1, dtype=jnp.float32) -> LabelledMPS:
    """TNML's data-driven start (``fixedL.cc``): for each class, the sum of the product
    states of ``per_class`` training samples drawn at random, compressed to bond
    ``init_bond`` (discarded weight <= 1e-10), times ``label_weight`` on that class's
    label; the classes summed and compressed again (bond ``init_bond``, discarded
    weight <= 1e-8), the label core scaled to unit norm.

    The label sits on ``center`` (TNML: the middle site, ``L // 2``), the cores left
    of it left-orthogonal and those right of it right-orthogonal. Built on the host
    in float64 (``O(L per_class^3)``), then padded to ``max_bond`` (default the
    largest bond reached).

    Args:
      key: which samples are drawn (without replacement within a class).
      features: ``(N, L, d)`` local feature vectors of the training set.
      labels: ``(N,)`` int classes in ``[0, n_classes)``.
    """
    check_int(n_classes, "n_classes", 1)
    check_int(init_bond, "init_bond", 1)
    check_int(per_class, "per_class", 1)
    check_int(center, "center", 0)
    feats = np.asarray(features, np.float64)
    y = np.asarray(labels)
    if feats.ndim != 3 or feats.shape[1] < 2:
        raise ValueError(f"features must have shape (N, n_sites >= 2, local_dim), got "
                         f"{feats.shape}")
    if y.shape != feats.shape[:1]:
        raise ValueError(f"labels must have shape ({feats.shape[0]},), got {y.shape}")
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    L, d = feats.shape[1:]
    if center >= L:
        raise ValueError(f"center must be in [0, {L - 1}], got {center}")
    chain = data_chain(feats, y, n_classes, init_bond, per_class, center, label_weight, rng)
    label = chain[center].reshape(chain[center].shape[0], d, n_classes, -1)
    label = label / np.linalg.norm(label)
    cores = [np.zeros((a.shape[0], d, a.shape[2])) if k == center else a
             for k, a in enumerate(chain)]
    bond = max(a.shape[2] for a in chain)
    max_bond = bond if max_bond is None else max_bond
    return from_cores([c.astype(dtype) for c in cores], label.astype(dtype), center, max_bond)


# ----------------------------------------------------------------------- environments


@jax.jit
def _environments(mps, feats, labels):
    feats, left, right, left_scale, right_scale = _scan_environments(mps.cores, feats,
                                                                     mps.max_bond)
    return Environments(feats, labels, left, right, left_scale, right_scale)


def environments(mps: LabelledMPS, features, labels) -> Environments:
    """Cache the environments of a training batch for the label at ``mps.center``.

    Args:
      mps: the model.
      features: ``(N, L, d)`` local feature vectors (``local_feature_map`` of the pixels).
      labels: ``(N,)`` int class labels.

    Left environments are valid up to the label site, right ones from the site
    after it (the zero slot at ``center`` zeroes the rest). One ``lax.scan`` each way.
    """
    features = _check_features(mps, features)
    labels = jnp.asarray(labels)
    if labels.shape != features.shape[:1] or not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be ints of shape ({features.shape[0]},), got "
                         f"{labels.dtype} {labels.shape}")
    return _environments(mps, jnp.swapaxes(features, 0, 1), labels)


@jax.jit
def _logits(mps, feats):
    L, n, _ = feats.shape
    dt = jnp.promote_types(jnp.result_type(mps.cores, feats), jnp.float32)
    c = mps.center
    start = (_e0(n, mps.max_bond, dt), jnp.zeros((n,), dt))

    def go(step, active):
        def body(carry, inp):
            k, core, f = inp
            v, ls = _unit(step(carry[0], core.astype(dt), f.astype(dt)))
            on = active(k)
            return (jnp.where(on, v, carry[0]), jnp.where(on, carry[1] + ls, carry[1])), None
        return body

    sites = jnp.arange(L)
    (lv, ls), _ = jax.lax.scan(go(_left_step, lambda k: k < c), start, (sites, mps.cores, feats))
    (rv, rs), _ = jax.lax.scan(go(_right_step, lambda k: k > c), start,
                               (sites, mps.cores, feats), reverse=True)
    fc = jax.lax.dynamic_index_in_dim(feats, c, keepdims=False).astype(dt)
    out = jnp.einsum("na,ns,ascb,nb->nc", lv, fc, mps.label.astype(dt), rv)
    return out, ls + rs


def logits(mps: LabelledMPS, features):
    """Outputs of the classifier on a batch: ``(f, log_scale)``.

    ``f`` ``(N, C)`` are the amplitudes computed from unit environments (the logits,
    as ``MPSClassifier``'s linear readout); the exact amplitudes are
    ``f * exp(log_scale)[:, None]``. ``features`` is ``(N, L, d)``. One jitted scan
    each way; compiles once per shape.
    """
    features = _check_features(mps, features)
    return _logits(mps, jnp.swapaxes(features, 0, 1))


# ------------------------------------------------------------------------ bond tensor


def _bond(mps, p, direction):
    """``(D, d, d, C, D)`` bond tensor on sites ``(p, p+1)``."""
    at = lambda k: jax.lax.dynamic_index_in_dim(mps.cores, k, keepdims=False)  # noqa: E731
    if direction == "right":  # label on p
        return jnp.einsum("ascb,btd->astcd", mps.label, at(p + 1))
    return jnp.einsum("asb,btcd->astcd", at(p), mps.label)  # label on p + 1


def bond_tensor(mps: LabelledMPS, direction: str = "right"):
    """The bond tensor ``B`` ``(D, d, d, C, D)`` of the label's site and its neighbour:
    sites ``(center, center+1)`` for ``"right"``, ``(center-1, center)`` for ``"left"``."""
    _check_update_args(direction, "squared", 0)
    _check_center(mps, direction)
    c = mps.center
    return _bond(mps, c if direction == "right" else c - 1, direction)


def bond_logits(B, left, f1, f2, right):
    """Outputs ``(N, C)`` of bond tensor ``B`` ``(D, d, d, C, D)`` for left / right
    environments ``(N, D)`` and the features ``(N, d)`` of its two sites."""
    return _local_logits(B, *_sides(left, f1, f2, right))


def split_bond(B, direction: str, max_rank, cutoff, min_rank=1):
    """Split a bond tensor by truncated SVD, moving the class index one site on.

    ``"right"``: ``B -> core (D, d, D)`` (left-orthogonal, on the left site) and
    ``label (D, d, C, D)`` on the right site; ``"left"``: ``label`` on the left site
    and a right-orthogonal ``core`` on the right. Keeps the leading singular values
    chosen by :func:`kept_count` (discarded weight at most ``cutoff``, between
    ``min_rank`` and ``max_rank <= D``; all traced) and zeroes the others with their
    vectors.

    Returns ``(left_part, right_part, rank, discarded)``: ``rank`` the number kept,
    ``discarded`` the squared weight dropped relative to ``||B||^2``.
    """
    _check_update_args(direction, "squared", 0)
    D, d, _, C, _ = B.shape
    if direction == "right":
        m = B.reshape(D * d, d * C * D)
    else:
        m = jnp.transpose(B, (0, 1, 3, 2, 4)).reshape(D * d * C, d * D)
    u, s, vh = linalg.svd(m)  # NaN factors for a diverged (non-finite) B, never a hang
    total = jnp.sum(s**2)  # ||B||^2, the values past D included
    k = kept_count(s, total, cutoff, jnp.minimum(max_rank, D), min_rank)
    u, s, vh = u[:, :D], s[:D], vh[:D]
    keep = jnp.arange(D) < k
    kept = jnp.where(keep, s, 0)
    discarded = jnp.where(total > 0, 1 - jnp.sum(kept**2) / jnp.where(total > 0, total, 1), 0)
    u = u * keep.astype(u.dtype)
    vh = vh * keep[:, None].astype(vh.dtype)
    if direction == "right":
        return (u.reshape(D, d, D), (kept[:, None] * vh).reshape(D, d, C, D), k, discarded)
    return ((u * kept).reshape(D, d, C, D), vh.reshape(D, d, D), k, discarded)


# ----------------------------------------------------------------------------- update


def _update(mps, envs, lr, momentum, cutoff, max_rank, l2, min_rank, *, direction, iters,
            loss, optimizer, solver):
    D = mps.max_bond
    c = mps.center
    p = c if direction == "right" else c - 1
    at = lambda a, k: jax.lax.dynamic_index_in_dim(a, k, keepdims=False)  # noqa: E731
    dt = envs.left.dtype
    B = _bond(mps, p, direction).astype(dt)
    f1, f2 = at(envs.features, p), at(envs.features, p + 1)
    left, right = at(envs.left, p), at(envs.right, p + 2)
    lf, rf = _sides(left, f1, f2, right)
    idx = jnp.arange(D)
    lmask = (idx < at(mps.ranks, p)).astype(dt)
    rmask = (idx < at(mps.ranks, p + 2)).astype(dt)
    mask = lmask[:, None, None, None, None] * rmask

    def loss_fn(b):
        return loss_value(_local_logits(b, lf, rf), envs.labels, loss)

    out = _local_logits(B, lf, rf)
    loss_before = loss_value(out, envs.labels, loss)
    if solver == "cg":  # from the best multiple of B: the chain's scale is arbitrary
        B, out = rescaled(B, out, envs.labels, l2)
        B, _, cost = solve_cg(B, lf, rf, envs.labels, iters, l2, mask, out)
        # the squared loss (a mean) from the tracked cost: no pass over the samples
        loss_after = 0.5 * (cost - l2 * jnp.vdot(B, B)) / out.shape[0]
    else:
        forward, adjoint = normal_ops(lf, rf, B.shape)

        def grad(b):  # the outputs are linear in B: dL/dB = sum_n lf_n (x) dL/df_n (x) rf_n
            return adjoint(loss_grad(forward(b), envs.labels, loss))

        B = _mps_sweep.descend(grad, B, mask, iters, lr, momentum, optimizer)
        loss_after = loss_fn(B)
    lpart, rpart, rank, discarded = split_bond(B, direction, jnp.minimum(max_rank, D), cutoff,
                                               min_rank)
    # rounding must not leak into the padding: rows / columns past the outer bonds are zero
    lpart = lpart * lmask.reshape((D,) + (1,) * (lpart.ndim - 1))
    rpart = rpart * rmask
    dtc = mps.cores.dtype
    if direction == "right":
        core, label = lpart, rpart
        cores = mps.cores.at[p].set(core.astype(dtc)).at[p + 1].set(0)
        v, ls = _unit(_left_step(left, core, f1))
        envs = Environments(envs.features, envs.labels, envs.left.at[p + 1].set(v),
                            envs.right, envs.left_scale.at[p + 1].set(at(envs.left_scale, p) + ls),
                            envs.right_scale)
        center = c + 1
    else:
        label, core = lpart, rpart
        cores = mps.cores.at[p + 1].set(core.astype(dtc)).at[p].set(0)
        v, ls = _unit(_right_step(right, core, f2))
        envs = Environments(envs.features, envs.labels, envs.left, envs.right.at[p + 1].set(v),
                            envs.left_scale,
                            envs.right_scale.at[p + 1].set(at(envs.right_scale, p + 2) + ls))
        center = c - 1
    ranks = mps.ranks.at[p + 1].set(rank.astype(mps.ranks.dtype))
    new = LabelledMPS(cores, label.astype(mps.label.dtype), center.astype(c.dtype), ranks)
    info = {"loss_before": loss_before, "loss_after": loss_after, "rank": rank,
            "discarded": discarded, "site": p}
    return new, envs, info


_update_jit = jax.jit(_update, static_argnames=("direction", "iters", "loss", "optimizer",
                                                "solver"),
                      donate_argnames=("envs",))

SOLVERS = ("cg", "gd")


def update(mps: LabelledMPS, envs: Environments, *, direction: str, solver: str = "cg",
           passes: int = 4, l2=0.0, cutoff=1e-10, max_rank=None, min_rank=1,
           loss: str = "squared", steps: int = 4, lr=1.0, momentum=0.0,
           optimizer: optax.GradientTransformation | None = None):
    """One two-site update: optimize the bond tensor at the label, split it, move on.

    Args:
      mps: the model; the label moves from ``center`` to ``center + 1`` (``"right"``,
        needs ``center <= L - 2``) or ``center - 1`` (``"left"``, ``center >= 1``).
        Outside jit a label that cannot move raises ValueError; under jit these bounds
        are the caller's business (``sweep`` keeps them). Real dtypes only (TypeError).
      envs: the cached environments (from :func:`environments`); **donated**: use
        the returned ones afterwards.
      direction: ``"right"`` or ``"left"`` (static: one compilation each).
      solver: ``"cg"`` (default; Stoudenmire & Schwab, TNML): :func:`solve_cg` on the
        squared loss from the best multiple of the bond tensor (an exact line search;
        TNML rescales it to unit norm), ``passes`` iterations (static) with ridge term
        ``l2`` (TNML's ``lambda``, on the summed cost; traced). ``"gd"``: ``steps`` (static) optax
        steps of ``optimizer`` (default Nesterov SGD with ``lr`` and ``momentum``,
        both traced) on ``loss``, ``"squared"`` or ``"cross_entropy"``.
      cutoff: largest discarded weight of the split (ITensor's / TNML's ``cutoff``;
        traced); see :func:`kept_count`.
      max_rank, min_rank: bounds on the kept bond (traced; ``max_rank`` defaults to and
        is capped at ``D = mps.max_bond``; ``min_rank`` is TNML's ``minm``, reached
        when the bond tensor has that many non-zero singular values).
      loss: the loss reported (and, for ``"gd"``, minimized); ``"cg"`` needs
        ``"squared"``.

    Returns ``(mps, envs, info)`` with ``info`` holding ``loss_before`` and
    ``loss_after`` the local solve (``loss``, before truncation), the kept ``rank``,
    the ``discarded`` relative weight and the bond's left ``site``.
    """
    _check_training(mps, max_rank)
    _check_center(mps, direction)
    return _update_unchecked(mps, envs, direction=direction, solver=solver, passes=passes,
                             l2=l2, cutoff=cutoff, max_rank=max_rank, min_rank=min_rank,
                             loss=loss, steps=steps, lr=lr, momentum=momentum,
                             optimizer=optimizer)


def _check_training(mps, max_rank):
    if jnp.issubdtype(jnp.result_type(mps.cores, mps.label), jnp.complexfloating):
        raise TypeError(f"mps: the classifier trains real chains (the losses need real "
                        f"outputs), got dtype {jnp.result_type(mps.cores, mps.label)}")
    _check_max_rank(max_rank)


def _check_solver(solver, loss, passes, l2, min_rank, optimizer=None):
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "cg" and optimizer is not None:
        raise ValueError("optimizer is the gradient solver's: pass solver='gd' with it")
    if solver == "cg" and loss != "squared":
        raise ValueError(f"solver='cg' solves the squared loss; got loss={loss!r} (use "
                         f"solver='gd' for {loss!r})")
    check_int(passes, "passes", 0)
    check_int(min_rank, "min_rank", 1)
    if is_concrete(l2) and not float(l2) >= 0:
        raise ValueError(f"l2 must be >= 0, got {l2!r}")


def _update_unchecked(mps, envs, *, direction, solver="cg", passes=4, l2=0.0, cutoff=1e-10,
                      max_rank=None, min_rank=1, loss="squared", steps=4, lr=1.0, momentum=0.0,
                      optimizer=None):
    _check_update_args(direction, loss, steps)
    _mps_sweep.check_optimizer(optimizer)
    _check_solver(solver, loss, passes, l2, min_rank, optimizer)
    max_rank = mps.max_bond if max_rank is None else max_rank
    return _update_jit(mps, envs, lr, momentum, cutoff, max_rank, l2, min_rank,
                       direction=direction, iters=passes if solver == "cg" else steps,
                       loss=loss, optimizer=optimizer if solver == "gd" else None,
                       solver=solver)


# --------------------------------------------------------------------- growing bonds


def grow(mps: LabelledMPS, envs: Environments, direction: str, max_rank: int):
    """Make room for the next update: when it may keep more than ``mps.max_bond``
    (:func:`needed_bond`), pad the chain to the next :func:`bucket` (at most
    ``max_rank``) and recompute the environments at that size (``envs`` is then
    dropped). So each update costs what the bonds reached need, compiles happen once
    per bucket, and the environments are those :func:`environments` gives for the
    chain, whether or not the run was interrupted. Returns ``(mps, envs)``."""
    want = needed_bond(mps, direction, max_rank)
    if want <= mps.max_bond:
        return mps, envs
    mps = pad(mps, bucket(want, max_rank))
    return mps, _environments(mps, envs.features, envs.labels)


def sweep(mps: LabelledMPS, envs: Environments, *, solver: str = "cg", passes: int = 4,
          l2=0.0, cutoff=1e-10, max_rank=None, min_rank=1, loss: str = "squared",
          steps: int = 4, lr=1.0, momentum=0.0, callback=None,
          optimizer: optax.GradientTransformation | None = None, grow_to: int | None = None):
    """One sweep: move the label from its site to the right end, to the left end, and
    back to its site (where the chain's middle gives the classifier the most room: a
    label at an end sees only ``d * bond`` features of the rest of the image).

    Runs ``L - 1 - center`` right updates, ``L - 1`` left updates and ``center`` right
    ones (:func:`sweep_directions`; see :func:`update` for the arguments; ``envs`` is
    donated). ``grow_to``: when given, the padded bond grows by :func:`grow` up to
    ``grow_to`` as the kept bonds need it (``max_rank`` then defaults to ``grow_to``).
    ``callback(info)``, when given, is called after every update (a progress bar, say).
    Returns ``(mps, envs, infos)`` where ``infos`` stacks the per-update ``info``
    arrays in order (NumPy arrays: a sweep is a host loop); the kept bond dimensions
    after the sweep are ``mps.ranks``.
    """
    _check_training(mps, max_rank)
    _check_update_args("right", loss, steps)
    _mps_sweep.check_optimizer(optimizer)
    _check_solver(solver, loss, passes, l2, min_rank, optimizer)
    kwargs = dict(solver=solver, passes=passes, l2=l2, cutoff=cutoff, min_rank=min_rank,
                  loss=loss, steps=steps, lr=lr, momentum=momentum, optimizer=optimizer)
    if grow_to is None:
        return _sweep_loop(_update_unchecked, mps, envs, callback, True, max_rank=max_rank,
                           **kwargs)
    check_int(grow_to, "grow_to", 1)
    cap = grow_to if max_rank is None else min(int(max_rank), grow_to)

    def grown(mps, envs, *, direction, **kw):
        mps, envs = grow(mps, envs, direction, cap)
        return _update_unchecked(mps, envs, direction=direction, max_rank=cap, **kw)

    return _sweep_loop(grown, mps, envs, callback, True, **kwargs)
