"""The contract a model file carries in its ONNX metadata, so that it is self-describing.

Everything inference needs besides the weights: the classes (names, labels, colours), the band
order and normalisation of the image input, the chip size, the activity layout, and the names of
inputs and outputs. Reading it needs neither torch nor onnx: onnxruntime exposes the metadata.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from urbanfusion.models.classes import URFC_CLASSES
from urbanfusion.pipeline.errors import ModelError

METADATA_KEY = "urbanfusion.contract"
CONTRACT_VERSION = 1
INPUT_NAMES = ("image", "activity", "has_image", "has_activity")
OUTPUT_NAME = "prob"


@dataclass(frozen=True)
class ModelContract:
    """What a model expects and what it means.

    Attributes:
        classes: short class names, in output order.
        labels: class names for people.
        colours: RGB colour per class for maps.
        bands: 1-based source bands, in the order of the image input's channels.
        image_mean, image_std: per-channel normalisation of image values in [0, 1].
        chip_px: image input side in pixels (one grid cell).
        cell_size_m: the cell size the model was trained at.
        days: rows of the activity input (7: a weekly profile, Monday first).
        hours: columns of the activity input.
        inputs: input names (image, activity, has_image, has_activity).
        output: output name (class probabilities).
        architecture: a short description of the network.
        trained_on: what the weights were fitted on.
        metrics: held-out figures measured at training time.
        temperature: divides the logits before the softmax (fitted on validation blocks; 1:
            not calibrated).
        domain: per input branch ("image", "activity"), how its in-domain score is computed
            (:class:`~urbanfusion.models.calibration.DomainModel`: neighbours, radius, and the
            shape of the training embeddings, which sit in their own metadata entry,
            ``urbanfusion.domain.<branch>``); empty: no score.
        calibration: how the temperature and the domain were fitted, and what they gave.
    """

    classes: list[str]
    labels: list[str]
    colours: list[list[int]]
    bands: list[int | str]
    image_mean: list[float]
    image_std: list[float]
    chip_px: int
    cell_size_m: float
    days: int = 7
    hours: int = 24
    inputs: list[str] = field(default_factory=lambda: list(INPUT_NAMES))
    output: str = OUTPUT_NAME
    architecture: str = ""
    trained_on: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    version: int = CONTRACT_VERSION
    temperature: float = 1.0
    domain: dict[str, dict[str, object]] = field(default_factory=dict)
    calibration: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise for the ONNX metadata."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "model") -> ModelContract:
        """Parse and check a contract.

        Raises:
            ModelError: the text is not a contract this version understands.
        """
        try:
            data = json.loads(text)
            contract = cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise ModelError(
                f"{source}: unreadable urbanfusion contract ({err}); re-export it"
            ) from None
        if contract.version != CONTRACT_VERSION:
            raise ModelError(
                f"{source}: contract version {contract.version}, this urbanfusion reads "
                f"{CONTRACT_VERSION}; re-export the model with this version"
            )
        n = len(contract.classes)
        if not (len(contract.labels) == len(contract.colours) == n) or n == 0:
            raise ModelError(
                f"{source}: its contract names {n} classes, {len(contract.labels)} labels and "
                f"{len(contract.colours)} colours; the contract is damaged: export the model "
                "again with urbanfusion export"
            )
        if not (len(contract.bands) == len(contract.image_mean) == len(contract.image_std)):
            raise ModelError(
                f"{source}: its contract names {len(contract.bands)} bands, "
                f"{len(contract.image_mean)} band means and {len(contract.image_std)} band "
                "deviations; the contract is damaged: export the model again with "
                "urbanfusion export"
            )
        return contract

    @classmethod
    def for_urfc(cls, **kwargs: object) -> ModelContract:
        """A contract with the nine URFC classes; other fields from ``kwargs``."""
        return cls(
            classes=[c.name for c in URFC_CLASSES],
            labels=[c.label for c in URFC_CLASSES],
            colours=[list(c.colour) for c in URFC_CLASSES],
            **kwargs,  # type: ignore[arg-type]
        )
