"""The precomputed traces in data/traces equal a fresh decode of their captures (not stale)."""

from __future__ import annotations

import numpy as np
import pytest
from _shared import DATA

import ramlab
from ramlab.data import load_trace

NAMES = sorted(p.stem for p in (DATA / "traces").glob("*.npz"))


def test_every_bundled_capture_has_a_trace():
    captures = {p.name for p in DATA.iterdir() if (p / "meta.json").exists()}
    assert captures <= set(NAMES) | {"q10"}


@pytest.mark.parametrize("name", NAMES)
def test_trace_equals_fresh_decode(name):
    saved = load_trace(name)
    fresh = ramlab.open(ramlab.data_path(name)).trace
    assert saved.pass_kinds == fresh.pass_kinds
    assert np.array_equal(saved.classes, fresh.classes)
    assert np.array_equal(saved.wire_bytes, fresh.wire_bytes)
    assert [b.name for b in saved.blocks] == [b.name for b in fresh.blocks]
    for k, v in fresh.counters.items():
        assert np.array_equal(saved.counters[k], v), k
