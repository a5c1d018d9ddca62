"""Bad arguments to the XBZRLE API end in an XbzrleError, never a crash (issue #13, item 4).

The reproducers of the issue: an EncodedBatch whose offsets lie outside its buffer (the numba
backend read out of bounds and crashed the process), read-only destination pages (numpy's
"assignment destination is read-only"), ``uleb128_decode_small(b"\\x80")`` (IndexError), and
wrong types (str, lists of non-bytes, 3-D arrays, NaN lengths). Then a hypothesis test throws
junk at every public function with each backend and lets only RamlabError through.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _junk import arg, call_or_ramlab_error, junk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ramlab import xbzrle
from ramlab.errors import RamlabError, XbzrleError
from ramlab.xbzrle import codec

HAVE_NUMBA = codec._numba_kernels() is not None
BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed"))]


@pytest.fixture
def backend(request):
    saved = codec._backend_choice
    xbzrle.set_backend(request.param)
    yield request.param
    codec._backend_choice = saved


def small_batch() -> tuple[np.ndarray, np.ndarray, xbzrle.EncodedBatch]:
    old = np.zeros((3, 64), np.uint8)
    new = old.copy()
    new[0, 5] = 1
    new[2, 10:20] = 7
    return old, new, xbzrle.encode_batch(old, new)


# --- the reproducers ----------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_batch_with_offsets_outside_its_buffer_is_refused(backend):
    old, new, b = small_batch()
    assert b.ret.tolist() == [3, 0, 12]  # zrun 5, nzrun 1, 0x01 / zrun 10, nzrun 10, ten 0x07
    with pytest.raises(XbzrleError, match="offsets must rise from >= 0 to at most the buffer's 15 bytes"):
        xbzrle.EncodedBatch(b.ret, np.array([0, 3, 3, 1 << 40]), b.buffer)
    with pytest.raises(XbzrleError, match="page 2 has ret 12 but 11 encoded bytes"):
        xbzrle.EncodedBatch(b.ret, np.array([0, 3, 3, 14]), b.buffer)
    with pytest.raises(XbzrleError, match="3 pages need 4 offsets, found 3"):
        xbzrle.EncodedBatch(b.ret, b.offsets[:3], b.buffer)
    with pytest.raises(XbzrleError, match=r"offsets\[1:3\] = \[3, 1\]"):
        xbzrle.EncodedBatch(np.array([3, -2, 0]), np.array([0, 3, 1, 1]), b.buffer)
    # A batch whose arrays are changed after it was built is checked again before decoding.
    b.offsets[3] = 1 << 40
    pages = old.copy()
    with pytest.raises(XbzrleError, match="offsets must rise"):
        xbzrle.decode_batch(b, pages)
    assert np.array_equal(pages, old)


def test_numba_backend_survives_a_corrupted_batch():
    """In a child process, so that a regression (an out-of-bounds read) cannot take pytest down."""
    if not HAVE_NUMBA:
        pytest.skip("numba not installed")
    code = textwrap.dedent("""
        import numpy as np
        from ramlab import xbzrle
        from ramlab.errors import XbzrleError
        xbzrle.set_backend("numba")
        old = np.zeros((4, 4096), np.uint8); new = old.copy(); new[:, 100] = 9
        b = xbzrle.encode_batch(old, new)
        for i, bad in enumerate([1 << 40, -(1 << 40), 2**62]):
            b.offsets[2] = bad
            try:
                xbzrle.decode_batch(b, old.copy())
            except XbzrleError as e:
                print("refused", i)
        b.offsets[2] = b.offsets[1] + 3
        b.offsets[3] = 10**6
        try:
            xbzrle.decode_batch(b, old.copy(), errors="report")
        except XbzrleError:
            print("refused", 3)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:4] == ["refused 0", "refused 1", "refused 2", "refused 3"]


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_read_only_pages_are_refused_naming_the_argument(backend):
    old, new, b = small_batch()
    pages = old.copy()
    pages.flags.writeable = False
    with pytest.raises(XbzrleError, match="pages2d is read-only"):
        xbzrle.decode_batch(b, pages)
    with pytest.raises(XbzrleError, match="pages2d is read-only"):
        xbzrle.decode_batch([b[0], b[1], b[2]], np.broadcast_to(old[0], (3, 64)))
    ro_page = old[0].copy()
    ro_page.flags.writeable = False
    with pytest.raises(XbzrleError, match="page is read-only"):
        xbzrle.decode_page(b[0], ro_page)
    with pytest.raises(XbzrleError, match="page must be a 1-D uint8 array or a bytearray, found b'"):
        xbzrle.decode_page(b[0], bytes(64))
    with pytest.raises(XbzrleError, match="page is read-only"):
        xbzrle.decode_page(b[0], memoryview(bytes(64)))
    # a writable memoryview or bytearray is decoded in place
    buf = bytearray(64)
    assert xbzrle.decode_page(b[0], memoryview(buf)) == 6 and buf[5] == 1


def test_uleb128_decode_small_names_the_missing_byte():
    with pytest.raises(XbzrleError, match="truncated ULEB128 at byte 1 of the input") as exc:
        xbzrle.uleb128_decode_small(b"\x80")
    assert exc.value.offset == 1
    with pytest.raises(XbzrleError, match="at byte 4 of the input: expected a second byte after 0xff"):
        xbzrle.uleb128_decode_small(b"\x00\x00\x00\xff", 3)
    with pytest.raises(XbzrleError, match="position 4 outside the 4-byte input"):
        xbzrle.uleb128_decode_small(b"\x00\x00\x00\xff", 4)
    with pytest.raises(XbzrleError, match="position -1"):
        xbzrle.uleb128_decode_small(b"\x01", -1)
    assert xbzrle.uleb128_decode_small(b"\x00\x00\x81\x01", 2) == (2, 129)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_wrong_types_and_values(backend):
    old, new, b = small_batch()
    cases = [
        (lambda: xbzrle.encode_page("abc", "abd"), "old must be bytes-like"),
        (lambda: xbzrle.encode_page([0, 1], [0, 1]), "old must be bytes-like"),
        (lambda: xbzrle.encode_page(bytes(8), bytes(8), dlen=float("nan")), "dlen must be an integer, found nan"),
        (lambda: xbzrle.encode_page(bytes(8), bytes(8), dlen=2.5), "dlen must be an integer, found 2.5"),
        (lambda: xbzrle.encode_page(bytes(8), bytes(8), dlen=True), "dlen must be an integer, found True"),
        (lambda: xbzrle.encode_page(bytes(8), bytes(16)), "differ in size"),
        (lambda: xbzrle.encode_page(old, new), "old must be a 1-D uint8 array"),
        (lambda: xbzrle.encode_batch(old[None], new[None]), "old2d must be a 2-D uint8 numpy array"),
        (lambda: xbzrle.encode_batch(old.astype(float), new), "found array of float64"),
        (lambda: xbzrle.encode_batch(old.tolist(), new), "found \\[\\[0, 0"),
        (lambda: xbzrle.encode_batch(old, new[:, :32]), "differ in shape"),
        (lambda: xbzrle.decode_batch("abc", old.copy()), "encoded must be an EncodedBatch or a sequence"),
        (lambda: xbzrle.decode_batch(b.buffer.tobytes(), old.copy()), "encoded must be an EncodedBatch"),
        (lambda: xbzrle.decode_batch([1, 2, 3], old.copy()), r"encoded\[0\] must be bytes-like .*found 1 \(int\)"),
        (lambda: xbzrle.decode_batch([b"", "x", b""], old.copy()), r"encoded\[1\] must be bytes-like"),
        (lambda: xbzrle.decode_batch(b, old[None].copy()), "pages2d must be a 2-D uint8 numpy array"),
        (lambda: xbzrle.decode_batch(b, old.astype(np.int8)), "found array of int8"),
        (lambda: xbzrle.decode_batch(b, old[:2].copy()), "3 encoded pages for 2 pages"),
        (lambda: xbzrle.decode_batch(b, old.copy(), errors=np.array(["raise"])), "errors must be one of"),
        (lambda: xbzrle.decode_batch([b""], np.zeros((1, (1 << 24) + 8), np.uint8)), "more than decode_batch's"),
        (lambda: xbzrle.parse_encoded(b"\x00\x01\x01", dlen=float("inf")), "dlen must be an integer, found inf"),
        (lambda: xbzrle.parse_encoded(["a"]), "encoded must be bytes-like"),
        (lambda: xbzrle.uleb128_encode_small(float("nan")), "ULEB128 length must be an integer"),
        (lambda: xbzrle.uleb128_encode_small(0x4000), "outside 0..0x3fff"),
        (lambda: xbzrle.uleb128_decode_small(b"\x00", pos=0.5), "pos must be an integer"),
        (lambda: xbzrle.overflow_check(bytes(8), bytes(8), dlen="8"), "dlen must be an integer, found '8'"),
        (lambda: xbzrle.runs(np.zeros((2, 2), np.uint8), bytes(4)), "old must be a 1-D uint8 array"),
        (lambda: xbzrle.set_backend(["numpy"]), "XBZRLE backend must be one of"),
        (lambda: b[3], "index 3 outside 0..2"),
        (lambda: b[1.5], "index must be an integer"),
        (lambda: xbzrle.EncodedBatch([0.5], [0, 0], b""), "ret must be a 1-D integer array"),
        (lambda: xbzrle.EncodedBatch([[0]], [0, 0], b""), "ret must be a 1-D integer array"),
        (lambda: xbzrle.EncodedBatch([0], [0, [1]], b""), "offsets must be a 1-D integer array"),
        (lambda: xbzrle.EncodedBatch([0], np.array([0, 2**64 - 1], np.uint64), b""), "beyond int64"),
        (lambda: xbzrle.EncodedBatch([0], [0, 0], "abc"), "EncodedBatch.buffer must be bytes-like"),
    ]
    for fn, message in cases:
        with pytest.raises(XbzrleError, match=message):
            fn()
    # negative indices count from the end, as for a list
    assert b[-1] == b[2] and list(b) == b.tolist() == [b[0], b[1], b[2]]


# --- property tests: junk into every public function ------------------------------------

PAGE_SIZES = st.sampled_from([0, 1, 8, 16, 64])


def pages(n_max: int = 3) -> st.SearchStrategy[np.ndarray]:
    return st.builds(lambda n, p, seed: np.random.default_rng(seed).integers(0, 3, (n, p), dtype=np.uint8),
                     st.integers(0, n_max), PAGE_SIZES, st.integers(0, 2**32 - 1))


def encoded_pages() -> st.SearchStrategy[bytes]:
    samples = [b"", b"\x00\x01\x01", b"\x05\x02ab", b"\x80", b"\xff\xff"]
    return st.one_of(st.binary(max_size=20), st.sampled_from(samples))


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_only_xbzrle_errors_escape(backend, data):
    draw = data.draw
    fn = draw(st.sampled_from(["encode_page", "encode_batch", "decode_page", "decode_batch", "decode_batch_obj",
                               "parse_encoded", "runs", "overflow_check", "uleb_enc", "uleb_dec", "batch"]))
    page = draw(arg(st.binary(min_size=8, max_size=8), np.zeros(8, np.uint8)))
    if fn == "encode_page":
        r = call_or_ramlab_error(xbzrle.encode_page, page, draw(arg(bytes(8), st.binary(max_size=9))),
                                 draw(arg(None, st.integers(-3, 20))))
    elif fn == "encode_batch":
        p = draw(pages())
        r = call_or_ramlab_error(xbzrle.encode_batch, draw(arg(p)), draw(arg(p, p.copy()[::-1])),
                                 draw(arg(None, st.integers(-3, 100))))
    elif fn == "decode_page":
        r = call_or_ramlab_error(xbzrle.decode_page, draw(arg(encoded_pages())),
                                 draw(arg(st.binary(max_size=16).map(bytearray), np.zeros(8, np.uint8))))
    elif fn in ("decode_batch", "decode_batch_obj"):
        p = draw(pages())
        if fn == "decode_batch":
            enc = draw(arg(st.lists(encoded_pages(), min_size=p.shape[0], max_size=p.shape[0])))
        elif draw(st.booleans()):  # a batch built from junk arrays
            enc = call_or_ramlab_error(xbzrle.EncodedBatch, draw(arg([0] * p.shape[0])),
                                       draw(arg([0] * (p.shape[0] + 1))), draw(arg(b"")))
        else:  # a real batch whose offsets were overwritten afterwards
            enc = xbzrle.encode_batch(p, (p + 1) % 3)
            k = draw(st.integers(0, enc.offsets.size - 1))
            enc.offsets[k] = draw(st.integers(-(2**63), 2**63 - 1))
        if isinstance(enc, RamlabError):
            r = enc
        else:
            r = call_or_ramlab_error(xbzrle.decode_batch, enc, draw(arg(p)), errors=draw(arg("raise", "report")))
    elif fn == "parse_encoded":
        r = call_or_ramlab_error(xbzrle.parse_encoded, draw(arg(encoded_pages())), draw(arg(4096, 8, 0, -1)))
    elif fn == "runs":
        r = call_or_ramlab_error(xbzrle.runs, page, draw(arg(bytes(8))))
    elif fn == "overflow_check":
        r = call_or_ramlab_error(xbzrle.overflow_check, page, draw(arg(bytes(8))), draw(arg(None, 2, 8)))
    elif fn == "uleb_enc":
        r = call_or_ramlab_error(xbzrle.uleb128_encode_small, draw(arg(st.integers(-5, 0x5000))))
    elif fn == "uleb_dec":
        r = call_or_ramlab_error(xbzrle.uleb128_decode_small, draw(arg(encoded_pages())), draw(arg(0, 1, 2)))
    else:
        b = draw(st.just(xbzrle.encode_batch(np.zeros((2, 8), np.uint8), np.ones((2, 8), np.uint8))))
        r = call_or_ramlab_error(lambda: b[draw(arg(0, 1, -1, 2))])
    assert not isinstance(r, RamlabError) or isinstance(r, XbzrleError)


@settings(max_examples=100, deadline=None)
@given(junk())
def test_set_backend_refuses_junk(value):
    saved = codec._backend_choice
    try:
        r = call_or_ramlab_error(xbzrle.set_backend, value)
        assert isinstance(r, XbzrleError) or value in ("numpy", "numba", "auto")
    finally:
        codec._backend_choice = saved


def test_zero_dimensional_arrays_as_the_batch_are_refused():
    """Found by the hypothesis test above: a 0-d array is a Sequence-like numpy object that cannot be iterated."""
    for enc in (np.array(5), np.array(b"ab")):
        with pytest.raises(XbzrleError, match="encoded must be"):
            xbzrle.decode_batch(enc, np.zeros((1, 8), np.uint8))
