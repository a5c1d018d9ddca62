"""The modelled sender: each decision of ram_save_target_page, convergence, determinism, and
agreement of simulated streams with the decoder and the encoder."""

from __future__ import annotations

import numpy as np
import pytest

import ramlab
from ramlab.constants import RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_ZERO
from ramlab.model.guest import Guest
from ramlab.model.sender import MigrationParams, RamSender
from ramlab.simulate import simulate
from ramlab.trace import PageClass
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.xbzrle import encode_page

TPS = 4096


def _sender(n: int = 64, *, xbzrle: bool = True, cache: int = 16 * TPS, bulk: bool = False) -> RamSender:
    g = Guest.from_sizes([("pc.ram", n * TPS)])
    s = RamSender(g, None, MigrationParams(bandwidth=1 << 40, xbzrle=xbzrle, xbzrle_cache_size=cache))
    s.ram_bulk_stage = bulk
    s.c["dirty_sync_count"] = 5
    s.bmap[:] = False
    s.migration_dirty_pages = 0
    return s


def _send(s: RamSender, pages: list[int], last_stage: bool = False) -> dict:
    """Dirty ``pages`` and send them in a pass of their own; returns the pass record."""
    return s.save_pages(pages, last_stage=last_stage)


def _records(s: RamSender) -> list[ev.Event]:
    evs, _ = s.records.to_events(s.guest, 0)
    s.records = type(s.records)()
    return evs


def test_zero_page_is_a_zero_record():
    s = _sender(bulk=True)
    d = _send(s, [3])
    assert d["classes"][3] == PageClass.ZERO
    assert d["wire"][3] == 9 + 1 + len("pc.ram")  # first record names the block
    assert s.c["duplicate"] == 1 and s.c["normal"] == 0
    (e,) = _records(s)
    assert isinstance(e, ev.RamPages) and e.kind == RAM_SAVE_FLAG_ZERO and e.named
    assert not s.bmap[3] and s.migration_dirty_pages == 0


def test_xbzrle_miss_inserts_and_sends_page():
    s = _sender()
    s.guest.mem[7] = 0x11
    d = _send(s, [7])
    assert d["classes"][7] == PageClass.NORMAL
    assert s.c["xbzrle_cache_miss"] == 1 and s.c["normal"] == 1
    slot = 7 % s.cache.max_num_items
    assert s.cache.addr[slot] == 7 * TPS and s.cache.age[slot] == 5
    assert (s.cache.data[slot] == 0x11).all()
    (e,) = _records(s)
    assert e.kind == RAM_SAVE_FLAG_PAGE and (e.data[0] == 0x11).all()


def test_xbzrle_hit_sends_delta_and_updates_cache():
    s = _sender()
    s.guest.mem[7] = 0x11
    _send(s, [7])
    old = s.guest.mem[7].copy()
    s.guest.mem[7, 100] = 0x99
    _records(s)
    d = _send(s, [7])
    assert d["classes"][7] == PageClass.XBZRLE
    (e,) = _records(s)
    assert isinstance(e, ev.RamXbzrle) and e.data == encode_page(old, s.guest.mem[7])
    assert not e.named  # same block as the previous record: CONTINUE
    assert d["wire"][7] == 8 + 3 + len(e.data)
    assert s.c["xbzrle_pages"] == 1 and s.c["xbzrle_bytes"] == 8 + 3 + len(e.data)
    assert (s.cache.data[7 % s.cache.max_num_items] == s.guest.mem[7]).all()


def test_xbzrle_unchanged_page_is_not_sent():
    s = _sender()
    s.guest.mem[7] = 0x11
    _send(s, [7])
    _records(s)
    d = _send(s, [7])
    assert d["classes"][7] == PageClass.XBZRLE_UNCHANGED and d["wire"][7] == 0
    assert _records(s) == []
    assert not s.bmap[7] and s.c["xbzrle_unchanged"] == 1 and s.c["xbzrle_pages"] == 0


def test_xbzrle_overflow_sends_page_and_updates_cache():
    s = _sender()
    s.guest.mem[7] = 0x11
    _send(s, [7])
    _records(s)
    s.guest.mem[7] = np.random.default_rng(0).integers(0, 256, TPS, dtype=np.uint8)
    d = _send(s, [7])
    assert d["classes"][7] == PageClass.XBZRLE_OVERFLOW
    (e,) = _records(s)
    assert e.kind == RAM_SAVE_FLAG_PAGE and np.array_equal(e.data[0], s.guest.mem[7])
    assert s.c["xbzrle_overflow"] == 1 and s.c["normal"] == 2
    assert np.array_equal(s.cache.data[7 % s.cache.max_num_items], s.guest.mem[7])


def test_zero_page_goes_into_cache_after_bulk_only():
    s = _sender()
    s.guest.mem[9] = 0x22
    _send(s, [9])  # cached with data
    s.guest.mem[9] = 0
    d = _send(s, [9])
    assert d["classes"][9] == PageClass.ZERO
    assert s.cache.addr[9] == 9 * TPS and not s.cache.data[9].any()  # stale copy replaced by zeros
    # a small write into the zeroed page is now an XBZRLE delta against zeros
    s.guest.mem[9, 5] = 1
    assert _send(s, [9])["classes"][9] == PageClass.XBZRLE
    b = _sender(bulk=True)
    _send(b, [4])
    assert b.cache.addr[4] == -1 and b.cache.num_items == 0  # bulk stage: cache untouched


def test_last_stage_does_not_touch_cache():
    s = _sender()
    s.guest.mem[3] = 0x33
    d = _send(s, [3], last_stage=True)  # miss in the last stage: no insert
    assert d["classes"][3] == PageClass.NORMAL and s.cache.addr[3] == -1 and s.c["xbzrle_cache_miss"] == 1
    _send(s, [3])  # insert
    before = s.cache.data[3].copy()
    s.guest.mem[3, 0] = 0x34
    d = _send(s, [3], last_stage=True)
    assert d["classes"][3] == PageClass.XBZRLE
    assert np.array_equal(s.cache.data[3], before)  # encoded but cache not updated


def test_fresh_cache_slot_is_not_evicted():
    s = _sender(cache=4 * TPS)  # 4 slots: pages 1 and 5 collide
    s.guest.mem[[1, 5]] = 0x44
    _send(s, [1])
    _send(s, [5])  # same generation: slot keeps page 1
    assert s.cache.addr[1] == 1 * TPS
    s.c["dirty_sync_count"] = 7  # two syncs later the entry may be replaced
    _send(s, [5])
    assert s.cache.addr[1] == 5 * TPS


def test_chunk_with_slot_conflict_matches_sequential():
    a, b = _sender(cache=4 * TPS), _sender(cache=4 * TPS)
    for s in (a, b):
        s.guest.mem[:16] = np.arange(16, dtype=np.uint8)[:, None] + 1
        s.c["dirty_sync_count"] = 9
    pages = [1, 5, 9, 2, 6]
    a.save_pages(pages)  # one chunk, cut before the first repeated cache slot, then resumed
    for p in pages:
        _send(b, [p])
    assert np.array_equal(a.cache.addr, b.cache.addr) and a.c["xbzrle_cache_miss"] == b.c["xbzrle_cache_miss"]


def _sim(**kw):
    base = dict(ram="16M", bandwidth="8M", seed=3, stream=True)
    base.update(kw)
    return simulate(**base)


def test_compression_only_in_bulk_with_xbzrle():
    r = _sim(workload="counters", xbzrle=True, compress=True, cache_size="4M", dirty_rate="4M", downtime_ms=100)
    t = r.trace
    comp = (t.classes == PageClass.COMPRESSED).sum(axis=1)
    assert t.pass_kinds[0] == "bulk" and comp[0] > 0 and (comp[1:] == 0).all()
    assert (t.classes[1:] == PageClass.XBZRLE).any()
    r2 = _sim(workload="counters", compress=True, dirty_rate="4M", downtime_ms=100)
    comp2 = (r2.trace.classes == PageClass.COMPRESSED).sum(axis=1)
    assert r2.trace.n_passes > 2 and comp2[1:].sum() > 0


def test_first_page_of_a_block_is_not_compressed():
    r = _sim(workload="hotset", compress=True)
    last = None
    for e in r.events:
        if isinstance(e, ev.RamPages | ev.RamXbzrle | ev.RamCompressed):
            if isinstance(e, ev.RamCompressed):
                assert not e.named and e.block == last
            last = e.block
    assert any(isinstance(e, ev.RamCompressed) for e in r.events)


def test_never_converges_without_auto_converge_and_converges_with_it():
    kw = dict(workload="uniform", dirty_rate="24M", bandwidth="8M", stream=False, template=False)
    r = _sim(max_passes=8, **kw)
    assert not r.converged and r.trace.n_passes == 8 and r.trace.pass_kinds[-1] == "complete"
    r2 = _sim(max_passes=40, auto_converge=True, **kw)
    assert r2.converged and r2.counters["cpu_throttle_percentage"] >= 20
    assert any(e["kind"] == "throttle" for e in r2.log)


def test_deterministic():
    a = _sim(workload="hotset", xbzrle=True, cache_size="4M", dirty_rate="4M")
    b = _sim(workload="hotset", xbzrle=True, cache_size="4M", dirty_rate="4M")
    assert a.stream == b.stream
    assert np.array_equal(a.trace.classes, b.trace.classes)
    c = _sim(workload="hotset", xbzrle=True, cache_size="4M", dirty_rate="4M", seed=4)
    assert c.stream != a.stream


@pytest.mark.parametrize("kw", [
    dict(workload="counters", xbzrle=True, cache_size="4M", dirty_rate="4M"),
    dict(workload="random", xbzrle=True, cache_size="4M", dirty_rate="2M"),
    dict(workload="zero", xbzrle=True, cache_size="4M", dirty_rate="4M"),
    dict(workload="sweep", compress=True, dirty_rate="2M"),
])
def test_counters_match_decoded_stream(kw):
    r = _sim(**kw)
    m = ramlab.open(r.stream)
    assert m.error is None
    t = r.trace.validate()
    c = {k: int(v.sum()) for k, v in t.counters.items()}
    assert c["duplicate"] == m.records["zero"]
    assert c["normal"] - c["compressed"] == m.records["page"]  # the seed counts compressed pages as normal
    assert c["xbzrle_pages"] == m.records["xbzrle"]
    assert c["compressed"] == m.records["compressed"]
    counts = t.class_counts().sum(axis=0)
    assert counts[PageClass.ZERO] == c["duplicate"]
    assert counts[PageClass.NORMAL] + counts[PageClass.XBZRLE_OVERFLOW] == m.records["page"]
    assert counts[PageClass.XBZRLE_UNCHANGED] == c["xbzrle_unchanged"]
    for name, ram in r.final_ram.items():
        assert np.array_equal(m.ram(name), ram), name
    assert t.dirty is not None and t.dirty[0].all()


def test_encoded_events_decode_to_the_same_events():
    from ramlab.wire.encoder import encode_events

    r = _sim(workload="counters", xbzrle=True, compress=True, cache_size="4M", dirty_rate="4M", downtime_ms=100)
    data = b"".join(encode_events(r.events))
    assert data == r.stream
    dec = StreamDecoder()
    dec.receive_data(data)
    dec.close()
    out = list(dec.events())
    assert len(out) == len(r.events)
    assert all(a == b for a, b in zip(out, r.events))


def test_rate_limit_windows():
    r = _sim(workload="idle", xbzrle=False, bandwidth="4M", template=False)
    budget = (4 << 20) // 10
    parts, cur = [], None
    for e in r.events:
        if isinstance(e, ev.SectionHeader) and e.section_type == 2:
            cur = e.offset
        elif isinstance(e, ev.SectionFooter) and cur is not None:
            parts.append(e.offset - cur)
            cur = None
    assert len(parts) > 5
    assert max(parts) <= budget + 2 * (TPS + 64)  # stops once more than the budget was written
    assert sorted(parts)[len(parts) // 2] >= budget - TPS


@pytest.mark.parametrize("max_passes", [2, 5, 30])
def test_max_passes_counts_the_passes_of_the_trace(max_passes):
    """The notebook case: hotset at 4 MiB/s never converges; it is forced to complete with exactly
    ``max_passes`` trace passes, repeat passes (a page re-dirtied at the search position) included."""
    r = simulate(ram="64M", workload="hotset", bandwidth="4M", max_passes=max_passes, template=False)
    assert not r.converged
    assert r.trace.n_passes == max_passes == len(r.pass_table())
    assert r.trace.pass_kinds[0] == "bulk" and r.trace.pass_kinds[-1] == "complete"
    if max_passes == 30:
        assert any(e["kind"] == "repeat" for e in r.log)  # repeats happen and are counted
    r.trace.validate()  # raises TraceError if the arrays do not fit together


def test_converged_run_stays_within_max_passes():
    r = simulate(ram="16M", workload="hotset", bandwidth="16M", dirty_rate="1M", max_passes=6, template=False)
    assert r.converged and r.trace.n_passes <= 6


def test_cli_params_postcopy_flags(tmp_path, capsys):
    from ramlab.cli import main

    out = tmp_path / "pc.bin"
    rc = main(["simulate", "--ram", "16M", "--workload", "hotset", "--bandwidth", "16M", "--dirty-rate", "16M",
               "--param", "hot_fraction=0.5", "--param", "hot_prob=0.9", "--param", "fill=1",
               "--postcopy", "--postcopy-after", "2", "--hugepages", "--postcopy-bandwidth", "4M",
               "--downtime-ms", "10", "-o", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "switched to postcopy after 2 passes" in text and "discard" in text
    rp = tmp_path / "pc.bin.ret"
    assert out.is_file() and rp.is_file()
    m = ramlab.open(out, return_path=rp)
    assert m.error is None and m.blocks[0].name == "m0" and m.blocks[0].page_size == 2 << 20
    assert m.commands["POSTCOPY_RAM_DISCARD"] >= 1 and m.requests


def test_cli_param_reaches_the_workload():
    from ramlab.cli.simulate import parse_params

    p = parse_params(["hot_fraction=0.25", "hot-prob=1", "fill=0.0"])
    assert p == {"hot_fraction": 0.25, "hot_prob": 1, "fill": 0.0}
    r = simulate(ram="4M", workload="hotset", template=False, bandwidth="64M", **p)
    assert r.params["hot_fraction"] == 0.25
    with pytest.raises(ramlab.errors.SimulationError):
        parse_params(["nokey"])


@pytest.mark.parametrize("kw", [
    dict(workload="counters", xbzrle=True, bandwidth="8M"),
    dict(workload="uniform", dirty_rate="64M", bandwidth="16M", max_passes=6),
    dict(workload="hotset", compress=True, bandwidth="8M"),
], ids=["xbzrle", "forced", "compress"])
def test_decoded_passes_equal_simulated_passes(kw):
    """Decoder and simulator cut the same passes (laps; the END section is the 'complete' pass)."""
    r = ramlab.simulate(ram="16M", stream=True, **kw)
    m = ramlab.open(r.stream)
    assert m.trace.pass_kinds == r.trace.pass_kinds
    sent = (r.trace.classes != 0) & (r.trace.classes != 4)  # XBZRLE_UNCHANGED pages are not sent
    assert np.array_equal(m.trace.classes != 0, sent)
    zero = r.trace.classes == 1
    assert np.array_equal(m.trace.classes == 1, zero)


def test_simulated_trace_keeps_xbzrle_page_contents_for_the_delta_view():
    from ramlab.trace import PageClass
    from ramlab.widgets import XbzrleDeltaView
    from ramlab.xbzrle import encode_page

    r = ramlab.simulate(ram="16M", workload="counters", xbzrle=True, bandwidth="8M")
    hits = np.argwhere(r.trace.classes == PageClass.XBZRLE)
    assert len(hits) > 0
    for p, g in hits[:50]:
        old, new = r.trace.page_bytes(int(p), int(g))
        enc = encode_page(old, new)
        assert enc and 8 + 3 + len(enc) == r.trace.wire_bytes[p, g]  # the record the sender wrote
    p, g = map(int, hits[0])
    view = XbzrleDeltaView(r.trace, p, g)
    assert "sent as XBZRLE" in view.summary.value
