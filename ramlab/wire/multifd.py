"""Sans-IO decoder and encoder of ONE multifd channel (QEMU 2.11 .. 10.0).

A multifd channel carries a 64-byte ``MultiFDInit_t`` handshake, then packets: a
fixed-size ``MultiFDPacket_t`` header (``320 + 8 * page_count`` bytes, whatever the
number of pages it carries) followed by the page payload (raw, or one never-ending
zlib / zstd stream per channel). The events are those of :mod:`ramlab.wire.events`;
the format is ``docs/reference/stream-format.md`` §10.

Layouts (``layout=``):

* ``"3.0"``: the seed's (QEMU 2.11-3.0): a packed 25-byte handshake (magic, version, uuid, id)
  and nothing more; the pages still travel on the main channel.
* ``"7.2"``: bytes 32..63 of the header are reserved (``unused[4]``); flag bits 1-3 are
  the compression method; no zero pages, no device state.
* ``"9.0"``: ``zero_pages`` (u32) and a reserved u32 take bytes 32..39; ``offset[]``
  lists the normal pages, then the zero pages. Compression bits 1-5 (qpl 0x8,
  uadk 0x10, qatzip 0x20 are recognised and refused as :class:`UnsupportedFeature`).
* ``"10.0"``: as 9.0, and the first 12 bytes are a common header: flag 0x40
  (``MULTIFD_FLAG_DEVICE_STATE``) marks a ``MultiFDPacketDeviceState_t`` (276-byte header
  + opaque payload), decoded as a :class:`MultifdDeviceState` event.
* ``"auto"`` (default): the 10.0 superset. It is exact for 7.2 streams too, because the
  7.2 sender allocates its header zeroed and never writes the reserved bytes (so
  ``zero_pages`` reads 0) nor sets flag 0x40. A caller who knows the QEMU version can
  force the layout (e.g. ``"7.2"`` ignores those bytes exactly as QEMU 7.2 does). A channel
  that ends right after a valid 25-byte handshake is read as the seed's.

Decoding a channel (feed whole files or any chunks; the events are the same)::

    >>> enc = MultifdChannelEncoder(compression="zlib")
    >>> pages = np.full((2, 4096), 7, dtype=np.uint8)
    >>> wire = enc.handshake(channel_id=0) + enc.packet("pc.ram", [0x1000, 0x2000], pages)
    >>> wire += enc.sync_packet()
    >>> dec = MultifdChannelDecoder()
    >>> dec.receive_data(wire)
    >>> dec.close()
    >>> events = list(dec.events())
    >>> [type(e).__name__ for e in events]
    ['MultifdHandshake', 'MultifdPacket', 'MultifdPacket']
    >>> events[1].ramblock, events[1].normal_offsets.tolist(), int(events[1].pages[1, 0])
    ('pc.ram', [4096, 8192], 7)
    >>> [epoch for epoch, _ in epochs(events)]
    [0, 0]
    >>> MultifdChannelEncoder().encode_events(events) == wire
    True

Resource bounds on untrusted input: the payload of a RAM packet is at most
``MULTIFD_MAX_PAYLOAD`` (2 x 512 KiB, the size of QEMU's receive buffer) and must
decompress to exactly ``normal_pages * page_size`` bytes (at most 512 KiB). zstd input is
fed in :data:`ZSTD_FEED_CHUNK`-byte pieces so a decompression bomb allocates at most about
16 MiB before it is detected; zstd's own window is capped by libzstd's default limit
(128 MiB, as in QEMU's receiver). Device-state payloads are capped by
``max_device_state_size``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from typing import Literal

import numpy as np
import zstandard

from ramlab.constants import (
    MULTIFD_FLAG_COMPRESSION_MASK_72,
    MULTIFD_FLAG_COMPRESSION_MASK_90,
    MULTIFD_FLAG_DEVICE_STATE,
    MULTIFD_FLAG_NOCOMP,
    MULTIFD_FLAG_SYNC,
    MULTIFD_FLAG_ZLIB,
    MULTIFD_FLAG_ZSTD,
    MULTIFD_INIT_SIZE,
    MULTIFD_INIT_SIZE_SEED,
    MULTIFD_MAGIC,
    MULTIFD_PACKET_SIZE,
    MULTIFD_VERSION,
)
from ramlab.errors import RamlabError, StreamError, TruncatedStream, UnsupportedFeature
from ramlab.wire.contract import Decoder, NeedMore
from ramlab.wire.events import MULTIFD_OFFSETS_AT, MultifdDeviceState, MultifdEvent, MultifdHandshake, MultifdPacket
from ramlab.wire.fields import decode_name, encode_name

__all__ = [
    "MULTIFD_MAX_PAYLOAD",
    "MULTIFD_DEVICE_STATE_HEADER_SIZE",
    "ZSTD_FEED_CHUNK",
    "Layout",
    "Compression",
    "ChannelInflater",
    "MultifdChannelDecoder",
    "MultifdChannelEncoder",
    "decode_channel",
    "encode_handshake",
    "encode_packet",
    "encode_device_state",
    "packet_header_size",
    "epochs",
]

Layout = Literal["auto", "3.0", "7.2", "9.0", "10.0"]
Compression = Literal["none", "zlib", "zstd"]

#: Largest payload accepted after a RAM packet header: QEMU's receive buffer (2 x 512 KiB).
MULTIFD_MAX_PAYLOAD = 2 * MULTIFD_PACKET_SIZE
#: ``MultiFDPacketDeviceState_t``: magic, version, flags, idstr[256], instance_id, size.
MULTIFD_DEVICE_STATE_HEADER_SIZE = 12 + 256 + 4 + 4
#: zstd input is decompressed this many bytes at a time (bounds a bomb's output per call).
ZSTD_FEED_CHUNK = 512

# Compression bits (migration/multifd.h). 7.2 reserves bits 1-3, 9.2+ bits 1-5.
MULTIFD_FLAG_QPL = 4 << 1  # QEMU >= 9.1
MULTIFD_FLAG_UADK = 8 << 1  # QEMU >= 9.1
MULTIFD_FLAG_QATZIP = 16 << 1  # QEMU >= 9.2

_METHOD_FLAGS: dict[str, int] = {
    "none": MULTIFD_FLAG_NOCOMP,
    "zlib": MULTIFD_FLAG_ZLIB,
    "zstd": MULTIFD_FLAG_ZSTD,
}
_UNSUPPORTED_METHODS = {MULTIFD_FLAG_QPL: "qpl", MULTIFD_FLAG_UADK: "uadk", MULTIFD_FLAG_QATZIP: "qatzip"}
_LAYOUTS = ("auto", "3.0", "7.2", "9.0", "10.0")

_HEAD = struct.Struct(">IIIIIIQ")  # magic version flags pages_alloc normal_pages next_packet_size packet_num
_ZERO = struct.Struct(">II")  # zero_pages, reserved u32 (>= 9.0)
_INIT = struct.Struct(">II16sB")  # magic version uuid id
_DEV_TAIL = struct.Struct(">II")  # instance_id, next_packet_size
_RAMBLOCK_OFF = 64
_OFFSETS_OFF = MULTIFD_OFFSETS_AT
_SECTION = "multifd"


def packet_header_size(page_size: int = 4096) -> int:
    """Bytes of a RAM packet header: ``320 + 8 * (512 KiB / page_size)``.

    >>> packet_header_size(4096), packet_header_size(65536)
    (1344, 384)
    """
    return _OFFSETS_OFF + 8 * _page_count(page_size)


def _page_count(page_size: int) -> int:
    if (
        not isinstance(page_size, int)
        or page_size < 512
        or page_size & (page_size - 1)
        or page_size > MULTIFD_PACKET_SIZE
    ):
        raise RamlabError(
            f"page_size must be a power of two in 512..{MULTIFD_PACKET_SIZE}, got {page_size!r}"
        )
    return MULTIFD_PACKET_SIZE // page_size


def _check_layout(layout: str) -> str:
    if layout not in _LAYOUTS:
        raise RamlabError(f"layout must be one of {_LAYOUTS}, got {layout!r}")
    return layout


def _check_compression(compression: str | None) -> str | None:
    if compression is not None and compression not in _METHOD_FLAGS:
        raise RamlabError(f"compression must be None, 'none', 'zlib' or 'zstd', got {compression!r}")
    return compression


def _cstr(raw: bytes) -> str:
    return decode_name(raw.split(b"\0", 1)[0])


# --- decompression --------------------------------------------------------------------


class ChannelInflater:
    """The pages of a channel's compressed packets decoded with ``keep_pages=False``, inflated
    again: give it every packet of the channel, in order (the channel is one compression stream).

    >>> enc = MultifdChannelEncoder(compression="zstd")
    >>> pages = np.full((2, 4096), 7, dtype=np.uint8)
    >>> dec = MultifdChannelDecoder(keep_pages=False)
    >>> dec.receive_data(enc.handshake(channel_id=0) + enc.packet("pc.ram", [0, 0x1000], pages))
    >>> pkt = list(dec.events())[1]
    >>> pkt.pages.shape, np.array_equal(ChannelInflater().pages(pkt), pages)
    ((0, 4096), True)
    """

    def __init__(self) -> None:
        self._inflater: _Inflater | None = None

    def pages(self, pkt: MultifdPacket) -> np.ndarray:
        """``pkt``'s normal pages, shape ``(normal_pages, page_size)``."""
        if len(pkt.pages) == pkt.normal_pages:
            return pkt.pages
        page_size = pkt.pages.shape[1]
        if self._inflater is None:  # the decoder checked the method: exactly one of the bits
            self._inflater = _Inflater("zlib" if pkt.flags & MULTIFD_FLAG_ZLIB else "zstd")
        data = self._inflater.run(pkt.payload, pkt.normal_pages * page_size, pkt.payload_offset)
        return np.frombuffer(data, dtype=np.uint8).reshape(pkt.normal_pages, page_size)


class _Inflater:
    """One per-channel decompression stream for the whole migration."""

    def __init__(self, method: str) -> None:
        self.method = method
        if method == "zlib":
            self._z = zlib.decompressobj()
        elif method == "zstd":
            self._zs = zstandard.ZstdDecompressor().decompressobj()

    def run(self, payload: bytes, expected: int, offset: int) -> bytes:
        """Decompress one packet's payload; it must give exactly ``expected`` bytes."""
        try:
            if self.method == "zlib":
                out = self._z.decompress(payload, expected)
                if self._z.unconsumed_tail:
                    # The sync-flush trailer (an empty stored block) may still be pending.
                    extra = self._z.decompress(self._z.unconsumed_tail, 1)
                    if extra or self._z.unconsumed_tail:
                        raise StreamError(
                            "multifd zlib payload decompresses to more than its pages",
                            offset=offset,
                            section=_SECTION,
                            expected=f"{expected} bytes",
                        )
                if self._z.unused_data:
                    raise StreamError(
                        "multifd zlib stream ended inside a payload", offset=offset, section=_SECTION
                    )
            else:
                parts: list[bytes] = []
                n = 0
                for i in range(0, len(payload), ZSTD_FEED_CHUNK):
                    piece = self._zs.decompress(payload[i : i + ZSTD_FEED_CHUNK])
                    n += len(piece)
                    if n > expected:
                        raise StreamError(
                            "multifd zstd payload decompresses to more than its pages",
                            offset=offset,
                            section=_SECTION,
                            expected=f"{expected} bytes",
                            found=f"at least {n} bytes",
                        )
                    parts.append(piece)
                out = b"".join(parts)
        except StreamError:
            raise
        except (zlib.error, zstandard.ZstdError) as exc:
            raise StreamError(
                f"multifd {self.method} payload does not decompress ({exc})", offset=offset, section=_SECTION
            ) from None
        if len(out) != expected:
            raise StreamError(
                f"multifd {self.method} payload has the wrong decompressed size",
                offset=offset,
                section=_SECTION,
                expected=f"{expected} bytes",
                found=f"{len(out)} bytes",
            )
        return out


# --- decoder --------------------------------------------------------------------------


class _State(Enum):
    HANDSHAKE = "handshake"
    PACKET = "packet"
    SEED_DONE = "seed channel ended"


class MultifdChannelDecoder(Decoder):
    """Incremental, sans-IO decoder of one multifd channel (contract: :mod:`ramlab.wire.contract`).

    A damaged item raises :class:`StreamError` (``offset`` = absolute byte of the bad field) from
    :meth:`next_event` after every event before it; an input that ends inside an item raises
    :class:`TruncatedStream` (``offset`` = start of the unfinished item). ``compression=None``
    takes the method from the first packet carrying pages and then insists on it (QEMU checks the
    configured method on such packets only).

    The handshake is QEMU's 64-byte ``MultiFDInit_t``, or the seed's packed 25-byte form
    (QEMU 2.11-3.0: magic, version, uuid, id; ``layout="3.0"``, or recognised in ``"auto"`` when the
    channel ends right after those 25 bytes): the seed's channels carry nothing else.

    A whole ``bytes`` buffer is parsed in place (each event copies only its own header and
    payload); chunks of any size, down to one byte, give the same events.

    Args: ``page_size`` (target page size; fixes the header size), ``compression``
    (``None`` = from the packets), ``layout`` (see the module doc), ``expect_handshake``
    (``False`` to start at a packet boundary), ``base_offset`` (absolute offset of the
    first byte received, for error messages and event offsets), ``max_device_state_size``,
    ``keep_pages`` (``False``: packets keep no page bytes of their own, so a decoded channel costs
    its headers, not every page it ever carried: a compressed packet's payload is still checked to
    decompress to its pages, but its ``pages`` are left empty, shape ``(0, page_size)``, and a
    :class:`ChannelInflater` gives them again, packet after packet in channel order; a payload is a
    read-only ``memoryview`` of the input, not a copy, when the input was given whole).

    >>> wire = encode_handshake(channel_id=0) + encode_packet(flags=MULTIFD_FLAG_SYNC)
    >>> dec = MultifdChannelDecoder(layout="7.2")
    >>> for i in range(len(wire)):
    ...     dec.receive_data(wire[i : i + 1])
    >>> dec.close()
    >>> [(type(e).__name__, e.offset) for e in dec.events()], dec.next_event()
    ([('MultifdHandshake', 0), ('MultifdPacket', 64)], END)
    """

    _SECTION = _SECTION

    def __init__(
        self,
        page_size: int = 4096,
        compression: Compression | None = None,
        *,
        layout: Layout = "auto",
        expect_handshake: bool = True,
        base_offset: int = 0,
        max_device_state_size: int = 64 << 20,
        keep_pages: bool = True,
    ) -> None:
        super().__init__(base_offset=base_offset)
        self.keep_pages = keep_pages
        self.page_size = page_size
        self.page_count = _page_count(page_size)
        self.header_size = _OFFSETS_OFF + 8 * self.page_count
        self.layout: str = _check_layout(layout)
        self.compression: str | None = _check_compression(compression)
        self.max_device_state_size = max_device_state_size
        self._zero_pages_field = layout not in ("7.2", "3.0")
        self._device_state = layout in ("auto", "10.0")
        self._mask = MULTIFD_FLAG_COMPRESSION_MASK_72 if layout == "7.2" else MULTIFD_FLAG_COMPRESSION_MASK_90
        self._inflater: _Inflater | None = None
        self._state = _State.HANDSHAKE if expect_handshake else _State.PACKET
        self.packets = 0  # RAM packets decoded
        self.syncs = 0  # of which with MULTIFD_FLAG_SYNC

    def _err(
        self, message: str, at: int, expected: str | None = None, found: str | None = None
    ) -> StreamError:
        return StreamError(message, offset=self._base + at, section=_SECTION, expected=expected, found=found)

    def _truncated(self, upto: int) -> StreamError:
        return TruncatedStream("multifd channel ends inside an item", offset=self.position, section=_SECTION,
                               expected=f"{upto - self.position} bytes", found=f"{self.pending} bytes")

    # -- readers ------------------------------------------------------------------
    def _read_handshake(self) -> None:
        pos = self._pos
        seed = self.layout == "3.0"
        if not seed and self._eof and self.layout == "auto" and self.pending == MULTIFD_INIT_SIZE_SEED:
            seed = True  # the channel ended right after the seed's packed form
        size = MULTIFD_INIT_SIZE_SEED if seed else MULTIFD_INIT_SIZE
        self._need(size)
        ev = _parse_handshake_at(self._mv, pos, self._base + pos, size)
        self._pos = pos + size
        self._state = _State.SEED_DONE if seed else _State.PACKET
        self._emit(ev)

    def _read_seed_done(self) -> None:
        if self.pending:
            raise self._err("data after a seed-era multifd handshake (its channels carry no pages)", self._pos,
                            "end of channel", f"byte 0x{self._mv[self._pos]:02x}")
        raise NeedMore(self.position + 1)

    def _read_packet(self) -> None:
        buf, pos = self._mv, self._pos
        self._need(12)
        magic, version, flags = struct.unpack_from(">III", buf, pos)
        if magic != MULTIFD_MAGIC:
            raise self._err("bad multifd packet magic", pos, f"{MULTIFD_MAGIC:#010x}", f"{magic:#010x}")
        if version != MULTIFD_VERSION:
            raise self._err("bad multifd packet version", pos + 4, str(MULTIFD_VERSION), str(version))
        if self._device_state and flags & MULTIFD_FLAG_DEVICE_STATE:
            self._emit(self._parse_device_state(buf, pos, flags))
            return
        self._need(self.header_size)
        self._emit(self._parse_ram(buf, pos))

    _READERS = {_State.HANDSHAKE: _read_handshake, _State.PACKET: _read_packet, _State.SEED_DONE: _read_seed_done}

    def _payload_len(self, pos: int) -> int:
        """Payload bytes after the RAM header at ``pos`` (header already validated)."""
        _, _, flags, _, normal, nps, _ = _HEAD.unpack_from(self._mv, pos)
        if normal == 0:
            return 0  # 7.2: next_packet_size is stale in empty packets
        if flags & self._mask == MULTIFD_FLAG_NOCOMP:
            return normal * self.page_size  # nocomp receivers read the pages, not nps
        return nps

    @staticmethod
    def parse_handshake(data: bytes, offset: int = 0) -> MultifdHandshake:
        """Decode a ``MultiFDInit_t`` (64 bytes, or the seed's 25; raises :class:`StreamError`).

        >>> ev = MultifdChannelDecoder.parse_handshake(encode_handshake(channel_id=1))
        >>> ev.channel_id, ev.uuid == bytes(16), ev.seed_layout
        (1, True, False)
        """
        size = MULTIFD_INIT_SIZE_SEED if len(data) == MULTIFD_INIT_SIZE_SEED else MULTIFD_INIT_SIZE
        if len(data) < size:
            raise TruncatedStream(
                "multifd handshake is short",
                offset=offset,
                section=_SECTION,
                expected=f"{MULTIFD_INIT_SIZE} (or {MULTIFD_INIT_SIZE_SEED}) bytes",
                found=f"{len(data)} bytes",
            )
        return _parse_handshake_at(memoryview(data).cast("B"), 0, offset, size)

    def _parse_device_state(self, buf: memoryview, pos: int, flags: int) -> MultifdDeviceState:
        hsize = MULTIFD_DEVICE_STATE_HEADER_SIZE
        self._need(hsize)
        instance_id, size = _DEV_TAIL.unpack_from(buf, pos + hsize - 8)
        if size > self.max_device_state_size:
            raise self._err(
                "multifd device-state payload too large",
                pos + hsize - 4,
                f"<= {self.max_device_state_size} bytes",
                f"{size} bytes",
            )
        self._need(hsize + size)
        raw_header = bytes(buf[pos : pos + hsize])
        payload = bytes(buf[pos + hsize : pos + hsize + size])
        self._pos = pos + hsize + size
        return MultifdDeviceState(
            offset=self._base + pos,
            flags=flags,
            idstr=_cstr(raw_header[12:268]),
            instance_id=instance_id,
            next_packet_size=size,
            payload_offset=self._base + pos + hsize,
            payload=payload,
            raw_header=raw_header,
        )

    def _parse_ram(self, buf: memoryview, pos: int) -> MultifdPacket:
        _, _, flags, pages_alloc, normal, nps, packet_num = _HEAD.unpack_from(buf, pos)
        zero = _ZERO.unpack_from(buf, pos + 32)[0] if self._zero_pages_field else 0
        if pages_alloc > self.page_count:
            raise self._err(
                "multifd packet pages_alloc exceeds the packet size",
                pos + 12,
                f"<= {self.page_count}",
                str(pages_alloc),
            )
        if normal > pages_alloc:
            raise self._err(
                "multifd packet normal_pages exceeds pages_alloc",
                pos + 16,
                f"<= {pages_alloc}",
                str(normal),
            )
        if zero > pages_alloc - normal:
            raise self._err(
                "multifd packet zero_pages exceeds pages_alloc - normal_pages",
                pos + 32,
                f"<= {pages_alloc - normal}",
                str(zero),
            )
        method: str | None = None
        if normal or zero:
            bits = flags & self._mask
            method = self._method_for(bits, pos)
        plen = self._payload_len(pos)
        if plen > MULTIFD_MAX_PAYLOAD:
            raise self._err(
                "multifd packet next_packet_size too large",
                pos + 20,
                f"<= {MULTIFD_MAX_PAYLOAD}",
                str(plen),
            )
        self._need(self.header_size + plen)
        # Offsets: normal then zero pages; must be page aligned and fit a signed int64.
        used = normal + zero
        # copy (<= 1 KiB): a numpy view would pin the bytearray buffer
        offs = np.frombuffer(bytes(buf[pos + _OFFSETS_OFF : pos + _OFFSETS_OFF + 8 * used]), dtype=">u8")
        if used:
            bad = np.flatnonzero((offs & np.uint64(self.page_size - 1)) | (offs >> np.uint64(63)))
            if bad.size:
                i = int(bad[0])
                raise self._err(
                    "multifd page offset is not page aligned (or beyond 2**63)",
                    pos + _OFFSETS_OFF + 8 * i,
                    f"a multiple of {self.page_size:#x}",
                    f"{int(offs[i]):#x}",
                )
        offsets = offs.astype(np.int64)
        raw_header = bytes(buf[pos : pos + self.header_size])
        ppos = pos + self.header_size
        # keep_pages=False: a view of input that is the caller's (a file's mapping: no heap)
        lean = not self.keep_pages and not self._owned
        payload = buf[ppos : ppos + plen] if lean else bytes(buf[ppos : ppos + plen])
        expected = normal * self.page_size
        if normal and method != "none":
            if self._inflater is None:
                self._inflater = _Inflater(method)  # type: ignore[arg-type]
            data = self._inflater.run(payload, expected, self._base + ppos)
            if not self.keep_pages:
                data = b""  # checked; a ChannelInflater gives the pages again
        else:
            data = payload
        pages = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.page_size)
        self._pos = ppos + plen
        self.packets += 1
        sync = bool(flags & MULTIFD_FLAG_SYNC)
        self.syncs += sync
        return MultifdPacket(
            offset=self._base + pos,
            flags=flags,
            pages_alloc=pages_alloc,
            normal_pages=normal,
            zero_pages=zero,
            next_packet_size=nps,
            packet_num=packet_num,
            ramblock=_cstr(raw_header[_RAMBLOCK_OFF : _RAMBLOCK_OFF + 255]),
            normal_offsets=offsets[:normal],
            zero_offsets=offsets[normal:],
            pages=pages,
            sync=sync,
            payload_offset=self._base + ppos,
            payload_len=plen,
            raw_header=raw_header,
            payload=payload,
        )

    def _method_for(self, bits: int, pos: int) -> str:
        if bits in _UNSUPPORTED_METHODS and self.layout != "7.2":
            raise UnsupportedFeature(
                f"multifd compression {_UNSUPPORTED_METHODS[bits]} is not supported",
                offset=self._base + pos + 8,
                section=_SECTION,
                found=f"{bits:#x}",
            )
        name = next((n for n, flag in _METHOD_FLAGS.items() if flag == bits), None)
        if name is None:
            raise self._err("unknown multifd compression flags", pos + 8, "0x0, 0x2 or 0x4", f"{bits:#x}")
        if self.compression is None:
            self.compression = name
        elif name != self.compression:
            raise self._err(
                "multifd packet compression differs from the channel's",
                pos + 8,
                f"{_METHOD_FLAGS[self.compression]:#x} ({self.compression})",
                f"{bits:#x} ({name})",
            )
        return name


def _parse_handshake_at(buf: memoryview, pos: int, offset: int, size: int) -> MultifdHandshake:
    magic, version, uuid, channel_id = _INIT.unpack_from(buf, pos)
    if magic != MULTIFD_MAGIC:
        raise StreamError("bad multifd handshake magic", offset=offset, section=_SECTION,
                          expected=f"{MULTIFD_MAGIC:#010x}", found=f"{magic:#010x}")
    if version != MULTIFD_VERSION:
        raise StreamError("bad multifd handshake version", offset=offset + 4, section=_SECTION,
                          expected=str(MULTIFD_VERSION), found=str(version))
    return MultifdHandshake(magic, version, bytes(uuid), channel_id, offset, bytes(buf[pos : pos + size]))


def decode_channel(
    data: bytes,
    page_size: int = 4096,
    compression: Compression | None = None,
    *,
    layout: Layout = "auto",
) -> list[MultifdEvent]:
    """Decode a whole channel file (handshake + packets) into a list of events.

    Raises on damage; use :class:`MultifdChannelDecoder` to keep the events before it.

    >>> wire = encode_handshake(channel_id=3) + encode_packet(flags=MULTIFD_FLAG_SYNC, packet_num=9)
    >>> [getattr(e, "packet_num", None) for e in decode_channel(wire)]
    [None, 9]
    """
    dec = MultifdChannelDecoder(page_size, compression, layout=layout)
    dec.receive_data(data)
    dec.close()
    return list(dec.events())  # type: ignore[arg-type]


def epochs(events: Iterable[MultifdEvent]) -> Iterator[tuple[int, MultifdPacket]]:
    """Yield ``(epoch, packet)`` for the RAM packets of one channel.

    A packet's epoch is the number of SYNC packets before it on the channel; a SYNC
    packet's own pages belong to the epoch it closes (so it gets the count before it).

    >>> evs = decode_channel(encode_handshake() + encode_packet(flags=1) * 2)
    >>> [e for e, _ in epochs(evs)]
    [0, 1]
    """
    n = 0
    for ev in events:
        if isinstance(ev, MultifdPacket):
            yield n, ev
            n += ev.sync


# --- encoder --------------------------------------------------------------------------


def encode_handshake(
    channel_id: int = 0,
    uuid: bytes = bytes(16),
    *,
    magic: int = MULTIFD_MAGIC,
    version: int = MULTIFD_VERSION,
    reserved: bytes = b"",
    seed: bool = False,
) -> bytes:
    """The 64-byte ``MultiFDInit_t``; ``reserved`` fills bytes 25..63 (zero by default).
    ``seed=True`` gives the seed's packed 25-byte form (QEMU 2.11-3.0).

    >>> encode_handshake(channel_id=1)[:8].hex(), len(encode_handshake()), len(encode_handshake(seed=True))
    ('1122334400000001', 64, 25)
    """
    if len(uuid) != 16:
        raise RamlabError(f"uuid must be 16 bytes, got {len(uuid)}")
    if len(reserved) > (0 if seed else MULTIFD_INIT_SIZE - MULTIFD_INIT_SIZE_SEED):
        raise RamlabError("reserved is at most 39 bytes (none in the seed's form)")
    head = _INIT.pack(magic, version, bytes(uuid), channel_id)
    if seed:
        return head
    return head + bytes(reserved) + bytes(MULTIFD_INIT_SIZE - len(head) - len(reserved))


def encode_packet(
    *,
    flags: int,
    normal_offsets: Sequence[int] | np.ndarray = (),
    zero_offsets: Sequence[int] | np.ndarray = (),
    ramblock: str | bytes = "",
    packet_num: int = 0,
    next_packet_size: int | None = None,
    pages_alloc: int | None = None,
    payload: bytes = b"",
    page_size: int = 4096,
    layout: Layout = "auto",
    stale_offsets: Sequence[int] | np.ndarray = (),
    reserved: bytes = b"",
) -> bytes:
    """One RAM packet: the fixed-size header then ``payload`` (already compressed).

    ``pages_alloc`` defaults to the page count (512 KiB / page_size), ``next_packet_size``
    to ``len(payload)``. ``ramblock`` as bytes is the raw 256-byte field (any residue kept).
    ``stale_offsets`` fill ``offset[]`` after the valid entries, ``reserved`` the bytes from
    32 (7.2) or 40 (>= 9.0) on. Zero pages need a layout other than ``"7.2"``.

    >>> pkt = encode_packet(flags=0x4, normal_offsets=[0x9000], ramblock="pc.ram", payload=b"xy")
    >>> len(pkt), pkt[16:24].hex()
    (1346, '0000000100000002')
    """
    page_count = _page_count(page_size)
    _check_layout(layout)
    n_norm, n_zero = len(normal_offsets), len(zero_offsets)
    if n_zero and layout == "7.2":
        raise RamlabError("zero pages in multifd packets need QEMU >= 9.0 (layout '9.0', '10.0' or 'auto')")
    offs = np.concatenate(
        [
            np.asarray(normal_offsets, dtype=np.uint64).reshape(-1),
            np.asarray(zero_offsets, dtype=np.uint64).reshape(-1),
            np.asarray(stale_offsets, dtype=np.uint64).reshape(-1),
        ]
    )
    if len(offs) > page_count:
        raise RamlabError(f"at most {page_count} offsets fit a packet, got {len(offs)}")
    if pages_alloc is None:
        pages_alloc = page_count
    if next_packet_size is None:
        next_packet_size = len(payload)
    head = _HEAD.pack(
        MULTIFD_MAGIC, MULTIFD_VERSION, flags, pages_alloc, n_norm, next_packet_size, packet_num
    )
    zero_field = _ZERO.pack(n_zero, 0) if layout != "7.2" else b""
    rsv = zero_field + bytes(reserved)
    if len(rsv) > 32:
        raise RamlabError("reserved is too long for the 32 reserved header bytes")
    rsv += bytes(32 - len(rsv))
    if isinstance(ramblock, str):
        name = encode_name(ramblock)
        if len(name) > 255:
            raise RamlabError(f"ramblock name longer than 255 bytes: {ramblock!r}")
        block = name + bytes(256 - len(name))
    else:
        if len(ramblock) != 256:
            raise RamlabError("a raw ramblock field must be 256 bytes")
        block = bytes(ramblock)
    table = offs.astype(">u8").tobytes() + bytes(8 * (page_count - len(offs)))
    return b"".join((head, rsv, block, table, bytes(payload)))


def encode_device_state(
    idstr: str, instance_id: int, payload: bytes, *, flags: int = MULTIFD_FLAG_DEVICE_STATE
) -> bytes:
    """A QEMU >= 10.0 device-state packet (``MultiFDPacketDeviceState_t`` + payload).

    >>> len(encode_device_state("0000:00:05.0/vfio", 0, b"abc"))
    279
    """
    name = encode_name(idstr)
    if len(name) > 256:
        raise RamlabError("idstr longer than 256 bytes")
    return (
        struct.pack(">III", MULTIFD_MAGIC, MULTIFD_VERSION, flags)
        + name
        + bytes(256 - len(name))
        + _DEV_TAIL.pack(instance_id, len(payload))
        + bytes(payload)
    )


class MultifdChannelEncoder:
    """Per-channel encoder: QEMU-like packets from pages, or byte-exact re-encoding.

    :meth:`packet` / :meth:`sync_packet` behave like a 7.2 sender (one persistent header
    buffer, so ``ramblock``, ``offset[]`` tails and ``next_packet_size`` go stale in empty
    packets; one zlib/zstd stream for the channel, flushed at the end of each packet).
    With ``layout`` other than ``"7.2"`` the header is cleared for each packet and SYNC
    packets are header-only (``pages_alloc`` 0), as in QEMU >= 9.0.
    :meth:`encode_event` / :meth:`encode_events` rebuild decoded events byte for byte from
    their fields (stale parts taken from ``raw_header``, payload as it was on the wire).

    >>> enc = MultifdChannelEncoder(compression="zstd")
    >>> wire = enc.packet("pc.ram", [0], np.zeros((1, 4096), np.uint8)) + enc.sync_packet()
    >>> [e.next_packet_size > 0 for e in decode_channel(encode_handshake() + wire)[1:]]
    [True, True]
    """

    def __init__(
        self,
        page_size: int = 4096,
        compression: Compression = "none",
        *,
        layout: Layout = "7.2",
        level: int = 1,
    ) -> None:
        self.page_size = page_size
        self.page_count = _page_count(page_size)
        self.compression = _check_compression(compression) or "none"
        self.layout = _check_layout(layout)
        self.level = level
        self.packet_num = 0
        self._ramblock = ""
        self._offsets = np.zeros(self.page_count, dtype=np.uint64)
        self._nps = 0
        self._zlib = zlib.compressobj(level) if self.compression == "zlib" else None
        self._zstd = (
            zstandard.ZstdCompressor(level=level).compressobj() if self.compression == "zstd" else None
        )

    def handshake(self, channel_id: int = 0, uuid: bytes = bytes(16)) -> bytes:
        """The channel's 64-byte handshake."""
        return encode_handshake(channel_id, uuid)

    def _compress(self, pages: np.ndarray) -> bytes:
        if self.compression == "none":
            return pages.tobytes()
        chunks = []
        if self._zlib is not None:
            for page in pages:
                chunks.append(self._zlib.compress(page.tobytes()))
            chunks.append(self._zlib.flush(zlib.Z_SYNC_FLUSH))
        else:
            assert self._zstd is not None
            for page in pages:
                chunks.append(self._zstd.compress(page.tobytes()))
            chunks.append(self._zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK))
        return b"".join(chunks)

    def packet(
        self,
        ramblock: str,
        offsets: Sequence[int] | np.ndarray,
        pages: np.ndarray,
        *,
        sync: bool = False,
        zero_offsets: Sequence[int] | np.ndarray = (),
        packet_num: int | None = None,
    ) -> bytes:
        """A data packet for ``pages`` (shape ``(n, page_size)``) at ``offsets`` in ``ramblock``."""
        pages = np.asarray(pages, dtype=np.uint8).reshape(-1, self.page_size)
        offs = np.asarray(offsets, dtype=np.uint64).reshape(-1)
        zoffs = np.asarray(zero_offsets, dtype=np.uint64).reshape(-1)
        if len(offs) != len(pages):
            raise RamlabError("one offset per page")
        if len(offs) + len(zoffs) > self.page_count:
            raise RamlabError(f"at most {self.page_count} pages per packet")
        num = self.packet_num if packet_num is None else packet_num
        self.packet_num = num + 1
        flags = MULTIFD_FLAG_SYNC if sync else 0
        payload = b""
        if len(offs) or len(zoffs):
            flags |= _METHOD_FLAGS[self.compression]
        if len(offs):
            payload = self._compress(pages)
        if self.layout == "7.2":
            # Persistent header: only the used offsets and the name are overwritten.
            self._offsets[: len(offs)] = offs
            self._ramblock = ramblock
            self._nps = len(payload)
            return encode_packet(
                flags=flags,
                normal_offsets=offs,
                ramblock=ramblock,
                packet_num=num,
                next_packet_size=self._nps,
                payload=payload,
                page_size=self.page_size,
                layout="7.2",
                stale_offsets=self._offsets[len(offs) :],
            )
        return encode_packet(
            flags=flags,
            normal_offsets=offs,
            zero_offsets=zoffs,
            ramblock=ramblock,
            packet_num=num,
            payload=payload,
            page_size=self.page_size,
            layout=self.layout,
        )

    def sync_packet(self, packet_num: int | None = None) -> bytes:
        """An empty SYNC packet (7.2: stale name, offsets and ``next_packet_size``)."""
        num = self.packet_num if packet_num is None else packet_num
        self.packet_num = num + 1
        if self.layout == "7.2":
            return encode_packet(
                flags=MULTIFD_FLAG_SYNC,
                ramblock=self._ramblock,
                packet_num=num,
                next_packet_size=self._nps,
                page_size=self.page_size,
                layout="7.2",
                stale_offsets=self._offsets,
            )
        return encode_packet(
            flags=MULTIFD_FLAG_SYNC,
            packet_num=num,
            pages_alloc=0,
            page_size=self.page_size,
            layout=self.layout,
        )

    def encode_event(self, event: MultifdEvent) -> bytes:
        """Re-encode one decoded event byte for byte."""
        if isinstance(event, MultifdHandshake):
            return encode_handshake(
                event.channel_id,
                event.uuid,
                magic=event.magic,
                version=event.version,
                reserved=event.raw[MULTIFD_INIT_SIZE_SEED:],
                seed=event.seed_layout,
            )
        if isinstance(event, MultifdDeviceState):
            out = encode_device_state(event.idstr, event.instance_id, event.payload, flags=event.flags)
            if event.raw_header and out[: len(event.raw_header)] != event.raw_header:
                out = event.raw_header + event.payload  # idstr residue after the NUL
            return out
        raw = event.raw_header
        # With no zero pages, bytes 32..63 are copied verbatim (7.2 view); otherwise the
        # >= 9.0 view writes zero_pages and copies the reserved bytes around it.
        layout: Layout = "auto" if event.zero_pages else "7.2"
        name_field: str | bytes = event.ramblock
        if raw:
            name = encode_name(event.ramblock)
            if raw[_RAMBLOCK_OFF : _RAMBLOCK_OFF + 256] != name + bytes(256 - len(name)):
                name_field = raw[_RAMBLOCK_OFF : _RAMBLOCK_OFF + 256]
        out = encode_packet(
            flags=event.flags,
            normal_offsets=event.normal_offsets,
            zero_offsets=event.zero_offsets,
            ramblock=name_field,
            packet_num=event.packet_num,
            next_packet_size=event.next_packet_size,
            pages_alloc=event.pages_alloc,
            payload=event.payload,
            page_size=self.page_size,
            layout=layout,
            stale_offsets=event.stale_offsets if raw else (),
            reserved=raw[32 if layout == "7.2" else 40 : 64] if raw else b"",
        )
        if layout != "7.2" and raw and raw[36:40] != out[36:40]:
            out = out[:36] + raw[36:40] + out[40:]  # the reserved u32 beside zero_pages
        return out

    def encode_events(self, events: Iterable[MultifdEvent]) -> bytes:
        """Re-encode a decoded channel (handshake and packets) byte for byte."""
        return b"".join(self.encode_event(ev) for ev in events)
