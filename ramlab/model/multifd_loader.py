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

Two ways to feed it. A decoded file hands each channel's events at once (:meth:`MultifdLoader.add_channel`)
and applies everything at :meth:`MultifdLoader.finish`. A live migration files packets as they arrive
(:meth:`MultifdLoader.open_channel`, :meth:`MultifdLoader.channel_event`,
:meth:`MultifdLoader.end_channel`) and calls :meth:`MultifdLoader.apply_ready`, which applies every
epoch that the main channel and all ``expected_channels`` have passed (an epoch is complete once
every channel sent the SYNC closing it): the result after :meth:`MultifdLoader.finish` is the same
either way. ``by_flush=None`` defers the choice of epoch marks (and so every epoch) until the main
channel shows a MULTIFD_FLUSH (then ``True``) or ends (then ``False``).

    >>> import ramlab
    >>> m = ramlab.open(ramlab.data_path("multifd-zstd"))   # main channel + 2 channels
    >>> m.records["page"] == m.loader.multifd.pages_applied, m.loader.multifd.applied
    (True, 11)
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

_MainEvent = ev.RamPages | ev.RamXbzrle | ev.RamCompressed


class _Channel:
    """One channel's RAM packets, filed by epoch until applied."""

    __slots__ = ("epochs", "syncs", "ended", "inflater")

    def __init__(self) -> None:
        self.epochs: dict[int, list[ev.MultifdPacket]] = {}
        self.syncs = 0  # SYNC packets seen: the epochs this channel has passed
        self.ended = False
        self.inflater = None  # a ChannelInflater, for packets decoded without their pages

    def pages(self, pkt: ev.MultifdPacket) -> np.ndarray:
        """The packet's normal pages; call it for every packet of the channel, in order (packets
        decoded with ``keep_pages=False`` are inflated again, one compression stream a channel)."""
        if self.inflater is None:
            from ramlab.wire.multifd import ChannelInflater

            self.inflater = ChannelInflater()
        return self.inflater.pages(pkt)  # (a packet that kept its pages is returned as is)

    def file(self, e: ev.Event) -> None:
        if isinstance(e, ev.MultifdPacket):
            self.epochs.setdefault(self.syncs, []).append(e)
            self.syncs += e.sync


class MultifdLoader:
    """The multifd part of a :class:`~ramlab.model.loader.RamLoader`.

    The loader hands it the main channel's page records (:meth:`main_pages`) and epoch marks
    (:meth:`main_sync`, :meth:`ram_end`); :meth:`add_channel` gives it a channel's decoded events
    (or :meth:`open_channel` / :meth:`channel_event` / :meth:`end_channel` one event at a time);
    :meth:`apply_ready` applies the epochs that are complete, :meth:`finish` all the rest, in order,
    to the loader's destination and passes, and raises the first packet QEMU would have refused
    (after applying everything else).

    ``expected_channels``: how many channels the migration opens (``multifd-channels``); until
    that many are open no epoch is complete (``None``: only :meth:`finish` applies epochs).
    """

    def __init__(self, loader: RamLoader, *, by_flush: bool | None, expected_channels: int | None = None) -> None:
        self.loader = loader
        self.by_flush = by_flush  # epochs end at MULTIFD_FLUSH (QEMU >= 8.1), else at EOS; None: not known yet
        self.expected_channels = expected_channels
        # the main channel's page records per epoch, counted both ways until by_flush is known
        self._main_by = {False: [[]], True: [[]]}  # type: dict[bool, list[list[_MainEvent]]]
        self._end_epoch_eos: int | None = None
        self.channels: list[_Channel] = []
        self.applied = 0  # epochs applied so far
        self.pages_applied = 0  # distinct normal pages per epoch, summed (QEMU's "normal" counter)
        self.main_ended = False
        self.error: StreamError | None = None  # the first refused packet (raised by finish)

    # ------------------------------------------------------------------ the main channel
    @property
    def main(self) -> list[list[_MainEvent]]:
        """The main channel's page records per epoch (EOS epochs while ``by_flush`` is unknown)."""
        return self._main_by[bool(self.by_flush)]

    @property
    def end_epoch(self) -> int | None:
        """The epoch the RAM END section opens (QEMU 7.2's EOS epochs only)."""
        return None if self.by_flush else self._end_epoch_eos

    def main_pages(self, e: _MainEvent) -> None:
        for epochs in self._main_by.values():
            epochs[-1].append(e)

    def main_sync(self, e: ev.RamEos | ev.RamMultifdFlush) -> None:
        flush = isinstance(e, ev.RamMultifdFlush)
        if flush and self.by_flush is None:
            self.by_flush = True
        self._main_by[flush].append([])

    def ram_end(self) -> None:
        """The RAM END section begins: with EOS epochs (7.2) it opens the completion epoch."""
        self._end_epoch_eos = len(self._main_by[False]) - 1

    def end_main(self) -> None:
        """The main channel ended: its last epoch is complete; EOS epochs unless a flush came."""
        self.main_ended = True
        if self.by_flush is None:
            self.by_flush = False

    # ------------------------------------------------------------------ the channels
    def open_channel(self) -> int:
        """A channel connected (in connection order); returns its index for :meth:`channel_event`."""
        self.channels.append(_Channel())
        return len(self.channels) - 1

    def channel_event(self, channel: int, e: ev.Event) -> None:
        """One decoded event of a channel: its RAM packets are filed under their epoch."""
        self.channels[channel].file(e)

    def end_channel(self, channel: int) -> None:
        """The channel's input ended: every epoch it had not closed is complete for it."""
        self.channels[channel].ended = True

    def add_channel(self, events: list[ev.Event]) -> None:
        """A channel's decoded events, all at once."""
        i = self.open_channel()
        for e in events:
            self.channel_event(i, e)
        self.end_channel(i)

    # ------------------------------------------------------------------ applying epochs
    def _passed(self, k: int) -> bool:
        """Whether epoch ``k`` is complete: the main channel and every expected channel are past it."""
        if self.by_flush is None or k >= self._n_epochs():
            return False
        if not self.main_ended and len(self.main) <= k + 1:
            return False
        if self.expected_channels is None or len(self.channels) < self.expected_channels:
            return False
        return all(c.ended or c.syncs > k for c in self.channels)

    def apply_ready(self) -> int:
        """Apply, in order, every epoch that is complete; returns how many were applied."""
        n = 0
        while self._passed(self.applied):
            self._apply_next()
            n += 1
        return n

    def finish(self) -> None:
        """Apply all epochs not applied yet, in order (see the module docstring)."""
        self.end_main()
        for c in self.channels:
            c.ended = True
        n_epochs = self._n_epochs()
        while self.applied < n_epochs:
            self._apply_next()
        if self.error is not None:
            raise self.error

    def _n_epochs(self) -> int:
        """Epochs known so far: the main channel's and the last one a channel filed a packet in."""
        return max([len(self.main), *(max(c.epochs) + 1 for c in self.channels if c.epochs)])

    def _apply_next(self) -> None:
        k = self.applied
        err = self._apply_epoch(k)
        self.error = self.error or err
        if k < len(self.main):
            self.main[k] = []  # applied: let the events go
        for c in self.channels:
            c.epochs.pop(k, None)
        self.applied = k + 1

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
        for chan in self.channels:
            for pkt in chan.epochs.get(k, ()):
                if pkt.normal_pages + pkt.zero_pages == 0:
                    continue
                pages = chan.pages(pkt)  # (inflated in channel order, even for a packet refused below)
                bad = self._check(pkt)
                if bad is not None:
                    error = error or bad
                    continue
                base = tracker.blocks[loader.block_index[pkt.ramblock]].offset
                if pkt.normal_pages:
                    dst.apply_page_data(pkt.ramblock, pkt.normal_offsets, pages)
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
