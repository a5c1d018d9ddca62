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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["rng", "bitmap", "page_pair", "simulation", "other_traces", "compare"]


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


def compare(student: Callable[..., Any], reference: Callable[..., Any], cases: Iterable[Any], *, name: str,
            same: Callable[[Any, Any], bool] | None = None, describe: Callable[[Any], str] = repr,
            star: bool = False) -> None:
    """Run ``student`` and ``reference`` on every case; raise ``AssertionError`` on the first case
    where they differ (saying which input, what came out and what was expected: a fresh input,
    so this gives nothing of the exercise's own answer away). Returns ``None`` (a number left as a
    test cell's result would be read by nbgrader as partial credit).

    ``same(got, expected)`` compares (default: ``np.array_equal`` for arrays, ``==`` otherwise);
    ``star``: each case is a tuple of arguments.
    """
    n = 0
    for case in cases:
        args = case if star else (case,)
        expected = reference(*args)
        try:
            got = student(*args)
        except Exception as e:  # noqa: BLE001 - any failure of the student's code is reported
            raise AssertionError(f"{name}: raised {type(e).__name__}: {e} on {describe(case)}") from None
        ok = same(got, expected) if same is not None else _equal(got, expected)
        if not ok:
            raise AssertionError(f"{name}: wrong on a fresh input {describe(case)}: "
                                 f"got {_short(got)}, expected {_short(expected)}")
        n += 1
    if n == 0:
        raise AssertionError(f"{name}: no test case was run")


def _equal(a: Any, b: Any) -> bool:
    if isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
        try:
            return bool(np.array_equal(np.asarray(a), np.asarray(b)))
        except (TypeError, ValueError):
            return False
    if isinstance(b, (bool, np.bool_)):
        return isinstance(a, (bool, np.bool_)) and bool(a) == bool(b)
    return bool(a == b)


def _short(v: Any) -> str:
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= 120 else text[:117] + "..."
