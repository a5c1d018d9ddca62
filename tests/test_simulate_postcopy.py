"""Postcopy in the simulator: the stream and return path it writes decode (``ramlab.open``) to
the simulator's final RAM, trace classes and counters; every postcopy host page is placed
atomically by :class:`~ramlab.model.postcopy_plan.PostcopyPlacer`; the command sequence has the shape of
the real QEMU 7.2 captures; seed and modern discard plans; recovery after a broken channel.

The real-QEMU test loads a simulated postcopy stream into a QEMU 7.2 destination, 4 KiB and
2 MiB hugetlbfs pages. Postcopy needs a live source peer: with ``exec:`` there is no return
path and 7.2 refuses OPEN_RETURN_PATH, so the loader feeds the stream over a unix socket
(:func:`ramlab.capture.qemu.load_stream`, as for the captures' replay) and reads back the
destination's return path. The destination stays paused (``-S``), so its guest never runs and
never faults on its own: it places every page the stream brings (it still requests the page
its own device loading touches, which the stream sends anyway). That proves that 7.2 accepts the
whole forward stream (ADVISE, MEM_SIZE page sizes, discards, the package, postcopy sections,
atomic huge-page placement); the request/answer dynamics of a running destination are checked
against the model only. Recovery is not tried on QEMU: it needs a destination that pauses on a
broken channel and a second ``migrate-recover`` connection driven by a live source.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import ramlab
from ramlab.constants import MIG_CMD_POSTCOPY_LISTEN, MIG_CMD_POSTCOPY_RAM_DISCARD, RAM_SAVE_FLAG_ZERO
from ramlab.data import data_path
from ramlab.errors import SimulationError
from ramlab.model.postcopy_plan import PostcopyPlacer
from ramlab.simulate import simulate
from ramlab.trace import PageClass
from ramlab.wire import events as ev
from ramlab.wire.commands import decode_discard_payload
from ramlab.wire.events import RecvBitmap, ReqPages, ResumeAck, Shut
from ramlab.wire.recv_bitmap import decode_recv_bitmap

TPS = 4096
KW = dict(ram="32M", workload="uniform", dirty_rate="32M", bandwidth="32M", postcopy_bandwidth="4M",
          downtime_ms=10, stream=True, seed=1)


@pytest.fixture(scope="module")
def huge():
    return simulate(postcopy=True, postcopy_after=2, hugepages=True, **KW)


@pytest.fixture(scope="module")
def small():
    return simulate(postcopy=True, postcopy_after=2, **KW)


def _shape(events: list[ev.Event]) -> list[str]:
    """Commands and section kinds in order, runs of pages / PART sections / FULL sections folded."""
    out: list[str] = []
    for e in events:
        if isinstance(e, ev.Command):
            k = e.name
        elif isinstance(e, ev.SectionHeader):
            k = "PART" if e.section_type == 2 else e.type_name
        elif isinstance(e, ev.RAM_PAGE_EVENTS):
            k = "PART" if out and out[-1] == "PART" else "pages"
        elif isinstance(e, ev.RamMemSize | ev.FileHeader | ev.Configuration | ev.EndOfFile | ev.VmDescription):
            k = type(e).__name__
        else:
            continue
        if out and out[-1] == k and k in ("PART", "FULL", "POSTCOPY_RAM_DISCARD"):
            continue
        out.append(k)
    return out


def _placements(m: ramlab.Migration) -> PostcopyPlacer:
    """Feed the postcopy page records of a decoded stream to the destination's placement rules."""
    blocks = {b.name: (b.used_length, b.page_size or TPS) for b in m.blocks}
    received = {n: np.zeros(u // TPS, bool) for n, (u, _) in blocks.items()}
    placer = None
    for e in m.events:
        if isinstance(e, ev.Command) and e.cmd == MIG_CMD_POSTCOPY_RAM_DISCARD:
            name, ranges = decode_discard_payload(e.payload)
            for s, n in ranges:
                received[name][s // TPS : (s + n) // TPS] = False
        elif isinstance(e, ev.Command) and e.cmd == MIG_CMD_POSTCOPY_LISTEN:
            placer = PostcopyPlacer(blocks, received=received)
        elif isinstance(e, ev.RamEos) and placer is not None:
            placer.end_section()
        elif isinstance(e, ev.RamPages):
            offs = e.page_offsets.tolist()
            if placer is None:  # precopy: loaded, received
                received[e.block][np.asarray(offs) // TPS] = True
            elif e.kind == RAM_SAVE_FLAG_ZERO:
                for i, o in enumerate(offs):
                    placer.zero_page(e.block, o, int(e.fill[i]))
            else:
                for i, o in enumerate(offs):
                    placer.page(e.block, o, e.data[i].tobytes())
        elif isinstance(e, ev.RamXbzrle | ev.RamCompressed):
            assert placer is None, "no XBZRLE or compressed records after the switch"
            received[e.block][e.page_offset // TPS] = True
    assert placer is not None
    return placer


@pytest.mark.parametrize("which", ["huge", "small"])
def test_decoded_stream_matches_simulation(which, request):
    r = request.getfixturevalue(which)
    assert r.postcopy is not None and r.postcopy.switched
    m = ramlab.open(r.stream, return_path=r.return_path)
    assert m.error is None
    for name, ram in r.final_ram.items():
        assert np.array_equal(m.ram(name), ram), name
    sim = r.trace.class_counts().sum(axis=0)
    dec = m.trace.class_counts().sum(axis=0)
    for cls in (PageClass.ZERO, PageClass.NORMAL, PageClass.DISCARDED, PageClass.REQUESTED, PageClass.POSTCOPY):
        assert sim[cls] == dec[cls], cls.name
    c = r.counters
    assert c["requested"] == sim[PageClass.REQUESTED] > 0
    assert c["discarded"] == int(m.trace.counters["discarded"].sum()) > 0
    assert c["postcopy_requests"] == len(m.requests) == sum(e["kind"] == "request" for e in r.log)
    assert r.trace.pass_kinds[:3] == ["bulk", "precopy", "postcopy"]
    assert (r.trace.classes[2] == PageClass.DISCARDED).sum() == sim[PageClass.DISCARDED]
    assert isinstance(m.return_path_events[-1], Shut) and m.return_path_events[-1].status == 0
    # every request is one whole host page of the main block
    main = r.postcopy.result.trace.blocks[0]
    assert all(q.block == main.name and q.length == main.page_size and q.start % main.page_size == 0
               for q in m.requests)


def test_huge_pages_are_placed_atomically(huge):
    m = ramlab.open(huge.stream, return_path=huge.return_path)
    mem = {b.name: b for b in m.blocks}
    assert mem["m0"].page_size == 2 << 20 and all(b.page_size is None for b in m.blocks[1:])
    placer = _placements(m)  # raises on "Non-sequential target page" or a double placement
    assert not placer.abandoned
    assert all(rec.all() for rec in placer.received.values())
    m0 = [p for p in placer.placements if p.block == "m0"]
    assert m0 and all(p.size == 2 << 20 and p.host_offset % (2 << 20) == 0 for p in m0)
    # the discards are whole host pages
    for name, start, length in m.discards:
        assert name != "m0" or (start % (2 << 20) == 0 and length % (2 << 20) == 0)


def test_small_pages_are_placed(small):
    placer = _placements(ramlab.open(small.stream, return_path=small.return_path))
    assert not placer.abandoned and all(rec.all() for rec in placer.received.values())


@pytest.mark.parametrize("which,capture", [("huge", "postcopy-hugepages"), ("small", "postcopy")])
def test_command_sequence_has_the_shape_of_a_real_capture(which, capture, request):
    r = request.getfixturevalue(which)
    real = ramlab.open(data_path(capture))
    sim = _shape(r.events)
    assert sim == _shape(real.events)
    assert sim[:8] == ["FileHeader", "Configuration", "OPEN_RETURN_PATH", "PING", "POSTCOPY_ADVISE", "START",
                       "RamMemSize", "PART"]
    assert sim[-3:] == ["PART", "END", "EndOfFile"]
    pings = [e.value for e in r.events if isinstance(e, ev.Command) and e.name == "PING"]
    assert pings == [1, 2, 3, 4]
    advise = next(e for e in r.events if isinstance(e, ev.Command) and e.name == "POSTCOPY_ADVISE")
    want = next(e for e in real.events if isinstance(e, ev.Command) and e.name == "POSTCOPY_ADVISE")
    assert advise.payload == want.payload  # 0x201000 / 0x1000, then the target page size
    # the first page record after the discards names its block (last_sent_block reset)
    i = next(i for i, e in enumerate(r.events) if isinstance(e, ev.Command) and e.name == "POSTCOPY_RAM_DISCARD")
    first = next(e for e in r.events[i:] if isinstance(e, ev.RAM_PAGE_EVENTS))
    assert first.named
    # the RAM END section holds only EOS, no vmdesc
    assert isinstance(r.events[-1], ev.EndOfFile)
    assert isinstance(r.events[-4], ev.SectionHeader) and r.events[-4].section_type == 3
    assert isinstance(r.events[-3], ev.RamEos)


def test_seed_discards_duplicate_what_modern_sends_once():
    kw = dict(KW, workload="uniform", dirty_rate="1M", downtime_ms=1)
    seed = simulate(postcopy=True, postcopy_after=1, hugepages=True, discard_algorithm="seed", **kw)
    modern = simulate(postcopy=True, postcopy_after=1, hugepages=True, discard_algorithm="modern", **kw)

    def ranges(r):
        out = []
        for e in r.events:
            if isinstance(e, ev.Command) and e.cmd == MIG_CMD_POSTCOPY_RAM_DISCARD:
                name, rr = decode_discard_payload(e.payload)
                out += [(name, s, n) for s, n in rr]
        return out

    rs, rm = ranges(seed), ranges(modern)
    plan = seed.postcopy.plans["m0"]
    assert plan.chunk_ranges and plan.duplicated_ranges == plan.chunk_ranges
    chunk = [("m0", s * TPS, n * TPS) for s, n in plan.chunk_ranges]
    assert rs[: len(chunk)] == chunk  # the seed's chunk-pass commands first
    assert rs[len(chunk):] == rm  # then the same runs modern sends (after identical precopy passes)
    assert len(rs) > len(rm)
    assert seed.counters["discarded"] > modern.counters["discarded"]
    ds = seed.trace.class_counts().sum(axis=0)[PageClass.DISCARDED]
    dm = modern.trace.class_counts().sum(axis=0)[PageClass.DISCARDED]
    assert ds == dm  # the same pages, some of them twice
    for r in (seed, modern):
        m = ramlab.open(r.stream, return_path=r.return_path)
        assert m.error is None and np.array_equal(m.ram("m0"), r.final_ram["m0"])


def test_switch_before_the_bulk_stage_ends_discards_the_unsent_pages():
    r = simulate(postcopy=True, postcopy_after=0, **dict(KW, ram="8M"))
    plan = r.postcopy.plans["pc.ram"]
    assert plan.discard_map.all()  # nothing was sent yet: the seed discards everything (unsentmap)
    assert r.trace.pass_kinds[0] == "postcopy"
    m = ramlab.open(r.stream, return_path=r.return_path)
    assert m.error is None and np.array_equal(m.ram("pc.ram"), r.final_ram["pc.ram"])


def test_converged_precopy_never_switches():
    r = simulate(ram="8M", workload="idle", postcopy=True, postcopy_after=3, stream=True, template=False)
    assert not r.postcopy.switched and r.converged
    assert r.counters["discarded"] == 0 and "postcopy" not in r.trace.pass_kinds
    m = ramlab.open(r.stream, return_path=r.return_path)
    assert m.error is None and m.commands["OPEN_RETURN_PATH"] == 1 and "PACKAGED" not in m.commands


def test_postcopy_refuses_compress():
    with pytest.raises(SimulationError, match="compress"):
        simulate(ram="8M", postcopy=True, compress=True, template=False)


def test_release_ram_counts_freed_pages(small):
    r = simulate(postcopy=True, postcopy_after=2, release_ram=True, **KW)
    assert r.counters["released"] == r.trace.n_pages  # everything is freed on the source in the end
    assert "release-ram" in r.trace.meta["capabilities"]
    assert r.stream == small.stream


@pytest.mark.parametrize("hugepages", [False, True])
def test_recovery_after_a_broken_channel(hugepages):
    r = simulate(postcopy=True, postcopy_after=2, hugepages=hugepages, postcopy_pause_after=600, **KW)
    out = r.postcopy
    assert out.paused and len(r.streams) == 2 and len(r.return_paths) == 2
    pause = next(e for e in r.log if e["kind"] == "pause")
    assert pause["lost_pages"] > 0
    # stream 2 is a new channel: commands first, no file header
    s2 = r.streams[1]
    assert s2[:1] == b"\x08" and not s2.startswith(b"QEVM")
    m = ramlab.open(r.stream, return_path=r.return_path)
    assert m.error is None
    assert m.commands["RECV_BITMAP"] == len(m.blocks) and m.commands["POSTCOPY_RESUME"] == 1
    for name, ram in r.final_ram.items():
        assert np.array_equal(m.ram(name), ram), name
    rp = m.return_path_events
    bitmaps = [e for e in rp if isinstance(e, RecvBitmap)]
    assert [b.block for b in bitmaps] == [b.name for b in m.blocks]
    ack = next(i for i, e in enumerate(rp) if isinstance(e, ResumeAck))
    assert rp[ack].value == 1 and all(isinstance(e, RecvBitmap) for e in rp[ack - len(bitmaps) : ack])
    # the bitmap of the main block: the lost pages are not received, so they became dirty again
    main = m.blocks[0]
    blob = np.frombuffer(bitmaps[0].bitmap, np.uint8)
    rec = np.unpackbits(blob, bitorder="little")[: main.used_length // TPS].astype(bool)
    assert (~rec).sum() >= pause["lost_pages"]
    assert int((~rec).sum()) + sum(int((~np.unpackbits(np.frombuffer(b.bitmap, np.uint8), bitorder="little")
                                        [: next(x for x in m.blocks if x.name == b.block).used_length // TPS]
                                        .astype(bool)).sum()) for b in bitmaps[1:]) == \
        next(e for e in r.log if e["kind"] == "resume")["dirty"]
    # after the resume the destination asks again (named) for the pages it is still waiting for
    reqs = [e for e in rp[ack + 1 :] if isinstance(e, ReqPages)]
    assert not reqs or reqs[0].named
    if hugepages:
        assert all(q.length == 2 << 20 for q in reqs)
    placer = _placements(m)
    assert not placer.abandoned and all(x.all() for x in placer.received.values())


def test_recv_bitmap_blob_round_trip():
    from ramlab.wire.recv_bitmap import encode_recv_bitmap

    bits = np.random.default_rng(0).random(8192) < 0.3
    blob = encode_recv_bitmap(bits, "modern")
    back, used = decode_recv_bitmap(blob, bits.size, "modern")
    assert used == len(blob) and np.array_equal(back, bits)


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("hugepages", [False, True])
def test_qemu_destination_loads_simulated_postcopy_stream(tmp_path, hugepages):
    """A 7.2 destination (paused, postcopy-ram) loads the simulated postcopy stream fed over a unix
    socket; its RAM equals the simulator's and its return path has PONG 1-4 and SHUT 0. With
    ``hugepages`` the destination's ``m0`` lives on a real hugetlbfs mount (2 MiB pages)."""
    import contextlib

    from ramlab.capture.qemu import MachineSpec, hugetlbfs_mount, load_stream
    from ramlab.wire.events import Pong
    from ramlab.wire.return_path import decode_return_path

    r = simulate(ram="16M", workload="uniform", dirty_rate="16M", bandwidth="16M", postcopy_bandwidth="4M",
                 downtime_ms=10, stream=True, seed=2, postcopy=True, postcopy_after=2, hugepages=hugepages)
    assert r.postcopy.switched and r.counters["discarded"] > 0 and r.counters["postcopy_requests"] > 0
    path = tmp_path / "pc.bin"
    r.save(path)
    with contextlib.ExitStack() as stack:
        spec = MachineSpec(machine="pc", ram_mib=16)
        if hugepages:
            try:
                mnt = stack.enter_context(hugetlbfs_mount(16))
            except Exception as exc:  # no hugetlbfs / not root
                pytest.skip(f"no hugetlbfs mount with 2 MiB pages: {exc}")
            spec = MachineSpec(machine="pc", ram_mib=16, hugepages=True, hugepage_dir=mnt)
        res = load_stream(path, spec, capabilities=["postcopy-ram"], timeout=120)
    assert res.query_migrate.get("status") == "completed"
    main = "m0" if hugepages else "pc.ram"
    assert main in res.info_ramblock and (("2 MiB" in res.info_ramblock) == hugepages)
    ram = np.frombuffer(res.ram, np.uint8)
    want = r.final_ram[main]
    keep = np.ones(ram.size, bool)
    keep[0xA0000:0x100000] = False  # VGA window / BIOS shadow: not plain RAM in the dump
    assert np.array_equal(ram[keep], want[keep])
    rp = decode_return_path(res.return_path[0])
    assert sorted(e.value for e in rp if isinstance(e, Pong)) == [1, 2, 3, 4]
    assert isinstance(rp[-1], Shut) and rp[-1].status == 0
