"""Every course notebook runs top to bottom without an error output (nbclient, in a temp copy).

Also checks that the committed notebooks are what ``notebooks/build.py`` generates, with no outputs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


def _build_module():
    spec = importlib.util.spec_from_file_location("ramlab_notebooks_build", NOTEBOOKS / "build.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_all_notebooks_present() -> None:
    expected = set(_build_module().NOTEBOOKS)
    assert set(NAMES) == expected, "run: .venv/bin/python notebooks/build.py"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stripped_and_up_to_date(name: str, tmp_path: Path) -> None:
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in committed.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs not stripped"
    _build_module().build(tmp_path)
    fresh = nbformat.read(tmp_path / f"{name}.ipynb", as_version=4)
    assert [c.source for c in committed.cells] == [c.source for c in fresh.cells], (
        f"{name}.ipynb differs from notebooks/build.py: run .venv/bin/python notebooks/build.py")


def _kernel_name() -> str:
    """The ``python3`` kernel when it runs this interpreter, else the venv's own kernelspec."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    spec = specs.get("python3", {}).get("spec", {})
    argv0 = (spec.get("argv") or [""])[0]
    if argv0 in ("python", "python3", "{python}") or Path(argv0).resolve() == Path(sys.executable).resolve():
        return "python3"
    pytest.skip("no python3 kernel for this interpreter: .venv/bin/python -m ipykernel install --sys-prefix")
    raise AssertionError  # unreachable


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    if name.startswith("02-") and importlib.util.find_spec("ramlab.simulate") is None:
        pytest.skip("ramlab.simulate is not there yet (notebook 02 uses it)")
    src = NOTEBOOKS / f"{name}.ipynb"
    work = tmp_path / src.name
    shutil.copy(src, work)
    nb = nbformat.read(work, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name=_kernel_name(),
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
            stderr = out.get("output_type") == "stream" and out.get("name") == "stderr"
            if stderr and "Traceback" in out.get("text", ""):
                errors.append(f"cell {i}: traceback on stderr: {out['text'][:400]}")
    assert not errors, "\n".join(errors)
    # every exercise cell was reached and displayed a check result
    checks = [c for c in nb.cells if c.cell_type == "code" and "lab.check(" in c.source]
    assert all(c.outputs for c in checks), "an exercise check produced no output"
    nbformat.write(nb, tmp_path / "executed.ipynb")
    json.loads((tmp_path / "executed.ipynb").read_text())
