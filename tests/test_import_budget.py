"""``ramlab inspect`` / ``extract`` start fast: they import none of the notebook or simulator stack.

Each check runs in a fresh interpreter and asserts on ``sys.modules`` (not on time: the time
is measured by benchmarks/bench_decode.py).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _shared import DATA

# Heavy (or unneeded) for a command-line decode: widgets, plotting, notebooks, JIT, progress bars
# (tqdm only when a progress bar is shown: stderr is not a terminal here), the simulator, capture.
NOT_FOR_THE_CLI = (
    "bokeh", "ipywidgets", "jupyter_bokeh", "IPython", "ipykernel", "jupyter_client", "jupyterlab",
    "numba", "llvmlite", "tqdm", "matplotlib", "pandas", "scipy",
    "ramlab.widgets", "ramlab.plots", "ramlab.report", "ramlab.lab", "ramlab.simulate", "ramlab.model.sender",
    "ramlab.model.postcopy_sender", "ramlab.capture",
)


def modules_after(code: str) -> set[str]:
    """The modules loaded by ``code`` run in a fresh interpreter."""
    tail = "\nimport json as _j, sys as _s\n_s.stdout.write('\\nMODULES ' + _j.dumps(sorted(_s.modules)))"
    out = subprocess.run([sys.executable, "-c", code + tail], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.rsplit("MODULES ", 1)[1]))


def heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in NOT_FOR_THE_CLI))


def test_importing_the_cli_loads_nothing_heavy():
    mods = modules_after("import ramlab.cli")
    assert "ramlab.cli" in mods and "numpy" in mods
    assert heavy(mods) == []


@pytest.mark.parametrize("command", ["inspect", "extract"])
def test_inspect_and_extract_load_nothing_heavy(command, tmp_path):
    stream = DATA / "plain" / "stream.bin.zst"
    argv = [command, str(stream), "-q"] + (["-o", str(tmp_path / "out")] if command == "extract" else [])
    code = f"import sys\nfrom ramlab.cli import main\nassert main({argv!r}) == 0"
    mods = modules_after(code)
    assert "ramlab.migration" in mods
    assert heavy(mods) == []
    if command == "extract":
        assert (tmp_path / "out" / "pc.ram.bin").stat().st_size == 16 << 20


def test_the_package_front_doors_still_load_on_use():
    """simulate and data_path are loaded lazily; ramlab.simulate stays the function either way."""
    mods = modules_after("import ramlab\nassert callable(ramlab.simulate) and callable(ramlab.data_path)")
    assert "ramlab.simulate" in mods and "ramlab.data" in mods
    code = ("from ramlab.simulate import parse_size\nimport ramlab\n"
            "assert ramlab.simulate is sys.modules['ramlab.simulate'].simulate\n"
            "import ramlab.simulate as s\nassert s is ramlab.simulate\n"
            "from ramlab import simulate, data_path\nassert simulate is ramlab.simulate\n"
            "assert {'open', 'simulate', 'data_path'} <= set(dir(ramlab))")
    modules_after("import sys\n" + code)
    with pytest.raises(AssertionError, match="no attribute 'nope'"):
        modules_after("import ramlab\nramlab.nope")
