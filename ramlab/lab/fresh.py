"""Fresh inputs for grading code-writing exercises, and the harness that compares a student's
function with a reference on them.

A code-writing exercise is graded on inputs the student has not seen: random bitmaps and pages
drawn with an unseeded generator (new at every grading), another real capture than the one the
lab shows, a new simulation. The *references* are not here: they live in the hidden test cells
of the teacher's notebook (``notebooks/source/``), which a student install does not contain.

    >>> rng = np.random.default_rng(1)
    >>> bitmap(rng, 16).dtype, bitmap(rng, 16, density=0.0).any()
    (dtype('bool'), np.False_)
    >>> compare(lambda x: x + 1, lambda x: x + 1, [1, 2, 3], name="inc")
    >>> compare(lambda x: x / 1, lambda x: x, [1], name="same")
    Traceback (most recent call last):
    ...
    AssertionError: same: wrong on a fresh input 1: got the float 1.0, expected the int 1

Where the expected value is an int, the answer must be an int too: a float (``2.0``) or a bool
(``True``) is wrong even when ``==`` says equal; a numpy integer (``np.int64(2)``, what
``arr.sum()`` returns) is accepted as an int. The same holds inside tuples and lists, and an
integer array is not matched by a float one.

``forbid`` names package functions that a code-writing exercise asks the student to write
rather than call (``"ramlab.xbzrle.encode_page"``): while the student's function runs they raise
:class:`NotYourOwnCode`, wherever they were imported to (the ``ramlab`` modules and the student's
own namespace); the reference always runs with them in place.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = ["rng", "bitmap", "page_pair", "simulation", "other_traces", "compare", "unavailable", "NotYourOwnCode"]


def rng(seed: int | None = None) -> np.random.Generator:
    """A generator: unseeded (fresh entropy) by default, so every grading sees new inputs."""
    return np.random.default_rng(seed)


def bitmap(g: np.random.Generator, n: int, density: float | None = None, *, runs: bool | None = None) -> np.ndarray:
    """A random ``bool[n]`` bitmap: independent bits of ``density`` (random when ``None``), or with
    ``runs=True`` (random when ``None``) runs of set bits, as dirty maps look."""
    d = float(g.random()) if density is None else density
    if runs is None:
        runs = bool(g.random() < 0.5)
    if not runs:
        return g.random(n) < d
    out = np.zeros(n, bool)
    i = 0
    while i < n:
        length = int(g.integers(1, max(2, n // 4) + 1))
        if g.random() < d:
            out[i : i + length] = True
        i += length
    return out


def page_pair(g: np.random.Generator, page: int = 4096, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(old, new)`` uint8 pages for delta encoders: ``kind`` one of ``same``, ``sparse``,
    ``runs``, ``dense``, ``random``, ``edges`` (changes at the first/last bytes), or ``None`` for a
    random kind."""
    kinds = ("same", "sparse", "runs", "dense", "random", "edges")
    k = kinds[int(g.integers(len(kinds)))] if kind is None else kind
    old = g.integers(0, 256, page, dtype=np.uint8) if g.random() < 0.5 else np.zeros(page, np.uint8)
    new = old.copy()
    if k == "sparse":
        pos = g.choice(page, int(g.integers(1, 64)), replace=False)
        new[pos] ^= g.integers(1, 256, pos.size, dtype=np.uint8)
    elif k == "runs":
        for _ in range(int(g.integers(1, 40))):
            a = int(g.integers(0, page))
            n = int(g.integers(1, 300))
            new[a : a + n] ^= g.integers(1, 256, len(new[a : a + n]), dtype=np.uint8)
    elif k == "dense":
        step = int(g.integers(2, 4))
        new[::step] ^= 1
    elif k == "random":
        new = g.integers(0, 256, page, dtype=np.uint8)
    elif k == "edges":
        new[0] ^= 0xFF
        new[-int(g.integers(1, 3)) :] ^= 0x5A
    elif k != "same":
        raise ValueError(f"unknown page-pair kind {k!r}; use one of {kinds}")
    return old, new


def simulation(g: np.random.Generator, **fixed: Any):  # type: ignore[no-untyped-def]
    """A small new simulation (``ramlab.simulate``) with random workload, rates and seed;
    ``fixed`` overrides any parameter. Runs in well under a second."""
    from ramlab.simulate import simulate

    params: dict[str, Any] = {
        "ram": int(g.choice([4, 8, 16])) << 20,
        "workload": str(g.choice(["hotset", "uniform", "counters", "zero", "sweep"])),
        "dirty_rate": int(g.integers(1, 16)) << 20,
        "bandwidth": int(g.choice([4, 8, 16, 32])) << 20,
        "max_passes": int(g.integers(3, 12)),
        "seed": int(g.integers(1 << 31)),
        "template": False,
    }
    params.update(fixed)
    return simulate(**params)


def other_traces(*exclude: str):  # type: ignore[no-untyped-def]
    """``{name: Trace}`` of the bundled real captures other than ``exclude`` (precomputed traces)."""
    from ramlab.data import data_dir, load_trace

    names = sorted(p.stem for p in (data_dir() / "traces").glob("*.npz"))
    return {n: load_trace(n) for n in names if n not in exclude}


class NotYourOwnCode(AssertionError):
    """Raised by a package function that the graded exercise asks the student to write."""


def _resolve(path: str) -> tuple[Any, str, Any]:
    """``"ramlab.xbzrle.encode_page"`` -> (module, attribute name, the object)."""
    mod_name, _, attr = path.rpartition(".")
    mod = importlib.import_module(mod_name)
    return mod, attr, getattr(mod, attr)


class _Blocker:
    """Every place (module or namespace) that holds one of the forbidden objects, found once;
    :meth:`block` swaps them for stubs that raise :class:`NotYourOwnCode`, :meth:`restore` puts
    the originals back."""

    def __init__(self, paths: Iterable[str], exercise: str, namespaces: Iterable[dict]) -> None:
        originals: dict[int, tuple[str, Any]] = {}
        for path in paths:
            _, _, obj = _resolve(path)
            originals[id(obj)] = (path, obj)
        spaces = [vars(m) for n, m in list(sys.modules.items())
                  if m is not None and (n == "ramlab" or n.startswith("ramlab."))]
        spaces += [ns for ns in namespaces if ns is not None]
        self.places: list[tuple[dict, str, Any, Any]] = []
        seen: set[tuple[int, str]] = set()
        for ns in spaces:
            for key, value in list(ns.items()):
                hit = originals.get(id(value))
                if hit is not None and hit[1] is value and (id(ns), key) not in seen:
                    seen.add((id(ns), key))
                    self.places.append((ns, key, value, _stub(hit[0], exercise)))

    def block(self) -> None:
        for ns, key, _, stub in self.places:
            ns[key] = stub

    def restore(self) -> None:
        for ns, key, original, _ in self.places:
            ns[key] = original


def _stub(path: str, exercise: str) -> Callable[..., Any]:
    def unavailable_here(*args: Any, **kwargs: Any) -> Any:
        raise NotYourOwnCode(f"{exercise}: {path} is not available while this exercise is graded: "
                             "the exercise asks you to write it yourself")

    return unavailable_here


@contextlib.contextmanager
def unavailable(*paths: str, exercise: str, namespace: dict | None = None) -> Iterator[None]:
    """Inside the block, the package functions ``paths`` (``"ramlab.xbzrle.encode_page"``...)
    raise :class:`NotYourOwnCode`: in their module, in every ``ramlab`` module that imported them
    and in ``namespace`` (a notebook's globals); restored on exit, even on an error.

    >>> import ramlab.xbzrle
    >>> with unavailable("ramlab.xbzrle.encode_page", exercise="demo"):
    ...     ramlab.xbzrle.encode_page(bytes(8), bytes(8))
    Traceback (most recent call last):
    ...
    ramlab.lab.fresh.NotYourOwnCode: demo: ramlab.xbzrle.encode_page is not available while this exercise ...
    >>> ramlab.xbzrle.encode_page(bytes(8), bytes(8))
    b''
    """
    blocker = _Blocker(paths, exercise, [namespace] if namespace is not None else [])
    blocker.block()
    try:
        yield
    finally:
        blocker.restore()


def compare(student: Callable[..., Any], reference: Callable[..., Any], cases: Iterable[Any], *, name: str,
            same: Callable[[Any, Any], bool] | None = None, describe: Callable[[Any], str] = repr,
            star: bool = False, forbid: Iterable[str] = ()) -> None:
    """Run ``student`` and ``reference`` on every case; raise ``AssertionError`` on the first case
    where they differ (saying which input, what came out and what was expected: a fresh input,
    so this gives nothing of the exercise's own answer away). Returns ``None`` (a number left as a
    test cell's result would be read by nbgrader as partial credit).

    ``same(got, expected)`` compares (default: type-strict equality, see the module docstring:
    ``np.array_equal`` for arrays, an int only for an int); ``star``: each case is a tuple of
    arguments; ``forbid``: package functions made unavailable while ``student`` runs (not while
    ``reference`` runs), looked up in the ``ramlab`` modules and in ``student``'s globals.
    """
    forbid = tuple(forbid)
    blocker = _Blocker(forbid, name, [getattr(student, "__globals__", None)]) if forbid else None
    n = 0
    for case in cases:
        args = case if star else (case,)
        expected = reference(*args)
        try:
            if blocker is not None:
                blocker.block()
            got = student(*args)
        except NotYourOwnCode as e:
            raise AssertionError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - any failure of the student's code is reported
            raise AssertionError(f"{name}: raised {type(e).__name__}: {e} on {describe(case)}") from None
        finally:
            if blocker is not None:
                blocker.restore()
        ok = same(got, expected) if same is not None else _equal(got, expected)
        if not ok:
            raise AssertionError(f"{name}: wrong on a fresh input {describe(case)}: "
                                 f"got {_typed(got, expected)}, expected {_typed(expected, got)}")
        n += 1
    if n == 0:
        raise AssertionError(f"{name}: no test case was run")


def _is_int(a: Any) -> bool:
    return isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_))


def _kind(a: Any) -> str:
    if isinstance(a, (bool, np.bool_)):
        return "bool"
    if _is_int(a):
        return "int"
    if isinstance(a, (float, np.floating)):
        return "float"
    return type(a).__name__


def _equal(a: Any, b: Any) -> bool:
    """Type-strict equality of a result ``a`` with the expected ``b`` (module docstring)."""
    if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
        try:
            aa, bb = np.asarray(a), np.asarray(b)
        except (TypeError, ValueError):
            return False
        if bb.dtype.kind in "iu" and aa.dtype.kind not in "iu" and aa.size:
            return False
        try:
            return bool(np.array_equal(aa, bb))
        except (TypeError, ValueError):
            return False
    if isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and bool(a) == bool(b)
    if _is_int(b):
        return _is_int(a) and int(a) == int(b)
    if isinstance(b, (tuple, list)):
        return (isinstance(a, (tuple, list)) and len(a) == len(b)
                and all(_equal(x, y) for x, y in zip(a, b)))
    if isinstance(b, (set, frozenset)):
        return (isinstance(a, (set, frozenset)) and a == b
                and sorted(map(_kind, a)) == sorted(map(_kind, b)))
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _typed(v: Any, other: Any) -> str:
    """``v`` for a message, with its type when the two values differ only by type (``2.0`` vs ``2``)."""
    text = _short(v)
    if _kind(v) != _kind(other) and _kind(v) in ("int", "float", "bool") and _kind(other) in ("int", "float", "bool"):
        return f"the {_kind(v)} {text}"
    return text


def _short(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)) and len(v) > 16:
        return f"{len(v)} bytes ({v[:12].hex(' ')} ...)"
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= 120 else text[:117] + "..."
