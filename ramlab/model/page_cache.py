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
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ramlab.errors import CacheError

__all__ = ["CACHED_PAGE_LIFETIME", "PageCache", "XbzrleCounters"]

CACHED_PAGE_LIFETIME = 2  # a cached page is not replaced for two sync generations
NO_ADDR = -1


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


def _slot_count(cache_size: int, page_size: int, strict: bool) -> int:
    if page_size <= 0:
        raise CacheError(f"page size must be positive, got {page_size}")
    if cache_size < page_size:
        raise CacheError(f"cache size {cache_size} is smaller than the target page size {page_size}")
    num_pages = cache_size // page_size
    if num_pages & (num_pages - 1):
        if strict:
            raise CacheError(f"number of pages {num_pages} (cache size {cache_size}) is not a power of two")
        num_pages = 1 << (num_pages.bit_length() - 1)
    return num_pages


class PageCache:
    """QEMU's ``PageCache`` with ``cache_init`` / ``cache_is_cached`` / ``cache_insert``.

    ``cache_size_bytes // page_size`` slots, rounded DOWN to a power of two as QEMU up to
    2.10 did (``pow2floor``). QEMU 2.11 and later, including the ~3.0 seed, reject a
    non-power-of-two count instead: pass ``strict=True`` for that. A size below one page
    is a :class:`~ramlab.errors.CacheError` either way.

    >>> PageCache(3 * 4096).max_num_items, PageCache(64 << 20).max_num_items
    (2, 16384)
    """

    def __init__(self, cache_size_bytes: int, page_size: int = 4096, *, strict: bool = False) -> None:
        self.page_size = int(page_size)
        self.strict = strict
        self.counters = XbzrleCounters()
        self._init(int(cache_size_bytes))

    def _init(self, cache_size: int) -> None:
        self.max_num_items = _slot_count(cache_size, self.page_size, self.strict)
        self.requested_size = cache_size
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
        """``cache_get_cache_pos``: the slot an address maps to.

        >>> PageCache(4 * 4096).slot_of(0x5000)
        1
        """
        return (addr // self.page_size) & (self.max_num_items - 1)

    def is_cached(self, addr: int, age: int) -> bool:
        """``cache_is_cached``: True if the slot holds ``addr``; a hit refreshes its age."""
        s = self.slot_of(addr)
        if self.addr[s] == addr:
            self.age[s] = age
            return True
        return False

    def get_cached_data(self, addr: int) -> np.ndarray | None:
        """``get_cached_data``: the slot's page (a writable view) or None if never filled.

        Like QEMU there is no tag check: call :meth:`is_cached` first. The sender writes
        the new page into this view after a successful XBZRLE encode.
        """
        s = self.slot_of(addr)
        return self.data[s] if self.allocated[s] else None

    def insert(self, addr: int, data: bytes | bytearray | memoryview | np.ndarray, age: int) -> int:
        """``cache_insert``: copy ``data`` into ``addr``'s slot; 0 on success, -1 if refused.

        Refused when the slot holds a *different* address that is still fresh
        (``slot age + CACHED_PAGE_LIFETIME > age``). Re-inserting the same address always
        succeeds. (QEMU also returns -1 when allocating the page fails; not modelled.)
        """
        page = self._page(data)
        s = self.slot_of(addr)
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
        new_size = int(new_size)
        if new_size == self.requested_size:
            return
        _slot_count(new_size, self.page_size, self.strict)  # validate before dropping content
        self._init(new_size)

    # --- batch forms ----------------------------------------------------------------

    def lookup_batch(self, addrs: np.ndarray, age: int) -> np.ndarray:
        """:meth:`is_cached` for every address (as if called in order): hit mask.

        Lookups never change which address a slot holds, so order does not matter.

        >>> c = PageCache(4 * 4096); _ = c.insert(0x1000, bytes(4096), 0)
        >>> c.lookup_batch(np.array([0x1000, 0x5000, 0x2000]), age=3).tolist(), int(c.age[1])
        ([True, False, False], 3)
        """
        addrs = np.asarray(addrs, np.int64)
        slots = self.slot_of(addrs)
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
        addrs = np.asarray(addrs, np.int64)
        pages2d = np.asarray(pages2d)
        if pages2d.dtype != np.uint8 or pages2d.shape != (addrs.size, self.page_size):
            raise CacheError(f"pages2d must be uint8 of shape ({addrs.size}, {self.page_size}), "
                             f"got {pages2d.dtype} {pages2d.shape}")
        slots = self.slot_of(addrs)
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
        page = data if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
        if page.dtype != np.uint8 or page.size != self.page_size:
            raise CacheError(f"page data must be {self.page_size} uint8 bytes, got {page.dtype} x {page.size}")
        return page.reshape(-1)

    def __repr__(self) -> str:
        return (f"PageCache(slots={self.max_num_items}, page_size={self.page_size}, "
                f"num_items={self.num_items})")
