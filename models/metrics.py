"""Classification metrics on numpy arrays: accuracy, kappa, F1, confusion matrix."""

from __future__ import annotations

import numpy as np


def confusion(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true class, predicted class]``."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(truth), np.asarray(pred)), 1)
    return m


def scores(
    truth: np.ndarray, pred: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> dict[str, object]:
    """Overall accuracy, Cohen's kappa, macro F1 (over classes present) and per-class F1."""
    k = len(class_names)
    m = confusion(truth, pred, k)
    n = m.sum()
    if n == 0:
        return {
            "n": 0,
            "overall_accuracy": float("nan"),
            "kappa": float("nan"),
            "macro_f1": float("nan"),
            "per_class_f1": {},
            "confusion": m.tolist(),
        }
    oa = np.trace(m) / n
    expected = (m.sum(0) * m.sum(1)).sum() / n**2
    kappa = (oa - expected) / (1 - expected) if expected < 1 else 1.0
    tp = np.diag(m).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (m.sum(0) + m.sum(1))
    present = m.sum(1) > 0
    return {
        "n": int(n),
        "overall_accuracy": round(float(oa), 4),
        "kappa": round(float(kappa), 4),
        "macro_f1": round(float(np.nanmean(f1[present])), 4),
        "per_class_f1": {
            name: round(float(f), 4)
            for name, f, p in zip(class_names, f1, present, strict=True)
            if p
        },
        "confusion": m.tolist(),
    }
