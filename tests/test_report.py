"""The standalone HTML report: content, no CDN, a damaged capture, and a real headless-Chromium render."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import ramlab
from ramlab.io import read_stream
from ramlab.lab import sample
from ramlab.report import pass_images, report_html, write_report
from ramlab.trace import synthetic_trace

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(https?:)?//", re.I)
REMOTE_LINK = re.compile(r"<link[^>]*\bhref\s*=\s*[\"']?\s*(https?:)?//", re.I)


@pytest.fixture(scope="module")
def plain() -> ramlab.Migration:
    return ramlab.open(sample("plain"))


@pytest.fixture(scope="module")
def truncated() -> ramlab.Migration:
    data = bytes(read_stream(sample("plain") / "stream.bin.zst"))
    return ramlab.open(data[: len(data) * 2 // 3])


def _no_cdn(text: str) -> None:
    assert not REMOTE_SCRIPT.search(text), "the report loads a script from the network"
    assert not REMOTE_LINK.search(text), "the report loads a stylesheet from the network"
    assert "Bokeh" in text and "<script" in text  # BokehJS is inlined


def test_report_real_capture(plain: ramlab.Migration, tmp_path: Path) -> None:
    out = write_report(plain, tmp_path / "sub" / "report.html")
    text = out.read_text(encoding="utf-8")
    _no_cdn(text)
    s = plain.summary()
    assert "Decoding error" not in text
    assert "decoded completely" in text
    assert f"{s['stream_bytes']:,} bytes" in text
    assert "pc.ram" in text
    counts = plain.trace.class_counts()
    # the per-pass table carries the real numbers
    assert f"{int(counts[0, 1]):,}" in text
    assert f"{int(plain.trace.bytes_per_pass()[0]):,}" in text
    # one slider over the passes (CustomJS, no server)
    assert "CustomJS" in text and "Slider" in text


def test_report_truncated_capture(truncated: ramlab.Migration, tmp_path: Path) -> None:
    assert truncated.error is not None
    text = write_report(truncated, tmp_path / "damaged.html").read_text(encoding="utf-8")
    _no_cdn(text)
    assert "Decoding error" in text
    assert "TruncatedStream" in text
    assert f"{truncated.error.offset:,}" in text
    # the error box comes before the summary: it is the first thing a reader sees
    assert text.index("Decoding error") < text.index("<h2>Summary</h2>")


def test_report_garbage_has_no_passes(tmp_path: Path) -> None:
    m = ramlab.open(b"QEVM\x00\x00\x00\x03\x42")
    text = report_html(m)
    assert "Decoding error" in text and "No pass was decoded" in text


def test_cli_report(tmp_path: Path) -> None:
    from ramlab.cli import main

    out = tmp_path / "cli.html"
    assert main(["report", str(sample("plain")), "-o", str(out)]) == 0
    assert out.stat().st_size > 100_000


def test_pass_images_are_bounded() -> None:
    t = synthetic_trace(n_pages=1 << 20, n_passes=40, with_page_bytes=False)
    images, grid, factors = pass_images(t)
    assert grid == (1024, 1024)
    assert len(images) == 40
    assert max(images[0].shape) <= 512
    assert sum(i.size for i in images) <= 6_000_000
    # a single rare page stays visible after reduction
    t.classes[3] = 1
    t.classes[3, 12345] = 3
    images, _, _ = pass_images(t)
    assert (images[3] == 3).sum() == 1
    assert np.isin(images[3], [1, 3]).all()


def _playwright():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed")
    return sync_playwright


CANVAS_INFO_JS = """
() => {
  const out = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.tagName === 'CANVAS' && el.width > 50 && el.height > 50) {
        const d = el.getContext('2d').getImageData(0, 0, el.width, el.height).data;
        let colored = 0;
        for (let i = 0; i < d.length; i += 4 * 7) {
          if (d[i + 3] > 0 && !(d[i] > 245 && d[i + 1] > 245 && d[i + 2] > 245)) colored++;
        }
        out.push(colored);
      }
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return out;
}
"""


# the text of the page, shadow roots included (bokeh 3 renders its Divs inside shadow DOM)
SHADOW_TEXT_JS = """
() => { const out = [];
  const walk = (root) => { for (const n of root.childNodes) {
      if (n.nodeType === 3) out.push(n.textContent);
      else if (n.nodeType === 1 && !['STYLE', 'SCRIPT'].includes(n.tagName)) {
        if (n.shadowRoot) walk(n.shadowRoot);
        walk(n); } } };
  walk(document.body); return out.join('').replace(/\\s+/g, ' '); }
"""


@pytest.mark.browser
@pytest.mark.parametrize("which", ["plain", "truncated"])
def test_report_renders_in_chromium(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    sync_playwright = _playwright()
    m = request.getfixturevalue(which)
    path = write_report(m, tmp_path / f"{which}.html")
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.on("console", lambda msg: errors.append(f"console {msg.type}: {msg.text}")
                    if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
            page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
            page.goto(path.as_uri())
            page.wait_for_function("() => window.Bokeh && Bokeh.documents && Bokeh.documents.length > 0",
                                   timeout=20_000)
            page.wait_for_timeout(800)
            canvases = page.evaluate(CANVAS_INFO_JS)
            assert canvases and max(canvases) > 100, f"no bokeh canvas was drawn: {canvases}"
            # move the slider to the last pass through BokehJS and check the map redraws
            page.evaluate("""() => {
                const doc = Bokeh.documents[0];
                const s = doc.all_models ? [...doc.all_models].find(m => m.type === 'Slider' ||
                    (m.constructor && m.constructor.__name__ === 'Slider')) : null;
                if (s) s.value = s.end;
            }""")
            page.wait_for_timeout(500)
            after = page.evaluate(CANVAS_INFO_JS)
            assert after, "canvases vanished after moving the slider"
            if m.trace.n_passes > 1:  # the per-pass text follows the slider
                last = m.trace.n_passes - 1
                page.wait_for_function(f"() => ({SHADOW_TEXT_JS})().includes('pass {last} of {last} "
                                       f"({m.trace.pass_kinds[-1]})')", timeout=10_000)
            if which == "truncated":
                assert page.locator(".error").is_visible()
            page.evaluate("() => window.scrollTo(0, 0)")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = "report.png" if which == "plain" else "report-damaged.png"
            page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        finally:
            browser.close()
    assert not errors, "\n".join(errors)


def test_shared_fallback_exists() -> None:
    # sample() finds a capture folder whatever data/ holds
    assert (sample("plain") / "meta.json").exists()
