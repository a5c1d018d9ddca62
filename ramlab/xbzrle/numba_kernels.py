"""Compiled (numba) XBZRLE batch kernels: the ``ramlab[fast]`` backend of :mod:`ramlab.xbzrle`.

The kernels walk each page like QEMU's ``xbzrle_encode_buffer`` / ``xbzrle_decode_buffer``
(``migration/xbzrle.c``, ``docs/reference/algorithms.md`` §6), run by run, and compare
8 bytes at a time where the page size allows it:

* zero runs: the first non-zero byte of ``old ^ new`` is ``ctz(word) / 8``;
* changed runs: the first zero byte of ``x = old ^ new`` is the lowest set bit of QEMU's
  "has a zero byte" test ``(x - 0x01..01) & ~x & 0x80..80`` (bits above it may be false
  positives, the lowest one never is);
* a run starting in the middle of a word masks the bytes before it instead of looping
  byte by byte up to the next word boundary.

Results are identical to the pure-numpy path (and QEMU): the same ``ret`` per page, the
same concatenated buffer, the same overflow checks (A) ``d + 2 > dlen`` before a zero run,
(B) ``d + 2 > dlen`` after its length and (C) ``d + n > dlen`` after a changed-run length,
and QEMU's assertion that a written length fits the 2-byte ULEB128 (``<= 0x3fff``). The
decoder validates each page completely before writing it and reports the first failing
rule and its byte offset (page-relative) exactly like :func:`ramlab.xbzrle.parse_encoded`.

This module needs numba; :mod:`ramlab.xbzrle` imports it only when the numba backend is
selected. Functions here take already-validated arrays (see :func:`ramlab.xbzrle.encode_batch`).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

__all__ = ["decode_pages", "encode_pages"]

_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_ZERO64 = np.uint64(0)
_ONE64 = np.uint64(1)
_ALL64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_ULEB_MAX = 0x3FFF
_BLOCK_WORDS = 8  # words OR-ed together per step when skipping long equal stretches

# Return codes of the encode kernel (besides "done").
ENC_OK = 0
ENC_GROW = 1  # output buffer too small: grow it and resume at the returned page
ENC_ULEB = 2  # QEMU would assert: a run longer than 0x3fff bytes reached the encoder

# Decoder rule codes: must equal ramlab.xbzrle.E_* (checked by the tests).
_E_SHORT_ZRUN = 1
_E_ULEB_ZRUN = 2
_E_ZERO_ZRUN = 3
_E_ZRUN_PAST_PAGE = 4
_E_SHORT_NZRUN = 5
_E_ULEB_NZRUN = 6
_E_EMPTY_NZRUN = 7
_E_NZRUN_PAST_PAGE = 8
_E_NZRUN_PAST_INPUT = 9


# --- run search ----------------------------------------------------------------------
# Arrays are indexed with unsigned integers (``_U(x)``) throughout: numba then skips the
# negative-index wrap-around code, which otherwise blocks vectorisation and costs registers.
# The encoder works on flat arrays; page ``p`` starts at byte ``b = p * slen`` / word
# ``wb = p * (slen // 8)``; ``i`` and the results are offsets inside the page.

_U = np.uint64


@njit(cache=True, nogil=True, inline="always")
def _first_diff_words(ow, nw, wb, i, slen):
    """First byte offset ``>= i`` where the pages differ, or ``slen``; 8-byte words."""
    w = i >> 3
    nwords = slen >> 3
    if w >= nwords:
        return slen
    x = ow[_U(wb + w)] ^ nw[_U(wb + w)]
    x &= _ALL64 << _U((i & 7) << 3)  # ignore bytes before i
    if x != _ZERO64:
        return (w << 3) + (np.int64(trailing_zeros(x)) >> 3)
    w += 1
    # Equal stretches: OR a block of word XORs (vectorisable), then locate the word.
    while w + _BLOCK_WORDS <= nwords:
        acc = _ZERO64
        at = wb + w
        for k in range(_BLOCK_WORDS):
            acc |= ow[_U(at + k)] ^ nw[_U(at + k)]
        if acc != _ZERO64:
            break
        w += _BLOCK_WORDS
    while w < nwords:
        x = ow[_U(wb + w)] ^ nw[_U(wb + w)]
        if x != _ZERO64:
            return (w << 3) + (np.int64(trailing_zeros(x)) >> 3)
        w += 1
    return slen


@njit(cache=True, nogil=True, inline="always")
def _first_equal_words(ow, nw, wb, i, slen):
    """First byte offset ``>= i`` where the pages are equal, or ``slen``; 8-byte words."""
    w = i >> 3
    nwords = slen >> 3
    if w >= nwords:
        return slen
    x = (ow[_U(wb + w)] ^ nw[_U(wb + w)]) | ((_ONE64 << _U((i & 7) << 3)) - _ONE64)  # bytes before i: "changed"
    while True:
        zero = (x - _ONES) & ~x & _HIGHS
        if zero != _ZERO64:
            return (w << 3) + (np.int64(trailing_zeros(zero)) >> 3)
        w += 1
        if w >= nwords:
            return slen
        x = ow[_U(wb + w)] ^ nw[_U(wb + w)]


@njit(cache=True, nogil=True, inline="always")
def _first_diff_bytes(o, n, b, i, slen):
    while i < slen and o[_U(b + i)] == n[_U(b + i)]:
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _first_equal_bytes(o, n, b, i, slen):
    while i < slen and o[_U(b + i)] != n[_U(b + i)]:
        i += 1
    return i


# --- encoder -------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _put_uleb(out, at, v):
    """QEMU's ``uleb128_encode_small`` (caller checked ``v <= 0x3fff``): bytes written."""
    if v < 0x80:
        out[_U(at)] = v
        return 1
    out[_U(at)] = (v & 0x7F) | 0x80
    out[_U(at + 1)] = v >> 7
    return 2


@njit(cache=True, nogil=True)
def _encode_kernel(old, new, old64, new64, n_pages, slen, dlen, first, ret, out, pos, need):
    """Encode pages ``first..`` into ``out`` from ``pos``; see :func:`encode_pages`.

    ``old`` / ``new``: the pages as flat uint8 arrays; ``old64`` / ``new64``: the same as
    uint64 words, or empty when ``slen`` is not a multiple of 8 (byte-wise search then).
    Returns ``(status, page, pos)``: ``status`` is ENC_OK (all pages done), ENC_GROW (``out``
    cannot hold a worst-case page at ``pos``: resume at ``page``) or ENC_ULEB (page ``page``
    makes QEMU assert).
    """
    words = old64.size > 0
    for p in range(first, n_pages):
        if pos + need > out.size:
            return ENC_GROW, p, pos
        b = p * slen
        wb = p * (slen >> 3)
        i = 0
        d = 0
        r = 0  # QEMU's return value for this page; slen == 0 -> 0
        while i < slen:
            if d + 2 > dlen:  # (A)
                r = -1
                break
            if words:
                j = _first_diff_words(old64, new64, wb, i, slen)
            else:
                j = _first_diff_bytes(old, new, b, i, slen)
            z = j - i
            if z == slen:  # whole page unchanged
                r = 0
                break
            if j == slen:  # trailing equal bytes are not encoded
                r = d
                break
            if z > _ULEB_MAX:
                return ENC_ULEB, p, pos
            d += _put_uleb(out, pos + d, z)
            if d + 2 > dlen:  # (B)
                r = -1
                break
            if words:
                k = _first_equal_words(old64, new64, wb, j + 1, slen)
            else:
                k = _first_equal_bytes(old, new, b, j + 1, slen)
            m = k - j
            if m > _ULEB_MAX:
                return ENC_ULEB, p, pos
            d += _put_uleb(out, pos + d, m)
            if d + m > dlen:  # (C)
                r = -1
                break
            at = pos + d
            src = b + j
            for t in range(m):
                out[_U(at + t)] = new[_U(src + t)]
            d += m
            i = k
            r = d
        ret[p] = r
        if r > 0:
            pos += r
    return ENC_OK, n_pages, pos


def encode_pages(old2d: np.ndarray, new2d: np.ndarray, dlen: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode every ``new2d[i]`` against ``old2d[i]``: ``(ret, offsets, buffer)``.

    Same values as :func:`ramlab.xbzrle.encode_batch` (which validates the arrays: both
    C-contiguous 2-D uint8 of equal shape). Raises :class:`~ramlab.errors.XbzrleError`
    where QEMU's ULEB128 encoder asserts.
    """
    from ramlab.errors import XbzrleError

    n_pages, page_size = old2d.shape
    old, new = old2d.reshape(-1), new2d.reshape(-1)
    if page_size % 8 == 0 and old.size:
        old64, new64 = old.view(np.uint64), new.view(np.uint64)
    else:
        old64 = new64 = np.zeros(0, np.uint64)
    # A page writes at most min(dlen, 2 * page_size + 2) bytes before its checks stop it.
    need = max(0, min(int(dlen), 2 * page_size + 2))
    dlen_c = max(min(int(dlen), 1 << 62), -(1 << 62))
    ret = np.zeros(n_pages, np.int64)
    # Start with room for ~1/4 of the input (plus one worst page): grows on demand.
    out = np.empty(min(n_pages * need, max(1 << 16, (n_pages * page_size) // 4)) + need, np.uint8)
    pos, first = 0, 0
    while True:
        status, first, pos = _encode_kernel(
            old, new, old64, new64, n_pages, page_size, dlen_c, first, ret, out, pos, need
        )
        if status == ENC_OK:
            break
        if status == ENC_ULEB:
            raise XbzrleError("run longer than 0x3fff bytes cannot be ULEB128-encoded (QEMU asserts)")
        grown = np.empty(2 * out.size + need, np.uint8)
        grown[:pos] = out[:pos]
        out = grown
    offsets = np.zeros(n_pages + 1, np.int64)
    np.cumsum(np.maximum(ret, 0), out=offsets[1:])
    buffer = out[:pos]
    if out.size > 2 * pos + (1 << 20):  # don't pin a mostly unused allocation
        buffer = buffer.copy()
    return ret, offsets, buffer


# --- decoder -------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _validate(buf, start, end, dlen):
    """Walk one encoded page like ``parse_encoded``: ``(count, rule, offset)``, count -1 if bad."""
    slen = end - start
    i = 0
    d = 0
    while i < slen:
        if slen - i < 2:
            return -1, _E_SHORT_ZRUN, i
        b0 = np.int64(buf[_U(start + i)])
        if b0 < 0x80:
            r = 1
            count = b0
        else:
            b1 = np.int64(buf[_U(start + i + 1)])
            if b1 >= 0x80:
                return -1, _E_ULEB_ZRUN, i + 1
            r = 2
            count = (b0 & 0x7F) | (b1 << 7)
        if i > 0 and count == 0:
            return -1, _E_ZERO_ZRUN, i
        if d + count > dlen:
            return -1, _E_ZRUN_PAST_PAGE, i
        i += r
        d += count
        if slen - i < 2:
            return -1, _E_SHORT_NZRUN, i
        b0 = np.int64(buf[_U(start + i)])
        if b0 < 0x80:
            r = 1
            count = b0
        else:
            b1 = np.int64(buf[_U(start + i + 1)])
            if b1 >= 0x80:
                return -1, _E_ULEB_NZRUN, i + 1
            r = 2
            count = (b0 & 0x7F) | (b1 << 7)
        if count == 0:
            return -1, _E_EMPTY_NZRUN, i
        if d + count > dlen:
            return -1, _E_NZRUN_PAST_PAGE, i
        if i + r + count > slen:
            return -1, _E_NZRUN_PAST_INPUT, i
        i += r + count
        d += count
    return d, 0, 0


@njit(cache=True, nogil=True)
def _apply(buf, start, end, pages, p):
    """Copy the changed runs of an already validated encoded page into ``row``."""
    i = start
    d = 0
    while i < end:
        b0 = np.int64(buf[_U(i)])
        if b0 < 0x80:
            i += 1
            d += b0
        else:
            d += (b0 & 0x7F) | (np.int64(buf[_U(i + 1)]) << 7)
            i += 2
        b0 = np.int64(buf[_U(i)])
        if b0 < 0x80:
            i += 1
            count = b0
        else:
            count = (b0 & 0x7F) | (np.int64(buf[_U(i + 1)]) << 7)
            i += 2
        for t in range(count):
            pages[_U(p), _U(d + t)] = buf[_U(i + t)]
        i += count
        d += count


@njit(cache=True, nogil=True)
def _decode_kernel(buf, offsets, pages, counts, report):
    """Decode all pages; returns ``(bad_page, rule, offset)`` (``bad_page`` -1: none raised).

    Each page is validated completely, then applied. An invalid page gets count -1 and
    stays untouched; unless ``report`` it also stops the work (the pages before it are
    applied, as QEMU's loader applies page after page).
    """
    n_pages, dlen = pages.shape
    for p in range(n_pages):
        s = offsets[_U(p)]
        e = offsets[_U(p + 1)]
        if e == s:
            continue
        c, rule, off = _validate(buf, s, e, dlen)
        counts[p] = c
        if c >= 0:
            _apply(buf, s, e, pages, p)
        elif not report:
            return p, rule, off
    return -1, 0, 0


def decode_pages(
    buf: np.ndarray, offsets: np.ndarray, pages2d: np.ndarray, report: bool
) -> tuple[np.ndarray, int, int, int]:
    """Apply ``buf[offsets[i]:offsets[i + 1]]`` onto ``pages2d[i]`` in place, for every page.

    Returns ``(counts, bad_page, rule, offset)``: QEMU's return value per page and, unless
    ``report``, the lowest invalid page (-1 if none) with the failing rule and its byte
    offset in that page's input; the pages before it are applied, it and the later ones
    are not. With ``report`` invalid pages get -1 and are left untouched while the valid
    ones are applied. ``pages2d`` may be
    any writable 2-D uint8 array (strided views included); a read-only one raises
    :class:`~ramlab.errors.XbzrleError`. The arrays must already be validated
    (:class:`ramlab.xbzrle.EncodedBatch` does it): the kernel does not check bounds.
    """
    if not pages2d.flags.writeable:  # the codec refuses these first; kept as a last guard
        from ramlab.errors import XbzrleError

        raise XbzrleError("pages2d is read-only: XBZRLE decoding writes the pages in place")
    n_pages = pages2d.shape[0]
    counts = np.zeros(n_pages, np.int64)
    if n_pages == 0:
        return counts, -1, 0, 0
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    bad, rule, off = _decode_kernel(buf, offsets, pages2d, counts, bool(report))
    return counts, int(bad), int(rule), int(off)
