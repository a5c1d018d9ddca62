"""The page-class map of a trace as a bokeh figure whose pass changes happen in the browser.

A page-class map is an image whose pixel ``(x, y)`` covers global page ``y * cols + x`` of the page
grid (:func:`~ramlab.plots.reduce.page_grid`), reduced in numpy to at most the plot's pixel size
(:func:`~ramlab.plots.reduce.reduce_classes`).

**Why it is fast.**  Every pass has its own image renderer ("overview": the whole of RAM at the
plot's resolution, colour-mapped once by the browser); a pass change only flips which renderer is
visible, in JavaScript: the map repaints in the next frame, whatever the size of RAM and however
busy the kernel is.  What else changes with the pass (the legend text here, the highlighted bars
and the text of the player) follows one frame later, so it never delays the map; text is written
into its box's element directly (re-rendering a bokeh ``Div`` re-lays out the whole layout).  In a
notebook the widget is created with the renderer of the pass shown only (a smaller first picture,
sooner); the other renderers come when a page shows the map (``DocumentReady``), and their
overviews, computed in numpy, one by one, nearest passes first.  A notebook saved without a page
(``nbclient``) holds only the first pass's image.  All passes' overviews together stay under
``pixel_budget`` pixels (coarser overviews beyond).

**Zoom.**  A box zoom (``RangesUpdate``) re-renders the visible rectangle in Python, at full
resolution when it fits, into a "detail" image shown instead of the overview of its pass; on a pass
change the browser shows the new pass's overview at once and Python sends the sharp detail after.

**Reopen.**  On every ``DocumentReady`` (a page showing the map for the first time, or again after
a reload / in a new tab, from the widget's first snapshot, which has the first pass's renderer only)
Python makes new renderers for the other passes (new models travel whole to every page) and re-sends
the current pass and the detail, so the page catches up with the kernel.

    >>> from ramlab.trace import synthetic_trace
    >>> pm = PageMap(synthetic_trace(n_pages=4096, n_passes=3), pass_index=1, width=200, height=200)
    >>> pm.pass_index, pm.grid, pm.shown_pass
    (1, (32, 128), 1)
    >>> pm.set_pass(2); pm.shown_pass, pm.image.shape
    (2, (32, 128))
"""

from __future__ import annotations

import html
import json
import time
from typing import Any

import numpy as np
from bokeh.events import DocumentReady, RangesUpdate
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    Div,
    GlyphRenderer,
    HoverTool,
    Image,
    LinearColorMapper,
    Range1d,
    Slider,
)
from bokeh.plotting import figure

from ramlab.plots.palette import PALETTE, legend_html, text_height
from ramlab.plots.reduce import (
    NO_PAGE,
    Region,
    class_counts,
    page_grid,
    reduce_classes,
    reduce_factors,
    zoom_region,
)
from ramlab.trace import CLASS_NAMES, N_CLASSES, Trace

__all__ = ["PageMap", "page_map_hover", "PIXEL_BUDGET"]

_EMPTY: dict[str, list] = dict(image=[], x=[], y=[], dw=[], dh=[], pass_=[], ppp=[])
#: renderers built directly, without the selection / muted glyph copies (views the browser would build)
BARE_GLYPHS = dict(selection_glyph=None, nonselection_glyph=None, muted_glyph=None)

#: pixels of all overviews of a map together (the browser keeps them as RGBA: 4 bytes a pixel)
PIXEL_BUDGET = 8_000_000

_PAGE_JS = """
const cols = %(cols)d, n = %(n)d, tps = %(tps)d;
const starts = %(starts)s, names = %(names)s;
const x = Math.floor(special_vars.x), y = Math.floor(special_vars.y);
if (x < 0 || x >= cols || y < 0) return "-";
const g = y * cols + x;
if (g >= n) return "(past the end of RAM)";
let b = 0;
while (b + 1 < starts.length && starts[b + 1] <= g) b++;
return names[b] + " +0x" + ((g - starts[b]) * tps).toString(16) + "  (page " + g + ")";
"""

_CLASS_JS = """
const names = %(names)s;
const v = Math.round(value);
return (v >= 0 && v < names.length) ? names[v] : String(value);
"""

#: ``set_text(div, html)``: write a Div's text into its element (no bokeh re-render, no re-layout);
#: the model's own ``text`` is the fallback before the view exists
SET_TEXT_JS = """
const set_text = (div, html) => {
  const view = div.document && div.document.views_manager ? div.document.views_manager.find_one(div) : null;
  if (view != null && view.markup_el != null) {
    if (view._ramlab_html !== html) { view.markup_el.innerHTML = html; view._ramlab_html = html; }
  } else if (div.text !== html) div.text = html;
};
"""

#: on a Div whose model text changed (from Python): forget what ``SET_TEXT_JS`` wrote before
TEXT_RESET_JS = """
const v = cb_obj.document && cb_obj.document.views_manager ? cb_obj.document.views_manager.find_one(cb_obj) : null;
if (v != null) v._ramlab_html = undefined;
"""

#: make the browser show pass ``slider.value``: its overview, or the detail when it is of that pass;
#: the legend follows after the frame that shows the map
SYNC_JS = SET_TEXT_JS + """
const p = slider.value;
const d = dsrc.data;
const use_detail = d.image.length > 0 && d.pass_[0] === p;
if (use_detail || overviews[p] != null) {  // else keep the map shown until Python sends that pass
  for (let i = 0; i < overviews.length; i++) {
    const r = overviews[i];
    if (r != null && r.visible !== (i === p && !use_detail)) r.visible = i === p && !use_detail;
  }
}
if (detail.visible !== use_detail) detail.visible = use_detail;
if (cb_obj === slider) requestAnimationFrame(() => setTimeout(() => {
  if (slider.value === p) set_text(legend, legends[p]);
}, 0));
"""


def page_map_hover(trace: Trace, cols: int, renderers: list[Any],
                   extra: tuple[tuple[str, str], ...] = ()) -> HoverTool:
    """A :class:`~bokeh.models.HoverTool` for image ``renderers`` of class codes, ``cols`` pages a row.

    Tooltips: block + offset (and global page), the class by name, the pass (``@pass_``), then ``extra``.
    """
    starts = [b.offset for b in trace.blocks] or [0]
    names = [b.name for b in trace.blocks] or ["ram"]
    page_fmt = CustomJSHover(
        code=_PAGE_JS % dict(cols=cols, n=trace.n_pages, tps=trace.target_page_size,
                             starts=json.dumps(starts), names=json.dumps(names))
    )
    class_fmt = CustomJSHover(code=_CLASS_JS % dict(names=json.dumps([*CLASS_NAMES, "NO_PAGE"])))
    return HoverTool(
        renderers=list(renderers),
        tooltips=[("block + offset", "$x{custom}"), ("class", "@image{custom}"), ("pass", "@pass_"), *extra],
        formatters={"$x": page_fmt, "@image": class_fmt},
    )


def _overview_shape(frame: tuple[int, int], grid: tuple[int, int], n_passes: int, budget: int) -> tuple[int, int]:
    """Largest ``(h, w)`` <= the frame (halving) whose reduced images of all passes fit ``budget`` pixels."""
    h, w = frame
    while h * w * max(n_passes, 1) > budget and h > 16 and w > 16:
        h, w = max(h // 2, 16), max(w // 2, 16)
    return h, w


class PageMap:
    """Page-class map of every pass of ``trace`` (bokeh models + the numpy behind them; no ipywidgets).

    Models: :attr:`figure` (the map), :attr:`slider` (the pass shown; the player shows it, a
    ``BitmapView`` too), :attr:`legend` (a fixed-size ``Div``: classes with their counts in the pass,
    the zoom region and resolution).  Python API: :meth:`set_pass`, :meth:`show_region`,
    :meth:`reset_view`, :meth:`page_at`, :meth:`fill_overviews` (all passes now, e.g. for a
    standalone HTML page).

    Args:
        trace: the trace.
        pass_index: pass shown first.
        width, height: maximum plot frame in pixels (the frame keeps the grid's aspect).
        grid_width: pages per row (``None``: adapt to the aspect; 128: QEMU's debug dump).
        rule: ``"rarest"`` or ``"majority"`` (:func:`~ramlab.plots.reduce.dominant_class`).
        pixel_budget: all overviews together (:data:`PIXEL_BUDGET`).
        legend_height: pixels of the legend box (its items wrap inside it; default: the longest legend).
        counts: the trace's class counts per pass, if already known.
        python: Python callbacks behind the map (zoom re-render, :meth:`attach`); ``False`` for a
            standalone HTML page (every pass's overview must then be filled: :meth:`fill_overviews`).
    """

    def __init__(self, trace: Trace, pass_index: int = 0, *, width: int = 400, height: int = 400,
                 grid_width: int | None = None, rule: str = "rarest", pixel_budget: int = PIXEL_BUDGET,
                 legend_height: int | None = None, title: str | None = None, counts: np.ndarray | None = None,
                 python: bool = True) -> None:
        if trace.n_passes == 0:
            raise ValueError("the trace has no passes")
        self.trace = trace
        self.rule = rule
        self.grid = page_grid(trace.n_pages, grid_width, aspect=height / width)
        rows, cols = self.grid
        self.frame_width = int(width)
        self.frame_height = int(np.clip(round(width * rows / cols), 60, height))
        n = trace.n_passes
        self.overview_shape = _overview_shape((self.frame_height, self.frame_width), self.grid, n, pixel_budget)
        self.counts = class_counts(trace.classes) if counts is None else counts
        self.pass_index = int(np.clip(pass_index, 0, n - 1))
        self._view = (0.0, float(cols), 0.0, float(rows))  # x0, x1, y0, y1 in page-grid coordinates
        self.region: Region | None = None
        self.image: np.ndarray = np.zeros((1, 1), np.uint8)
        self.histogram: np.ndarray = np.zeros((1, 1, N_CLASSES), np.uint32)
        self._overviews: dict[int, tuple[np.ndarray, np.ndarray, Region]] = {}
        self.last_render_ms = 0.0
        self.renders = 0

        mapper = LinearColorMapper(palette=PALETTE, low=-0.5, high=NO_PAGE + 0.5)
        fig = figure(
            frame_width=self.frame_width, frame_height=self.frame_height,
            x_range=Range1d(0, cols, bounds=(0, cols)), y_range=Range1d(rows, 0, bounds=(0, rows)),
            tools="box_zoom,pan,reset,save", active_drag="box_zoom",
            title=title or "page classes (hover: block, offset, class)",
            x_axis_label=f"page in row ({cols} per row)", y_axis_label="row", toolbar_location="right",
            min_border_left=64, min_border_right=8, min_border_bottom=44,
        )
        fig.title.text_font_size = "11px"
        fig.title.text_font_style = "normal"
        fig.toolbar.logo = None
        fig.grid.visible = False
        self._glyph = dict(image="image", x="x", y="y", dw="dw", dh="dh", color_mapper=mapper)
        self.detail_source = ColumnDataSource(data=dict(_EMPTY))
        self.detail = GlyphRenderer(data_source=self.detail_source, glyph=Image(**self._glyph), visible=False,
                                    **BARE_GLYPHS)
        self.hover = page_map_hover(trace, cols, [self.detail], extra=(("pixel", "@ppp"),))
        fig.add_tools(self.hover)
        # the overview renderer of each pass: in a notebook only the pass shown travels with the widget's
        # first snapshot, the others come when a page shows it (on_document_ready); a standalone page
        # (python=False) has them all
        self.sources: list[ColumnDataSource | None] = [None] * n
        self.renderers: list[GlyphRenderer | None] = [None] * n
        self._first_renderer: GlyphRenderer | None = None
        self.figure = fig
        self.slider = Slider(start=0, end=max(n - 1, 1), value=self.pass_index, step=1, title="pass",
                             width=self.frame_width, disabled=n < 2)
        self._legends = [self._legend_html(p) for p in range(n)]
        legend_w = self.frame_width + 100
        zoom_line = self._legend_html(self.pass_index, np.zeros((1, 1, N_CLASSES), np.uint32),
                                      Region(9999, 99999, 9999, 99999, 1, 1))  # the longest first line
        self.legend = Div(text=self._legends[self.pass_index], width=legend_w,
                          height=legend_height or text_height([*self._legends, zoom_line], legend_w, 12, 1.5),
                          styles={"overflow-y": "auto", "font-size": "12px", "line-height": "1.5"})
        self._sync = CustomJS(args=dict(slider=self.slider, overviews=[], detail=self.detail, dsrc=self.detail_source,
                                        legend=self.legend, legends=self._legends), code=SYNC_JS)
        self.slider.js_on_change("value", self._sync)
        self.detail_source.js_on_change("data", self._sync)
        self.detail.js_on_change("visible", self._sync)  # a late detail of another pass stays hidden
        self.python = python
        if python:
            self.slider.on_change("value", self._on_slider)
            fig.on_event(RangesUpdate, self._on_ranges)
        self._legend_zoomed = False
        self._fill(self.pass_index)
        self._install([self.pass_index] if python else list(range(n)))
        self._show_current()

    # ------------------------------------------------------------------ API
    def set_pass(self, pass_index: int) -> None:
        """Show pass ``pass_index`` (keeps the zoom)."""
        p = int(pass_index)
        if not 0 <= p < self.trace.n_passes:
            raise IndexError(f"pass {p} outside 0..{self.trace.n_passes - 1}")
        if self.slider.value != p:
            self.slider.value = p  # -> _on_slider (and the browser follows)
        else:
            self._pass_changed(p)

    def show_region(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """Show the page-grid rectangle ``[x0, x1] x [y0, y1]`` (what a box zoom does)."""
        self._view = (float(x0), float(x1), float(y0), float(y1))
        self._show_current()

    def reset_view(self) -> None:
        """Back to the whole of RAM."""
        rows, cols = self.grid
        self.show_region(0, cols, 0, rows)

    @property
    def shown_pass(self) -> int | None:
        """The pass whose overview renderer is visible (``None`` while the detail image is shown)."""
        return next((p for p, r in enumerate(self.renderers) if r is not None and r.visible), None)

    @property
    def zoomed(self) -> bool:
        rows, cols = self.grid
        x0, x1, y0, y1 = self._view
        return (np.floor(min(x0, x1)), np.ceil(max(x0, x1)), np.floor(min(y0, y1)), np.ceil(max(y0, y1))) != (
            0, cols, 0, rows)

    def page_at(self, x: float, y: float) -> int | None:
        """Global page index under grid coordinates ``(x, y)`` or ``None``."""
        rows, cols = self.grid
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < cols and 0 <= yi < rows):
            return None
        g = yi * cols + xi
        return g if g < self.trace.n_pages else None

    def overview(self, pass_index: int) -> np.ndarray:
        """The whole-RAM image of a pass (class codes, at most the frame's size)."""
        self._fill(int(pass_index))
        return self._overviews[int(pass_index)][0]

    def fill_overviews(self, order: list[int] | None = None) -> None:
        """Compute and send the overview of every pass not sent yet (``order``: which first)."""
        for p in order if order is not None else range(self.trace.n_passes):
            self._fill(p)

    def on_document_ready(self, event: Any) -> None:
        """A page shows the map (first time, reload, new tab): send what it lacks, nearest passes first.

        The page was built from the widget's first snapshot: it knows the renderer of the first pass
        shown only.  Every other pass gets a new renderer (new models travel whole, whatever an earlier
        page got), holding its overview when it is computed already; the rest follow one by one.
        """
        p0 = self.pass_index
        first = self._first_renderer
        self._install([p for p in range(self.trace.n_passes) if self.renderers[p] is not first])
        order = sorted(range(self.trace.n_passes), key=lambda p: (abs(p - p0), p < p0))
        for p in order:
            self._fill(p)
        src = first.data_source
        src.trigger("data", src.data, src.data)
        self.slider.trigger("value", self.slider.value, self.slider.value)
        self.detail_source.trigger("data", self.detail_source.data, self.detail_source.data)
        self.legend.trigger("text", self.legend.text, self.legend.text)

    def attach(self, document: Any) -> None:
        """Hook :meth:`on_document_ready` to ``document`` (the one holding :attr:`figure`)."""
        if self.python:
            document.on_event(DocumentReady, self.on_document_ready)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ internals
    def _on_slider(self, _attr: str, _old: Any, new: Any) -> None:
        self._pass_changed(int(new))

    def _on_ranges(self, event: RangesUpdate) -> None:
        if None in (event.x0, event.x1, event.y0, event.y1):
            return
        self.show_region(event.x0, event.x1, event.y0, event.y1)

    def _pass_changed(self, p: int) -> None:
        if not 0 <= p < self.trace.n_passes:
            return
        self.pass_index = p
        self._fill(p)
        if self.renderers[p] is None:  # before a page asked for them all
            self._install([p])
        self._show_current()

    def _fill(self, p: int) -> None:
        """Compute the overview of pass ``p`` (once) and put it into its renderer's source if it has one."""
        if p in self._overviews:
            return
        dom, hist = reduce_classes(self.trace.classes[p], self.grid, self.overview_shape, rule=self.rule,
                                   reference_counts=self.counts[p])
        self._overviews[p] = (dom, hist, self._overview_region())
        src = self.sources[p]
        if src is not None:
            src.data = self._overview_data(p)

    def _overview_data(self, p: int) -> dict[str, list]:
        dom, _, reg = self._overviews[p]
        h, w = dom.shape
        return dict(image=[dom], x=[0], y=[0], dw=[w * reg.fx], dh=[h * reg.fy], pass_=[p], ppp=[self._ppp(reg)])

    def _install(self, passes: list[int]) -> None:
        """New overview renderers (new models) for ``passes``, handed to the figure, the hover and the
        page's pass-change code in one go; each holds its overview if it is computed already."""
        for p in passes:
            src = ColumnDataSource(data=self._overview_data(p) if p in self._overviews else dict(_EMPTY))
            self.sources[p] = src
            self.renderers[p] = GlyphRenderer(data_source=src, glyph=Image(**self._glyph), visible=False, **BARE_GLYPHS)
        if self._first_renderer is None:
            self._first_renderer = self.renderers[self.pass_index]
        self._apply_visibility()
        live = [r for r in self.renderers if r is not None]
        self.figure.renderers = [*live, self.detail]  # the detail on top
        self.hover.renderers = [*live, self.detail]
        self._sync.args = {**self._sync.args, "overviews": list(self.renderers)}

    def _apply_visibility(self) -> None:
        """The overview of the pass shown, or the detail when it is of that pass (the rule of SYNC_JS)."""
        p = self.pass_index
        use_detail = bool(self.detail_source.data["image"]) and self.detail_source.data["pass_"][0] == p
        for i, r in enumerate(self.renderers):
            if r is not None and r.visible != (i == p and not use_detail):
                r.visible = i == p and not use_detail
        if self.detail.visible != use_detail:
            self.detail.visible = use_detail

    def _overview_region(self) -> Region:
        """Where the overviews sit and how many pages a pixel (the same for every pass)."""
        rows, cols = self.grid
        fy, fx = reduce_factors(self.grid, self.overview_shape)
        return Region(0, rows, 0, cols, fy, fx)

    def _ppp(self, reg: Region) -> str:
        return "1 page" if reg.full_resolution else f"{reg.fy}x{reg.fx} pages (class: {self.rule})"

    def _show_current(self) -> None:
        """Python side of a pass / view change: the detail image when the overview is not enough."""
        t0 = time.perf_counter()
        p = self.pass_index
        dom, hist, reg = self._overviews[p]
        coarse = self.overview_shape != (self.frame_height, self.frame_width) and not reg.full_resolution
        if self.zoomed or coarse:
            x0, x1, y0, y1 = self._view
            dom, hist, reg = zoom_region(self.trace.classes[p], self.grid, (y0, y1), (x0, x1),
                                         (self.frame_height, self.frame_width), rule=self.rule,
                                         reference_counts=self.counts[p])
            h, w = dom.shape
            self.detail_source.data = dict(image=[dom], x=[reg.c0], y=[reg.r0], dw=[w * reg.fx], dh=[h * reg.fy],
                                           pass_=[p], ppp=[self._ppp(reg)])
            self.renders += 1
        elif self.detail_source.data["image"]:
            self.detail_source.data = dict(image=[], x=[], y=[], dw=[], dh=[], pass_=[], ppp=[])
        self.image, self.histogram, self.region = dom, hist, reg
        self._apply_visibility()  # no-ops when the page did it already
        if self.zoomed or self._legend_zoomed:  # the page writes the legend of a pass itself (SYNC_JS)
            self.legend.text = self._legend_html(p, hist if self.zoomed else None, reg)
            self._legend_zoomed = self.zoomed
        self.last_render_ms = (time.perf_counter() - t0) * 1e3

    def _legend_html(self, p: int, hist: np.ndarray | None = None, reg: Region | None = None) -> str:
        kinds = self.trace.pass_kinds
        counts = self.counts[p]
        head = (f"<b>pass {p}</b> ({html.escape(kinds[p])}): {int(counts[1:].sum()):,} pages sent, "
                f"each pixel coloured by how the pass sent its page (grey: not sent)")
        if hist is not None and reg is not None:
            in_view = hist.reshape(-1, N_CLASSES).sum(axis=0)
            where = (f"zoomed on rows {reg.r0}-{reg.r1 - 1}, cols {reg.c0}-{reg.c1 - 1} "
                     f"({int(in_view[1:].sum()):,} sent in view); ")
        else:
            where = ""
        reg = reg or self._overview_region()
        res = ("1 pixel = 1 page" if reg.full_resolution
               else f"1 pixel = {reg.fy}x{reg.fx} pages, showing the rarest class sent in it")
        items = legend_html({k: int(counts[k]) for k in range(N_CLASSES) if counts[k]})
        return (f"<div>{head}; <span style='color:#555'>{where}{res}</span></div>"
                f"<div>{items}</div>")
