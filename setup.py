"""Build hook: ship the student notebooks in the wheel without moving them.

The notebooks live at ``notebooks/*.ipynb`` in the repository (and the sdist); this copies them
to ``ramlab/notebooks/`` inside the built package, where ``ramlab notebooks DIR`` reads them
with :mod:`importlib.resources`. Everything else is declared in ``pyproject.toml``.
An editable install skips the copy: ``ramlab notebooks`` then reads the checkout's ``notebooks/``.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildPyWithNotebooks(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        notebooks = sorted((HERE / "notebooks").glob("*.ipynb"))
        if not notebooks:
            raise SystemExit("setup.py: no notebooks/*.ipynb to ship (is this a complete sdist?)")
        target = Path(self.build_lib) / "ramlab" / "notebooks"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for nb in notebooks:
            shutil.copyfile(nb, target / nb.name)


setup(cmdclass={"build_py": BuildPyWithNotebooks})
