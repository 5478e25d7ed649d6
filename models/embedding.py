"""TT-factorized embedding table (Khrulkov et al. 2019, "Tensorized Embedding Layers
for Efficient Model Compression") as a Flax NNX module mirroring ``nnx.Embed``.

The table ``(num_embeddings, features)`` is the top rows of a TT-matrix (``tnlib.tt``
``TTMatrix``, cores ``(r_{k-1}, v_k, f_k, r_k)``) over the factored vocabulary
``V = prod(vocab_factors) >= num_embeddings`` and features
``features = prod(feature_factors)``. Row ``i`` with mixed-radix digits
``(i_1, ..., i_L)`` (row-major, as the TT-matrix flattens its rows) is the tensor train
with cores ``cores[k][:, i_k, :, :]``, so a lookup selects one slice per core and
contracts a small TT of length ``features``: the full table is never built.

Learning rates (``lr_multipliers()``, read by ``tnlib.models.structured_optimizer``):
the muP rule of ``tnlib.btt`` (Adam multiplier ``d_in / fan_in(core)`` relative to the
dense layer). A lookup is a product with a one-hot vector, so a dense table sums one
term per output (``d_in = 1``: ``nnx.Embed``'s learning rate is the reference); core
``k`` of the sliced train, contracted from the left, sums over its bond ``r_{k-1}`` and
the one selected vocabulary digit, so its fan-in is ``r_{k-1}`` and its multiplier
``1 / r_{k-1}`` (1 for the first core).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from tnlib import linalg, tt
from tnlib.models._common import check_int, param_tree

__all__ = ["TTEmbedding"]


def _factors(value, name) -> tuple[int, ...]:
    if not isinstance(value, tuple | list) or len(value) == 0 or any(
        isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value
    ):
        raise ValueError(f"{name} must be a non-empty sequence of ints >= 1, got {value!r}")
    return tuple(value)


class TTEmbedding(nnx.Module):
    """Embedding lookup ``ids -> table[ids]`` with a TT-matrix table.

    Args:
      num_embeddings: vocabulary size ``N >= 1``.
      features: embedding width ``F >= 1``.
      vocab_factors: ``(v_1, ..., v_L)`` with ``prod(v_k) >= num_embeddings`` (the
        extra rows of the TT-matrix are never looked up).
      feature_factors: ``(f_1, ..., f_L)`` with ``prod(f_k) == features``, as many as
        ``vocab_factors``.
      rank: TT rank, an int (every internal bond) or ``L - 1`` ints.
      init_scale: entries of the table have variance ``init_scale**2 / features``
        (``tnlib.tt.random`` cores, each scaled by the same factor), so rows have
        norm about ``init_scale``.
      dtype: dtype of the looked-up embeddings (default: ``param_dtype``).
      param_dtype: parameter dtype.
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Params: ``cores``, an ``nnx.List`` of ``L`` ``nnx.Param`` of shapes
    ``(r_{k-1}, v_k, f_k, r_k)``. ``__call__(ids)``: integer ``ids`` of any shape in
    ``[0, num_embeddings)`` -> ``ids.shape + (features,)``. Out-of-range ids are an error
    when ``ids`` are concrete; under ``jit`` their rows come back as NaN (as
    ``jnp.take`` fills), never as some other row.
    """

    def __init__(self, num_embeddings: int, features: int, *, vocab_factors, feature_factors,
                 rank, init_scale: float = 1.0, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        check_int(num_embeddings, "num_embeddings")
        check_int(features, "features")
        vocab_factors = _factors(vocab_factors, "vocab_factors")
        feature_factors = _factors(feature_factors, "feature_factors")
        if len(vocab_factors) != len(feature_factors):
            raise ValueError(f"vocab_factors {vocab_factors} and feature_factors "
                             f"{feature_factors} must have the same length")
        if math.prod(vocab_factors) < num_embeddings:
            raise ValueError(f"vocab_factors {vocab_factors} multiply to "
                             f"{math.prod(vocab_factors)} < num_embeddings {num_embeddings}")
        if math.prod(feature_factors) != features:
            raise ValueError(f"feature_factors {feature_factors} multiply to "
                             f"{math.prod(feature_factors)}, not features {features}")
        if not init_scale > 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
        n_sites = len(vocab_factors)
        if isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1:
            ranks = (rank,) * (n_sites - 1)
        elif isinstance(rank, tuple | list):
            ranks = tuple(rank)
        else:  # also with one site, where no bond uses the rank
            raise ValueError(f"rank must be an int >= 1 or {n_sites - 1} ints, got {rank!r}")
        if len(ranks) != n_sites - 1 or any(
            isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ranks
        ):
            raise ValueError(f"rank must be an int >= 1 or {n_sites - 1} such ints, got {rank!r}")
        self.num_embeddings, self.features = num_embeddings, features
        self.vocab_factors, self.feature_factors = vocab_factors, feature_factors
        self.ranks = (1,) + ranks + (1,)
        self.dtype, self.param_dtype = dtype, param_dtype
        init = tt.random(rngs.params(), vocab_factors, list(ranks) if ranks else 1,
                         param_dtype, col_dims=feature_factors)
        # tt.random has E||T||^2 = 1 over V * F entries; target entry variance s^2 / F
        total = math.prod(vocab_factors) * features
        s = (total * init_scale**2 / features) ** (0.5 / n_sites)
        self.cores = nnx.List([nnx.Param(s * c) for c in init.cores])

    def ttm(self, dtype=None) -> tt.TTMatrix:
        """The full ``(prod(vocab_factors), features)`` table as a ``tnlib.tt.TTMatrix``."""
        dt = dtype or self.param_dtype
        return tt.TTMatrix(tuple(c[...].astype(dt) for c in self.cores))

    def embedding(self):
        """The dense table ``(num_embeddings, features)`` via ``tnlib.tt.to_dense``."""
        return tt.to_dense(self.ttm(self.dtype))[: self.num_embeddings]

    def lr_multipliers(self) -> nnx.State:
        """``1 / r_{k-1}`` for ``cores[k]``: the muP Adam multiplier of each core
        relative to a dense ``nnx.Embed`` table (module docstring), as a tree shaped
        like ``nnx.state(self, nnx.Param)``."""
        return param_tree(self, lambda path: 1.0 / self.ranks[path[1]])

    def __call__(self, ids):
        ids = jnp.asarray(ids)
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"ids must be an integer array, got dtype {ids.dtype}")
        cores = self.ttm(self.dtype).cores
        flat = ids.reshape(-1)
        valid = (flat >= 0) & (flat < self.num_embeddings)
        if linalg.is_concrete(valid) and not bool(jnp.all(valid)):
            bad = flat[~valid]
            raise ValueError(f"ids must lie in [0, {self.num_embeddings}); got {bad[:5].tolist()}")
        flat = jnp.where(valid, flat, 0)

        def row(i):
            digits = []
            for v in reversed(self.vocab_factors):  # row-major mixed radix
                digits.append(i % v)
                i = i // v
            digits.reverse()
            train = tt.TensorTrain(tuple(
                jnp.take(c, d, axis=1) for c, d in zip(cores, digits, strict=True)))
            return tt.to_dense(train).reshape(self.features)

        out = jax.vmap(row)(flat)
        out = jnp.where(valid[:, None], out, jnp.nan)
        return out.reshape(ids.shape + (self.features,))
