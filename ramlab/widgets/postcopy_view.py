"""``PostcopyDiscardView``: how the postcopy discard bitmap is computed and what goes on the wire.

Target pages are laid out on a grid whose rows are whole host pages (or several host pages
when they are small), with the host-page boundaries drawn.  A step selector walks through
``plan.steps`` (seed: unsent pass, dirty pass, ``unsent |= dirty``, send runs; modern:
canonicalise, send runs): the maps before and after the step side by side, the host pages
the step fixed up outlined, and the ranges it sent hatched (duplicated ranges in magenta).
Below, the POSTCOPY_RAM_DISCARD commands exactly as QEMU batches them (<= 12 ranges each),
with byte offsets / lengths and the payload hex of
:func:`ramlab.wire.commands.encode_discard_payload`.

**Why a step change is fast.**  As in the migration player (:mod:`ramlab.plots.page_map`), every
step's images, rectangles, segments and summary travel once; choosing a step in the page makes its
image renderers the visible ones and swaps the small rectangle / segment data, in JavaScript, in one
task: both maps repaint in the next frame, without waiting for the kernel (which only keeps its
copy up to date).  Beyond :data:`STEP_PIXEL_BUDGET` pixels or :data:`MAX_CLIENT_STEPS` steps Python
sends the step's images on each change instead.

The data preparation is pure numpy (top-level functions), testable without a browser:

    >>> import numpy as np
    >>> host_grid(4096, 512), host_grid(4096, 1), host_grid(8, 4)
    ((8, 512, 1), (64, 64, 1), (2, 4, 1))
    >>> state_codes(np.array([1, 0, 1, 0], bool), np.array([0, 0, 1, 1], bool)).tolist()
    [1, 0, 3, 2]
    >>> range_segments([(2, 7)], cols=4)                 # pages 2..8 on rows of 4
    ([2, 0, 0], [4, 4, 1], [0, 1, 2])
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
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
from jupyter_bokeh import BokehModel

from ramlab.constants import TARGET_PAGE_SIZE
from ramlab.errors import RamlabError
from ramlab.model.postcopy_plan import DiscardPlan, discard_batches, plan_discards
from ramlab.plots.page_map import SET_TEXT_JS
from ramlab.plots.static import class_map_img, figure_html
from ramlab.widgets._common import ViewBox

__all__ = [
    "PostcopyDiscardView",
    "StepSelect",
    "ViewStep",
    "host_grid",
    "state_codes",
    "grid_image",
    "host_page_rects",
    "range_segments",
    "plan_view_steps",
    "command_rows",
    "capture_discards",
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


def _plan_batches(plan: DiscardPlan) -> tuple[list[list[Range]], list[str]]:
    chunk = discard_batches(plan.chunk_ranges)
    final = discard_batches(plan.final_ranges)
    return chunk + final, ["chunk"] * len(chunk) + ["final"] * len(final)


def _covered_twice(ranges: Sequence[Range]) -> list[Range]:
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


# ----------------------------------------------------------------------------------
# the widget
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

#: renderers built directly, without the selection / muted glyph copies (views the browser would build)
_BARE = dict(selection_glyph=None, nonselection_glyph=None, muted_glyph=None)

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

#: the summary box's model text changed (from Python): what SET_TEXT_JS wrote before is gone
_TEXT_RESET_JS = """
const v = cb_obj.document && cb_obj.document.views_manager ? cb_obj.document.views_manager.find_one(cb_obj) : null;
if (v != null) v._ramlab_html = undefined;
"""


class StepSelect:
    """The step control seen from Python: ``value`` (step index, ``None`` before any) and ``options``
    (``(label, index)`` pairs).  The control shown is the bokeh ``Select`` :attr:`model`, so that a step
    chosen in the page is shown by the page itself; setting ``value`` here shows the step too."""

    def __init__(self, view: PostcopyDiscardView, model: Select) -> None:
        self._view = view
        self.model = model

    @property
    def value(self) -> int | None:
        v = self.model.value
        return int(v) if v not in ("", None) else None

    @value.setter
    def value(self, index: int) -> None:
        self._view._select_step(int(index))

    @property
    def options(self) -> tuple[tuple[str, int], ...]:
        return tuple((label, int(k)) for k, label in self.model.options)  # type: ignore[misc]


@dataclass
class _Text:
    """Python copy of a text the page writes itself (``value``: its HTML)."""

    value: str = ""


class PostcopyDiscardView(ViewBox):
    """The postcopy discard computation of one RAM block, step by step, and its wire commands.

    ``plan_or_bitmaps`` is a :class:`~ramlab.model.postcopy_plan.DiscardPlan`, or ``(dirty, unsent)``
    bool arrays (one entry per target page; ``unsent`` may be ``None`` for ``"modern"``) with
    ``host_ratio`` = host page size / target page size.  From bitmaps the seed / modern toggle
    recomputes the plan; from a plan alone the toggle is disabled (the input maps are not
    part of a plan) and the maps before the first step are not shown.
    Use :meth:`from_migration` for the real discards of a decoded postcopy capture.

    :attr:`step_select` (a :class:`StepSelect`) is the step shown; :attr:`fixup_source`,
    :attr:`sent_source`, :attr:`image_sources` and ``summary.value`` hold that step's data, whether
    it was chosen in the page or from Python.

    >>> import numpy as np
    >>> d = np.zeros(64, bool); d[[3, 17, 18]] = True
    >>> u = np.zeros(64, bool); u[40:] = True; u[13] = True
    >>> view = PostcopyDiscardView((d, u), host_ratio=8, block="m0")
    >>> view.step_select.value = 0                      # the unsent pass
    >>> view.fixup_source.data["host_page"]             # host page 1 was partly sent
    [1]
    >>> view.set_algorithm("modern"); [c["series"] for c in view.commands]
    ['final']
    """

    def __init__(
        self,
        plan_or_bitmaps: DiscardPlan | tuple[np.ndarray, np.ndarray | None] | np.ndarray,
        host_ratio: int | None = None,
        algorithm: str = "seed",
        block: str = "pc.ram",
        *,
        unsent: np.ndarray | None = None,
        target_page_size: int = TARGET_PAGE_SIZE,
        width: int = 820,
        max_cols: int = 512,
        title: str | None = None,
    ) -> None:
        self.block = block
        self.target_page_size = int(target_page_size)
        self.capture: CaptureDiscards | None = None
        self.dirty: np.ndarray | None = None
        self.unsent: np.ndarray | None = None
        if isinstance(plan_or_bitmaps, DiscardPlan):
            self.plan: DiscardPlan | None = plan_or_bitmaps
            self.host_ratio = plan_or_bitmaps.host_ratio
            self.algorithm = plan_or_bitmaps.algorithm
            n = plan_or_bitmaps.dirty.size
        elif isinstance(plan_or_bitmaps, CaptureDiscards):
            self.plan = None
            self.capture = plan_or_bitmaps
            self.host_ratio = plan_or_bitmaps.host_ratio
            self.algorithm = "capture"
            self.block = plan_or_bitmaps.block
            self.target_page_size = plan_or_bitmaps.target_page_size
            n = plan_or_bitmaps.n_pages
        else:
            if isinstance(plan_or_bitmaps, tuple):
                self.dirty, self.unsent = plan_or_bitmaps[0], plan_or_bitmaps[1]
            else:
                self.dirty, self.unsent = plan_or_bitmaps, unsent
            self.dirty = np.asarray(self.dirty, bool)
            self.unsent = None if self.unsent is None else np.asarray(self.unsent, bool)
            if host_ratio is None:
                raise RamlabError("PostcopyDiscardView(dirty, unsent): give host_ratio")
            self.host_ratio = int(host_ratio)
            self.algorithm = algorithm
            self.plan = plan_discards(self.dirty, self.unsent, self.host_ratio, algorithm)  # type: ignore[arg-type]
            n = self.dirty.size
        self.n_pages = int(n)
        self.grid = host_grid(self.n_pages, self.host_ratio, max_cols)
        self.steps: list[ViewStep] = []
        self.commands: list[dict[str, Any]] = []

        rows, cols, fx = self.grid
        frame_h = int(np.clip(rows * max(3, min(40, 300 // max(rows, 1))), 60, 300))
        names = CAPTURE_STATE_NAMES if self.capture else STATE_NAMES
        self._mapper = LinearColorMapper(palette=list(STATE_COLORS), low=-0.5, high=NO_PAGE_STATE + 0.5)
        page_fmt = CustomJSHover(code=_PAGE_JS % dict(cols=cols, fx=fx, r=self.host_ratio, n=self.n_pages,
                                                      tps=self.target_page_size))
        state_fmt = CustomJSHover(code=f"const n = {json.dumps(list(names))}; "
                                  "const v = Math.round(value); return n[v] || '';")
        self.fixup_source = ColumnDataSource(dict(left=[], right=[], top=[], bottom=[], host_page=[]))
        self.sent_source = ColumnDataSource(dict(left=[], right=[], top=[], bottom=[], color=[], what=[]))
        # the images of the step shown as Python sees them; drawn only when the steps are switched in
        # Python (over the budget), else each step has its own image renderers, switched by the page
        self.image_sources: list[ColumnDataSource] = []
        self._python_images: list[GlyphRenderer] = []
        self._overlays: list[list[Any]] = []  # per figure: host-page lines, rectangles, segments
        self._hovers: list[HoverTool] = []
        self._step_images: list[list[GlyphRenderer]] = [[], []]  # [before, after][step]
        self.client = False  # steps switched in the browser
        self._step: int | None = None
        figs = []
        what = "command" if self.capture else "step"
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
            self._python_images.append(img)
            self._overlays.append([r for r in fig.renderers if r is not img])
            self._hovers.append(hover)
            figs.append(fig)
        self.figures = figs
        legend = " &nbsp; ".join(
            f"<span style='display:inline-block;width:11px;height:11px;border:1px solid #999;"
            f"background:{c}'></span> {html.escape(nm)}" for c, nm in zip(STATE_COLORS[:4], names[:4]))
        legend += (f" &nbsp; <span style='border:2px solid {FIXUP_COLOR};padding:0 4px'>fix-up host page</span>"
                   f" &nbsp; <span style='border:1px solid {SENT_COLOR};padding:0 4px'>/// range sent</span>"
                   f" &nbsp; <span style='border:1px solid {DUP_COLOR};color:{DUP_COLOR};padding:0 4px'>"
                   f"/// duplicated range</span>")
        self.legend = W.HTML(f"<div style='font-size:12px'>{legend}</div>")
        self.algorithm_toggle = W.ToggleButtons(options=["seed", "modern"],
                                                value=self.algorithm if self.algorithm != "capture" else "seed",
                                                description="algorithm",
                                                tooltips=["QEMU ~3.0 (unsent map, chunk passes)",
                                                          "QEMU >= 4.2 (dirty map only)"])
        self.algorithm_toggle.style.button_width = "80px"
        self.algorithm_toggle.disabled = self.dirty is None
        # the step control and the summary are bokeh models: a step chosen in the page is shown by the page
        self.step_select = StepSelect(self, Select(title=what, options=[], value="", width=width - 20))
        self.summary = _Text()
        self.summary_div = Div(text="", width=width - 20, height=92,
                               styles={"overflow-y": "auto", "font-size": "12px", "line-height": "1.6"})
        self.summary_div.js_on_change("text", CustomJS(code=_TEXT_RESET_JS))
        self._step_js = CustomJS(args=dict(client=False), code=_STEP_JS)
        self.step_select.model.js_on_change("value", self._step_js)
        self.step_select.model.on_change("value", self._on_select)
        self.wire = W.HTML()
        self.algorithm_toggle.observe(lambda ch: self.set_algorithm(ch["new"]), names="value")
        head = title or (f"postcopy discards of block {block!r}" if not self.capture
                         else f"postcopy discards in the capture, block {self.block!r}")
        controls: list[W.Widget] = [] if self.capture else [self.algorithm_toggle]
        self._rebuild()  # fill the figures before the BokehModel snapshots them
        layout = column(self.step_select.model, self.summary_div, *figs)
        doc = Document()
        doc.add_root(layout)
        doc.on_event(DocumentReady, self._on_document_ready)  # type: ignore[arg-type]
        self.plot = BokehModel(layout)
        self.plot.add_class("ramlab-bokeh")
        point = ("At the switch to postcopy the source tells the destination which pages to drop: those dirtied "
                 "after they were sent, rounded out to whole host pages (a huge page is placed in one piece). "
                 "Each step below shows the page map before and after it; the table shows the bytes on the wire.")
        super().__init__([W.HTML(f"<b>{html.escape(head)}</b><div style='font-size:12px;max-width:{width}px'>"
                                 f"{point}</div>"), *controls, self.plot, self.legend, self.wire])
        self.add_class("ramlab-postcopy")

    def _on_document_ready(self, event: Any) -> None:
        """A page shows the maps (first time, reload, new tab) from the widget's first snapshot: send it
        what changed since (the step, the renderers of a recomputed plan, the summary)."""
        if self.summary_div.text != self.summary.value:
            self.summary_div.text = self.summary.value
        sel = self.step_select.model
        changed: list[tuple[Any, str]] = [(f, "renderers") for f in self.figures]
        changed += [(h, "renderers") for h in self._hovers] + [(self._step_js, "args")]
        changed += [(r, "visible") for rs in self._step_images for r in rs]
        changed += [(src, "data") for src in (*self.image_sources, self.fixup_source, self.sent_source)]
        changed += [(sel, "options"), (sel, "value"), (self.summary_div, "text")]
        for model, attr in changed:
            v = getattr(model, attr)
            model.trigger(attr, v, v)

    def summary_text(self) -> str:
        return f"PostcopyDiscardView: block {self.block!r}, {len(self.steps)} steps, {len(self.commands)} commands"

    def static_html(self) -> str:
        i = self.step_select.value
        if i is None or not self.steps:
            return ""
        s = self.steps[int(i)]
        rows, cols, _ = self.grid
        width = min(760, cols * max(1, 760 // max(cols, 1)))
        row_px = max(1, min(24, 240 // max(rows, 1)))  # a few rows: tall enough to see
        imgs = []
        for label, d, u in (("before", s.before_dirty, s.before_unsent), ("after", s.after_dirty, s.after_unsent)):
            if d is None:
                continue
            img = np.repeat(grid_image(state_codes(d, u), self.grid), row_px, axis=0)
            imgs.append(f"<div style='font-size:12px;margin-top:4px'>{label}</div>"
                        + class_map_img(img, width=width, alt=f"{label}: page states", palette=STATE_COLORS))
        return figure_html(f"postcopy discards of block {self.block!r} (static picture)",
                           self.summary.value + "".join(imgs) + self.legend.value + self.wire.value)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_migration(cls, m: Any, block: str | None = None, **kwargs: Any) -> PostcopyDiscardView:
        """The real discards of a decoded postcopy capture (``ramlab.open(...)``) on the block's
        host-page grid: one step per POSTCOPY_RAM_DISCARD command of the stream, the pages
        sent before the switch, the trace's DISCARDED pages, and the commands' real payloads
        (checked byte-exact against :func:`~ramlab.wire.commands.encode_discard_payload`).

        >>> import ramlab                                            # doctest: +SKIP
        >>> m = ramlab.open(ramlab.data.data_path("postcopy-hugepages"))   # doctest: +SKIP
        >>> PostcopyDiscardView.from_migration(m)                    # doctest: +SKIP
        """
        return cls(capture_discards(m, block), **kwargs)

    # ------------------------------------------------------------------ API
    def set_algorithm(self, algorithm: str) -> None:
        """Recompute the plan with ``"seed"`` or ``"modern"`` (needs the input bitmaps)."""
        if self.dirty is None:
            raise RamlabError("the seed/modern toggle needs the dirty/unsent bitmaps, not only a plan")
        if algorithm == self.algorithm and self.steps:
            return
        self.algorithm = algorithm
        self.plan = plan_discards(self.dirty, self.unsent, self.host_ratio, algorithm)  # type: ignore[arg-type]
        if self.algorithm_toggle.value != algorithm:
            self.algorithm_toggle.value = algorithm
        self._rebuild()

    def show_step(self, index: int) -> None:
        """Select step ``index`` of :attr:`steps`."""
        self.step_select.value = int(index)

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

    def _rebuild(self) -> None:
        if self.capture is not None:
            self._build_capture()
        else:
            assert self.plan is not None
            self.steps = plan_view_steps(self.plan, self.dirty, self.unsent)
            batches, series = _plan_batches(self.plan)
            self.commands = command_rows(batches, self.block, self.target_page_size, series=series,
                                         duplicated=self.plan.duplicated_ranges)
        self._install()
        self.step_select.model.options = [(str(i), s.label) for i, s in enumerate(self.steps)]
        self._step = None
        self._select_step(len(self.steps) - 1)
        self.wire.value = self._wire_html()

    def _install(self) -> None:
        """Precompute every step (images, rectangles, segments, summary) and hand them to the page's step
        change, when all the steps' images fit :data:`STEP_PIXEL_BUDGET`; else Python draws each step."""
        rows, cols, _ = self.grid
        n = len(self.steps)
        self._fixups = [host_page_rects(s.fixups, self.host_ratio, self.grid) for s in self.steps]
        self._sents = [self._sent_data(s) for s in self.steps]
        self._summaries = [self._summary_html(s) for s in self.steps]
        self.client = 0 < n <= MAX_CLIENT_STEPS and (n + 1) * rows * cols <= STEP_PIXEL_BUDGET
        self._step_images = [[], []]
        if self.client:
            shared: dict[bytes, ColumnDataSource] = {}  # a step's "before" is the previous one's "after"

            def renderer(img: np.ndarray) -> GlyphRenderer:
                src = shared.get(img.tobytes())
                if src is None:
                    src = shared[img.tobytes()] = ColumnDataSource(dict(image=[img]))
                glyph = Image(image="image", x=0, y=0, dw=cols, dh=rows, color_mapper=self._mapper)
                return GlyphRenderer(data_source=src, glyph=glyph, visible=False, **_BARE)

            for i in range(n):
                before, after = self._images(i)
                self._step_images[0].append(renderer(before))
                self._step_images[1].append(renderer(after))
        for k, fig in enumerate(self.figures):
            images = self._step_images[k] if self.client else [self._python_images[k]]
            fig.renderers = [*images, *self._overlays[k]]
            self._hovers[k].renderers = list(images)
        self._step_js.args = dict(
            client=self.client, before=self._step_images[0], after=self._step_images[1],
            fixup_src=self.fixup_source, sent_src=self.sent_source, summary=self.summary_div,
            fixups=[json.dumps(d) for d in self._fixups] if self.client else [],
            sents=[json.dumps(d) for d in self._sents] if self.client else [],
            summaries=self._summaries if self.client else [])
        self.summary_div.text = self._summaries[-1] if self._summaries else ""

    def _build_capture(self) -> None:
        cap = self.capture
        assert cap is not None
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
        self.steps = steps
        self.commands = command_rows([rs for _, rs, _ in cap.commands], cap.block, cap.target_page_size,
                                     series=["stream"] * len(cap.commands),
                                     duplicated=_covered_twice(all_ranges),
                                     payloads=[p for _, _, p in cap.commands])

    def _select_step(self, index: int) -> None:
        """Show step ``index`` from Python (the page follows the control's value)."""
        if not 0 <= index < len(self.steps):
            raise IndexError(f"step {index} outside 0..{len(self.steps) - 1}")
        self._step = index
        self._show_step(index, page_did_it=False)
        self.step_select.model.value = str(index)

    def _on_select(self, _attr: str, _old: Any, new: Any) -> None:
        """A step chosen in the page: it showed it already (unless over the budget); Python catches up."""
        if new in ("", None) or int(new) == self._step:
            return
        self._step = int(new)
        self._show_step(int(new), page_did_it=self.client)

    def _images(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The before / after images of step ``index`` (before the first step without input maps: no pages)."""
        s = self.steps[index]
        rows, cols, _ = self.grid
        before = (np.full((rows, cols), NO_PAGE_STATE, np.uint8) if s.before_dirty is None
                  else grid_image(state_codes(s.before_dirty, s.before_unsent), self.grid))
        return before, grid_image(state_codes(s.after_dirty, s.after_unsent), self.grid)

    def _sent_data(self, s: ViewStep) -> dict[str, list]:
        """The segments of the ranges a step sent, one per grid row a range touches (duplicated: magenta)."""
        dup = self._duplicated()
        sent = list(s.sent)
        x0, x1, y = range_segments(sent, self.grid[1], self.grid[2])
        span = self.grid[1] * self.grid[2]
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

    def _show_step(self, index: int | None, page_did_it: bool = False) -> None:
        """Python's side of step ``index``: the sources' data, the summary and, unless the page showed
        the step itself, what the page shows."""
        if index is None or not self.steps:
            return
        i = int(index)
        before, after = self._images(i)
        self.image_sources[0].data = dict(image=[before])  # drawn only when Python switches the steps
        self.image_sources[1].data = dict(image=[after])
        self.summary.value = self._summaries[i]
        if page_did_it:  # its rectangles, segments and visible images come back from the page
            return
        self.fixup_source.data = dict(self._fixups[i])
        self.sent_source.data = dict(self._sents[i])
        for rs in self._step_images:
            for k, r in enumerate(rs):
                if r.visible != (k == i):
                    r.visible = k == i
        if not self.client:
            self.summary_div.text = self._summaries[i]

    def _duplicated(self) -> list[Range]:
        """Ranges whose pages are discarded twice (seed: every chunk-pass range)."""
        if self.capture is not None:
            return _covered_twice([r for _, rs, _ in self.capture.commands for r in rs])
        return list(self.plan.duplicated_ranges) if self.plan is not None else []

    def _summary_html(self, s: ViewStep) -> str:
        parts = [f"<b>{html.escape(s.label)}</b>"]
        if s.fixups:
            shown = ", ".join(map(str, s.fixups[:24])) + (" ..." if len(s.fixups) > 24 else "")
            parts.append(f"host pages touched: <span style='color:{FIXUP_COLOR}'>{shown}</span>")
        if s.sent:
            shown = ", ".join(f"[{a}, {a + n})" for a, n in s.sent[:12]) + (" ..." if len(s.sent) > 12 else "")
            parts.append(f"ranges sent (target pages): {shown}")
        if self.capture is not None:
            cap = self.capture
            cmd_pages = np.zeros(cap.n_pages, bool)
            for _, rs, _ in cap.commands:
                for a, n in rs:
                    cmd_pages[a : a + n] = True
            agree = np.array_equal(cmd_pages, cap.trace_discarded)
            parts.append(f"{int(cmd_pages.sum()):,} of {cap.n_pages:,} target pages discarded "
                         f"({int(cmd_pages.sum()) // max(cap.host_ratio, 1):,} host pages); trace DISCARDED pages: "
                         f"{int(cap.trace_discarded.sum()):,} " + ("(agree)" if agree else "(<b>differ</b>)"))
        elif self.plan is not None:
            p = self.plan
            parts.append(f"{self.algorithm}: {len(p.ranges)} ranges on the wire ({len(p.chunk_ranges)} from the chunk "
                         f"passes, {len(p.final_ranges)} final runs), {len(p.duplicated_ranges)} duplicated; "
                         f"{len(self.commands)} command(s)")
        return "<div style='font-size:12px;line-height:1.6'>" + "<br>".join(parts) + "</div>"

    def _wire_html(self, max_commands: int = 60) -> str:
        tps = self.target_page_size
        rows = []
        for c in self.commands[:max_commands]:
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
        more = (f"<tr><td colspan=5>... {len(self.commands) - max_commands} more commands</td></tr>"
                if len(self.commands) > max_commands else "")
        note = ("payloads as found in the stream" if self.capture is not None
                else "payloads from encode_discard_payload")
        return (f"<div style='font-size:12px;margin-top:6px'><b>{len(self.commands)} POSTCOPY_RAM_DISCARD "
                f"command(s)</b> for {html.escape(self.block)!s} (&le; 12 ranges each; target page {tps} bytes; "
                f"{note})</div>"
                "<div style='max-height:260px;overflow:auto'><table style='font-size:11px;border-collapse:collapse'>"
                "<tr><th>#</th><th>series</th><th>n</th><th>ranges</th><th>payload (hex)</th></tr>"
                + "".join(rows) + more + "</table></div>")
