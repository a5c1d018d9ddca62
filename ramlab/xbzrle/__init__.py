"""XBZRLE: QEMU's XOR-based zero-run-length page delta, byte-exact and vectorised.

The encoding of a page against its previously sent copy is ``(zrun nzrun)+`` where
``zrun = uleb(n_equal)`` and ``nzrun = uleb(n_changed) new_bytes[n_changed]``, with no
trailing zrun (``migration/xbzrle.c``, ``docs/reference/algorithms.md`` §6).
Lengths use QEMU's "small" ULEB128: one byte below 0x80, else two bytes, never more.

The API is one module's (:mod:`ramlab.xbzrle.codec`); two batch decoders sit behind it:
:mod:`ramlab.xbzrle.walk` (pure numpy, lockstep walk of the run chains) and
:mod:`ramlab.xbzrle.numba_kernels` (compiled, the ``ramlab[fast]`` extra), chosen by
:func:`set_backend`.

:func:`encode_page` and :func:`decode_page` mirror ``xbzrle_encode_buffer`` and
``xbzrle_decode_buffer`` on one page; :func:`encode_batch` and :func:`decode_batch` do the
same for many pages at once with numpy (per-page or per-run work, never per-byte Python).

    >>> import numpy as np
    >>> old = bytes(4096)
    >>> new = bytearray(old); new[4095] = 1
    >>> encode_page(old, new).hex()
    'ff1f0101'
    >>> page = np.zeros(4096, np.uint8)
    >>> decode_page(bytes.fromhex('ff1f0101'), page), int(page[4095])
    (4096, 1)

Why the overflow result depends on the total length only: the encoder checks
``(A) d + 2 > dlen`` before each zrun, ``(B) d + 2 > dlen`` after writing it and
``(C) d + n > dlen`` after writing the nzrun length. Along one page the left-hand sides
never decrease (``uleb(n) + n >= 2``), so some check fails exactly when the *last* one
evaluated fails: (A) after the last nzrun when equal bytes follow it (the trailing zrun
QEMU does not write), else (C) of the last nzrun. With ``L`` the encoded length, QEMU
returns -1 iff ``L + 2 > dlen`` (page ends unchanged) or ``L > dlen`` (page ends changed).
:func:`overflow_check` reports which check fails first, run by run, for display.
"""

from ramlab.xbzrle import codec
from ramlab.xbzrle.codec import *  # noqa: F403 - the package's API is the codec's

__all__ = codec.__all__
