"""Record a real QEMU migration of the ramlab test guest: ``ramlab capture OUT_DIR``.

:func:`capture` starts a source QEMU running ``guest.elf``, waits until the guest is
dirtying memory, sets migration capabilities and parameters over QMP, migrates, samples
``query-migrate`` at every dirty-bitmap sync, dumps the source RAM (``pmemsave``), loads
the recorded stream into a second QEMU and compares the RAM dumps (sha256), and writes
zstd-compressed files plus ``meta.json`` (the same keys as ``shared/captures``)::

    from ramlab.capture.run import capture
    meta = capture("data/plain", ram_mib=16)                                   # precopy, exec:
    meta = capture("data/xbzrle", capabilities=["xbzrle"], xbzrle_cache_size=4 << 20)
    meta = capture("data/multifd", multifd_channels=2, multifd_compression="zstd")
    meta = capture("data/postcopy", mode="postcopy")
    assert meta["replay"]["matched"]

Transports: precopy goes to ``exec:cat > stream.bin``; multifd needs sockets, so the
source migrates to ``unix:mig.sock`` where a :class:`~ramlab.capture.proxy.Recorder`
acts as the destination (sink) and stores each connection as ``channel-N.bin``
(0 = main); postcopy needs a live destination, so source -> ``unix:proxy.sock`` ->
recorder (proxy) -> destination QEMU ``unix:dst.sock``, recording ``fwd-0.bin`` and
the return path ``ret-0.bin``, and ``migrate-start-postcopy`` is sent after a few syncs.
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
from ramlab.errors import CaptureError, RamlabError

__all__ = ["capture", "capture_main", "parse_size", "STATUS_ADDR"]

STATUS_ADDR = 0x300000  # guest status page: "RAMLAB01", pass counter at +8, ready flag at +0x10
QEVM_V3 = bytes.fromhex("5145564d00000003")


def parse_size(text: str | int) -> int:
    """``"16M"`` -> 16 MiB in bytes; plain numbers are bytes; suffixes K, M, G (binary).

    >>> parse_size("4M"), parse_size("512K"), parse_size("4096")
    (4194304, 524288, 4096)
    """
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1:], 1)
    if mult != 1:
        s = s[:-1]
    try:
        return int(float(s) * mult)
    except ValueError:
        raise RamlabError(f"bad size {text!r} (examples: 16M, 512K, 4096)") from None


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
    relax_after_syncs: int = 4,
    postcopy_after_syncs: int = 2,
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
    Raises :class:`~ramlab.errors.CaptureError` when QEMU fails.
    """
    if mode not in ("precopy", "postcopy"):
        raise RamlabError(f"mode must be 'precopy' or 'postcopy', not {mode!r}")
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
        "mode": "multifd" if multifd else ("postcopy-running-dst" if mode == "postcopy" else "exec"),
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
                replay=replay, zstd_level=zstd_level, keep_raw=keep_raw, timeout=timeout, binary=binary)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _record(meta: dict[str, Any], spec: MachineSpec, wd: Path, out: Path, caps: list[str],
            params: dict[str, Any], dst_params: dict[str, Any], mode: str, multifd: bool, *,
            relax_after_syncs: int, postcopy_after_syncs: int, min_guest_passes: int,
            guest_init_wait_s: float, replay: bool, zstd_level: int, keep_raw: bool, timeout: float,
            binary: str | None) -> None:
    postcopy = mode == "postcopy"
    raw: dict[str, bytes] = {}
    src = QemuProcess(wd, "src", spec, binary=binary)
    dst: QemuProcess | None = None
    recorder: Recorder | None = None
    try:
        src.start()
        meta["cmdline_src"] = src.cmdline
        meta["qemu_version_qmp"] = src.qmp.greeting.get("version") if src.qmp.greeting else None
        if postcopy:
            dst = QemuProcess(wd, "dst", spec, incoming="defer", binary=binary).start()
            meta["cmdline_dst"] = dst.cmdline
        if spec.kernel is not None:
            meta["guest_passes_at_start"] = _wait_guest(src, min_guest_passes, timeout=min(timeout, 30.0))
        time.sleep(guest_init_wait_s)
        meta["guest_init_wait_s"] = guest_init_wait_s
        set_migration_config(src, caps, params)
        meta["qmp_set_parameters_src"] = params
        meta["migrate_capabilities_src"] = [c for c in src.qmp.execute("query-migrate-capabilities")
                                            if c.get("state")]
        meta["migrate_parameters_src"] = src.qmp.execute("query-migrate-parameters")
        meta["info_ramblock_src"] = src.hmp("info ramblock")
        with contextlib.suppress(CaptureError):
            meta["machine_type_resolved"] = src.qmp.execute("qom-get", {"path": "/machine",
                                                                        "property": "type"})
        if postcopy:
            assert dst is not None
            set_migration_config(dst, caps, dst_params)
            meta["qmp_set_parameters_dst"] = dst_params
            meta["info_ramblock_dst"] = dst.hmp("info ramblock")
            dst.qmp.execute("migrate-incoming", {"uri": "unix:dst.sock"})
            meta["migrate_incoming_uri_dst"] = "unix:dst.sock"
            recorder = Recorder(wd / "proxy.sock", wd, target=wd / "dst.sock").start()
            uri = "unix:proxy.sock"
            meta["migrate_uri"] = "unix:proxy.sock (proxy -> unix:dst.sock)"
        elif multifd:
            recorder = Recorder(wd / "mig.sock", wd, prefix="channel").start()
            uri = "unix:mig.sock"
            meta["migrate_uri"] = uri
        else:
            uri = "exec:cat > stream.bin"
            meta["migrate_uri"] = uri
        if not postcopy:
            meta["relax_rule"] = (f"downtime-limit={params['downtime-limit']} ms until dirty-sync-count >= "
                                  f"{relax_after_syncs}, then 10000 ms")

        samples: list[dict[str, Any]] = []
        t0 = time.monotonic()
        if recorder is not None:
            recorder.t0 = t0
        src.qmp.execute("migrate", {"uri": uri})
        deadline = t0 + timeout
        last_key: tuple[Any, ...] | None = None
        relaxed = switched = False
        dst_last: str | None = None
        dst_done = False
        while True:
            now = time.monotonic()
            if now > deadline:
                raise CaptureError(f"migration did not finish in {timeout}s; src stderr: {src.stderr_text()}")
            if not src.alive():
                raise CaptureError(f"source QEMU exited: {src.stderr_text()}")
            info = src.query_migrate()
            ram = info.get("ram") or {}
            status = info.get("status")
            key = (status, ram.get("dirty-sync-count"))
            if key != last_key:
                samples.append(_sample(info, now - t0, "src" if postcopy else None))
                last_key = key
            syncs = ram.get("dirty-sync-count") or 0
            if status in ("failed", "cancelled"):
                extra = f"; dst stderr: {dst.stderr_text()}" if dst else ""
                raise CaptureError(f"migration {status}: {info.get('error-desc', '')}; src stderr: "
                                   f"{src.stderr_text()}{extra}")
            if postcopy:
                assert dst is not None
                if not switched and status == "active" and syncs >= postcopy_after_syncs:
                    src.qmp.execute("migrate-start-postcopy")
                    samples.append({"t": round(time.monotonic() - t0, 4), "event": "migrate-start-postcopy"})
                    switched = True
                if switched and not dst_done:
                    dinfo = dst.query_migrate()
                    if dinfo.get("status") != dst_last:
                        dst_last = dinfo.get("status")
                        samples.append(_sample(dinfo, time.monotonic() - t0, "dst"))
                    if dst_last == "completed":
                        dst.qmp.execute("stop")
                        samples.append({"t": round(time.monotonic() - t0, 4), "event": "dst stop"})
                        meta["dst_query_migrate"] = dinfo
                        dst_done = True
                    elif dst_last == "failed":
                        raise CaptureError(f"destination failed: {dst.stderr_text()}")
                if status == "completed" and dst_done:
                    break
            else:
                if not relaxed and status == "active" and syncs >= relax_after_syncs:
                    src.qmp.execute("migrate-set-parameters", {"downtime-limit": 10000})
                    samples.append({"t": round(time.monotonic() - t0, 4), "event": "relaxed downtime-limit"})
                    relaxed = True
                if status == "completed":
                    break
            time.sleep(0.002)
        meta["migrate_wall_s"] = round(time.monotonic() - t0, 3)
        final = src.query_migrate()
        meta["query_migrate_final"] = final
        if samples and samples[-1].get("status") != "completed":
            samples.append(_sample(final, time.monotonic() - t0, "src" if postcopy else None))
        meta["progress_samples"] = samples
        src.qmp.poll_events(0.05)
        meta["events_src"] = src.qmp.events
        meta["query_status_src_after"] = src.qmp.execute("query-status")
        if recorder is not None:
            recorder.stop(timeout=10.0)
        ram_src, hmp_out = src.pmemsave("guest-ram.bin")
        meta["hmp_pmemsave_src"] = f'pmemsave 0 {spec.ram_bytes} "guest-ram.bin"'
        meta["hmp_pmemsave_src_out"] = hmp_out
        raw["guest-ram.bin"] = ram_src
        if postcopy:
            assert dst is not None and recorder is not None
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
            raw["chunks.jsonl"] = "".join(json.dumps(c) + "\n" for c in recorder.chunks).encode()
            meta["chunks_jsonl"] = {"lines": len(recorder.chunks),
                                    "t": "seconds since the QMP migrate command was sent (time.monotonic)"}
        elif multifd:
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
            raw["stream.bin"] = (wd / "stream.bin").read_bytes()
        meta["src_stderr"] = src.stderr_text()
    finally:
        if recorder is not None:
            with contextlib.suppress(Exception):
                recorder.stop(timeout=0.5)
        if dst is not None:
            dst.quit()
        src.quit()

    main = raw.get("stream.bin") or raw.get("channel-0.bin") or raw.get("fwd-0.bin") or b""
    if main[:8] != QEVM_V3:
        raise CaptureError(f"recorded stream does not start with QEVM v3: {main[:8].hex()}")

    if replay:
        meta["replay"] = _replay(spec, wd, raw, caps, dst_params, postcopy, multifd, timeout, binary)

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

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ramlab capture",
        description="Record a real QEMU migration of the ramlab test guest (needs qemu-system-x86_64).",
        epilog="example: ramlab capture data/xbzrle --ram 16M --xbzrle --cache-size 4M",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created)")
    p.add_argument("--ram", default="16M", help="guest RAM (default 16M)")
    p.add_argument("--machine", choices=["pc", "q35"], default="pc", help="machine type (default pc)")
    p.add_argument("--xbzrle", action="store_true", help="enable the xbzrle capability")
    p.add_argument("--cache-size", default="4M", help="xbzrle-cache-size (default 4M)")
    p.add_argument("--compress", action="store_true", help="enable the compress capability (zlib)")
    p.add_argument("--compress-threads", type=int, default=2, help="compress-threads (default 2)")
    p.add_argument("--compress-level", type=int, default=1, help="compress-level, zlib 0-9 (default 1)")
    p.add_argument("--multifd", type=int, metavar="N", help="multifd with N channels (unix socket recorder)")
    p.add_argument("--multifd-compression", choices=["none", "zlib", "zstd"], help="multifd-compression")
    p.add_argument("--postcopy", action="store_true", help="postcopy-ram with a live destination via a proxy")
    p.add_argument("--postcopy-after", type=int, default=2, metavar="SYNCS",
                   help="send migrate-start-postcopy after this many dirty syncs (default 2)")
    p.add_argument("--postcopy-bandwidth", default="1M", help="max-postcopy-bandwidth (default 1M)")
    p.add_argument("--hugepages", action="store_true", help="RAM in a memory-backend-file (2 MiB pages on "
                   "hugetlbfs when root)")
    p.add_argument("--hugetlbfs", default="auto", help="'auto' (mount one when root), 'off', or a mount path")
    p.add_argument("--bandwidth", default=None,
                   help="max-bandwidth in bytes/s (default RAM/2, e.g. 8M for 16M)")
    p.add_argument("--downtime-ms", type=int, default=1, help="initial downtime-limit (default 1)")
    p.add_argument("--relax-after", type=int, default=4, metavar="SYNCS",
                   help="raise downtime-limit to 10 s after this many syncs (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                   help="extra migrate-set-parameters entry (repeatable; ints parsed)")
    p.add_argument("--cap", action="append", default=[], metavar="CAPABILITY",
                   help="extra migration capability (repeatable)")
    p.add_argument("--note", default="", help="free text stored in meta.json")
    p.add_argument("--no-replay", action="store_true", help="skip the replay validation")
    p.add_argument("--keep-raw", action="store_true", help="also keep uncompressed files")
    p.add_argument("--zstd-level", type=int, default=19, help="zstd level of the saved files (default 19)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up (default 120)")
    return p


def capture_main(argv: Sequence[str] | None = None) -> int:
    """``ramlab capture OUT_DIR [options]``; returns the exit code (0 = replay matched)."""
    args = build_parser().parse_args(argv)
    extra: dict[str, Any] = {}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            extra[k] = int(v)
        except ValueError:
            extra[k] = v
    try:
        meta = capture(
            args.out_dir,
            machine=args.machine,
            ram_mib=parse_size(args.ram) >> 20,
            capabilities=args.cap,
            parameters=extra,
            mode="postcopy" if args.postcopy else "precopy",
            multifd_channels=args.multifd,
            multifd_compression=args.multifd_compression,
            xbzrle_cache_size=parse_size(args.cache_size) if args.xbzrle else None,
            compress_threads=args.compress_threads if args.compress else None,
            compress_level=args.compress_level if args.compress else None,
            max_bandwidth=parse_size(args.bandwidth) if args.bandwidth else None,
            downtime_limit_ms=args.downtime_ms,
            relax_after_syncs=args.relax_after,
            postcopy_after_syncs=args.postcopy_after,
            max_postcopy_bandwidth=parse_size(args.postcopy_bandwidth),
            hugepages=args.hugepages,
            hugetlbfs=args.hugetlbfs,
            note=args.note,
            replay=not args.no_replay,
            keep_raw=args.keep_raw,
            zstd_level=args.zstd_level,
            timeout=args.timeout,
        )
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


if __name__ == "__main__":
    raise SystemExit(capture_main())
