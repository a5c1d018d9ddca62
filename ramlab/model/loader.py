"""Loading a RAM migration at the destination: QEMU's ``ram_load``, one decoded event at a time.

:class:`RamLoader` takes the events of the main channel (from
:class:`~ramlab.wire.decoder.StreamDecoder`) in stream order and keeps what a destination QEMU
keeps — the RAM images and received bitmaps (:class:`~ramlab.model.destination.Destination`) — plus
what ramlab shows: the records counted by kind, the passes (:class:`~ramlab.model.passes.PassTracker`),
the discards and XBZRLE before/after snapshots. It never sees bytes, only events, so a decoded file
and a live migration (events as they arrive) load the same way.

    >>> from ramlab.wire import events as ev
    >>> import numpy as np
    >>> loader = RamLoader()
    >>> loader.load(ev.RamMemSize(8192, (ev.RamBlockEntry("pc.ram", 8192),)))
    >>> loader.phase
    <Phase.ITERATE: 'iterate'>
    >>> loader.load(ev.RamPages(0x2, "pc.ram", True, np.array([4096]), fill=np.array([7], np.uint8)))
    >>> int(loader.destination.ram("pc.ram")[4096]), loader.records["zero"]
    (7, 1)

Theory of operation
-------------------
QEMU's loader (``qemu_loadvm_state_main`` in savevm.c; ``ram_load`` and ``ram_load_postcopy`` in
ram.c) reads RAM in phases. The phase decides what a page record means for the passes:

========  ===========================================  ==========================================
phase     entered on                                   page records are
========  ===========================================  ==========================================
SETUP     (start)                                      refused: no block list yet
ITERATE   the MEM_SIZE block list (RAM START section)  precopy passes; the source VM runs
COMPLETE  the RAM END section, in precopy              the last pass: the source VM is stopped
DISCARD   the first POSTCOPY_RAM_DISCARD command       (none: the source stopped and tells which
                                                       pages to drop before it resends them)
LISTEN    POSTCOPY_LISTEN (inside the PACKAGED blob)   postcopy pages: pushed or requested
RUN       POSTCOPY_RUN                                 postcopy pages; the destination VM runs
========  ===========================================  ==========================================

:data:`TRANSITIONS` is the whole state table; a (phase, trigger) pair that is not in it leaves the
phase unchanged (QEMU ignores, e.g., the RAM END section after postcopy: its pages are still
postcopy pages). Entering DISCARD starts a 'postcopy' pass holding the discards; after entering
COMPLETE or LISTEN the next page record starts a pass of its own ('complete': the stopped VM's
last pages, however they wrap; 'postcopy').

XBZRLE records are queued and applied in batches (same block, distinct pages) by the batch decoder,
which is what makes XBZRLE loading fast; a batch is flushed before any other record, at a repeated
page, and by :meth:`RamLoader.finish`. An invalid record raises :class:`~ramlab.errors.StreamError`
from :meth:`RamLoader.load` after everything before it was applied (batched XBZRLE records
included), so the images hold exactly the stream's prefix.
"""

from __future__ import annotations

import os
from collections import Counter
from enum import Enum
from typing import Any

import numpy as np

from ramlab.constants import (
    MIG_CMD_POSTCOPY_LISTEN,
    MIG_CMD_POSTCOPY_RAM_DISCARD,
    MIG_CMD_POSTCOPY_RUN,
    QEMU_VM_SECTION_END,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
    TARGET_PAGE_SIZE,
)
from ramlab.errors import StreamError
from ramlab.model.destination import Destination, Images
from ramlab.model.passes import PassTracker
from ramlab.trace import BlockInfo, PageClass, Trace
from ramlab.wire import events as ev
from ramlab.wire.commands import decode_discard_payload
from ramlab.wire.fields import ram_record_size, ram_run_sizes

__all__ = ["Phase", "TRANSITIONS", "RamLoader", "XBZRLE_SNAPSHOT_LIMIT"]

#: bytes of XBZRLE page snapshots (before, after) kept for the delta views
XBZRLE_SNAPSHOT_LIMIT = 64 << 20


class Phase(Enum):
    """Where the destination is in the migration (see the module's theory of operation)."""

    SETUP = "setup"
    ITERATE = "iterate"
    COMPLETE = "complete"
    DISCARD = "discard"
    LISTEN = "listen"
    RUN = "run"


#: (phase, trigger) -> next phase; triggers: "mem_size", "ram_end", "discard", "listen", "run"
TRANSITIONS: dict[tuple[Phase, str], Phase] = {
    (Phase.SETUP, "mem_size"): Phase.ITERATE,
    (Phase.ITERATE, "ram_end"): Phase.COMPLETE,
    (Phase.ITERATE, "discard"): Phase.DISCARD,
    (Phase.ITERATE, "listen"): Phase.LISTEN,
    (Phase.DISCARD, "listen"): Phase.LISTEN,
    (Phase.LISTEN, "run"): Phase.RUN,
}

_POSTCOPY = (Phase.DISCARD, Phase.LISTEN, Phase.RUN)
_KIND = {ev.RamXbzrle: RAM_SAVE_FLAG_XBZRLE, ev.RamCompressed: RAM_SAVE_FLAG_COMPRESS_PAGE}


class RamLoader:
    """The destination's RAM state, fed main-channel events with :meth:`load`.

    Parameters: ``page_size`` (the target page size the decoder used), ``memmap_dir`` (large
    blocks as ``np.memmap`` files there) or ``images`` (where the RAM images live, or none:
    :class:`~ramlab.model.destination.Images`), ``reorder_window`` (pages of backward step tolerated
    inside a pass: multi-threaded compression reorders records a little), ``stream`` (the whole
    stream buffer, for mapped-ram areas the decoder did not keep a view of), ``multifd`` (page
    records are handed to a :class:`~ramlab.model.multifd_loader.MultifdLoader` epoch by epoch
    instead of being applied at once), ``requests`` (postcopy page requests from the return path:
    pages they name are classed REQUESTED).

    Attributes: ``phase``, ``destination`` (``None`` before MEM_SIZE), ``tracker``, ``blocks``,
    ``records`` (page records by kind: ``zero``, ``page``, ``xbzrle``, ``compressed``, ``mapped``),
    ``sections`` / ``commands`` (counts by name), ``machine_type``, ``discards`` (``(block, start,
    length)`` in bytes), ``epochs`` (EOS / MULTIFD_FLUSH records seen), ``request_error`` (the first
    page request QEMU would refuse, or ``None``).
    """

    def __init__(
        self,
        page_size: int = TARGET_PAGE_SIZE,
        *,
        memmap_dir: str | os.PathLike[str] | None = None,
        images: Images | None = None,
        reorder_window: int = 0,
        stream: bytes | memoryview | None = None,
        multifd: Any = None,
        requests: list[ev.ReqPages] | None = None,
    ) -> None:
        self.page_size = page_size
        self.images = images or Images(folder=memmap_dir)
        self.reorder_window = reorder_window
        self.stream = stream
        self.multifd = multifd
        self.phase = Phase.SETUP
        self.destination: Destination | None = None
        self.tracker = PassTracker((), page_size)
        self.blocks: tuple[ev.RamBlockEntry, ...] = ()
        self.block_index: dict[str, int] = {}
        self.records: Counter[str] = Counter()
        self.sections: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.machine_type: str | None = None
        self.discards: list[tuple[str, int, int]] = []
        self.epochs = 0
        self.requests = list(requests or [])
        self.request_error: StreamError | None = None
        self._requested: dict[str, np.ndarray] = {}
        self._postcopy_passes: set[int] = set()  # passes holding postcopy page runs (see add_requests)
        self._pass_pending: str | None = None  # the next page record starts a pass of this kind
        self._xbzrle: list[ev.RamXbzrle] = []
        self._xbzrle_pages: set[int] = set()
        self.snapshots: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._snap_bytes = 0
        self.trace_events: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ phases
    def _trigger(self, trigger: str) -> None:
        nxt = TRANSITIONS.get((self.phase, trigger))
        if nxt is None:
            return
        self._flush_xbzrle()
        self.phase = nxt
        if nxt is Phase.COMPLETE:
            if self.multifd is not None:
                self.multifd.ram_end()
            else:
                self._pass_pending = "complete"
        elif nxt is Phase.DISCARD:
            self.tracker.new_pass("postcopy")
            self.tracker.force_kind("postcopy")
        elif nxt is Phase.LISTEN:
            self._pass_pending = "postcopy"
            self.tracker.force_kind("postcopy")

    # ------------------------------------------------------------------ events
    def load(self, e: ev.Event) -> None:
        """Apply one main-channel event; raises :class:`StreamError` if QEMU would fail here."""
        if isinstance(e, ev.RAM_PAGE_EVENTS):
            self._load_page_event(e)
            return
        if isinstance(e, ev.Configuration):
            self.machine_type = e.machine_type
        elif isinstance(e, ev.SectionHeader):
            self.sections[e.type_name] += 1
            if e.idstr == "ram" and e.section_type == QEMU_VM_SECTION_END:
                self._trigger("ram_end")
        elif isinstance(e, ev.Command):
            self.commands[e.name] += 1
            if e.cmd == MIG_CMD_POSTCOPY_RAM_DISCARD:
                self._discard(e)
            elif e.cmd == MIG_CMD_POSTCOPY_LISTEN:
                self._trigger("listen")
            elif e.cmd == MIG_CMD_POSTCOPY_RUN:
                self._trigger("run")
        elif isinstance(e, ev.RamMemSize):
            self._mem_size(e)
        elif isinstance(e, ev.RamEos | ev.RamMultifdFlush):
            self.epochs += 1
            if self.multifd is not None:
                self.multifd.main_sync(e)
        elif isinstance(e, ev.MappedRamArea):
            self._mapped_ram(e)

    def add_requests(self, requests: list[ev.ReqPages]) -> None:
        """Page requests that arrived on the return path while loading (a live migration).

        Pages they name are REQUESTED from now on, and postcopy pages already loaded are re-classed,
        so the trace ends as if every request had been known from the start (a page may be sent
        before its request arrives: the source answers requests for pages already in flight).
        """
        if not requests:
            return
        self.requests.extend(requests)
        if self.destination is None:
            return  # the masks are made at MEM_SIZE
        self._requested = self._requested_pages()
        classes = self.tracker.classes
        for block, mask in self._requested.items():
            b = self.tracker.blocks[self.block_index[block]]
            for p in self._postcopy_passes:
                row = classes[p][b.offset : b.offset + len(mask)]
                row[mask & ((row == PageClass.ZERO) | (row == PageClass.POSTCOPY))] = PageClass.REQUESTED

    def finish(self) -> None:
        """The input ended (whole or damaged): apply what is still queued."""
        self._flush_xbzrle()
        if self.multifd is not None and self.destination is not None:
            self.multifd.finish()

    def to_trace(self, *, meta: dict[str, Any] | None = None, error: str | None = None, copy: bool = True) -> Trace:
        """The :class:`~ramlab.trace.Trace` of what was loaded so far (``copy=False``: the loading is
        over, the trace may share the pass tracker's arrays)."""
        trace = self.tracker.to_trace(source="capture", meta=meta, events=self.trace_events, error=error,
                                      copy=copy)
        if self.snapshots:
            snaps = self.snapshots
            trace.page_bytes = lambda p, g: snaps.get((p, g), (None, None))
        return trace

    # ------------------------------------------------------------------ the block list
    def _mem_size(self, e: ev.RamMemSize) -> None:
        if self.destination is not None:  # QEMU checks a repeated list against its blocks
            for b in e.blocks:
                img = self.destination.blocks.get(b.name)
                if img is None or img.used_length != b.used_length:
                    raise StreamError("MEM_SIZE block list differs from the first one", offset=e.offset,
                                      section="ram", expected="the same blocks and lengths",
                                      found=f"{b.name!r} of 0x{b.used_length:x} bytes")
            return
        infos, off = [], 0
        for b in e.blocks:
            infos.append(BlockInfo(b.name, b.used_length, b.page_size or self.page_size, off))
            off += -(-b.used_length // self.page_size)
        try:
            dst = Destination(e.blocks, self.page_size, images=self.images)
            tracker = PassTracker(tuple(infos), self.page_size, reorder_window=self.reorder_window)
        except (MemoryError, ValueError, OverflowError) as exc:
            raise StreamError(
                "cannot hold the RAM images this block list declares", offset=e.offset, section="ram",
                expected="blocks that fit in memory (or pass memmap_dir for large guests)",
                found=f"{sum(b.used_length for b in e.blocks):,} bytes in {len(e.blocks)} blocks ({exc})",
            ) from None
        self.block_index = {b.name: i for i, b in enumerate(e.blocks)}
        self.blocks = e.blocks
        self.destination = dst
        self.tracker = tracker
        self._requested = self._requested_pages()
        self._trigger("mem_size")

    def _requested_pages(self) -> dict[str, np.ndarray]:
        """Boolean page masks of the requested pages, per block; requests QEMU would refuse
        (unknown block, past the block's end: ``ram_save_queue_pages``) are dropped and the
        first one is kept as :attr:`request_error`."""
        masks: dict[str, np.ndarray] = {}
        dst = self.destination
        assert dst is not None
        tps = self.page_size
        for r in self.requests:
            img = dst.blocks.get(r.block)
            if img is None or r.start + r.length > img.used_length:
                if self.request_error is None:
                    self.request_error = StreamError(
                        "page request outside the RAM block", offset=r.offset, section="return path",
                        expected=f"a range inside {r.block!r}" + (f" (0x{img.used_length:x} bytes)" if img else ""),
                        found=f"start 0x{r.start:x} length 0x{r.length:x}" + ("" if img else " of an unknown block"),
                    )
                continue
            mask = masks.setdefault(r.block, np.zeros(img.n_pages + 1, np.int32))
            mask[r.start // tps] += 1
            mask[-(-(r.start + r.length) // tps)] -= 1
        return {k: np.cumsum(v[:-1]) > 0 for k, v in masks.items()}

    # ------------------------------------------------------------------ page records
    def _load_page_event(self, e: ev.RamPages | ev.RamXbzrle | ev.RamCompressed) -> None:
        if self.destination is None:
            raise StreamError("RAM page record before the MEM_SIZE block list", offset=e.offset, section="ram")
        if self.multifd is not None:
            self.multifd.main_pages(e)
            return
        if self._pass_pending is not None:
            self._flush_xbzrle()
            if self._pass_pending == "complete":
                self.tracker.start_complete_pass()
            else:
                self.tracker.new_pass(self._pass_pending)
            self._pass_pending = None
        if isinstance(e, ev.RamXbzrle):
            if self._xbzrle and (self._xbzrle[0].block != e.block or e.page_offset in self._xbzrle_pages):
                self._flush_xbzrle()
            self._xbzrle.append(e)
            self._xbzrle_pages.add(e.page_offset)
            return
        self._flush_xbzrle()
        self.apply_page_event(e, postcopy=self.phase in _POSTCOPY)

    def apply_page_event(self, e: ev.RamPages | ev.RamXbzrle | ev.RamCompressed, *, postcopy: bool = False) -> None:
        """Apply one ZERO/PAGE run, XBZRLE or COMPRESS_PAGE record now (no batching), and count it."""
        dst = self.destination
        assert dst is not None
        tps = self.page_size
        bi = self.block_index[e.block]
        first = e.block if e.named else None
        if isinstance(e, ev.RamPages):
            pages = e.page_offsets // tps
            if e.kind == RAM_SAVE_FLAG_ZERO:
                self.records["zero"] += len(e)
                cls = np.full(len(e), PageClass.ZERO, np.uint8)
            else:
                self.records["page"] += len(e)
                cls = np.full(len(e), PageClass.POSTCOPY if postcopy else PageClass.NORMAL, np.uint8)
            if postcopy and e.block in self._requested:  # sent because the destination asked
                cls[self._requested[e.block][pages]] = PageClass.REQUESTED
            kind = RAM_SAVE_FLAG_ZERO if e.kind == RAM_SAVE_FLAG_ZERO else RAM_SAVE_FLAG_PAGE
            before = max(self.tracker.current, 0)
            self.tracker.add(bi, pages, cls, ram_run_sizes(kind, len(e), tps, first_block=first))
            if postcopy:
                self._postcopy_passes.update(range(before, self.tracker.current + 1))
            dst.apply_pages(e)
        elif isinstance(e, ev.RamXbzrle):
            self.records["xbzrle"] += 1
            page = e.page_offset // tps
            pages2d = dst.blocks[e.block].pages
            before = pages2d[page].copy() if pages2d is not None else None
            size = ram_record_size(_KIND[type(e)], tps, block=first, payload_len=len(e.data))
            self.tracker.add(bi, np.array([page]), PageClass.XBZRLE, np.array([size], np.uint32))
            dst.apply_xbzrle(e)
            if before is not None:
                g = np.array([page + self.tracker.blocks[bi].offset])
                self._snapshot(g, before[None], pages2d[page][None].copy())
        else:
            self.records["compressed"] += 1
            page = e.page_offset // tps
            size = ram_record_size(_KIND[type(e)], tps, block=first, payload_len=len(e.data))
            self.tracker.add(bi, np.array([page]), PageClass.COMPRESSED, np.array([size], np.uint32))
            dst.apply_compressed(e)

    def _flush_xbzrle(self) -> None:
        """Apply the queued XBZRLE records (same block, distinct pages) in one batch."""
        pend = self._xbzrle
        if not pend:
            return
        self._xbzrle = []
        self._xbzrle_pages = set()
        dst = self.destination
        assert dst is not None
        tps = self.page_size
        bi = self.block_index[pend[0].block]
        pages = np.fromiter((e.page_offset for e in pend), np.int64, len(pend)) // tps
        sizes = np.fromiter(
            (ram_record_size(_KIND[type(e)], tps, block=e.block if e.named else None, payload_len=len(e.data))
             for e in pend), np.uint32, len(pend))
        self.records["xbzrle"] += len(pend)
        # pages of a batch are distinct, but the tracker may still start a pass inside it (a wrap)
        self.tracker.add(bi, pages, PageClass.XBZRLE, sizes)
        before, after = dst.apply_xbzrle_batch(pend[0].block, pend)
        self._snapshot(pages + self.tracker.blocks[bi].offset, before, after)

    def _snapshot(self, g: np.ndarray, before: np.ndarray, after: np.ndarray) -> None:
        if self._snap_bytes >= XBZRLE_SNAPSHOT_LIMIT or not self.images.keep:
            return
        passes = self.tracker.last_pass[g]
        for i in range(len(g)):
            self.snapshots[(int(passes[i]), int(g[i]))] = (before[i], after[i])
        self._snap_bytes += before.nbytes + after.nbytes

    # ------------------------------------------------------------------ other carriers
    def _mapped_ram(self, e: ev.MappedRamArea) -> None:
        from ramlab.model.mapped_ram import apply_mapped_ram_area

        if self.destination is None:
            raise StreamError("mapped-ram area before the MEM_SIZE block list", offset=e.offset, section="ram")
        idx = apply_mapped_ram_area(self.destination, e, self.stream)
        self.records["mapped"] += len(idx)
        self.tracker.add(self.block_index[e.block], idx, PageClass.NORMAL,
                         np.full(len(idx), self.page_size, np.uint32))

    def _discard(self, e: ev.Command) -> None:
        """POSTCOPY_RAM_DISCARD: drop the ranges (``loadvm_postcopy_ram_handle_discard``)."""
        if self.destination is None:
            raise StreamError("POSTCOPY_RAM_DISCARD before the MEM_SIZE block list", offset=e.offset,
                              section="POSTCOPY_RAM_DISCARD")
        try:
            name, ranges = decode_discard_payload(e.payload, offset=e.offset + 5)
            self._trigger("discard")
            bi = self.block_index.get(name)
            for start, length in ranges:
                idx = self.destination.discard(name, start, length, offset=e.offset)
                self.discards.append((name, start, length))
                if bi is not None:
                    self.tracker.mark(bi, idx, PageClass.DISCARDED)
                    self.tracker.count("discarded", len(idx))
        except StreamError as err:  # say which command it was, as the decoder says which section
            if err.section is None:
                err.section = "POSTCOPY_RAM_DISCARD"
                err.args = (err._format(),)
            raise
        self.trace_events.append({"pass": self.tracker.current, "kind": "discard", "block": name,
                                  "ranges": [[int(s), int(n)] for s, n in ranges]})


