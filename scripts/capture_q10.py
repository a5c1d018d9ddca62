#!/usr/bin/env python3
"""Record the QEMU 10 captures of ``data/q10/`` with Debian trixie's QEMU in a chroot.

Usage (root; the chroot lives outside the repository and is never committed)::

    debootstrap --variant=minbase --include=qemu-system-x86 trixie ../trixie http://deb.debian.org/debian
    .venv/bin/python scripts/capture_q10.py data/q10 --chroot ../trixie            # all captures
    .venv/bin/python scripts/capture_q10.py data/q10 --only mapped-ram                 # one of them

How QEMU 10 runs: host ``/tmp`` (where :mod:`ramlab.capture` makes its work folders), ``/dev`` and
``/proc`` are bind-mounted into the chroot, and a wrapper ``<chroot>.bin/qemu-system-x86_64`` runs
``chroot <root> sh -c 'cd $PWD && exec qemu-system-x86_64 ...'``, so paths and unix sockets
(QMP, migration) have the same names inside and outside the chroot. The wrapper ``exec``s QEMU, so
the process ramlab starts *is* QEMU and is stopped by its own pid.

Captures (16 MiB ``pc`` guest running ramlab's ``guest.elf``):

* ``q10-mapped-ram``: ``migrate file:stream.bin`` with the ``mapped-ram`` capability, guest
  paused (``stop``) first so that every page is scanned exactly once: QEMU's ``normal`` counter
  equals the pages set in the bitmaps and ``duplicate`` the pages left clear.
* ``q10-mapped-ram-multifd`` (``--only mapped-ram-multifd``, not committed): same with ``multifd``
  (2 channels) writing the pages at their file offsets, guest *running* (pages rewritten in place;
  the bitmap is the final word).
* ``q10-xbzrle``: precopy with XBZRLE (``exec:cat > stream.bin``), via :func:`ramlab.capture.run.capture`.
* ``q10-postcopy``: postcopy-ram through the recording proxy (forward stream and return path);
  the destination's RAM dump is dropped to keep ``data/q10`` small (its sha256 stays in meta.json).

Each capture is validated by loading it into a fresh QEMU 10 whose RAM dump must equal the
source's ``pmemsave`` (``meta.json`` -> ``replay.matched``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ramlab.capture.qemu import (
    MachineSpec,
    QemuProcess,
    qemu_version,
    set_migration_config,
    wait_migration,
    work_dir,
)
from ramlab.capture.run import _wait_guest, _zstd_write, capture

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "trixie"  # a chroot beside the repository
ALL = ("mapped-ram", "mapped-ram-multifd", "xbzrle", "postcopy")
DEFAULT = ("mapped-ram", "xbzrle", "postcopy")  # committed in data/q10 (size budget); multifd variant on demand


def _mounted(path: Path) -> bool:
    want = str(path.resolve())
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == want for line in fh)


def setup_chroot(root: Path) -> str:
    """Bind-mount ``/tmp``, ``/dev`` and ``/proc`` into ``root`` and write the QEMU wrapper.

    Returns the wrapper's path (pass it as ``binary=`` to ramlab's capture functions).
    """
    if not (root / "usr/bin/qemu-system-x86_64").exists():
        raise SystemExit(f"{root}: no qemu-system-x86_64; create the chroot first (see this script's docstring)")
    for sub, args in (("tmp", ["--bind", "/tmp"]), ("dev", ["--bind", "/dev"]), ("proc", ["-t", "proc", "proc"])):
        target = root / sub
        if not _mounted(target):
            subprocess.run(["mount", *args, str(target)], check=True)
    bindir = Path(str(root) + ".bin")
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "qemu-system-x86_64"
    wrapper.write_text(
        "#!/bin/sh\n"
        # outside /tmp (e.g. `--version` from the repo) the folder does not exist in the chroot: run in /
        f"exec chroot {root} /bin/sh -c 'cd \"$0\" 2>/dev/null || cd /; exec qemu-system-x86_64 \"$@\"' "
        "\"$PWD\" \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def capture_mapped_ram(out: Path, binary: str, *, multifd: int | None = None, paused: bool = True,
                       ram_mib: int = 16, timeout: float = 120.0) -> dict[str, Any]:
    """One ``file:`` migration with ``mapped-ram`` (and optionally multifd) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    spec = MachineSpec(machine="pc", ram_mib=ram_mib)
    caps = ["mapped-ram"] + (["multifd"] if multifd else [])
    params: dict[str, Any] = {"multifd-channels": multifd} if multifd else {}
    meta: dict[str, Any] = {
        "name": out.name,
        "machine": "pc",
        "ram_mib": ram_mib,
        "kernel": "guest.elf",
        "capabilities": caps,
        "qmp_set_parameters": params,
        "guest_paused_before_migrate": paused,
        "qemu_version_cli": qemu_version(binary),
        "qemu": "Debian trixie qemu-system-x86 in a chroot (scripts/capture_q10.py)",
        "recorded_by": "scripts/capture_q10.py capture_mapped_ram",
    }
    raw: dict[str, bytes] = {}
    with work_dir("ramlab-q10-") as wd:
        stream = wd / "stream.bin"
        with QemuProcess(wd, "src", spec, binary=binary) as src:
            meta["cmdline_src"] = src.cmdline
            meta["qemu_version_qmp"] = src.qmp.greeting.get("version") if src.qmp.greeting else None
            meta["guest_passes_at_start"] = _wait_guest(src, 2, timeout=30.0)
            if paused:
                src.qmp.execute("stop")
            set_migration_config(src, caps, params)
            meta["migrate_capabilities_src"] = [c for c in src.qmp.execute("query-migrate-capabilities")
                                                if c.get("state")]
            meta["migrate_parameters_src"] = src.qmp.execute("query-migrate-parameters")
            meta["info_ramblock_src"] = src.hmp("info ramblock")
            meta["machine_type_resolved"] = src.qmp.execute("qom-get", {"path": "/machine", "property": "type"})
            uri = f"file:{stream}"
            meta["migrate_uri"] = "file:<work folder>/stream.bin"
            t0 = time.monotonic()
            src.qmp.execute("migrate", {"uri": uri})
            final = wait_migration(src, timeout=timeout)
            meta["migrate_wall_s"] = round(time.monotonic() - t0, 3)
            meta["query_migrate_final"] = final
            ram_src, hmp_out = src.pmemsave("guest-ram.bin")
            meta["hmp_pmemsave_src"] = f'pmemsave 0 {spec.ram_bytes} "guest-ram.bin"'
            raw["guest-ram.bin"] = ram_src
            meta["src_stderr"] = src.stderr_text()
        raw["stream.bin"] = stream.read_bytes()
        meta["stream_apparent_bytes"] = stream.stat().st_size
        meta["stream_allocated_bytes"] = stream.stat().st_blocks * 512
        # replay: load the file into a fresh QEMU 10 and compare its RAM with the source's
        rdir = wd / "replay"
        with QemuProcess(rdir, "load", spec, incoming="defer", paused=True, binary=binary) as dst:
            set_migration_config(dst, caps, params)
            t0 = time.monotonic()
            dst.qmp.execute("migrate-incoming", {"uri": uri})
            info = wait_migration(dst, timeout=timeout)
            ram_dst, _ = dst.pmemsave("load-ram.bin")
            meta["replay"] = {
                "matched": _sha256(ram_dst) == _sha256(ram_src),
                "cmdline_replay": dst.cmdline,
                "migrate_incoming_uri": "file:<work folder>/stream.bin",
                "load_wall_s": round(time.monotonic() - t0, 3),
                "dst_query_migrate": {"status": info.get("status")},
                "replay_stderr": dst.stderr_text(),
            }
    files: dict[str, Any] = {}
    for fname, data in raw.items():
        files[fname] = {"bytes": len(data), "sha256": _sha256(data), "zst_bytes": _zstd_write(out / fname, data, 19)}
    meta["files"] = files
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="output folder (data/q10)")
    p.add_argument("--chroot", type=Path, default=DEFAULT_ROOT, help="trixie chroot with qemu-system-x86")
    p.add_argument("--only", action="append", choices=ALL, help="record only these (repeatable)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (chroot, bind mounts)")
    binary = setup_chroot(args.chroot)
    for what in args.only or DEFAULT:
        folder = args.out / f"q10-{what}"
        with contextlib.suppress(FileNotFoundError):
            for f in folder.iterdir():
                f.unlink()
        if what == "mapped-ram":
            meta = capture_mapped_ram(folder, binary)
        elif what == "mapped-ram-multifd":
            meta = capture_mapped_ram(folder, binary, multifd=2, paused=False)
        elif what == "xbzrle":
            meta = capture(folder, xbzrle_cache_size=4 << 20, binary=binary,
                           note="QEMU 10.0 (Debian trixie chroot), scripts/capture_q10.py")
        else:
            meta = capture(folder, mode="postcopy", binary=binary,
                           note="QEMU 10.0 (Debian trixie chroot), scripts/capture_q10.py")
            # size budget: the destination's dump (its guest ran on) is not needed to check the stream
            dropped = folder / "guest-ram-dst.bin.zst"
            dropped.unlink()
            meta["files"]["guest-ram-dst.bin"]["dropped"] = "not committed (size budget); sha256 kept"
            (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        ram = meta["query_migrate_final"].get("ram", {})
        size = sum(f["zst_bytes"] for f in meta["files"].values())
        print(f"{folder}: normal={ram.get('normal')} duplicate={ram.get('duplicate')} "
              f"syncs={ram.get('dirty-sync-count')} replay={meta['replay']['matched']} {size} bytes (zstd)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
