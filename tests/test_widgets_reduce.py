"""Tests of the views' data preparation (pure numpy) and of the widgets' Python callbacks.

No browser: widgets are instantiated in Python and driven through their traits / methods
(the real-browser check is tests/browser/test_player_browser.py).
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
from bokeh.events import RangesUpdate

from ramlab.plots.reduce import (
    NO_PAGE,
    changed_runs,
    dominant_class,
    page_grid,
    reduce_classes,
    reduce_factors,
    zoom_region,
)
from ramlab.trace import N_CLASSES, PageClass, Trace, synthetic_trace


def naive_reduce(classes, grid_shape, out_shape):
    """Loop reference: histogram of each output pixel's tile of the padded grid."""
    rows, cols = grid_shape
    fy, fx = -(-rows // out_shape[0]), -(-cols // out_shape[1])
    h, w = -(-rows // fy), -(-cols // fx)
    hist = np.zeros((h, w, N_CLASSES), np.int64)
    for g, c in enumerate(classes):
        r, col = divmod(g, cols)
        hist[r // fy, col // fx, c] += 1
    return hist


# ---------------------------------------------------------------------- page_grid / factors
def test_page_grid():
    assert page_grid(128 * 8) == (8, 128)
    assert page_grid(128 * 8 + 1) == (9, 128)
    assert page_grid(0) == (1, 128)
    assert page_grid(1 << 20, None) == (1024, 1024)
    assert page_grid(1 << 20, None, aspect=0.5) == (512, 2048)
    rows, cols = page_grid(3_000_000, None)
    assert rows * cols >= 3_000_000 and rows <= cols
    with pytest.raises(ValueError):
        page_grid(10, 0)


@pytest.mark.parametrize("grid", [(1024, 1024), (8192, 128), (3, 128), (1, 1), (777, 333)])
@pytest.mark.parametrize("out", [(600, 600), (100, 37), (1, 1), (4096, 4096)])
def test_output_never_exceeds_plot_pixels(grid, out):
    fy, fx = reduce_factors(grid, out)
    assert -(-grid[0] // fy) <= out[0] and -(-grid[1] // fx) <= out[1]
    n = grid[0] * grid[1] - (grid[1] // 2)
    dom, hist = reduce_classes(np.ones(max(n, 1), np.uint8), grid, out)
    assert dom.shape[0] <= out[0] and dom.shape[1] <= out[1]
    assert hist.shape == (*dom.shape, N_CLASSES)
    assert int(hist.sum()) == max(n, 1)


# ---------------------------------------------------------------------- histogram
@pytest.mark.parametrize("seed", range(6))
def test_histogram_matches_naive_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    cols = int(rng.integers(1, 80))
    grid = page_grid(n, cols)
    out = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
    classes = rng.integers(0, N_CLASSES, n).astype(np.uint8)
    dom, hist = reduce_classes(classes, grid, out)
    np.testing.assert_array_equal(hist, naive_reduce(classes, grid, out))
    # dominant is a class present in the pixel (or NO_PAGE where the pixel holds no page)
    empty = hist.sum(-1) == 0
    assert (dom[empty] == NO_PAGE).all()
    ii, jj = np.nonzero(~empty)
    assert (hist[ii, jj, dom[ii, jj]] > 0).all()


def test_full_resolution_is_identity():
    classes = np.arange(1000, dtype=np.uint8) % N_CLASSES
    dom, hist = reduce_classes(classes, (8, 128), (600, 600))
    assert dom.shape == (8, 128)
    np.testing.assert_array_equal(dom.ravel()[:1000], classes)
    assert (dom.ravel()[1000:] == NO_PAGE).all()
    assert hist.sum() == 1000


# ---------------------------------------------------------------------- displayed-class rule
def test_rare_class_is_findable():
    classes = np.full(10_000, PageClass.ZERO, np.uint8)
    classes[5_123] = PageClass.XBZRLE
    dom, hist = reduce_classes(classes, (100, 100), (10, 10))
    assert hist[5, 2, PageClass.XBZRLE] == 1 and hist[5, 2, PageClass.ZERO] == 99
    assert dom[5, 2] == PageClass.XBZRLE
    assert (np.delete(dom.ravel(), 5 * 10 + 2) == PageClass.ZERO).all()
    # a single pixel over all 10000 pages still shows it
    dom1, _ = reduce_classes(classes, (100, 100), (1, 1))
    assert dom1[0, 0] == PageClass.XBZRLE
    # majority rule hides it (that is why it is not the default)
    domm, _ = reduce_classes(classes, (100, 100), (1, 1), rule="majority")
    assert domm[0, 0] == PageClass.ZERO


def test_rarest_rule_details():
    h = np.zeros((1, 4, N_CLASSES), np.uint32)
    h[0, 0, [PageClass.NOT_SENT, PageClass.NORMAL]] = [1000, 1]  # anything sent beats NOT_SENT
    h[0, 1, PageClass.NOT_SENT] = 5  # nothing sent: NOT_SENT
    h[0, 2, [PageClass.ZERO, PageClass.NORMAL]] = [3, 3]  # tie in the frame count is decided globally
    # pixel 3 empty -> NO_PAGE
    dom = dominant_class(h)
    # frame counts: NORMAL 4 > ZERO 3 -> ZERO is rarer
    assert dom.tolist() == [[PageClass.NORMAL, PageClass.NOT_SENT, PageClass.ZERO, NO_PAGE]]
    # the reference counts (whole pass) decide, not the local pixel
    ref = np.zeros(N_CLASSES)
    ref[PageClass.ZERO], ref[PageClass.NORMAL] = 10, 1
    assert dominant_class(h, reference_counts=ref)[0, 2] == PageClass.NORMAL
    # exact tie in the reference: the higher code wins
    ref[PageClass.ZERO] = ref[PageClass.NORMAL] = 5
    assert dominant_class(h, reference_counts=ref)[0, 2] == PageClass.NORMAL
    with pytest.raises(ValueError):
        dominant_class(h, rule="random")


# ---------------------------------------------------------------------- zoom
def test_zoom_region_full_resolution_and_clipping():
    rng = np.random.default_rng(1)
    classes = rng.integers(0, N_CLASSES, 256 * 256).astype(np.uint8)
    dom, hist, reg = zoom_region(classes, (256, 256), (10.2, 50.7), (-5, 30.1), (600, 600))
    assert (reg.r0, reg.r1, reg.c0, reg.c1) == (10, 51, 0, 31) and reg.full_resolution
    np.testing.assert_array_equal(dom, classes.reshape(256, 256)[10:51, 0:31])
    # flipped range order (bokeh's flipped y axis) gives the same region
    dom2, _, reg2 = zoom_region(classes, (256, 256), (50.7, 10.2), (30.1, -5), (600, 600))
    assert reg2 == reg and (dom2 == dom).all()
    # too big to fit: reduced, still within the output
    dom3, hist3, reg3 = zoom_region(classes, (256, 256), (0, 256), (0, 256), (100, 100))
    assert dom3.shape[0] <= 100 and dom3.shape[1] <= 100 and not reg3.full_resolution
    assert hist3.sum() == classes.size
    # outside the grid: clipped to at least one page
    dom4, _, reg4 = zoom_region(classes, (256, 256), (900, 1000), (900, 1000), (10, 10))
    assert dom4.shape == (1, 1) and (reg4.r0, reg4.c0) == (255, 255)


def test_zoom_region_padding_rows():
    classes = np.full(300, PageClass.NORMAL, np.uint8)
    dom, hist, reg = zoom_region(classes, (3, 128), (0, 3), (0, 128), (600, 600))
    assert dom.shape == (3, 128)
    assert (dom[2, 300 - 256:] == NO_PAGE).all() and hist.sum() == 300


def test_reduce_is_fast_for_a_million_pages():
    import time

    t = synthetic_trace(n_pages=1 << 20, n_passes=2, with_page_bytes=False)
    grid = page_grid(t.n_pages, None)
    t0 = time.perf_counter()
    dom, hist = reduce_classes(t.classes[1], grid, (600, 600))
    assert time.perf_counter() - t0 < 0.5  # ~25 ms on the dev machines
    assert dom.shape == (512, 512)


def test_changed_runs():
    old = np.zeros(16, np.uint8)
    new = old.copy()
    new[3:5] = 1
    new[15] = 2
    s, n, c = changed_runs(old, new)
    assert s.tolist() == [0, 3, 5, 15] and n.tolist() == [3, 2, 10, 1]
    assert c.tolist() == [False, True, False, True]


# ---------------------------------------------------------------------- save / load -> same picture
def test_save_load_round_trip_gives_same_reduction(tmp_path):
    t = synthetic_trace(n_pages=20_000, n_passes=4, seed=2)
    t.save(tmp_path / "t.npz")
    u = Trace.load(tmp_path / "t.npz")
    grid = page_grid(t.n_pages, None)
    for p in range(t.n_passes):
        a = reduce_classes(t.classes[p], grid, (50, 50))
        b = reduce_classes(u.classes[p], grid, (50, 50))
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()


# ---------------------------------------------------------------------- widgets without a browser
def test_bitmap_view_push_and_zoom():
    from ramlab.widgets import BitmapView

    t = synthetic_trace(n_pages=300_000, n_passes=4)
    v = BitmapView(t, pass_index=2, width=400, height=400)
    pm = v.map
    img = pm.sources[2].data["image"][0]  # the overview of the pass shown; the others come with a page
    assert img.shape[0] <= v.frame_height and img.shape[1] <= v.frame_width
    assert img.dtype == np.uint8 and pm.sources[1] is None  # the other passes come with a page
    assert pm.shown_pass == 2 and not pm.detail.visible
    assert "XBZRLE" in pm.legend.text and "pass 2" in pm.legend.text
    # a box zoom arrives as a RangesUpdate event from the browser: the detail shows the region at full resolution
    v.figure._trigger_event(RangesUpdate(v.figure, x0=10, x1=60, y0=40, y1=20))
    r = v.region
    assert r.full_resolution and (r.r0, r.r1, r.c0, r.c1) == (20, 40, 10, 60)
    img = pm.detail_source.data["image"][0]
    assert img.shape == (20, 50)
    np.testing.assert_array_equal(img, _grid(t.classes[2], v.grid)[20:40, 10:60])
    assert pm.detail_source.data["x"] == [10] and pm.detail_source.data["y"] == [20]
    assert pm.detail.visible and pm.shown_pass is None  # the overview steps aside: one hover per pixel
    assert "zoomed on rows 20-39" in pm.legend.text
    # a pass change keeps the zoom
    v.set_pass(3)
    np.testing.assert_array_equal(pm.detail_source.data["image"][0], _grid(t.classes[3], v.grid)[20:40, 10:60])
    assert pm.detail_source.data["pass_"] == [3]
    v.reset_view()
    assert not v.region.full_resolution and pm.detail_source.data["image"] == [] and pm.shown_pass == 3
    assert "zoomed" not in pm.legend.text
    assert v.page_at(3.5, 0.2) == 3 and v.page_at(-1, 0) is None


def test_page_map_overviews_fill_on_document_ready_and_fit_the_budget():
    from bokeh.events import DocumentReady

    from ramlab.plots.page_map import PageMap

    t = synthetic_trace(n_pages=1 << 16, n_passes=12, with_page_bytes=False)
    pm = PageMap(t, 5, width=300, height=300, pixel_budget=300 * 300 * 4)
    assert pm.overview_shape == (150, 150)  # halved: 12 passes of 300 x 300 do not fit 4 frames' pixels
    assert [p for p, r in enumerate(pm.renderers) if r is not None] == [5]  # in the first snapshot
    first = pm.renderers[5]
    pm.on_document_ready(DocumentReady())
    assert all(r is not None for r in pm.renderers) and pm.renderers[5] is first
    assert pm.figure.renderers[-1] is pm.detail and set(pm.hover.renderers) == {*pm.renderers, pm.detail}
    assert pm._sync.args["overviews"] == pm.renderers  # the page's pass-change code sees them all
    before = list(pm.renderers)
    pm.on_document_ready(DocumentReady())  # another page: new models for it (and every page)
    assert all(a is not b for a, b in zip(before[:5] + before[6:], pm.renderers[:5] + pm.renderers[6:]))
    shapes = {src.data["image"][0].shape for src in pm.sources}
    assert shapes == {(128, 128)}  # 256 x 256 pages at 2 x 2 pages a pixel, under 150 x 150
    for p in range(t.n_passes):  # each overview is the pass's own reduction
        dom, _ = reduce_classes(t.classes[p], pm.grid, pm.overview_shape, reference_counts=pm.counts[p])
        np.testing.assert_array_equal(pm.sources[p].data["image"][0], dom)
    # coarser than the frame: the pass shown is re-rendered at the frame's resolution as the detail
    assert pm.detail_source.data["image"][0].shape == (256, 256) and pm.detail.visible


def _grid(classes, grid):
    rows, cols = grid
    g = np.full(rows * cols, NO_PAGE, np.uint8)
    g[: classes.size] = classes
    return g.reshape(rows, cols)


def test_bitmap_view_from_array():
    from ramlab.widgets import BitmapView

    v = BitmapView(np.array([0, 1, 2, 3] * 100, np.uint8))
    assert v.trace.n_passes == 1 and v.image.shape == (4, 128)


def test_player_slider_moves_map_highlight_and_text():
    from ramlab.widgets import MigrationPlayer

    t = synthetic_trace(n_pages=50_000, n_passes=6, seed=4)
    player = MigrationPlayer(t)
    pm = player.bitmap
    assert pm.shown_pass == 0
    player.slider.value = 3  # what the browser sends when a key moves the slider
    assert player.bitmap.pass_index == 3 and pm.shown_pass == 3
    counts = np.bincount(t.classes[3], minlength=10)
    dom, _ = reduce_classes(t.classes[3], pm.grid, pm.overview_shape, reference_counts=counts)
    np.testing.assert_array_equal(pm.sources[3].data["image"][0], dom)
    assert all(b.left == 2.5 and b.right == 3.5 for b in player.highlight)
    info = player.layout_models.info_html(3)
    assert "pass 3</b> of 5" in info and f"{int(counts[1:].sum()):,} pages sent" in info
    assert len(player.timings_ms) == 1 and player.timings_ms[0] < 1000
    player.show_pass(5)
    assert "switchover" in player.layout_models.info_html(5)
    assert player.pass_index == 5 and pm.shown_pass == 5


def test_player_convergence_line_and_error_banner():
    from ramlab.widgets import MigrationPlayer
    from ramlab.widgets.player import convergence_threshold_pages

    t = synthetic_trace(n_pages=8192, n_passes=4, bandwidth=4096 * 1000, downtime_limit=0.5)
    assert convergence_threshold_pages(t) == 500
    t.error = "bad magic at byte 0"
    player = MigrationPlayer(t)
    assert len(player.highlight) == 3  # classes, bytes, remaining-vs-threshold charts
    caption = player.layout_models.caption.text
    assert "bad magic" in caption and "500 pages" in caption
    del t.meta["bandwidth"]
    assert convergence_threshold_pages(t) is None


# ---------------------------------------------------------------------- XBZRLE delta view
def _stub_xbzrle() -> types.ModuleType:
    """Minimal stand-in of ramlab.xbzrle (same API), used only if the real module is missing."""
    m = types.ModuleType("ramlab.xbzrle")

    @dataclass(frozen=True)
    class Run:
        kind: str
        offset: int
        length: int

    @dataclass(frozen=True)
    class Token:
        kind: str
        offset: int
        size: int
        value: int
        page_offset: int

    def uleb(n):
        return bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])

    def runs(old, new):
        s, n, c = changed_runs(np.frombuffer(old, np.uint8), np.frombuffer(new, np.uint8))
        return [Run("changed" if ci else "zero", int(si), int(ni)) for si, ni, ci in zip(s, n, c)]

    def encode_page(old, new, dlen=None):
        dlen = len(new) if dlen is None else dlen
        out, rs = bytearray(), runs(old, new)
        if len(rs) == 1 and rs[0].kind == "zero":
            return b""
        z = 0
        for r in rs:
            if len(out) + 2 > dlen:
                return None
            if r.kind == "zero":
                z = r.length
                continue
            out += uleb(z)
            if len(out) + 2 > dlen:
                return None
            out += uleb(r.length)
            if len(out) + r.length > dlen:
                return None
            out += new[r.offset: r.offset + r.length]
            z = 0
        return bytes(out)

    def parse_encoded(enc, dlen=4096):
        toks, i, d = [], 0, 0
        while i < len(enc):
            for kind in ("zrun", "nzrun"):
                v = enc[i]
                r = 1
                if v >= 0x80:
                    v, r = (v & 0x7F) | (enc[i + 1] << 7), 2
                toks.append(Token(kind, i, r, v, d))
                i += r
                if kind == "zrun":
                    d += v
            toks.append(Token("data", i, v, v, d))
            i += v
            d += v
        return toks

    m.Run, m.Token, m.runs, m.encode_page, m.parse_encoded = Run, Token, runs, encode_page, parse_encoded
    return m


@pytest.fixture
def xbzrle_module(monkeypatch):
    """The real ramlab.xbzrle when importable, else the stub above."""
    try:
        return importlib.import_module("ramlab.xbzrle")
    except ImportError:
        stub = _stub_xbzrle()
        monkeypatch.setitem(sys.modules, "ramlab.xbzrle", stub)
        import ramlab

        monkeypatch.setattr(ramlab, "xbzrle", stub, raising=False)
        return stub


def test_delta_view_encoded(xbzrle_module):
    from ramlab.widgets import XbzrleDeltaView

    old = np.zeros(4096, np.uint8)
    new = old.copy()
    new[4095] = 1
    v = XbzrleDeltaView.from_arrays(old, new)
    assert v.analysis.outcome == "encoded" and v.analysis.encoded == bytes.fromhex("ff1f0101")
    assert [(t.kind, t.offset, t.size, t.value) for t in v.analysis.tokens] == [
        ("zrun", 0, 2, 4095), ("nzrun", 2, 1, 1), ("data", 3, 1, 1)]
    assert "4 bytes" in v.summary.value
    assert "ULEB128 zero run: 4095" in v.encoded.value and "ff 1f" in v.encoded.value
    assert "000ff0" in v.hex.value  # the row holding the change is shown


def test_delta_view_unchanged_and_overflow(xbzrle_module):
    from ramlab.widgets import XbzrleDeltaView

    page = np.arange(4096, dtype=np.uint32).astype(np.uint8)
    v = XbzrleDeltaView.from_arrays(page, page)
    assert v.analysis.outcome == "unchanged" and "nothing is sent" in v.summary.value
    new = page.copy()
    new[0::2] ^= 0xFF  # alternating changed / unchanged bytes -> overflow
    v = XbzrleDeltaView.from_arrays(page, new)
    assert v.analysis.outcome == "overflow" and v.analysis.encoded is None
    assert "Overflow" in v.summary.value and "plain PAGE" in v.summary.value
    if hasattr(xbzrle_module, "overflow_check"):
        assert "check (" in v.summary.value


def test_delta_view_from_trace(xbzrle_module):
    from ramlab.errors import RamlabError
    from ramlab.widgets import XbzrleDeltaView

    t = synthetic_trace(n_pages=4096, n_passes=3)
    page = int(np.flatnonzero(t.classes[2] == PageClass.XBZRLE)[0])
    v = XbzrleDeltaView(t, 2, page)
    assert f"page {page}" in v.summary.value and "XBZRLE" in v.summary.value
    assert v.analysis.changed_bytes > 0
    t.page_bytes = None
    with pytest.raises(RamlabError):
        XbzrleDeltaView(t, 2, page)
