"""Field-by-field layout of one decoded wire item, for hex views: which bytes are the header
word, the block name, the length, the payload... (pure: bytes in, :class:`Field` list out).

The rows come from ``Migration.records_table()`` (kind, offset, length, detail); the bytes from
the stream. The layouts follow the wire format the decoder reads (``ramlab.wire.decoder``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ramlab.constants import (
    MIG_CMD_NAMES,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_FULL,
    RAM_SAVE_FLAG_HOOK,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
    SECTION_TYPE_NAMES,
    TARGET_PAGE_SIZE,
)
from ramlab.wire.fields import decode_name

__all__ = ["Field", "field_layout", "decode_ram_flags"]

_RAM_FLAG_NAMES: tuple[tuple[int, str], ...] = (
    (RAM_SAVE_FLAG_FULL, "FULL"),
    (RAM_SAVE_FLAG_ZERO, "ZERO"),
    (RAM_SAVE_FLAG_MEM_SIZE, "MEM_SIZE"),
    (RAM_SAVE_FLAG_PAGE, "PAGE"),
    (RAM_SAVE_FLAG_EOS, "EOS"),
    (RAM_SAVE_FLAG_CONTINUE, "CONTINUE"),
    (RAM_SAVE_FLAG_XBZRLE, "XBZRLE"),
    (RAM_SAVE_FLAG_HOOK, "HOOK"),
    (RAM_SAVE_FLAG_COMPRESS_PAGE, "COMPRESS_PAGE"),
    (RAM_SAVE_FLAG_MULTIFD_FLUSH, "MULTIFD_FLUSH"),
)


@dataclass(frozen=True)
class Field:
    """One wire field of a record: absolute stream ``offset``, ``length`` in bytes, ``role``
    (colour in the hex view: marker, header, name, length, value, data), the decoded
    ``value`` as text and what it means."""

    name: str
    offset: int
    length: int
    role: str
    value: str = ""
    meaning: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.length


def decode_ram_flags(flags: int) -> list[str]:
    """Names of the ``RAM_SAVE_FLAG_*`` bits set in ``flags`` (unknown bits as hex).

    >>> decode_ram_flags(0x08), decode_ram_flags(0x1010)
    (['PAGE'], ['EOS', '0x1000'])
    """
    names = [n for bit, n in _RAM_FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in _RAM_FLAG_NAMES)
    if rest:
        names.append(f"0x{rest:x}")
    return names


def _be(data: bytes, at: int, n: int) -> int | None:
    return int.from_bytes(data[at : at + n], "big") if len(data) >= at + n else None


def _short_hex(b: bytes, limit: int = 16) -> str:
    return b[:limit].hex(" ") + (" ..." if len(b) > limit else "")


class _Builder:
    """Appends fields left to right; never past the record's length."""

    def __init__(self, base: int, length: int, data: bytes) -> None:
        self.base, self.length, self.data, self.pos = base, length, data, 0
        self.fields: list[Field] = []

    @property
    def left(self) -> int:
        return self.length - self.pos

    def add(self, name: str, n: int, role: str, value: str | None = None, meaning: str = "") -> bytes:
        n = max(0, min(n, self.left))
        raw = self.data[self.pos : self.pos + n]
        if value is None:
            value = _short_hex(raw)
        self.fields.append(Field(name, self.base + self.pos, n, role, value, meaning))
        self.pos += n
        return raw

    def u(self, name: str, n: int, role: str = "value", meaning: str = "", fmt: str = "{:d}") -> int | None:
        v = _be(self.data, self.pos, n) if self.left >= n else None
        self.add(name, n, role, fmt.format(v) if v is not None else None, meaning)
        return v

    def cstr8(self, what: str = "block name") -> str | None:
        n = self.data[self.pos] if len(self.data) > self.pos and self.left >= 1 else None
        self.add(f"{what} length", 1, "length", None if n is None else str(n), "cstr8: u8 length")
        if n is None:
            return None
        raw = self.add(what, n, "name", None, "")
        text = decode_name(raw)
        self.fields[-1] = Field(what, self.fields[-1].offset, self.fields[-1].length, "name", repr(text), "")
        return text

    def rest(self, name: str, role: str = "data", meaning: str = "") -> None:
        if self.left > 0:
            self.add(name, self.left, role, None, meaning)


def _header_word(b: _Builder, page_size: int) -> tuple[int, int] | None:
    word = _be(b.data, b.pos, 8) if b.left >= 8 else None
    if word is None:
        b.add("header word", 8, "header", None, "be64 offset | flags (incomplete)")
        return None
    flags, addr = word & (page_size - 1), word & ~(page_size - 1)
    b.add("header word", 8, "header", f"0x{word:016x}",
          f"offset 0x{addr:x} | flags 0x{flags:x} = {'|'.join(decode_ram_flags(flags)) or '0'}")
    return addr, flags


def _ram_record(b: _Builder, row: dict[str, Any], page_size: int) -> None:
    kind = row["kind"]
    hw = _header_word(b, page_size)
    named = (not hw[1] & RAM_SAVE_FLAG_CONTINUE) if hw else str(row.get("detail", "")).startswith("named")
    if named and b.left > 0:
        b.cstr8()
    if kind == "ZERO":
        fill = b.data[b.pos] if len(b.data) > b.pos else None
        b.add("fill byte", 1, "value", None if fill is None else f"0x{fill:02x}",
              "every byte of the page (0 = zero page)")
    elif kind == "PAGE":
        b.add("page data", b.left, "data", None, f"{b.left} bytes of the page")
    elif kind == "XBZRLE":
        b.u("XBZRLE encoding flag", 1, "value", "ENCODING_FLAG_XBZRLE (must be 0x01)", "0x{:02x}")
        n = b.u("XBZRLE length", 2, "length", "be16 length of the encoded delta")
        b.add("XBZRLE data", b.left, "data", None,
              f"{n if n is not None else '?'} bytes of (zrun nzrun data)+ ULEB128 runs")
    elif kind == "COMPRESS_PAGE":
        n = b.u("compressed length", 4, "length", "be32 length of the zlib stream")
        b.add("zlib data", b.left, "data", None, f"{n if n is not None else '?'} bytes, one zlib stream")


def _mem_size(b: _Builder, page_size: int) -> None:
    hw = _header_word(b, page_size)
    total = hw[0] if hw else 0
    remaining = total
    i = 0
    while b.left > 0 and remaining > 0:
        if b.data[b.pos : b.pos + 1] == b"\0":  # not a name: the optional be64 page size of the previous entry
            ps = _be(b.data, b.pos, 8)
            if ps is not None and ps > page_size and ps & (ps - 1) == 0 and b.left >= 8:
                b.add(f"block {i - 1} page size", 8, "value", f"0x{ps:x}", "be64 host page size (postcopy)")
                continue
            break
        name = b.cstr8(f"block {i} name")
        used = b.u(f"block {i} used_length", 8, "value", "be64 bytes", "0x{:x}")
        if name is None or used is None:
            break
        remaining -= used
        i += 1
    # a trailing page size after the last entry
    ps = _be(b.data, b.pos, 8)
    if b.left >= 8 and ps is not None and ps > page_size and ps & (ps - 1) == 0:
        b.add(f"block {i - 1} page size", 8, "value", f"0x{ps:x}", "be64 host page size (postcopy)")
    b.rest("other block fields", "value", "mr_addr / mapped-ram fields (capability dependent)")


def _section_header(b: _Builder, kind: str) -> None:
    typ = b.data[b.pos] if b.data else None
    b.add("section type", 1, "marker", None if typ is None else f"0x{typ:02x}",
          f"QEMU_VM_SECTION_{SECTION_TYPE_NAMES.get(typ or 0, kind.removeprefix('SECTION_'))}")
    b.u("section id", 4, "value", "be32")
    if kind in ("SECTION_START", "SECTION_FULL"):
        b.cstr8("idstr")
        b.u("instance id", 4, "value", "be32")
        b.u("version id", 4, "value", "be32")


def _command(b: _Builder, kind: str) -> None:
    b.add("command marker", 1, "marker", None, "QEMU_VM_COMMAND (0x08)")
    cmd = b.u("cmd", 2, "value", f"be16 = {kind.removeprefix('CMD_')}")
    n = b.u("payload length", 2, "length", "be16")
    name = MIG_CMD_NAMES.get(cmd or -1, "")
    if name == "POSTCOPY_RAM_DISCARD" and b.left >= 3:
        b.u("discard version", 1, "value", "must be 0")
        b.cstr8("block name")
        b.add("nil", 1, "marker", None, "0 terminator of the name")
        k = 0
        while b.left >= 16:
            s, ln = _be(b.data, b.pos, 8), _be(b.data, b.pos + 8, 8)
            b.add(f"range {k} start", 8, "value", f"0x{s:x}" if s is not None else None, "be64 byte offset in block")
            b.add(f"range {k} length", 8, "length", f"0x{ln:x}" if ln is not None else None, "be64 bytes")
            k += 1
    elif name == "POSTCOPY_ADVISE" and b.left == 16:
        b.u("ram pagesize summary", 8, "value", "be64 OR of all block page sizes", "0x{:x}")
        b.u("target page size", 8, "value", "be64", "0x{:x}")
    elif name == "PING" and b.left == 4:
        b.u("ping value", 4, "value", "be32")
    elif name == "PACKAGED" and b.left == 4:
        b.u("package length", 4, "length", "be32 bytes of the packaged stream that follows")
    b.rest("payload", "data", f"{n if n is not None else '?'} bytes")


def field_layout(row: dict[str, Any], data: bytes | None, page_size: int = TARGET_PAGE_SIZE) -> list[Field]:
    """The wire fields of one record, left to right, tiling ``[offset, offset + length)``.

    ``data`` is the record's bytes (``bytes_at(offset, length)``; may be short or ``None``:
    fields are then laid out from ``kind`` / ``length`` / ``detail`` alone where possible).
    ``page_size`` is the target page size (it splits the RAM header word into offset | flags).
    The kinds are those of ``Migration.records_table()``; an unknown kind is one ``bytes``
    field.  The lengths always sum to ``row["length"]``.

    >>> row = dict(offset=100, length=15, kind="XBZRLE", block="pc.ram", detail="4 encoded bytes")
    >>> [(f.name, f.offset, f.length) for f in field_layout(row, bytes.fromhex("0000000000101060010004d9050124"))]
    [('header word', 100, 8), ('XBZRLE encoding flag', 108, 1), ('XBZRLE length', 109, 2), ('XBZRLE data', 111, 4)]
    """
    kind = str(row.get("kind"))
    length = int(row.get("length") or 0)
    base = int(row["offset"]) if row.get("offset") is not None else 0
    b = _Builder(base, length, bytes(data or b"")[:length])
    if kind in ("PAGE", "ZERO", "XBZRLE", "COMPRESS_PAGE"):
        _ram_record(b, row, page_size)
    elif kind in ("RamEos", "RamMultifdFlush"):
        _header_word(b, page_size)
    elif kind == "MEM_SIZE":
        _mem_size(b, page_size)
    elif kind.startswith("SECTION_"):
        _section_header(b, kind)
    elif kind == "FOOTER":
        b.add("footer marker", 1, "marker", None, "QEMU_VM_SECTION_FOOTER (0x7e)")
        b.u("section id", 4, "value", "be32, must match the header")
    elif kind.startswith("CMD_"):
        _command(b, kind)
    elif kind == "FileHeader":
        b.add("magic", 4, "marker", None, "'QEVM'")
        b.u("file version", 4, "value", "be32 (3)")
    elif kind == "Configuration":
        b.add("configuration marker", 1, "marker", None, "QEMU_VM_CONFIGURATION (0x07)")
        n = b.u("machine type length", 4, "length", "be32")
        raw = b.add("machine type", n or 0, "name", None, "")
        b.fields[-1] = Field("machine type", b.fields[-1].offset, b.fields[-1].length, "name",
                             repr(decode_name(raw)), "")
        b.rest("subsections", "value", "0x05 + cstr8 name + be32 version + body (capabilities, page bits...)")
    elif kind == "EndOfFile":
        b.add("EOF marker", 1, "marker", None, "QEMU_VM_EOF (0x00)")
    elif kind == "VmDescription":
        b.add("vmdesc marker", 1, "marker", None, "QEMU_VM_VMDESCRIPTION (0x06)")
        b.u("JSON length", 4, "length", "be32")
        b.rest("JSON", "data", "device description (vmdesc)")
    elif kind == "DEVICE_STATE":
        b.rest("device state", "data", "vmstate fields (parse with the vmdesc)")
    else:
        b.rest("bytes", "data", kind)
    b.rest("unexplained bytes", "data")
    return b.fields
