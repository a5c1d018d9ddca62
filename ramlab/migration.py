"""One decoded migration: the front door object that :func:`ramlab.open` returns.

It runs the sans-IO decoders over the main channel (plus multifd channels and the postcopy
return path when given), applies every RAM record to a :class:`~ramlab.model.destination.Destination`,
and keeps what views need: the events, the final RAM of each block, and a
:class:`~ramlab.trace.Trace` of what happened pass by pass.

    >>> import ramlab
    >>> m = ramlab.open(ramlab.data_path("plain"))           # doctest: +SKIP
    >>> m.records["page"], m.trace.n_passes                   # doctest: +SKIP
    (..., ...)
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramlab.constants import (
    MIG_CMD_POSTCOPY_LISTEN,
    MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_POSTCOPY_RUN,
    QEMU_VM_SECTION_END,
    QEMU_VM_SECTION_START,
    RAM_SAVE_FLAG_ZERO,
)
from ramlab.errors import RamlabError, StreamError
from ramlab.io import read_stream
from ramlab.model.destination import Destination
from ramlab.model.passes import PassTracker
from ramlab.trace import BlockInfo, PageClass
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder

Source = str | os.PathLike[str] | bytes | bytearray | memoryview

XBZRLE_BEFORE_AFTER_LIMIT = 64 << 20  # bytes of page snapshots kept for delta views


class Migration:
    """A decoded migration stream (see :func:`ramlab.open`).

    Attributes: ``events`` (main-channel events), ``error`` (the :class:`StreamError` that
    stopped decoding, or ``None``), ``blocks`` (MEM_SIZE entries), ``destination`` (RAM
    images and received bitmaps), ``trace``, ``records`` (counts of RAM page records by kind),
    ``machine_type``, ``vmdesc`` (parsed JSON trailer or ``None``).
    """

    def __init__(
        self,
        stream: Source,
        *channels: Source,
        return_path: Source | None = None,
        memmap_dir: str | os.PathLike[str] | None = None,
        page_size: int | None = None,
        name: str | None = None,
        progress: bool = False,
    ) -> None:
        self.name = name or (Path(stream).name if isinstance(stream, str | os.PathLike) else "stream")
        self.data = read_stream(stream)
        self.channel_data = [read_stream(c) for c in channels]
        self.return_path_data = read_stream(return_path) if return_path is not None else None
        self.memmap_dir = memmap_dir
        self.error: RamlabError | None = None
        self.events: list[ev.Event] = []
        self.blocks: tuple[ev.RamBlockEntry, ...] = ()
        self.destination: Destination | None = None
        self.records: Counter[str] = Counter()
        self.sections: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.machine_type: str | None = None
        self.vmdesc: dict | None = None
        self.discards: list[tuple[str, int, int]] = []
        self.requests: list[Any] = []
        self.return_path_events: list[Any] = []
        self.multifd_packets: list[list[Any]] = []
        self._snapshots: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._snap_bytes = 0
        self._trace_events: list[dict] = []
        self._xbzrle_pending: list[ev.RamXbzrle] = []
        self._xbzrle_pages: set[int] = set()
        self._decode(page_size, progress)

    # ------------------------------------------------------------------ decoding
    def _decode(self, page_size: int | None, progress: bool) -> None:
        dec = StreamDecoder(page_size=page_size)
        self.decoder = dec
        bar = _progress(len(self.data), progress, self.name)
        chunk = 64 << 20
        mv = memoryview(self.data) if not isinstance(self.data, memoryview) else self.data
        try:
            if len(mv) <= chunk or not progress:
                dec.feed(mv)
                dec.close()
                self.events.extend(dec.events())
            else:
                for i in range(0, len(mv), chunk):
                    dec.feed(mv[i : i + chunk])
                    self.events.extend(dec.next_events())
                    bar.update(min(chunk, len(mv) - i))
                dec.close()
                self.events.extend(dec.events())
        except StreamError as err:
            self.error = err
            self.events.extend(dec.next_events() if dec._out else [])
        finally:
            bar.close()
        self.page_size = dec.page_size
        if self.return_path_data is not None:
            self._decode_return_path()
        self._apply()

    def _decode_return_path(self) -> None:
        from ramlab.wire.postcopy import ReturnPathDecoder

        rp = ReturnPathDecoder()
        try:
            rp.feed(bytes(self.return_path_data))
            self.return_path_events.extend(rp)
            rp.close()
        except StreamError as err:
            if self.error is None:
                self.error = err
        self.requests = [e for e in self.return_path_events if type(e).__name__ == "ReqPages"]

    def _apply(self) -> None:
        tps = self.page_size
        tracker: PassTracker | None = None
        block_index: dict[str, int] = {}
        requested: dict[str, np.ndarray] = {}
        compress = any(isinstance(e, ev.RamCompressed) for e in self.events)
        epoch = 0
        in_postcopy = False
        discard_pass = False
        completing = False  # inside the RAM END section: the VM is stopped
        new_pass_pending = False  # the first postcopy page starts a pass of its own
        apply_failed = False
        for e in self.events:
            if isinstance(e, ev.Configuration):
                self.machine_type = e.machine_type
            elif isinstance(e, ev.SectionHeader):
                self.sections[e.type_name] += 1
                if e.idstr == "ram" and e.section_type == QEMU_VM_SECTION_END and not in_postcopy:
                    completing = True
            elif isinstance(e, ev.Command):
                self.commands[e.name] += 1
                if e.cmd == MIG_CMD_POSTCOPY_RAM_DISCARD and tracker is not None and self.destination:
                    if not discard_pass:
                        tracker.new_pass("postcopy")
                        tracker.force_kind("postcopy")
                        discard_pass = True
                    self._apply_discard(e, tracker, block_index)
                elif e.cmd in (MIG_CMD_POSTCOPY_LISTEN, MIG_CMD_POSTCOPY_RUN):
                    in_postcopy = True
                    new_pass_pending = True
                    if tracker is not None:
                        tracker.force_kind("postcopy")
            elif isinstance(e, ev.VmDescription):
                try:
                    self.vmdesc = json.loads(e.json_bytes)
                except ValueError as exc:
                    self.error = self.error or StreamError(
                        f"vmdesc is not valid JSON: {exc}", offset=e.offset
                    )
            elif isinstance(e, ev.RamMemSize):
                self.blocks = e.blocks
                self.destination = Destination(e.blocks, tps, self.memmap_dir)
                infos, off = [], 0
                for i, b in enumerate(e.blocks):
                    infos.append(BlockInfo(b.name, b.used_length, b.page_size or tps, off))
                    block_index[b.name] = i
                    off += -(-b.used_length // tps)
                tracker = PassTracker(tuple(infos), tps, reorder_window=4096 if compress else 0)
                if self.requests:
                    requested = self._requested_pages(block_index)
            elif isinstance(e, ev.RamEos | ev.RamMultifdFlush):
                epoch += 1
            elif isinstance(e, ev.MappedRamArea):
                if not self._apply_mapped_ram(e, tracker, block_index):
                    apply_failed = True
                    break
            if isinstance(e, ev.RAM_PAGE_EVENTS):
                if self.channel_data:
                    continue  # multifd: applied epoch by epoch with the channels, below
                if tracker is None or self.destination is None:
                    self.error = self.error or StreamError(
                        "RAM page record before the MEM_SIZE block list", offset=e.offset, section="ram"
                    )
                    break
                if new_pass_pending:
                    self._flush_xbzrle(tracker, block_index)
                    tracker.new_pass("postcopy")
                    new_pass_pending = False
                if completing and tracker._forced_kind != "complete":
                    # the RAM END section (VM stopped) is one pass of its own, wraps or not
                    self._flush_xbzrle(tracker, block_index)
                    tracker.new_pass("complete")
                    tracker.force_kind("complete")
                    tracker.split_on_wrap = False
                try:
                    if isinstance(e, ev.RamXbzrle):
                        pend = self._xbzrle_pending
                        if pend and (pend[0].block != e.block or e.page_offset in self._xbzrle_pages):
                            self._flush_xbzrle(tracker, block_index)
                        self._xbzrle_pending.append(e)
                        self._xbzrle_pages.add(e.page_offset)
                        continue
                    self._flush_xbzrle(tracker, block_index)
                    self._apply_page_event(e, tracker, block_index[e.block], in_postcopy, requested)
                except StreamError as err:
                    self.error = err
                    apply_failed = True
                    break
        if tracker is not None and not apply_failed:  # the input ended, whole or damaged: apply what came
            try:
                self._flush_xbzrle(tracker, block_index)
            except StreamError as err:
                self.error = err
        if tracker is None:
            infos = ()
            tracker = PassTracker(infos, tps)
        self.epochs = epoch
        self._tracker = tracker
        if self.channel_data and self.destination is not None:
            self._apply_multifd(tracker, block_index)
        meta = {
            "name": self.name,
            "machine_type": self.machine_type,
            "target_page_size": tps,
        }
        self.trace = tracker.to_trace(
            source="capture", meta=meta, events=self._trace_events,
            error=str(self.error) if self.error else None,
        )
        if self._snapshots:
            snaps = self._snapshots
            self.trace.page_bytes = lambda p, g: snaps.get((p, g), (None, None))

    def _flush_xbzrle(self, tracker: PassTracker, block_index: dict[str, int]) -> None:
        """Apply the queued XBZRLE records (same block, distinct pages) in one batch."""
        pend = self._xbzrle_pending
        if not pend:
            return
        self._xbzrle_pending = []
        self._xbzrle_pages = set()
        dst = self.destination
        assert dst is not None
        tps = self.page_size
        block = pend[0].block
        bi = block_index[block]
        pages = np.fromiter((e.page_offset for e in pend), np.int64, len(pend)) // tps
        nbytes = np.fromiter((8 + 3 + len(e.data) + (1 + len(e.block) if e.named else 0) for e in pend),
                             np.uint32, len(pend))
        self.records["xbzrle"] += len(pend)
        # pages of a batch are distinct, but the tracker may still start a pass inside it (a wrap)
        tracker.add(bi, pages, PageClass.XBZRLE, nbytes)
        before, after = dst.apply_xbzrle_batch(block, pend)
        if self._snap_bytes < XBZRLE_BEFORE_AFTER_LIMIT:
            g = pages + tracker.blocks[bi].offset
            passes = tracker.last_pass[g]
            for i in range(len(pend)):
                self._snapshots[(int(passes[i]), int(g[i]))] = (before[i], after[i])
            self._snap_bytes += before.nbytes + after.nbytes

    def _apply_mapped_ram(self, e: ev.MappedRamArea, tracker: PassTracker | None,
                          block_index: dict[str, int]) -> bool:
        """mapped-ram: copy the pages present in the area's bitmap from the stream buffer."""
        from ramlab.model.mapped_ram import apply_mapped_ram_area

        try:
            if tracker is None or self.destination is None:
                raise StreamError("mapped-ram area before the MEM_SIZE block list", offset=e.offset, section="ram")
            idx = apply_mapped_ram_area(self.destination, e, self.data)
        except StreamError as err:
            self.error = self.error or err
            return False
        if e.region is None:  # decoded in chunks: give the event a view of the stream for re-encoding
            i = next(i for i, x in enumerate(self.events) if x is e)
            self.events[i] = dataclasses.replace(e, region=memoryview(self.data)[e.offset : e.end])
        self.records["mapped"] += len(idx)
        tracker.add(block_index[e.block], idx, PageClass.NORMAL, np.full(len(idx), self.page_size, np.uint32))
        return True

    def _requested_pages(self, block_index: dict[str, int]) -> dict[str, np.ndarray]:
        out: dict[str, list[np.ndarray]] = {}
        tps = self.page_size
        for r in self.requests:
            out.setdefault(r.block, []).append(np.arange(r.start // tps, (r.start + r.length) // tps))
        return {k: np.unique(np.concatenate(v)) for k, v in out.items()}

    def _apply_page_event(
        self, e: ev.Event, tracker: PassTracker, bi: int, postcopy: bool, requested: dict[str, np.ndarray]
    ) -> None:
        dst = self.destination
        assert dst is not None
        tps = self.page_size
        name_len = 1 + len(e.block) if e.named else 0  # type: ignore[union-attr]
        if isinstance(e, ev.RamPages):
            pages = e.page_offsets // tps
            if e.kind == RAM_SAVE_FLAG_ZERO:
                self.records["zero"] += len(e)
                cls = PageClass.ZERO
                size = 9
            else:
                self.records["page"] += len(e)
                cls = PageClass.POSTCOPY if postcopy else PageClass.NORMAL
                size = 8 + tps
            nbytes = np.full(len(e), size, np.uint32)
            nbytes[0] += name_len
            cls_arr = np.full(len(e), cls, np.uint8)
            if postcopy and e.block in requested:
                hit = np.isin(pages, requested[e.block])
                cls_arr[hit] = PageClass.REQUESTED
            tracker.add(bi, pages, cls_arr, nbytes)
            dst.apply_pages(e)
        elif isinstance(e, ev.RamXbzrle):
            self.records["xbzrle"] += 1
            page = e.page_offset // tps
            img = dst.blocks[e.block].pages[page]
            before = img.copy() if self._snap_bytes < XBZRLE_BEFORE_AFTER_LIMIT else None
            tracker.add(bi, np.array([page]), PageClass.XBZRLE, np.array([8 + name_len + 3 + len(e.data)]))
            dst.apply_xbzrle(e)
            if before is not None:
                g = page + tracker.blocks[bi].offset
                self._snapshots[(tracker.current, g)] = (before, img.copy())
                self._snap_bytes += 2 * tps
        elif isinstance(e, ev.RamCompressed):
            self.records["compressed"] += 1
            page = e.page_offset // tps
            tracker.add(bi, np.array([page]), PageClass.COMPRESSED, np.array([8 + name_len + 4 + len(e.data)]))
            dst.apply_compressed(e)

    def _apply_discard(self, e: ev.Command, tracker: PassTracker, block_index: dict[str, int]) -> None:
        from ramlab.wire.postcopy import decode_discard_payload

        assert self.destination is not None
        name, ranges = decode_discard_payload(e.payload, offset=e.offset + 5)
        bi = block_index.get(name)
        for start, length in ranges:
            idx = self.destination.discard(name, start, length, offset=e.offset)
            self.discards.append((name, start, length))
            if bi is not None:
                tracker.mark(bi, idx, PageClass.DISCARDED)
                tracker.count("discarded", len(idx))
        self._trace_events.append(
            {"pass": tracker.current, "kind": "discard", "block": name,
             "ranges": [[int(s), int(n)] for s, n in ranges]}
        )

    def _apply_multifd(self, tracker: PassTracker, block_index: dict[str, int]) -> None:
        from ramlab.model.multifd_loader import apply_channels

        apply_channels(self, tracker, block_index)

    # ------------------------------------------------------------------ results
    def ram(self, block: str = "pc.ram") -> np.ndarray:
        """Final content of a RAM block as a flat uint8 array."""
        if self.destination is None:
            raise RamlabError("no RAM block list was decoded")
        if block not in self.destination.blocks:
            raise RamlabError(f"no RAM block {block!r}; blocks: {list(self.destination.blocks)}")
        return self.destination.ram(block)

    def device_sections(self) -> list[ev.DeviceState]:
        return [e for e in self.events if isinstance(e, ev.DeviceState)]

    def device_state(self, vmdesc: dict | None = None) -> dict:
        """Device state in the JSON shape of QEMU's ``analyze-migration.py -d state``."""
        from ramlab.wire.vmstate import DeviceSection, device_state_json

        desc = vmdesc or self.vmdesc
        if desc is None:
            raise RamlabError(
                "this stream has no vmdesc trailer (postcopy streams have none): "
                "pass the vmdesc JSON of a precopy capture of the same machine"
            )
        from ramlab.wire.encoder import mem_size_record

        sections: list[Any] = []
        for i, e in enumerate(self.events):
            if isinstance(e, ev.SectionHeader) and e.section_type == QEMU_VM_SECTION_START and e.idstr == "ram":
                nxt = self.events[i + 1]
                if isinstance(nxt, ev.RamMemSize):
                    # the block sizes, from the decoded list (postcopy page-size and mapped-ram fields,
                    # which the tool cannot read, are left out)
                    plain = [ev.RamBlockEntry(b.name, b.used_length) for b in nxt.blocks]
                    body = mem_size_record(plain, nxt.total)
                else:
                    body = b""
                sections.append(DeviceSection(e.section_id, e.idstr, e.instance_id or 0, e.version_id or 0,
                                              body, nxt.offset))
            elif isinstance(e, ev.DeviceState):
                sections.append(e)
        return device_state_json(sections, desc)

    def records_table(self, limit: int | None = None) -> list[dict[str, Any]]:
        """One row per wire item (RAM runs expanded to one row per record), with byte offsets.

        Rows: ``offset``, ``length``, ``kind``, ``section``, ``block``, ``page_offset``, ``detail``.
        The last row is the error, if decoding stopped early. This is what the
        :class:`~ramlab.widgets.StreamInspector` shows.
        """
        rows: list[dict[str, Any]] = []
        section = None
        ends = [e.offset for e in self.events[1:]] + [self.decoder.position]
        tps = self.page_size
        for e, end in zip(self.events, ends):
            if isinstance(e, ev.SectionHeader):
                section = f"{e.idstr} ({e.type_name} {e.section_id})"
                rows.append(dict(offset=e.offset, length=end - e.offset, kind=f"SECTION_{e.type_name}",
                                 section=section, block=None, page_offset=None,
                                 detail=f"id {e.section_id} {e.idstr!r}"
                                 + (f" instance {e.instance_id} version {e.version_id}" if e.named else "")))
            elif isinstance(e, ev.RamPages):
                size = 9 if e.kind == RAM_SAVE_FLAG_ZERO else 8 + tps
                first = end - e.offset - size * (len(e) - 1)
                kind = "ZERO" if e.kind == RAM_SAVE_FLAG_ZERO else "PAGE"
                off = e.offset
                for i in range(len(e)):
                    n = first if i == 0 else size
                    detail = ("named block" if e.named and i == 0 else "CONTINUE")
                    if e.fill is not None:
                        detail += f", fill 0x{int(e.fill[i]):02x}"
                    rows.append(dict(offset=off, length=n, kind=kind, section=section, block=e.block,
                                     page_offset=int(e.page_offsets[i]), detail=detail))
                    off += n
                    if limit is not None and len(rows) >= limit:
                        return rows
            else:
                kind = type(e).__name__
                detail = ""
                block = getattr(e, "block", None)
                page_offset = getattr(e, "page_offset", None)
                if isinstance(e, ev.Command):
                    kind = f"CMD_{e.name}"
                    detail = f"payload {len(e.payload)} bytes" + (f", value {e.value}" if e.value is not None else "")
                elif isinstance(e, ev.RamXbzrle):
                    kind, detail = "XBZRLE", f"{len(e.data)} encoded bytes"
                elif isinstance(e, ev.RamCompressed):
                    kind, detail = "COMPRESS_PAGE", f"{len(e.data)} zlib bytes"
                elif isinstance(e, ev.RamMemSize):
                    kind, detail = "MEM_SIZE", ", ".join(b.name for b in e.blocks)
                elif isinstance(e, ev.DeviceState):
                    kind, detail = "DEVICE_STATE", f"{e.idstr} v{e.version_id}, {len(e.body)} bytes"
                elif isinstance(e, ev.SectionFooter):
                    kind, detail = "FOOTER", f"id {e.section_id}"
                rows.append(dict(offset=e.offset, length=end - e.offset, kind=kind, section=section,
                                 block=block, page_offset=page_offset, detail=detail))
                if isinstance(e, ev.SectionFooter):
                    section = None
            if limit is not None and len(rows) >= limit:
                return rows
        if self.error is not None:
            rows.append(dict(offset=self.error.offset if isinstance(self.error, StreamError) else None,
                             length=0, kind="ERROR", section=getattr(self.error, "section", None), block=None,
                             page_offset=None, detail=str(self.error)))
        return rows

    def bytes_at(self, offset: int, length: int) -> bytes:
        """Raw stream bytes (for hex views)."""
        return bytes(self.data[max(0, offset) : max(0, offset) + max(0, length)])

    def inspector(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        """The :class:`~ramlab.widgets.StreamInspector` on this stream."""
        from ramlab.widgets import StreamInspector

        return StreamInspector(self.records_table(), self.bytes_at, error=str(self.error) if self.error else None,
                               **kwargs)

    def xbzrle_delta(self, pass_index: int, page: int, **kwargs: Any):  # type: ignore[no-untyped-def]
        """The :class:`~ramlab.widgets.XbzrleDeltaView` of an XBZRLE page (global page index)."""
        from ramlab.widgets import XbzrleDeltaView

        return XbzrleDeltaView(self.trace, pass_index, page, **kwargs)

    def summary(self) -> dict[str, Any]:
        """The ``ramlab inspect --json`` object."""
        return {
            "name": self.name,
            "stream_bytes": len(self.data),
            "machine_type": self.machine_type,
            "target_page_size": self.page_size,
            "blocks": [
                {"name": b.name, "length": b.used_length, "page_size": b.page_size or self.page_size}
                for b in self.blocks
            ],
            "records": {k: int(self.records.get(k, 0)) for k in ("zero", "page", "xbzrle", "compressed")}
            | ({"mapped": int(self.records["mapped"])} if self.records.get("mapped") else {}),
            "passes": int(self.trace.n_passes),
            "pass_kinds": self.trace.pass_kinds,
            "sections": dict(self.sections),
            "commands": dict(self.commands),
            "devices": len(self.device_sections()),
            "epochs": self.epochs,
            "channels": len(self.channel_data),
            "discards": len(self.discards),
            "discarded_pages": int(sum(n for _, _, n in self.discards) // self.page_size),
            "page_requests": len(self.requests),
            "capabilities": list(self.decoder.capabilities),
            "provenance": self.provenance(),
            "complete": self.error is None,
            "error": str(self.error) if self.error else None,
        }

    def provenance(self) -> dict[str, Any]:
        """QEMU versions that could have written this stream (see :mod:`ramlab.provenance`)."""
        from ramlab.provenance import provenance

        return provenance(self)

    def extract(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write each block's final content to ``out_dir/<name with / -> _>.bin``."""
        if self.destination is None:
            raise RamlabError("no RAM block list was decoded")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in self.destination.blocks:
            p = out / (name.replace("/", "_") + ".bin")
            self.destination.ram(name).tofile(p)
            paths.append(p)
        return paths

    # ------------------------------------------------------------------ views
    def player(self, **kwargs: Any):  # type: ignore[no-untyped-def]
        """The :class:`~ramlab.widgets.MigrationPlayer` on this migration's trace."""
        from ramlab.widgets import MigrationPlayer

        return MigrationPlayer(self.trace, **kwargs)

    def bitmap(self, pass_index: int = 0, **kwargs: Any):  # type: ignore[no-untyped-def]
        """The :class:`~ramlab.widgets.BitmapView` of one pass."""
        from ramlab.widgets import BitmapView

        return BitmapView(self.trace, pass_index=pass_index, **kwargs)

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = [
            ("stream", f"{html.escape(str(s['name']))} ({s['stream_bytes']:,} bytes)"),
            ("machine", html.escape(str(s["machine_type"]))),
            ("blocks", ", ".join(f"{html.escape(b['name'])} ({b['length'] >> 10} KiB)" for b in s["blocks"])),
            ("records", ", ".join(f"{k} {v:,}" for k, v in s["records"].items())),
            ("passes", f"{s['passes']} ({', '.join(sorted(set(s['pass_kinds'])))})"),
            ("sections", ", ".join(f"{k} {v}" for k, v in s["sections"].items())),
            ("commands", ", ".join(f"{k} {v}" for k, v in s["commands"].items()) or "none"),
            ("devices", str(s["devices"])),
            ("status", "complete" if s["complete"] else f"<b>error</b>: {html.escape(str(s['error']))}"),
        ]
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in rows)
        return f"<table><caption>ramlab migration</caption>{body}</table>"

    def __repr__(self) -> str:
        s = self.summary()
        return (f"<Migration {s['name']!r}: {s['passes']} passes, records {s['records']}, "
                f"{'complete' if s['complete'] else 'ERROR: ' + str(s['error'])}>")


def open(  # noqa: A001 - the notebook front door is deliberately ramlab.open
    stream: Source,
    *channels: Source,
    return_path: Source | None = None,
    memmap_dir: str | os.PathLike[str] | None = None,
    page_size: int | None = None,
    progress: bool = False,
) -> Migration:
    """Decode a migration: the main stream, then multifd channel files, then the return path.

    ``stream`` is a path (plain or ``.zst``) or bytes. Decoding errors do not raise: the
    returned :class:`Migration` holds everything decoded before the damage and ``.error``.
    """
    if isinstance(stream, str | os.PathLike) and Path(stream).is_dir():
        from ramlab.data import capture_files

        files, ret = capture_files(stream)
        name = Path(stream).name
        return Migration(files[0], *files[1:], *channels, return_path=return_path or ret,
                         memmap_dir=memmap_dir, page_size=page_size, progress=progress, name=name)
    return Migration(stream, *channels, return_path=return_path, memmap_dir=memmap_dir,
                     page_size=page_size, progress=progress)


def _progress(total: int, enabled: bool, name: str):  # type: ignore[no-untyped-def]
    if enabled:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="B", unit_scale=True, desc=f"decoding {name}")

    class _Null:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    return _Null()


def open_many(paths: Sequence[Source], **kwargs: Any) -> Migration:
    """``open(paths[0], *paths[1:])``: the CLI's form (main channel first)."""
    return open(paths[0], *paths[1:], **kwargs)
