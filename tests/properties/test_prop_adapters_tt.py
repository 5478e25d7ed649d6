"""Properties of the DoTA adapter (``tnlib.models.DoTA``) over random mode factors and
TT ranks: the adapted layer is its base layer at init (frozen residual plus the MPO),
the adapter's matrix is the TT-SVD of the weight with every bond capped at ``rank``
(exactly the weight when the cap is not binding), the trainable count is the cores'.

Cost: every example shape compiles (the decomposition and the call), so the examples
are few (3, in float64).
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from props import F64, close, covers, raises, seeds

from tnlib import tt


@st.composite
def dota_shapes(draw):
    n_sites = draw(st.integers(2, 3))
    fi = tuple(draw(st.integers(1, 3)) for _ in range(n_sites))
    fo = tuple(draw(st.integers(1, 3)) for _ in range(n_sites))
    return fi, fo, draw(st.integers(1, 4))


@covers("models.DoTA")
@settings(max_examples=3, deadline=None)
@given(shape=dota_shapes(), seed=seeds)
def test_dota_is_its_base_layer_at_init_and_holds_the_capped_tt_svd(shape, seed):
    from flax import nnx

    from tnlib.models import DoTA, Frozen

    fi, fo, rank = shape
    n_in, n_out = int(np.prod(fi)), int(np.prod(fo))
    sizes = [m * n for m, n in zip(fo, fi, strict=True)]
    caps = [min(np.prod(sizes[:k]), np.prod(sizes[k:])) for k in range(1, len(fi))]
    g = np.random.default_rng(seed)
    w, b = g.standard_normal((n_in, n_out)), g.standard_normal(n_out)
    if rank > max(caps):
        raises(lambda: DoTA(w, b, rank=rank, in_factors=fi, out_factors=fo), "rank")
        rank = int(max(caps))
    m = DoTA(w, b, rank=rank, in_factors=fi, out_factors=fo, param_dtype=F64)
    assert m.ranks[1:-1] == tuple(min(rank, int(c)) for c in caps)
    ref = tt.to_dense(tt.from_dense(jnp.asarray(w.T), max_rank=rank, row_dims=fo,
                                    col_dims=fi)).T
    close(m.delta(), np.asarray(ref), F64, scale=max(1.0, float(np.abs(w).max())))
    close(m.merged_kernel(), w, F64, scale=max(1.0, float(np.abs(w).max())))
    if rank >= max(caps):  # nothing truncated: the MPO is the weight, the residual ~0
        close(m.kernel[...], np.zeros_like(w), F64, scale=max(1.0, float(np.abs(w).max())))
    x = g.standard_normal((2, n_in))
    want = x @ w + b
    close(nnx.jit(lambda m, x: m(x))(m, jnp.asarray(x)), want, F64,
          scale=max(1.0, float(np.abs(want).max())))
    params = jax.tree.leaves(nnx.state(m, nnx.Param))
    assert len(params) == len(fi) and sum(p.size for p in params) == m.num_params()
    assert len(jax.tree.leaves(nnx.state(m, Frozen))) == 2
