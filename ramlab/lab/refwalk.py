"""A small walker of RAM records written straight from ``stream-format.md`` §2-3.

Independent of :mod:`ramlab.wire` on purpose: the damaged streams of lab 06 are made with it,
and the tests check the decoder against it.

    >>> w = ref_walk(bytes.fromhex("5145564d00000003") + b"\\x00")
    >>> w.records, w.cut
    ([], None)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SPEC_FLAGS", "RefWalk", "ref_walk"]

#: the flag table of stream-format.md §3.1
SPEC_FLAGS = {
    0x01: "FULL", 0x02: "ZERO", 0x04: "MEM_SIZE", 0x08: "PAGE", 0x10: "EOS", 0x20: "CONTINUE",
    0x40: "XBZRLE", 0x80: "HOOK", 0x100: "COMPRESS_PAGE", 0x200: "MULTIFD_FLUSH",
}

class _Cut(Exception):
    pass


class _Unsupported(Exception):
    pass


@dataclass
class RefWalk:
    """What :func:`ref_walk` found: RAM ``records`` ``(offset, kind_flag, block, page_offset)``, the
    MEM_SIZE ``blocks`` ``{name: used_length}`` in list order, where the stream was ``cut`` (start
    of the item that runs past the end, or ``None``) and where RAM ``stopped`` (first non-RAM item).
    """

    records: list[tuple[int, int, str, int]] = field(default_factory=list)
    blocks: dict[str, int] = field(default_factory=dict)
    cut: int | None = None
    stopped: int | None = None

    def passes(self) -> list[int]:
        """Pass number of each record: a new lap starts where (block order, offset) decreases."""
        order = {name: i for i, name in enumerate(self.blocks)}
        out, p, prev = [], 0, (-1, -1)
        for _, _, block, addr in self.records:
            key = (order.get(block, -1), addr)
            if key < prev:
                p += 1
            prev = key
            out.append(p)
        return out


def ref_walk(data: bytes, tps: int = 4096) -> RefWalk:
    """Walk the RAM records of a precopy stream exactly as ``stream-format.md`` §2-3 describes them.

    Header, configuration, then RAM START/PART/END sections (MEM_SIZE list, ZERO, PAGE, XBZRLE,
    COMPRESS_PAGE records, EOS, footer) until the first device section. Deliberately tiny and
    independent of :mod:`ramlab.wire`, so exercises and tests can check the decoder against it.

    >>> w = ref_walk(bytes.fromhex("5145564d00000003") + b"\\x00")
    >>> w.records, w.cut
    ([], None)
    """
    w = RefWalk()
    pos = 0
    item = 0

    def need(n: int) -> None:
        if pos + n > len(data):
            raise _Cut

    def u(n: int) -> int:
        nonlocal pos
        need(n)
        v = int.from_bytes(data[pos : pos + n], "big")
        pos += n
        return v

    def cstr8() -> str:
        nonlocal pos
        n = u(1)
        need(n)
        s = data[pos : pos + n].decode("utf-8", "surrogateescape")
        pos += n
        return s

    try:
        if u(4) != 0x5145564D or u(4) != 3:
            raise _Unsupported("not a version-3 QEVM stream")
        if pos < len(data) and data[pos] == 0x07:
            item = pos
            pos += 1
            n = u(4)
            pos += n
        ram_sid = None
        block = ""
        while True:
            item = pos
            t = u(1)
            if t == 0x08:  # command: skip (a PACKAGED blob would need more: stop there)
                cmd, ln = u(2), u(2)
                need(ln)
                pos += ln
                if cmd == 7:
                    w.stopped = item
                    return w
                continue
            if t in (0x01, 0x04):
                sid = u(4)
                name = cstr8()
                u(4), u(4)
                if name != "ram":
                    w.stopped = item
                    return w
                ram_sid = sid
            elif t in (0x02, 0x03):
                sid = u(4)
                if sid != ram_sid:
                    w.stopped = item
                    return w
            else:
                w.stopped = item
                return w
            while True:  # RAM section body
                item = pos
                word = u(8)
                flags, addr = word & (tps - 1), word & ~(tps - 1)
                if flags & 0x04:
                    total, have = addr, 0
                    while have < total:
                        name = cstr8()
                        used = u(8)
                        w.blocks[name] = used
                        have += used
                    continue
                if flags == 0x10:
                    break
                kind = flags & ~0x20
                if flags & 0x20 == 0:
                    block = cstr8()
                if kind == 0x02:
                    u(1)
                elif kind == 0x08:
                    need(tps)
                    pos += tps
                elif kind == 0x40:
                    u(1)
                    n = u(2)
                    need(n)
                    pos += n
                elif kind == 0x100:
                    n = u(4)
                    need(n)
                    pos += n
                else:
                    raise _Unsupported(f"flags {flags:#x} at byte {item}")
                w.records.append((item, kind, block, addr))
            item = pos
            if u(1) != 0x7E:
                raise _Unsupported(f"no section footer at byte {item}")
            u(4)
    except _Cut:
        w.cut = item
    return w
