"""``LiveMigration``: a migration as it happens, and the controls to steer it.

The view follows a :class:`~ramlab.live.run.LiveRun` (a real QEMU migration of the test guest, or a
capture replayed at its recorded pace). A background thread wakes when the run changes, at most
``max_rate`` times a second, takes a :class:`~ramlab.live.decoder.LiveSnapshot` (reduced arrays
only) and pushes it to the browser through ipywidgets' comm, which is thread-safe; the kernel stays
free (cells run while the migration goes on). It shows

- the page-class map of the current pass, updating as records arrive,
- the per-pass bars (pages by class, bytes), growing a bar per pass,
- QEMU's remaining dirty pages over time against ``max-bandwidth x downtime-limit`` (the pages
  that fit in the allowed downtime: below the line, QEMU stops the VM and completes),
- QEMU's own counters (``query-migrate``) beside ramlab's decode of the same bytes,
- controls: ``max-bandwidth``, ``downtime-limit``, ``xbzrle-cache-size`` (``migrate-set-parameters``),
  ``auto-converge`` (``migrate-set-capabilities``, before the migration starts: QEMU refuses
  capability changes during one), switch to postcopy (``migrate-start-postcopy``) and cancel
  (``migrate_cancel``). QEMU's answer — or its error — is shown under them.

A thin ipywidgets shell: the map, the bars and the curve are the bokeh figures of
:class:`~ramlab.plots.live.LivePlots`, which each refresh feeds the snapshot; this module holds the
thread that follows the run, the controls and the text.

    >>> import ramlab, ramlab.live
    >>> view = LiveMigration(ramlab.live.replay(ramlab.data_path("postcopy"), speed=100))
    >>> view.run.wait(60) and view.refresh() and view.map_source.data["pass_"][0]
    3
"""

from __future__ import annotations

import html
import threading
import time
from types import SimpleNamespace
from typing import Any

import ipywidgets as W
from jupyter_bokeh import BokehModel

from ramlab.plots.live import LivePlots
from ramlab.plots.palette import text_height
from ramlab.plots.static import class_map_img, figure_html, stacked_bars_svg
from ramlab.widgets._common import ViewBox

__all__ = ["LiveMigration"]

_MIB = 1 << 20
#: seconds between two updates of the charts and tables (the page map updates at every refresh)
CHARTS_PERIOD = 0.25
#: width of QEMU's counters beside the curve (pixels)
COUNTERS_WIDTH = 420


class LiveMigration(ViewBox):
    """The live view of a :class:`~ramlab.live.run.LiveRun` (see the module docstring).

    Args:
        run: what to follow (``ramlab.capture.watch(...)`` or ``ramlab.live.replay(...)``).
        map_size: page map frame size in pixels; ``chart_width``: per-pass charts width.
        max_rate: most updates per second (10).
        follow: start the background thread (``False``: call :meth:`refresh` yourself).
    """

    def __init__(self, run: Any, *, map_size: int = 360, chart_width: int = 420, max_rate: float = 10.0,
                 follow: bool = True) -> None:
        self.run = run
        self.max_rate = float(min(max_rate, 10.0))
        self.updates = 0
        self.map_updates = 0
        self.timings_ms: list[float] = []
        self._lock = threading.RLock()
        self._seen_version = -1
        self._charts_at = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        snap = run.snapshot()
        self._frame = int(map_size)
        #: the figures and their sources (:class:`~ramlab.plots.live.LivePlots`), fed by :meth:`refresh`
        self.plots = LivePlots(snap, map_size=map_size, chart_width=chart_width)
        pl = self.plots
        self.map_source = pl.map_source
        self.bars_pages, self.bars_bytes, self.curve = pl.bars_pages, pl.bars_bytes, pl.curve
        self.quads_source, self.bars_source = pl.quads_source, pl.bars_source
        self.remaining_source, self.pass_source = pl.remaining_source, pl.pass_source
        # the map's place: its figure comes once the RAM block list is known (its size depends on it)
        self.map_model: BokehModel | None = None
        # the map's legend: its height is reserved for the most lines a pass can need once the map is
        # made (:attr:`~ramlab.plots.live.LivePlots.legend_height`); a minimum, so an estimate too short
        # lets it grow rather than cut its text
        self.legend = W.HTML(layout=W.Layout(width=f"{pl.legend_width}px"))
        self.map_box = W.VBox([W.HTML("<i>page map: waiting for the RAM block list…</i>"), self.legend],
                              layout=W.Layout(min_width=f"{self._frame + 60}px"))
        self.map_box.add_class("ramlab-live-map")
        # fixed sizes: text that changes ten times a second must not make the page jump
        self.status = W.HTML(layout=W.Layout(height="26px", overflow="hidden"))
        self.counters = W.HTML(layout=W.Layout(width=f"{COUNTERS_WIDTH}px",
                                               min_height=f"{counters_height(COUNTERS_WIDTH)}px"))
        self.message = W.HTML(layout=W.Layout(min_height="26px"))
        self.controls = self._build_controls()
        self.bars_model = BokehModel(pl.bars)
        self.curve_model = BokehModel(self.curve)
        for m in (self.bars_model, self.curve_model):
            m.layout.flex = "0 0 auto"
        top = W.HBox([self.map_box, self.bars_model], layout=W.Layout(flex_flow="row wrap"))
        bottom = W.HBox([self.curve_model, self.counters], layout=W.Layout(flex_flow="row wrap"))
        super().__init__([self.status, top, bottom, self.controls, self.message])
        self.add_class("ramlab-live")
        if follow:
            self.follow()  # every update from one thread: the browser gets them in order
        else:
            self.refresh()

    # ------------------------------------------------------------------ what nbconvert shows
    def static_html(self) -> str:
        """The state when the notebook was saved: the page map of the last pass and the per-pass bars."""
        snap = self.run.snapshot()
        if not snap.n_passes or self.plots.last_image is None:
            return figure_html("Live migration (static picture)", f"<p>{html.escape(snap.status)}: no pass yet</p>")
        p = snap.n_passes - 1
        img = class_map_img(self.plots.last_image, width=self._frame, alt=f"page classes of pass {p}")
        bars = stacked_bars_svg(snap.counts, current=p, width=380, height=180)
        body = (f"<div style='display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start'>{img}"
                f"<div>{bars}</div></div>")
        counts = {k: int(c) for k, c in enumerate(snap.counts[p]) if c}
        return figure_html(f"Live migration {self.run.name}: {snap.status}, pass {p} (static picture)", body,
                           _counter_table(snap, _last_sample(snap), done=snap.finished), counts=counts)

    def summary_text(self) -> str:
        snap = self.run.snapshot()
        return f"LiveMigration {self.run.name!r}: {snap.status}, {snap.n_passes} passes"

    # ------------------------------------------------------------------ following the run
    def follow(self) -> None:
        """Update from a background thread until the run is finished (started by the constructor)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._follow, name="ramlab-live-view", daemon=True)
        self._thread.start()

    def stop_following(self) -> None:
        self._stop.set()

    def _follow(self) -> None:
        period = 1.0 / self.max_rate
        last = 0.0
        first = True
        while not self._stop.is_set():
            if not first:
                self.run.wait_change(self._seen_version, 1.0)
            first = False
            wait = last + period - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # at most max_rate updates a second, whatever the run does
            last = time.monotonic()
            try:
                self.refresh()
            except Exception as exc:  # keep the view alive; say what broke
                self.message.value = f"<span style='color:#b00'>view update failed: {html.escape(repr(exc))}</span>"
            if self.run.finished and self._seen_version == self.run.version:
                self.refresh(final=True)
                return

    def refresh(self, final: bool = False) -> bool:
        """Show the run's state now (what the background thread calls); returns True."""
        t0 = time.perf_counter()
        snap = self.run.snapshot()
        with self._lock:
            self._seen_version = snap.version
            if snap.blocks and self.plots.grid is None:
                self._init_grid(snap)
            self._update_map(snap)
            now = time.monotonic()
            if final or snap.finished or now - self._charts_at >= CHARTS_PERIOD:
                self._charts_at = now
                self.plots.update_bars(snap, final)
                self.plots.update_curve(snap, self.run.passes, getattr(self.run, "initial_parameters", {}))
                self._update_text(snap, final)
            self.updates += 1
        self.timings_ms.append((time.perf_counter() - t0) * 1e3)
        return True

    # ------------------------------------------------------------------ the page map
    def _init_grid(self, snap: Any) -> None:
        """The map's figure, once the RAM block list is known, with its first image."""
        fig = self.plots.init_map(snap)
        self._update_map(snap)  # the first image goes in before the document is copied to the browser
        self.legend.layout.min_height = f"{self.plots.legend_height}px"
        self.map_model = BokehModel(fig)
        self.map_model.layout.flex = "0 0 auto"
        self.map_box.children = (self.map_model, self.legend)

    def _update_map(self, snap: Any) -> None:
        legend = self.plots.update_map(snap)
        if legend is None:
            return
        self.legend.value = legend
        self.map_updates += 1

    @property
    def map_figure(self) -> Any:
        """The page map's bokeh figure (``None`` until the RAM block list is known)."""
        return self.plots.map_figure

    # ------------------------------------------------------------------ text
    def _update_text(self, snap: Any, final: bool) -> None:
        run = self.run
        what = "replay of a recorded capture" if run.replay else "a live QEMU migration"
        q = _last_sample(snap)
        err = f" <b style='color:#b00'>error:</b> {html.escape(snap.error)}" if snap.error else ""
        failed = getattr(run, "error", None)
        if failed is not None:
            err += f" <b style='color:#b00'>capture failed:</b> {html.escape(str(failed))[:400]}"
        self.status.value = (
            f"<div style='font-size:13px'><b>{html.escape(run.name)}</b> — {what}: <b>{html.escape(snap.status)}</b>"
            f", t = {snap.t:.2f} s, {snap.n_passes} passes, {snap.decoded_bytes / _MIB:.2f} MiB decoded"
            f" (QEMU status {html.escape(str(q.get('status', '?')))}){err}</div>")
        self.counters.value = _counter_table(snap, q, done=snap.finished)
        self._update_controls(snap)

    # ------------------------------------------------------------------ controls
    def _build_controls(self) -> W.Widget:
        run = self.run
        style = {"description_width": "initial"}
        lay = W.Layout(width="210px")
        # the fields show QEMU's parameters as last set (filled in once known) until the user edits them
        self.bandwidth = W.BoundedFloatText(value=0.0, min=0.0, max=100000, step=1, description="max-bandwidth MiB/s",
                                            style=style, layout=lay)
        self.downtime = W.BoundedIntText(value=0, min=0, max=2000000, description="downtime-limit ms", style=style,
                                         layout=lay)
        self.cache = W.BoundedFloatText(value=0.0, min=0.0, max=100000, description="xbzrle-cache-size MiB",
                                        style=style, layout=lay)
        self._fields = {"max-bandwidth": (self.bandwidth, _MIB), "downtime-limit": (self.downtime, 1),
                        "xbzrle-cache-size": (self.cache, _MIB)}
        self._shown_params: dict[str, Any] = {}
        self.set_button = W.Button(description="set parameters", button_style="primary",
                                   tooltip="migrate-set-parameters")
        self.auto_converge = W.Checkbox(value=False, description="auto-converge", indent=False,
                                        layout=W.Layout(width="130px"),
                                        tooltip="before migrating only: QEMU refuses capability changes during one")
        self.migrate_button = W.Button(description="migrate", tooltip="start the migration")
        self.postcopy_button = W.Button(description="switch to postcopy", tooltip="migrate-start-postcopy")
        self.cancel_button = W.Button(description="cancel", button_style="danger", tooltip="migrate_cancel")
        self.player_button = W.Button(description="open in player", tooltip="MigrationPlayer on the finished trace")
        self.player_out = W.Output()
        self.set_button.on_click(lambda _: self._command("set", self._set_parameters))
        self.auto_converge.observe(self._on_auto_converge, names="value")
        self.migrate_button.on_click(lambda _: self._command("migrate", run.migrate))
        self.postcopy_button.on_click(lambda _: self._command("migrate-start-postcopy", run.start_postcopy))
        self.cancel_button.on_click(lambda _: self._command("migrate_cancel", run.cancel))
        self.player_button.on_click(lambda _: self._show_player())
        row1 = W.HBox([self.bandwidth, self.downtime, self.cache, self.set_button])
        row2 = W.HBox([self.auto_converge, self.migrate_button, self.postcopy_button, self.cancel_button,
                       self.player_button])
        return W.VBox([row1, row2, self.player_out])

    def _field_params(self) -> dict[str, int]:
        """The fields' values in QEMU's units (bytes/s, ms, bytes)."""
        return {name: int(round(field.value * unit)) for name, (field, unit) in self._fields.items()}

    def _sync_fields(self, params: dict[str, Any]) -> None:
        """Show QEMU's parameters in the fields the user has not edited."""
        for name, (field, unit) in self._fields.items():
            value = params.get(name)
            if value is None or self._shown_params.get(name) == value:
                continue
            shown = self._shown_params.get(name)
            if shown is None or int(round(field.value * unit)) == int(shown):  # not edited
                field.value = round(float(value) / unit, 3) if unit != 1 else int(value)
                self._shown_params[name] = value

    def _set_parameters(self) -> Any:
        """``migrate-set-parameters`` with the fields that differ from QEMU's values, then what QEMU reports."""
        current = self.run.parameters
        wanted = self._field_params()
        if "xbzrle" not in getattr(self.run.decoder, "capabilities", ()):
            wanted.pop("xbzrle-cache-size")
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if not changed:
            return "nothing to change (the fields hold QEMU's values)"
        self.run.set_parameters(**{k.replace("-", "_"): v for k, v in changed.items()})
        self._shown_params.update(changed)
        now = self.run.query("query-migrate-parameters")  # what QEMU reports, not what we sent
        return "QEMU's query-migrate-parameters now: " + ", ".join(
            f"{k} = {now[k]:,}" for k in ("max-bandwidth", "downtime-limit", "xbzrle-cache-size") if k in now)

    def _on_auto_converge(self, change: dict) -> None:
        self._command("auto-converge", lambda: self.run.set_capabilities(auto_converge=bool(change["new"])))

    def _command(self, name: str, call: Any) -> None:
        """Run a control in a thread (QEMU answers within milliseconds, but never block the kernel)."""
        self.message.value = f"<span style='color:#666'>{html.escape(name)}…</span>"

        def target() -> None:
            try:
                out = call()
            except Exception as exc:  # QEMU's refusal is information for the student
                text = f"<span style='color:#b00'>{html.escape(name)}: {html.escape(str(exc))}</span>"
            else:
                extra = out if isinstance(out, str) else ""
                text = f"<span style='color:#2a7'>{html.escape(name)}: done.</span> {html.escape(extra)}"
            with self._lock:
                self.message.value = text

        threading.Thread(target=target, daemon=True, name=f"ramlab-live-{name}").start()

    def _update_controls(self, snap: Any) -> None:
        run = self.run
        self._sync_fields(snap.parameters)
        steerable = not run.replay and snap.status in ("starting", "ready", "migrating")
        for w in (self.bandwidth, self.downtime, self.set_button, self.cancel_button):
            w.disabled = not steerable
        xbz = "xbzrle" in getattr(run.decoder, "capabilities", ())
        self.cache.disabled = not (steerable and xbz)
        self.auto_converge.disabled = run.replay or snap.status not in ("starting", "ready")
        self.migrate_button.disabled = run.replay or snap.status != "ready"
        self.postcopy_button.disabled = not (steerable and getattr(run.decoder, "mode", "") == "postcopy"
                                             and snap.status == "migrating")
        self.player_button.disabled = not snap.finished
        if run.replay and not self.message.value:
            self.message.value = ("<span style='color:#666'>a recorded capture replayed at its recorded pace: "
                                  "the controls need a live QEMU</span>")

    def _show_player(self) -> None:
        from ramlab.widgets.player import MigrationPlayer

        self.player_out.clear_output()
        with self.player_out:
            from IPython.display import display

            display(MigrationPlayer(self.run.trace))

    def player(self):  # type: ignore[no-untyped-def]
        """A :class:`~ramlab.widgets.MigrationPlayer` on the run's trace (the whole migration once finished)."""
        from ramlab.widgets.player import MigrationPlayer

        return MigrationPlayer(self.run.trace)


def _last_sample(snap: Any) -> dict[str, Any]:
    """QEMU's last ``query-migrate`` sample (not an event of the capture)."""
    return next((s for s in reversed(snap.samples) if "event" not in s), {})


_EXTRA = (("ram.remaining", "remaining", " bytes"), ("ram.dirty-pages-rate", "dirty rate", " pages/s"),
          ("ram.mbps", "throughput", " Mbit/s"), ("expected-downtime", "expected downtime", " ms"),
          ("cpu-throttle-percentage", "CPU throttle", " %"))


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else html.escape(str(v))


def counters_height(width: int) -> int:
    """Pixels QEMU's counters (:func:`_counter_table`) need at their longest: every row and every extra
    counter with 12-digit values, and the note shown at the end.  The box is that tall from the start,
    so the view does not grow when QEMU reports more or the migration completes (a minimum: an estimate
    too short lets it grow rather than cut the text).

    >>> 200 < counters_height(COUNTERS_WIDTH) < 400
    True
    """
    big = 10**11
    q: dict[str, Any] = {k: big for k in ("ram.normal", "ram.duplicate", "xbzrle-cache.pages", "xbzrle-cache.overflow",
                                          "compression.pages", "ram.dirty-sync-count", "ram.transferred")}
    q.update({key: big for key, _, _ in _EXTRA})
    snap = SimpleNamespace(records={"page": big, "zero": big, "xbzrle": big, "compressed": big}, n_passes=big,
                           decoded_bytes=big)
    return text_height([_counter_table(snap, q, done=True)], width, _COUNTERS_FONT_PX, _COUNTERS_LINE_HEIGHT)


_COUNTERS_FONT_PX, _COUNTERS_LINE_HEIGHT = 12, 1.5


def _counter_table(snap: Any, q: dict[str, Any], *, done: bool) -> str:
    """QEMU's counters beside ramlab's decode; at the end the page counts must agree (✓)."""
    r = snap.records
    overflow = q.get("xbzrle-cache.overflow")
    rows: list[tuple[str, Any, Any, str]] = [
        ("normal pages", q.get("ram.normal"), r.get("page", 0), "eq"),
        ("zero pages", q.get("ram.duplicate"), r.get("zero", 0), "eq"),
    ]
    if "xbzrle-cache.pages" in q or r.get("xbzrle"):
        ours = r.get("xbzrle", 0) + (overflow or 0)
        rows.append(("XBZRLE pages (+ overflowed)", q.get("xbzrle-cache.pages"), ours, "le"))
    if "compression.pages" in q or r.get("compressed"):
        rows.append(("compressed pages", q.get("compression.pages"), r.get("compressed", 0), "info"))
    rows += [
        ("dirty syncs / passes", q.get("ram.dirty-sync-count"), snap.n_passes, "info"),
        ("bytes (transferred / decoded)", q.get("ram.transferred"), snap.decoded_bytes, "info"),
    ]
    body = []
    for name, qemu, ours, rule in rows:
        mark = ""
        if done and qemu is not None and rule != "info":
            ok = qemu == ours if rule == "eq" else ours <= qemu
            mark = "<span style='color:#2a7'>✓</span>" if ok else "<span style='color:#b00'>≠</span>"
        num = "<td style='text-align:right;padding:0 4px'>"
        body.append(f"<tr><td style='padding:0 4px 0 0'>{name}</td>{num}{_fmt(qemu)}</td>{num}{_fmt(ours)}</td>"
                    f"<td>{mark}</td></tr>")
    extra = []
    for key, label, unit in _EXTRA:
        if key in q:
            extra.append(f"{label} {_fmt(q[key])}{unit}")
    note = ("page counts agree when ✓ (QEMU 7.2 counts an overflowed XBZRLE page both as XBZRLE and as "
            "normal; newer QEMUs also count unchanged pages)" if done else "QEMU is sampled, ramlab lags by a chunk")
    # rows as tall as a line of text (no cell padding): counters_height() counts them as lines
    return (f"<div style='font-size:{_COUNTERS_FONT_PX}px;line-height:{_COUNTERS_LINE_HEIGHT}'>"
            "<table style='border-collapse:collapse'><tr><th></th><th>QEMU</th><th>ramlab</th><th></th></tr>"
            + "".join(body) + "</table>" + ("<br>" + ", ".join(extra) if extra else "")
            + f"<br><span style='color:#666'>{note}</span></div>")
