"""Binary classification metrics shared by train, evaluate and predict_videos."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn import metrics as skm


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC, or None when only one class is present (undefined, not 0.5)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return None
    return float(skm.roc_auc_score(y_true, score))


def choose_threshold(y_true: np.ndarray, score: np.ndarray) -> float:
    """Threshold maximising balanced accuracy (Youden's J) on the given scores.

    Returns 0.5 when the threshold cannot be estimated (one class only), and the
    midpoint between neighbouring scores otherwise, so it generalises a little better
    than the score of one validation video.
    """
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return 0.5
    fpr, tpr, thr = skm.roc_curve(y_true, score)
    best = int(np.argmax(tpr - fpr))
    t = float(thr[best])
    if not math.isfinite(t):
        return 0.5
    below = np.asarray(score)[np.asarray(score) < t]
    return float((t + below.max()) / 2) if len(below) else t


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """Metrics of fake probabilities against labels (1 = fake) at one threshold.

    Args:
        y_true: 0/1 labels.
        prob: Fake probabilities in [0, 1].
        threshold: Predict fake when ``prob >= threshold``.

    Returns:
        Dict with n, auc (None if undefined), accuracy, balanced_accuracy, log_loss,
        per-class precision/recall/f1 and the confusion matrix ``[[tn, fp], [fn, tp]]``.
    """
    y_true = np.asarray(y_true, dtype=int)
    prob = np.clip(np.asarray(prob, dtype=float), 1e-7, 1 - 1e-7)
    pred = (prob >= threshold).astype(int)
    out: dict[str, Any] = {"n": int(len(y_true)), "threshold": float(threshold)}
    if len(y_true) == 0:
        return out
    out["auc"] = roc_auc(y_true, prob)
    out["accuracy"] = float(skm.accuracy_score(y_true, pred))
    out["balanced_accuracy"] = float(skm.balanced_accuracy_score(y_true, pred)) if len(np.unique(y_true)) > 1 else None
    out["log_loss"] = float(skm.log_loss(y_true, prob, labels=[0, 1]))
    p, r, f, s = skm.precision_recall_fscore_support(y_true, pred, labels=[0, 1], zero_division=0)
    for i, name in enumerate(("real", "fake")):
        out[name] = {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
    out["confusion"] = skm.confusion_matrix(y_true, pred, labels=[0, 1]).tolist()
    return out
