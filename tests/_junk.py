"""Wrong arguments for API-validation property tests: hypothesis strategies of junk values.

``junk()`` draws what a caller may pass by mistake -- None, bools, huge or negative integers,
NaN/infinity, strings, bytes, lists of mixed things, numpy arrays of the wrong dtype or shape,
read-only arrays -- and ``arg(valid)`` mixes those with valid values, so that a call gets past
its first check often enough to reach the later ones. ``call_or_ramlab_error`` runs a call and
lets only :class:`ramlab.errors.RamlabError` through: any other exception fails the test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ramlab.errors import RamlabError

_DTYPES = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, np.float64, np.bool_, np.complex64])


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def arrays(max_side: int = 6) -> st.SearchStrategy[np.ndarray]:
    """Small numpy arrays of any common dtype, 0-D to 3-D, sometimes read-only."""
    base = hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
    return st.one_of(base, base.map(_read_only))


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, 1, -1, 2, 3, 4096, 2**31, 2**63, 2**64, -(2**63)]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([float("nan"), float("inf"), -float("inf"), 2.5, 1e30, -0.0, 1.0]),
        st.complex_numbers(max_magnitude=10),
        st.sampled_from([np.float64("nan"), np.int64(-5), np.uint64(2**64 - 1), np.bool_(True), np.float32(2.5)]),
    )


def junk(max_side: int = 6) -> st.SearchStrategy[Any]:
    """Any wrong-ish value: scalars, strings, bytes, containers, arrays, objects."""
    return st.one_of(
        scalars(),
        st.text(max_size=6),
        st.sampled_from(["64M", "1T", "inf", "nan", "-1", "", "seed", "abc", "numba"]),
        st.binary(max_size=12),
        st.binary(max_size=12).map(bytearray),
        st.binary(max_size=12).map(memoryview),
        st.lists(scalars(), max_size=4),
        st.lists(st.binary(max_size=6), max_size=3),
        st.tuples(scalars(), scalars()),
        st.dictionaries(st.text(max_size=3), scalars(), max_size=2),
        arrays(max_side),
        st.just(object()),
    )


def arg(*valid: Any, max_side: int = 6) -> st.SearchStrategy[Any]:
    """Half the time one of the ``valid`` values (or strategies), else junk."""
    good = [v if isinstance(v, st.SearchStrategy) else st.just(v) for v in valid]
    return st.one_of(st.one_of(*good), junk(max_side)) if good else junk(max_side)


def call_or_ramlab_error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``; a RamlabError is fine (returned), any other exception propagates."""
    try:
        return fn(*args, **kwargs)
    except RamlabError as err:
        return err
