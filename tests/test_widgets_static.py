"""Without a browser: the static pictures every widget carries, the PNG writer, the BokehJS loader's
state, text that fits its plot, the XBZRLE strip's window, and small notebooks after nbclient."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

import ramlab
from ramlab.data import data_path
from ramlab.plots.bokehjs import loader_js
from ramlab.plots.delta_strip import change_window
from ramlab.plots.palette import PALETTE, rgb
from ramlab.plots.static import png_indexed, png_rgb
from ramlab.trace import PageClass, synthetic_trace
from ramlab.widgets import BitmapView, MigrationPlayer, PostcopyDiscardView, StreamInspector, XbzrleDeltaView
from ramlab.widgets._common import BokehJSLoader

PIL = pytest.importorskip("PIL.Image")

PNG_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


def _pngs(html: str) -> list:
    return [PIL.open(io.BytesIO(base64.b64decode(m))).convert("RGB") for m in PNG_URI.findall(html)]


def test_png_writers_round_trip_through_pillow():
    img = np.array([[0, 1, 2], [10, 3, 0]], np.uint8)
    decoded = np.asarray(PIL.open(io.BytesIO(png_indexed(img, PALETTE))).convert("RGB"))
    expected = np.array([[rgb(PALETTE[v]) for v in row] for row in img.tolist()], np.uint8)
    np.testing.assert_array_equal(decoded, expected)
    rgb_img = np.arange(2 * 5 * 3, dtype=np.uint8).reshape(2, 5, 3)
    np.testing.assert_array_equal(np.asarray(PIL.open(io.BytesIO(png_rgb(rgb_img)))), rgb_img)
    with pytest.raises(ValueError):
        png_indexed(np.array([[11]], np.uint8), PALETTE)


def test_player_static_picture_shows_the_pass_map_and_bars():
    t = synthetic_trace(n_pages=1 << 14, n_passes=6, seed=3, with_page_bytes=False)
    player = MigrationPlayer(t)
    player.slider.value = 2
    bundle = player._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["text/plain"].startswith("MigrationPlayer: 6 passes over 16,384 pages")
    html = bundle["text/html"]
    assert "<script" not in html and "pass 2" in html and "<svg" in html
    (png,) = _pngs(html)
    colors = {tuple(c) for c in np.asarray(png).reshape(-1, 3).tolist()}
    present = {rgb(PALETTE[k]) for k in np.unique(t.classes[2]).tolist()}
    assert colors <= {rgb(c) for c in PALETTE} and rgb(PALETTE[PageClass.XBZRLE]) in colors
    assert colors >= present - {rgb(PALETTE[PageClass.XBZRLE_OVERFLOW])}  # the rarest may share a pixel


def test_every_widget_has_a_static_picture():
    m = ramlab.open(data_path("xbzrle"))
    page = tuple(int(v) for v in np.argwhere(m.trace.classes == PageClass.XBZRLE)[0])
    d = np.zeros(64, bool)
    d[[3, 17, 18]] = True
    u = np.zeros(64, bool)
    u[40:] = True
    widgets = {
        "bitmap": BitmapView(m.trace, 1),
        "delta": XbzrleDeltaView(m.trace, *page),
        "postcopy": PostcopyDiscardView((d, u), host_ratio=8, block="m0"),
        "inspector": StreamInspector(m.records_table(), m.bytes_at),
    }
    for name, w in widgets.items():
        html = w._repr_mimebundle_()["text/html"]
        assert "<script" not in html, name
        assert _pngs(html) or "<svg" in html or name == "inspector", name
    assert "<pre" in widgets["inspector"]._repr_mimebundle_()["text/html"]


def test_loader_state_is_empty_when_opened_and_full_when_a_front_end_restores():
    import comm

    opened = []
    real = comm.create_comm
    comm.create_comm = lambda **kw: opened.append(kw["data"]["state"]) or real(**kw)
    try:
        w = BokehJSLoader()
    finally:
        comm.create_comm = real
    (state,) = [s for s in opened if s["_model_name"] == "OutputModel"]
    assert state["outputs"] == []  # what nbclient stores in a notebook
    restored = w.get_state()["outputs"]  # what JupyterLab gets when it asks for every widget's state
    assert restored[0]["data"]["application/javascript"] == loader_js()
    assert w._repr_mimebundle_()["text/plain"] == ""


def test_titles_fit_their_plots():
    t = synthetic_trace(n_pages=1 << 16, n_passes=8, with_page_bytes=False)
    player = MigrationPlayer(t)
    for fig in [player.bitmap.figure, *player.charts]:
        width = fig.frame_width or fig.width
        size = float(str(fig.title.text_font_size).rstrip("px").rstrip("pt"))
        assert len(fig.title.text) * 0.62 * size < width, (fig.title.text, width)  # ~0.6 em a character


@pytest.mark.parametrize(("changed", "size", "expected"), [
    ([(100, 5)], 4096, (84, 121)),  # 16 bytes each side
    ([(0, 1)], 4096, (0, 32)),  # at the start: at least 32 bytes wide
    ([(4090, 6)], 4096, (4064, 4096)),
    ([(10, 2), (3000, 4)], 4096, (0, 3020)),  # every run in view
    ([], 4096, (0, 4096)),
])
def test_change_window(changed, size, expected):
    assert change_window(changed, size) == expected


def test_delta_view_opens_on_the_change():
    old = np.zeros(4096, np.uint8)
    new = old.copy()
    new[2000:2005] = 7
    view = XbzrleDeltaView.from_arrays(old, new)
    x = view.strip.children[1].x_range
    assert (x.start, x.end) == (1984, 2021) and tuple(x.bounds) == (0, 4096)
    assert all(r.visible for r in view.strip.children[1].renderers if r.glyph.__class__.__name__ == "Text")


@pytest.mark.slow
def test_notebook_executed_by_nbclient_stays_small(tmp_path: Path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[
        new_code_cell("from ramlab.widgets import setup, MigrationPlayer\nsetup()"),
        new_code_cell("import ramlab, ramlab.data\nm = ramlab.open(ramlab.data.data_path('xbzrle'))\nm.player()"),
        new_code_cell("from ramlab.trace import synthetic_trace\n"
                      "MigrationPlayer(synthetic_trace(n_pages=1 << 18, n_passes=12, with_page_bytes=False))"),
        new_code_cell("from bokeh.plotting import figure, show\nf = figure(width=200, height=100)\n"
                      "f.line([1, 2], [3, 4])\nshow(f)   # into the notebook, as the labs do"),
    ])
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, str(path))
    text = path.read_text()
    assert path.stat().st_size < 1_500_000, path.stat().st_size
    assert path.stat().st_size < 400_000, path.stat().st_size
    assert "bokeh.min.js" not in text and "Bokeh.set_log_level" not in text  # BokehJS is not saved
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert len(json.dumps(state)) < 300_000
    outputs = [o for c in nb.cells for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("text/html" in o.get("data", {}) for o in outputs) >= 2  # the static pictures
    assert "application/vnd.bokehjs_exec.v0+json" in nb.cells[3].outputs[-1].get("data", {})  # show() drew here
    assert not list(tmp_path.glob("*.html"))  # ... and not into a file


def test_report_and_plots_do_not_pull_in_ipywidgets():
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys, ramlab.report, ramlab.plots\n"
            "for m in pkgutil.iter_modules(ramlab.plots.__path__, 'ramlab.plots.'):\n"
            "    importlib.import_module(m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ipywidgets', 'jupyter_bokeh')"
            " or m.startswith('ramlab.widgets'))\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
