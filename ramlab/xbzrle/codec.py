"""The XBZRLE codec: page and batch encode/decode, run parsing, overflow checks, backend choice.

The package docstring (:mod:`ramlab.xbzrle`) explains the encoding; this module holds it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ramlab import checks
from ramlab.errors import XbzrleError
from ramlab.xbzrle import walk

__all__ = [
    "ULEB128_SMALL_MAX",
    "EncodedBatch",
    "backend",
    "OverflowCheck",
    "Run",
    "Token",
    "decode_batch",
    "decode_page",
    "encode_batch",
    "encode_page",
    "overflow_check",
    "parse_encoded",
    "runs",
    "set_backend",
    "uleb128_decode_small",
    "uleb128_encode_small",
    "E_SHORT_ZRUN",
    "E_ULEB_ZRUN",
    "E_ZERO_ZRUN",
    "E_ZRUN_PAST_PAGE",
    "E_SHORT_NZRUN",
    "E_ULEB_NZRUN",
    "E_EMPTY_NZRUN",
    "E_NZRUN_PAST_PAGE",
    "E_NZRUN_PAST_INPUT",
]

ULEB128_SMALL_MAX = 0x3FFF  # uleb128_encode_small asserts n <= 0x3fff
#: largest page of :func:`decode_batch` (its backends index a chunk's pages with 32-bit integers);
#: QEMU's target pages are 4 KiB (64 KiB on a few targets)
MAX_BATCH_PAGE_SIZE = 1 << 24

_CHUNK_BYTES = 2 << 20  # page bytes per encode chunk: keeps temporaries cache-sized

BytesLike = bytes | bytearray | memoryview | np.ndarray

# Decoder rules, in the order xbzrle_decode_buffer tests them (code -> text).
E_SHORT_ZRUN = 1
E_ULEB_ZRUN = 2
E_ZERO_ZRUN = 3
E_ZRUN_PAST_PAGE = 4
E_SHORT_NZRUN = 5
E_ULEB_NZRUN = 6
E_EMPTY_NZRUN = 7
E_NZRUN_PAST_PAGE = 8
E_NZRUN_PAST_INPUT = 9

DECODE_RULES = {
    E_SHORT_ZRUN: "fewer than 2 bytes left before a zero run",
    E_ULEB_ZRUN: "zero-run length would need a third ULEB128 byte",
    E_ZERO_ZRUN: "zero-length zero run that is not the first run",
    E_ZRUN_PAST_PAGE: "zero run goes past the end of the page",
    E_SHORT_NZRUN: "fewer than 2 bytes left before a changed run",
    E_ULEB_NZRUN: "changed-run length would need a third ULEB128 byte",
    E_EMPTY_NZRUN: "empty changed run",
    E_NZRUN_PAST_PAGE: "changed run writes past the end of the page",
    E_NZRUN_PAST_INPUT: "changed run reads past the end of the encoded input",
}


def _decode_error(code: int, offset: int, page: int | None = None) -> XbzrleError:
    where = f" (page {page} of the batch)" if page is not None else ""
    err = XbzrleError(f"invalid XBZRLE data: {DECODE_RULES[code]} at byte {offset} of the encoded input{where}")
    err.rule = code  # type: ignore[attr-defined]
    err.offset = offset  # type: ignore[attr-defined]
    err.page = page  # type: ignore[attr-defined]
    return err


# --- backend switch ------------------------------------------------------------------
# encode_batch / decode_batch run either the numpy code below or the compiled kernels of
# ramlab.xbzrle.numba_kernels (extra ``ramlab[fast]``); both give identical results.

_BACKENDS = ("numpy", "numba", "auto")
_numba_module = None  # the imported ramlab.xbzrle.numba_kernels, False if not importable


def _numba_kernels():
    global _numba_module
    if _numba_module is None:
        try:
            from ramlab.xbzrle import numba_kernels
        except ImportError:
            _numba_module = False
        else:
            _numba_module = numba_kernels
    return _numba_module or None


def set_backend(name: Literal["numpy", "numba", "auto"]) -> str:
    """Select the batch backend: ``"numpy"``, ``"numba"`` or ``"auto"`` (numba if importable).

    Returns the active backend (see :func:`backend`). ``"numba"`` raises
    :class:`~ramlab.errors.XbzrleError` when numba is not installed (``pip install 'ramlab[fast]'``).
    The initial choice comes from the environment variable ``RAMLAB_XBZRLE_BACKEND``.
    """
    global _backend_choice
    checks.choice(name, "XBZRLE backend", _BACKENDS, XbzrleError)
    if name == "numba" and _numba_kernels() is None:  # keep the previous choice
        raise XbzrleError("XBZRLE backend 'numba' needs numba: pip install 'ramlab[fast]'")
    _backend_choice = name
    return backend()


def backend() -> str:
    """The backend :func:`encode_batch` / :func:`decode_batch` use now: ``"numpy"`` or ``"numba"``.

    numba is imported on the first call that needs it, not when this module is imported.
    """
    if _backend_choice == "numpy":
        return "numpy"
    if _numba_kernels() is None:
        if _backend_choice == "numba":
            raise XbzrleError("XBZRLE backend 'numba' needs numba: pip install 'ramlab[fast]'")
        return "numpy"
    return "numba"


_backend_choice = os.environ.get("RAMLAB_XBZRLE_BACKEND", "auto").strip().lower() or "auto"
if _backend_choice not in _BACKENDS:
    warnings.warn(f"RAMLAB_XBZRLE_BACKEND={_backend_choice!r} ignored: not one of {_BACKENDS}", stacklevel=1)
    _backend_choice = "auto"


# --- ULEB128 (small) -----------------------------------------------------------------


def uleb128_encode_small(n: int) -> bytes:
    """QEMU's ``uleb128_encode_small``: 1 or 2 bytes for ``0 <= n <= 0x3fff``.

    >>> uleb128_encode_small(4095).hex()
    'ff1f'
    """
    n = checks.integer(n, "ULEB128 length", XbzrleError)
    if not 0 <= n <= ULEB128_SMALL_MAX:
        raise XbzrleError(f"ULEB128 length {n} outside 0..0x3fff (QEMU asserts)")
    return bytes([n]) if n < 0x80 else bytes([(n & 0x7F) | 0x80, n >> 7])


def uleb128_decode_small(data: BytesLike, pos: int = 0) -> tuple[int, int]:
    """QEMU's ``uleb128_decode_small`` at ``data[pos]``: ``(bytes_used, value)``.

    ``bytes_used`` is -1 when the second byte has its continuation bit set (QEMU has then
    already stored ``byte0 & 0x7f`` as the value, returned here too).

    >>> uleb128_decode_small(b"\\xff\\x1f")
    (2, 4095)
    >>> uleb128_decode_small(b"\\x80\\x80")
    (-1, 0)

    A first byte with the continuation bit set as the last byte of ``data`` is an
    :class:`~ramlab.errors.XbzrleError` naming the missing byte's offset (QEMU's callers
    check that two bytes are left first, see :func:`parse_encoded`).
    """
    src = checks.buffer(data, "data", XbzrleError)
    pos = checks.integer(pos, "pos", XbzrleError)
    if not 0 <= pos < src.size:
        raise XbzrleError(f"ULEB128 position {pos} outside the {src.size}-byte input")
    return _uleb_at(src, pos)


def _uleb_at(src: np.ndarray, pos: int) -> tuple[int, int]:
    b0 = int(src[pos])
    if b0 < 0x80:
        return 1, b0
    if pos + 1 >= src.size:
        err = XbzrleError(f"truncated ULEB128 at byte {pos + 1} of the input: expected a second byte "
                          f"after 0x{b0:02x}, found the end of the input")
        err.offset = pos + 1  # type: ignore[attr-defined]
        raise err
    b1 = int(src[pos + 1])
    if b1 >= 0x80:
        return -1, b0 & 0x7F
    return 2, (b0 & 0x7F) | (b1 << 7)


# --- input normalisation -------------------------------------------------------------


def _as_u8(x: BytesLike, name: str) -> np.ndarray:
    return checks.buffer(x, name, XbzrleError)


def _as_pages(x: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2:
        raise XbzrleError(f"{name} must be a 2-D uint8 numpy array [n_pages, page_size], "
                          f"found {checks.describe(x)}")
    return np.ascontiguousarray(x)


def _as_dlen(dlen: object, default: int) -> int:
    """The output capacity ``dlen`` (QEMU's ``int``): any integer, None for the page size."""
    return default if dlen is None else checks.integer(dlen, "dlen", XbzrleError, min=-checks.MAX_INT)


def _writable_pages(pages: object, name: str, ndim: int) -> np.ndarray:
    """Pages decoded in place: a writable uint8 array (``bytearray`` too for one page).

    Read-only input (``bytes``, a read-only view) is refused rather than copied: the decoders
    write into the caller's memory, and a silent copy would lose the result.
    """
    if ndim == 1 and isinstance(pages, bytearray | memoryview):
        pages = checks.buffer(pages, name, XbzrleError)
    if not isinstance(pages, np.ndarray) or pages.dtype != np.uint8 or pages.ndim != ndim:
        what = "a 1-D uint8 array or a bytearray" if ndim == 1 else "a 2-D uint8 numpy array [n_pages, page_size]"
        raise XbzrleError(f"{name} must be {what}, found {checks.describe(pages)}")
    if not pages.flags.writeable:
        raise XbzrleError(f"{name} is read-only: XBZRLE decoding writes the pages in place; "
                          f"pass a writable array (e.g. a copy)")
    return pages


def _check_batch(ret: object, offsets: object, buffer: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate an :class:`EncodedBatch`'s arrays (O(pages) numpy): int64 ``ret`` and
    ``offsets``, uint8 ``buffer``. The compiled decoder trusts them, so everything it indexes
    is checked here: offsets non-decreasing from >= 0 and inside the buffer, one more offset
    than pages, and each page's bytes ``max(ret[i], 0)``."""
    buf = checks.buffer(buffer, "EncodedBatch.buffer", XbzrleError)
    arrays = []
    for name, value in (("ret", ret), ("offsets", offsets)):
        try:
            a = np.asarray(value) if isinstance(value, np.ndarray | list | tuple) else None
        except (TypeError, ValueError, OverflowError):  # ragged or out-of-range lists
            a = None
        if a is None or a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
            raise XbzrleError(f"EncodedBatch.{name} must be a 1-D integer array, found {checks.describe(value)}")
        if a.dtype == np.uint64 and a.size and int(a.max()) > checks.MAX_INT:
            raise XbzrleError(f"EncodedBatch.{name} holds {int(a.max())}, beyond int64")
        arrays.append(a.astype(np.int64, copy=False))
    r, off = arrays
    if off.size != r.size + 1:
        raise XbzrleError(f"inconsistent EncodedBatch: {r.size} pages need {r.size + 1} offsets, found {off.size}")
    # offsets[i + 1] == offsets[i] + max(ret[i], 0) makes the offsets non-decreasing: with the two
    # ends in range, every page's bytes lie inside the buffer. One temporary, three passes.
    expect = np.maximum(r, 0)
    expect += off[:-1]
    if off[0] < 0 or off[-1] > buf.size or not np.array_equal(expect, off[1:]):
        lengths = np.diff(off)
        if off[0] < 0 or off[-1] > buf.size or (lengths < 0).any():
            bad = int(np.argmax(lengths < 0)) if (lengths < 0).any() else (0 if off[0] < 0 else r.size)
            raise XbzrleError(f"inconsistent EncodedBatch: offsets must rise from >= 0 to at most the buffer's "
                              f"{buf.size} bytes, found offsets[{bad}:{bad + 2}] = {off[bad:bad + 2].tolist()}")
        i = int(np.argmax(lengths != np.maximum(r, 0)))
        raise XbzrleError(f"inconsistent EncodedBatch: page {i} has ret {int(r[i])} but "
                          f"{int(lengths[i])} encoded bytes")
    return r, off, buf


# --- run structure -------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A maximal run of equal (``"zero"``: XOR is zero) or changed bytes of a page."""

    kind: Literal["zero", "changed"]
    offset: int
    length: int


def runs(old: BytesLike, new: BytesLike) -> list[Run]:
    """Maximal runs of equal / changed bytes covering the whole page, in order.

    >>> runs(b"\\0" * 8, b"\\0\\0\\1\\1" + b"\\0" * 4)
    [Run(kind='zero', offset=0, length=2), Run(kind='changed', offset=2, length=2), \
Run(kind='zero', offset=4, length=4)]
    """
    o, n = _as_u8(old, "old"), _as_u8(new, "new")
    if o.size != n.size:
        raise XbzrleError(f"old and new differ in size ({o.size} != {n.size})")
    changed = o != n
    edges = np.flatnonzero(changed[1:] != changed[:-1]) + 1
    bounds = np.concatenate(([0], edges, [o.size])) if o.size else np.zeros(1, np.int64)
    return [
        Run("changed" if changed[s] else "zero", int(s), int(e - s))
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist())
    ]


# --- encoder -------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedBatch:
    """Result of :func:`encode_batch`: QEMU's return value per page plus the bytes.

    ``ret[i]`` is what ``xbzrle_encode_buffer`` returns for page ``i``: the encoded
    length (> 0), 0 (unchanged) or -1 (overflow). The encoded bytes of page ``i`` are
    ``buffer[offsets[i]:offsets[i + 1]]`` (empty unless ``ret[i] > 0``).
    ``batch[i]`` gives ``bytes`` / ``b""`` / ``None`` like :func:`encode_page`.
    """

    ret: np.ndarray
    offsets: np.ndarray
    buffer: np.ndarray

    def __post_init__(self) -> None:
        for name, value in zip(("ret", "offsets", "buffer"), _check_batch(self.ret, self.offsets, self.buffer)):
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return int(self.ret.size)

    def __getitem__(self, i: int) -> bytes | None:
        n = len(self)
        # fast path for the sender, which takes every XBZRLE payload of a chunk this way
        k = i if type(i) is int else checks.integer(i, "EncodedBatch index", XbzrleError)
        k += n if k < 0 else 0
        if not 0 <= k < n:
            raise XbzrleError(f"EncodedBatch index {i} outside 0..{n - 1}")
        if int(self.ret[k]) < 0:
            return None
        return self.buffer[self.offsets[k] : self.offsets[k + 1]].tobytes()

    def __iter__(self):  # noqa: ANN204 - a generator of bytes | None
        return (self[i] for i in range(len(self)))

    def tolist(self) -> list[bytes | None]:
        return list(self)


def encode_page(old: BytesLike, new: BytesLike, dlen: int | None = None) -> bytes | None:
    """``xbzrle_encode_buffer(old, new, len(new), dst, dlen)``, byte-identical.

    Returns the encoded bytes, ``b""`` where QEMU returns 0 (page unchanged) and ``None``
    where it returns -1 (the encoding would not fit in ``dlen`` bytes, by QEMU's checks).

    >>> encode_page(b"\\0" * 8, b"\\0" * 8), encode_page(b"\\0" * 8, b"\\0" * 8, dlen=1)
    (b'', None)
    >>> encode_page(b"\\0" * 8, b"\\0\\1" + b"\\0" * 6).hex()
    '010101'
    """
    o, n = _as_u8(old, "old"), _as_u8(new, "new")
    if o.size != n.size:
        raise XbzrleError(f"old and new differ in size ({o.size} != {n.size})")
    return encode_batch(o.reshape(1, -1), n.reshape(1, -1), dlen)[0]


def encode_batch(old2d: np.ndarray, new2d: np.ndarray, dlen: int | None = None) -> EncodedBatch:
    """Encode every ``new2d[i]`` against ``old2d[i]`` like ``xbzrle_encode_buffer``.

    ``dlen`` (default: the page size) is the output capacity, as QEMU passes it.

    >>> old = np.zeros((2, 16), np.uint8); new = old.copy(); new[1, 3] = 7
    >>> b = encode_batch(old, new)
    >>> b.ret.tolist(), b[1].hex()
    ([0, 3], '030107')
    """
    old2d, new2d = _as_pages(old2d, "old2d"), _as_pages(new2d, "new2d")
    if old2d.shape != new2d.shape:
        raise XbzrleError(f"old2d and new2d differ in shape ({old2d.shape} != {new2d.shape})")
    n_pages, page_size = old2d.shape
    dlen = _as_dlen(dlen, page_size)
    if backend() == "numba":
        return EncodedBatch(*_numba_kernels().encode_pages(old2d, new2d, dlen))
    chunk = max(1, _CHUNK_BYTES // max(page_size, 1))
    rets, bufs = [], []
    for s in range(0, n_pages, chunk):
        r, b = _encode_chunk(old2d[s : s + chunk], new2d[s : s + chunk], dlen)
        rets.append(r)
        bufs.append(b)
    ret = np.concatenate(rets) if rets else np.zeros(0, np.int64)
    offsets = np.zeros(n_pages + 1, np.int64)
    np.cumsum(np.maximum(ret, 0), out=offsets[1:])
    buffer = np.concatenate(bufs) if bufs else np.zeros(0, np.uint8)
    return EncodedBatch(ret, offsets, buffer)


def _uleb_size(v: np.ndarray) -> np.ndarray:
    return 1 + (v >= 0x80)


def _chunk_runs(old: np.ndarray, new: np.ndarray, dlen: int):
    """Changed runs of a [c, P] chunk: (page, offset, length, literals, hopeless).

    Compares 8-byte words first (like QEMU) and looks at bytes only inside differing words.
    ``literals`` are the new values of all changed bytes, run after run. Pages found to
    overflow at word level (``hopeless``) are left out of the byte-level run analysis.
    """
    c, page_size = old.shape
    word = 8 if page_size % 8 == 0 else 1
    wtype = np.uint64 if word == 8 else np.uint8
    ow = old.view(wtype).reshape(-1)
    nw = new.view(wtype).reshape(-1)
    fw = np.flatnonzero(ow != nw)
    if fw.size == 0:
        return None
    new_sel = nw[fw]
    changed = (ow[fw] ^ new_sel).view(np.uint8) != 0
    hopeless = np.zeros(c, bool)
    if word == 8 and page_size <= ULEB128_SMALL_MAX:  # larger pages: QEMU's uleb assert comes first
        hopeless = _hopeless_pages(fw, changed.view(np.uint64), page_size // word, c, dlen)
        if hopeless.any():
            keep = ~hopeless[fw // (page_size // word)]
            if not keep.any():
                return None, hopeless
            fw, new_sel = np.compress(keep, fw), np.compress(keep, new_sel)
            changed = np.compress(np.repeat(keep, word), changed)
    literals = np.compress(changed, new_sel.view(np.uint8))
    q = np.flatnonzero(changed)
    pos = (fw[q >> 3] << 3) | (q & 7) if word == 8 else fw[q]  # byte position in the chunk
    brk = np.empty(pos.size, bool)
    brk[0] = True
    np.not_equal(pos[1:] - pos[:-1], 1, out=brk[1:])
    brk |= pos % page_size == 0
    first_byte = np.flatnonzero(brk)
    length = np.diff(first_byte, append=pos.size)
    start_pos = pos[first_byte]
    page = start_pos // page_size
    return page, start_pos - page * page_size, length, literals, hopeless


_BYTE_SUM = np.uint64(0x0101010101010101)


def _hopeless_pages(fw, mask_words, words_per_page, c, dlen) -> np.ndarray:
    """Pages whose encoding certainly overflows, computed per 8-byte word.

    ``mask_words`` holds one 0/1 byte per page byte of each differing word. A page with
    ``changed`` bytes in ``R`` runs encodes to at least ``changed + 2 R`` bytes (each run
    has a zrun and an nzrun length), and more than ``dlen`` always means -1.
    """
    shift = np.uint64(56)
    starts = mask_words & ~(mask_words << np.uint64(8))  # set bytes whose in-word predecessor is clear
    cost = ((mask_words + (starts << np.uint64(1))) * _BYTE_SUM) >> shift  # bytes + 2 * run starts
    cost = cost.astype(np.int64)
    # A run crossing into the next (adjacent, same-page) word was counted twice.
    cont = ((mask_words[1:] & np.uint64(1)) & (mask_words[:-1] >> shift)).astype(bool)
    cont &= (fw[1:] - fw[:-1] == 1) & (fw[1:] % words_per_page != 0)
    cost[1:] -= 2 * cont
    return np.bincount(fw // words_per_page, weights=cost, minlength=c) > dlen


def _encode_chunk(old: np.ndarray, new: np.ndarray, dlen: int) -> tuple[np.ndarray, np.ndarray]:
    c, page_size = old.shape
    # Unchanged page: check (A) of the first iteration runs before "zrun_len == slen".
    unchanged = 0 if (dlen >= 2 or page_size == 0) else -1
    ret = np.full(c, unchanged, np.int64)
    empty = np.zeros(0, np.uint8)
    found = _chunk_runs(old, new, dlen) if page_size else None
    if found is None:
        return ret, empty
    if found[0] is None:
        ret[found[1]] = -1
        return ret, empty
    page, offset, length, literals, hopeless = found
    ret[hopeless] = -1

    first = np.empty(page.size, bool)
    first[0] = True
    np.not_equal(page[1:], page[:-1], out=first[1:])
    prev_end = np.empty_like(offset)
    prev_end[0] = 0
    np.add(offset[:-1], length[:-1], out=prev_end[1:])
    prev_end[first] = 0
    zrun = offset - prev_end
    uz, un = _uleb_size(zrun), _uleb_size(length)
    tok = uz + un + length
    csum = np.cumsum(tok)
    group_start = np.flatnonzero(first)
    group_end = np.append(group_start[1:], page.size) - 1
    d_before_group = csum[group_start] - tok[group_start]
    total = csum[group_end] - d_before_group
    trailing = offset[group_end] + length[group_end] != page_size
    overflow = np.where(trailing, total + 2 > dlen, total > dlen)
    ret[page[group_start]] = np.where(overflow, -1, total)
    if page_size > ULEB128_SMALL_MAX:
        d_before = csum - tok - np.repeat(d_before_group, group_end - group_start + 1)
        _check_uleb_limit(zrun, length, uz, d_before, dlen)

    if overflow.all():
        return ret, empty
    if overflow.any():
        ok_run = ~np.repeat(overflow, group_end - group_start + 1)
        literals = np.compress(np.repeat(ok_run, length), literals)
        zrun, length, uz, un, tok = zrun[ok_run], length[ok_run], uz[ok_run], un[ok_run], tok[ok_run]
    out = np.empty(int(tok.sum()), np.uint8)
    pos = np.cumsum(tok) - tok
    for value, at in ((zrun, pos), (length, pos + uz)):
        out[at] = value.astype(np.uint8)  # low byte; fixed below for 2-byte lengths
        two = np.flatnonzero(value >= 0x80)
        if two.size:
            out[at[two]] = (value[two] & 0x7F) | 0x80
            out[at[two] + 1] = value[two] >> 7
    # Literal k of the chunk goes after the headers of all runs up to and including its own.
    header_bytes = np.cumsum(uz + un)
    out[np.arange(literals.size) + np.repeat(header_bytes, length)] = literals
    return ret, out


def _check_uleb_limit(zrun, length, uz, d_before, dlen) -> None:
    """Pages larger than 0x3fff: QEMU asserts when it reaches a run it cannot encode."""
    reach_z = (zrun > ULEB128_SMALL_MAX) & (d_before + 2 <= dlen)
    reach_n = (length > ULEB128_SMALL_MAX) & (d_before + uz + 2 <= dlen)
    if reach_z.any() or reach_n.any():
        raise XbzrleError("run longer than 0x3fff bytes cannot be ULEB128-encoded (QEMU asserts)")


@dataclass(frozen=True)
class OverflowCheck:
    """The first of the encoder's overflow checks that fails (for display).

    ``check`` is ``"A"`` (before a zrun), ``"B"`` (after a zrun length) or ``"C"`` (after an
    nzrun length); ``run`` is the index of the (zrun, nzrun) pair; ``d`` the output bytes
    written so far and ``need`` the left-hand side compared with ``dlen``.
    """

    check: Literal["A", "B", "C"]
    run: int
    d: int
    need: int
    dlen: int


def overflow_check(old: BytesLike, new: BytesLike, dlen: int | None = None) -> OverflowCheck | None:
    """Which overflow check makes ``xbzrle_encode_buffer`` return -1, or None if none does.

    Evaluates (A), (B), (C) for every run in QEMU's order (vectorised) and returns the first
    failure. ``encode_page(...) is None`` exactly when this is not None.

    >>> overflow_check(b"\\0" * 8, b"\\1" + b"\\0" * 7, dlen=4)
    OverflowCheck(check='A', run=1, d=3, need=5, dlen=4)
    """
    o, n = _as_u8(old, "old"), _as_u8(new, "new")
    dlen = _as_dlen(dlen, n.size)
    changed = [r for r in runs(o, n) if r.kind == "changed"]
    if not changed:
        return OverflowCheck("A", 0, 0, 2, dlen) if 2 > dlen and n.size else None
    offset = np.array([r.offset for r in changed], np.int64)
    length = np.array([r.length for r in changed], np.int64)
    zrun = offset - np.concatenate(([0], offset[:-1] + length[:-1]))
    uz, un = _uleb_size(zrun), _uleb_size(length)
    d = np.concatenate(([0], np.cumsum(uz + un + length)))
    k = len(changed)
    need_a, need_b, need_c = d[:k] + 2, d[:k] + uz + 2, d[:k] + uz + un + length
    # QEMU order per pair: A, B, C; then A once more if equal bytes follow the last run.
    needs = np.stack([need_a, need_b, need_c], axis=1).reshape(-1)
    wrote = np.stack([d[:k], d[:k] + uz, d[:k] + uz + un], axis=1).reshape(-1)
    if offset[-1] + length[-1] != n.size:
        needs = np.append(needs, d[k] + 2)
        wrote = np.append(wrote, d[k])
    fails = np.flatnonzero(needs > dlen)
    if fails.size == 0:
        return None
    j = int(fails[0])
    return OverflowCheck("ABC"[j % 3], j // 3, int(wrote[j]), int(needs[j]), dlen)


# --- decoder -------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    """One field of an encoded page, for an annotated hex view.

    ``kind``: ``"zrun"`` / ``"nzrun"`` (a ULEB128 length field, ``value`` = run length) or
    ``"data"`` (the literal bytes of an nzrun, ``value`` = their count). ``offset`` and
    ``size`` locate the field in the encoded buffer; ``page_offset`` is where the run
    starts in the page.
    """

    kind: Literal["zrun", "nzrun", "data"]
    offset: int
    size: int
    value: int
    page_offset: int


def parse_encoded(encoded: BytesLike, dlen: int = 4096) -> list[Token]:
    """Split an encoded page into its fields, validating like ``xbzrle_decode_buffer``.

    Raises :class:`~ramlab.errors.XbzrleError` where QEMU's decoder returns -1 for a page
    of ``dlen`` bytes.

    >>> [(t.kind, t.offset, t.size, t.value) for t in parse_encoded(bytes.fromhex("ff1f0101"))]
    [('zrun', 0, 2, 4095), ('nzrun', 2, 1, 1), ('data', 3, 1, 1)]
    """
    src = _as_u8(encoded, "encoded")
    dlen = checks.integer(dlen, "dlen", XbzrleError, min=-checks.MAX_INT)
    slen = src.size
    tokens: list[Token] = []
    i = d = 0
    while i < slen:
        if slen - i < 2:
            raise _decode_error(E_SHORT_ZRUN, i)
        r, count = _uleb_at(src, i)
        if r < 0:
            raise _decode_error(E_ULEB_ZRUN, i + 1)
        if i > 0 and count == 0:
            raise _decode_error(E_ZERO_ZRUN, i)
        if d + count > dlen:
            raise _decode_error(E_ZRUN_PAST_PAGE, i)
        tokens.append(Token("zrun", i, r, count, d))
        i += r
        d += count
        if slen - i < 2:
            raise _decode_error(E_SHORT_NZRUN, i)
        r, count = _uleb_at(src, i)
        if r < 0:
            raise _decode_error(E_ULEB_NZRUN, i + 1)
        if count == 0:
            raise _decode_error(E_EMPTY_NZRUN, i)
        if d + count > dlen:
            raise _decode_error(E_NZRUN_PAST_PAGE, i)
        if i + r + count > slen:
            raise _decode_error(E_NZRUN_PAST_INPUT, i)
        tokens.append(Token("nzrun", i, r, count, d))
        i += r
        tokens.append(Token("data", i, count, count, d))
        i += count
        d += count
    return tokens


def decode_page(encoded: BytesLike, page: np.ndarray | bytearray) -> int:
    """``xbzrle_decode_buffer(encoded, len, page, len(page))``: apply the delta in place.

    Returns the number of page bytes covered (QEMU's return value; bytes after the last
    changed run are not counted). Raises :class:`~ramlab.errors.XbzrleError` (naming the
    rule and the byte offset) where QEMU returns -1. The whole input is validated before
    anything is written, so on error the page is unchanged (QEMU would already have applied
    the runs before the bad one; its loader then fails the migration either way).

    >>> page = bytearray(8)
    >>> decode_page(bytes.fromhex("0202aabb"), page), page.hex()
    (4, '0000aabb00000000')
    """
    dst = _writable_pages(page, "page", 1)
    src = _as_u8(encoded, "encoded")
    d = 0
    for t in parse_encoded(src, dlen=dst.size):
        if t.kind == "data":
            dst[t.page_offset : t.page_offset + t.size] = src[t.offset : t.offset + t.size]
            d = t.page_offset + t.size
    return d


def decode_batch(
    encoded: EncodedBatch | Sequence[BytesLike],
    pages2d: np.ndarray,
    *,
    errors: Literal["raise", "report"] = "raise",
) -> np.ndarray:
    """Apply ``encoded[i]`` onto ``pages2d[i]`` in place for every page, vectorised.

    Returns QEMU's return value per page (int64: bytes covered, or -1). With
    ``errors="raise"`` the lowest invalid page raises :class:`~ramlab.errors.XbzrleError`
    (naming the page, the rule and the byte offset); the pages before it are applied, as
    QEMU's loader applies page after page, and it and the later pages are left untouched.
    With ``"report"`` invalid pages get -1 and are left untouched while the valid ones are
    applied. Entries of an :class:`EncodedBatch` with ``ret <= 0`` decode as empty input
    (0, page untouched).

    The numpy backend walks the runs of all pages in lockstep
    (:mod:`ramlab.xbzrle.walk`); the numba backend decodes page by page.

    >>> pages = np.zeros((2, 8), np.uint8)
    >>> decode_batch([b"", bytes.fromhex("0101ff")], pages).tolist(), pages[1].tolist()
    ([0, 2], [0, 255, 0, 0, 0, 0, 0, 0])
    """
    checks.choice(errors, "errors", ("raise", "report"), XbzrleError)
    pages2d = _writable_pages(pages2d, "pages2d", 2)
    n_pages, page_size = pages2d.shape
    if page_size > MAX_BATCH_PAGE_SIZE:
        raise XbzrleError(f"pages2d has pages of {page_size} bytes, more than decode_batch's "
                          f"{MAX_BATCH_PAGE_SIZE} (use decode_page)")
    if isinstance(encoded, EncodedBatch):  # re-checked: its arrays may have been changed since
        _, offsets, buf = _check_batch(encoded.ret, encoded.offsets, encoded.buffer)
    else:
        if (isinstance(encoded, str | bytes | bytearray | memoryview) or not isinstance(encoded, Sequence | np.ndarray)
                or (isinstance(encoded, np.ndarray) and encoded.ndim == 0)):
            raise XbzrleError(f"encoded must be an EncodedBatch or a sequence of bytes-like pages, "
                              f"found {checks.describe(encoded)}")
        arrays = [_as_u8(e, f"encoded[{i}]") for i, e in enumerate(encoded)]
        offsets = np.zeros(len(arrays) + 1, np.int64)
        np.cumsum(np.fromiter((a.size for a in arrays), np.int64, len(arrays)), out=offsets[1:])
        buf = np.concatenate(arrays) if arrays else np.zeros(0, np.uint8)
    if offsets.size - 1 != n_pages:
        raise XbzrleError(f"{offsets.size - 1} encoded pages for {n_pages} pages")
    if backend() == "numba":
        counts, bad, rule, offset = _numba_kernels().decode_pages(buf, offsets, pages2d, errors == "report")
        if bad >= 0:
            raise _decode_error(rule, offset, page=bad)
        return counts
    counts, bad = walk.decode_pages(buf, offsets, pages2d, errors == "report")
    if bad >= 0:
        try:
            parse_encoded(buf[offsets[bad] : offsets[bad + 1]], dlen=page_size)
        except XbzrleError as err:
            raise _decode_error(err.rule, err.offset, page=bad) from None  # type: ignore[attr-defined]
        raise AssertionError(f"page {bad} was rejected but parses")  # pragma: no cover
    return counts
