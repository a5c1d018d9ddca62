"""ramlab.lab: every exercise accepts a right answer (computed here by another route where there is one),
refuses wrong ones with a hint that does not give the answer away, and explains only when right or asked."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ramlab
from ramlab import lab
from ramlab.trace import PageClass


@pytest.fixture(scope="module")
def plain() -> ramlab.Migration:
    return ramlab.open(lab.sample("plain"))


def _first_pages_offset(m: ramlab.Migration) -> int:
    return next(e.offset for e in m.events if type(e).__name__ == "RamPages")


def _record_bytes() -> int:
    from ramlab.wire.encoder import page_record, zero_record

    recs = page_record("pc.ram", 0, True, bytes(4096)) + b"".join(
        zero_record("pc.ram", 0x1000 * (i + 1), False) for i in range(3))
    return len(recs) + 8  # + EOS


def _plan(alg: str) -> Any:
    from ramlab.model.postcopy_plan import plan_discards

    return plan_discards(np.array(lab.DISCARD_DIRTY, bool), np.array(lab.DISCARD_UNSENT, bool), 4, alg)


def _xbzrle_example_len() -> int:
    from ramlab.xbzrle import encode_page

    return len(encode_page(*lab.example_xbzrle_pages()))


#: exercise id -> (right answers (callables are evaluated lazily), wrong answers)
CASES: dict[str, tuple[list[Any], list[Any]]] = {
    "tour.zero-records": ([lambda m: m.records["zero"], lambda m: str(m.records["zero"])],
                          [lambda m: m.records["page"], 1, "lots"]),
    "tour.bulk-zero": ([lambda m: int(m.trace.class_counts()[0, PageClass.ZERO])],
                       [lambda m: m.records["zero"], lambda m: int(m.trace.class_counts()[0, PageClass.NORMAL])]),
    "format.first-record": ([_first_pages_offset, lambda m: hex(_first_pages_offset(m))], [26, 0, "x"]),
    "format.header-word": ([(0x1000, {"PAGE", "CONTINUE"}), ("0x1000", 0x28), (4096, "PAGE | CONTINUE"),
                            (4096, ["RAM_SAVE_FLAG_PAGE", "RAM_SAVE_FLAG_CONTINUE"])],
                           [(0x1028, {"PAGE", "CONTINUE"}), (0x1000, {"PAGE"}), 0x1028, "PAGE"]),
    "format.record-bytes": ([lambda m: _record_bytes(), 4146], [4111 + 27, 4096 + 3 + 8, None]),
    "convergence.threshold": ([2457, 2457.6, "2,457"], [2400, 614, 9.6]),
    "convergence.passes": ([3], [2, 4, "many"]),
    "convergence.throttle": ([6], [2, 3, 4]),
    "xbzrle.last-byte": (["ff1f0101", bytes.fromhex("ff1f0101"), "ff 1f 01 01",
                          lambda m: __import__("ramlab.xbzrle").xbzrle.encode_page(bytes(4096), bytes(4095) + b"\1")],
                         ["ff0f0101", "7f1f0101", "ff1f0101ff", 4, "zz"]),
    "xbzrle.alternating": ([-1, "overflow", "-1"], [0, 4096, 6141]),
    "xbzrle.identical": ([0, b""], [4096, -1]),
    "xbzrle.example": ([10, lambda m: _xbzrle_example_len()], [8, 11, 4096]),
    "xbzrle.cache-age": ([7], [6, 8, 5]),
    "compress.bound": ([4110, "4110"], [4096, 4104, 4113]),
    "compress.ff-page": ([lambda m: len(zlib.compress(b"\xff" * 4096, 1))], [4096, 9, 0]),
    "multifd.main-zero": ([lambda m: ramlab.open(lab.sample("multifd-zstd")).records["zero"]],
                          [lambda m: lab.meta("multifd-zstd")["query_migrate_final"]["ram"]["normal"], 0]),
    "postcopy.seed-ranges": ([lambda m: _plan("seed").ranges, lambda m: _plan("seed"),
                              [[4, 4], [0, 4], [12, 4], [0, 8], [12, 4]]],
                             [lambda m: _plan("modern").ranges, [(0, 4), (4, 4), (12, 4), (0, 8), (12, 4)],
                              [(0, 8), (12, 4)][:1], "ranges", [(2, 1)]]),
    "postcopy.modern-ranges": ([lambda m: _plan("modern").ranges, ((0, 8), (12, 4))],
                               [lambda m: _plan("seed").ranges, [(12, 4), (0, 8)], [(2, 1), (5, 3), (15, 1)]]),
    "postcopy.requests": ([lambda m: len(ramlab.open(lab.sample("postcopy")).requests)], [0, 100, 87]),
    "postcopy.huge-request": ([lambda m: ramlab.open(lab.sample("postcopy-hugepages")).requests[0].length,
                               "0x200000", 2 * 2**20], [4096, 2**30]),
    "debug.truncated-offset": ([lambda m: ramlab.open(lab.damaged("truncated")).error.offset],
                               [lab.TRUNCATE_AT, 0, lambda m: ramlab.open(lab.damaged("truncated")).error.offset + 8]),
    "debug.flipped": (["B", "b", "Unknown combination of migration flags", 1], ["A", "C", "D", "E", "nonsense"]),
    "debug.renamed": (["A", "illegal ram offset"], ["B", "C", "D"]),
    "debug.unknown-block": (["C", "Unknown ramblock"], ["A", "B", "D"]),
}


def _value(a: Any, m: ramlab.Migration) -> Any:
    return a(m) if callable(a) else a


def test_every_exercise_is_tested() -> None:
    assert set(CASES) == set(lab.EXERCISES)


def test_notebooks_only_check_registered_exercises() -> None:
    src = (Path(__file__).resolve().parents[1] / "notebooks" / "build.py").read_text()
    used = set(re.findall(r'exercises\(([^)]*)\)', src))
    ids = {i for group in used for i in re.findall(r'"([a-z0-9.-]+)"', group)}
    assert ids and ids <= set(lab.EXERCISES)
    assert ids == set(lab.EXERCISES), f"exercises no notebook uses: {set(lab.EXERCISES) - ids}"
    for ex in lab.EXERCISES.values():
        assert ex.notebook in src


@pytest.mark.parametrize("exercise_id", sorted(CASES))
def test_right_answers(exercise_id: str, plain: ramlab.Migration) -> None:
    for a in CASES[exercise_id][0]:
        r = lab.check(exercise_id, _value(a, plain))
        assert r.correct, f"{exercise_id}: {a!r} refused: {r}"
        assert bool(r) and r.explanation and r.hint is None
        assert "Right" in r._repr_html_()


def _revealing(expected: Any) -> list[str]:
    """Strings that would give the expected answer away in a hint."""
    if isinstance(expected, bytes):
        return [expected.hex(), expected.hex(" ")]
    if isinstance(expected, (int, np.integer)) and abs(int(expected)) >= 100:
        e = int(expected)
        return [str(e), f"{e:,}"]
    if isinstance(expected, list) and expected and isinstance(expected[0], tuple):
        return [str(expected), str(expected)[1:-1]]
    return []


@pytest.mark.parametrize("exercise_id", sorted(CASES))
def test_wrong_answers(exercise_id: str, plain: ramlab.Migration) -> None:
    ex = lab.ask(exercise_id)
    expected = ex.solve()
    for a in CASES[exercise_id][1]:
        v = _value(a, plain)
        r = lab.check(exercise_id, v)
        assert not r.correct, f"{exercise_id}: wrong answer {v!r} accepted"
        assert r.hint, f"{exercise_id}: no hint for {v!r}"
        assert r.explanation is None, f"{exercise_id}: explanation (answer) shown for a wrong answer"
        for s in _revealing(expected):
            assert s not in r.hint and s not in r.message, f"{exercise_id}: hint reveals the answer: {r.hint}"
        revealed = lab.check(exercise_id, v, reveal=True)
        assert not revealed.correct and revealed.explanation


def test_no_answer_yet() -> None:
    r = lab.check("tour.zero-records", None)
    assert not r and r.message == "No answer yet." and r.explanation is None
    assert lab.check("tour.zero-records", ..., reveal=True).explanation


def test_unknown_exercise() -> None:
    with pytest.raises(KeyError, match="known"):
        lab.check("no.such", 1)


def test_questions_render() -> None:
    for ex in lab.exercises():
        assert ex.id in ex._repr_markdown_() and ex.question
    assert {e.id for e in lab.exercises("03-xbzrle")} >= {"xbzrle.last-byte", "xbzrle.cache-age"}


# ---------------------------------------------------------------------------------- references


def test_ref_walk_agrees_with_decoder(plain: ramlab.Migration) -> None:
    w = lab.ref_walk(lab.stream_bytes("plain"))
    assert w.cut is None
    kinds = [k for _, k, _, _ in w.records]
    assert kinds.count(0x02) == plain.records["zero"]
    assert kinds.count(0x08) == plain.records["page"]
    assert list(w.blocks) == [b.name for b in plain.blocks]
    assert w.records[0][0] == _first_pages_offset(plain)
    passes = np.array(w.passes())
    counts = plain.trace.class_counts()
    assert passes.max() + 1 <= plain.trace.n_passes
    assert int(((passes == 0) & (np.array(kinds) == 0x02)).sum()) == int(counts[0, PageClass.ZERO])


@pytest.mark.parametrize("kind", ["truncated", "flipped", "renamed", "unknown-block"])
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


def test_ref_discards_match_plan_discards() -> None:
    from ramlab.model.postcopy_plan import plan_discards

    rng = np.random.default_rng(7)
    for _ in range(300):
        r = int(rng.choice([1, 2, 4, 8]))
        n = r * int(rng.integers(1, 9))
        dirty = rng.random(n) < rng.random()
        unsent = dirty & (rng.random(n) < rng.random())  # a never-sent page is always dirty
        for alg in ("seed", "modern"):
            ref = lab.ref_discards(dirty.tolist(), unsent.tolist(), r, alg)
            assert plan_discards(dirty, unsent, r, alg).ranges == ref, (alg, r, dirty, unsent)


def test_reference_models() -> None:
    from ramlab.xbzrle import encode_page

    assert lab.compress_bound(4096) == 4110
    assert lab.throttle_after(1) == 0 and lab.throttle_after(2) == 20 and lab.throttle_after(4) == 30
    assert lab.geometric_passes(1000, 10, 20, 1) is None
    assert lab.geometric_passes(2**30, 100 * 2**20, 20 * 2**20, 0.3) == 3
    rng = np.random.default_rng(3)
    for density in (0.001, 0.01, 0.1, 0.4):
        old = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        new = bytearray(old)
        for i in rng.choice(4096, int(4096 * density), replace=False):
            new[i] ^= 0x5A
        ref = lab._ref_xbzrle(old, bytes(new))
        got = encode_page(old, bytes(new))
        assert (ref == -1 and got is None) or ref == got


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
    around = str(lab.events_table(plain.events, data, around=_first_pages_offset(plain), n=3))
    assert "RamPages" in around
    assert "<b" in str(lab.hexdump(data, 0, 32, mark=(0, 4)))
    for e in plain.events[:12]:
        assert lab.describe_event(e)

