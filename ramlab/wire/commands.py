"""Payloads of the savevm stream's ``QEMU_VM_COMMAND`` items (``loadvm_process_command``, savevm.c).

A command is ``0x08``, be16 command number, be16 length, then the payload. Most payloads are tiny
and fixed (PING: be32 value; PACKAGED: be32 length of the blob that follows *outside* the command);
postcopy adds POSTCOPY_ADVISE (the page-size summary), POSTCOPY_RAM_DISCARD (a block name and
byte ranges to drop) and RECV_BITMAP (a block name). These codecs decode and re-encode them
byte-exactly, validating as QEMU 7.2's handlers do and raising :class:`~ramlab.errors.StreamError`
with the absolute offset of the bad field; the stream decoder and the postcopy sender use them.

    >>> p = encode_discard_payload("pc.ram", [(0x101000, 0x1000)])
    >>> decode_discard_payload(p)
    ('pc.ram', [(1052672, 4096)])
    >>> decode_advise_payload(encode_advise_payload(0x201000))
    (2101248, 4096)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ramlab.constants import MAX_VM_CMD_PACKAGED_SIZE, POSTCOPY_RAM_DISCARD_VERSION
from ramlab.errors import StreamError
from ramlab.wire.fields import cstr8, decode_name, encode_name

__all__ = [
    "encode_discard_payload",
    "decode_discard_payload",
    "encode_advise_payload",
    "decode_advise_payload",
    "encode_ping_payload",
    "decode_ping_payload",
    "encode_packaged_payload",
    "decode_packaged_payload",
    "encode_recv_bitmap_payload",
    "decode_recv_bitmap_payload",
]


def encode_discard_payload(block_name: str | bytes, ranges_bytes: Iterable[tuple[int, int]]) -> bytes:
    """POSTCOPY_RAM_DISCARD payload: u8 version 0, cstr8 name, u8 0, be64 start/length pairs.

    ``ranges_bytes`` are BYTE offsets and lengths inside the block. Refuses payloads
    QEMU's loader would reject (empty name, length < 20 or > 0xffff).

        >>> encode_discard_payload("m0", [(0, 0xc00000)]).hex()
        '00026d300000000000000000000000000000c00000'
    """
    raw = encode_name(block_name)
    if not raw:
        raise StreamError("POSTCOPY_RAM_DISCARD: empty block name")
    if b"\0" in raw:
        raise StreamError("POSTCOPY_RAM_DISCARD: block name contains a NUL byte")
    out = bytearray([POSTCOPY_RAM_DISCARD_VERSION]) + cstr8(raw) + b"\0"
    for start, length in ranges_bytes:
        if not (0 <= start < 1 << 64 and 0 <= length < 1 << 64):
            raise StreamError("POSTCOPY_RAM_DISCARD: range out of be64", found=f"({start}, {length})")
        out += struct.pack(">QQ", start, length)
    if len(out) < 20:
        raise StreamError("POSTCOPY_RAM_DISCARD: payload shorter than 20 bytes", found=str(len(out)))
    if len(out) > 0xFFFF:
        raise StreamError("POSTCOPY_RAM_DISCARD: payload longer than a be16 length", found=str(len(out)))
    return bytes(out)


def decode_discard_payload(payload: bytes, offset: int = 0) -> tuple[str, list[tuple[int, int]]]:
    """Decode a POSTCOPY_RAM_DISCARD payload as ``loadvm_postcopy_ram_handle_discard`` does.

    Checks, in QEMU's order: ``len >= 20``; version byte 0; a non-empty counted name;
    the 0 terminator; ``(len - 3 - strlen(name)) % 16 == 0``. ``offset`` is the absolute
    offset of the payload's first byte (for error messages). Returns
    ``(block_name, [(start_bytes, length_bytes), ...])``. Note QEMU accepts a command
    with zero ranges when the name is 17+ bytes long (the 20-byte minimum assumes a
    1-byte name); so does this decoder. A NUL inside the name is rejected: QEMU's
    ``strlen`` would then disagree with the name length byte and desynchronise.

        >>> decode_discard_payload(bytes([1]) + bytes(19), offset=100)
        Traceback (most recent call last):
        ...
        ramlab.errors.StreamError: POSTCOPY_RAM_DISCARD invalid version at byte 100 in section \
'POSTCOPY_RAM_DISCARD': expected 0, found 1
    """
    sec = "POSTCOPY_RAM_DISCARD"
    p = bytes(payload)
    n = len(p)
    if n < 1 + 1 + 1 + 1 + 2 * 8:
        raise StreamError(f"{sec} invalid length", offset=offset, section=sec, expected=">= 20", found=str(n))
    if p[0] != POSTCOPY_RAM_DISCARD_VERSION:
        raise StreamError(f"{sec} invalid version", offset=offset, section=sec, expected="0", found=str(p[0]))
    name_len = p[1]
    if name_len == 0:
        raise StreamError(
            f"{sec} Failed to read RAMBlock ID",
            offset=offset + 1,
            section=sec,
            expected="name length >= 1",
            found="0",
        )
    if 2 + name_len + 1 > n:
        raise StreamError(
            f"{sec} block name runs past the command",
            offset=offset + 1,
            section=sec,
            expected=f"<= {n - 3}",
            found=str(name_len),
        )
    raw = p[2 : 2 + name_len]
    if b"\0" in raw:
        raise StreamError(
            f"{sec} block name contains NUL (strlen != name length)",
            offset=offset + 2 + raw.index(b"\0"),
            section=sec,
        )
    nil = p[2 + name_len]
    if nil != 0:
        raise StreamError(
            f"{sec} missing nil", offset=offset + 2 + name_len, section=sec, expected="0", found=str(nil)
        )
    rest = n - 3 - name_len
    if rest % 16:
        raise StreamError(
            f"{sec} invalid length",
            offset=offset,
            section=sec,
            expected="3 + name length + 16*k",
            found=str(n),
        )
    base = 3 + name_len
    ranges = [struct.unpack_from(">QQ", p, base + 16 * i) for i in range(rest // 16)]
    return decode_name(raw), [(int(s), int(ln)) for s, ln in ranges]


def encode_advise_payload(ram_pagesize_summary: int | None, target_page_size: int = 4096) -> bytes:
    """POSTCOPY_ADVISE payload: be64 page-size summary + be64 target page size, or b"" (None).

    >>> encode_advise_payload(0x201000).hex()
    '00000000002010000000000000001000'
    """
    if ram_pagesize_summary is None:
        return b""
    return struct.pack(">QQ", ram_pagesize_summary, target_page_size)


def decode_advise_payload(payload: bytes, offset: int = 0) -> tuple[int, int] | None:
    """``(ram_pagesize_summary, target_page_size)``, or ``None`` for the 0-length form.

    QEMU >= 2.12 accepts length 0 (no RAM postcopy) or 16; anything else is rejected.
    """
    p = bytes(payload)
    if len(p) == 0:
        return None
    if len(p) != 16:
        raise StreamError(
            "CMD_POSTCOPY_ADVISE invalid length",
            offset=offset,
            section="POSTCOPY_ADVISE",
            expected="0 or 16",
            found=str(len(p)),
        )
    a, b = struct.unpack(">QQ", p)
    return int(a), int(b)


def encode_ping_payload(value: int) -> bytes:
    """PING payload: be32 value."""
    return struct.pack(">I", value)


def decode_ping_payload(payload: bytes, offset: int = 0) -> int:
    """PING value (the fixed length 4 is checked)."""
    return _be32_payload(payload, offset, "PING")


def encode_packaged_payload(length: int) -> bytes:
    """PACKAGED payload: be32 length of the blob that follows OUTSIDE the command."""
    if not 0 <= length <= MAX_VM_CMD_PACKAGED_SIZE:
        raise StreamError("Unreasonably large packaged state", found=str(length))
    return struct.pack(">I", length)


def decode_packaged_payload(payload: bytes, offset: int = 0, max_size: int = MAX_VM_CMD_PACKAGED_SIZE) -> int:
    """The PACKAGED blob length (7.2 limit 0xffffffff; early QEMU ``1 << 24``)."""
    n = _be32_payload(payload, offset, "PACKAGED")
    if n > max_size:
        raise StreamError(
            "Unreasonably large packaged state",
            offset=offset,
            section="PACKAGED",
            expected=f"<= {max_size}",
            found=str(n),
        )
    return n


def _be32_payload(payload: bytes, offset: int, sec: str) -> int:
    p = bytes(payload)
    if len(p) != 4:
        raise StreamError(
            f"{sec} received with bad length", offset=offset, section=sec, expected="4", found=str(len(p))
        )
    return int(struct.unpack(">I", p)[0])


def encode_recv_bitmap_payload(block_name: str | bytes) -> bytes:
    """RECV_BITMAP command payload: cstr8 block name."""
    raw = encode_name(block_name)
    if not raw:
        raise StreamError("RECV_BITMAP: empty block name")
    return cstr8(raw)


def decode_recv_bitmap_payload(payload: bytes, offset: int = 0) -> str:
    """Block name of a RECV_BITMAP command (``loadvm_handle_recv_bitmap``: a non-empty
    counted string and ``len == name length + 1``)."""
    p = bytes(payload)
    sec = "RECV_BITMAP"
    if not p or p[0] == 0 or 1 + p[0] > len(p):
        raise StreamError(f"{sec}: failed to read block name", offset=offset, section=sec)
    if len(p) != p[0] + 1:
        raise StreamError(
            f"{sec}: invalid payload length",
            offset=offset,
            section=sec,
            expected=str(p[0] + 1),
            found=str(len(p)),
        )
    return decode_name(p[1:])
