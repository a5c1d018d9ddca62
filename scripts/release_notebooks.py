#!/usr/bin/env python3
"""Make the student notebooks ``notebooks/<lab>.ipynb`` from the teacher sources, with nbgrader.

    .venv/bin/python scripts/release_notebooks.py            # build the sources, release every lab
    .venv/bin/python scripts/release_notebooks.py 03-xbzrle  # one lab
    .venv/bin/python scripts/release_notebooks.py --check    # exit 1 if a committed notebook is stale

Steps: ``notebooks/build.py`` writes ``notebooks/source/<lab>/<lab>.ipynb``; then, in a temporary
course directory (so no ``gradebook.db`` or ``release/`` lands in the repository), ``nbgrader
generate_assignment <lab> --force`` makes the student version (solutions replaced by a stub,
hidden tests removed, cells locked and checksummed); it is written to ``notebooks/<lab>.ipynb``
with outputs stripped. Those are the notebooks the wheel ships and Binder opens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def nbgrader_env() -> dict[str, str]:
    """The environment for nbgrader subprocesses: this interpreter's ``bin/`` first on PATH
    (nbgrader runs ``alembic`` from there), and no course directory inherited."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def nbgrader(args: list[str], course: Path) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in ``course`` (raises with nbgrader's output on failure)."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    p = subprocess.run(cmd, cwd=course, env=nbgrader_env(), capture_output=True, text=True)
    if p.returncode != 0 or "[ERROR]" in p.stdout + p.stderr:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed in {course}:\n{p.stdout}\n{p.stderr}")
    return p


def api(course: Path):  # type: ignore[no-untyped-def]
    """nbgrader's Python API on ``course``, configured by its ``nbgrader_config.py`` (what the
    ``nbgrader`` command does, without paying its start-up for every call)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config.loader import PyFileConfigLoader

    os.environ["PATH"] = nbgrader_env()["PATH"]  # the gradebook is created with `alembic`
    cfg = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    cfg.CourseDirectory.root = str(course)
    return NbGraderAPI(CourseDirectory(config=cfg), config=cfg)


def run_api(result: dict, what: str) -> None:
    """Raise with nbgrader's log when an API call did not succeed."""
    if not result.get("success"):
        raise RuntimeError(f"nbgrader {what} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


def course_copy(dest: Path, labs: list[str], source: Path = NOTEBOOKS / "source") -> Path:
    """A course directory in ``dest`` with the config and the given labs' sources."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(NOTEBOOKS / "nbgrader_config.py", dest / "nbgrader_config.py")
    for lab in labs:
        shutil.copytree(source / lab, dest / "source" / lab, dirs_exist_ok=True)
    return dest


def student_notebook(release_nb: Path):  # type: ignore[no-untyped-def]
    """The released notebook, outputs and execution counts stripped."""
    import nbformat

    nb = nbformat.read(release_nb, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def all_labs() -> list[str]:
    return sorted(p.name for p in (NOTEBOOKS / "source").iterdir() if (p / f"{p.name}.ipynb").exists())


def release(labs: list[str], out_dir: Path = NOTEBOOKS, source: Path = NOTEBOOKS / "source") -> list[Path]:
    """Generate each lab's student version with nbgrader and write ``out_dir/<lab>.ipynb``."""
    import nbformat

    out = []
    with tempfile.TemporaryDirectory(prefix="ramlab-release-") as tmp:
        course = course_copy(Path(tmp), labs, source)
        grader = api(course)
        for lab in labs:
            run_api(grader.generate_assignment(lab, force=True), f"generate_assignment {lab}")
            nb = student_notebook(course / "release" / lab / f"{lab}.ipynb")
            path = out_dir / f"{lab}.ipynb"
            nbformat.write(nb, path)
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labs", nargs="*", help="lab names (default: all)")
    ap.add_argument("--no-build", action="store_true", help="do not regenerate the sources first")
    ap.add_argument("--check", action="store_true", help="only check that the committed notebooks are current")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(NOTEBOOKS))
    import build  # notebooks/build.py

    if args.check:
        with tempfile.TemporaryDirectory(prefix="ramlab-check-") as tmp:
            src = Path(tmp) / "source"
            build.build(src)
            labs = args.labs or sorted(p.name for p in src.iterdir())
            fresh = release(labs, Path(tmp), src)
            stale = [p.name for p in fresh if not (NOTEBOOKS / p.name).exists()
                     or (NOTEBOOKS / p.name).read_text() != p.read_text()]
        for name in stale:
            print(f"stale: notebooks/{name} (run scripts/release_notebooks.py)")
        return 1 if stale else 0
    if not args.no_build:
        build.build()
    for p in release(args.labs or all_labs()):
        print(p.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
