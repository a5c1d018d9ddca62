"""Shared bits of the widgets: the one-time BokehJS setup, class colours, small HTML helpers."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass, Trace

__all__ = ["setup", "CLASS_COLORS", "PALETTE", "class_color", "swatch", "pass_bar_figures"]

#: colour of each PageClass (index = code), then NO_PAGE (past the end of RAM)
CLASS_COLORS: dict[PageClass, str] = {
    PageClass.NOT_SENT: "#eeeeee",
    PageClass.ZERO: "#9ecae1",
    PageClass.NORMAL: "#d62728",
    PageClass.XBZRLE: "#2ca02c",
    PageClass.XBZRLE_UNCHANGED: "#b5e3a8",
    PageClass.XBZRLE_OVERFLOW: "#ff7f0e",
    PageClass.COMPRESSED: "#9467bd",
    PageClass.DISCARDED: "#555555",
    PageClass.REQUESTED: "#e377c2",
    PageClass.POSTCOPY: "#8c564b",
}
NO_PAGE_COLOR = "#ffffff"
PALETTE: list[str] = [CLASS_COLORS[PageClass(k)] for k in range(N_CLASSES)] + [NO_PAGE_COLOR]

_state = {"done": False}


def setup(force: bool = False) -> bool:
    """Load BokehJS into the notebook page once (INLINE resources: no CDN needed).

    Every ramlab widget calls it before creating its first ``BokehModel``; calling it
    yourself at the top of a notebook is harmless.  Outside an IPython kernel it does
    nothing and returns ``False``.

    >>> setup()        # in a plain interpreter: nothing to load into
    False
    """
    if _state["done"] and not force:
        return True
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - ipywidgets depends on IPython
        return False
    if get_ipython() is None:
        return False
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    output_notebook(resources=INLINE, hide_banner=True)
    _state["done"] = True
    return True


def class_color(code: int) -> str:
    """Colour of a class code (``NO_PAGE`` -> white)."""
    return PALETTE[int(code)] if 0 <= int(code) < len(PALETTE) else NO_PAGE_COLOR


def swatch(code: int, text: str) -> str:
    """An inline HTML colour swatch followed by ``text`` (escaped)."""
    return (
        f"<span style='display:inline-block;width:11px;height:11px;margin-right:4px;"
        f"border:1px solid #999;background:{class_color(code)}'></span>{html.escape(text)}"
    )


def class_name(code: int) -> str:
    """Name of a class code, ``'NO_PAGE'`` past the end."""
    return CLASS_NAMES[code] if 0 <= code < N_CLASSES else "NO_PAGE"


def pass_bar_figures(trace: Trace, counts: np.ndarray, nbytes: np.ndarray, *, width: int,
                     heights: tuple[int, int] = (210, 170)) -> tuple[Any, Any, Any]:
    """The two per-pass charts of the player and the report: pages per class (stacked) and bytes.

    Returns ``(source, pages_figure, bytes_figure)``; the figures share their x range.
    """
    from bokeh.models import ColumnDataSource, NumeralTickFormatter
    from bokeh.plotting import figure

    sent = [k for k in range(1, N_CLASSES) if counts[:, k].any()]
    names = [CLASS_NAMES[k] for k in sent]
    data: dict[str, Any] = {"pass": np.arange(trace.n_passes), "kind": trace.pass_kinds,
                            "bytes": np.asarray(nbytes, dtype=np.float64)}
    for k in sent:
        data[CLASS_NAMES[k]] = counts[:, k]
    src = ColumnDataSource(data)
    tools = "xpan,xwheel_zoom,reset,hover,save"
    f1 = figure(width=width, height=heights[0], title="pages sent per pass, by class", tools=tools,
                x_axis_label="pass", toolbar_location="right")
    if names:
        f1.vbar_stack(names, x="pass", width=0.8, source=src,
                      color=[CLASS_COLORS[PageClass(k)] for k in sent], legend_label=names)
        f1.legend.label_text_font_size = "8pt"
        f1.legend.location = "top_right"
        f1.legend.background_fill_alpha = 0.6
    f1.hover.tooltips = [("pass", "@pass (@kind)"), ("class", "$name"), ("pages", "@$name{0,0}")]
    f1.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
    f2 = figure(width=width, height=heights[1], title="bytes of page records per pass", tools=tools,
                x_range=f1.x_range, x_axis_label="pass")
    f2.vbar(x="pass", top="bytes", width=0.8, source=src, color="#4c72b0")
    f2.hover.tooltips = [("pass", "@pass (@kind)"), ("bytes", "@bytes{0,0}")]
    f2.yaxis.formatter = NumeralTickFormatter(format="0.[0]b")
    f2.y_range.start = 0
    return src, f1, f2
