#!/usr/bin/env python3
"""Record the bundled captures of another QEMU version with a Debian release's QEMU in a chroot.

One script for every release (the chroot lives outside the repository and is never committed):

=========  ==========  =================  ==============================================================
release    QEMU        default output     captures (``--only``; committed ones first, ``*`` = default)
=========  ==========  =================  ==============================================================
bullseye   5.2         ramlab/data/q52    xbzrle*, multifd-zlib*, postcopy*, plain, compress, multifd
trixie     10.0        ramlab/data/q10    mapped-ram*, xbzrle*, postcopy*, mapped-ram-multifd
=========  ==========  =================  ==============================================================

Usage (root: chroot and bind mounts)::

    debootstrap --variant=minbase --include=qemu-system-x86 bullseye ../bullseye http://deb.debian.org/debian
    .venv/bin/python scripts/capture_chroot.py --release bullseye                  # default captures
    .venv/bin/python scripts/capture_chroot.py --release bullseye --only compress  # one of them
    .venv/bin/python scripts/capture_chroot.py --release trixie --chroot ../trixie
    eval "$(.venv/bin/python scripts/capture_chroot.py --release bullseye --mount)"  # RAMLAB_QEMU52=...
    .venv/bin/python scripts/capture_chroot.py --release bullseye --umount

How the chroot's QEMU runs: host ``/tmp`` (where :mod:`ramlab.capture` makes its work folders),
``/dev`` and ``/proc`` are bind-mounted into the chroot, and a wrapper
``<chroot>.bin/qemu-system-x86_64`` runs ``chroot <root> sh -c 'cd $PWD && exec qemu-system-x86_64
...'``, so paths and unix sockets (QMP, migration) have the same names inside and outside the
chroot. The wrapper ``exec``s QEMU, so the process ramlab starts *is* QEMU and is stopped by its
own pid. A recording run unmounts what it mounted when it ends (a bind-mounted ``/dev`` left
inside a folder is a trap for ``rm -r``); ``--mount`` leaves the mounts for tests that load
streams into that QEMU (``tests/test_qemu52.py`` reads ``$RAMLAB_QEMU52``) until ``--umount``.

Captures (16 MiB ``pc`` guest running ramlab's ``guest.elf``, all via
:func:`ramlab.capture.run.capture` except mapped-ram):

* ``plain``, ``xbzrle`` (4 MiB cache), ``compress`` (zlib, 2 threads, level 1; QEMU <= 9.0):
  precopy to ``exec:cat > stream.bin``.
* ``multifd`` / ``multifd-zlib`` / ``multifd-zstd``: 2 channels, no / zlib / zstd compression, the
  source migrating to ramlab's recorder (``channel-N.bin``). Debian bullseye's QEMU 5.2 was built
  without zstd for multifd (its ``MultiFDCompression`` enum is ``none``, ``zlib``).
* ``postcopy``: postcopy-ram through the recording proxy (forward stream and return path); the
  destination's RAM dump is dropped to keep the data small (its sha256 stays in meta.json).
* ``mapped-ram`` (QEMU >= 9.0): ``migrate file:stream.bin`` with the ``mapped-ram`` capability,
  guest paused (``stop``) first so that every page is scanned exactly once: QEMU's ``normal``
  counter equals the pages set in the bitmaps and ``duplicate`` the pages left clear.
  ``mapped-ram-multifd``: the same with ``multifd`` (2 channels), guest *running*.

Each capture is validated by loading it into a fresh QEMU of the same release whose RAM dump must
equal the source's ``pmemsave`` (``meta.json`` -> ``replay.matched``); the script exits 1 otherwise.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Release:
    """A Debian release whose ``qemu-system-x86`` records one folder of bundled captures."""

    name: str
    qemu: str            # QEMU version of the release's package ("5.2")
    prefix: str          # capture folder prefix and data folder name ("q52")
    captures: tuple[str, ...]
    default: tuple[str, ...]  # what is committed (size budget); the rest on demand

    @property
    def out(self) -> Path:
        return REPO / "ramlab" / "data" / self.prefix

    @property
    def chroot(self) -> Path:
        return REPO.parent / self.name  # beside the repository, never inside it

    @property
    def env_var(self) -> str:
        return "RAMLAB_QEMU" + self.qemu.replace(".", "")

    def note(self) -> str:
        return f"QEMU {self.qemu} (Debian {self.name} chroot), scripts/capture_chroot.py --release {self.name}"


RELEASES = {
    r.name: r
    for r in (
        Release("bullseye", "5.2", "q52",
                ("xbzrle", "multifd-zlib", "postcopy", "plain", "compress", "multifd"),
                ("xbzrle", "multifd-zlib", "postcopy")),
        Release("trixie", "10.0", "q10",
                ("mapped-ram", "xbzrle", "postcopy", "mapped-ram-multifd", "plain", "multifd", "multifd-zstd"),
                ("mapped-ram", "xbzrle", "postcopy")),
    )
}

_BINDS = (("tmp", ["--bind", "/tmp"]), ("dev", ["--bind", "/dev"]), ("proc", ["-t", "proc", "proc"]))


def _mounted(path: Path) -> bool:
    want = str(path.resolve())
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == want for line in fh)


def wrapper_path(root: Path) -> Path:
    """Where :func:`mount_chroot` writes the QEMU wrapper: ``<root>.bin/qemu-system-x86_64``."""
    return Path(str(root) + ".bin") / "qemu-system-x86_64"


def mount_chroot(root: Path) -> tuple[str, list[Path]]:
    """Bind-mount ``/tmp``, ``/dev`` and ``/proc`` into ``root`` and write the QEMU wrapper.

    Returns the wrapper's path (pass it as ``binary=`` to ramlab's capture functions) and the
    mount points this call mounted (the others were mounted already).
    """
    if not (root / "usr/bin/qemu-system-x86_64").exists():
        raise SystemExit(f"{root}: no qemu-system-x86_64; create the chroot first (see this script's docstring)")
    mounted = []
    for sub, args in _BINDS:
        target = root / sub
        if not _mounted(target):
            subprocess.run(["mount", *args, str(target)], check=True)
            mounted.append(target)
    wrapper = wrapper_path(root)
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(
        "#!/bin/sh\n"
        # outside /tmp (e.g. `--version` from the repo) the folder does not exist in the chroot: run in /
        f"exec chroot {root} /bin/sh -c 'cd \"$0\" 2>/dev/null || cd /; exec qemu-system-x86_64 \"$@\"' "
        "\"$PWD\" \"$@\"\n"
    )
    wrapper.chmod(0o755)
    return str(wrapper), mounted


def umount(targets: list[Path]) -> None:
    """Unmount ``targets`` (innermost last mounted first); a busy one is detached lazily."""
    for target in reversed(targets):
        if _mounted(target) and subprocess.run(["umount", str(target)]).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], check=True)


@contextlib.contextmanager
def chroot_qemu(root: Path) -> Iterator[str]:
    """The chroot's QEMU wrapper while the bind mounts are in place; unmounts what it mounted."""
    binary, mounted = mount_chroot(root)
    try:
        yield binary
    finally:
        umount(mounted)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def capture_mapped_ram(out: Path, binary: str, release: Release, *, multifd: int | None = None,
                       paused: bool = True, ram_mib: int = 16, timeout: float = 120.0) -> dict[str, Any]:
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
        "qemu": f"Debian {release.name} qemu-system-x86 in a chroot (scripts/capture_chroot.py)",
        "recorded_by": "scripts/capture_chroot.py capture_mapped_ram",
    }
    raw: dict[str, bytes] = {}
    with work_dir(f"ramlab-{release.prefix}-") as wd:
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
        # replay: load the file into a fresh QEMU of the same release and compare its RAM with the source's
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


def _multifd(compression: str | None) -> dict[str, Any]:
    return {"multifd_channels": 2, "multifd_compression": compression}


#: ``--only`` name -> :func:`ramlab.capture.run.capture` keyword arguments (mapped-ram has its own recorder)
CAPTURE_ARGS: dict[str, dict[str, Any]] = {
    "plain": {"transport": "exec"},
    "xbzrle": {"xbzrle_cache_size": 4 << 20, "transport": "exec"},
    "compress": {"compress_threads": 2, "compress_level": 1, "transport": "exec"},
    "multifd": _multifd(None),
    "multifd-zlib": _multifd("zlib"),
    "multifd-zstd": _multifd("zstd"),
    "postcopy": {"mode": "postcopy"},
}
MAPPED_RAM: dict[str, Callable[[Path, str, Release], dict[str, Any]]] = {
    "mapped-ram": lambda folder, binary, rel: capture_mapped_ram(folder, binary, rel),
    "mapped-ram-multifd": lambda folder, binary, rel: capture_mapped_ram(folder, binary, rel, multifd=2,
                                                                         paused=False),
}


def record(what: str, folder: Path, binary: str, release: Release) -> dict[str, Any]:
    """Record capture ``what`` into ``folder`` (emptied first) with the chroot's QEMU."""
    with contextlib.suppress(FileNotFoundError):
        for f in folder.iterdir():
            f.unlink()
    if what in MAPPED_RAM:
        return MAPPED_RAM[what](folder, binary, release)
    meta = capture(folder, binary=binary, note=release.note(), **CAPTURE_ARGS[what])
    if what == "postcopy":
        # size budget: the destination's dump (its guest ran on) is not needed to check the stream
        (folder / "guest-ram-dst.bin.zst").unlink()
        meta["files"]["guest-ram-dst.bin"]["dropped"] = "not committed (size budget); sha256 kept"
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--release", choices=sorted(RELEASES), required=True, help="Debian release of the chroot")
    p.add_argument("--chroot", type=Path, help="the release's chroot (default: ../RELEASE beside the repository)")
    p.add_argument("--out", type=Path, help="output folder (default: ramlab/data/<prefix>)")
    p.add_argument("--only", action="append", metavar="CAPTURE", help="record only these (repeatable)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--mount", action="store_true",
                     help="only mount the chroot and print NAME=wrapper for the tests (undo with --umount)")
    how.add_argument("--umount", action="store_true", help="only unmount the chroot's bind mounts")
    args = p.parse_args(argv)
    release = RELEASES[args.release]
    root = (args.chroot or release.chroot).resolve()
    unknown = sorted(set(args.only or ()) - set(release.captures))
    if unknown:
        p.error(f"{release.name} records {', '.join(release.captures)}; not {', '.join(unknown)}")
    if os.geteuid() != 0:
        raise SystemExit("needs root (chroot, bind mounts)")
    if args.umount:
        umount([root / sub for sub, _ in _BINDS])
        return 0
    if args.mount:
        binary, _ = mount_chroot(root)
        print(f"export {release.env_var}={binary}")
        return 0
    out = args.out or release.out
    failed = 0
    with chroot_qemu(root) as binary:
        print(f"{qemu_version(binary)} from {root}", file=sys.stderr)
        for what in args.only or release.default:
            folder = out / f"{release.prefix}-{what}"
            meta = record(what, folder, binary, release)
            ram = meta["query_migrate_final"].get("ram", {})
            size = sum(f["zst_bytes"] for f in meta["files"].values() if "dropped" not in f)
            failed += not meta["replay"]["matched"]
            print(f"{folder}: normal={ram.get('normal')} duplicate={ram.get('duplicate')} "
                  f"syncs={ram.get('dirty-sync-count')} replay={meta['replay']['matched']} {size} bytes (zstd)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
