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

from ramlab.data import data_path
from ramlab.errors import RamlabError, StreamError
from ramlab.migration import Migration, open
from ramlab.simulate import simulate  # binds the function over the submodule attribute of the same name

__version__ = "0.1.0"

__all__ = ["open", "simulate", "data_path", "Migration", "RamlabError", "StreamError", "__version__"]

