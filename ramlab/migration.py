"""One decoded migration: the front door object that :func:`ramlab.open` returns.

It reads the inputs (:mod:`ramlab.io`), runs the sans-IO decoders of :mod:`ramlab.wire` over the
main channel, the multifd channels and the postcopy return path, hands the events to a
:class:`~ramlab.model.loader.RamLoader`, and exposes what views need: the events, the final RAM of
each block, and a :class:`~ramlab.trace.Trace` of what happened pass by pass.

    >>> import ramlab
    >>> m = ramlab.open(ramlab.data_path("plain"))
    >>> m.error is None, m.records["zero"] > 0
    (True, True)
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ramlab.constants import QEMU_VM_SECTION_START, RAM_SAVE_FLAG_ZERO
from ramlab.errors import InternalError, RamlabError, StreamError, TruncatedStream
from ramlab.io import DEFAULT_MAX_DECOMPRESSED, InputCut, read_stream
from ramlab.model.destination import Destination, Images, block_file_name
from ramlab.model.guest import memory_limit
from ramlab.model.loader import RamLoader
from ramlab.model.multifd_loader import MultifdLoader
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.fields import ram_run_sizes
from ramlab.wire.return_path import ReturnPathDecoder

Source = str | os.PathLike[str] | bytes | bytearray | memoryview

#: bytes of main stream fed to the decoder at a time when a progress bar is shown
PROGRESS_CHUNK = 64 << 20
#: a compressed input may expand to this many times the RAM its stream declares (MEM_SIZE) ...
EXPANSION_PER_RAM_BYTE = 64
#: ... and at least to this
MIN_EXPANSION_LIMIT = 256 << 20
#: bytes of a stream's start read to find its declared RAM
PROBE_BYTES = 1 << 20
#: page records a migration may carry per target page its MEM_SIZE list declares, counted over the
#: main channel and the multifd channels: ZERO and PAGE records, XBZRLE and COMPRESS records, and the
#: normal and zero page entries of multifd packets. A sender sends a page at most once per pass, so
#: this is 64 full passes, as many as the 64-fold expansion limit of compressed input allows PAGE
#: records; past it, decoding stops with a :class:`~ramlab.errors.StreamError` at that record
#: (docs/robustness.md, "Resource budgets"). It bounds the page offsets the events keep (8 bytes a
#: record: at most 512 bytes per declared page, 1/8 of the RAM images) whatever the records' size
RECORDS_PER_PAGE = 64
#: ... and at least this many (tiny guests, a stream without a MEM_SIZE list): 64 passes of a
#: 256 MiB guest, at most 32 MiB of page offsets
MIN_RECORDS_BUDGET = RECORDS_PER_PAGE * (256 << 20) // 4096
#: ... and at most as many as fit in this share of the memory a simulation may use
#: (:func:`ramlab.model.guest.memory_limit`), however much RAM the list declares: RAM images are
#: zero-filled lazily, so a block list that claims a petabyte costs nothing until its records come
MACHINE_SHARE_FOR_RECORDS = 1 / 8


def _machine_records_cap() -> int:
    """Page records whose offsets (8 bytes each) fit in :data:`MACHINE_SHARE_FOR_RECORDS` of memory."""
    return int(memory_limit() * MACHINE_SHARE_FOR_RECORDS) // 8


def _declared_ram(head: bytes | memoryview) -> int | None:
    """The RAM total the MEM_SIZE list at the start of a stream declares; ``-1`` if the stream is
    damaged before it (nothing after the damage can be decoded), ``None`` if not found."""
    dec = StreamDecoder()
    dec.receive_data(bytes(head[:PROBE_BYTES]))
    try:
        for e in dec.events():
            if isinstance(e, ev.RamMemSize):
                return e.total
    except StreamError:
        return -1
    return None


def _internal(exc: Exception, offset: int | None, doing: str) -> InternalError:
    return InternalError(f"internal error while {doing} (please report it with this input): "
                         f"{type(exc).__name__}: {exc}", offset=offset)


def _limit_for(ram: int | None) -> int:
    if ram is None:
        return DEFAULT_MAX_DECOMPRESSED
    return max(MIN_EXPANSION_LIMIT, EXPANSION_PER_RAM_BYTE * max(ram, 0))


def _page_records(e: ev.Event) -> int:
    """The page records an event carries (what :data:`RECORDS_PER_PAGE` counts)."""
    if isinstance(e, ev.RamPages):
        return len(e)
    if isinstance(e, ev.RamXbzrle | ev.RamCompressed):
        return 1
    if isinstance(e, ev.MultifdPacket):
        return e.normal_pages + e.zero_pages
    return 0


class _RecordsBudget:
    """The page records a migration may carry (:data:`RECORDS_PER_PAGE`), checked event by event."""

    def __init__(self) -> None:
        self.limit = MIN_RECORDS_BUDGET
        self.pages: int | None = None  # target pages the first MEM_SIZE list declares
        self.used = 0

    def declare(self, e: ev.RamMemSize, page_size: int) -> None:
        if self.pages is None:
            self.pages = sum(-(-b.used_length // page_size) for b in e.blocks)
            self.limit = max(MIN_RECORDS_BUDGET, min(RECORDS_PER_PAGE * self.pages, _machine_records_cap()))

    def room(self, n: int) -> int:
        """How many of ``n`` more records fit (all of them, or fewer: the budget ends there)."""
        return min(n, self.limit - self.used)

    def error(self, offset: int, section: str) -> StreamError:
        if self.pages is None:
            why = "the minimum budget: no MEM_SIZE list before"
        elif RECORDS_PER_PAGE * self.pages > self.limit:
            why = (f"the page offsets they keep, at most {MACHINE_SHARE_FOR_RECORDS:.0%} of the memory this machine "
                   f"gives a migration; fewer than {RECORDS_PER_PAGE} per page of the {self.pages:,} target pages "
                   "the MEM_SIZE list declares")
        elif RECORDS_PER_PAGE * self.pages >= MIN_RECORDS_BUDGET:
            why = f"{RECORDS_PER_PAGE} per page of the {self.pages:,} target pages the MEM_SIZE list declares"
        else:
            why = (f"the minimum budget, more than {RECORDS_PER_PAGE} per page of the {self.pages:,} target pages "
                   "the MEM_SIZE list declares")
        return StreamError(
            "more page records than the records budget (ramlab.migration.RECORDS_PER_PAGE; docs: robustness.md, "
            "'Resource budgets')", offset=offset, section=section,
            expected=f"at most {self.limit:,} page records ({why})", found=f"page record {self.limit + 1:,}")


def _stream_limit(head: bytes) -> int:
    """The expansion limit of a compressed main stream, from its first decompressed chunk."""
    ram = _declared_ram(head)
    return len(head) if ram == -1 else _limit_for(ram)


class Migration:
    """A decoded migration stream (see :func:`ramlab.open`).

    Attributes: ``events`` (main-channel events), ``error`` (the :class:`StreamError` that
    stopped decoding, or ``None``), ``blocks`` (MEM_SIZE entries), ``destination`` (RAM
    images and received bitmaps), ``trace``, ``records`` (counts of RAM page records by kind),
    ``machine_type``, ``vmdesc`` (parsed JSON trailer or ``None``), ``loader`` (the
    :class:`~ramlab.model.loader.RamLoader` that applied the events).
    """

    def __init__(
        self,
        stream: Source,
        *channels: Source,
        return_path: Source | None = None,
        memmap_dir: str | os.PathLike[str] | None = None,
        page_size: int | None = None,
        name: str | None = None,
        images: Images | None = None,
        progress: bool = False,
    ) -> None:
        self.name = name or (Path(stream).name if isinstance(stream, str | os.PathLike) else "stream")
        self.error: RamlabError | None = None
        self.warnings: list[str] = []
        self._cut_error: StreamError | None = None
        self.data = self._read(stream, _stream_limit)
        bound = self._declared_limit()
        self.channel_data = [self._read(c, bound) for c in channels]
        self.return_path_data = self._read(return_path, bound) if return_path is not None else None
        self.events: list[ev.Event] = []
        self.vmdesc: dict | None = None
        self.requests: list[ev.ReqPages] = []
        self.return_path_events: list[ev.ReturnPathEvent] = []
        self.multifd_packets: list[list[ev.Event]] = []
        self.decoder = StreamDecoder(page_size=page_size)
        self._budget = _RecordsBudget()
        self._main_end: int | None = None  # where the records budget stopped the main channel
        self._decode_main(progress)
        self.page_size = self.decoder.page_size
        if self.return_path_data is not None:
            self._decode_return_path()
        self.loader = RamLoader(
            self.page_size, images=images or Images(folder=memmap_dir), stream=self.data, requests=self.requests,
            reorder_window=4096 if any(isinstance(e, ev.RamCompressed) for e in self.events) else 0,
        )
        if self.channel_data:
            by_flush = any(isinstance(e, ev.RamMultifdFlush) for e in self.events)
            self.loader.multifd = MultifdLoader(self.loader, by_flush=by_flush)
        self._load()
        if self._cut_error is not None and (self.error is None or isinstance(self.error, TruncatedStream)):
            self.error = self._cut_error  # the input was cut (damaged or past its limit): that stopped decoding
        self.trace = self.loader.to_trace(
            meta={"name": self.name, "machine_type": self.machine_type, "target_page_size": self.page_size},
            error=str(self.error) if self.error else None, copy=False,
        )
        if self.loader.tracker.merged:
            self.warnings.append(
                f"more than {self.loader.tracker.max_passes} passes: the later laps are merged into the last "
                "pass of the trace (the RAM and the record counts are exact)")

    # ------------------------------------------------------------------ reading
    def _read(self, source: Source, limit: int | Any) -> bytes | memoryview:
        """The bytes of an input; a compressed one cut at its limit keeps its prefix (and the error)."""
        try:
            return read_stream(source, limit=limit)
        except InputCut as exc:
            if self._cut_error is None:
                self._cut_error = StreamError(str(exc), offset=len(exc.data))
            return exc.data

    def _declared_limit(self) -> int:
        """Bound on the other compressed inputs: from the main stream's declared RAM."""
        return _limit_for(_declared_ram(self.data))

    # ------------------------------------------------------------------ decoding
    def _fail(self, err: StreamError) -> None:
        """Keep the first error: it is where decoding stopped."""
        if self.error is None:
            self.error = err

    def _decode_main(self, progress: bool) -> None:
        dec = self.decoder
        mv = self.data if isinstance(self.data, memoryview) else memoryview(self.data)
        step = PROGRESS_CHUNK if progress and len(mv) > PROGRESS_CHUNK else max(len(mv), 1)
        bar = _progress(len(mv), progress and step < len(mv), self.name)
        try:
            for i in range(0, len(mv), step):
                dec.receive_data(mv[i : i + step])
                if not self._keep_main(dec.events()):
                    break
                bar.update(min(step, len(mv) - i))
            else:
                dec.close()
                self._keep_main(dec.events())
        except StreamError as err:
            self._fail(err)
        except Exception as exc:  # a bug: keep the prefix, say where
            self._fail(_internal(exc, dec.position, "decoding"))
        finally:
            bar.close()
        for i, e in enumerate(self.events):
            if isinstance(e, ev.MappedRamArea) and e.region is None:
                # decoded in chunks: give the event a view of the stream, for re-encoding
                self.events[i] = dataclasses.replace(e, region=mv[e.offset : e.end])
            elif isinstance(e, ev.VmDescription):
                try:
                    self.vmdesc = json.loads(e.json_bytes)
                except (ValueError, RecursionError) as exc:
                    self._fail(StreamError(f"vmdesc is not valid JSON: {exc}", offset=e.offset))

    def _keep_main(self, events: Any) -> bool:
        """Keep main-channel events within the records budget; ``False`` once it stopped decoding
        (the run that crosses it is kept up to its last record within the budget)."""
        budget = self._budget
        for e in events:
            n = _page_records(e)
            if n:
                k = budget.room(n)
                if k < n:
                    at = e.offset
                    if k and isinstance(e, ev.RamPages):
                        at += int(ram_run_sizes(e.kind, k, self.decoder.page_size,
                                                first_block=e.block if e.named else None).sum())
                        self.events.append(dataclasses.replace(
                            e, page_offsets=e.page_offsets[:k],
                            data=None if e.data is None else e.data[:k],
                            fill=None if e.fill is None else e.fill[:k]))
                    budget.used += k
                    self._main_end = at
                    self._fail(budget.error(at, "ram"))
                    return False
                budget.used += n
            elif isinstance(e, ev.RamMemSize):
                budget.declare(e, self.decoder.page_size)
            self.events.append(e)
        return True

    def _decode_return_path(self) -> None:
        self.return_path_events = self._decode_side(ReturnPathDecoder(), self.return_path_data or b"", None)
        self.requests = [e for e in self.return_path_events if isinstance(e, ev.ReqPages)]

    def _decode_channel(self, i: int, data: bytes | memoryview) -> list[ev.Event]:
        from ramlab.wire.multifd import MultifdChannelDecoder  # (and zstandard: only for multifd)

        return self._decode_side(MultifdChannelDecoder(page_size=self.page_size, keep_pages=False), data,
                                 f"multifd channel {i}")

    def _decode_side(self, dec: Any, data: bytes | memoryview, section: str | None) -> list[Any]:
        """Decode a whole multifd channel (within the records budget) or return path; a damaged one
        keeps its prefix."""
        dec.receive_data(data)
        dec.close()
        events: list[Any] = []
        budget = self._budget
        try:
            if section is None:
                events.extend(dec.events())
            else:
                for e in dec.events():
                    n = _page_records(e)
                    if n and budget.room(n) < n:  # a packet is kept whole or not at all
                        self._fail(budget.error(e.offset, section))
                        break
                    budget.used += n
                    events.append(e)
        except StreamError as err:
            self._fail(err if section is None else StreamError(
                f"{section}: {err.message}", offset=err.offset, section=section, expected=err.expected,
                found=err.found))
        except Exception as exc:  # a bug: keep the prefix, say where
            self._fail(_internal(exc, dec.position, f"decoding {section or 'the return path'}"))
        return events

    def _load(self) -> None:
        loader = self.loader
        e: ev.Event | None = None
        try:
            for e in self.events:
                loader.load(e)
        except StreamError as err:
            self._fail(err)
        except RamlabError:  # not the input: where the images were to go (a folder that cannot be written)
            raise
        except Exception as exc:  # a bug: keep the prefix, say where
            self._fail(_internal(exc, getattr(e, "offset", None), "loading"))
        else:
            if loader.multifd is not None and loader.destination is not None:
                for i, data in enumerate(self.channel_data, start=1):
                    self.multifd_packets.append(self._decode_channel(i, data))
                    loader.multifd.add_channel(self.multifd_packets[-1])
        try:
            loader.finish()  # the input ended, whole or damaged: apply what came
        except StreamError as err:
            self._fail(err)
        except Exception as exc:  # a bug: keep the prefix
            self._fail(_internal(exc, None, "loading"))
        if loader.request_error is not None:
            self._fail(loader.request_error)

    # ------------------------------------------------------------------ the loader's results
    @property
    def destination(self) -> Destination | None:
        return self.loader.destination

    @property
    def blocks(self) -> tuple[ev.RamBlockEntry, ...]:
        return self.loader.blocks

    @property
    def records(self) -> Counter[str]:
        return self.loader.records

    @property
    def sections(self) -> Counter[str]:
        return self.loader.sections

    @property
    def commands(self) -> Counter[str]:
        return self.loader.commands

    @property
    def machine_type(self) -> str | None:
        return self.loader.machine_type

    @property
    def discards(self) -> list[tuple[str, int, int]]:
        return self.loader.discards

    @property
    def epochs(self) -> int:
        return self.loader.epochs

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
        ends = [e.offset for e in self.events[1:]] + [self._main_end or self.decoder.position]
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
        """The ``ramlab inspect --json`` object: a versioned contract (``schema_version``).

        Its JSON Schema ships as ``ramlab/schemas/inspect.schema.json``; the docs page
        *JSON output* describes every field. ``per_pass`` has one entry per trace pass: its
        ``kind``, pages per :class:`~ramlab.trace.PageClass` (lower-case names, ``not_sent`` left
        out), the bytes of its page records and the per-pass counters under QEMU's names.
        """
        from ramlab.trace import PageClass

        t = self.trace
        counts = t.class_counts()
        record_bytes = t.bytes_per_pass()
        kinds = t.pass_kinds
        per_pass = [
            {
                "index": i,
                "kind": kinds[i],
                "pages": {c.name.lower(): int(counts[i, c]) for c in PageClass if c != PageClass.NOT_SENT},
                "record_bytes": int(record_bytes[i]),
                "counters": {k: int(v[i]) for k, v in t.counters.items()},
            }
            for i in range(t.n_passes)
        ]
        return {
            "schema_version": 1,  # bump on any incompatible change (ramlab/schemas/inspect.schema.json)
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
            "passes": int(t.n_passes),
            "pass_kinds": kinds,
            "per_pass": per_pass,
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
            "warnings": list(self.warnings),
        }

    def provenance(self) -> dict[str, Any]:
        """QEMU versions that could have written this stream (see :mod:`ramlab.provenance`)."""
        from ramlab.provenance import provenance

        return provenance(self)

    def extract(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write each block's final content to ``out_dir/<name with / -> _>.bin``; zero pages are holes.

        Opened with ``images=Images.files(out_dir)``, the images already are those files: nothing
        is copied, they are just closed.
        """
        if self.destination is None:
            raise RamlabError("no RAM block list was decoded")
        from ramlab.sparse import write_sparse

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, img in self.destination.blocks.items():
            p = out / block_file_name(name)
            if isinstance(img.pages, np.memmap) and Path(img.pages.filename).resolve() == p.resolve():
                paths.append(p)  # written in place by the loader (its mapping goes with the Migration)
                continue
            write_sparse(p, self.destination.ram(name), page_size=self.destination.target_page_size,
                         may_be_nonzero=img.written)
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
    images: Images | None = None,
) -> Migration:
    """Decode a migration: the main stream, then multifd channel files, then the return path.

    ``stream`` is a path (plain or ``.zst``) or bytes. Decoding errors do not raise: the
    returned :class:`Migration` holds everything decoded before the damage and ``.error``.
    ``images`` (:class:`~ramlab.model.destination.Images`) says where the RAM images live: in
    memory by default, in ``memmap_dir`` for large blocks, straight in their final files, or
    nowhere (``Images(keep=False)``: everything but ``ram()`` and ``extract()``).
    """
    if isinstance(stream, str | os.PathLike) and Path(stream).is_dir():
        from ramlab.data import capture_files

        files, ret = capture_files(stream)
        name = Path(stream).name
        return Migration(files[0], *files[1:], *channels, return_path=return_path or ret,
                         memmap_dir=memmap_dir, page_size=page_size, progress=progress, name=name,
                         images=images)
    return Migration(stream, *channels, return_path=return_path, memmap_dir=memmap_dir,
                     page_size=page_size, progress=progress, images=images)


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
