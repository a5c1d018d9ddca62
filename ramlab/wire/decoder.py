"""Sans-IO decoder of QEMU's savevm migration stream (``migration/savevm.c`` + ``ram.c``).

Give it bytes, in chunks of any size, and take :mod:`ramlab.wire.events` out as whole items
are available (the contract of :mod:`ramlab.wire.contract`). It never opens files: callers own the
IO (see :mod:`ramlab.io`).

    >>> dec = StreamDecoder()
    >>> dec.receive_data(bytes.fromhex("5145564d00000003" "00"))
    >>> dec.close()
    >>> list(dec.events()), dec.next_event()
    ([FileHeader(version=3, offset=0), EndOfFile(offset=8)], END)

Runs of ZERO or PAGE records of one block become one :class:`~ramlab.wire.events.RamPages`
event. A run ends at the first record of another kind (or after ``max_run`` records), so the
events are the same however the bytes are chunked. When the whole stream is fed at once the
page arrays are zero-copy views of it.

With the mapped-ram capability (QEMU >= 9.0, ``file:`` migrations) each MEM_SIZE entry is
followed by a header and the block's area (bitmap + pages at absolute offsets); the decoder
skips the area as its bytes arrive, keeping only the bitmap, and emits one
:class:`~ramlab.wire.events.MappedRamArea` per block after the :class:`RamMemSize` (with a
zero-copy ``region`` view when the area was fed in one buffer).

Device sections are delimited by their footer (``0x7e`` + section id followed by a valid
next item), so streams without a vmdesc trailer (postcopy) decode too; parse their bodies
with :mod:`ramlab.wire.vmstate`.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

from ramlab.constants import (
    ENCODING_FLAG_XBZRLE,
    MIG_CMD_ARGS_LEN,
    MIG_CMD_MAX,
    MIG_CMD_PACKAGED,
    MIG_CMD_POSTCOPY_ADVISE,
    MIG_CMD_POSTCOPY_LISTEN,
    QEMU_VM_COMMAND,
    QEMU_VM_CONFIGURATION,
    QEMU_VM_EOF,
    QEMU_VM_FILE_MAGIC,
    QEMU_VM_FILE_VERSION,
    QEMU_VM_FILE_VERSION_COMPAT,
    QEMU_VM_SECTION_END,
    QEMU_VM_SECTION_FOOTER,
    QEMU_VM_SECTION_FULL,
    QEMU_VM_SECTION_PART,
    QEMU_VM_SECTION_START,
    QEMU_VM_SUBSECTION,
    QEMU_VM_VMDESCRIPTION,
    RAM_SAVE_FLAG_COMPRESS_PAGE,
    RAM_SAVE_FLAG_CONTINUE,
    RAM_SAVE_FLAG_EOS,
    RAM_SAVE_FLAG_HOOK,
    RAM_SAVE_FLAG_MEM_SIZE,
    RAM_SAVE_FLAG_MULTIFD_FLUSH,
    RAM_SAVE_FLAG_PAGE,
    RAM_SAVE_FLAG_XBZRLE,
    RAM_SAVE_FLAG_ZERO,
    RAM_SECTION_VERSION,
    TARGET_PAGE_SIZE,
    compress_bound,
)
from ramlab.errors import StreamError, TruncatedStream, UnsupportedFeature
from ramlab.wire import events as ev
from ramlab.wire.commands import decode_advise_payload, decode_packaged_payload
from ramlab.wire.contract import Decoder, NeedMore
from ramlab.wire.fields import decode_name

# Bounds on lengths read off the stream (never allocate from an unchecked length).
MAX_VMDESC_LEN = 256 << 20
MAX_DEVICE_BODY = 256 << 20
MAX_MEM_SIZE_ENTRIES = 65536

_PAGE_KINDS = RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_XBZRLE | RAM_SAVE_FLAG_COMPRESS_PAGE


class State(Enum):
    """Where the decoder is in the stream (the keys of ``StreamDecoder._READERS``)."""

    HEADER = "file header"  # QEVM magic + version
    ITEMS = "between items"  # a section, command, configuration or EOF comes next
    RAM = "RAM section body"  # RAM records up to EOS
    DEVICE = "device section body"  # a FULL section's vmstate, up to its footer
    OPAQUE = "iterative section body"  # a non-RAM START/PART/END body, up to its footer
    FOOTER = "section footer"  # 0x7e + section id
    VMDESC = "after EOF"  # the vmdesc JSON trailer, or the end of the stream
    MEMSIZE = "MEM_SIZE block list"  # the next entry of a (mapped-ram) block list
    MAPPED_SKIP = "mapped-ram area"  # skipping a block's area, keeping its bitmap
    DONE = "after the vmdesc"  # nothing may follow

MAPPED_RAM_HDR_VERSION = 1
MAPPED_RAM_HDR_LEN = 28  # be32 version, be64 page_size, be64 bitmap_offset, be64 pages_offset


class _MemSizeList:
    """A MEM_SIZE block list being decoded entry by entry (mapped-ram lists span skipped areas)."""

    __slots__ = ("total", "remaining", "entries", "areas", "at", "flags")

    def __init__(self, total: int, at: int, flags: int) -> None:
        self.flags = flags  # RAM_SAVE_FLAG_MEM_SIZE, possibly with CONTINUE (QEMU ignores it)
        self.total = total
        self.remaining = total
        self.entries: list[ev.RamBlockEntry] = []
        self.areas: list[ev.MappedRamArea] = []
        self.at = at  # absolute offset of the MEM_SIZE word


class _AreaSkip:
    """The mapped-ram area being skipped: where it ends and the bitmap bytes caught on the way.

    The bitmap grows as its bytes arrive, never from the length the header claims: a header may
    declare a block of any size, and only bytes that are really in the stream cost memory.
    """

    __slots__ = ("entry", "start", "end", "bitmap_at", "nbytes", "bitmap")

    def __init__(self, entry: ev.RamBlockEntry, start: int, end: int, bitmap_at: int, nbytes: int) -> None:
        self.entry = entry
        self.start = start  # absolute offset of the first skipped byte
        self.end = end  # absolute offset where the stream continues
        self.bitmap_at = bitmap_at
        self.nbytes = nbytes
        self.bitmap = bytearray()


class StreamDecoder(Decoder):
    """Incremental decoder of one savevm stream (the main migration channel).

    Contract: :mod:`ramlab.wire.contract` (``receive_data`` / ``next_event`` / ``NEED_DATA`` /
    ``END``; errors carry the absolute byte offset and are raised after every event before them).

    Parameters
    ----------
    page_size:
        Target page size used to split RAM header words (``None``: 4096, or taken from the
        configuration's ``target-page-bits`` subsection).
    footers:
        Whether sections end with a footer (QEMU >= 2.4 machine types). The stream does
        not say so itself.
    ram_idstr:
        The idstr of the RAM live section (``"ram"``).
    max_run:
        Largest number of records grouped into one :class:`RamPages` event.

    The stream may end after ``QEMU_VM_EOF`` (postcopy and suppress-vmdesc streams have no vmdesc)
    or after the vmdesc; anywhere else the input is truncated.
    """

    def __init__(
        self,
        *,
        page_size: int | None = None,
        footers: bool = True,
        ram_idstr: str = "ram",
        max_run: int = 8192,
    ) -> None:
        super().__init__()
        self.page_size = page_size or TARGET_PAGE_SIZE
        self._page_size_fixed = page_size is not None
        self.footers = footers
        self.ram_idstr = ram_idstr
        self.max_run = max_run
        self._state = State.HEADER
        # section bookkeeping
        self._sections: dict[int, tuple[str, int, int]] = {}  # id -> (idstr, instance, version)
        self._cur_section: tuple[int, str] | None = None
        self._package_end: int | None = None
        # RAM state (survives across sections, like QEMU's static last block)
        self.blocks: dict[str, ev.RamBlockEntry] = {}
        self._last_block: str | None = None
        self.capabilities: tuple[str, ...] = ()
        self.postcopy_advised = False
        self.ram_pagesize_summary = 0
        self.postcopy_listening = False
        self.saw_eof = False
        self._ms: _MemSizeList | None = None  # MEM_SIZE list in progress (mapped-ram)
        self._skip: _AreaSkip | None = None

    @property
    def state(self) -> State:
        """The decoder's :class:`State`."""
        return self._state

    # ------------------------------------------------------------------ the contract's hooks
    def _may_end(self) -> bool:
        return self._state in (State.VMDESC, State.DONE)

    def _truncated(self, upto: int) -> StreamError:
        left = self.pending
        if self._state == State.ITEMS and left == 0 and self._package_end is None:
            return TruncatedStream("stream ends before QEMU_VM_EOF", offset=self.position,
                                   section=self._section_name(), expected="a section, a command or EOF",
                                   found="end of data")
        if self._state == State.MAPPED_SKIP and self._skip is not None:
            return TruncatedStream(
                "stream ends inside a mapped-ram area", offset=self.position, section=self._section_name(),
                expected=f"the area of {self._skip.entry.name!r} up to offset {self._skip.end}",
                found=f"end of data after {left} more bytes",
            )
        return TruncatedStream(
            "stream ends in the middle of an item",
            offset=self.position,
            section=self._section_name(),
            expected=f"bytes up to offset {max(upto, self.position + 1)}",
            found=f"end of data after {left} more bytes",
        )

    def _need(self, n: int) -> None:
        if len(self._buf) - self._pos < n:
            if self._package_end is not None and self._base + self._pos + n > self._package_end:
                raise StreamError(
                    "item runs past the end of the PACKAGED blob",
                    offset=self.position,
                    section=self._section_name(),
                    expected=f"at most {self._package_end - self.position} bytes",
                    found=f"an item of {n} bytes",
                )
            raise NeedMore(self._base + self._pos + n)

    def _u8(self) -> int:
        self._need(1)
        v = self._mv[self._pos]
        self._pos += 1
        return v

    def _be(self, n: int) -> int:
        self._need(n)
        v = int.from_bytes(self._mv[self._pos : self._pos + n], "big")
        self._pos += n
        return v

    def _bytes(self, n: int) -> bytes:
        self._need(n)
        v = bytes(self._mv[self._pos : self._pos + n])
        self._pos += n
        return v

    def _cstr8(self) -> str:
        n = self._u8()
        return decode_name(self._bytes(n))

    def _section_name(self) -> str | None:
        return self._cur_section[1] if self._cur_section else None

    def _err(self, message: str, at: int, expected: str | None = None, found: str | None = None) -> StreamError:
        return StreamError(
            message, offset=self._base + at, section=self._section_name(), expected=expected, found=found
        )

    def _step_done(self) -> None:
        if self.pending:
            raise self._err("data after the vmdesc trailer", self._pos, "end of stream",
                            f"byte 0x{self._mv[self._pos]:02x}")
        raise NeedMore(self.position + 1)

    # ------------------------------------------------------------------ header + items
    def _step_header(self) -> bool:
        at = self._pos
        magic = self._be(4)
        if magic != QEMU_VM_FILE_MAGIC:
            raise self._err("not a QEMU migration stream", at, "magic 0x5145564d ('QEVM')", f"0x{magic:08x}")
        version = self._be(4)
        if version == QEMU_VM_FILE_VERSION_COMPAT:
            raise self._err("stream version 2 (compat) is not supported by QEMU", at + 4, "3", "2")
        if version != QEMU_VM_FILE_VERSION:
            raise self._err("unsupported stream version", at + 4, "3", str(version))
        self._emit(ev.FileHeader(version=version, offset=self._base + at))
        self._state = State.ITEMS
        return True

    def _at_package_end(self) -> bool:
        return self._package_end is not None and self._base + self._pos == self._package_end

    def _step_item(self) -> bool:
        if self._at_package_end():
            self._emit(ev.PackagedEnd(offset=self._package_end))
            self._package_end = None
            return True
        if self._pos >= len(self._buf):
            raise NeedMore(self.position + 1)
        at = self._pos
        kind = self._u8()
        if kind == QEMU_VM_CONFIGURATION:
            return self._item_configuration(at)
        if kind in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
            section_id = self._be(4)
            idstr = self._cstr8()
            instance_id = self._be(4)
            version_id = self._be(4)
            self._sections[section_id] = (idstr, instance_id, version_id)
            self._cur_section = (section_id, idstr)
            self._emit(
                ev.SectionHeader(kind, section_id, idstr, instance_id, version_id, offset=self._base + at)
            )
            self._enter_body(kind, section_id, idstr, instance_id, version_id, at)
            return True
        if kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
            section_id = self._be(4)
            known = self._sections.get(section_id)
            if known is None:
                raise self._err(
                    "section PART/END for an unknown section id", at + 1, "an id introduced by START",
                    str(section_id),
                )
            idstr = known[0]
            self._cur_section = (section_id, idstr)
            self._emit(ev.SectionHeader(kind, section_id, idstr, offset=self._base + at))
            self._enter_body(kind, section_id, idstr, known[1], known[2], at)
            return True
        if kind == QEMU_VM_COMMAND:
            return self._item_command(at)
        if kind == QEMU_VM_EOF:
            if self._package_end is not None:
                raise self._err("EOF inside a PACKAGED blob", at, "a section or command", "QEMU_VM_EOF")
            self._emit(ev.EndOfFile(offset=self._base + at))
            self.saw_eof = True
            self._state = State.VMDESC
            return True
        raise self._err(
            "unknown savevm section type", at, "one of 0x00-0x04, 0x07, 0x08", f"0x{kind:02x}"
        )

    def _item_configuration(self, at: int) -> bool:
        if self._base + at != 8 or self._package_end is not None:
            raise self._err("configuration section out of place", at, "only right after the header", "0x07")
        n = self._be(4)
        if n > 256:
            raise self._err("machine type name too long", at + 1, "at most 256 bytes", str(n))
        name = decode_name(self._bytes(n))
        subsections: list[tuple[str, int, bytes]] = []
        capabilities: tuple[str, ...] = ()
        tpb = None
        while True:
            if self._pos >= len(self._buf):
                raise NeedMore(self.position + 1)
            if self._mv[self._pos] != QEMU_VM_SUBSECTION:
                break
            sub_at = self._pos
            self._pos += 1
            sub = self._cstr8()
            sub_version = self._be(4)
            body_at = self._pos
            if sub == "configuration/target-page-bits":
                tpb = self._be(4)
            elif sub == "configuration/capabilities":
                count = self._be(4)
                if count > 1024:
                    raise self._err("too many capabilities", body_at, "at most 1024", str(count))
                capabilities = tuple(self._cstr8() for _ in range(count))
            elif sub == "configuration/uuid":
                self._bytes(16)
            else:
                raise self._err(
                    "unknown configuration subsection", sub_at, "target-page-bits, capabilities or uuid", sub
                )
            subsections.append((sub, sub_version, bytes(self._mv[body_at : self._pos])))
        body = bytes(self._mv[at + 1 : self._pos])
        if tpb is not None and not self._page_size_fixed:
            if not 10 <= tpb <= 16:
                raise self._err("implausible target-page-bits", at, "10..16", str(tpb))
            self.page_size = 1 << tpb
        self.capabilities = capabilities
        self._emit(
            ev.Configuration(
                machine_type=name,
                body=body,
                capabilities=capabilities,
                target_page_bits=tpb,
                subsections=tuple(subsections),
                offset=self._base + at,
            )
        )
        return True

    def _item_command(self, at: int) -> bool:
        cmd = self._be(2)
        length = self._be(2)
        if cmd == 0 or cmd >= MIG_CMD_MAX:
            raise self._err("unknown QEMU_VM_COMMAND", at + 1, f"1..{MIG_CMD_MAX - 1}", str(cmd))
        want = MIG_CMD_ARGS_LEN.get(cmd, -1)
        if want != -1 and length != want:
            raise self._err("bad command length", at + 3, f"{want} for command {cmd}", str(length))
        payload = self._bytes(length)
        command = ev.Command(cmd=cmd, payload=payload, offset=self._base + at)
        if cmd == MIG_CMD_POSTCOPY_ADVISE:
            advice = decode_advise_payload(payload, offset=self._base + at + 5)
            if advice is not None:
                self.postcopy_advised = True
                self.ram_pagesize_summary = advice[0]
        elif cmd == MIG_CMD_POSTCOPY_LISTEN:
            self.postcopy_listening = True
        elif cmd == MIG_CMD_PACKAGED:
            if self._package_end is not None:
                raise self._err("nested PACKAGED command", at, "no PACKAGED inside a package", "PACKAGED")
            blob = decode_packaged_payload(payload, offset=self._base + at + 5)
            self._package_end = self._base + self._pos + blob
        self._emit(command)
        return True

    def _enter_body(self, kind: int, section_id: int, idstr: str, instance: int, version: int, at: int) -> None:
        if idstr == self.ram_idstr and instance == 0:
            if kind == QEMU_VM_SECTION_FULL:
                raise self._err("RAM sent as a FULL section", at, "START/PART/END", "FULL")
            if version != RAM_SECTION_VERSION:
                raise self._err("unsupported RAM section version", at, "4", str(version))
            self._state = State.RAM
        elif kind == QEMU_VM_SECTION_FULL:
            self._state = State.DEVICE
            self._body_info = (section_id, idstr, instance, version)
        else:
            self._state = State.OPAQUE
            self._body_info = (section_id, idstr, instance, version)

    def _step_footer(self) -> bool:
        section_id, _ = self._cur_section  # type: ignore[misc]
        if not self.footers:
            self._state = State.ITEMS
            return True
        at = self._pos
        byte = self._u8()
        if byte != QEMU_VM_SECTION_FOOTER:
            raise self._err("missing section footer", at, "0x7e", f"0x{byte:02x}")
        fid = self._be(4)
        if fid != section_id:
            raise self._err("mismatched section id in footer", at + 1, str(section_id), str(fid))
        self._emit(ev.SectionFooter(section_id=fid, offset=self._base + at))
        self._state = State.ITEMS
        return True

    def _step_vmdesc(self) -> bool:
        if self._pos >= len(self._buf):
            raise NeedMore(self.position + 1)
        at = self._pos
        kind = self._u8()
        if kind != QEMU_VM_VMDESCRIPTION:
            raise self._err("unexpected byte after EOF", at, "0x06 (vmdesc) or end of stream", f"0x{kind:02x}")
        n = self._be(4)
        if n > MAX_VMDESC_LEN:
            raise self._err("vmdesc too long", at + 1, f"at most {MAX_VMDESC_LEN} bytes", str(n))
        data = self._bytes(n)
        self._emit(ev.VmDescription(json_bytes=data, offset=self._base + at))
        self._state = State.DONE
        return True

    # ------------------------------------------------------------------ device bodies
    def _step_device_body(self, opaque: bool) -> bool:
        section_id, idstr, instance, version = self._body_info
        start = self._pos
        end = self._find_footer(section_id, start)
        body = bytes(self._mv[start:end])
        self._pos = end
        if opaque:
            self._emit(ev.OpaqueSection(section_id, idstr, body, offset=self._base + start))
        else:
            self._emit(ev.DeviceState(section_id, idstr, instance, version, body, offset=self._base + start))
        self._state = State.FOOTER
        return True

    def _find_footer(self, section_id: int, start: int) -> int:
        """Relative end of a section body: the first ``7e <id>`` followed by a plausible item."""
        if not self.footers:
            raise UnsupportedFeature(
                "device sections without footers need the vmdesc to be delimited",
                offset=self._base + start,
                section=self._section_name(),
            )
        pattern = bytes([QEMU_VM_SECTION_FOOTER]) + section_id.to_bytes(4, "big")
        limit = len(self._buf)
        if self._package_end is not None:
            limit = min(limit, self._package_end - self._base)
        i = start
        while True:
            i = self._find(pattern, i, limit)
            if i < 0:
                scanned = limit - start
                if scanned > MAX_DEVICE_BODY:
                    raise self._err(
                        "no section footer found", start, f"0x7e + id {section_id}",
                        f"none in {scanned} bytes",
                    )
                if self._package_end is not None and limit == self._package_end - self._base:
                    raise self._err(
                        "no section footer before the end of the PACKAGED blob", start,
                        f"0x7e + id {section_id}", "end of blob",
                    )
                raise NeedMore(self._base + limit + 1)
            verdict = self._plausible_item(i + 5, limit)
            if verdict:
                return i
            i += 1

    def _find(self, pattern: bytes, start: int, end: int) -> int:
        """``find`` over the buffer in windows (memoryviews have no ``find``)."""
        if not isinstance(self._buf, memoryview):
            return self._buf.find(pattern, start, end)
        window = 1 << 16
        i = start
        while i < end:
            j = min(end, i + window)
            k = bytes(self._mv[i:j]).find(pattern)
            if k >= 0:
                return i + k
            if j == end:
                break
            i = j - (len(pattern) - 1)
        return -1

    def _plausible_item(self, j: int, limit: int) -> bool:
        """Is there a valid item start at relative offset ``j``? Raises _NeedMore if unsure."""
        if self._package_end is not None and j == self._package_end - self._base:
            return True
        if j >= len(self._buf):
            if self._eof:
                return j == len(self._buf)
            raise NeedMore(self._base + j + 1)
        mv = self._mv
        kind = mv[j]
        avail = len(self._buf) - j

        def need(n: int) -> None:
            if avail < n:
                if self._eof:
                    raise _Implausible
                raise NeedMore(self._base + j + n)

        try:
            if kind == QEMU_VM_EOF:
                if self._package_end is not None:
                    return False
                if avail == 1:
                    if self._eof:
                        return True
                    raise NeedMore(self._base + j + 2)
                return mv[j + 1] == QEMU_VM_VMDESCRIPTION
            if kind in (QEMU_VM_SECTION_START, QEMU_VM_SECTION_FULL):
                need(6)
                n = mv[j + 5]
                if n == 0:
                    return False
                need(6 + n + 8)
                name = bytes(mv[j + 6 : j + 6 + n])
                return all(0x20 <= c < 0x7F for c in name)
            if kind in (QEMU_VM_SECTION_PART, QEMU_VM_SECTION_END):
                need(5)
                return int.from_bytes(mv[j + 1 : j + 5], "big") in self._sections
            if kind == QEMU_VM_COMMAND:
                need(3)
                cmd = int.from_bytes(mv[j + 1 : j + 3], "big")
                return 0 < cmd < MIG_CMD_MAX
        except _Implausible:
            return False
        return False

    # ------------------------------------------------------------------ RAM section body
    def _step_ram(self) -> bool:
        at = self._pos
        word = self._be(8)
        tps = self.page_size
        flags = word & (tps - 1)
        addr = word & ~(tps - 1)
        kind = flags & ~RAM_SAVE_FLAG_CONTINUE
        if flags & _PAGE_KINDS:
            if self.postcopy_listening and kind == RAM_SAVE_FLAG_XBZRLE:
                # after LISTEN QEMU loads with ram_load_postcopy: ZERO, PAGE (and, modern, COMPRESS_PAGE)
                raise self._err("XBZRLE page while postcopy is running", at, "ZERO or PAGE records",
                                f"flags 0x{flags:x}")
            block, named = self._ram_block(flags, at)
            entry = self.blocks[block]
            if addr >= entry.used_length:
                raise self._err(
                    "Illegal RAM offset", at, f"< used_length 0x{entry.used_length:x} of {block!r}",
                    f"0x{addr:x}",
                )
            if kind == RAM_SAVE_FLAG_ZERO or kind == RAM_SAVE_FLAG_PAGE:
                self._ram_run(kind, block, named, addr, at, flags)
            elif kind == RAM_SAVE_FLAG_XBZRLE:
                xh = self._u8()
                if xh != ENCODING_FLAG_XBZRLE:
                    raise self._err("bad XBZRLE encoding flag", self._pos - 1, "0x01", f"0x{xh:02x}")
                n = self._be(2)
                if n > tps:
                    raise self._err("XBZRLE length too large", self._pos - 2, f"<= {tps}", str(n))
                data = self._bytes(n)
                self._emit(ev.RamXbzrle(block, named, addr, data, offset=self._base + at, xh_flags=xh))
            elif kind == RAM_SAVE_FLAG_COMPRESS_PAGE:
                n = self._be(4)
                bound = compress_bound(tps)
                if n > bound:
                    raise self._err("compressed page too long", self._pos - 4, f"<= {bound}", str(n))
                data = self._bytes(n)
                self._emit(ev.RamCompressed(block, named, addr, data, offset=self._base + at))
            else:
                raise self._err(
                    "Unknown combination of migration flags", at, "one page kind", f"0x{flags:x}"
                )
            return True
        if kind == RAM_SAVE_FLAG_MEM_SIZE:
            self._ram_mem_size(word, at)
            return True
        if kind == RAM_SAVE_FLAG_EOS:
            self._emit(ev.RamEos(offset=self._base + at, word=word))
            self._state = State.FOOTER
            return True
        if kind == RAM_SAVE_FLAG_MULTIFD_FLUSH:
            self._emit(ev.RamMultifdFlush(offset=self._base + at, word=word))
            return True
        if flags & RAM_SAVE_FLAG_HOOK:
            raise UnsupportedFeature(
                "RAM_SAVE_FLAG_HOOK (RDMA transport) is not supported", offset=self._base + at,
                section=self._section_name(), found=f"flags 0x{flags:x}",
            )
        raise self._err("Unknown combination of migration flags", at, "a known RAM record", f"0x{flags:x}")

    def _ram_block(self, flags: int, at: int) -> tuple[str, bool]:
        if flags & RAM_SAVE_FLAG_CONTINUE:
            if self._last_block is None:
                raise self._err("CONTINUE before any block name (bad migration stream)", at)
            return self._last_block, False
        name_at = self._pos
        name = self._cstr8()
        if name not in self.blocks:
            raise self._err("Unknown ramblock", name_at, "a block of the MEM_SIZE list", repr(name))
        self._last_block = name
        return name, True

    def _ram_mem_size(self, word: int, at: int) -> None:
        """MEM_SIZE: start the block list; plain lists are decoded here in one step."""
        self._ms = _MemSizeList(word & ~(self.page_size - 1), self._base + at, word & (self.page_size - 1))
        self._state = State.MEMSIZE
        try:
            self._step_mem_size_entries()
        except BaseException:
            self._state = State.RAM  # the whole step (from the MEM_SIZE word) is retried
            self._ms = None
            raise

    def _step_mem_size_entries(self) -> bool:
        """Decode list entries until the list ends or a mapped-ram area must be skipped.

        Without mapped-ram the whole list is one atomic step (as before). With mapped-ram the
        step that reads an entry and its header ends by entering the skip state, so the list
        never has to be buffered whole.
        """
        ms = self._ms
        assert ms is not None
        n_entries, remaining = len(ms.entries), ms.remaining
        try:
            return self._mem_size_entries(ms)
        except BaseException:
            del ms.entries[n_entries:]  # retried from the step's first entry
            ms.remaining = remaining
            raise

    def _mem_size_entries(self, ms: _MemSizeList) -> bool:
        tps = self.page_size
        ignore_shared = "x-ignore-shared" in self.capabilities
        mapped_ram = "mapped-ram" in self.capabilities
        summary_big = self.ram_pagesize_summary & ~(tps | (tps - 1))
        while ms.remaining > 0:
            if len(ms.entries) >= MAX_MEM_SIZE_ENTRIES:
                raise self._err("too many RAM blocks", ms.at - self._base, f"at most {MAX_MEM_SIZE_ENTRIES}", "more")
            entry_at = self._pos
            name = self._cstr8()
            used = self._be(8)
            if used > ms.remaining or used % tps:
                raise self._err(
                    "bad block length in MEM_SIZE list", entry_at, f"a page-aligned length <= 0x{ms.remaining:x}",
                    f"0x{used:x} for {name!r}",
                )
            page_size = None
            if self.postcopy_advised and summary_big:
                self._need(8)
                peek = int.from_bytes(self._mv[self._pos : self._pos + 8], "big")
                if peek > tps and peek & (peek - 1) == 0 and peek & summary_big:
                    page_size = peek
                    self._pos += 8
            mr_addr = self._be(8) if ignore_shared else None
            if not mapped_ram:
                ms.remaining -= used
                ms.entries.append(ev.RamBlockEntry(name, used, page_size, mr_addr))
                continue
            hdr_at = self._pos
            self._need(MAPPED_RAM_HDR_LEN)
            header = (self._be(4), self._be(8), self._be(8), self._be(8))
            entry = ev.RamBlockEntry(name, used, page_size, mr_addr, header)
            self._check_mapped_header(entry, hdr_at)
            ms.remaining -= used
            ms.entries.append(entry)
            if header[2] == 0 and header[3] == 0:
                continue  # ignore-shared block without an area (QEMU >= 11)
            self._start_skip(entry)
            return True
        self._finish_mem_size()
        return True

    def _check_mapped_header(self, entry: ev.RamBlockEntry, hdr_at: int) -> None:
        """The checks of QEMU's ``parse_ramblock_mapped_ram`` (plus the ones a one-pass reader needs)."""
        assert entry.mapped_ram is not None
        version, psize, bitmap_off, pages_off = entry.mapped_ram
        name = entry.name
        if version > MAPPED_RAM_HDR_VERSION:
            raise self._err(
                "Migration mapped-ram capability version not supported", hdr_at,
                f"<= {MAPPED_RAM_HDR_VERSION}", f"{version} for {name!r}",
            )
        if bitmap_off == 0 and pages_off == 0:
            return
        if psize != self.page_size:
            raise self._err(
                "mapped-ram page size differs from the target page size", hdr_at + 4, str(self.page_size),
                f"{psize} for {name!r}",
            )
        if pages_off % self.page_size:
            raise self._err(
                f"Error reading ramblock {name} pages, region has bad alignment", hdr_at + 20,
                f"a multiple of {self.page_size}", f"pages_offset 0x{pages_off:x}",
            )
        here = self.position
        nbytes = -(-(entry.used_length // psize) // 8)
        if pages_off < here:
            raise self._err(
                "mapped-ram page area starts before the end of its header", hdr_at + 20,
                f"pages_offset >= {here}", f"0x{pages_off:x} for {name!r}",
            )
        if not here <= bitmap_off <= pages_off + entry.used_length - nbytes:
            raise UnsupportedFeature(
                "mapped-ram bitmap outside the block's skipped area (a one-pass reader cannot reach it)",
                offset=self._base + hdr_at + 12, section=self._section_name(),
                expected=f"bitmap_offset in [{here}, {pages_off + entry.used_length - nbytes}]",
                found=f"0x{bitmap_off:x} for {name!r}",
            )
        if self._package_end is not None:
            raise self._err("mapped-ram area inside a PACKAGED blob", hdr_at, "no mapped-ram in postcopy", name)

    def _start_skip(self, entry: ev.RamBlockEntry) -> None:
        """Enter the skip state for ``entry``'s area; take a zero-copy view if it is all here."""
        assert entry.mapped_ram is not None
        _, psize, bitmap_off, pages_off = entry.mapped_ram
        start = self.position
        end = pages_off + entry.used_length
        nbytes = -(-(entry.used_length // psize) // 8)
        skip = _AreaSkip(entry, start, end, bitmap_off, nbytes)
        rel_end = end - self._base
        if not self._owned and rel_end <= len(self._buf):
            region = self._mv[self._pos : rel_end]
            b0 = bitmap_off - start
            skip.bitmap[:] = region[b0 : b0 + nbytes]
            self._pos = rel_end
            self._end_skip(skip, region)
            return
        self._skip = skip
        self._state = State.MAPPED_SKIP

    def _step_mapped_skip(self) -> bool:
        """Consume bytes of the area being skipped; only the bitmap bytes are kept."""
        skip = self._skip
        assert skip is not None
        avail = len(self._buf) - self._pos
        if avail <= 0:
            raise NeedMore(self.position + 1)
        here = self.position
        n = min(avail, skip.end - here)
        lo = max(here, skip.bitmap_at)
        hi = min(here + n, skip.bitmap_at + skip.nbytes)
        if lo < hi:  # the bitmap's bytes come in order: lo is where the caught part ends
            skip.bitmap += self._mv[lo - self._base : hi - self._base]
        self._pos += n
        if self.position == skip.end:
            self._skip = None
            self._end_skip(skip, None)
        return True

    def _end_skip(self, skip: _AreaSkip, region: memoryview | None) -> None:
        ms = self._ms
        assert ms is not None and skip.entry.mapped_ram is not None
        _, psize, bitmap_off, pages_off = skip.entry.mapped_ram
        ms.areas.append(ev.MappedRamArea(
            block=skip.entry.name, page_size=psize, bitmap_offset=bitmap_off, pages_offset=pages_off,
            bitmap=bytes(skip.bitmap), used_length=skip.entry.used_length, offset=skip.start, region=region,
        ))
        self._state = State.MEMSIZE

    def _finish_mem_size(self) -> None:
        ms = self._ms
        assert ms is not None
        for e in ms.entries:
            self.blocks[e.name] = e
        self._emit(ev.RamMemSize(total=ms.total, blocks=tuple(ms.entries), offset=ms.at, raw_flags=ms.flags))
        for area in ms.areas:
            self._emit(area)
        self._ms = None
        self._state = State.RAM

    def _ram_run(self, kind: int, block: str, named: bool, addr: int, at: int, flags: int) -> None:
        """Decode a run of ZERO or PAGE records of one block starting with the record at ``at``.

        A record that carries the block name is an event of its own; CONTINUE records that
        follow each other form one event whose arrays are strided views of the stream.
        """
        tps = self.page_size
        payload = 1 if kind == RAM_SAVE_FLAG_ZERO else tps
        self._need(payload)
        stride = 8 + payload
        if named:
            n = 1
            data_at = self._pos
            self._pos += payload
        else:
            n = self._count_run(at, stride, flags)
            data_at = at + 8
        offsets = np.empty(n, dtype=np.int64)
        offsets[0] = addr
        if n > 1:
            words = np.ndarray((n - 1,), dtype=">u8", buffer=self._mv, offset=at + stride, strides=(stride,))
            raw = words & np.uint64(0xFFFFFFFFFFFFFFFF ^ (tps - 1))
            used = self.blocks[block].used_length
            bad = raw >= np.uint64(used)  # compared unsigned: a flipped top bit is no negative offset
            if bad.any():  # the run ends before the bad record, which then fails on its own
                n = int(np.argmax(bad)) + 1
                raw = raw[: n - 1]
                offsets = offsets[:n]
            offsets[1:] = raw
        if not named:
            self._pos = at + n * stride
        data = np.ndarray((n, payload), dtype=np.uint8, buffer=self._mv, offset=data_at, strides=(stride, 1))
        if self._owned:
            data = data.copy()
        data.flags.writeable = False
        offsets.flags.writeable = False
        if kind == RAM_SAVE_FLAG_ZERO:
            event = ev.RamPages(kind, block, named, offsets, fill=data[:, 0], offset=self._base + at,
                                first_flags=flags)
        else:
            event = ev.RamPages(kind, block, named, offsets, data=data, offset=self._base + at,
                                first_flags=flags)
        self._emit(event)

    def _count_run(self, at: int, stride: int, want: int) -> int:
        """Number of consecutive records from ``at`` whose flags equal ``want`` (ends decided)."""
        mask = np.uint64(self.page_size - 1)
        buf_len = len(self._buf)
        limit = buf_len
        if self._package_end is not None:
            limit = min(limit, self._package_end - self._base)
        full = (limit - at) // stride  # complete records available (the first one included)
        cap = self.max_run
        n = 1
        probe = 16
        while n < min(full, cap):
            k = min(min(full, cap) - n, probe)
            probe *= 4
            words = np.ndarray((k,), dtype=">u8", buffer=self._mv, offset=at + n * stride, strides=(stride,))
            ok = (words & mask) == want
            if ok.all():
                n += k
                continue
            return n + int(np.argmin(ok))
        if n >= cap:
            return cap
        nxt = at + n * stride
        if limit - nxt >= 8:
            word = int.from_bytes(self._mv[nxt : nxt + 8], "big")
            if word & (self.page_size - 1) == want:
                if nxt + stride > limit and self._package_end is not None and limit < buf_len + 1:
                    if self._base + limit == self._package_end:
                        return n
                if not self._eof:
                    raise NeedMore(self._base + nxt + stride)
            return n
        if self._eof or (self._package_end is not None and self._base + limit == self._package_end):
            return n
        raise NeedMore(self._base + nxt + 8)

    _READERS = {
        State.HEADER: _step_header,
        State.ITEMS: _step_item,
        State.RAM: _step_ram,
        State.DEVICE: lambda self: self._step_device_body(opaque=False),
        State.OPAQUE: lambda self: self._step_device_body(opaque=True),
        State.FOOTER: _step_footer,
        State.VMDESC: _step_vmdesc,
        State.MEMSIZE: _step_mem_size_entries,
        State.MAPPED_SKIP: _step_mapped_skip,
        State.DONE: _step_done,
    }


class _Implausible(Exception):
    pass
