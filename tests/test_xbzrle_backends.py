"""XBZRLE batch backends: the numba kernels (``ramlab[fast]``) against the numpy path.

Every result of :func:`ramlab.xbzrle.encode_batch` / :func:`~ramlab.xbzrle.decode_batch`
must be identical on both backends and equal to the pure-Python reference of
``tests/test_xbzrle.py`` (written from ``algorithms.md`` §6): ``ret``, offsets and bytes,
decoded pages and counts, and for invalid input the same error (rule, byte offset, page)
with the pages before the invalid one applied and the others untouched. The tests of
``tests/test_xbzrle.py`` are collected a second time here and run with the numba backend.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import test_xbzrle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_xbzrle import BAD_INPUTS, page_pairs, ref_decode, ref_encode, structured_pages

from ramlab import xbzrle
from ramlab.errors import XbzrleError
from ramlab.xbzrle import codec

HAVE_NUMBA = codec._numba_kernels() is not None  # imports numba if installed
NO_NUMBA = "numba is not installed (pip install 'ramlab[fast]'): the numba backend cannot be tested"
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason=NO_NUMBA)
BACKENDS = ["numpy", pytest.param("numba", marks=needs_numba)]
PAGE = 4096

# Run every test of tests/test_xbzrle.py again, here with the numba backend (see _backend).
for _name in dir(test_xbzrle):
    if _name.startswith("test_"):
        globals()[_name] = getattr(test_xbzrle, _name)


@pytest.fixture(autouse=True)
def _backend(request):
    """Tests re-collected from test_xbzrle.py run on numba; restore the backend afterwards."""
    saved = codec._backend_choice
    if getattr(request, "function", None) is not None and request.function.__module__ == "test_xbzrle":
        if not HAVE_NUMBA:
            pytest.skip(NO_NUMBA)
        xbzrle.set_backend("numba")
    yield
    codec._backend_choice = saved


def encode_with(name: str, old2d: np.ndarray, new2d: np.ndarray, dlen: int | None = None) -> xbzrle.EncodedBatch:
    xbzrle.set_backend(name)
    return xbzrle.encode_batch(old2d, new2d, dlen)


def decode_with(name: str, encoded, pages2d: np.ndarray, errors: str = "raise"):
    """``(counts or None, (rule, offset, page) or None)``; ``pages2d`` is modified in place."""
    xbzrle.set_backend(name)
    try:
        return xbzrle.decode_batch(encoded, pages2d, errors=errors), None
    except XbzrleError as err:
        return None, (err.rule, err.offset, err.page)  # type: ignore[attr-defined]


def assert_same_batch(a: xbzrle.EncodedBatch, b: xbzrle.EncodedBatch) -> None:
    assert a.ret.dtype == b.ret.dtype == np.int64
    assert a.offsets.dtype == b.offsets.dtype == np.int64
    assert a.buffer.dtype == b.buffer.dtype == np.uint8
    assert a.ret.tolist() == b.ret.tolist()
    assert a.offsets.tolist() == b.offsets.tolist()
    assert a.buffer.tobytes() == b.buffer.tobytes()


def check_encode_all(old2d: np.ndarray, new2d: np.ndarray, dlen: int | None) -> xbzrle.EncodedBatch:
    """numba == numpy == reference for a batch; returns the batch."""
    ref_dlen = old2d.shape[1] if dlen is None else dlen
    want = [ref_encode(o.tobytes(), n.tobytes(), ref_dlen) for o, n in zip(old2d, new2d)]
    a = encode_with("numpy", old2d, new2d, dlen)
    assert a.tolist() == want
    if HAVE_NUMBA:
        b = encode_with("numba", old2d, new2d, dlen)
        assert_same_batch(a, b)
    return a


def check_decode_all(encoded, old2d: np.ndarray, errors: str = "raise") -> None:
    """numba == numpy == reference when decoding ``encoded`` onto copies of ``old2d``."""
    items = encoded.tolist() if isinstance(encoded, xbzrle.EncodedBatch) else list(encoded)
    ref_pages = [bytearray(o.tobytes()) for o in old2d]
    want = [ref_decode(e or b"", p) for e, p in zip(items, ref_pages)]
    results = {}
    for name in ("numpy", "numba") if HAVE_NUMBA else ("numpy",):
        pages = old2d.copy()
        counts, err = decode_with(name, encoded, pages, errors)
        results[name] = (None if counts is None else counts.tolist(), err, pages)
        if err is not None:
            assert errors == "raise"
            bad = err[2]
            assert want[bad] == -1 and all(w >= 0 for w in want[:bad])
            for k in range(bad):  # the pages before the first invalid one are applied
                assert pages[k].tobytes() == bytes(ref_pages[k])
            assert np.array_equal(pages[bad:], old2d[bad:])  # it and the later ones are not
            continue
        assert counts.tolist() == want
        for k, w in enumerate(want):
            expect = bytes(ref_pages[k]) if w >= 0 else old2d[k].tobytes()  # invalid pages stay untouched
            assert pages[k].tobytes() == expect
    if HAVE_NUMBA:
        (ca, ea, pa), (cb, eb, pb) = results["numpy"], results["numba"]
        assert (ca, ea) == (cb, eb)
        assert np.array_equal(pa, pb)


# --- the switch -----------------------------------------------------------------------


def test_set_backend_validates_and_reports():
    assert xbzrle.set_backend("numpy") == "numpy" == xbzrle.backend()
    with pytest.raises(XbzrleError, match="backend must be one of"):
        xbzrle.set_backend("cuda")  # type: ignore[arg-type]
    assert xbzrle.backend() == "numpy"
    assert xbzrle.set_backend("auto") == ("numba" if HAVE_NUMBA else "numpy")


@pytest.mark.skipif(HAVE_NUMBA, reason="numba is installed: checks the message shown without it")
def test_numba_backend_without_numba_raises():
    xbzrle.set_backend("numpy")
    with pytest.raises(XbzrleError, match="ramlab\\[fast\\]"):
        xbzrle.set_backend("numba")
    assert xbzrle.backend() == "numpy"


def test_numba_backend_unavailable_is_refused(monkeypatch):
    """Simulates a missing numba: "numba" is refused, "auto" falls back to numpy."""
    monkeypatch.setattr(codec, "_numba_module", False)
    xbzrle.set_backend("numpy")
    with pytest.raises(XbzrleError, match="ramlab\\[fast\\]"):
        xbzrle.set_backend("numba")
    assert xbzrle.backend() == "numpy"
    assert xbzrle.set_backend("auto") == "numpy"
    old = np.zeros((2, 16), np.uint8)
    new = old.copy()
    new[1, 3] = 7
    assert xbzrle.encode_batch(old, new).tolist() == [b"", b"\x03\x01\x07"]


def _backend_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAMLAB_XBZRLE_BACKEND=value)
    code = "from ramlab import xbzrle; print(xbzrle.codec._backend_choice, xbzrle.backend())"
    return subprocess.run([sys.executable, "-W", "always", "-c", code], env=env, capture_output=True, text=True)


def test_environment_variable_selects_backend():
    out = _backend_in_subprocess("NumPy")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["numpy", "numpy"]
    out = _backend_in_subprocess("bogus")  # ignored with a warning, not an import error
    assert out.returncode == 0, out.stderr
    assert "RAMLAB_XBZRLE_BACKEND='bogus' ignored" in out.stderr
    assert out.stdout.split() == ["auto", "numba" if HAVE_NUMBA else "numpy"]


@needs_numba
def test_rule_codes_match():
    from ramlab.xbzrle import numba_kernels as _xbzrle_numba

    for name in ("SHORT_ZRUN", "ULEB_ZRUN", "ZERO_ZRUN", "ZRUN_PAST_PAGE", "SHORT_NZRUN", "ULEB_NZRUN",
                 "EMPTY_NZRUN", "NZRUN_PAST_PAGE", "NZRUN_PAST_INPUT"):
        assert getattr(_xbzrle_numba, f"_E_{name}") == getattr(xbzrle, f"E_{name}")


# --- encoder ----------------------------------------------------------------------------


@pytest.mark.parametrize("dlen", [None, PAGE + 100, 4000, 2048, 100, 3, 2, 1, 0, -5])
def test_structured_pages_both_backends(dlen):
    pairs = list(structured_pages())
    old2d = np.stack([p[0] for p in pairs])
    new2d = np.stack([p[1] for p in pairs])
    batch = check_encode_all(old2d, new2d, dlen)
    check_decode_all(batch, old2d)


def bench_like_pages(n: int, seed: int, size: int = PAGE) -> tuple[np.ndarray, np.ndarray]:
    """A mix of the benchmark's cases (identical, one word, sparse, 5 %, 30 %, random)."""
    rng = np.random.default_rng(seed)
    old = rng.integers(0, 256, (n, size), dtype=np.uint8)
    new = old.copy()
    for k in range(n):
        kind = k % 7
        if kind == 1:
            new[k, 8 * rng.integers(0, max(1, size // 8)) :][:8] ^= 0xFF
        elif kind == 2:
            new[k, rng.integers(0, size, 64)] ^= 0x5A
        elif kind in (3, 4):
            mask = rng.random(size) < (0.05 if kind == 3 else 0.3)
            new[k, mask] ^= rng.integers(1, 256, int(mask.sum()), dtype=np.uint8)
        elif kind == 5:
            new[k] = rng.integers(0, 256, size, dtype=np.uint8)
        elif kind == 6:  # long runs, some crossing 0x80 / word boundaries, one at each page end
            for a in rng.integers(0, size, 4):
                new[k, a : a + rng.integers(1, 400)] ^= 0x11
            new[k, 0] ^= 1
            new[k, -1] ^= 1
    return old, new


@pytest.mark.parametrize("dlen", [None, 3000, 700])
def test_mixed_batch_grows_output_and_matches(dlen):
    old, new = bench_like_pages(120, seed=5)  # ~30 % pages and long runs: the numba output buffer grows
    batch = check_encode_all(old, new, dlen)
    assert (batch.ret > 0).sum() > 40 and (batch.ret == 0).any() and (batch.ret < 0).any()
    check_decode_all(batch, old)
    check_decode_all(batch, old, errors="report")


@pytest.mark.parametrize("size", [1, 5, 8, 13, 64, 100, 4096 + 3])
def test_odd_page_sizes(size):
    """Sizes that are not a multiple of 8 take the byte-wise search of the numba encoder."""
    old, new = bench_like_pages(21, seed=size, size=size)
    for dlen in (None, size // 2, 2, 1):
        batch = check_encode_all(old, new, dlen)
        check_decode_all(batch, old)


def test_empty_batches_and_zero_size_pages():
    for shape in ((0, 64), (3, 0), (0, 0)):
        old = np.zeros(shape, np.uint8)
        for dlen in (None, 0, 5):
            batch = check_encode_all(old, old.copy(), dlen)
            assert batch.ret.tolist() == [0] * shape[0]
            check_decode_all(batch, old)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([8, 16, 64, 200, 203]), st.integers(-2, 300))
def test_hypothesis_backends_match_reference(data, size, dlen_draw):
    pairs = data.draw(st.lists(page_pairs(size=size), min_size=1, max_size=12))
    old2d = np.stack([p[0] for p in pairs])
    new2d = np.stack([p[1] for p in pairs])
    dlen = data.draw(st.sampled_from([None, dlen_draw, size - 1, size + 7]))
    batch = check_encode_all(old2d, new2d, dlen)
    check_decode_all(batch, old2d)


def test_uleb_limit_on_large_pages_numba_batch():
    """A zrun or nzrun longer than 0x3fff that QEMU reaches makes it assert; both raise."""
    size = 0x4010
    old = np.zeros((3, size), np.uint8)
    new = old.copy()
    new[1, -1] = 1  # zrun 0x400f: asserts
    for name in ("numpy", "numba") if HAVE_NUMBA else ("numpy",):
        with pytest.raises(XbzrleError, match="0x3fff"):
            encode_with(name, old, new)
    long_changed = old.copy()
    long_changed[0, 0:0x4001] = 1  # nzrun of 0x4001
    for name in ("numpy", "numba") if HAVE_NUMBA else ("numpy",):
        with pytest.raises(XbzrleError, match="0x3fff"):
            encode_with(name, old, long_changed, dlen=4 * size)
        with pytest.raises(XbzrleError, match="0x3fff"):  # written before check (C)
            encode_with(name, old, long_changed)
        assert encode_with(name, old, long_changed, dlen=2).ret.tolist() == [-1, 0, 0]  # (B) fails first
    fine = old.copy()
    fine[2, 0] = 1  # the long run is the unencoded trailing zrun
    check_encode_all(old, fine, None)


@needs_numba
@pytest.mark.parametrize("name", ["numpy", "numba"])
def test_uleb_assert_before_overflow_like_reference(name):
    old = np.zeros((1, 0x4008), np.uint8)
    new = old.copy()
    new[0, 0x4000:] = 1  # zrun 0x4000 (asserts), then 8 changed bytes that would overflow dlen=5
    with pytest.raises(AssertionError):
        ref_encode(old[0].tobytes(), new[0].tobytes(), 5)
    with pytest.raises(XbzrleError, match="0x3fff"):
        encode_with(name, old, new, dlen=5)


# --- decoder ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("encoded,size,rule,offset", BAD_INPUTS)
def test_every_decode_rule(backend_name, encoded, size, rule, offset):
    good = b"\x00\x01\x09"
    pages = np.zeros((4, size), np.uint8)
    counts, err = decode_with(backend_name, [good, b"", encoded, encoded], pages)
    assert counts is None and err == (rule, offset, 2)
    assert pages[0, 0] == 9 and not pages[1:].any()  # page 0 applied, pages 2 and 3 not
    pages[...] = 0
    with pytest.raises(XbzrleError, match=f"at byte {offset} of the encoded input \\(page 2 of the batch\\)"):
        xbzrle.decode_batch([good, b"", encoded, encoded], pages)
    counts, err = decode_with(backend_name, [good, b"", encoded, encoded], pages, errors="report")
    assert err is None and counts.tolist() == [1, 0, -1, -1]
    assert pages[0, 0] == 9 and not pages[1:].any()


@st.composite
def encoded_inputs(draw, size):
    """Valid encodings, corrupted ones (byte changed, truncated, extended) and random bytes."""
    kind = draw(st.sampled_from(["valid", "flip", "truncate", "extend", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=40))
    old, new = draw(page_pairs(size=size))
    enc = ref_encode(old.tobytes(), new.tobytes(), 2 * size + 2) or b""
    if kind == "flip" and enc:
        at = draw(st.integers(0, len(enc) - 1))
        enc = enc[:at] + bytes([draw(st.integers(0, 255))]) + enc[at + 1 :]
    elif kind == "truncate" and enc:
        enc = enc[: draw(st.integers(0, len(enc) - 1))]
    elif kind == "extend":
        enc = enc + draw(st.binary(min_size=1, max_size=4))
    return enc


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from([1, 7, 24, 64, 130]), st.sampled_from(["raise", "report"]))
def test_hypothesis_decode_errors_match(data, size, errors):
    encoded = data.draw(st.lists(encoded_inputs(size), min_size=1, max_size=6))
    old2d = np.frombuffer(data.draw(st.binary(min_size=size * len(encoded), max_size=size * len(encoded))),
                          np.uint8).reshape(len(encoded), size).copy()
    check_decode_all(encoded, old2d, errors)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_decode_into_strided_pages(backend_name):
    old, new = bench_like_pages(14, seed=9, size=256)
    batch = encode_with("numpy", old, new)
    big = np.full((14, 512), 0xEE, np.uint8)
    view = big[:, 128:384]
    view[...] = old
    counts, err = decode_with(backend_name, batch, view)
    assert err is None
    ok = batch.ret > 0
    assert np.array_equal(view[ok], new[ok]) and np.array_equal(view[~ok], old[~ok])
    assert (big[:, :128] == 0xEE).all() and (big[:, 384:] == 0xEE).all()
    every_other = np.zeros((28, 256), np.uint8)[::2]  # non-contiguous rows
    every_other[...] = old
    counts2, _ = decode_with(backend_name, batch, every_other)
    assert counts2.tolist() == counts.tolist() and np.array_equal(every_other, view)


@needs_numba
def test_large_batch_round_trip_numba():
    old, new = bench_like_pages(700, seed=11)
    a = encode_with("numpy", old, new)
    b = encode_with("numba", old, new)
    assert_same_batch(a, b)
    pa, pb = old.copy(), old.copy()
    assert decode_with("numpy", a, pa)[0].tolist() == decode_with("numba", b, pb)[0].tolist()
    assert np.array_equal(pa, pb)
    ok = a.ret > 0
    assert np.array_equal(pb[ok], new[ok])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_decode_into_read_only_pages_raises(backend_name):
    old, new = bench_like_pages(7, seed=4, size=64)
    batch = encode_with("numpy", old, new)
    pages = old.copy()
    pages.flags.writeable = False
    xbzrle.set_backend(backend_name)
    with pytest.raises(XbzrleError, match="pages2d is read-only"):
        xbzrle.decode_batch(batch, pages)
    assert np.array_equal(pages, old)
