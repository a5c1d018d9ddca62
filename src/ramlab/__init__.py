"""ramlab: see QEMU live migration.

A byte-exact decoder, encoder and simulator of QEMU's RAM migration stream
(``migration/ram.c``), with notebook widgets on top. The front doors:

    >>> import ramlab
    >>> m = ramlab.open(ramlab.data_path("plain"))      # doctest: +SKIP
    >>> m.player()                                       # doctest: +SKIP
"""

from __future__ import annotations

from .errors import RamlabError, StreamError
from .migration import Migration, open

__version__ = "0.1.0"

__all__ = ["open", "Migration", "RamlabError", "StreamError", "__version__"]
