"""``XbzrleDeltaView``: what XBZRLE does with one page (old vs new bytes, runs, encoded fields).

The byte strip opens zoomed on the changed runs (:mod:`ramlab.plots.delta_strip`), with buttons and
keys to widen it; the summary says in one sentence what was sent and why.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import numpy as np
from jupyter_bokeh import BokehModel

from ramlab.errors import RamlabError
from ramlab.plots.delta_strip import CHANGED_COLOR, EQUAL_COLOR, change_window, delta_strip
from ramlab.plots.static import figure_html
from ramlab.trace import CLASS_NAMES, Trace
from ramlab.widgets._common import ViewBox

__all__ = ["XbzrleDeltaView", "DeltaAnalysis", "analyze_delta"]

_FIELD_COLORS = {"zrun": "#0072b2", "nzrun": "#d55e00", "data": "#444444"}
_CHECK_TEXT = {
    "A": "check (A) before a zero run: d + 2 > dlen",
    "B": "check (B) after a zero-run length: d + 2 > dlen",
    "C": "check (C) after a changed-run length: d + n > dlen",
}


@dataclass
class DeltaAnalysis:
    """Everything the view shows, computed with ``ramlab.xbzrle`` (pure data, no widgets)."""

    old: np.ndarray
    new: np.ndarray
    dlen: int
    encoded: bytes | None  # b"" unchanged, None overflow
    runs: list[Any]  # ramlab.xbzrle.Run (kind 'zero'|'changed', offset, length)
    tokens: list[Any]  # ramlab.xbzrle.Token (kind 'zrun'|'nzrun'|'data', offset, size, value, page_offset)
    overflow: Any | None  # ramlab.xbzrle.OverflowCheck or None

    @property
    def outcome(self) -> str:
        """``'unchanged'``, ``'overflow'`` or ``'encoded'``."""
        if self.encoded is None:
            return "overflow"
        return "unchanged" if len(self.encoded) == 0 else "encoded"

    @property
    def changed_bytes(self) -> int:
        """Number of bytes that differ."""
        return int(sum(r.length for r in self.runs if r.kind == "changed"))


def analyze_delta(old: Any, new: Any, dlen: int | None = None) -> DeltaAnalysis:
    """Run the XBZRLE kernels of :mod:`ramlab.xbzrle` on one page pair.

    >>> old = np.zeros(4096, np.uint8); new = old.copy(); new[4095] = 1
    >>> a = analyze_delta(old, new)
    >>> a.outcome, a.encoded.hex(), [t.kind for t in a.tokens]
    ('encoded', 'ff1f0101', ['zrun', 'nzrun', 'data'])
    """
    from ramlab import xbzrle  # lazy: the kernels are a separate module

    o = np.ascontiguousarray(np.frombuffer(bytes(old), np.uint8) if isinstance(old, (bytes, bytearray))
                             else np.asarray(old, np.uint8).ravel())
    n = np.ascontiguousarray(np.frombuffer(bytes(new), np.uint8) if isinstance(new, (bytes, bytearray))
                             else np.asarray(new, np.uint8).ravel())
    if o.shape != n.shape:
        raise RamlabError(f"old and new pages differ in size ({o.size} != {n.size})")
    dlen = int(n.size if dlen is None else dlen)
    encoded = xbzrle.encode_page(o.tobytes(), n.tobytes(), dlen)
    runs = list(xbzrle.runs(o.tobytes(), n.tobytes()))
    tokens = list(xbzrle.parse_encoded(encoded, dlen)) if encoded else []
    ovf = None
    if encoded is None and hasattr(xbzrle, "overflow_check"):
        ovf = xbzrle.overflow_check(o.tobytes(), n.tobytes(), dlen)
    return DeltaAnalysis(o, n, dlen, encoded, runs, tokens, ovf)


class XbzrleDeltaView(ViewBox):
    """Old and new bytes of a page side by side (strips zoomed on the change + hex), equal and changed
    runs, the encoded bytes with every ULEB128 length and literal run annotated, and the encoded
    size against the page size, or which overflow check failed.

    From a trace (``trace.page_bytes(pass, page)`` gives the contents before / after the
    pass) or from raw arrays with :meth:`from_arrays`.

    >>> old = np.zeros(4096, np.uint8); new = old.copy(); new[100:110] = 7
    >>> view = XbzrleDeltaView.from_arrays(old, new)
    >>> view.analysis.outcome, len(view.analysis.encoded)
    ('encoded', 12)
    """

    def __init__(
        self,
        trace: Trace | None = None,
        pass_index: int | None = None,
        page: int | None = None,
        *,
        old: Any = None,
        new: Any = None,
        dlen: int | None = None,
        width: int = 900,
        title: str | None = None,
    ) -> None:
        where = title
        if trace is not None:
            if pass_index is None or page is None:
                raise RamlabError("XbzrleDeltaView(trace, pass_index, page): give a pass and a global page")
            if trace.page_bytes is None:
                raise RamlabError("this trace has no page contents (trace.page_bytes is None)")
            old, new = trace.page_bytes(int(pass_index), int(page))
            if old is None or new is None:
                raise RamlabError(f"contents of page {page} around pass {pass_index} are not known")
            block, pib = trace.block_of(int(page))
            cls = CLASS_NAMES[int(trace.classes[pass_index, page])]
            where = where or (f"pass {pass_index}, page {page} = {block.name} "
                              f"+0x{pib * trace.target_page_size:x} (sent as {cls})")
        if old is None or new is None:
            raise RamlabError("XbzrleDeltaView needs a trace + pass + page, or old= and new=")
        self.analysis = analyze_delta(old, new, dlen)
        self.title = where or "XBZRLE delta"
        a = self.analysis
        self.window = change_window([(r.offset, r.length) for r in a.runs if r.kind == "changed"], a.new.size)
        self.summary = W.HTML(self._summary_html())
        self.strip, self._document = delta_strip(a.old, a.new, a.runs, width=width)
        self.plot = BokehModel(self.strip)
        self.plot.add_class("ramlab-bokeh")
        self.hex = W.HTML(_scroll(self._hex_html()))
        self.encoded = W.HTML(_scroll(self._encoded_html()))
        tabs = W.Tab(children=[self.hex, self.encoded])
        tabs.set_title(0, "old | new (hex)")
        tabs.set_title(1, "encoded bytes")
        super().__init__([self.summary, self.plot, tabs])
        self.add_class("ramlab-delta")

    def summary_text(self) -> str:
        a = self.analysis
        return f"XbzrleDeltaView: {a.changed_bytes} of {a.new.size} bytes changed, {a.outcome}"

    def static_html(self) -> str:
        return figure_html(f"{self.title} (static picture)",
                           self._summary_html() + _strip_svg(self.analysis, self.window) + _scroll(self._hex_html()))

    @classmethod
    def from_arrays(cls, old: Any, new: Any, *, dlen: int | None = None, **kwargs: Any) -> XbzrleDeltaView:
        """View of the delta between two raw pages (``bytes`` or uint8 arrays)."""
        return cls(old=old, new=new, dlen=dlen, **kwargs)

    # ------------------------------------------------------------------ pieces
    def _summary_html(self) -> str:
        a = self.analysis
        size = a.new.size
        n_runs = sum(1 for r in a.runs if r.kind == "changed")
        lo, hi = self.window
        head = (f"<b>{html.escape(self.title)}</b><br>"
                f"{a.changed_bytes} of {size} bytes changed in {n_runs} run(s)"
                + (f" (bytes {lo}-{hi - 1} shown below; widen with the buttons). " if n_runs else ". "))
        if a.outcome == "unchanged":
            body = ("Identical to the cached copy: encoder returns 0, <b>nothing is sent</b> "
                    "(XBZRLE_UNCHANGED).")
        elif a.outcome == "encoded":
            n = len(a.encoded)
            body = (f"Encoded in <b>{n} bytes</b> = {100 * n / size:.1f}% of {size} "
                    f"(dlen {a.dlen}); record on the wire: 8-byte header + 3 + {n} = {n + 11} bytes "
                    f"instead of {size + 8}.")
        else:
            o = a.overflow
            why = ""
            if o is not None:
                why = (f" The encoder gives up at {_CHECK_TEXT.get(o.check, o.check)}: after run pair "
                       f"{o.run}, d = {o.d} bytes written, needs {o.need} &gt; dlen = {o.dlen}.")
            body = (f"<b style='color:#b00'>Overflow</b>: the encoding would not fit in "
                    f"dlen = {a.dlen} bytes "
                    f"(encoder returns -1).{why} The page is sent as a plain PAGE record "
                    f"({size + 8} bytes; XBZRLE_OVERFLOW).")
        return f"<div style='font-size:12px;line-height:1.6'>{head}{body}</div>"

    def _hex_html(self, context: int = 1, max_rows: int = 160) -> str:
        a = self.analysis
        size = a.new.size
        nrow = -(-size // 16)
        pad = nrow * 16 - size
        old = np.concatenate([a.old, np.zeros(pad, np.uint8)]).reshape(nrow, 16)
        new = np.concatenate([a.new, np.zeros(pad, np.uint8)]).reshape(nrow, 16)
        diff = old != new
        rows_changed = diff.any(axis=1)
        show = rows_changed.copy()
        for s in range(1, context + 1):
            show[:-s] |= rows_changed[s:]
            show[s:] |= rows_changed[:-s]
        if not rows_changed.any():
            show[: min(4, nrow)] = True
        out = ["<pre style='font-size:11px;line-height:1.25;margin:0'>"
               "offset  old                                              | new</pre>"]
        lines, skipped, shown = [], 0, 0
        for r in range(nrow):
            if not show[r] or shown >= max_rows:
                skipped += 1
                continue
            if skipped:
                lines.append(f"<span style='color:#999'>        ... {skipped} identical row(s) ...</span>")
                skipped = 0
            shown += 1
            o = " ".join(_hexbyte(v, d, "#fdd") for v, d in zip(old[r], diff[r]))
            n = " ".join(_hexbyte(v, d, "#f88") for v, d in zip(new[r], diff[r]))
            lines.append(f"{r * 16:06x}  {o} | {n}")
        if skipped:
            lines.append(f"<span style='color:#999'>        ... {skipped} row(s) not shown ...</span>")
        out.append("<pre style='font-size:11px;line-height:1.25;margin:0'>" + "\n".join(lines) + "</pre>")
        return "".join(out)

    def _encoded_html(self, max_tokens: int = 400) -> str:
        a = self.analysis
        if a.outcome != "encoded":
            return "<i>no encoded bytes: " + ("the page is unchanged" if a.outcome == "unchanged"
                                              else "the encoding overflowed") + "</i>"
        enc = a.encoded
        rows = []
        for t in a.tokens[:max_tokens]:
            raw = enc[t.offset: t.offset + t.size]
            shown = raw[:24].hex(" ") + (" ..." if len(raw) > 24 else "")
            if t.kind == "zrun":
                meaning = f"ULEB128 zero run: {t.value} equal bytes (page {t.page_offset}..)"
            elif t.kind == "nzrun":
                meaning = f"ULEB128 changed run: {t.value} bytes follow"
            else:
                meaning = f"literal new bytes for page {t.page_offset}..{t.page_offset + t.value - 1}"
            color = _FIELD_COLORS.get(t.kind, "#000")
            rows.append(f"<tr><td>{t.offset}</td><td style='color:{color}'>{html.escape(t.kind)}</td>"
                        f"<td><code>{shown}</code></td><td>{html.escape(meaning)}</td></tr>")
        more = f"<tr><td colspan=4>... {len(a.tokens) - max_tokens} more fields</td></tr>" \
            if len(a.tokens) > max_tokens else ""
        return (f"<div style='font-size:12px'>{len(enc)} encoded bytes, grammar (zrun nzrun data)+, "
                f"no trailing zero run</div><table style='font-size:11px'><tr><th>at</th><th>field</th>"
                f"<th>bytes</th><th>meaning</th></tr>{''.join(rows)}{more}</table>")


def _scroll(inner: str, max_height: int = 380) -> str:
    return f"<div style='max-height:{max_height}px;overflow:auto'>{inner}</div>"


def _hexbyte(v: int, changed: bool, bg: str) -> str:
    return f"<span style='background:{bg}'>{int(v):02x}</span>" if changed else f"{int(v):02x}"


def _strip_svg(a: DeltaAnalysis, window: tuple[int, int], width: int = 860) -> str:
    """Static picture of the strip's first view: one cell per byte of ``window``, old / new hex values,
    changed bytes in the run colour."""
    lo, hi = window
    n = max(hi - lo, 1)
    cw = width / n
    show_text = n <= 128
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width + 50}' height='96' font-family='monospace' "
             f"font-size='10'><text x='0' y='25'>old</text><text x='0' y='51'>new</text><text x='0' y='77'>runs</text>"]
    for i, off in enumerate(range(lo, hi)):
        x = 40 + i * cw
        ch = bool(a.old[off] != a.new[off])
        for y, v in ((12, int(a.old[off])), (38, int(a.new[off]))):
            g = 255 - v
            parts.append(f"<rect x='{x:.1f}' y='{y}' width='{cw:.1f}' height='22' fill='rgb({g},{g},{g})' "
                         f"stroke='#fff' stroke-width='0.5'/>")
            if show_text:
                bold = " font-weight='bold'" if ch else ""
                fill = "#fff" if v > 127 else "#000"
                parts.append(f"<text x='{x + cw / 2:.1f}' y='{y + 15}' text-anchor='middle' fill='{fill}'{bold}>"
                             f"{v:02x}</text>")
        parts.append(f"<rect x='{x:.1f}' y='64' width='{cw:.1f}' height='18' "
                     f"fill='{CHANGED_COLOR if ch else EQUAL_COLOR}' stroke='#fff' stroke-width='0.5'/>")
    parts.append(f"<text x='40' y='94'>{lo}</text><text x='{40 + width}' y='94' text-anchor='end'>{hi - 1}</text>")
    parts.append("</svg>")
    return "".join(parts)
