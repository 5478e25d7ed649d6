"""Benchmark problems for structure search.

``planted_ring`` and ``planted_network`` build synthetic tensors with a known
(planted) structure, as in the TNLS and TnALE experiments (orders 4 to 8, mode sizes
3-4, ranks 1-4); ``image_tensor`` reshapes one of scikit-image's bundled images into a
higher-order tensor, as in TNGA. Each planted problem returns the tensor together
with the structure that generated it, so a search can be scored against it.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tnlib import network
from tnlib.network import Network

__all__ = ["Planted", "planted_ring", "planted_network", "image_tensor"]


class Planted(NamedTuple):
    """A planted problem: the dense ``tensor``, the generating ``network``, its
    ``adjacency`` and ``perm``, the support ``edges`` it lives on and ``n_params``."""

    tensor: jax.Array
    network: Network
    adjacency: tuple
    perm: tuple
    edges: tuple
    n_params: int


def _check_order(order, dim):
    if isinstance(order, bool) or not isinstance(order, int) or order < 2:
        raise ValueError(f"order must be an int >= 2, got {order!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be an int >= 1 (the mode size), got {dim!r}")


def _planted(key, dims, edges, ranks, permute, dtype):
    n = len(dims)
    k_perm, k_net = jax.random.split(key)
    perm = tuple(int(p) for p in jax.random.permutation(k_perm, n)) if permute else tuple(
        range(n))
    adj = np.eye(n, dtype=int)
    adj[adj == 0] = 1
    for k in range(n):
        adj[k, k] = dims[perm[k]]
    for (i, j), r in zip(edges, ranks, strict=True):
        adj[i, j] = adj[j, i] = r
    net = network.random(k_net, dims, adj, dtype, perm=perm)
    x = network.to_dense(net)
    x = x / jnp.linalg.norm(x.ravel())
    adj = net.adjacency
    return Planted(x, net, adj, perm, tuple(edges), network.num_params(adj))


def planted_ring(key, order: int, dim: int = 4, *, min_rank: int = 1, max_rank: int = 4,
                 permute: bool = False, dtype=jnp.float32) -> Planted:
    """A tensor-ring tensor of ``order`` modes of size ``dim`` with random ranks.

    Ring ranks are drawn uniformly from ``min_rank..max_rank`` (at least one of them
    above one); with ``permute`` the modes are placed on the ring by a random
    permutation (TN permutation search). The tensor is scaled to unit norm.
    """
    _check_order(order, dim)
    if not 1 <= min_rank <= max_rank:
        raise ValueError(f"need 1 <= min_rank <= max_rank, got {min_rank}, {max_rank}")
    k_rank, k = jax.random.split(key)
    edges = tuple((i, i + 1) for i in range(order - 1)) + ((0, order - 1),)
    if order == 2:
        edges = ((0, 1),)
    ranks = [int(r) for r in jax.random.randint(k_rank, (len(edges),), min_rank, max_rank + 1)]
    if max(ranks) == 1 and max_rank > 1:
        ranks[0] = 2
    return _planted(k, (dim,) * order, edges, ranks, permute, dtype)


def planted_network(key, order: int, dim: int = 4, *, n_extra: int = 1, min_rank: int = 2,
                    max_rank: int = 3, permute: bool = False, dtype=jnp.float32) -> Planted:
    """A general tensor network: a ring plus ``n_extra`` random chords, random ranks.

    The support edges are the ring and the chords (so a search over that support can
    recover the structure); ranks are drawn from ``min_rank..max_rank`` on every edge.
    """
    _check_order(order, dim)
    k_edge, k_rank, k = jax.random.split(key, 3)
    ring = [(i, i + 1) for i in range(order - 1)] + ([(0, order - 1)] if order > 2 else [])
    chords = [e for e in itertools.combinations(range(order), 2) if e not in ring]
    if not 0 <= n_extra <= len(chords):
        raise ValueError(f"n_extra must be in 0..{len(chords)} for order {order}, got {n_extra}")
    pick = np.asarray(jax.random.permutation(k_edge, len(chords)))[:n_extra]
    edges = tuple(sorted(ring + [chords[i] for i in pick]))
    ranks = [int(r) for r in jax.random.randint(k_rank, (len(edges),), min_rank, max_rank + 1)]
    return _planted(k, (dim,) * order, edges, ranks, permute, dtype)


def image_tensor(name: str = "camera", shape=(4,) * 8, dtype=jnp.float32):
    """A scikit-image bundled image (grayscale, in [0, 1]) cropped / resized to
    ``prod(shape)`` pixels and reshaped to ``shape`` (row bits first, then column bits,
    as in TNGA's image experiments).

    ``shape`` must split into a row part and a column part whose products are the sides
    of the square crop: the first half of the modes indexes rows, the second columns.
    Imports scikit-image lazily; raises ImportError naming the install command when it
    is missing.
    """
    try:
        import skimage.data
        import skimage.transform
    except ImportError as e:
        raise ImportError("image_tensor needs scikit-image: pip install scikit-image "
                          "(or pip install 'tnlib[experiments]')") from e
    shape = tuple(shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 1
                        for d in shape):
        raise ValueError(f"shape must be a non-empty sequence of ints >= 1, got {shape}")
    shape = tuple(int(d) for d in shape)
    half = len(shape) // 2
    rows, cols = math.prod(shape[:half]), math.prod(shape[half:])
    loader = getattr(skimage.data, name, None)
    if loader is None:
        raise ValueError(f"name={name!r}: skimage.data has no image {name!r}")
    img = np.asarray(loader(), dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(-1)
    img = img / max(img.max(), 1e-12)
    img = skimage.transform.resize(img, (rows, cols), anti_aliasing=True)
    return jnp.asarray(img.reshape(shape), dtype)
