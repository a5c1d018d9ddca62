"""``simulate`` and the model it drives refuse what they cannot run and end hopeless runs (issue #13, item 4).

The issue's reproducers: ``ram="1T"`` (an OSError ENOMEM traceback), ``"inf"``/``1e30``
(OverflowError), ``bandwidth=1`` or ``max_passes=10**6`` at 64 KB/s (minutes, in fact no end:
a rate limit of 0 bytes stalled every window), ``cache_size="1T"`` on a 16 MiB guest (2.1 GB),
NaN/infinite ``downtime_ms`` accepted. Then hypothesis throws junk at every argument.
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

import ramlab
from ramlab.errors import CacheError, RamlabError, SimulationError
from ramlab.model.guest import Guest, memory_limit
from ramlab.model.page_cache import MAX_SLOTS, PageCache
from ramlab.model.sender import MigrationParams, RamSender
from ramlab.model.workloads import make_workload
from ramlab.simulate import parse_size

SMALL = dict(ram="1M", workload="uniform", bandwidth="64M", template=False)


@pytest.mark.parametrize("kwargs,message", [
    (dict(ram="1T"), r"simulating 1,099,511,627,776 bytes of RAM .* the limit is .* 80% of this machine's memory"),
    (dict(ram="inf"), "ram must be a finite size, found 'inf'"),
    (dict(ram=1e30), "ram must be <= 4611686018427387903 bytes, found 1e\\+30"),
    (dict(ram=float("nan")), "ram must be a finite size, found nan"),
    (dict(ram="-4M"), "ram must be >= 0"),
    (dict(ram="6000"), "ram must be a positive multiple of 4096 bytes, found 6000"),
    (dict(ram=True), "ram must be a size"),
    (dict(downtime_ms=float("nan")), "downtime_ms must be a finite number, found nan"),
    (dict(downtime_ms=float("inf")), "downtime_ms must be a finite number, found inf"),
    (dict(downtime_ms=-1), "downtime_ms must be >= 0"),
    (dict(downtime_ms=2_000_001), "downtime_ms must be <= 2000000"),  # QEMU's MAX_MIGRATE_DOWNTIME
    (dict(max_passes=10**6), "max_passes must be <= 1000"),
    (dict(max_passes=2.5), "max_passes must be an integer, found 2.5"),
    (dict(max_passes=1), "max_passes must be >= 2"),
    (dict(bandwidth="20"), "allows 2 byte\\(s\\) per 100 ms window, less than a 5-byte section header"),
    (dict(bandwidth=0), "bandwidth \\(max-bandwidth, bytes/s\\) must be >= 1"),
    (dict(bandwidth="2P"), "must be <= 1125899906842624"),
    (dict(xbzrle="yes"), "xbzrle must be True or False, found 'yes'"),
    (dict(xbzrle=True, cache_size="3M"), "xbzrle cache size must be a power of two"),
    (dict(seed=float("nan")), "seed must be an integer, found nan"),
    (dict(seed=-1), "seed must be >= 0"),
    (dict(compress_level=10), "compress_level must be <= 9"),
    (dict(postcopy=True, postcopy_bandwidth="40"), "max-postcopy-bandwidth of 40 B/s allows 4 byte"),
    (dict(postcopy=True, postcopy_pause_after=0), "postcopy_pause_after must be >= 1"),
    (dict(discard_algorithm="new"), "discard_algorithm must be one of 'seed', 'modern'"),
    (dict(max_time_s=float("inf")), "max_time_s must be a finite number"),
    (dict(workload=3), "workload must be a workload name or a Workload, found 3"),
    (dict(dirty_rate="nan"), "dirty_rate must be a finite size"),
    (dict(hot_fraction=float("nan")), "hot_fraction must be a finite number, found nan"),
    (dict(workload="uniform", writes_per_page=2.5), "writes_per_page must be an integer, found 2.5"),
    (dict(fill=2), "fill must be <= 1.0"),
])
def test_bad_arguments_are_refused_before_running(kwargs, message):
    args = {**SMALL, "workload": "hotset", **kwargs}
    with pytest.raises(SimulationError, match=message):
        ramlab.simulate(**args)


def test_hopeless_runs_end_on_a_budget_with_a_reason():
    # bandwidth 1 B/s: QEMU's rate limit is bandwidth / 10 = 0, i.e. none; the first window carries
    # the bulk pass (hours at 1 B/s), then the time budget forces the completion
    r = ramlab.simulate(ram="4M", workload="hotset", bandwidth=1, template=False)
    assert (r.converged, r.reason, r.trace.pass_kinds) == (False, "max_time_s", ["bulk", "complete"])
    assert r.counters["windows"] == 1 and r.time_s > 1200
    assert int(r.counters["pages_handled"]) >= 1024  # every page was sent
    # 64 KB/s, a guest dirtying 8 MB/s, up to 1000 passes: the time budget ends it
    r = ramlab.simulate(ram="4M", workload="hotset", bandwidth="64K", max_passes=1000, max_time_s=60,
                        template=False)
    assert not r.converged and r.reason == "max_time_s" and r.trace.n_passes < 1000
    assert r.counters["windows"] <= 60 * 10 + 1  # one 100 ms window at a time, up to the budget
    assert "stopped by the time budget (60.0 s simulated)" in r._repr_html_()
    # a page budget
    r = ramlab.simulate(ram="4M", workload="uniform", dirty_rate="64M", bandwidth="8M", max_pages=3000,
                        template=False)
    assert not r.converged and r.reason == "max_pages" and 3000 <= r.counters["pages_handled"] < 3000 + 2 * 1024
    # the pass limit and a converged run say so too
    r = ramlab.simulate(ram="4M", workload="uniform", dirty_rate="64M", bandwidth="8M", max_passes=4,
                        template=False)
    assert (r.converged, r.reason, r.trace.n_passes) == (False, "max_passes", 4)
    r = ramlab.simulate(**SMALL)
    assert (r.converged, r.reason) == (True, "converged")


def test_postcopy_at_a_crawl_ends():
    # 8 B/s of postcopy bandwidth: no rate limit (QEMU's 0), so postcopy sends everything in one window
    r = ramlab.simulate(ram="16M", workload="uniform", dirty_rate="16M", bandwidth="8M", template=False,
                        postcopy=True, postcopy_after=1, postcopy_bandwidth=8)
    assert r.postcopy.switched and r.reason == "postcopy"
    # 64 B/s (6 bytes per window: one page per window, 4 minutes of simulated time each): the time
    # budget lifts the rate limit after 5 simulated minutes
    r = ramlab.simulate(ram="16M", workload="uniform", dirty_rate="16M", bandwidth="8M", template=False,
                        postcopy=True, postcopy_after=1, postcopy_bandwidth=64, max_time_s=300)
    assert r.postcopy.switched and r.reason == "max_time_s"
    assert any(e["kind"] == "budget" for e in r.log)


def test_xbzrle_cache_larger_than_the_guest_behaves_like_one_that_fits():
    """QEMU >= 2.11 accepts a cache larger than the guest (QEMU <= 2.10 refused it): every page has
    its own slot either way, so the decisions are those of a cache exactly the guest's size."""
    runs = {size: ramlab.simulate(ram="16M", workload="hotset", xbzrle=True, cache_size=size, dirty_rate="8M",
                                  bandwidth="4M", template=False, seed=3) for size in ("16M", "64M", "1T")}
    want = runs["16M"].counters
    for size in ("64M", "1T"):
        got = runs[size].counters
        assert {k: v for k, v in got.items() if k != "xbzrle_cache_size"} == \
               {k: v for k, v in want.items() if k != "xbzrle_cache_size"}
        assert got["xbzrle_cache_size"] == parse_size(size)  # the parameter is reported as set
    assert want["xbzrle_pages"] > 0


def test_a_huge_cache_needs_no_huge_memory():
    code = textwrap.dedent("""
        import json, tracemalloc
        import ramlab
        tracemalloc.start()
        r = ramlab.simulate(ram="16M", workload="hotset", xbzrle=True, cache_size="1T", template=False)
        print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "pages": r.counters["xbzrle_pages"]}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["peak"] < 256 << 20, f"{got['peak'] >> 20} MiB (the 1 TiB cache took 2.1 GB before)"


def test_model_classes_check_their_arguments():
    with pytest.raises(SimulationError, match="does not fit: the limit is"):
        Guest.from_sizes([("pc.ram", (memory_limit() // 4096 + 1) * 4096)])
    with pytest.raises(SimulationError, match="length of block 'pc.ram' must be an integer, found nan"):
        Guest.from_sizes([("pc.ram", float("nan"))])
    with pytest.raises(SimulationError, match="no RAM block \\['pc.ram'\\]"):
        Guest.from_sizes([("pc.ram", 4096)]).block(["pc.ram"])
    with pytest.raises(CacheError, match=f"exceeds the model's {MAX_SLOTS} slots"):
        PageCache(1 << 40)
    with pytest.raises(CacheError, match="cache addresses must lie in 0..16383, found 16384"):
        PageCache(1 << 40, max_addr=16384).lookup_batch(np.array([0, 16384]), 1)
    with pytest.raises(CacheError, match="cache size must be an integer, found nan"):
        PageCache(float("nan"))
    with pytest.raises(SimulationError, match="dirty_rate \\(bytes/s\\) must be a finite number, found inf"):
        make_workload("uniform", dirty_rate=float("inf"))
    with pytest.raises(SimulationError, match="unknown workload \\[1\\]"):
        make_workload([1])
    with pytest.raises(SimulationError, match="cpu_throttle_initial must be <= 99"):
        MigrationParams(cpu_throttle_initial=100).validate()
    p = MigrationParams(bandwidth=np.int64(1 << 20), downtime_limit_ms=np.float32(50), max_passes=4.0).validate()
    assert (p.bandwidth, p.downtime_limit_ms, p.max_passes) == (1 << 20, 50.0, 4)
    assert type(p.bandwidth) is int and type(p.max_passes) is int
    g = Guest.from_sizes([("pc.ram", 64 * 4096)])
    w = make_workload("counters", dirty_rate=1 << 20, seed=np.int64(2))
    w.attach(g)
    assert RamSender(g, w, MigrationParams(bandwidth=8 << 20), emit=False).run().converged


# --- property tests ---------------------------------------------------------------------

ARGS = {
    "ram": ("1M", "512K", 1 << 20),
    "workload": ("uniform", "zero", "counters", "idle"),
    "xbzrle": (True, False),
    "cache_size": ("64K", 1 << 20),
    "compress": (False,),
    "compress_level": (1, 9),
    "bandwidth": ("64M", 1 << 24, 9),
    "downtime_ms": (300, 0.5),
    "auto_converge": (False, True),
    "max_passes": (4, 30),
    "seed": (0, 7),
    "dirty_rate": (None, "4M"),
    "record_dirty": (True,),
    "postcopy": (False, True),
    "postcopy_after": (1, 0),
    "discard_algorithm": ("seed", "modern"),
    "postcopy_bandwidth": (0, "8M"),
    "max_time_s": (1200, 5),
    "max_pages": (1 << 24, 300),
}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_only_simulation_errors_escape(data):
    bad = data.draw(st.sampled_from(sorted(ARGS)))  # one argument gets junk (or a valid value)
    kwargs = {k: data.draw(st.sampled_from(v)) for k, v in ARGS.items() if k != bad}
    kwargs[bad] = data.draw(arg(*ARGS[bad]))
    r = call_or_ramlab_error(ramlab.simulate, template=False, **kwargs)
    assert not isinstance(r, RamlabError) or isinstance(r, SimulationError)


@settings(max_examples=150, deadline=None)
@given(junk(), st.sampled_from(["uniform", "hotset", "sweep", "counters", "zero", "random"]),
       st.sampled_from(["dirty_rate", "seed", "fill", "block", "hot_fraction", "hot_prob", "span", "working_set",
                        "counters_per_page", "refill", "writes_per_page"]))
def test_workload_parameters_junk(value, name, param):
    g = Guest.from_sizes([("pc.ram", 16 * 4096)])

    def build():
        w = make_workload(name, **{param: value})
        w.attach(g)
        return w.step(g, 0.5)

    r = call_or_ramlab_error(build)
    assert not isinstance(r, RamlabError) or isinstance(r, SimulationError)


@settings(max_examples=150, deadline=None)
@given(junk())
def test_parse_size_junk(value):
    r = call_or_ramlab_error(parse_size, value)
    assert isinstance(r, SimulationError) or (isinstance(r, int) and 0 <= r < 1 << 62)
