"""Rebuild the ramlab test guest (``capture/guest/guest.elf``) from ``guest.S``.

The built ELF is committed (Binder and CI images may have no binutils); this module
rebuilds it reproducibly: the sources are copied into a temporary folder and assembled
there under fixed relative names, with no build id, so the same binutils give the same
bytes. ``python -m ramlab.capture.build`` rewrites the committed image::

    >>> from ramlab.capture.build import build_guest, GUEST_ELF
    >>> data = build_guest()                  # doctest: +SKIP
    >>> data == GUEST_ELF.read_bytes()        # doctest: +SKIP
    True
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ramlab.errors import CaptureError

__all__ = ["GUEST_DIR", "GUEST_ELF", "GUEST_SOURCE", "GUEST_LDSCRIPT", "binutils_available", "build_guest"]

GUEST_DIR = Path(__file__).resolve().parent / "guest"
GUEST_SOURCE = GUEST_DIR / "guest.S"
GUEST_LDSCRIPT = GUEST_DIR / "guest.ld"
GUEST_ELF = GUEST_DIR / "guest.elf"

AS_ARGS = ["--32"]
LD_ARGS = ["-m", "elf_i386", "-T", "guest.ld", "--build-id=none", "-z", "noexecstack"]


def binutils_available() -> bool:
    """True when GNU ``as`` and ``ld`` are on PATH (Debian package ``binutils``)."""
    return shutil.which("as") is not None and shutil.which("ld") is not None


def _run(cmd: list[str], cwd: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise CaptureError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")


def build_guest(out: str | Path | None = None) -> bytes:
    """Assemble and link the guest; return the ELF bytes (and write them to ``out`` if given).

    Raises :class:`~ramlab.errors.CaptureError` when binutils are missing or fail.
    """
    if not binutils_available():
        raise CaptureError("building the guest needs GNU binutils (`as`, `ld`): apt-get install binutils")
    ld_args = list(LD_ARGS)
    ld_help = subprocess.run(["ld", "--help"], capture_output=True, text=True).stdout
    if "--no-warn-rwx-segments" in ld_help:  # binutils >= 2.39; does not change the output
        ld_args.append("--no-warn-rwx-segments")
    with tempfile.TemporaryDirectory(prefix="ramlab-guest-") as tmp:
        shutil.copyfile(GUEST_SOURCE, Path(tmp) / "guest.S")
        shutil.copyfile(GUEST_LDSCRIPT, Path(tmp) / "guest.ld")
        _run(["as", *AS_ARGS, "-o", "guest.o", "guest.S"], tmp)
        _run(["ld", *ld_args, "-o", "guest.elf", "guest.o"], tmp)
        data = (Path(tmp) / "guest.elf").read_bytes()
    if out is not None:
        Path(out).write_bytes(data)
    return data


def main(argv: list[str] | None = None) -> int:
    """``python -m ramlab.capture.build [OUT]``: rebuild the guest (default: the committed path)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else GUEST_ELF
    data = build_guest(out)
    print(f"wrote {out} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
