"""What the labs (``notebooks/*.ipynb``) import: sample data, display helpers, the exercise types
and their checker, fresh inputs for grading, and experiment controls. No answers live here.

    >>> from ramlab import lab
    >>> lab.integer("demo", 42)                   # a student's answer of the right form is recorded
    >>> lab.same_int(43, 42), lab.same_choice("b", "B")
    (False, True)

One module per job:

* :mod:`ramlab.lab.samples` — :func:`sample`, :func:`meta`, :func:`stream_bytes`, :func:`trace`:
  the bundled captures (the shared ones beside a checkout as a fallback);
* :mod:`ramlab.lab.display` — :func:`table`, :func:`hexdump`, :func:`events_table`;
* :mod:`ramlab.lab.answers` — the exercise types (:func:`choice`, :func:`integer`, :func:`function`
  ...): a wrong *form* gets a hint at once, correctness is graded by nbgrader from the hidden
  tests of the teacher's notebook;
* :mod:`ramlab.lab.checker` — the strict normalisers and comparisons those hidden tests use;
* :mod:`ramlab.lab.fresh` — fresh inputs (random bitmaps and pages, new simulations, other
  captures) and the :func:`compare` harness for code-writing exercises;
* :mod:`ramlab.lab.refwalk` / :mod:`ramlab.lab.damage` — an independent RAM-record walker and
  the damaged streams of lab 06;
* :mod:`ramlab.lab.controls` — :func:`explore`: ipywidgets controls around an experiment.
"""

from __future__ import annotations

from ramlab.lab import fresh
from ramlab.lab.answers import ANSWER_MIME, byte_string, choice, choices, function, integer, number, ranges
from ramlab.lab.checker import (
    AnswerFormError,
    as_bool,
    as_bytes,
    as_choice,
    as_choices,
    as_float,
    as_int,
    as_int_array,
    as_ranges,
    close,
    same_array,
    same_bytes,
    same_choice,
    same_choices,
    same_int,
    same_ranges,
)
from ramlab.lab.controls import Explorer, explore
from ramlab.lab.damage import DAMAGES, TRUNCATE_AT, damaged, flipped_offset
from ramlab.lab.display import HTML, describe_event, events_table, hexdump, table
from ramlab.lab.refwalk import SPEC_FLAGS, RefWalk, ref_walk
from ramlab.lab.samples import SHARED_NAMES, meta, migration, sample, shared_captures, stream_bytes, trace

__all__ = [
    "fresh",
    "ANSWER_MIME", "choice", "choices", "integer", "number", "byte_string", "ranges", "function",
    "AnswerFormError", "as_bool", "as_bytes", "as_choice", "as_choices", "as_float", "as_int", "as_int_array",
    "as_ranges", "close", "same_array", "same_bytes", "same_choice", "same_choices", "same_int", "same_ranges",
    "Explorer", "explore",
    "DAMAGES", "TRUNCATE_AT", "damaged", "flipped_offset",
    "HTML", "describe_event", "events_table", "hexdump", "table",
    "SPEC_FLAGS", "RefWalk", "ref_walk",
    "SHARED_NAMES", "meta", "migration", "sample", "shared_captures", "stream_bytes", "trace",
]
