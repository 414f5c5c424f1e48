"""``quicklook.png``: the classes, semi-transparent, over the imagery the model saw.

With a legend (class, colour, cell count), a scale bar of a round length and a title, so a
person can see at a glance why a block is "school": the picture is beneath the colour.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.contract import ModelContract
from urbanfusion.pipeline.grid import CityGrid

CLASS_ALPHA = 0.45  # the class colour's share over the imagery
NO_IMAGE_GREY = 200
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def round_length(metres: float) -> float:
    """The largest 1, 2 or 5 x 10^k not above ``metres`` (a scale bar's length)."""
    if metres <= 0:
        return 0.0
    power = 10 ** np.floor(np.log10(metres))
    return float(max(m * power for m in (1, 2, 5) if m * power <= metres))


def class_rgba(class_id: np.ndarray, contract: ModelContract, alpha: int = 255) -> np.ndarray:
    """One RGBA pixel per cell: the class colour, transparent where there is no prediction."""
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[: len(contract.colours), :3] = np.array(contract.colours, dtype=np.uint8)
    lut[: len(contract.colours), 3] = alpha
    return lut[class_id]


def overlay(
    grid: CityGrid, class_id: np.ndarray, preview: np.ndarray, contract: ModelContract, side: int
) -> np.ndarray:
    """RGB ``(h, w, 3)`` of about ``side`` px: classes at :data:`CLASS_ALPHA` over the preview."""
    scale = max(1, side // max(grid.nrows, grid.ncols))
    h, w = grid.nrows * scale, grid.ncols * scale
    if preview.size:
        base = cv2.resize(preview, (w, h), interpolation=cv2.INTER_AREA)
        seen = base[:, :, 3:4].astype(np.float32) / 255
        rgb = base[:, :, :3] * seen + NO_IMAGE_GREY * (1 - seen)
    else:
        rgb = np.full((h, w, 3), NO_IMAGE_GREY, np.float32)
    classes = class_rgba(class_id.reshape(grid.nrows, grid.ncols), contract)
    classes = np.repeat(np.repeat(classes, scale, axis=0), scale, axis=1)
    a = classes[:, :, 3:4].astype(np.float32) / 255 * CLASS_ALPHA
    return (rgb * (1 - a) + classes[:, :, :3] * a).astype(np.uint8)


def write_quicklook(
    path: Path,
    grid: CityGrid,
    class_id: np.ndarray,
    preview: np.ndarray,
    contract: ModelContract,
    title: str,
) -> None:
    """Write the quicklook PNG (about 800 px of map beside a legend)."""
    image = overlay(grid, class_id, preview, contract, 800)
    h, w, _ = image.shape
    line, legend_w = 26, 300
    counts = np.bincount(class_id[class_id != NO_CLASS], minlength=len(contract.labels))
    entries = [
        (f"{label} ({n:,})", colour)
        for label, colour, n in zip(contract.labels, contract.colours, counts, strict=True)
    ]
    entries.append((f"no prediction ({int((class_id == NO_CLASS).sum()):,})", [NO_IMAGE_GREY] * 3))
    canvas = np.full((max(h, line * (len(entries) + 2)) + 100, w + legend_w + 30, 3), 255, np.uint8)
    canvas[40 : 40 + h, 10 : 10 + w] = image
    cv2.putText(canvas, title[:70], (10, 28), _FONT, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    x0 = w + 30
    cv2.putText(canvas, "class (cells)", (x0, 58), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (label, colour) in enumerate(entries):
        y = 68 + i * line
        cv2.rectangle(canvas, (x0, y), (x0 + 20, y + 18), tuple(int(c) for c in colour), -1)
        cv2.rectangle(canvas, (x0, y), (x0 + 20, y + 18), (80, 80, 80), 1)
        cv2.putText(canvas, label, (x0 + 30, y + 15), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    # A scale bar of a round length, about a fifth of the map's width.
    metres_per_px = grid.ncols * grid.cell_size / w
    length = round_length(w / 5 * metres_per_px)
    bar = round(length / metres_per_px)
    y = 40 + h + 18
    cv2.rectangle(canvas, (10, y - 4), (10 + bar, y), (0, 0, 0), -1)
    text = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    cv2.putText(canvas, text, (16 + bar, y + 2), _FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    note = f"classes at {CLASS_ALPHA:.0%} over the imagery; cells of {grid.cell_size:g} m"
    cv2.putText(canvas, note, (10, y + 26), _FONT, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
