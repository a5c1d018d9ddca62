"""Reading and comparing answers: strict about types, exact unless a tolerance is stated.

Two layers, both without any answer in them:

* **normalisers** (``as_int``, ``as_choice``, ...) turn what a student typed into one canonical
  value or raise :class:`AnswerFormError` with a hint saying what form is expected. A wrong
  *type* is never silently converted into a right answer: ``True`` is not ``1``, ``"42"`` is not
  ``42``, ``42.0`` is not an integer answer, ``"Unknown"`` is not option ``(C) Unknown ramblock``;
* **predicates** (``same_int``, ``same_choice``, ...) used by the graded (hidden) tests of the
  teacher notebooks: ``same_int(answer, expected)`` is ``True`` only for exactly that integer (no
  off-by-one slack); :func:`close` takes a relative tolerance *and the reason* it is needed.

    >>> as_choice("b", "ABCD")
    'B'
    >>> as_choice("Unknown", "ABCD")
    Traceback (most recent call last):
    ...
    ramlab.lab.checker.AnswerFormError: expected one letter of A, B, C, D (a str such as "A"), got 'Unknown'
    >>> same_int(42, 42), same_int(43, 42), same_int(True, 1)
    (True, False, False)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = [
    "AnswerFormError",
    "as_int",
    "as_float",
    "as_bool",
    "as_choice",
    "as_choices",
    "as_bytes",
    "as_ranges",
    "as_int_array",
    "same_int",
    "same_choice",
    "same_choices",
    "same_bytes",
    "same_ranges",
    "same_array",
    "close",
]


class AnswerFormError(AssertionError):
    """An answer of the wrong type or shape. An ``AssertionError``, so nbgrader counts the test
    cell as failed (no points), and the message is a hint about the expected form."""


def _show(a: Any) -> str:
    text = repr(a)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(a: Any) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))


def as_int(a: Any) -> int:
    """An integer answer: a Python or numpy integer (not a bool, a float or a string).

    >>> as_int(np.int64(7))
    7
    >>> as_int(7.0)
    Traceback (most recent call last):
    ...
    ramlab.lab.checker.AnswerFormError: expected an int, got the float 7.0: write it as an integer...
    """
    if _is_int(a):
        return int(a)
    if isinstance(a, np.ndarray) and a.shape == () and a.dtype.kind in "iu":
        return int(a)
    if a is None or a is Ellipsis:
        raise AnswerFormError("no answer yet: assign an int")
    if isinstance(a, (bool, np.bool_)):
        raise AnswerFormError(f"expected an int, got the bool {a!r}")
    if isinstance(a, (float, np.floating)):
        raise AnswerFormError(f"expected an int, got the float {a!r}: write it as an integer (int(x) if you are sure)")
    if isinstance(a, str):
        raise AnswerFormError(f"expected an int, got the str {a!r}: write the number without quotes")
    raise AnswerFormError(f"expected an int, got {type(a).__name__} {_show(a)}")


def as_float(a: Any) -> float:
    """A real-number answer: int or float (not a bool or a string), finite.

    >>> as_float(3), as_float(np.float32(0.5))
    (3.0, 0.5)
    """
    if _is_int(a) or (isinstance(a, (float, np.floating)) and not isinstance(a, bool)):
        v = float(a)
        if not np.isfinite(v):
            raise AnswerFormError(f"expected a finite number, got {v!r}")
        return v
    if a is None or a is Ellipsis:
        raise AnswerFormError("no answer yet: assign a number")
    if isinstance(a, str):
        raise AnswerFormError(f"expected a number, got the str {a!r}: write it without quotes")
    raise AnswerFormError(f"expected a number (int or float), got {type(a).__name__} {_show(a)}")


def as_bool(a: Any) -> bool:
    """``True`` or ``False`` (numpy bools too), nothing else.

    >>> as_bool(np.bool_(True))
    True
    """
    if isinstance(a, (bool, np.bool_)):
        return bool(a)
    raise AnswerFormError(f"expected True or False, got {type(a).__name__} {_show(a)}")


def _letters(options: str | Sequence[str]) -> list[str]:
    letters = list(options)
    if not letters or any(len(x) != 1 for x in letters):
        raise ValueError(f"options must be single letters, got {options!r}")
    return letters


def as_choice(a: Any, options: str | Sequence[str]) -> str:
    """One option letter (``"B"``, case and surrounding blanks ignored): not its index, not part
    of its text, not ``"B)"``.

    >>> as_choice(" c ", "ABC")
    'C'
    >>> as_choice(1, "ABC")
    Traceback (most recent call last):
    ...
    ramlab.lab.checker.AnswerFormError: expected one letter of A, B, C (a str such as "A"), got the int 1
    """
    letters = _letters(options)
    want = f'one letter of {", ".join(letters)} (a str such as "{letters[0]}")'
    if isinstance(a, str):
        s = a.strip().upper()
        if len(s) == 1 and s in letters:
            return s
        raise AnswerFormError(f"expected {want}, got {_show(a)}")
    if a is None or a is Ellipsis:
        raise AnswerFormError(f"no answer yet: assign {want}")
    kind = "the bool" if isinstance(a, bool) else f"the {type(a).__name__}"
    raise AnswerFormError(f"expected {want}, got {kind} {_show(a)}")


def as_choices(a: Any, options: str | Sequence[str]) -> frozenset[str]:
    """A set of option letters for "select all that apply" (a set, list or tuple of letters;
    the empty set is a valid answer).

    >>> sorted(as_choices(["a", "C"], "ABCD"))
    ['A', 'C']
    """
    letters = _letters(options)
    if isinstance(a, str) or not isinstance(a, (set, frozenset, list, tuple)):
        raise AnswerFormError(f'expected a set of letters such as {{"A", "C"}}, got {type(a).__name__} {_show(a)}')
    out = set()
    for x in a:
        out.add(as_choice(x, letters))
    return frozenset(out)


def as_bytes(a: Any) -> bytes:
    """Bytes: ``bytes``/``bytearray``/uint8 array, or a hex string (``"ff 1f"``, ``"0xff1f"``).

    >>> as_bytes("ff 1f"), as_bytes(b"\\x01")
    (b'\\xff\\x1f', b'\\x01')
    """
    if isinstance(a, (bytes, bytearray, memoryview)):
        return bytes(a)
    if isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == 1:
        return a.tobytes()
    if isinstance(a, str):
        s = re.sub(r"[\s:]", "", a.lower())
        s = s[2:] if s.startswith("0x") else s
        if len(s) % 2 == 0 and re.fullmatch(r"[0-9a-f]*", s):
            return bytes.fromhex(s)
        raise AnswerFormError(f"expected bytes or a hex string such as 'ff 1f 01', got {_show(a)}")
    if a is None or a is Ellipsis:
        raise AnswerFormError("no answer yet: assign bytes (b'...') or a hex string")
    raise AnswerFormError(f"expected bytes or a hex string, got {type(a).__name__} {_show(a)}")


def as_ranges(a: Any) -> list[tuple[int, int]]:
    """A list of ``(start, length)`` integer pairs, in order (an object with ``.ranges`` is not
    accepted: give the list itself).

    >>> as_ranges([(0, 8), [12, 4]])
    [(0, 8), (12, 4)]
    """
    if not isinstance(a, (list, tuple)):
        raise AnswerFormError(f"expected a list of (start, length) pairs, got {type(a).__name__} {_show(a)}")
    out = []
    for item in a:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise AnswerFormError(f"each range must be a (start, length) pair, got {_show(item)}")
        out.append((as_int(item[0]), as_int(item[1])))
    return out


def as_int_array(a: Any, *, length: int | None = None, name: str = "the result") -> np.ndarray:
    """A 1-D integer array (list, tuple or numpy array of integers; bools are refused).

    >>> as_int_array([1, 2, 3], length=3).tolist()
    [1, 2, 3]
    """
    if isinstance(a, (list, tuple)):
        if any(isinstance(x, (bool, np.bool_)) or not _is_int(x) for x in a):
            raise AnswerFormError(f"{name} must hold integers only, got {_show(a)}")
        arr = np.asarray(a, dtype=np.int64)
    elif isinstance(a, np.ndarray):
        if a.dtype.kind not in "iu":
            raise AnswerFormError(f"{name} must be an integer array, got dtype {a.dtype}"
                                  + (" (use .astype(int) on a count, or np.flatnonzero on a mask)"
                                     if a.dtype.kind in "bf" else ""))
        arr = a.astype(np.int64)
    else:
        raise AnswerFormError(f"{name} must be a list or numpy array of integers, got {type(a).__name__} {_show(a)}")
    if arr.ndim != 1:
        raise AnswerFormError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if length is not None and arr.size != length:
        raise AnswerFormError(f"{name} must have {length} entries, got {arr.size}")
    return arr


def _safely(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except AnswerFormError:
        return None


def same_int(a: Any, expected: int) -> bool:
    """``a`` is exactly the integer ``expected`` (no tolerance, no type coercion)."""
    v = _safely(as_int, a)
    return v is not None and v == int(expected)


def same_choice(a: Any, expected: str, options: str | Sequence[str] = "ABCDEFGH") -> bool:
    """``a`` is exactly the option letter ``expected``."""
    v = _safely(as_choice, a, options)
    return v is not None and v == expected.upper()


def same_choices(a: Any, expected: Iterable[str], options: str | Sequence[str] = "ABCDEFGH") -> bool:
    """``a`` is exactly the set of letters ``expected`` (no more, no fewer)."""
    v = _safely(as_choices, a, options)
    return v is not None and v == frozenset(x.upper() for x in expected)


def same_bytes(a: Any, expected: bytes) -> bool:
    """``a`` reads as exactly the bytes ``expected``."""
    v = _safely(as_bytes, a)
    return v is not None and v == bytes(expected)


def same_ranges(a: Any, expected: Sequence[tuple[int, int]]) -> bool:
    """``a`` is exactly this list of ``(start, length)`` pairs, in this order."""
    v = _safely(as_ranges, a)
    return v is not None and v == [(int(s), int(n)) for s, n in expected]


def same_array(a: Any, expected: Any) -> bool:
    """``a`` is an integer sequence equal element by element to ``expected`` (same length)."""
    e = np.asarray(expected)
    v = _safely(as_int_array, a)
    return v is not None and v.shape == e.shape and bool(np.array_equal(v, e))


def close(a: Any, expected: float, *, rel: float, why: str) -> bool:
    """``a`` is a number within ``rel`` (relative) of ``expected``. ``why`` must say why the
    quantity is only approximate (it is shown to whoever reads the test).

    >>> close(0.31, 0.3, rel=0.05, why="read off a plot"), close(0.4, 0.3, rel=0.05, why="read off a plot")
    (True, False)
    """
    if not why or not why.strip():
        raise ValueError("a tolerance needs its reason: close(..., why='...')")
    if not 0 < rel < 1:
        raise ValueError("rel must be in (0, 1)")
    v = _safely(as_float, a)
    return v is not None and abs(v - float(expected)) <= rel * abs(float(expected))
