"""Determinant, log-determinant, inverse and Cholesky factor of a ``Kronecker`` matrix.

Everything here is re-exported by ``tnlib.btt`` (call ``tnlib.btt.det``, ...); this
module only keeps ``btt.py`` within its size. Each operation works on the factors of
``W = kron(a, b)`` (``a`` ``(m1, m1)``, ``b`` ``(m2, m2)``) and never forms the
``(m1 m2, m1 m2)`` matrix, as t3f's ``kronecker.py`` does for TT-matrices of rank 1:

- ``det(W) = det(a)**m2 * det(b)**m1``;
- ``log|det(W)| = m2 log|det(a)| + m1 log|det(b)|``, with the sign (phase) likewise;
- ``inv(W) = kron(inv(a), inv(b))``;
- ``chol(W) = kron(chol(a), chol(b))`` for a Hermitian positive definite ``W``.

Pure jax.numpy on the two factors: jit / vmap / grad-safe, cost ``O(m1**3 + m2**3)``;
bfloat16 / float16 factors are computed in float32 and the results cast back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tnlib import _numerics
from tnlib.btt import Kronecker, check

__all__ = ["det", "slogdet", "inv", "cholesky"]


def _square(w, what: str) -> tuple[int, int]:
    """``(m1, m2)`` of a Kronecker with square factors, else TypeError / ValueError
    naming ``w`` and the shapes."""
    if not isinstance(w, Kronecker):
        raise TypeError(
            f"w must be a tnlib.btt.Kronecker (W = kron(a, b)) for btt.{what}, got "
            f"{type(w).__name__}"
        )
    check(w, "w")
    (m1, m2), (n1, n2) = w.out_factors, w.in_factors
    if m1 != n1 or m2 != n2:
        raise ValueError(
            f"btt.{what} needs a square W with square factors: w.a has shape "
            f"{tuple(w.a.shape)} and w.b has shape {tuple(w.b.shape)} (each must be (m, m))"
        )
    return m1, m2


def _wide(w):
    """bfloat16 / float16 factors as float32 (LAPACK has no half precision), and a
    function casting results back to ``w``'s dtype."""
    dt = w.dtype
    if not _numerics.low_precision(dt):
        return w, lambda out: out
    return (jax.tree.map(lambda t: t.astype(jnp.float32), w),
            lambda out: jax.tree.map(lambda t: t.astype(dt), out))


def det(w):
    """``det(kron(a, b)) = det(a)**m2 * det(b)**m1`` from the factors (``a`` ``(m1, m1)``,
    ``b`` ``(m2, m2)``; square factors, else a ValueError naming their shapes). For
    large matrices the product over- or underflows: use ``slogdet``."""
    m1, m2 = _square(w, "det")
    w, back = _wide(w)
    return back(jnp.linalg.det(w.a) ** m2 * jnp.linalg.det(w.b) ** m1)


def slogdet(w):
    """``(sign, log|det W|)`` of ``W = kron(a, b)`` as ``jnp.linalg.slogdet`` returns it:
    ``sign = sign(det a)**m2 * sign(det b)**m1`` (a unit complex number for complex
    factors, 0 for a singular ``W``) and ``log|det W| = m2 log|det a| + m1 log|det b|``
    (``-inf`` when singular). Finite in float32 where ``det`` overflows."""
    m1, m2 = _square(w, "slogdet")
    w, back = _wide(w)
    sa, la = jnp.linalg.slogdet(w.a)
    sb, lb = jnp.linalg.slogdet(w.b)
    return back((sa ** m2 * sb ** m1, m2 * la + m1 * lb))


def inv(w) -> Kronecker:
    """The inverse ``kron(inv(a), inv(b))`` as a ``Kronecker`` (square factors; a singular
    factor gives infs / NaNs as ``jnp.linalg.inv`` does)."""
    _square(w, "inv")
    w, back = _wide(w)
    return back(Kronecker(jnp.linalg.inv(w.a), jnp.linalg.inv(w.b)))


def cholesky(w) -> Kronecker:
    """Lower Cholesky factor ``L`` (``W = L L^H``) of a Hermitian positive definite
    ``W = kron(a, b)`` as the ``Kronecker`` ``kron(chol(a), chol(b))``.

    ``W`` is positive definite exactly when ``a`` and ``b`` are both positive definite or
    both negative definite (the eigenvalues of ``W`` are the products of theirs); the
    second case is handled by factoring ``-a`` and ``-b`` (chosen from the sign of
    ``a[0, 0]``, jit-safe). Only the lower triangles are read, as in
    ``jnp.linalg.cholesky``; a ``W`` that is not positive definite gives NaNs.
    """
    _square(w, "cholesky")
    w, back = _wide(w)
    s = jnp.where(jnp.real(w.a[0, 0]) < 0, -1, 1).astype(w.a.dtype)
    return back(Kronecker(jnp.linalg.cholesky(s * w.a),
                          jnp.linalg.cholesky(s.astype(w.b.dtype) * w.b)))

