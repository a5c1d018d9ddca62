"""The steer lab (``notebooks/source/10-steer-a-migration``) with the solutions filled in, run top to
bottom: live when QEMU is installed (the rescue makes the migration complete), and with QEMU hidden
from PATH, where it must say so and replay the bundled recording through the same live path."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "notebooks" / "source" / "10-steer-a-migration" / "10-steer-a-migration.ipynb"
STUDENT = REPO / "notebooks" / "10-steer-a-migration.ipynb"

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, env: dict[str, str], path: Path = SOURCE) -> str:
    nb = nbformat.read(path, as_version=4)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits it
    try:
        nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for c in nb.cells for o in c.get("outputs", [])
              if o.get("output_type") == "error" and "raises-exception" not in c.metadata.get("tags", [])]
    assert not errors, errors
    return "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells for o in c.get("outputs", []))


def test_steer_lab_without_qemu(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("RAMLAB_QEMU", None)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent)] + [
        d for d in env.get("PATH", "").split(os.pathsep) if d and not (Path(d) / "qemu-system-x86_64").exists()])
    text = _run(tmp_path, env)
    assert "No QEMU here" in text and "QEMU (qemu-system-x86_64) is not installed here" in text
    assert "replay: the recording was rescued" in text
    assert "status: completed" in text


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_steer_lab_live(tmp_path: Path) -> None:
    text = _run(tmp_path, dict(os.environ))
    assert "QEMU installed: the migration runs live." in text
    assert "status: completed" in text  # the student's rescue made it converge
    assert "cancelled" not in text


@pytest.mark.qemu
@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
def test_unanswered_lab_runs_to_the_end(tmp_path: Path) -> None:
    """The student version, nothing answered: "Run All" goes on past the cells that need answers, and
    the last cell cancels the migration that was never rescued."""
    text = _run(tmp_path, dict(os.environ), STUDENT)
    assert "cancelled - capture folder:" in text
