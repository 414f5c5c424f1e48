"""Classification metrics on numpy arrays: accuracy, kappa, F1, confusion matrix."""

from __future__ import annotations

import itertools
from pathlib import Path

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


def write_confusion(
    folder: Path, matrix: np.ndarray, class_names: list[str] | tuple[str, ...]
) -> None:
    """``confusion.csv`` (rows true, columns predicted) and ``confusion.png`` (row-normalised)."""
    import cv2
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    names = list(class_names)
    pd.DataFrame(matrix, index=pd.Index(names, name="true"), columns=names).to_csv(
        folder / "confusion.csv"
    )
    k, cell, margin = len(names), 48, 170
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    img = np.full((margin + k * cell + 20, margin + k * cell + 20, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i in range(k):
        y = margin + i * cell
        cv2.putText(
            img, names[i][:18], (5, y + cell // 2 + 5), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
        for j in range(k):
            x = margin + j * cell
            shade = int(255 - 200 * share[i, j])
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), (shade, shade, 255), -1)
            text_colour = (255, 255, 255) if share[i, j] > 0.6 else (0, 0, 0)
            cv2.putText(
                img,
                str(int(matrix[i, j])),
                (x + 6, y + cell // 2 + 5),
                font,
                0.45,
                text_colour,
                1,
                cv2.LINE_AA,
            )
    for j in range(k):
        x = margin + j * cell + cell // 2
        label = np.full((20, margin - 10, 3), 255, np.uint8)
        cv2.putText(label, names[j][:18], (2, 15), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        rotated = cv2.rotate(label, cv2.ROTATE_90_COUNTERCLOCKWISE)
        img[5 : 5 + rotated.shape[0], x - 10 : x + 10] = rotated
    cv2.putText(img, "true \\ predicted", (5, margin - 8), font, 0.45, (90, 90, 90), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(folder / "confusion.png"), img):
        raise OSError(f"could not write {folder / 'confusion.png'}")


def write_reliability(
    folder: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """``reliability.png``: accuracy against confidence per bin, one curve per name.

    ``curves`` maps a name (e.g. "uncalibrated", "calibrated") to :func:`reliability`'s mean
    confidence, accuracy and count per bin; a perfectly calibrated model lies on the diagonal.
    """
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    size, margin = 360, 60
    img = np.full((size + 2 * margin, size + 2 * margin + 150, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def at(conf: float, acc: float) -> tuple[int, int]:
        return int(margin + conf * size), int(margin + (1 - acc) * size)

    cv2.rectangle(img, at(0, 1), at(1, 0), (0, 0, 0), 1)
    cv2.line(img, at(0, 0), at(1, 1), (170, 170, 170), 1, cv2.LINE_AA)
    for t in (0.0, 0.5, 1.0):
        cv2.putText(img, f"{t:g}", (at(t, 0)[0] - 8, margin + size + 20), font, 0.45, (0, 0, 0), 1)
        cv2.putText(img, f"{t:g}", (margin - 30, at(0, t)[1] + 5), font, 0.45, (0, 0, 0), 1)
    where = (margin + size // 2 - 45, size + margin + 45)
    cv2.putText(img, "confidence", where, font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "accuracy", (5, margin - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    colours = [(0, 90, 220), (30, 150, 30), (200, 60, 0)]  # BGR
    for k, (name, (conf, acc, count)) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        points = [at(c, a) for c, a, n in zip(conf, acc, count, strict=True) if n > 0]
        for a, b in itertools.pairwise(points):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for p in points:
            cv2.circle(img, p, 4, colour, -1, cv2.LINE_AA)
        y = margin + 20 + 22 * k
        cv2.line(img, (margin + size + 15, y - 4), (margin + size + 35, y - 4), colour, 2)
        cv2.putText(img, name, (margin + size + 40, y), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(folder / "reliability.png"), img):
        raise OSError(f"could not write {folder / 'reliability.png'}")
