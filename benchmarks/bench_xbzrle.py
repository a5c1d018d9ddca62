"""Throughput of ramlab's vectorised XBZRLE encoder and decoder.

Prints GB/s of page data (new-page bytes per second, 1 GB = 1e9 bytes) for batches of
4 KiB page pairs with different change patterns::

    python benchmarks/bench_xbzrle.py            # 65536 pages (256 MiB per array)
    python benchmarks/bench_xbzrle.py --quick    # 8192 pages
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from ramlab.xbzrle import decode_batch, encode_batch

PAGE = 4096
GEN_CHUNK = 4096  # pages generated at a time, to bound temporaries


def _mutate(old: np.ndarray, rng: np.random.Generator, change: Callable) -> np.ndarray:
    new = old.copy()
    for s in range(0, old.shape[0], GEN_CHUNK):
        change(new[s : s + GEN_CHUNK], rng)
    return new


def _flip(block: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    block[mask] ^= rng.integers(1, 256, int(mask.sum()), dtype=np.uint8)


def _one_word(block: np.ndarray, rng: np.random.Generator) -> None:
    words = block.view(np.uint64)
    idx = rng.integers(0, words.shape[1], words.shape[0])
    words[np.arange(words.shape[0]), idx] ^= np.uint64(0xFFFFFFFFFFFFFFFF)


def _scattered64(block: np.ndarray, rng: np.random.Generator) -> None:
    mask = np.zeros(block.shape, bool)
    rows = np.repeat(np.arange(block.shape[0]), 64)
    mask[rows, rng.integers(0, PAGE, rows.size)] = True
    _flip(block, mask, rng)


def _percent(p: int) -> Callable:
    def change(block: np.ndarray, rng: np.random.Generator) -> None:
        _flip(block, rng.integers(0, 100, block.shape, dtype=np.uint8) < p, rng)

    return change


def _random(block: np.ndarray, rng: np.random.Generator) -> None:
    block[...] = rng.integers(0, 256, block.shape, dtype=np.uint8)


CASES: list[tuple[str, Callable | None]] = [
    ("identical", None),
    ("one 8-byte word", _one_word),
    ("64 scattered bytes", _scattered64),
    ("5% random bytes", _percent(5)),
    ("30% random bytes", _percent(30)),
    ("fully random", _random),
]


def _best(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="8192 pages instead of 65536")
    ap.add_argument("--pages", type=int, default=None, help="number of page pairs")
    ap.add_argument("--repeats", type=int, default=3, help="best of N timings")
    args = ap.parse_args()
    n = args.pages or (8192 if args.quick else 65536)
    rng = np.random.default_rng(2024)
    old = rng.integers(0, 256, (n, PAGE), dtype=np.uint8)
    gb = n * PAGE / 1e9
    print(f"{n} page pairs of {PAGE} bytes ({n * PAGE / 2**20:.0f} MiB per array), best of {args.repeats}")
    print(f"{'case':<20} {'encode GB/s':>12} {'decode GB/s':>12} {'encoded':>8} {'unchanged':>9} "
          f"{'overflow':>9} {'mean len':>9}")
    for name, change in CASES:
        new = old.copy() if change is None else _mutate(old, rng, change)
        t_enc, enc = _best(lambda new=new: encode_batch(old, new), args.repeats)
        target = old.copy()
        t_dec = float("inf")
        for _ in range(args.repeats):
            target[...] = old
            t = time.perf_counter()
            decode_batch(enc, target)
            t_dec = min(t_dec, time.perf_counter() - t)
        ok = enc.ret > 0
        assert np.array_equal(target[ok], new[ok]), "decode(encode(old, new), old) != new"
        mean_len = float(enc.ret[ok].mean()) if ok.any() else 0.0
        print(f"{name:<20} {gb / t_enc:>12.2f} {gb / t_dec:>12.2f} {int(ok.sum()):>8} "
              f"{int((enc.ret == 0).sum()):>9} {int((enc.ret < 0).sum()):>9} {mean_len:>9.1f}")
        del new, target, enc


if __name__ == "__main__":
    main()
