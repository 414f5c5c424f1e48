"""Training checkpoints: everything needed to resume a run exactly, or to export its best model.

A checkpoint is a ``torch.save`` dictionary written after every epoch (to a temporary name, then
renamed, so an interrupted write never leaves a broken file). It holds the current weights,
optimiser, schedule and random states (to resume bit for bit), the best weights so far with their
validation scores (to export), the training config and a fingerprint of the data (to refuse
resuming on something else), and what the model contract needs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from urbanfusion.models.contract import ModelContract
from urbanfusion.models.dataset import CellData
from urbanfusion.models.training.network import FusionNet, NetworkConfig
from urbanfusion.pipeline.errors import ModelError

FORMAT = "urbanfusion.checkpoint/1"


def data_fingerprint(data: CellData) -> str:
    """A short hash of which cells, labels and blocks a run trains on."""
    h = hashlib.sha256()
    for array in (data.labels, data.blocks, data.has_activity):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(repr((data.chips.shape, data.bands, data.chip_px)).encode())
    return h.hexdigest()[:16]


def save_checkpoint(path: Path, state: dict[str, object]) -> None:
    """Write ``state`` atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, path)


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


def check_resumable(state: dict[str, object], train_config: dict[str, object], data: str) -> None:
    """Refuse to resume with another config or other data than the checkpoint's.

    Raises:
        ModelError: naming the first setting that differs.
    """
    saved = dict(state["train_config"])  # type: ignore[call-overload]
    for key, value in train_config.items():
        if key != "device" and saved.get(key) != value:
            raise ModelError(
                f"cannot resume: {key} was {saved.get(key)!r} in the checkpoint, now {value!r}; "
                "use the same options, or train from scratch without --resume"
            )
    if state["data"] != data:
        raise ModelError(
            "cannot resume: the training cells differ from the checkpoint's; use the same "
            "configs and labels, or train from scratch without --resume"
        )


def best_model(state: dict[str, object]) -> FusionNet:
    """The network with the checkpoint's best weights, in eval mode on the CPU."""
    model = FusionNet(NetworkConfig(**state["network"]))  # type: ignore[arg-type]
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
