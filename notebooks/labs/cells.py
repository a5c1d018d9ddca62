"""Cell builders for the teacher sources: markdown, code, and exercises with nbgrader metadata.

An exercise is three cells:

1. the question (locked markdown, ``grade_id = <id>-question``), with the exercise kind
   (``code``, ``predict``, ``explain``) and its points;
2. the solution cell (``grade_id = <id>``): in the student version nbgrader replaces what is
   between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` (markers included) by the stub
   ``...  # YOUR ANSWER HERE`` (``ClearSolutions.code_stub`` in ``notebooks/nbgrader_config.py``):
   ``answer_<id> = (...)`` is then ``Ellipsis``, which the check reports as "no answer yet", and a
   function whose body is only the stub returns ``None``, which its check reports as a wrong type;
3. the autograded test cell (``grade_id = <id>-test``, locked, with points): a visible part that
   checks the answer's form (``lab.integer``, ``lab.choice``...) or runs the student's function
   on a tiny input, then ``### BEGIN HIDDEN TESTS`` ... ``### END HIDDEN TESTS`` with the key or
   the reference implementation and the fresh inputs: only the teacher's version has it. It is
   tagged ``raises-exception``: until the student answers it fails, and "Run All" (JupyterLab,
   nbclient, the docs build) goes on past it, so an unfinished lab still runs top to bottom.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from nbformat.v4 import new_code_cell, new_markdown_cell

KINDS = {"code": "write code", "predict": "predict, then run", "explain": "explain from evidence"}


@dataclass(frozen=True)
class ExerciseInfo:
    id: str
    kind: str
    points: int
    title: str


def _nbgrader(**kw) -> dict:
    meta = {"schema_version": 3, "grade": False, "solution": False, "locked": False, "task": False}
    meta.update(kw)
    return meta


def _clean(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def md(text: str):
    return new_markdown_cell(_clean(text))


def code(text: str):
    return new_code_cell(_clean(text))


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def exercise(ex_id: str, *, kind: str, points: int, title: str, question: str, check: str, hidden: str,
             solution: str | None = None, scaffold: str | None = None, answer: str | None = None):
    """The three cells of one exercise (see the module docstring).

    Either ``answer`` (the key, a Python expression: the student sees
    ``answer_<id> = (...  # YOUR ANSWER HERE)``), or ``solution`` code, with an optional
    ``scaffold`` the student sees above it (a ``def`` line and its docstring; the solution is
    then indented as the function's body).
    """
    if answer is not None:
        var = "answer_" + ex_id.replace("-", "_")
        scaffold = f"{var} = ("
        solution = answer
    if solution is None:
        raise ValueError(f"{ex_id}: give answer= or solution=")
    if kind not in KINDS:
        raise ValueError(f"{ex_id}: kind must be one of {sorted(KINDS)}")
    q = new_markdown_cell(
        f"**Exercise `{ex_id}`** · {KINDS[kind]} · {points} point{'s' if points != 1 else ''} — **{title}**\n\n"
        + _clean(question))
    q.metadata["nbgrader"] = _nbgrader(grade_id=f"{ex_id}-question", locked=True)
    q.metadata["ramlab"] = {"exercise": ex_id, "kind": kind, "points": points}
    sol = _clean(solution)
    if scaffold is not None:
        head = _clean(scaffold)
        body_indent = "    "
        sol = "\n".join([head, body_indent + "### BEGIN SOLUTION",
                         textwrap.indent(sol, body_indent), body_indent + "### END SOLUTION"])
        if answer is not None:
            sol += "\n)"
    else:
        sol = "### BEGIN SOLUTION\n" + sol + "\n### END SOLUTION"
    s = new_code_cell(sol)
    s.metadata["nbgrader"] = _nbgrader(grade_id=ex_id, solution=True)
    t = new_code_cell(_clean(check) + "\n### BEGIN HIDDEN TESTS\n" + _clean(hidden) + "\n### END HIDDEN TESTS")
    t.metadata["nbgrader"] = _nbgrader(grade_id=f"{ex_id}-test", grade=True, locked=True, points=points)
    t.metadata["tags"] = ["raises-exception"]
    return [q, s, t]


def exercises_in(cells) -> list[ExerciseInfo]:
    """The exercises of a cell list (from the question cells' ``ramlab`` metadata)."""
    out = []
    for c in cells:
        r = c.metadata.get("ramlab")
        if r:
            title = c.source.split("**")[3] if c.source.count("**") >= 4 else ""
            out.append(ExerciseInfo(r["exercise"], r["kind"], r["points"], title))
    return out


HOW_TO = """
## How the exercises work

Each exercise is a question, a cell for your answer and a **check** cell. Run the check: it
says at once whether your answer has the right *form* (a letter, an integer, a function...) and
records it; whether it is *right* is graded when you hand the lab in (nbgrader runs hidden tests:
code you write is run on inputs you have not seen — another capture, random bitmaps, a new
simulation). *Predict* exercises come before the experiment that shows the answer: commit to a
prediction first, then run on and see. Working alone? The answer keys are in the teacher's
version of this lab (`notebooks/source/` in the ramlab repository).
"""

SETUP = """
import numpy as np
import ramlab
from ramlab import lab
from ramlab.trace import PageClass, CLASS_NAMES
from ramlab.widgets import setup
_ = setup()   # loads BokehJS from the installed bokeh (no network; not saved with the notebook)
"""
