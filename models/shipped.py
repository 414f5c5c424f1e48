"""Where the model a run uses lies: the config's ``model``, else the one shipped in the package.

Two models ship (``make model`` makes both from demo cities): the default, a small student
distilled from the teacher (about 2.6x its speed on onnxruntime's CPU provider, as accurate on
the unseen demo city), and the teacher itself, which a config names with ``model: teacher``.
Apart from the session code (:mod:`.inference`), so that the up-to-date check names the model
file without importing onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

from urbanfusion.pipeline.config import RunConfig

WEIGHTS = Path(__file__).with_name("weights")
SHIPPED_MODEL = WEIGHTS / "urbanfusion-demo.onnx"
SHIPPED_TEACHER = WEIGHTS / "urbanfusion-teacher.onnx"
TEACHER = "teacher"  # ``model: teacher`` in a config: the shipped teacher


def model_file(config: RunConfig) -> Path:
    """The model file of a run: the config's ``model``, else :data:`SHIPPED_MODEL`.

    ``model: teacher`` names :data:`SHIPPED_TEACHER`.
    """
    if config.model == TEACHER:
        return SHIPPED_TEACHER
    return config.model_path or SHIPPED_MODEL
