"""The migration player as one bokeh layout: pass controls, the page map, the per-pass charts and text.

Shared by :class:`ramlab.widgets.MigrationPlayer` (inside a notebook, with Python behind the zoom) and
the standalone HTML report (:mod:`ramlab.report`).  Everything that changes with the pass changes in
the browser, in one task, from data already there (see :mod:`ramlab.plots.page_map`): the visible map,
the highlighted bar of each chart, the per-pass text.  Geometry is fixed: every box has a fixed size,
so nothing moves while the passes play.

Keyboard (when any part of the player has the focus, e.g. after a click on it): ``Space`` play / pause,
``Left`` / ``Right`` previous / next pass, ``Home`` / ``End`` first / last pass.

    >>> from ramlab.trace import synthetic_trace
    >>> pl = PlayerLayout(synthetic_trace(n_pages=4096, n_passes=5))
    >>> pl.slider.end, len(pl.infos), pl.charts.converges_after
    (4, 5, 0)
"""

from __future__ import annotations

import html

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import Button, CustomJS, Div, Toggle

from ramlab.plots.page_map import PIXEL_BUDGET, SET_TEXT_JS, PageMap
from ramlab.plots.palette import text_height
from ramlab.plots.passes import HIGHLIGHT_JS, PassCharts, pass_charts
from ramlab.plots.reduce import class_counts
from ramlab.trace import CLASS_NAMES, N_CLASSES, Trace

__all__ = ["PlayerLayout", "pass_info_html", "player_caption"]

#: after the frame that shows the map: the highlighted bars and the text of the pass
_PASS_JS = SET_TEXT_JS + """
const p = cb_obj.value;
requestAnimationFrame(() => setTimeout(() => {
  if (cb_obj.value !== p) return;  // a later key press is on its way
  """ + HIGHLIGHT_JS + """
  set_text(info, infos[p]);
}, 0));
"""

_PLAY_JS = """
const stop = () => { if (toggle._ramlab_timer) { clearTimeout(toggle._ramlab_timer); toggle._ramlab_timer = null; } };
if (toggle.active) {
  if (toggle.label !== "pause") toggle.label = "pause";
  if (slider.value >= slider.end) slider.value = slider.start;
  const step = () => {
    if (!toggle.active) return;
    if (slider.value >= slider.end) { toggle.active = false; return; }
    slider.value = slider.value + 1;
    toggle._ramlab_timer = setTimeout(step, interval);
  };
  stop();
  toggle._ramlab_timer = setTimeout(step, interval);
} else {
  stop();
  if (toggle.label !== "play") toggle.label = "play";
}
"""

_STEP_JS = "slider.value = Math.min(slider.end, Math.max(slider.start, slider.value + delta));"

#: keyboard on the player's root element (installed once the page shows it)
_KEYS_JS = """
const view = root.document && root.document.views_manager ? root.document.views_manager.find_one(root) : null;
if (view == null || view.el.dataset.ramlabKeys) return;
const el = view.el;
el.dataset.ramlabKeys = "player";
if (!el.hasAttribute("tabindex")) el.tabIndex = 0;
el.style.outline = "none";
el.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
  const clamp = (v) => Math.min(slider.end, Math.max(slider.start, v));
  let handled = true;
  switch (e.key) {
    case " ": case "k": toggle.active = !toggle.active; break;
    case "ArrowRight": case "l": slider.value = clamp(slider.value + 1); break;
    case "ArrowLeft": case "j": slider.value = clamp(slider.value - 1); break;
    case "Home": slider.value = slider.start; break;
    case "End": slider.value = slider.end; break;
    default: handled = false;
  }
  if (handled) { e.preventDefault(); e.stopPropagation(); }
});
el.addEventListener("mousedown", () => setTimeout(() => el.focus({preventScroll: true}), 0));
"""


def _event_text(e: dict) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("pass", "kind"))
    text = f"{e.get('kind', '?')}" + (f" ({rest})" if rest else "")
    return text if len(text) < 160 else text[:157] + "..."


def pass_info_html(trace: Trace, counts: np.ndarray, nbytes: np.ndarray, p: int) -> str:
    """What happened in pass ``p``: pages and bytes sent, dirty pages, QEMU's counters, events."""
    kinds = trace.pass_kinds
    sent = int(counts[p, 1:].sum())
    parts = [f"<b>pass {p}</b> of {trace.n_passes - 1} ({html.escape(kinds[p])}): {sent:,} pages sent "
             f"in {nbytes[p] / 2**20:.2f} MiB of page records"]
    top = sorted(((int(counts[p, k]), k) for k in range(1, N_CLASSES) if counts[p, k]), reverse=True)[:3]
    if top:
        parts.append("mostly " + ", ".join(f"{CLASS_NAMES[k]} ({100 * c / max(sent, 1):.0f}%)" for c, k in top))
    if trace.dirty is not None:
        parts.append(f"dirty at the start of the pass: {np.count_nonzero(trace.dirty[p]):,} pages")
    shown = ("remaining", "transferred", "dirty_sync_count", "xbzrle_cache_miss", "xbzrle_overflow")
    ctr = [f"{k}={int(np.asarray(trace.counters[k])[p]):,}" for k in shown if k in trace.counters]
    if ctr:
        parts.append("counters: " + ", ".join(ctr))
    ev = trace.events_of_pass(p)
    if ev:
        parts.append("events: " + "; ".join(html.escape(_event_text(e)) for e in ev[:6])
                     + (f" (+{len(ev) - 6} more)" if len(ev) > 6 else ""))
    return "<br>".join(parts)


def player_caption(trace: Trace, charts: PassCharts) -> str:
    """The one sentence a student reads first: what the player shows and its answer for this trace."""
    n = trace.n_passes
    first = "Each pass sends the pages dirtied since the previous one: watch the map thin out pass by pass"
    if charts.threshold is not None and charts.has_remaining:
        verdict = (f"; the dirty pages left fit the downtime limit (green line, {charts.threshold:,.0f} pages) "
                   f"after pass {charts.converges_after}, so the migration can stop there"
                   if charts.converges_after is not None
                   else f"; the dirty pages left never fall below the downtime limit (green line, "
                        f"{charts.threshold:,.0f} pages): this migration does not converge")
    else:
        verdict = ""
    name = trace.meta.get("name") or trace.source
    return (f"<b>{html.escape(str(name))}</b>: {n} pass{'es' if n != 1 else ''} over {trace.n_pages:,} pages. "
            f"{first}{verdict}.")


class PlayerLayout:
    """The bokeh models of a player over ``trace`` (see the module docstring); :attr:`layout` is the root.

    Args:
        map_size: page map frame (pixels, square at most).
        chart_width: width of each per-pass chart.
        interval_ms: time per pass when playing.
        pixel_budget: all the passes' maps together (see :class:`~ramlab.plots.page_map.PageMap`).
        python: ``False`` for a standalone page (no Python behind it: fill the maps with
            ``page_map.fill_overviews()``).
        grid_width, rule: see :class:`~ramlab.plots.page_map.PageMap`.
    """

    def __init__(self, trace: Trace, *, map_size: int = 380, chart_width: int = 340, interval_ms: int = 900,
                 grid_width: int | None = None, rule: str = "rarest", pass_index: int = 0,
                 pixel_budget: int = PIXEL_BUDGET, python: bool = True) -> None:
        self.trace = trace
        self.counts = class_counts(trace.classes)
        self.nbytes = trace.bytes_per_pass().astype(np.float64)
        self.page_map = PageMap(trace, pass_index, width=map_size, height=map_size, grid_width=grid_width,
                                rule=rule, counts=self.counts, pixel_budget=pixel_budget,
                                python=python)
        self.slider = self.page_map.slider
        self.slider.width = max(map_size - 120, 160)
        self.toggle = Toggle(label="play", width=70, button_type="success", disabled=trace.n_passes < 2)
        self.prev_button = Button(label="\u25c0", width=36, disabled=trace.n_passes < 2)
        self.next_button = Button(label="\u25b6", width=36, disabled=trace.n_passes < 2)
        self.charts = pass_charts(trace, width=chart_width, counts=self.counts, nbytes=self.nbytes)
        self.infos = [pass_info_html(trace, self.counts, self.nbytes, p) for p in range(trace.n_passes)]
        total_w = map_size + 106 + chart_width  # the map figure (frame, axes, toolbar) and the charts
        caption = player_caption(trace, self.charts)
        if trace.error:
            caption += f"<br><b style='color:#b00'>stream error:</b> {html.escape(trace.error)}"
        # fixed boxes, tall enough for the longest text (the layout never moves, no text is cut)
        self.caption = Div(text=caption, width=total_w, height=text_height([caption], total_w, 13, 1.45),
                           styles={"font-size": "13px", "line-height": "1.45", "overflow-y": "auto"})
        self.info = Div(text=self.infos[self.page_map.pass_index], width=total_w,
                        height=text_height(self.infos, total_w, 12, 1.6),
                        styles={"font-size": "12px", "line-height": "1.6", "overflow-y": "auto"})
        self.toggle.js_on_change("active", CustomJS(args=dict(toggle=self.toggle, slider=self.slider,
                                                              interval=int(interval_ms)), code=_PLAY_JS))
        self.prev_button.js_on_click(CustomJS(args=dict(slider=self.slider, delta=-1), code=_STEP_JS))
        self.next_button.js_on_click(CustomJS(args=dict(slider=self.slider, delta=1), code=_STEP_JS))
        self.slider.js_on_change("value", CustomJS(
            args=dict(boxes=self.charts.boxes, info=self.info, infos=self.infos), code=_PASS_JS))
        for b in self.charts.boxes:
            b.update(left=self.page_map.pass_index - 0.5, right=self.page_map.pass_index + 0.5)
        controls = row(self.toggle, self.prev_button, self.slider, self.next_button)
        self.layout = column(self.caption, controls,
                             row(column(self.page_map.figure, self.page_map.legend), column(*self.charts.figures)),
                             self.info)
        self.document = Document()
        self.document.add_root(self.layout)
        self.document.js_on_event("document_ready", CustomJS(args=dict(root=self.layout, slider=self.slider,
                                                                       toggle=self.toggle), code=_KEYS_JS))
        self.page_map.attach(self.document)

    def on_pass(self, p: int) -> None:
        """Python side of a pass change (the browser did it already): the highlight boxes' values (the
        text boxes are written by the page only: changing a Div's model re-lays out the whole page)."""
        for b in self.charts.boxes:
            if b.left != p - 0.5:
                b.update(left=p - 0.5, right=p + 0.5)

    def info_html(self, p: int) -> str:
        """The per-pass text of pass ``p`` (what the page shows under the charts)."""
        return self.infos[p]
