"""The bokeh figures of a migration followed as it happens, fed one snapshot at a time.

:class:`LivePlots` is what :class:`ramlab.widgets.live.LiveMigration` draws of a
:class:`~ramlab.live.decoder.LiveSnapshot` (the controls, the text and the thread that feeds it stay
in the widget; nothing here imports ipywidgets or :mod:`ramlab.live`, so recorded snapshots do too):

- the page-class map of the current pass, made once the RAM block list is known (its size depends
  on it): one image reduced to the frame as in the player (:func:`~ramlab.plots.reduce.reduce_classes`,
  one page a pixel when RAM is small), with the player's hover (:func:`~ramlab.plots.page_map.page_map_hover`);
- the player's per-pass charts (:func:`~ramlab.plots.passes.pass_charts`), growing a bar per pass;
- QEMU's remaining dirty pages over time against ``max-bandwidth x downtime-limit``
  (:func:`downtime_threshold_pages`, the pages that fit in the allowed downtime: below the dashed
  line, QEMU stops the VM and completes).

**Why fixed sizes.**  The view changes ten times a second while a student reads it: nothing may move.
Every figure has a fixed size, the curve a fixed frame (its legend beside it, not on the data), and
the map's legend a height reserved for the most classes a pass can show
(``tests/browser/test_live_layout_browser.py`` measures it all across a replay).

**Why whole updates.**  The map and the per-pass bars are small (reduced arrays): when they changed,
their data is replaced whole.  A patch or stream would leave the browser's copy wrong for good if one
message were lost; a full update heals at the next one.  Only the curve streams, its new samples.

    >>> import ramlab, ramlab.live
    >>> run = ramlab.live.replay(ramlab.data_path("postcopy"), speed=100).wait(60)
    >>> plots = LivePlots(run.snapshot())
    >>> fig = plots.init_map(run.snapshot())
    >>> legend = plots.update_map(run.snapshot())            # the legend of the pass shown (HTML)
    >>> fig.title.text, plots.update_map(run.snapshot())     # unchanged: None
    ('page classes, pass 3 (postcopy)', None)
    >>> plots.update_curve(run.snapshot(), run.passes, run.initial_parameters)
    >>> plots.map_source.data["pass_"], plots.pass_source.data["pass_"]
    ([3], [0, 1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Legend, LegendItem, LinearColorMapper, NumeralTickFormatter, Range1d
from bokeh.plotting import figure

from ramlab.plots.page_map import page_map_hover
from ramlab.plots.palette import OKABE_ITO, PALETTE, legend_html, text_height
from ramlab.plots.passes import pass_chart_data, pass_charts
from ramlab.plots.reduce import NO_PAGE, class_grid, page_grid, reduce_classes, reduce_factors
from ramlab.trace import N_CLASSES, PageClass, Trace

__all__ = ["CURVE_COLORS", "LivePlots", "downtime_threshold_pages"]

#: the convergence curve's series (Okabe-Ito; QEMU's remaining pages in black at 0.6 alpha, a grey)
#: borders of the per-pass bars, in pixels: y tick labels up to "512.5MB"; x tick labels; the "pass" label
BARS_LEFT, BARS_BOTTOM, BARS_AXIS_LABEL = 72, 26, 22
CURVE_COLORS = {"remaining": OKABE_ITO["black"], "threshold": OKABE_ITO["blue"], "sent": OKABE_ITO["vermillion"]}
#: the curve's frame height, its left border (y-axis ticks up to ``100k`` and the axis label) and the
#: pixels its frame leaves of the width for the border, the legend and the toolbar on the right
CURVE_FRAME_HEIGHT, CURVE_LEFT, CURVE_SIDE = 160, 64, 340
#: the curve's bottom border: its x axis (ticks and label), drawn only once a sample has come
CURVE_BOTTOM = 48
#: the map legend's font (pixels) and line height (ems)
LEGEND_FONT_PX, LEGEND_LINE_HEIGHT = 12, 1.6


def downtime_threshold_pages(params: Mapping[str, Any], page_size: int) -> float | None:
    """Pages that fit in the downtime limit with QEMU's migration parameters: ``max-bandwidth``
    (bytes/s) x ``downtime-limit`` (ms) / ``page_size``; ``None`` unless both are known.

    >>> downtime_threshold_pages({"max-bandwidth": 4 << 20, "downtime-limit": 300}, 4096)
    307.2
    """
    bw, dl = params.get("max-bandwidth"), params.get("downtime-limit")
    if bw is None or dl is None:
        return None
    return float(bw) * float(dl) / 1000.0 / page_size


class LivePlots:
    """The live view's figures and their sources (see the module docstring).

    Args:
        snap: the first snapshot (a :class:`~ramlab.live.decoder.LiveSnapshot`, or anything with its
            fields): the bars start from it.
        map_size: page map frame width in pixels (its height follows the grid, 60 to ``map_size``).
        chart_width: per-pass charts width; the curve is twice as wide.

    Attributes: :attr:`map_source` (``image``, ``x``, ``y``, ``dw``, ``dh``, ``pass_``) and
    :attr:`map_figure` (``None`` until :meth:`init_map`); :attr:`bars`, a column of :attr:`bars_pages`
    and :attr:`bars_bytes` (their data: :attr:`quads_source`, :attr:`bars_source`); :attr:`curve`, whose
    data are :attr:`remaining_source` (``t``, ``remaining``, ``threshold``) and :attr:`pass_source`
    (``t``, ``sent``, ``pass_``); :attr:`legend_width` and :attr:`legend_height`, the box the map's
    legend (:meth:`update_map`) needs.
    """

    def __init__(self, snap: Any, *, map_size: int = 360, chart_width: int = 420) -> None:
        self.frame = int(map_size)
        self._build_map()
        self._build_bars(snap, chart_width)
        self._build_curve(2 * chart_width)

    # ------------------------------------------------------------------ the page map
    def _build_map(self) -> None:
        """The map's figure is made once the RAM block list is known (its size depends on it)."""
        self.grid: tuple[int, int] | None = None
        self.map_figure: Any = None
        self.last_image: np.ndarray | None = None
        self._map_key: tuple[int, int, int, bool] | None = None
        #: the legend under the map (:meth:`update_map`) wraps in this width: the map's and its y axis
        self.legend_width = self.frame + 60
        #: its height (:meth:`init_map`): the most lines a pass can need, so it never cuts its text and
        #: what sits below it does not move when a pass brings a new class
        self.legend_height = 0
        self.map_source = ColumnDataSource(data=dict(image=[np.full((1, 1), NO_PAGE, np.uint8)], x=[0], y=[0],
                                                     dw=[1], dh=[1], pass_=[0]))

    def init_map(self, snap: Any) -> Any:
        """Make the page map's figure for the RAM blocks of ``snap`` (empty until :meth:`update_map`)."""
        n = snap.n_pages
        rows, cols = self.grid = page_grid(n, None)
        height = int(np.clip(round(self.frame * rows / cols), 60, self.frame))
        mapper = LinearColorMapper(palette=PALETTE, low=-0.5, high=NO_PAGE + 0.5)
        fig = figure(frame_width=self.frame, frame_height=height, x_range=Range1d(0, cols), y_range=Range1d(rows, 0),
                     tools="save", title="page classes of the current pass", toolbar_location="above",
                     x_axis_label=f"page in row ({cols} per row)", y_axis_label="row")
        fig.grid.visible = False
        glyph = fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.map_source, color_mapper=mapper)
        layout = Trace(blocks=tuple(snap.blocks), target_page_size=snap.target_page_size,
                       classes=np.zeros((0, n), np.uint8), wire_bytes=np.zeros((0, n), np.uint32), dirty=None,
                       counters={}, pass_kind=[], source="capture")
        fig.add_tools(page_map_hover(layout, cols, [glyph]))
        self.map_figure = fig
        # the worst pass: every class, each with a count as long as the number of pages
        self.legend_height = text_height([self._legend({k: n for k in range(N_CLASSES)})], self.legend_width,
                                         LEGEND_FONT_PX, LEGEND_LINE_HEIGHT)
        return fig

    def update_map(self, snap: Any) -> str | None:
        """Show the current pass of ``snap`` when it changed; returns then the legend of the pass (HTML:
        the classes and their counts), else ``None`` (nothing changed, or no map yet)."""
        if self.grid is None or snap.current is None or self.map_figure is None:
            return None
        p = snap.n_passes - 1
        key = (p, int(snap.counts[p].sum() - snap.counts[p, PageClass.NOT_SENT]), int(snap.bytes[p]), snap.finished)
        if key == self._map_key:
            return None
        self._map_key = key
        rows, cols = self.grid
        out_shape = (self.map_figure.frame_height, self.frame)
        if reduce_factors(self.grid, out_shape) == (1, 1):  # a page per pixel: the classes are the image
            dom = class_grid(snap.current, self.grid)
        else:
            dom, _ = reduce_classes(snap.current, self.grid, out_shape, reference_counts=snap.counts[p])
        h, w = dom.shape
        self.last_image = dom
        self.map_source.data = dict(image=[dom], x=[0], y=[0], dw=[w * -(-cols // w)], dh=[h * -(-rows // h)],
                                    pass_=[p])
        kind = snap.pass_kinds[p]
        self.map_figure.title.text = f"page classes, pass {p} ({kind})" + ("" if snap.finished else ", live")
        return self._legend({k: int(c) for k, c in enumerate(snap.counts[p]) if c})

    @staticmethod
    def _legend(counts: dict[int, int]) -> str:
        return f"<div style='font-size:{LEGEND_FONT_PX}px;line-height:{LEGEND_LINE_HEIGHT}'>{legend_html(counts)}</div>"

    # ------------------------------------------------------------------ the per-pass bars
    def _build_bars(self, snap: Any, width: int) -> None:
        """The player's per-pass charts (:func:`~ramlab.plots.passes.pass_charts`), fed live: their data
        comes from :func:`~ramlab.plots.passes.pass_chart_data` at each update."""
        blank = Trace.allocate((), 1, source="capture", pass_kind=["bulk"])
        charts = pass_charts(blank, width=width, counts=np.zeros((1, N_CLASSES), np.int64), nbytes=np.zeros(1))
        self.bars_pages, self.bars_bytes = charts.figures[:2]
        # The axes grow as data comes (no ticks while the range is empty, then "0" to "512.5MB"): borders
        # that always hold them keep the frames still (the player's charts are made once, with all data)
        for f, bottom in ((self.bars_pages, BARS_BOTTOM), (self.bars_bytes, BARS_BOTTOM + BARS_AXIS_LABEL)):
            f.min_border_left, f.min_border_bottom = BARS_LEFT, bottom
        self.bars_pages.title.text = "pages sent per pass, by class (the last bar grows)"
        self.bars = column(self.bars_pages, self.bars_bytes)
        self.quads_source = self.bars_pages.renderers[0].data_source
        self.bars_source = self.bars_bytes.renderers[0].data_source
        self.boxes = charts.boxes
        self._bars_key: tuple[Any, ...] | None = None
        self.update_bars(snap)

    def update_bars(self, snap: Any, final: bool = False) -> None:
        """The whole (small) table of passes, when it changed (see the module docstring)."""
        n = snap.n_passes
        key = (n, snap.counts.tobytes() if n < 64 else snap.counts[-2:].tobytes(), int(snap.bytes.sum()), final)
        if key == self._bars_key:
            return
        self._bars_key = key
        bars, quads = pass_chart_data(snap.counts, snap.pass_kinds, snap.bytes)
        if not len(quads["color"]):  # no page yet: one flat quad (BokehJS refuses an empty colour column)
            quads = {"left": [-0.4], "right": [0.4], "bottom": [0.0], "top": [0.0], "pass": [0], "kind": [""],
                     "cls": [""], "pages": [0.0], "color": ["#ffffff"]}
        self.quads_source.data = quads
        self.bars_source.data = bars
        for box in self.boxes:  # the highlight follows the pass being sent
            box.update(left=n - 1.5, right=n - 0.5)

    # ------------------------------------------------------------------ the convergence curve
    def _build_curve(self, width: int) -> None:
        """Three series told apart by more than colour: QEMU's remaining pages a thin solid line, the
        pages that fit in the downtime a thick dashed step, each pass's pages a vermillion dot (Okabe-Ito
        colours that stay apart for colour-blind readers, ``tests/test_palette.py``).  The legend sits
        beside the plot, never on the data, and the frame has a fixed size: the y-axis labels (``1`` to
        ``100k``) fit in a fixed left border and the x axis, which appears with the first sample, in a fixed
        bottom border, so neither the frame nor the figure moves as samples come."""
        self.remaining_source = ColumnDataSource(data=dict(t=[], remaining=[], threshold=[]))
        self.pass_source = ColumnDataSource(data=dict(t=[], sent=[], pass_=[]))
        f = figure(frame_width=width - CURVE_SIDE, frame_height=CURVE_FRAME_HEIGHT, min_border_left=CURVE_LEFT,
                   min_border_right=8, min_border_bottom=CURVE_BOTTOM, y_axis_type="log",
                   x_axis_label="seconds since migrate", y_axis_label="pages (log)",
                   tools="xpan,xwheel_zoom,reset,hover,save",
                   title="QEMU's remaining dirty pages vs max-bandwidth x downtime-limit (dashed)")
        remaining = f.line("t", "remaining", source=self.remaining_source, color=CURVE_COLORS["remaining"],
                           line_alpha=0.6)
        threshold = f.step("t", "threshold", source=self.remaining_source, color=CURVE_COLORS["threshold"],
                           line_dash="dashed", line_width=2, mode="after")
        sent = f.scatter("t", "sent", source=self.pass_source, size=7, marker="circle", color=CURVE_COLORS["sent"])
        f.hover.tooltips = [("t", "@t{0.00} s"), ("remaining", "@remaining{0,0}"), ("fits", "@threshold{0,0}"),
                            ("pass", "@pass_"), ("sent", "@sent{0,0}")]
        f.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
        legend = Legend(items=[LegendItem(label="remaining (query-migrate)", renderers=[remaining]),
                               LegendItem(label="max-bandwidth x downtime-limit", renderers=[threshold]),
                               LegendItem(label="pages sent per pass", renderers=[sent])],
                        label_text_font_size="8pt", location="top_left", border_line_alpha=0)
        f.add_layout(legend, "right")
        self.curve = f
        self._streamed = 0
        self._passes_streamed = 0

    def update_curve(self, snap: Any, passes: Sequence[Any], initial_parameters: Mapping[str, Any]) -> None:
        """Stream the ``query-migrate`` samples of ``snap`` not shown yet (the threshold from
        ``initial_parameters`` and the parameter changes made since) and the complete ``passes`` not
        shown yet (:class:`~ramlab.live.decoder.PassSummary`: ``t``, ``pages``, ``index``)."""
        rows: dict[str, list[float]] = {"t": [], "remaining": [], "threshold": []}
        changes = [s for s in snap.samples if "event" in s and "arguments" in s and "error" not in s]
        for s in snap.samples[self._streamed:]:
            if "ram.remaining" not in s:
                continue
            page = int(s.get("ram.page-size") or snap.target_page_size)
            params = dict(initial_parameters)
            for c in changes:
                if c["t"] <= s["t"]:
                    params.update(c["arguments"])
            thr = downtime_threshold_pages(params, page)
            rows["t"].append(float(s["t"]))
            rows["remaining"].append(max(float(s["ram.remaining"]) / page, 1.0))
            rows["threshold"].append(max(thr, 1.0) if thr is not None else np.nan)
        self._streamed = len(snap.samples)
        if rows["t"]:
            self.remaining_source.stream(rows)
        done = passes[self._passes_streamed:]
        if done:
            self.pass_source.stream({"t": [p.t for p in done],
                                     "sent": [max(sum(p.pages.values()), 1) for p in done],
                                     "pass_": [p.index for p in done]})
            self._passes_streamed += len(done)
