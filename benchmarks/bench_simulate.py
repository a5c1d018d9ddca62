"""Benchmark the modelled sender: a 4 GiB guest (1 M target pages) running the hot-set workload,
migrated with XBZRLE over 10 passes (forced to complete at the 10th).

    .venv/bin/python benchmarks/bench_simulate.py [--ram 4G] [--passes 10] [--stream] [--postcopy-after N]

Prints wall seconds, pages handled per second and the per-pass table. Target on the 2-core
reference machine: < 20 s. The guest is one ``np.zeros`` array (lazily backed: untouched pages
cost no memory); the XBZRLE cache is ``--cache-size`` bytes (QEMU's page cache,
:class:`ramlab.model.page_cache.PageCache`). ``--postcopy-after N`` switches to postcopy after N passes
instead (the destination's faults and page requests are modelled too).
"""

from __future__ import annotations

import argparse
import time

from ramlab.simulate import simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ram", default="4G")
    ap.add_argument("--passes", type=int, default=10)
    ap.add_argument("--bandwidth", default="1G", help="max-bandwidth, bytes/s")
    ap.add_argument("--dirty-rate", default="16G", help="guest dirty rate, bytes/s")
    ap.add_argument("--cache-size", default="512M")
    ap.add_argument("--downtime-ms", type=float, default=10)
    ap.add_argument("--stream", action="store_true", help="also build the stream events and bytes")
    ap.add_argument("--template", default=None, help="template capture (default data/plain; 'none' for bare)")
    ap.add_argument("--postcopy-after", type=int, default=None, help="switch to postcopy after N passes")
    a = ap.parse_args()
    template = False if a.template == "none" else a.template
    t0 = time.perf_counter()
    r = simulate(ram=a.ram, workload="hotset", xbzrle=True, cache_size=a.cache_size, bandwidth=a.bandwidth,
                 dirty_rate=a.dirty_rate, downtime_ms=a.downtime_ms, max_passes=a.passes, seed=0,
                 stream=a.stream, template=template, hot_fraction=0.05, fill=0.1,
                 postcopy=a.postcopy_after is not None, postcopy_after=a.postcopy_after or 0)
    dt = time.perf_counter() - t0
    handled = int(r.counters["pages_handled"])
    print(r.format_table())
    print(f"guest {r.trace.n_pages:,} pages, {r.trace.n_passes} passes, converged={r.converged}, "
          f"{r.time_s:.2f} s simulated")
    print(f"wall {dt:.2f} s, {handled:,} pages handled, {handled / dt:,.0f} pages/s, "
          f"{r.trace.n_pages * r.trace.n_passes / dt:,.0f} page-passes/s")


if __name__ == "__main__":
    main()
