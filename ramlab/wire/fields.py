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
"""

from __future__ import annotations

import numpy as np

from ramlab.constants import (
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
)
from ramlab.errors import RamlabError

__all__ = [
    "encode_name",
    "decode_name",
    "cstr8",
    "cstr8_size",
    "RAM_HEADER_SIZE",
    "ram_record_size",
    "ram_run_sizes",
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
