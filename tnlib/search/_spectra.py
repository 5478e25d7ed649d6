"""Spectra of unfoldings in NumPy (float64) for :mod:`tnlib.search.core_shapes`: tails
of squared singular values from Gram eigendecompositions (cheaper than SVDs of wide
unfoldings), per-mode Gram matrices of a tensor with few copies, and leading singular
vectors. Private to the search package; its names are public for core_shapes."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "tails", "gram", "squared_spectrum", "leading_vectors", "clip_noise", "gram_spectrum",
    "GROUP", "tucker_grams", "tucker_tails", "tucker_tails_and_bases", "tt_tails",
]


def tails(sq) -> np.ndarray:
    """``tail[r] = sum_{i >= r} s_i^2`` for ``r = 0..len(s)`` (``tail[len] = 0``) from the
    squared singular values ``sq`` in descending order."""
    sq = np.asarray(sq, np.float64)
    return np.concatenate([np.cumsum(sq[::-1])[::-1], [0.0]])


def gram(mat: np.ndarray) -> np.ndarray:
    """``mat @ mat^H``."""
    return mat @ mat.conj().T


def squared_spectrum(mat: np.ndarray, r: int = 0):
    """Squared singular values of ``mat`` (descending, ``min(m, n)`` of them): the
    eigenvalues of the Gram matrix on its short side. Cheaper than an SVD of a wide
    unfolding and exact to ``eps * ||mat||^2``, the scale the energies are compared at;
    values below ``k * eps * s_max^2`` (rounding noise) are set to 0.
    (``jnp.linalg.svd(compute_uv=False)`` would also allocate a ``max(m, n)^2`` buffer
    on CPU: gigabytes for the unfoldings of a modest tensor.) With ``r > 0`` also
    returns the ``r`` leading left singular vectors, from the same eigendecomposition
    (columns of singular value 0 are zero)."""
    wide = mat.shape[0] <= mat.shape[1]
    short = mat if wide else mat.T
    if not r:
        return gram_spectrum(gram(short))
    sq, vecs = np.linalg.eigh(gram(short))
    sq, vecs = clip_noise(sq[::-1]), vecs[:, ::-1][:, :r]
    if not wide:  # eigenvectors of conj(mat^H mat): left vectors are mat v / s
        s = np.sqrt(sq[:r])
        vecs = (mat @ vecs.conj()) / np.where(s > 0, s, 1.0) * (s > 0)
    return sq, vecs


def leading_vectors(mat: np.ndarray, r: int) -> np.ndarray:
    """``r <= min(mat.shape)`` leading left singular vectors of ``mat``: eigenvectors of
    ``mat mat^H`` for a wide matrix, a thin SVD for a tall one."""
    if mat.shape[0] > mat.shape[1]:
        return np.linalg.svd(mat, full_matrices=False)[0][:, :r]
    _, vecs = np.linalg.eigh(gram(mat))
    return vecs[:, ::-1][:, :r]


def clip_noise(sq: np.ndarray) -> np.ndarray:
    """Descending eigenvalues of a Gram matrix with those below ``k * eps * s_max^2``
    (rounding noise, negative ones included) set to 0."""
    floor = sq.size * np.finfo(np.float64).eps * max(float(sq[0]), 0.0)
    return np.where(sq > floor, sq, 0.0)


def gram_spectrum(gram: np.ndarray) -> np.ndarray:
    """Squared singular values (descending) from a Gram matrix of the short side."""
    return clip_noise(np.linalg.eigvalsh(gram)[::-1])


GROUP = 64  # trailing modes whose joint size is at most this share one Gram matrix


def tucker_grams(x: np.ndarray) -> list[np.ndarray]:
    """Per mode, the Gram matrix of the mode-``k`` unfolding on its short side (up to
    conjugation; its eigenvalues are the squared singular values), with few copies of
    ``x``: mode 0 from ``x.reshape(n_0, -1)``; the trailing modes of joint size at most
    ``GROUP`` (or all others, when mode 0 is longer than they are together) as partial
    traces of one Gram of ``x.reshape(-1, R)``, whose tall shape BLAS handles better than
    one thin Gram per mode; a middle mode ``x.reshape(a, n_k, b)`` as ``sum_a X_a X_a^H``
    (one batched product) when ``a <= 256`` and ``b >= 32``, else from the moved-axis
    copy."""
    dims, size, n_modes = x.shape, x.size, x.ndim
    grams: list = [None] * n_modes
    first = n_modes  # the shared Gram covers modes first..N-1
    if dims[0] ** 2 > size:  # mode 0 is tall: its short side is that shared Gram
        first = 1
    else:
        while (first > 1 and math.prod(dims[first - 1:]) <= GROUP
               and dims[first - 1] ** 2 <= size):  # tall modes need their short side
            first -= 1
        first = first if n_modes - first >= 2 else n_modes
    if first < n_modes:
        mat = x.reshape(-1, math.prod(dims[first:]))
        shared = mat.T @ mat.conj()  # [c, c'] = sum_i x[i, c] conj(x[i, c'])
        if first == 1 and dims[0] ** 2 > size:
            grams[0] = shared
        for k in range(first, n_modes):
            a, b = math.prod(dims[first:k]), math.prod(dims[k + 1:])
            grams[k] = np.einsum("anbamb->nm", shared.reshape(a, dims[k], b, a, dims[k], b))
    for k, n in enumerate(dims):
        if grams[k] is not None:
            continue
        a, b = math.prod(dims[:k]), size // (math.prod(dims[:k]) * n)
        if n > a * b:  # tall middle or last mode: the short side, as squared_spectrum
            short = np.moveaxis(x, k, -1).reshape(-1, n)
            grams[k] = short @ short.conj().T
        elif k == 0:
            grams[k] = gram(x.reshape(n, -1))
        elif b == 1:
            mat = x.reshape(-1, n)
            grams[k] = mat.T @ mat.conj()
        elif a <= 256 and b >= 32:  # few, wide blocks: cheaper than the copy
            blocks = x.reshape(a, n, b)
            grams[k] = np.matmul(blocks, blocks.conj().transpose(0, 2, 1)).sum(axis=0)
        else:
            grams[k] = gram(np.moveaxis(x, k, 0).reshape(n, -1))
    return grams


def tucker_tails(x: np.ndarray) -> list[np.ndarray]:
    """Tails of the mode-``k`` unfoldings (the spectra of
    ``tnlib.tucker.multilinear_singular_values``), from :func:`tucker_grams`."""
    return [tails(gram_spectrum(g)) for g in tucker_grams(x)]


def tucker_tails_and_bases(x: np.ndarray, caps) -> tuple[list, list]:
    """Tails as :func:`tucker_tails`, and the ``caps[k]`` leading left singular vectors
    of each unfolding, from the same Gram eigendecompositions."""
    out, bases = [], []
    for k in range(x.ndim):
        sq, vecs = squared_spectrum(np.moveaxis(x, k, 0).reshape(x.shape[k], -1), caps[k])
        out.append(tails(sq))
        bases.append(vecs)
    return out, bases


def tt_tails(x: np.ndarray) -> list[np.ndarray]:
    """Tails of the sequential unfoldings ``(n_1...n_k, n_{k+1}...n_N)``, ``k = 1..N-1``."""
    out, left = [], 1
    for k in range(x.ndim - 1):
        left *= x.shape[k]
        out.append(tails(squared_spectrum(x.reshape(left, -1))))
    return out
