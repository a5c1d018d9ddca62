"""The byte strip of an XBZRLE delta view: old bytes, new bytes and the runs, opened zoomed on the change.

A 5-byte change is a hairline on a 4 096-byte axis, so the strip opens on the changed runs with some
equal bytes around them (:func:`change_window`), with each byte's hex value written in its cell while
at most :data:`TEXT_MAX_BYTES` bytes are in view.  Buttons (and keys, once the strip has the focus:
``-`` wider, ``=`` narrower, ``0`` the change, ``w`` the whole page) widen it.

    >>> change_window([(100, 5)], 4096)
    (84, 121)
    >>> change_window([], 4096)
    (0, 4096)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["change_window", "delta_strip", "CHANGED_COLOR", "EQUAL_COLOR", "TEXT_MAX_BYTES"]

CHANGED_COLOR = "#d55e00"  # vermillion (Okabe-Ito), as NORMAL pages: these bytes are sent
EQUAL_COLOR = "#cfcfcf"
#: bytes in view below which the cells show their hex values
TEXT_MAX_BYTES = 96
#: bytes of context around the changed runs that carry hex labels
_TEXT_CONTEXT = 48

#: ``jump(what)``: move the strip's range ``x`` ("wider", "narrower", "change" = ``win``, "page")
_JUMP_JS = """
const jump = (what) => {
  const lo = x.bounds[0], hi = x.bounds[1];
  const c = (x.start + x.end) / 2, w = x.end - x.start;
  let s, e;
  if (what === "wider") { s = c - w; e = c + w; }
  else if (what === "narrower") { s = c - w / 4; e = c + w / 4; }
  else if (what === "change") { s = win[0]; e = win[1]; }
  else { s = lo; e = hi; }
  if (e - s < 8) { s = c - 4; e = c + 4; }
  if (s < lo) { e += lo - s; s = lo; }
  if (e > hi) { s -= e - hi; e = hi; }
  x.setv({start: Math.max(lo, s), end: Math.min(hi, e)});
};
"""

_TEXT_JS = "const show = (x.end - x.start) <= limit; for (const r of labels) if (r.visible !== show) r.visible = show;"

_KEYS_JS = _JUMP_JS + """
const view = root.document && root.document.views_manager ? root.document.views_manager.find_one(root) : null;
if (view == null || view.el.dataset.ramlabKeys) return;
const el = view.el;
el.dataset.ramlabKeys = "delta";
if (!el.hasAttribute("tabindex")) el.tabIndex = 0;
el.style.outline = "none";
const keys = {"-": "wider", "=": "narrower", "+": "narrower", "0": "change", "w": "page"};
el.addEventListener("keydown", (e) => {
  if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey || !(e.key in keys)) return;
  jump(keys[e.key]);
  e.preventDefault(); e.stopPropagation();
});
el.addEventListener("mousedown", () => setTimeout(() => el.focus({preventScroll: true}), 0));
"""


def change_window(changed: Sequence[tuple[int, int]], size: int, *, context: int = 16,
                  min_width: int = 32) -> tuple[int, int]:
    """``(start, end)`` bytes that hold every changed run ``(offset, length)`` with ``context`` equal bytes
    on each side, at least ``min_width`` wide, within ``[0, size)``; the whole page when nothing changed."""
    if not len(changed):
        return 0, int(size)
    lo = max(0, min(int(o) for o, _ in changed) - context)
    hi = min(int(size), max(int(o) + int(n) for o, n in changed) + context)
    short = min_width - (hi - lo)
    if short > 0:  # widen, on the side that has room first
        grow_lo = min(lo, short // 2 + max(0, hi + short - short // 2 - int(size)))
        lo -= grow_lo
        hi = min(int(size), hi + short - grow_lo)
    return int(lo), int(hi)


def delta_strip(old: np.ndarray, new: np.ndarray, runs: Sequence[Any], *, width: int = 900) -> tuple[Any, Any]:
    """``(layout, document)``: the buttons and the strip of one page pair (``runs``: ``ramlab.xbzrle.Run``)."""
    from bokeh.document import Document
    from bokeh.layouts import column, row
    from bokeh.models import Button, ColumnDataSource, CustomJS, HoverTool, LinearColorMapper, Range1d
    from bokeh.palettes import Greys256
    from bokeh.plotting import figure

    size = int(new.size)
    changed = [(r.offset, r.length) for r in runs if r.kind == "changed"]
    win = change_window(changed, size)
    x = Range1d(*win, bounds=(0, size))
    fig = figure(width=width, height=190, x_range=x, y_range=Range1d(0, 3.2), tools="xpan,xwheel_zoom,reset,save",
                 active_scroll=None, title="old bytes (top), new bytes (middle), runs (bottom; red = changed)",
                 x_axis_label="byte offset in the page", toolbar_location="above", min_border_left=56)
    fig.title.text_font_size = "11px"
    fig.yaxis.ticker = [0.5, 1.5, 2.5]
    fig.yaxis.major_label_overrides = {0.5: "runs", 1.5: "new", 2.5: "old"}
    fig.ygrid.visible = False
    fig.toolbar.logo = None
    mapper = LinearColorMapper(palette=list(reversed(Greys256)), low=0, high=255)
    img_src = ColumnDataSource(dict(image=[old[None, :], new[None, :]], y=[2.05, 1.05], name=["old", "new"]))
    img = fig.image(image="image", x=0, y="y", dw=size, dh=0.9, source=img_src, color_mapper=mapper)
    fig.add_tools(HoverTool(renderers=[img], tooltips=[("", "@name"), ("offset", "$x{0}"), ("value", "@image")]))
    kinds = [r.kind for r in runs]
    run_src = ColumnDataSource(dict(
        left=[r.offset for r in runs], right=[r.offset + r.length for r in runs], offset=[r.offset for r in runs],
        length=[r.length for r in runs], kind=["changed" if k == "changed" else "equal" for k in kinds],
        color=[CHANGED_COLOR if k == "changed" else EQUAL_COLOR for k in kinds],
    ))
    q = fig.quad(left="left", right="right", bottom=0.1, top=0.9, color="color", source=run_src, line_color="white",
                 line_width=1)
    fig.add_tools(HoverTool(renderers=[q], tooltips=[("run", "@kind bytes"), ("offset", "@offset"),
                                                     ("length", "@length")]))
    # hex labels of the bytes around the change, shown when few bytes are in view
    near = np.zeros(size, bool)
    for o, n in changed or [(win[0], win[1] - win[0])]:
        near[max(0, o - _TEXT_CONTEXT): o + n + _TEXT_CONTEXT] = True
    pos = np.flatnonzero(near)
    diff = old[pos] != new[pos]
    labels = []
    for row_y, data in ((2.5, old), (1.5, new)):
        vals = data[pos]
        src = ColumnDataSource(dict(x=pos + 0.5, y=np.full(pos.size, row_y), text=[f"{v:02x}" for v in vals.tolist()],
                                    color=np.where(vals > 127, "#ffffff", "#000000").tolist(),  # on dark: white
                                    weight=np.where(diff, "bold", "normal").tolist()))
        labels.append(fig.text(x="x", y="y", text="text", source=src, text_align="center", text_baseline="middle",
                               text_font_size="10px", text_color="color", text_font_style="weight",
                               visible=(win[1] - win[0]) <= TEXT_MAX_BYTES))
    changed_marks = ColumnDataSource(dict(x=(pos[diff] + 0.5).tolist()))
    fig.scatter(x="x", y=1.0, marker="triangle", size=7, color=CHANGED_COLOR, source=changed_marks)
    x.js_on_change("start", CustomJS(args=dict(x=x, labels=labels, limit=TEXT_MAX_BYTES), code=_TEXT_JS))
    x.js_on_change("end", CustomJS(args=dict(x=x, labels=labels, limit=TEXT_MAX_BYTES), code=_TEXT_JS))
    buttons = {}
    for what, label in (("change", "the change"), ("narrower", "narrower (=)"), ("wider", "wider (-)"),
                        ("page", "whole page")):
        b = Button(label=label, width=110, height=28)
        b.js_on_click(CustomJS(args=dict(x=x, win=list(win)), code=_JUMP_JS + f"jump({what!r});"))
        buttons[what] = b
    layout = column(row(*buttons.values()), fig)
    doc = Document()
    doc.add_root(layout)
    doc.js_on_event("document_ready", CustomJS(args=dict(root=layout, x=x, win=list(win)), code=_KEYS_JS))
    return layout, doc
