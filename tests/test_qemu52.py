"""QEMU 5.2 streams (``data/q52``, Debian bullseye): decoded, checked against QEMU's counters, re-encoded.

Every capture must decode with no error, give the source's RAM (``pmemsave``) outside the VGA
window, have exactly the record counts QEMU counted, and re-encode byte for byte (main channel,
multifd channels, return path). QEMU 5.2's counters are exact enough to check more than page
counts: ``xbzrle-cache.bytes`` and ``multifd-bytes`` are sums over the records (below, from
``migration/ram.c`` of v5.2.0). Loading streams into a QEMU 5.2 needs ``$RAMLAB_QEMU52`` (see
``scripts/capture_chroot.py --release bullseye --mount``); those tests skip without it.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
from _shared import DATA, decode_all, guest_ram, outside_vga, read_zst

import ramlab
from ramlab.cli import main
from ramlab.constants import MULTIFD_FLAG_SYNC, MULTIFD_FLAG_ZLIB
from ramlab.provenance import _parse, provenance
from ramlab.trace import PageClass
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_stream
from ramlab.wire.multifd import MultifdChannelEncoder, MultifdHandshake, MultifdPacket, decode_channel, epochs
from ramlab.wire.return_path import decode_return_path, encode_return_path

Q52 = DATA / "q52"
XBZRLE = Q52 / "q52-xbzrle"
MULTIFD = Q52 / "q52-multifd-zlib"
POSTCOPY = Q52 / "q52-postcopy"
ALL = [XBZRLE, MULTIFD, POSTCOPY]
TPS = 4096
MULTIFD_PACKET = 1344  # MultiFDPacket_t (320 bytes) + 128 offsets of 8 bytes: packet_len in 5.2
ZLIB_SYNC_FLUSH = b"\x00\x00\xff\xff"  # what deflate(Z_SYNC_FLUSH) ends with


def meta(folder):
    return json.loads((folder / "meta.json").read_text())


def counters(folder):
    return meta(folder)["query_migrate_final"]


def main_stream(folder):
    for name in ("stream.bin.zst", "fwd-0.bin.zst", "channel-0.bin.zst"):
        if (folder / name).exists():
            return read_zst(folder / name)
    raise FileNotFoundError(folder)


def decode(data):
    dec = StreamDecoder()
    dec.receive_data(data)
    dec.close()
    return list(dec.events())


def channel(folder, ch):
    raw = read_zst(folder / f"channel-{ch}.bin.zst")
    return raw, decode_channel(raw)


def test_the_captures_are_bundled():
    assert [p.name for p in sorted(Q52.iterdir()) if (p / "meta.json").exists()] == sorted(p.name for p in ALL)


# ---------------------------------------------------------------- every QEMU 5.2 capture
@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_recorded_by_qemu_52_and_replayed(folder):
    m = meta(folder)
    assert m["qemu_version_qmp"]["qemu"] == {"major": 5, "minor": 2, "micro": 0}
    assert m["replay"]["matched"] is True  # a fresh QEMU 5.2 loaded it to the same RAM


@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_ram_equals_pmemsave(folder):
    m = ramlab.open(folder)
    assert m.error is None, m.error
    assert m.machine_type == "pc-i440fx-5.2"
    ram = m.ram("pc.ram")
    assert len(outside_vga(np.flatnonzero(ram != guest_ram(folder)))) == 0


@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_records_equal_qemu_counters(folder):
    """PAGE records (or unique multifd pages) = ``normal``, ZERO records = ``duplicate``."""
    m = ramlab.open(folder)
    ram = counters(folder)["ram"]
    assert (m.records["page"], m.records["zero"]) == (ram["normal"], ram["duplicate"])


@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_main_channel_round_trips_byte_exact(folder):
    data = main_stream(folder)
    assert encode_stream(decode(data)) == data


@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_cli_reencode(folder, tmp_path):
    out = tmp_path / "out.bin"
    assert main(["reencode", str(folder), "-o", str(out), "-q"]) == 0
    assert out.read_bytes() == main_stream(folder)


@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_inspect_provenance_includes_52(folder, capsys):
    assert main(["inspect", str(folder), "--json", "-q"]) == 0
    prov = json.loads(capsys.readouterr().out)["provenance"]
    assert not prov["conflict"]
    for bounds in (prov, prov["certain"]):  # None: unbounded
        assert bounds["min"] == "5.2" and (bounds["max"] is None or _parse(bounds["max"]) >= (5, 2))


@pytest.mark.parametrize("folder", ALL, ids=lambda p: p.name)
def test_no_configuration_subsections_and_vmdesc_without_configuration(folder):
    m = ramlab.open(folder)
    conf = next(e for e in m.events if isinstance(e, ev.Configuration))
    assert conf.body == b"\x00\x00\x00\x0dpc-i440fx-5.2" and conf.subsections == ()
    assert not any(isinstance(e, ev.Command) and e.name == "SWITCHOVER_START" for e in m.events)
    if folder != POSTCOPY:  # a postcopy stream carries no vmdesc
        assert "configuration" not in m.vmdesc


def test_postcopy_decodes_chunk_by_chunk_as_it_crossed_the_proxy():
    """Fed the forward stream in the chunks the recording proxy saw, the decoder gives the same events."""
    lines = [json.loads(x) for x in read_zst(POSTCOPY / "chunks.jsonl.zst").decode().splitlines()]
    sizes = [c["len"] for c in lines if c["dir"] == "fwd" and c["conn"] == 0]
    data = main_stream(POSTCOPY)
    assert sum(sizes) == len(data) and len(sizes) > 10
    events, err = decode_all(data, sizes)
    assert err is None and events == decode(data)


@pytest.mark.parametrize("folder", [XBZRLE, MULTIFD], ids=lambda p: p.name)
def test_random_chunks_decode_like_the_whole(folder):
    data = main_stream(folder)
    rng = np.random.default_rng(52)
    sizes = rng.choice([1, 7, 8, 4096, 4104, 65536], size=len(data) // 2000).tolist()
    events, err = decode_all(data, sizes)
    assert err is None and events == decode(data)


# ---------------------------------------------------------------- XBZRLE
def test_xbzrle_counters_are_sums_over_the_records():
    """5.2 counts ``xbzrle-cache.bytes`` as each XBZRLE record's size less the 8-byte page header
    word, plus a whole page per overflow; ``pages`` counts every cache hit (records, overflows and
    unchanged pages that send nothing)."""
    m = ramlab.open(XBZRLE)
    q = counters(XBZRLE)["xbzrle-cache"]
    recs = [e for e in m.events if isinstance(e, ev.RamXbzrle)]
    assert len(recs) == m.records["xbzrle"] > 0 and q["overflow"] > 0
    record_bytes = sum(1 + 2 + len(e.data) + (1 + len(e.block) if e.named else 0) for e in recs)
    assert q["bytes"] == record_bytes + TPS * q["overflow"]
    assert len(recs) + q["overflow"] <= q["pages"]


def test_xbzrle_normal_pages_are_bulk_pages_misses_and_overflows():
    """5.2 skips XBZRLE in the bulk stage (``ram_bulk_stage``); afterwards a non-zero page is a
    cache miss or an overflow when it goes out as a normal page."""
    m = ramlab.open(XBZRLE)
    q = counters(XBZRLE)
    bulk_normal = int(m.trace.class_counts()[0, PageClass.NORMAL])
    assert m.trace.pass_kinds[0] == "bulk"
    assert q["ram"]["normal"] == bulk_normal + q["xbzrle-cache"]["cache-miss"] + q["xbzrle-cache"]["overflow"]


# ---------------------------------------------------------------- multifd (zlib: 5.2 has no multifd zstd)
@pytest.mark.parametrize("ch", [1, 2])
def test_multifd_channel_reencodes_byte_exact(ch):
    raw, events = channel(MULTIFD, ch)
    assert MultifdChannelEncoder().encode_events(events) == raw


@pytest.mark.parametrize("ch", [1, 2])
def test_multifd_handshake_and_zlib_packets(ch):
    raw, events = channel(MULTIFD, ch)
    hs = events[0]
    assert isinstance(hs, MultifdHandshake)
    assert (hs.version, hs.uuid, hs.channel_id) == (1, bytes(16), ch - 1) and events[1].offset == 64
    packets = [e for e in events if isinstance(e, MultifdPacket)]
    assert {p.pages_alloc for p in packets} == {128}
    data = [p for p in packets if p.normal_pages]
    assert all(p.flags & MULTIFD_FLAG_ZLIB and p.payload_len == p.next_packet_size for p in data)
    # one deflate stream per channel (zlib header once, level 1), flushed at the end of each packet
    assert data[0].payload[:2] == b"\x78\x01" and all(p.payload[:2] != b"\x78\x01" for p in data[1:])
    assert all(p.payload.endswith(ZLIB_SYNC_FLUSH) for p in data)


def test_multifd_syncs_follow_the_main_channel():
    """Each RAM_SAVE_FLAG_EOS of the main channel has one SYNC packet on every channel; no
    MULTIFD_FLUSH records (8.1+) and no zero pages in packets (9.0+): zero pages are ZERO records."""
    m = ramlab.open(MULTIFD)
    eos = sum(isinstance(e, ev.RamEos) for e in m.events)
    assert not any(isinstance(e, ev.RamMultifdFlush) for e in m.events)
    for ch in (1, 2):
        packets = [e for e in channel(MULTIFD, ch)[1] if isinstance(e, MultifdPacket)]
        assert sum(bool(p.flags & MULTIFD_FLAG_SYNC) for p in packets) == eos
        assert all(p.zero_pages == 0 for p in packets)
    assert m.records["zero"] == counters(MULTIFD)["ram"]["duplicate"]


def test_multifd_bytes_counts_uncompressed_packets():
    """5.2 adds ``packet_len + used * page size`` per packet to ``multifd-bytes`` (before
    compression), and unique pages per sync epoch to ``normal``."""
    ram = counters(MULTIFD)["ram"]
    n_packets = n_pages = 0
    keys = set()
    for ch in (1, 2):
        events = channel(MULTIFD, ch)[1]
        for epoch, p in epochs(events):
            n_packets += 1
            n_pages += p.normal_pages
            keys |= {(epoch, p.ramblock, int(o)) for o in p.normal_offsets}
    assert ram["multifd-bytes"] == MULTIFD_PACKET * n_packets + TPS * n_pages
    assert len(keys) == ram["normal"] <= n_pages


def test_multifd_provenance_bounds():
    prov = provenance(ramlab.open(MULTIFD))
    features = {e["feature"] for e in prov["evidence"]}
    assert "multifd without MULTIFD_FLUSH" in features and prov["max"] == "8.0"


# ---------------------------------------------------------------- postcopy
def test_postcopy_commands_and_requests():
    m = ramlab.open(POSTCOPY)
    ram = counters(POSTCOPY)["ram"]
    assert len(m.requests) == ram["postcopy-requests"] > 0
    names = [e.name for e in m.events if isinstance(e, ev.Command)]
    assert [n for n in names if n != "PING"] == [
        "OPEN_RETURN_PATH", "POSTCOPY_ADVISE", "POSTCOPY_RAM_DISCARD", "PACKAGED", "POSTCOPY_LISTEN", "POSTCOPY_RUN",
    ]
    assert m.vmdesc is None


@pytest.mark.parametrize("name", ["ret-0.bin.zst", "ret-replay.bin.zst"])
def test_postcopy_return_path_round_trips(name):
    data = read_zst(POSTCOPY / name)
    events = decode_return_path(data)
    assert encode_return_path(events) == data
    kinds = Counter(type(e).__name__ for e in events)
    assert kinds["Pong"] == 4 and type(events[-1]).__name__ == "Shut" and events[-1].status == 0
    if name == "ret-0.bin.zst":
        assert kinds["ReqPages"] == counters(POSTCOPY)["ram"]["postcopy-requests"]


# ---------------------------------------------------------------- streams ramlab writes
def test_simulated_stream_on_a_52_template_decodes():
    """With a 5.2 capture as template the simulator writes a 5.2 stream (machine type, devices)."""
    r = ramlab.simulate(ram="16M", workload="counters", xbzrle=True, cache_size="4M", bandwidth="8M",
                        dirty_rate="4M", downtime_ms=100, stream=True, seed=5, working_set=0.3, template=XBZRLE)
    m = ramlab.open(r.stream)
    assert m.error is None and m.machine_type == "pc-i440fx-5.2"
    assert m.records["xbzrle"] > 0
    assert np.array_equal(m.ram("pc.ram"), r.final_ram["pc.ram"])


def _qemu52() -> str:
    binary = os.environ.get("RAMLAB_QEMU52")
    if not binary:
        pytest.skip("no QEMU 5.2: set $RAMLAB_QEMU52 (scripts/capture_chroot.py --release bullseye --mount)")
    from ramlab.capture.qemu import qemu_version

    assert "version 5.2." in qemu_version(binary), f"$RAMLAB_QEMU52={binary} is not QEMU 5.2"
    return binary


def _simulated(template, tmp_path):
    r = ramlab.simulate(ram="16M", workload="counters", xbzrle=True, compress=True, cache_size="4M",
                        bandwidth="8M", dirty_rate="4M", downtime_ms=100, stream=True, seed=5, working_set=0.3,
                        template=template)
    path = tmp_path / "sim.bin"
    r.save(path)
    return r, path


@pytest.mark.qemu
def test_qemu52_loads_a_simulated_stream_on_a_52_template(tmp_path):
    from ramlab.capture.qemu import MachineSpec, load_stream

    binary = _qemu52()
    r, path = _simulated(XBZRLE, tmp_path)
    res = load_stream(path, MachineSpec(machine="pc", ram_mib=16), capabilities=["xbzrle", "compress"],
                      parameters={"decompress-threads": 2}, timeout=120, binary=binary)
    assert res.query_migrate.get("status") == "completed"
    ram = np.frombuffer(res.ram, np.uint8)
    assert len(outside_vga(np.flatnonzero(ram != r.final_ram["pc.ram"]))) == 0


@pytest.mark.qemu
def test_qemu52_refuses_the_default_72_template(tmp_path):
    """The default template is a QEMU 7.2 capture: 5.2 stops at its configuration section."""
    from ramlab.capture.qemu import MachineSpec, load_stream
    from ramlab.errors import CaptureError
    from ramlab.simulate import default_template

    binary = _qemu52()
    template = default_template()
    if template is None:
        pytest.skip("no default template capture")
    _, path = _simulated(template, tmp_path)
    with pytest.raises(CaptureError, match="Machine type received is 'pc-i440fx-7.2' and local is 'pc-i440fx-5.2'"):
        load_stream(path, MachineSpec(machine="pc", ram_mib=16), capabilities=["xbzrle", "compress"],
                    parameters={"decompress-threads": 2}, timeout=120, binary=binary)
