"""``BitmapView``: the page-class map of one pass as a bokeh image inside an ipywidgets box."""

from __future__ import annotations

import html
import time

import ipywidgets as W
import numpy as np
from bokeh.events import RangesUpdate
from bokeh.models import (
    ColumnDataSource,
    LinearColorMapper,
    Range1d,
)
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

from ramlab.plots.page_map import page_map_hover
from ramlab.plots.palette import PALETTE, swatch
from ramlab.plots.reduce import NO_PAGE, Region, page_grid, zoom_region
from ramlab.trace import CLASS_NAMES, N_CLASSES, Trace
from ramlab.widgets._common import setup

__all__ = ["BitmapView"]

class BitmapView(W.VBox):
    """Page-class map of one pass: rows of pages (like QEMU's debug dump), a legend with counts,
    hover (block / offset / class / pass) and a box zoom that re-renders the zoomed region at
    full resolution.  The pushed image is never larger than the plot frame in pixels.

    Each pixel shows one class chosen from the class histogram of the pages it covers
    (default rule ``"rarest"``: see :mod:`ramlab.plots.reduce`).

    >>> from ramlab.trace import synthetic_trace
    >>> view = BitmapView(synthetic_trace(n_pages=4096, n_passes=3), pass_index=1)
    >>> view.set_pass(2); view.image.shape[0] <= view.frame_height
    True

    Args:
        trace_or_array: a :class:`~ramlab.trace.Trace`, or a class array ``[n_pages]`` /
            ``[n_passes, n_pages]``.
        pass_index: pass shown first.
        width, height: maximum plot frame size in pixels.
        grid_width: pages per row (``None``: adapt to the plot's aspect; 128: QEMU's dump).
        rule: ``"rarest"`` or ``"majority"`` (see :func:`~ramlab.plots.reduce.dominant_class`).
    """

    def __init__(
        self,
        trace_or_array: Trace | np.ndarray,
        pass_index: int = 0,
        *,
        width: int = 560,
        height: int = 560,
        grid_width: int | None = None,
        rule: str = "rarest",
        title: str | None = None,
    ) -> None:
        setup()
        trace = trace_or_array if isinstance(trace_or_array, Trace) else Trace.from_classes(trace_or_array)
        self.trace = trace
        self.rule = rule
        self.grid = page_grid(trace.n_pages, grid_width, aspect=height / width)
        rows, cols = self.grid
        self.frame_width = int(width)
        self.frame_height = int(np.clip(round(width * rows / cols), 60, height))
        self._counts = trace.class_counts()
        self.pass_index = int(np.clip(pass_index, 0, max(trace.n_passes - 1, 0)))
        self._view = (0.0, float(cols), 0.0, float(rows))  # x0, x1, y0, y1 (page-grid coordinates)
        self.region: Region | None = None
        self.image: np.ndarray = np.zeros((1, 1), np.uint8)
        self.histogram: np.ndarray = np.zeros((1, 1, N_CLASSES), np.uint32)
        self.last_render_ms = 0.0
        self.renders = 0

        self.source = ColumnDataSource(
            data=dict(image=[self.image], x=[0], y=[0], dw=[cols], dh=[rows], pass_=[0], ppp=["1 page"])
        )
        mapper = LinearColorMapper(palette=PALETTE, low=-0.5, high=NO_PAGE + 0.5)
        fig = figure(
            frame_width=self.frame_width,
            frame_height=self.frame_height,
            x_range=Range1d(0, cols, bounds=(0, cols)),
            y_range=Range1d(rows, 0, bounds=(0, rows)),
            tools="box_zoom,pan,wheel_zoom,reset,save",
            active_drag="box_zoom",
            title=title or self._title(),
            x_axis_label=f"page in row ({cols} per row)",
            y_axis_label="row",
            toolbar_location="above",
        )
        fig.grid.visible = False
        glyph = fig.image(
            image="image", x="x", y="y", dw="dw", dh="dh", source=self.source, color_mapper=mapper
        )
        fig.add_tools(page_map_hover(trace, cols, glyph, extra=(("pixel", "@ppp"),)))
        fig.on_event(RangesUpdate, self._on_ranges)
        self.figure = fig
        self.legend = W.HTML()
        self._render()  # before BokehModel copies the document: later patches need a live view
        self.plot = BokehModel(fig)
        super().__init__([self.plot, self.legend])

    # ------------------------------------------------------------------ API
    def set_pass(self, pass_index: int) -> None:
        """Show pass ``pass_index`` (keeps the current zoom)."""
        p = int(pass_index)
        if not 0 <= p < self.trace.n_passes:
            raise IndexError(f"pass {p} outside 0..{self.trace.n_passes - 1}")
        self.pass_index = p
        self.figure.title.text = self._title()
        self._render()

    def show_region(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """Re-render the page-grid rectangle ``[x0, x1] x [y0, y1]`` (what a box zoom calls)."""
        self._view = (float(x0), float(x1), float(y0), float(y1))
        self._render()

    def reset_view(self) -> None:
        """Back to the whole of RAM."""
        rows, cols = self.grid
        self.show_region(0, cols, 0, rows)

    def page_at(self, x: float, y: float) -> int | None:
        """Global page index under grid coordinates ``(x, y)`` or ``None``."""
        rows, cols = self.grid
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < cols and 0 <= yi < rows):
            return None
        g = yi * cols + xi
        return g if g < self.trace.n_pages else None

    # ------------------------------------------------------------------ internals
    def _title(self) -> str:
        kinds = self.trace.pass_kinds
        kind = kinds[self.pass_index] if kinds else "?"
        return f"page classes, pass {self.pass_index} ({kind})"

    def _on_ranges(self, event: RangesUpdate) -> None:
        if None in (event.x0, event.x1, event.y0, event.y1):
            return
        self.show_region(event.x0, event.x1, event.y0, event.y1)

    def _render(self) -> None:
        t0 = time.perf_counter()
        x0, x1, y0, y1 = self._view
        if self.trace.n_passes == 0:
            return
        dom, hist, reg = zoom_region(
            self.trace.classes[self.pass_index],
            self.grid,
            (y0, y1),
            (x0, x1),
            (self.frame_height, self.frame_width),
            rule=self.rule,
            reference_counts=self._counts[self.pass_index],
        )
        h, w = dom.shape
        self.image, self.histogram, self.region = dom, hist, reg
        ppp = "1 page" if reg.full_resolution else f"{reg.fy}x{reg.fx} pages (class: {self.rule})"
        self.source.data = dict(
            image=[dom],
            x=[reg.c0],
            y=[reg.r0],
            dw=[w * reg.fx],
            dh=[h * reg.fy],
            pass_=[self.pass_index],
            ppp=[ppp],
        )
        self._update_legend(hist, reg)
        self.renders += 1
        self.last_render_ms = (time.perf_counter() - t0) * 1e3

    def _update_legend(self, hist: np.ndarray, reg: Region) -> None:
        rows, cols = self.grid
        zoomed = (reg.r0, reg.r1, reg.c0, reg.c1) != (0, rows, 0, cols)
        counts = self._counts[self.pass_index]
        in_view = hist.reshape(-1, N_CLASSES).sum(axis=0) if zoomed else None
        items = []
        for k in range(N_CLASSES):
            if counts[k] == 0:
                continue
            extra = f" (in view {int(in_view[k]):,})" if in_view is not None else ""
            items.append(
                f"<span style='margin-right:12px;white-space:nowrap'>"
                f"{swatch(k, CLASS_NAMES[k])}&nbsp;{int(counts[k]):,}{html.escape(extra)}</span>"
            )
        res = "full resolution" if reg.full_resolution else f"{reg.fy}x{reg.fx} pages per pixel"
        where = f"rows {reg.r0}-{reg.r1 - 1}, cols {reg.c0}-{reg.c1 - 1}" if zoomed else "all RAM"
        self.legend.value = (
            f"<div style='font-size:12px;line-height:1.6'>{''.join(items)}<br>"
            f"<span style='color:#666'>{where}; image {self.image.shape[1]}x{self.image.shape[0]} px, "
            f"{res}</span></div>"
        )
