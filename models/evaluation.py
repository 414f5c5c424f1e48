"""Score a model file on labelled cells, with the single-source ablation (onnxruntime only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanfusion.models.dataset import CellData
from urbanfusion.models.inference import Predictor
from urbanfusion.models.metrics import scores


def evaluate(model: Path, data: CellData) -> dict[str, object]:
    """Overall accuracy, kappa, F1 and confusion of the fused model, plus the ablation.

    The ablation hides one input from every cell: ``image_only`` hides the signalling,
    ``signalling_only`` hides the imagery.

    Raises:
        ModelError: the model reads chips of another size or band count than ``data``'s.
    """
    predictor = Predictor(model)
    predictor.check_chips(data.chip_px, len(data.bands), "evaluate a model trained on data like it")
    names = list(predictor.contract.classes)

    def predicted(hide: str | None = None) -> np.ndarray:
        prob, _ = predictor.predict_cells(
            data.chips,
            data.activity,
            data.has_activity,
            hide,  # type: ignore[arg-type]
        )
        return prob.argmax(1)

    result = scores(data.labels, predicted(), names)
    result["ablation"] = {
        "fusion": result["overall_accuracy"],
        "image_only": scores(data.labels, predicted("activity"), names)["overall_accuracy"],
        "signalling_only": scores(data.labels, predicted("image"), names)["overall_accuracy"],
    }
    result["provider"] = predictor.provider
    result["classes"] = names
    return result
