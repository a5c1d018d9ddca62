"""The data model between producers (stream decoder, simulator) and views: :class:`Trace`.

A :class:`Trace` says, for every pass of a migration and every target page of guest RAM,
how the page was sent (its :class:`PageClass`) and how many bytes its record took on the
wire.  The global page axis is the RAM blocks concatenated in ``MEM_SIZE`` order; block
``b`` starts at global page ``b.offset``.

    >>> import numpy as np
    >>> blocks = (BlockInfo("pc.ram", 8 * 4096, 4096, 0), BlockInfo("vga.vram", 4 * 4096, 4096, 8))
    >>> t = Trace.allocate(blocks, n_passes=2, source="simulation")
    >>> t.classes[0, :] = PageClass.ZERO
    >>> t.wire_bytes[0, :] = 9
    >>> t.classes[1, 9] = PageClass.XBZRLE
    >>> t.n_passes, t.n_pages
    (2, 12)
    >>> t.block_of(9)
    (BlockInfo(name='vga.vram', length=16384, page_size=4096, offset=8), 1)
    >>> t.class_counts()[:, [PageClass.NOT_SENT, PageClass.ZERO, PageClass.XBZRLE]].tolist()
    [[0, 12, 0], [11, 0, 1]]
    >>> int(t.bytes_per_pass()[0])
    108
"""

from __future__ import annotations

import dataclasses
import enum
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ramlab.errors import TraceError

__all__ = [
    "PageClass",
    "N_CLASSES",
    "CLASS_NAMES",
    "PASS_KINDS",
    "BlockInfo",
    "Trace",
    "synthetic_trace",
    "class_counts",
]


class PageClass(enum.IntEnum):
    """How one target page was handled in one pass (uint8 codes stored in ``Trace.classes``).

    ``POSTCOPY``: sent after the switch-over by the background scan; ``REQUESTED``: sent
    because the destination asked for it (page fault on the destination).

    >>> PageClass(3).name, int(PageClass.ZERO)
    ('XBZRLE', 1)
    """

    NOT_SENT = 0
    ZERO = 1
    NORMAL = 2
    XBZRLE = 3
    XBZRLE_UNCHANGED = 4
    XBZRLE_OVERFLOW = 5
    COMPRESSED = 6
    DISCARDED = 7
    REQUESTED = 8
    POSTCOPY = 9


N_CLASSES = len(PageClass)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in PageClass)
#: pass kinds, in the order of their uint8 codes when ``pass_kind`` is an array
PASS_KINDS: tuple[str, ...] = ("precopy", "bulk", "complete", "postcopy", "merged")
SOURCES = ("capture", "simulation")

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BlockInfo:
    """One RAM block: ``length`` in bytes, host ``page_size`` in bytes, and ``offset`` = index
    of its first target page on the global page axis.

    >>> BlockInfo("pc.ram", 1 << 20, 4096, 0).n_pages()
    256
    """

    name: str
    length: int
    page_size: int
    offset: int

    def n_pages(self, target_page_size: int = 4096) -> int:
        """Number of target pages of the block (a partial last page counts as one)."""
        return -(-self.length // target_page_size)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (bytes, bytearray)):
        return obj.hex()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return repr(obj)


def class_counts(classes: np.ndarray) -> np.ndarray:
    """``int64 [n_passes, N_CLASSES]`` from ``uint8 [n_passes, n_pages]`` class codes: one
    ``np.bincount`` per pass (no temporary as large as the classes themselves).

    >>> class_counts(np.array([[0, 1, 1], [2, 2, 2]], np.uint8))[:, :3].tolist()
    [[1, 2, 0], [0, 0, 3]]
    """
    out = np.zeros((classes.shape[0], N_CLASSES), np.int64)
    for p, row in enumerate(classes):
        out[p] = np.bincount(row, minlength=N_CLASSES)[:N_CLASSES]
    return out


@dataclass
class Trace:
    """Per-pass, per-page record of a migration (see the module docstring for an example).

    Fields:
        blocks: RAM blocks in ``MEM_SIZE`` order; the global page axis is the blocks concatenated.
        target_page_size: bytes per target page (4096).
        classes: ``uint8 [n_passes, n_pages]`` :class:`PageClass` codes (``NOT_SENT`` if not sent).
        wire_bytes: ``uint32 [n_passes, n_pages]`` bytes of the page's record in the pass (0 if not sent).
        dirty: ``bool [n_passes, n_pages]`` pages dirty at the start of the pass, or ``None`` (decoder).
        counters: per-pass arrays under QEMU's names (``'duplicate'``, ``'normal'``, ``'xbzrle_pages'``,
            ``'xbzrle_bytes'``, ``'xbzrle_cache_miss'``, ``'xbzrle_overflow'``, ``'compressed'``,
            ``'transferred'``, ``'dirty_sync_count'``, ``'remaining'`` (pages dirty after the pass),
            ``'discarded'``, ``'requested'``, ...); producers fill what they know.
        pass_kind: per pass, ``'precopy'|'bulk'|'complete'|'postcopy'``: a ``list[str]`` or a uint8
            array of indices into :data:`PASS_KINDS`.  :attr:`pass_kinds` always gives strings.
        source: ``'capture'`` or ``'simulation'``.
        meta: name, qemu version, capabilities, ``bandwidth`` (bytes/s), ``downtime_limit`` (s), ...
        events: ``{'pass': i, 'kind': 'discard'|'request'|'switchover'|'error', ...}`` dicts.
        page_bytes: ``(pass, global_page) -> (content before the pass, content after the pass)``,
            uint8 arrays or ``None`` when unknown; not saved by :meth:`save`.
        error: decode error message if the stream was damaged (the trace holds what came before).
    """

    blocks: tuple[BlockInfo, ...]
    target_page_size: int
    classes: np.ndarray
    wire_bytes: np.ndarray
    dirty: np.ndarray | None
    counters: dict[str, np.ndarray]
    pass_kind: np.ndarray | list[str]
    source: str
    meta: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    page_bytes: Callable[[int, int], tuple[np.ndarray | None, np.ndarray | None]] | None = None
    error: str | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def allocate(
        cls,
        blocks: Sequence[BlockInfo],
        n_passes: int,
        *,
        source: str,
        target_page_size: int = 4096,
        with_dirty: bool = False,
        pass_kind: Sequence[str] | None = None,
        meta: dict | None = None,
    ) -> Trace:
        """A trace with all pages ``NOT_SENT`` and zero bytes, for producers to fill in.

        >>> t = Trace.allocate([BlockInfo("ram", 4 * 4096, 4096, 0)], 3, source="simulation")
        >>> t.classes.shape, t.pass_kinds
        ((3, 4), ['precopy', 'precopy', 'precopy'])
        """
        blocks = tuple(blocks)
        n_pages = sum(b.n_pages(target_page_size) for b in blocks)
        return cls(
            blocks=blocks,
            target_page_size=target_page_size,
            classes=np.zeros((n_passes, n_pages), np.uint8),
            wire_bytes=np.zeros((n_passes, n_pages), np.uint32),
            dirty=np.zeros((n_passes, n_pages), bool) if with_dirty else None,
            counters={},
            pass_kind=list(pass_kind) if pass_kind is not None else ["precopy"] * n_passes,
            source=source,
            meta=dict(meta or {}),
            events=[],
        )

    @classmethod
    def from_classes(
        cls, classes: np.ndarray, *, target_page_size: int = 4096, block_name: str = "ram"
    ) -> Trace:
        """Wrap a bare class array (``[n_pages]`` or ``[n_passes, n_pages]``) as a one-block trace.

        >>> Trace.from_classes(np.array([1, 2, 2], np.uint8)).n_pages
        3
        """
        c = np.asarray(classes, dtype=np.uint8)
        if c.ndim == 1:
            c = c[None, :]
        if c.ndim != 2:
            raise ValueError(f"classes must be 1-D or 2-D, got shape {c.shape}")
        n_passes, n_pages = c.shape
        blocks = (BlockInfo(block_name, n_pages * target_page_size, target_page_size, 0),)
        return cls(
            blocks=blocks,
            target_page_size=target_page_size,
            classes=c,
            wire_bytes=np.zeros(c.shape, np.uint32),
            dirty=None,
            counters={},
            pass_kind=["precopy"] * n_passes,
            source="simulation",
            meta={"name": "class array"},
        )

    # ------------------------------------------------------------------ shape
    @property
    def n_passes(self) -> int:
        """Number of passes (rows of :attr:`classes`)."""
        return int(self.classes.shape[0])

    @property
    def n_pages(self) -> int:
        """Number of target pages on the global page axis."""
        return int(self.classes.shape[1])

    @property
    def pass_kinds(self) -> list[str]:
        """``pass_kind`` as a list of strings whatever form it is stored in."""
        pk = self.pass_kind
        if isinstance(pk, np.ndarray) and pk.dtype.kind in "ui":
            return [PASS_KINDS[int(k)] for k in pk]
        return [str(k) for k in pk]

    def block_starts(self) -> np.ndarray:
        """``int64 [n_blocks]`` global index of each block's first page."""
        return np.array([b.offset for b in self.blocks], dtype=np.int64)

    def block_of(self, global_page: int) -> tuple[BlockInfo, int]:
        """``(block, page index inside the block)`` of a global page index.

        >>> t = Trace.from_classes(np.zeros(5, np.uint8))
        >>> t.block_of(4)[1]
        4
        """
        g = int(global_page)
        if not 0 <= g < self.n_pages:
            raise IndexError(f"page {g} outside 0..{self.n_pages - 1}")
        i = int(np.searchsorted(self.block_starts(), g, side="right")) - 1
        b = self.blocks[i]
        return b, g - b.offset

    def page_index(self, block_name: str, byte_offset: int) -> int:
        """Global page index of ``byte_offset`` inside the block called ``block_name``.

        >>> Trace.from_classes(np.zeros(5, np.uint8)).page_index("ram", 8192)
        2
        """
        for b in self.blocks:
            if b.name == block_name:
                if not 0 <= byte_offset < b.length:
                    raise IndexError(f"offset {byte_offset:#x} outside block {block_name!r}")
                return b.offset + byte_offset // self.target_page_size
        raise KeyError(f"no block {block_name!r}")

    # ------------------------------------------------------------------ reductions
    def class_counts(self) -> np.ndarray:
        """``int64 [n_passes, N_CLASSES]``: how many pages of each class each pass has."""
        return class_counts(self.classes)

    def bytes_per_pass(self) -> np.ndarray:
        """``uint64 [n_passes]``: sum of the page records' wire bytes in each pass."""
        return self.wire_bytes.sum(axis=1, dtype=np.uint64)

    def events_of_pass(self, pass_index: int) -> list[dict]:
        """The events whose ``'pass'`` is ``pass_index``."""
        return [e for e in self.events if e.get("pass") == pass_index]

    # ------------------------------------------------------------------ checks
    def validate(self) -> Trace:
        """Check shapes, dtypes and consistency; raise :class:`~ramlab.errors.TraceError` on the first problem.

        Returns ``self`` so it can be chained.

        >>> t = Trace.from_classes(np.zeros((2, 3), np.uint8))
        >>> t.wire_bytes = np.zeros((2, 4), np.uint32)
        >>> t.validate()
        Traceback (most recent call last):
        ...
        ramlab.errors.TraceError: wire_bytes has shape (2, 4), expected (2, 3)
        """

        def check(name: str, arr: Any, dtype: Any, shape: tuple[int, ...]) -> None:
            if not isinstance(arr, np.ndarray):
                raise TraceError(f"{name} must be a numpy array, got {type(arr).__name__}")
            if arr.dtype != np.dtype(dtype):
                raise TraceError(f"{name} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
            if arr.shape != shape:
                raise TraceError(f"{name} has shape {arr.shape}, expected {shape}")

        if not isinstance(self.classes, np.ndarray) or self.classes.ndim != 2:
            raise TraceError("classes must be a 2-D numpy array [n_passes, n_pages]")
        shape = self.classes.shape
        check("classes", self.classes, np.uint8, shape)
        check("wire_bytes", self.wire_bytes, np.uint32, shape)
        if self.dirty is not None:
            check("dirty", self.dirty, np.bool_, shape)
        if shape[1] and shape[0] and int(self.classes.max()) >= N_CLASSES:
            raise TraceError(f"classes holds code {int(self.classes.max())} >= {N_CLASSES}")
        if self.target_page_size <= 0:
            raise TraceError(f"target_page_size must be > 0, got {self.target_page_size}")
        expect = 0
        for b in self.blocks:
            if not isinstance(b, BlockInfo):
                raise TraceError(f"blocks must hold BlockInfo, got {type(b).__name__}")
            if b.offset != expect:
                raise TraceError(f"block {b.name!r} starts at page {b.offset}, expected {expect}")
            if b.length < 0 or b.page_size <= 0:
                raise TraceError(f"block {b.name!r} has bad length/page_size")
            expect += b.n_pages(self.target_page_size)
        if expect != shape[1]:
            raise TraceError(f"blocks cover {expect} pages but classes has {shape[1]}")
        for name, arr in self.counters.items():
            a = np.asarray(arr)
            if a.shape != (shape[0],):
                raise TraceError(f"counter {name!r} has shape {a.shape}, expected ({shape[0]},)")
        pk = self.pass_kind
        if len(pk) != shape[0]:
            raise TraceError(f"pass_kind has {len(pk)} entries, expected {shape[0]}")
        if isinstance(pk, np.ndarray) and pk.dtype.kind in "ui":
            if len(pk) and int(pk.max()) >= len(PASS_KINDS):
                raise TraceError(f"pass_kind code {int(pk.max())} unknown")
        else:
            bad = sorted({str(k) for k in pk} - set(PASS_KINDS))
            if bad:
                raise TraceError(f"unknown pass kinds {bad}; expected {PASS_KINDS}")
        if self.source not in SOURCES:
            raise TraceError(f"source must be one of {SOURCES}, got {self.source!r}")
        for e in self.events:
            if not isinstance(e, dict) or "kind" not in e:
                raise TraceError(f"event {e!r} must be a dict with a 'kind'")
        return self

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike | io.IOBase) -> None:
        """Write the trace as a compressed ``.npz`` (``page_bytes`` is not saved).

        >>> import tempfile, pathlib
        >>> t = synthetic_trace(n_pages=256, n_passes=3)
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.npz"
        >>> t.save(p); Trace.load(p).n_pages
        256
        """
        header = {
            "format": "ramlab.trace",
            "version": _FORMAT_VERSION,
            "blocks": [dataclasses.asdict(b) for b in self.blocks],
            "target_page_size": int(self.target_page_size),
            "source": self.source,
            "meta": self.meta,
            "events": self.events,
            "error": self.error,
            "counters": sorted(self.counters),
            "pass_kind_form": "list" if not isinstance(self.pass_kind, np.ndarray) else "array",
            "has_dirty": self.dirty is not None,
        }
        arrays: dict[str, np.ndarray] = {
            "header": np.array(json.dumps(header, default=_json_default)),
            "classes": self.classes,
            "wire_bytes": self.wire_bytes,
        }
        pk = self.pass_kind
        if isinstance(pk, np.ndarray):
            arrays["pass_kind"] = pk
        else:
            arrays["pass_kind"] = np.array([str(k) for k in pk], dtype="U16")
        if self.dirty is not None:
            arrays["dirty"] = self.dirty
        for i, name in enumerate(sorted(self.counters)):
            arrays[f"counter_{i}"] = np.asarray(self.counters[name])
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike | io.IOBase) -> Trace:
        """Read a trace written by :meth:`save` (``page_bytes`` is ``None``)."""
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"][()]))
            if header.get("format") != "ramlab.trace":
                raise ValueError("not a ramlab trace file")
            if header.get("version", 0) > _FORMAT_VERSION:
                raise ValueError(f"trace format version {header['version']} is newer than this ramlab")
            pk = z["pass_kind"]
            pass_kind: np.ndarray | list[str] = pk
            if header["pass_kind_form"] == "list":
                pass_kind = [str(k) for k in pk]
            counters = {name: z[f"counter_{i}"] for i, name in enumerate(header["counters"])}
            return cls(
                blocks=tuple(BlockInfo(**b) for b in header["blocks"]),
                target_page_size=header["target_page_size"],
                classes=z["classes"],
                wire_bytes=z["wire_bytes"],
                dirty=z["dirty"] if header["has_dirty"] else None,
                counters=counters,
                pass_kind=pass_kind,
                source=header["source"],
                meta=header["meta"],
                events=header["events"],
                page_bytes=None,
                error=header["error"],
            )

    # ------------------------------------------------------------------ display
    def summary(self) -> dict[str, Any]:
        """A small dict describing the trace (used by :meth:`_repr_html_`)."""
        return {
            "name": self.meta.get("name", "?"),
            "source": self.source,
            "passes": self.n_passes,
            "pages": self.n_pages,
            "RAM": f"{self.n_pages * self.target_page_size / 2**20:.1f} MiB",
            "blocks": ", ".join(f"{b.name} ({b.length / 2**20:.1f} MiB)" for b in self.blocks),
            "bytes on the wire": int(self.bytes_per_pass().sum()),
            "events": len(self.events),
            "error": self.error,
        }

    def _repr_html_(self) -> str:
        e = html.escape
        rows = "".join(
            f"<tr><th style='text-align:left'>{e(str(k))}</th>"
            f"<td style='text-align:left'>{e(str(v))}</td></tr>"
            for k, v in self.summary().items()
            if v is not None
        )
        counts = self.class_counts()
        kinds = self.pass_kinds
        nbytes = self.bytes_per_pass()
        used = [k for k in range(N_CLASSES) if counts[:, k].any()]
        head = "".join(f"<th>{e(CLASS_NAMES[k])}</th>" for k in used)
        body = []
        limit = 40
        for p in range(min(self.n_passes, limit)):
            cells = "".join(f"<td>{counts[p, k]}</td>" for k in used)
            body.append(f"<tr><td>{p}</td><td>{e(kinds[p])}</td>{cells}<td>{int(nbytes[p])}</td></tr>")
        if self.n_passes > limit:
            more = self.n_passes - limit
            body.append(f"<tr><td colspan='{len(used) + 3}'>... {more} more passes</td></tr>")
        return (
            f"<div><b>ramlab Trace</b><table>{rows}</table>"
            f"<table><tr><th>pass</th><th>kind</th>{head}<th>wire bytes</th></tr>"
            f"{''.join(body)}</table></div>"
        )

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.meta.get('name', '?')!r}, source={self.source!r}, "
            f"n_passes={self.n_passes}, n_pages={self.n_pages}, blocks={[b.name for b in self.blocks]}"
            + (f", error={self.error!r}" if self.error else "")
            + ")"
        )


# ---------------------------------------------------------------------- synthetic data
_HDR = 8  # be64 addr|flags header of a page record (with RAM_SAVE_FLAG_CONTINUE)


def synthetic_trace(
    n_pages: int = 16384,
    n_passes: int = 8,
    seed: int = 0,
    *,
    bandwidth: float = 32 * 2**20,
    downtime_limit: float = 0.3,
    with_page_bytes: bool = True,
) -> Trace:
    """A SYNTHETIC trace (random, not QEMU data) to test and benchmark the views.

    Pass 0 is the bulk stage (zero pages in large runs, the rest NORMAL); later passes
    send a shrinking, clustered dirty set as XBZRLE / unchanged / overflow / NORMAL; the
    last pass is the ``complete`` stage.  ``meta['synthetic']`` is ``True`` and the name
    says so.  ``page_bytes`` (if asked) fabricates deterministic page contents for delta views.

    >>> t = synthetic_trace(n_pages=1024, n_passes=4)
    >>> t.meta["synthetic"], t.pass_kinds
    (True, ['bulk', 'precopy', 'precopy', 'complete'])
    """
    if n_pages < 2 or n_passes < 1:
        raise ValueError("synthetic_trace needs n_pages >= 2 and n_passes >= 1")
    rng = np.random.default_rng(seed)
    tps = 4096
    n_small = min(max(n_pages // 16, 1), 4096)
    n_main = n_pages - n_small
    blocks = (
        BlockInfo("pc.ram", n_main * tps, tps, 0),
        BlockInfo("vga.vram", n_small * tps, tps, n_main),
    )
    kinds = ["bulk"] + ["precopy"] * max(n_passes - 2, 0) + (["complete"] if n_passes > 1 else [])
    t = Trace.allocate(
        blocks,
        n_passes,
        source="simulation",
        with_dirty=True,
        pass_kind=kinds,
        meta={
            "name": f"SYNTHETIC test trace (seed {seed}, not QEMU data)",
            "synthetic": True,
            "bandwidth": float(bandwidth),
            "downtime_limit": float(downtime_limit),
            "capabilities": ["xbzrle"],
        },
    )
    # zero-ness of each page: zero runs of random length
    n_runs = max(n_pages // 64, 1)
    cuts = np.sort(rng.choice(np.arange(1, n_pages), size=min(n_runs, n_pages - 1), replace=False))
    run_id = np.zeros(n_pages, np.int64)
    run_id[cuts] = 1
    run_id = np.cumsum(run_id)
    is_zero = (rng.random(run_id[-1] + 1) < 0.6)[run_id]
    # a hot working set: clustered regions with a dirtying probability that decays per pass
    hot = np.zeros(n_pages, np.float32)
    for _ in range(max(3, n_pages // 20000)):
        c = int(rng.integers(0, n_pages))
        w = int(rng.integers(max(n_pages // 200, 1), max(n_pages // 25, 2)))
        hot[c : c + w] = rng.uniform(0.2, 0.9)
    hot[n_main:] = np.maximum(hot[n_main:], 0.5)  # the framebuffer is busy

    t.dirty[0, :] = True
    t.classes[0] = np.where(is_zero, PageClass.ZERO, PageClass.NORMAL)
    cached = np.zeros(n_pages, bool)
    remaining = np.zeros(n_passes, np.int64)
    for p in range(1, n_passes):
        scale = 0.75 ** (p - 1)
        d = rng.random(n_pages) < hot * scale + 0.0005
        t.dirty[p] = d
        remaining[p - 1] = int(d.sum())
        r = rng.random(n_pages)
        zero_now = is_zero & (r < 0.3)
        cls = np.full(n_pages, PageClass.NOT_SENT, np.uint8)
        cls[d & ~cached] = PageClass.NORMAL
        hit = d & cached
        cls[hit] = PageClass.XBZRLE
        cls[hit & (r < 0.1)] = PageClass.XBZRLE_UNCHANGED
        cls[hit & (r > 0.93)] = PageClass.XBZRLE_OVERFLOW
        cls[d & zero_now] = PageClass.ZERO
        cached |= d
        t.classes[p] = cls
    remaining[n_passes - 1] = 0
    sizes = np.zeros(N_CLASSES, np.uint32)
    sizes[PageClass.ZERO] = _HDR + 1
    sizes[PageClass.NORMAL] = _HDR + tps
    sizes[PageClass.XBZRLE_OVERFLOW] = _HDR + tps
    t.wire_bytes[:] = sizes[t.classes]
    xb = t.classes == PageClass.XBZRLE
    t.wire_bytes[xb] = (_HDR + 3 + rng.integers(16, 2048, size=int(xb.sum()))).astype(np.uint32)
    # the first record of each block carries the block name (len byte + name)
    for b in blocks:
        sent = t.wire_bytes[:, b.offset : b.offset + b.n_pages(tps)] > 0
        first = np.argmax(sent, axis=1)
        has = sent.any(axis=1)
        rows = np.nonzero(has)[0]
        t.wire_bytes[rows, b.offset + first[has]] += 1 + len(b.name)
    counts = t.class_counts()
    t.counters = {
        "duplicate": counts[:, PageClass.ZERO],
        "normal": counts[:, PageClass.NORMAL] + counts[:, PageClass.XBZRLE_OVERFLOW],
        "xbzrle_pages": counts[:, PageClass.XBZRLE],
        "xbzrle_bytes": np.where(xb, t.wire_bytes, 0).sum(axis=1, dtype=np.int64),
        "xbzrle_cache_miss": np.concatenate(
            [[0], (t.dirty[1:] & (t.classes[1:] == PageClass.NORMAL)).sum(1)]
        ),
        "xbzrle_overflow": counts[:, PageClass.XBZRLE_OVERFLOW],
        "transferred": t.bytes_per_pass().astype(np.int64),
        "dirty_sync_count": np.arange(1, n_passes + 1),
        "remaining": remaining,
    }
    if n_passes > 1:
        t.events.append({"pass": n_passes - 1, "kind": "switchover"})
    if with_page_bytes:
        t.page_bytes = _synthetic_page_bytes(seed, tps)
    return t


def _synthetic_page_bytes(seed: int, tps: int) -> Callable[[int, int], tuple[np.ndarray, np.ndarray]]:
    def page_bytes(pass_index: int, page: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([seed, page, pass_index])
        old = np.zeros(tps, np.uint8)
        # some structure: a few non-zero regions in the old page
        for _ in range(4):
            a = int(rng.integers(0, tps - 256))
            old[a : a + int(rng.integers(16, 256))] = rng.integers(0, 256, dtype=np.uint8)
        new = old.copy()
        for _ in range(int(rng.integers(1, 12))):
            a = int(rng.integers(0, tps - 64))
            n = int(rng.integers(1, 64))
            new[a : a + n] = rng.integers(0, 256, size=n, dtype=np.uint8)
        return old, new

    return page_bytes
