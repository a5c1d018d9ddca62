"""``ramlab watch`` with a real QEMU (issue 16's acceptance): one JSON line per pass while QEMU
migrates, the first well before QEMU reports ``completed``, their pages adding up to what
``ramlab inspect`` decodes from the kept capture folder — for XBZRLE, multifd and postcopy."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                 reason="qemu-system-x86_64 not installed (Debian: qemu-system-x86)")]

RAMLAB = [sys.executable, "-c", "import sys; from ramlab.cli import main; sys.exit(main())"]
KINDS = ("zero", "normal", "xbzrle", "compressed")


def run_watch(args: list[str], out: Path) -> tuple[list[dict], list[float], float, str]:
    """Run ``ramlab watch ARGS --json -o OUT``; returns (lines, arrival times, exit time, stderr)."""
    t0 = time.monotonic()
    proc = subprocess.Popen([*RAMLAB, "watch", *args, "--json", "-o", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines, arrivals = [], []
    assert proc.stdout is not None
    for raw in proc.stdout:
        arrivals.append(time.monotonic() - t0)
        lines.append(json.loads(raw))
    err = proc.stderr.read() if proc.stderr else ""
    assert proc.wait(timeout=240) == 0, err
    return lines, arrivals, time.monotonic() - t0, err


def inspect_records(folder: Path) -> dict:
    out = subprocess.run([*RAMLAB, "inspect", str(folder), "--json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def completed_at(folder: Path) -> float:
    meta = json.loads((folder / "meta.json").read_text())
    return min(s["t"] for s in meta["progress_samples"]
               if s.get("status") == "completed" and s.get("who") in (None, "src"))


@pytest.mark.parametrize("args", [["--xbzrle"], ["--multifd", "2"], ["--postcopy"]],
                         ids=["xbzrle", "multifd", "postcopy"])
def test_watch_prints_passes_while_qemu_migrates(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "capture"
    lines, arrivals, exited, err = run_watch(["--ram", "16M", *args], out)
    passes = [ln for ln in lines if "pass" in ln]
    assert len(passes) >= 3, lines
    assert [ln["pass"] for ln in passes] == list(range(len(passes)))
    ts = [ln["t"] for ln in passes]
    # the passes complete one after the other (two may end in the same chunk of the socket)
    assert ts == sorted(ts) and len(set(ts)) >= 3, ts
    # the first line was decoded (and printed) well before QEMU said completed
    done = completed_at(out)
    assert passes[0]["decoded_at"] < done - 0.2, (passes[0], done)
    assert arrivals[0] < exited - 0.2
    assert passes[0]["qemu"]["status"] in ("active", "postcopy-active")
    # the kept folder is a capture: ramlab inspect decodes the records the lines add up to
    s = inspect_records(out)
    total = {k: sum(ln["pages"][k] for ln in passes) for k in KINDS}
    assert total == {"zero": s["records"]["zero"], "normal": s["records"]["page"], "xbzrle": s["records"]["xbzrle"],
                     "compressed": s["records"]["compressed"]}
    assert s["passes"] == len(passes) and s["complete"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["replay"]["matched"], meta["replay"]
    q = meta["query_migrate_final"]["ram"]
    assert (q["normal"], q["duplicate"]) == (s["records"]["page"], s["records"]["zero"])  # QEMU agrees


def test_watch_folder_is_a_capture_folder(tmp_path: Path) -> None:
    """``ramlab watch -o`` writes what ``ramlab capture`` writes: the same files and meta.json keys."""
    a, b = tmp_path / "watched", tmp_path / "captured"
    opts = ["--ram", "16M", "--xbzrle", "--no-replay", "--zstd-level", "3", "--bandwidth", "8M"]
    run_watch(opts, a)
    cap = subprocess.run([*RAMLAB, "capture", str(b), *opts], capture_output=True, text=True, timeout=240)
    assert cap.returncode == 0, cap.stdout + cap.stderr
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    ma, mb = (json.loads((d / "meta.json").read_text()) for d in (a, b))
    assert sorted(ma) == sorted(mb)
    assert ma["migrate_uri"] == mb["migrate_uri"] == "unix:mig.sock"
    assert "chunks.jsonl" in ma["files"]
