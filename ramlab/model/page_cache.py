"""The sender's XBZRLE page cache (QEMU ``migration/page_cache.c``), numpy-backed.

A direct-mapped cache of ``max_num_items`` page copies keyed by the global
``ram_addr_t``: ``slot = (addr // page_size) & (max_num_items - 1)``. A slot owned by a
*different* address is only replaced once it is stale: ``it_age + CACHED_PAGE_LIFETIME
<= current_age`` (ages are the sender's ``dirty_sync_count``). See
``docs/reference/algorithms.md`` §6.3 and §7.

Storage: one ``[max_num_items, page_size]`` uint8 array (allocated zeroed on the first
insert; the OS commits its pages only when written) plus ``addr`` / ``age`` int64 arrays
and an ``allocated`` mask standing for QEMU's ``it_data != NULL``. An empty slot has
``addr == -1`` (QEMU's all-ones ``uint64_t``).

    >>> cache = PageCache(4 * 4096)
    >>> cache.insert(0x5000, bytes(4096), age=1), cache.is_cached(0x5000, age=1)
    (0, True)
    >>> cache.insert(0x1000, bytes(4096), age=2)  # same slot, entry still fresh
    -1

Bounded memory: a cache larger than the addresses it can ever see keeps only the slots those
addresses map to (``max_addr``, see :class:`PageCache`), and without ``max_addr`` a cache is
limited to :data:`MAX_SLOTS` slots, so ``PageCache(1 << 40)`` is a clear
:class:`~ramlab.errors.CacheError`, not 2 GB of slot tables.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ramlab import checks
from ramlab.errors import CacheError

__all__ = ["CACHED_PAGE_LIFETIME", "MAX_SLOTS", "PageCache", "XbzrleCounters"]

CACHED_PAGE_LIFETIME = 2  # a cached page is not replaced for two sync generations
NO_ADDR = -1
#: most slots without ``max_addr``: 2**26 pages (a 256 GiB cache of 4 KiB pages, 1 GiB of slot tables)
MAX_SLOTS = 1 << 26
#: QEMU's xbzrle_cache_resize refuses sizes that do not fit its size_t ("exceeding address space")
MAX_CACHE_SIZE = (1 << 64) - 1


@dataclass
class XbzrleCounters:
    """QEMU's ``xbzrle_counters``: kept and updated by the *sender*, not by the cache.

    In the seed's ``save_xbzrle_page``: ``cache_miss += 1`` on a miss; ``overflow += 1``
    when the encoder returns -1; ``pages += 1`` and ``bytes += record size`` for every
    XBZRLE record sent. ``cache_miss_rate`` is computed by ``migration_update_rates``
    (misses / iterations since the last rate period). They survive a cache resize.

    >>> c = XbzrleCounters(); c.cache_miss += 1; c.as_dict()["cache_miss"]
    1
    """

    cache_miss: int = 0
    overflow: int = 0
    pages: int = 0
    bytes: int = 0
    cache_miss_rate: float = 0.0

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)

    def as_dict(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _slot_count(cache_size: object, page_size: int, strict: bool, max_addr: int | None) -> tuple[int, int, int]:
    """``(requested size, slots QEMU would have, slots kept)`` for ``cache_init(cache_size)``."""
    cache_size = checks.integer(cache_size, "cache size", CacheError, min=0, max=MAX_CACHE_SIZE)
    if cache_size < page_size:
        raise CacheError(f"cache size {cache_size} is smaller than the target page size {page_size}")
    num_pages = cache_size // page_size
    if num_pages & (num_pages - 1):
        if strict:
            raise CacheError(f"number of pages {num_pages} (cache size {cache_size}) is not a power of two")
        num_pages = 1 << (num_pages.bit_length() - 1)
    kept = num_pages
    if max_addr is not None:  # addresses < max_addr: more slots than their pages are never used
        kept = min(num_pages, 1 << max(0, (-(-max_addr // page_size) - 1).bit_length()))
    if kept > MAX_SLOTS:
        raise CacheError(f"a cache of {num_pages} pages exceeds the model's {MAX_SLOTS} slots "
                         f"(pass max_addr, the address space it serves, to keep only the slots it can use)")
    return cache_size, num_pages, kept


class PageCache:
    """QEMU's ``PageCache`` with ``cache_init`` / ``cache_is_cached`` / ``cache_insert``.

    ``cache_size_bytes // page_size`` slots, rounded DOWN to a power of two as QEMU up to
    2.10 did (``pow2floor``). QEMU 2.11 and later, including the ~3.0 seed, reject a
    non-power-of-two count instead: pass ``strict=True`` for that. A size below one page
    is a :class:`~ramlab.errors.CacheError` either way.

    >>> PageCache(3 * 4096).max_num_items, PageCache(64 << 20).max_num_items
    (2, 16384)

    ``max_addr`` (bytes, optional): every address the cache will see is below it. QEMU
    allocates a cached page only on insert, so a cache larger than the guest costs it only
    its slot table; here the slot tables are arrays, so the cache keeps ``min(slots,
    next power of two >= max_addr / page_size)`` slots -- the same slot for every address,
    hence the same decisions -- and refuses addresses at or above ``max_addr``.
    ``qemu_slots`` is the count QEMU would have.

    >>> c = PageCache(1 << 40, max_addr=16 << 20)   # a 1 TiB cache for a 16 MiB guest
    >>> c.qemu_slots, c.max_num_items
    (268435456, 4096)
    """

    def __init__(self, cache_size_bytes: int, page_size: int = 4096, *, strict: bool = False,
                 max_addr: int | None = None) -> None:
        self.page_size = checks.integer(page_size, "page size", CacheError, min=1)
        self.strict = checks.flag(strict, "strict", CacheError)
        self.max_addr = None if max_addr is None else checks.integer(max_addr, "max_addr", CacheError, min=1)
        self.counters = XbzrleCounters()
        self._init(cache_size_bytes)

    def _init(self, cache_size: object) -> None:
        self.requested_size, self.qemu_slots, self.max_num_items = _slot_count(
            cache_size, self.page_size, self.strict, self.max_addr)
        self.num_items = 0
        self.addr = np.full(self.max_num_items, NO_ADDR, np.int64)
        self.age = np.zeros(self.max_num_items, np.int64)
        self.allocated = np.zeros(self.max_num_items, bool)
        self._data: np.ndarray | None = None

    @property
    def cache_size(self) -> int:
        """Bytes of page data the cache can hold (after rounding)."""
        return self.max_num_items * self.page_size

    @property
    def data(self) -> np.ndarray:
        """The ``[max_num_items, page_size]`` page store (allocated on first use)."""
        if self._data is None:
            self._data = np.zeros((self.max_num_items, self.page_size), np.uint8)
        return self._data

    def slot_of(self, addr: int | np.ndarray) -> int | np.ndarray:
        """``cache_get_cache_pos``: the slot an address maps to (an address or an array of them).

        >>> PageCache(4 * 4096).slot_of(0x5000)
        1
        """
        if isinstance(addr, np.ndarray):
            return self._slot(self._addrs(addr))
        return self._slot(self._addr(addr))

    def _slot(self, addr: int | np.ndarray) -> int | np.ndarray:
        return (addr // self.page_size) & (self.max_num_items - 1)

    def _addr(self, addr: object) -> int:
        hi = checks.MAX_INT if self.max_addr is None else self.max_addr - 1
        return checks.integer(addr, "cache address", CacheError, min=0, max=hi)

    def _addrs(self, addrs: object) -> np.ndarray:
        """Addresses as int64, checked in one pass: integers in ``0 .. max_addr - 1``."""
        try:
            a = np.asarray(addrs)
        except (TypeError, ValueError, OverflowError):
            a = None
        if a is None or (a.size and a.dtype.kind not in "iu") or a.ndim > 1:
            raise CacheError(f"cache addresses must be a 1-D integer array, found {checks.describe(addrs)}")
        a = a.reshape(-1)
        if a.size:
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi > (checks.MAX_INT if self.max_addr is None else self.max_addr - 1):
                raise CacheError(f"cache addresses must lie in 0..{(self.max_addr or checks.MAX_INT + 1) - 1}, "
                                 f"found {lo if lo < 0 else hi}")
        return a.astype(np.int64, copy=False)

    def is_cached(self, addr: int, age: int) -> bool:
        """``cache_is_cached``: True if the slot holds ``addr``; a hit refreshes its age."""
        addr = self._addr(addr)
        age = checks.integer(age, "age", CacheError)
        s = self._slot(addr)
        if self.addr[s] == addr:
            self.age[s] = age
            return True
        return False

    def get_cached_data(self, addr: int) -> np.ndarray | None:
        """``get_cached_data``: the slot's page (a writable view) or None if never filled.

        Like QEMU there is no tag check: call :meth:`is_cached` first. The sender writes
        the new page into this view after a successful XBZRLE encode.
        """
        s = self._slot(self._addr(addr))
        return self.data[s] if self.allocated[s] else None

    def insert(self, addr: int, data: bytes | bytearray | memoryview | np.ndarray, age: int) -> int:
        """``cache_insert``: copy ``data`` into ``addr``'s slot; 0 on success, -1 if refused.

        Refused when the slot holds a *different* address that is still fresh
        (``slot age + CACHED_PAGE_LIFETIME > age``). Re-inserting the same address always
        succeeds. (QEMU also returns -1 when allocating the page fails; not modelled.)
        """
        page = self._page(data)
        addr = self._addr(addr)
        age = checks.integer(age, "age", CacheError)
        s = self._slot(addr)
        if self.allocated[s] and self.addr[s] != addr and self.age[s] + CACHED_PAGE_LIFETIME > age:
            return -1
        if not self.allocated[s]:
            self.allocated[s] = True
            self.num_items += 1
        self.data[s] = page
        self.age[s] = age
        self.addr[s] = addr
        return 0

    def resize(self, new_size: int) -> None:
        """``xbzrle_cache_resize``: a new empty cache, unless ``new_size`` is the current one.

        The comparison is with the size last *requested* (QEMU compares with the
        ``xbzrle-cache-size`` parameter, before rounding). On error the old cache stays.
        """
        new_size = checks.integer(new_size, "cache size", CacheError, min=0, max=MAX_CACHE_SIZE)
        if new_size == self.requested_size:
            return
        _slot_count(new_size, self.page_size, self.strict, self.max_addr)  # validate before dropping content
        self._init(new_size)

    # --- batch forms ----------------------------------------------------------------

    def lookup_batch(self, addrs: np.ndarray, age: int) -> np.ndarray:
        """:meth:`is_cached` for every address (as if called in order): hit mask.

        Lookups never change which address a slot holds, so order does not matter.

        >>> c = PageCache(4 * 4096); _ = c.insert(0x1000, bytes(4096), 0)
        >>> c.lookup_batch(np.array([0x1000, 0x5000, 0x2000]), age=3).tolist(), int(c.age[1])
        ([True, False, False], 3)
        """
        addrs = self._addrs(addrs)
        age = checks.integer(age, "age", CacheError)
        slots = self._slot(addrs)
        hit = self.addr[slots] == addrs
        self.age[slots[hit]] = age
        return hit

    def insert_batch(self, addrs: np.ndarray, pages2d: np.ndarray, age: int) -> np.ndarray:
        """:meth:`insert` for every (address, page) pair in order: success mask.

        Exact under slot conflicts. Per slot, the address that ends up owning it is the
        old owner if that one is still fresh, else the first address of the batch mapping
        there; every insert of that owner succeeds (the last one's data stays) and every
        other insert to the slot fails, exactly as sequential calls would decide.

        >>> c = PageCache(2 * 4096)
        >>> pages = np.arange(3, dtype=np.uint8)[:, None].repeat(4096, axis=1)
        >>> c.insert_batch(np.array([0x0, 0x2000, 0x0]), pages, age=5).tolist(), int(c.data[0, 0])
        ([True, False, True], 2)
        """
        addrs = self._addrs(addrs)
        age = checks.integer(age, "age", CacheError)
        if not isinstance(pages2d, np.ndarray) or pages2d.dtype != np.uint8 or \
                pages2d.shape != (addrs.size, self.page_size):
            raise CacheError(f"pages2d must be uint8 of shape ({addrs.size}, {self.page_size}), "
                             f"found {checks.describe(pages2d)}")
        slots = self._slot(addrs)
        uniq, first, inverse = np.unique(slots, return_index=True, return_inverse=True)
        evictable = ~self.allocated[uniq] | (self.age[uniq] + CACHED_PAGE_LIFETIME <= age)
        owner = np.where(evictable, addrs[first], self.addr[uniq])
        ok = addrs == owner[inverse.reshape(-1)]
        if not ok.any():
            return ok
        won = np.flatnonzero(ok)
        # Last successful insert per slot: first occurrence in the reversed success list.
        won_slots, last_rev = np.unique(slots[won][::-1], return_index=True)
        last = won[::-1][last_rev]
        self.num_items += int((~self.allocated[won_slots]).sum())
        self.allocated[won_slots] = True
        self.data[won_slots] = pages2d[last]
        self.age[won_slots] = age
        self.addr[won_slots] = addrs[last]
        return ok

    def _page(self, data) -> np.ndarray:
        if isinstance(data, np.ndarray) and data.dtype == np.uint8:
            data = data.reshape(-1)
        page = checks.buffer(data, "page data", CacheError)
        if page.size != self.page_size:
            raise CacheError(f"page data must be {self.page_size} uint8 bytes, found {page.size}")
        return page

    def __repr__(self) -> str:
        return (f"PageCache(slots={self.max_num_items}, page_size={self.page_size}, "
                f"num_items={self.num_items})")
