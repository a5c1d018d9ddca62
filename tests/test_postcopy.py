"""Tests of ramlab.model.postcopy_plan: discard planning, batching, requests, placement, recovery.

The discard planner is checked against straightforward transliterations of the seed's
``postcopy_chunk_hostpages_pass`` / ``postcopy_send_discard_bm_ram`` (and of 7.2's
single pass), written below with find_next_bit / find_next_zero_bit helpers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab.errors import PostcopyError
from ramlab.model.postcopy_plan import (
    DiscardPlan,
    PostcopyPlacer,
    RequestQueue,
    bitmap_runs,
    discard_batches,
    plan_discards,
    recv_bitmap_size,
    recv_bitmap_to_dirty,
)
from ramlab.wire.recv_bitmap import decode_recv_bitmap, encode_recv_bitmap

RATIOS = [1, 2, 4, 8, 16, 512]


# ----------------------------------------------------------------------------------
# reference transliterations of the C loops
# ----------------------------------------------------------------------------------


def find_next_bit(bits: list[bool], size: int, start: int) -> int:
    for i in range(start, size):
        if bits[i]:
            return i
    return size


def find_next_zero_bit(bits: list[bool], size: int, start: int) -> int:
    for i in range(start, size):
        if not bits[i]:
            return i
    return size


def ref_chunk_pass(unsent_pass: bool, bmap: list[bool], unsentmap: list[bool], r: int, out: list) -> None:
    pages = len(bmap)
    if r == 1:
        return
    if unsent_pass:
        run_start = find_next_zero_bit(unsentmap, pages, 0)
    else:
        run_start = find_next_bit(bmap, pages, 0)
    while run_start < pages:
        do_fixup = False
        fixup_start_addr = 0
        host_offset = run_start % r
        if host_offset:
            do_fixup = True
            run_start -= host_offset
            fixup_start_addr = run_start
            run_start = run_start + r
        else:
            if unsent_pass:
                run_end = find_next_bit(unsentmap, pages, run_start + 1)
            else:
                run_end = find_next_zero_bit(bmap, pages, run_start + 1)
            host_offset = run_end % r
            if host_offset:
                do_fixup = True
                fixup_start_addr = run_end - host_offset
                run_start = fixup_start_addr + r
            else:
                run_start = run_end + 1
        if do_fixup:
            if unsent_pass or not unsentmap[fixup_start_addr]:
                out.append((fixup_start_addr, r))
            for page in range(fixup_start_addr, fixup_start_addr + r):
                unsentmap[page] = True
                bmap[page] = True
        if unsent_pass:
            run_start = find_next_zero_bit(unsentmap, pages, run_start)
        else:
            run_start = find_next_bit(bmap, pages, run_start)


def ref_send_bm(unsentmap: list[bool], out: list) -> None:
    end = len(unsentmap)
    current = 0
    while current < end:
        one = find_next_bit(unsentmap, end, current)
        if one <= end:  # the seed's always-true test
            zero = find_next_zero_bit(unsentmap, end, one + 1)
            discard_length = end - one if zero >= end else zero - one
            if discard_length:
                out.append((one, discard_length))
            current = one + discard_length
        else:
            current = one
        if one == end:
            break  # (C: current = one + 0 = end ends the loop too)


def ref_seed(dirty, unsent, r):
    bmap = [bool(x) for x in dirty]
    unsentmap = [bool(x) for x in unsent]
    chunk: list = []
    ref_chunk_pass(True, bmap, unsentmap, r, chunk)
    ref_chunk_pass(False, bmap, unsentmap, r, chunk)
    after_unsent = list(unsentmap)
    orred = [a or b for a, b in zip(unsentmap, bmap)]
    final: list = []
    ref_send_bm(orred, final)
    return chunk, final, bmap, after_unsent, orred


def ref_modern(dirty, r):
    bmap = [bool(x) for x in dirty]
    pages = len(bmap)
    if r > 1:
        s = find_next_bit(bmap, pages, 0)
        while s < pages:
            if s % r == 0:
                s = find_next_zero_bit(bmap, pages, s + 1)
            if s % r:
                fix = s - s % r
                s = fix + r
                for p in range(fix, fix + r):
                    bmap[p] = True
            s = find_next_bit(bmap, pages, s)
    final: list = []
    end = pages
    cur = 0
    while cur < end:
        one = find_next_bit(bmap, end, cur)
        if one >= end:
            break
        zero = find_next_zero_bit(bmap, end, one + 1)
        length = min(zero, end) - one
        final.append((one, length))
        cur = one + length
    return final, bmap


def check_against_reference(dirty: np.ndarray, unsent: np.ndarray, r: int) -> DiscardPlan:
    plan = plan_discards(dirty, unsent, r)
    chunk, final, bmap, after_unsent, orred = ref_seed(dirty, unsent, r)
    assert plan.chunk_ranges == chunk
    assert plan.final_ranges == final
    assert plan.ranges == chunk + final
    assert plan.dirty.tolist() == bmap
    assert plan.unsent.tolist() == after_unsent
    assert plan.discard_map.tolist() == orred
    mplan = plan_discards(dirty, unsent, r, algorithm="modern")
    mfinal, mbmap = ref_modern(dirty, r)
    assert mplan.ranges == mfinal
    assert mplan.chunk_ranges == []
    assert mplan.dirty.tolist() == mbmap
    return plan


def check_invariants(dirty: np.ndarray, unsent: np.ndarray, r: int, plan: DiscardPlan) -> None:
    hp = dirty.size // r
    d = plan.dirty.reshape(hp, r)
    u = plan.unsent.reshape(hp, r)
    # no host page partly dirty / partly unsent after planning
    assert (d.all(1) == d.any(1)).all()
    assert (u.all(1) == u.any(1)).all()
    # fix-ups only ever set bits
    assert (plan.dirty >= dirty).all() and (plan.unsent >= unsent).all()
    covered = np.zeros(dirty.size, bool)
    for s, n in plan.ranges:
        assert n > 0 and 0 <= s and s + n <= dirty.size
        covered[s : s + n] = True
    # every page dirty or unsent is discarded; every discarded page is in the final map
    assert (covered >= (dirty | unsent)).all()
    assert (covered == plan.discard_map).all()
    # every partly sent host page is discarded entirely
    u0 = unsent.reshape(hp, r)
    partly_sent = u0.any(1) & ~u0.all(1)
    cov = covered.reshape(hp, r)
    assert cov[partly_sent].all()
    # every host page that was sent and is partly dirty is discarded entirely
    d0 = dirty.reshape(hp, r)
    assert cov[d0.any(1)].all()
    # chunk ranges: exactly one host page each, aligned, no repeats, and each lies
    # inside a final run (the seed's double discard)
    seen = set()
    for s, n in plan.chunk_ranges:
        assert n == r and s % r == 0 and s not in seen
        seen.add(s)
    assert plan.duplicated_ranges == plan.chunk_ranges
    # final ranges: host-page aligned, ascending, disjoint, not touching
    prev_end = -1
    for s, n in plan.final_ranges:
        assert s % r == 0 and n % r == 0 and s > prev_end
        prev_end = s + n
    # the modern plan discards the same pages (when unsent is a subset of dirty)
    if not (unsent & ~dirty).any():
        mplan = plan_discards(dirty, unsent, r, algorithm="modern")
        assert mplan.final_ranges == plan.final_ranges


@st.composite
def bitmaps(draw):
    r = draw(st.sampled_from(RATIOS))
    max_hp = 3 if r == 512 else 12
    hp = draw(st.integers(1, max_hp))
    n = hp * r
    mode = draw(st.sampled_from(["random", "sparse", "runs", "realistic"]))
    if mode == "random":
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        dirty = rng.random(n) < draw(st.floats(0, 1))
        unsent = rng.random(n) < draw(st.floats(0, 1))
    elif mode == "sparse":
        dirty = np.zeros(n, bool)
        unsent = np.zeros(n, bool)
        for i in draw(st.lists(st.integers(0, n - 1), max_size=6)):
            dirty[i] = True
        for i in draw(st.lists(st.integers(0, n - 1), max_size=6)):
            unsent[i] = True
    else:
        dirty = np.zeros(n, bool)
        unsent = np.zeros(n, bool)
        for _ in range(draw(st.integers(0, 4))):
            a = draw(st.integers(0, n - 1))
            b = draw(st.integers(a, n))
            dirty[a:b] = True
        # a realistic precopy state: a scan stopped at some page, unsent = tail
        stop = draw(st.integers(0, n))
        unsent[stop:] = True
        if mode == "realistic":
            dirty |= unsent  # QEMU: a never-sent page keeps its dirty bit
    return dirty, unsent, r


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bitmaps())
def test_plan_matches_reference_and_invariants(case):
    dirty, unsent, r = case
    plan = check_against_reference(dirty, unsent, r)
    check_invariants(dirty, unsent, r, plan)


@pytest.mark.parametrize("r", RATIOS)
def test_structured_bitmaps(r):
    n = 8 * r
    patterns = {
        "empty": (np.zeros(n, bool), np.zeros(n, bool)),
        "all dirty": (np.ones(n, bool), np.zeros(n, bool)),
        "all unsent": (np.ones(n, bool), np.ones(n, bool)),
        "alternate": (np.arange(n) % 2 == 0, np.arange(n) % 3 == 0),
        "last page": (np.arange(n) == n - 1, np.zeros(n, bool)),
        "first page unsent": (np.zeros(n, bool), np.arange(n) == 0),
        "tail unsent mid host page": (np.arange(n) >= 3 * r + r // 2, np.arange(n) >= 3 * r + r // 2),
        "checker": ((np.arange(n) // max(1, r // 2)) % 2 == 1, np.zeros(n, bool)),
    }
    for dirty, unsent in patterns.values():
        plan = check_against_reference(dirty, unsent, r)
        check_invariants(dirty, unsent, r, plan)


def test_hand_checked_seed_order():
    # host_ratio 4, two host pages (hp0 = pages 0-3, hp1 = pages 4-7)
    #   dirty  = . . 1 .   . . . .
    #   unsent = . . . .   . 1 1 1
    # unsent pass: sent runs are [0,5): starts aligned, ends at 5 (inside hp1)
    #   -> discard (4,4), hp1 becomes all unsent + all dirty.
    # dirty pass: dirty runs: [2,3) starts at 2 (inside hp0) -> fix hp0; hp0's first
    #   page was sent -> discard (0,4); then run [4,8) aligned, ends at 8: nothing.
    # final: unsent|dirty = all 8 pages -> (0,8). hp0 and hp1 are each discarded twice.
    d = np.array([0, 0, 1, 0, 0, 0, 0, 0], bool)
    u = np.array([0, 0, 0, 0, 0, 1, 1, 1], bool)
    plan = plan_discards(d, u, 4)
    assert plan.chunk_ranges == [(4, 4), (0, 4)]
    assert plan.final_ranges == [(0, 8)]
    assert plan.ranges == [(4, 4), (0, 4), (0, 8)]
    assert [s.name for s in plan.steps] == ["unsent_pass", "dirty_pass", "or", "send_runs"]
    assert plan.steps[0].fixups.tolist() == [1] and plan.steps[1].fixups.tolist() == [0]
    assert plan.ranges_bytes() == [(0x4000, 0x4000), (0, 0x4000), (0, 0x8000)]


def test_hand_checked_unsent_hostpage_not_sent_in_dirty_pass():
    # host_ratio 2, three host pages.
    #   dirty  = 1 . | . . | . 1
    #   unsent = 1 1 | . . | . .
    # unsent pass: first sent page is 2 (aligned); run [2,6) ends at 6 = end: no fix.
    # dirty pass: run [0,1): ends at 1 inside hp0 -> fix hp0, but hp0 is unsent -> NOT
    #   sent; next dirty page 5 starts inside hp2 -> fix hp2, sent -> (4,2).
    # final: unsent|dirty = 1 1 . . 1 1 -> (0,2), (4,2); hp2 discarded twice.
    d = np.array([1, 0, 0, 0, 0, 1], bool)
    u = np.array([1, 1, 0, 0, 0, 0], bool)
    plan = plan_discards(d, u, 2)
    assert plan.ranges == [(4, 2), (0, 2), (4, 2)]
    assert plan.steps[1].fixups.tolist() == [0, 2]
    assert plan.steps[1].sent == ((4, 2),)
    assert plan.dirty.tolist() == [True, True, False, False, True, True]
    assert plan.unsent.tolist() == [True, True, False, False, True, True]


def test_hand_checked_host_ratio_one_has_no_chunk_ranges():
    # host_ratio 1: the chunk passes return at once; ranges = runs of unsent|dirty.
    d = np.array([0, 1, 1, 0, 0, 1], bool)
    u = np.array([0, 0, 0, 1, 0, 0], bool)
    plan = plan_discards(d, u, 1)
    assert plan.chunk_ranges == []
    assert plan.ranges == [(1, 3), (5, 1)]
    assert plan_discards(d, u, 1, "modern").ranges == [(1, 2), (5, 1)]


def test_hand_checked_modern():
    # host_ratio 4: dirty = . 1 . .  . . . .  1 1 1 1  . . . 1
    # canonicalise: hp0 and hp3 partly dirty -> whole; runs: (0,4), (8,8).
    d = np.zeros(16, bool)
    d[[1, 8, 9, 10, 11, 15]] = True
    plan = plan_discards(d, None, 4, algorithm="modern")
    assert plan.ranges == [(0, 4), (8, 8)]
    assert plan.steps[0].name == "canonicalise" and plan.steps[0].fixups.tolist() == [0, 3]


def test_hugepages_capture_shape():
    # postcopy-hugepages: 2 MiB host pages (ratio 512), 64 MiB block; the single range
    # (0x0, 0xc00000) = host pages 0..5 dirty after canonicalisation.
    r = 512
    d = np.zeros(32 * r, bool)
    d[[3, 700, 1500, 2000, 2500, 3071]] = True  # one target page in each of hp 0..5
    plan = plan_discards(d, None, r, algorithm="modern")
    assert plan.ranges_bytes() == [(0, 0xC00000)]


def test_plan_is_frozen_and_inputs_untouched():
    d = np.array([0, 1, 0, 0], bool)
    u = np.array([0, 0, 0, 1], bool)
    plan = plan_discards(d, u, 2)
    assert d.tolist() == [False, True, False, False]
    with pytest.raises(ValueError):
        plan.dirty[0] = False
    with pytest.raises(AttributeError):
        plan.ranges = []  # type: ignore[misc]


def test_plan_errors():
    with pytest.raises(PostcopyError):
        plan_discards(np.zeros(6, bool), np.zeros(6, bool), 4)
    with pytest.raises(PostcopyError):
        plan_discards(np.zeros(6, bool), np.zeros(6, bool), 3)
    with pytest.raises(PostcopyError):
        plan_discards(np.zeros(4, bool), np.zeros(8, bool), 2)
    with pytest.raises(PostcopyError):
        plan_discards(np.zeros(4, bool), None, 2)
    with pytest.raises(PostcopyError):
        plan_discards(np.zeros(4, bool), np.zeros(4, bool), 2, algorithm="nope")  # type: ignore[arg-type]


def test_bitmap_runs():
    assert bitmap_runs(np.array([], bool)) == []
    assert bitmap_runs(np.array([1, 1, 0, 1], bool)) == [(0, 2), (3, 1)]
    assert bitmap_runs(np.ones(5, bool)) == [(0, 5)]


def test_discard_batches():
    ranges = [(i, 1) for i in range(25)]
    batches = discard_batches(ranges)
    assert [len(b) for b in batches] == [12, 12, 1]
    assert sum(batches, []) == ranges
    assert discard_batches([]) == []
    assert [len(b) for b in discard_batches(ranges[:12])] == [12]
    assert [len(b) for b in discard_batches(ranges, max_per_command=5)] == [5] * 5


def test_discard_batches_plan_keeps_phases_apart():
    # 13 isolated partly-dirty host pages (ratio 2): 13 chunk ranges + 13 final runs.
    d = np.zeros(52, bool)
    d[np.arange(13) * 4] = True
    u = np.zeros(52, bool)
    plan = plan_discards(d, u, 2)
    assert len(plan.chunk_ranges) == 13 and len(plan.final_ranges) == 13
    assert plan.chunk_ranges == plan.final_ranges  # identical duplicates
    assert [len(b) for b in discard_batches(plan)] == [12, 1, 12, 1]
    assert [len(b) for b in discard_batches(plan.ranges)] == [12, 12, 2]


# ----------------------------------------------------------------------------------
# page requests
# ----------------------------------------------------------------------------------


def test_request_queue_semantics():
    q = RequestQueue({"pc.ram": 16 * 4096, "vga": 4 * 4096})
    dirty = {"pc.ram": np.ones(16, bool), "vga": np.ones(4, bool)}
    dirty["pc.ram"][:4] = False  # pages 0..3 already sent
    q.ram_save_queue_pages("pc.ram", 0, 3 * 4096)  # all three sent: skipped
    q.ram_save_queue_pages(None, 5 * 4096, 4096)  # reuses pc.ram
    assert q.ram_bulk_stage
    got = q.get_queued_page(dirty)
    assert got is not None and (got.block, got.offset, got.page) == ("pc.ram", 5 * 4096, 5)
    assert q.skipped == [("pc.ram", 0), ("pc.ram", 4096), ("pc.ram", 8192)]
    assert not q.ram_bulk_stage
    assert q.get_queued_page(dirty) is None
    assert q.postcopy_requests == 2


def test_request_queue_multi_page_and_odd_lengths():
    q = RequestQueue({"m0": 8 * 4096})
    dirty = {"m0": np.ones(8, bool)}
    q.ram_save_queue_pages("m0", 0, 2 * 4096)
    assert q.get_queued_page(dirty).page == 0
    dirty["m0"][0] = False
    assert q.get_queued_page(dirty).page == 1  # one target page per unqueue
    q.ram_save_queue_pages("m0", 4 * 4096, 0)  # zero length still yields one page
    assert q.get_queued_page(dirty).page == 4
    q.ram_save_queue_pages("m0", 5 * 4096, 4097)  # rounded up: pages 5 and 6
    got = [q.unqueue_page(), q.unqueue_page(), q.unqueue_page()]
    assert got == [("m0", 5 * 4096), ("m0", 6 * 4096), None]


def test_request_queue_errors_are_counted():
    q = RequestQueue({"m0": 4 * 4096})
    with pytest.raises(PostcopyError, match="no previous block"):
        q.ram_save_queue_pages(None, 0, 4096)
    with pytest.raises(PostcopyError, match="no block"):
        q.ram_save_queue_pages("nope", 0, 4096)
    with pytest.raises(PostcopyError, match="overrun"):
        q.ram_save_queue_pages("m0", 3 * 4096, 2 * 4096)
    assert q.postcopy_requests == 3 and len(q) == 0
    q.ram_save_queue_pages("m0", 4 * 4096, 0)  # accepted by the seed's check...
    with pytest.raises(PostcopyError, match="past the end"):
        q.get_queued_page({"m0": np.ones(4, bool)})  # ...but points past the bitmap


# ----------------------------------------------------------------------------------
# destination placement
# ----------------------------------------------------------------------------------


def test_placer_hugepage_assembly():
    tps = 4096
    p = PostcopyPlacer({"m0": (4 * tps, 2 * tps), "pc.ram": (2 * tps, tps)})
    assert p.page("m0", 0, b"\1" * tps) is None
    pl = p.zero_page("m0", tps)
    assert pl is not None and pl.host_offset == 0 and pl.size == 2 * tps and not pl.zero
    assert pl.data == b"\1" * tps + bytes(tps)
    assert p.received["m0"].tolist() == [True, True, False, False]
    assert p.zero_page("m0", 2 * tps) is None
    pl = p.zero_page("m0", 3 * tps)
    assert pl.zero and pl.data is None
    # a zero record with a non-zero fill byte is not a zero placement
    pl = p.zero_page("pc.ram", 0, fill=0xFF)
    assert pl.data == b"\xff" * tps
    assert len(p.placements) == 3


def test_placer_rules():
    tps = 4096
    p = PostcopyPlacer({"m0": (4 * tps, 2 * tps)})
    with pytest.raises(PostcopyError, match="Non-sequential"):
        p.zero_page("m0", tps)  # second half first
    p = PostcopyPlacer({"m0": (4 * tps, 2 * tps)})
    p.zero_page("m0", 0)
    p.end_section()  # the previous page is a local of ram_load_postcopy
    with pytest.raises(PostcopyError, match="Non-sequential"):
        p.zero_page("m0", tps)
    p = PostcopyPlacer({"m0": (4 * tps, 2 * tps)})
    with pytest.raises(PostcopyError, match="Illegal RAM offset"):
        p.zero_page("m0", 4 * tps)
    with pytest.raises(PostcopyError, match="unknown RAM block"):
        p.zero_page("x", 0)
    # seed quirk: an unfinished host page is silently abandoned by the next one
    p.zero_page("m0", 0)
    assert p.zero_page("m0", 2 * tps) is None
    assert p.abandoned == [("m0", 0)]
    # placing onto an already received host page fails (EEXIST)
    p = PostcopyPlacer({"m0": (4 * tps, 2 * tps)}, received={"m0": np.array([0, 0, 0, 1], bool)})
    p.zero_page("m0", 2 * tps)
    with pytest.raises(PostcopyError, match="EEXIST"):
        p.zero_page("m0", 3 * tps)


# ----------------------------------------------------------------------------------
# recovery
# ----------------------------------------------------------------------------------


def test_recv_bitmap_sizes_and_complement():
    assert [recv_bitmap_size(n, "modern") for n in (0, 1, 64, 65, 72, 128)] == [0, 8, 8, 16, 16, 16]
    assert [recv_bitmap_size(n, "seed") for n in (0, 1, 64, 65, 71, 72, 128)] == [0, 0, 8, 8, 8, 16, 16]
    rng = np.random.default_rng(1)
    for n in (1, 63, 64, 65, 71, 72, 1000, 16384):
        rec = rng.random(n) < 0.5
        blob = encode_recv_bitmap(rec, "modern")
        assert len(blob) == 16 + recv_bitmap_size(n, "modern")
        assert (decode_recv_bitmap(blob, n, "modern")[0] == rec).all()
        assert (recv_bitmap_to_dirty(rec) == ~rec).all()
        seed = recv_bitmap_to_dirty(rec, seed_blob_rounding=True)
        kept = recv_bitmap_size(n, "seed") * 8
        assert (seed[:kept] == ~rec[:kept]).all()
        assert seed[kept:].all()  # lost bits come back dirty (resent)
