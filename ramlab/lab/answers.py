"""The exercise types a student answers in a lab: check the *form* now, grade on submission.

A lab exercise is three cells: the question (markdown), the student's solution cell, and an
autograded test cell. The visible part of the test cell calls one of these functions:

    >>> integer("tour-zero-pages", 3910)            # right form: recorded (shown in a notebook)
    >>> choice("tour-bulk", 2, "AB")                # wrong type: a hint, the test cell fails
    Traceback (most recent call last):
    ...
    ramlab.lab.checker.AnswerFormError: [tour-bulk] expected one letter of A, B (a str such as "A"), got the int 2

They return ``None`` on purpose: nbgrader reads a number left as a test cell's result as partial
credit. None of them knows the answer: whether it is *right* is decided by the hidden tests of the
teacher's notebook when nbgrader autogrades the submission. In a notebook each call displays
the recorded answer, with a machine-readable copy under the MIME type :data:`ANSWER_MIME` (the
repository's tests use it to check that no output above a question already shows its answer).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from ramlab.lab.checker import (
    AnswerFormError,
    as_bytes,
    as_choice,
    as_choices,
    as_float,
    as_int,
    as_ranges,
)

__all__ = ["ANSWER_MIME", "choice", "choices", "integer", "number", "byte_string", "ranges", "function"]

#: MIME type of the machine-readable copy of a recorded answer
ANSWER_MIME = "application/vnd.ramlab.answer+json"


def _record(exercise: str, kind: str, value: Any, shown: str) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return
    if get_ipython() is None:
        return
    text = f"[{exercise}] recorded: {shown} (graded when the lab is submitted)"
    box = ("<div style='border-left:4px solid #1f77b4;background:#eef5fb;padding:4px 10px;margin:2px 0'>"
           f"&#9998; <b>{html.escape(exercise)}</b>: recorded <code>{html.escape(shown)}</code> "
           "<span style='color:#777'>(graded when the lab is submitted)</span></div>")
    display({"text/plain": text, "text/html": box,
             ANSWER_MIME: {"exercise": exercise, "kind": kind, "value": value}}, raw=True)


def _form(exercise: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except AnswerFormError as e:
        raise AnswerFormError(f"[{exercise}] {e}") from None


def choice(exercise: str, answer: Any, options: str | Sequence[str]) -> None:
    """A multiple-choice answer: one letter of ``options``."""
    v = _form(exercise, as_choice, answer, options)
    _record(exercise, "choice", v, v)


def choices(exercise: str, answer: Any, options: str | Sequence[str]) -> None:
    """A select-all-that-apply answer: a set of letters of ``options``."""
    v = _form(exercise, as_choices, answer, options)
    _record(exercise, "choices", sorted(v), "{" + ", ".join(sorted(v)) + "}")


def integer(exercise: str, answer: Any, *, minimum: int | None = None, maximum: int | None = None) -> None:
    """An exact integer answer (``minimum``/``maximum``: the range a sensible answer lies in,
    checked so that a unit mistake gets a hint; they say nothing about the right value)."""
    v = _form(exercise, as_int, answer)
    if minimum is not None and v < minimum:
        raise AnswerFormError(f"[{exercise}] {v} is below {minimum}: check the unit the question asks for")
    if maximum is not None and v > maximum:
        raise AnswerFormError(f"[{exercise}] {v} is above {maximum}: check the unit the question asks for")
    _record(exercise, "int", v, f"{v:,}")


def number(exercise: str, answer: Any, *, minimum: float | None = None, maximum: float | None = None) -> None:
    """A real-number answer (graded with the tolerance the question states)."""
    v = _form(exercise, as_float, answer)
    if minimum is not None and v < minimum:
        raise AnswerFormError(f"[{exercise}] {v} is below {minimum}: check the unit the question asks for")
    if maximum is not None and v > maximum:
        raise AnswerFormError(f"[{exercise}] {v} is above {maximum}: check the unit the question asks for")
    _record(exercise, "float", v, f"{v:.4g}")


def byte_string(exercise: str, answer: Any) -> None:
    """A bytes answer (``bytes`` or a hex string)."""
    v = _form(exercise, as_bytes, answer)
    _record(exercise, "bytes", v.hex(), v.hex(" ") or "b''")


def ranges(exercise: str, answer: Any) -> None:
    """A list of ``(start, length)`` pairs."""
    v = _form(exercise, as_ranges, answer)
    _record(exercise, "ranges", [list(r) for r in v], str(v))


def function(exercise: str, f: Any, n_args: int | None = None) -> None:
    """A code-writing answer: ``f`` must be a function (taking ``n_args`` positional arguments).

    >>> function("x", len, 1)
    """
    if not callable(f):
        raise AnswerFormError(f"[{exercise}] expected a function (def ...), got {type(f).__name__}")
    if n_args is not None:
        import inspect

        try:
            inspect.signature(f).bind(*range(n_args))
        except TypeError:
            raise AnswerFormError(f"[{exercise}] the function must take {n_args} argument(s)") from None
        except ValueError:  # builtins without a signature
            pass
    name = getattr(f, "__name__", type(f).__name__)
    _record(exercise, "function", name, f"def {name}(...)")
