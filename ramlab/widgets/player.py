"""``MigrationPlayer``: step through a migration pass by pass (a thin shell over
:class:`ramlab.plots.player.PlayerLayout`)."""

from __future__ import annotations

import time
from typing import Any

from jupyter_bokeh import BokehModel

from ramlab.plots.passes import convergence_threshold_pages
from ramlab.plots.player import PlayerLayout
from ramlab.plots.static import class_map_img, figure_html, stacked_bars_svg
from ramlab.trace import N_CLASSES, Trace
from ramlab.widgets._common import ViewBox

__all__ = ["MigrationPlayer", "convergence_threshold_pages"]


class MigrationPlayer(ViewBox):
    """Play / step / slide through the passes of a trace: the page map of the pass, pages per class and
    bytes per pass, and the dirty pages left against ``bandwidth x downtime_limit`` (does the migration
    converge?).  Pass changes happen in the browser (one repaint, whatever the size of RAM); the
    keyboard works once the player has the focus (click it): ``Space`` play / pause, ``Left`` /
    ``Right`` step, ``Home`` / ``End``.  A box zoom on the map re-renders the region in Python.

    >>> from ramlab.trace import synthetic_trace
    >>> player = MigrationPlayer(synthetic_trace(n_pages=4096, n_passes=5))
    >>> player.slider.value = 3          # what the play button / a key press does
    >>> player.bitmap.pass_index, player.highlight[0].left
    (3, 2.5)
    """

    def __init__(self, trace: Trace, *, bitmap_size: int = 380, chart_width: int = 340, interval_ms: int = 900,
                 grid_width: int | None = None, rule: str = "rarest") -> None:
        if trace.n_passes == 0:
            raise ValueError("the trace has no passes")
        self.trace = trace
        #: Python time of each pass change (kernel side; the browser has shown the pass already)
        self.timings_ms: list[float] = []
        self.layout_models = PlayerLayout(trace, map_size=bitmap_size, chart_width=chart_width,
                                          interval_ms=interval_ms, grid_width=grid_width, rule=rule)
        pl = self.layout_models
        self.bitmap = pl.page_map
        self.slider = pl.slider
        self.play = pl.toggle
        self.highlight = pl.charts.boxes
        self.charts = pl.charts.figures
        self.info = pl.info
        self.slider.on_change("value", self._on_pass)
        self.plot = BokehModel(pl.layout)
        self.plot.add_class("ramlab-bokeh")
        super().__init__([self.plot])
        self.add_class("ramlab-player")

    # ------------------------------------------------------------------ API
    @property
    def pass_index(self) -> int:
        """The pass shown."""
        return int(self.slider.value)

    def show_pass(self, pass_index: int) -> None:
        """Move to ``pass_index`` (same as moving the slider)."""
        self.bitmap.set_pass(pass_index)

    # ------------------------------------------------------------------ internals
    def _on_pass(self, _attr: str, _old: Any, new: Any) -> None:
        t0 = time.perf_counter()
        self.layout_models.on_pass(int(new))
        self.timings_ms.append((time.perf_counter() - t0) * 1e3 + self.bitmap.last_render_ms)

    def summary_text(self) -> str:
        t = self.trace
        return (f"MigrationPlayer: {t.n_passes} passes over {t.n_pages:,} pages "
                f"({t.meta.get('name', t.source)}), showing pass {self.pass_index}")

    def static_html(self) -> str:
        pm, pl = self.bitmap, self.layout_models
        p = pm.pass_index
        counts = pl.counts[p]
        img = class_map_img(pm.overview(p), width=pm.frame_width, alt=f"page classes of pass {p}")
        bars = stacked_bars_svg(pl.counts, current=p, width=380, height=180)
        body = (f"<div style='display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start'>{img}"
                f"<div>{bars}</div></div>")
        caption = pl.caption.text + "<br>" + pl.infos[p]
        return figure_html(f"Migration player, pass {p} of {self.trace.n_passes - 1} (static picture)", body,
                           caption, counts={k: int(counts[k]) for k in range(N_CLASSES) if counts[k]})
