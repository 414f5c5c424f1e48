"""Where the model a run uses lies: the config's ``model``, else the one shipped in the package.

Apart from the session code (:mod:`.inference`), so that the up-to-date check names the model
file without importing onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from urbanfusion.pipeline.config import RunConfig

SHIPPED_MODEL = Path(__file__).with_name("weights") / "urbanfusion-demo.onnx"


def model_file(config: RunConfig) -> Path:
    """The model file of a run: ``model`` of the config, else :data:`SHIPPED_MODEL`."""
    return config.model_path or SHIPPED_MODEL
