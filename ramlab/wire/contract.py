"""The one sans-IO contract of ramlab's decoders, in the manner of h11.

Every decoder of :mod:`ramlab.wire` — :class:`~ramlab.wire.decoder.StreamDecoder` (the savevm
stream), :class:`~ramlab.wire.multifd.MultifdChannelDecoder` (one multifd channel) and
:class:`~ramlab.wire.return_path.ReturnPathDecoder` (the postcopy return path) — is used the same
way, and none of them ever opens a file or a socket::

    dec.receive_data(chunk)   # buffer bytes; b"" (or close()) says that the input has ended
    ev = dec.next_event()     # an event, NEED_DATA, or END

Rules:

* :meth:`Decoder.receive_data` only buffers. It never decodes and never raises for bad bytes. Bytes
  given as ``bytes`` or a read-only ``memoryview`` (an ``mmap`` of a file) are kept without copying,
  so page arrays of the events are views of them; other buffers are copied.
* :meth:`Decoder.next_event` decodes at most one wire item and returns its event(s) one per call. It
  returns :data:`NEED_DATA` when the bytes so far end inside an item (give more, or end the input),
  and :data:`END` once the input has ended at a place where the stream may end and every event has
  been returned.
* An error is raised by :meth:`Decoder.next_event` after every event before the damage has been
  returned. It is *sticky*: every later call raises the same :class:`~ramlab.errors.StreamError`,
  which is also :attr:`Decoder.error`. Input that ends inside an item raises
  :class:`~ramlab.errors.TruncatedStream`.
* Chunking never changes the events: fed whole, byte by byte or in random pieces, the same events
  come out (tests check this for every decoder).
* :meth:`Decoder.close` is ``receive_data(b"")``: it ends the input, nothing more.

Theory of operation. A decoder is a small state machine: ``_READERS`` maps each state to the method
that reads one item at the current position. A reader either consumes bytes and emits events
(possibly moving to another state), or raises :class:`NeedMore` saying up to which absolute offset
it needs bytes, or raises a :class:`~ramlab.errors.StreamError`. On ``NeedMore`` the position goes
back to where the item started and the decoder waits until that many bytes are buffered, so an item
that arrives byte by byte is parsed once, not once per byte. On an error the position also goes back,
so :attr:`Decoder.position` is where the damaged item starts.

    >>> from ramlab.wire.decoder import StreamDecoder
    >>> dec = StreamDecoder()
    >>> dec.receive_data(bytes.fromhex("5145564d"))
    >>> dec.next_event()
    NEED_DATA
    >>> dec.receive_data(bytes.fromhex("00000003"))
    >>> dec.next_event()
    FileHeader(version=3, offset=0)
    >>> dec.close()
    >>> dec.next_event()
    Traceback (most recent call last):
    ...
    ramlab.errors.TruncatedStream: stream ends before QEMU_VM_EOF at byte 8: expected a section, ... found end of data
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from ramlab.errors import RamlabError, StreamError, TruncatedStream
from ramlab.wire.events import Event

__all__ = ["NEED_DATA", "END", "Sentinel", "NeedMore", "Decoder"]


class Sentinel:
    """A named marker returned by :meth:`Decoder.next_event` instead of an event."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: the bytes so far end inside an item: give more (or end the input)
NEED_DATA = Sentinel("NEED_DATA")
#: the input has ended at a place where the stream may end, and every event has been returned
END = Sentinel("END")


class NeedMore(Exception):
    """Raised by a reader: the item at the current position needs bytes up to ``upto`` (absolute)."""

    def __init__(self, upto: int) -> None:
        super().__init__(upto)
        self.upto = upto


class Decoder:
    """Base of the wire decoders: the buffer, the position, the read loop and the sticky error.

    Subclasses set ``_READERS`` (state -> reader), the initial ``_state``, and may override
    :meth:`_may_end` (where the input may end) and :meth:`_truncated` (the error when it ends
    elsewhere). ``base_offset`` is the absolute offset of the first byte received.
    """

    _READERS: ClassVar[dict[Any, Callable[[Any], None]]] = {}
    _SECTION: ClassVar[str | None] = None

    def __init__(self, *, base_offset: int = 0) -> None:
        self._buf: bytes | bytearray | memoryview = b""
        self._mv = memoryview(b"")
        self._pos = 0  # position in _buf
        self._base = int(base_offset)  # absolute offset of _buf[0]
        self._owned = False  # _buf is our bytearray: emitted arrays must be copies, not views
        self._eof = False
        self._ended = False
        self._need_upto = 0
        self._out: deque[Event] = deque()
        self._state: Any = None
        self.error: StreamError | None = None

    # ------------------------------------------------------------------ the contract
    @property
    def position(self) -> int:
        """Absolute offset of the first byte not consumed by an event."""
        return self._base + self._pos

    @property
    def pending(self) -> int:
        """Bytes received but not yet consumed by an event."""
        return len(self._buf) - self._pos

    @property
    def ended(self) -> bool:
        """Whether the input has been ended (``receive_data(b"")`` or :meth:`close`)."""
        return self._eof

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data``; ``b""`` ends the input. Never decodes, never raises for bad bytes."""
        if not len(data):
            self._eof = True
            return
        if self._eof:
            raise RamlabError(f"data received after the end of input (at byte {self._base + len(self._buf)})")
        keep = isinstance(data, bytes) or (isinstance(data, memoryview) and data.readonly)
        if self.pending == 0:
            # events may hold views of the old buffer: drop our reference, never release it
            self._base += len(self._buf)
            self._buf = data if keep else bytes(data)
            self._pos = 0
            self._owned = False
        elif not self._owned:
            self._buf = bytearray(self._mv[self._pos :])
            self._base += self._pos
            self._pos = 0
            self._owned = True
            self._buf += data
        else:
            self._mv.release()  # a bytearray with an exported view cannot grow
            if self._pos > 65536 or self._pos * 2 > len(self._buf):
                del self._buf[: self._pos]  # type: ignore[union-attr]
                self._base += self._pos
                self._pos = 0
            self._buf += data  # type: ignore[operator]
        self._mv = memoryview(self._buf).cast("B")

    def close(self) -> None:
        """End the input (same as ``receive_data(b"")``)."""
        self._eof = True

    def next_event(self) -> Event | Sentinel:
        """The next event, :data:`NEED_DATA` or :data:`END`; raises the (sticky) stream error."""
        if self._out:
            return self._out.popleft()
        if self.error is not None:
            raise self.error
        if self._ended:
            return END
        while True:
            if not self._eof and self._base + len(self._buf) < self._need_upto:
                return NEED_DATA
            start = self._pos
            error: StreamError | None = None
            try:
                self._READERS[self._state](self)
            except NeedMore as need:
                self._pos = start
                self._out.clear()  # the step is retried whole: what it emitted comes again then
                self._need_upto = need.upto
                if not self._eof:
                    return NEED_DATA
                if start == len(self._buf) and self._may_end():
                    self._ended = True
                    return END
                error = self._truncated(need.upto)
            except StreamError as err:
                self._pos = start
                self._out.clear()  # a failed step emits nothing
                error = err
            if error is not None:
                self.error = error
                raise error
            if self._out:
                self._need_upto = 0
                return self._out.popleft()

    def events(self) -> Iterator[Event]:
        """Every event available now (until :data:`NEED_DATA` or :data:`END`); raises on damage."""
        while True:
            e = self.next_event()
            if isinstance(e, Sentinel):
                return
            yield e

    # ------------------------------------------------------------------ for subclasses
    def _may_end(self) -> bool:
        """Whether the input may end at the current position (an item boundary)."""
        return True

    def _truncated(self, upto: int) -> StreamError:
        """The error for an input that ends before byte ``upto`` is available."""
        have = len(self._buf) - self._pos
        return TruncatedStream(
            "input ends in the middle of an item", offset=self.position, section=self._SECTION,
            expected=f"{upto - self.position} bytes", found=f"{have} bytes",
        )

    def _emit(self, event: Event) -> None:
        self._out.append(event)

    def _need(self, n: int) -> None:
        """Raise :class:`NeedMore` unless ``n`` bytes are buffered at the position."""
        if len(self._buf) - self._pos < n:
            raise NeedMore(self._base + self._pos + n)
