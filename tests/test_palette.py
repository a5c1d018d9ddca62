"""The page-class colours stay apart for colour-blind readers.

Each colour is passed through the Machado, Oliveira & Fernandes (2009) simulation matrices of
protanopia and deuteranopia (severity 1.0, applied in linear sRGB, as in their paper's table), then
to CIELAB (D65), and every pair of page classes must keep a CIEDE2000 distance of at least
``MIN_DELTA_E`` (about ten just-noticeable differences: two patches that far apart read as two
colours).  The previous red / green palette fails this (NORMAL vs XBZRLE: 4.6 for deuteranopes).
The live view's convergence curve is checked the same way (its three series as drawn, alpha over
white), and must not need colour at all: its series differ by dash or marker, and neither its title
nor its legend names a colour.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ramlab.plots.palette import CLASS_COLORS, PALETTE, rgb
from ramlab.trace import CLASS_NAMES, N_CLASSES, PageClass

MIN_DELTA_E = 10.0

# Machado et al. 2009, Table of simulation matrices, severity 1.0 (linear RGB)
MACHADO = {
    "normal vision": np.eye(3),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868],
                            [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968],
                              [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
}

_SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                         [0.2126729, 0.7151522, 0.0721750],
                         [0.0193339, 0.1191920, 0.9503041]])
_D65 = np.array([0.95047, 1.0, 1.08883])


def _linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(linear_rgb: np.ndarray) -> np.ndarray:
    t = (_SRGB_TO_XYZ @ np.clip(linear_rgb, 0, 1)) / _D65
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> float:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005), kL = kC = kH = 1."""
    (l1, a1, b1), (l2, a2, b2) = lab1, lab2
    cbar = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(cbar**7 / (cbar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    dh = h2p - h1p
    if c1p * c2p == 0:
        dh = 0.0
    elif dh > 180:
        dh -= 360
    elif dh < -180:
        dh += 360
    dhp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    lbp, cbp = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        hbp = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hbp = (h1p + h2p) / 2
    else:
        hbp = (h1p + h2p + 360) / 2 if h1p + h2p < 360 else (h1p + h2p - 360) / 2
    t = (1 - 0.17 * np.cos(np.radians(hbp - 30)) + 0.24 * np.cos(np.radians(2 * hbp))
         + 0.32 * np.cos(np.radians(3 * hbp + 6)) - 0.20 * np.cos(np.radians(4 * hbp - 63)))
    dtheta = 30 * np.exp(-(((hbp - 275) / 25) ** 2))
    rc = 2 * np.sqrt(cbp**7 / (cbp**7 + 25**7))
    sl = 1 + 0.015 * (lbp - 50) ** 2 / np.sqrt(20 + (lbp - 50) ** 2)
    sc, sh = 1 + 0.045 * cbp, 1 + 0.015 * cbp * t
    rt = -np.sin(np.radians(2 * dtheta)) * rc
    return float(np.sqrt((dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp / sh) ** 2 + rt * (dcp / sc) * (dhp / sh)))


def test_ciede2000_matches_published_pairs():
    # Sharma, Wu & Dalal (2005), Table 1: pairs 1, 7 and 17
    assert ciede2000(np.array([50, 2.6772, -79.7751]), np.array([50, 0, -82.7485])) == pytest.approx(2.0425, abs=1e-4)
    assert ciede2000(np.array([50, 0, 0]), np.array([50, -1, 2])) == pytest.approx(2.3669, abs=1e-4)
    assert ciede2000(np.array([50, 2.5, 0]), np.array([73, 25, -18])) == pytest.approx(27.1492, abs=1e-4)


def _distances(colors: dict[str, str], vision: str) -> list[tuple[float, str, str]]:
    m = MACHADO[vision]
    labs = {k: _lab(m @ _linear(np.array(rgb(c)) / 255.0)) for k, c in colors.items()}
    return sorted((ciede2000(labs[a], labs[b]), a, b) for a, b in itertools.combinations(colors, 2))


@pytest.mark.parametrize("vision", list(MACHADO))
def test_every_pair_of_page_classes_is_distinguishable(vision):
    colors = {c.name: CLASS_COLORS[c] for c in PageClass}
    worst = _distances(colors, vision)[:3]
    assert worst[0][0] >= MIN_DELTA_E, f"{vision}: closest pairs {worst}"


def test_the_old_red_green_palette_fails_the_check():
    old = {"NORMAL": "#d62728", "XBZRLE": "#2ca02c"}  # what the views used before
    assert _distances(old, "deuteranopia")[0][0] < MIN_DELTA_E


def test_palette_covers_every_class_and_no_page():
    assert len(PALETTE) == N_CLASSES + 1 and len(set(PALETTE)) == len(PALETTE)
    assert set(CLASS_COLORS) == set(PageClass) and len(CLASS_NAMES) == N_CLASSES


# ---------------------------------------------------------------------- the live view's convergence curve

#: words that would name a series by its colour alone
COLOUR_WORDS = ("red", "green", "blue", "orange", "yellow", "purple", "grey", "gray", "black", "vermillion", "pink")


def _curve_series() -> dict[str, tuple[str, tuple[object, ...]]]:
    """The live view's convergence curve as drawn: each legend label -> (its colour over a white
    background at its alpha, its other cues: line dash, line width, marker)."""
    from ramlab.live.decoder import LiveDecoder
    from ramlab.plots.live import LivePlots

    curve = LivePlots(LiveDecoder("precopy").snapshot()).curve
    (legend,) = curve.legend
    out = {}
    for item in legend.items:
        (glyph,) = [r.glyph for r in item.renderers]
        line = not hasattr(glyph, "marker")
        color, alpha = (glyph.line_color, glyph.line_alpha) if line else (glyph.fill_color, glyph.fill_alpha)
        shown = "#" + "".join(f"{round(c * alpha + 255 * (1 - alpha)):02x}" for c in rgb(color))
        cues = (tuple(glyph.line_dash) if line else None, glyph.line_width if line else None,
                None if line else glyph.marker)
        out[item.label.value] = (shown, cues)
    return out


@pytest.mark.parametrize("vision", list(MACHADO))
def test_the_live_curve_series_are_distinguishable(vision):
    series = _curve_series()
    assert len(series) == 3
    worst = _distances({k: c for k, (c, _) in series.items()}, vision)
    assert worst[0][0] >= MIN_DELTA_E, f"{vision}: closest pairs {worst}"


def test_the_live_curve_does_not_rely_on_colour():
    import re

    from ramlab.live.decoder import LiveDecoder
    from ramlab.plots.live import LivePlots

    series = _curve_series()
    assert len({cues for _, cues in series.values()}) == len(series)  # dash, width or marker differ too
    curve = LivePlots(LiveDecoder("precopy").snapshot()).curve
    words = " ".join([curve.title.text, *series]).lower()
    assert not [w for w in COLOUR_WORDS if re.search(rf"\b{w}\b", words)], words
    assert curve.legend[0] in curve.right  # beside the plot, not on the data


def test_the_old_live_curve_colours_fail_the_check():
    # what the curve drew before (#777777 at 0.6 alpha, a green threshold, red dots): the red dots and
    # the green line are 4.6 apart for deuteranopes
    old = {"remaining": "#adadad", "threshold": "#2ca02c", "sent": "#d62728"}
    assert _distances(old, "deuteranopia")[0][0] < MIN_DELTA_E
