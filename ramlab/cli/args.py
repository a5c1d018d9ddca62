"""Argument types and the input/output rules every ``ramlab`` subcommand shares.

Inputs: a path, a capture folder, or ``-`` for standard input (a pipe, or a file redirected
into ``ramlab``; zstd is recognised by its magic number there too). Outputs: refused when they
already exist (``--force`` overwrites), when they name a directory where a file is wanted (or
the reverse), or when their parent directory is missing; all of these are usage errors (exit 2),
found before any work is done.

    >>> size_arg("64M"), size_arg("4k"), size_arg("1.5KiB"), size_arg("4096")
    (67108864, 4096, 1536, 4096)
    >>> size_arg("inf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    argparse.ArgumentTypeError: not a size: 'inf' (expected a number of bytes >= 0 with an optional K, M, G or T ...
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from ramlab.errors import RamlabError

__all__ = ["UsageError", "size_arg", "count_arg", "positive_float_arg", "seconds_arg", "int_range_arg",
           "stdin_bytes", "check_output_file", "check_output_dir", "writing"]

#: exit statuses of the ``ramlab`` command
EXIT_OK, EXIT_DAMAGED, EXIT_USAGE = 0, 1, 2
STDIN = "-"

_SIZE = re.compile(r"\s*(\d+(\.\d*)?|\.\d+)\s*([KMGT](I?B)?|B)?\s*", re.IGNORECASE)


class UsageError(RamlabError):
    """Bad arguments found after parsing (an output that exists, a missing directory...): exit 2."""


def size_arg(text: str) -> int:
    """An argparse type for sizes: ``64M``, ``4k``, ``1.5G``, ``4096``; rejects inf, nan, negatives
    and sizes beyond 2**62 bytes."""
    from ramlab import checks

    if not _SIZE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (expected a number of bytes >= 0 with an optional K, M, G or T suffix, e.g. 64M)")
    try:
        return checks.size(text, "size")
    except RamlabError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (too large: at most 2**62 bytes)") from None


def count_arg(text: str) -> int:
    """An argparse type for counts: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (expected an integer >= 0)")
    return value


def positive_float_arg(text: str) -> float:
    """An argparse type for durations: a finite number >= 0 (``nan``, ``inf`` and negatives refused)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 <= value < float("inf")):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (expected a finite number >= 0)")
    return value


def seconds_arg(text: str) -> float:
    """An argparse type for timeouts, intervals and speeds: a finite number > 0.

    >>> seconds_arg("0.5")
    0.5
    >>> seconds_arg("inf")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: not a positive number: 'inf' (expected a finite number > 0)
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"not a positive number: {text!r} (expected a finite number > 0)")
    return value


def int_range_arg(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type for an integer in ``lo..hi`` (inclusive).

    >>> int_range_arg(1, 255)("8")
    8
    >>> int_range_arg(1, 255)("0")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: not an integer in 1..255: '0'
    """

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lo - 1
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"not an integer in {lo}..{hi}: {text!r}")
        return value

    convert.__name__ = f"integer {lo}..{hi}"
    return convert


def stdin_bytes() -> bytes:
    """All of standard input, for a ``-`` argument (refused when it is a terminal)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("'-' reads a stream from standard input, which is a terminal: "
                         "pipe or redirect one (ramlab inspect - < stream.bin)")
    return sys.stdin.buffer.read()


def check_output_file(path: str | Path, force: bool, option: str = "-o") -> Path:
    """``path`` may be written: not a directory, its parent exists, not an existing file unless ``force``.

    Devices and pipes (``/dev/null``) are written as given.
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory (give a file name)")
    if p.is_file() and not force:
        raise UsageError(f"{option} {path}: exists (use --force to overwrite it)")
    if not p.exists() and not p.parent.is_dir():
        raise UsageError(f"{option} {path}: directory {p.parent} does not exist")
    return p


def check_output_dir(path: str | Path, force: bool, option: str = "-o") -> Path:
    """``path`` may be filled: a new directory whose parent exists, or an empty one (any one with ``force``)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{option} {path}: exists and is not a directory")
    if p.is_dir() and not force and any(p.iterdir()):
        raise UsageError(f"{option} {path}: directory is not empty (use --force to write into it, "
                         "replacing files of the same names)")
    if not p.exists() and not p.parent.is_dir():
        raise UsageError(f"{option} {path}: directory {p.parent} does not exist")
    return p


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing ``path`` into a :class:`RamlabError` that names it."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or path
        raise RamlabError(f"cannot write {where}: {exc.strerror or exc}") from exc
