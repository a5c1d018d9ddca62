"""The small wire pieces every codec shares: counted names and the size of each record.

**Names.** QEMU writes a RAM block name (and a section idstr) as a *cstr8*: one length byte, then
the bytes, no NUL; multifd headers and the return path carry the same names. Names are bytes on the
wire; ramlab shows them as ``str`` decoded as UTF-8 with ``surrogateescape``, everywhere (main
stream, multifd, return path): QEMU's own names are ASCII and read as themselves, a UTF-8 name reads
as its text, and any other byte string round-trips exactly (each undecodable byte becomes a lone
surrogate that :func:`encode_name` turns back into the same byte).

    >>> cstr8("pc.ram").hex()
    '0670632e72616d'
    >>> decode_name(b"\\xff") == "\\udcff" and encode_name("\\udcff") == b"\\xff"
    True

**Sizes.** What a record costs on the wire is the encoder's knowledge; the sender, the loader and the
multifd loader ask here instead of re-deriving it. A RAM record is the be64 header word, the cstr8
block name unless ``RAM_SAVE_FLAG_CONTINUE`` is set, then its payload:

========================  =========================================
ZERO                      1 fill byte
PAGE                      the page (``page_size`` bytes)
XBZRLE                    u8 ``ENCODING_FLAG_XBZRLE``, be16 length, the delta
COMPRESS_PAGE             be32 length, the zlib stream
========================  =========================================

    >>> ram_record_size(RAM_SAVE_FLAG_ZERO, 4096), ram_record_size(RAM_SAVE_FLAG_PAGE, 4096, block="pc.ram")
    (9, 4111)
    >>> ram_record_size(RAM_SAVE_FLAG_XBZRLE, 4096, payload_len=4)
    15

:func:`event_size` gives the bytes of any event of the savevm stream.
"""

from __future__ import annotations

import numpy as np

from ramlab.constants import (
    QEMU_VM_SECTION_FULL,
    QEMU_VM_SECTION_START,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
)
from ramlab.errors import RamlabError
from ramlab.wire import events as ev

__all__ = [
    "encode_name",
    "decode_name",
    "cstr8",
    "cstr8_size",
    "RAM_HEADER_SIZE",
    "ram_record_size",
    "ram_run_sizes",
    "event_size",
]

#: the be64 word (page offset | flags) that starts every RAM record
RAM_HEADER_SIZE = 8

_PAYLOAD_HEAD = {  # bytes between the header (+ name) and a variable payload
    RAM_SAVE_FLAG_XBZRLE: 3,  # ENCODING_FLAG_XBZRLE, be16 length
    RAM_SAVE_FLAG_COMPRESS_PAGE: 4,  # be32 length
}


def encode_name(name: str | bytes) -> bytes:
    """A name as wire bytes (UTF-8 with surrogateescape; ``bytes`` pass through)."""
    if isinstance(name, bytes | bytearray):
        return bytes(name)
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise RamlabError(f"name {name!r} cannot be encoded: {exc.reason}") from None


def decode_name(raw: bytes | bytearray | memoryview) -> str:
    """Inverse of :func:`encode_name`."""
    return bytes(raw).decode("utf-8", "surrogateescape")


def cstr8(name: str | bytes) -> bytes:
    """QEMU's counted string: one length byte, then the bytes (at most 255, no NUL)."""
    raw = encode_name(name)
    if len(raw) > 255:
        raise RamlabError(f"name longer than 255 bytes: {name!r}")
    return bytes([len(raw)]) + raw


def cstr8_size(name: str | bytes) -> int:
    """Bytes :func:`cstr8` takes for ``name`` (length byte included)."""
    return 1 + len(encode_name(name))


def ram_record_size(kind: int, page_size: int, *, block: str | None = None, payload_len: int = 0) -> int:
    """Bytes of one RAM record of ``kind`` (a ``RAM_SAVE_FLAG_*`` page kind).

    ``block`` is the name when the record carries it (no CONTINUE flag); ``payload_len`` the
    length of an XBZRLE delta or a zlib stream.
    """
    name = cstr8_size(block) if block is not None else 0
    if kind == RAM_SAVE_FLAG_ZERO:
        return RAM_HEADER_SIZE + name + 1
    if kind == RAM_SAVE_FLAG_PAGE:
        return RAM_HEADER_SIZE + name + page_size
    if kind in _PAYLOAD_HEAD:
        return RAM_HEADER_SIZE + name + _PAYLOAD_HEAD[kind] + payload_len
    raise RamlabError(f"not a RAM page kind: flags 0x{kind:x}")


def ram_run_sizes(kind: int, n: int, page_size: int, *, first_block: str | None = None) -> np.ndarray:
    """Sizes of ``n`` ZERO or PAGE records in a row (``uint32``); only the first may carry a name.

    >>> ram_run_sizes(RAM_SAVE_FLAG_ZERO, 3, 4096, first_block="pc.ram").tolist()
    [16, 9, 9]
    """
    sizes = np.full(n, ram_record_size(kind, page_size), np.uint32)
    if n and first_block is not None:
        sizes[0] += cstr8_size(first_block)
    return sizes


_MAPPED_RAM_HEADER = 28  # be32 version, be64 page_size, be64 bitmap_offset, be64 pages_offset


def event_size(e: ev.Event, page_size: int = 4096) -> int:
    """Bytes the savevm-stream event ``e`` takes on the wire (what the encoder writes for it).

    >>> event_size(ev.SectionHeader(1, 2, "ram", 0, 4)), event_size(ev.SectionFooter(2)), event_size(ev.RamEos())
    (17, 5, 8)
    """
    if isinstance(e, ev.RamPages):
        return int(ram_run_sizes(e.kind, len(e), page_size, first_block=e.block if e.named else None).sum())
    if isinstance(e, ev.RamXbzrle | ev.RamCompressed):
        kind = RAM_SAVE_FLAG_XBZRLE if isinstance(e, ev.RamXbzrle) else RAM_SAVE_FLAG_COMPRESS_PAGE
        return ram_record_size(kind, page_size, block=e.block if e.named else None, payload_len=len(e.data))
    if isinstance(e, ev.RamMemSize):
        return RAM_HEADER_SIZE + sum(
            cstr8_size(b.name) + 8 + (8 if b.page_size is not None else 0) + (8 if b.mr_addr is not None else 0)
            + (_MAPPED_RAM_HEADER if b.mapped_ram is not None else 0) for b in e.blocks)
    if isinstance(e, ev.SectionHeader):
        named = e.section_type in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL)
        return 1 + 4 + (cstr8_size(e.idstr) + 8 if named else 0)
    fixed = {ev.FileHeader: 8, ev.SectionFooter: 5, ev.EndOfFile: 1, ev.PackagedEnd: 0,
             ev.RamEos: RAM_HEADER_SIZE, ev.RamMultifdFlush: RAM_HEADER_SIZE}
    if type(e) in fixed:
        return fixed[type(e)]
    if isinstance(e, ev.Configuration):
        return 1 + len(e.body)
    if isinstance(e, ev.DeviceState | ev.OpaqueSection):
        return len(e.body)
    if isinstance(e, ev.Command):
        return 5 + len(e.payload)
    if isinstance(e, ev.VmDescription):
        return 5 + len(e.json_bytes)
    if isinstance(e, ev.MappedRamArea):
        return e.end - e.offset
    raise RamlabError(f"not an event of the savevm stream: {type(e).__name__}")
