"""The received-bitmap blob of postcopy recovery (return path, after MIG_RP_MSG_RECV_BITMAP).

Layout (``shared/reference/stream-format.md`` §9.3; seed ``ramblock_recv_bitmap_send`` /
``ram_dirty_bitmap_reload``)::

    be64 size                      bytes of bitmap that follow
    size bytes                     bitmap as little-endian 64-bit words (bit i = page i)
    be64 0x0123456789abcdef        RAMBLOCK_RECV_BITMAP_ENDING

``size`` depends on the QEMU version, with ``nbits = used_length / TARGET_PAGE_SIZE``:

* ``"seed"`` (~3.0): ``roundup8(nbits // 8)``. When ``nbits % 64`` is 1..7 this is one
  64-bit word short, so the last ``nbits % 64`` bits are not sent; the reader (same
  formula) reads them back as 0, "not received", which after the complement means
  "dirty": those pages are only resent. For any other ``nbits`` nothing is lost.
* ``"modern"``: ``roundup8(ceil(nbits / 8))``, never loses a bit.

Both ends must agree on ``size``, so for such blocks seed and modern do not interoperate.

    >>> bits = np.zeros(65, bool); bits[64] = True
    >>> len(encode_recv_bitmap(bits, "seed")), len(encode_recv_bitmap(bits, "modern"))
    (24, 32)
    >>> bool(decode_recv_bitmap(encode_recv_bitmap(bits, "seed"), 65, "seed")[0][64])
    False
"""

from __future__ import annotations

import struct
from typing import Literal

import numpy as np

from ramlab.constants import RAMBLOCK_RECV_BITMAP_ENDING
from ramlab.errors import BitmapError

__all__ = ["decode_recv_bitmap", "encode_recv_bitmap", "recv_bitmap_size"]

Rounding = Literal["seed", "modern"]


def recv_bitmap_size(nbits: int, rounding: Rounding = "seed") -> int:
    """Bytes of bitmap in the blob for a block of ``nbits`` pages.

    >>> recv_bitmap_size(65, "seed"), recv_bitmap_size(65, "modern"), recv_bitmap_size(72, "seed")
    (8, 16, 16)
    """
    if nbits < 0:
        raise BitmapError(f"negative bitmap size {nbits}")
    if rounding == "seed":
        size = nbits // 8
    elif rounding == "modern":
        size = -(-nbits // 8)
    else:
        raise BitmapError(f"rounding must be 'seed' or 'modern', got {rounding!r}")
    return -(-size // 8) * 8


def encode_recv_bitmap(bits: np.ndarray, rounding: Rounding = "seed") -> bytes:
    """The blob ``ramblock_recv_bitmap_send`` writes for the received map ``bits``."""
    bits = np.asarray(bits, dtype=bool).reshape(-1)
    size = recv_bitmap_size(bits.size, rounding)
    body = np.zeros(max(size, -(-bits.size // 8)), np.uint8)
    body[: -(-bits.size // 8)] = np.packbits(bits, bitorder="little")
    return struct.pack(">Q", size) + body[:size].tobytes() + struct.pack(">Q", RAMBLOCK_RECV_BITMAP_ENDING)


def decode_recv_bitmap(data: bytes, nbits: int, rounding: Rounding = "seed") -> tuple[np.ndarray, int]:
    """Read a blob as ``ram_dirty_bitmap_reload`` does: ``(bits, bytes consumed)``.

    ``bits`` are the received bits of pages ``0 .. nbits-1`` (not yet complemented); bits
    the blob does not carry are False. Error messages give the offset where the bad or
    missing field starts. Raises :class:`~ramlab.errors.BitmapError` on a
    size other than this side's own computation, short data or a wrong end mark.

    >>> decode_recv_bitmap(encode_recv_bitmap(np.ones(3, bool), "modern"), 3, "modern")[1]
    24
    """
    view = memoryview(data)
    local_size = recv_bitmap_size(nbits, rounding)
    if len(view) < 8:
        raise BitmapError(f"received bitmap truncated at byte 0: need 8 bytes of size, have {len(view)}")
    (size,) = struct.unpack_from(">Q", view, 0)
    if size != local_size:
        raise BitmapError(f"received bitmap size mismatch at byte 0: expected 0x{local_size:x} "
                          f"for {nbits} bits ({rounding} rounding), found 0x{size:x}")
    if len(view) < 8 + size:
        raise BitmapError(f"received bitmap truncated at byte 8: need {size} bytes of bitmap, "
                          f"have {len(view) - 8}")
    if len(view) < 16 + size:
        raise BitmapError(f"received bitmap truncated at byte {8 + size}: need the 8-byte end "
                          f"mark, have {len(view) - 8 - size}")
    (end_mark,) = struct.unpack_from(">Q", view, 8 + size)
    if end_mark != RAMBLOCK_RECV_BITMAP_ENDING:
        raise BitmapError(f"received bitmap end mark incorrect at byte {8 + size}: expected "
                          f"0x{RAMBLOCK_RECV_BITMAP_ENDING:016x}, found 0x{end_mark:016x}")
    body = np.frombuffer(view, np.uint8, count=size, offset=8)
    bits = np.zeros(nbits, bool)
    got = np.unpackbits(body, count=min(nbits, size * 8), bitorder="little").astype(bool)
    bits[: got.size] = got
    return bits, 16 + size
