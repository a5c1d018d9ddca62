"""A capture folder as it crossed the wire: which connection is which file, and when each chunk came.

``ramlab capture`` records every connection through its recorder and logs each chunk that crossed
it in ``chunks.jsonl`` (connection, offset, length, seconds since ``migrate``). :func:`recorded_chunks`
turns a folder back into that sequence, so :func:`ramlab.live.replay` can feed the live decoder at the
recorded pace. Captures made before the log existed (``exec:cat`` precopy, early multifd) get their
times from ``meta.json``'s ``progress_samples`` (bytes transferred at each dirty sync), interpolated:
an approximation, said so in :attr:`CaptureLayout.timing`.

    >>> import ramlab
    >>> lay = capture_layout(ramlab.data_path("postcopy"))
    >>> lay.mode, sorted(lay.files), lay.timing
    ('postcopy', [('fwd', 0), ('ret', 0)], 'chunks.jsonl')
    >>> chunks = recorded_chunks(lay)
    >>> chunks[0][:2], all(a[0] <= b[0] for a, b in zip(chunks, chunks[1:]))
    ((0.001685, ('fwd', 0)), True)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ramlab.errors import RamlabError
from ramlab.io import read_stream
from ramlab.live.decoder import Key
from ramlab.live.samples import qmp_sample

__all__ = ["CaptureLayout", "capture_layout", "recorded_chunks", "recorded_samples", "CHUNK"]

#: bytes per replayed chunk when a capture has no chunk log (what a socket read gives)
CHUNK = 1 << 16


@dataclass
class CaptureLayout:
    """The connections of a capture folder. ``files``: connection -> stream file (``.zst`` ok);
    ``timing``: ``"chunks.jsonl"`` (recorded) or ``"progress_samples"`` (interpolated)."""

    folder: Path
    mode: str
    capabilities: tuple[str, ...]
    multifd_channels: int | None
    files: dict[Key, Path]
    meta: dict[str, Any] = field(default_factory=dict)
    timing: str = "chunks.jsonl"

    def data(self, key: Key) -> bytes | memoryview:
        """The bytes of one connection."""
        return read_stream(self.files[key])


def _pick(folder: Path, stem: str) -> Path | None:
    for suffix in (".bin", ".bin.zst"):
        if (folder / (stem + suffix)).exists():
            return folder / (stem + suffix)
    return None


def capture_layout(folder: str | Path) -> CaptureLayout:
    """Read a capture folder's connections and ``meta.json`` (see the module docstring)."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    caps = tuple(meta.get("capabilities") or ())
    files: dict[Key, Path] = {}
    if (p := _pick(folder, "stream")) is not None:
        mode = "precopy"
        files[("fwd", 0)] = p
    elif (p := _pick(folder, "fwd-0")) is not None:
        mode = "postcopy"
        files[("fwd", 0)] = p
        if (r := _pick(folder, "ret-0")) is not None:
            files[("ret", 0)] = r
    else:
        mode = "multifd"
        for q in folder.iterdir():
            m = re.fullmatch(r"channel-(\d+)\.bin(\.zst)?", q.name)
            if m:
                files[("fwd", int(m.group(1)))] = q
        if ("fwd", 0) not in files:
            raise RamlabError(f"{folder}: no stream.bin, fwd-0.bin or channel-0.bin (optionally .zst) found")
    channels = None
    if mode == "multifd":
        params = meta.get("qmp_set_parameters_src") or {}
        channels = int(params.get("multifd-channels") or len(files) - 1)
    has_log = (folder / "chunks.jsonl").exists() or (folder / "chunks.jsonl.zst").exists()
    return CaptureLayout(folder, mode, caps, channels, files, meta, "chunks.jsonl" if has_log else "progress_samples")


def _chunk_log(folder: Path) -> list[dict[str, Any]]:
    for name in ("chunks.jsonl", "chunks.jsonl.zst"):
        p = folder / name
        if p.exists():
            text = bytes(read_stream(p)).decode()
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    return []


def recorded_chunks(layout: CaptureLayout) -> list[tuple[float, Key, int, int]]:
    """``(t, connection, offset, length)`` of every chunk, in the order they crossed the wire."""
    sizes = {k: len(layout.data(k)) for k in layout.files}
    out: list[tuple[float, Key, int, int]] = []
    if layout.timing == "chunks.jsonl":
        end = dict.fromkeys(sizes, 0)
        t_end = 0.0
        for c in _chunk_log(layout.folder):
            key = (str(c["dir"]), int(c["conn"]))
            if key in sizes and c["offset"] == end[key] and c["offset"] + c["len"] <= sizes[key]:
                out.append((float(c["t"]), key, int(c["offset"]), int(c["len"])))
                end[key] += int(c["len"])
                t_end = max(t_end, float(c["t"]))
        for key, size in sizes.items():  # a log that stops short: the rest comes at its end
            if end[key] < size:
                out.append((t_end, key, end[key], size - end[key]))
    else:
        t_at = _time_of_fraction(layout.meta)
        for key, size in sizes.items():
            for off in range(0, size, CHUNK):
                n = min(CHUNK, size - off)
                out.append((float(t_at((off + n) / size)), key, off, n))
    out.sort(key=lambda c: c[0])  # stable: a connection's chunks stay in offset order
    return out


def _time_of_fraction(meta: dict[str, Any]):  # type: ignore[no-untyped-def]
    """t as a function of the fraction of the stream sent, from the samples' ``transferred``."""
    pts = [(float(s["t"]), float(s["transferred"])) for s in meta.get("progress_samples", [])
           if s.get("transferred") is not None and s.get("who") in (None, "src")]
    wall = float(meta.get("migrate_wall_s") or (pts[-1][0] if pts else 1.0))
    if not pts or pts[-1][1] <= 0:
        return lambda f: f * wall
    total = pts[-1][1]
    ts = np.array([0.0] + [t for t, _ in pts] + [wall])
    fs = np.array([0.0] + [b / total for _, b in pts] + [1.0])
    fs = np.maximum.accumulate(fs)
    return lambda f: float(np.interp(f, fs, ts))


_SAMPLE_KEYS = {"dirty-sync-count": "ram.dirty-sync-count", "transferred": "ram.transferred",
                "normal": "ram.normal", "duplicate": "ram.duplicate", "remaining": "ram.remaining",
                "xbzrle-pages": "xbzrle-cache.pages", "postcopy-requests": "ram.postcopy-requests",
                "dirty-pages-rate": "ram.dirty-pages-rate", "mbps": "ram.mbps",
                "expected-downtime": "expected-downtime"}


def recorded_samples(layout: CaptureLayout) -> list[dict[str, Any]]:
    """The source's ``query-migrate`` samples and the capture's actions of ``meta.json``, as live
    samples (:func:`ramlab.capture.control.qmp_sample` keys), in time order; the final
    ``query-migrate`` closes them."""
    meta = layout.meta
    out: list[dict[str, Any]] = []
    for s in meta.get("progress_samples", []):
        if s.get("who") == "dst":
            continue
        if "event" in s:
            e = dict(s)
            if e["event"] == "relaxed downtime-limit" and "arguments" not in e:
                e["arguments"] = {"downtime-limit": 10000}  # captures made before the argument was logged
            out.append(e)
            continue
        d: dict[str, Any] = {"t": s["t"], "status": s.get("status")}
        for k, v in s.items():
            if k in _SAMPLE_KEYS and v is not None:
                d[_SAMPLE_KEYS[k]] = v
        out.append(d)
    final = meta.get("query_migrate_final")
    if final:
        out.append(qmp_sample(final, float(meta.get("migrate_wall_s") or (out[-1]["t"] if out else 0.0))))
    out.sort(key=lambda s: s["t"])
    return out
