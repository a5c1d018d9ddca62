"""The received-bitmap blob of postcopy recovery (return path, after MIG_RP_MSG_RECV_BITMAP).

Layout (``docs/reference/stream-format.md`` §9.3; seed ``ramblock_recv_bitmap_send`` /
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

The framing (size, bitmap, end mark) is read in one place, :func:`parse_recv_bitmap_blob`, by the
return-path decoder and by :func:`decode_recv_bitmap` alike; damage is a
:class:`~ramlab.errors.StreamError` at the byte where the bad or missing field starts.

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

from ramlab import checks
from ramlab.constants import RAMBLOCK_RECV_BITMAP_ENDING
from ramlab.errors import BitmapError, StreamError, TruncatedStream

__all__ = [
    "decode_recv_bitmap",
    "encode_recv_bitmap",
    "recv_bitmap_size",
    "encode_recv_bitmap_blob",
    "parse_recv_bitmap_blob",
    "RECV_BITMAP_SECTION",
]

RECV_BITMAP_SECTION = "RECV_BITMAP blob"
_BE64 = struct.Struct(">Q")

Rounding = Literal["seed", "modern"]


def recv_bitmap_size(nbits: int, rounding: Rounding = "seed") -> int:
    """Bytes of bitmap in the blob for a block of ``nbits`` pages.

    >>> recv_bitmap_size(65, "seed"), recv_bitmap_size(65, "modern"), recv_bitmap_size(72, "seed")
    (8, 16, 16)
    """
    nbits = checks.integer(nbits, "nbits", BitmapError, min=0)
    checks.choice(rounding, "rounding", ("seed", "modern"), BitmapError)
    size = nbits // 8 if rounding == "seed" else -(-nbits // 8)
    return -(-size // 8) * 8


def encode_recv_bitmap_blob(bitmap: bytes) -> bytes:
    """The blob around ``bitmap`` (its bytes as sent): be64 size, the bytes, be64 end mark.

    >>> encode_recv_bitmap_blob(bytes(8)).hex()
    '000000000000000800000000000000000123456789abcdef'
    """
    return _BE64.pack(len(bitmap)) + bytes(bitmap) + _BE64.pack(RAMBLOCK_RECV_BITMAP_ENDING)


def parse_recv_bitmap_blob(
    buf: bytes | bytearray | memoryview,
    pos: int = 0,
    *,
    base: int = 0,
    max_size: int | None = None,
    expected_size: int | None = None,
    section: str = RECV_BITMAP_SECTION,
) -> tuple[bytes, int] | int:
    """Read the blob at ``buf[pos:]``: ``(bitmap bytes, bytes consumed)``, or the total number
    of bytes the blob needs when ``buf`` holds only part of it.

    ``base + pos`` is the absolute offset of the blob (for errors). The size must equal
    ``expected_size`` when given (``ram_dirty_bitmap_reload``'s check), and be a multiple of 8 and at
    most ``max_size``; then the end mark must follow. Nothing is allocated before the size is checked.

    >>> parse_recv_bitmap_blob(encode_recv_bitmap_blob(b"\\x01" * 8))
    (b'\\x01\\x01\\x01\\x01\\x01\\x01\\x01\\x01', 24)
    >>> parse_recv_bitmap_blob(encode_recv_bitmap_blob(bytes(8))[:10])
    24
    """
    avail = len(buf) - pos
    if avail < 8:
        return 8
    (size,) = _BE64.unpack_from(buf, pos)
    at = base + pos
    if expected_size is not None and size != expected_size:
        raise StreamError("received bitmap size mismatch", offset=at, section=section,
                          expected=f"0x{expected_size:x}", found=f"0x{size:x}")
    if size % 8 or (max_size is not None and size > max_size):
        raise StreamError("received bitmap size not a multiple of 8 or too large", offset=at, section=section,
                          expected="a multiple of 8" + (f", <= {max_size}" if max_size is not None else ""),
                          found=str(size))
    if avail < 16 + size:
        return 16 + size
    (end_mark,) = _BE64.unpack_from(buf, pos + 8 + size)
    if end_mark != RAMBLOCK_RECV_BITMAP_ENDING:
        raise StreamError("received bitmap end mark incorrect", offset=at + 8 + size, section=section,
                          expected=f"0x{RAMBLOCK_RECV_BITMAP_ENDING:016x}", found=f"0x{end_mark:016x}")
    return bytes(buf[pos + 8 : pos + 8 + size]), 16 + size


def encode_recv_bitmap(bits: np.ndarray, rounding: Rounding = "seed") -> bytes:
    """The blob ``ramblock_recv_bitmap_send`` writes for the received map ``bits``.

    ``bits``: one entry per target page, a 1-D bool array or 0/1 integers (anything else --
    a 2, NaN, None, a 2-D array -- is a :class:`~ramlab.errors.BitmapError`).

    >>> encode_recv_bitmap([1, 0, 1], "modern").hex()
    '000000000000000805000000000000000123456789abcdef'
    """
    checks.choice(rounding, "rounding", ("seed", "modern"), BitmapError)
    bits = checks.bits(bits, "bits", BitmapError)
    size = recv_bitmap_size(bits.size, rounding)
    body = np.zeros(max(size, -(-bits.size // 8)), np.uint8)
    body[: -(-bits.size // 8)] = np.packbits(bits, bitorder="little")
    return encode_recv_bitmap_blob(body[:size].tobytes())


def decode_recv_bitmap(data: bytes, nbits: int, rounding: Rounding = "seed") -> tuple[np.ndarray, int]:
    """Read a blob as ``ram_dirty_bitmap_reload`` does: ``(bits, bytes consumed)``.

    ``bits`` are the received bits of pages ``0 .. nbits-1`` (not yet complemented); bits
    the blob does not carry are False. Raises :class:`~ramlab.errors.StreamError` (at the byte
    where the bad field starts) on a size other than this side's own computation or a wrong end
    mark, :class:`~ramlab.errors.TruncatedStream` on short data.

    >>> decode_recv_bitmap(encode_recv_bitmap(np.ones(3, bool), "modern"), 3, "modern")[1]
    24
    """
    data = checks.buffer(data, "data", BitmapError)
    local_size = recv_bitmap_size(nbits, rounding)
    got = parse_recv_bitmap_blob(data, expected_size=local_size)
    if isinstance(got, int):
        have = len(data)
        at, what = (0, "8 bytes of size") if have < 8 else (
            (8, f"{local_size} bytes of bitmap") if have < 8 + local_size else (8 + local_size, "the 8-byte end mark"))
        raise TruncatedStream("received bitmap truncated", offset=at, section=RECV_BITMAP_SECTION,
                              expected=what, found=f"{have - at} bytes")
    body, used = got
    bits = np.zeros(nbits, bool)
    unpacked = np.unpackbits(np.frombuffer(body, np.uint8), count=min(nbits, len(body) * 8), bitorder="little")
    bits[: unpacked.size] = unpacked.astype(bool)
    return bits, used
