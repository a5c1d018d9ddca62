"""The per-pass charts of the player and the HTML report: pages per class (stacked), bytes, and the
dirty pages left after each pass against what fits in the downtime limit.

No legend inside a plot (it would cover bars): the class colours are the ones of the page map, named in
the shared legend and in the hover text.  Titles are short enough to fit their plot; explanations go to
HTML beside the plots.

    >>> from ramlab.trace import synthetic_trace
    >>> charts = pass_charts(synthetic_trace(2048, 4), width=300)
    >>> [f.title.text for f in charts.figures]
    ['pages sent per pass, by class', 'bytes of page records per pass', 'dirty pages left after the pass']
    >>> charts.converges_after
    0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ramlab.plots.palette import CLASS_COLORS
from ramlab.plots.reduce import class_counts
from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass, Trace

__all__ = ["PassCharts", "pass_charts", "pass_chart_data", "convergence_threshold_pages", "HIGHLIGHT_JS"]

#: move the highlight of every chart to pass ``p``
HIGHLIGHT_JS = "for (const b of boxes) { b.left = p - 0.5; b.right = p + 0.5; }"


def convergence_threshold_pages(trace: Trace) -> float | None:
    """Pages that fit in the downtime limit: ``bandwidth * downtime_limit / target_page_size``.

    ``None`` unless ``meta`` has both ``bandwidth`` (bytes/s) and ``downtime_limit`` (s).

    >>> from ramlab.trace import synthetic_trace
    >>> convergence_threshold_pages(synthetic_trace(1024, 2, bandwidth=4096.0, downtime_limit=2.0))
    2.0
    """
    bw, dl = trace.meta.get("bandwidth"), trace.meta.get("downtime_limit")
    if bw is None or dl is None:
        return None
    return float(bw) * float(dl) / trace.target_page_size


@dataclass
class PassCharts:
    """The charts (sharing their x range) and the highlight box of each (``left``/``right`` = pass +- 0.5)."""

    figures: list[Any]
    boxes: list[Any]
    threshold: float | None
    converges_after: int | None  # first pass whose remaining dirty pages fit the downtime limit
    has_remaining: bool


def _fig(width: int, height: int, title: str, **kw: Any) -> Any:
    from bokeh.plotting import figure

    f = figure(width=width, height=height, title=title, tools="hover", toolbar_location=None,
               min_border_left=56, min_border_right=10, **kw)
    f.title.text_font_size = "11px"
    f.xgrid.visible = False
    return f


def pass_chart_data(counts: np.ndarray, kinds: list[str], nbytes: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """The data of the first two charts: ``({pass, kind, bytes}, the stacked quads of pages per class)``
    (a live view recomputes them as passes grow).

    >>> bars, quads = pass_chart_data(np.array([[0, 5, 2, 0, 0, 0, 0, 0, 0, 0]]), ["bulk"], np.array([9.0]))
    >>> quads["cls"].tolist(), quads["top"].tolist()
    (['ZERO', 'NORMAL'], [5.0, 7.0])
    """
    n = len(kinds)
    sent = [k for k in range(1, N_CLASSES) if counts[:, k].any()]
    passes = np.arange(n)
    # one quad a pass and class, stacked (one renderer: cheaper to build and to draw than a vbar_stack)
    c = counts[:, sent].astype(np.float64)
    tops = np.cumsum(c, axis=1)
    keep = c.ravel() > 0
    quads = {
        "left": np.repeat(passes - 0.4, len(sent))[keep], "right": np.repeat(passes + 0.4, len(sent))[keep],
        "bottom": (tops - c).ravel()[keep], "top": tops.ravel()[keep],
        "pass": np.repeat(passes, len(sent))[keep], "kind": np.repeat(np.asarray(kinds), len(sent))[keep],
        "cls": np.tile([CLASS_NAMES[k] for k in sent], n)[keep], "pages": c.ravel()[keep],
        "color": np.tile([CLASS_COLORS[PageClass(k)] for k in sent], n)[keep],
    }
    return {"pass": passes, "kind": list(kinds), "bytes": np.asarray(nbytes, np.float64)}, quads


def pass_charts(trace: Trace, *, width: int, heights: tuple[int, int, int] = (170, 130, 150),
                counts: np.ndarray | None = None, nbytes: np.ndarray | None = None) -> PassCharts:
    """The per-pass charts of ``trace`` (the third only when ``counters['remaining']`` is known)."""
    from bokeh.models import BoxAnnotation, ColumnDataSource, NumeralTickFormatter, Span

    counts = class_counts(trace.classes) if counts is None else counts
    nbytes = trace.bytes_per_pass().astype(np.float64) if nbytes is None else np.asarray(nbytes, np.float64)
    bars, quads = pass_chart_data(counts, trace.pass_kinds, nbytes)
    passes = bars["pass"]
    src = ColumnDataSource(bars)
    stack = ColumnDataSource(quads)
    f1 = _fig(width, heights[0], "pages sent per pass, by class")
    f1.quad(left="left", right="right", bottom="bottom", top="top", color="color", source=stack, line_color=None)
    f1.hover.tooltips = [("pass", "@pass (@kind)"), ("class", "@cls"), ("pages", "@pages{0,0}")]
    f1.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
    f1.y_range.start = 0
    f2 = _fig(width, heights[1], "bytes of page records per pass", x_range=f1.x_range)
    f2.vbar(x="pass", top="bytes", width=0.8, source=src, color="#555555")
    f2.hover.tooltips = [("pass", "@pass (@kind)"), ("bytes", "@bytes{0,0}")]
    f2.yaxis.formatter = NumeralTickFormatter(format="0.[0]b")
    f2.y_range.start = 0
    figs = [f1, f2]
    thr = convergence_threshold_pages(trace)
    converges = None
    remaining = trace.counters.get("remaining")
    if remaining is not None:
        rem = np.asarray(remaining, dtype=np.float64)
        f3 = _fig(width, heights[2], "dirty pages left after the pass", x_range=f1.x_range, y_axis_type="log",
                  x_axis_label="pass")
        rsrc = ColumnDataSource({"pass": passes, "remaining": rem, "shown": np.maximum(rem, 1)})  # log axis: 0 as 1
        f3.line("pass", "shown", source=rsrc, color="#333333")
        f3.scatter("pass", "shown", source=rsrc, size=5, color="#333333")
        f3.hover.tooltips = [("pass", "@pass"), ("dirty pages left", "@remaining{0,0}")]
        f3.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
        if thr is not None:
            f3.add_layout(Span(location=max(thr, 1), dimension="width", line_color="#009e73", line_dash="dashed",
                               line_width=2))
            below = np.nonzero(rem <= thr)[0]
            converges = int(below[0]) if below.size else None
        figs.append(f3)
    else:
        f2.xaxis.axis_label = "pass"
    boxes = []
    for f in figs:
        # under the bars (a tint over them would change their class colours), outlined
        box = BoxAnnotation(left=-0.5, right=0.5, fill_color="#ffd700", fill_alpha=0.35, line_color="#b8860b",
                            line_alpha=0.8, line_width=1, level="underlay")
        f.add_layout(box)
        boxes.append(box)
    return PassCharts(figs, boxes, thr, converges, remaining is not None)
