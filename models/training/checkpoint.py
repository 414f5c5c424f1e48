"""Training checkpoints: everything needed to resume a run exactly, or to export its best model.

A checkpoint is a ``torch.save`` dictionary written after every epoch (to a temporary name, then
renamed, so an interrupted write never leaves a broken file). It holds the current weights,
optimiser, schedule and random states (to resume bit for bit), the best weights so far with their
validation scores (to export), the training config and a fingerprint of the data (to refuse
resuming on something else), and what the model contract needs.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from urbanfusion.models.contract import ModelContract
from urbanfusion.models.dataset import CellData
from urbanfusion.models.training.configs import NetworkConfig
from urbanfusion.models.training.loop import LoopState, Weights
from urbanfusion.models.training.network import FusionNet
from urbanfusion.pipeline.atomic import replacing
from urbanfusion.pipeline.errors import ModelError

FORMAT = "urbanfusion.checkpoint/1"

# Settings added to the training config after this format was first written, each with the value
# that does what runs did before the setting existed: a checkpoint without one resumes as having
# that value. A setting added later must be listed here (a test checks it), or such checkpoints
# are refused by name.
BEFORE_IT_EXISTED: dict[str, object] = {
    "distill": 0.0,
    "distill_temperature": 2.0,
    "align": 0.0,
    "align_temperature": 0.07,
    "align_momentum": 0.0,
    "align_queue": 1024,
    "align_alpha": 0.4,
    "exchange_l1": 1e-3,
    # Early stopping looked at the fused accuracy alone until --select heads became the default.
    "select": "fused",
    "network.pyramid": False,
    "network.exchange": False,
    "network.align_dim": 0,
    "network.double_fusion": False,
    # Fine-tuning from another model's checkpoint came later: runs before it started afresh.
    "init": None,
    # Distillation from a teacher model came later still: runs before it had none.
    "teacher": None,
    "teacher_weight": 0.7,
    "teacher_temperature": 3.0,
}
_ABSENT = object()


def data_fingerprint(data: CellData) -> str:
    """A short hash of which cells, labels and blocks a run trains on."""
    h = hashlib.sha256()
    for array in (data.labels, data.blocks, data.has_activity):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(repr((data.chips.shape, data.bands, data.chip_px)).encode())
    return h.hexdigest()[:16]


T = TypeVar("T")


@dataclass
class Checkpoint:
    """A training run after an epoch: the loop's state and what the model contract needs.

    On disk it is one flat dictionary (:meth:`to_dict`, the format :data:`FORMAT` since its
    first version); in memory every field has its type.
    """

    loop: LoopState
    best_validation: dict[str, object]  # the best epoch's validation scores
    train_config: dict[str, object]  # TrainConfig.model_dump(): resuming must match it
    data: str  # data_fingerprint of the training cells
    network: dict[str, object]  # NetworkConfig.model_dump() of the network trained
    image_mean: list[float]
    image_std: list[float]
    bands: list[int | str]  # the imagery's bands, by index or by name
    chip_px: int
    cell_size_m: float
    trained_on: str
    align_momentum: dict[str, torch.Tensor] | None = None  # ALBEF's momentum encoders

    def to_dict(self) -> dict[str, object]:
        """The flat dictionary ``torch.save`` writes."""
        loop = {f.name: getattr(self.loop, f.name) for f in fields(LoopState)}
        rest = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "loop"}
        return {"format": FORMAT, **loop, **rest}

    @classmethod
    def from_dict(cls, state: dict[str, object], path: Path) -> Checkpoint:
        """The record of a dictionary :meth:`to_dict` wrote (older versions' included).

        Raises:
            ModelError: a field is missing or of the wrong kind (a damaged checkpoint).
        """

        def get(name: str, kind: type[T]) -> T:
            value = state.get(name)
            if not isinstance(value, kind):
                raise ModelError(
                    f"{path}: a damaged checkpoint ({name} is {type(value).__name__}, not "
                    f"{kind.__name__}); train again, or use an earlier checkpoint"
                )
            return value

        cuda_rng, momentum = state.get("cuda_rng"), state.get("align_momentum")
        loop = LoopState(
            epoch=get("epoch", int),
            model=get("model", dict),
            optimizer=get("optimizer", dict),
            scheduler=get("scheduler", dict),
            generator=get("generator", torch.Tensor),
            torch_rng=get("torch_rng", torch.Tensor),
            cuda_rng=cuda_rng if isinstance(cuda_rng, torch.Tensor) else None,
            best=get("best", dict),
            best_acc=float(get("best_acc", float)),
            best_epoch=get("best_epoch", int),
            history=get("history", list),
        )
        return cls(
            loop=loop,
            best_validation=get("best_validation", dict),
            train_config=get("train_config", dict),
            data=get("data", str),
            network=get("network", dict),
            image_mean=[float(v) for v in get("image_mean", list)],
            image_std=[float(v) for v in get("image_std", list)],
            bands=[b if isinstance(b, int) else str(b) for b in get("bands", list)],
            chip_px=get("chip_px", int),
            cell_size_m=float(get("cell_size_m", float)),
            trained_on=get("trained_on", str),
            align_momentum=momentum if isinstance(momentum, dict) else None,
        )


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically (a reader never sees half a file)."""
    with replacing(path, mode=None) as tmp:
        torch.save(checkpoint.to_dict(), tmp)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ModelError: the file is missing or not an urbanfusion training checkpoint.
    """
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist; `urbanfusion train` writes one")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a bad file
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ModelError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ModelError(
            f"{path}: not an urbanfusion training checkpoint ({FORMAT}); "
            "`urbanfusion train` writes them"
        )
    return Checkpoint.from_dict(state, path)


def flat_settings(config: dict[str, object], prefix: str = "") -> dict[str, object]:
    """A nested training config (``model_dump``) as ``{"lr": ..., "network.fusion": ...}``."""
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(
    checkpoint: Checkpoint, train_config: dict[str, object], data: str, model: torch.nn.Module
) -> None:
    """Refuse to resume with another config, other data or another network than the checkpoint's.

    A setting the checkpoint predates counts as its :data:`BEFORE_IT_EXISTED` value, so a run
    started by an earlier version resumes with the options it had.

    Raises:
        ModelError: naming the first setting that differs, or the layers that do.
    """
    saved = flat_settings(checkpoint.train_config)
    now = flat_settings(train_config)
    unknown = sorted(set(saved) - set(now))
    if unknown:
        raise ModelError(
            f"cannot resume: the checkpoint has the setting {unknown[0]}, which this version "
            "does not know (written by a newer urbanfusion); resume it with that version"
        )
    for key, value in now.items():
        was = saved.get(key, BEFORE_IT_EXISTED.get(key, _ABSENT))
        if was is _ABSENT:
            raise ModelError(
                f"cannot resume: the checkpoint predates the setting {key}; "
                "train from scratch without --resume"
            )
        if key != "device" and was != value:
            raise ModelError(
                f"cannot resume: {key} was {was!r} in the checkpoint, now {value!r}; "
                "use the same options, or train from scratch without --resume"
            )
    if checkpoint.data != data:
        raise ModelError(
            "cannot resume: the training cells differ from the checkpoint's; use the same "
            "configs and labels, or train from scratch without --resume"
        )
    layer = _first_misfit(checkpoint.loop.model, model)
    if layer is not None:
        raise ModelError(
            f"cannot resume: the checkpoint's network differs from this version's at {layer} "
            "(written by another urbanfusion version); train from scratch without --resume"
        )


def _first_misfit(weights: Weights, model: torch.nn.Module) -> str | None:
    """The first layer whose name or shape differs between ``weights`` and ``model``, if any."""
    theirs = {k: tuple(v.shape) for k, v in weights.items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return None if theirs == ours else sorted(set(theirs.items()) ^ set(ours.items()))[0][0]


def best_model(checkpoint: Checkpoint, path: Path) -> FusionNet:
    """The network with the best weights of checkpoint ``path``, in eval mode on the CPU.

    Raises:
        ModelError: the network or its weights do not fit this version's.
    """
    network = checkpoint.network
    unknown = sorted(set(network) - set(NetworkConfig.model_fields))
    if unknown:
        raise ModelError(
            f"{path}: the checkpoint has the setting network.{unknown[0]}, which this version "
            "does not know (written by a newer urbanfusion); export it with that version"
        )
    model = FusionNet(NetworkConfig.model_validate(network))
    layer = _first_misfit(checkpoint.loop.best, model)
    if layer is not None:
        raise ModelError(
            f"{path}: the network differs from this version's at {layer} (written by another "
            "urbanfusion version); export it with the version that wrote it"
        )
    model.load_state_dict(checkpoint.loop.best)
    return model.eval()


def contract_of(checkpoint: Checkpoint) -> ModelContract:
    """The contract of the checkpoint's best model."""
    validation = checkpoint.best_validation

    def score(name: str) -> float:
        value = validation.get(name)
        return float(value) if isinstance(value, int | float) else float("nan")

    return ModelContract.for_urfc(
        bands=checkpoint.bands,
        image_mean=checkpoint.image_mean,
        image_std=checkpoint.image_std,
        chip_px=checkpoint.chip_px,
        cell_size_m=checkpoint.cell_size_m,
        architecture=NetworkConfig.model_validate(checkpoint.network).describe(),
        trained_on=checkpoint.trained_on,
        metrics={
            "val_overall_accuracy": score("overall_accuracy"),
            "val_macro_f1": score("macro_f1"),
            "best_epoch": float(checkpoint.loop.best_epoch),
        },
    )


def init_from(model: FusionNet, path: Path) -> tuple[list[float], list[float]]:
    """Start ``model`` from the best weights of a training checkpoint (fine-tuning).

    Returns the checkpoint's image band statistics: a fine-tuned network keeps the inputs'
    scale its weights learnt.

    Raises:
        ModelError: the file is not a checkpoint, or its network is not ``model``'s.
    """
    checkpoint = load_checkpoint(path)
    layer = _first_misfit(checkpoint.loop.best, model)
    if layer is not None:
        raise ModelError(
            f"{path}: its network differs from this one at {layer}; fine-tune with the "
            "network options it was trained with (see its train_config)"
        )
    model.load_state_dict(checkpoint.loop.best)
    return checkpoint.image_mean, checkpoint.image_std
