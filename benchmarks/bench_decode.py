"""Decoding speed: ramlab vs QEMU's own C loader on the same large streams, in the same run.

Two streams of a 1 GiB ``pc`` guest (built once in a cache folder):

* ``zero-heavy``: a real QEMU migration of an idle guest (SeaBIOS, paused): ~262k ZERO
  records. Measures records per second (target >= 2 M/s).
* ``page-heavy``: the same stream with the ZERO records of the first ``--gib`` of ``pc.ram``
  turned into PAGE records of pseudo-random data (a valid stream: QEMU loads it). Measures
  GB/s of stream (target >= 3 GB/s).

Table 1, whole processes (what a user waits for; the goal of issue 13 is on page-heavy:
``ramlab extract`` <= QEMU's loader, ``ramlab inspect`` <= 2/3 of it):

* QEMU: ``qemu-system-x86_64 ... -incoming "exec:cat FILE"``, from process start until it
  exits (QMP over stdio: ``quit`` as soon as the MIGRATION event says ``completed``);
* ``ramlab inspect FILE`` and ``ramlab extract FILE -o DIR`` (a fresh folder each run), from
  process start to exit, Python start-up and imports included;
* the floor of any Python tool here: ``python -c "import numpy"``.

The contenders run interleaved, ``--repeat`` rounds after one warm-up round; each row gives the
best, median and worst wall time. Children run with bytecode caching on (``PYTHONPYCACHEPREFIX``
in the cache folder), as after ``pip install``, even where ``PYTHONDONTWRITEBYTECODE`` is set.
Before timing, the extracted ``pc.ram`` is checked byte for byte against the RAM image decoded
in process.

Table 2, in process: ``ramlab.open`` (an mmap of the stream) against QEMU's load timed from the
QMP ``migrate-incoming`` command to ``completed`` (``-incoming defer``).

Both read the stream from the page cache (it is read once before timing). The machine is
shared: the load average is printed before and after.

    python benchmarks/bench_decode.py [--gib 0.5] [--repeat 5] [--cache DIR] [--no-qemu]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ramlab
from ramlab.constants import RAM_SAVE_FLAG_PAGE, RAM_SAVE_FLAG_ZERO
from ramlab.wire import events as ev
from ramlab.wire.decoder import StreamDecoder
from ramlab.wire.encoder import encode_events

RAM_MIB = 1024
INSPECT_TARGET = 2 / 3  # ramlab inspect / QEMU loader, whole processes
EXTRACT_TARGET = 1.0  # ramlab extract / QEMU loader


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

    tmp = out.with_suffix(".partial")
    with tmp.open("wb") as fh:
        for chunk in encode_events(convert(dec.events())):
            fh.write(chunk)
    tmp.rename(out)
    return out


# ---------------------------------------------------------------- whole processes
def child_env(cache: Path) -> dict[str, str]:
    """The environment of timed Python children: bytecode cached in ``cache/pycache``."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache / "pycache")
    return env


def ramlab_argv() -> list[str]:
    """The ``ramlab`` console script of this interpreter's environment, else the same via ``-c``."""
    script = Path(sys.executable).parent / "ramlab"
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from ramlab.cli import main; sys.exit(main())"]


Timing = tuple[float, float]  # (wall seconds, CPU seconds: user + system of the process and its children)


def _reap(proc: subprocess.Popen) -> float:  # type: ignore[type-arg]
    """Wait for ``proc`` with ``wait4``; its CPU seconds (children it waited for included)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv: list[str], env: dict[str, str]) -> Timing:
    """One process from spawn to exit; raises with its stderr if it fails."""
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        cpu = _reap(proc)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}: {err.read().decode(errors='replace')}")
    return wall, cpu


def qemu_loader_argv(path: Path) -> list[str]:
    """QEMU's loader on ``path``: the source's machine, QMP on stdio, MIGRATION events on."""
    from ramlab.capture.qemu import MachineSpec, find_qemu

    spec = MachineSpec(ram_mib=RAM_MIB, kernel=None)
    return [find_qemu(), *spec.args(), "-serial", "null", "-monitor", "none",
            "-global", "migration.x-events=on", "-incoming", f"exec:cat {shlex.quote(str(path))}",
            "-qmp", "stdio"]


def time_qemu_process(path: Path) -> Timing:
    """A QEMU loading ``path``, from spawn until the process has exited (``cat`` included)."""
    argv = qemu_loader_argv(path)
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, bufsize=1)
    assert proc.stdin is not None and proc.stdout is not None
    status = None
    try:
        proc.stdin.write('{"execute": "qmp_capabilities"}\n')
        proc.stdin.flush()
        for line in proc.stdout:
            msg = json.loads(line)
            if "return" in msg and status is None and msg["return"] == {}:
                # negotiated: the load may have finished before events were on, so ask once
                proc.stdin.write('{"execute": "query-migrate", "id": "q"}\n')
                proc.stdin.flush()
                status = "asked"
            elif msg.get("id") == "q":
                if msg["return"].get("status") in ("completed", "failed"):
                    status = msg["return"]["status"]
            elif msg.get("event") == "MIGRATION" and msg["data"]["status"] in ("completed", "failed"):
                status = msg["data"]["status"]
            if status in ("completed", "failed"):
                proc.stdin.write('{"execute": "quit"}\n')
                proc.stdin.flush()
                break
        cpu = _reap(proc)
        wall = time.perf_counter() - t0
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    if status != "completed":
        raise RuntimeError(f"QEMU did not load {path} ({status}): {proc.stderr.read() if proc.stderr else ''}")
    return wall, cpu


def check_extract(path: Path, out: Path, env: dict[str, str]) -> str:
    """Extract once and compare every block file with the images decoded in process."""
    run_timed([*ramlab_argv(), "extract", str(path), "-o", str(out), "-q"], env)
    m = ramlab.open(path)
    assert m.error is None, m.error
    assert m.destination is not None
    sizes, alloc = 0, 0
    for name in m.destination.blocks:
        f = out / (name.replace("/", "_") + ".bin")
        disk = np.memmap(f, dtype=np.uint8, mode="r") if f.stat().st_size else np.zeros(0, np.uint8)
        if not np.array_equal(disk, m.ram(name)):
            raise AssertionError(f"{f} differs from the decoded image of {name}")
        st = f.stat()
        sizes += st.st_size
        alloc += st.st_blocks * 512
        del disk
    shutil.rmtree(out)
    return f"extract output checked: {sizes / 2**20:.0f} MiB in files, {alloc / 2**20:.0f} MiB allocated on disk"


def extract_once(rl: list[str], path: Path, out: Path, env: dict[str, str]) -> Timing:
    """One timed ``ramlab extract`` into the empty folder ``out``, removed afterwards (untimed)."""
    try:
        return run_timed([*rl, "extract", str(path), "-o", str(out), "-q"], env)
    finally:
        shutil.rmtree(out, ignore_errors=True)


QEMU_ROW = "QEMU loader (exec:cat)"
TARGETS = {"ramlab inspect": INSPECT_TARGET, "ramlab extract": EXTRACT_TARGET}


def whole_process_table(streams: list[tuple[str, Path]], cache: Path, repeat: int, have_qemu: bool) -> None:
    env = child_env(cache)
    rl = ramlab_argv()
    outs = cache / "extract-out"
    shutil.rmtree(outs, ignore_errors=True)
    outs.mkdir()
    print(f"whole processes, {repeat} interleaved rounds after a warm-up: wall s (best, median, worst) and"
          f" CPU s (user + system, best); ratios to the QEMU loader's figure of the same kind")
    print(f"  ramlab = {shlex.join(rl)}")
    for label, path in streams:
        print(f"{label} ({path.stat().st_size:,} bytes): {check_extract(path, outs / 'check', env)}")
        contenders: list[tuple[str, Callable[[], Timing]]] = []
        if have_qemu:
            contenders.append((QEMU_ROW, lambda p=path: time_qemu_process(p)))
        contenders.append(("ramlab inspect", lambda p=path: run_timed([*rl, "inspect", str(p), "-q"], env)))
        contenders.append(("ramlab extract", lambda p=path: extract_once(rl, p, outs / "run", env)))
        contenders.append(('python -c "import numpy"', lambda: run_timed([sys.executable, "-c", "import numpy"], env)))
        wall: dict[str, list[float]] = {name: [] for name, _ in contenders}
        cpu: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for rnd in range(repeat + 1):
            for name, fn in contenders:
                w, c = fn()
                if rnd:
                    wall[name].append(w)
                    cpu[name].append(c)
        print(f"  {'':<26} {'wall best':>9} {'median':>7} {'worst':>7} {'CPU best':>9} |"
              f" {'best/QEMU':>9} {'median/QEMU':>11} {'CPU/QEMU':>8} | target (wall best)")
        for name in wall:
            ws, cs = wall[name], cpu[name]
            line = (f"  {name:<26} {min(ws):>9.3f} {statistics.median(ws):>7.3f} {max(ws):>7.3f}"
                    f" {min(cs):>9.3f} |")
            if have_qemu and name != QEMU_ROW:
                qw, qc = wall[QEMU_ROW], cpu[QEMU_ROW]
                rb, rm = min(ws) / min(qw), statistics.median(ws) / statistics.median(qw)
                line += f" {rb:>9.2f} {rm:>11.2f} {min(cs) / min(qc):>8.2f} |"
                target = TARGETS.get(name)
                if target is not None and label == "page-heavy":
                    line += f" <= {target:.2f}: {'met' if rb <= target else 'MISSED'}"
            print(line)


# ---------------------------------------------------------------- in process
def time_ramlab(path: Path, repeat: int = 3) -> tuple[float, int]:
    best = float("inf")
    records = 0
    for _ in range(repeat):
        m = None
        t0 = time.perf_counter()
        m = ramlab.open(path)
        best = min(best, time.perf_counter() - t0)
        assert m.error is None, m.error
        records = sum(m.records.values())
        del m
    return best, records


def peak_rss_in_child(path: Path) -> int:
    """Peak resident memory (bytes) of a fresh process that decodes ``path`` once."""
    # VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork + exec.
    code = ("import ramlab, sys; m = ramlab.open(sys.argv[1]); "
            "print([int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    return int(subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              check=True).stdout)


def time_qemu(path: Path, folder: Path, repeat: int = 2) -> float:
    """QEMU's load alone: from QMP ``migrate-incoming`` to ``completed``."""
    from ramlab.capture.qemu import MachineSpec, QemuProcess

    best = float("inf")
    spec = MachineSpec(ram_mib=RAM_MIB, kernel=None)
    for i in range(repeat):
        with QemuProcess(folder, f"dst{i}", spec, incoming="defer") as dst:
            t0 = time.perf_counter()
            dst.qmp.execute("migrate-incoming", {"uri": f"exec:cat {shlex.quote(str(path))}"})
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


def in_process_table(streams: list[tuple[str, Path]], cache: Path, have_qemu: bool) -> None:
    print("in process: ramlab.open (best of 3) vs QEMU from migrate-incoming to completed (best of 2)")
    print(f"  {'stream':<12} {'bytes':>14} {'records':>10} {'ramlab s':>9} {'GB/s':>7} {'Mrec/s':>7}"
          f" {'peak RSS':>9} {'QEMU s':>8} {'GB/s':>7} {'QEMU/ramlab':>11}")
    for label, path in streams:
        t, n = time_ramlab(path)
        size = path.stat().st_size
        rss = peak_rss_in_child(path)
        line = (f"  {label:<12} {size:>14,} {n:>10,} {t:>9.3f} {size / t / 1e9:>7.2f} {n / t / 1e6:>7.2f}"
                f" {rss / 2**20:>7.0f}Mi")
        if have_qemu:
            q = time_qemu(path, cache)
            line += f" {q:>8.3f} {size / q / 1e9:>7.2f} {q / t:>10.2f}x"
        print(line)


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + f" ({os.cpu_count()} CPUs)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=0.5, help="GiB of pc.ram sent as PAGE records")
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds of the whole-process table")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "ramlab-bench-decode")
    ap.add_argument("--no-qemu", action="store_true", help="skip QEMU's loader")
    ap.add_argument("--no-in-process", action="store_true", help="only the whole-process table")
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    have_qemu = shutil.which("qemu-system-x86_64") is not None and not args.no_qemu
    if not have_qemu and not (args.cache / "idle.bin").exists():
        raise SystemExit("needs qemu-system-x86_64 to record the idle stream once")
    idle = record_idle_stream(args.cache)
    heavy = make_page_heavy(idle, args.cache / f"pages-{args.gib:g}G.bin", args.gib)
    for p in (idle, heavy):
        p.read_bytes()  # warm the page cache for every contender
    streams = [("zero-heavy", idle), ("page-heavy", heavy)]
    if have_qemu:
        from ramlab.capture.qemu import qemu_version

        print(qemu_version())
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}; {load()}")
    print("RAM images: 1 GiB pc.ram + ~17 MiB other blocks; the stream is mmapped (page cache, not heap)")
    whole_process_table(streams, args.cache, args.repeat, have_qemu)
    if not args.no_in_process:
        in_process_table(streams, args.cache, have_qemu)
    print(load())


if __name__ == "__main__":
    main()
