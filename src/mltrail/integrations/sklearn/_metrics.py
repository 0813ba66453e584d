"""Training metrics from predictions, in plain numpy: cheap enough to run after every ``fit``.

scikit-learn's metric functions validate their inputs on every call, which costs milliseconds
each — more than fitting a small model. The functions here compute the same numbers from the
predictions a fit's post step makes once (``predict``, ``predict_proba``), each in one or two
vectorised passes; the test suite checks them against ``sklearn.metrics``. Anything they do not
cover (multilabel or multi-output classification, labels outside ``classes_``) returns ``None``
and the caller falls back to scikit-learn's functions.

Nothing here imports scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

_CURVE_POINTS = 200  # points kept per curve for the plots


@dataclass(frozen=True)
class Curve:
    """A ROC or precision-recall curve, thinned to at most ``_CURVE_POINTS`` points."""

    x: np.ndarray
    y: np.ndarray
    area: float
    label: str


@dataclass(frozen=True)
class ClassifierReport:
    """What a classifier's training metrics and plots are made from (small arrays only)."""

    metrics: dict[str, float]
    labels: list[str]
    confusion: np.ndarray
    roc: list[Curve]
    pr: list[Curve]


def _weights(sample_weight: Any, n: int) -> np.ndarray | None:
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        return None
    return w


def encode(y: Any, classes: np.ndarray) -> np.ndarray | None:
    """Indices of ``y``'s labels in the sorted ``classes``, or None if some label is not there."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or classes.ndim != 1 or len(classes) < 2:
        return None
    try:
        if classes.dtype.kind == "O" or y.dtype.kind == "O":
            lookup = {label: i for i, label in enumerate(classes.tolist())}
            out: np.ndarray = np.fromiter((lookup[v] for v in y.tolist()), dtype=np.intp, count=len(y))
            return out
        if np.any(classes[1:] <= classes[:-1]):
            return None  # not sorted: searchsorted would lie
        idx: np.ndarray = np.searchsorted(classes, y).astype(np.intp, copy=False)
        idx[idx >= len(classes)] = 0
        if not np.array_equal(classes[idx], y):
            return None
        return idx
    except (KeyError, TypeError, ValueError):
        return None


def classifier_report(
    y_true: Any,
    y_pred: Any,
    classes: Any,
    *,
    proba: Any = None,
    scores: Any = None,
    sample_weight: Any = None,
) -> ClassifierReport | None:
    """Accuracy, weighted precision/recall/F1, log loss and ROC AUC, confusion matrix, curves.

    Args:
        y_true: the training labels.
        y_pred: ``predict(X)``.
        classes: the estimator's ``classes_`` (the columns of ``proba``).
        proba: ``predict_proba(X)`` if the estimator has it.
        scores: ``decision_function(X)`` for a binary estimator without probabilities (ROC AUC
            and the curves only).
        sample_weight: per-sample weights, as given to ``fit``.

    Returns:
        None when the labels are not plain binary/multiclass labels among ``classes``.
    """
    classes = np.asarray(classes)
    t = encode(y_true, classes)
    p = encode(y_pred, classes)
    if t is None or p is None or len(t) != len(p) or len(t) == 0:
        return None
    k = len(classes)
    n = len(t)
    w = _weights(sample_weight, n)
    if sample_weight is not None and w is None:
        return None
    cm = np.bincount(t * k + p, weights=w, minlength=k * k).reshape(k, k)
    total = cm.sum()
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.where(predicted > 0, predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), 0.0)
        denom = 2 * tp + (predicted - tp) + (support - tp)
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    weights = support / support.sum() if support.sum() > 0 else np.zeros(k)
    metrics = {
        "accuracy_score": float(tp.sum() / total) if total else float("nan"),
        "precision_score": float(precision @ weights),
        "recall_score": float(recall @ weights),
        "f1_score": float(f1 @ weights),
    }
    roc: list[Curve] = []
    pr: list[Curve] = []
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape == (n, k):
            metrics["log_loss"] = _log_loss(t, proba, w)
            if k == 2:
                roc, pr = _binary_curves(t == 1, proba[:, 1], w, str(classes[1]))
                metrics["roc_auc"] = roc[0].area
            else:
                aucs, roc, pr = _ovr(t, proba, w, classes)
                present = support > 0
                if present.sum() >= 2:
                    metrics["roc_auc"] = float(aucs[present] @ (support[present] / support[present].sum()))
    elif scores is not None and k == 2:
        s = np.asarray(scores, dtype=np.float64)
        if s.shape == (n,):
            roc, pr = _binary_curves(t == 1, s, w, str(classes[1]))
            metrics["roc_auc"] = roc[0].area
    return ClassifierReport(metrics, [str(c) for c in classes.tolist()], cm, roc, pr)


def _log_loss(t: np.ndarray, proba: np.ndarray, w: np.ndarray | None) -> float:
    eps = np.finfo(proba.dtype).eps
    # Each row renormalised to sum to 1, as scikit-learn does: only the picked entries.
    picked = np.clip(proba[np.arange(len(t)), t] / proba.sum(axis=1), eps, 1 - eps)
    losses = -np.log(picked)
    return float(np.average(losses, weights=w))


def _binary_clf_curve(
    positive: np.ndarray, score: np.ndarray, w: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative weighted false/true positives at each distinct score, highest first."""
    # Ties are summed at their threshold below, so the order among them does not matter.
    order = np.argsort(score)[::-1]
    s = score[order]
    pos = positive[order].astype(np.float64)
    weight = np.ones_like(pos) if w is None else w[order]
    distinct = np.where(np.diff(s))[0]
    ends = np.concatenate((distinct, [len(s) - 1]))
    tps = np.cumsum(pos * weight)[ends]
    fps = np.cumsum((1 - pos) * weight)[ends]
    return fps, tps, s[ends]


def _binary_curves(
    positive: np.ndarray, score: np.ndarray, w: np.ndarray | None, label: str
) -> tuple[list[Curve], list[Curve]]:
    fps, tps, _ = _binary_clf_curve(positive, score, w)
    if len(tps) == 0 or tps[-1] <= 0 or fps[-1] <= 0:
        nan = float("nan")
        return [Curve(np.zeros(0), np.zeros(0), nan, label)], [Curve(np.zeros(0), np.zeros(0), nan, label)]
    fpr = np.concatenate(([0.0], fps / fps[-1]))
    tpr = np.concatenate(([0.0], tps / tps[-1]))
    auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # the trapezoidal rule
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    # Average precision as scikit-learn defines it: sum of (R_n - R_{n-1}) P_n.
    recall0 = np.concatenate(([0.0], recall))
    ap = float(np.sum(np.diff(recall0) * precision))
    return (
        [Curve(*_thin(fpr, tpr), auc, label)],
        [Curve(*_thin(recall0, np.concatenate(([1.0], precision))), ap, label)],
    )


def _ovr(
    t: np.ndarray, proba: np.ndarray, w: np.ndarray | None, classes: np.ndarray
) -> tuple[np.ndarray, list[Curve], list[Curve]]:
    aucs = np.full(proba.shape[1], np.nan)
    roc: list[Curve] = []
    pr: list[Curve] = []
    for c in range(proba.shape[1]):
        positive = t == c
        if not positive.any() or positive.all():
            continue
        r, p = _binary_curves(positive, proba[:, c], w, str(classes[c]))
        aucs[c] = r[0].area
        roc += r
        pr += p
    return aucs, roc, pr


def _thin(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= _CURVE_POINTS:
        return x, y
    keep = np.linspace(0, len(x) - 1, _CURVE_POINTS).astype(np.intp)  # ends included
    return x[keep], y[keep]


def regressor_metrics(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> dict[str, float] | None:
    """MSE, RMSE, MAE and R² (uniform average over outputs), as scikit-learn computes them."""
    try:
        t = np.asarray(y_true, dtype=np.float64)
        p = np.asarray(y_pred, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if t.shape != p.shape or t.ndim != 2 or len(t) == 0:
        return None
    w = _weights(sample_weight, len(t))
    if sample_weight is not None and w is None:
        return None
    err = t - p
    mse_each = np.average(err**2, axis=0, weights=w)
    mae_each = np.average(np.abs(err), axis=0, weights=w)
    mean = np.average(t, axis=0, weights=w)
    ww = np.ones(len(t)) if w is None else w
    num = (ww[:, None] * err**2).sum(axis=0)
    den = (ww[:, None] * (t - mean) ** 2).sum(axis=0)
    r2_each = np.where(den != 0, 1 - num / np.where(den != 0, den, 1), np.where(num == 0, 1.0, 0.0))
    return {
        "mean_squared_error": float(mse_each.mean()),
        "root_mean_squared_error": float(np.sqrt(mse_each).mean()),
        "mean_absolute_error": float(mae_each.mean()),
        "r2_score": float(r2_each.mean()),
    }


def silhouette(X: Any, labels: Any, *, sample_size: int = 500, seed: int = 0) -> float | None:
    """The mean silhouette coefficient (euclidean) on at most ``sample_size`` rows.

    Only the sampled rows are read (a copy of ``sample_size`` rows, never of ``X``). Returns
    None when it is undefined (fewer than 2 or more than n-1 clusters in the sample).
    """
    labels = np.asarray(labels)
    n = len(labels)
    if n < 3 or getattr(X, "shape", (0,))[0] != n:
        return None
    if n > sample_size:
        idx = np.sort(np.random.default_rng(seed).choice(n, sample_size, replace=False))
    else:
        idx = np.arange(n)
    rows = X.iloc[idx] if hasattr(X, "iloc") else X[idx]
    if hasattr(rows, "toarray"):
        rows = rows.toarray()
    try:
        S = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    lab = labels[idx]
    uniq, inv = np.unique(lab, return_inverse=True)
    m = len(idx)
    if not 2 <= len(uniq) <= m - 1 or S.ndim != 2:
        return None
    sq = np.einsum("ij,ij->i", S, S)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * S @ S.T, 0.0))
    np.fill_diagonal(D, 0.0)
    onehot = np.zeros((m, len(uniq)))
    onehot[np.arange(m), inv] = 1.0
    sums = D @ onehot  # distance from each point to each cluster, summed
    counts = onehot.sum(axis=0)
    own = counts[inv]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = sums[np.arange(m), inv] / np.maximum(own - 1, 1)
        mean_to = sums / counts[None, :]
    mean_to[np.arange(m), inv] = np.inf
    b = mean_to.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(own > 1, (b - a) / np.maximum(a, b), 0.0)
    s = np.nan_to_num(s)
    return float(s.mean())
