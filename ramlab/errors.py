"""The one exception family of ramlab.

Every error ramlab raises on bad input derives from :class:`RamlabError`. Errors found
while decoding a stream say *where* (absolute byte offset, the section being read),
*what was expected* and *what was found*, so a damaged capture can be located with a
hex editor::

    >>> err = StreamError("bad magic", offset=0, expected="0x5145564d", found="0x00000000")
    >>> str(err)
    'bad magic at byte 0: expected 0x5145564d, found 0x00000000'
"""

from __future__ import annotations


class RamlabError(Exception):
    """Base class of every error ramlab raises on bad input or bad arguments."""


class StreamError(RamlabError):
    """A migration stream that QEMU's loader would reject (or that ramlab cannot read).

    ``offset`` is the absolute byte offset in the stream where the bad field starts,
    ``section`` names the section being decoded (``"ram"``, ``"cpu"``...) or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        section: str | None = None,
        expected: str | None = None,
        found: str | None = None,
    ) -> None:
        self.message = message
        self.offset = offset
        self.section = section
        self.expected = expected
        self.found = found
        super().__init__(self._format())

    def _format(self) -> str:
        text = self.message
        if self.offset is not None:
            text += f" at byte {self.offset}"
        if self.section is not None:
            text += f" in section {self.section!r}"
        details = []
        if self.expected is not None:
            details.append(f"expected {self.expected}")
        if self.found is not None:
            details.append(f"found {self.found}")
        if details:
            text += ": " + ", ".join(details)
        return text


class TruncatedStream(StreamError):
    """The stream ended in the middle of an item (everything before it was decoded)."""


class UnsupportedFeature(StreamError):
    """A valid stream element that ramlab does not handle (e.g. RDMA hooks)."""


class InternalError(StreamError):
    """ramlab itself failed on this input (a bug: please report it with the input). Decoding stops
    there and keeps its prefix, like for a damaged stream; the fuzz tests make sure it never occurs."""


class XbzrleError(RamlabError):
    """An XBZRLE delta that QEMU's ``xbzrle_decode_buffer`` would reject (it returns -1)."""


class CacheError(RamlabError):
    """Bad arguments to the XBZRLE page cache."""


class BitmapError(RamlabError):
    """A received-bitmap blob or bitmap operation that QEMU would reject."""


class PostcopyError(RamlabError):
    """A postcopy rule violated (unaligned discard, non-sequential target page, ...)."""


class TraceError(RamlabError, ValueError):
    """A :class:`~ramlab.trace.Trace` whose arrays do not fit together (shapes, dtypes, codes)."""


class SimulationError(RamlabError):
    """Bad simulator parameters."""


class CaptureError(RamlabError):
    """Recording a capture with a real QEMU failed."""
