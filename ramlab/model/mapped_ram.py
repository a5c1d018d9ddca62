"""Applying mapped-ram areas (QEMU >= 9.0 ``file:`` migrations) to a :class:`Destination`.

With the ``mapped-ram`` capability QEMU writes no page records: each RAM block has a bitmap
and a page area at fixed offsets of the file (see :class:`~ramlab.wire.events.MappedRamArea`).
Like QEMU's loader (``read_ramblock_mapped_ram``), only pages whose bit is set are copied;
the others are left as they are (zero in a fresh destination).

The pages are read straight from the stream buffer (an ``mmap`` for files, see
:func:`ramlab.io.read_stream`) through numpy views, a bounded number of pages at a time, so a
large file is never read whole into memory.

    >>> import numpy as np
    >>> from ramlab.wire.events import MappedRamArea, RamBlockEntry
    >>> from ramlab.model.destination import Destination
    >>> stream = bytes(4096) + bytes([7]) * 4096 + bytes([9]) * 4096   # page area at 4096
    >>> area = MappedRamArea("m", 4096, 0, 4096, bytes([0b10]), 8192)   # only page 1 present
    >>> dst = Destination([RamBlockEntry("m", 8192)])
    >>> apply_mapped_ram_area(dst, area, stream).tolist()
    [1]
    >>> int(dst.ram("m")[0]), int(dst.ram("m")[4096])
    (0, 9)
"""

from __future__ import annotations

import numpy as np

from ramlab.errors import StreamError
from ramlab.model.destination import Destination
from ramlab.wire import events as ev

CHUNK_PAGES = 4096  # pages copied per numpy operation (16 MiB with 4 KiB pages)


def area_pages(area: ev.MappedRamArea, stream: bytes | memoryview | None) -> np.ndarray:
    """Read-only ``[n_pages, page_size]`` uint8 view of the block's page area (no copy).

    Taken from ``area.region`` when the decoder kept it, else from ``stream`` (the whole
    stream buffer, in which the area sits at its absolute offsets).
    """
    n, ps = area.n_pages, area.page_size
    if area.region is not None:
        skip = area.pages_offset - area.offset
        buf: bytes | memoryview = area.region
        start = skip
    else:
        if stream is None:
            raise StreamError("mapped-ram area needs the stream buffer", offset=area.offset, section="ram")
        buf, start = stream, area.pages_offset
    if start + n * ps > len(buf):
        raise StreamError(
            "mapped-ram page area runs past the end of the stream", offset=area.pages_offset, section="ram",
            expected=f"{n * ps} bytes of pages for {area.block!r}", found=f"{max(0, len(buf) - start)} bytes",
        )
    pages = np.frombuffer(buf, dtype=np.uint8, count=n * ps, offset=start).reshape(n, ps)
    pages.flags.writeable = False
    return pages


def apply_mapped_ram_area(
    dst: Destination, area: ev.MappedRamArea, stream: bytes | memoryview | None = None
) -> np.ndarray:
    """Copy the pages present in ``area``'s bitmap into ``dst``; returns their page indices.

    The pages are marked received and written, as QEMU's loader does for the pages it reads.
    """
    img = dst.blocks.get(area.block)
    if img is None:
        raise StreamError("mapped-ram area for an unknown RAM block", offset=area.offset, section="ram",
                          found=repr(area.block))
    if area.page_size != dst.target_page_size or area.n_pages != img.n_pages:
        raise StreamError(
            "mapped-ram area does not match the block", offset=area.offset, section="ram",
            expected=f"{img.n_pages} pages of {dst.target_page_size} bytes",
            found=f"{area.n_pages} pages of {area.page_size} bytes for {area.block!r}",
        )
    idx = np.flatnonzero(area.present())
    if not len(idx):
        return idx
    pages = area_pages(area, stream)
    for i in range(0, len(idx) if img.pages is not None else 0, CHUNK_PAGES):
        sel = idx[i : i + CHUNK_PAGES]
        img.pages[sel] = pages[sel]
    img.written[idx] = True
    img.received[idx] = True
    return idx
