"""The per-pass bar charts (pages per class, bytes per pass) of the player and the HTML report."""

from __future__ import annotations

from typing import Any

import numpy as np

from ramlab.plots.palette import CLASS_COLORS
from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass, Trace

__all__ = ["pass_bar_figures"]


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
