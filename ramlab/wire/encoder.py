"""Byte-exact encoder of the savevm stream: the inverse of :class:`~ramlab.wire.decoder.StreamDecoder`.

``encode_events(decode(x))`` gives back ``x`` byte for byte for every stream QEMU writes. The
encoder keeps the same state as QEMU's sender where the wire depends on it: the section id
of the open section (for its footer) and the end of a PACKAGED blob.

    >>> from ramlab.wire import events as ev
    >>> b"".join(encode_events([ev.FileHeader(3), ev.EndOfFile()])).hex()
    '5145564d0000000300'

Record helpers (:func:`zero_record`, :func:`page_record`, :func:`xbzrle_record`, ...) build
single RAM records for hand-made streams and the simulator.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import numpy as np

from ramlab.constants import (
    ENCODING_FLAG_XBZRLE,
    MIG_CMD_PACKAGED,
    QEMU_VM_COMMAND,
    QEMU_VM_CONFIGURATION,
    QEMU_VM_EOF,
    QEMU_VM_FILE_MAGIC,
    QEMU_VM_SECTION_FOOTER,
    QEMU_VM_SECTION_FULL,
    QEMU_VM_SECTION_START,
    QEMU_VM_VMDESCRIPTION,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
    TARGET_PAGE_SIZE,
)
from ramlab.errors import RamlabError
from ramlab.wire import events as ev
from ramlab.wire.commands import encode_packaged_payload
from ramlab.wire.fields import cstr8

_BE64 = struct.Struct(">Q")


def _header(page_offset: int, flags: int, block: str, named: bool) -> bytes:
    word = _BE64.pack(page_offset | flags | (0 if named else RAM_SAVE_FLAG_CONTINUE))
    return word + cstr8(block) if named else word


def zero_record(block: str, page_offset: int, named: bool, fill: int = 0) -> bytes:
    """A ZERO record (``RAM_SAVE_FLAG_ZERO`` + fill byte)."""
    return _header(page_offset, RAM_SAVE_FLAG_ZERO, block, named) + bytes([fill])


def page_record(block: str, page_offset: int, named: bool, data: bytes | np.ndarray) -> bytes:
    """A PAGE record (``RAM_SAVE_FLAG_PAGE`` + the raw page)."""
    return _header(page_offset, RAM_SAVE_FLAG_PAGE, block, named) + bytes(data)


def xbzrle_record(block: str, page_offset: int, named: bool, encoded: bytes) -> bytes:
    """An XBZRLE record: ``ENCODING_FLAG_XBZRLE``, be16 length, the delta."""
    return (_header(page_offset, RAM_SAVE_FLAG_XBZRLE, block, named)
            + struct.pack(">BH", ENCODING_FLAG_XBZRLE, len(encoded)) + encoded)


def compressed_record(block: str, page_offset: int, named: bool, zdata: bytes) -> bytes:
    """A COMPRESS_PAGE record: be32 length, one zlib stream."""
    return _header(page_offset, RAM_SAVE_FLAG_COMPRESS_PAGE, block, named) + struct.pack(">I", len(zdata)) + zdata


def mem_size_record(
    blocks: Iterable[ev.RamBlockEntry],
    total: int | None = None,
    areas: Iterable[ev.MappedRamArea] | None = None,
    source: bytes | memoryview | None = None,
    flags: int = RAM_SAVE_FLAG_MEM_SIZE,
) -> bytes:
    """The MEM_SIZE record: total, then per block name, used length and optional fields.

    With mapped-ram, each entry's header is followed by its area (padding, bitmap, pages) up to
    ``pages_offset + used_length``: pass the :class:`~ramlab.wire.events.MappedRamArea` events
    that the decoder emitted after the list (their ``region``, or ``source`` = the original stream).
    """
    return b"".join(_mem_size_chunks(blocks, total, list(areas or ()), source, flags))


AREA_CHUNK = 16 << 20  # bytes of a mapped-ram area yielded at a time (bounded memory)


def _has_area(b: ev.RamBlockEntry) -> bool:
    return b.mapped_ram is not None and (b.mapped_ram[2], b.mapped_ram[3]) != (0, 0)


def _mem_size_chunks(
    blocks: Iterable[ev.RamBlockEntry],
    total: int | None,
    areas: list[ev.MappedRamArea],
    source: bytes | memoryview | None,
    flags: int = RAM_SAVE_FLAG_MEM_SIZE,
) -> Iterator[bytes]:
    blocks = list(blocks)
    if total is None:
        total = sum(b.used_length for b in blocks)
    out = [_BE64.pack(total | flags)]
    pending = iter(areas)
    for b in blocks:
        out.append(cstr8(b.name) + _BE64.pack(b.used_length))
        if b.page_size is not None:
            out.append(_BE64.pack(b.page_size))
        if b.mr_addr is not None:
            out.append(_BE64.pack(b.mr_addr))
        if b.mapped_ram is not None:
            version, psize, bitmap_off, pages_off = b.mapped_ram
            out.append(struct.pack(">IQQQ", version, psize, bitmap_off, pages_off))
        if _has_area(b):
            area = next(pending, None)
            if area is None or area.block != b.name:
                raise RamlabError(f"mapped-ram block {b.name!r} needs its MappedRamArea event to be encoded")
            yield b"".join(out)
            out = []
            yield from _area_chunks(area, source)
    if out:
        yield b"".join(out)


def _area_chunks(area: ev.MappedRamArea, source: bytes | memoryview | None) -> Iterator[bytes]:
    """The bytes of a mapped-ram area (padding, bitmap, pages) from its region view or the source."""
    size = area.end - area.offset
    if area.region is not None:
        region = memoryview(area.region).cast("B") if not isinstance(area.region, memoryview) else area.region
    elif source is not None:
        region = memoryview(source)[area.offset : area.end]
    else:
        raise RamlabError(
            f"mapped-ram area of {area.block!r} (bytes {area.offset}..{area.end}) was not kept by the decoder "
            "(it was fed in chunks): pass the original stream as source="
        )
    if len(region) != size:
        raise RamlabError(f"mapped-ram area of {area.block!r}: {len(region)} bytes, expected {size}")
    for i in range(0, size, AREA_CHUNK):
        yield bytes(region[i : i + AREA_CHUNK])


def _pages_bytes(e: ev.RamPages, page_size: int) -> bytes:
    """A run of ZERO/PAGE records, assembled with numpy (one copy of the page data)."""
    n = len(e)
    if e.named:
        if n != 1:
            raise RamlabError("a named RamPages event must hold exactly one record")
        flags = e.first_flags or e.kind
        word = _BE64.pack(int(e.page_offsets[0]) | flags) + cstr8(e.block)
        payload = bytes(e.fill[:1]) if e.fill is not None else bytes(e.data[0])  # type: ignore[index]
        return word + payload
    payload = 1 if e.kind == RAM_SAVE_FLAG_ZERO else page_size
    stride = 8 + payload
    out = np.empty((n, stride), dtype=np.uint8)
    words = (np.asarray(e.page_offsets, dtype=np.uint64) | np.uint64(e.kind | RAM_SAVE_FLAG_CONTINUE))
    out[:, :8] = words.astype(">u8").view(np.uint8).reshape(n, 8)
    if e.kind == RAM_SAVE_FLAG_ZERO:
        out[:, 8] = e.fill
    else:
        out[:, 8:] = e.data
    return out.tobytes()


def encode_event(e: ev.Event, page_size: int = TARGET_PAGE_SIZE, section_id: int | None = None) -> bytes:
    """The bytes of one event (footers need the open section's id: ``section_id``)."""
    if isinstance(e, ev.RamPages):
        return _pages_bytes(e, page_size)
    if isinstance(e, ev.RamXbzrle):
        word = _BE64.pack(e.page_offset | RAM_SAVE_FLAG_XBZRLE | (0 if e.named else RAM_SAVE_FLAG_CONTINUE))
        return (word + (cstr8(e.block) if e.named else b"") + struct.pack(">BH", e.xh_flags, len(e.data)) + e.data)
    if isinstance(e, ev.RamCompressed):
        return compressed_record(e.block, e.page_offset, e.named, e.data)
    if isinstance(e, ev.RamEos | ev.RamMultifdFlush):
        return _BE64.pack(e.word)
    if isinstance(e, ev.RamMemSize):
        if any(_has_area(b) for b in e.blocks):
            raise RamlabError("a mapped-ram MEM_SIZE list is encoded with its MappedRamArea events: use encode_events")
        return mem_size_record(e.blocks, e.total, flags=e.raw_flags)
    if isinstance(e, ev.MappedRamArea):
        raise RamlabError("MappedRamArea events are encoded inside their MEM_SIZE list: use encode_events")
    if isinstance(e, ev.SectionHeader):
        if e.section_type in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            return (struct.pack(">BI", e.section_type, e.section_id) + cstr8(e.idstr)
                    + struct.pack(">II", e.instance_id or 0, e.version_id or 0))
        return struct.pack(">BI", e.section_type, e.section_id)
    if isinstance(e, ev.SectionFooter):
        return struct.pack(">BI", QEMU_VM_SECTION_FOOTER, e.section_id)
    if isinstance(e, ev.DeviceState | ev.OpaqueSection):
        return bytes(e.body)
    if isinstance(e, ev.Command):
        return struct.pack(">BHH", QEMU_VM_COMMAND, e.cmd, len(e.payload)) + e.payload
    if isinstance(e, ev.PackagedEnd):
        return b""
    if isinstance(e, ev.EndOfFile):
        return bytes([QEMU_VM_EOF])
    if isinstance(e, ev.VmDescription):
        return struct.pack(">BI", QEMU_VM_VMDESCRIPTION, len(e.json_bytes)) + e.json_bytes
    if isinstance(e, ev.FileHeader):
        return struct.pack(">II", QEMU_VM_FILE_MAGIC, e.version)
    if isinstance(e, ev.Configuration):
        return bytes([QEMU_VM_CONFIGURATION]) + e.body
    raise RamlabError(f"cannot encode {type(e).__name__}")


def encode_events(
    events: Iterable[ev.Event],
    page_size: int = TARGET_PAGE_SIZE,
    source: bytes | memoryview | None = None,
) -> Iterator[bytes]:
    """Encode a sequence of events, yielding the bytes chunk by chunk (streaming, bounded memory).

    A PACKAGED command's blob length is taken from the command as given: to build a package
    use :func:`packaged` which computes it. A mapped-ram MEM_SIZE list is written together with
    the :class:`~ramlab.wire.events.MappedRamArea` events that follow it; ``source`` (the original
    stream) supplies areas whose ``region`` the decoder did not keep.
    """
    pending: ev.RamMemSize | None = None
    want = 0
    areas: list[ev.MappedRamArea] = []
    for e in events:
        if pending is not None:
            if not isinstance(e, ev.MappedRamArea):
                raise RamlabError(
                    f"mapped-ram MEM_SIZE list needs {want} MappedRamArea events, got {len(areas)} "
                    f"before {type(e).__name__}"
                )
            areas.append(e)
            if len(areas) == want:
                yield from _mem_size_chunks(pending.blocks, pending.total, areas, source, pending.raw_flags)
                pending, areas = None, []
            continue
        if isinstance(e, ev.RamMemSize):
            want = sum(1 for b in e.blocks if _has_area(b))
            if want:
                pending = e
                continue
        yield encode_event(e, page_size)
    if pending is not None:
        raise RamlabError(f"mapped-ram MEM_SIZE list needs {want} MappedRamArea events, got {len(areas)}")


def encode_stream(events: Iterable[ev.Event], page_size: int = TARGET_PAGE_SIZE) -> bytes:
    """``b"".join(encode_events(events))``."""
    return b"".join(encode_events(events, page_size))


def packaged(inner: list[ev.Event], page_size: int = TARGET_PAGE_SIZE) -> list[ev.Event]:
    """Wrap inner items into a PACKAGED command whose blob length is computed.

    >>> from ramlab.wire import events as ev
    >>> out = packaged([ev.Command(4, b"")])
    >>> out[0].value, type(out[-1]).__name__
    (5, 'PackagedEnd')
    """
    blob = encode_stream(inner, page_size)
    return [ev.Command(MIG_CMD_PACKAGED, encode_packaged_payload(len(blob))), *inner, ev.PackagedEnd()]
