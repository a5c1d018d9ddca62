"""Writing RAM images as sparse files: only the pages holding a non-zero byte reach the file.

A migrated guest is mostly zero pages (a 1 GiB guest that used 300 MiB), and writing the
zeros costs as much as writing data. :func:`write_sparse` finds the non-zero pages with
numpy (one 8-byte word per page first, the whole page only where that word is zero),
writes each run of them with ``os.pwrite`` at its offset and sets the file size with
``ftruncate``: what was not written reads as zeros, so the file is byte-identical to the
dense image on every filesystem (those without holes store the zeros themselves).
A target that cannot seek (a pipe, a character device) is written densely, in order.

    >>> import os, tempfile
    >>> import numpy as np
    >>> ram = np.zeros(4 * 4096, np.uint8)
    >>> ram[4096 + 100] = 7                      # one non-zero page out of four
    >>> path = os.path.join(tempfile.mkdtemp(), "pc.ram.bin")
    >>> w = write_sparse(path, ram)
    >>> w.size, w.data_bytes, w.runs, w.sparse
    (16384, 4096, 1, True)
    >>> open(path, "rb").read() == ram.tobytes()
    True
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ramlab.errors import RamlabError

PAGE_SIZE = 4096
# Zero gaps of at most this many pages between two non-zero runs are written as zeros:
# one pwrite call costs about as much as writing a page or two (measured on ext4).
MERGE_GAP_PAGES = 1
_SCAN_CHUNK_PAGES = 4096  # pages gathered at a time for the whole-page check (16 MiB at 4 KiB)
_MAX_IO = 1 << 30  # bytes per write call (Linux moves at most 0x7ffff000 per call anyway)


@dataclass(frozen=True)
class SparseWrite:
    """What :func:`write_sparse` did: file ``size``, ``data_bytes`` written in ``runs`` calls.

    ``sparse`` is False when the target could not seek and got every byte, zeros included.
    """

    path: Path
    size: int
    data_bytes: int
    runs: int
    sparse: bool


def nonzero_pages(pages: np.ndarray, candidates: np.ndarray | None = None) -> np.ndarray:
    """Indices (ascending) of the rows of ``pages`` (``[n, page_size]`` uint8) with a non-zero byte.

    ``candidates``: a bool mask of the rows that may be non-zero (the others are known to be
    zero and are not read), e.g. the pages a loader wrote.

    >>> p = np.zeros((3, 16), np.uint8); p[2, 15] = 1
    >>> nonzero_pages(p).tolist(), nonzero_pages(p, np.array([True, True, False])).tolist()
    ([2], [])
    """
    if pages.ndim != 2 or pages.dtype != np.uint8:
        raise RamlabError(f"nonzero_pages: expected a 2-D uint8 array, found {pages.ndim}-D {pages.dtype}")
    n, width = pages.shape
    if candidates is None:
        idx = np.arange(n)
    else:
        mask = np.asarray(candidates)
        if mask.dtype != np.bool_ or mask.shape != (n,):
            raise RamlabError(f"nonzero_pages: candidates must be a bool mask of {n} pages, "
                              f"found {mask.dtype} {mask.shape}")
        idx = np.flatnonzero(mask)
    if idx.size == 0 or width == 0:
        return idx[:0]
    # The first word of a page that holds data is rarely zero: one gather settles most pages.
    word = 8 if width % 8 == 0 else 1
    rows = pages.view(np.uint64) if word == 8 else pages
    lead = rows[idx, 0] != 0
    undecided = idx[~lead]
    found = np.zeros(n, dtype=bool)
    found[idx[lead]] = True
    # The rest page by page, a window at a time: a slice where most of the window is undecided
    # (no copy), a gather of the undecided rows otherwise.
    bounds = np.searchsorted(undecided, np.arange(0, n + _SCAN_CHUNK_PAGES, _SCAN_CHUNK_PAGES))
    for w in range(bounds.size - 1):
        part = undecided[bounds[w] : bounds[w + 1]]
        if part.size == 0:
            continue
        lo = w * _SCAN_CHUNK_PAGES
        hi = min(n, lo + _SCAN_CHUNK_PAGES)
        hit = rows[lo:hi].any(axis=1)[part - lo] if 2 * part.size >= hi - lo else rows[part].any(axis=1)
        found[part[hit]] = True
    return np.flatnonzero(found)


def page_runs(indices: np.ndarray, merge_gap: int = MERGE_GAP_PAGES) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, ends)`` of the runs of consecutive page indices; gaps of <= ``merge_gap`` pages join.

    >>> [r.tolist() for r in page_runs(np.array([0, 1, 2, 5, 9]), merge_gap=2)]
    [[0, 9], [6, 10]]
    >>> [r.tolist() for r in page_runs(np.array([0, 1, 2, 5, 9]), merge_gap=0)]
    [[0, 5, 9], [3, 6, 10]]
    """
    if indices.size == 0:
        return indices[:0], indices[:0]
    breaks = np.flatnonzero(np.diff(indices) > merge_gap + 1)
    starts = indices[np.concatenate(([0], breaks + 1))]
    ends = indices[np.concatenate((breaks, [indices.size - 1]))] + 1
    return starts, ends


def write_sparse(
    path: str | os.PathLike[str],
    data: np.ndarray,
    *,
    page_size: int = PAGE_SIZE,
    may_be_nonzero: np.ndarray | None = None,
    merge_gap: int = MERGE_GAP_PAGES,
) -> SparseWrite:
    """Write ``data`` (a C-contiguous uint8 array: a RAM block) to ``path``, holes for zero pages.

    The file is created or truncated first, so nothing of an older file survives in a hole.
    ``may_be_nonzero``: a bool mask per page of pages that may hold data (others are not
    read: the loader knows they are zero). Raises :class:`~ramlab.errors.RamlabError` if the
    file cannot be written.
    """
    if page_size <= 0:
        raise RamlabError(f"write_sparse: page_size must be positive, found {page_size}")
    flat = np.asarray(data)
    if flat.dtype != np.uint8 or not flat.flags.c_contiguous:
        raise RamlabError(f"write_sparse: expected a C-contiguous uint8 array, found {flat.dtype}"
                          f"{'' if flat.flags.c_contiguous else ' (not contiguous)'}")
    flat = flat.reshape(-1)
    size = flat.size
    n_full = size // page_size
    candidates = None
    if may_be_nonzero is not None:
        mask = np.asarray(may_be_nonzero)
        if mask.dtype != np.bool_ or mask.ndim != 1 or mask.size < n_full:
            raise RamlabError(f"write_sparse: may_be_nonzero must be a bool mask of {n_full} pages, "
                              f"found {mask.dtype} {mask.shape}")
        candidates = mask[:n_full]
    pages = flat[: n_full * page_size].reshape(n_full, page_size)
    starts, ends = page_runs(nonzero_pages(pages, candidates), merge_gap)
    spans = [(int(s) * page_size, int(e) * page_size) for s, e in zip(starts, ends)]
    tail = flat[n_full * page_size :]
    if tail.size and tail.any():
        spans.append((n_full * page_size, size))
    mv = memoryview(flat)
    target = Path(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                _write_all(fd, mv, 0, size, seek=False)
                return SparseWrite(target, size, size, 1, False)
            for lo, hi in spans:
                _write_all(fd, mv, lo, hi, seek=True)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    except OSError as exc:
        raise RamlabError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return SparseWrite(target, size, sum(hi - lo for lo, hi in spans), len(spans), True)


def _write_all(fd: int, mv: memoryview, lo: int, hi: int, *, seek: bool) -> None:
    """Bytes ``lo:hi`` of ``mv`` to file offset ``lo`` (``seek``) or the current position."""
    while lo < hi:
        chunk = mv[lo : min(hi, lo + _MAX_IO)]
        n = os.pwrite(fd, chunk, lo) if seek else os.write(fd, chunk)
        if n <= 0:
            raise OSError(0, f"write returned {n} at offset {lo}")
        lo += n
