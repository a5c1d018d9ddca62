"""Static pictures of the views (no script, no bokeh): what nbconvert, nbviewer and GitHub show.

* :func:`png_indexed` writes an 8-bit palette PNG with the standard library (``zlib``): a page-class map
  is already an image of palette indices, so it costs one ``zlib.compress``;
* :func:`class_map_img` turns a class image into an ``<img>`` tag (upscaled when small, pixelated);
* :func:`stacked_bars_svg` draws pages per class and pass as inline SVG with the current pass marked;
* :func:`figure_html` frames them with a title and caption.

    >>> import numpy as np
    >>> png = png_indexed(np.array([[0, 1], [2, 10]], np.uint8), ["#000000"] * 11)
    >>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", len(png) < 200
    (True, True)
"""

from __future__ import annotations

import base64
import html
import struct
import zlib
from collections.abc import Sequence

import numpy as np

from ramlab.plots.palette import PALETTE, legend_html, rgb
from ramlab.trace import CLASS_NAMES, N_CLASSES

__all__ = ["png_indexed", "png_rgb", "data_uri", "class_map_img", "stacked_bars_svg", "figure_html"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_indexed(image: np.ndarray, palette: Sequence[str]) -> bytes:
    """PNG bytes of ``image`` (uint8 ``[H, W]`` indices into ``palette``, ``"#rrggbb"`` strings)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"need a non-empty 2-D image, got shape {img.shape}")
    if len(palette) > 256 or int(img.max()) >= len(palette):
        raise ValueError("image indices must be below len(palette) <= 256")
    h, w = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img], axis=1).tobytes()  # filter 0 per row
    plte = b"".join(bytes(rgb(c)) for c in palette)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + _chunk(b"PLTE", plte) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def png_rgb(image: np.ndarray) -> bytes:
    """PNG bytes of an RGB image (uint8 ``[H, W, 3]``)."""
    img = np.ascontiguousarray(image, dtype=np.uint8)
    if img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise ValueError(f"need a non-empty [H, W, 3] image, got shape {img.shape}")
    h, w, _ = img.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * 3)], axis=1).tobytes()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def class_map_img(image: np.ndarray, *, width: int, alt: str, palette: Sequence[str] = PALETTE) -> str:
    """An ``<img>`` of a class image, shown ``width`` CSS pixels wide (integer upscale in the PNG when
    the image is much smaller, so viewers that smooth images keep sharp page edges)."""
    img = np.asarray(image, np.uint8)
    h, w = img.shape
    k = max(1, min(8, width // max(w, 1)))
    if k > 1:
        img = np.repeat(np.repeat(img, k, axis=0), k, axis=1)
    height = max(1, round(width * h / max(w, 1)))
    return (f"<img src='{data_uri(png_indexed(img, palette))}' width='{width}' height='{height}' "
            f"alt='{html.escape(alt, quote=True)}' style='image-rendering:pixelated;border:1px solid #ccc'>")


def stacked_bars_svg(counts: np.ndarray, current: int | None = None, *, width: int = 380, height: int = 170,
                     title: str = "pages sent per pass, by class") -> str:
    """Inline SVG: for each pass a bar stacked by class (``counts [n_passes, N_CLASSES]``; NOT_SENT
    left out), the bar of ``current`` outlined, passes and the largest total labelled."""
    c = np.asarray(counts, np.float64)
    n = c.shape[0]
    totals = c[:, 1:].sum(axis=1)
    top = float(totals.max()) if n and totals.max() > 0 else 1.0
    left, bottom, right, head = 46, 22, 8, 20
    pw, ph = width - left - right, height - bottom - head
    bw = pw / max(n, 1)
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
             f"font-family='sans-serif' font-size='11'>",
             f"<text x='{left}' y='13' font-size='12'>{html.escape(title)}</text>",
             f"<line x1='{left}' y1='{head + ph}' x2='{left + pw}' y2='{head + ph}' stroke='#888'/>",
             f"<text x='{left - 4}' y='{head + 4}' text-anchor='end'>{_short(top)}</text>",
             f"<text x='{left - 4}' y='{head + ph}' text-anchor='end'>0</text>"]
    for p in range(n):
        y = head + ph
        x = left + p * bw + bw * 0.1
        for k in range(1, N_CLASSES):
            if c[p, k] <= 0:
                continue
            hgt = ph * c[p, k] / top
            y -= hgt
            parts.append(f"<rect x='{x:.1f}' y='{y:.1f}' width='{bw * 0.8:.1f}' height='{hgt:.1f}' "
                         f"fill='{PALETTE[k]}'><title>pass {p}: {CLASS_NAMES[k]} {int(c[p, k]):,}</title></rect>")
        if p == current:
            parts.append(f"<rect x='{left + p * bw:.1f}' y='{head}' width='{bw:.1f}' height='{ph}' fill='#ffd700' "
                         f"fill-opacity='0.25' stroke='#b8860b'/>")
    step = max(1, n // 10)
    for p in range(0, n, step):
        parts.append(f"<text x='{left + (p + 0.5) * bw:.1f}' y='{height - 6}' text-anchor='middle'>{p}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _short(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}"


def figure_html(title: str, body: str, caption: str = "", counts: dict[int, int] | None = None) -> str:
    """A static figure: bold title, the pictures, the class legend (when ``counts`` is given) and a caption."""
    legend = f"<div style='font-size:12px;margin:4px 0'>{legend_html(counts)}</div>" if counts is not None else ""
    cap = f"<div style='font-size:12px;color:#444;max-width:860px'>{caption}</div>" if caption else ""
    return (f"<div class='ramlab-static' style='font-family:sans-serif'>"
            f"<div style='font-size:13px;font-weight:bold;margin-bottom:4px'>{html.escape(title)}</div>"
            f"{body}{legend}{cap}</div>")
