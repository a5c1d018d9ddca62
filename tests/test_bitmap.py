"""Bitmap operations against a Python-set model, QEMU's word layout, the seed's debug dump,
and the received-bitmap blob of postcopy recovery."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ramlab.constants import RAMBLOCK_RECV_BITMAP_ENDING
from ramlab.errors import BitmapError, StreamError, TruncatedStream
from ramlab.model.bitmap import Bitmap
from ramlab.wire.recv_bitmap import decode_recv_bitmap, encode_recv_bitmap, recv_bitmap_size

N = 150

op_strategy = st.one_of(
    st.tuples(st.just("set"), st.integers(0, N), st.integers(0, N)),
    st.tuples(st.just("clear"), st.integers(0, N), st.integers(0, N)),
    st.tuples(st.just("set_bit"), st.integers(0, N - 1)),
    st.tuples(st.just("clear_bit"), st.integers(0, N - 1)),
    st.tuples(st.just("test_and_clear_bit"), st.integers(0, N - 1)),
)


def model_next(model: set[int], size: int, start: int, value: bool) -> int:
    for k in range(start, size):
        if (k in model) == value:
            return k
    return size


@settings(max_examples=200, deadline=None)
@given(st.lists(op_strategy, max_size=25), st.integers(0, N), st.integers(0, N + 5))
def test_ops_match_set_model(program, size, start):
    bm, model = Bitmap(N), set()
    for op in program:
        if op[0] in ("set", "clear"):
            s, nr = op[1], min(op[2], N - op[1])
            getattr(bm, op[0])(s, nr)
            rng = set(range(s, s + nr))
            model = model | rng if op[0] == "set" else model - rng
        elif op[0] == "set_bit":
            bm.set_bit(op[1])
            model.add(op[1])
        elif op[0] == "clear_bit":
            bm.clear_bit(op[1])
            model.discard(op[1])
        else:
            assert bm.test_and_clear_bit(op[1]) == (op[1] in model)
            model.discard(op[1])
    assert {k for k in range(N) if bm.test_bit(k)} == model
    assert bm.count() == len(model)
    assert bm.find_next_bit(size, start) == model_next(model, size, start, True)
    assert bm.find_next_zero_bit(size, start) == model_next(model, size, start, False)
    assert bm.find_first_bit(size) == model_next(model, size, 0, True)
    comp = bm.complement()
    assert {k for k in range(N) if comp.test_bit(k)} == set(range(N)) - model
    other = Bitmap.from_bits([k % 3 == 0 for k in range(N)])
    three = {k for k in range(N) if k % 3 == 0}
    assert set(np.flatnonzero(bm.or_(other).bits).tolist()) == model | three
    assert set(np.flatnonzero(bm.and_(other).bits).tolist()) == model & three
    starts, lengths = bm.runs()
    covered = set()
    for s, n in zip(starts.tolist(), lengths.tolist()):
        assert n > 0 and s not in covered and (s - 1) not in model and (s + n) not in model
        covered |= set(range(s, s + n))
    assert covered == model
    words = bm.to_words()
    assert words.dtype == np.uint64 and words.size == (N + 63) // 64
    assert sum(int(w) << (64 * i) for i, w in enumerate(words.tolist())) == sum(1 << k for k in model)
    assert Bitmap.from_words(words, N) == bm
    assert bm.to_le_bytes() == b"".join(struct.pack("<Q", int(w)) for w in words)


def test_equality_and_errors():
    a, b = Bitmap(10), Bitmap(10)
    assert a == b
    b.set_bit(9)
    assert a != b
    assert Bitmap(10) != Bitmap(11)
    with pytest.raises(BitmapError):
        a.set(5, 6)
    with pytest.raises(BitmapError):
        a.test_bit(10)
    with pytest.raises(BitmapError):
        a.find_next_bit(11, 0)
    with pytest.raises(BitmapError):
        a.or_(Bitmap(9))
    assert a.find_next_bit(10, 10) == 10 and a.find_next_bit(5, 7) == 5


def test_word_layout_known_values():
    bm = Bitmap(130)
    bm.set_bit(0)
    bm.set_bit(63)
    bm.set_bit(64)
    bm.set_bit(129)
    assert bm.to_words().tolist() == [0x8000000000000001, 1, 2]
    assert bm.to_le_bytes()[:8] == bytes.fromhex("0100000000000080")
    assert Bitmap.from_words([0xFFFFFFFFFFFFFFFF], 3).bits.tolist() == [True] * 3
    with pytest.raises(BitmapError):
        Bitmap.from_words([1], 65)


def test_dump_text_like_seed():
    bm = Bitmap(300)
    bm.set(126, 4)  # crosses the first line boundary
    text = bm.dump_text(expected=False)
    assert text == (
        "0x00000000 : " + "." * 126 + "11\n"
        "0x00000080 : " + "11" + "." * 126 + "\n"
    )
    full = Bitmap.from_bits(np.ones(300, bool))
    full.clear_bit(299)
    # expected=True: only the last (short, 44-page) line differs
    assert full.dump_text(expected=True) == "0x00000100 : " + "1" * 43 + ".\n"
    assert Bitmap(0).dump_text() == ""
    assert bm.dump_text(pages=100) == ""  # only the first 100 pages, none set


# --- received-bitmap blob ----------------------------------------------------------------


def test_blob_size_rounding():
    assert [recv_bitmap_size(n, "seed") for n in (0, 7, 8, 63, 64, 65, 71, 72, 128, 129)] == \
        [0, 0, 8, 8, 8, 8, 8, 16, 16, 16]
    assert [recv_bitmap_size(n, "modern") for n in (0, 1, 8, 63, 64, 65, 71, 72, 128, 129)] == \
        [0, 8, 8, 8, 8, 16, 16, 16, 16, 24]


@pytest.mark.parametrize("nbits", [0, 1, 7, 8, 63, 64, 65, 70, 71, 72, 100, 128, 129, 135, 136, 1000, 4096])
@pytest.mark.parametrize("rounding", ["seed", "modern"])
def test_blob_round_trip(nbits, rounding):
    bits = np.random.default_rng(nbits).random(nbits) < 0.5
    blob = encode_recv_bitmap(bits, rounding)
    size = recv_bitmap_size(nbits, rounding)
    assert blob[:8] == struct.pack(">Q", size)
    assert blob[8 + size :] == struct.pack(">Q", RAMBLOCK_RECV_BITMAP_ENDING)
    got, used = decode_recv_bitmap(blob + b"trailing", nbits, rounding)
    assert used == 16 + size
    lost = nbits % 64 if (rounding == "seed" and 1 <= nbits % 64 <= 7) else 0
    kept = nbits - lost
    assert np.array_equal(got[:kept], bits[:kept])
    assert not got[kept:].any()  # lost bits read back as "not received"
    # the bitmap bytes are QEMU's little-endian words, padding bits clear
    body = blob[8 : 8 + size]
    assert all(((body[k // 8] >> (k % 8)) & 1) == bits[k] for k in range(min(kept, size * 8)))
    assert all(((body[k // 8] >> (k % 8)) & 1) == 0 for k in range(kept, size * 8))


def test_seed_rounding_loses_the_tail_bits():
    bits = np.ones(70, bool)
    got, _ = decode_recv_bitmap(encode_recv_bitmap(bits, "seed"), 70, "seed")
    assert got[:64].all() and not got[64:].any()
    got, _ = decode_recv_bitmap(encode_recv_bitmap(bits, "modern"), 70, "modern")
    assert got.all()
    bits = np.ones(72, bool)  # nbits % 64 == 8: nothing lost
    assert decode_recv_bitmap(encode_recv_bitmap(bits, "seed"), 72, "seed")[0].all()


def test_blob_errors():
    bits = np.ones(65, bool)
    seed_blob = encode_recv_bitmap(bits, "seed")
    with pytest.raises(StreamError, match="size mismatch at byte 0 .*expected 0x10, found 0x8"):
        decode_recv_bitmap(seed_blob, 65, "modern")  # seed <-> modern do not interoperate
    with pytest.raises(TruncatedStream, match="truncated at byte 0 .*expected 8 bytes of size, found 3 bytes"):
        decode_recv_bitmap(seed_blob[:3], 65, "seed")
    with pytest.raises(TruncatedStream, match="truncated at byte 8 .*expected 8 bytes of bitmap, found 4 bytes"):
        decode_recv_bitmap(seed_blob[:12], 65, "seed")
    with pytest.raises(TruncatedStream, match="truncated at byte 16 .*expected the 8-byte end mark, found 4 bytes"):
        decode_recv_bitmap(seed_blob[:20], 65, "seed")
    bad = seed_blob[:16] + b"\x01" * 8
    with pytest.raises(StreamError, match="end mark incorrect at byte 16"):
        decode_recv_bitmap(bad, 65, "seed")
    with pytest.raises(BitmapError):
        encode_recv_bitmap(bits, "other")
