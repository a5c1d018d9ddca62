"""ramlab.lab: the checker is strict (no substrings, no wrong types, no off-by-one), the exercise types
give hints and record answers, no solution is reachable from the package, and the sample data,
the reference walker and the damaged streams behave."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ramlab
from ramlab import lab
from ramlab.lab import checker
from ramlab.trace import PageClass

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("answer", ["B", "b", " B ", "b\n"])
def test_choice_accepts_the_letter(answer: str) -> None:
    assert lab.same_choice(answer, "B", "ABCD")
    assert lab.as_choice(answer, "ABCD") == "B"


@pytest.mark.parametrize("answer", [
    "Unknown", "unknown ramblock", "Unknown combination of migration flags",  # option text or a part of it
    "B)", "(B)", "B.", "Bee", "AB", "", " ",                                   # not exactly a letter
    "E", "Z",                                                                 # not an option
])
def test_choice_rejects_substrings_and_near_misses(answer: str) -> None:
    assert not lab.same_choice(answer, "B", "ABCD")
    with pytest.raises(lab.AnswerFormError):
        lab.as_choice(answer, "ABCD")


@pytest.mark.parametrize("answer", [1, 2, 0, True, False, 1.0, None, ..., ["B"], {"B"}, b"B", ("B",)])
def test_choice_rejects_wrong_types_with_a_hint(answer: object) -> None:
    assert not lab.same_choice(answer, "B", "ABCD")
    with pytest.raises(lab.AnswerFormError, match="letter"):
        lab.as_choice(answer, "ABCD")


@pytest.mark.parametrize("wrong", ["A", "C", "D"])
def test_choice_rejects_neighbouring_letters(wrong: str) -> None:
    assert not lab.same_choice(wrong, "B", "ABCD")


def test_choices_are_exact_sets() -> None:
    assert lab.same_choices({"a", "C"}, {"A", "C"}, "ABCD")
    assert lab.same_choices(["C", "A"], "AC", "ABCD")
    assert lab.same_choices(set(), "", "ABCD")
    for wrong in ({"A"}, {"A", "C", "D"}, {"B", "D"}, "AC", "A,C", 3, None):
        assert not lab.same_choices(wrong, {"A", "C"}, "ABCD"), wrong
    with pytest.raises(lab.AnswerFormError):
        lab.as_choices("AC", "ABCD")


# ---------------------------------------------------------------------------------- numbers


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_integers_are_exact(n: int) -> None:
    assert lab.same_int(n, n) and lab.same_int(np.int64(n), n)
    assert not lab.same_int(n + 1, n) and not lab.same_int(n - 1, n)


@pytest.mark.parametrize("answer", [True, False, 42.0, "42", "0x2a", b"42", [42], None, ..., np.float64(42)])
def test_integers_reject_wrong_types(answer: object) -> None:
    assert not lab.same_int(answer, 42)
    with pytest.raises(lab.AnswerFormError) as e:
        lab.as_int(answer)
    assert "int" in str(e.value) or "no answer" in str(e.value)


def test_close_needs_a_reason_and_is_relative() -> None:
    assert lab.close(101, 100, rel=0.02, why="timing noise")
    assert not lab.close(103, 100, rel=0.02, why="timing noise")
    assert not lab.close("100", 100, rel=0.02, why="timing noise")
    assert not lab.close(True, 1, rel=0.5, why="timing noise")
    with pytest.raises(ValueError, match="reason"):
        lab.close(100, 100, rel=0.02, why="")


def test_bytes_ranges_and_arrays() -> None:
    assert lab.same_bytes("ff 1f 01 01", bytes.fromhex("ff1f0101"))
    assert lab.same_bytes(np.array([0xFF, 0x1F], np.uint8), b"\xff\x1f")
    for wrong in ("ff1f0102", "ff 1f 01", "zz", 0xFF1F0101, None, [0xFF]):
        assert not lab.same_bytes(wrong, bytes.fromhex("ff1f0101")), wrong
    assert lab.same_ranges([(0, 8), [12, 4]], [(0, 8), (12, 4)])
    for wrong in ([(12, 4), (0, 8)], [(0, 8)], [(0, 8), (12, 4), (20, 4)], "[(0, 8), (12, 4)]", [(0, 8.0), (12, 4)]):
        assert not lab.same_ranges(wrong, [(0, 8), (12, 4)]), wrong

    class Plan:
        ranges = [(0, 8), (12, 4)]

    assert not lab.same_ranges(Plan(), [(0, 8), (12, 4)]), "an object with .ranges is not a list of ranges"
    assert lab.same_array([1, 2, 3], np.array([1, 2, 3]))
    for wrong in ([1, 2], [1, 2, 4], [True, False, True], np.array([1.0, 2.0, 3.0]), "123"):
        assert not lab.same_array(wrong, np.array([1, 2, 3])), wrong


# ---------------------------------------------------------------------------------- exercise types


def test_answer_types_record_and_return_nothing() -> None:
    """They return None: nbgrader would read a number left as a test cell's result as partial credit."""
    assert lab.integer("x", 12) is None
    assert lab.choice("x", "a", "ABC") is None
    assert lab.byte_string("x", "ff") is None
    assert lab.ranges("x", [(0, 4)]) is None
    assert lab.function("x", len) is None


def test_answer_types_hint_on_wrong_forms() -> None:
    with pytest.raises(lab.AnswerFormError, match=r"\[ex\] expected one letter"):
        lab.choice("ex", 2, "AB")
    with pytest.raises(lab.AnswerFormError, match="no answer yet"):
        lab.integer("ex", ...)
    with pytest.raises(lab.AnswerFormError, match="below"):
        lab.integer("ex", -1, minimum=0)
    with pytest.raises(lab.AnswerFormError, match="function"):
        lab.function("ex", 42)
    with pytest.raises(lab.AnswerFormError, match="argument"):
        lab.function("ex", lambda: 0, 1)


def test_fresh_compare_reports_the_first_difference() -> None:
    lab.fresh.compare(lambda x: x * 2, lambda x: x + x, range(5), name="double")
    with pytest.raises(AssertionError, match="double: wrong on a fresh input 3"):
        lab.fresh.compare(lambda x: 6 if x == 3 else 2 * x, lambda x: 2 * x + (x == 3), range(5), name="double")
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        lab.fresh.compare(lambda x: 1 / x, lambda x: 0, [0], name="inv")
    with pytest.raises(AssertionError, match="no test case"):
        lab.fresh.compare(len, len, [], name="empty")


@pytest.mark.parametrize("wrong", [2.0, np.float64(2.0), True, "2", None])
def test_fresh_compare_is_type_strict_for_ints(wrong: object) -> None:
    """A float (or bool, str) answer where an int is expected fails, although ``2.0 == 2``."""
    with pytest.raises(AssertionError, match="wrong on a fresh input"):
        lab.fresh.compare(lambda x: wrong, lambda x: 2, [0], name="min_downtime_ms")
    lab.fresh.compare(lambda x: np.int64(2), lambda x: 2, [0], name="numpy ints are ints")
    lab.fresh.compare(lambda x: 2, lambda x: np.int64(2), [0], name="and the other way")


def test_fresh_compare_says_the_type() -> None:
    with pytest.raises(AssertionError, match="got the float 3.0, expected the int 3"):
        lab.fresh.compare(lambda x: x + 1.0, lambda x: x + 1, [2], name="inc")


def test_fresh_compare_is_type_strict_inside_containers() -> None:
    ref = lambda w: (w & ~0xFFF, {"ZERO"})  # noqa: E731 - parse_header_word's shape
    lab.fresh.compare(ref, ref, [0x2002], name="parse_header_word")
    for wrong in (lambda w: (float(w & ~0xFFF), {"ZERO"}), lambda w: [w & ~0xFFF], lambda w: (w & ~0xFFF, {"PAGE"})):
        with pytest.raises(AssertionError, match="wrong on a fresh input"):
            lab.fresh.compare(wrong, ref, [0x2002], name="parse_header_word")
    with pytest.raises(AssertionError):
        lab.fresh.compare(lambda x: {1.0}, lambda x: {1}, [0], name="a set of ints")
    with pytest.raises(AssertionError):
        lab.fresh.compare(lambda x: np.array([1.0, 2.0]), lambda x: np.array([1, 2]), [0], name="an int array")
    lab.fresh.compare(lambda x: None, lambda x: None, [0], name="None")
    with pytest.raises(AssertionError):
        lab.fresh.compare(lambda x: 0, lambda x: None, [0], name="None is not 0")


def test_fresh_compare_forbids_package_functions() -> None:
    """A function that wraps a forbidden package function fails with a clear message; the
    reference still runs with it, and everything is restored afterwards."""
    import ramlab.xbzrle
    from ramlab.xbzrle import encode_page as imported_by_name

    original = ramlab.xbzrle.encode_page
    namespace = {"encode_page": imported_by_name, "xbzrle": ramlab.xbzrle}
    wrappers = [eval("lambda o, n: encode_page(o, n)", namespace),  # noqa: S307 - a notebook's globals
                eval("lambda o, n: xbzrle.encode_page(o, n)", namespace),  # noqa: S307
                eval("lambda o, n: __import__('ramlab.xbzrle').xbzrle.codec.encode_page(o, n)", namespace)]  # noqa: S307
    cases = [(bytes(8), bytes(7) + b"\x01")]
    for wrapper in wrappers:
        with pytest.raises(AssertionError, match="write it yourself"):
            lab.fresh.compare(wrapper, ramlab.xbzrle.encode_page, cases, star=True, name="xbzrle_encode",
                              forbid=["ramlab.xbzrle.encode_page"])
    assert ramlab.xbzrle.encode_page is original and ramlab.xbzrle.codec.encode_page is original
    assert namespace["encode_page"] is original
    lab.fresh.compare(lambda o, n: b"\x07\x01\x01", ramlab.xbzrle.encode_page, cases, star=True, name="own code",
                      forbid=["ramlab.xbzrle.encode_page"])


def test_fresh_inputs() -> None:
    g = lab.fresh.rng(3)
    for _ in range(20):
        b = lab.fresh.bitmap(g, 64)
        assert b.dtype == bool and b.shape == (64,)
    for kind in ("same", "sparse", "runs", "dense", "random", "edges"):
        old, new = lab.fresh.page_pair(g, kind=kind)
        assert old.shape == new.shape == (4096,) and (kind != "same" or (old == new).all())
    r = lab.fresh.simulation(g)
    assert r.trace.n_passes >= 2
    assert "plain" not in lab.fresh.other_traces("plain")


# ---------------------------------------------------------------------------------- no solutions shipped


def test_no_solution_api_in_the_package() -> None:
    for name in ("solve", "reveal", "check", "ask", "EXERCISES", "ref_discards", "geometric_passes",
                 "throttle_after", "compress_bound", "_ref_xbzrle"):
        assert not hasattr(lab, name), f"ramlab.lab.{name} would give answers away"
    for mod in pkgutil.walk_packages(lab.__path__, "ramlab.lab."):
        src = inspect.getsource(importlib.import_module(mod.name))
        assert "reveal" not in src and "def solve" not in src, mod.name


def test_the_lab_package_is_split_by_job() -> None:
    files = {p.name: len(p.read_text().splitlines()) for p in (REPO / "ramlab" / "lab").glob("*.py")}
    assert {"checker.py", "answers.py", "fresh.py", "samples.py", "display.py", "damage.py"} <= set(files)
    assert max(files.values()) < 400, files


# ---------------------------------------------------------------------------------- data, walker, damage


@pytest.fixture(scope="module")
def plain() -> ramlab.Migration:
    return lab.migration("plain")


def test_ref_walk_agrees_with_decoder(plain: ramlab.Migration) -> None:
    w = lab.ref_walk(lab.stream_bytes("plain"))
    assert w.cut is None
    kinds = [k for _, k, _, _ in w.records]
    qemu = lab.meta("plain")["query_migrate_final"]["ram"]
    assert kinds.count(0x02) == plain.records["zero"] == qemu["duplicate"]
    assert kinds.count(0x08) == plain.records["page"] == qemu["normal"]
    assert list(w.blocks) == [b.name for b in plain.blocks]
    assert w.records[0][0] == next(e.offset for e in plain.events if type(e).__name__ == "RamPages")
    passes = np.array(w.passes())
    assert int(((passes == 0) & (np.array(kinds) == 0x02)).sum()) == int(plain.trace.class_counts()[0, PageClass.ZERO])


@pytest.mark.parametrize("kind", lab.DAMAGES)
def test_damaged_streams(kind: str) -> None:
    data = lab.damaged(kind)
    m = ramlab.open(data)
    assert m.error is not None
    if kind == "truncated":
        assert len(data) == lab.TRUNCATE_AT
        assert m.error.offset == lab.ref_walk(data).cut
    elif kind == "flipped":
        assert m.error.offset == lab.flipped_offset()
        assert "Unknown combination" in str(m.error)
    elif kind == "renamed":
        assert "Illegal RAM offset" in str(m.error)
    else:
        assert "Unknown ramblock" in str(m.error)
    with pytest.raises(ValueError):
        lab.damaged("nope")


def test_sample_falls_back_to_shared(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RAMLAB_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    shared = lab.shared_captures()
    if not (shared / "precopy-plain").is_dir():
        pytest.skip("no shared captures here")
    assert lab.sample("plain") == shared / "precopy-plain"
    assert lab.sample("postcopy") == shared / "postcopy-faults"
    with pytest.raises(ramlab.RamlabError):
        lab.sample("no-such-capture")


def test_display_helpers(plain: ramlab.Migration) -> None:
    data = lab.stream_bytes("plain")
    t = str(lab.events_table(plain.events, data, n=5))
    assert "51 45 56 4d" in t and "FileHeader" in t
    assert "RamPages" in str(lab.events_table(plain.events, data, around=lab.ref_walk(data).records[0][0], n=3))
    assert "<b" in str(lab.hexdump(data, 0, 32, mark=(0, 4)))
    assert all(lab.describe_event(e) for e in plain.events[:12])


def test_trace_of_a_sample() -> None:
    t = lab.trace("xbzrle")
    assert t.n_passes >= 2 and (t.classes == PageClass.XBZRLE).any()


def test_checker_module_has_no_answers() -> None:
    src = inspect.getsource(checker)
    assert "1589" not in src and "4146" not in src
