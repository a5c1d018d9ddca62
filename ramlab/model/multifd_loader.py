"""Rebuilding RAM from a multifd migration: the main channel plus N channels, epoch by epoch.

Pages of one *epoch* (the stretch between two channel syncs) can be applied in any order,
because the sender sends a page at most once between syncs; epochs are applied in order.
The main channel's epochs are counted by RAM EOS records (QEMU 7.2: every section syncs)
or, when the stream has them, by MULTIFD_FLUSH records (QEMU >= 8.1); a channel's by its
SYNC packets (a SYNC packet's own pages belong to the epoch it closes).

Passes: inside an epoch the order of pages across channels is unknown, so the pages of an
epoch are taken in (block, offset) order. A pass boundary inside an epoch is seen only when
a page repeats; the split of such an epoch between two passes is approximate.

QEMU 7.2 sometimes sends the last page of a full packet again in a later packet of the same
epoch (a sender race); QEMU counts it once, and so does ``records["page"]``.

    >>> import ramlab
    >>> m = ramlab.open(ramlab.data_path("multifd-zstd"))   # main channel + 2 channels
    >>> m.records["page"] == m.loader.multifd.pages_applied
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ramlab.errors import StreamError
from ramlab.trace import PageClass
from ramlab.wire import events as ev
from ramlab.wire.fields import ram_run_sizes

if TYPE_CHECKING:
    from ramlab.model.loader import RamLoader

__all__ = ["MultifdLoader"]

#: wire bytes of a zero page inside a multifd packet (its offset[] entry)
ZERO_PAGE_ENTRY_SIZE = 8


class MultifdLoader:
    """The multifd part of a :class:`~ramlab.model.loader.RamLoader`.

    The loader hands it the main channel's page records (:meth:`main_pages`) and epoch marks
    (:meth:`main_sync`, :meth:`ram_end`); :meth:`add_channel` gives it a channel's decoded events;
    :meth:`finish` applies every epoch in order to the loader's destination and passes, and raises
    the first packet QEMU would have refused (after applying everything else).
    """

    def __init__(self, loader: RamLoader, *, by_flush: bool) -> None:
        self.loader = loader
        self.by_flush = by_flush  # epochs end at MULTIFD_FLUSH (QEMU >= 8.1), else at EOS
        self.main: list[list[ev.RamPages | ev.RamXbzrle | ev.RamCompressed]] = [[]]
        self.end_epoch: int | None = None  # the epoch the RAM END section opens (QEMU 7.2)
        self.pages_applied = 0  # distinct normal pages per epoch, summed (QEMU's "normal" counter)
        self._by_epoch: dict[int, list[ev.MultifdPacket]] = {}  # every channel's packets, by epoch

    def main_pages(self, e: ev.RamPages | ev.RamXbzrle | ev.RamCompressed) -> None:
        self.main[-1].append(e)

    def main_sync(self, e: ev.RamEos | ev.RamMultifdFlush) -> None:
        if isinstance(e, ev.RamMultifdFlush if self.by_flush else ev.RamEos):
            self.main.append([])

    def ram_end(self) -> None:
        """The RAM END section begins: with EOS epochs (7.2) it opens the completion epoch."""
        if not self.by_flush:
            self.end_epoch = len(self.main) - 1

    def add_channel(self, events: list[ev.Event]) -> None:
        """A channel's decoded events: its RAM packets are filed under their epochs."""
        n = 0
        for e in events:
            if isinstance(e, ev.MultifdPacket):
                self._by_epoch.setdefault(n, []).append(e)
                n += e.sync

    def finish(self) -> None:
        """Apply all epochs in order (see the module docstring)."""
        n_epochs = max([len(self.main), *(k + 1 for k in self._by_epoch)])
        first_error: StreamError | None = None
        for k in range(n_epochs):
            err = self._apply_epoch(k)
            first_error = first_error or err
        if first_error is not None:
            raise first_error

    def _apply_epoch(self, k: int) -> StreamError | None:
        loader = self.loader
        dst, tracker, tps = loader.destination, loader.tracker, loader.page_size
        assert dst is not None
        if k == self.end_epoch:  # the completion stage is one pass of its own (see model.passes)
            tracker.start_complete_pass()
        g_parts, c_parts, b_parts = [], [], []
        for e in self.main[k] if k < len(self.main) else []:
            if not isinstance(e, ev.RamPages):
                loader.apply_page_event(e)
                continue
            bi = loader.block_index[e.block]
            dst.apply_pages(e)
            is_zero = e.fill is not None
            loader.records["zero" if is_zero else "page"] += len(e)
            g_parts.append(e.page_offsets // tps + tracker.blocks[bi].offset)
            c_parts.append(np.full(len(e), PageClass.ZERO if is_zero else PageClass.NORMAL, np.uint8))
            b_parts.append(ram_run_sizes(e.kind, len(e), tps, first_block=e.block if e.named else None))
        error = None
        normal_g, normal_b = [], []  # multifd normal pages of this epoch (global index, bytes per page)
        for pkt in self._by_epoch.get(k, ()):
            if pkt.normal_pages + pkt.zero_pages == 0:
                continue
            bad = self._check(pkt)
            if bad is not None:
                error = error or bad
                continue
            base = tracker.blocks[loader.block_index[pkt.ramblock]].offset
            if pkt.normal_pages:
                dst.apply_page_data(pkt.ramblock, pkt.normal_offsets, pkt.pages)
                normal_g.append(pkt.normal_offsets // tps + base)
                normal_b.append(np.full(pkt.normal_pages, pkt.payload_len // pkt.normal_pages, np.uint32))
            if pkt.zero_pages:
                dst.apply_zero_offsets(pkt.ramblock, pkt.zero_offsets)
                loader.records["zero"] += pkt.zero_pages
                g_parts.append(pkt.zero_offsets // tps + base)
                c_parts.append(np.full(pkt.zero_pages, PageClass.ZERO, np.uint8))
                b_parts.append(np.full(pkt.zero_pages, ZERO_PAGE_ENTRY_SIZE, np.uint32))
        if normal_g:
            # a page sent twice in one epoch (7.2's duplicate-page race) is one page, as QEMU counts it
            ng = np.concatenate(normal_g)
            first = np.sort(np.unique(ng, return_index=True)[1])
            loader.records["page"] += len(first)
            self.pages_applied += len(first)
            g_parts.append(ng[first])
            c_parts.append(np.full(len(first), PageClass.NORMAL, np.uint8))
            b_parts.append(np.concatenate(normal_b)[first])
        if g_parts:
            g = np.concatenate(g_parts)
            order = np.argsort(g, kind="stable")
            tracker.add_global(g[order], np.concatenate(c_parts)[order], np.concatenate(b_parts)[order])
        return error

    def _check(self, pkt: ev.MultifdPacket) -> StreamError | None:
        """What QEMU's multifd receiver refuses: an unknown block, a page past its end."""
        dst = self.loader.destination
        assert dst is not None
        img = dst.blocks.get(pkt.ramblock)
        if img is None:
            return StreamError("multifd packet for an unknown RAM block", offset=pkt.offset, section="multifd",
                               expected="a block of the MEM_SIZE list", found=repr(pkt.ramblock))
        offs = np.concatenate([pkt.normal_offsets, pkt.zero_offsets])
        last = img.used_length - self.loader.page_size
        if len(offs) and int(offs.max()) > last:
            return StreamError("multifd page offset past the end of the block", offset=pkt.offset,
                               section="multifd", expected=f"<= 0x{last:x}", found=f"0x{int(offs.max()):x}")
        return None
