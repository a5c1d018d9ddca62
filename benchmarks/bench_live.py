"""What watching costs the migration: the same capture with and without the live view (issue 16: < 10 %).

Each scenario migrates the test guest ``--reps`` times without the live view (``ramlab capture``'s
:func:`~ramlab.capture.run.capture`: QEMU -> recorder -> files) and as many times with it
(:mod:`ramlab.live`: the same capture, plus the decode thread and a :class:`LiveMigration` view
following it at 10 updates/s, its figures computed as in a notebook), alternating the two. It prints
QEMU's own ``total-time`` (``query-migrate``) and the wall time from ``migrate`` to ``completed``
(median and range per mode), the difference of the medians, and how far behind the wire the live
decoding was (``decoded_at - t`` of the pass lines).

    python benchmarks/bench_live.py [--reps 7] [--scenario plain|xbzrle|fast]

Every scenario keeps the downtime limit at 1 ms for a number of dirty syncs (then 10 s), so each
run does the same work — a bulk pass and passes of the guest's working set: ``plain`` (16 MiB guest,
precopy, max-bandwidth 8 MiB/s, the bundled captures' rate, 12 syncs), ``xbzrle`` (the same with
XBZRLE, 40 syncs: its passes are short, and QEMU's XBZRLE encoding makes the run CPU-bound),
``fast`` (256 MiB guest, max-bandwidth 64 MiB/s, 12 syncs: 8 times the rate, so QEMU, the recorder
and the decoder compete for the CPU). QEMU 7.2 ends a migration whose first pass fits in its first
100 ms rate window at once, and counts time in such windows: a run's total time moves in steps of
about 100 ms, so compare the ranges, not only the medians. Timings on a shared 2-core machine are
noisy: repeat, and read the ranges.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SCENARIOS: dict[str, dict[str, Any]] = {
    "plain": dict(ram_mib=16, max_bandwidth=8 << 20, relax_after_syncs=12),
    "xbzrle": dict(ram_mib=16, max_bandwidth=8 << 20, relax_after_syncs=40, xbzrle_cache_size=4 << 20),
    "fast": dict(ram_mib=256, max_bandwidth=64 << 20, relax_after_syncs=12),
}
COMMON = dict(replay=False, zstd_level=1, timeout=120.0)


def once(live: bool, options: dict[str, Any], folder: Path) -> dict[str, float]:
    from ramlab.capture.live import start_capture
    from ramlab.capture.run import capture
    from ramlab.widgets.live import LiveMigration

    kwargs = {**COMMON, **options}
    if not live:
        meta = capture(folder, **kwargs)
        lag = 0.0
    else:
        run = start_capture(folder, kwargs)
        view = LiveMigration(run)  # follows the run from its thread, as in a notebook
        lines: list[dict[str, Any]] = []
        run.on_pass(lines.append)
        run.wait(240)
        view.stop_following()
        meta = run.meta or {}
        lag = max((ln["decoded_at"] - ln["t"] for ln in lines[:-1]), default=0.0)
    final = meta["query_migrate_final"]
    return {"total_ms": float(final["total-time"]), "wall_s": float(meta["migrate_wall_s"]), "lag_s": lag}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    a = ap.parse_args()
    from ramlab.capture.qemu import qemu_version

    print(f"{qemu_version()}; {a.reps} runs per mode, alternating")
    for name in a.scenario or ["plain", "xbzrle", "fast"]:
        results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
        with tempfile.TemporaryDirectory(prefix="ramlab-bench-live-") as tmp:
            once(True, SCENARIOS[name], Path(tmp) / "warm")  # numba, imports, page cache
            for i in range(a.reps):
                for live in (False, True) if i % 2 == 0 else (True, False):
                    results[live].append(once(live, SCENARIOS[name], Path(tmp) / f"{live}-{i}"))
        print(f"\nscenario {name}: {SCENARIOS[name]}")
        med = {}
        for live in (False, True):
            rs = results[live]
            tot = [r["total_ms"] for r in rs]
            wall = [r["wall_s"] for r in rs]
            med[live] = statistics.median(tot)
            extra = ""
            if live:
                extra = f"; decode lag behind the wire: max {max(r['lag_s'] for r in rs) * 1e3:.0f} ms"
            print(f"  {'with the live view' if live else 'capture only      '}: QEMU total-time median "
                  f"{med[live]:.0f} ms (range {min(tot):.0f}-{max(tot):.0f}), migrate->completed median "
                  f"{statistics.median(wall):.3f} s{extra}")
            print(f"    all runs (ms): {sorted(int(x) for x in tot)}")
        diff = (med[True] - med[False]) / med[False] * 100
        print(f"  difference of the medians: {diff:+.1f} % (target: within 10 %)")
        time.sleep(0.5)


if __name__ == "__main__":
    main()
