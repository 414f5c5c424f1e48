"""Score a model file on labelled cells, with the single-source ablation (onnxruntime only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from urbanfusion.models.calibration import (
    calibration_error,
    domain_score,
    reliability,
    softmax,
)
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
        cells = predictor.predict_cells(
            data.chips,
            data.activity,
            data.has_activity,
            hide,  # type: ignore[arg-type]
        )
        return cells.prob.argmax(1)

    result = scores(data.labels, predicted(), names)
    result["ablation"] = {
        "fusion": result["overall_accuracy"],
        "image_only": scores(data.labels, predicted("activity"), names)["overall_accuracy"],
        "signalling_only": scores(data.labels, predicted("image"), names)["overall_accuracy"],
    }
    result["provider"] = predictor.provider
    result["classes"] = names
    result["calibration"] = _calibration(predictor, data)
    return result


def _calibration(predictor: Predictor, data: CellData) -> dict[str, object]:
    """How well the model's confidence matches its accuracy on ``data``.

    Expected calibration error without and with the model's temperature, per-bin curves for
    the reliability diagram, and the share of cells in the model's domain (None: no score).
    """
    if not predictor.scored:
        return {"temperature": None}
    logits, features, has_image, has_activity = predictor.raw_outputs(
        data.chips, data.activity, data.has_activity
    )
    t = predictor.contract.temperature
    curves = {
        name: reliability(softmax(logits, temp), data.labels)
        for name, temp in (("uncalibrated", 1.0), (f"temperature {t:.2f}", t))
    }
    present = {"image": has_image, "activity": has_activity}
    domain = domain_score(predictor.domain_models, features, present)
    scored = ~np.isnan(domain)
    return {
        "temperature": t,
        "ece_uncalibrated": calibration_error(softmax(logits), data.labels),
        "ece_calibrated": calibration_error(softmax(logits, t), data.labels),
        "in_domain_share": float((domain[scored] <= 1).mean()) if scored.any() else None,
        "reliability": {
            name: {"confidence": c.tolist(), "accuracy": a.tolist(), "count": n.tolist()}
            for name, (c, a, n) in curves.items()
        },
    }
