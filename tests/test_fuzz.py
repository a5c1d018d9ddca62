"""Fuzzing in the test suite: every input a fuzzer ever broke ramlab with is replayed, and a short
coverage-guided run of each target (``tests/fuzz/run.py``, atheris) must find nothing new.

The CI run is bounded: ``RAMLAB_FUZZ_SECONDS`` per target (default 20 s, six targets). The long mode
is ``python tests/fuzz/run.py all --seconds 600``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(HERE))
from targets import TARGETS  # noqa: E402

REGRESSIONS = sorted((HERE / "regressions").glob("*/*"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression_inputs_pass(path: Path) -> None:
    TARGETS[path.parent.name](path.read_bytes())


def test_every_target_has_seeds() -> None:
    from run import seed_corpus

    for target in TARGETS:
        assert seed_corpus(target, Path(os.environ.get("TMPDIR", "/tmp")) / f"ramlab-seeds-{os.getpid()}" / target) > 0


@pytest.mark.fuzz
@pytest.mark.parametrize("target", list(TARGETS))
def test_short_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    seconds = int(os.environ.get("RAMLAB_FUZZ_SECONDS", "20"))
    out = subprocess.run([sys.executable, str(HERE / "run.py"), target, "--seconds", str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 240)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["crashes"] == [], (HERE.parents[1] / "artifacts" / "fuzz" / f"{target}.log").read_text()[-3000:]
    assert summary["executions"] > 0
