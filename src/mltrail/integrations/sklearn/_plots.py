"""PNG plots of a classifier's training results, drawn cheaply on the background thread.

A matplotlib ``Figure`` costs 100-300 ms to draw, more than fitting many models; after every
``fit`` that adds up (and a loop of fits would leave a long queue at exit). These plots are
simple — a heat map with numbers, a few curves on a unit square — so they are drawn here
straight into a numpy RGB array: rectangles, polylines and text, the text rendered by
matplotlib's FreeType wrapper (``matplotlib.ft2font``, with the DejaVu Sans font matplotlib
ships), and encoded with mltrail's own PNG writer. A plot takes a few milliseconds, needs no
``pyplot`` and leaves matplotlib's global state alone. Without matplotlib there are no plots.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from mltrail.integrations.sklearn._metrics import Curve

WHITE = (255, 255, 255)
BLACK = (20, 20, 20)
GREY = (150, 150, 150)
LIGHT = (225, 225, 225)
PALETTE = (  # matplotlib's tab10
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
_BLUES = ((247, 251, 255), (8, 48, 107))

_font_lock = threading.Lock()
_fonts: dict[int, Any] = {}


def available() -> bool:
    """Whether matplotlib can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _font(size: int) -> Any:
    font = _fonts.get(size)
    if font is None:
        import matplotlib
        from matplotlib import ft2font

        path = os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf")
        font = ft2font.FT2Font(path)
        font.set_size(size, 72)
        _fonts[size] = font
    return font


_rendered_cache: dict[tuple[str, int, bool], np.ndarray] = {}


def _rendered(s: str, size: int, vertical: bool) -> np.ndarray:
    """``s`` as an alpha mask in [0, 1] (cached: tick labels and titles repeat in every plot)."""
    key = (s, size, vertical)
    glyphs = _rendered_cache.get(key)
    if glyphs is None:
        with _font_lock:
            font = _font(size)
            font.set_text(s, 0.0)
            font.draw_glyphs_to_bitmap(antialiased=True)
            glyphs = np.asarray(font.get_image(), dtype=np.float32) / 255.0
        if vertical:
            glyphs = np.ascontiguousarray(np.rot90(glyphs))
        if len(_rendered_cache) > 2048:
            _rendered_cache.clear()
        _rendered_cache[key] = glyphs
    return glyphs


class Canvas:
    """An RGB image to draw on: ``img[y, x]``, origin at the top left."""

    def __init__(self, width: int, height: int) -> None:
        self.img = np.full((height, width, 3), 255, dtype=np.uint8)

    @property
    def width(self) -> int:
        return int(self.img.shape[1])

    @property
    def height(self) -> int:
        return int(self.img.shape[0])

    def rect(self, x0: float, y0: float, x1: float, y1: float, color: Sequence[int]) -> None:
        xa, xb = sorted((math.floor(x0 + 0.5), math.floor(x1 + 0.5)))
        ya, yb = sorted((math.floor(y0 + 0.5), math.floor(y1 + 0.5)))
        self.img[max(ya, 0):max(yb, 0), max(xa, 0):max(xb, 0)] = color

    def frame(self, x0: float, y0: float, x1: float, y1: float, color: Sequence[int]) -> None:
        self.rect(x0, y0, x1 + 1, y0 + 1, color)
        self.rect(x0, y1, x1 + 1, y1 + 1, color)
        self.rect(x0, y0, x0 + 1, y1 + 1, color)
        self.rect(x1, y0, x1 + 1, y1 + 1, color)

    def polyline(self, xs: np.ndarray, ys: np.ndarray, color: Sequence[int], width: int = 2,
                 dash: int = 0) -> None:
        """A line through the points (pixel coordinates), ``width`` pixels wide."""
        if len(xs) < 2:
            return
        seg = np.hypot(np.diff(xs), np.diff(ys))
        steps = np.maximum(np.ceil(seg * 2).astype(np.intp), 1)
        idx = np.repeat(np.arange(len(seg)), steps)
        frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps)) / np.repeat(steps, steps)
        px = xs[idx] + np.diff(xs)[idx] * frac
        py = ys[idx] + np.diff(ys)[idx] * frac
        if dash:
            along = np.cumsum(np.r_[0.0, np.hypot(np.diff(px), np.diff(py))])
            keep = (along // dash) % 2 == 0
            px, py = px[keep], py[keep]
        offsets = [(dx, dy) for dx in range(-(width // 2), width - width // 2)
                   for dy in range(-(width // 2), width - width // 2)]
        for dx, dy in offsets:
            x = np.clip(np.round(px).astype(np.intp) + dx, 0, self.width - 1)
            y = np.clip(np.round(py).astype(np.intp) + dy, 0, self.height - 1)
            self.img[y, x] = color

    def text(self, x: float, y: float, s: str, *, size: int = 11, color: Sequence[int] = BLACK,
             anchor: str = "center", vertical: bool = False) -> None:
        """Draw ``s`` with its anchor point (``"center"``, ``"left"``, ``"right"``) at (x, y)."""
        if not s:
            return
        glyphs = _rendered(s, size, vertical)
        h, w = glyphs.shape
        if anchor == "left":
            left = x
        elif anchor == "right":
            left = x - w
        else:
            left = x - w / 2
        top = math.floor(y - h / 2 + 0.5)
        left = math.floor(left + 0.5)
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + h, self.height), min(left + w, self.width)
        if y1 <= y0 or x1 <= x0:
            return
        alpha = glyphs[y0 - top:y1 - top, x0 - left:x1 - left, None]
        region = self.img[y0:y1, x0:x1].astype(np.float32)
        self.img[y0:y1, x0:x1] = (region * (1 - alpha) + np.asarray(color, np.float32) * alpha).astype(np.uint8)

    def png(self) -> bytes:
        from mltrail.core.images import to_png

        return to_png(self.img)


def _blue(value: float) -> tuple[int, int, int]:
    a, b = _BLUES
    t = min(max(value, 0.0), 1.0)
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def _short(label: str, limit: int = 12) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "~"


def confusion_matrix_png(cm: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """A heat map of ``cm`` (rows: true label, columns: predicted), each cell annotated."""
    k = len(labels)
    cell = max(14, min(70, 420 // max(k, 1)))
    margin_left, margin_top, margin_bottom = 110, 40, 80
    side = cell * k
    canvas = Canvas(margin_left + side + 30, margin_top + side + margin_bottom)
    top_value = float(cm.max()) if cm.size and cm.max() > 0 else 1.0
    integral = bool(np.allclose(cm, np.round(cm)))
    numbers = k <= 25
    size = 11 if cell >= 40 else 9 if cell >= 24 else 7
    for i in range(k):
        for j in range(k):
            x0, y0 = margin_left + j * cell, margin_top + i * cell
            share = float(cm[i, j]) / top_value
            canvas.rect(x0, y0, x0 + cell, y0 + cell, _blue(share))
            if numbers:
                value = f"{cm[i, j]:.0f}" if integral else f"{cm[i, j]:.3g}"
                canvas.text(x0 + cell / 2, y0 + cell / 2, value, size=size,
                            color=WHITE if share > 0.5 else BLACK)
    canvas.frame(margin_left, margin_top, margin_left + side, margin_top + side, GREY)
    if k <= 40:
        for i, label in enumerate(labels):
            canvas.text(margin_left - 6, margin_top + i * cell + cell / 2, _short(label), size=9, anchor="right")
            canvas.text(margin_left + i * cell + cell / 2, margin_top + side + 8 + 30, _short(label), size=9,
                        vertical=True)
    canvas.text(margin_left + side / 2, margin_top + side + margin_bottom - 10, "Predicted label", size=11)
    canvas.text(14, margin_top + side / 2, "True label", size=11, vertical=True)
    canvas.text(canvas.width / 2, 18, title, size=12)
    return canvas.png()


def curves_png(curves: Sequence[Curve], *, kind: str, title: str) -> bytes:
    """ROC (``kind="roc"``) or precision-recall (``kind="pr"``) curves, one line per class."""
    left, top, side = 60, 36, 300
    shown = list(curves[:10])
    legend_rows = len(shown)
    canvas = Canvas(left + side + 20, top + side + 50 + 16 * legend_rows)

    def px(v: Any) -> Any:
        return left + np.asarray(v, dtype=np.float64) * side

    def py(v: Any) -> Any:
        return top + side - np.asarray(v, dtype=np.float64) * side

    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        x, y = left + tick * side, top + side - tick * side
        canvas.rect(x, top, x + 1, top + side, LIGHT)
        canvas.rect(left, y, left + side, y + 1, LIGHT)
        canvas.text(x, top + side + 12, f"{tick:.1f}", size=9)
        canvas.text(left - 6, y, f"{tick:.1f}", size=9, anchor="right")
    canvas.frame(left, top, left + side, top + side, GREY)
    if kind == "roc":
        canvas.polyline(px(np.array([0.0, 1.0])), py(np.array([0.0, 1.0])), GREY, width=1, dash=6)
        xlabel, ylabel, name = "False positive rate", "True positive rate", "AUC"
    else:
        xlabel, ylabel, name = "Recall", "Precision", "AP"
    for n, curve in enumerate(shown):
        color = PALETTE[n % len(PALETTE)]
        canvas.polyline(px(curve.x), py(curve.y), color, width=2)
        label = f"{name} = {curve.area:.3f}" if len(shown) == 1 else f"{_short(curve.label, 20)}: {name} = {curve.area:.3f}"
        row = top + side + 44 + 16 * n
        canvas.rect(left, row - 1, left + 18, row + 2, color)
        canvas.text(left + 24, row, label, size=9, anchor="left")
    canvas.text(left + side / 2, top + side + 28, xlabel, size=11)
    canvas.text(14, top + side / 2, ylabel, size=11, vertical=True)
    canvas.text(canvas.width / 2, 16, title, size=12)
    return canvas.png()
