"""XBZRLE encoder/decoder against QEMU's unit-test cases and a pure-Python reference.

The reference functions below are written straight from the pseudocode of
``docs/reference/algorithms.md`` §6.1 / §6.2, byte by byte, independently of ramlab.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab import xbzrle
from ramlab.errors import XbzrleError
from ramlab.xbzrle import (
    Run,
    codec,
    decode_batch,
    decode_page,
    encode_batch,
    encode_page,
    overflow_check,
    parse_encoded,
    runs,
    uleb128_decode_small,
    uleb128_encode_small,
)
from ramlab.xbzrle import walk as _xbzrle_walk

PAGE = 4096


# --- reference implementation (algorithms.md §6) ---------------------------------------


def ref_uleb(n: int) -> bytes:
    assert 0 <= n <= 0x3FFF
    return bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])


def ref_encode(old: bytes, new: bytes, dlen: int) -> bytes | None:
    slen, i, d, out = len(old), 0, 0, bytearray()
    while i < slen:
        if d + 2 > dlen:
            return None
        z = 0
        while i < slen and old[i] == new[i]:
            i += 1
            z += 1
        if z == slen:
            return b""
        if i == slen:
            return bytes(out)
        u = ref_uleb(z)
        out += u
        d += len(u)
        if d + 2 > dlen:
            return None
        start, n = i, 0
        while i < slen and old[i] != new[i]:
            i += 1
            n += 1
        u = ref_uleb(n)
        out += u
        d += len(u)
        if d + n > dlen:
            return None
        out += new[start : start + n]
        d += n
    return bytes(out)


def ref_uleb_decode(src: bytes, i: int) -> tuple[int, int]:
    if src[i] < 0x80:
        return 1, src[i]
    if src[i + 1] >= 0x80:
        return -1, src[i] & 0x7F
    return 2, (src[i] & 0x7F) | (src[i + 1] << 7)


def ref_decode(src: bytes, dst: bytearray) -> int:
    slen, dlen, i, d = len(src), len(dst), 0, 0
    while i < slen:
        if slen - i < 2:
            return -1
        r, count = ref_uleb_decode(src, i)
        if r < 0 or (i > 0 and count == 0):
            return -1
        i += r
        d += count
        if d > dlen:
            return -1
        if slen - i < 2:
            return -1
        r, count = ref_uleb_decode(src, i)
        if r < 0 or count == 0:
            return -1
        i += r
        if d + count > dlen or i + count > slen:
            return -1
        dst[d : d + count] = src[i : i + count]
        d += count
        i += count
    return d


def mutate(old: np.ndarray, positions) -> np.ndarray:
    new = old.copy()
    positions = np.asarray(positions, dtype=np.int64)
    new[positions[positions < old.size]] ^= 0x5A
    return new


# --- QEMU tests/unit/test-xbzrle.c ------------------------------------------------------


def test_uleb_round_trip_and_invalid():
    for n in range(0x4000):
        enc = uleb128_encode_small(n)
        assert len(enc) == (1 if n < 0x80 else 2)
        assert uleb128_decode_small(enc) == (len(enc), n)
    assert uleb128_decode_small(b"\x80\x80") == (-1, 0)
    with pytest.raises(XbzrleError):
        uleb128_encode_small(0x4000)


@pytest.mark.parametrize("seed", range(5))
def test_qemu_encode_zero_and_unchanged(seed):
    diff_len = np.random.default_rng(seed).integers(0, PAGE - 1006)
    buffer = bytearray(PAGE)
    for i in range(diff_len, 0, -1):
        buffer[1000 + i] = i & 0xFF
    buffer[1000 + diff_len + 3] = 103
    buffer[1000 + diff_len + 5] = 105
    assert encode_page(buffer, buffer, PAGE) == b""


def test_qemu_encode_decode_1_byte():
    buffer, test = bytearray(PAGE), bytearray(PAGE)
    test[PAGE - 1] = 1
    enc = encode_page(buffer, test, PAGE)
    assert enc == bytes.fromhex("ff1f0101")
    assert len(enc) == len(uleb128_encode_small(4095)) + 2
    assert decode_page(enc, buffer) == PAGE
    assert buffer == test


def test_qemu_encode_overflow():
    test = bytearray(PAGE)
    for i in range(PAGE // 2 - 1):
        test[i * 2] = 1
    assert encode_page(bytes(PAGE), test, PAGE) is None


@pytest.mark.parametrize("seed", range(20))
def test_qemu_encode_decode_range(seed):
    diff_len = int(np.random.default_rng(seed).integers(0, PAGE - 1006))
    buffer, test = bytearray(PAGE), bytearray(PAGE)
    for i in range(diff_len, 0, -1):
        buffer[1000 + i] = i & 0xFF
        test[1000 + i] = (i + 4) & 0xFF
    buffer[1000 + diff_len + 3], test[1000 + diff_len + 3] = 103, 107
    buffer[1000 + diff_len + 5], test[1000 + diff_len + 5] = 105, 109
    enc = encode_page(test, buffer, PAGE)
    assert enc == ref_encode(bytes(test), bytes(buffer), PAGE)
    rc = decode_page(enc, test)
    assert rc < PAGE
    assert test == buffer


# --- exact edge cases of the encoder ----------------------------------------------------


def test_check_a_reports_overflow_before_unchanged_tail():
    old = bytes(16)
    new = b"\x01" + bytes(15)  # encodes as 00 01 01 followed by 15 equal bytes
    assert encode_page(old, new, dlen=4) is None  # (A): 3 + 2 > 4 though 3 bytes would fit
    assert encode_page(old, new, dlen=5) == b"\x00\x01\x01"
    assert overflow_check(old, new, dlen=4).check == "A"


def test_result_may_be_exactly_dlen():
    old = bytes(16)
    new = bytes(15) + b"\x07"  # 0f 01 07, page ends changed: only (C) applies at the end
    assert encode_page(old, new, dlen=3) == b"\x0f\x01\x07"
    assert encode_page(old, new, dlen=2) is None
    assert overflow_check(old, new, dlen=2).check == "B"


def test_unchanged_page_with_tiny_dlen_is_overflow():
    assert encode_page(bytes(8), bytes(8), dlen=1) is None
    assert encode_page(bytes(8), bytes(8), dlen=2) == b""
    assert encode_page(b"", b"", dlen=0) == b""


def test_two_byte_lengths():
    old = np.zeros(PAGE, np.uint8)
    new = old.copy()
    new[200:400] = 9
    assert encode_page(old, new) == bytes.fromhex("c801c801") + bytes([9]) * 200


def test_uleb_limit_on_large_pages():
    size = 0x4008
    old = np.zeros(size, np.uint8)
    new = old.copy()
    new[-1] = 1  # zrun of 0x4007 cannot be encoded: QEMU asserts
    with pytest.raises(XbzrleError, match="0x3fff"):
        encode_page(old, new)
    assert encode_page(old, new, dlen=1) is None  # check (A) fails before the assert
    new2 = old.copy()
    new2[0] = 1  # the long run is the unencoded trailing zrun: fine
    assert encode_page(old, new2) == b"\x00\x01\x01"


def test_accepts_bytes_like_inputs():
    old = np.zeros(64, np.uint8)
    new = mutate(old, [5])
    want = encode_page(old, new)
    assert want == bytes([5, 1, 0x5A])
    for conv in (bytes, bytearray, memoryview):
        assert encode_page(conv(old.tobytes()), conv(new.tobytes())) == want
    with pytest.raises(XbzrleError):
        encode_page(old, new[:-8])


# --- reference agreement -----------------------------------------------------------------


def structured_pages():
    rng = np.random.default_rng(7)
    old = rng.integers(0, 256, PAGE, dtype=np.uint8)
    yield old, old.copy()
    yield old, mutate(old, [PAGE - 1])
    yield old, mutate(old, [0])
    yield old, mutate(old, np.arange(0, PAGE, 2))
    yield old, mutate(old, np.arange(1, PAGE, 2))
    for k in (1, 8, 64, 300, 1000):
        yield old, mutate(old, rng.choice(PAGE, k, replace=False))
    for start in (0, 1, 2):  # isolated changes cost 3 bytes each: ~1365 of them fill the page
        for k in range(1358, 1367, 2):
            yield old, mutate(old, start + 3 * np.arange(k))
    for density in (0.3, 0.5, 0.9):
        yield old, mutate(old, np.flatnonzero(rng.random(PAGE) < density))
    yield old, rng.integers(0, 256, PAGE, dtype=np.uint8)


@pytest.mark.parametrize("dlen", [PAGE, 4000, 2048, 100, 3, 2, 1, 0])
def test_structured_pages_match_reference(dlen):
    for old, new in structured_pages():
        want = ref_encode(old.tobytes(), new.tobytes(), dlen)
        assert encode_page(old, new, dlen) == want
        assert (overflow_check(old, new, dlen) is None) == (want is not None)


def test_near_overflow_sweep_hits_both_outcomes():
    old = np.zeros(PAGE, np.uint8)
    outcomes = set()
    for k in range(1355, 1367):
        for start in (0, 1, 2):
            new = mutate(old, start + 3 * np.arange(k))
            got = encode_page(old, new)
            assert got == ref_encode(old.tobytes(), new.tobytes(), PAGE)
            outcomes.add(got is None)
    assert outcomes == {True, False}


@st.composite
def page_pairs(draw, max_words=40, size=None):
    if size is None:
        size = 8 * draw(st.integers(0, max_words)) + draw(st.sampled_from([0, 0, 0, 3, 5]))
    old = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), np.uint8)
    kind = draw(st.sampled_from(["edits", "runs", "density", "random"]))
    new = old.copy()
    if size and kind == "edits":
        for pos in draw(st.lists(st.integers(0, size - 1), max_size=12)):
            new[pos] ^= draw(st.integers(1, 255))
    elif size and kind == "runs":
        for _ in range(draw(st.integers(0, 4))):
            a = draw(st.integers(0, size - 1))
            b = draw(st.integers(a, min(size, a + 300)))
            new[a:b] ^= 0xFF
    elif size and kind == "density":
        p = draw(st.floats(0, 1))
        seed = draw(st.integers(0, 2**32 - 1))
        mask = np.random.default_rng(seed).random(size) < p
        new[mask] ^= 0x81
    elif kind == "random":
        new = np.frombuffer(draw(st.binary(min_size=size, max_size=size)), np.uint8)
    return old, new


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_pairs(), st.integers(0, 400))
def test_hypothesis_encode_matches_reference_and_round_trips(pair, dlen_offset):
    old, new = pair
    for dlen in (old.size, max(0, old.size - dlen_offset), dlen_offset):
        enc = encode_page(old, new, dlen)
        assert enc == ref_encode(old.tobytes(), new.tobytes(), dlen)
        if enc is None:
            continue
        assert len(enc) <= dlen
        if enc == b"":
            assert np.array_equal(old, new)
            continue
        page = old.copy()
        assert decode_page(enc, page) == ref_decode(enc, bytearray(old.tobytes()))
        assert np.array_equal(page, new)


@settings(max_examples=60, deadline=None)
@given(st.lists(page_pairs(size=64), min_size=1, max_size=30),
       st.sampled_from([64, 40, 12, 3]))
def test_hypothesis_batch_equals_scalar(pairs, dlen):
    old2d = np.stack([p[0] for p in pairs])
    new2d = np.stack([p[1] for p in pairs])
    batch = encode_batch(old2d, new2d, dlen)
    want = [encode_page(o, n, dlen) for o, n in pairs]
    assert batch.tolist() == want
    assert batch.ret.tolist() == [-1 if w is None else len(w) for w in want]
    target = old2d.copy()
    counts = decode_batch(batch, target)
    for k, w in enumerate(want):
        if w:
            assert np.array_equal(target[k], new2d[k])
            assert counts[k] == decode_page(w, old2d[k].copy())
        else:
            assert counts[k] == 0
            assert np.array_equal(target[k], old2d[k])


def test_batch_across_chunk_boundaries(monkeypatch):
    rng = np.random.default_rng(3)
    n = 50
    old = rng.integers(0, 256, (n, 256), dtype=np.uint8)
    new = old.copy()
    for k in range(n):
        mask = rng.random(256) < rng.choice([0, 0.01, 0.05, 0.3, 0.9, 1.0])
        new[k, mask] ^= 0x33
    new[7, -1] ^= 1  # change at the last byte of a page followed by a change at byte 0 of the next
    new[8, 0] ^= 1
    monkeypatch.setattr(codec, "_CHUNK_BYTES", 700)  # 2 pages per encode chunk
    monkeypatch.setattr(_xbzrle_walk, "CHUNK_BYTES", 300)
    monkeypatch.setattr(_xbzrle_walk, "CHUNK_PAGES", 3)
    batch = encode_batch(old, new)
    assert batch.tolist() == [ref_encode(o.tobytes(), w.tobytes(), 256) for o, w in zip(old, new)]
    target = old.copy()
    decode_batch(batch, target)
    ok = batch.ret > 0
    assert np.array_equal(target[ok], new[ok])
    assert np.array_equal(target[~ok], old[~ok])


# --- decoder ----------------------------------------------------------------------------

BAD_INPUTS = [
    # (encoded, page size, rule, offset)
    (b"\x05", 64, xbzrle.E_SHORT_ZRUN, 0),
    (b"\x00\x01\xaa\x07", 64, xbzrle.E_SHORT_ZRUN, 3),
    (b"\x80\x80\x01", 64, xbzrle.E_ULEB_ZRUN, 1),
    (b"\x00\x01\xaa\x00\x01\xbb", 64, xbzrle.E_ZERO_ZRUN, 3),
    (b"\x41\x01\xaa", 64, xbzrle.E_ZRUN_PAST_PAGE, 0),
    (b"\x05", 4096, xbzrle.E_SHORT_ZRUN, 0),
    (b"\x05\x01", 64, xbzrle.E_SHORT_NZRUN, 1),
    (b"\x05\x81\x80\xaa", 64, xbzrle.E_ULEB_NZRUN, 2),
    (b"\x05\x00\xaa", 64, xbzrle.E_EMPTY_NZRUN, 1),
    (b"\x3f\x02\xaa\xbb", 64, xbzrle.E_NZRUN_PAST_PAGE, 1),
    (b"\x05\x03\xaa\xbb", 64, xbzrle.E_NZRUN_PAST_INPUT, 1),
]


@pytest.mark.parametrize("encoded,size,rule,offset", BAD_INPUTS)
def test_decoder_rejects_like_qemu(encoded, size, rule, offset):
    page = bytearray(size)
    assert ref_decode(encoded, bytearray(size)) == -1
    with pytest.raises(XbzrleError) as exc:
        decode_page(encoded, page)
    assert exc.value.rule == rule
    assert exc.value.offset == offset
    assert f"at byte {offset} " in str(exc.value)
    assert page == bytearray(size)  # validated before writing
    pages = np.zeros((2, size), np.uint8)
    with pytest.raises(XbzrleError, match="page 1 of the batch"):
        decode_batch([b"\x00\x01\x09", encoded], pages)
    assert pages[0, 0] == 9 and not pages[1].any()  # page 0 applied before the bad page 1
    pages[...] = 0
    with pytest.raises(XbzrleError, match="page 0 of the batch"):
        decode_batch([encoded, b"\x00\x01\x09"], pages)
    assert not pages.any()  # nothing after the bad page 0
    counts = decode_batch([b"\x00\x01\x09", encoded], pages, errors="report")
    assert counts.tolist() == [1, -1]
    assert pages[0, 0] == 9 and not pages[1].any()


def test_decoder_accepts_what_qemu_accepts():
    cases = [
        (b"", 0),
        (b"\x00\x01\xaa", 1),  # zero-length first zrun
        (b"\x80\x00\x01\xaa", 1),  # non-canonical two-byte zero
        (b"\x3f\x01\xaa", 64),  # run ends exactly at the page end
        (b"\x02\x01\xaa\x01\x01\xbb", 5),
        (b"\x40\x01\xaa"[:0] + b"\x3e\x02\xaa\xbb", 64),
    ]
    for enc, want in cases:
        ref = bytearray(64)
        assert ref_decode(enc, ref) == want
        page = np.zeros(64, np.uint8)
        assert decode_page(enc, page) == want
        assert page.tobytes() == bytes(ref)
    pages = np.zeros((len(cases), 64), np.uint8)
    assert decode_batch([c[0] for c in cases], pages).tolist() == [c[1] for c in cases]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(1, 48))
def test_hypothesis_decoder_matches_reference_and_stays_in_page(encoded, size):
    guard = np.full(size + 32, 0xEE, np.uint8)
    page = guard[16 : 16 + size]
    ref = bytearray(page.tobytes())
    want = ref_decode(encoded, ref)
    if want < 0:
        with pytest.raises(XbzrleError):
            decode_page(encoded, page)
        assert (guard == 0xEE).all()
    else:
        assert decode_page(encoded, page) == want
        assert page.tobytes() == bytes(ref)
    assert (guard[:16] == 0xEE).all() and (guard[16 + size :] == 0xEE).all()
    pages = np.full((3, size), 0xEE, np.uint8)
    counts = decode_batch([encoded, b"", encoded], pages, errors="report")
    assert counts.tolist() == [want, 0, want]
    if want >= 0:
        assert pages[0].tobytes() == bytes(ref)


def test_decode_batch_into_non_contiguous_pages():
    old = np.zeros((4, 32), np.uint8)
    new = old.copy()
    new[:, 3] = 7
    new[2, 10:20] = 1
    batch = encode_batch(old, new)
    big = np.zeros((4, 64), np.uint8)
    view = big[:, 16:48]
    decode_batch(batch, view)
    assert np.array_equal(view, new)
    assert not big[:, :16].any() and not big[:, 48:].any()


# --- structure for widgets ------------------------------------------------------------


def test_runs_and_parse_encoded():
    old = np.zeros(300, np.uint8)
    new = old.copy()
    new[2:4] = 1
    new[140:142] = 2
    assert runs(old, new) == [
        Run("zero", 0, 2), Run("changed", 2, 2), Run("zero", 4, 136),
        Run("changed", 140, 2), Run("zero", 142, 158),
    ]
    enc = encode_page(old, new)
    assert enc == bytes([2, 2, 1, 1, 0x88, 0x01, 2, 2, 2])
    tokens = [(t.kind, t.offset, t.size, t.value, t.page_offset) for t in parse_encoded(enc, 300)]
    assert tokens == [
        ("zrun", 0, 1, 2, 0), ("nzrun", 1, 1, 2, 2), ("data", 2, 2, 2, 2),
        ("zrun", 4, 2, 136, 4), ("nzrun", 6, 1, 2, 140), ("data", 7, 2, 2, 140),
    ]
    assert runs(old, old) == [Run("zero", 0, 300)]
    assert runs(b"", b"") == []


def test_overflow_check_names_the_first_failing_check():
    old = bytes(PAGE)
    new = bytearray(PAGE)
    for i in range(PAGE // 2 - 1):
        new[i * 2] = 1
    chk = overflow_check(old, new)
    assert chk is not None and chk.need > chk.dlen == PAGE
    assert overflow_check(old, bytes(PAGE - 1) + b"\x01") is None
