"""Pure-numpy data preparation for the views (no bokeh, no widgets): unit-testable model side.

Pages are laid out in rows like QEMU's debug dumps (:func:`page_grid`); a class map of a
pass is then reduced to at most the plot's pixel size with a **class histogram per output
pixel** (:func:`reduce_classes`), never a blind subsample.

Displayed-class rule (``rule="rarest"``, the default): a pixel shows, among the classes
*sent* in it (every class but ``NOT_SENT``), the one that is **rarest in the reference
counts** (by default the whole frame being reduced; the views pass the whole pass's counts
so colours are stable under zoom).  Ties go to the higher class code.  A pixel where nothing
was sent shows ``NOT_SENT``; a pixel holding no page at all (padding past the last page)
shows :data:`NO_PAGE`.  So one XBZRLE page among 10000 zero pages stays visible.
``rule="majority"`` shows the most frequent class of the pixel including ``NOT_SENT``
(ties: lower code).

    >>> import numpy as np
    >>> cls = np.full(10_000, 1, np.uint8); cls[1234] = 3       # 1 XBZRLE among zero pages
    >>> grid = page_grid(cls.size, 100)
    >>> dom, hist = reduce_classes(cls, grid, (1, 1))
    >>> int(dom[0, 0]), hist[0, 0, [1, 3]].tolist()
    (3, [9999, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ramlab.trace import N_CLASSES, PageClass

__all__ = [
    "NO_PAGE",
    "GridShape",
    "page_grid",
    "class_grid",
    "reduce_factors",
    "reduce_classes",
    "dominant_class",
    "zoom_region",
    "Region",
    "changed_runs",
    "class_counts",
]

#: code of an output pixel covering no page at all (past the end of RAM)
NO_PAGE = N_CLASSES

GridShape = tuple[int, int]


def page_grid(n_pages: int, width: int | None = 128, *, aspect: float = 1.0) -> GridShape:
    """``(rows, cols)`` of a page grid, ``cols`` pages per row; page ``g`` is at ``divmod(g, cols)``.

    ``width=128`` is QEMU's debug-dump layout.  ``width=None`` adapts: the smallest power of
    two ``>= 128`` such that ``rows <= cols * aspect`` (``aspect`` = plot height / width), so
    1 M pages become a 1024 x 1024 square instead of a 8192-row strip.

    >>> page_grid(1000), page_grid(1 << 20, None), page_grid(300, None)
    ((8, 128), (1024, 1024), (3, 128))
    """
    if n_pages < 0:
        raise ValueError("n_pages must be >= 0")
    if width is None:
        width = 128
        while -(-n_pages // width) > width * aspect:
            width *= 2
    if width <= 0:
        raise ValueError("width must be > 0")
    return (max(-(-n_pages // width), 1), int(width))


def reduce_factors(grid_shape: GridShape, out_shape: tuple[int, int]) -> tuple[int, int]:
    """Integer ``(fy, fx)`` pages per output pixel so that the output fits ``out_shape``.

    The output has ``ceil(rows / fy) x ceil(cols / fx)`` pixels, never more than ``out_shape``.

    >>> reduce_factors((1024, 1024), (600, 600)), reduce_factors((8, 128), (600, 600))
    ((2, 2), (1, 1))
    """
    (r, c), (h, w) = grid_shape, out_shape
    if h <= 0 or w <= 0:
        raise ValueError(f"out_shape must be positive, got {out_shape}")
    return max(-(-r // h), 1), max(-(-c // w), 1)


def class_grid(classes_1d: np.ndarray, grid_shape: GridShape) -> np.ndarray:
    """The class array as a ``[rows, cols]`` grid padded with ``NO_PAGE`` (a view when exact): the image of
    a pass at one page a pixel.

    >>> class_grid(np.array([1, 2, 3], np.uint8), (2, 2)).tolist()
    [[1, 2], [3, 10]]
    """
    rows, cols = grid_shape
    c = np.asarray(classes_1d, dtype=np.uint8).ravel()
    if c.size > rows * cols:
        raise ValueError(f"{c.size} pages do not fit a {rows}x{cols} grid")
    if c.size == rows * cols:
        return c.reshape(rows, cols)
    g = np.full(rows * cols, NO_PAGE, np.uint8)
    g[: c.size] = c
    return g.reshape(rows, cols)


def _histogram(grid: np.ndarray, factors: tuple[int, int]) -> np.ndarray:
    """``uint32 [H, W, N_CLASSES]`` histogram of ``fy x fx`` tiles of ``grid`` (NO_PAGE not counted)."""
    fy, fx = factors
    r, c = grid.shape
    h, w = -(-r // fy), -(-c // fx)
    k1 = N_CLASSES + 1
    if fy == 1 and fx == 1:
        # full resolution: one-hot without a bincount
        hist = (grid[:, :, None] == np.arange(N_CLASSES, dtype=np.uint8)).astype(np.uint32)
        return hist
    if (h * fy, w * fx) != (r, c):
        padded = np.full((h * fy, w * fx), NO_PAGE, np.uint8)
        padded[:r, :c] = grid
        grid = padded
    tiles = grid.reshape(h, fy, w, fx)
    pix = (np.arange(h * w, dtype=np.int64) * k1).reshape(h, 1, w, 1)
    keys = tiles + pix  # broadcast -> int64 [h, fy, w, fx]
    counts = np.bincount(keys.ravel(), minlength=h * w * k1)
    return counts.reshape(h, w, k1)[:, :, :N_CLASSES].astype(np.uint32)


def dominant_class(
    hist: np.ndarray, *, rule: str = "rarest", reference_counts: np.ndarray | None = None
) -> np.ndarray:
    """Displayed class ``uint8 [H, W]`` of each pixel of a histogram (see the module docstring).

    >>> h = np.zeros((1, 2, 10), np.uint32); h[0, 0, [1, 2]] = [50, 5]; h[0, 1, 0] = 7
    >>> dominant_class(h).tolist(), dominant_class(h, rule="majority").tolist()
    ([[2, 0]], [[1, 0]])
    """
    if hist.shape[-1] != N_CLASSES:
        raise ValueError(f"histogram last axis must be {N_CLASSES}")
    present = hist > 0
    empty = ~present.any(axis=-1)
    if rule == "majority":
        dom = np.argmax(hist, axis=-1).astype(np.uint8)
    elif rule == "rarest":
        ref = hist.reshape(-1, N_CLASSES).sum(axis=0) if reference_counts is None else reference_counts
        ref = np.asarray(ref, dtype=np.int64)
        # priority: rarer class first, ties to the higher code; NOT_SENT lowest of all
        order = np.lexsort((-np.arange(N_CLASSES), ref))  # ascending count, then descending code
        priority = np.empty(N_CLASSES, np.int16)
        priority[order] = np.arange(N_CLASSES, 0, -1, dtype=np.int16)
        priority[PageClass.NOT_SENT] = 0
        score = np.where(present, priority, np.int16(-1))
        dom = np.argmax(score, axis=-1).astype(np.uint8)
    else:
        raise ValueError(f"unknown rule {rule!r}; use 'rarest' or 'majority'")
    dom[empty] = NO_PAGE
    return dom


def reduce_classes(
    classes_1d: np.ndarray,
    grid_shape: GridShape,
    out_shape: tuple[int, int],
    *,
    rule: str = "rarest",
    reference_counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reduce one pass's classes (laid out as ``grid_shape``) to at most ``out_shape`` pixels.

    Returns ``(dominant uint8 [H, W], histogram uint32 [H, W, N_CLASSES])`` with
    ``(H, W) = ceil(grid / reduce_factors(grid_shape, out_shape))`` <= ``out_shape``.
    Output pixel ``(i, j)`` covers grid rows ``i*fy .. i*fy+fy-1`` and columns ``j*fx ..``.

    >>> cls = np.arange(8, dtype=np.uint8) % 3
    >>> dom, hist = reduce_classes(cls, (2, 4), (1, 2), rule="majority")
    >>> dom.shape, hist.sum(axis=-1).tolist()
    ((1, 2), [[4, 4]])
    """
    grid = class_grid(classes_1d, grid_shape)
    factors = reduce_factors(grid_shape, out_shape)
    hist = _histogram(grid, factors)
    return dominant_class(hist, rule=rule, reference_counts=reference_counts), hist


@dataclass(frozen=True)
class Region:
    """A rectangle of the page grid (half-open rows ``r0:r1``, cols ``c0:c1``) and its reduction factors.

    ``x = c0, y = r0, dw = W * fx, dh = H * fy`` place the reduced image in page-grid coordinates.
    """

    r0: int
    r1: int
    c0: int
    c1: int
    fy: int
    fx: int

    @property
    def full_resolution(self) -> bool:
        """One page per pixel."""
        return self.fy == 1 and self.fx == 1


def zoom_region(
    classes_1d: np.ndarray,
    grid_shape: GridShape,
    rows: tuple[float, float],
    cols: tuple[float, float],
    out_shape: tuple[int, int],
    *,
    rule: str = "rarest",
    reference_counts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, Region]:
    """Re-render the grid rectangle ``rows x cols`` (float ranges, e.g. a plot's visible range).

    The rectangle is widened to whole pages and clipped to the grid.  When it fits in
    ``out_shape`` it is returned at full resolution (one pixel per page); otherwise reduced
    like :func:`reduce_classes`.  Returns ``(dominant, histogram, Region)``.

    >>> cls = np.zeros(1 << 16, np.uint8); cls[5 * 256 + 7] = 3
    >>> dom, hist, reg = zoom_region(cls, (256, 256), (4.5, 9.2), (0, 20), (100, 100))
    >>> reg, int(dom[5 - reg.r0, 7])
    (Region(r0=4, r1=10, c0=0, c1=20, fy=1, fx=1), 3)
    """
    n_rows, n_cols = grid_shape
    lo_r, hi_r = sorted(rows)
    lo_c, hi_c = sorted(cols)
    r0 = int(np.clip(np.floor(lo_r), 0, n_rows - 1))
    r1 = int(np.clip(np.ceil(hi_r), r0 + 1, n_rows))
    c0 = int(np.clip(np.floor(lo_c), 0, n_cols - 1))
    c1 = int(np.clip(np.ceil(hi_c), c0 + 1, n_cols))
    grid = class_grid(classes_1d, grid_shape)[r0:r1, c0:c1]
    fy, fx = reduce_factors(grid.shape, out_shape)
    hist = _histogram(np.ascontiguousarray(grid), (fy, fx))
    if reference_counts is None:
        valid = np.asarray(classes_1d, dtype=np.uint8).ravel()
        reference_counts = np.bincount(valid, minlength=N_CLASSES)[:N_CLASSES]
    dom = dominant_class(hist, rule=rule, reference_counts=reference_counts)
    return dom, hist, Region(r0, r1, c0, c1, fy, fx)


def changed_runs(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of equal / changed bytes, vectorised: ``(starts, lengths, changed bool)``.

    A numpy helper for the delta view's heat strip (the byte-exact encoder lives in
    ``ramlab.xbzrle``).

    >>> changed_runs(np.array([0, 0, 1, 1, 0], np.uint8), np.zeros(5, np.uint8))
    (array([0, 2, 4]), array([2, 2, 1]), array([False,  True, False]))
    """
    a = np.asarray(old, np.uint8).ravel()
    b = np.asarray(new, np.uint8).ravel()
    if a.shape != b.shape:
        raise ValueError("old and new must have the same length")
    if a.size == 0:
        e = np.zeros(0, np.int64)
        return e, e, np.zeros(0, bool)
    diff = a != b
    edges = np.flatnonzero(diff[1:] != diff[:-1]) + 1
    starts = np.concatenate([[0], edges]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [a.size]])).astype(np.int64)
    return starts, lengths, diff[starts]


def class_counts(classes: np.ndarray) -> np.ndarray:
    """``int64 [n_passes, N_CLASSES]`` pages of each class in each pass of ``classes [n_passes, n_pages]``.

    One ``bincount`` per pass on the uint8 codes (no ``[n_passes, n_pages]`` int64 temporary).

    >>> class_counts(np.array([[0, 1, 1], [3, 3, 0]], np.uint8))[:, :4].tolist()
    [[1, 2, 0, 0], [1, 0, 0, 2]]
    """
    c = np.asarray(classes, np.uint8)
    if c.ndim != 2:
        raise ValueError(f"classes must be [n_passes, n_pages], got shape {c.shape}")
    out = np.zeros((c.shape[0], N_CLASSES), np.int64)
    for p in range(c.shape[0]):
        out[p] = np.bincount(c[p], minlength=N_CLASSES)[:N_CLASSES]
    return out
