"""Benchmark of the notebook views (kernel side) on a 1 M-page (4 GiB guest) SYNTHETIC trace of 20 passes.

Measures building a ``MigrationPlayer`` (what delays its first picture), computing the page-map
overviews of every pass (sent once a page shows the player; the browser then changes passes by
itself), the Python time of a pass change (bookkeeping only; target < 150 ms), a box-zoom re-render
and the size of the pushed image against the plot frame in pixels.  What the student sees in the
browser is measured by ``bench_browser.py``.

    python benchmarks/bench_widgets.py [--pages 1048576] [--passes 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from bokeh.events import DocumentReady

from ramlab.plots.reduce import page_grid, reduce_classes
from ramlab.trace import synthetic_trace
from ramlab.widgets import MigrationPlayer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pages", type=int, default=1 << 20)
    ap.add_argument("--passes", type=int, default=20)
    a = ap.parse_args()

    t0 = time.perf_counter()
    trace = synthetic_trace(n_pages=a.pages, n_passes=a.passes, seed=1, with_page_bytes=False)
    print(f"synthetic trace: {trace.n_pages:,} pages x {trace.n_passes} passes "
          f"({trace.n_pages * 4096 / 2**30:.1f} GiB guest), generated in {time.perf_counter() - t0:.2f} s")

    MigrationPlayer(synthetic_trace(n_pages=4096, n_passes=3))  # imports, caches
    builds = []
    for _ in range(3):
        t0 = time.perf_counter()
        player = MigrationPlayer(trace)
        builds.append((time.perf_counter() - t0) * 1e3)
    print(f"MigrationPlayer built in {statistics.median(builds):.0f} ms (median of 3; min {min(builds):.0f})")
    t0 = time.perf_counter()
    player.bitmap.on_document_ready(DocumentReady())
    print(f"overviews of all {trace.n_passes} passes (computed and sent once a page shows the player): "
          f"{(time.perf_counter() - t0) * 1e3:.0f} ms")

    grid = page_grid(trace.n_pages, None)
    t0 = time.perf_counter()
    for p in range(trace.n_passes):
        reduce_classes(trace.classes[p], grid, (player.bitmap.frame_height, player.bitmap.frame_width))
    print(f"reduce_classes alone: {(time.perf_counter() - t0) * 1e3 / trace.n_passes:.1f} ms per pass")

    player.timings_ms.clear()
    for p in list(range(1, trace.n_passes)) + list(range(trace.n_passes - 2, -1, -1)):
        player.slider.value = p
    t = player.timings_ms
    print(f"pass change (slider callback, Python): median {statistics.median(t):.1f} ms, "
          f"max {max(t):.1f} ms over {len(t)} changes (target < 150 ms): "
          f"{'OK' if max(t) < 150 else 'TOO SLOW'}")

    bv = player.bitmap
    img = bv.image
    print(f"page grid {grid[0]}x{grid[1]} pages; plot frame {bv.frame_width}x{bv.frame_height} px; "
          f"pushed image {img.shape[1]}x{img.shape[0]} px = {img.nbytes / 1024:.0f} KiB "
          f"({img.size / (bv.frame_width * bv.frame_height):.2f} of the frame's pixels), "
          f"{bv.region.fy}x{bv.region.fx} pages per pixel")
    assert img.shape[0] <= bv.frame_height and img.shape[1] <= bv.frame_width

    zt = []
    for r0 in (0, 300, 700):
        t0 = time.perf_counter()
        bv.show_region(100, 400, r0, r0 + 250)
        zt.append((time.perf_counter() - t0) * 1e3)
    print(f"box zoom to 300x250 pages: {statistics.median(zt):.1f} ms, image {bv.image.shape[1]}x"
          f"{bv.image.shape[0]} px, full resolution: {bv.region.full_resolution}")
    t0 = time.perf_counter()
    bv.reset_view()
    print(f"reset zoom: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    rare = int(np.count_nonzero(trace.classes[5] == 5))
    print(f"(pass 5 holds {rare} XBZRLE_OVERFLOW pages; rarest-class rule keeps them visible)")


if __name__ == "__main__":
    main()
