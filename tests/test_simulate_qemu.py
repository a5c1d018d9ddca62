"""A real QEMU 7.2 destination loads a simulated, spliced, multi-pass stream.

The stream uses ZERO, PAGE, XBZRLE and COMPRESS_PAGE records (XBZRLE + compress on: compressed
pages in the bulk pass, XBZRLE deltas afterwards) and the device sections of the bundled
``data/plain`` capture. The destination runs like the template's ``cmdline_dst`` (``pc``,
``-kernel guest.elf -S -incoming defer``) with the ``xbzrle`` and ``compress`` capabilities;
its ``pmemsave`` must equal the simulator's final ``pc.ram`` outside the VGA window.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ramlab.simulate import default_template, simulate

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]


def test_qemu_loads_simulated_stream(tmp_path):
    from ramlab.capture.qemu import MachineSpec, load_stream

    template = default_template()
    if template is None:
        pytest.skip("no template capture (data/plain) available")
    r = simulate(ram="16M", workload="counters", xbzrle=True, compress=True, cache_size="4M", bandwidth="8M",
                 dirty_rate="4M", downtime_ms=100, stream=True, seed=5, working_set=0.3, template=template)
    kinds = r.trace.class_counts().sum(axis=0)
    assert r.trace.n_passes >= 3
    assert r.counters["duplicate"] and r.counters["xbzrle_pages"] and r.counters["compressed"]
    assert kinds[2] > 0  # normal pages too
    path = tmp_path / "sim.bin"
    r.save(path)
    res = load_stream(path, MachineSpec(machine="pc", ram_mib=16), capabilities=["xbzrle", "compress"],
                      parameters={"decompress-threads": 2}, timeout=120)
    assert res.query_migrate.get("status") == "completed"
    ram = np.frombuffer(res.ram, np.uint8)
    want = r.final_ram["pc.ram"]
    assert ram.size == want.size
    keep = np.ones(ram.size, bool)
    keep[0xA0000:0x100000] = False  # VGA window / BIOS shadow: not plain RAM in the dump
    assert np.array_equal(ram[keep], want[keep])
