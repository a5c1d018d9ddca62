"""Watch a real migration live: :func:`watch` migrates the test guest and decodes it as it goes.

This is where the IO layer meets the live decoder: :func:`ramlab.capture.run.capture` runs QEMU in
a thread of its own, and a :class:`~ramlab.capture.control.CaptureObserver` turns what it records
into notes for a :class:`~ramlab.live.run.LiveRun` (every chunk the recorder writes, every
``query-migrate`` sample); a :class:`~ramlab.capture.control.MigrationControl` carries the run's
commands (``migrate-set-parameters``, ``migrate-start-postcopy``, ``migrate_cancel``) back to the
capture loop, which alone talks to QEMU. In a notebook::

    from ramlab.capture import watch
    run = watch(ram="16M", xbzrle=True)          # returns at once; QEMU migrates in the background
    run.widget()                                 # the LiveMigration view
    run.set_parameters(downtime_limit=300)       # steer it
    run.wait().trace                             # the whole migration, once it is over

:func:`watch_or_replay` falls back to :func:`ramlab.live.replay` of a bundled capture where no QEMU
is installed (and says so). ``ramlab watch`` is the command-line face (:mod:`ramlab.cli.watch`).
"""

from __future__ import annotations

import atexit
import os
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ramlab.capture.control import CaptureObserver, MigrationControl
from ramlab.capture.qemu import find_qemu
from ramlab.capture.run import capture, parse_size
from ramlab.errors import CaptureError, RamlabError
from ramlab.live.decoder import LiveDecoder
from ramlab.live.run import LiveRun, replay

__all__ = ["watch", "watch_or_replay", "start_capture", "qemu_available"]


def qemu_available(binary: str | None = None) -> bool:
    """Whether a QEMU to migrate with is installed (``$RAMLAB_QEMU`` or ``qemu-system-x86_64``)."""
    try:
        find_qemu(binary)
    except CaptureError:
        return False
    return True


class _Observer(CaptureObserver):
    """The capture's hooks, turned into notes for the run's decode thread."""

    def __init__(self, run: LiveRun) -> None:
        self.run = run

    def started(self, t0: float, mode: str, channels: int, parameters: dict[str, Any]) -> None:
        self.run.begin(t0, parameters)  # waits for the decoder to be warm: QEMU waits, not the decoder

    def chunk(self, direction: str, conn: int, path: Path, offset: int, length: int, t: float) -> None:
        self.run.chunk_in_file((direction, conn), path, offset, length, t)

    def sample(self, sample: dict[str, Any]) -> None:
        self.run.note_sample(sample)

    def stopped(self, status: str) -> None:
        # every chunk has been noted (the recorder stopped): decoding can end now, while the
        # capture goes on with the RAM dump, the replay check and the files
        self.run.note_status(status)
        self.run.end_of_input()


def _live_mode(kwargs: Mapping[str, Any]) -> tuple[str, tuple[str, ...], int | None]:
    """``(mode, capabilities, multifd channels)`` of :func:`capture` keyword arguments."""
    caps = set(kwargs.get("capabilities") or ())
    if kwargs.get("xbzrle_cache_size") is not None:
        caps.add("xbzrle")
    if kwargs.get("compress_threads") is not None or kwargs.get("compress_level") is not None:
        caps.add("compress")
    channels = None
    if kwargs.get("multifd_channels") is not None or kwargs.get("multifd_compression") is not None \
            or "multifd" in caps:
        caps.add("multifd")
        channels = int(kwargs.get("multifd_channels") or (kwargs.get("parameters") or {}).get("multifd-channels")
                       or 2)
    if kwargs.get("mode") == "postcopy" or "postcopy-ram" in caps:
        return "postcopy", tuple(sorted(caps)), None
    return ("multifd" if channels else "precopy"), tuple(sorted(caps)), channels


_ACTIVE: weakref.WeakSet[LiveRun] = weakref.WeakSet()


def start_capture(folder: str | os.PathLike[str], capture_kwargs: dict[str, Any], *,
                  autostart: bool = True) -> LiveRun:
    """Run :func:`~ramlab.capture.run.capture` into ``folder`` in a thread, decoded live (what
    :func:`watch` and ``ramlab watch`` do); ``capture_kwargs`` are :func:`capture`'s arguments."""
    if capture_kwargs.get("transport") == "exec":
        raise RamlabError("a live migration is recorded through the recorder's socket, not exec:")
    folder = Path(folder)
    mode, caps, channels = _live_mode(capture_kwargs)
    control = MigrationControl(autostart=autostart)
    run = LiveRun(LiveDecoder(mode, capabilities=caps, multifd_channels=channels), name=folder.name,
                  folder=folder, is_replay=False, control=control)
    if not autostart:
        run.status = "ready"
    observer = _Observer(run)

    def source() -> None:
        meta, error = None, None
        try:
            meta = capture(folder, observer=observer, control=control, **capture_kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported through run.error and wait()
            error = exc
        run.source_finished(meta=meta, error=error)

    _ACTIVE.add(run)
    return run.start(source, "ramlab-live-capture")


@atexit.register
def _stop_active() -> None:
    """At exit (a notebook kernel shut down mid-migration): cancel, and let the capture stop QEMU."""
    for run in list(_ACTIVE):
        if not run.finished:
            run.stop()
            for t in run._threads:
                t.join(20.0)


def watch(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    ram: str | int = "16M",
    xbzrle: bool = False,
    cache_size: str | int = "4M",
    compress: bool = False,
    multifd: int | None = None,
    multifd_compression: str | None = None,
    postcopy: bool = False,
    postcopy_after: int | None = None,
    bandwidth: str | int | None = None,
    downtime_ms: int = 1,
    relax_after: int | None = None,
    auto_converge: bool = False,
    autostart: bool = True,
    timeout: float = 300.0,
    validate: bool = False,
    zstd_level: int = 3,
    sample_interval: float = 0.1,
    **capture_options: Any,
) -> LiveRun:
    """Migrate the test guest in a real QEMU and decode it live; returns at once (threads run it).

    The options are ``ramlab capture``'s (see :func:`ramlab.capture.run.capture`) with live
    defaults: the downtime limit is never relaxed by itself (``relax_after=None``: steer it),
    postcopy is switched by :meth:`~ramlab.live.run.LiveRun.start_postcopy` unless ``postcopy_after``
    syncs are given, a migration still running after ``timeout`` s is cancelled, ``validate=False``
    skips loading the stream into a second QEMU. ``out_dir``: where the capture folder goes
    (default: a new temporary folder, kept: ``run.folder``). ``autostart=False``: QEMU is configured
    and waits for :meth:`~ramlab.live.run.LiveRun.migrate` (capabilities can still change). Raises
    :class:`~ramlab.errors.CaptureError` at once when no QEMU is installed.
    """
    find_qemu(capture_options.get("binary"))
    folder = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ramlab-live-"))
    caps = list(capture_options.pop("capabilities", []))
    if auto_converge:
        caps.append("auto-converge")
    kwargs: dict[str, Any] = dict(
        ram_mib=parse_size(ram) >> 20, capabilities=caps,
        mode="postcopy" if postcopy else "precopy", multifd_channels=multifd,
        multifd_compression=multifd_compression,
        xbzrle_cache_size=parse_size(cache_size) if xbzrle else None,
        compress_threads=2 if compress else None,
        max_bandwidth=parse_size(bandwidth) if bandwidth is not None else None,
        downtime_limit_ms=downtime_ms, relax_after_syncs=relax_after, postcopy_after_syncs=postcopy_after,
        timeout=timeout, on_timeout="cancel", replay=validate, zstd_level=zstd_level,
        sample_interval=sample_interval,
    )
    kwargs.update(capture_options)
    return start_capture(folder, kwargs, autostart=autostart)


def watch_or_replay(fallback: str, *, speed: float = 1.0, **options: Any) -> LiveRun:
    """:func:`watch` when a QEMU is installed; otherwise say so and :func:`~ramlab.live.run.replay`
    the bundled capture ``fallback`` (e.g. ``"steer"``) at its recorded pace, through the same live path."""
    if qemu_available(options.get("binary")):
        return watch(**options)
    from ramlab.data import data_path

    folder = data_path(fallback)
    pace = "its recorded pace" if speed == 1 else f"{speed:g} times its recorded pace"
    print(f"QEMU (qemu-system-x86_64) is not installed here, so no migration can run live.\n"
          f"Replaying the bundled capture {fallback!r} instead, at {pace}: a real QEMU migration "
          f"recorded by ramlab, fed through the same live decoder. Its parameters are the ones it was recorded "
          f"with; the controls need a live QEMU (Debian/Ubuntu: apt-get install qemu-system-x86).")
    return replay(folder, speed=speed)
