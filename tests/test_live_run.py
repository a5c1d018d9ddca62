"""LiveRun without QEMU: bundled captures replayed through the live path (the lab's fallback), the
CLI's replay mode with QEMU hidden from PATH, the capture's control object, and the live view's
state (its browser rendering is tests/browser/test_live_browser.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ramlab
from ramlab.capture import qemu_available
from ramlab.capture.control import CaptureObserver, MigrationControl
from ramlab.errors import CaptureError, RamlabError
from ramlab.live import LiveRun, replay
from ramlab.live.recording import capture_layout, recorded_chunks, recorded_samples
from ramlab.live.samples import qmp_sample

REPO = Path(__file__).resolve().parents[1]
RAMLAB = [sys.executable, "-c", "import sys; from ramlab.cli import main; sys.exit(main())"]


def no_qemu_env() -> dict[str, str]:
    """The environment with every PATH entry holding a QEMU removed (and $RAMLAB_QEMU unset)."""
    env = dict(os.environ)
    env.pop("RAMLAB_QEMU", None)
    dirs = [d for d in env.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "qemu-system-x86_64").exists()]
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *dirs])
    return env


@pytest.mark.parametrize("name", ["postcopy", "xbzrle", "multifd-zstd"])
def test_replay_ends_as_open(name: str) -> None:
    folder = ramlab.data_path(name)
    lines: list[dict] = []
    run = replay(folder, speed=40)
    run.on_pass(lines.append)
    assert run.wait(60) is run and run.finished and run.status == "completed"
    m = ramlab.open(folder)
    np.testing.assert_array_equal(run.trace.classes, m.trace.classes)
    assert dict(run.decoder.records) == dict(m.records)
    assert [ln["pass"] for ln in lines] == list(range(m.trace.n_passes))
    assert [ln["t"] for ln in lines] == sorted(ln["t"] for ln in lines)
    assert all("status" in ln["qemu"] for ln in lines[1:])
    snap = run.snapshot()
    assert snap.finished and snap.n_passes == m.trace.n_passes and snap.samples
    assert snap.parameters["max-bandwidth"] == json.loads((folder / "meta.json").read_text())[
        "migrate_parameters_src"]["max-bandwidth"]
    with pytest.raises(RamlabError, match="cannot be steered"):
        run.set_parameters(max_bandwidth=1 << 20)


def test_replay_keeps_the_recorded_pace() -> None:
    layout = capture_layout(ramlab.data_path("postcopy"))
    chunks = recorded_chunks(layout)
    span = chunks[-1][0]
    t0 = time.monotonic()
    run = replay(ramlab.data_path("postcopy"), speed=2.0).wait(60)
    wall = time.monotonic() - t0
    assert span / 2 <= wall < span / 2 + 5, (span, wall)
    assert run.passes[0].t < span / 2  # the bulk pass completed in the first half, as recorded


def test_replay_timing_without_chunk_log() -> None:
    layout = capture_layout(ramlab.data_path("plain"))
    assert layout.timing == "progress_samples"
    chunks = recorded_chunks(layout)
    assert sum(n for *_, n in chunks) == len(layout.data(("fwd", 0)))
    wall = layout.meta["migrate_wall_s"]
    assert 0 < chunks[0][0] <= chunks[-1][0] <= wall + 1e-9
    samples = recorded_samples(layout)
    assert samples[-1]["status"] == "completed" and "ram.normal" in samples[-1]
    assert any(s.get("event") == "relaxed downtime-limit" and s["arguments"] == {"downtime-limit": 10000}
               for s in samples)


def test_replay_can_be_stopped() -> None:
    run = replay(ramlab.data_path("postcopy"), speed=0.05)  # 40 s of recording
    time.sleep(0.3)
    run.stop()
    run.wait(10)
    assert run.finished and run.status == "stopped"


def test_replay_bad_speed() -> None:
    with pytest.raises(RamlabError, match="speed"):
        replay(ramlab.data_path("postcopy"), speed=0)


def test_qemu_hidden_from_path() -> None:
    code = "import ramlab.capture; print(ramlab.capture.qemu_available())"
    out = subprocess.run([sys.executable, "-c", code], env=no_qemu_env(), capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_watch_replay_cli_without_qemu(tmp_path: Path) -> None:
    folder = ramlab.data_path("postcopy")
    out = subprocess.run([*RAMLAB, "watch", "--replay", str(folder), "--speed", "20", "--json"], env=no_qemu_env(),
                         capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    m = ramlab.open(folder)
    assert [ln["pass"] for ln in lines] == list(range(m.trace.n_passes))
    total = {k: sum(ln["pages"][k] for ln in lines) for k in ("zero", "normal", "xbzrle", "compressed")}
    assert total["zero"] == m.records["zero"] and total["normal"] == m.records["page"]
    assert "completed" in out.stderr
    # live without QEMU: a clear error, no traceback
    out = subprocess.run([*RAMLAB, "watch", "--ram", "16M"], env=no_qemu_env(),
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 1 and "qemu-system-x86_64 not found" in out.stderr and "Traceback" not in out.stderr


def test_watch_text_lines_from_a_replay() -> None:
    import contextlib
    import io

    from ramlab.cli.watch import watch_main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = watch_main(["--replay", str(ramlab.data_path("xbzrle")), "--speed", "50"])
    text = buf.getvalue()
    assert code == 0
    assert text.count("\npass ") + text.startswith("pass ") == ramlab.open(ramlab.data_path("xbzrle")).trace.n_passes
    assert "QEMU normal 995, duplicate 8009" in text


# ---------------------------------------------------------------------- the capture's control object

class _FakeQMP:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict | None]] = []

    def execute(self, command, arguments=None):  # type: ignore[no-untyped-def]
        self.calls.append((command, arguments))
        if command == "migrate-set-capabilities":
            raise CaptureError("QMP command 'migrate-set-capabilities' failed: GenericError: "
                               "There's a migration process in progress")
        return {"max-bandwidth": 1} if command.startswith("query") else {}


def test_control_runs_commands_in_the_loop_thread() -> None:
    ctl = MigrationControl()
    qmp = _FakeQMP()
    results: dict[str, object] = {}

    def caller() -> None:
        results["set"] = ctl.set_parameters(max_bandwidth=32 << 20, downtime_limit=300)
        try:
            ctl.set_capabilities(auto_converge=True)
        except CaptureError as exc:
            results["caps"] = str(exc)
        results["postcopy"] = ctl.start_postcopy()

    t = threading.Thread(target=caller)
    t.start()
    deadline = time.monotonic() + 5
    while t.is_alive() and time.monotonic() < deadline:
        ctl.run_pending(qmp, 1.0)
        time.sleep(0.005)
    t.join(1)
    assert results["set"] == {} and "in progress" in str(results["caps"]) and ctl.postcopy_requested
    assert qmp.calls[0] == ("migrate-set-parameters", {"max-bandwidth": 32 << 20, "downtime-limit": 300})
    assert [e["event"] for e in ctl.log] == ["migrate-set-parameters", "migrate-set-capabilities",
                                            "migrate-start-postcopy"]
    assert "error" in ctl.log[1]
    ctl.close("the migration is over (completed)")
    with pytest.raises(CaptureError, match="over"):
        ctl.set_parameters(downtime_limit=1)


def test_control_times_out_when_nobody_runs_it() -> None:
    ctl = MigrationControl()
    t0 = time.monotonic()
    with pytest.raises(CaptureError, match="not run within"):
        ctl.execute("query-migrate", timeout=0.2)
    assert time.monotonic() - t0 < 2


def test_control_waits_for_migrate() -> None:
    ctl = MigrationControl(autostart=False)
    ran = []
    assert not ctl.wait_go(0.1, lambda: ran.append(1))
    assert ran
    threading.Timer(0.1, ctl.migrate).start()
    assert ctl.wait_go(5, lambda: None)


def test_qmp_sample_and_observer_defaults() -> None:
    info = {"status": "active", "expected-downtime": 12, "ram": {"remaining": 4096, "dirty-sync-count": 3},
            "xbzrle-cache": {"pages": 7, "overflow": 1}}
    s = qmp_sample(info, 1.23456)
    assert s == {"t": 1.2346, "status": "active", "expected-downtime": 12, "ram.dirty-sync-count": 3,
                 "ram.remaining": 4096, "xbzrle-cache.pages": 7, "xbzrle-cache.overflow": 1}
    obs = CaptureObserver()
    obs.started(0.0, "precopy", 0, {})
    obs.chunk("fwd", 0, Path("x"), 0, 0, 0.0)
    obs.sample(s)
    obs.stopped("completed")


# ---------------------------------------------------------------------- the view's state

def test_live_view_state_from_a_replay() -> None:
    from ramlab.trace import PageClass
    from ramlab.widgets.live import LiveMigration

    run = replay(ramlab.data_path("postcopy"), speed=30)
    view = LiveMigration(run, follow=False)
    run.wait(60)
    view.refresh(final=True)
    m = ramlab.open(ramlab.data_path("postcopy"))
    last = m.trace.n_passes - 1
    assert view.map_source.data["pass_"] == [last] and view.map_model is not None
    img = view.map_source.data["image"][0]
    assert PageClass.REQUESTED in img  # the page map shows the pass's classes
    quads = view.quads_source.data
    normal = np.zeros(m.trace.n_passes)
    np.add.at(normal, np.asarray(quads["pass"])[np.asarray(quads["cls"]) == "NORMAL"],
              np.asarray(quads["pages"])[np.asarray(quads["cls"]) == "NORMAL"])
    assert normal.tolist() == m.trace.class_counts()[:, PageClass.NORMAL].tolist()
    assert list(view.bars_source.data["bytes"]) == m.trace.bytes_per_pass().tolist()
    assert "static picture" in view.static_html() and "completed" in view.summary_text()
    assert "✓" in view.counters.value and "≠" not in view.counters.value  # QEMU agrees at the end
    assert view.set_button.disabled and not view.player_button.disabled
    assert len(view.remaining_source.data["t"]) > 0 and len(view.pass_source.data["t"]) == m.trace.n_passes
    assert view.player().trace.n_passes == m.trace.n_passes


def test_live_view_follows_at_most_ten_times_a_second() -> None:
    from ramlab.widgets.live import LiveMigration

    run = replay(ramlab.data_path("postcopy"), speed=1.0)  # ~2 s
    t0 = time.monotonic()
    view = LiveMigration(run, max_rate=50)  # asks for more: it gets 10
    run.wait(60)
    view._thread.join(10)
    wall = time.monotonic() - t0
    assert view.map_updates >= 3
    assert view.updates <= 10 * wall + 3, (view.updates, wall)


def test_qemu_available_is_a_bool() -> None:
    assert qemu_available() in (True, False)
    assert qemu_available("no-such-qemu-binary") is False
    assert isinstance(LiveRun.__doc__, str)


def test_layout_of_a_multifd_capture() -> None:
    lay = capture_layout(ramlab.data_path("multifd-zstd"))
    assert lay.mode == "multifd" and lay.multifd_channels == 2 and sorted(lay.files) == [("fwd", i) for i in range(3)]
