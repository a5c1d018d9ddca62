"""Tests of the Trace data model (ramlab.trace)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from ramlab.trace import (
    CLASS_NAMES,
    N_CLASSES,
    PASS_KINDS,
    BlockInfo,
    PageClass,
    Trace,
    synthetic_trace,
)


def small_trace() -> Trace:
    blocks = (BlockInfo("pc.ram", 6 * 4096, 4096, 0), BlockInfo("vga.vram", 2 * 4096 + 100, 4096, 6))
    t = Trace.allocate(blocks, 3, source="capture", pass_kind=["bulk", "precopy", "complete"],
                       meta={"name": "small", "bandwidth": 1e6, "downtime_limit": 0.3})
    t.classes[0] = PageClass.ZERO
    t.classes[0, 2] = PageClass.NORMAL
    t.classes[1, [1, 7]] = [PageClass.XBZRLE, PageClass.XBZRLE_OVERFLOW]
    t.classes[2, 8] = PageClass.REQUESTED
    t.wire_bytes[t.classes == PageClass.ZERO] = 9
    t.wire_bytes[t.classes == PageClass.NORMAL] = 4104
    t.wire_bytes[1, 1] = 50
    t.wire_bytes[1, 7] = 4104
    t.wire_bytes[2, 8] = 4104
    t.counters = {"duplicate": np.array([8, 0, 0]), "remaining": np.array([2, 1, 0])}
    t.events = [{"pass": 2, "kind": "request", "block": "vga.vram", "ranges": [[8192, 4096]]}]
    return t


def test_page_class_codes():
    assert [int(c) for c in PageClass] == list(range(10))
    assert N_CLASSES == 10 and CLASS_NAMES[3] == "XBZRLE"
    assert PASS_KINDS == ("precopy", "bulk", "complete", "postcopy", "merged")  # codes saved in .npz: append only


def test_shape_and_block_of():
    t = small_trace().validate()
    assert (t.n_passes, t.n_pages) == (3, 9)  # partial last page counts
    b, i = t.block_of(0)
    assert (b.name, i) == ("pc.ram", 0)
    b, i = t.block_of(5)
    assert (b.name, i) == ("pc.ram", 5)
    b, i = t.block_of(8)
    assert (b.name, i) == ("vga.vram", 2)
    with pytest.raises(IndexError):
        t.block_of(9)
    assert t.page_index("vga.vram", 8192 + 5) == 8


def test_class_counts_and_bytes():
    t = small_trace()
    counts = t.class_counts()
    assert counts.shape == (3, N_CLASSES)
    naive = np.zeros((3, N_CLASSES), int)
    for p in range(3):
        for g in range(t.n_pages):
            naive[p, t.classes[p, g]] += 1
    np.testing.assert_array_equal(counts, naive)
    assert counts.sum(axis=1).tolist() == [9, 9, 9]
    assert t.bytes_per_pass().tolist() == [8 * 9 + 4104, 50 + 4104, 4104]
    assert t.events_of_pass(2)[0]["kind"] == "request"


def test_class_counts_large_is_vectorised():
    t = synthetic_trace(n_pages=1 << 16, n_passes=6)
    counts = t.class_counts()
    for p in range(6):
        np.testing.assert_array_equal(counts[p], np.bincount(t.classes[p], minlength=N_CLASSES))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: setattr(t, "wire_bytes", t.wire_bytes.astype(np.int64)), "wire_bytes has dtype"),
        (lambda t: setattr(t, "classes", t.classes[:, :5]), "wire_bytes has shape"),
        (lambda t: setattr(t, "dirty", np.zeros((3, 9), np.uint8)), "dirty has dtype"),
        (lambda t: setattr(t, "dirty", np.zeros((2, 9), bool)), "dirty has shape"),
        (lambda t: t.counters.update(normal=np.zeros(4)), "counter 'normal'"),
        (lambda t: setattr(t, "pass_kind", ["bulk"]), "pass_kind has 1"),
        (lambda t: setattr(t, "pass_kind", ["bulk", "precopy", "oops"]), "unknown pass kinds"),
        (lambda t: setattr(t, "source", "guess"), "source must be"),
        (lambda t: t.classes.__setitem__((0, 0), 10), "classes holds code 10"),
        (lambda t: setattr(t, "blocks", t.blocks[:1]), "blocks cover 6 pages"),
        (
            lambda t: setattr(t, "blocks", (t.blocks[0], BlockInfo("vga.vram", 8292, 4096, 7))),
            "starts at page 7",
        ),
    ],
)
def test_validate_rejects(mutate, message):
    t = small_trace()
    mutate(t)
    with pytest.raises(ValueError, match=message):
        t.validate()


def test_pass_kind_as_codes():
    t = small_trace()
    t.pass_kind = np.array([1, 0, 2], np.uint8)
    assert t.validate().pass_kinds == ["bulk", "precopy", "complete"]


@pytest.mark.parametrize("as_codes", [False, True])
def test_save_load_round_trip(tmp_path, as_codes):
    t = small_trace()
    t.dirty = np.zeros(t.classes.shape, bool)
    t.dirty[1, [1, 7]] = True
    t.meta["np_value"] = np.int64(7)  # numpy scalars become JSON numbers
    t.error = "truncated at byte 123"
    if as_codes:
        t.pass_kind = np.array([1, 0, 2], np.uint8)
    t.page_bytes = lambda p, g: (None, None)
    path = tmp_path / "trace.npz"
    t.save(path)
    u = Trace.load(path).validate()
    assert u.blocks == t.blocks and u.target_page_size == t.target_page_size
    np.testing.assert_array_equal(u.classes, t.classes)
    np.testing.assert_array_equal(u.wire_bytes, t.wire_bytes)
    np.testing.assert_array_equal(u.dirty, t.dirty)
    assert u.classes.dtype == np.uint8 and u.wire_bytes.dtype == np.uint32 and u.dirty.dtype == bool
    assert sorted(u.counters) == sorted(t.counters)
    for k in t.counters:
        np.testing.assert_array_equal(u.counters[k], t.counters[k])
    assert u.pass_kinds == t.pass_kinds
    assert type(u.pass_kind) is type(t.pass_kind)
    assert u.meta["np_value"] == 7 and u.meta["name"] == "small"
    assert u.events == t.events
    assert u.error == t.error and u.source == "capture"
    assert u.page_bytes is None


def test_save_load_without_dirty_to_file_object():
    t = small_trace()
    buf = io.BytesIO()
    t.save(buf)
    buf.seek(0)
    u = Trace.load(buf)
    assert u.dirty is None and u.error is None


def test_repr_html():
    t = small_trace()
    h = t._repr_html_()
    assert "small" in h and "XBZRLE_OVERFLOW" in h and "vga.vram" in h
    assert "small" in repr(t)


def test_from_classes():
    t = Trace.from_classes(np.array([[0, 1, 2], [3, 3, 0]], np.uint8)).validate()
    assert (t.n_passes, t.n_pages) == (2, 3)
    assert t.class_counts()[1, 3] == 2


def test_synthetic_trace():
    t = synthetic_trace(n_pages=5000, n_passes=6, seed=3).validate()
    assert t.meta["synthetic"] and "SYNTHETIC" in t.meta["name"]
    assert t.pass_kinds[0] == "bulk" and t.pass_kinds[-1] == "complete"
    assert (t.classes[0] != PageClass.NOT_SENT).all()
    assert (t.wire_bytes[t.classes == PageClass.NOT_SENT] == 0).all()
    on_wire = (t.classes != PageClass.NOT_SENT) & (t.classes != PageClass.XBZRLE_UNCHANGED)
    assert (t.wire_bytes[on_wire] > 0).all()
    assert (t.wire_bytes[t.classes == PageClass.XBZRLE_UNCHANGED] == 0).all()  # nothing sent
    # pages sent in a later pass were dirty at its start
    sent_later = t.classes[1:] != PageClass.NOT_SENT
    assert (t.dirty[1:][sent_later]).all()
    np.testing.assert_array_equal(t.counters["transferred"], t.bytes_per_pass())
    old, new = t.page_bytes(2, 10)
    assert old.shape == new.shape == (4096,) and (old != new).any()
    again = synthetic_trace(n_pages=5000, n_passes=6, seed=3)
    np.testing.assert_array_equal(again.classes, t.classes)
