"""``StreamInspector``: the records of a stream as a filterable table, a hex view with every
field of the selected record annotated, and the decoding error one click away.

The pure logic is top-level and needs no browser:

* :class:`RecordTable` turns ``Migration.records_table()`` rows into columnar numpy arrays
  (categorical codes for kind / section / block), so filtering 100k+ rows is a few vectorised
  comparisons (:func:`filter_rows`);
* :func:`field_layout` splits one record into its wire fields (header word with decoded flags,
  cstr8 block name, fill byte, page data, XBZRLE flag / length / data, ...) from the row's
  ``kind`` and ``length`` plus the few length bytes inside the record -- it never re-runs the
  stream decoder.  The fields tile the record exactly: their lengths sum to ``row["length"]``.

    >>> rows = [dict(offset=0, length=8, kind="FileHeader", section=None, block=None,
    ...              page_offset=None, detail=""),
    ...         dict(offset=8, length=9, kind="ZERO", section="ram (PART 2)", block="pc.ram",
    ...              page_offset=4096, detail="CONTINUE, fill 0x00")]
    >>> table = RecordTable(rows)
    >>> filter_rows(table, kind="ZERO").tolist()
    [1]
    >>> [(f.name, f.length) for f in field_layout(rows[1], bytes.fromhex("000000000000102200"))]
    [('header word', 8), ('fill byte', 1)]
    >>> decode_ram_flags(0x22)
    ['ZERO', 'CONTINUE']
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import ipywidgets as W
import numpy as np

from ramlab.constants import (
    TARGET_PAGE_SIZE,
)
from ramlab.plots.static import figure_html
from ramlab.widgets._common import ViewBox
from ramlab.wire.layout import Field, decode_ram_flags, field_layout  # noqa: F401  (re-exported)

__all__ = [
    "StreamInspector",
    "RecordTable",
    "Field",
    "filter_rows",
    "field_layout",
    "decode_ram_flags",
    "infer_page_size",
    "row_containing",
    "hex_dump_html",
]

ALL = "(all)"


#: background colour of each field role in the hex view
FIELD_COLORS: dict[str, str] = {
    "marker": "#fde0c5",
    "header": "#c6dbef",
    "name": "#d9f0d3",
    "length": "#fee391",
    "value": "#e5d8f0",
    "data": "#f2f2f2",
    "error": "#ff9896",
}


# ----------------------------------------------------------------------------------
# columnar table + filtering
# ----------------------------------------------------------------------------------


def _factorize(values: Iterable[Any]) -> tuple[np.ndarray, list[str]]:
    """Categorical codes (int32) and the list of distinct values (``None`` -> ``""``)."""
    index: dict[str, int] = {}
    codes = np.fromiter((index.setdefault("" if v is None else str(v), len(index)) for v in values), np.int32)
    return codes, list(index)


class RecordTable:
    """The rows of ``Migration.records_table()`` as numpy columns (built once, O(n)).

    ``offset`` / ``page_offset`` are int64 with -1 for ``None``; ``kind``, ``section`` and
    ``block`` are int32 codes into ``kinds`` / ``sections`` / ``blocks``; ``detail`` stays a
    list of strings.  ``rows[i]`` gives back the original dict.

    >>> t = RecordTable([dict(offset=None, length=0, kind="ERROR", section=None, block=None,
    ...                       page_offset=None, detail="truncated")])
    >>> t.offset.tolist(), t.kinds, len(t)
    ([-1], ['ERROR'], 1)
    """

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = list(rows)
        n = len(self.rows)
        self.offset = np.fromiter((-1 if r.get("offset") is None else r["offset"] for r in self.rows), np.int64, n)
        self.length = np.fromiter((r.get("length") or 0 for r in self.rows), np.int64, n)
        self.page_offset = np.fromiter(
            (-1 if r.get("page_offset") is None else r["page_offset"] for r in self.rows), np.int64, n
        )
        self.kind, self.kinds = _factorize(r.get("kind") for r in self.rows)
        self.section, self.sections = _factorize(r.get("section") for r in self.rows)
        self.block, self.blocks = _factorize(r.get("block") for r in self.rows)
        self.detail = [str(r.get("detail") or "") for r in self.rows]
        self._haystack: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def haystack(self) -> np.ndarray:
        """Lower-case ``kind section block +0xpage_offset detail`` of every row (built on first use)."""
        if self._haystack is None:
            kinds = np.array(self.kinds, dtype=object)[self.kind] if len(self) else np.zeros(0, object)
            secs = np.array(self.sections, dtype=object)[self.section] if len(self) else np.zeros(0, object)
            blks = np.array(self.blocks, dtype=object)[self.block] if len(self) else np.zeros(0, object)
            self._haystack = np.array(
                [f"{k} {s} {b} +0x{p:x} {d}".lower() if p >= 0 else f"{k} {s} {b} {d}".lower()
                 for k, s, b, p, d in zip(kinds, secs, blks, self.page_offset.tolist(), self.detail)],
                dtype=str,
            )
        return self._haystack

    def counts(self, column: str) -> dict[str, int]:
        """How many rows have each value of ``column`` (``"kind"``, ``"section"`` or ``"block"``)."""
        codes: np.ndarray = getattr(self, column)
        names: list[str] = getattr(self, column + "s")
        c = np.bincount(codes, minlength=len(names))
        return {name: int(k) for name, k in zip(names, c)}


def _code_mask(codes: np.ndarray, names: list[str], wanted: str | Iterable[str] | None) -> np.ndarray | None:
    if wanted is None or wanted == ALL:
        return None
    want = {wanted} if isinstance(wanted, str) else set(wanted)
    ok = np.array([n in want for n in names], dtype=bool)
    return ok[codes] if ok.size else np.zeros(codes.size, bool)


_OFFSET_RE = re.compile(r"^@\s*(0x[0-9a-fA-F]+|\d+)$")


def row_containing(table: RecordTable, offset: int) -> int | None:
    """Index of the record whose bytes ``[offset, offset + length)`` contain ``offset``.

    Falls back to the last record starting at or before ``offset`` (e.g. the ERROR row
    of a truncated stream, or a zero-length item).  ``None`` before the first record.

    >>> t = RecordTable([dict(offset=0, length=8, kind="A"), dict(offset=8, length=4, kind="B")])
    >>> row_containing(t, 9), row_containing(t, 100)
    (1, 1)
    """
    valid = np.flatnonzero(table.offset >= 0)
    if valid.size == 0:
        return None
    offs = table.offset[valid]
    order = np.argsort(offs, kind="stable")
    k = int(np.searchsorted(offs[order], offset, side="right")) - 1
    if k < 0:
        return None
    # among the rows starting at that offset prefer one that has bytes (not a 0-length marker)
    start = offs[order][k]
    same = valid[order][offs[order] == start]
    with_bytes = same[table.length[same] > 0]
    return int(with_bytes[0] if with_bytes.size and offset < start + table.length[with_bytes[0]] else same[-1])


def filter_rows(
    table: RecordTable,
    kind: str | Iterable[str] | None = None,
    section: str | Iterable[str] | None = None,
    block: str | Iterable[str] | None = None,
    text: str | None = None,
) -> np.ndarray:
    """Indices (int64, ascending) of the rows that pass every filter given.

    ``kind`` / ``section`` / ``block``: one value or a set of values (``None`` or ``"(all)"``:
    no filter).  ``text``: case-insensitive substring of ``kind section block +0xpage_offset
    detail``; ``"@0x1234"`` or ``"@4660"`` instead selects the record containing that byte
    offset of the stream.

    >>> rows = [dict(offset=i * 9, length=9, kind="ZERO", block="pc.ram", page_offset=i * 4096,
    ...              detail="CONTINUE") for i in range(4)]
    >>> t = RecordTable(rows)
    >>> filter_rows(t, text="+0x2000").tolist(), filter_rows(t, text="@20").tolist()
    ([2], [2])
    """
    mask = np.ones(len(table), dtype=bool)
    for codes, names, wanted in (
        (table.kind, table.kinds, kind),
        (table.section, table.sections, section),
        (table.block, table.blocks, block),
    ):
        m = _code_mask(codes, names, wanted)
        if m is not None:
            mask &= m
    if text:
        t = text.strip()
        hit = _OFFSET_RE.match(t)
        if hit:
            off = int(hit.group(1), 0)
            sel = np.zeros(len(table), bool)
            i = row_containing(table, off)
            if i is not None:
                sel[i] = True
            mask &= sel
        elif t:
            mask &= np.char.find(table.haystack(), t.lower()) >= 0
    return np.flatnonzero(mask)


def infer_page_size(table: RecordTable, default: int = TARGET_PAGE_SIZE) -> int:
    """Target page size of the stream: length - 8 of a CONTINUE ``PAGE`` record, else ``default``.

    >>> infer_page_size(RecordTable([dict(offset=0, length=16392, kind="PAGE", detail="CONTINUE")]))
    16384
    """
    if "PAGE" not in table.kinds:
        return default
    pages = np.flatnonzero(table.kind == table.kinds.index("PAGE"))
    for i in pages[:64].tolist():
        if table.detail[i].startswith("CONTINUE"):
            n = int(table.length[i]) - 8
            if n > 0 and n & (n - 1) == 0:
                return n
    return default


# ----------------------------------------------------------------------------------
# HTML helpers
# ----------------------------------------------------------------------------------


def hex_dump_html(
    data: bytes,
    base: int,
    fields: Sequence[Field] = (),
    *,
    head: int = 256,
    tail: int = 64,
    mark: int | None = None,
) -> str:
    """A 16-bytes-per-line hex + ASCII dump with absolute offsets, each byte coloured by its field.

    Shows the first ``head`` and last ``tail`` bytes of long records; ``mark`` (absolute offset)
    is outlined in red (the error position).

    >>> "000010" in hex_dump_html(bytes(20), 0)
    True
    """
    n = len(data)
    arr = np.frombuffer(data, np.uint8) if n else np.zeros(0, np.uint8)
    role = np.full(n, "", dtype=object)
    name = np.full(n, "", dtype=object)
    for f in fields:
        lo, hi = max(0, f.offset - base), min(n, f.end - base)
        if hi > lo:
            role[lo:hi] = f.role
            name[lo:hi] = f.name
    show = np.zeros(n, bool)
    if n <= head + tail + 16:
        show[:] = True
    else:
        show[:head] = True
        show[n - tail:] = True
    lines = []
    first = (base // 16) * 16
    last = base + n
    skipped = False
    for line_start in range(first, last, 16):
        idx = np.arange(max(line_start, base), min(line_start + 16, last)) - base
        if idx.size and not show[idx].any():
            if not skipped:
                lines.append(f"<span style='color:#999'>   ... {n - head - tail:,} bytes not shown ...</span>")
                skipped = True
            continue
        cells, text = [], []
        for a in range(line_start, line_start + 16):
            i = a - base
            if i < 0 or i >= n:
                cells.append("  ")
                text.append(" ")
                continue
            v = int(arr[i])
            bg = FIELD_COLORS.get(role[i], "")
            outline = "outline:2px solid #d00;" if mark is not None and a == mark else ""
            title = html.escape(str(name[i]), quote=True)
            cells.append(f"<span title='{title}' style='background:{bg};{outline}'>{v:02x}</span>")
            text.append(html.escape(chr(v)) if 0x20 <= v < 0x7F else ".")
        lines.append(f"<span style='color:#777'>{line_start:08x}</span>  {' '.join(cells)}  {''.join(text)}")
    if mark is not None and mark >= last:
        lines.append(f"<span style='color:#d00'>{mark:08x}  &lt;end of data&gt; the stream stops here</span>")
    return "<pre style='font-size:11px;line-height:1.35;margin:0'>" + "\n".join(lines) + "</pre>"


def _fields_html(fields: Sequence[Field]) -> str:
    rows = []
    for f in fields:
        bg = FIELD_COLORS.get(f.role, "")
        rows.append(
            f"<tr><td style='background:{bg}'>{html.escape(f.name)}</td><td>0x{f.offset:x}</td>"
            f"<td>{f.offset:,}</td><td>{f.length:,}</td><td><code>{html.escape(f.value)}</code></td>"
            f"<td>{html.escape(f.meaning)}</td></tr>"
        )
    return ("<table style='font-size:11px;border-collapse:collapse' class='ramlab-fields'>"
            "<tr><th>field</th><th>offset</th><th>(dec)</th><th>bytes</th><th>value</th><th>meaning</th></tr>"
            + "".join(rows) + "</table>")


_CSS = """<style>
.ramlab-inspector select { font-family: monospace; font-size: 11.5px; }
.ramlab-inspector .ramlab-fields td, .ramlab-inspector .ramlab-fields th {
  padding: 1px 6px; border-bottom: 1px solid #eee; text-align: left; }
</style>"""


# ----------------------------------------------------------------------------------
# the widget
# ----------------------------------------------------------------------------------


class StreamInspector(ViewBox):
    """Filterable record table + annotated hex view of a migration stream.

    ``rows`` are ``Migration.records_table()`` rows, ``bytes_at(offset, length)`` returns raw
    stream bytes, ``error`` the decoding error text (``Migration.inspector()`` passes all
    three).  The table shows a window of ``window`` matching rows at a time (pager buttons),
    so 100k+ rows stay responsive; filters are vectorised numpy masks (:func:`filter_rows`).
    Selecting a row shows its hex dump with every field coloured and listed with its
    absolute byte offset (:func:`field_layout`).  With an error, a red banner and a
    "jump to error" button select the ERROR row and show the bytes around the bad offset.

    >>> rows = [dict(offset=0, length=8, kind="FileHeader", section=None, block=None,
    ...              page_offset=None, detail=""),
    ...         dict(offset=8, length=0, kind="ERROR", section=None, block=None,
    ...              page_offset=None, detail="stream ends in the middle of an item")]
    >>> data = bytes.fromhex("5145564d00000003")
    >>> ins = StreamInspector(rows, lambda o, n: data[o:o + n], error="truncated")
    >>> ins.jump_to_error(); ins.selected
    1
    >>> ins.set_filter(kind="FileHeader"); ins.matches.tolist()
    [0]
    """

    uses_bokeh = False

    def __init__(
        self,
        rows: Sequence[dict[str, Any]],
        bytes_at: Callable[[int, int], bytes],
        error: str | None = None,
        *,
        page_size: int | None = None,
        window: int = 200,
        visible_rows: int = 18,
        max_hex_bytes: int = 320,
    ) -> None:
        self.table = rows if isinstance(rows, RecordTable) else RecordTable(rows)
        self.bytes_at = bytes_at
        self.page_size = int(page_size or infer_page_size(self.table))
        self.window = int(window)
        self.max_hex_bytes = int(max_hex_bytes)
        err_rows = np.flatnonzero(self.table.kind == self.table.kinds.index("ERROR")) \
            if "ERROR" in self.table.kinds else np.zeros(0, np.int64)
        self.error_row: int | None = int(err_rows[-1]) if err_rows.size else None
        self.error = error or (self.table.detail[self.error_row] if self.error_row is not None else None)
        self.matches: np.ndarray = np.arange(len(self.table), dtype=np.int64)
        self.page = 0
        self.selected: int | None = None
        self.fields: list[Field] = []
        self._filters: dict[str, Any] = {"kind": None, "section": None, "block": None, "text": None}
        self._busy = False

        def options(col: str) -> list[tuple[str, str]]:
            counts = self.table.counts(col)
            return [(ALL, ALL)] + [(f"{k or '(none)'} ({v:,})", k) for k, v in sorted(counts.items())]

        lay = W.Layout(width="230px")
        self.kind_filter = W.Dropdown(options=options("kind"), value=ALL, description="kind", layout=lay)
        self.section_filter = W.Dropdown(options=options("section"), value=ALL, description="section", layout=lay)
        self.block_filter = W.Dropdown(options=options("block"), value=ALL, description="block", layout=lay)
        self.text_filter = W.Text(value="", placeholder="text, or @0x1234 = record at offset",
                                  description="find", continuous_update=False, layout=W.Layout(width="300px"))
        for w in (self.kind_filter, self.section_filter, self.block_filter):
            w.style.description_width = "52px"
        self.text_filter.style.description_width = "36px"
        self.first_btn = W.Button(description="|<", layout=W.Layout(width="40px"), tooltip="first page")
        self.prev_btn = W.Button(description="<", layout=W.Layout(width="40px"), tooltip="previous page")
        self.next_btn = W.Button(description=">", layout=W.Layout(width="40px"), tooltip="next page")
        self.last_btn = W.Button(description=">|", layout=W.Layout(width="40px"), tooltip="last page")
        self.status = W.HTML()
        self.header = W.HTML(
            "<pre style='font-size:11.5px;margin:0 0 0 4px'>"
            + html.escape(f"{'row':>7} {'offset':>10} {'length':>6}  {'kind':<24} {'block + offset':<28} detail")
            + "</pre>"
        )
        self.list = W.Select(options=[], rows=visible_rows, layout=W.Layout(width="100%"))
        self.hex = W.HTML()
        self.field_table = W.HTML()
        self.error_banner = W.HTML()
        self.jump_btn = W.Button(description="jump to error", button_style="danger", icon="bolt",
                                 layout=W.Layout(width="150px", min_width="150px", flex="0 0 auto"))
        self.error_banner.layout = W.Layout(flex="1 1 auto", max_width="760px")
        self.jump_btn.on_click(lambda _: self.jump_to_error())
        for w in (self.kind_filter, self.section_filter, self.block_filter, self.text_filter):
            w.observe(self._on_filter, names="value")
        self.first_btn.on_click(lambda _: self.show_page(0))
        self.prev_btn.on_click(lambda _: self.show_page(self.page - 1))
        self.next_btn.on_click(lambda _: self.show_page(self.page + 1))
        self.last_btn.on_click(lambda _: self.show_page(self.n_pages - 1))
        self.list.observe(self._on_select, names="value")

        children: list[W.Widget] = [W.HTML(_CSS)]
        if self.error:
            self.error_banner.value = (
                "<div style='background:#fde2e1;border:2px solid #d62728;border-radius:4px;padding:6px 10px;"
                "font-size:13px'><b style='color:#b00'>decoding stopped: </b>"
                + html.escape(self.error)
                + (f"<br><span style='font-size:11px'>at byte offset "
                   f"{int(self.table.offset[self.error_row]):,} (0x{int(self.table.offset[self.error_row]):x}); "
                   f"every record before it is listed below</span>"
                   if self.error_row is not None and self.table.offset[self.error_row] >= 0 else "")
                + "</div>"
            )
            children.append(W.HBox([self.error_banner, self.jump_btn],
                                   layout=W.Layout(align_items="center", grid_gap="8px")))
        children += [
            W.HBox([self.kind_filter, self.section_filter, self.block_filter, self.text_filter],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.first_btn, self.prev_btn, self.next_btn, self.last_btn, self.status],
                   layout=W.Layout(align_items="center")),
            self.header,
            self.list,
            W.HBox([self.hex, self.field_table], layout=W.Layout(flex_flow="row wrap", grid_gap="12px",
                                                                 height="400px", overflow="auto")),
        ]
        super().__init__(children)
        self.add_class("ramlab-inspector")
        self.show_page(0)
        if len(self.table):
            self.select_row(self.error_row if self.error_row is not None else int(self.matches[0]))

    # ------------------------------------------------------------------ API
    @property
    def n_pages(self) -> int:
        """Pages of ``window`` rows among the matching rows (at least 1)."""
        return max(1, -(-len(self.matches) // self.window))

    def set_filter(
        self,
        kind: str | None = None,
        section: str | None = None,
        block: str | None = None,
        text: str | None = None,
    ) -> None:
        """Set every filter at once (``None`` = no filter) and show the first page of matches."""
        self._busy = True
        try:
            self.kind_filter.value = kind if kind in self.table.kinds else ALL
            self.section_filter.value = section if section in self.table.sections else ALL
            self.block_filter.value = block if block in self.table.blocks else ALL
            self.text_filter.value = text or ""
        finally:
            self._busy = False
        self._apply_filters()

    def show_page(self, page: int) -> None:
        """Show page ``page`` (clipped) of the matching rows."""
        self.page = int(np.clip(page, 0, self.n_pages - 1))
        lo = self.page * self.window
        idx = self.matches[lo : lo + self.window]
        self._busy = True
        try:
            self.list.options = [(self._label(int(i)), int(i)) for i in idx]
            self.list.value = self.selected if self.selected is not None and self.selected in set(idx.tolist()) \
                else None
        finally:
            self._busy = False
        n, total = len(self.matches), len(self.table)
        shown = f"rows {lo + 1:,}-{lo + len(idx):,} of {n:,} matching" if n else "no matching rows"
        self.status.value = (f"<span style='font-size:12px;margin-left:8px'>{shown} ({total:,} records), "
                             f"page {self.page + 1:,}/{self.n_pages:,}</span>")
        self.first_btn.disabled = self.prev_btn.disabled = self.page == 0
        self.next_btn.disabled = self.last_btn.disabled = self.page >= self.n_pages - 1

    def select_row(self, i: int) -> None:
        """Select record ``i`` (index into the rows): page to it (clearing filters that hide it)
        and show its hex view."""
        i = int(i)
        if not 0 <= i < len(self.table):
            raise IndexError(f"row {i} outside 0..{len(self.table) - 1}")
        pos = int(np.searchsorted(self.matches, i))
        if pos >= len(self.matches) or self.matches[pos] != i:
            self.set_filter()
            pos = i
        self.selected = i
        self.show_page(pos // self.window)
        self._show_record(i)

    def jump_to_error(self) -> None:
        """Select the ERROR row (or the last record when there is none)."""
        if len(self.table):
            self.select_row(self.error_row if self.error_row is not None else len(self.table) - 1)

    def goto_offset(self, offset: int) -> int | None:
        """Select the record containing stream byte ``offset``; returns its row index."""
        i = row_containing(self.table, int(offset))
        if i is not None:
            self.select_row(i)
        return i

    # ------------------------------------------------------------------ static fallback
    def summary_text(self) -> str:
        err = f"; decoding stopped: {self.error}" if self.error else ""
        return f"StreamInspector: {len(self.table):,} records{err}"

    def static_html(self) -> str:
        i0 = self.page * self.window
        lines = [html.escape(self._label(int(i))) for i in self.matches[i0: i0 + 20]]
        table = ("<pre style='font-size:11px;line-height:1.3;max-height:300px;overflow:auto;margin:0'>"
                 + html.escape(f"{'row':>7} {'offset':>10} {'length':>6}  {'kind':<24} {'block + offset':<28} detail")
                 + "\n" + "\n".join(lines) + "</pre>")
        return figure_html(f"Stream inspector: {len(self.table):,} records (static picture)",
                           self.error_banner.value + table + self.hex.value + self.field_table.value)

    # ------------------------------------------------------------------ internals
    def _label(self, i: int) -> str:
        t = self.table
        off = int(t.offset[i])
        kind = t.kinds[t.kind[i]]
        blk = t.blocks[t.block[i]]
        po = int(t.page_offset[i])
        where = f"{blk} +0x{po:x}" if blk and po >= 0 else blk
        offs = f"{off:>10,}" if off >= 0 else f"{'?':>10}"
        mark = "!! " if kind == "ERROR" else ""
        return f"{i:>7} {offs} {int(t.length[i]):>6}  {mark + kind:<24} {where[:28]:<28} {t.detail[i][:90]}"

    def _on_filter(self, change: dict) -> None:
        if not self._busy:
            self._apply_filters()

    def _apply_filters(self) -> None:
        self._filters = dict(
            kind=self.kind_filter.value, section=self.section_filter.value, block=self.block_filter.value,
            text=self.text_filter.value,
        )
        self.matches = filter_rows(self.table, **self._filters)
        text = (self.text_filter.value or "").strip()
        if _OFFSET_RE.match(text) and self.matches.size:
            self.selected = int(self.matches[0])
            self._show_record(self.selected)
        self.show_page(0)

    def _on_select(self, change: dict) -> None:
        if self._busy or change["new"] is None:
            return
        self.selected = int(change["new"])
        self._show_record(self.selected)

    def _show_record(self, i: int) -> None:
        row = self.table.rows[i]
        t = self.table
        off, length = int(t.offset[i]), int(t.length[i])
        title = (f"<div style='font-size:12px;margin:4px 0'><b>row {i}: {html.escape(str(row.get('kind')))}</b> "
                 f"at {off:,} (0x{off:x}), {length:,} bytes"
                 f"{' &mdash; ' + html.escape(str(row.get('detail'))) if row.get('detail') else ''}</div>")
        if row.get("kind") == "ERROR":
            self.fields = []
            if off >= 0:
                lo = max(0, off - 64)
                data = bytes(self.bytes_at(lo, off + 64 - lo))
                prev = i - 1 if i > 0 else None
                fields = []
                if prev is not None and t.offset[prev] >= 0:
                    fields = field_layout(t.rows[prev], bytes(self.bytes_at(int(t.offset[prev]),
                                                                            int(t.length[prev]))), self.page_size)
                self.hex.value = (title.replace("<b>", "<b style='color:#b00'>", 1)
                                  + hex_dump_html(data, lo, fields, mark=off))
            else:
                self.hex.value = title
            self.field_table.value = (f"<div style='color:#b00;font-size:12px;max-width:520px'><b>error:</b> "
                                      f"{html.escape(self.error or str(row.get('detail')))}</div>")
            return
        if off < 0:
            self.hex.value, self.field_table.value, self.fields = title, "", []
            return
        head = min(length, self.max_hex_bytes)
        tail = min(64, max(0, length - head))
        data = bytes(self.bytes_at(off, length)) if length <= 1 << 16 else (
            bytes(self.bytes_at(off, head)) + bytes(max(0, length - head - tail)) + bytes(
                self.bytes_at(off + length - tail, tail)))
        self.fields = field_layout(row, data, self.page_size)
        self.hex.value = title + hex_dump_html(data, off, self.fields, head=head, tail=tail)
        self.field_table.value = _fields_html(self.fields)
