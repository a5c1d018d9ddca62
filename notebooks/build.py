"""Generate the teacher sources of the labs: ``notebooks/source/<lab>/<lab>.ipynb``.

    .venv/bin/python notebooks/build.py            # writes notebooks/source/*/*.ipynb
    .venv/bin/python notebooks/build.py --stats    # exercises per lab (code-writing / other)

Each lab is a Python module in ``notebooks/labs/`` (``LAB`` = its name, ``CELLS`` = its cells,
built with :mod:`labs.cells`): text, code and exercises are reviewed as Python diffs, and every
exercise gets the same nbgrader metadata. The student notebooks ``notebooks/<lab>.ipynb`` are
made from these sources by nbgrader (``scripts/release_notebooks.py``); never edit either by hand.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from labs.cells import exercises_in  # noqa: E402

#: the lab modules, in course order
MODULES = [
    "l00_tour",
    "l01_stream_format",
    "l02_convergence",
    "l03_xbzrle",
    "l04_compression_multifd",
    "l05_postcopy",
    "l06_debugging",
    "l07_writable_working_set",
    "l08_delta_compression",
    "l09_precopy_vs_postcopy",
    "l10_steer",
]


def labs(only: list[str] | None = None) -> dict[str, list]:
    """``{lab name: cells}`` in course order (``only``: these module names)."""
    out = {}
    for mod in only or MODULES:
        m = importlib.import_module(f"labs.{mod}")
        out[m.LAB] = m.CELLS
    return out


def notebook(name: str, cells: list) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[nbformat.from_dict(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:03d}"
    nbformat.validate(nb)
    return nb


def build(out_dir: Path = HERE / "source", only: list[str] | None = None) -> list[Path]:
    """Write every teacher source (no outputs) under ``out_dir/<lab>/<lab>.ipynb``."""
    paths = []
    for name, cells in labs(only).items():
        path = out_dir / name / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook(name, cells), path)
        paths.append(path)
    return paths


def stats() -> list[tuple[str, int, int, int, int, int]]:
    """``(lab, exercises, code-writing, points, words of text to read, lines of solution code)`` per lab."""
    import re

    rows = []
    for name, cells in labs().items():
        ex = exercises_in(cells)
        words = sum(len(c.source.split()) for c in cells if c.cell_type == "markdown")
        sol = 0
        for c in cells:
            for block in re.findall(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", c.source, re.S):
                sol += sum(1 for line in block.splitlines() if line.strip() and not line.strip().startswith("#"))
        rows.append((name, len(ex), sum(e.kind == "code" for e in ex), sum(e.points for e in ex), words, sol))
    return rows


def planning_minutes(words: int, n: int, n_code: int, solution_lines: int) -> int:
    """A planning figure derived from a lab's measured load (not a measured student time): 200 words of
    reading a minute, 4 minutes per predict/explain exercise, 10 minutes per code exercise plus a minute
    per line of the reference solutions; rounded up to 5 minutes."""
    m = words / 200 + 4 * (n - n_code) + 10 * n_code + solution_lines
    return int(-(-m // 5) * 5)


if __name__ == "__main__":
    if "--stats" in sys.argv:
        total = [0, 0, 0, 0, 0]
        for name, n, c, p, w, sol in stats():
            print(f"{name:36} {n:3} exercises, {c:2} code-writing, {n - c:2} other, {p:3} points, "
                  f"{w:5} words, {sol:3} solution lines, planning ~{planning_minutes(w, n, c, sol)} min")
            total = [a + b for a, b in zip(total, (n, c, p, w, sol))]
        print(f"{'total':36} {total[0]:3} exercises, {total[1]:2} code-writing, {total[0] - total[1]:2} other, "
              f"{total[2]:3} points, {total[3]:5} words, {total[4]:3} solution lines")
    else:
        only = [a for a in sys.argv[1:] if not a.startswith("-")] or None
        for p in build(only=only):
            print(p.relative_to(HERE.parent))
