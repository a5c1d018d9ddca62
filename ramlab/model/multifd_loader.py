"""Rebuilding RAM from a multifd migration: the main channel plus N channel files.

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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ramlab.constants import QEMU_VM_SECTION_END
from ramlab.errors import StreamError
from ramlab.trace import PageClass
from ramlab.wire import events as ev

if TYPE_CHECKING:
    from ramlab.migration import Migration
    from ramlab.model.passes import PassTracker


def split_main_by_epoch(events: list[ev.Event]) -> tuple[list[list[ev.Event]], int | None]:
    """RAM page events of the main channel grouped by epoch, and the epoch that the RAM END
    section (VM stopped) opens when epochs follow sections (QEMU 7.2), else ``None``."""
    by_flush = any(isinstance(e, ev.RamMultifdFlush) for e in events)
    sync_type = ev.RamMultifdFlush if by_flush else ev.RamEos
    out: list[list[ev.Event]] = [[]]
    end_epoch = None
    for e in events:
        if isinstance(e, sync_type):
            out.append([])
        elif isinstance(e, ev.RAM_PAGE_EVENTS):
            out[-1].append(e)
        elif (isinstance(e, ev.SectionHeader) and e.idstr == "ram" and e.section_type == QEMU_VM_SECTION_END
              and not by_flush):
            end_epoch = len(out) - 1
    return out, end_epoch


def decode_channels(m: Migration) -> list[list[tuple[int, Any]]]:
    """Decode every channel file; returns per channel the (epoch, packet) pairs."""
    from ramlab.wire.multifd import MultifdChannelDecoder, MultifdPacket

    result = []
    m.multifd_packets = []
    for i, data in enumerate(m.channel_data):
        dec = MultifdChannelDecoder(page_size=m.page_size)
        events: list[Any] = []
        try:
            dec.feed(bytes(data))
            events.extend(dec)
            dec.close()
        except StreamError as err:
            if m.error is None:
                m.error = StreamError(f"multifd channel {i + 1}: {err.message}", offset=err.offset,
                                      section=f"multifd channel {i + 1}", expected=err.expected, found=err.found)
        m.multifd_packets.append(events)
        n = 0
        pairs = []
        for e in events:
            if isinstance(e, MultifdPacket):
                pairs.append((n, e))
                n += e.sync
        result.append(pairs)
    return result


def apply_channels(m: Migration, tracker: PassTracker, block_index: dict[str, int]) -> None:
    """Apply main-channel records and channel packets epoch by epoch (see module docstring)."""
    dst = m.destination
    assert dst is not None
    tps = m.page_size
    main, end_epoch = split_main_by_epoch(m.events)
    channels = decode_channels(m)
    n_epochs = max([len(main)] + [p[-1][0] + 1 for p in channels if p])
    m.multifd_page_total = 0
    for k in range(n_epochs):
        if k == end_epoch:  # the completion stage is one pass of its own (see model.passes)
            tracker.new_pass("complete")
            tracker.force_kind("complete")
            tracker.split_on_wrap = False
        g_parts, c_parts, b_parts = [], [], []
        for e in main[k] if k < len(main) else []:
            bi = block_index[e.block]
            if isinstance(e, ev.RamPages):
                dst.apply_pages(e)
                is_zero = e.fill is not None
                m.records["zero" if is_zero else "page"] += len(e)
                n = len(e)
                g_parts.append(e.page_offsets // tps + tracker.blocks[bi].offset)
                c_parts.append(np.full(n, PageClass.ZERO if is_zero else PageClass.NORMAL, np.uint8))
                b_parts.append(np.full(n, 9 if is_zero else 8 + tps, np.uint32))
            else:
                m._apply_page_event(e, tracker, bi, False, {})
        normal_g, normal_b = [], []  # multifd normal pages of this epoch (global index, bytes per page)
        for pairs in channels:
            for epoch, pkt in pairs:
                if epoch != k:
                    continue
                if pkt.normal_pages + pkt.zero_pages == 0:
                    continue
                block = pkt.ramblock
                if block not in dst.blocks:
                    m.error = m.error or StreamError(
                        "multifd packet for an unknown RAM block", offset=pkt.offset, found=repr(block))
                    continue
                used = dst.blocks[block].used_length
                offs = np.concatenate([pkt.normal_offsets, pkt.zero_offsets])
                if len(offs) and int(offs.max()) > used - tps:
                    m.error = m.error or StreamError(
                        "multifd page offset past the end of the block", offset=pkt.offset,
                        expected=f"<= 0x{used - tps:x}", found=f"0x{int(offs.max()):x}")
                    continue
                m.multifd_page_total += pkt.normal_pages
                if pkt.normal_pages:
                    dst.apply_page_data(block, pkt.normal_offsets, pkt.pages)
                    normal_g.append(pkt.normal_offsets // tps + tracker.blocks[block_index[block]].offset)
                    normal_b.append(np.full(pkt.normal_pages, pkt.payload_len // pkt.normal_pages, np.uint32))
                if pkt.zero_pages:
                    dst.apply_zero_offsets(block, pkt.zero_offsets)
                    m.records["zero"] += pkt.zero_pages
                    g_parts.append(pkt.zero_offsets // tps + tracker.blocks[block_index[block]].offset)
                    c_parts.append(np.full(pkt.zero_pages, PageClass.ZERO, np.uint8))
                    b_parts.append(np.full(pkt.zero_pages, 8, np.uint32))
        if normal_g:
            # a page sent twice in one epoch (7.2's duplicate-page race) is one page, as QEMU counts it
            ng = np.concatenate(normal_g)
            first = np.sort(np.unique(ng, return_index=True)[1])
            m.records["page"] += len(first)
            g_parts.append(ng[first])
            c_parts.append(np.full(len(first), PageClass.NORMAL, np.uint8))
            b_parts.append(np.concatenate(normal_b)[first])
        if g_parts:
            g = np.concatenate(g_parts)
            order = np.argsort(g, kind="stable")
            g, c, b = g[order], np.concatenate(c_parts)[order], np.concatenate(b_parts)[order]
            _add_global(tracker, g, c, b)


def _add_global(tracker: PassTracker, g: np.ndarray, c: np.ndarray, b: np.ndarray) -> None:
    """Feed pages given on the global axis to the tracker, block by block in order."""
    starts = np.array([blk.offset for blk in tracker.blocks])
    bi = np.searchsorted(starts, g, side="right") - 1
    cuts = np.flatnonzero(np.diff(bi)) + 1
    for seg in np.split(np.arange(len(g)), cuts):
        if len(seg):
            i = int(bi[seg[0]])
            tracker.add(i, g[seg] - starts[i], c[seg], b[seg])
