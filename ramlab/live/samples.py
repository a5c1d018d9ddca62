"""QEMU's ``query-migrate`` replies as flat samples: what a live view plots and ``ramlab watch`` prints.

A sample is one reply at one moment, flattened to QEMU's names joined with dots (``ram.remaining``,
``xbzrle-cache.pages``) with ``t`` (seconds since ``migrate``); fields QEMU did not report are left
out. The capture's own actions are samples too, with an ``"event"`` (and its ``"arguments"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["qmp_sample", "SAMPLE_KEYS"]

#: what a live sample keeps of ``query-migrate`` (QEMU's names; nested keys joined with '.')
SAMPLE_KEYS = (
    "status", "total-time", "expected-downtime", "downtime", "setup-time", "cpu-throttle-percentage",
    "ram.dirty-sync-count", "ram.remaining", "ram.transferred", "ram.total", "ram.dirty-pages-rate",
    "ram.mbps", "ram.normal", "ram.duplicate", "ram.page-size", "ram.postcopy-requests",
    "ram.multifd-bytes", "ram.precopy-bytes", "ram.postcopy-bytes",
    "xbzrle-cache.pages", "xbzrle-cache.bytes", "xbzrle-cache.cache-miss", "xbzrle-cache.overflow",
    "xbzrle-cache.cache-size", "compression.pages", "compression.busy", "compression.compressed-size",
)


def qmp_sample(info: Mapping[str, Any], t: float) -> dict[str, Any]:
    """The flat sample of one ``query-migrate`` reply at ``t`` seconds (absent fields left out).

    >>> qmp_sample({"status": "active", "ram": {"remaining": 4096, "mbps": 8.5}}, 0.25)
    {'t': 0.25, 'status': 'active', 'ram.remaining': 4096, 'ram.mbps': 8.5}
    """
    out: dict[str, Any] = {"t": round(float(t), 4)}
    for key in SAMPLE_KEYS:
        head, _, tail = key.partition(".")
        value = info.get(head)
        if tail:
            value = value.get(tail) if isinstance(value, Mapping) else None
        if value is not None:
            out[key] = value
    return out
