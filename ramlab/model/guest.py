"""The simulated guest: RAM blocks whose contents are numpy arrays of target pages.

A :class:`Guest` holds every RAM block of a VM in one ``[n_pages, 4096]`` uint8 array (the
*global page axis* of :class:`~ramlab.trace.Trace`: blocks concatenated in ``MEM_SIZE``
order), so the sender can gather any set of pages with one fancy index. Each
:class:`RamBlock` is a view of its slice, with QEMU's block name, ``used_length``, host page
size (4 KiB, or a huge page size) and ``ram_addr`` (the block's offset in QEMU's
``ram_addr_t`` space: the XBZRLE cache key is ``ram_addr + offset``).

Why one array: the sender works on batches of pages spread over blocks; a single array makes
zero detection, cache inserts and workload writes single numpy operations. ``np.zeros`` is
lazily backed by the OS, so a 4 GiB guest that is mostly zero costs little memory.

    >>> g = Guest.from_sizes([("pc.ram", 8 * 4096), ("vga.vram", 4 * 4096)])
    >>> g.n_pages, g.block("vga.vram").start, g.block("vga.vram").pages.shape
    (12, 8, (4, 4096))
    >>> g.mem_size().total
    49152
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ramlab import checks
from ramlab.errors import RamlabError, SimulationError
from ramlab.trace import BlockInfo
from ramlab.wire.events import RamBlockEntry, RamMemSize
from ramlab.wire.fields import encode_name

if TYPE_CHECKING:
    from ramlab.model.destination import Destination

TARGET_PAGE_SIZE = 4096
MAIN_BLOCK = "pc.ram"
HUGE_BLOCK = "m0"  # the main block of a guest on huge pages (-object memory-backend-file,id=m0)
HUGE_PAGE_SIZE = 2 << 20
_RAM_ADDR_ALIGN = 1 << 20
_BIG_GUEST = 64 << 20
#: the share of the machine's physical memory a simulation may plan to use (guest RAM + trace)
MEMORY_FRACTION = 0.8
#: used when the machine's memory cannot be read (os.sysconf unavailable)
_FALLBACK_MEMORY = 16 << 30


def memory_limit() -> int:
    """Bytes a simulation may use: :data:`MEMORY_FRACTION` of the machine's physical memory.

    A guest's RAM is lazily backed, but a workload may touch all of it, so a guest (plus its
    trace, see :func:`ramlab.simulate.simulate`) that would not fit is refused up front with
    a :class:`~ramlab.errors.SimulationError` instead of failing with ENOMEM or being killed.

    >>> memory_limit() > 0
    True
    """
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = _FALLBACK_MEMORY
    return int(total * MEMORY_FRACTION) if total > 0 else int(_FALLBACK_MEMORY * MEMORY_FRACTION)


@dataclass
class RamBlock:
    """One RAM block of the guest (a view into :attr:`Guest.mem`).

    ``start`` is the index of its first target page on the global page axis; ``page_size``
    the host page size (huge pages: 2 MiB...); ``ram_addr`` its ``ram_addr_t`` offset.
    """

    name: str
    used_length: int
    page_size: int
    start: int
    ram_addr: int
    pages: np.ndarray

    @property
    def n_pages(self) -> int:
        """Target pages of the block."""
        return self.used_length // TARGET_PAGE_SIZE

    @property
    def end(self) -> int:
        """Global index one past the block's last page."""
        return self.start + self.n_pages

    def flat(self) -> np.ndarray:
        """The block's bytes as a flat uint8 view."""
        return self.pages.reshape(-1)


class Guest:
    """All RAM blocks of a simulated VM over one page array (see the module docstring).

    Build it with :meth:`from_sizes` or :meth:`from_template` (the block list of a real
    capture, so that QEMU accepts a stream made for it).
    """

    def __init__(self, blocks: Sequence[tuple[str, int, int]], ram_addrs: Sequence[int] | None = None):
        blocks = _block_specs(blocks)
        total = sum(length for _, length, _ in blocks) // TARGET_PAGE_SIZE
        limit = memory_limit()
        if total * TARGET_PAGE_SIZE > limit:
            raise SimulationError(f"a guest of {total * TARGET_PAGE_SIZE:,} bytes of RAM does not fit: the limit is "
                                  f"{limit:,} bytes ({MEMORY_FRACTION:.0%} of this machine's memory)")
        if ram_addrs is not None:
            if not isinstance(ram_addrs, Sequence | np.ndarray) or len(ram_addrs) != len(blocks):
                raise SimulationError(f"ram_addrs must give one address per block ({len(blocks)}), "
                                      f"found {checks.describe(ram_addrs)}")
            ram_addrs = [checks.integer(a, f"ram_addrs[{i}]", SimulationError, min=0, max=1 << 56)
                         for i, a in enumerate(ram_addrs)]
        self.mem = _zeroed_pages(total)
        self.blocks: list[RamBlock] = []
        start = 0
        addr = 0
        for i, (name, length, page_size) in enumerate(blocks):
            n = length // TARGET_PAGE_SIZE
            ra = ram_addrs[i] if ram_addrs is not None else addr
            self.blocks.append(RamBlock(name, length, page_size, start, ra, self.mem[start : start + n]))
            start += n
            addr = -(-(ra + length) // _RAM_ADDR_ALIGN) * _RAM_ADDR_ALIGN
        self._by_name = {b.name: b for b in self.blocks}
        if len(self._by_name) != len(self.blocks):
            raise SimulationError("duplicate RAM block names")
        self.starts = np.array([b.start for b in self.blocks], np.int64)
        #: per global page: its ram_addr_t page number (ram_addr // 4096), the XBZRLE cache key
        self.ram_page = np.concatenate(
            [np.arange(b.n_pages, dtype=np.int64) + b.ram_addr // TARGET_PAGE_SIZE for b in self.blocks]
        ) if self.blocks else np.zeros(0, np.int64)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_sizes(cls, blocks: Iterable[tuple[str, int] | tuple[str, int, int]]) -> Guest:
        """Blocks given as ``(name, used_length[, page_size])``.

        >>> Guest.from_sizes([("pc.ram", 1 << 20)]).n_pages
        256
        """
        try:
            spec = [(b[0], b[1], b[2] if len(b) > 2 else TARGET_PAGE_SIZE) for b in blocks]
        except (TypeError, IndexError, KeyError):
            raise SimulationError(f"blocks must be (name, used_length[, page_size]) tuples, "
                                  f"found {checks.describe(blocks)}") from None
        return cls(spec)

    @classmethod
    def from_template(cls, template: Destination, ram_bytes: int | None = None, *, hugepages: bool = False) -> Guest:
        """The block list and final contents of a decoded capture (``ramlab.open(...).destination``).

        The main block (``pc.ram``, or ``m0`` in a huge-page capture) gets ``ram_bytes`` (default:
        the template's) and keeps the template's content in its first bytes; with ``hugepages`` it
        is called ``m0`` and has 2 MiB pages. Every other block (VGA RAM, ROMs, ACPI tables...)
        gets its size and final content from the template, so a destination QEMU started like
        the template's accepts the stream.
        """
        if not template.blocks:
            raise SimulationError("template has no RAM block list (MEM_SIZE)")
        spec, names = [], []
        for img in template.blocks.values():
            if img.name in (MAIN_BLOCK, HUGE_BLOCK):
                length = img.used_length if ram_bytes is None else int(ram_bytes)
                spec.append((HUGE_BLOCK if hugepages else img.name, length,
                             HUGE_PAGE_SIZE if hugepages else TARGET_PAGE_SIZE))
            else:
                spec.append((img.name, img.used_length, img.page_size))
            names.append(img.name)
        g = cls(spec)
        for (name, _, _), tname in zip(spec, names):
            src = template.ram(tname)
            dst = g.block(name).flat()
            n = min(src.size, dst.size)
            dst[:n] = src[:n]
        return g

    # ------------------------------------------------------------------ access
    @property
    def n_pages(self) -> int:
        """Target pages over all blocks."""
        return int(self.mem.shape[0])

    def block(self, name: str) -> RamBlock:
        """The block called ``name``."""
        if not isinstance(name, str) or name not in self._by_name:
            raise SimulationError(f"no RAM block {name!r}; blocks: {list(self._by_name)}")
        return self._by_name[name]

    @property
    def main(self) -> RamBlock:
        """``pc.ram`` if present, else the first (largest guest-visible) block."""
        return self._by_name.get(MAIN_BLOCK, self.blocks[0])

    def block_index_of(self, pages: np.ndarray) -> np.ndarray:
        """Index into :attr:`blocks` of each global page index."""
        return np.searchsorted(self.starts, pages, side="right") - 1

    def block_infos(self) -> tuple[BlockInfo, ...]:
        """The blocks as :class:`~ramlab.trace.BlockInfo` (the trace's page axis)."""
        return tuple(BlockInfo(b.name, b.used_length, b.page_size, b.start) for b in self.blocks)

    def mem_size(self) -> RamMemSize:
        """The ``MEM_SIZE`` record QEMU 7.2 writes in the RAM setup section (no postcopy)."""
        entries = tuple(RamBlockEntry(b.name, b.used_length) for b in self.blocks)
        return RamMemSize(total=sum(b.used_length for b in self.blocks), blocks=entries)

    def ram(self, copy: bool = True) -> dict[str, np.ndarray]:
        """Every block's bytes: ``{name: flat uint8 array}`` (copies, or views of :attr:`mem`)."""
        return {b.name: (b.flat().copy() if copy else b.flat()) for b in self.blocks}


def _block_specs(blocks: object) -> list[tuple[str, int, int]]:
    """``(name, used_length, page_size)`` triples, checked: a name of 1..255 bytes in UTF-8
    (QEMU's idstr, as the stream carries it), a positive multiple of 4096 bytes, a power-of-two
    page size of at least 4096 dividing the length."""
    if not isinstance(blocks, Sequence | np.ndarray):
        raise SimulationError(f"blocks must be a sequence of (name, used_length, page_size), "
                              f"found {checks.describe(blocks)}")
    out = []
    for b in blocks:
        if not isinstance(b, Sequence) or isinstance(b, str | bytes) or len(b) != 3:
            raise SimulationError(f"a block must be (name, used_length, page_size), found {checks.describe(b)}")
        name, length, page_size = b
        if not isinstance(name, str) or not 0 < len(name) <= 255 or not name.isprintable():
            raise SimulationError(f"a block name must be 1..255 printable characters, found {checks.describe(name)}")
        try:
            wire_len = len(encode_name(name))
        except RamlabError:
            wire_len = 256
        if wire_len > 255:
            raise SimulationError(f"block name {name!r} takes more than 255 bytes in UTF-8 (a cstr8 on the wire)")
        length = checks.integer(length, f"length of block {name!r}", SimulationError, min=1)
        page_size = checks.integer(page_size, f"page size of block {name!r}", SimulationError, min=1)
        if length % TARGET_PAGE_SIZE:
            raise SimulationError(f"block {name!r}: length {length} is not a positive multiple of 4096")
        if page_size < TARGET_PAGE_SIZE or page_size & (page_size - 1) or length % page_size:
            raise SimulationError(f"block {name!r}: bad page size {page_size} for length {length}")
        out.append((name, length, page_size))
    return out


def _zeroed_pages(n: int) -> np.ndarray:
    """``[n, 4096]`` zero pages, lazily backed. Large guests get an anonymous mapping with
    transparent huge pages off: workloads touch scattered 4 KiB pages, and with THP each first
    touch would zero (and keep) a whole 2 MiB page, 7x slower in practice. An allocation the
    system refuses is a :class:`~ramlab.errors.SimulationError`."""
    try:
        return _map_pages(n)
    except (OSError, MemoryError) as exc:
        raise SimulationError(f"cannot allocate a guest of {n * TARGET_PAGE_SIZE:,} bytes: {exc}") from None


def _map_pages(n: int) -> np.ndarray:
    size = n * TARGET_PAGE_SIZE
    if size < _BIG_GUEST or not hasattr(mmap, "MADV_NOHUGEPAGE"):
        return np.zeros((n, TARGET_PAGE_SIZE), np.uint8)
    mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        mm.madvise(mmap.MADV_NOHUGEPAGE)
    except OSError:
        pass
    return np.frombuffer(mm, np.uint8).reshape(n, TARGET_PAGE_SIZE)
