"""Pure-numpy XBZRLE batch decoding: the token chains of many pages walked in lockstep.

An encoded page is a chain ``zrun nzrun data zrun nzrun data ...`` (``migration/xbzrle.c``):
where a field starts depends on every field before it, so the chain cannot be cut into
pieces up front. What *can* be computed for every byte position ``p`` of the input at
once is where the chain would go next if a field started at ``p``::

    C[p] = p + uleb_len(p)          after a zrun field at p: where its nzrun field starts
    D[p] = C[p] + uleb_value(p)     after an nzrun field at p and its data: the next zrun

One step of a page's decoding is then two table lookups, ``i1 = C[i]; i = D[i1]``, and a
single numpy call does that step for every page of a chunk together. A page that reaches
its end stays there (``i = min(D[i1], end)``), so no per-step bookkeeping is needed; the
lookups of each step are recorded and turned into runs afterwards, in bulk (run lengths
``D[i1] - C[i1]``, page offsets by a running sum over the steps).

QEMU's validity rules become checks on those bulk arrays: every length must be
``1..0x3fff`` (``0..0x3fff`` for the first zero run; a larger value means a third ULEB128
byte), the final page offset must be ``<= dlen`` (offsets never decrease, so that covers
every "past the page" test), and the walk must land exactly on the end of the input (a
field or run that would read past it overshoots; this also covers "fewer than 2 bytes
left"). So a page is rejected exactly when ``xbzrle_decode_buffer`` returns -1.

When most pages of a chunk are done and a few long ones remain, the walk continues with
those pages only (a new *round*), so the work stays proportional to the number of runs.
All large arrays live in a :class:`_Workspace` reused from chunk to chunk: fresh
allocations are page-faulted memory, which costs more than the arithmetic here.

    >>> pages = np.zeros((3, 8), np.uint8)
    >>> buf = np.frombuffer(bytes.fromhex("0101aa" "00020b0c0201ff"), np.uint8)
    >>> decode_pages(buf, np.array([0, 3, 3, 10]), pages, report=False)
    (array([2, 0, 5]), -1)
    >>> pages.tolist()
    [[0, 170, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0], [11, 12, 0, 0, 255, 0, 0, 0]]
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_pages"]

CHUNK_BYTES = 256 << 10  # encoded bytes per chunk (one page may exceed it); see bench_xbzrle.py
CHUNK_PAGES = 8192
_CHECK_EVERY = 4  # steps between "all done?" tests
_ULEB_MAX = 0x3FFF
_I32_MAX = (1 << 31) - 1


class _Workspace:
    """Reused buffers: per input byte (tables) and per step slot (recorded walk, runs)."""

    def __init__(self) -> None:
        self.nbytes = -1
        self.slots = -1
        self.runs = -1

    def bytes_for(self, n: int) -> None:
        if n <= self.nbytes:
            return
        n = max(n, 2 * self.nbytes)
        self.nbytes = n
        self.chunk = np.zeros(n + 4, np.uint8)
        self.w = np.empty(n + 3, np.uint16)  # byte p and p+1 as a little-endian word
        self.t = np.empty(n + 3, np.uint16)
        self.u = np.empty(n + 3, np.uint16)
        self.C = np.empty(n + 3, np.int32)
        self.D = np.empty(n + 3, np.int32)
        self.ar1 = np.arange(1, n + 4, dtype=np.int32)

    def slots_for(self, n: int, keep: int = 0) -> None:
        """Room for ``n`` step slots (int32 each), keeping the first ``keep`` of the walk."""
        if n <= self.slots:
            return
        n = max(n, 2 * self.slots)
        old = (self.I, self.I1, self.NX) if self.slots > 0 else None
        self.I, self.I1, self.NX = _regrow(old, 3, n, keep)
        self.src, self.cnt, self.inc, self.tmp = (np.empty(n, np.int32) for _ in range(4))
        self.active = np.empty(n, bool)
        self.slots = n

    def runs_for(self, n: int, keep: int) -> None:
        """Room for ``n`` selected runs (dst, src, cnt), keeping the first ``keep``."""
        if n <= self.runs:
            return
        n = max(n, 2 * self.runs)
        old = (self.run_dst, self.run_src, self.run_cnt) if self.runs > 0 else None
        self.run_dst, self.run_src, self.run_cnt = _regrow(old, 3, n, keep)
        self.dst64 = np.empty(n, np.int64)
        self.val = np.empty(n, np.uint8)
        self.runs = n


def _regrow(old: tuple[np.ndarray, ...] | None, count: int, n: int, keep: int) -> list[np.ndarray]:
    """``count`` new int32 buffers of ``n`` elements holding the first ``keep`` of ``old``."""
    new = [np.empty(n, np.int32) for _ in range(count)]
    for a, o in zip(new, old or ()):
        a[:keep] = o[:keep]
    return new


def _tables(ws: _Workspace, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``C`` and ``D`` for the ``n`` input bytes in ``ws.chunk`` (followed by 4 zero bytes).

    ``uleb_value`` is QEMU's ``uleb128_decode_small`` without its third-byte test: a
    second byte with the top bit set gives a value above 0x3fff, rejected later.
    """
    c = ws.chunk[: n + 4]
    w, t, u = ws.w[: n + 3], ws.t[: n + 3], ws.u[: n + 3]
    C, D = ws.C[: n + 3], ws.D[: n + 3]
    np.copyto(w, c[1:])
    np.left_shift(w, 8, out=w)
    np.bitwise_or(w, c[:-1], out=w)  # w = b0 | b1 << 8
    np.right_shift(w, 7, out=t)
    np.bitwise_and(t, 1, out=t)  # 1 for a two-byte field
    np.add(ws.ar1[: n + 3], t, out=C)
    np.multiply(t, 0x7F80, out=t)
    np.right_shift(w, 1, out=u)
    np.bitwise_and(t, u, out=t)  # b1 << 7 for a two-byte field, else 0
    np.bitwise_and(w, 0x7F, out=w)
    np.bitwise_or(w, t, out=w)
    np.add(C, w, out=D)
    return C, D


def _rows(a: np.ndarray, rows: int, P: int) -> np.ndarray:
    return a[: rows * P].reshape(rows, P)


def _walk(ws: _Workspace, C: np.ndarray, D: np.ndarray, start: np.ndarray, end: np.ndarray) -> int:
    """Step every page from ``start`` until all reach ``end`` or only a quarter still walk.

    Fills rows of ``ws.I`` (zrun positions), ``ws.I1`` (nzrun positions) and ``ws.NX``
    (where the next zrun would start, before clamping to ``end``); row ``S`` of ``ws.I``
    holds the positions after the last step. Returns ``S``.
    """
    P = start.size
    ws.slots_for(64 * P)
    rows = ws.slots // P
    I, I1, NX = (_rows(a, rows, P) for a in (ws.I, ws.I1, ws.NX))
    I[0] = start
    k = 0
    while True:
        if k + _CHECK_EVERY >= rows:
            ws.slots_for(2 * ws.slots, keep=(k + 1) * P)
            rows = ws.slots // P
            I, I1, NX = (_rows(a, rows, P) for a in (ws.I, ws.I1, ws.NX))
        for _ in range(_CHECK_EVERY):
            np.take(C, I[k], out=I1[k], mode="clip")
            np.take(D, I1[k], out=NX[k], mode="clip")
            np.minimum(NX[k], end, out=I[k + 1])
            k += 1
        live = np.count_nonzero(I[k] < end)
        if live == 0 or 4 * live <= P:
            return k


def _round_runs(ws: _Workspace, C, D, S: int, end, base, d0, first: bool, nrun: int, dlen: int):
    """Turn ``S`` recorded steps of ``P`` pages into runs appended at ``ws.run_*[nrun:]``.

    Returns ``(d, bad, nrun)``: each page's offset after its last run of this round, the
    pages already known invalid (a bad length or an overshoot), and the new run count.
    """
    P = end.size
    I, I1, NX = (_rows(a, S, P) for a in (ws.I, ws.I1, ws.NX))
    src, cnt, inc, tmp = (_rows(a, S, P) for a in (ws.src, ws.cnt, ws.inc, ws.tmp))
    act = _rows(ws.active, S, P)
    np.less(I, end, out=act)
    np.take(C, I1, out=src, mode="clip")  # first data byte of the nzrun
    np.subtract(NX, src, out=cnt)  # nzrun length
    np.take(D, I, out=inc, mode="clip")
    np.subtract(inc, I1, out=inc)  # zrun length
    # lengths must be 1..0x3fff (the first zrun of a page 0..0x3fff): max(z - 1, n - 1) unsigned
    np.subtract(inc, 1, out=tmp)
    if first:
        np.maximum(tmp[0], 0, out=tmp[0])
    np.subtract(cnt, 1, out=I1)
    tu = tmp.view(np.uint32)
    np.maximum(tu, I1.view(np.uint32), out=tu)
    np.multiply(tmp, act, out=tmp)
    bad = tu.max(axis=0) > _ULEB_MAX - 1
    np.multiply(NX, act, out=I1)
    bad |= I1.max(axis=0) > end  # a field or run read past the input
    np.add(inc, cnt, out=inc)
    np.multiply(inc, act, out=inc)
    inc[0] += d0
    clamp = S * 2 * 0x7FFF + dlen >= _I32_MAX  # only for absurdly long inputs: keep int32 sums exact
    for r in range(1, S):
        np.add(inc[r], inc[r - 1], out=inc[r])
        if clamp:
            np.minimum(inc[r], dlen + 1, out=inc[r])
    d = inc[S - 1].copy()
    np.subtract(inc, cnt, out=inc)
    np.add(inc, base, out=inc)  # where each nzrun lands, as a flat index into the chunk's pages
    m = int(np.count_nonzero(act))
    ws.runs_for(nrun + m, keep=nrun)
    a = act.reshape(-1)
    for arr, out in ((inc, ws.run_dst), (src, ws.run_src), (cnt, ws.run_cnt)):
        np.compress(a, arr.reshape(-1), out=out[nrun : nrun + m])
    return d, bad, nrun + m


def _decode_chunk(ws: _Workspace, C, D, start: np.ndarray, end: np.ndarray, dlen: int, rows: np.ndarray):
    """Walk pages ``rows`` of a chunk, in rounds; returns ``(d, bad, nrun)`` per page / overall."""
    P = start.size
    d_all = np.zeros(P, np.int64)
    bad_all = np.zeros(P, bool)
    ids = np.arange(P)
    d0 = np.zeros(P, np.int32)
    nrun, first = 0, True
    while True:
        S = _walk(ws, C, D, start, end)
        base = rows[ids].astype(np.int32) * dlen
        d, bad, nrun = _round_runs(ws, C, D, S, end, base, d0, first, nrun, dlen)
        bad_all[ids] |= bad
        pos = _rows(ws.I, S + 1, ids.size)[S]
        live = pos < end
        done = ~live
        d_all[ids[done]] = d[done]
        if not live.any():
            return d_all, bad_all, nrun
        ids, start, end, d0 = ids[live], pos[live], end[live], d[live]
        first = False


def _apply(ws: _Workspace, pages2d: np.ndarray, flat, page0: int, nrun: int) -> None:
    """Write the ``nrun`` collected runs (byte data from ``ws.chunk``) into the pages."""
    dlen = pages2d.shape[1]
    dst, src, cnt = ws.run_dst[:nrun], ws.run_src[:nrun], ws.run_cnt[:nrun]
    idx, val = ws.dst64[:nrun], ws.val[:nrun]
    np.add(dst, page0 * dlen, out=idx)
    np.take(ws.chunk, src, out=val, mode="clip")
    _scatter(pages2d, flat, idx, val)
    multi = np.flatnonzero(cnt > 1)
    if multi.size:  # the bytes after the first of each longer run
        extra = cnt[multi].astype(np.int64) - 1
        first = np.cumsum(extra) - extra
        step = np.arange(int(extra.sum()), dtype=np.int64) - np.repeat(first, extra) + 1
        _scatter(pages2d, flat, np.repeat(idx[multi], extra) + step,
                 ws.chunk[np.repeat(src[multi].astype(np.int64), extra) + step])


def _scatter(pages2d: np.ndarray, flat, idx: np.ndarray, val: np.ndarray) -> None:
    if flat is not None:
        flat[idx] = val
    else:
        dlen = pages2d.shape[1]
        pages2d[idx // dlen, idx % dlen] = val


def decode_pages(buf: np.ndarray, offsets: np.ndarray, pages2d: np.ndarray, report: bool) -> tuple[np.ndarray, int]:
    """Apply ``buf[offsets[i]:offsets[i + 1]]`` onto ``pages2d[i]`` for every page.

    Returns ``(counts, bad)``: QEMU's return value per page (-1: invalid) and, unless
    ``report``, the first invalid page (-1 if none): the pages before it are applied
    (as QEMU's loader would have, page after page), it and the later ones are not. With
    ``report`` every valid page is applied and the invalid ones are left untouched.
    """
    if not pages2d.flags.writeable:  # the codec refuses these first; kept as a last guard
        from ramlab.errors import XbzrleError

        raise XbzrleError("pages2d is read-only: XBZRLE decoding writes the pages in place")
    n_pages, dlen = pages2d.shape
    counts = np.zeros(n_pages, np.int64)
    flat = pages2d.reshape(-1) if pages2d.flags.c_contiguous else None
    max_pages = max(1, min(CHUNK_PAGES, (_I32_MAX - 2 * dlen) // max(dlen, 1)))
    # A valid page has at most (dlen + 1) // 2 runs (each after the first covers >= 2 bytes),
    # each with <= 4 length bytes, and <= dlen data bytes in all.
    max_valid = 3 * dlen + 2
    ws = _Workspace()
    s = 0
    while s < n_pages:
        e = int(np.searchsorted(offsets, offsets[s] + CHUNK_BYTES, side="right")) - 1
        e = min(max(e, s + 1), s + max_pages, n_pages)
        lo, hi = int(offsets[s]), int(offsets[e])
        n = hi - lo
        if n == 0:  # only unchanged pages: nothing to do
            s = e
            continue
        if e == s + 1 and n > max_valid:  # invalid whatever it holds: not worth a walk (nor the memory)
            counts[s] = -1
            if not report:
                return counts, s
            s = e
            continue
        ws.bytes_for(n)
        ws.chunk[:n] = buf[lo:hi]
        ws.chunk[n : n + 4] = 0
        C, D = _tables(ws, n)
        rel = (offsets[s : e + 1] - lo).astype(np.int32)
        start, end = rel[:-1], rel[1:]
        d, bad, nrun = _decode_chunk(ws, C, D, start, end, dlen, np.arange(e - s))
        bad |= d > dlen
        counts[s:e] = np.where(bad, -1, d)
        if bad.any():  # rare: walk the valid pages again, on their own, for their runs only
            first_bad = int(np.argmax(bad))
            good = np.flatnonzero(~bad) if report else np.arange(first_bad)
            nrun = _decode_chunk(ws, C, D, start[good], end[good], dlen, good)[2] if good.size else 0
            if not report:
                _apply(ws, pages2d, flat, s, nrun)
                return counts, s + first_bad
        _apply(ws, pages2d, flat, s, nrun)
        s = e
    return counts, -1
