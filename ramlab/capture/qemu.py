"""Launching ``qemu-system-x86_64`` for captures, and the reusable loader check.

Everything here runs QEMU with TCG in a work folder, with relative file names on the
command line, exactly like the shared captures' ``cmdline_src``/``cmdline_dst``::

    qemu-system-x86_64 -machine pc,accel=tcg -m 16 -display none -nic none -kernel guest.elf
        [-S] [-incoming defer] -serial file:serial-NAME.log -monitor none
        -qmp unix:qmp-NAME.sock,server=on,wait=off

The piece other code needs most is :func:`load_stream_into_qemu`: feed a migration
stream (a file, or one file per channel for multifd) to a fresh destination QEMU and
get its guest RAM back, to prove that a stream ramlab wrote is one QEMU accepts::

    from ramlab.capture.qemu import MachineSpec, load_stream_into_qemu
    ram = load_stream_into_qemu("stream.bin", MachineSpec(machine="pc", ram_mib=16))
    assert ram[0x300000:0x300008] == b"RAMLAB01"
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ramlab.capture.build import GUEST_ELF
from ramlab.capture.qmp import QMPClient
from ramlab.errors import CaptureError

__all__ = [
    "GUEST_ELF",
    "LoadResult",
    "MachineSpec",
    "QemuProcess",
    "find_qemu",
    "hugetlbfs_mount",
    "load_stream",
    "load_stream_into_qemu",
    "qemu_version",
    "work_dir",
]

QEMU_ENV = "RAMLAB_QEMU"
DEFAULT_QEMU = "qemu-system-x86_64"

#: the QEMU processes this interpreter started and has not stopped yet (killed at exit: a notebook
#: kernel that exits during a live migration leaves no QEMU behind)
_STARTED: weakref.WeakSet[QemuProcess] = weakref.WeakSet()


@atexit.register
def _kill_started() -> None:
    for vm in list(_STARTED):
        with contextlib.suppress(Exception):
            vm.kill()


def find_qemu(binary: str | None = None) -> str:
    """Path of the QEMU binary: ``binary``, else ``$RAMLAB_QEMU``, else ``qemu-system-x86_64`` on PATH.

    Raises :class:`CaptureError` if none is found (Debian package ``qemu-system-x86``).
    """
    name = binary or os.environ.get(QEMU_ENV) or DEFAULT_QEMU
    path = shutil.which(name)
    if path is None:
        raise CaptureError(f"{name} not found: install it (Debian: apt-get install qemu-system-x86) "
                           f"or set ${QEMU_ENV}")
    return path


def qemu_version(binary: str | None = None) -> str:
    """First line of ``qemu-system-x86_64 --version``."""
    out = subprocess.run([find_qemu(binary), "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0].strip() if out.stdout else ""


@contextlib.contextmanager
def work_dir(prefix: str = "ramlab-", *, keep: bool = False) -> Iterator[Path]:
    """A temporary work folder (short path: unix socket names are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def hugetlbfs_mount(pages: int, *, page_size: str = "2M") -> Iterator[Path]:
    """Mount a private hugetlbfs and reserve ``pages`` more huge pages while in use (root only).

    QEMU reports a RAM block page size of 2 MiB only when its memory-backend-file lives on
    hugetlbfs (on any other filesystem the page size is the host's 4 KiB). Undone on exit.
    Raises :class:`CaptureError` if mounting or reserving fails.
    """
    nr_path = Path("/proc/sys/vm/nr_hugepages")
    if os.geteuid() != 0:
        raise CaptureError("hugetlbfs needs root (mount -t hugetlbfs, /proc/sys/vm/nr_hugepages)")
    mnt = Path(tempfile.mkdtemp(prefix="ramlab-hugetlbfs-", dir="/tmp"))
    before = int(nr_path.read_text().strip())
    mounted = False
    try:
        nr_path.write_text(str(before + pages))
        free = 0
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("HugePages_Free:"):
                free = int(line.split()[1])
        if free < pages:
            raise CaptureError(f"could only reserve {free} of {pages} huge pages")
        proc = subprocess.run(["mount", "-t", "hugetlbfs", "-o", f"pagesize={page_size}", "none", str(mnt)],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise CaptureError(f"mount -t hugetlbfs failed: {proc.stderr.strip()}")
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True, timeout=30)
        with contextlib.suppress(OSError):
            nr_path.write_text(str(before))
        with contextlib.suppress(OSError):
            mnt.rmdir()


@dataclass
class MachineSpec:
    """What both ends of a migration must agree on: machine type, RAM, kernel, backend.

    ``hugepages`` puts RAM in ``-object memory-backend-file,id=m0,...,mem-path=hugepages,
    share=off,prealloc=on`` (block name ``m0``); ``hugepage_dir`` is where the ``hugepages``
    name in the work folder points (a hugetlbfs mount for real 2 MiB pages, see
    :func:`hugetlbfs_mount`; ``None``: a plain folder, so 4 KiB pages).
    ``kernel=None`` boots SeaBIOS only.

    >>> MachineSpec(ram_mib=16).args()
    ['-machine', 'pc,accel=tcg', '-m', '16', '-display', 'none', '-nic', 'none', '-kernel', 'guest.elf']
    """

    machine: str = "pc"
    ram_mib: int = 16
    kernel: Path | None = GUEST_ELF
    hugepages: bool = False
    hugepage_dir: Path | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def ram_bytes(self) -> int:
        return self.ram_mib << 20

    @property
    def backend_object(self) -> str | None:
        if not self.hugepages:
            return None
        return f"memory-backend-file,id=m0,size={self.ram_mib}M,mem-path=hugepages,share=off,prealloc=on"

    def args(self) -> list[str]:
        """The machine part of the command line (relative names: run QEMU in the work folder)."""
        machine = f"{self.machine},accel=tcg"
        out = ["-machine", machine]
        if self.hugepages:
            out = ["-machine", machine + ",memory-backend=m0", "-object", str(self.backend_object)]
        out += ["-m", str(self.ram_mib), "-display", "none", "-nic", "none"]
        if self.kernel is not None:
            out += ["-kernel", "guest.elf"]
        return out + list(self.extra_args)

    def prepare(self, folder: Path) -> None:
        """Put the kernel (``guest.elf``) and the ``hugepages`` folder/link into ``folder``."""
        if self.kernel is not None:
            dst = folder / "guest.elf"
            if not dst.exists():
                shutil.copyfile(self.kernel, dst)
        if self.hugepages:
            link = folder / "hugepages"
            if not link.exists():
                if self.hugepage_dir is not None:
                    link.symlink_to(self.hugepage_dir)
                else:
                    link.mkdir()

    def meta(self) -> dict[str, Any]:
        return {"machine": self.machine, "ram_mib": self.ram_mib, "ram_bytes": self.ram_bytes,
                "backend_object": self.backend_object}


class QemuProcess:
    """One QEMU process in ``folder`` with a QMP client; use as a context manager.

    ``name`` names its files (``qmp-NAME.sock``, ``serial-NAME.log``, ``stderr-NAME.log``).
    ``incoming="defer"`` adds ``-incoming defer``; ``paused`` adds ``-S``.

    >>> with QemuProcess(folder, "src", MachineSpec()) as src:        # doctest: +SKIP
    ...     src.qmp.execute("query-status")["status"]
    'running'
    """

    def __init__(self, folder: str | Path, name: str, spec: MachineSpec, *, incoming: str | None = None,
                 paused: bool = False, binary: str | None = None, qmp_timeout: float = 20.0) -> None:
        self.folder = Path(folder)
        self.name = name
        self.spec = spec
        self.binary = find_qemu(binary)
        self.incoming = incoming
        self.paused = paused
        self.qmp_timeout = qmp_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._qmp: QMPClient | None = None
        self._stderr_file: Any = None

    @property
    def argv(self) -> list[str]:
        args = [os.path.basename(self.binary), *self.spec.args()]
        if self.paused:
            args.append("-S")
        if self.incoming is not None:
            args += ["-incoming", self.incoming]
        args += ["-serial", f"file:serial-{self.name}.log", "-monitor", "none",
                 "-qmp", f"unix:qmp-{self.name}.sock,server=on,wait=off"]
        return args

    @property
    def cmdline(self) -> str:
        """The command line as one shell-quoted string (as in meta.json)."""
        return shlex.join(self.argv)

    @property
    def qmp(self) -> QMPClient:
        if self._qmp is None:
            raise CaptureError(f"QEMU {self.name} is not started")
        return self._qmp

    @property
    def qmp_path(self) -> Path:
        return self.folder / f"qmp-{self.name}.sock"

    def start(self) -> QemuProcess:
        """Start QEMU and connect QMP; raises :class:`CaptureError` with QEMU's stderr on failure."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spec.prepare(self.folder)
        with contextlib.suppress(FileNotFoundError):
            self.qmp_path.unlink()
        self._stderr_file = open(self.folder / f"stderr-{self.name}.log", "wb")  # noqa: SIM115
        argv = [self.binary, *self.argv[1:]]
        self.proc = subprocess.Popen(argv, cwd=self.folder, stdin=subprocess.DEVNULL,
                                     stdout=self._stderr_file, stderr=self._stderr_file)
        _STARTED.add(self)
        client = QMPClient(self.qmp_path, timeout=self.qmp_timeout)
        deadline = time.monotonic() + self.qmp_timeout
        while True:
            if self.proc.poll() is not None:
                raise CaptureError(f"QEMU {self.name} exited with {self.proc.returncode} at start: "
                                   f"{self.stderr_text().strip()}\ncommand: {self.cmdline}")
            if self.qmp_path.exists():
                break
            if time.monotonic() > deadline:
                self.kill()
                raise CaptureError(f"QEMU {self.name} did not create its QMP socket in {self.qmp_timeout}s")
            time.sleep(0.01)
        try:
            client.connect(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.kill()
            raise
        self._qmp = client
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self) -> str:
        """What QEMU printed on stdout/stderr so far."""
        path = self.folder / f"stderr-{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def serial_text(self) -> str:
        path = self.folder / f"serial-{self.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def hmp(self, command_line: str, timeout: float | None = None) -> str:
        return self.qmp.hmp(command_line, timeout=timeout)

    def query_migrate(self) -> dict[str, Any]:
        return dict(self.qmp.execute("query-migrate"))

    def read_u32(self, addr: int) -> int:
        """One little-endian dword of guest-physical memory (HMP ``xp``)."""
        out = self.hmp(f"xp /1wx {addr:#x}")
        try:
            return int(out.split(":", 1)[1].split()[0], 16)
        except (IndexError, ValueError) as exc:
            raise CaptureError(f"unexpected xp output: {out!r}") from exc

    def pmemsave(self, filename: str, size: int | None = None, *, timeout: float = 60.0) -> tuple[bytes, str]:
        """HMP ``pmemsave 0 SIZE "FILENAME"`` (relative to the folder); returns (bytes, HMP output)."""
        size = self.spec.ram_bytes if size is None else size
        out = self.hmp(f'pmemsave 0 {size} "{filename}"', timeout=timeout)
        path = self.folder / filename
        if not path.exists() or path.stat().st_size != size:
            raise CaptureError(f"pmemsave did not write {size} bytes to {path}: {out!r}")
        return path.read_bytes(), out

    def quit(self, timeout: float = 10.0) -> None:
        """QMP ``quit``, then wait; kill if it does not exit in time."""
        if self.alive() and self._qmp is not None and self._qmp.connected:
            with contextlib.suppress(CaptureError):
                self._qmp.execute("quit", timeout=timeout)
        self.kill(grace=timeout)

    def kill(self, grace: float = 0.0) -> None:
        """Wait up to ``grace`` seconds, then terminate/kill this process (only this one)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=grace) if grace else None
            except subprocess.TimeoutExpired:
                pass
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        if self._qmp is not None:
            self._qmp.close()
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None

    def __enter__(self) -> QemuProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.quit()


# --- migration helpers -------------------------------------------------------------------

def capabilities_arg(capabilities: Iterable[str] | Mapping[str, bool]) -> list[dict[str, Any]]:
    """``migrate-set-capabilities`` argument from names or a name -> bool mapping."""
    items = capabilities.items() if isinstance(capabilities, Mapping) else ((c, True) for c in capabilities)
    return [{"capability": str(name), "state": bool(state)} for name, state in items]


def set_migration_config(vm: QemuProcess, capabilities: Iterable[str] | Mapping[str, bool],
                         parameters: Mapping[str, Any] | None) -> None:
    """``migrate-set-capabilities`` then ``migrate-set-parameters`` (skipped when empty)."""
    caps = capabilities_arg(capabilities)
    if caps:
        vm.qmp.execute("migrate-set-capabilities", {"capabilities": caps})
    if parameters:
        vm.qmp.execute("migrate-set-parameters", dict(parameters))


def wait_migration(vm: QemuProcess, *, timeout: float, poll: float = 0.005,
                   done: tuple[str, ...] = ("completed",)) -> dict[str, Any]:
    """Poll ``query-migrate`` until a state in ``done``; CaptureError on failure/timeout/exit."""
    deadline = time.monotonic() + timeout
    while True:
        if not vm.alive():
            raise CaptureError(f"QEMU {vm.name} exited during migration (the migration failed): "
                               f"{vm.stderr_text().strip()}")
        try:
            info = vm.query_migrate()
        except CaptureError:
            # QEMU 7.2 exits when an incoming migration fails: report its stderr, not the socket
            if vm.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    vm.proc.wait(timeout=5)
            if not vm.alive():
                continue
            raise
        status = info.get("status")
        if status in done:
            return info
        if status in ("failed", "cancelled"):
            raise CaptureError(f"migration {status} on {vm.name}: {info.get('error-desc', '')}\n"
                               f"QEMU stderr: {vm.stderr_text().strip()}")
        if time.monotonic() > deadline:
            raise CaptureError(f"migration on {vm.name} not finished after {timeout}s "
                               f"(status {status!r}); QEMU stderr: {vm.stderr_text().strip()}")
        time.sleep(poll)


class _Feeder:
    """Connect to a unix socket and push files through it, one connection per file, in order;
    bytes coming back (the return path) are collected per connection."""

    def __init__(self, sock_path: Path, datas: Sequence[bytes]) -> None:
        self.sock_path = sock_path
        self.datas = datas
        self.returned: list[bytearray] = [bytearray() for _ in datas]
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def start(self, timeout: float) -> None:
        for i, data in enumerate(self.datas):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    s.connect(str(self.sock_path))
                    break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise CaptureError(f"cannot connect to {self.sock_path}: {exc}") from exc
                    time.sleep(0.01)
            for target, args in ((self._send, (s, data, i)), (self._recv, (s, i))):
                t = threading.Thread(target=target, args=args, daemon=True)
                t.start()
                self.threads.append(t)
            if i == 0 and len(self.datas) > 1:
                time.sleep(0.05)  # the main channel must be the first connection QEMU accepts

    def _send(self, s: socket.socket, data: bytes, i: int) -> None:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self.errors.append(f"channel {i}: send: {exc}")

    def _recv(self, s: socket.socket, i: int) -> None:
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                self.returned[i] += chunk
        except OSError:
            pass
        finally:
            s.close()

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))


def _read_stream(path: Path) -> bytes:
    """File bytes; ``*.zst`` files are decompressed (the captures' format)."""
    data = path.read_bytes()
    if path.suffix == ".zst":
        import zstandard

        data = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 34)
    return data


@dataclass
class LoadResult:
    """What :func:`load_stream` observed; ``ram`` is the destination's pmemsave."""

    ram: bytes
    query_migrate: dict[str, Any]
    query_status: dict[str, Any]
    cmdline: str
    incoming_uri: str
    load_wall_s: float
    stderr: str
    return_path: list[bytes] = field(default_factory=list)
    info_ramblock: str = ""


def load_stream(
    streams: str | Path | Sequence[str | Path],
    machine: MachineSpec | None = None,
    capabilities: Iterable[str] | Mapping[str, bool] = (),
    parameters: Mapping[str, Any] | None = None,
    *,
    transport: str = "auto",
    timeout: float = 120.0,
    binary: str | None = None,
    folder: str | Path | None = None,
) -> LoadResult:
    """Like :func:`load_stream_into_qemu` but returns a :class:`LoadResult` with the details."""
    paths = [Path(streams)] if isinstance(streams, (str, Path)) else [Path(p) for p in streams]
    if not paths:
        raise CaptureError("no stream given")
    for p in paths:
        if not p.is_file():
            raise CaptureError(f"stream file not found: {p}")
    spec = machine or MachineSpec()
    caps = dict(capabilities) if isinstance(capabilities, Mapping) else {c: True for c in capabilities}
    if transport == "auto":
        transport = "unix" if len(paths) > 1 or caps.get("postcopy-ram") else "exec"
    if transport not in ("exec", "unix"):
        raise CaptureError(f"transport must be 'auto', 'exec' or 'unix', not {transport!r}")
    if transport == "exec" and len(paths) > 1:
        raise CaptureError("several channels need transport='unix'")
    ctx = contextlib.nullcontext(Path(folder)) if folder is not None else work_dir("ramlab-load-")
    with ctx as wd:
        wd = Path(wd)
        wd.mkdir(parents=True, exist_ok=True)
        datas: list[bytes] = []
        if transport == "exec":
            local = wd / "load-stream.bin"
            if paths[0].suffix == ".zst":
                local.write_bytes(_read_stream(paths[0]))
            elif paths[0].resolve() != local.resolve():
                shutil.copyfile(paths[0], local)
            uri = "exec:cat load-stream.bin"
        else:
            datas = [_read_stream(p) for p in paths]
            uri = "unix:load.sock"
        with QemuProcess(wd, "load", spec, incoming="defer", paused=True, binary=binary) as vm:
            set_migration_config(vm, caps, parameters)
            t0 = time.monotonic()
            vm.qmp.execute("migrate-incoming", {"uri": uri})
            feeder = None
            if transport == "unix":
                feeder = _Feeder(wd / "load.sock", datas)
                feeder.start(timeout=min(timeout, 30.0))
            try:
                info = wait_migration(vm, timeout=timeout)
            except CaptureError as exc:
                raise CaptureError(f"{exc}\ndestination: {vm.cmdline}") from None
            wall = time.monotonic() - t0
            status = dict(vm.qmp.execute("query-status"))
            ramblock = vm.hmp("info ramblock")
            ram, _ = vm.pmemsave("load-ram.bin")
            returned: list[bytes] = []
            if feeder is not None:
                feeder.join(timeout=5.0)
                returned = [bytes(b) for b in feeder.returned]
            return LoadResult(ram=ram, query_migrate=info, query_status=status, cmdline=vm.cmdline,
                              incoming_uri=uri, load_wall_s=round(wall, 3), stderr=vm.stderr_text(),
                              return_path=returned, info_ramblock=ramblock)


def load_stream_into_qemu(
    streams: str | Path | Sequence[str | Path],
    machine: MachineSpec | None = None,
    capabilities: Iterable[str] | Mapping[str, bool] = (),
    parameters: Mapping[str, Any] | None = None,
    *,
    transport: str = "auto",
    timeout: float = 120.0,
    binary: str | None = None,
) -> bytes:
    """Load a migration stream into a fresh paused QEMU and return its guest RAM (0..RAM size).

    ``streams``: one file (precopy, postcopy forward stream) or a list of files, one per
    connection in connection order (multifd: the main channel first, then the channels);
    ``*.zst`` files are decompressed first.
    ``machine``: the :class:`MachineSpec` the stream was made for (machine type, RAM size,
    backend; RAM block names and sizes must match the stream's MEM_SIZE list).
    ``capabilities``/``parameters``: what the destination needs set before
    ``migrate-incoming`` (e.g. ``["multifd"]`` + ``{"multifd-channels": 2,
    "multifd-compression": "zstd"}``, ``["postcopy-ram"]``, ``{"decompress-threads": 2}``).
    ``transport``: ``"exec"`` (``migrate-incoming exec:cat FILE``), ``"unix"`` (a unix socket,
    one connection per file, return path read and dropped) or ``"auto"`` (exec for one file,
    unix for several files or postcopy).

    The destination runs ``-S -incoming defer``; its RAM is dumped with HMP ``pmemsave``
    once ``query-migrate`` says ``completed``. On ``pc`` the dump's 0xA0000-0xBFFFF reads the
    VGA window. Raises :class:`~ramlab.errors.CaptureError` carrying QEMU's ``error-desc``
    and stderr if QEMU rejects the stream::

        >>> ram = load_stream_into_qemu("stream.bin", MachineSpec(ram_mib=16))  # doctest: +SKIP
        >>> len(ram), ram[0x300000:0x300008]                                     # doctest: +SKIP
        (16777216, b'RAMLAB01')
    """
    return load_stream(streams, machine, capabilities, parameters, transport=transport,
                       timeout=timeout, binary=binary).ram
