"""The labs: teacher sources and student notebooks in sync, and the whole nbgrader cycle per lab.

* the committed teacher sources (``notebooks/source/<lab>/<lab>.ipynb``) are what
  ``notebooks/build.py`` generates, and the committed student notebooks (``notebooks/<lab>.ipynb``)
  what ``nbgrader generate_assignment`` makes of them (``scripts/release_notebooks.py``), outputs
  stripped, with no solution or hidden test left in them;
* there are at least 10 labs and 40 exercises, a third of them code-writing;
* per lab, in a temporary course directory: ``nbgrader generate_assignment``; the unchanged student
  notebook and the teacher source are submitted and ``nbgrader autograde``\\ d: the first scores 0, the
  second full marks, and it runs top to bottom in under 90 s (the cells' own execution timestamps);
* in both executed notebooks no output above an exercise's question shows that exercise's answer
  (the answers are read from the teacher run: the check cells record them under ``ANSWER_MIME``).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SOURCE = NOTEBOOKS / "source"
LABS = sorted(p.name for p in SOURCE.iterdir() if (p / f"{p.name}.ipynb").exists()) if SOURCE.is_dir() else []
ANSWER_MIME = "application/vnd.ramlab.answer+json"
MAX_SECONDS = 90


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _build() -> Any:
    return _load(NOTEBOOKS / "build.py", "ramlab_notebooks_build")


def _release() -> Any:
    return _load(REPO / "scripts" / "release_notebooks.py", "ramlab_release_notebooks")


def _cells(nb: Any) -> list[tuple[str, str, dict]]:
    return [(c.cell_type, c.source, dict(c.metadata)) for c in nb.cells]


# ---------------------------------------------------------------------------------- structure


def test_labs_and_exercise_counts() -> None:
    stats = _build().stats()
    assert [s[0] for s in stats] == LABS, "run: .venv/bin/python scripts/release_notebooks.py"
    assert len(LABS) >= 10
    n = sum(s[1] for s in stats)
    n_code = sum(s[2] for s in stats)
    assert n >= 40, f"{n} exercises"
    assert 3 * n_code >= n, f"{n_code} of {n} exercises write code"
    assert all(s[1] >= 3 for s in stats), [s[:2] for s in stats]


def test_sources_are_generated(tmp_path: Path) -> None:
    _build().build(tmp_path)
    for lab in LABS:
        fresh = nbformat.read(tmp_path / lab / f"{lab}.ipynb", as_version=4)
        committed = nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)
        assert _cells(committed) == _cells(fresh), f"{lab}: run .venv/bin/python scripts/release_notebooks.py"


@pytest.mark.slow
def test_student_notebooks_are_released_sources(tmp_path: Path) -> None:
    """``notebooks/<lab>.ipynb`` is exactly what nbgrader makes of the committed source today."""
    fresh = _release().release(LABS, tmp_path)
    for p in fresh:
        assert (NOTEBOOKS / p.name).read_text() == p.read_text(), (
            f"{p.name} is stale: run .venv/bin/python scripts/release_notebooks.py")
    extra = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert extra == sorted(p.name for p in fresh), "a notebook in notebooks/ has no teacher source"


@pytest.mark.parametrize("lab", LABS)
def test_student_notebook_has_no_solution(lab: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{lab}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text, f"{lab}: {marker} in the student notebook"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [] and c.execution_count is None, f"{lab}: outputs not stripped"
    source = nbformat.read(SOURCE / lab / f"{lab}.ipynb", as_version=4)
    hidden = [re.search(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", c.source, re.S)
              for c in source.cells if c.cell_type == "code"]
    for h in filter(None, hidden):
        for line in h.group(1).splitlines():
            if len(line.strip()) > 24:
                assert line not in text, f"{lab}: hidden test line in the student notebook: {line}"
    graded = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert graded and all("### BEGIN HIDDEN TESTS" in c.source for c in graded), f"{lab}: a graded cell has no key"


# ---------------------------------------------------------------------------------- nbgrader cycle


def _answers(nb: Any) -> dict[str, dict]:
    """Exercise id -> the answer its check cell recorded (``ANSWER_MIME`` outputs)."""
    out = {}
    for c in nb.cells:
        for o in c.get("outputs", []):
            rec = o.get("data", {}).get(ANSWER_MIME)
            if rec:
                out[rec["exercise"]] = rec
    return out


def _leak_patterns(rec: dict) -> list[re.Pattern]:
    """Regexes of the ways an answer would show in an output; none for letters and small numbers
    (a lone "B" or "7" is everywhere)."""
    v, kind = rec["value"], rec["kind"]
    forms: list[str] = []
    if kind == "int" and abs(v) >= 100:
        forms = [str(v), f"{v:,}"]
    elif kind == "float" and v != 0:
        forms = [f for f in {f"{v:.3g}", f"{v:.2f}"} if len(re.sub(r"\D", "", f)) >= 3]
    elif kind == "bytes" and len(v) >= 4:
        forms = [v, " ".join(v[i:i + 2] for i in range(0, len(v), 2))]
    elif kind == "ranges" and v:
        pairs = ", ".join(f"({s}, {n})" for s, n in v)
        forms = [pairs, pairs.replace("(", "[").replace(")", "]")]
    return [re.compile(r"(?<![\w.,])" + re.escape(f) + r"(?![\w])") for f in forms]


def _output_text(o: dict, skip_answers: bool) -> str:
    if skip_answers and ANSWER_MIME in o.get("data", {}):
        return ""
    if o.get("output_type") == "stream":
        return o.get("text", "")
    if o.get("output_type") == "error":
        return o.get("evalue", "") + "\n" + "\n".join(o.get("traceback", []))
    data = o.get("data", {})
    return "\n".join(str(data.get(k, "")) for k in ("text/plain", "text/html", "text/markdown"))


def _question_index(nb: Any, ex: str) -> int:
    for i, c in enumerate(nb.cells):
        if c.metadata.get("nbgrader", {}).get("grade_id") == f"{ex}-question":
            return i
    raise AssertionError(f"no question cell for {ex}")


def _leaks(nb: Any, answers: dict[str, dict], skip_answers: bool) -> list[str]:
    found = []
    for ex, rec in answers.items():
        pats = _leak_patterns(rec)
        if not pats:
            continue
        q = _question_index(nb, ex)
        for i, c in enumerate(nb.cells[:q]):
            for o in c.get("outputs", []):
                text = _output_text(o, skip_answers)
                for p in pats:
                    if p.search(text):
                        found.append(f"{ex}: answer {p.pattern!r} in the output of cell {i} (question at {q})")
    return found


def _seconds(nb: Any) -> float:
    """Wall time from the first cell's start to the last cell's end (nbclient's timestamps)."""
    starts, ends = [], []
    for c in nb.cells:
        ex = c.metadata.get("execution", {})
        if "iopub.execute_input" in ex and "shell.execute_reply" in ex:
            starts.append(dt.datetime.fromisoformat(ex["iopub.execute_input"].replace("Z", "+00:00")))
            ends.append(dt.datetime.fromisoformat(ex["shell.execute_reply"].replace("Z", "+00:00")))
    assert starts, "no execution timestamps in the autograded notebook"
    return (max(ends) - min(starts)).total_seconds()


def _scores(db: Path, lab: str) -> dict[str, tuple[float, float]]:
    """student -> (score, max score) of ``lab``, read from nbgrader's gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{db}") as gb:
        return {s: (gb.find_submission(lab, s).score, gb.find_submission(lab, s).max_score)
                for s in ("blank", "teacher")}


def test_leak_check_finds_an_answer_above_its_question() -> None:
    """The check itself: an answer shown above its question is found, below it is not."""
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    above = new_code_cell("print(n)", outputs=[new_output("stream", name="stdout", text="4,146 bytes\n")])
    question = new_markdown_cell("**Exercise**")
    question.metadata["nbgrader"] = {"grade_id": "x-question"}
    below = new_code_cell("n", outputs=[new_output("execute_result", data={"text/plain": "4146"}, execution_count=1)])
    nb = new_notebook(cells=[above, question, below])
    answers = {"x": {"exercise": "x", "kind": "int", "value": 4146}}
    assert _leaks(nb, answers, skip_answers=False)
    nb.cells = [question, above]
    assert not _leaks(nb, answers, skip_answers=False)
    assert not _leaks(nb, {"x": {"exercise": "x", "kind": "int", "value": 41}}, skip_answers=False)
    ranges = {"x": {"exercise": "x", "kind": "ranges", "value": [[0, 8], [12, 4]]}}
    nb.cells = [new_code_cell("p", outputs=[new_output("stream", name="stdout", text="((0, 8), (12, 4))")]), question]
    assert _leaks(nb, ranges, skip_answers=False)


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One temporary course directory with every lab, and nbgrader's API on it."""
    rel = _release()
    root = rel.course_copy(tmp_path_factory.mktemp("course"), LABS)
    return root, rel.api(root)


def _submit(root: Path, lab: str) -> None:
    released = root / "release" / lab / f"{lab}.ipynb"
    assert released.exists()
    for student, nb in (("blank", released), ("teacher", root / "source" / lab / f"{lab}.ipynb")):
        dest = root / "submitted" / student / lab
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(nb, dest / f"{lab}.ipynb")


@pytest.mark.slow
def test_nbgrader_commands(tmp_path: Path) -> None:
    """The documented commands, as a teacher types them in ``notebooks/``: generate, autograde, export."""
    rel = _release()
    lab = LABS[0]
    root = rel.course_copy(tmp_path / "course", [lab])
    rel.nbgrader(["generate_assignment", lab, "--force"], root)
    _submit(root, lab)
    rel.nbgrader(["autograde", lab, "--create"], root)
    rel.nbgrader(["export", "--to", "grades.csv"], root)
    rows = (root / "grades.csv").read_text().splitlines()
    assert rows[0].startswith("assignment,") and len(rows) == 3
    scores = _scores(root / "gradebook.db", lab)
    assert scores["blank"][0] == 0 and scores["teacher"][0] == scores["teacher"][1] > 0


@pytest.mark.slow
@pytest.mark.parametrize("lab", LABS)
def test_nbgrader_cycle(lab: str, course: tuple[Path, Any]) -> None:
    rel = _release()
    root, grader = course
    rel.run_api(grader.generate_assignment(lab, force=True), f"generate_assignment {lab}")
    _submit(root, lab)
    rel.run_api(grader.autograde(lab, "*", force=True, create=True), f"autograde {lab}")
    course = root
    scores = _scores(course / "gradebook.db", lab)
    total = scores["teacher"][1]
    assert total > 0
    assert scores["blank"] == (0.0, total), f"{lab}: the unchanged student notebook scored {scores['blank']}"
    teacher = nbformat.read(course / "autograded" / "teacher" / lab / f"{lab}.ipynb", as_version=4)
    failed = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(teacher.cells)
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert scores["teacher"] == (total, total), f"{lab}: solutions scored {scores['teacher']}: {failed}"
    assert not failed, f"{lab}: errors with the solutions filled in: {failed}"
    seconds = _seconds(teacher)
    print(f"{lab}: {seconds:.1f} s with the solutions, {total:g} points")
    assert seconds < MAX_SECONDS, f"{lab} took {seconds:.0f} s (limit {MAX_SECONDS} s)"
    # no answer shows above its question, in the student's run or the teacher's
    blank = nbformat.read(course / "autograded" / "blank" / lab / f"{lab}.ipynb", as_version=4)
    # the unanswered lab runs top to bottom: only its (raises-exception) check cells fail
    broken = [f"cell {i}: {o.get('ename')}: {o.get('evalue')}" for i, c in enumerate(blank.cells)
              if "raises-exception" not in c.metadata.get("tags", [])
              for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not broken, f"{lab}: cells other than the checks fail before the exercises are answered: {broken}"
    answers = _answers(teacher)
    questions = [c for c in teacher.cells if c.metadata.get("nbgrader", {}).get("grade_id", "").endswith("-question")]
    assert len(answers) == len(questions), f"{lab}: not every check cell recorded its answer"
    leaks = _leaks(blank, answers, skip_answers=False) + _leaks(teacher, answers, skip_answers=True)
    assert not leaks, "\n".join(leaks)


# ---------------------------------------------------------------------------------- multiple-choice keys


def _choice_exercises() -> list[tuple[str, str, dict[str, str]]]:
    """``(exercise, key, {letter: option text})`` of every multiple-choice exercise of the labs (from
    the generator: the options are the question's ``* (X) ...`` items, the key the hidden test's)."""
    out = []
    for cells in _build().labs().values():
        for i, c in enumerate(cells):
            ex = c.metadata.get("ramlab", {}).get("exercise")
            test = cells[i + 2].source if ex else ""
            if "lab.choice(" not in test:
                continue
            key = re.search(r"same_choice\(answer_\w+, \"([A-Z])\"\)", test)
            assert key, f"{ex}: no key in the hidden test"
            options: dict[str, str] = {}
            letter = None
            for line in c.source.splitlines():
                m = re.match(r"\* \(([A-Z])\) (.*)", line)
                if m:
                    letter = m.group(1)
                    options[letter] = m.group(2)
                elif letter and line.startswith("  ") and line.strip():
                    options[letter] += " " + line.strip()
                else:
                    letter = None
            assert key.group(1) in options and len(options) >= 3, f"{ex}: options {sorted(options)}, key {key.group(1)}"
            out.append((ex, key.group(1), {k: " ".join(v.split()) for k, v in options.items()}))
    return out


def test_choice_keys_are_not_guessable() -> None:
    """Neither "pick the longest option" nor "always answer B" scores: at most a third of the keys
    are the strictly longest option, and no letter is the key of more than 40% of the questions."""
    exercises = _choice_exercises()
    assert len(exercises) >= 15
    longest = [ex for ex, key, opts in exercises
               if all(len(opts[key]) > len(text) for letter, text in opts.items() if letter != key)]
    assert 3 * len(longest) <= len(exercises), (
        f"{len(longest)} of {len(exercises)} keys are the longest option: {longest}")
    letters = [key for _, key, _ in exercises]
    top = max(set(letters), key=letters.count)
    assert letters.count(top) <= 0.4 * len(letters), f"{letters.count(top)} of {len(letters)} keys are {top}"


# ---------------------------------------------------------------------------------- hidden tests on wrong answers


def _exercise_cells(ex: str) -> tuple[str, str]:
    """(solution cell, test cell with its hidden part) of exercise ``ex`` in the teacher source."""
    for cells in _build().labs().values():
        for i, c in enumerate(cells):
            if c.metadata.get("ramlab", {}).get("exercise") == ex:
                return cells[i + 1].source, cells[i + 2].source
    raise AssertionError(f"no exercise {ex}")


#: what the notebooks define before each exercise (the names their check cells use)
_PRELUDE = {
    "xbzrle": """
import numpy as np
import ramlab
from ramlab import lab, xbzrle
old = np.zeros(4096, np.uint8)
new = old.copy(); new[5] = 7; new[200:202] = [1, 2]
enc = xbzrle.encode_page(old, new)
""",
    "postcopy": """
import numpy as np
import ramlab
from ramlab import lab
from ramlab.model.postcopy_plan import plan_discards
""",
}


def _grade(ex: str, prelude: str, answer: str | None = None) -> None:
    """Run exercise ``ex``'s test cell (visible and hidden parts) on ``answer`` (code defining the
    student's function; default: the teacher's solution), as nbgrader's autograde does."""
    solution, test = _exercise_cells(ex)
    ns: dict[str, Any] = {}
    exec(_PRELUDE[prelude], ns)  # noqa: S102 - the notebook's own cells
    exec(answer if answer is not None else solution, ns)  # noqa: S102
    exec(test, ns)  # noqa: S102


#: an encoder that checks the room only once, at the end (QEMU checks it before every field)
NAIVE_XBZRLE = '''
def xbzrle_encode(old, new, dlen=4096):
    old, new = bytes(old), bytes(new)
    uleb = lambda v: bytes([v]) if v < 0x80 else bytes([(v & 0x7F) | 0x80, v >> 7])
    out, i, n = bytearray(), 0, len(old)
    while i < n:
        z = i
        while i < n and old[i] == new[i]:
            i += 1
        if i == n:
            break
        out += uleb(i - z)
        s = i
        while i < n and old[i] != new[i]:
            i += 1
        out += uleb(i - s) + new[s:i]
    return None if len(out) > dlen else bytes(out)
'''

#: checks the room before each field, but forgets the check QEMU makes before a trailing zero run
NO_TRAILING_CHECK_XBZRLE = NAIVE_XBZRLE.replace(
    "        out += uleb(i - z)\n",
    "        if len(out) + 2 > dlen:\n            return None\n        out += uleb(i - z)\n",
).replace("        out += uleb(i - s) + new[s:i]\n",
          "        if len(out) + 2 > dlen or len(out) + 1 + (i - s) > dlen:\n            return None\n"
          "        out += uleb(i - s) + new[s:i]\n")

WRAPPERS = {
    "xbzrle-encode": ("xbzrle", '''
def xbzrle_encode(old, new, dlen=4096):
    return xbzrle.encode_page(old, new, dlen=dlen)
'''),
    "xbzrle-decode": ("xbzrle", '''
def xbzrle_decode(old, enc):
    page = np.frombuffer(bytes(old), np.uint8).copy()
    xbzrle.decode_page(enc, page)
    return page.tobytes()
'''),
    "postcopy-modern": ("postcopy", '''
def modern_discards(dirty, host_ratio):
    return [(int(s), int(n)) for s, n in plan_discards(dirty, np.zeros_like(dirty), host_ratio, "modern").ranges]
'''),
}


def test_boundary_cases_are_at_the_overflow_limit() -> None:
    """The hidden boundary pairs of ``xbzrle-encode`` encode to dlen-2 .. dlen+1 bytes, and QEMU's
    rule (ramlab's QEMU-exact encoder) refuses dlen-1 with equal bytes after the last change, but
    accepts dlen when the page ends changed."""
    from ramlab import xbzrle

    ns: dict[str, Any] = {"np": np}
    _build()  # puts notebooks/ on sys.path
    exec(importlib.import_module("labs.l03_xbzrle").BOUNDARY_PAIRS, ns)  # noqa: S102
    g = np.random.default_rng(7)
    for slen, dlen in ((4096, 4096), (256, 64), (256, 100)):
        for trailing in (True, False):
            for k in (-2, -1, 0, 1):
                old, new = ns["_boundary_pair"](g, dlen + k, trailing, slen)
                assert len(xbzrle.encode_page(old, new, dlen=1 << 20)) == dlen + k
                assert bool(old[-1] == new[-1]) == trailing
                got = xbzrle.encode_page(old, new, dlen=dlen)
                fits = dlen + k + 2 <= dlen if trailing else dlen + k <= dlen
                assert (got is not None) == fits, (slen, dlen, trailing, k)
    # the example of the exercise: 1365 isolated changes, 4095 bytes, refused
    alt = np.zeros(4096, np.uint8)
    alt[1:2731:2] = 0x5A
    assert len(xbzrle.encode_page(np.zeros(4096, np.uint8), alt, dlen=1 << 20)) == 4095
    assert xbzrle.encode_page(np.zeros(4096, np.uint8), alt) is None


@pytest.mark.parametrize("wrong", [NAIVE_XBZRLE, NO_TRAILING_CHECK_XBZRLE], ids=["end-only", "no-trailing-check"])
def test_xbzrle_encode_hidden_test_fails_a_wrong_overflow_rule(wrong: str) -> None:
    _grade("xbzrle-encode", "xbzrle")  # the reference passes
    ns: dict[str, Any] = {"np": np}
    exec(wrong, ns)  # noqa: S102
    old, new = np.zeros(4096, np.uint8), np.zeros(4096, np.uint8)
    new[5] = 7
    assert ns["xbzrle_encode"](old, new) == bytes([5, 1, 7]), "the fixture is a working encoder"
    with pytest.raises(AssertionError, match="overflow limit"):
        _grade("xbzrle-encode", "xbzrle", wrong)


@pytest.mark.parametrize("ex", sorted(WRAPPERS))
def test_wrapping_the_package_fails_the_hidden_test(ex: str) -> None:
    """A one-line wrapper around the package function passes the visible check but not the hidden
    test; the reference solution passes it; the package functions are restored afterwards."""
    import ramlab.model.postcopy_plan
    import ramlab.xbzrle

    before = (ramlab.xbzrle.encode_page, ramlab.xbzrle.decode_page, ramlab.model.postcopy_plan.plan_discards)
    prelude, wrapper = WRAPPERS[ex]
    _grade(ex, prelude)
    solution, test = _exercise_cells(ex)
    ns: dict[str, Any] = {}
    exec(_PRELUDE[prelude], ns)  # noqa: S102
    exec(wrapper, ns)  # noqa: S102
    exec(test.split("### BEGIN HIDDEN TESTS")[0], ns)  # noqa: S102 - the visible check passes
    with pytest.raises(AssertionError, match="write it yourself"):
        _grade(ex, prelude, wrapper)
    assert before == (ramlab.xbzrle.encode_page, ramlab.xbzrle.decode_page, ramlab.model.postcopy_plan.plan_discards)
