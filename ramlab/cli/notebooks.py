"""``ramlab notebooks DIR``: copy the student notebooks out of the installed package.

A wheel carries the repository's ``notebooks/*.ipynb`` as ``ramlab/notebooks/`` (copied there
by the build hook in ``setup.py``); a source checkout (editable install) has them in its own
``notebooks/`` folder. Existing files are never overwritten without ``force``.

    >>> sorted(p.name for p in notebook_sources())[0]
    '00-tour.ipynb'
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from ramlab.cli.args import UsageError, check_output_dir, writing

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["notebook_sources", "copy_notebooks"]


def notebook_sources() -> list[Traversable]:
    """The student notebooks: the installed package's copies, else the checkout's ``notebooks/``."""
    packaged = files("ramlab") / "notebooks"
    if packaged.is_dir():
        found = [t for t in packaged.iterdir() if t.name.endswith(".ipynb")]
    else:
        checkout = Path(__file__).resolve().parents[2] / "notebooks"
        found = list(checkout.glob("*.ipynb")) if checkout.is_dir() else []
    if not found:
        raise UsageError("this ramlab installation carries no notebooks (a wheel built without notebooks/?)")
    return sorted(found, key=lambda t: t.name)


def copy_notebooks(dest: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Copy every student notebook into ``dest`` (created if its parent exists); returns the new paths.

    Refuses, copying nothing, when a notebook of the same name is already there and ``force``
    is false.
    """
    out = Path(dest)
    if not out.is_dir():
        check_output_dir(out, force, option="DIR")  # a file there, or a missing parent, is refused
    sources = notebook_sources()
    clash = [t.name for t in sources if (out / t.name).exists()]
    if clash and not force:
        raise UsageError(f"{dest}: already has {', '.join(clash)} (use --force to overwrite)")
    with writing(out):
        out.mkdir(exist_ok=True)
        for t in sources:
            (out / t.name).write_bytes(t.read_bytes())
    return [out / t.name for t in sources]
