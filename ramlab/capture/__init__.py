"""Recording real QEMU migrations: the IO layer of ramlab (files, sockets, processes).

Kept apart from the pure wire decoder (:mod:`ramlab.wire`): nothing here parses the
stream beyond its first 8 bytes.

- :mod:`ramlab.capture.qmp` - a minimal QMP client (:class:`QMPClient`)
- :mod:`ramlab.capture.qemu` - launching QEMU (:class:`QemuProcess`, :class:`MachineSpec`)
  and the loader check :func:`load_stream_into_qemu`
- :mod:`ramlab.capture.proxy` - unix-socket recorder/proxy for multifd and postcopy
- :mod:`ramlab.capture.run` - :func:`capture` and the ``ramlab capture`` CLI (:func:`capture_main`)
- :mod:`ramlab.capture.control` - watching and steering a capture while QEMU migrates
  (:class:`CaptureObserver`, :class:`MigrationControl`)
- :mod:`ramlab.capture.live` - :func:`watch`: a capture decoded live (a :class:`~ramlab.live.run.LiveRun`)
- :mod:`ramlab.capture.build` - rebuilding the test guest ``guest/guest.elf``

Example::

    from ramlab.capture import MachineSpec, capture, load_stream_into_qemu
    meta = capture("out/plain", ram_mib=16)
    ram = load_stream_into_qemu("stream.bin", MachineSpec(ram_mib=16))
"""

from __future__ import annotations

from ramlab.capture.build import GUEST_ELF, build_guest
from ramlab.capture.control import CaptureObserver, MigrationControl
from ramlab.capture.live import qemu_available, start_capture, watch, watch_or_replay
from ramlab.capture.qemu import (
    LoadResult,
    MachineSpec,
    QemuProcess,
    find_qemu,
    load_stream,
    load_stream_into_qemu,
)
from ramlab.capture.qmp import QMPClient, QMPError
from ramlab.capture.run import capture, capture_main

__all__ = [
    "GUEST_ELF",
    "CaptureObserver",
    "MigrationControl",
    "qemu_available",
    "start_capture",
    "watch",
    "watch_or_replay",
    "LoadResult",
    "MachineSpec",
    "QMPClient",
    "QMPError",
    "QemuProcess",
    "build_guest",
    "capture",
    "capture_main",
    "find_qemu",
    "load_stream",
    "load_stream_into_qemu",
]
