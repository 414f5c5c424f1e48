"""Run an urbanfusion ONNX model with onnxruntime (CUDA when present, else CPU); no torch.

One session per model file and process (:func:`load_predictor` caches it): dask tasks in the same
worker share it, onnxruntime sessions are safe to run from several threads.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from urbanfusion.models.calibration import (
    DOMAIN_KEY,
    FEATURES,
    LOGITS,
    DomainModel,
    domain_score,
    softmax,
)
from urbanfusion.models.contract import METADATA_KEY, ModelContract
from urbanfusion.models.shipped import SHIPPED_MODEL as SHIPPED_MODEL  # its old home
from urbanfusion.pipeline.errors import InputNotFoundError, ModelError
from urbanfusion.preprocess.chips import image_inputs

# Cells per session call: 256 keeps a batch's activations in cache (2,400 cells/s on 2 cores
# against 1,900 at 1,024) and its memory small.
BATCH = 256


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, then CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclass(frozen=True)
class CellPrediction:
    """What the model says about cells."""

    prob: np.ndarray  # (n, classes) float32, calibrated when the model carries a temperature
    has_image: np.ndarray  # (n,) bool: enough valid pixels to count as imagery
    domain: np.ndarray  # (n,) float32: <= 1 in the training data's domain; NaN: no score


class Predictor:
    """An onnxruntime session with the model's contract."""

    def __init__(self, path: Path, providers: list[str] | None = None, threads: int = 0) -> None:
        """Open ``path``; ``threads`` for onnxruntime's intra-op pool (0: its default, every core).

        Raises:
            InputNotFoundError: the file does not exist.
            ModelError: onnxruntime cannot load it, or it carries no urbanfusion contract.
        """
        if path.is_dir():
            raise InputNotFoundError(f"model {path} is a folder; give the .onnx file in it")
        if not path.is_file():
            raise InputNotFoundError(
                f"model file {path} does not exist; check 'model' in the config"
            )
        self.path = path
        self.requested_providers = providers or default_providers()
        try:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1  # the graph is a chain: no parallel branches
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
        self._check_graph_against_contract()
        outputs = {o.name for o in self.session.get_outputs()}
        # A calibrated model also outputs its logits and its branch embeddings (none for a
        # single-source model: it has a temperature but no in-domain score).
        self.branches = [branch for branch, name in FEATURES.items() if name in outputs]
        self.scored = LOGITS in outputs
        self._meta = meta

    @functools.cached_property
    def domain_models(self) -> dict[str, DomainModel]:
        """Per branch, the in-domain model, read when first needed.

        Not in ``__init__``: `calibrate` must open a model whose score is of an earlier
        urbanfusion in order to refit it.

        Raises:
            ModelError: the score is of an earlier urbanfusion, or damaged.
        """
        return {
            branch: DomainModel.from_contract(
                fields, self._meta.get(DOMAIN_KEY.format(branch=branch)), str(self.path)
            )
            for branch, fields in self.contract.domain.items()
        }

    def _check_graph_against_contract(self) -> None:
        """The graph's fixed dimensions are those its contract promises (batch aside).

        Raises:
            ModelError: a tensor of the graph has another shape than the contract says.
        """
        c = self.contract
        image, activity, has_image, has_activity = c.inputs
        expected = {
            image: [len(c.bands), c.chip_px, c.chip_px],
            activity: [c.days, c.hours],
            has_image: [1],
            has_activity: [1],
            c.output: [len(c.classes)],
        }
        for tensor in [*self.session.get_inputs(), *self.session.get_outputs()]:
            if tensor.name not in expected:
                continue
            dims, want = list(tensor.shape[1:]), expected[tensor.name]
            fixed = [d if isinstance(d, int) else None for d in dims]
            if len(dims) != len(want) or any(
                f not in (None, w) for f, w in zip(fixed, want, strict=True)
            ):
                raise ModelError(
                    f"{self.path}: its graph has {tensor.name} of shape {dims} (after the batch) "
                    f"but its contract says {want}; export the model again with urbanfusion export"
                )

    def check_chips(self, chip_px: int, n_bands: int, fix: str) -> None:
        """The one check that this model can read the data: chips of that size and band count.

        Raises:
            ModelError: it reads other chips; the message ends with ``fix``, what to change.
        """
        c = self.contract
        if (chip_px, n_bands) != (c.chip_px, len(c.bands)):
            raise ModelError(
                f"{self.path} reads {len(c.bands)}-band chips of {c.chip_px} px but the data has "
                f"{n_bands}-band chips of {chip_px} px; {fix}"
            )

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime actually uses (it may fall back to CPU silently)."""
        return self.session.get_providers()[0]

    def _feeds(
        self,
        image: np.ndarray,
        activity: np.ndarray,
        has_image: np.ndarray,
        has_activity: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """One batch of prepared inputs, by the contract's input names."""
        values = [
            np.ascontiguousarray(image, dtype=np.float32),
            np.ascontiguousarray(activity, dtype=np.float32),
            np.asarray(has_image, dtype=np.float32).reshape(-1, 1),
            np.asarray(has_activity, dtype=np.float32).reshape(-1, 1),
        ]
        return dict(zip(self.contract.inputs, values, strict=True))

    def run(
        self,
        names: list[str],
        image: np.ndarray,
        activity: np.ndarray,
        has_image: np.ndarray,
        has_activity: np.ndarray,
        batch: int = BATCH,
    ) -> list[np.ndarray]:
        """The graph outputs ``names`` for prepared inputs, batch by batch (bounded memory)."""
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for s in range(0, len(image), batch):
            e = min(len(image), s + batch)
            feeds = self._feeds(image[s:e], activity[s:e], has_image[s:e], has_activity[s:e])
            for part, out in zip(parts, self.session.run(names, feeds), strict=True):
                part.append(out)
        if not len(image):  # no batch ran: empty outputs of the graph's widths
            widths = {o.name: o.shape[1:] for o in self.session.get_outputs()}
            return [np.zeros((0, *widths[n]), np.float32) for n in names]
        return [np.concatenate(p) for p in parts]

    def predict(
        self,
        image: np.ndarray,
        activity: np.ndarray,
        has_image: np.ndarray,
        has_activity: np.ndarray,
        batch: int = BATCH,
    ) -> np.ndarray:
        """Class probabilities ``(n, classes)`` float32 for prepared inputs (see ``preprocess``)."""
        names = [self.contract.output]
        return self.run(names, image, activity, has_image, has_activity, batch)[0]

    def _scored(
        self,
        image: np.ndarray,
        activity: np.ndarray,
        has_image: np.ndarray,
        has_activity: np.ndarray,
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits and branch embeddings of a calibrated model."""
        names = [LOGITS, *(FEATURES[b] for b in self.branches)]
        logits, *features = self.run(names, image, activity, has_image, has_activity)
        return logits, dict(zip(self.branches, features, strict=True))

    def _prepare(
        self, chips: np.ndarray, activity: np.ndarray, has_activity: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw cell inputs as the graph takes them: image, activity, has_image, has_activity."""
        c = self.contract
        image, has_image = image_inputs(chips, np.array(c.image_mean), np.array(c.image_std))
        activity = activity.reshape(len(activity), c.days, c.hours)
        return image, activity, has_image, has_activity.reshape(len(has_activity))

    def predict_cells(
        self,
        chips: np.ndarray,
        activity: np.ndarray,
        has_activity: np.ndarray,
        hide: Literal["image", "activity"] | None = None,
    ) -> CellPrediction:
        """Probabilities, ``has_image`` and the in-domain score for cells' raw inputs.

        The one way cells reach the model, for runs and evaluation alike: ``chips``
        ``(n, band, chip, chip)`` in [0, 1] with NaN for nodata are normalised with the model's
        own band statistics; ``activity`` ``(n, days, hours)`` are the prepared features.
        ``hide`` withholds one input from every cell (the single-source ablation).
        """
        image, activity, has_image, has_activity = self._prepare(chips, activity, has_activity)
        fed_image, fed_activity = has_image, has_activity
        if hide == "image":
            image, fed_image = np.zeros_like(image), np.zeros_like(has_image)
        elif hide == "activity":
            activity, fed_activity = np.zeros_like(activity), np.zeros_like(has_activity)
        if not self.scored:  # an uncalibrated model: its probabilities as they come
            prob = self.predict(image, activity, fed_image, fed_activity)
            return CellPrediction(prob, has_image > 0.5, np.full(len(prob), np.nan, np.float32))
        logits, features = self._scored(image, activity, fed_image, fed_activity)
        present = {"image": fed_image > 0.5, "activity": fed_activity > 0.5}
        return CellPrediction(
            softmax(logits, self.contract.temperature),
            has_image > 0.5,
            domain_score(self.domain_models, features, present)
            if self.domain_models
            else np.full(len(logits), np.nan, np.float32),
        )

    def raw_outputs(
        self, chips: np.ndarray, activity: np.ndarray, has_activity: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Logits, branch embeddings and which inputs each cell had: what calibration fits.

        Raises:
            ModelError: the model does not output its logits and embeddings.
        """
        if not self.scored:
            raise ModelError(
                f"{self.path}: it does not output its logits and embeddings; calibrate it with "
                "urbanfusion calibrate, which adds them"
            )
        image, activity, has_image, has_activity = self._prepare(chips, activity, has_activity)
        logits, features = self._scored(image, activity, has_image, has_activity)
        return logits, features, has_image > 0.5, has_activity > 0.5


@functools.lru_cache(maxsize=4)
def load_predictor(
    path: str, providers: tuple[str, ...] | None = None, threads: int = 0
) -> Predictor:
    """The process-wide :class:`Predictor` for a model path (created once, then shared)."""
    return Predictor(Path(path), list(providers) if providers else None, threads)
