"""Decoding speed: ramlab vs QEMU's own C loader on the same large streams.

Two streams of a 1 GiB ``pc`` guest (built once in a cache folder):

* ``zero-heavy``: a real QEMU 7.2 migration of an idle guest (SeaBIOS, paused): ~262k ZERO
  records. Measures records per second (target >= 2 M/s).
* ``page-heavy``: the same stream with the ZERO records of the first ``--gib`` of ``pc.ram``
  turned into PAGE records of pseudo-random data (a valid stream: QEMU loads it). Measures
  GB/s of stream (target >= 3 GB/s).

For each stream: ramlab decodes it to RAM images (``ramlab.open`` on an mmap), then QEMU
loads it (``-incoming defer`` + ``migrate-incoming exec:cat FILE``, timed from the QMP command
to ``completed``). Both read the file from the page cache (it is read once before timing).

    python benchmarks/bench_decode.py [--gib 0.5] [--cache DIR] [--no-qemu]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import ramlab
from ramlab.constants import RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_ZERO
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_events

RAM_MIB = 1024


def record_idle_stream(folder: Path) -> Path:
    """Migrate an idle (paused) 1 GiB guest with the real QEMU into ``folder/idle.bin``."""
    from ramlab.capture.qemu import MachineSpec, QemuProcess

    out = folder / "idle.bin"
    if out.exists():
        return out
    spec = MachineSpec(ram_mib=RAM_MIB, kernel=None)
    with QemuProcess(folder, "src", spec, paused=True) as src:
        src.qmp.execute("migrate", {"uri": f"exec:cat > {out.name}"})
        _wait_completed(src, 600)
    return out


def _wait_completed(proc, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        info = proc.qmp.execute("query-migrate")
        status = info.get("status")
        if status == "completed":
            return time.perf_counter() - t0
        if status == "failed":
            raise RuntimeError(f"migration failed: {info}")
        time.sleep(0.002)
    raise TimeoutError("migration did not complete")


def make_page_heavy(idle: Path, out: Path, gib: float) -> Path:
    """Rewrite ZERO records of pc.ram's first ``gib`` GiB as PAGE records of random data."""
    if out.exists():
        return out
    dec = StreamDecoder()
    dec.receive_data(ramlab.io.read_stream(idle))
    dec.close()
    limit = int(gib * (1 << 30))
    pool = np.random.default_rng(0).integers(0, 256, size=(8192, 4096), dtype=np.uint8)

    def convert(events):  # type: ignore[no-untyped-def]
        for e in events:
            if (isinstance(e, ev.RamPages) and e.block == "pc.ram" and e.kind == RAM_SAVE_FLAG_ZERO
                    and not e.named and e.page_offsets[0] < limit):
                keep = e.page_offsets < limit
                offs = e.page_offsets[keep]
                rows = (offs // 4096) % len(pool)
                yield ev.RamPages(RAM_SAVE_FLAG_PAGE, e.block, False, offs, data=pool[rows])
                if (~keep).any():
                    yield ev.RamPages(RAM_SAVE_FLAG_ZERO, e.block, False, e.page_offsets[~keep],
                                      fill=e.fill[~keep])
            else:
                yield e

    with out.open("wb") as fh:
        for chunk in encode_events(convert(dec.events())):
            fh.write(chunk)
    return out


def time_ramlab(path: Path, repeat: int = 3) -> tuple[float, ramlab.Migration]:
    best = float("inf")
    m = None
    for _ in range(repeat):
        m = None
        t0 = time.perf_counter()
        m = ramlab.open(path)
        best = min(best, time.perf_counter() - t0)
        assert m.error is None, m.error
    return best, m  # type: ignore[return-value]


def peak_rss_in_child(path: Path) -> int:
    """Peak resident memory (bytes) of a fresh process that decodes ``path`` once."""
    # VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork + exec.
    code = ("import ramlab, sys; m = ramlab.open(sys.argv[1]); "
            "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    return int(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              check=True).stdout)


def time_qemu(path: Path, folder: Path, repeat: int = 2) -> float:
    from ramlab.capture.qemu import MachineSpec, QemuProcess

    best = float("inf")
    spec = MachineSpec(ram_mib=RAM_MIB, kernel=None)
    for i in range(repeat):
        with QemuProcess(folder, f"dst{i}", spec, incoming="defer") as dst:
            t0 = time.perf_counter()
            dst.qmp.execute("migrate-incoming", {"uri": f"exec:cat {path}"})
            while True:
                status = dst.qmp.execute("query-status")["status"]
                info = dst.qmp.execute("query-migrate")
                if info.get("status") == "completed" or status in ("paused", "running") and not info:
                    break
                if info.get("status") == "failed":
                    raise RuntimeError(f"QEMU failed to load {path}: {info}")
                if time.perf_counter() - t0 > 600:
                    raise TimeoutError("QEMU load did not complete")
                time.sleep(0.001)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=0.5, help="GiB of pc.ram sent as PAGE records")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ramlab-bench-decode")
    ap.add_argument("--no-qemu", action="store_true", help="skip QEMU's loader")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    have_qemu = shutil.which("qemu-system-x86_64") is not None and not args.no_qemu
    if not have_qemu and not (args.cache / "idle.bin").exists():
        raise SystemExit("needs qemu-system-x86_64 to record the idle stream once")
    idle = record_idle_stream(args.cache)
    heavy = make_page_heavy(idle, args.cache / f"pages-{args.gib:g}G.bin", args.gib)
    for p in (idle, heavy):
        p.read_bytes()  # warm the page cache for both contenders
    print("RAM images: 1 GiB pc.ram + ~17 MiB other blocks; the stream is mmapped (page cache, not heap)")
    print(f"{'stream':<12} {'bytes':>14} {'records':>10} {'ramlab s':>9} {'GB/s':>7} {'Mrec/s':>7}"
          f" {'peak RSS':>9} {'QEMU s':>8} {'GB/s':>7} {'QEMU/ramlab':>11}")
    for label, path in (("zero-heavy", idle), ("page-heavy", heavy)):
        t, m = time_ramlab(path)
        n = sum(m.records.values())
        size = path.stat().st_size
        rss = peak_rss_in_child(path)
        line = (f"{label:<12} {size:>14,} {n:>10,} {t:>9.3f} {size / t / 1e9:>7.2f} {n / t / 1e6:>7.2f}"
                f" {rss / 2**20:>7.0f}Mi")
        if have_qemu:
            q = time_qemu(path, args.cache)
            line += f" {q:>8.3f} {size / q / 1e9:>7.2f} {q / t:>10.2f}x"
        print(line)


if __name__ == "__main__":
    main()
