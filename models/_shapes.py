"""Shapes of the structured layers (private module, public names): the balanced
factorization of a size (``factorize_dims``, re-exported as
``tnlib.models.factorize_dims``), the check of ``in_factors`` / ``out_factors``, the
resolution of ``rank`` (an int, or a fraction of the dense kernel's parameters) against
the largest rank the shape can use, and the error for factors that cost more than the
dense kernel. Parameter counts are tnlib's (``btt.num_params``, ``tt.num_params``) of
abstract cores (``jax.ShapeDtypeStruct``): nothing is built to count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from tnlib import tt
from tnlib.models._common import check_int

__all__ = ["factorize_dims", "check_factors", "check_rank", "resolve_rank",
           "check_cheaper_than_dense", "shape_count", "tt_factors", "tt_ranks"]


def shape_count(count, obj_type, shapes, dtype=jnp.float32) -> int:
    """tnlib's parameter count ``count`` of ``obj_type`` with cores of ``shapes``."""
    return count(obj_type(*[jax.ShapeDtypeStruct(s, dtype) for s in shapes]))



def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def factorize_dims(n: int, k: int) -> tuple[int, ...]:
    """The most balanced factorization of ``n`` into ``k`` factors, ascending.

    "Most balanced": the largest factor is as small as possible, then the next largest,
    and so on (``factorize_dims(24, 2) == (4, 6)``, ``factorize_dims(1024, 4) ==
    (4, 4, 8, 8)``); a prime ``n`` gives ``(1, ..., 1, n)``. The structured layers use it
    for the ``in_factors`` / ``out_factors`` they are not given.

    Args:
      n: the size to factor, an int >= 1.
      k: the number of factors, an int >= 1.
    """
    n, k = check_int(n, "n"), check_int(k, "k")
    divisors = _divisors(n)

    def smallest(rest, k, cap):  # nonincreasing factors, lexicographically smallest
        if k == 1:
            return (rest,) if rest <= cap else None
        for d in divisors:
            if d > cap:
                break
            if rest % d == 0 and d**k >= rest:
                tail = smallest(rest // d, k - 1, d)
                if tail is not None:
                    return (d,) + tail
        return None

    return tuple(reversed(smallest(n, k, n)))


def check_factors(factors, dim: int, name: str, n_sites: int) -> tuple[int, ...]:
    """Validate ``factors`` (``n_sites`` ints >= 1 whose product is ``dim``); None:
    ``factorize_dims(dim, n_sites)``."""
    if factors is None:
        return factorize_dims(dim, n_sites)
    if isinstance(factors, int | str) or not isinstance(factors, Sequence):
        raise ValueError(f"{name} must be a sequence of ints, got {factors!r}")
    factors = tuple(factors)
    for f in factors:
        check_int(f, name)
    if len(factors) != n_sites:
        raise ValueError(f"{name} must have {n_sites} factors, got {factors}")
    if math.prod(factors) != dim:
        raise ValueError(f"{name} {factors} must multiply to {dim}, got {math.prod(factors)}")
    return factors


def check_rank(rank, dense: int):
    """``rank`` an int >= 1 or a float in (0, 1]."""
    ok_int = isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1
    ok_frac = isinstance(rank, float) and 0 < rank <= 1
    if not (ok_int or ok_frac):
        raise ValueError(f"rank must be an int >= 1 or a float in (0, 1] (a fraction of the "
                         f"dense kernel's {dense} parameters), got {rank!r}")
    return rank


def resolve_rank(rank, cost: Callable[[int], int], largest: int, dense: int,
                  why: str, owner: str) -> int:
    """An int rank, checked against ``largest``; a fraction: the largest rank ``r <=
    largest`` with ``cost(r) <= rank * dense`` (at least 1)."""
    check_rank(rank, dense)
    if isinstance(rank, float):
        lo, hi = 1, largest  # cost is increasing: binary search the last r within budget
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cost(mid) <= rank * dense else (lo, mid - 1)
        return lo
    if rank > largest:
        raise ValueError(f"rank {rank} is larger than {largest}, the largest rank {owner} "
                         f"can use ({why}); pass rank <= {largest}, or a fraction such as "
                         f"rank=0.5")
    return rank


def _padded(n: int, k: int) -> int:
    """The smallest size >= n whose balanced ``k`` factors are all > 1."""
    m = max(n, 2**k)
    while min(factorize_dims(m, k)) == 1:
        m += 1
    return m


def check_cheaper_than_dense(owner: str, cost1: int, dense: int, in_features, out_features,
                              fi=None, fo=None):
    """A ValueError when the rank-1 cores (``cost1`` parameters) cost more than the
    dense kernel: no rank of this structure can save anything."""
    if cost1 <= dense:
        return
    msg = (f"{owner}({in_features}, {out_features}) costs {cost1} parameters even at "
           f"rank 1, more than the dense kernel's {dense}")
    if fi is None:
        raise ValueError(f"{msg}; use nnx.Linear")
    k = len(fi)
    pads = [f"{name} to {_padded(n, k)}" for name, n, f in
            (("in_features", in_features, fi), ("out_features", out_features, fo))
            if 1 in f]
    raise ValueError(
        f"{msg}: in_factors={fi} and out_factors={fo} have a factor 1 (a prime or too small "
        f"size cannot be split). Use LowRankLinear, pad {' and '.join(pads) or 'the sizes'} "
        f"(balanced factors > 1), or pass other in_factors / out_factors")




def tt_factors(in_features, out_features, in_factors, out_factors, n_factors):
    if n_factors is not None:
        check_int(n_factors, "n_factors")
    given = in_factors if in_factors is not None else out_factors
    if given is None:
        n_sites = 3 if n_factors is None else n_factors
    elif isinstance(given, Sequence) and not isinstance(given, str):
        n_sites = len(given)
        if n_factors is not None and n_factors != n_sites:
            raise ValueError(f"n_factors={n_factors} disagrees with the {n_sites} factors "
                             f"given ({given}); pass one or the other")
    else:
        raise ValueError(f"in_factors / out_factors must be sequences of ints, got {given!r}")
    return (check_factors(in_factors, in_features, "in_factors", n_sites),
            check_factors(out_factors, out_features, "out_factors", n_sites))


def tt_ranks(rank, fi, fo, in_features, out_features) -> tuple[int, ...]:
    """The ``L - 1`` internal bond ranks: an int is capped bond by bond at what the
    unfoldings allow (as ``tt.from_dense``), a fraction resolved to the largest such
    uniform rank within budget, a sequence checked against the caps."""
    dense = in_features * out_features
    sizes = [m * n for m, n in zip(fo, fi, strict=True)]
    caps = tuple(min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(fi)))

    def cost(ranks):
        bonds = (1, *ranks, 1)
        return tt.num_params(tt.TTMatrix(tuple(
            jax.ShapeDtypeStruct((bonds[k], m, n, bonds[k + 1]), jnp.float32)
            for k, (m, n) in enumerate(zip(fo, fi, strict=True)))))

    uniform = lambda r: tuple(min(r, c) for c in caps)
    if isinstance(rank, Sequence) and not isinstance(rank, str):
        ranks = tuple(check_int(r, "rank") for r in rank)
        if len(ranks) != len(caps):
            raise ValueError(f"rank must be an int, a fraction or {len(caps)} ints (one per "
                             f"internal bond), got {rank!r}")
    else:
        check_rank(rank, dense)
    check_cheaper_than_dense("TTLinear", cost(uniform(1)), dense, in_features, out_features,
                              fi, fo)
    if isinstance(rank, Sequence):
        if any(r > c for r, c in zip(ranks, caps, strict=True)):
            raise ValueError(f"rank {ranks} is larger than the unfoldings of out_factors {fo} "
                             f"x in_factors {fi} allow: the largest useful ranks are {caps}")
        return ranks
    if not caps:  # one site: no bond
        return ()
    r = resolve_rank(rank, lambda r: cost(uniform(r)), max(caps), dense,
                      f"the largest bond the unfoldings of out_factors {fo} x in_factors {fi} "
                      f"allow; per bond {caps}", "TTLinear")
    return uniform(r)


