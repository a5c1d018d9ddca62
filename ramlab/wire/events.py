"""The events of every ramlab decoder: small frozen records, one per wire item.

Three byte streams, one family of events (:class:`Event`):

* the savevm stream (:class:`~ramlab.wire.decoder.StreamDecoder`): :class:`FileHeader` ...
  :class:`MappedRamArea` (:data:`StreamEvent`);
* a multifd channel (:class:`~ramlab.wire.multifd.MultifdChannelDecoder`): :class:`MultifdHandshake`,
  :class:`MultifdPacket`, :class:`MultifdDeviceState` (:data:`MultifdEvent`);
* the postcopy return path (:class:`~ramlab.wire.return_path.ReturnPathDecoder`): :class:`Shut`,
  :class:`Pong`, :class:`ReqPages`, :class:`RecvBitmap`, :class:`ResumeAck`, :class:`SwitchoverAck`
  (:data:`ReturnPathEvent`).

One policy for all of them: frozen dataclasses with slots; ``offset`` is the absolute byte offset
in its stream where the item's bytes start and **takes part in** ``==`` (an event is a located wire
item: the same record at another place is another event); numpy fields compare by content.
Events are not hashable (they may hold arrays). A decoded stream is a flat sequence of events; the
encoders turn the same sequence back into the same bytes. Runs of same-kind RAM page records are
grouped into one :class:`RamPages` event holding numpy arrays, so a 500 MB stream is a few thousand
events.

    >>> RamEos(offset=88)
    RamEos(offset=88, word=16)
    >>> Pong(1, offset=0) == Pong(1, offset=99)
    False
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from ramlab.constants import (
    MIG_CMD_NAMES,
    MULTIFD_FLAG_COMPRESSION_MASK_90,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    SECTION_TYPE_NAMES,
)

#: offset of ``offset[]`` in a multifd RAM packet header (after 64 bytes of fields and the 256-byte name)
MULTIFD_OFFSETS_AT = 320


class Event:
    """Base of every decoded item: equality field by field (arrays by content), no hashing."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self) if f.compare)

    __hash__ = None  # type: ignore[assignment]


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


def event(cls):  # type: ignore[no-untyped-def]
    """Class decorator of every event: a frozen, slotted dataclass compared by :class:`Event`."""
    return dataclass(frozen=True, slots=True, eq=False)(cls)


@event
class FileHeader(Event):
    """``QEVM`` magic and the file version (always 3 for streams QEMU accepts)."""

    version: int
    offset: int = 0


@event
class Configuration(Event):
    """The configuration section: machine type and its optional subsections.

    ``body`` is the raw vmstate body after the 0x07 byte (kept for byte-exact re-encoding);
    ``subsections`` maps subsection names to their raw payloads.
    """

    machine_type: str
    body: bytes
    capabilities: tuple[str, ...] = ()
    target_page_bits: int | None = None
    subsections: tuple[tuple[str, int, bytes], ...] = ()
    offset: int = 0


@event
class SectionHeader(Event):
    """START / PART / END / FULL header. ``idstr``, ``instance_id`` and ``version_id``
    are sent with START and FULL only; PART and END carry just the section id, and the
    decoder fills ``idstr`` from the START that introduced the id (``named`` says whether
    it came from this header)."""

    section_type: int
    section_id: int
    idstr: str
    instance_id: int | None = None
    version_id: int | None = None
    offset: int = 0

    @property
    def type_name(self) -> str:
        return SECTION_TYPE_NAMES.get(self.section_type, str(self.section_type))

    @property
    def named(self) -> bool:
        return self.instance_id is not None


@event
class SectionFooter(Event):
    """``0x7e`` + section id: closes every section body when footers are on."""

    section_id: int
    offset: int = 0


@event
class DeviceState(Event):
    """The raw vmstate body of a device section (parse it with :mod:`ramlab.wire.vmstate`)."""

    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    body: bytes
    offset: int = 0


@event
class OpaqueSection(Event):
    """The body of an iterative section that is not RAM (block migration, dirty bitmaps...),
    delimited by its footer and kept as bytes."""

    section_id: int
    idstr: str
    body: bytes
    offset: int = 0


@event
class Command(Event):
    """A ``QEMU_VM_COMMAND``: sub-command number and raw payload (decoded views below)."""

    cmd: int
    payload: bytes
    offset: int = 0

    @property
    def name(self) -> str:
        return MIG_CMD_NAMES.get(self.cmd, f"CMD_{self.cmd}")

    @property
    def value(self) -> int | None:
        """The be32 value of PING and the blob length of PACKAGED."""
        if len(self.payload) == 4:
            return int.from_bytes(self.payload, "big")
        return None


@event
class PackagedEnd(Event):
    """End of the inner stream of a PACKAGED command (no bytes of its own)."""

    offset: int = 0


@event
class EndOfFile(Event):
    """``QEMU_VM_EOF`` (0x00)."""

    offset: int = 0


@event
class VmDescription(Event):
    """The JSON trailer after EOF (``0x06`` + be32 length + JSON)."""

    json_bytes: bytes
    offset: int = 0


@dataclass(frozen=True, slots=True)
class RamBlockEntry:
    """One entry of the MEM_SIZE block list.

    ``page_size`` is present only in postcopy streams for blocks whose page size differs
    from the host's; ``mr_addr`` only with x-ignore-shared; ``mapped_ram`` (version,
    page_size, bitmap_offset, pages_offset) only with mapped-ram (QEMU >= 9.0).
    """

    name: str
    used_length: int
    page_size: int | None = None
    mr_addr: int | None = None
    mapped_ram: tuple[int, int, int, int] | None = None


@event
class RamMemSize(Event):
    """RAM_SAVE_FLAG_MEM_SIZE: the total and the list of blocks (setup section)."""

    total: int
    blocks: tuple[RamBlockEntry, ...]
    offset: int = 0
    raw_flags: int = RAM_SAVE_FLAG_MEM_SIZE  # as sent: QEMU ignores a CONTINUE bit here


@event
class RamPages(Event):
    """A run of consecutive ZERO or PAGE records of one block.

    ``kind`` is ``RAM_SAVE_FLAG_ZERO`` or ``RAM_SAVE_FLAG_PAGE``. The first record carries the
    block name when ``named`` is true; all the others have CONTINUE. ``page_offsets`` are byte
    offsets inside the block; ``data`` is ``[n, page_size]`` uint8 for PAGE records and
    ``fill`` the ``[n]`` fill bytes of ZERO records. Arrays are read-only views when possible.
    """

    kind: int
    block: str
    named: bool
    page_offsets: np.ndarray
    data: np.ndarray | None = None
    fill: np.ndarray | None = None
    offset: int = 0
    first_flags: int = field(default=0)

    def __len__(self) -> int:
        return len(self.page_offsets)


@event
class RamXbzrle(Event):
    """An XBZRLE record: ``ENCODING_FLAG_XBZRLE``, be16 length and the delta bytes."""

    block: str
    named: bool
    page_offset: int
    data: bytes
    offset: int = 0
    xh_flags: int = 1


@event
class RamCompressed(Event):
    """A COMPRESS_PAGE record: be32 length and one complete zlib stream."""

    block: str
    named: bool
    page_offset: int
    data: bytes
    offset: int = 0


@event
class RamEos(Event):
    """RAM_SAVE_FLAG_EOS: end of a RAM section body. ``word`` is the header word as sent (QEMU
    ignores its address bits and CONTINUE; kept so the stream re-encodes byte for byte)."""

    offset: int = 0
    word: int = RAM_SAVE_FLAG_EOS


@event
class RamMultifdFlush(Event):
    """RAM_SAVE_FLAG_MULTIFD_FLUSH (QEMU >= 8.1): all multifd channels sync here. ``word`` as in
    :class:`RamEos`."""

    offset: int = 0
    word: int = RAM_SAVE_FLAG_MULTIFD_FLUSH


@event
class MappedRamArea(Event):
    """mapped-ram (QEMU >= 9.0): a block's bitmap and page area at fixed file offsets.

    After each MEM_SIZE entry's mapped-ram header (``be32 version, be64 page_size, be64
    bitmap_offset, be64 pages_offset``) the stream jumps to ``pages_offset + used_length``; the
    bytes in between (``offset`` .. :attr:`end`) hold the bitmap at ``bitmap_offset`` and page *i*
    of the block at ``pages_offset + i * page_size``. The decoder emits these events right after
    the :class:`RamMemSize` of the list, one per block with an area, in list order.

    ``bitmap`` is the little-endian bitmap of pages present (``ceil(n_pages / 8)`` bytes: QEMU
    stores it rounded up to whole 64-bit words; the extra bytes stay in ``region``). ``offset`` is
    the absolute offset of the first byte after the header. ``region`` is a zero-copy view of the
    skipped bytes (``offset`` .. ``end``) when the decoder was fed them in one buffer, else
    ``None`` (the decoder keeps only the bitmap: bounded memory); the encoder needs it, or the
    original stream, to rebuild the bytes.
    """

    block: str
    page_size: int
    bitmap_offset: int
    pages_offset: int
    bitmap: bytes
    used_length: int
    offset: int = 0
    region: bytes | memoryview | None = field(default=None, compare=False, repr=False)

    @property
    def end(self) -> int:
        """Absolute offset where the stream continues (``pages_offset + used_length``)."""
        return self.pages_offset + self.used_length

    @property
    def n_pages(self) -> int:
        return self.used_length // self.page_size if self.page_size else 0

    def present(self) -> np.ndarray:
        """Bool array ``[n_pages]``: page *i* is stored in the area (its bit is set)."""
        bits = np.unpackbits(np.frombuffer(self.bitmap, dtype=np.uint8), bitorder="little")
        out = np.zeros(self.n_pages, dtype=bool)
        k = min(len(bits), self.n_pages)
        out[:k] = bits[:k].astype(bool)
        return out


StreamEvent = (
    FileHeader
    | Configuration
    | SectionHeader
    | SectionFooter
    | DeviceState
    | OpaqueSection
    | Command
    | PackagedEnd
    | EndOfFile
    | VmDescription
    | RamMemSize
    | RamPages
    | RamXbzrle
    | RamCompressed
    | RamEos
    | RamMultifdFlush
    | MappedRamArea
)

RAM_PAGE_EVENTS = (RamPages, RamXbzrle, RamCompressed)


# ----------------------------------------------------------------------------- multifd channels


@event
class MultifdHandshake(Event):
    """``MultiFDInit_t``: the first bytes of a channel (64; 25 in the seed's packed form).

    ``channel_id`` (``id`` in QEMU) names the channel; ``raw`` keeps the bytes as sent.
    """

    magic: int
    version: int
    uuid: bytes
    channel_id: int
    offset: int
    raw: bytes = field(default=b"", repr=False)

    @property
    def seed_layout(self) -> bool:
        """The seed's (QEMU 2.11-3.0) packed 25-byte form, whose channels carry no pages."""
        return len(self.raw) == 25


@event
class MultifdPacket(Event):
    """One RAM packet (``MultiFDPacket_t`` + payload).

    ``normal_offsets`` / ``zero_offsets`` are the byte offsets inside ``ramblock`` of the
    pages carried (``offset[]`` entries past ``normal_pages + zero_pages`` are stale and
    kept only in ``raw_header``, see :attr:`stale_offsets`). ``pages`` holds the
    decompressed normal pages, shape ``(normal_pages, page_size)`` (empty, shape
    ``(0, page_size)``, for a compressed packet decoded with ``keep_pages=False``: what
    :func:`ramlab.open` keeps; :class:`~ramlab.wire.multifd.ChannelInflater` gives them).
    ``payload`` is ``bytes``, or with ``keep_pages=False`` a read-only ``memoryview`` of the input when the
    decoder was given it whole. ``ramblock`` is what
    the header says even when no page is carried (7.2 leaves the previous packet's name
    there); ``next_packet_size`` too is the raw, possibly stale, header value, while
    ``payload_len`` is the number of payload bytes that really followed (``payload``).
    ``sync`` is ``MULTIFD_FLAG_SYNC``; its pages belong to the epoch the sync closes.
    """

    offset: int
    flags: int
    pages_alloc: int
    normal_pages: int
    zero_pages: int
    next_packet_size: int
    packet_num: int
    ramblock: str
    normal_offsets: np.ndarray
    zero_offsets: np.ndarray
    pages: np.ndarray
    sync: bool
    payload_offset: int
    payload_len: int
    raw_header: bytes = field(default=b"", repr=False)
    payload: bytes | memoryview = field(default=b"", repr=False)

    @property
    def stale_offsets(self) -> np.ndarray:
        """``offset[]`` entries after the valid ones (left over from earlier packets in 7.2)."""
        start = MULTIFD_OFFSETS_AT + 8 * (self.normal_pages + self.zero_pages)
        return np.frombuffer(self.raw_header, dtype=">u8", offset=min(start, len(self.raw_header)))

    @property
    def compression_flag(self) -> int:
        """The compression bits of ``flags`` (0 none, 0x2 zlib, 0x4 zstd ...)."""
        return self.flags & MULTIFD_FLAG_COMPRESSION_MASK_90

    @property
    def end(self) -> int:
        """Absolute offset of the first byte after this packet."""
        return self.payload_offset + self.payload_len


@event
class MultifdDeviceState(Event):
    """A QEMU >= 10.0 device-state packet (flag 0x40, ``MultiFDPacketDeviceState_t``).

    The payload is opaque device data (VFIO today) for ``idstr`` / ``instance_id``; it is
    kept as bytes, not interpreted.
    """

    offset: int
    flags: int
    idstr: str
    instance_id: int
    next_packet_size: int
    payload_offset: int
    payload: bytes = field(repr=False)
    raw_header: bytes = field(default=b"", repr=False)


MultifdEvent = MultifdHandshake | MultifdPacket | MultifdDeviceState


# ----------------------------------------------------------------------------- postcopy return path


@event
class Shut(Event):
    """MIG_RP_MSG_SHUT: the destination is done (``status`` 0) or failed (non-zero)."""

    status: int
    offset: int = 0


@event
class Pong(Event):
    """MIG_RP_MSG_PONG: echo of a PING value (may come back out of order)."""

    value: int
    offset: int = 0


@event
class ReqPages(Event):
    """A page request: ``length`` bytes at byte ``start`` of ``block``.

    ``named`` is True for MIG_RP_MSG_REQ_PAGES_ID (the name is on the wire), False for
    MIG_RP_MSG_REQ_PAGES (``block`` is the previous request's block)."""

    block: str
    start: int
    length: int
    named: bool
    offset: int = 0


@event
class RecvBitmap(Event):
    """MIG_RP_MSG_RECV_BITMAP plus its blob: ``bitmap`` is the ``size`` bitmap bytes
    (little-endian bit order) between the be64 size and the end mark."""

    block: str
    bitmap: bytes
    offset: int = 0


@event
class ResumeAck(Event):
    """MIG_RP_MSG_RESUME_ACK (value 1 from QEMU)."""

    value: int
    offset: int = 0


@event
class SwitchoverAck(Event):
    """MIG_RP_MSG_SWITCHOVER_ACK (QEMU >= 8.1; a 7.2 source rejects type 7)."""

    offset: int = 0


ReturnPathEvent = Shut | Pong | ReqPages | RecvBitmap | ResumeAck | SwitchoverAck
