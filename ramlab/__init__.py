"""ramlab: see QEMU live migration.

A byte-exact decoder, encoder and simulator of QEMU's RAM migration stream
(``migration/ram.c``), with notebook widgets on top. The two front doors:

    >>> import ramlab
    >>> m = ramlab.open(ramlab.data_path("plain"))       # a real capture      # doctest: +SKIP
    >>> m.player()                                       # step through passes # doctest: +SKIP
    >>> r = ramlab.simulate(ram="64M", workload="hotset", xbzrle=True)         # doctest: +SKIP
    >>> r.trace.n_passes                                                       # doctest: +SKIP
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ramlab.errors import RamlabError, StreamError
from ramlab.migration import Migration, open

__version__ = "0.1.0"

__all__ = ["open", "simulate", "data_path", "Migration", "RamlabError", "StreamError", "__version__"]


def __getattr__(name: str) -> Any:
    # simulate and data_path load on first use: `ramlab inspect` / `extract` need neither.
    if name == "simulate":
        from ramlab.simulate import simulate

        return simulate
    if name == "data_path":
        from ramlab.data import data_path

        return data_path
    raise AttributeError(f"module 'ramlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing the submodule ramlab.simulate binds the package attribute of the same name:
        # bind its function instead, so ramlab.simulate(...) works whichever was imported first.
        if name == "simulate" and isinstance(value, types.ModuleType):
            value = value.simulate
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

