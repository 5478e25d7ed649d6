"""MPS Born machine over discrete sequences with a trainable token embedding
(Han et al. 2018, "Unsupervised Generative Modeling Using Matrix Product States";
"Quantum Generative Modeling of Sequential Data with Trainable Token Embedding").

A sequence ``x in {0..V-1}^L`` has the amplitude

    psi(x) = e_0^T  prod_k ( sum_j A_k[:, j, :] emb[x_k, j] )  e_0

where ``emb`` is a trainable ``(V, d)`` token embedding (the identity, i.e. one-hot
tokens, at initialization when ``d == V``) and ``A_k`` are the ``(r, d, r)`` cores,
stored stacked ``(L, r, d, r)`` with the open boundaries ``e_0`` as in
``models/mps.py``. The model is ``p(x) = |psi(x)|^2 / Z`` with
``Z = sum_x |psi(x)|^2`` computed exactly by a transfer-matrix sweep: with the
embedding Gram matrix ``G = emb^T conj(emb)`` (a ``(d, d)`` sum over the vocabulary),
the transfer map of site ``k`` sends an ``(r, r)`` environment ``M`` to
``sum_{j, j'} A_k[:, j, :]^T M conj(A_k[:, j', :]) G[j, j']``.

Every contraction is one ``lax.scan`` with a running log-scale (amplitudes through
``tnlib.tt.sweep_features``), so hundreds of sites stay finite in float32 and compile
time does not grow with the length. Sampling is exact and ancestral: right
environments are computed once, then each site's token is drawn from its exact
conditional given the prefix already drawn.

The cores are the padded stacked chain of every tnlib MPS (see :mod:`tnlib.models.mps`):
with the identity embedding they are exactly the cores of a
:class:`tnlib.sweep_born.BornMPS`, the form the two-site sweeps train;
:func:`to_born_mps` and :func:`from_born_mps` convert, keeping the probabilities.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tnlib import sweep_born, tt
from tnlib._validate import check_size
from tnlib.models._common import check_int

__all__ = ["MPSBornMachine", "from_born_mps", "to_born_mps"]


def _normalize(mat):
    """Scale ``mat`` to unit Frobenius norm (zero stays zero); return it and log(norm)."""
    nrm = jnp.linalg.norm(mat)
    nrm = jnp.where(nrm > 0, nrm, 1.0)
    return mat / nrm, jnp.log(nrm)


def _transfer_left(env, core, gram):
    """``sum_{j,j'} A[:, j, :]^T env conj(A[:, j', :]) G[j, j']``: ``(r, r) -> (r, r)``."""
    t = jnp.einsum("ac,ajb->cjb", env, core)
    return jnp.einsum("cjb,jk,ckd->bd", t, gram, jnp.conj(core))


def _transfer_right(env, core, gram):
    """``sum_{j,j'} A[:, j, :] env A[:, j', :]^H G[j, j']``: ``(r, r) -> (r, r)``."""
    t = jnp.einsum("ajb,bd->ajd", core, env)
    return jnp.einsum("ajd,jk,ckd->ac", t, gram, jnp.conj(core))


class MPSBornMachine(nnx.Module):
    """MPS Born machine ``p(x) = |psi(x)|^2 / Z`` over sequences of ``n_sites`` tokens.

    Args:
      n_sites: sequence length ``L``, >= 1.
      vocab_size: number of token values ``V``, >= 1; tokens are ints in ``[0, V)``.
      bond_dim: MPS bond dimension ``r``, >= 1.
      embedding_dim: size ``d`` of the local vectors the tokens are embedded into;
        default ``vocab_size``.
      embedding_init: initializer ``(key, (V, d), dtype)`` of the token embedding;
        default the identity (one-hot tokens) when ``d == V``, otherwise normal with
        standard deviation ``1 / sqrt(d)``.
      init_std: standard deviation of the noise added to identity cores
        (``A_k[:, j, :] = I + noise`` for every ``j``: a near-uniform start).
      dtype: computation dtype (default: the parameters').
      param_dtype: parameter dtype (real or complex).
      rngs: ``nnx.Rngs`` with a ``params`` stream.

    Parameters: ``embedding`` ``(V, d)`` and ``cores`` ``(L, r, d, r)``.
    ``__call__(x)`` is ``log_prob(x)``: ``x`` int ``(..., L)`` to ``(...,)``.
    """

    def __init__(self, n_sites: int, vocab_size: int, *, bond_dim: int,
                 embedding_dim: int | None = None, embedding_init=None,
                 init_std: float = 1e-2, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        if embedding_dim is None:
            embedding_dim = vocab_size
        for name, value in (("n_sites", n_sites), ("vocab_size", vocab_size),
                            ("bond_dim", bond_dim), ("embedding_dim", embedding_dim)):
            check_int(value, name)
        if not init_std >= 0:
            raise ValueError(f"init_std must be >= 0, got {init_std!r}")
        if embedding_init is not None and not callable(embedding_init):
            raise ValueError(f"embedding_init must be callable, got {embedding_init!r}")
        check_size(n_sites * bond_dim * bond_dim * embedding_dim + vocab_size * embedding_dim,
                   param_dtype,
                   f"MPSBornMachine(n_sites={n_sites}, bond_dim={bond_dim}) parameters")
        self.n_sites, self.vocab_size = n_sites, vocab_size
        self.bond_dim, self.embedding_dim = bond_dim, embedding_dim
        self.dtype, self.param_dtype = dtype, param_dtype
        k_emb, k_cores = jax.random.split(rngs.params())
        shape = (vocab_size, embedding_dim)
        if embedding_init is not None:
            emb = jnp.asarray(embedding_init(k_emb, shape, param_dtype), param_dtype)
        elif embedding_dim == vocab_size:
            emb = jnp.eye(vocab_size, dtype=param_dtype)
        else:
            emb = jax.random.normal(k_emb, shape, param_dtype) / jnp.sqrt(embedding_dim)
        if emb.shape != shape:
            raise ValueError(f"embedding_init must return shape {shape}, got {emb.shape}")
        self.embedding = nnx.Param(emb)
        core_shape = (n_sites, bond_dim, embedding_dim, bond_dim)
        eye = jnp.eye(bond_dim, dtype=param_dtype)[None, :, None, :]
        noise = init_std * jax.random.normal(k_cores, core_shape, param_dtype)
        self.cores = nnx.Param(jnp.broadcast_to(eye, core_shape) + noise)

    # -- parameters in the computation dtype ---------------------------------------
    def _params(self):
        dt = self.dtype or self.param_dtype
        dt = jnp.promote_types(dt, jnp.float32)
        return self.embedding[...].astype(dt), self.cores[...].astype(dt)

    def _e0(self, dt):
        return jnp.zeros((self.bond_dim,), dt).at[0].set(1)

    def _check_tokens(self, x):
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.n_sites,):
            raise ValueError(f"x must have shape (..., {self.n_sites}), got {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError(f"x must hold integer tokens, got dtype {x.dtype}")
        return x

    # -- exact quantities -------------------------------------------------------------
    def log_amplitude(self, x):
        """``log |psi(x)|`` for int tokens ``x`` of shape ``(..., L)``; shape ``(...,)``.

        Tokens outside ``[0, vocab_size)`` embed to zero, so their ``psi`` is 0 and
        the result is ``-inf``.
        """
        x = self._check_tokens(x)
        emb, cores = self._params()
        valid = (x >= 0) & (x < self.vocab_size)
        feats = jnp.where(valid[..., None], emb[jnp.clip(x, 0, self.vocab_size - 1)], 0)
        batch = x.shape[:-1]
        feats = feats.reshape((-1, self.n_sites, self.embedding_dim))
        e0 = self._e0(cores.dtype)

        def one(f):
            vec, scale = tt.sweep_features(cores, f, e0)
            return jnp.log(jnp.abs(vec[0])) + scale

        return jax.vmap(one)(feats).reshape(batch)

    def log_norm(self):
        """``log Z`` with ``Z = sum_x |psi(x)|^2`` (exact transfer-matrix sweep)."""
        emb, cores = self._params()
        gram = emb.T @ jnp.conj(emb)
        e0 = self._e0(cores.dtype)

        def step(carry, core):
            env, acc = carry
            env, log_nrm = _normalize(_transfer_left(env, core, gram))
            return (env, acc + log_nrm.astype(acc.dtype)), None

        acc0 = jnp.zeros((), jnp.finfo(cores.dtype).dtype)
        (env, acc), _ = jax.lax.scan(step, (jnp.outer(e0, e0), acc0), cores)
        return jnp.log(jnp.real(env[0, 0])) + acc

    def log_prob(self, x):
        """``log p(x) = 2 log|psi(x)| - log Z`` for int ``x`` ``(..., L)``; ``(...,)``."""
        return 2 * self.log_amplitude(x) - self.log_norm()

    def __call__(self, x):
        return self.log_prob(x)

    # -- exact ancestral sampling -------------------------------------------------------
    def _right_environments(self, emb, cores):
        """Normalized right environments ``R_{k+1}`` (to the right of site k): ``(L, r, r)``."""
        gram = emb.T @ jnp.conj(emb)
        e0 = self._e0(cores.dtype)

        def step(env, core):
            new, _ = _normalize(_transfer_right(env, core, gram))
            return new, env

        _, envs = jax.lax.scan(step, jnp.outer(e0, e0), cores, reverse=True)
        return envs

    def sample(self, key, n: int):
        """Draw ``n`` exact samples, int32 of shape ``(n, L)``.

        Site by site, token ``v`` is drawn with probability proportional to
        ``m_v^T R conj(m_v)``, where ``m_v`` is the prefix's left vector times the
        site's core contracted with ``emb[v]`` and ``R`` the right environment: the
        exact conditional ``p(x_k = v | x_<k)``. One ``lax.scan`` over sites, ``vmap``
        over samples.
        """
        check_int(n, "n")
        emb, cores = self._params()
        envs = self._right_environments(emb, cores)
        mats = jnp.einsum("vj,kajb->kvab", emb, cores)  # (L, V, r, r) token matrices
        e0 = self._e0(cores.dtype)

        def one(k):
            keys = jax.random.split(k, self.n_sites)

            def step(left, inputs):
                mat, env, kk = inputs
                m = jnp.einsum("a,vab->vb", left, mat)  # (V, r)
                w = jnp.real(jnp.einsum("vb,bc,vc->v", m, env, jnp.conj(m)))
                w = jnp.maximum(w, 0)
                logits = jnp.log(w / jnp.max(w))
                tok = jax.random.categorical(kk, logits)
                new, _ = _normalize(m[tok])
                return new, tok

            _, toks = jax.lax.scan(step, e0, (mats, envs, keys))
            return toks.astype(jnp.int32)

        return jax.vmap(one)(jax.random.split(key, n))


# --------------------------------------------------------------------------- conversion


def to_born_mps(model: MPSBornMachine, max_bond: int | None = None,
                center: int = 0) -> sweep_born.BornMPS:
    """The :class:`tnlib.sweep_born.BornMPS` of ``model`` (outside jit): the same
    ``p(x)`` over tokens ``[0, vocab_size)``.

    The embedding folds into the cores (``A'_k[v] = sum_j emb[v, j] A_k[j]``, so the
    sweep's one-hot ``local_dim`` is ``vocab_size``), the ``e_0`` boundaries become
    boundary ranks 1, and the chain is put in canonical form at ``center``
    (:func:`tnlib.sweep_born.from_cores`; bonds padded to ``max_bond``, default the
    model's ``bond_dim``). Needs at least 2 sites.
    """
    emb, cores = model.embedding[...], model.cores[...]
    folded = jnp.einsum("vj,kajb->kavb", emb, cores)
    chain = list(folded)
    chain[0], chain[-1] = chain[0][:1], chain[-1][..., :1]
    return sweep_born.from_cores(chain, model.bond_dim if max_bond is None else max_bond,
                                 center)


def from_born_mps(mps: sweep_born.BornMPS) -> MPSBornMachine:
    """An ``MPSBornMachine`` with the identity embedding and ``mps``'s cores as they are
    (``bond_dim`` the padded ``max_bond``, ``vocab_size`` its ``local_dim``): the same
    ``p(x)``."""
    L, D, d = mps.n_sites, mps.max_bond, mps.local_dim
    dtype = mps.cores.dtype
    model = nnx.eval_shape(lambda: MPSBornMachine(L, d, bond_dim=D, param_dtype=dtype,
                                                  rngs=nnx.Rngs(0)))
    model.embedding = nnx.Param(jnp.eye(d, dtype=dtype))
    model.cores = nnx.Param(jnp.asarray(mps.cores))
    return model
