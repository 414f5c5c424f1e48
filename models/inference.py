"""Run an urbanfusion ONNX model with onnxruntime (CUDA when present, else CPU); no torch.

One session per model file and process (:func:`load_predictor` caches it): dask tasks in the same
worker share it, onnxruntime sessions are safe to run from several threads.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from models.contract import METADATA_KEY, ModelContract
from pipeline.errors import InputNotFoundError, ModelError

SHIPPED_MODEL = Path(__file__).with_name("weights") / "urbanfusion-demo.onnx"
BATCH = 1024


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class Predictor:
    """An onnxruntime session with the model's contract."""

    def __init__(self, path: Path, providers: list[str] | None = None) -> None:
        """Open ``path``.

        Raises:
            InputNotFoundError: the file does not exist.
            ModelError: onnxruntime cannot load it, or it carries no urbanfusion contract.
        """
        if not path.is_file():
            raise InputNotFoundError(
                f"model file {path} does not exist; check 'model' in the config"
            )
        self.path = path
        self.requested_providers = providers or default_providers()
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self.session = ort.InferenceSession(
                str(path), sess_options=options, providers=self.requested_providers
            )
        except Exception as err:  # onnxruntime raises its own untyped errors for bad files
            first = str(err).splitlines()[0][:200]
            raise ModelError(
                f"{path}: onnxruntime cannot load it ({first}); is it an ONNX file?"
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ModelError(
                f"{path}: no '{METADATA_KEY}' metadata; export models with `urbanfusion train`"
            )
        self.contract = ModelContract.from_json(meta[METADATA_KEY], str(path))
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(self.contract.inputs):
            raise ModelError(
                f"{path}: inputs {names} differ from its contract {self.contract.inputs}"
            )

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime actually uses (it may fall back to CPU silently)."""
        return self.session.get_providers()[0]

    def predict(
        self,
        image: np.ndarray,
        activity: np.ndarray,
        has_image: np.ndarray,
        has_activity: np.ndarray,
        batch: int = BATCH,
    ) -> np.ndarray:
        """Class probabilities ``(n, classes)`` float32 for prepared inputs (see ``preprocess``)."""
        n = len(image)
        out = np.empty((n, len(self.contract.classes)), dtype=np.float32)
        names = self.contract.inputs
        for s in range(0, n, batch):
            e = min(n, s + batch)
            feeds = dict(
                zip(
                    names,
                    [
                        np.ascontiguousarray(image[s:e], dtype=np.float32),
                        np.ascontiguousarray(activity[s:e], dtype=np.float32),
                        np.asarray(has_image[s:e], dtype=np.float32).reshape(-1, 1),
                        np.asarray(has_activity[s:e], dtype=np.float32).reshape(-1, 1),
                    ],
                    strict=True,
                )
            )
            out[s:e] = self.session.run([self.contract.output], feeds)[0]
        return out


@functools.lru_cache(maxsize=4)
def load_predictor(path: str, providers: tuple[str, ...] | None = None) -> Predictor:
    """The process-wide :class:`Predictor` for a model path (created once, then shared)."""
    return Predictor(Path(path), list(providers) if providers else None)
