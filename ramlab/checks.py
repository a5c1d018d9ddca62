"""Argument checks shared by the public API: one place that turns bad arguments into clear errors.

Every public function that takes a number, a size, a flag, a bitmap or a byte buffer from a
caller checks it here, so a wrong type or value (a string, ``True`` where a count is expected,
NaN, infinity, a 2-D array, a non-integral ratio) ends in a :class:`~ramlab.errors.RamlabError`
subclass that names the argument, says what was expected and what was found -- never in a
``TypeError``/``ValueError``/``OverflowError`` from deep inside numpy, nor in a silent
truncation (``int(2.5) == 2``). Each check takes the error class to raise, so the module's own
error type (``XbzrleError``, ``PostcopyError``, ``SimulationError``...) reaches the caller.

The checks are O(1), except :func:`bits` and :func:`buffer`, which are one vectorised pass
over the array (no per-element Python).

    >>> integer(4096.0, "page_size")
    4096
    >>> integer(2.5, "host_ratio")
    Traceback (most recent call last):
    ...
    ramlab.errors.RamlabError: host_ratio must be an integer, found 2.5 (float)
    >>> size("1.5k", "ram"), number(300, "downtime_ms", max=2_000_000)
    (1536, 300.0)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import numpy as np

from ramlab.errors import RamlabError

__all__ = ["describe", "integer", "number", "flag", "choice", "size", "power_of_two", "bits", "buffer",
           "MAX_INT"]

#: the largest integer the checks let through unless a caller sets a smaller ``max``: int64 arithmetic
#: in numpy stays exact below it (sums of a few such values included)
MAX_INT = (1 << 62) - 1

_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def describe(value: object) -> str:
    """A short description of ``value`` for an error message: its value (abridged) and type.

    >>> describe(2.5), describe(np.zeros((2, 3))), describe("x" * 100)[:12]
    ('2.5 (float)', 'array of float64, shape (2, 3)', "'xxxxxxxxxxx")
    """
    if isinstance(value, np.ndarray):
        return f"array of {value.dtype}, shape {value.shape}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _fail(error: type[RamlabError], name: str, expected: str, value: object) -> RamlabError:
    return error(f"{name} must be {expected}, found {describe(value)}")


def integer(value: object, name: str, error: type[RamlabError] = RamlabError, *,
            min: int | None = None, max: int | None = MAX_INT) -> int:
    """``value`` as a Python int: an int, a numpy integer or an integral finite float; never a bool.

    ``min``/``max`` bound it (inclusive); the default ``max`` keeps numpy's int64 arithmetic exact.

    >>> integer(np.int32(7), "n"), integer(-3, "n")
    (7, -3)
    >>> integer(True, "n")
    Traceback (most recent call last):
    ...
    ramlab.errors.RamlabError: n must be an integer, found True (bool)
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _fail(error, name, "an integer", value)
    if isinstance(value, numbers.Integral):
        out = int(value)
    else:
        f = float(value)
        if not math.isfinite(f) or f != math.floor(f):
            raise _fail(error, name, "an integer", value)
        out = int(f)
    _bounds(out, name, error, min, max, value)
    return out


def number(value: object, name: str, error: type[RamlabError] = RamlabError, *,
           min: float | None = None, max: float | None = None) -> float:
    """``value`` as a finite float (an int, a float or a numpy number; never a bool, NaN or infinity).

    >>> number(np.float32(0.5), "fill")
    0.5
    >>> number(float("nan"), "downtime_ms")
    Traceback (most recent call last):
    ...
    ramlab.errors.RamlabError: downtime_ms must be a finite number, found nan (float)
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _fail(error, name, "a finite number", value)
    try:
        out = float(value)
    except OverflowError:  # an int beyond float range
        raise _fail(error, name, "a finite number", value) from None
    if not math.isfinite(out):
        raise _fail(error, name, "a finite number", value)
    _bounds(out, name, error, min, max, value)
    return out


def _bounds(out: float, name: str, error: type[RamlabError], lo: float | None, hi: float | None,
            value: object) -> None:
    if lo is not None and out < lo:
        raise _fail(error, name, f">= {lo}", value)
    if hi is not None and out > hi:
        raise _fail(error, name, f"<= {hi}", value)


def flag(value: object, name: str, error: type[RamlabError] = RamlabError) -> bool:
    """``value`` as a bool: only ``True``/``False`` (or numpy's bools), not 0/1 or strings.

    >>> flag(np.True_, "xbzrle")
    True
    """
    if not isinstance(value, bool | np.bool_):
        raise _fail(error, name, "True or False", value)
    return bool(value)


def choice(value: object, name: str, options: Iterable[str], error: type[RamlabError] = RamlabError) -> str:
    """``value`` if it is one of the strings ``options``.

    >>> choice("seed", "algorithm", ("seed", "modern"))
    'seed'
    """
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise _fail(error, name, "one of " + ", ".join(repr(o) for o in options), value)
    return value


def size(value: object, name: str, error: type[RamlabError] = RamlabError, *,
         min: int = 0, max: int = MAX_INT) -> int:
    """A byte count: a number, or a string with a binary suffix (``"64M"``, ``"1.5k"``, ``"2GiB"``).

    Fractions of a byte are dropped (``"1.5"`` is 1 byte) as sizes are whole bytes; NaN,
    infinity, negative values, bools and anything beyond ``max`` are errors.

    >>> size("64M", "ram"), size(4096, "ram"), size("2 GiB", "ram")
    (67108864, 4096, 2147483648)
    """
    if isinstance(value, str):
        t = value.strip().upper().removesuffix("B").removesuffix("I").strip()
        mult = 1
        if t[-1:] in _SUFFIXES:
            t, mult = t[:-1].strip(), _SUFFIXES[t[-1]]
        try:
            f = float(t)
        except ValueError:
            raise _fail(error, name, "a size (bytes, or a number with K, M, G, T or P)", value) from None
        if not math.isfinite(f):
            raise _fail(error, name, "a finite size", value)
        if abs(f) * mult > max:  # before int(): a huge value is refused without building it
            raise _fail(error, name, f"<= {max} bytes", value)
        out = int(f * mult)
    elif isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise _fail(error, name, "a size (bytes, or a string such as '64M')", value)
    elif isinstance(value, numbers.Integral):
        out = int(value)
    else:
        f = float(value)
        if not math.isfinite(f):
            raise _fail(error, name, "a finite size", value)
        if abs(f) > max:
            raise _fail(error, name, f"<= {max} bytes", value)
        out = int(f)
    _bounds(out, name, error, min, max, value)
    return out


def power_of_two(value: object, name: str, error: type[RamlabError] = RamlabError, *,
                 min: int = 1, max: int = MAX_INT) -> int:
    """An integer that is a power of two in ``min..max`` (page sizes, host page ratios, cache slots).

    >>> power_of_two(512, "host_ratio")
    512
    """
    out = integer(value, name, error, min=min, max=max)
    if out < 1 or out & (out - 1):
        raise _fail(error, name, "a power of two", value)
    return out


def bits(value: object, name: str, error: type[RamlabError] = RamlabError) -> np.ndarray:
    """A 1-D bitmap: a bool array, or an integer array of only 0 and 1 (lists of those too).

    Returns a bool array (the input itself when it is already a 1-D bool array; else a new one).
    Floats (so NaN), ``None``, strings, values other than 0/1 and arrays of another shape are
    errors; an empty 1-D input (``[]``) is an empty bitmap whatever its dtype.

    >>> bits([0, 1, 1], "dirty").tolist()
    [False, True, True]
    """
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
    except (TypeError, ValueError, OverflowError):  # ragged lists, out-of-range ints...
        raise _fail(error, name, "a 1-D array of bools or 0/1 integers", value) from None
    if arr.ndim != 1 or not (arr.dtype == bool or arr.dtype.kind in "iu" or arr.size == 0):
        raise _fail(error, name, "a 1-D array of bools or 0/1 integers", value)
    if arr.dtype == bool:
        if arr.size and arr.view(np.uint8).max() > 1:  # a bool view of other bytes: make it 0/1
            arr = arr.view(np.uint8) != 0
    else:
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise error(f"{name} must hold only 0 and 1, found values "
                        f"{arr.min()}..{arr.max()} in an array of {arr.dtype}")
        arr = arr.astype(bool)
    return arr


def buffer(value: object, name: str, error: type[RamlabError] = RamlabError) -> np.ndarray:
    """A byte buffer as a 1-D uint8 array (no copy for contiguous input): ``bytes``, ``bytearray``,
    a ``memoryview`` or a 1-D uint8 numpy array. Strings, lists and other dtypes are errors.

    >>> buffer(b"ab", "encoded").tolist()
    [97, 98]
    """
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 1:
            raise _fail(error, name, "a 1-D uint8 array or a bytes-like object", value)
        return value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _fail(error, name, "bytes-like (bytes, bytearray, memoryview or a uint8 array)", value)
    try:
        return np.frombuffer(value, dtype=np.uint8)
    except (TypeError, ValueError):  # a non-contiguous memoryview
        raise _fail(error, name, "a contiguous bytes-like object", value) from None
