"""Build QEMU's own ``migration/xbzrle.c`` from Debian's qemu source package, with our timing harness.

Used by ``bench_xbzrle.py`` so that the C column of its table is measured in the same run,
never quoted. Everything lands in a cache folder (nothing is committed): ``apt-get source
--download-only qemu`` through a private apt configuration whose lists are the ``deb-src``
twins of this machine's Debian sources, ``dpkg-source -x`` (Debian's patches applied), then
only ``migration/xbzrle.{c,h}`` and the two uleb128 helpers of ``util/cutils.c`` are kept and
compiled with Debian's build flags plus QEMU's own (``-fno-strict-aliasing -fno-common
-fwrapv``). The QEMU headers ``xbzrle.c`` includes are replaced by two small stand-ins.

    harness = build(Path("/tmp/cache"))   # raises Unavailable(reason) without source or compiler
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS_C = HERE / "xbzrle_harness.c"
QEMU_FLAGS = ["-std=gnu11", "-fno-strict-aliasing", "-fno-common", "-fwrapv"]
KEPT = {"migration/xbzrle.c": "xbzrle.c", "migration/xbzrle.h": "xbzrle.h", "util/cutils.c": "cutils.c"}

OSDEP_SHIM = """\
/* Stand-in for QEMU's qemu/osdep.h: what migration/xbzrle.c and the uleb128 helpers use. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#define g_assert(expr) do { if (!(expr)) { abort(); } } while (0)
"""
CUTILS_SHIM = """\
/* Stand-in for QEMU's qemu/cutils.h: the two helpers xbzrle.c calls (util/cutils.c). */
int uleb128_encode_small(uint8_t *out, uint32_t n);
int uleb128_decode_small(const uint8_t *in, uint32_t *n);
"""


class Unavailable(Exception):
    """QEMU's C cannot be built here (no source package, no compiler): the reason."""


@dataclass(frozen=True)
class Harness:
    binary: Path
    source_version: str  # the Debian source package version the C came from
    cflags: list[str]


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"{argv[0]}: {exc}") from exc
    if out.returncode != 0:
        raise Unavailable(f"{' '.join(argv[:3])}... failed: {(out.stderr or out.stdout).strip()[-400:]}")
    return out.stdout


def deb_src_lines() -> list[str]:
    """One-line ``deb-src`` entries for every ``deb`` source of this machine's apt configuration."""
    lines: list[str] = []
    etc = Path("/etc/apt")
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for f in files:
        if f.is_file():
            for line in f.read_text().splitlines():
                parts = line.split("#", 1)[0].split()
                if parts and parts[0] == "deb":
                    lines.append(" ".join(["deb-src", *parts[1:]]))
    for f in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", f.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            opts = f"[signed-by={fields['signed-by']}] " if fields.get("signed-by", "").startswith("/") else ""
            for uri in fields.get("uris", "").split():
                for suite in fields.get("suites", "").split():
                    lines.append(f"deb-src {opts}{uri} {suite} {fields.get('components', 'main')}")
    return lines


def installed_source_version() -> str | None:
    """Source version of the installed ``qemu-system-x86`` (so the C matches the QEMU on PATH)."""
    if shutil.which("dpkg-query") is None:
        return None
    out = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", "qemu-system-x86"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None if out.returncode == 0 else None


def fetch_sources(cache: Path) -> tuple[Path, str]:
    """The kept QEMU files in ``cache/qemu-files`` and the source package version."""
    files = cache / "qemu-files"
    stamp = files / "VERSION"
    if stamp.is_file() and all((files / n).is_file() for n in KEPT.values()):
        return files, stamp.read_text().strip()
    for tool in ("apt-get", "dpkg-source"):
        if shutil.which(tool) is None:
            raise Unavailable(f"{tool} not found (Debian's qemu source package is fetched with apt-get source)")
    srcs = deb_src_lines()
    if not srcs:
        raise Unavailable("no Debian apt sources on this machine to take deb-src lines from")
    apt = cache / "apt"
    for d in ("lists/partial", "cache/archives/partial", "parts", "dl"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text("\n".join(srcs) + "\n")
    opts = ["-o", f"Dir::Etc::SourceList={apt / 'sources.list'}", "-o", f"Dir::Etc::SourceParts={apt / 'parts'}",
            "-o", f"Dir::State::Lists={apt / 'lists'}", "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", "APT::Sandbox::User=root", "-q"]
    _run(["apt-get", *opts, "update"])
    version = installed_source_version()
    dl = apt / "dl"
    for f in dl.iterdir():
        f.unlink()
    try:
        _run(["apt-get", *opts, "source", "--download-only", f"qemu={version}" if version else "qemu"], cwd=dl)
    except Unavailable:
        if version is None:
            raise
        _run(["apt-get", *opts, "source", "--download-only", "qemu"], cwd=dl)  # the installed one is gone
    dsc = next(dl.glob("qemu_*.dsc"), None)
    if dsc is None:
        raise Unavailable("apt-get source downloaded no qemu .dsc")
    tree = cache / "qemu-tree"
    shutil.rmtree(tree, ignore_errors=True)
    _run(["dpkg-source", "--no-check", "-x", str(dsc), str(tree)])
    files.mkdir(exist_ok=True)
    for rel, name in KEPT.items():
        shutil.copyfile(tree / rel, files / name)
    ver = dsc.name.removeprefix("qemu_").removesuffix(".dsc")
    shutil.rmtree(tree)  # ~300 MB: keep only what is compiled
    shutil.rmtree(apt)
    for f in cache.glob("qemu_*"):  # dpkg-source leaves the upstream tarball beside the tree
        f.unlink()
    stamp.write_text(ver + "\n")
    return files, ver


def c_function(source: str, name: str) -> str:
    """The text of the top-level C function ``name`` (signature at column 0, closing brace too)."""
    m = re.search(rf"^int {name}\([^)]*\)\n\{{\n.*?^\}}\n", source, re.S | re.M)
    if m is None:
        raise Unavailable(f"{name} not found in util/cutils.c")
    return m.group(0)


def debian_cflags() -> list[str]:
    if shutil.which("dpkg-buildflags"):
        out = subprocess.run(["dpkg-buildflags", "--get", "CFLAGS"], capture_output=True, text=True)
        cpp = subprocess.run(["dpkg-buildflags", "--get", "CPPFLAGS"], capture_output=True, text=True)
        if out.returncode == 0:
            flags = out.stdout.split() + (cpp.stdout.split() if cpp.returncode == 0 else [])
            return [f for f in flags if not f.startswith("-ffile-prefix-map")]
    return ["-g", "-O2"]


def build(cache: Path) -> Harness:
    """Fetch (once) and compile QEMU's xbzrle.c with the harness; raises :class:`Unavailable`."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise Unavailable("no C compiler (cc, gcc or clang) on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    files, version = fetch_sources(cache)
    build_dir = cache / "build"
    (build_dir / "qemu").mkdir(parents=True, exist_ok=True)
    (build_dir / "qemu" / "osdep.h").write_text(OSDEP_SHIM)
    (build_dir / "qemu" / "cutils.h").write_text(CUTILS_SHIM)
    cutils = (files / "cutils.c").read_text()
    (build_dir / "uleb128.c").write_text(
        '#include "qemu/osdep.h"\n#include "qemu/cutils.h"\n\n'
        + "\n".join(c_function(cutils, n) for n in ("uleb128_encode_small", "uleb128_decode_small")))
    cflags = debian_cflags() + QEMU_FLAGS
    binary = build_dir / "xbzrle_harness"
    # xbzrle.c and the uleb128 helpers stay separate translation units, as in QEMU's build
    _run([cc, *cflags, "-I", str(build_dir), "-I", str(files), "-o", str(binary),
          str(HARNESS_C), str(files / "xbzrle.c"), str(build_dir / "uleb128.c")], timeout=300)
    return Harness(binary, version, cflags)
