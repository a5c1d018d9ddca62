"""Steering a real QEMU migration through a LiveRun (marked ``qemu``): the postcopy switch, cancel,
capabilities before ``migrate`` (and QEMU refusing them during one), and compress decoded live."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import ramlab
from ramlab.capture import watch
from ramlab.errors import CaptureError, TruncatedStream

pytestmark = [pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                 reason="qemu-system-x86_64 not installed (Debian: qemu-system-x86)")]

STUCK = dict(bandwidth="4M", downtime_ms=100, timeout=90)  # the guest's working set does not fit: no convergence


def same_as_open(run) -> None:  # type: ignore[no-untyped-def]
    m = ramlab.open(run.folder)
    assert dict(run.decoder.records) == dict(m.records)
    np.testing.assert_array_equal(run.trace.classes, m.trace.classes)
    assert run.trace.pass_kinds == m.trace.pass_kinds


def test_switch_to_postcopy_from_the_run(tmp_path) -> None:
    run = watch(tmp_path / "pc", postcopy=True, **STUCK)
    assert run.wait_for(passes=3, timeout=60) and run.status == "migrating"
    run.start_postcopy()
    run.wait(120)
    assert run.status == "completed"
    assert "postcopy" in run.trace.pass_kinds
    assert any(s.get("event") == "migrate-start-postcopy" for s in run.samples)
    same_as_open(run)


def test_cancel_keeps_what_was_sent(tmp_path) -> None:
    run = watch(tmp_path / "c", **STUCK)
    assert run.wait_for(passes=2, timeout=60)
    run.cancel()
    run.wait(60)
    assert run.status == "cancelled" and run.meta["cancelled"] == "migrate_cancel"
    m = ramlab.open(run.folder)
    assert isinstance(m.error, TruncatedStream)  # the stream stops where QEMU cancelled it
    assert run.decoder.error is not None and m.records == run.decoder.records
    with pytest.raises(CaptureError, match="over"):
        run.set_parameters(downtime_limit=1000)


def test_capabilities_before_migrate_only(tmp_path) -> None:
    run = watch(tmp_path / "ac", autostart=False, **STUCK)
    assert run.status == "ready"
    run.set_capabilities(auto_converge=True)
    run.migrate()
    assert run.wait_for(passes=2, timeout=60)
    with pytest.raises(CaptureError, match="in progress|active"):
        run.set_capabilities(auto_converge=False)  # QEMU refuses it during a migration
    run.set_parameters(downtime_limit=2000)
    run.wait(60)
    assert run.status == "completed"
    assert "auto-converge" in [c["capability"] for c in run.meta["migrate_capabilities_src"]]


def test_compress_decoded_live(tmp_path) -> None:
    run = watch(tmp_path / "z", compress=True, relax_after=4, bandwidth="8M", timeout=60)
    run.wait(120)
    assert run.status == "completed" and run.decoder.records["compressed"] > 0
    same_as_open(run)
