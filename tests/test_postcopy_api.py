"""Postcopy planning: bad arguments give a PostcopyError, big plans stay in bounded memory (issue #13, item 4).

The issue's reproducers: ``plan_discards(host_ratio=2.5)`` silently used 2 (``True`` -> 1),
NaN/infinity escaped as TypeError/OverflowError, ``discard_batches``/``bitmap_runs`` escaped on
malformed input, and a 64 Mi-page seed plan needed more than 3 GB (a Python tuple per range).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _junk import arg, call_or_ramlab_error, junk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab.errors import PostcopyError, RamlabError
from ramlab.model.postcopy_plan import (
    PostcopyPlacer,
    Ranges,
    RequestQueue,
    bitmap_runs,
    discard_batches,
    plan_discards,
    recv_bitmap_to_dirty,
)

D = np.array([0, 0, 1, 0, 0, 0, 0, 0], bool)
U = np.array([0, 0, 0, 0, 0, 1, 1, 1], bool)


@pytest.mark.parametrize("ratio,message", [
    (2.5, "host_ratio must be an integer, found 2.5"),
    (True, "host_ratio must be an integer, found True"),
    (np.True_, "host_ratio must be an integer, found np.True_"),
    (float("nan"), "host_ratio must be an integer, found nan"),
    (float("inf"), "host_ratio must be an integer, found inf"),
    ("2", "host_ratio must be an integer, found '2'"),
    (None, "found None"),
    (3, "host_ratio must be a power of two, found 3"),
    (6.0, "host_ratio must be a power of two, found 6.0"),
    (0, "host_ratio must be >= 1, found 0"),
    (-2, "host_ratio must be >= 1"),
    (1 << 31, "host_ratio must be <= 1073741824"),
])
def test_host_ratio_must_be_a_power_of_two(ratio, message):
    for algorithm in ("seed", "modern"):
        with pytest.raises(PostcopyError, match=message):
            plan_discards(D, U, ratio, algorithm)


def test_integral_ratios_of_other_types_are_taken_exactly():
    want = [(4, 4), (0, 4), (0, 8)]  # the hand-checked seed example of the module docstring
    for ratio in (4, np.int64(4), np.uint8(4), 4.0):
        plan = plan_discards(D, U, ratio)
        assert plan.ranges == want and plan.host_ratio == 4 and type(plan.host_ratio) is int


def test_bitmaps_and_options_are_checked():
    cases = [
        (lambda: plan_discards(D.astype(float), U, 4), "dirty must be a 1-D array of bools or 0/1 integers"),
        (lambda: plan_discards(D, np.array([0, 2] * 4), 4), "unsent must hold only 0 and 1"),
        (lambda: plan_discards(D.reshape(2, 4), U, 4), r"dirty must be .*shape \(2, 4\)"),
        (lambda: plan_discards(None, U, 4), "dirty must be .*found None"),
        (lambda: plan_discards(D, U, 4, algorithm=1), "algorithm must be one of 'seed', 'modern'"),
        (lambda: bitmap_runs("0110"), "bits must be a 1-D array"),
        (lambda: bitmap_runs(np.zeros((2, 2), bool)), "bits must be a 1-D array"),
        (lambda: bitmap_runs([0, 2]), "only 0 and 1"),
        (lambda: discard_batches([1, 2]), r"ranges must be \(start, length\) pairs of integers, found \[1, 2\]"),
        (lambda: discard_batches([(1,)]), r"found \[\(1,\)\]"),
        (lambda: discard_batches([(0, 1), (5, 0)]), r"ranges\[1\] must have start >= 0 and length >= 1, found \(5, 0"),
        (lambda: discard_batches([(-4, 1)]), r"ranges\[0\] must have start >= 0"),
        (lambda: discard_batches([("a", 1)]), "pairs of integers"),
        (lambda: discard_batches([(0.5, 1)]), "pairs of integers"),
        (lambda: discard_batches([(2**63, 1)]), "pairs of integers|beyond int64"),
        (lambda: discard_batches("abc"), "pairs of integers, found 'abc'"),
        (lambda: discard_batches([(0, 1)], float("nan")), "max_per_command must be an integer, found nan"),
        (lambda: discard_batches([(0, 1)], True), "max_per_command must be an integer, found True"),
        (lambda: discard_batches([(0, 1)], 0), "max_per_command must be >= 1"),
        (lambda: recv_bitmap_to_dirty([1, 0], seed_blob_rounding=1), "seed_blob_rounding must be True or False"),
        (lambda: recv_bitmap_to_dirty(np.array([[1]])), "received must be a 1-D array"),
        (lambda: plan_discards(D, U, 4).ranges_bytes(4095), "target_page_size must be a power of two"),
        (lambda: Ranges.from_pairs([(0, 1)])[1], "range index 1 outside 0..0"),
    ]
    for fn, message in cases:
        with pytest.raises(PostcopyError, match=message):
            fn()


def test_request_queue_and_placer_check_their_arguments():
    q = RequestQueue({"pc.ram": 4 * 4096})
    for args, message in [
        (("pc.ram", float("nan"), 4096), "start must be an integer, found nan"),
        (("pc.ram", 0, "4096"), "length must be an integer, found '4096'"),
        ((b"pc.ram", 0, 4096), "no block b'pc.ram'"),
        ((["pc.ram"], 0, 4096), r"no block \['pc.ram'\]"),
    ]:
        with pytest.raises(PostcopyError, match=message):
            q.ram_save_queue_pages(*args)
    assert q.postcopy_requests == 4 and len(q) == 0  # counted first, like QEMU's counter
    q.ram_save_queue_pages("pc.ram", 0, 4096)
    with pytest.raises(PostcopyError, match="no bitmap for 'pc.ram'"):
        q.get_queued_page({})
    q.ram_save_queue_pages("pc.ram", 0, 4096)
    with pytest.raises(PostcopyError, match=r"dirty\['pc.ram'\] must be a 1-D array"):
        q.get_queued_page({"pc.ram": "1111"})
    with pytest.raises(PostcopyError, match="blocks must map block names"):
        RequestQueue([("pc.ram", 4096)])
    with pytest.raises(PostcopyError, match=r"blocks\['pc.ram'\] must be an integer, found 4096.5"):
        RequestQueue({"pc.ram": 4096.5})
    with pytest.raises(PostcopyError, match="target_page_size must be a power of two"):
        RequestQueue({"pc.ram": 4096}, target_page_size=1000)
    with pytest.raises(PostcopyError, match="RAM block names must be strings"):
        RequestQueue({1: 4096})

    p = PostcopyPlacer({"m0": (4 * 4096, 2 * 4096)})
    for call, message in [
        (lambda: p.zero_page("m0", 0, fill=float("nan")), "fill must be an integer, found nan"),
        (lambda: p.zero_page("m0", 0, fill=True), "fill must be an integer, found True"),
        (lambda: p.zero_page("m0", "0"), "offset must be an integer, found '0'"),
        (lambda: p.zero_page(["m0"], 0), "unknown RAM block"),
        (lambda: p.page("m0", 0, "x" * 4096), "data must be bytes-like"),
        (lambda: p.page("m0", 0, np.zeros(4096, np.int8)), "data must be a 1-D uint8 array"),
        (lambda: PostcopyPlacer({"m0": 4096}), r"blocks\['m0'\] must be \(used_length, page_size\)"),
        (lambda: PostcopyPlacer({"m0": (4096, 3000)}), "page_size of 'm0' must be a power of two"),
        (lambda: PostcopyPlacer({"m0": (4096, 4096)}, received={"m0": [2]}), "only 0 and 1"),
    ]:
        with pytest.raises(PostcopyError, match=message):
            call()
    assert p.page("m0", 0, np.full(4096, 7, np.uint8)) is None
    placed = p.zero_page("m0", np.int64(4096))
    assert placed is not None and placed.host_offset == 0 and placed.data[:1] == b"\x07"


def test_ranges_behave_like_the_lists_they_replace():
    plan = plan_discards(D, U, 4)
    assert plan.ranges == [(4, 4), (0, 4), (0, 8)] and plan.ranges != [(4, 4)]
    assert list(plan.ranges) == [(4, 4), (0, 4), (0, 8)] and plan.ranges.tolist() == [(4, 4), (0, 4), (0, 8)]
    assert all(type(x) is int for pair in plan.ranges for x in pair)
    assert plan.ranges[-1] == (0, 8) and plan.ranges[1:] == [(0, 4), (0, 8)]
    assert np.asarray(plan.ranges).tolist() == [[4, 4], [0, 4], [0, 8]]
    assert plan.ranges_bytes() == [(0x4000, 0x4000), (0, 0x4000), (0, 0x8000)]
    assert plan.duplicated_ranges == [(4, 4), (0, 4)]
    assert [] + plan.chunk_ranges == plan.chunk_ranges and plan.chunk_ranges + [(9, 1)] == [(4, 4), (0, 4), (9, 1)]
    assert repr(plan.final_ranges) == "Ranges([(0, 8)])"
    assert repr(bitmap_runs(np.arange(40) % 2)).endswith("(7, 1), (9, 1), (11, 1), (13, 1), (15, 1), ...]) (20 ranges)")
    with pytest.raises(ValueError):  # frozen: the arrays are read-only
        plan.final_ranges.start[0] = 1


def test_duplicated_ranges_are_the_chunk_ranges_inside_a_final_run():
    # host ratio 2, pages 0..11: hp1 and hp4 partly dirty (sent as chunk ranges), hp5 dirty
    d = np.zeros(12, bool)
    d[[3, 8, 10, 11]] = True
    u = np.zeros(12, bool)
    plan = plan_discards(d, u, 2)
    assert plan.chunk_ranges == [(2, 2), (8, 2)]
    assert plan.final_ranges == [(2, 2), (8, 4)]
    assert plan.duplicated_ranges == [(2, 2), (8, 2)]  # (8, 2) lies inside the longer run (8, 4)


MEMORY_CHILD = textwrap.dedent("""
    import json, sys, tracemalloc
    import numpy as np
    from ramlab.model.postcopy_plan import plan_discards
    n, r = 1 << 26, int(sys.argv[1])
    dirty = np.zeros(n, bool); dirty[::2] = True   # every other page: the most runs / fix-ups
    unsent = np.zeros(n, bool)
    tracemalloc.start()
    plan = plan_discards(dirty, unsent, r, "seed")
    peak = tracemalloc.get_traced_memory()[1]
    c, f = plan.chunk_ranges, plan.final_ranges
    ends = [list(x[i]) if len(x) else None for x in (c, f) for i in (0, -1)]
    print(json.dumps({"peak": peak, "chunk": len(c), "final": len(f), "ends": ends}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("ratio", [1, 2])
def test_64_mi_page_seed_plan_in_bounded_memory(ratio):
    """Budget: the plan's arrays and its temporaries peak at <= 24 bytes per target page
    (64 Mi pages: 1.5 GiB; a tuple per range needed > 3 GB), the inputs excluded."""
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(ratio)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    n = 1 << 26
    if ratio == 1:  # no chunk passes; the final runs are the n/2 single dirty pages
        assert (got["chunk"], got["final"]) == (0, n // 2)
        assert got["ends"] == [None, None, [0, 1], [n - 2, 1]]
    else:  # every host page partly dirty and sent: one chunk range each, then one run of everything
        assert (got["chunk"], got["final"]) == (n // 2, 1)
        assert got["ends"] == [[0, 2], [n - 2, 2], [0, n], [0, n]]
    assert got["peak"] <= 24 * n, f"peak {got['peak'] / 2**20:.0f} MiB > budget {24 * n / 2**20:.0f} MiB"


# --- property tests -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_only_postcopy_errors_escape(data):
    draw = data.draw
    what = draw(st.sampled_from(["plan", "runs", "batches", "queue", "get", "placer", "zero", "page", "recv",
                                 "ranges"]))
    bits = st.lists(st.booleans(), min_size=8, max_size=8).map(np.array)
    if what == "plan":
        plan = call_or_ramlab_error(plan_discards, draw(arg(bits, D)), draw(arg(None, bits, U)),
                                    draw(arg(1, 2, 4, 8)), draw(arg("seed", "modern")))
        if not isinstance(plan, RamlabError):
            r = call_or_ramlab_error(lambda: (plan.ranges_bytes(draw(arg(4096))), plan.duplicated_ranges,
                                              discard_batches(plan, draw(arg(12, 1)))))
        else:
            r = plan
    elif what == "runs":
        r = call_or_ramlab_error(bitmap_runs, draw(arg(bits)))
    elif what == "batches":
        pairs = st.lists(st.tuples(st.integers(-2, 9), st.integers(-1, 9)), max_size=30)
        r = call_or_ramlab_error(discard_batches, draw(arg(pairs, Ranges())), draw(arg(12, 5)))
    elif what in ("queue", "get"):
        q = call_or_ramlab_error(RequestQueue, draw(arg({"pc.ram": 8 * 4096})), draw(arg(4096)))
        r = q if isinstance(q, RamlabError) else call_or_ramlab_error(
            q.ram_save_queue_pages, draw(arg("pc.ram", None)), draw(arg(0, 4096)), draw(arg(4096, 0)))
        if what == "get" and not isinstance(q, RamlabError):
            r = call_or_ramlab_error(q.get_queued_page, draw(arg({"pc.ram": np.ones(8, bool)})))
    elif what in ("placer", "zero", "page"):
        p = call_or_ramlab_error(PostcopyPlacer, draw(arg({"m0": (4 * 4096, 2 * 4096)})),
                                 draw(arg(None, {"m0": np.zeros(4, bool)})), draw(arg(4096)))
        if isinstance(p, RamlabError) or what == "placer":
            r = p
        elif what == "zero":
            r = call_or_ramlab_error(p.zero_page, draw(arg("m0")), draw(arg(0, 4096)), draw(arg(0, 255)))
        else:
            r = call_or_ramlab_error(p.page, draw(arg("m0")), draw(arg(0, 4096)), draw(arg(bytes(4096))))
    elif what == "recv":
        r = call_or_ramlab_error(recv_bitmap_to_dirty, draw(arg(bits)), seed_blob_rounding=draw(arg(False, True)))
    else:
        rg = call_or_ramlab_error(Ranges.from_pairs, draw(arg([(0, 1), (4, 2)])))
        r = rg if isinstance(rg, RamlabError) else call_or_ramlab_error(
            lambda: (rg[draw(arg(0, -1, 5))], rg == draw(junk()), rg.scaled(draw(arg(4096)))))
    assert not isinstance(r, RamlabError) or isinstance(r, PostcopyError)
