"""Unit tests (no browser) of the StreamInspector and PostcopyDiscardView (and its data preparation,
:mod:`ramlab.plots.postcopy`)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ramlab
from ramlab.data import data_path
from ramlab.io import read_stream
from ramlab.model.postcopy_plan import plan_discards
from ramlab.plots.postcopy import (
    DUP_COLOR,
    command_rows,
    grid_image,
    host_grid,
    host_page_rects,
    plan_view_steps,
    range_segments,
    state_codes,
)
from ramlab.widgets import PostcopyDiscardView, StreamInspector
from ramlab.widgets.inspector import (
    RecordTable,
    decode_ram_flags,
    field_layout,
    filter_rows,
    infer_page_size,
    row_containing,
)
from ramlab.wire.commands import decode_discard_payload, encode_discard_payload


@pytest.fixture(scope="module")
def xbzrle():
    return ramlab.open(data_path("xbzrle"))


@pytest.fixture(scope="module")
def truncated():
    raw = read_stream(data_path("plain") / "stream.bin.zst")
    return ramlab.open(bytes(raw[: len(raw) * 2 // 3]))


# ----------------------------------------------------------------------------- inspector


@pytest.mark.parametrize("name", ["plain", "xbzrle", "compress", "postcopy-hugepages", "multifd-zstd"])
def test_field_layout_tiles_every_record_of_real_streams(name):
    m = ramlab.open(data_path(name))
    for row in m.records_table():
        if row["offset"] is None:
            continue
        fields = field_layout(row, m.bytes_at(row["offset"], row["length"]), m.page_size)
        assert sum(f.length for f in fields) == row["length"], row
        pos = row["offset"]
        for f in fields:  # contiguous, in order, no gaps
            assert f.offset == pos
            pos = f.end
        assert not any(f.name == "unexplained bytes" for f in fields), (row, fields)


def _first(m, kind, **where):
    for row in m.records_table():
        if row["kind"] == kind and all(row.get(k) == v if not callable(v) else v(row.get(k))
                                       for k, v in where.items()):
            return row
    raise AssertionError(f"no {kind} row")


def _layout(m, row):
    return field_layout(row, m.bytes_at(row["offset"], row["length"]), m.page_size)


def test_layout_named_page_and_continue_zero(xbzrle):
    m = xbzrle
    page = _first(m, "PAGE", detail="named block")
    f = _layout(m, page)
    assert [x.name for x in f] == ["header word", "block name length", "block name", "page data"]
    assert [x.length for x in f] == [8, 1, 6, 4096]
    assert f[2].value == "'pc.ram'"
    assert "PAGE" in f[0].meaning and "CONTINUE" not in f[0].meaning
    zero = _first(m, "ZERO", detail=lambda d: d.startswith("CONTINUE"))
    f = _layout(m, zero)
    assert [(x.name, x.length) for x in f] == [("header word", 8), ("fill byte", 1)]
    assert f[0].meaning.endswith("ZERO|CONTINUE")
    assert f[1].value == "0x00"
    assert f[0].meaning.startswith(f"offset 0x{zero['page_offset']:x}")


def test_layout_xbzrle_record(xbzrle):
    row = _first(xbzrle, "XBZRLE")
    f = _layout(xbzrle, row)
    names = [x.name for x in f]
    assert names[0] == "header word" and names[-3:] == ["XBZRLE encoding flag", "XBZRLE length", "XBZRLE data"]
    flag, n, data = f[-3:]
    assert flag.value == "0x01" and (flag.length, n.length) == (1, 2)
    assert int(n.value) == data.length == int(row["detail"].split()[0])
    assert "XBZRLE" in f[0].meaning and "CONTINUE" in f[0].meaning


def test_layout_compress_command_section_footer_mem_size():
    m = ramlab.open(data_path("compress"))
    f = _layout(m, _first(m, "COMPRESS_PAGE"))
    assert f[-2].name == "compressed length" and int(f[-2].value) == f[-1].length
    assert "COMPRESS_PAGE" in f[0].meaning
    f = _layout(m, _first(m, "SECTION_START"))
    assert [x.name for x in f] == ["section type", "section id", "idstr length", "idstr", "instance id", "version id"]
    assert f[3].value == "'ram'" and f[5].value == "4"
    assert [x.length for x in _layout(m, _first(m, "SECTION_PART"))] == [1, 4]
    assert [x.name for x in _layout(m, _first(m, "FOOTER"))] == ["footer marker", "section id"]
    assert _layout(m, _first(m, "RamEos"))[0].meaning.endswith("EOS")

    mh = ramlab.open(data_path("postcopy-hugepages"))
    f = _layout(mh, _first(mh, "MEM_SIZE"))
    assert ("block 0 page size", "0x200000") in [(x.name, x.value) for x in f]
    f = _layout(mh, _first(mh, "CMD_POSTCOPY_RAM_DISCARD"))
    names = [x.name for x in f]
    assert names[:7] == ["command marker", "cmd", "payload length", "discard version", "block name length",
                         "block name", "nil"]
    starts = [int(x.value, 16) for x in f if x.name.endswith("start")]
    lengths = [int(x.value, 16) for x in f if x.name.endswith("length") and x.name.startswith("range")]
    assert list(zip(starts, lengths)) == [(s, n) for _, s, n in mh.discards]
    f = _layout(mh, _first(mh, "CMD_POSTCOPY_ADVISE"))
    assert (f[-2].value, f[-1].value) == ("0x201000", "0x1000")


def test_decode_ram_flags():
    assert decode_ram_flags(0x08) == ["PAGE"]
    assert decode_ram_flags(0x22) == ["ZERO", "CONTINUE"]
    assert decode_ram_flags(0x60) == ["CONTINUE", "XBZRLE"]
    assert decode_ram_flags(0x120) == ["CONTINUE", "COMPRESS_PAGE"]
    assert decode_ram_flags(0x204) == ["MEM_SIZE", "MULTIFD_FLUSH"]
    assert decode_ram_flags(0x800) == ["0x800"]


def test_filtering_on_a_real_stream(xbzrle):
    rows = xbzrle.records_table()
    t = RecordTable(rows)
    assert infer_page_size(t) == 4096
    x = filter_rows(t, kind="XBZRLE")
    assert len(x) == xbzrle.records["xbzrle"] and all(rows[i]["kind"] == "XBZRLE" for i in x)
    both = filter_rows(t, kind={"XBZRLE", "ZERO"}, block="pc.ram")
    assert len(both) == len(x) + sum(r["kind"] == "ZERO" and r["block"] == "pc.ram" for r in rows)
    sec = filter_rows(t, section="timer (FULL 0)")
    assert {rows[i]["kind"] for i in sec} == {"SECTION_FULL", "DEVICE_STATE", "FOOTER"}
    txt = filter_rows(t, text="TIMER")  # case-insensitive
    assert set(sec.tolist()) <= set(txt.tolist())
    target = rows[1234]
    at = filter_rows(t, text=f"@0x{target['offset'] + 3:x}")
    assert at.tolist() == [1234]
    assert row_containing(t, target["offset"]) == 1234
    assert filter_rows(t, kind="nothing-like-this").size == 0


def test_filtering_100k_rows_is_fast(truncated):
    import time

    rows = truncated.records_table() * 12  # > 100k rows
    ins = StreamInspector(rows, truncated.bytes_at, error=str(truncated.error))
    assert len(ins.table) > 100_000
    t0 = time.perf_counter()
    ins.set_filter(kind="PAGE", block="pc.ram")
    ins.show_page(ins.n_pages - 1)
    dt = time.perf_counter() - t0
    assert dt < 0.25, dt
    assert len(ins.list.options) <= ins.window  # only a window of rows is pushed


def test_inspector_damaged_capture_and_callbacks(truncated):
    ins = truncated.inspector()
    assert ins.error and "middle of an item" in ins.error
    assert ins.error_row == len(ins.table) - 1 and ins.selected == ins.error_row
    assert "decoding stopped" in ins.error_banner.value
    # a user picks the first FOOTER from the kind drop-down, then a row of the list
    ins.kind_filter.value = "FOOTER"
    assert all(ins.table.rows[i]["kind"] == "FOOTER" for i in ins.matches)
    ins.list.value = ins.list.options[1][1]
    assert ins.selected == int(ins.matches[1])
    assert [f.name for f in ins.fields] == ["footer marker", "section id"]
    assert "footer marker" in ins.field_table.value
    # the button brings the error back, clearing the filter that hides it
    ins.jump_btn.click()
    assert ins.selected == ins.error_row and ins.kind_filter.value == "(all)"
    assert "ERROR" in ins.hex.value and "outline:2px solid #d00" in ins.hex.value
    # paging and the offset box
    ins.show_page(0)
    assert ins.list.options[0][1] == 0 and not ins.next_btn.disabled and ins.prev_btn.disabled
    ins.text_filter.value = "@0x105"
    assert ins.selected == row_containing(ins.table, 0x105)


# ----------------------------------------------------------------------------- postcopy view

# hand-checked example, host pages of 8 target pages:
#   hp0 = pages 0-7:   page 3 re-dirtied                 -> partly dirty (dirty pass, sent: first page sent)
#   hp1 = pages 8-15:  page 13 never sent                -> partly sent (unsent pass)
#   hp2 = pages 16-23: pages 17, 18 re-dirtied           -> partly dirty (dirty pass)
#   hp3 = pages 24-31: clean                             -> nothing
#   hp5-7 = 40-63:     never sent                        -> whole host pages unsent: no fix-up
D = np.zeros(64, bool)
D[[3, 17, 18]] = True
U = np.zeros(64, bool)
U[40:] = True
U[13] = True


def test_plan_view_steps_hand_checked():
    plan = plan_discards(D, U, 8)
    steps = plan_view_steps(plan, D, U)
    assert [s.name for s in steps] == ["unsent_pass", "dirty_pass", "or", "send_runs"]
    assert steps[0].fixups == (1,) and steps[0].sent == ((8, 8),)
    assert steps[1].fixups == (0, 2) and steps[1].sent == ((0, 8), (16, 8))
    assert steps[3].sent == ((0, 24), (40, 24))
    assert np.array_equal(steps[0].before_dirty, D) and np.array_equal(steps[0].before_unsent, U)
    assert np.array_equal(steps[1].before_dirty, steps[0].after_dirty)
    assert steps[0].after_unsent[8:16].all() and steps[0].after_dirty[8:16].all()
    modern = plan_view_steps(plan_discards(D, U, 8, "modern"), D, U)
    assert [(s.name, s.fixups, s.sent) for s in modern] == [("canonicalise", (0, 2), ()),
                                                            ("send_runs", (), ((0, 8), (16, 8)))]
    assert modern[0].before_unsent is None


def test_grid_helpers():
    assert host_grid(64, 8) == (8, 8, 1)
    assert host_grid(4096, 512) == (8, 512, 1)
    assert host_grid(1 << 18, 1 << 18, 512) == (1, 512, 512)
    codes = state_codes(D, U)
    assert codes[3] == 1 and codes[13] == 2 and codes[0] == 0 and codes[40] == 2
    img = grid_image(codes, host_grid(64, 8))
    assert img.shape == (8, 8) and img.flags.c_contiguous and img[0, 3] == 1 and img[1, 5] == 2
    red = grid_image(np.array([0, 0, 0, 1, 0, 0], np.uint8), (1, 3, 4))  # any dirty page shows
    assert red.tolist() == [[1, 0, 4]]  # last pixel: padding only
    assert host_page_rects([1], 8, (8, 8, 1)) == dict(left=[0.0], right=[8.0], top=[1.0], bottom=[2.0], host_page=[1])
    assert range_segments([(6, 12)], 8) == ([6, 0, 0], [8, 8, 2], [0, 1, 2])
    assert range_segments([], 8) == ([], [], [])


def test_command_batching_and_payloads():
    rng = np.random.default_rng(3)
    d = rng.random(4096) < 0.02
    u = np.zeros(4096, bool)
    plan = plan_discards(d, u, 4)
    view = PostcopyDiscardView((d, u), host_ratio=4, block="pc.ram")
    cmds = view.commands
    assert all(1 <= len(c["ranges"]) <= 12 for c in cmds)
    chunk = [r for c in cmds if c["series"] == "chunk" for r in c["ranges"]]
    final = [r for c in cmds if c["series"] == "final" for r in c["ranges"]]
    assert chunk == plan.chunk_ranges and final == plan.final_ranges
    assert sum(c["series"] == "chunk" for c in cmds) == -(-len(plan.chunk_ranges) // 12)
    for c in cmds:
        name, rb = decode_discard_payload(c["payload"])
        assert name == "pc.ram" and rb == c["ranges_bytes"] == [(s * 4096, n * 4096) for s, n in c["ranges"]]
        assert c["reencoded_ok"]
    # seed: every chunk range is discarded again by a final run
    assert all(all(c["duplicated"]) for c in cmds if c["series"] == "chunk")
    rows = command_rows([[(0, 1)] * 3], "m0", 4096, duplicated=[(0, 1)])
    assert rows[0]["duplicated"] == [True] * 3 and rows[0]["payload"] == encode_discard_payload("m0", [(0, 4096)] * 3)


def test_view_callbacks_update_sources():
    view = PostcopyDiscardView((D, U), host_ratio=8, block="m0")
    assert view.step_select.value == len(view.steps) - 1  # opens on the last step (what is sent)
    view.step_select.value = 0
    assert view.fixup_source.data["host_page"] == [1]
    assert view.sent_source.data["top"] == [1] and view.sent_source.data["color"] == [DUP_COLOR]
    after = view.image_sources[1].data["image"][0]
    assert after[1].tolist() == [3] * 8  # host page 1: whole host page dirty + unsent after the fix-up
    before = view.image_sources[0].data["image"][0]
    assert before[1, 5] == 2 and before[1, 0] == 0
    view.step_select.value = 1
    assert view.fixup_source.data["host_page"] == [0, 2]
    # the toggle recomputes the plan
    view.algorithm_toggle.value = "modern"
    assert view.plan.algorithm == "modern" and [s.name for s in view.steps] == ["canonicalise", "send_runs"]
    assert [c["ranges"] for c in view.commands] == [[(0, 8), (16, 8)]]
    assert view.sent_source.data["left"] == [0, 0]  # last step: runs (0, 8) and (16, 8) on rows 0 and 2
    assert view.sent_source.data["top"] == [0, 2]


def test_view_from_plan_alone_disables_toggle():
    view = PostcopyDiscardView(plan_discards(D, U, 8), block="m0")
    assert view.algorithm_toggle.disabled and view.steps[0].before_dirty is None
    with pytest.raises(ramlab.RamlabError):
        view.set_algorithm("modern")


def test_from_migration_hugepages():
    m = ramlab.open(data_path("postcopy-hugepages"))
    view = PostcopyDiscardView.from_migration(m)
    assert view.block == "m0" and view.host_ratio == 512 and view.grid == (8, 512, 1)
    assert len(view.commands) == 1
    c = view.commands[0]
    assert c["ranges_bytes"] == [(s, n) for _, s, n in m.discards] and c["reencoded_ok"]
    assert view.steps[-1].fixups == (0, 1, 2, 4, 5)
    after = view.image_sources[1].data["image"][0]
    assert (after[[0, 1, 2, 4, 5]] & 1).all() and not (after[[3, 6, 7]] & 1).any()
    assert "(agree)" in view.summary.value


def test_postcopy_view_steps_switched_by_the_page():
    view = PostcopyDiscardView((D, U), host_ratio=8, block="m0")
    maps = view.layout_models
    assert view.client and len(maps.step_images[0]) == len(view.steps)
    args = maps.step_js.args
    assert len(args["summaries"]) == len(args["fixups"]) == len(args["sents"]) == len(view.steps)
    view.show_step(1)
    assert [r.visible for r in maps.step_images[1]] == [k == 1 for k in range(len(view.steps))]
    assert json.loads(args["fixups"][1]) == dict(view.fixup_source.data)
    assert view.summary.value == args["summaries"][1] and view.step_select.value == 1
    # the page chose step 0 (its value comes to the model): the page shows it itself (its rectangles
    # and visible renderers come back the same way); Python keeps its copy of the images and text
    view.step_select.model.value = "0"
    assert view.step_select.value == 0 and view.summary.value == args["summaries"][0]
    assert view.image_sources[1].data["image"][0][1].tolist() == [3] * 8
    # a step's "before" is the previous step's "after": one image travels for both
    assert maps.step_images[0][1].data_source is maps.step_images[1][0].data_source


def test_postcopy_view_over_budget_switches_steps_in_python(monkeypatch):
    from ramlab.plots import postcopy

    monkeypatch.setattr(postcopy, "STEP_PIXEL_BUDGET", 0)
    view = PostcopyDiscardView((D, U), host_ratio=8, block="m0")
    assert not view.client and view.layout_models.step_js.args["summaries"] == []
    assert view.layout_models.python_images[1] in view.figures[1].renderers
    view.step_select.model.value = "0"  # the page chose step 0: Python draws it
    assert view.fixup_source.data["host_page"] == [1] and view.summary_div.text == view.summary.value
    assert view.image_sources[1].data["image"][0][1].tolist() == [3] * 8
