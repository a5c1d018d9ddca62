"""XBZRLE page cache: every branch of QEMU's cache_init / cache_is_cached / cache_insert."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramlab.errors import CacheError
from ramlab.model.page_cache import CACHED_PAGE_LIFETIME, PageCache, XbzrleCounters

PS = 4096


def page(value: int, size: int = PS) -> np.ndarray:
    return np.full(size, value, np.uint8)


def test_size_rounding_and_errors():
    assert PageCache(64 << 20).max_num_items == 16384
    assert PageCache(5 * PS).max_num_items == 4  # rounded down, as QEMU <= 2.10
    assert PageCache(5 * PS + 100).max_num_items == 4
    assert PageCache(PS).max_num_items == 1
    assert PageCache(2 * PS - 1).max_num_items == 1
    assert PageCache(5 * PS).cache_size == 4 * PS
    with pytest.raises(CacheError, match="smaller than the target page size"):
        PageCache(PS - 1)
    with pytest.raises(CacheError, match="power of two"):
        PageCache(5 * PS, strict=True)  # QEMU >= 2.11
    assert PageCache(4 * PS, strict=True).max_num_items == 4
    with pytest.raises(CacheError):
        PageCache(PS, page_size=0)


def test_slot_mapping_is_direct():
    c = PageCache(4 * PS)
    assert [c.slot_of(a) for a in (0, 0x1000, 0x3FFF, 0x4000, 0x5000, 0x13000)] == [0, 1, 3, 0, 1, 3]


def test_miss_then_insert_then_hit_refreshes_age():
    c = PageCache(4 * PS)
    assert not c.is_cached(0x1000, 1)
    assert c.get_cached_data(0x1000) is None
    assert c.insert(0x1000, page(7), 1) == 0
    assert c.num_items == 1
    assert c.is_cached(0x1000, 5)
    assert c.age[1] == 5
    assert not c.is_cached(0x5000, 9)  # same slot, other address: miss, age untouched
    assert c.age[1] == 5
    assert (c.get_cached_data(0x1000) == 7).all()
    # No tag check, like QEMU: any address of the slot gets its data.
    assert (c.get_cached_data(0x5000) == 7).all()


def test_fresh_different_entry_is_kept_stale_one_evicted():
    c = PageCache(4 * PS)
    assert c.insert(0x1000, page(1), 10) == 0
    for age in (10, 11):  # 10 + 2 > age: still fresh
        assert c.insert(0x5000, page(2), age) == -1
        assert c.addr[1] == 0x1000 and (c.data[1] == 1).all()
    assert c.insert(0x5000, page(2), 10 + CACHED_PAGE_LIFETIME) == 0
    assert c.addr[1] == 0x5000 and c.age[1] == 12 and (c.data[1] == 2).all()
    assert c.num_items == 1  # slot reused, not a new item


def test_hit_keeps_entry_fresh():
    c = PageCache(4 * PS)
    c.insert(0x1000, page(1), 0)
    assert c.is_cached(0x1000, 5)
    assert c.insert(0x5000, page(2), 6) == -1
    assert c.insert(0x5000, page(2), 7) == 0


def test_same_address_reinsert_always_succeeds():
    c = PageCache(4 * PS)
    c.insert(0x2000, page(1), 100)
    assert c.insert(0x2000, page(3), 100) == 0
    assert c.insert(0x2000, page(4), 50) == 0  # even with an older age
    assert c.age[2] == 50 and (c.data[2] == 4).all() and c.num_items == 1


def test_insert_copies_data():
    c = PageCache(2 * PS)
    src = page(9)
    c.insert(0, src, 0)
    src[:] = 0
    assert (c.get_cached_data(0) == 9).all()
    c.insert(PS, bytes(range(256)) * 16, 0)
    assert c.get_cached_data(PS)[:3].tolist() == [0, 1, 2]
    with pytest.raises(CacheError):
        c.insert(0, b"short", 0)


def test_resize():
    c = PageCache(4 * PS)
    c.insert(0x1000, page(1), 0)
    c.counters.cache_miss = 3
    c.resize(5 * PS)  # requested value changes: a new empty cache (rounded to 4 slots)
    assert c.max_num_items == 4 and c.num_items == 0 and not c.is_cached(0x1000, 0)
    c.insert(0x1000, page(1), 0)
    c.resize(5 * PS)  # same requested size: no-op
    assert c.is_cached(0x1000, 0)
    c.resize(8 * PS)
    assert c.max_num_items == 8 and c.num_items == 0
    with pytest.raises(CacheError):
        c.resize(100)
    assert c.max_num_items == 8  # old cache kept on error
    assert c.counters.cache_miss == 3  # counters belong to the sender and survive


def test_counters():
    k = XbzrleCounters()
    k.cache_miss += 2
    k.bytes += 100
    assert k.as_dict() == {"cache_miss": 2, "overflow": 0, "pages": 0, "bytes": 100, "cache_miss_rate": 0.0}
    k.reset()
    assert k.as_dict()["bytes"] == 0


class Model:
    """Dictionary model of QEMU's cache, written from algorithms.md §7."""

    def __init__(self, slots: int, ps: int) -> None:
        self.slots, self.ps = slots, ps
        self.s = [None] * slots  # (addr, age, data)

    def is_cached(self, a, age):
        k = (a // self.ps) & (self.slots - 1)
        if self.s[k] is not None and self.s[k][0] == a:
            self.s[k] = (a, age, self.s[k][2])
            return True
        return False

    def insert(self, a, data, age):
        k = (a // self.ps) & (self.slots - 1)
        e = self.s[k]
        if e is not None and e[0] != a and e[1] + 2 > age:
            return -1
        self.s[k] = (a, age, bytes(data))
        return 0


ops = st.lists(
    st.tuples(st.sampled_from(["lookup", "insert"]),
              st.lists(st.integers(0, 15), min_size=1, max_size=12),
              st.integers(0, 3)),
    max_size=15,
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_batch_helpers_equal_sequential_calls(program):
    ps = 16
    batch, scalar = PageCache(4 * ps, ps), PageCache(4 * ps, ps)
    model = Model(4, ps)
    age = 0
    for op, pages, dage in program:
        age += dage
        addrs = np.array(pages, np.int64) * ps
        if op == "lookup":
            got = batch.lookup_batch(addrs, age)
            want = [scalar.is_cached(int(a), age) for a in addrs]
            assert [model.is_cached(int(a), age) for a in addrs] == want
        else:
            data = (np.arange(len(pages))[:, None] + addrs[:, None] + age).astype(np.uint8).repeat(ps, 1)
            got = batch.insert_batch(addrs, data, age)
            want = [scalar.insert(int(a), d, age) == 0 for a, d in zip(addrs, data)]
            assert [model.insert(int(a), d, age) == 0 for a, d in zip(addrs, data)] == want
        assert got.tolist() == want
        assert np.array_equal(batch.addr, scalar.addr)
        assert np.array_equal(batch.age, scalar.age)
        assert batch.num_items == scalar.num_items
        for k in range(4):
            if scalar.allocated[k]:
                assert np.array_equal(batch.data[k], scalar.data[k])
                assert model.s[k] == (scalar.addr[k], scalar.age[k], scalar.data[k].tobytes())
            else:
                assert model.s[k] is None


def test_insert_batch_conflicts_in_one_slot():
    c = PageCache(2 * PS)
    c.insert(0x0, page(1), 0)
    data = np.stack([page(2), page(3), page(4), page(5)])
    # slot 0 held by 0x0 since age 0; at age 1 still fresh: only 0x0 may write
    assert c.insert_batch(np.array([0x2000, 0x0, 0x4000, 0x0]), data, 1).tolist() == [False, True, False, True]
    assert (c.data[0] == 5).all()
    # at age 5 stale: the first address of the batch takes it, later others fail
    assert c.insert_batch(np.array([0x2000, 0x0, 0x2000]), data[:3], 5).tolist() == [True, False, True]
    assert c.addr[0] == 0x2000 and (c.data[0] == 4).all()
