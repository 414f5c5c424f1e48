"""Score a model file on labelled cities, with the single-source ablation (onnxruntime only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.dataset import CellData
from models.inference import Predictor
from models.metrics import scores
from pipeline.errors import ModelError
from preprocess.chips import image_inputs


def predict_cells(predictor: Predictor, data: CellData, mask: str | None = None) -> np.ndarray:
    """Probabilities for labelled cells; ``mask`` hides ``image`` or ``activity`` from the model."""
    c = predictor.contract
    image, has_image = image_inputs(data.chips, np.array(c.image_mean), np.array(c.image_std))
    activity, has_activity = data.activity, data.has_activity
    if mask == "image":
        image, has_image = np.zeros_like(image), np.zeros_like(has_image)
    elif mask == "activity":
        activity, has_activity = np.zeros_like(activity), np.zeros_like(has_activity)
    return predictor.predict(image, activity, has_image, has_activity)


def evaluate(model: Path, data: CellData) -> dict[str, object]:
    """Overall accuracy, kappa, F1 and confusion of the fused model, plus the ablation.

    The ablation masks one input for every cell: ``image_only`` hides the signalling,
    ``signalling_only`` hides the imagery.

    Raises:
        ModelError: the model reads chips of another size or band count than ``data``'s.
    """
    predictor = Predictor(model)
    c = predictor.contract
    if (data.chip_px, len(data.bands)) != (c.chip_px, len(c.bands)):
        raise ModelError(
            f"{model} reads {len(c.bands)}-band chips of {c.chip_px} px but the data has "
            f"{len(data.bands)}-band chips of {data.chip_px} px; evaluate a model trained on "
            "data like it"
        )
    names = list(c.classes)
    result = scores(data.labels, predict_cells(predictor, data).argmax(1), names)
    result["ablation"] = {
        "fusion": result["overall_accuracy"],
        "image_only": scores(
            data.labels, predict_cells(predictor, data, "activity").argmax(1), names
        )["overall_accuracy"],
        "signalling_only": scores(
            data.labels, predict_cells(predictor, data, "image").argmax(1), names
        )["overall_accuracy"],
    }
    result["provider"] = predictor.provider
    result["classes"] = names
    return result
