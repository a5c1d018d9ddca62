"""Sans-IO codecs of the postcopy wire messages: command payloads and the return path.

Why: postcopy adds QEMU_VM_COMMAND payloads to the forward stream (ADVISE, PING,
POSTCOPY_RAM_DISCARD, PACKAGED, RECV_BITMAP) and a whole second byte stream, the
*return path* from destination to source (SHUT, PONG, REQ_PAGES(_ID), RECV_BITMAP +
bitmap blob, RESUME_ACK, SWITCHOVER_ACK). These codecs decode and re-encode them
byte-exactly, validating as QEMU 7.2's readers do (``loadvm_process_command`` and its
handlers in savevm.c, ``source_return_path_thread`` in migration.c), and raising
:class:`~ramlab.errors.StreamError` with the absolute offset of the bad field.

    >>> p = encode_discard_payload("pc.ram", [(0x101000, 0x1000)])
    >>> decode_discard_payload(p)
    ('pc.ram', [(1052672, 4096)])
    >>> dec = ReturnPathDecoder()
    >>> dec.feed(bytes.fromhex("0002 0004 00000001 0001 0004 00000000"))
    >>> list(dec)
    [Pong(value=1, offset=0), Shut(status=0, offset=8)]
    >>> dec.close()

Block names are byte strings on the wire; they are exposed as ``str`` decoded with
UTF-8 + ``surrogateescape``, so any byte string round-trips exactly.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from ramlab.constants import (
    MAX_VM_CMD_PACKAGED_SIZE,
    MIG_RP_MSG_MAX,
    MIG_RP_MSG_PONG,
    MIG_RP_MSG_RECV_BITMAP,
    MIG_RP_MSG_REQ_PAGES,
    MIG_RP_MSG_REQ_PAGES_ID,
    MIG_RP_MSG_RESUME_ACK,
    MIG_RP_MSG_SHUT,
    MIG_RP_MSG_SWITCHOVER_ACK,
    POSTCOPY_RAM_DISCARD_VERSION,
    RAMBLOCK_RECV_BITMAP_ENDING,
)
from ramlab.errors import StreamError, TruncatedStream

__all__ = [
    "encode_name",
    "decode_name",
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
    "encode_recv_bitmap_blob",
    "Shut",
    "Pong",
    "ReqPages",
    "RecvBitmap",
    "ResumeAck",
    "SwitchoverAck",
    "ReturnPathEvent",
    "ReturnPathDecoder",
    "decode_return_path",
    "encode_return_path",
    "RP_MSG_MAX_LEN",
    "DEFAULT_MAX_BITMAP_BYTES",
]

RP_MSG_MAX_LEN = 512
"""``source_return_path_thread``'s buffer: longer messages are rejected."""

DEFAULT_MAX_BITMAP_BYTES = 1 << 27
"""Default bound on a RECV_BITMAP blob (128 MiB = a 4 TiB block of 4 KiB pages)."""

_RP_NAMES = {
    MIG_RP_MSG_SHUT: "SHUT",
    MIG_RP_MSG_PONG: "PONG",
    MIG_RP_MSG_REQ_PAGES_ID: "REQ_PAGES_ID",
    MIG_RP_MSG_REQ_PAGES: "REQ_PAGES",
    MIG_RP_MSG_RECV_BITMAP: "RECV_BITMAP",
    MIG_RP_MSG_RESUME_ACK: "RESUME_ACK",
    MIG_RP_MSG_SWITCHOVER_ACK: "SWITCHOVER_ACK",
}
# Fixed lengths (7.2 rp_cmd_args; SWITCHOVER_ACK from 8.1). None = variable.
_RP_FIXED_LEN: dict[int, int | None] = {
    MIG_RP_MSG_SHUT: 4,
    MIG_RP_MSG_PONG: 4,
    MIG_RP_MSG_REQ_PAGES_ID: None,
    MIG_RP_MSG_REQ_PAGES: 12,
    MIG_RP_MSG_RECV_BITMAP: None,
    MIG_RP_MSG_RESUME_ACK: 4,
    MIG_RP_MSG_SWITCHOVER_ACK: 0,
}


# ----------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------


def encode_name(name: str | bytes) -> bytes:
    """A block name as wire bytes (UTF-8 with surrogateescape; bytes pass through)."""
    if isinstance(name, bytes | bytearray):
        return bytes(name)
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:
        raise StreamError(f"block name {name!r} cannot be encoded") from exc


def decode_name(raw: bytes) -> str:
    """Inverse of :func:`encode_name`."""
    return bytes(raw).decode("utf-8", "surrogateescape")


def _cstr8(name: str | bytes, what: str) -> bytes:
    raw = encode_name(name)
    if len(raw) > 255:
        raise StreamError(f"{what}: block name longer than 255 bytes", found=str(len(raw)))
    return bytes([len(raw)]) + raw


# ----------------------------------------------------------------------------------
# forward-stream command payloads
# ----------------------------------------------------------------------------------


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
    out = bytearray([POSTCOPY_RAM_DISCARD_VERSION]) + _cstr8(raw, "POSTCOPY_RAM_DISCARD") + b"\0"
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
    return _cstr8(raw, "RECV_BITMAP")


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


def encode_recv_bitmap_blob(bitmap: bytes) -> bytes:
    """The blob after an RP RECV_BITMAP: be64 size, the bitmap bytes, be64 end mark."""
    return struct.pack(">Q", len(bitmap)) + bytes(bitmap) + struct.pack(">Q", RAMBLOCK_RECV_BITMAP_ENDING)


# ----------------------------------------------------------------------------------
# return path events
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shut:
    """MIG_RP_MSG_SHUT: the destination is done (``status`` 0) or failed (non-zero).

    ``offset`` (every event has one) is the absolute byte offset of the message header;
    it does not take part in ``==``."""

    status: int
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Pong:
    """MIG_RP_MSG_PONG: echo of a PING value (may come back out of order)."""

    value: int
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ReqPages:
    """A page request: ``length`` bytes at byte ``start`` of ``block``.

    ``named`` is True for MIG_RP_MSG_REQ_PAGES_ID (the name is on the wire), False for
    MIG_RP_MSG_REQ_PAGES (``block`` is the previous request's block)."""

    block: str
    start: int
    length: int
    named: bool
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class RecvBitmap:
    """MIG_RP_MSG_RECV_BITMAP plus its blob: ``bitmap`` is the ``size`` bitmap bytes
    (little-endian bit order) between the be64 size and the end mark."""

    block: str
    bitmap: bytes
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class ResumeAck:
    """MIG_RP_MSG_RESUME_ACK (value 1 from QEMU)."""

    value: int
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class SwitchoverAck:
    """MIG_RP_MSG_SWITCHOVER_ACK (QEMU >= 8.1; a 7.2 source rejects type 7)."""

    offset: int = field(default=0, compare=False)


ReturnPathEvent = Union[Shut, Pong, ReqPages, RecvBitmap, ResumeAck, SwitchoverAck]  # noqa: UP007


class ReturnPathDecoder:
    """Incremental (sans-IO) decoder of the return path, destination -> source.

    ``feed(data)`` buffers bytes; iterating (or :meth:`next_event`) yields the events
    complete so far; :meth:`close` at end of input raises :class:`TruncatedStream` if
    a message (or bitmap blob) was cut. Feeding byte by byte gives the same events and
    errors as feeding everything at once. After an error the decoder stays failed and
    re-raises it.

    Validation follows QEMU 7.2's ``source_return_path_thread``: type 0 or >= MAX is
    rejected (MAX is 8 here, so SWITCHOVER_ACK of 8.1+ is accepted; pass
    ``max_type=7`` for a strict 7.2 source); fixed lengths SHUT 4, PONG 4,
    REQ_PAGES 12, RESUME_ACK 4 (SWITCHOVER_ACK 0); no message longer than 512 bytes;
    REQ_PAGES_ID length exactly 13 + name length; REQ_PAGES needs an earlier named
    request (QEMU: "no previous block"). For RECV_BITMAP the name must fill the message
    (7.2 only checks ``len >= 1``) and the blob's be64 size must be a multiple of 8 and
    at most ``max_bitmap_bytes`` (if ``block_bitmap_sizes`` maps the block to its
    expected size, it must match exactly, as ``ram_dirty_bitmap_reload`` checks);
    then the end mark 0x0123456789abcdef. Bitmap bytes are buffered as they arrive:
    nothing is allocated from an untrusted length. Unlike QEMU, which stops reading at
    SHUT, decoding continues after it.

        >>> d = ReturnPathDecoder()
        >>> for b in bytes.fromhex("0003 0013 0000000000833000 00001000 06 70632e72616d"):
        ...     d.feed(bytes([b]))
        >>> d.next_event()
        ReqPages(block='pc.ram', start=8597504, length=4096, named=True, offset=0)
    """

    def __init__(
        self,
        *,
        offset: int = 0,
        max_bitmap_bytes: int = DEFAULT_MAX_BITMAP_BYTES,
        block_bitmap_sizes: Mapping[str, int] | None = None,
        max_type: int = MIG_RP_MSG_MAX,
        last_block: str | None = None,
    ) -> None:
        self._buf = bytearray()
        self._pos = int(offset)  # absolute offset of _buf[0]
        self._events: deque[ReturnPathEvent] = deque()
        self._error: StreamError | None = None
        self._closed = False
        self.max_bitmap_bytes = int(max_bitmap_bytes)
        self.block_bitmap_sizes = dict(block_bitmap_sizes or {})
        self.max_type = int(max_type)
        self.last_block = last_block

    # -- public API ------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Absolute offset of the first byte not yet consumed."""
        return self._pos

    def feed(self, data: bytes) -> None:
        """Add bytes from the return path (any chunking)."""
        if self._closed:
            raise StreamError(
                "feed() after close()", offset=self._pos + len(self._buf), section="return path"
            )
        self._buf += data

    def next_event(self) -> ReturnPathEvent | None:
        """The next complete event, or ``None`` if more bytes are needed."""
        if not self._events:
            self._parse()
        return self._events.popleft() if self._events else None

    def __iter__(self) -> Iterator[ReturnPathEvent]:
        while True:
            ev = self.next_event()
            if ev is None:
                return
            yield ev

    def close(self) -> None:
        """End of input: raise :class:`TruncatedStream` if bytes are left mid-message.

        Complete events not yet read stay available for iteration."""
        self._parse()
        self._closed = True
        if self._buf:
            raise TruncatedStream(
                "return path ends inside a message",
                offset=self._pos,
                section="return path",
                expected=self._need_text(),
                found=f"{len(self._buf)} byte(s)",
            )

    # -- parsing ---------------------------------------------------------------------

    def _fail(self, err: StreamError) -> None:
        self._error = err
        raise err

    def _need_text(self) -> str:
        b = self._buf
        if len(b) < 4:
            return "a 4-byte message header"
        mtype, mlen = struct.unpack_from(">HH", b)
        if mtype == MIG_RP_MSG_RECV_BITMAP and len(b) >= 4 + mlen:
            return "the rest of the RECV_BITMAP blob"
        return f"{4 + mlen} bytes of {_RP_NAMES.get(mtype, hex(mtype))}"

    def _parse(self) -> None:
        if self._error is not None:
            raise self._error
        while self._parse_one():
            pass

    def _parse_one(self) -> bool:
        b = self._buf
        if len(b) < 4:
            return False
        at = self._pos
        mtype, mlen = struct.unpack_from(">HH", b)
        if mtype == 0 or mtype >= self.max_type or mtype not in _RP_NAMES:
            self._fail(
                StreamError(
                    "RP: Received invalid message",
                    offset=at,
                    section="return path",
                    expected=f"type 1..{self.max_type - 1}",
                    found=f"0x{mtype:04x}",
                )
            )
        name = _RP_NAMES[mtype]
        fixed = _RP_FIXED_LEN[mtype]
        if (fixed is not None and mlen != fixed) or mlen > RP_MSG_MAX_LEN:
            exp = str(fixed) if fixed is not None else f"<= {RP_MSG_MAX_LEN}"
            self._fail(
                StreamError(
                    f"RP: Received '{name}' message with incorrect length",
                    offset=at + 2,
                    section="return path",
                    expected=exp,
                    found=str(mlen),
                )
            )
        if mtype == MIG_RP_MSG_RECV_BITMAP and mlen < 1:
            self._fail(
                StreamError(
                    "RP: RECV_BITMAP missing block name",
                    offset=at + 2,
                    section="return path",
                    expected=">= 1",
                    found="0",
                )
            )
        if len(b) < 4 + mlen:
            # REQ_PAGES_ID: the name length byte is enough to know the expected length
            if mtype == MIG_RP_MSG_REQ_PAGES_ID and len(b) >= 4 + 13:
                self._check_req_id_len(at, mlen, b[16])
            if mtype == MIG_RP_MSG_RECV_BITMAP and len(b) >= 5:
                self._check_recv_name_len(at, mlen, b[4])
            return False
        payload = bytes(b[4 : 4 + mlen])
        used = 4 + mlen
        ev: ReturnPathEvent
        if mtype == MIG_RP_MSG_SHUT:
            ev = Shut(int.from_bytes(payload, "big"), at)
        elif mtype == MIG_RP_MSG_PONG:
            ev = Pong(int.from_bytes(payload, "big"), at)
        elif mtype == MIG_RP_MSG_RESUME_ACK:
            ev = ResumeAck(int.from_bytes(payload, "big"), at)
        elif mtype == MIG_RP_MSG_SWITCHOVER_ACK:
            ev = SwitchoverAck(at)
        elif mtype == MIG_RP_MSG_REQ_PAGES:
            if self.last_block is None:
                self._fail(
                    StreamError(
                        "RP: REQ_PAGES with no previous block (ram_save_queue_pages)",
                        offset=at,
                        section="return path",
                    )
                )
            start, length = struct.unpack(">QI", payload)
            ev = ReqPages(self.last_block, int(start), int(length), False, at)  # type: ignore[arg-type]
        elif mtype == MIG_RP_MSG_REQ_PAGES_ID:
            self._check_req_id_len(at, mlen, payload[12] if mlen >= 13 else None)
            start, length = struct.unpack_from(">QI", payload)
            block = decode_name(payload[13:])
            self.last_block = block
            ev = ReqPages(block, int(start), int(length), True, at)
        else:  # RECV_BITMAP: message, then the blob outside the message length
            self._check_recv_name_len(at, mlen, payload[0])
            block = decode_name(payload[1:])
            if len(b) < used + 8:
                return False
            size = int.from_bytes(b[used : used + 8], "big")
            self._check_bitmap_size(at + used, block, size)
            if len(b) < used + 8 + size + 8:
                return False
            bitmap = bytes(b[used + 8 : used + 8 + size])
            end = int.from_bytes(b[used + 8 + size : used + 16 + size], "big")
            if end != RAMBLOCK_RECV_BITMAP_ENDING:
                self._fail(
                    StreamError(
                        "RP: RECV_BITMAP end mark incorrect",
                        offset=at + used + 8 + size,
                        section="return path",
                        expected=f"0x{RAMBLOCK_RECV_BITMAP_ENDING:016x}",
                        found=f"0x{end:016x}",
                    )
                )
            used += 16 + size
            ev = RecvBitmap(block, bitmap, at)
        del b[:used]
        self._pos += used
        self._events.append(ev)
        return True

    def _check_req_id_len(self, at: int, mlen: int, name_len: int | None) -> None:
        expected = 13 + (name_len if name_len is not None else 0)
        if mlen != expected:
            self._fail(
                StreamError(
                    "RP: Req_Page_id with bad length",
                    offset=at + 2,
                    section="return path",
                    expected=str(expected),
                    found=str(mlen),
                )
            )

    def _check_recv_name_len(self, at: int, mlen: int, name_len: int) -> None:
        if mlen != 1 + name_len:
            self._fail(
                StreamError(
                    "RP: RECV_BITMAP length does not match its block name",
                    offset=at + 2,
                    section="return path",
                    expected=str(1 + name_len),
                    found=str(mlen),
                )
            )

    def _check_bitmap_size(self, at: int, block: str, size: int) -> None:
        want = self.block_bitmap_sizes.get(block)
        if want is not None and size != want:
            self._fail(
                StreamError(
                    f"RP: ramblock '{block}' bitmap size mismatch",
                    offset=at,
                    section="return path",
                    expected=str(want),
                    found=str(size),
                )
            )
        if size % 8 or size > self.max_bitmap_bytes:
            self._fail(
                StreamError(
                    "RP: RECV_BITMAP size not a multiple of 8 or too large",
                    offset=at,
                    section="return path",
                    expected=f"multiple of 8, <= {self.max_bitmap_bytes}",
                    found=str(size),
                )
            )


def decode_return_path(data: bytes, offset: int = 0, **kwargs: object) -> list[ReturnPathEvent]:
    """Decode a whole return-path capture (raises on trailing partial messages).

    >>> decode_return_path(bytes.fromhex("000100040000000a"))
    [Shut(status=10, offset=0)]
    """
    dec = ReturnPathDecoder(offset=offset, **kwargs)  # type: ignore[arg-type]
    dec.feed(data)
    events = list(dec)
    dec.close()
    return events


def encode_return_path(events: Sequence[ReturnPathEvent] | Iterable[ReturnPathEvent]) -> bytes:
    """Byte-exact inverse of :class:`ReturnPathDecoder` (offsets are ignored).

    >>> encode_return_path([Pong(4), ReqPages("m0", 0, 0x200000, True)]).hex()
    '00020004000000040003000f000000000000000000200000026d30'
    """
    out = bytearray()
    for ev in events:
        try:
            out += _encode_one(ev)
        except (struct.error, OverflowError) as exc:
            raise StreamError(f"cannot encode {ev!r}: {exc}") from exc
    return bytes(out)


def _encode_one(ev: ReturnPathEvent) -> bytes:
    """The wire bytes of one return-path event."""
    out = bytearray()
    if isinstance(ev, Shut):
        out += struct.pack(">HHI", MIG_RP_MSG_SHUT, 4, ev.status)
    elif isinstance(ev, Pong):
        out += struct.pack(">HHI", MIG_RP_MSG_PONG, 4, ev.value)
    elif isinstance(ev, ResumeAck):
        out += struct.pack(">HHI", MIG_RP_MSG_RESUME_ACK, 4, ev.value)
    elif isinstance(ev, SwitchoverAck):
        out += struct.pack(">HH", MIG_RP_MSG_SWITCHOVER_ACK, 0)
    elif isinstance(ev, ReqPages):
        if ev.named:
            name = _cstr8(ev.block, "REQ_PAGES_ID")
            out += struct.pack(">HHQI", MIG_RP_MSG_REQ_PAGES_ID, 12 + len(name), ev.start, ev.length)
            out += name
        else:
            out += struct.pack(">HHQI", MIG_RP_MSG_REQ_PAGES, 12, ev.start, ev.length)
    elif isinstance(ev, RecvBitmap):
        name = _cstr8(ev.block, "RECV_BITMAP")
        out += struct.pack(">HH", MIG_RP_MSG_RECV_BITMAP, len(name)) + name
        out += encode_recv_bitmap_blob(ev.bitmap)
    else:
        raise StreamError(f"not a return-path event: {ev!r}")
    return bytes(out)
