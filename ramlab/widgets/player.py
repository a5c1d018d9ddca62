"""``MigrationPlayer``: step through a migration pass by pass."""

from __future__ import annotations

import html
import time

import ipywidgets as W
import numpy as np
from bokeh.layouts import column
from bokeh.models import BoxAnnotation, ColumnDataSource, NumeralTickFormatter, Span, Title
from bokeh.plotting import figure
from jupyter_bokeh import BokehModel

from ramlab.plots.palette import swatch
from ramlab.plots.passes import pass_bar_figures
from ramlab.trace import CLASS_NAMES, N_CLASSES, Trace
from ramlab.widgets._common import setup
from ramlab.widgets.bitmap import BitmapView

__all__ = ["MigrationPlayer", "convergence_threshold_pages"]


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


class MigrationPlayer(W.VBox):
    """Play / slider over the passes of a trace, with the page map of the current pass, a
    stacked bar chart of page classes per pass, bytes per pass, and the remaining dirty pages
    against ``bandwidth x downtime_limit`` (does the migration converge?).

    >>> from ramlab.trace import synthetic_trace
    >>> player = MigrationPlayer(synthetic_trace(n_pages=4096, n_passes=5))
    >>> player.slider.value = 3          # what the Play button / a key press does
    >>> player.bitmap.pass_index, player.highlight[0].left
    (3, 2.5)
    """

    def __init__(
        self,
        trace: Trace,
        *,
        bitmap_size: int = 440,
        chart_width: int = 400,
        interval_ms: int = 900,
        grid_width: int | None = None,
        rule: str = "rarest",
    ) -> None:
        setup()
        if trace.n_passes == 0:
            raise ValueError("the trace has no passes")
        self.trace = trace
        self.timings_ms: list[float] = []
        n = trace.n_passes
        self.bitmap = BitmapView(
            trace, 0, width=bitmap_size, height=bitmap_size, grid_width=grid_width, rule=rule
        )
        self.play = W.Play(value=0, min=0, max=n - 1, step=1, interval=interval_ms, description="play")
        self.slider = W.IntSlider(
            value=0, min=0, max=n - 1, step=1, description="pass", continuous_update=True,
            layout=W.Layout(width="420px"),
        )
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.status = W.HTML()
        self.info = W.HTML()
        self._counts = trace.class_counts()
        self._bytes = trace.bytes_per_pass().astype(np.float64)
        self.highlight: list[BoxAnnotation] = []
        self.charts = self._build_charts(chart_width)
        self.chart_model = BokehModel(self.charts)
        self.slider.observe(self._on_slider, names="value")
        self._update_info(0)
        header = W.HBox([self.play, self.slider, self.status])
        if trace.error:
            err = W.HTML(f"<b style='color:#b00'>stream error:</b> {html.escape(trace.error)}")
            header = W.VBox([header, err])
        # fixed-size children that wrap (charts go below the map) instead of being squeezed and clipped
        self.bitmap.layout.flex = "0 0 auto"
        self.chart_model.layout.flex = "0 0 auto"
        body = W.HBox([self.bitmap, self.chart_model], layout=W.Layout(flex_flow="row wrap"))
        super().__init__([header, body, self.info])

    # ------------------------------------------------------------------ API
    @property
    def pass_index(self) -> int:
        """The pass shown."""
        return int(self.slider.value)

    def show_pass(self, pass_index: int) -> None:
        """Move to ``pass_index`` (same as moving the slider)."""
        self.slider.value = int(pass_index)

    # ------------------------------------------------------------------ charts
    def _build_charts(self, width: int) -> column:
        t, n = self.trace, self.trace.n_passes
        passes = np.arange(n)
        tools = "xpan,xwheel_zoom,reset,hover,save"
        _, f1, f2 = pass_bar_figures(t, self._counts, self._bytes, width=width)
        figs = [f1, f2]

        remaining = t.counters.get("remaining")
        if remaining is not None:
            thr = convergence_threshold_pages(t)
            rem = np.asarray(remaining, dtype=np.float64)
            f3 = figure(width=width, height=200, tools=tools, x_range=f1.x_range, x_axis_label="pass",
                        title="dirty pages remaining after the pass", y_axis_label="pages (log)",
                        y_axis_type="log")
            # log axis: show 0 as 1 (hover gives the true value)
            rsrc = ColumnDataSource({"pass": passes, "remaining": rem, "shown": np.maximum(rem, 1)})
            f3.line("pass", "shown", source=rsrc, color="#333333")
            f3.scatter("pass", "shown", source=rsrc, size=5, color="#333333")
            f3.hover.tooltips = [("pass", "@pass"), ("remaining", "@remaining{0,0}")]
            f3.yaxis.formatter = NumeralTickFormatter(format="0.[0]a")
            if thr is not None:
                f3.add_layout(Span(location=max(thr, 1), dimension="width", line_color="#2ca02c",
                                   line_dash="dashed", line_width=2))
                below = np.nonzero(rem <= thr)[0]
                text = (f"green: bandwidth x downtime limit = {thr:,.0f} pages; "
                        + (f"fits after pass {int(below[0])}" if below.size
                           else "never fits: no convergence"))
                f3.add_layout(Title(text=text, text_font_size="8pt", text_color="#2ca02c",
                                    text_font_style="normal"), "above")
            else:
                f3.add_layout(Title(text="(bandwidth / downtime_limit unknown: no convergence line)",
                                    text_font_size="8pt", text_font_style="normal"), "above")
            figs.append(f3)
        for f in figs:
            box = BoxAnnotation(left=-0.5, right=0.5, fill_color="#ffd700", fill_alpha=0.35, line_alpha=0)
            f.add_layout(box)
            self.highlight.append(box)
            f.xgrid.visible = False
        return column(*figs)

    # ------------------------------------------------------------------ updates
    def _on_slider(self, change: dict) -> None:
        t0 = time.perf_counter()
        p = int(change["new"])
        self.bitmap.set_pass(p)
        for box in self.highlight:
            box.update(left=p - 0.5, right=p + 0.5)
        self._update_info(p)
        dt = (time.perf_counter() - t0) * 1e3
        self.timings_ms.append(dt)
        self.status.value = f"<span style='color:#666;font-size:11px'>update {dt:.0f} ms</span>"

    def _update_info(self, p: int) -> None:
        t = self.trace
        kinds = t.pass_kinds
        counts = self._counts[p]
        parts = [f"<b>pass {p}</b> of {t.n_passes} ({html.escape(kinds[p])}): "
                 f"{int(counts[1:].sum()):,} pages sent, {self._bytes[p] / 2**20:.2f} MiB"]
        cls = [swatch(k, f"{CLASS_NAMES[k]} {int(counts[k]):,}") for k in range(1, N_CLASSES) if counts[k]]
        if cls:
            parts.append(" &nbsp; ".join(cls))
        if t.dirty is not None:
            parts.append(f"dirty at the start of the pass: {int(t.dirty[p].sum()):,} pages")
        shown = ("remaining", "transferred", "dirty_sync_count", "xbzrle_cache_miss", "xbzrle_overflow")
        ctr = [f"{k}={int(np.asarray(t.counters[k])[p]):,}" for k in shown if k in t.counters]
        if ctr:
            parts.append("counters: " + ", ".join(ctr))
        ev = t.events_of_pass(p)
        if ev:
            parts.append("events: " + "; ".join(html.escape(_event_text(e)) for e in ev[:8])
                         + (f" (+{len(ev) - 8} more)" if len(ev) > 8 else ""))
        self.info.value = "<div style='font-size:12px;line-height:1.7'>" + "<br>".join(parts) + "</div>"


def _event_text(e: dict) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("pass", "kind"))
    text = f"{e.get('kind', '?')}" + (f" ({rest})" if rest else "")
    return text if len(text) < 160 else text[:157] + "..."
