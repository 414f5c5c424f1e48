"""Training checkpoints: everything needed to resume a run exactly, or to export its best model.

A checkpoint is a ``torch.save`` dictionary written after every epoch (to a temporary name, then
renamed, so an interrupted write never leaves a broken file). It holds the current weights,
optimiser, schedule and random states (to resume bit for bit), the best weights so far with their
validation scores (to export), the training config and a fingerprint of the data (to refuse
resuming on something else), and what the model contract needs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

import numpy as np
import torch

from urbanfusion.models.contract import ModelContract
from urbanfusion.models.dataset import CellData
from urbanfusion.models.training.network import FusionNet, NetworkConfig
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
}
_ABSENT = object()


def data_fingerprint(data: CellData) -> str:
    """A short hash of which cells, labels and blocks a run trains on."""
    h = hashlib.sha256()
    for array in (data.labels, data.blocks, data.has_activity):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(repr((data.chips.shape, data.bands, data.chip_px)).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, state: dict[str, object]) -> None:
    """Write ``state`` atomically (a reader never sees half a file)."""
    with replacing(path, mode=None) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: Path) -> dict[str, object]:
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
    return state


def flat_settings(config: dict[str, object], prefix: str = "") -> dict[str, object]:
    """A nested training config (``asdict``) as ``{"lr": ..., "network.fusion": ...}``."""
    out: dict[str, object] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_settings(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_resumable(
    state: dict[str, object], train_config: dict[str, object], data: str, model: torch.nn.Module
) -> None:
    """Refuse to resume with another config, other data or another network than the checkpoint's.

    A setting the checkpoint predates counts as its :data:`BEFORE_IT_EXISTED` value, so a run
    started by an earlier version resumes with the options it had.

    Raises:
        ModelError: naming the first setting that differs, or the layers that do.
    """
    saved = flat_settings(dict(state["train_config"]))  # type: ignore[call-overload]
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
    if state["data"] != data:
        raise ModelError(
            "cannot resume: the training cells differ from the checkpoint's; use the same "
            "configs and labels, or train from scratch without --resume"
        )
    layer = _first_misfit(state["model"], model)  # type: ignore[arg-type]
    if layer is not None:
        raise ModelError(
            f"cannot resume: the checkpoint's network differs from this version's at {layer} "
            "(written by another urbanfusion version); train from scratch without --resume"
        )


def _first_misfit(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    """The first layer whose name or shape differs between ``weights`` and ``model``, if any."""
    theirs = {k: tuple(v.shape) for k, v in weights.items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return None if theirs == ours else sorted(set(theirs.items()) ^ set(ours.items()))[0][0]


def best_model(state: dict[str, object], path: Path) -> FusionNet:
    """The network with the best weights of checkpoint ``path``, in eval mode on the CPU.

    Raises:
        ModelError: the network or its weights do not fit this version's.
    """
    network = dict(state["network"])  # type: ignore[call-overload]
    unknown = sorted(set(network) - set(NetworkConfig.__dataclass_fields__))
    if unknown:
        raise ModelError(
            f"{path}: the checkpoint has the setting network.{unknown[0]}, which this version "
            "does not know (written by a newer urbanfusion); export it with that version"
        )
    model = FusionNet(NetworkConfig(**network))
    layer = _first_misfit(state["best"], model)  # type: ignore[arg-type]
    if layer is not None:
        raise ModelError(
            f"{path}: the network differs from this version's at {layer} (written by another "
            "urbanfusion version); export it with the version that wrote it"
        )
    model.load_state_dict(state["best"])  # type: ignore[arg-type]
    return model.eval()


def contract_of(state: dict[str, object]) -> ModelContract:
    """The contract of the checkpoint's best model."""
    validation = state["best_validation"]
    return ModelContract.for_urfc(
        bands=list(state["bands"]),  # type: ignore[call-overload]
        image_mean=list(state["image_mean"]),  # type: ignore[call-overload]
        image_std=list(state["image_std"]),  # type: ignore[call-overload]
        chip_px=int(state["chip_px"]),  # type: ignore[call-overload]
        cell_size_m=float(state["cell_size_m"]),  # type: ignore[arg-type]
        architecture=NetworkConfig(**state["network"]).describe(),  # type: ignore[arg-type]
        trained_on=str(state["trained_on"]),
        metrics={
            "val_overall_accuracy": float(validation["overall_accuracy"]),  # type: ignore[index]
            "val_macro_f1": float(validation["macro_f1"]),  # type: ignore[index]
            "best_epoch": float(state["best_epoch"]),  # type: ignore[arg-type]
        },
    )


def init_from(model: FusionNet, path: Path) -> tuple[list[float], list[float]]:
    """Start ``model`` from the best weights of a training checkpoint (fine-tuning).

    Returns the checkpoint's image band statistics: a fine-tuned network keeps the inputs'
    scale its weights learnt.

    Raises:
        ModelError: the file is not a checkpoint, or its network is not ``model``'s.
    """
    state = load_checkpoint(path)
    best = cast(dict[str, torch.Tensor], state["best"])
    layer = _first_misfit(best, model)
    if layer is not None:
        raise ModelError(
            f"{path}: its network differs from this one at {layer}; fine-tune with the "
            "network options it was trained with (see its train_config)"
        )
    model.load_state_dict(best)
    return cast(list[float], state["image_mean"]), cast(list[float], state["image_std"])
