"""``BitmapView``: the page-class map of a trace, pass by pass (a thin shell over
:class:`ramlab.plots.page_map.PageMap`)."""

from __future__ import annotations

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column
from jupyter_bokeh import BokehModel

from ramlab.plots.page_map import PageMap
from ramlab.plots.reduce import Region
from ramlab.plots.static import class_map_img, figure_html
from ramlab.trace import N_CLASSES, Trace
from ramlab.widgets._common import ViewBox

__all__ = ["BitmapView"]


class BitmapView(ViewBox):
    """Page-class map of one pass: rows of pages (like QEMU's debug dump), a legend with the counts of
    the pass, hover (block / offset / class / pass), a pass slider (changes happen in the browser) and a
    box zoom that re-renders the zoomed region at full resolution.  The image pushed is never larger
    than the plot frame in pixels.

    Each pixel shows one class chosen from the class histogram of the pages it covers (default rule
    ``"rarest"``: see :mod:`ramlab.plots.reduce`).

    >>> from ramlab.trace import synthetic_trace
    >>> view = BitmapView(synthetic_trace(n_pages=4096, n_passes=3), pass_index=1)
    >>> view.set_pass(2); view.pass_index, view.image.shape[0] <= view.frame_height
    (2, True)

    Args:
        trace_or_array: a :class:`~ramlab.trace.Trace`, or a class array ``[n_pages]`` /
            ``[n_passes, n_pages]``.
        pass_index: pass shown first.
        width, height: maximum plot frame size in pixels.
        grid_width: pages per row (``None``: adapt to the plot's aspect; 128: QEMU's dump).
        rule: ``"rarest"`` or ``"majority"`` (see :func:`~ramlab.plots.reduce.dominant_class`).
    """

    def __init__(self, trace_or_array: Trace | np.ndarray, pass_index: int = 0, *, width: int = 480,
                 height: int = 480, grid_width: int | None = None, rule: str = "rarest",
                 title: str | None = None) -> None:
        trace = trace_or_array if isinstance(trace_or_array, Trace) else Trace.from_classes(trace_or_array)
        self.trace = trace
        self.map = PageMap(trace, pass_index, width=width, height=height, grid_width=grid_width, rule=rule,
                           title=title)
        self.figure = self.map.figure
        self.slider = self.map.slider
        self.slider.visible = trace.n_passes > 1
        self.layout_model = column(self.slider, self.figure, self.map.legend)
        doc = Document()
        doc.add_root(self.layout_model)
        self.map.attach(doc)
        self.plot = BokehModel(self.layout_model)
        self.plot.add_class("ramlab-bokeh")
        super().__init__([self.plot])
        self.add_class("ramlab-bitmap")

    # ------------------------------------------------------------------ API (of the PageMap)
    @property
    def pass_index(self) -> int:
        """The pass shown."""
        return self.map.pass_index

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, cols)`` of the page grid."""
        return self.map.grid

    @property
    def frame_width(self) -> int:
        return self.map.frame_width

    @property
    def frame_height(self) -> int:
        return self.map.frame_height

    @property
    def image(self) -> np.ndarray:
        """The class image shown (uint8 codes, at most the frame's size)."""
        return self.map.image

    @property
    def histogram(self) -> np.ndarray:
        """Class histogram ``[H, W, N_CLASSES]`` of the pixels of :attr:`image`."""
        return self.map.histogram

    @property
    def region(self) -> Region | None:
        """The page-grid rectangle and reduction factors of :attr:`image`."""
        return self.map.region

    def set_pass(self, pass_index: int) -> None:
        """Show pass ``pass_index`` (keeps the current zoom)."""
        self.map.set_pass(pass_index)

    def show_region(self, x0: float, x1: float, y0: float, y1: float) -> None:
        """Re-render the page-grid rectangle ``[x0, x1] x [y0, y1]`` (what a box zoom calls)."""
        self.map.show_region(x0, x1, y0, y1)

    def reset_view(self) -> None:
        """Back to the whole of RAM."""
        self.map.reset_view()

    def page_at(self, x: float, y: float) -> int | None:
        """Global page index under grid coordinates ``(x, y)`` or ``None``."""
        return self.map.page_at(x, y)

    # ------------------------------------------------------------------ static fallback
    def summary_text(self) -> str:
        return (f"BitmapView: pass {self.pass_index} of {self.trace.n_passes - 1}, "
                f"{self.trace.n_pages:,} pages ({self.grid[0]} rows of {self.grid[1]})")

    def static_html(self) -> str:
        p = self.pass_index
        counts = self.map.counts[p]
        img = class_map_img(self.map.overview(p), width=self.frame_width, alt=f"page classes of pass {p}")
        return figure_html(f"Page classes of pass {p} ({self.trace.pass_kinds[p]}), static picture", img,
                           f"{self.grid[1]} pages per row; a pixel shows the rarest class sent among its pages.",
                           counts={k: int(counts[k]) for k in range(N_CLASSES) if counts[k]})
