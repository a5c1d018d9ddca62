"""Sans-IO codec of the postcopy *return path*: the byte stream from destination to source.

Each message is be16 type, be16 length, then the payload (``migrate_send_rp_message``):
SHUT (be32 status), PONG (be32 value), REQ_PAGES_ID (be64 start, be32 length, cstr8 block),
REQ_PAGES (be64 start, be32 length: the previous request's block), RECV_BITMAP (cstr8 block, then a
blob *outside* the message length: see :mod:`ramlab.wire.recv_bitmap`), RESUME_ACK (be32 value) and,
from QEMU 8.1, SWITCHOVER_ACK (no payload). The decoder follows the contract of
:mod:`ramlab.wire.contract` and validates as QEMU 7.2's ``source_return_path_thread`` does.

    >>> dec = ReturnPathDecoder()
    >>> dec.receive_data(bytes.fromhex("0002 0004 00000001 0001 0004 00000000"))
    >>> dec.close()
    >>> list(dec.events()), dec.next_event()
    ([Pong(value=1, offset=0), Shut(status=0, offset=8)], END)
    >>> encode_return_path([Pong(1), Shut(0, offset=8)]).hex()
    '00020004000000010001000400000000'
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from enum import Enum

from ramlab.constants import (
    MIG_RP_MSG_MAX,
    MIG_RP_MSG_PONG,
    MIG_RP_MSG_RECV_BITMAP,
    MIG_RP_MSG_REQ_PAGES,
    MIG_RP_MSG_REQ_PAGES_ID,
    MIG_RP_MSG_RESUME_ACK,
    MIG_RP_MSG_SHUT,
    MIG_RP_MSG_SWITCHOVER_ACK,
)
from ramlab.errors import RamlabError, StreamError, TruncatedStream
from ramlab.wire.contract import Decoder, NeedMore
from ramlab.wire.events import Pong, RecvBitmap, ReqPages, ResumeAck, ReturnPathEvent, Shut, SwitchoverAck
from ramlab.wire.fields import cstr8, decode_name
from ramlab.wire.recv_bitmap import encode_recv_bitmap_blob, parse_recv_bitmap_blob

__all__ = [
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

_SECTION = "return path"
_HEAD = struct.Struct(">HH")
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


class _State(Enum):
    MESSAGE = "message"


class ReturnPathDecoder(Decoder):
    """Incremental decoder of the return path (contract: :mod:`ramlab.wire.contract`).

    Validation follows QEMU 7.2's ``source_return_path_thread``: type 0 or >= ``max_type`` is
    rejected (8 by default, so SWITCHOVER_ACK of 8.1+ is accepted; ``max_type=7`` for a strict 7.2
    source); fixed lengths SHUT 4, PONG 4, REQ_PAGES 12, RESUME_ACK 4 (SWITCHOVER_ACK 0); no message
    longer than 512 bytes; REQ_PAGES_ID length exactly 13 + name length; REQ_PAGES needs an earlier
    named request (QEMU: "no previous block"). For RECV_BITMAP the name must fill the message (7.2
    only checks ``len >= 1``) and the blob's size must be a multiple of 8 and at most
    ``max_bitmap_bytes`` (if ``block_bitmap_sizes`` maps the block to its expected size, it must
    match exactly, as ``ram_dirty_bitmap_reload`` checks), then the end mark. Nothing is allocated
    from an untrusted length. Page requests are not checked against the blocks here (the decoder
    does not know them): the loader does that, as ``ram_save_queue_pages`` does. Unlike QEMU, which
    stops reading at SHUT, decoding continues after it.

        >>> d = ReturnPathDecoder()
        >>> for b in bytes.fromhex("0003 0013 0000000000833000 00001000 06 70632e72616d"):
        ...     d.receive_data(bytes([b]))
        >>> d.next_event()
        ReqPages(block='pc.ram', start=8597504, length=4096, named=True, offset=0)
    """

    _SECTION = _SECTION

    def __init__(
        self,
        *,
        base_offset: int = 0,
        max_bitmap_bytes: int = DEFAULT_MAX_BITMAP_BYTES,
        block_bitmap_sizes: Mapping[str, int] | None = None,
        max_type: int = MIG_RP_MSG_MAX,
        last_block: str | None = None,
    ) -> None:
        super().__init__(base_offset=base_offset)
        self._state = _State.MESSAGE
        self.max_bitmap_bytes = int(max_bitmap_bytes)
        self.block_bitmap_sizes = dict(block_bitmap_sizes or {})
        self.max_type = int(max_type)
        self.last_block = last_block

    def _err(self, message: str, at: int, expected: str | None = None, found: str | None = None) -> StreamError:
        return StreamError(message, offset=self._base + at, section=_SECTION, expected=expected, found=found)

    def _truncated(self, upto: int) -> StreamError:
        return TruncatedStream("return path ends inside a message", offset=self.position, section=_SECTION,
                               expected=self._need_text(), found=f"{self.pending} byte(s)")

    def _need_text(self) -> str:
        b, p = self._mv, self._pos
        if len(b) - p < 4:
            return "a 4-byte message header"
        mtype, mlen = _HEAD.unpack_from(b, p)
        if mtype == MIG_RP_MSG_RECV_BITMAP and len(b) - p >= 4 + mlen:
            return "the rest of the RECV_BITMAP blob"
        return f"{4 + mlen} bytes of {_RP_NAMES.get(mtype, hex(mtype))}"

    def _read_message(self) -> None:
        b, at = self._mv, self._pos
        self._need(4)
        mtype, mlen = _HEAD.unpack_from(b, at)
        if mtype == 0 or mtype >= self.max_type or mtype not in _RP_NAMES:
            raise self._err("RP: Received invalid message", at, f"type 1..{self.max_type - 1}", f"0x{mtype:04x}")
        name = _RP_NAMES[mtype]
        fixed = _RP_FIXED_LEN[mtype]
        if (fixed is not None and mlen != fixed) or mlen > RP_MSG_MAX_LEN:
            exp = str(fixed) if fixed is not None else f"<= {RP_MSG_MAX_LEN}"
            raise self._err(f"RP: Received '{name}' message with incorrect length", at + 2, exp, str(mlen))
        if mtype == MIG_RP_MSG_RECV_BITMAP and mlen < 1:
            raise self._err("RP: RECV_BITMAP missing block name", at + 2, ">= 1", "0")
        avail = len(b) - at
        if mtype == MIG_RP_MSG_REQ_PAGES_ID:
            if mlen < 13:
                raise self._err("RP: Req_Page_id with bad length", at + 2, ">= 13", str(mlen))
            if avail >= 4 + 13:
                self._check_req_id_len(at, mlen, b[at + 16])  # the name length byte tells the length
        if mtype == MIG_RP_MSG_RECV_BITMAP and avail >= 5:
            self._check_recv_name_len(at, mlen, b[at + 4])
        self._need(4 + mlen)
        payload = bytes(b[at + 4 : at + 4 + mlen])
        used = 4 + mlen
        ev: ReturnPathEvent
        offset = self._base + at
        if mtype == MIG_RP_MSG_SHUT:
            ev = Shut(int.from_bytes(payload, "big"), offset)
        elif mtype == MIG_RP_MSG_PONG:
            ev = Pong(int.from_bytes(payload, "big"), offset)
        elif mtype == MIG_RP_MSG_RESUME_ACK:
            ev = ResumeAck(int.from_bytes(payload, "big"), offset)
        elif mtype == MIG_RP_MSG_SWITCHOVER_ACK:
            ev = SwitchoverAck(offset)
        elif mtype == MIG_RP_MSG_REQ_PAGES:
            if self.last_block is None:
                raise self._err("RP: REQ_PAGES with no previous block (ram_save_queue_pages)", at)
            start, length = struct.unpack(">QI", payload)
            ev = ReqPages(self.last_block, int(start), int(length), False, offset)
        elif mtype == MIG_RP_MSG_REQ_PAGES_ID:
            self._check_req_id_len(at, mlen, payload[12])
            start, length = struct.unpack_from(">QI", payload)
            block = decode_name(payload[13:])
            self.last_block = block
            ev = ReqPages(block, int(start), int(length), True, offset)
        else:  # RECV_BITMAP: the message, then the blob outside the message length
            block = decode_name(payload[1:])
            got = parse_recv_bitmap_blob(b, at + used, base=self._base, max_size=self.max_bitmap_bytes,
                                         expected_size=self.block_bitmap_sizes.get(block), section=_SECTION)
            if isinstance(got, int):
                raise NeedMore(self._base + at + used + got)
            bitmap, blob_len = got
            used += blob_len
            ev = RecvBitmap(block, bitmap, offset)
        self._pos = at + used
        self._emit(ev)

    def _check_req_id_len(self, at: int, mlen: int, name_len: int) -> None:
        if mlen != 13 + name_len:
            raise self._err("RP: Req_Page_id with bad length", at + 2, str(13 + name_len), str(mlen))

    def _check_recv_name_len(self, at: int, mlen: int, name_len: int) -> None:
        if mlen != 1 + name_len:
            raise self._err("RP: RECV_BITMAP length does not match its block name", at + 2, str(1 + name_len),
                            str(mlen))

    _READERS = {_State.MESSAGE: _read_message}


def decode_return_path(data: bytes, base_offset: int = 0, **kwargs: object) -> list[ReturnPathEvent]:
    """Decode a whole return-path capture (raises on damage or a trailing partial message).

    >>> decode_return_path(bytes.fromhex("000100040000000a"))
    [Shut(status=10, offset=0)]
    """
    dec = ReturnPathDecoder(base_offset=base_offset, **kwargs)  # type: ignore[arg-type]
    dec.receive_data(data)
    dec.close()
    return list(dec.events())  # type: ignore[arg-type]


def encode_return_path(events: Iterable[ReturnPathEvent]) -> bytes:
    """Byte-exact inverse of :class:`ReturnPathDecoder` (offsets are not encoded).

    >>> encode_return_path([Pong(4), ReqPages("m0", 0, 0x200000, True)]).hex()
    '00020004000000040003000f000000000000000000200000026d30'
    """
    out = bytearray()
    for ev in events:
        try:
            out += _encode_one(ev)
        except (struct.error, OverflowError) as exc:
            raise RamlabError(f"cannot encode {ev!r}: {exc}") from None
    return bytes(out)


def _encode_one(ev: ReturnPathEvent) -> bytes:
    """The wire bytes of one return-path event."""
    if isinstance(ev, Shut):
        return struct.pack(">HHI", MIG_RP_MSG_SHUT, 4, ev.status)
    if isinstance(ev, Pong):
        return struct.pack(">HHI", MIG_RP_MSG_PONG, 4, ev.value)
    if isinstance(ev, ResumeAck):
        return struct.pack(">HHI", MIG_RP_MSG_RESUME_ACK, 4, ev.value)
    if isinstance(ev, SwitchoverAck):
        return struct.pack(">HH", MIG_RP_MSG_SWITCHOVER_ACK, 0)
    if isinstance(ev, ReqPages):
        if not ev.named:
            return struct.pack(">HHQI", MIG_RP_MSG_REQ_PAGES, 12, ev.start, ev.length)
        name = cstr8(ev.block)
        return struct.pack(">HHQI", MIG_RP_MSG_REQ_PAGES_ID, 12 + len(name), ev.start, ev.length) + name
    if isinstance(ev, RecvBitmap):
        name = cstr8(ev.block)
        return struct.pack(">HH", MIG_RP_MSG_RECV_BITMAP, len(name)) + name + encode_recv_bitmap_blob(ev.bitmap)
    raise RamlabError(f"not a return-path event: {ev!r}")
