"""Long chains and feature maps of ``tnlib.tt``: stacking uniform chains for
``lax.scan`` and contracting an MPS with one feature vector per site (the MPS
classifier's contraction).

Everything here is re-exported by ``tnlib.tt`` (call ``tnlib.tt.contract_features``);
this module keeps ``tt.py`` to the format itself. The paths (scan, log-depth tree,
unrolled) live in ``tnlib/_features.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnlib import _features
from tnlib._tt_sweeps import acc_dtype as _acc_dtype
from tnlib._tt_sweeps import compute_dtype as _compute_dtype
from tnlib.tt import TensorTrain, check

__all__ = ["stack", "feature_method", "sweep_features", "contract_features"]


def stack(tt: TensorTrain):
    """Stack the cores of a uniform chain into one ``(L, r, n, r)`` array, or None.

    A chain is uniform when all mode sizes are equal and all internal bonds are
    ``r``. The boundary cores ``(1, n, r)`` and ``(r, n, 1)`` are zero-padded to
    ``(r, n, r)``; contracting from the unit vector ``e_0`` on the left and reading
    index 0 on the right gives exactly the original chain.
    """
    check(tt)
    L = tt.n_sites
    if L < 2 or len(set(tt.dims)) != 1 or len(set(tt.ranks[1:-1])) != 1:
        return None
    r = tt.ranks[1]
    first = jnp.pad(tt.cores[0], ((0, r - 1), (0, 0), (0, 0)))
    last = jnp.pad(tt.cores[-1], ((0, 0), (0, 0), (0, r - 1)))
    dt = tt.dtype
    parts = [first[None].astype(dt)]
    if L > 2:
        parts.append(jnp.stack(tt.cores[1:-1]).astype(dt))
    parts.append(last[None].astype(dt))
    return jnp.concatenate(parts, axis=0)


def feature_method(n_sites: int, bond: int, batch: int = 1, method: str = "auto") -> str:
    """``"scan"`` or ``"tree"``: the path ``sweep_features(..., method=method)`` takes.

    ``"auto"`` chooses the log-depth ``"tree"`` for a single chain (``batch`` 1) of
    at least 128 sites and bond at least 8, else the sequential ``"scan"`` (the tree
    does ``bond`` times the work, which a batch of chains already parallelizes).
    Measured on a CPU (see ``tnlib/_features.py``); to be revisited on GPU.
    """
    return _features.choose(method, n_sites, bond, batch)


def sweep_features(cores, features, vector, *, method: str = "auto"):
    """Sweep a row vector through stacked cores contracted with per-site features.

    Args:
      cores: ``(L, r, n, r)`` stacked cores.
      features: ``(L, n)`` one feature vector per site.
      vector: ``(r,)`` starting row vector.
      method: ``"scan"``: one ``lax.scan``, ``L`` steps of ``O(r^2 n)`` work, compile
        time independent of L. ``"tree"``: the site matrices ``sum_n f_n A[:, n, :]``
        of all sites at once, multiplied pairwise in ``ceil(log2 L)`` levels of
        batched matmuls (``O(L r^3)`` work, log depth). ``"auto"`` (default) is
        ``feature_method(L, r)``, the rule for one chain; inside ``vmap`` over a
        batch pass ``method=feature_method(L, r, batch)``.

    Returns:
      ``(v, log_scale)``: ``v`` has unit norm (or is zero) and the exact result is
      ``v * exp(log_scale)``. Both methods return the same function (the same
      values and gradients up to rounding); each keeps running log-scales (in at
      least float32) so 1000-site chains stay finite in float32 / bfloat16.
    """
    if cores.ndim != 4 or features.shape != (cores.shape[0], cores.shape[2]):
        raise ValueError(
            f"cores must be (L, r, n, r) and features (L, n); got {cores.shape} and "
            f"{features.shape}"
        )
    if vector.shape != (cores.shape[1],):
        raise ValueError(f"vector must have shape ({cores.shape[1]},), got {vector.shape}")
    method = _features.choose(method, cores.shape[0], cores.shape[1])
    dt = _compute_dtype(jnp.result_type(cores, features, vector))
    sweep = _features.scan_sweep if method == "scan" else _features.tree_sweep
    return sweep(cores.astype(dt), features.astype(dt), vector.astype(dt), _acc_dtype(dt))


def contract_features(tt: TensorTrain, features, *, method: str = "auto"):
    """Contract an MPS with one feature vector per site: ``sum tt[i] prod_k f_k[i_k]``.

    This is the MPS classifier's contraction (Stoudenmire & Schwab 2016).

    Args:
      tt: a ``TensorTrain`` with mode sizes ``(n, ..., n)`` or any sizes.
      features: ``(L, n)`` array (uniform sizes) or a sequence of ``L`` vectors.
      method: as in ``sweep_features``; non-uniform chains run it unrolled
        (``"auto"`` decides from the largest bond).

    Returns:
      ``(mantissa, log_scale)`` with value ``mantissa * exp(log_scale)`` and
      ``|mantissa|`` of order one, finite for hundreds of sites in float32.
    """
    check(tt)
    if isinstance(features, jax.Array) or hasattr(features, "shape"):
        features = jnp.asarray(features)
        if features.shape != (tt.n_sites, max(tt.dims)) or len(set(tt.dims)) != 1:
            raise ValueError(
                f"features must have shape (n_sites, n) = ({tt.n_sites}, {tt.dims[0]}) "
                f"for dims {tt.dims}, got {features.shape}"
            )
        feats = features  # sliced per site only where the chain is not stacked
    else:
        feats = [jnp.asarray(f) for f in features]
        if [f.shape for f in feats] != [(n,) for n in tt.dims]:
            raise ValueError(f"features must be vectors of sizes {tt.dims}, got "
                             f"{[f.shape for f in feats]}")
    method = _features.choose(method, tt.n_sites, max(tt.ranks))
    stacked = stack(tt)
    if stacked is not None:
        r = stacked.shape[1]
        start = jnp.zeros((r,), stacked.dtype).at[0].set(1)
        # an (L, n) array goes in whole: slicing it into L vectors and stacking them
        # again costs XLA:CPU ~50 s of compilation at 1000 sites in bfloat16
        fs = feats if isinstance(feats, jax.Array) else jnp.stack(feats)
        vec, acc = sweep_features(stacked, fs, start, method=method)
        return vec[0], acc
    if isinstance(feats, jax.Array):
        feats = [feats[k] for k in range(tt.n_sites)]
    dt = _compute_dtype(jnp.result_type(tt.dtype, *feats))
    vec, acc = _features.unstacked_chain([c.astype(dt) for c in tt.cores],
                                         [f.astype(dt) for f in feats], method, _acc_dtype(dt))
    return vec[0], acc
