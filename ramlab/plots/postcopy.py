"""The postcopy discard maps as one bokeh layout, and the numpy that prepares them.

How QEMU computes the postcopy discard bitmap, step by step, on the page grid of one RAM block:
target pages are laid out on rows of whole host pages (or several host pages when they are
small), with the host-page boundaries drawn.  A step of ``plan.steps`` (seed: unsent pass, dirty
pass, ``unsent |= dirty``, send runs; modern: canonicalise, send runs) is shown as the maps before
and after it side by side, the host pages it fixed up outlined and the ranges it sent hatched
(duplicated ranges in magenta).  :class:`DiscardLayout` holds the bokeh models (a step ``Select``, the
summary box and the two maps); the POSTCOPY_RAM_DISCARD commands, exactly as QEMU batches them
(<= 12 ranges each), come from :func:`command_rows` with the payload of
:func:`ramlab.wire.commands.encode_discard_payload` and are shown by :func:`commands_html`.
:class:`ramlab.widgets.PostcopyDiscardView` is the notebook shell around them (the algorithm
toggle, the legend and the table of commands); nothing here imports ipywidgets, so the HTML
report and a script can draw the maps too.

**Why a step change is fast.**  As in the migration player (:mod:`ramlab.plots.page_map`), every
step's images, rectangles, segments and summary travel once; choosing a step in the page makes its
image renderers the visible ones and swaps the small rectangle / segment data, in JavaScript, in one
task: both maps repaint in the next frame, without waiting for the kernel (which only keeps its
copy up to date).  Beyond :data:`STEP_PIXEL_BUDGET` pixels or :data:`MAX_CLIENT_STEPS` steps Python
sends the step's images on each change instead.

The data preparation is pure numpy (top-level functions), testable without a browser:

    >>> host_grid(4096, 512), host_grid(4096, 1), host_grid(8, 4)
    ((8, 512, 1), (64, 64, 1), (2, 4, 1))
    >>> state_codes(np.array([1, 0, 1, 0], bool), np.array([0, 0, 1, 1], bool)).tolist()
    [1, 0, 3, 2]
    >>> range_segments([(2, 7)], cols=4)                 # pages 2..8 on rows of 4
    ([2, 0, 0], [4, 4, 1], [0, 1, 2])
    >>> from ramlab.model.postcopy_plan import plan_discards
    >>> d = np.zeros(64, bool); d[[3, 17, 18]] = True; u = np.zeros(64, bool); u[40:] = True
    >>> steps = plan_view_steps(plan_discards(d, u, 8), d, u)
    >>> maps = DiscardLayout(host_grid(64, 8), host_ratio=8, n_pages=64)
    >>> maps.set_steps(steps, [s.label for s in steps], duplicated=[])
    >>> maps.step_select.value, maps.client                # the last step, switched by the page
    (3, True)
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from bokeh.document import Document
from bokeh.events import DocumentReady
from bokeh.layouts import column
from bokeh.models import (
    CDSView,
    ColumnDataSource,
    CustomJS,
    CustomJSHover,
    Div,
    GlyphRenderer,
    GroupFilter,
    HoverTool,
    Image,
    LinearColorMapper,
    Range1d,
    Select,
)
from bokeh.plotting import figure

from ramlab.constants import TARGET_PAGE_SIZE
from ramlab.errors import RamlabError
from ramlab.model.postcopy_plan import DiscardPlan, discard_batches
from ramlab.plots.page_map import BARE_GLYPHS, SET_TEXT_JS, TEXT_RESET_JS

__all__ = [
    "DiscardLayout",
    "StepSelect",
    "ViewStep",
    "CaptureDiscards",
    "host_grid",
    "state_codes",
    "grid_image",
    "host_page_rects",
    "range_segments",
    "plan_view_steps",
    "plan_commands",
    "capture_view_steps",
    "command_rows",
    "capture_discards",
    "covered_twice",
    "step_images",
    "sent_segments",
    "step_summary_html",
    "commands_html",
    "discard_legend_html",
    "STATE_NAMES",
    "STATE_COLORS",
    "CAPTURE_STATE_NAMES",
    "STEP_PIXEL_BUDGET",
    "MAX_CLIENT_STEPS",
]

Range = tuple[int, int]

#: map states: 0 sent & clean, 1 dirty, 2 unsent, 3 dirty + unsent, 4 no page (grid padding)
STATE_NAMES = ("sent, clean", "dirty", "unsent", "dirty + unsent", "")
STATE_COLORS = ("#e8e8e8", "#d55e00", "#56b4e9", "#0072b2", "#ffffff")  # Okabe-Ito, colour-blind safe
#: the same codes in capture mode (``from_migration``)
CAPTURE_STATE_NAMES = ("sent before the switch", "discarded", "never sent before the switch",
                       "discarded, never sent", "")
NO_PAGE_STATE = 4
FIXUP_COLOR = "#e69f00"
SENT_COLOR = "#111111"
DUP_COLOR = "#cc79a7"


# ----------------------------------------------------------------------------------
# pure data preparation
# ----------------------------------------------------------------------------------


def host_grid(n_pages: int, host_ratio: int, max_cols: int = 512) -> tuple[int, int, int]:
    """``(rows, cols, fx)`` of the page grid: each row holds whole host pages.

    ``cols`` is a multiple of ``host_ratio`` (several small host pages per row, chosen so the
    grid is about square) or, for host pages wider than ``max_cols`` target pages, one host
    page per row reduced ``fx`` target pages per column.  Target page ``g`` is at row
    ``g // (cols * fx)``, column ``(g % (cols * fx)) // fx``.

    >>> host_grid(1 << 18, 1 << 18)        # one 1 GiB host page: 1 row, 512 columns of 512 pages
    (1, 512, 512)
    """
    r = max(1, int(host_ratio))
    n = max(0, int(n_pages))
    if r > max_cols:
        fx = -(-r // max_cols)
        return max(1, -(-n // r)), -(-r // fx), fx
    per_row = 1
    while r * per_row * 2 <= max_cols and -(-n // (r * per_row)) > r * per_row:
        per_row *= 2
    cols = r * per_row
    return max(1, -(-n // cols)), cols, 1


def state_codes(dirty: np.ndarray, unsent: np.ndarray | None) -> np.ndarray:
    """uint8 state per target page: 0 sent & clean, 1 dirty, 2 unsent, 3 both (``unsent=None``: 0/1)."""
    d = np.asarray(dirty, bool).astype(np.uint8)
    if unsent is None:
        return d
    return d | (np.asarray(unsent, bool).astype(np.uint8) << 1)


def grid_image(codes: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
    """The codes as a ``[rows, cols]`` image padded with ``NO_PAGE_STATE``; with ``fx > 1`` each
    pixel shows the highest code of its ``fx`` pages (so a single dirty page stays visible).

    >>> grid_image(np.array([0, 1, 0, 0, 2], np.uint8), (2, 2, 2)).tolist()
    [[1, 0], [2, 4]]
    """
    rows, cols, fx = grid
    c = np.asarray(codes, np.uint8).ravel()
    flat = np.full(rows * cols * fx, NO_PAGE_STATE, np.uint8)
    flat[: c.size] = c
    img = flat.reshape(rows, cols, fx)
    if fx == 1:
        return np.ascontiguousarray(img[:, :, 0])  # a strided view would not serialise to the browser
    # padding counts only where the whole pixel is padding
    real = np.where(img == NO_PAGE_STATE, 0, img).max(axis=2)
    return np.where((img == NO_PAGE_STATE).all(axis=2), NO_PAGE_STATE, real).astype(np.uint8)


def host_page_rects(host_pages: Sequence[int], host_ratio: int, grid: tuple[int, int, int]) -> dict[str, list]:
    """Rectangles (grid coordinates: ``left, right, top, bottom``) outlining host pages.

    >>> host_page_rects([1, 2], 4, (2, 8, 1))
    {'left': [4.0, 0.0], 'right': [8.0, 4.0], 'top': [0.0, 1.0], 'bottom': [1.0, 2.0], 'host_page': [1, 2]}
    """
    rows, cols, fx = grid
    hp = np.asarray(list(host_pages), np.int64)
    first = hp * int(host_ratio)
    row = first // (cols * fx)
    left = (first % (cols * fx)) / fx
    width = min(int(host_ratio) / fx, cols)
    return {
        "left": left.astype(float).tolist(),
        "right": (left + width).astype(float).tolist(),
        "top": row.astype(float).tolist(),
        "bottom": (row + 1).astype(float).tolist(),
        "host_page": hp.tolist(),
    }


def range_segments(ranges: Sequence[Range], cols: int, fx: int = 1) -> tuple[list[int], list[int], list[int]]:
    """Split target-page ranges ``(start, n)`` into per-row segments ``(x0s, x1s, rows)`` of the grid.

    Vectorised: the output has one entry per grid row a range touches.
    """
    if not len(ranges):
        return [], [], []
    span = cols * fx
    r = np.asarray(ranges, np.int64).reshape(-1, 2)
    start, end = r[:, 0], r[:, 0] + r[:, 1]
    r0, r1 = start // span, (np.maximum(end, start + 1) - 1) // span
    counts = (r1 - r0 + 1).astype(np.int64)
    idx = np.repeat(np.arange(len(r)), counts)
    row = r0[idx] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    lo = np.maximum(start[idx], row * span) - row * span
    hi = np.minimum(end[idx], (row + 1) * span) - row * span
    return (lo // fx).tolist(), (-(-hi // fx)).tolist(), row.tolist()


@dataclass(frozen=True)
class ViewStep:
    """One selectable step: the maps before and after it, the host pages it fixed up and
    the ranges (target pages) it sent."""

    label: str
    name: str
    before_dirty: np.ndarray | None
    before_unsent: np.ndarray | None
    after_dirty: np.ndarray
    after_unsent: np.ndarray | None
    fixups: tuple[int, ...]
    sent: tuple[Range, ...]


def plan_view_steps(
    plan: DiscardPlan, dirty: np.ndarray | None = None, unsent: np.ndarray | None = None
) -> list[ViewStep]:
    """The steps of ``plan`` with their before / after maps (before the first step: the
    input bitmaps ``dirty`` / ``unsent`` if given, else ``None``).

    >>> from ramlab.model.postcopy_plan import plan_discards
    >>> d = np.array([0, 0, 1, 0,  0, 0, 0, 0], bool); u = np.array([0, 0, 0, 0,  0, 1, 1, 1], bool)
    >>> steps = plan_view_steps(plan_discards(d, u, 4), d, u)
    >>> [(s.name, s.fixups, s.sent) for s in steps]    # doctest: +NORMALIZE_WHITESPACE
    [('unsent_pass', (1,), ((4, 4),)), ('dirty_pass', (0,), ((0, 4),)), ('or', (), ()),
     ('send_runs', (), ((0, 8),))]
    """
    out: list[ViewStep] = []
    bd = None if dirty is None else np.asarray(dirty, bool)
    bu = None if unsent is None or plan.algorithm == "modern" else np.asarray(unsent, bool)
    titles = {
        "unsent_pass": "1 unsent pass: partly sent host pages -> discard + whole host page unsent & dirty",
        "dirty_pass": "2 dirty pass: partly dirty host pages -> whole host page dirty & unsent",
        "canonicalise": "canonicalise: partly dirty host pages -> whole host page dirty (nothing sent)",
        "or": "unsentmap |= dirty: the map whose runs are discarded",
        "send_runs": "send the runs of the discard map",
    }
    for k, s in enumerate(plan.steps):
        label = f"{k + 1}. {s.name} ({len(s.fixups)} fix-ups, {len(s.sent)} ranges)"
        out.append(ViewStep(label if s.name not in titles else f"{label}: {titles[s.name]}", s.name, bd, bu,
                            np.asarray(s.dirty, bool), None if s.unsent is None else np.asarray(s.unsent, bool),
                            tuple(np.asarray(s.fixups).tolist()), tuple(s.sent)))
        bd, bu = out[-1].after_dirty, out[-1].after_unsent
    return out


def command_rows(
    batches: Sequence[Sequence[Range]],
    block: str,
    target_page_size: int = TARGET_PAGE_SIZE,
    *,
    series: Sequence[str] | None = None,
    duplicated: Sequence[Range] = (),
    payloads: Sequence[bytes] | None = None,
) -> list[dict[str, Any]]:
    """One dict per POSTCOPY_RAM_DISCARD command: ``index``, ``series``, ``ranges`` (target pages),
    ``ranges_bytes``, ``duplicated`` (bool per range: it is, or contains, one of ``duplicated``,
    i.e. pages discarded twice), ``payload`` (bytes: ``payloads[i]`` when
    given, e.g. the real stream's, else :func:`encode_discard_payload`) and ``reencoded_ok``
    (payload == what ``encode_discard_payload`` produces).

    >>> rows = command_rows([[(0, 4)]], "m0", 4096)
    >>> rows[0]["ranges_bytes"], rows[0]["payload"].hex()
    ([(0, 16384)], '00026d300000000000000000000000000000004000')
    """
    from ramlab.wire.commands import encode_discard_payload

    dup = [(int(s), int(n)) for s, n in duplicated]
    out = []
    for i, batch in enumerate(batches):
        rb = [(int(s) * target_page_size, int(n) * target_page_size) for s, n in batch]
        enc = encode_discard_payload(block, rb)
        payload = payloads[i] if payloads is not None else enc
        out.append(dict(
            index=i,
            series=series[i] if series is not None else "",
            ranges=[(int(s), int(n)) for s, n in batch],
            ranges_bytes=rb,
            duplicated=[_contains_any((int(s), int(n)), dup) for s, n in batch],
            payload=bytes(payload),
            reencoded_ok=bytes(payload) == enc,
        ))
    return out


def _contains_any(r: Range, ranges: Sequence[Range]) -> bool:
    """Does ``r`` cover one of ``ranges`` entirely?"""
    return any(r[0] <= s and s + n <= r[0] + r[1] for s, n in ranges)


def plan_commands(plan: DiscardPlan, block: str, target_page_size: int = TARGET_PAGE_SIZE) -> list[dict[str, Any]]:
    """The POSTCOPY_RAM_DISCARD commands of ``plan`` (:func:`command_rows`): the chunk passes' ranges,
    then the final runs, each series batched as QEMU does; every chunk range of the seed is duplicated."""
    batches, series = _plan_batches(plan)
    return command_rows(batches, block, target_page_size, series=series, duplicated=plan.duplicated_ranges)


def _plan_batches(plan: DiscardPlan) -> tuple[list[list[Range]], list[str]]:
    chunk = discard_batches(plan.chunk_ranges)
    final = discard_batches(plan.final_ranges)
    return chunk + final, ["chunk"] * len(chunk) + ["final"] * len(final)


def covered_twice(ranges: Sequence[Range]) -> list[Range]:
    """Ranges all of whose pages another range of the list also discards."""
    out = []
    for i, (s, n) in enumerate(ranges):
        if any(j != i and fs <= s and s + n <= fs + fn for j, (fs, fn) in enumerate(ranges)):
            out.append((s, n))
    return out


@dataclass
class CaptureDiscards:
    """What a decoded postcopy capture discarded in one block (see :func:`capture_discards`)."""

    block: str
    n_pages: int
    host_ratio: int
    target_page_size: int
    commands: list[tuple[int, list[Range], bytes]]  # (stream offset, ranges in target pages, payload)
    sent_before: np.ndarray  # bool per target page: sent in a pass before the switch
    trace_discarded: np.ndarray  # bool: the trace's DISCARDED pages


def capture_discards(m: Any, block: str | None = None) -> CaptureDiscards:
    """Collect the POSTCOPY_RAM_DISCARD commands of a decoded :class:`~ramlab.migration.Migration`
    for one block (default: the first block with discards), the pages sent before the switch
    and the trace's DISCARDED pages.

    The ranges come from the trace (one ``"discard"`` event per command, as the loader applied
    it); the commands' raw payloads are only carried along to be shown (no bytes are parsed here).
    """
    from ramlab.constants import MIG_CMD_POSTCOPY_RAM_DISCARD
    from ramlab.trace import PageClass
    from ramlab.wire import events as ev

    tps = int(m.page_size)
    applied = [e for e in m.trace.events if e.get("kind") == "discard"]
    if block is None:
        if not applied:
            raise RamlabError("this migration has no postcopy discards (not a postcopy capture?)")
        block = applied[0]["block"]
    info = next((b for b in m.trace.blocks if b.name == block), None)
    if info is None:
        raise RamlabError(f"no RAM block {block!r}; blocks: {[b.name for b in m.trace.blocks]}")
    n = info.n_pages(tps)
    ratio = max(1, int(info.page_size or tps) // tps)
    wire = [e for e in m.events if isinstance(e, ev.Command) and e.cmd == MIG_CMD_POSTCOPY_RAM_DISCARD]
    if len(wire) < len(applied):  # each applied discard is one command of the stream
        raise RamlabError(f"{len(applied)} discards in the trace but {len(wire)} POSTCOPY_RAM_DISCARD commands")
    commands = []
    for e, d in zip(wire, applied):
        if d["block"] == block:
            commands.append((int(e.offset), [(int(s) // tps, -(-int(ln) // tps)) for s, ln in d["ranges"]],
                             bytes(e.payload)))
    cls = m.trace.classes[:, info.offset : info.offset + n]
    kinds = m.trace.pass_kinds
    first_pc = next((p for p, k in enumerate(kinds) if k == "postcopy"), len(kinds))
    sent_before = (cls[:first_pc] != PageClass.NOT_SENT).any(axis=0) if first_pc else np.zeros(n, bool)
    sent_before &= ~(cls[:first_pc] == PageClass.DISCARDED).all(axis=0) if first_pc else sent_before
    trace_discarded = (cls == PageClass.DISCARDED).any(axis=0)
    return CaptureDiscards(block, n, ratio, tps, commands, sent_before, trace_discarded)


def capture_view_steps(cap: CaptureDiscards) -> tuple[list[ViewStep], list[dict[str, Any]]]:
    """The steps (one per POSTCOPY_RAM_DISCARD command of the stream) and the command rows (the real
    payloads) of a capture's discards: before a command, the pages the earlier ones discarded."""
    unsent = ~cap.sent_before
    done = np.zeros(cap.n_pages, bool)
    steps = []
    all_ranges = [r for _, rs, _ in cap.commands for r in rs]
    for k, (off, ranges, _payload) in enumerate(cap.commands):
        before = done.copy()
        for s, n in ranges:
            done[s : s + n] = True
        # host pages the command covers (outlined only when host pages hold several target pages)
        hps = sorted({h for s, n in ranges for h in range(s // cap.host_ratio, -(-(s + n) // cap.host_ratio))}) \
            if cap.host_ratio > 1 else []
        steps.append(ViewStep(
            f"command {k + 1} at byte {off:,}: {len(ranges)} ranges, {sum(n for _, n in ranges):,} pages",
            "discard", before, unsent, done.copy(), unsent, tuple(hps), tuple(ranges)))
    if not steps:
        steps.append(ViewStep("no discard commands for this block", "discard", None, None, done, unsent, (), ()))
    commands = command_rows([rs for _, rs, _ in cap.commands], cap.block, cap.target_page_size,
                            series=["stream"] * len(cap.commands),
                            duplicated=covered_twice(all_ranges),
                            payloads=[p for _, _, p in cap.commands])
    return steps, commands


def step_images(step: ViewStep, grid: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The before / after images of ``step`` on ``grid`` (before the first step without input maps: no pages)."""
    rows, cols, _ = grid
    before = (np.full((rows, cols), NO_PAGE_STATE, np.uint8) if step.before_dirty is None
              else grid_image(state_codes(step.before_dirty, step.before_unsent), grid))
    return before, grid_image(state_codes(step.after_dirty, step.after_unsent), grid)


def sent_segments(step: ViewStep, grid: tuple[int, int, int], duplicated: Sequence[Range]) -> dict[str, list]:
    """The segments of the ranges ``step`` sent, one per grid row a range touches (``duplicated``: magenta).

    >>> s = ViewStep("", "send_runs", None, None, np.zeros(8, bool), None, (), ((2, 4),))
    >>> sent_segments(s, (2, 4, 1), [])["top"]
    [0, 1]
    """
    dup = list(duplicated)
    sent = list(step.sent)
    x0, x1, y = range_segments(sent, grid[1], grid[2])
    span = grid[1] * grid[2]
    if sent:  # the range of each segment: as many as rows it touches (range_segments' order)
        r = np.asarray(sent, np.int64).reshape(-1, 2)
        per = (np.maximum(r[:, 0] + r[:, 1], r[:, 0] + 1) - 1) // span - r[:, 0] // span + 1
        owner = [sent[i] for i in np.repeat(np.arange(len(sent)), per).tolist()]
    else:
        owner = []
    dup_of = {o: _contains_any(o, dup) for o in set(owner)}
    return dict(left=x0, right=x1, top=y, bottom=[v + 1 for v in y],
                color=[DUP_COLOR if dup_of[o] else SENT_COLOR for o in owner],
                what=[f"{o[0]}+{o[1]}" for o in owner])


# ----------------------------------------------------------------------------------
# the text beside the maps
# ----------------------------------------------------------------------------------


def step_summary_html(step: ViewStep, *, capture: CaptureDiscards | None = None, plan: DiscardPlan | None = None,
                      algorithm: str = "", n_commands: int = 0) -> str:
    """What ``step`` did, as the HTML of the summary box: its label, the host pages it touched, the ranges
    it sent, then for a ``capture`` whether its commands agree with the trace's DISCARDED pages, for a
    ``plan`` the ranges on the wire (``algorithm``, ``n_commands`` commands)."""
    s = step
    parts = [f"<b>{html.escape(s.label)}</b>"]
    if s.fixups:
        shown = ", ".join(map(str, s.fixups[:24])) + (" ..." if len(s.fixups) > 24 else "")
        parts.append(f"host pages touched: <span style='color:{FIXUP_COLOR}'>{shown}</span>")
    if s.sent:
        shown = ", ".join(f"[{a}, {a + n})" for a, n in s.sent[:12]) + (" ..." if len(s.sent) > 12 else "")
        parts.append(f"ranges sent (target pages): {shown}")
    if capture is not None:
        cap = capture
        cmd_pages = np.zeros(cap.n_pages, bool)
        for _, rs, _ in cap.commands:
            for a, n in rs:
                cmd_pages[a : a + n] = True
        agree = np.array_equal(cmd_pages, cap.trace_discarded)
        parts.append(f"{int(cmd_pages.sum()):,} of {cap.n_pages:,} target pages discarded "
                     f"({int(cmd_pages.sum()) // max(cap.host_ratio, 1):,} host pages); trace DISCARDED pages: "
                     f"{int(cap.trace_discarded.sum()):,} " + ("(agree)" if agree else "(<b>differ</b>)"))
    elif plan is not None:
        p = plan
        parts.append(f"{algorithm}: {len(p.ranges)} ranges on the wire ({len(p.chunk_ranges)} from the chunk "
                     f"passes, {len(p.final_ranges)} final runs), {len(p.duplicated_ranges)} duplicated; "
                     f"{n_commands} command(s)")
    return "<div style='font-size:12px;line-height:1.6'>" + "<br>".join(parts) + "</div>"


def commands_html(commands: Sequence[dict[str, Any]], block: str, target_page_size: int, *,
                  from_capture: bool = False, max_commands: int = 60) -> str:
    """The table of POSTCOPY_RAM_DISCARD ``commands`` (:func:`command_rows`): ranges in target pages and
    bytes (duplicated ones flagged), the payload in hex (flagged when it differs from
    :func:`~ramlab.wire.commands.encode_discard_payload`); at most ``max_commands`` rows."""
    tps = target_page_size
    rows = []
    for c in commands[:max_commands]:
        rng = "<br>".join(
            (f"<span style='color:{DUP_COLOR}' title='discarded twice'>&#9888; " if d else "<span>")
            + f"pages [{s}, {s + n}) &rarr; start 0x{bs:x}, len 0x{bl:x}</span>"
            for (s, n), (bs, bl), d in zip(c["ranges"], c["ranges_bytes"], c["duplicated"]))
        hx = c["payload"].hex(" ")
        ok = "" if c["reencoded_ok"] else " <b style='color:#b00'>(differs from encode_discard_payload!)</b>"
        td = "<td style='vertical-align:top;padding:2px 6px;border-top:1px solid #ddd'>"
        rows.append(
            f"<tr>{td}{c['index'] + 1}</td>{td}{html.escape(c['series'])}</td>{td}{len(c['ranges'])}</td>"
            f"{td}<div style='white-space:nowrap;line-height:1.3'>{rng}</div></td>"
            f"{td}<div style='font-family:monospace;font-size:10.5px;line-height:1.3;max-width:360px;"
            f"overflow-wrap:anywhere'>{hx}</div>{ok}</td></tr>")
    more = (f"<tr><td colspan=5>... {len(commands) - max_commands} more commands</td></tr>"
            if len(commands) > max_commands else "")
    note = ("payloads as found in the stream" if from_capture
            else "payloads from encode_discard_payload")
    return (f"<div style='font-size:12px;margin-top:6px'><b>{len(commands)} POSTCOPY_RAM_DISCARD "
            f"command(s)</b> for {html.escape(block)!s} (&le; 12 ranges each; target page {tps} bytes; "
            f"{note})</div>"
            "<div style='max-height:260px;overflow:auto'><table style='font-size:11px;border-collapse:collapse'>"
            "<tr><th>#</th><th>series</th><th>n</th><th>ranges</th><th>payload (hex)</th></tr>"
            + "".join(rows) + more + "</table></div>")


def discard_legend_html(capture: bool = False) -> str:
    """The legend of the maps: the four page states (named as in a ``capture`` or a plan), the fix-up
    outline and the hatch of sent / duplicated ranges.

    >>> "dirty + unsent" in discard_legend_html(), "discarded, never sent" in discard_legend_html(True)
    (True, True)
    """
    names = CAPTURE_STATE_NAMES if capture else STATE_NAMES
    legend = " &nbsp; ".join(
        f"<span style='display:inline-block;width:11px;height:11px;border:1px solid #999;"
        f"background:{c}'></span> {html.escape(nm)}" for c, nm in zip(STATE_COLORS[:4], names[:4]))
    legend += (f" &nbsp; <span style='border:2px solid {FIXUP_COLOR};padding:0 4px'>fix-up host page</span>"
               f" &nbsp; <span style='border:1px solid {SENT_COLOR};padding:0 4px'>/// range sent</span>"
               f" &nbsp; <span style='border:1px solid {DUP_COLOR};color:{DUP_COLOR};padding:0 4px'>"
               f"/// duplicated range</span>")
    return f"<div style='font-size:12px'>{legend}</div>"


# ----------------------------------------------------------------------------------
# the bokeh layout
# ----------------------------------------------------------------------------------

_PAGE_JS = """
const cols = %(cols)d, fx = %(fx)d, r = %(r)d, n = %(n)d, tps = %(tps)d;
const x = Math.floor(special_vars.x), y = Math.floor(special_vars.y);
if (x < 0 || x >= cols || y < 0) return "-";
const g = (y * cols + x) * fx;
if (g >= n) return "(past the end of the block)";
const hp = Math.floor(g / r);
return "page " + g + (fx > 1 ? ".." + (g + fx - 1) : "") + " (+0x" + (g * tps).toString(16) + "), host page " + hp
  + " [+" + (g - hp * r) + "/" + r + "]";
"""

#: pixels of all steps' images together (uint8 on the wire; RGBA in the browser); beyond it, or beyond
#: ``MAX_CLIENT_STEPS`` steps, the step change is done in Python (the images travel on each change)
STEP_PIXEL_BUDGET = 4_000_000
MAX_CLIENT_STEPS = 64

#: the step change in the browser, in one task: the step's image renderers become the visible ones,
#: the rectangles / segments take the step's data; the summary text follows after the frame
_STEP_JS = SET_TEXT_JS + """
const i = Number(cb_obj.value);
if (!client || !(i >= 0 && i < summaries.length)) return;  // Python does it (over the budget)
for (let k = 0; k < after.length; k++) {
  const v = k === i;
  if (before[k].visible !== v) before[k].visible = v;
  if (after[k].visible !== v) after[k].visible = v;
}
fixup_src.data = JSON.parse(fixups[i]);
sent_src.data = JSON.parse(sents[i]);
requestAnimationFrame(() => setTimeout(() => {
  if (Number(cb_obj.value) === i) set_text(summary, summaries[i]);
}, 0));
"""


class StepSelect:
    """The step control seen from Python: ``value`` (step index, ``None`` before any) and ``options``
    (``(label, index)`` pairs).  The control shown is the bokeh ``Select`` :attr:`model`, so that a step
    chosen in the page is shown by the page itself; setting ``value`` here shows the step too."""

    def __init__(self, layout: DiscardLayout, model: Select) -> None:
        self._layout = layout
        self.model = model

    @property
    def value(self) -> int | None:
        v = self.model.value
        return int(v) if v not in ("", None) else None

    @value.setter
    def value(self, index: int) -> None:
        self._layout.select_step(int(index))

    @property
    def options(self) -> tuple[tuple[str, int], ...]:
        return tuple((label, int(k)) for k, label in self.model.options)  # type: ignore[misc]


@dataclass
class _Text:
    """Python copy of a text the page writes itself (``value``: its HTML)."""

    value: str = ""


class DiscardLayout:
    """The bokeh models of the discard maps of one RAM block (see the module docstring); :attr:`layout`
    is the root (the step ``Select``, the summary box, the maps before and after the step).

    :attr:`step_select` (a :class:`StepSelect`) is the step shown; :attr:`fixup_source`,
    :attr:`sent_source`, :attr:`image_sources` and ``summary.value`` hold that step's data, whether
    it was chosen in the page or from Python.  :meth:`set_steps` gives the steps to show.

    Args:
        grid: ``(rows, cols, fx)`` of :func:`host_grid`.
        host_ratio: host page size / target page size.
        n_pages: target pages of the block.
        target_page_size: bytes of a target page (the hover's offsets).
        width: width of the maps (frame and axes).
        capture: the steps are a capture's commands (names of the states, titles).
    """

    def __init__(self, grid: tuple[int, int, int], *, host_ratio: int, n_pages: int,
                 target_page_size: int = TARGET_PAGE_SIZE, width: int = 820, capture: bool = False) -> None:
        self.grid = grid
        self.host_ratio = int(host_ratio)
        self.steps: list[ViewStep] = []
        self.summaries: list[str] = []
        rows, cols, fx = grid
        frame_h = int(np.clip(rows * max(3, min(40, 300 // max(rows, 1))), 60, 300))
        names = CAPTURE_STATE_NAMES if capture else STATE_NAMES
        self._mapper = LinearColorMapper(palette=list(STATE_COLORS), low=-0.5, high=NO_PAGE_STATE + 0.5)
        page_fmt = CustomJSHover(code=_PAGE_JS % dict(cols=cols, fx=fx, r=self.host_ratio, n=int(n_pages),
                                                      tps=int(target_page_size)))
        state_fmt = CustomJSHover(code=f"const n = {json.dumps(list(names))}; "
                                  "const v = Math.round(value); return n[v] || '';")
        self.fixup_source = ColumnDataSource(dict(left=[], right=[], top=[], bottom=[], host_page=[]))
        self.sent_source = ColumnDataSource(dict(left=[], right=[], top=[], bottom=[], color=[], what=[]))
        # the images of the step shown as Python sees them; drawn only when the steps are switched in
        # Python (over the budget), else each step has its own image renderers, switched by the page
        self.image_sources: list[ColumnDataSource] = []
        self.python_images: list[GlyphRenderer] = []
        self._overlays: list[list[Any]] = []  # per figure: host-page lines, rectangles, segments
        self.hovers: list[HoverTool] = []
        self.step_images: list[list[GlyphRenderer]] = [[], []]  # [before, after][step]
        self.client = False  # steps switched in the browser
        self._step: int | None = None
        self._fixups: list[dict[str, list]] = []
        self._sents: list[dict[str, list]] = []
        figs = []
        what = "command" if capture else "step"
        for which in ("before", "after"):
            src = ColumnDataSource(dict(image=[np.full((rows, cols), NO_PAGE_STATE, np.uint8)]))
            fig = figure(
                frame_width=width - 60, frame_height=frame_h,
                x_range=Range1d(0, cols, bounds=(0, cols)), y_range=Range1d(rows, 0, bounds=(0, rows)),
                tools="box_zoom,xwheel_zoom,pan,reset,save", toolbar_location="right",
                title=f"before the {what}" if which == "before"
                else f"after the {what} (host pages fixed up outlined, ranges sent hatched)",
                x_axis_label=f"target page in row ({cols * fx} per row"
                + (f", {fx} per column" if fx > 1 else "") + f"; host page = {self.host_ratio})",
                y_axis_label="row",
            )
            fig.grid.visible = False
            fig.toolbar.logo = None
            img = fig.image(image="image", x=0, y=0, dw=cols, dh=rows, source=src, color_mapper=self._mapper)
            hover = HoverTool(renderers=[img], tooltips=[("where", "$x{custom}"), ("state", "@image{custom}")],
                              formatters={"$x": page_fmt, "@image": state_fmt})
            fig.add_tools(hover)
            self._draw_host_boundaries(fig)
            fig.quad(left="left", right="right", top="top", bottom="bottom", source=self.fixup_source,
                     fill_alpha=0, line_color=FIXUP_COLOR, line_width=3)
            if which == "after":
                # one renderer per colour: a hatch of one colour is one pattern (a colour per segment
                # makes the browser build a pattern for each, 0.2 s for a hundred segments)
                for color in (SENT_COLOR, DUP_COLOR):
                    fig.quad(left="left", right="right", top="top", bottom="bottom", source=self.sent_source,
                             view=CDSView(filter=GroupFilter(column_name="color", group=color)),
                             fill_alpha=0, line_color=color, line_width=1.5, hatch_pattern="/",
                             hatch_color=color, hatch_alpha=0.55, hatch_scale=8)
            self.image_sources.append(src)
            self.python_images.append(img)
            self._overlays.append([r for r in fig.renderers if r is not img])
            self.hovers.append(hover)
            figs.append(fig)
        self.figures = figs
        # the step control and the summary are bokeh models: a step chosen in the page is shown by the page
        self.step_select = StepSelect(self, Select(title=what, options=[], value="", width=width - 20))
        self.summary = _Text()
        self.summary_div = Div(text="", width=width - 20, height=92,
                               styles={"overflow-y": "auto", "font-size": "12px", "line-height": "1.6"})
        self.summary_div.js_on_change("text", CustomJS(code=TEXT_RESET_JS))
        self.step_js = CustomJS(args=dict(client=False), code=_STEP_JS)
        self.step_select.model.js_on_change("value", self.step_js)
        self.step_select.model.on_change("value", self._on_select)
        self.layout = column(self.step_select.model, self.summary_div, *figs)
        self.document = Document()
        self.document.add_root(self.layout)
        self.document.on_event(DocumentReady, self._on_document_ready)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ API
    def set_steps(self, steps: Sequence[ViewStep], summaries: Sequence[str], *, duplicated: Sequence[Range]) -> None:
        """Show ``steps`` (their summary boxes' HTML: ``summaries``; ranges discarded twice: ``duplicated``),
        opening on the last one."""
        self.steps = list(steps)
        self._install(summaries, duplicated)
        self.step_select.model.options = [(str(i), s.label) for i, s in enumerate(self.steps)]
        self._step = None
        self.select_step(len(self.steps) - 1)

    def select_step(self, index: int) -> None:
        """Show step ``index`` from Python (the page follows the control's value)."""
        if not 0 <= index < len(self.steps):
            raise IndexError(f"step {index} outside 0..{len(self.steps) - 1}")
        self._step = index
        self._show_step(index, page_did_it=False)
        self.step_select.model.value = str(index)

    # ------------------------------------------------------------------ internals
    def _draw_host_boundaries(self, fig: Any) -> None:
        rows, cols, fx = self.grid
        span = self.host_ratio / fx
        xs = np.arange(span, cols, span) if span < cols else np.zeros(0)
        if xs.size and xs.size <= 1024:
            fig.segment(x0=xs, x1=xs, y0=0, y1=rows, line_color="#555555", line_width=0.8, line_alpha=0.7)
        if 1 < rows <= 512:
            ys = np.arange(1, rows)
            fig.segment(x0=0, x1=cols, y0=ys, y1=ys, line_color="#555555", line_width=0.8, line_alpha=0.7)

    def _install(self, summaries: Sequence[str], duplicated: Sequence[Range]) -> None:
        """Precompute every step (images, rectangles, segments, summary) and hand them to the page's step
        change, when all the steps' images fit :data:`STEP_PIXEL_BUDGET`; else Python draws each step."""
        rows, cols, _ = self.grid
        n = len(self.steps)
        self._fixups = [host_page_rects(s.fixups, self.host_ratio, self.grid) for s in self.steps]
        self._sents = [sent_segments(s, self.grid, duplicated) for s in self.steps]
        self.summaries = list(summaries)
        self.client = 0 < n <= MAX_CLIENT_STEPS and (n + 1) * rows * cols <= STEP_PIXEL_BUDGET
        self.step_images = [[], []]
        if self.client:
            shared: dict[bytes, ColumnDataSource] = {}  # a step's "before" is the previous one's "after"

            def renderer(img: np.ndarray) -> GlyphRenderer:
                src = shared.get(img.tobytes())
                if src is None:
                    src = shared[img.tobytes()] = ColumnDataSource(dict(image=[img]))
                glyph = Image(image="image", x=0, y=0, dw=cols, dh=rows, color_mapper=self._mapper)
                return GlyphRenderer(data_source=src, glyph=glyph, visible=False, **BARE_GLYPHS)

            for s in self.steps:
                before, after = step_images(s, self.grid)
                self.step_images[0].append(renderer(before))
                self.step_images[1].append(renderer(after))
        for k, fig in enumerate(self.figures):
            images = self.step_images[k] if self.client else [self.python_images[k]]
            fig.renderers = [*images, *self._overlays[k]]
            self.hovers[k].renderers = list(images)
        self.step_js.args = dict(
            client=self.client, before=self.step_images[0], after=self.step_images[1],
            fixup_src=self.fixup_source, sent_src=self.sent_source, summary=self.summary_div,
            fixups=[json.dumps(d) for d in self._fixups] if self.client else [],
            sents=[json.dumps(d) for d in self._sents] if self.client else [],
            summaries=self.summaries if self.client else [])
        self.summary_div.text = self.summaries[-1] if self.summaries else ""

    def _on_select(self, _attr: str, _old: Any, new: Any) -> None:
        """A step chosen in the page: it showed it already (unless over the budget); Python catches up."""
        if new in ("", None) or int(new) == self._step:
            return
        self._step = int(new)
        self._show_step(int(new), page_did_it=self.client)

    def _show_step(self, index: int | None, page_did_it: bool = False) -> None:
        """Python's side of step ``index``: the sources' data, the summary and, unless the page showed
        the step itself, what the page shows."""
        if index is None or not self.steps:
            return
        i = int(index)
        before, after = step_images(self.steps[i], self.grid)
        self.image_sources[0].data = dict(image=[before])  # drawn only when Python switches the steps
        self.image_sources[1].data = dict(image=[after])
        self.summary.value = self.summaries[i]
        if page_did_it:  # its rectangles, segments and visible images come back from the page
            return
        self.fixup_source.data = dict(self._fixups[i])
        self.sent_source.data = dict(self._sents[i])
        for rs in self.step_images:
            for k, r in enumerate(rs):
                if r.visible != (k == i):
                    r.visible = k == i
        if not self.client:
            self.summary_div.text = self.summaries[i]

    def _on_document_ready(self, event: Any) -> None:
        """A page shows the maps (first time, reload, new tab) from the widget's first snapshot: send it
        what changed since (the step, the renderers of a recomputed plan, the summary)."""
        if self.summary_div.text != self.summary.value:
            self.summary_div.text = self.summary.value
        sel = self.step_select.model
        changed: list[tuple[Any, str]] = [(f, "renderers") for f in self.figures]
        changed += [(h, "renderers") for h in self.hovers] + [(self.step_js, "args")]
        changed += [(r, "visible") for rs in self.step_images for r in rs]
        changed += [(src, "data") for src in (*self.image_sources, self.fixup_source, self.sent_source)]
        changed += [(sel, "options"), (sel, "value"), (self.summary_div, "text")]
        for model, attr in changed:
            v = getattr(model, attr)
            model.trigger(attr, v, v)
