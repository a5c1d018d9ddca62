"""The live decoder against the offline front door: a real capture fed in random chunks, its
connections interleaved at random (or as the recorder logged them), ends with the trace, the
records and the RAM that ``ramlab.open`` gives for the same files; passes are reported complete
while the stream is still coming in."""

from __future__ import annotations

import numpy as np
import pytest

import ramlab
from ramlab.data import data_path
from ramlab.live.decoder import LiveDecoder, multifd_flush_epochs, pass_pages
from ramlab.live.recording import capture_layout, recorded_chunks
from tests._shared import CAPTURES, CAPTURES_Q10, needs_shared

BUNDLED = ["plain", "xbzrle", "compress", "multifd-zstd", "postcopy", "postcopy-hugepages", "q10/q10-xbzrle",
           "q10/q10-postcopy"]


def live_decoder_for(layout) -> LiveDecoder:
    return LiveDecoder(layout.mode, capabilities=layout.capabilities, multifd_channels=layout.multifd_channels)


def feed_random(folder, seed: int, max_chunk: int):
    """Each connection cut at random places, the connections interleaved at random."""
    layout = capture_layout(folder)
    rng = np.random.default_rng(seed)
    pieces = {}
    for key in layout.files:
        data = bytes(layout.data(key))
        cuts = np.sort(rng.integers(0, len(data) + 1, size=max(1, len(data) // max_chunk)))
        bounds = [0, *cuts.tolist(), len(data)]
        pieces[key] = [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
    live = live_decoder_for(layout)
    done, t = [], 0.0
    while pieces:
        keys = sorted(pieces)
        key = keys[int(rng.integers(len(keys)))]
        t += 0.001
        done += live.receive(key, pieces[key].pop(0), t)
        if not pieces[key]:
            del pieces[key]
            if rng.random() < 0.5:
                done += live.end(key, t)
    done += live.finish(t + 0.001)
    return live, done


def assert_same_as_open(live: LiveDecoder, folder, done) -> None:
    m = ramlab.open(folder)
    assert m.error is None and live.error is None, (m.error, live.error)
    a, b = live.to_trace(), m.trace
    assert a.pass_kinds == b.pass_kinds
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_array_equal(a.wire_bytes, b.wire_bytes)
    assert sorted(a.counters) == sorted(b.counters)
    for k in a.counters:
        np.testing.assert_array_equal(a.counters[k], b.counters[k])
    assert dict(live.records) == dict(m.records)
    for name in m.destination.blocks:
        np.testing.assert_array_equal(live.ram(name), m.ram(name))
    # one summary per pass, in order, and their pages add up to the records of ramlab inspect
    assert [p.index for p in done] == list(range(b.n_passes))
    total = {k: sum(p.pages[k] for p in done) for k in ("zero", "normal", "xbzrle", "compressed")}
    records = m.summary()["records"]
    assert total == {"zero": records["zero"], "normal": records["page"], "xbzrle": records["xbzrle"],
                     "compressed": records["compressed"]}


@pytest.mark.parametrize("name", BUNDLED)
def test_random_chunks_match_open(name: str) -> None:
    folder = data_path(name)
    for seed, max_chunk in ((0, 4096), (1, 1 << 16), (2, 97)):
        live, done = feed_random(folder, seed, max_chunk)
        assert_same_as_open(live, folder, done)


@pytest.mark.parametrize("name", ["postcopy", "postcopy-hugepages", "q10/q10-postcopy"])
def test_recorded_order_matches_open(name: str) -> None:
    """Fed as the proxy logged the chunks (forward and return path interleaved by time)."""
    layout = capture_layout(data_path(name))
    assert layout.timing == "chunks.jsonl"
    data = {k: bytes(layout.data(k)) for k in layout.files}
    live = live_decoder_for(layout)
    done = []
    chunks = recorded_chunks(layout)
    assert sum(n for *_, n in chunks) == sum(len(d) for d in data.values())
    for t, key, off, n in chunks:
        done += live.receive(key, data[key][off:off + n], t)
    early = len(done)
    done += live.finish(chunks[-1][0])
    assert early >= 1  # the bulk pass was complete before the stream ended
    assert_same_as_open(live, data_path(name), done)
    assert [round(p.t, 6) for p in done] == sorted(round(p.t, 6) for p in done)


def test_passes_complete_before_the_end() -> None:
    """The passes of a precopy capture are reported as the bytes arrive, long before the end."""
    layout = capture_layout(data_path("xbzrle"))
    data = bytes(layout.data(("fwd", 0)))
    live = live_decoder_for(layout)
    seen_at = {}
    for i in range(0, len(data), 1 << 16):
        for p in live.receive(("fwd", 0), data[i:i + (1 << 16)], t=i):
            seen_at[p.index] = i
    assert len(seen_at) >= 3
    assert seen_at[0] < len(data) * 0.8  # the bulk pass ends well before the stream does
    snap = live.snapshot()
    assert not snap.finished and snap.n_passes == len(seen_at) + 1 and snap.current is not None
    assert (snap.counts[:-1].sum(1) == snap.counts[0].sum()).all()  # every pass covers all pages


@needs_shared
@pytest.mark.parametrize("folder", [CAPTURES / "multifd-zstd", CAPTURES_Q10 / "q10-multifd-zstd",
                                    CAPTURES / "postcopy-faults"])
def test_shared_captures_match_open(folder) -> None:
    live, done = feed_random(folder, 3, 1 << 15)
    assert_same_as_open(live, folder, done)


def test_multifd_epochs_applied_while_streaming() -> None:
    """Multifd epochs are applied as soon as the main channel and every channel passed them."""
    layout = capture_layout(data_path("multifd-zstd"))
    data = {k: bytes(layout.data(k)) for k in layout.files}
    live = live_decoder_for(layout)
    step = 1 << 14
    reported = []
    for off in range(0, max(len(d) for d in data.values()), step):
        for key, d in sorted(data.items()):
            if off < len(d):
                reported += live.receive(key, d[off:off + step], off)
    mf = live.loader.multifd
    assert mf.applied >= 3 and reported  # applied before the input ended
    reported += live.finish(0)
    assert_same_as_open(live, data_path("multifd-zstd"), reported)


def test_multifd_without_channel_count_waits_for_the_end() -> None:
    layout = capture_layout(data_path("multifd-zstd"))
    live = LiveDecoder("multifd", multifd_channels=None)
    for key in sorted(layout.files):
        live.receive(key, bytes(layout.data(key)), 0)
    assert live.loader.multifd.applied == 0
    done = live.finish(1)
    assert_same_as_open(live, data_path("multifd-zstd"), done)


def test_flush_rule() -> None:
    assert multifd_flush_epochs("pc-i440fx-8.0") is False
    assert multifd_flush_epochs("pc-i440fx-8.1") is True
    assert multifd_flush_epochs("pc-q35-9.2") is True
    assert multifd_flush_epochs(None) is None


def test_pass_pages_requested_split() -> None:
    from ramlab.trace import PageClass as P

    cls = np.array([P.REQUESTED, P.REQUESTED, P.POSTCOPY, P.DISCARDED, P.NOT_SENT], np.uint8)
    size = np.array([9, 4104, 4104, 0, 0], np.uint32)
    assert pass_pages(cls, size, 4096) == {"zero": 1, "normal": 2, "xbzrle": 0, "compressed": 0}


def test_truncated_stream_keeps_the_prefix() -> None:
    layout = capture_layout(data_path("plain"))
    data = bytes(layout.data(("fwd", 0)))
    cut = data[: len(data) * 2 // 3]
    live = LiveDecoder()
    for i in range(0, len(cut), 5000):
        live.receive(("fwd", 0), cut[i:i + 5000], 0)
    live.finish(1)
    m = ramlab.open(cut)
    assert live.error is not None and str(live.error) == str(m.error)
    np.testing.assert_array_equal(live.to_trace().classes, m.trace.classes)
    np.testing.assert_array_equal(live.ram(), m.ram())


def test_bad_connection_and_reuse() -> None:
    from ramlab.errors import RamlabError

    live = LiveDecoder()
    with pytest.raises(RamlabError, match="no connection"):
        live.receive(("fwd", 1), b"x", 0)
    with pytest.raises(RamlabError, match="no return path"):
        live.receive(("ret", 0), b"x", 0)
    live.finish(0)
    with pytest.raises(RamlabError, match="finished"):
        live.receive(("fwd", 0), b"x", 0)
    with pytest.raises(RamlabError, match="mode"):
        LiveDecoder("exec")
