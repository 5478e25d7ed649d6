"""tnlib: tensor networks for machine learning in JAX.

The functional core: each format is a pytree type with pure functions in its own
module (``tnlib.tt``, ``tnlib.tucker``, ...). Layers live in ``tnlib.models``,
experiments in ``tnlib.experiments``; ``tnlib.interop`` converts to and from
tensornetwork, quimb and tensorly.

The format protocol
-------------------

Every format module (``tt``, ``tucker``, ``tree``, ``btt``, ``cp``, ``tr``,
``network``) answers the same verbs as module functions with the same signatures:

``random(key, dims, rank, dtype=float32, *, ...)``
    A random network (variance-scaled so ``E ||tn||_F^2`` is about 1, or, for ``btt``,
    so the dense matrix has the variance of a LeCun-normal layer). ``rank`` is the
    construction rank: an int, or the format's per-bond / per-mode form.
``from_dense(x, *, max_rank=None, rtol=None, ...)``
    The decomposition of a dense tensor. ``max_rank`` is a static cap (Python int;
    the only shape-changing argument allowed inside ``jit``); ``rtol`` alone picks
    the smallest ranks with ``||x - tn||_F <= rtol ||x||_F`` (concrete ``x``, outside
    ``jit``), with ``max_rank`` it only zeroes singular values. Both None: exact
    (or, for ``cp``, the rank bound).
``to_dense(tn)``, ``inner(a, b)`` (conjugating ``a``), ``norm(tn)``, ``num_params(tn)``
    ``num_params`` reads array shapes only: a vmapped batch counts one network,
    abstract (``jax.ShapeDtypeStruct``) leaves work.
``round(tn, *, max_rank=None, rtol=None)``, ``orthogonalize(tn, ...)``, ``flops(tn, batch=1)``
    where they make sense (table below).

Rank arguments are keyword-only wherever they truncate and are named the same
everywhere: ``rank`` builds, ``max_rank`` / ``rtol`` truncate. A format's own options
follow the shared parameters, keyword-only. ``tests/tnlib/test_protocol.py`` holds
every module to this (names, kinds, defaults) and checks each verb against the dense
tensor under ``jit``.

===========  ======================================================================
format       verbs beyond the shared six, and the format's own keywords
===========  ======================================================================
``tt``       ``round``, ``orthogonalize(tn, center)`` (TTs and TT-matrices),
             ``flops`` (TT-matrix ``matvec``); ``max_rank`` may be per bond (a
             list); ``random(..., col_dims=)`` and ``from_dense(..., row_dims=,
             col_dims=)`` build TT-matrices; ``matvec``, ``matmul``, ``add``,
             ``eye``, ``trace``, ``transpose``, ``bilinear_form``, ``tt[1:3, 0]``,
             ``gather``, ``entropy``, ... (``tnlib/_tt_ops.py``)
``tucker``   ``from_dense(..., rank=)`` (exact per-mode ranks); ``hosvd``, ``hooi``
             (``mask=`` for missing data), ``mode_product`` (a matrix or a vector);
             ``partial_hooi``, ``nonneg_hals``, ``normalize`` (``tnlib/_tucker_fits.py``)
``tree``     ``round``, ``orthogonalize(tn)``; ``random(..., tree=)``,
             ``from_dense(..., tree=)`` (dimension tree, default balanced)
``btt``      ``flops`` (``matvec``); ``random(..., kind=)``, ``from_dense(...,
             kind=, dims=)``: ``kind`` in ``btt.KINDS`` = lowrank, kronecker, btt,
             monarch; ``dims`` = ``(d_out, d_in)`` or ``(out_factors, in_factors)``;
             ``det``, ``slogdet``, ``inv``, ``cholesky`` of a ``Kronecker``
             (``tnlib/_kron_ops.py``)
``cp``       ``from_dense(..., n_iter=, key=, return_errors=)`` (ALS; ``rtol``
             searches ranks 1..``max_rank``); ``als`` (``init=``, ``fixed_modes=``,
             ``mask=``), ``nonneg_hals``, ``normalize``, ``mode_product``
             (``tnlib/_cp_ops.py``)
``tr``       ``from_dense(..., mode=)`` (``max_rank`` may be per bond); ``als``
``network``  ``random(..., perm=)`` (``rank``: an int for the complete graph or a
             matrix of bond ranks, ``structure``); ``from_dense(..., adjacency=,
             perm=, key=, n_iter=, method=, optimizer=)`` (default: the chain by
             TT-SVD); ``fit`` (a fixed structure, returns the error too)
===========  ======================================================================

Helpers shared between modules live under public names in private modules
(``tnlib._numerics``, ``tnlib._validate``, ``tnlib._optim``, ...); no module uses
another module's underscore names (``tests/test_imports.py``). Optimizers inside
fits and sweeps are optax ``GradientTransformation`` s.
"""

from tnlib import (
    btt,
    cp,
    dlrt,
    linalg,
    network,
    optim,
    riemannian,
    serialize,
    struct,
    sweep,
    sweep_born,
    tr,
    tree,
    tt,
    tucker,
)
from tnlib.cp import CP
from tnlib.network import Network
from tnlib.tr import TensorRing
from tnlib.tree import TreeTN
from tnlib.tt import TensorTrain, TTMatrix
from tnlib.tucker import Tucker

__version__ = "0.1.0"

__all__ = [
    "btt", "cp", "dlrt", "linalg", "network", "optim", "riemannian", "serialize", "struct",
    "sweep", "sweep_born", "tr", "tree", "tt", "tucker",
    "CP", "Network", "TensorRing", "TensorTrain", "TTMatrix", "TreeTN", "Tucker",
    "__version__",
]
