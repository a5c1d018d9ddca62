"""The pure-numpy lockstep decoder (:mod:`ramlab.xbzrle.walk`) on inputs that stress its
mechanics: tiny chunks, pages whose run counts differ a lot (several walk rounds), growth of
the reused buffers, and inputs long enough to need the overflow guard of the offset sums.
Expected results come from the pure-Python reference decoder of ``tests/test_xbzrle.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_xbzrle import ref_decode
from test_xbzrle_backends import check_decode_all, encoded_inputs

from ramlab import xbzrle
from ramlab.errors import XbzrleError
from ramlab.xbzrle import codec
from ramlab.xbzrle import walk as _xbzrle_walk


@pytest.fixture(autouse=True)
def _numpy_backend():
    saved = codec._backend_choice
    xbzrle.set_backend("numpy")
    yield
    codec._backend_choice = saved


def expected(encoded: list[bytes], old2d: np.ndarray) -> tuple[list[int], np.ndarray]:
    pages = [bytearray(o.tobytes()) for o in old2d]
    counts = [ref_decode(e, p) for e, p in zip(encoded, pages)]
    out = np.array([np.frombuffer(bytes(p), np.uint8) for p in pages]).reshape(old2d.shape)
    out[np.array(counts) < 0] = old2d[np.array(counts) < 0]  # ramlab leaves invalid pages untouched
    return counts, out


def count_rounds(monkeypatch) -> list[int]:
    """Record the number of pages of every walk round."""
    seen: list[int] = []
    real = _xbzrle_walk._round_runs

    def spy(ws, C, D, S, end, *args):
        seen.append(end.size)
        return real(ws, C, D, S, end, *args)

    monkeypatch.setattr(_xbzrle_walk, "_round_runs", spy)
    return seen


def test_long_pages_among_short_ones_take_extra_rounds(monkeypatch):
    rng = np.random.default_rng(5)
    n, size = 64, 4096
    old = rng.integers(0, 256, (n, size), dtype=np.uint8)
    new = old.copy()
    new[:, 100] ^= 1  # one run everywhere
    new[3, ::9] ^= 0xFF  # 456 runs: far more steps than the first rows hold
    new[40, ::37] ^= 0xFF  # 111 runs
    batch = xbzrle.encode_batch(old, new)
    rounds = count_rounds(monkeypatch)
    pages = old.copy()
    counts = xbzrle.decode_batch(batch, pages)
    assert np.array_equal(pages, new)
    want, _ = expected(batch.tolist(), old)
    assert counts.tolist() == want
    assert rounds == [n, 2]  # the two long pages went on alone after the first round


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([1, 7, 64, 130]), st.sampled_from(["raise", "report"]),
       st.integers(1, 80), st.integers(1, 5))
def test_hypothesis_any_chunking_gives_the_same_result(data, size, errors, chunk_bytes, chunk_pages):
    encoded = data.draw(st.lists(encoded_inputs(size), min_size=1, max_size=12))
    old2d = np.frombuffer(data.draw(st.binary(min_size=size * len(encoded), max_size=size * len(encoded))),
                          np.uint8).reshape(len(encoded), size).copy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_xbzrle_walk, "CHUNK_BYTES", chunk_bytes)
        mp.setattr(_xbzrle_walk, "CHUNK_PAGES", chunk_pages)
        check_decode_all(encoded, old2d, errors)


def test_first_bad_page_in_a_later_chunk_keeps_earlier_chunks(monkeypatch):
    monkeypatch.setattr(_xbzrle_walk, "CHUNK_PAGES", 2)
    good = b"\x00\x01\x09"
    encoded = [good, good, good, b"\x00\x00\x05", good, good]  # page 3: empty changed run
    pages = np.zeros((6, 16), np.uint8)
    with pytest.raises(XbzrleError, match="empty changed run at byte 1 .*page 3 of the batch"):
        xbzrle.decode_batch(encoded, pages)
    assert pages[:3, 0].tolist() == [9, 9, 9] and not pages[3:].any()
    pages[...] = 0
    counts = xbzrle.decode_batch(encoded, pages, errors="report")
    assert counts.tolist() == [1, 1, 1, -1, 1, 1]
    assert pages[:, 0].tolist() == [9, 9, 9, 0, 9, 9]


@pytest.mark.parametrize("body,size", [
    (b"\x01\x01\xaa" * 40000, 1 << 17),  # valid: 80001 bytes covered
    (b"\x01\x01\xaa" * 40000, 4096),  # past the page after 2048 runs
    (b"\xff\x7f\x01\xaa" * 140000, 1 << 18),  # 140000 zero runs of 0x3fff: the sum passes 2**31
])
def test_inputs_with_more_runs_than_int32_sums_allow(body, size):
    """Very long inputs: the running page offset must not wrap around (the sums are clamped)."""
    encoded = [b"\x00\x01\xbb" + body, b"\x00\x01\xcc"]
    old = np.zeros((2, size), np.uint8)
    want_counts, want_pages = expected(encoded, old)
    pages = old.copy()
    counts = xbzrle.decode_batch(encoded, pages, errors="report")
    assert counts.tolist() == want_counts
    assert np.array_equal(pages, want_pages)


def test_workspace_is_reused_across_chunks(monkeypatch):
    """Chunks of the same shape allocate their large buffers once."""
    sizes = []
    real = _xbzrle_walk._Workspace.bytes_for

    def spy(self, n):
        before = self.nbytes
        real(self, n)
        if self.nbytes != before:
            sizes.append(self.nbytes)

    monkeypatch.setattr(_xbzrle_walk._Workspace, "bytes_for", spy)
    monkeypatch.setattr(_xbzrle_walk, "CHUNK_PAGES", 16)
    rng = np.random.default_rng(1)
    old = rng.integers(0, 256, (160, 512), dtype=np.uint8)
    new = old.copy()
    new[:, ::64] ^= 1
    batch = xbzrle.encode_batch(old, new)
    pages = old.copy()
    xbzrle.decode_batch(batch, pages)
    assert np.array_equal(pages, new)
    assert len(sizes) == 1  # ten chunks, one allocation


def test_input_longer_than_any_valid_page_is_rejected_without_a_walk(monkeypatch):
    """A page needs at most 3 * dlen + 2 input bytes; a longer input is not walked (or buffered)."""
    grown = []
    real = _xbzrle_walk._Workspace.bytes_for
    monkeypatch.setattr(_xbzrle_walk._Workspace, "bytes_for", lambda self, n: grown.append(n) or real(self, n))
    size = 64
    # the longest valid input for 64 bytes: every length in two bytes, runs as short as allowed
    longest = b"\x80\x00\x81\x00\xaa" + b"\x81\x00\x81\x00\xbb" * 30 + b"\x81\x00\x82\x00\xcc\xdd"
    assert len(longest) == 161 <= 3 * size + 2
    junk = b"\x01\x01\xaa" * (1 << 20)
    encoded = [longest, junk, longest]
    old = np.zeros((3, size), np.uint8)
    want_counts, want_pages = expected(encoded, old)
    assert want_counts == [64, -1, 64]
    pages = old.copy()
    assert xbzrle.decode_batch(encoded, pages, errors="report").tolist() == want_counts
    assert np.array_equal(pages, want_pages)
    assert max(grown) < 1000
    with pytest.raises(XbzrleError, match="zero run goes past the end of the page at byte 96 .*page 1 of"):
        xbzrle.decode_batch(encoded, pages)
