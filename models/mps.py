"""MPS classifier (Stoudenmire & Schwab 2016, "Supervised Learning with
Quantum-Inspired Tensor Networks") as a Flax NNX module.

Each pixel ``x in [0, 1]`` is mapped by a local feature map to a vector of size
``local_dim``; an MPS over the pixel sites with bond dimension ``bond_dim`` and one
extra label core carrying the class index at ``label_site`` contracts the
features to one amplitude per class.

The contraction is ``tnlib.tt.sweep_features`` from both ends towards the label
core, each a single ``lax.scan`` with a running log-scale, so 784 sites stay
finite in float32 and compile time does not depend on the number of sites.
Because every chain is uniform, the pixel cores are stored stacked, one
``nnx.Param`` of shape ``(sites, bond_dim, local_dim, bond_dim)`` per side of the
label core, the layout the scan consumes (DESIGN.md's one-``Param``-per-core rule
is for the dense-replacement layers, where ranks differ per core). The open
boundaries are the unit vector ``e_0``: only row 0 of the first core and column 0 of
the last enter the result, exactly as a TT with boundary ranks 1.

One MPS layout for the classifier, the sweep and the Born machine
-----------------------------------------------------------------

Every MPS of tnlib's models is a *padded stacked chain*: the pixel (or token) cores
stacked as one array ``(sites, D, d, D)``, each bond padded to ``D`` with zeros, the
open boundaries the unit vector ``e_0`` (so row 0 of the first core and column 0 of the
last are the TT's boundary-rank-1 cores). The three trainable forms differ only in
where the class index sits and how the chain is gauged:

* :class:`MPSClassifier` (gradient training): ``left`` ``(k, D, d, D)``, ``label``
  ``(D, C, D)`` *between* pixels ``k - 1`` and ``k`` (``k = label_site``), ``right``
  ``(L - k, D, d, D)``; no gauge.
* :class:`tnlib.sweep.LabelledMPS` (DMRG-style sweeps): ``cores`` ``(L, D, d, D)`` with
  the class index merged *into* the pixel core at ``center`` (``label``
  ``(D, d, C, D)``; the slot ``cores[center]`` is zero) and the kept bonds in
  ``ranks``. Convert with :func:`to_labelled_mps` / :func:`from_labelled_mps`:
  the outputs agree up to a positive factor per sample, so the predictions are the
  same (each sweep ends with the label at site 0, where the conversion is exact).
* :class:`tnlib.models.MPSBornMachine` and :class:`tnlib.sweep_born.BornMPS` (no
  label): ``cores`` ``(L, D, d, D)`` are the same array when the machine's embedding
  is the identity; :func:`tnlib.models.born.to_born_mps` folds a trained embedding into
  the cores and :func:`tnlib.models.born.from_born_mps` goes back (same
  probabilities).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tnlib import linalg, tt
from tnlib import sweep as sw
from tnlib._validate import check_size
from tnlib.models._common import compute_dtype

__all__ = ["FEATURE_MAPS", "MPSClassifier", "from_labelled_mps", "local_feature_map",
           "to_labelled_mps"]

FEATURE_MAPS = ("cos_sin", "linear")
READOUTS = ("linear", "born")
CONTRACTIONS = ("auto", "scan", "tree")


def local_feature_map(x, local_dim: int = 2, kind: str = "cos_sin"):
    """Map pixel values in ``[0, 1]`` to local feature vectors (new last axis).

    ``cos_sin`` is Stoudenmire & Schwab's map, generalized to ``local_dim = d`` as
    ``phi_s(x) = sqrt(C(d-1, s)) cos(pi x / 2)^(d-1-s) sin(pi x / 2)^s``, which has
    unit norm for every ``x``. ``linear`` is ``[1 - x, x]`` (``local_dim`` 2 only).
    """
    if isinstance(local_dim, bool) or not isinstance(local_dim, int) or local_dim < 1:
        raise ValueError(f"local_dim must be an int >= 1, got {local_dim!r}")
    if kind == "cos_sin":
        c, s = jnp.cos(0.5 * jnp.pi * x), jnp.sin(0.5 * jnp.pi * x)
        d = local_dim
        parts = [math.sqrt(math.comb(d - 1, k)) * c ** (d - 1 - k) * s**k for k in range(d)]
        return jnp.stack(parts, axis=-1)
    if kind == "linear":
        if local_dim != 2:
            raise ValueError(f"feature_map 'linear' needs local_dim=2, got {local_dim}")
        return jnp.stack([1 - x, x], axis=-1)
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {kind!r}")


def _near_identity(key, n_sites, bond_dim, local_dim, std, dtype):
    eye = jnp.eye(bond_dim, dtype=dtype)[None, :, None, :]
    noise = std * jax.random.normal(key, (n_sites, bond_dim, local_dim, bond_dim), dtype)
    return jnp.broadcast_to(eye, noise.shape) + noise


class MPSClassifier(nnx.Module):
    """MPS over ``n_sites`` pixels with a label core; ``__call__(x) -> logits``.

    Args:
      n_sites: number of input features (pixels), >= 1.
      n_classes: number of output classes, >= 1.
      bond_dim: MPS bond dimension (``chi`` in the paper), >= 1.
      local_dim: size of the local feature map, >= 2.
      label_site: where the label core sits, in ``[0, n_sites]`` (``k`` means between
        pixel ``k-1`` and pixel ``k``); default the middle, ``n_sites // 2``.
      feature_map: ``"cos_sin"`` (the paper's) or ``"linear"``.
      init_std: standard deviation of the noise added to the identity cores.
      readout: ``"linear"``: logits are the class amplitudes computed from the unit
        left and right environments (the label core's scale sets the temperature);
        ``"born"``: logits are ``log |amplitude|^2`` (class probabilities by the
        Born rule). Both are invariant to the chain's overall scale.
      contraction: ``"auto"``, ``"scan"`` or ``"tree"``: how each chain is contracted
        (``tnlib.tt.sweep_features``); ``"auto"`` applies ``tnlib.tt.feature_method``
        to the chain length, bond and batch size. All give the same outputs.
      dtype: computation dtype (default: the parameters').
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Input ``x`` has shape ``(..., n_sites)`` with values in ``[0, 1]``; output
    ``(..., n_classes)``.
    """

    def __init__(self, n_sites: int, n_classes: int = 10, *, bond_dim: int = 10,
                 local_dim: int = 2, label_site: int | None = None,
                 feature_map: str = "cos_sin", init_std: float = 1e-2,
                 readout: str = "linear", contraction: str = "auto", dtype=None,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        for name, value, low in (("n_sites", n_sites, 1), ("n_classes", n_classes, 1),
                                 ("bond_dim", bond_dim, 1), ("local_dim", local_dim, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if label_site is None:
            label_site = n_sites // 2
        if isinstance(label_site, bool) or not isinstance(label_site, int) or not (
            0 <= label_site <= n_sites
        ):
            raise ValueError(f"label_site must be an int in [0, {n_sites}], got {label_site!r}")
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
        if feature_map == "linear" and local_dim != 2:
            raise ValueError(f"feature_map 'linear' needs local_dim=2, got {local_dim}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if contraction not in CONTRACTIONS:
            raise ValueError(f"contraction must be one of {CONTRACTIONS}, got {contraction!r}")
        if not init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std!r}")
        # before any allocation: bond_dim=10**9 is a clear error, not an out-of-memory
        check_size(n_sites * bond_dim * bond_dim * (local_dim + n_classes), param_dtype,
                   f"MPSClassifier(n_sites={n_sites}, bond_dim={bond_dim}) parameters")
        self.n_sites, self.n_classes = n_sites, n_classes
        self.bond_dim, self.local_dim, self.label_site = bond_dim, local_dim, label_site
        self.feature_map, self.readout, self.contraction = feature_map, readout, contraction
        self.dtype, self.param_dtype = dtype, param_dtype
        k_left, k_label, k_right = jax.random.split(rngs.params(), 3)
        n_right = n_sites - label_site
        self.left = nnx.Param(
            _near_identity(k_left, label_site, bond_dim, local_dim, init_std, param_dtype))
        self.right = nnx.Param(
            _near_identity(k_right, n_right, bond_dim, local_dim, init_std, param_dtype))
        self.label = nnx.Param(
            _near_identity(k_label, 1, bond_dim, n_classes, init_std, param_dtype)[0])

    def amplitudes(self, x):
        """Class amplitudes of one or more inputs as ``(mantissa, log_scale)``.

        The exact amplitudes are ``mantissa * exp(log_scale)`` (``log_scale`` has the
        input's batch shape); with unit-norm environments, ``|mantissa|`` is at most
        the label core's spectral norm.
        """
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.n_sites,):
            raise ValueError(f"x must have shape (..., {self.n_sites}), got {x.shape}")
        dt = compute_dtype(self.dtype, x, self.param_dtype)
        feats = local_feature_map(x.astype(dt), self.local_dim, self.feature_map)
        batch = feats.shape[:-2]
        feats = feats.reshape((-1, self.n_sites, self.local_dim))
        left = self.left[...].astype(dt)
        right = self.right[...].astype(dt)
        label = self.label[...].astype(dt)
        k = self.label_site
        e0 = jnp.zeros((self.bond_dim,), dt).at[0].set(1)
        # Right chain swept from its open end: reverse the sites, swap the bonds.
        right_rev = jnp.transpose(right[::-1], (0, 3, 2, 1))
        ml, mr = (tt.feature_method(n, self.bond_dim, feats.shape[0], self.contraction)
                  for n in (k, self.n_sites - k))

        def one(f):
            lv, ls = tt.sweep_features(left, f[:k], e0, method=ml) if k > 0 else (e0, 0.0)
            rv, rs = (tt.sweep_features(right_rev, f[k:][::-1], e0, method=mr)
                      if k < self.n_sites else (e0, 0.0))
            amp = jnp.einsum("a,acb,b->c", lv, label, rv)
            return amp, ls + rs

        amp, scale = jax.vmap(one)(feats)
        return amp.reshape(batch + (self.n_classes,)), scale.reshape(batch)

    def __call__(self, x):
        amp, _ = self.amplitudes(x)
        if self.readout == "born":
            p = jnp.abs(amp) ** 2
            info = jnp.finfo(p.dtype)
            floor = info.eps * jax.lax.stop_gradient(jnp.max(p, axis=-1, keepdims=True))
            return jnp.log(p + floor + info.tiny)
        return amp


# --------------------------------------------------------------------------- conversion


def to_labelled_mps(model: MPSClassifier, max_bond: int | None = None) -> sw.LabelledMPS:
    """The :class:`tnlib.sweep.LabelledMPS` of an ``MPSClassifier``, exactly.

    The label core is merged into the pixel core after it (before it when
    ``label_site == n_sites``), which becomes the labelled site. Bonds are padded to
    ``max_bond`` (default the classifier's ``bond_dim``; not smaller). The outputs
    (:func:`tnlib.sweep.logits`) differ from the classifier's by a positive factor
    per sample (the environments are normalized at another place): the same
    predictions. Outside jit.
    """
    left, right = jnp.asarray(model.left[...]), jnp.asarray(model.right[...])
    label = jnp.asarray(model.label[...])
    k, L = model.label_site, model.n_sites
    max_bond = model.bond_dim if max_bond is None else max_bond
    cores = list(left) + list(right)
    if k < L:
        merged, center = jnp.einsum("acb,bse->asce", label, right[0]), k
    else:
        merged, center = jnp.einsum("asb,bce->asce", left[-1], label), L - 1
    if center == 0:
        merged = merged[:1]
    if center == L - 1:
        merged = merged[..., :1]
    cores[0], cores[-1] = cores[0][:1], cores[-1][..., :1]
    return sw.from_cores(cores, merged, center, max_bond)


def from_labelled_mps(mps: sw.LabelledMPS, *, feature_map: str = "cos_sin",
                      dtype=jnp.float32) -> MPSClassifier:
    """An ``MPSClassifier`` computing the same predictions as ``mps`` (outside jit).

    The labelled core ``(D, d, C, D)`` at site ``c`` is split by SVD into a pixel core
    and a label core placed after it (``label_site = c + 1``), keeping at most ``D``
    singular values: exact when the label sits at site 0 (where every sweep ends;
    the split then has rank ``<= d``) or whenever that core's rank is ``<= D``.
    Logits differ from :func:`tnlib.sweep.logits` by a positive factor per sample.
    A non-finite label gives NaN parameters (:func:`tnlib.linalg.svd`).
    """
    D, d, C = mps.max_bond, mps.local_dim, mps.n_classes
    c, L = int(mps.center), mps.n_sites
    u, s, vh = linalg.svd(mps.label.reshape(D * d, C * D))
    u, s, vh = u[:, :D], s[:D], vh[:D]
    pixel = u.reshape(D, d, D)
    label = (s[:, None] * vh).reshape(D, C, D)
    cores = mps.cores.at[c].set(pixel)
    # an abstract module (no random initialization to compute), then the parameters
    model = nnx.eval_shape(lambda: MPSClassifier(
        L, C, bond_dim=D, local_dim=d, label_site=c + 1, feature_map=feature_map,
        readout="linear", param_dtype=dtype, rngs=nnx.Rngs(0)))
    model.left = nnx.Param(cores[: c + 1].astype(dtype))
    model.right = nnx.Param(cores[c + 1 :].astype(dtype))
    model.label = nnx.Param(label.astype(dtype))
    return model
