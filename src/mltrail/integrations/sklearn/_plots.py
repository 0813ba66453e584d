"""PNG plots of a classifier's training results, drawn with matplotlib off the caller's thread.

Only matplotlib's object-oriented API is used (a ``Figure`` with an Agg canvas, never
``pyplot``), so drawing on the background thread leaves the user's figures and pyplot's global
state alone. Each function takes small arrays (a confusion matrix, thinned curves) and returns
PNG bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from mltrail.integrations.sklearn._metrics import Curve

_DPI = 80


def available() -> bool:
    """Whether matplotlib can be imported here (without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _figure(size: tuple[float, float] = (4.8, 4.2)) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_matrix_png(cm: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """A heat map of ``cm`` (rows: true label, columns: predicted), each cell annotated."""
    k = len(labels)
    side = min(3.6 + 0.35 * k, 12.0)
    fig, ax = _figure((side + 1.2, side))
    ax.imshow(cm, cmap="Blues", interpolation="nearest")
    if k <= 30:
        high = cm.max() / 2 if cm.size else 0
        integral = np.allclose(cm, np.round(cm))
        for i in range(k):
            for j in range(k):
                value = f"{cm[i, j]:.0f}" if integral else f"{cm[i, j]:.3g}"
                ax.text(j, i, value, ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > high else "black")
        short = [label if len(label) <= 12 else label[:11] + "…" for label in labels]
        ax.set_xticks(range(k), short, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
        ax.set_yticks(range(k), short)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def curves_png(curves: Sequence[Curve], *, kind: str, title: str) -> bytes:
    """ROC (``kind="roc"``) or precision-recall (``kind="pr"``) curves, one line per class."""
    fig, ax = _figure()
    name = "AUC" if kind == "roc" else "AP"
    for curve in curves[:20]:
        label = f"{curve.label} ({name} = {curve.area:.3f})" if len(curves) > 1 else f"{name} = {curve.area:.3f}"
        ax.plot(curve.x, curve.y, linewidth=1.5, label=label)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
        ax.set_xlabel("False positive rate")
        ax.set_ylabel("True positive rate")
    else:
        ax.set_xlabel("Recall")
        ax.set_ylabel("Precision")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_title(title)
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=7)
    fig.tight_layout()
    return _png(fig)
