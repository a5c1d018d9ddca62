"""Record a real QEMU migration of the ramlab test guest: ``ramlab capture OUT_DIR``.

:func:`capture` starts a source QEMU running ``guest.elf``, waits until the guest is
dirtying memory, sets migration capabilities and parameters over QMP, migrates, samples
``query-migrate`` at every dirty-bitmap sync, dumps the source RAM (``pmemsave``), loads
the recorded stream into a second QEMU and compares the RAM dumps (sha256), and writes
zstd-compressed files plus ``meta.json`` (the same keys as ``shared/captures``)::

    from ramlab.capture.run import capture
    meta = capture("data/plain", ram_mib=16)                                   # precopy
    meta = capture("data/xbzrle", capabilities=["xbzrle"], xbzrle_cache_size=4 << 20)
    meta = capture("data/multifd", multifd_channels=2, multifd_compression="zstd")
    meta = capture("data/postcopy", mode="postcopy")
    assert meta["replay"]["matched"]

Transports: precopy goes to ``unix:mig.sock``, where a :class:`~ramlab.capture.proxy.Recorder`
acts as the destination (sink) and stores the stream as ``stream.bin`` with the time of every
chunk in ``chunks.jsonl`` (``transport="exec"``: QEMU writes ``exec:cat > stream.bin``, as the
bundled captures of ``data/`` were made); multifd goes to the same sink, which stores each
connection as ``channel-N.bin`` (0 = main); postcopy needs a live destination, so source -> ``unix:proxy.sock`` ->
recorder (proxy) -> destination QEMU ``unix:dst.sock``, recording ``fwd-0.bin`` and
the return path ``ret-0.bin``, and ``migrate-start-postcopy`` is sent after a few syncs.

While QEMU migrates, a :class:`~ramlab.capture.control.CaptureObserver` can hear every recorded
chunk and ``query-migrate`` sample, and a :class:`~ramlab.capture.control.MigrationControl` can
change parameters, switch to postcopy or cancel (:mod:`ramlab.live` uses both).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ramlab.capture.build import GUEST_ELF
from ramlab.capture.control import CaptureObserver, MigrationControl
from ramlab.capture.proxy import Recorder
from ramlab.capture.qemu import (
    MachineSpec,
    QemuProcess,
    find_qemu,
    hugetlbfs_mount,
    load_stream,
    qemu_version,
    set_migration_config,
    work_dir,
)
from ramlab.cli.args import count_arg, int_range_arg, seconds_arg, size_arg
from ramlab.errors import CaptureError, RamlabError
from ramlab.live.samples import qmp_sample

__all__ = ["capture", "capture_main", "capture_kwargs", "build_parser", "parse_size", "STATUS_ADDR"]

STATUS_ADDR = 0x300000  # guest status page: "RAMLAB01", pass counter at +8, ready flag at +0x10
QEVM_V3 = bytes.fromhex("5145564d00000003")


def parse_size(text: str | int, name: str = "size") -> int:
    """``"16M"`` -> 16 MiB in bytes; plain numbers are bytes; binary suffixes K, M, G, T (``"4MiB"`` too).

    NaN, infinity, negative values, bools and sizes beyond 2**62 bytes are a
    :class:`~ramlab.errors.RamlabError` naming ``name``.

    >>> parse_size("4M"), parse_size("512K"), parse_size("4096")
    (4194304, 524288, 4096)
    >>> parse_size("-1M", "ram")
    Traceback (most recent call last):
    ramlab.errors.RamlabError: ram must be >= 0, found '-1M' (str)
    """
    from ramlab import checks

    return checks.size(text, name, RamlabError)


def _ram_arg(text: str) -> int:
    """``--ram``: a size in whole MiB (QEMU's ``-m``), at least 4 MiB (the guest's status page is at 3 MiB)."""
    value = size_arg(text)
    if value < 4 << 20 or value % (1 << 20):
        raise argparse.ArgumentTypeError(f"not a guest RAM size: {text!r} (expected whole MiB, at least 4M, e.g. 16M)")
    return value


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zstd_write(path: Path, data: bytes, level: int) -> int:
    import zstandard

    comp = zstandard.ZstdCompressor(level=level, threads=-1, write_content_size=True)
    blob = comp.compress(data)
    Path(str(path) + ".zst").write_bytes(blob)
    return len(blob)


def _wait_guest(vm: QemuProcess, min_passes: int, timeout: float) -> int:
    """Wait until the guest finished its one-time fills and made ``min_passes`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ready = vm.read_u32(STATUS_ADDR + 0x10)
            passes = vm.read_u32(STATUS_ADDR + 8)
            if ready == 1 and passes >= min_passes:
                return passes
        except CaptureError:
            if not vm.alive():
                raise
        if time.monotonic() > deadline:
            raise CaptureError(f"the guest did not start dirtying within {timeout}s; serial log: "
                               f"{vm.serial_text()[-300:]!r}")
        time.sleep(0.01)


def _sample(info: dict[str, Any], t: float, who: str | None = None) -> dict[str, Any]:
    ram = info.get("ram") or {}
    out: dict[str, Any] = {
        "t": round(t, 4),
        "status": info.get("status"),
        "dirty-sync-count": ram.get("dirty-sync-count"),
        "transferred": ram.get("transferred"),
        "normal": ram.get("normal"),
        "duplicate": ram.get("duplicate"),
        "remaining": ram.get("remaining"),
        "xbzrle-pages": (info.get("xbzrle-cache") or {}).get("pages"),
        "postcopy-requests": ram.get("postcopy-requests"),
        "dirty-pages-rate": ram.get("dirty-pages-rate"),
        "mbps": ram.get("mbps"),
        "expected-downtime": info.get("expected-downtime"),
    }
    if who:
        out["who"] = who
    return out


def capture(
    out_dir: str | Path,
    *,
    machine: str = "pc",
    ram_mib: int = 16,
    capabilities: Iterable[str] = (),
    parameters: Mapping[str, Any] | None = None,
    mode: str = "precopy",
    multifd_channels: int | None = None,
    multifd_compression: str | None = None,
    xbzrle_cache_size: int | None = None,
    compress_threads: int | None = None,
    compress_level: int | None = None,
    max_bandwidth: int | None = None,
    downtime_limit_ms: int = 1,
    relax_after_syncs: int | None = 4,
    postcopy_after_syncs: int | None = 2,
    max_postcopy_bandwidth: int | None = 1 << 20,
    hugepages: bool = False,
    hugetlbfs: str = "auto",
    min_guest_passes: int = 1,
    guest_init_wait_s: float = 0.1,
    kernel: str | Path | None = GUEST_ELF,
    name: str | None = None,
    note: str = "",
    replay: bool = True,
    zstd_level: int = 19,
    keep_raw: bool = False,
    timeout: float = 120.0,
    binary: str | None = None,
    keep_work: bool = False,
    transport: str = "unix",
    observer: CaptureObserver | None = None,
    control: MigrationControl | None = None,
    sample_interval: float = 0.1,
    on_timeout: str = "raise",
) -> dict[str, Any]:
    """Record one migration into ``out_dir``; return the meta dict (also ``out_dir/meta.json``).

    ``capabilities`` are QEMU migration capability names (``xbzrle``, ``compress``,
    ``multifd``, ``postcopy-ram``...); the convenience arguments add the capability and
    its parameters (``multifd_channels=2`` -> ``multifd`` + ``multifd-channels``,
    ``xbzrle_cache_size``, ``compress_threads``/``compress_level``); ``parameters`` are
    passed to ``migrate-set-parameters`` as is (they win). ``max_bandwidth`` defaults to
    RAM/2 per second (32 MiB/s for 64 MiB, as the shared captures; 8 MiB/s for 16 MiB): a
    first pass that ends within QEMU's first 100 ms rate window completes the migration
    at once (QEMU 7.2 finishes when nothing is pending before its threshold is computed).
    ``mode="postcopy"`` adds ``postcopy-ram`` and runs a live destination. The downtime limit stays at
    ``downtime_limit_ms`` until ``relax_after_syncs`` dirty syncs, then goes to 10 s so the
    migration completes (precopy); postcopy switches after ``postcopy_after_syncs`` syncs.
    ``hugepages`` backs RAM with a memory-backend-file; ``hugetlbfs="auto"`` mounts a
    private hugetlbfs when root (2 MiB pages), ``"off"`` uses a plain folder (4 KiB).
    ``relax_after_syncs=None`` never relaxes, ``postcopy_after_syncs=None`` never switches by
    itself (a :class:`~ramlab.capture.control.MigrationControl` may).

    ``transport`` (precopy): ``"unix"`` records the stream through the recorder's unix socket
    (``stream.bin`` plus the chunk log ``chunks.jsonl``, as multifd and postcopy always are);
    ``"exec"`` has QEMU write it with ``exec:cat > stream.bin``. ``observer``
    (:class:`~ramlab.capture.control.CaptureObserver`) hears the chunks and ``query-migrate``
    samples (every ``sample_interval`` s and at every change) while QEMU migrates; ``control``
    takes commands from other threads. ``on_timeout="cancel"`` cancels a migration still running
    after ``timeout`` s (it ends with ``meta["cancelled"]``) instead of raising. A cancelled
    migration keeps its (truncated) files and skips the replay.
    Raises :class:`~ramlab.errors.CaptureError` when QEMU fails.
    """
    if mode not in ("precopy", "postcopy"):
        raise RamlabError(f"mode must be 'precopy' or 'postcopy', not {mode!r}")
    if transport not in ("unix", "exec"):
        raise RamlabError(f"transport must be 'unix' or 'exec', not {transport!r}")
    if on_timeout not in ("raise", "cancel"):
        raise RamlabError(f"on_timeout must be 'raise' or 'cancel', not {on_timeout!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    caps: list[str] = list(dict.fromkeys(capabilities))
    if max_bandwidth is None:  # RAM/2 per second: the first pass must outlast QEMU's 100 ms rate window
        max_bandwidth = max(4, ram_mib // 2) << 20
    params: dict[str, Any] = {"max-bandwidth": int(max_bandwidth), "downtime-limit": int(downtime_limit_ms)}
    dst_params: dict[str, Any] = {}
    if xbzrle_cache_size is not None:
        caps.append("xbzrle")
        params["xbzrle-cache-size"] = int(xbzrle_cache_size)
    if compress_threads is not None or compress_level is not None:
        caps.append("compress")
    if "compress" in caps:
        params["compress-threads"] = int(compress_threads or 2)
        params["compress-level"] = int(1 if compress_level is None else compress_level)
        dst_params["decompress-threads"] = int(compress_threads or 2)
    if multifd_channels is not None or multifd_compression is not None:
        caps.append("multifd")
    if "multifd" in caps:
        params["multifd-channels"] = int(multifd_channels or 2)
        dst_params["multifd-channels"] = params["multifd-channels"]
        if multifd_compression is not None:
            params["multifd-compression"] = multifd_compression
            dst_params["multifd-compression"] = multifd_compression
    if mode == "postcopy":
        caps.append("postcopy-ram")
        if max_postcopy_bandwidth is not None:
            params["max-postcopy-bandwidth"] = int(max_postcopy_bandwidth)
    if "postcopy-ram" in caps and mode != "postcopy":
        mode = "postcopy"
    params.update(parameters or {})
    caps = list(dict.fromkeys(caps))
    multifd = "multifd" in caps
    if multifd and mode == "postcopy":
        raise RamlabError("multifd with postcopy is not supported by QEMU 7.2")

    meta: dict[str, Any] = {
        "name": name or out.name,
        "note": note,
        "machine": machine,
        "ram_mib": ram_mib,
        "ram_bytes": ram_mib << 20,
        "kernel": "guest.elf" if kernel is not None else None,
        "kernel_sha256": _sha256(Path(kernel).read_bytes()) if kernel is not None else None,
        "qemu_cwd": "work folder (relative names only)",
        "capabilities": caps,
        "mode": "multifd" if multifd else ("postcopy-running-dst" if mode == "postcopy" else
                                          ("exec" if transport == "exec" else "unix-sink")),
        "qemu_version_cli": qemu_version(binary),
        "host": platform.release(),
        "recorded_by": "ramlab.capture.run.capture",
    }
    find_qemu(binary)
    huge_ctx: contextlib.AbstractContextManager[Path | None] = contextlib.nullcontext(None)
    if hugepages:
        meta["backend"] = "file-private"
        if hugetlbfs == "auto" and os.geteuid() == 0:
            n_vms = 3 if mode == "postcopy" else 2
            huge_ctx = hugetlbfs_mount(n_vms * ((ram_mib + 1) // 2) + 2)
            meta["backend"] = "hugetlbfs-private"
        elif hugetlbfs not in ("auto", "off"):
            huge_ctx = contextlib.nullcontext(Path(hugetlbfs))
            meta["backend"] = "hugetlbfs-private"
    with huge_ctx as huge_dir, work_dir("ramlab-cap-", keep=keep_work) as wd:
        spec = MachineSpec(machine=machine, ram_mib=ram_mib, kernel=Path(kernel) if kernel else None,
                           hugepages=hugepages, hugepage_dir=huge_dir)
        if hugepages:
            meta["backend_object"] = spec.backend_object
        _record(meta, spec, wd, out, caps, params, dst_params, mode, multifd,
                relax_after_syncs=relax_after_syncs, postcopy_after_syncs=postcopy_after_syncs,
                min_guest_passes=min_guest_passes, guest_init_wait_s=guest_init_wait_s,
                replay=replay, zstd_level=zstd_level, keep_raw=keep_raw, timeout=timeout, binary=binary,
                transport=transport, observer=observer, control=control, sample_interval=sample_interval,
                on_timeout=on_timeout)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


class _Recording:
    """One migration of :func:`capture`: the QEMU processes, the recorder and the QMP loop.

    :meth:`run` migrates and fills ``meta``/``raw``; the loop polls ``query-migrate`` every few
    milliseconds (samples into ``meta`` at every change of status or dirty-sync count), applies the
    capture's own rules (relax the downtime limit, switch to postcopy), runs the commands of a
    :class:`MigrationControl` and tells a :class:`CaptureObserver` what happens.
    """

    def __init__(self, meta: dict[str, Any], spec: MachineSpec, wd: Path, caps: list[str],
                 params: dict[str, Any], dst_params: dict[str, Any], mode: str, multifd: bool, *,
                 transport: str, relax_after_syncs: int | None, postcopy_after_syncs: int | None,
                 min_guest_passes: int, guest_init_wait_s: float, timeout: float, on_timeout: str,
                 binary: str | None, observer: CaptureObserver | None, control: MigrationControl | None,
                 sample_interval: float) -> None:
        self.meta, self.spec, self.wd, self.caps = meta, spec, wd, caps
        self.params, self.dst_params = params, dst_params
        self.postcopy = mode == "postcopy"
        self.multifd = multifd
        self.transport = transport
        self.relax_after_syncs = relax_after_syncs
        self.postcopy_after_syncs = postcopy_after_syncs
        self.min_guest_passes = min_guest_passes
        self.guest_init_wait_s = guest_init_wait_s
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.binary = binary
        self.observer = observer or CaptureObserver()
        self.control = control
        self.sample_interval = sample_interval
        self.raw: dict[str, bytes] = {}
        self.samples: list[dict[str, Any]] = []
        self.src: QemuProcess | None = None
        self.dst: QemuProcess | None = None
        self.recorder: Recorder | None = None
        self.status = "none"

    @property
    def live_mode(self) -> str:
        return "postcopy" if self.postcopy else ("multifd" if self.multifd else "precopy")

    def run(self) -> None:
        try:
            self._prepare()
            self._migrate()
            self._collect()
        finally:
            if self.control is not None:
                self.control.close(f"the migration is over ({self.status})")
            if self.recorder is not None:
                with contextlib.suppress(Exception):
                    self.recorder.stop(timeout=0.5)
            if self.dst is not None:
                self.dst.quit()
            if self.src is not None:
                self.src.quit()

    # ------------------------------------------------------------------ before migrate
    def _prepare(self) -> None:
        meta, spec, wd, binary = self.meta, self.spec, self.wd, self.binary
        src = self.src = QemuProcess(wd, "src", spec, binary=binary)
        src.start()
        meta["cmdline_src"] = src.cmdline
        meta["qemu_version_qmp"] = src.qmp.greeting.get("version") if src.qmp.greeting else None
        if self.postcopy:
            self.dst = QemuProcess(wd, "dst", spec, incoming="defer", binary=binary).start()
            meta["cmdline_dst"] = self.dst.cmdline
        if spec.kernel is not None:
            meta["guest_passes_at_start"] = _wait_guest(src, self.min_guest_passes, timeout=min(self.timeout, 30.0))
        time.sleep(self.guest_init_wait_s)
        meta["guest_init_wait_s"] = self.guest_init_wait_s
        set_migration_config(src, self.caps, self.params)
        meta["qmp_set_parameters_src"] = self.params
        if self.control is not None:  # commands given before the migration (capabilities...)
            if not self.control.wait_go(self.timeout, lambda: self._run_control(0.0)):
                raise CaptureError(f"migrate was not requested within {self.timeout}s")
        meta["migrate_capabilities_src"] = [c for c in src.qmp.execute("query-migrate-capabilities")
                                            if c.get("state")]
        meta["migrate_parameters_src"] = src.qmp.execute("query-migrate-parameters")
        meta["info_ramblock_src"] = src.hmp("info ramblock")
        with contextlib.suppress(CaptureError):
            meta["machine_type_resolved"] = src.qmp.execute("qom-get", {"path": "/machine", "property": "type"})
        listener = self.observer.chunk
        if self.postcopy:
            dst = self.dst
            assert dst is not None
            set_migration_config(dst, self.caps, self.dst_params)
            meta["qmp_set_parameters_dst"] = self.dst_params
            meta["info_ramblock_dst"] = dst.hmp("info ramblock")
            dst.qmp.execute("migrate-incoming", {"uri": "unix:dst.sock"})
            meta["migrate_incoming_uri_dst"] = "unix:dst.sock"
            self.recorder = Recorder(wd / "proxy.sock", wd, target=wd / "dst.sock", listener=listener).start()
            self.uri = "unix:proxy.sock"
            meta["migrate_uri"] = "unix:proxy.sock (proxy -> unix:dst.sock)"
        elif self.multifd:
            self.recorder = Recorder(wd / "mig.sock", wd, prefix="channel", listener=listener).start()
            self.uri = meta["migrate_uri"] = "unix:mig.sock"
        elif self.transport == "unix":
            self.recorder = Recorder(wd / "mig.sock", wd, prefix="stream", single=True, listener=listener).start()
            self.uri = meta["migrate_uri"] = "unix:mig.sock"
        else:
            if self.observer.__class__ is not CaptureObserver:
                raise RamlabError("watching a precopy capture needs transport='unix' (exec: has no recorder)")
            self.uri = meta["migrate_uri"] = "exec:cat > stream.bin"
        if not self.postcopy and self.relax_after_syncs is not None:
            meta["relax_rule"] = (f"downtime-limit={self.params['downtime-limit']} ms until dirty-sync-count >= "
                                  f"{self.relax_after_syncs}, then 10000 ms")

    # ------------------------------------------------------------------ the QMP loop
    def _event(self, t: float, text: str) -> None:
        entry = {"t": round(t, 4), "event": text}
        self.samples.append(entry)
        self.observer.sample(dict(entry))

    def _run_control(self, t: float) -> None:
        if self.control is None:
            return
        assert self.src is not None
        for entry in self.control.run_pending(self.src.qmp, t):
            self.samples.append(entry)
            self.observer.sample(dict(entry))

    def _migrate(self) -> None:
        src, dst, meta = self.src, self.dst, self.meta
        assert src is not None
        t0 = time.monotonic()
        if self.recorder is not None:
            self.recorder.t0 = t0
        self.observer.started(t0, self.live_mode, int(self.params.get("multifd-channels", 0)) if self.multifd else 0,
                              dict(meta["migrate_parameters_src"]))
        src.qmp.execute("migrate", {"uri": self.uri})
        deadline = t0 + self.timeout
        last_key: tuple[Any, ...] | None = None
        next_sample = 0.0
        relaxed = switched = timed_out = False
        dst_last: str | None = None
        dst_done = False
        who = "src" if self.postcopy else None
        while True:
            now = time.monotonic()
            if now > deadline and not timed_out:
                if self.on_timeout != "cancel":
                    raise CaptureError(f"migration did not finish in {self.timeout}s; src stderr: {src.stderr_text()}")
                timed_out = True
                self._event(now - t0, f"timeout after {self.timeout}s: migrate_cancel")
                with contextlib.suppress(CaptureError):
                    src.qmp.execute("migrate_cancel")
            if now > deadline + 30.0:
                raise CaptureError(f"migration did not end 30 s after migrate_cancel; src stderr: {src.stderr_text()}")
            if not src.alive():
                raise CaptureError(f"source QEMU exited: {src.stderr_text()}")
            self._run_control(now - t0)
            info = src.query_migrate()
            ram = info.get("ram") or {}
            status = str(info.get("status"))
            key = (status, ram.get("dirty-sync-count"))
            changed = key != last_key
            if changed:
                self.samples.append(_sample(info, now - t0, who))
                last_key = key
            if changed or now - t0 >= next_sample or status in _FINAL:
                self.observer.sample(qmp_sample(info, now - t0))
                next_sample = now - t0 + self.sample_interval
            syncs = ram.get("dirty-sync-count") or 0
            if status == "cancelled" and (timed_out or (self.control and self.control.cancel_requested)):
                self.status = "cancelled"
                break
            if status in ("failed", "cancelled"):
                extra = f"; dst stderr: {dst.stderr_text()}" if dst else ""
                raise CaptureError(f"migration {status}: {info.get('error-desc', '')}; src stderr: "
                                   f"{src.stderr_text()}{extra}")
            if self.postcopy:
                assert dst is not None
                if (not switched and status == "active" and self.postcopy_after_syncs is not None
                        and syncs >= self.postcopy_after_syncs):
                    src.qmp.execute("migrate-start-postcopy")
                    self._event(time.monotonic() - t0, "migrate-start-postcopy")
                    switched = True
                switched = switched or bool(self.control and self.control.postcopy_requested)
                if (switched or status == "completed") and not dst_done:
                    dinfo = dst.query_migrate()
                    if dinfo.get("status") != dst_last:
                        dst_last = dinfo.get("status")
                        self.samples.append(_sample(dinfo, time.monotonic() - t0, "dst"))
                    if dst_last == "completed":
                        dst.qmp.execute("stop")
                        self.samples.append({"t": round(time.monotonic() - t0, 4), "event": "dst stop"})
                        meta["dst_query_migrate"] = dinfo
                        dst_done = True
                    elif dst_last == "failed":
                        raise CaptureError(f"destination failed: {dst.stderr_text()}")
                if status == "completed" and dst_done:
                    self.status = status
                    break
            else:
                if (not relaxed and status == "active" and self.relax_after_syncs is not None
                        and syncs >= self.relax_after_syncs):
                    src.qmp.execute("migrate-set-parameters", {"downtime-limit": 10000})
                    self.samples.append({"t": round(time.monotonic() - t0, 4), "event": "relaxed downtime-limit",
                                         "arguments": {"downtime-limit": 10000}})
                    self.observer.sample(dict(self.samples[-1]))
                    relaxed = True
                if status == "completed":
                    self.status = status
                    break
            time.sleep(0.002)
        meta["migrate_wall_s"] = round(time.monotonic() - t0, 3)
        final = src.query_migrate()
        meta["query_migrate_final"] = final
        if self.samples and self.samples[-1].get("status") != final.get("status"):
            self.samples.append(_sample(final, time.monotonic() - t0, who))
        if self.status == "cancelled":
            meta["cancelled"] = "timeout" if timed_out else "migrate_cancel"
        meta["progress_samples"] = self.samples
        meta["control_commands"] = []  # QMP commands another thread ran during the migration
        if self.control is not None:
            self.control.close(f"the migration is over ({self.status})")
            meta["control_commands"] = self.control.log
        src.qmp.poll_events(0.05)
        meta["events_src"] = src.qmp.events
        meta["query_status_src_after"] = src.qmp.execute("query-status")
        if self.recorder is not None:
            self.recorder.stop(timeout=10.0)
        self.observer.stopped(self.status)

    # ------------------------------------------------------------------ after the migration
    def _collect(self) -> None:
        src, dst, meta, raw, wd, spec = self.src, self.dst, self.meta, self.raw, self.wd, self.spec
        assert src is not None
        ram_src, hmp_out = src.pmemsave("guest-ram.bin")
        meta["hmp_pmemsave_src"] = f'pmemsave 0 {spec.ram_bytes} "guest-ram.bin"'
        meta["hmp_pmemsave_src_out"] = hmp_out
        raw["guest-ram.bin"] = ram_src
        recorder = self.recorder
        if self.postcopy:
            assert dst is not None and recorder is not None
            if self.status == "completed":
                meta["dst_query_status"] = dst.qmp.execute("query-status")
                dst.qmp.poll_events(0.05)
                meta["events_dst"] = dst.qmp.events
                ram_dst, hmp_out = dst.pmemsave("guest-ram-dst.bin")
                meta["hmp_pmemsave_dst"] = f'pmemsave 0 {spec.ram_bytes} "guest-ram-dst.bin"'
                meta["hmp_pmemsave_dst_out"] = hmp_out
                raw["guest-ram-dst.bin"] = ram_dst
                diff = [i for i in range(0, len(ram_src), 4096) if ram_src[i:i + 4096] != ram_dst[i:i + 4096]]
                meta["src_vs_dst_ram"] = {"differing_pages": len(diff),
                                          "first_differing_offsets": [hex(i) for i in diff[:64]]}
            meta["dst_stderr"] = dst.stderr_text()
            for i in range(recorder.connections):
                raw[f"fwd-{i}.bin"] = (wd / f"fwd-{i}.bin").read_bytes()
                raw[f"ret-{i}.bin"] = (wd / f"ret-{i}.bin").read_bytes()
        elif self.multifd:
            assert recorder is not None
            chans = []
            for i in range(recorder.connections):
                data = (wd / f"channel-{i}.bin").read_bytes()
                raw[f"channel-{i}.bin"] = data
                chans.append({"file": f"channel-{i}.bin", "bytes": len(data), "sha256": _sha256(data),
                              "first4": data[:4].hex()})
            meta["recorded_channels"] = chans
            meta["main_channel"] = "channel-0.bin"
        else:
            path = wd / "stream.bin"
            raw["stream.bin"] = path.read_bytes() if path.exists() else b""
        if recorder is not None:
            raw["chunks.jsonl"] = "".join(json.dumps(c) + "\n" for c in recorder.chunks).encode()
            meta["chunks_jsonl"] = {"lines": len(recorder.chunks),
                                    "t": "seconds since the QMP migrate command was sent (time.monotonic)"}
        meta["src_stderr"] = src.stderr_text()


_FINAL = ("completed", "failed", "cancelled")


def _record(meta: dict[str, Any], spec: MachineSpec, wd: Path, out: Path, caps: list[str],
            params: dict[str, Any], dst_params: dict[str, Any], mode: str, multifd: bool, *,
            replay: bool, zstd_level: int, keep_raw: bool, timeout: float, binary: str | None,
            **options: Any) -> None:
    rec = _Recording(meta, spec, wd, caps, params, dst_params, mode, multifd, timeout=timeout,
                     binary=binary, **options)
    rec.run()
    raw = rec.raw
    main = raw.get("stream.bin") or raw.get("channel-0.bin") or raw.get("fwd-0.bin") or b""
    if main[:8] != QEVM_V3 and rec.status != "cancelled":
        raise CaptureError(f"recorded stream does not start with QEVM v3: {main[:8].hex()}")

    if replay and rec.status == "completed":
        meta["replay"] = _replay(spec, wd, raw, caps, dst_params, rec.postcopy, multifd, timeout, binary)

    files: dict[str, Any] = {}
    for fname, data in raw.items():
        entry = {"bytes": len(data), "sha256": _sha256(data), "zst_bytes": _zstd_write(out / fname, data,
                                                                                       zstd_level)}
        if keep_raw:
            (out / fname).write_bytes(data)
        files[fname] = entry
    meta["files"] = files


def _replay(spec: MachineSpec, wd: Path, raw: dict[str, bytes], caps: list[str], dst_params: dict[str, Any],
            postcopy: bool, multifd: bool, timeout: float, binary: str | None) -> dict[str, Any]:
    rdir = wd / "replay"
    rdir.mkdir()
    if multifd:
        names = sorted((n for n in raw if n.startswith("channel-")), key=lambda n: int(n[8:-4]))
    else:
        names = ["fwd-0.bin" if postcopy else "stream.bin"]
    paths = []
    for n in names:
        (rdir / n).write_bytes(raw[n])
        paths.append(rdir / n)
    res = load_stream(paths, spec, caps, dst_params, timeout=timeout, binary=binary, folder=rdir)
    want = _sha256(raw["guest-ram.bin"])
    got = _sha256(res.ram)
    out: dict[str, Any] = {
        "matched": got == want,
        "load_wall_s": res.load_wall_s,
        "cmdline_replay": res.cmdline,
        "migrate_incoming_uri": res.incoming_uri,
        "qmp_set_parameters_dst": dst_params,
        "dst_query_migrate": {"status": res.query_migrate.get("status")},
        "dst_query_status": res.query_status,
        "sha256_replay_ram": got,
        "replay_stderr": res.stderr,
    }
    if postcopy:
        ret = res.return_path[0] if res.return_path else b""
        raw["ret-replay.bin"] = ret
        out["matched_dst_dump"] = got == _sha256(raw.get("guest-ram-dst.bin", b""))
        out["what"] = ("fwd-0.bin fed to a fresh -S -incoming defer destination (postcopy-ram) over a unix "
                       "socket; matched = its pmemsave == guest-ram.bin (source, stopped at switchover)")
    if not out["matched"]:
        a, b = raw["guest-ram.bin"], res.ram
        diff = [i for i in range(0, len(a), 4096) if a[i:i + 4096] != b[i:i + 4096]]
        out["differing_pages"] = len(diff)
        out["first_differing_offsets"] = [hex(i) for i in diff[:32]]
    return out


# --- CLI ------------------------------------------------------------------------------------

def build_parser(*, prog: str = "ramlab capture", out_dir: bool = True,
                 description: str = "Record a real QEMU migration of the ramlab test guest "
                                    "(needs qemu-system-x86_64).",
                 epilog: str = "example: ramlab capture data/xbzrle --ram 16M --xbzrle --cache-size 4M",
                 ) -> argparse.ArgumentParser:
    """The options of ``ramlab capture`` (``ramlab watch`` takes the same, without ``OUT_DIR``)."""
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog)
    if out_dir:
        p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    p.add_argument("--ram", type=_ram_arg, default="16M", metavar="SIZE",
                   help="guest RAM, whole MiB, at least 4M (default 16M)")
    p.add_argument("--machine", choices=["pc", "q35"], default="pc", help="machine type (default pc)")
    p.add_argument("--xbzrle", action="store_true", help="enable the xbzrle capability")
    p.add_argument("--cache-size", type=size_arg, default="4M", metavar="SIZE", help="xbzrle-cache-size (default 4M)")
    p.add_argument("--compress", action="store_true", help="enable the compress capability (zlib)")
    p.add_argument("--compress-threads", type=int_range_arg(1, 255), default=2, metavar="N",
                   help="compress-threads, 1-255 (default 2)")
    p.add_argument("--compress-level", type=int, default=1, choices=range(10), metavar="0-9",
                   help="compress-level, zlib 0-9 (default 1)")
    p.add_argument("--multifd", type=int_range_arg(1, 255), metavar="N",
                   help="multifd with N channels, 1-255 (unix socket recorder)")
    p.add_argument("--multifd-compression", choices=["none", "zlib", "zstd"], help="multifd-compression")
    p.add_argument("--postcopy", action="store_true", help="postcopy-ram with a live destination via a proxy")
    p.add_argument("--postcopy-after", type=count_arg, default=2, metavar="SYNCS",
                   help="send migrate-start-postcopy after this many dirty syncs (default 2)")
    p.add_argument("--postcopy-bandwidth", type=size_arg, default="1M", metavar="SIZE",
                   help="max-postcopy-bandwidth in bytes/s (default 1M)")
    p.add_argument("--hugepages", action="store_true", help="RAM in a memory-backend-file (2 MiB pages on "
                   "hugetlbfs when root)")
    p.add_argument("--hugetlbfs", default="auto", help="'auto' (mount one when root), 'off', or a mount path")
    p.add_argument("--bandwidth", type=size_arg, default=None, metavar="SIZE",
                   help="max-bandwidth in bytes/s (default RAM/2, e.g. 8M for 16M)")
    p.add_argument("--downtime-ms", type=int_range_arg(0, 2_000_000), default=1, metavar="MS",
                   help="initial downtime-limit in ms, 0-2000000 (default 1)")
    p.add_argument("--relax-after", type=count_arg, default=4, metavar="SYNCS",
                   help="raise downtime-limit to 10 s after this many syncs (default 4; 0: never)")
    p.add_argument("--exec", action="store_true",
                   help="precopy: QEMU writes exec:cat > stream.bin (no chunk log) instead of the recorder's socket")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                   help="extra migrate-set-parameters entry (repeatable; ints parsed)")
    p.add_argument("--cap", action="append", default=[], metavar="CAPABILITY",
                   help="extra migration capability (repeatable)")
    p.add_argument("--note", default="", help="free text stored in meta.json")
    p.add_argument("--no-replay", action="store_true", help="skip the replay validation")
    p.add_argument("--keep-raw", action="store_true", help="also keep uncompressed files")
    p.add_argument("--zstd-level", type=int_range_arg(1, 22), default=19, metavar="1-22",
                   help="zstd level of the saved files (default 19)")
    p.add_argument("--timeout", type=seconds_arg, default=120.0, metavar="S",
                   help="seconds before giving up, > 0 (default 120)")
    return p


def capture_main(argv: Sequence[str] | None = None) -> int:
    """``ramlab capture OUT_DIR [options]``; returns the exit code (0 = replay matched)."""
    args = build_parser().parse_args(argv)
    try:
        meta = capture(args.out_dir, **capture_kwargs(args))
    except RamlabError as exc:
        print(f"ramlab capture: error: {exc}")
        return 1
    q = meta.get("query_migrate_final", {}).get("ram", {})
    size = sum(f["zst_bytes"] for f in meta["files"].values())
    print(f"{args.out_dir}: {meta['mode']} caps={meta['capabilities']} syncs={q.get('dirty-sync-count')} "
          f"normal={q.get('normal')} duplicate={q.get('duplicate')} "
          f"postcopy-requests={q.get('postcopy-requests')} files={size} bytes (zstd)")
    if "replay" in meta:
        print(f"replay matched: {meta['replay']['matched']}")
        return 0 if meta["replay"]["matched"] else 2
    return 0


def capture_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`capture` keyword arguments of parsed :func:`build_parser` options."""
    extra: dict[str, Any] = {}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            extra[k] = int(v)
        except ValueError:
            extra[k] = v
    return dict(
        machine=args.machine,
        ram_mib=parse_size(args.ram, "--ram") >> 20,
        capabilities=args.cap,
        parameters=extra,
        mode="postcopy" if args.postcopy else "precopy",
        multifd_channels=args.multifd,
        multifd_compression=args.multifd_compression,
        xbzrle_cache_size=parse_size(args.cache_size, "--cache-size") if args.xbzrle else None,
        compress_threads=args.compress_threads if args.compress else None,
        compress_level=args.compress_level if args.compress else None,
        max_bandwidth=parse_size(args.bandwidth, "--bandwidth") if args.bandwidth else None,
        downtime_limit_ms=args.downtime_ms,
        relax_after_syncs=args.relax_after or None,
        postcopy_after_syncs=args.postcopy_after,
        max_postcopy_bandwidth=parse_size(args.postcopy_bandwidth, "--postcopy-bandwidth"),
        hugepages=args.hugepages,
        hugetlbfs=args.hugetlbfs,
        note=args.note,
        replay=not args.no_replay,
        keep_raw=args.keep_raw,
        zstd_level=args.zstd_level,
        timeout=args.timeout,
        transport="exec" if args.exec else "unix",
    )


if __name__ == "__main__":
    raise SystemExit(capture_main())
