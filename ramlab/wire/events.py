"""The events of the savevm stream decoder: small frozen records, one per wire item.

Every event carries ``offset``, the absolute byte offset in the stream where its bytes
start. A decoded stream is a flat sequence of events; the encoder turns the same sequence
back into the same bytes. Runs of same-kind RAM page records are grouped into one
:class:`RamPages` event holding numpy arrays, so a 500 MB stream is a few thousand events.

    >>> ev = RamEos(offset=88)
    >>> ev
    RamEos(offset=88)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ramlab.constants import MIG_CMD_NAMES, SECTION_TYPE_NAMES


@dataclass(frozen=True, slots=True)
class FileHeader:
    """``QEVM`` magic and the file version (always 3 for streams QEMU accepts)."""

    version: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Configuration:
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


@dataclass(frozen=True, slots=True)
class SectionHeader:
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


@dataclass(frozen=True, slots=True)
class SectionFooter:
    """``0x7e`` + section id: closes every section body when footers are on."""

    section_id: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The raw vmstate body of a device section (parse it with :mod:`ramlab.wire.vmstate`)."""

    section_id: int
    idstr: str
    instance_id: int
    version_id: int
    body: bytes
    offset: int = 0


@dataclass(frozen=True, slots=True)
class OpaqueSection:
    """The body of an iterative section that is not RAM (block migration, dirty bitmaps...),
    delimited by its footer and kept as bytes."""

    section_id: int
    idstr: str
    body: bytes
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Command:
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


@dataclass(frozen=True, slots=True)
class PackagedEnd:
    """End of the inner stream of a PACKAGED command (no bytes of its own)."""

    offset: int = 0


@dataclass(frozen=True, slots=True)
class EndOfFile:
    """``QEMU_VM_EOF`` (0x00)."""

    offset: int = 0


@dataclass(frozen=True, slots=True)
class VmDescription:
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


@dataclass(frozen=True, slots=True)
class RamMemSize:
    """RAM_SAVE_FLAG_MEM_SIZE: the total and the list of blocks (setup section)."""

    total: int
    blocks: tuple[RamBlockEntry, ...]
    offset: int = 0
    raw_flags: int = 0x04


@dataclass(frozen=True, slots=True, eq=False)
class RamPages:
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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RamPages):
            return NotImplemented
        return (
            self.kind == other.kind
            and self.block == other.block
            and self.named == other.named
            and self.offset == other.offset
            and self.first_flags == other.first_flags
            and np.array_equal(self.page_offsets, other.page_offsets)
            and _opt_equal(self.data, other.data)
            and _opt_equal(self.fill, other.fill)
        )


def _opt_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(a, b)


@dataclass(frozen=True, slots=True)
class RamXbzrle:
    """An XBZRLE record: ``ENCODING_FLAG_XBZRLE``, be16 length and the delta bytes."""

    block: str
    named: bool
    page_offset: int
    data: bytes
    offset: int = 0
    xh_flags: int = 1


@dataclass(frozen=True, slots=True)
class RamCompressed:
    """A COMPRESS_PAGE record: be32 length and one complete zlib stream."""

    block: str
    named: bool
    page_offset: int
    data: bytes
    offset: int = 0


@dataclass(frozen=True, slots=True)
class RamEos:
    """RAM_SAVE_FLAG_EOS: end of a RAM section body."""

    offset: int = 0


@dataclass(frozen=True, slots=True)
class RamMultifdFlush:
    """RAM_SAVE_FLAG_MULTIFD_FLUSH (QEMU >= 8.1): all multifd channels sync here."""

    offset: int = 0


@dataclass(frozen=True, slots=True)
class MappedRamArea:
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


Event = (
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
