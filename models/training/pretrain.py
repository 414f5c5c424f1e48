"""Pre-train the image encoder on labelled scenes, save it, score it, and load it into a model.

The encoder is the one :class:`~urbanfusion.models.training.network.FusionNet` uses, with a
linear head on top; the head is thrown away after pre-training. Convolutional encoders do not
care about the image size, so scenes may be larger than the chips of a run; a ViT's positional
embeddings are interpolated to the run's patch grid when it is loaded. Files are
``torch.save`` dictionaries holding the encoder's weights, its
:class:`~urbanfusion.models.training.network.NetworkConfig` fields, the classes, the band
statistics and the validation figures.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from urbanfusion.models.metrics import scores
from urbanfusion.models.training.loop import TrainingLoop, augment_chips, pick_device, seeded
from urbanfusion.models.training.network import ImageEncoder, NetworkConfig
from urbanfusion.models.training.scenes import Scenes, load_scenes, stratified_split
from urbanfusion.pipeline.errors import ModelError


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of image-encoder pre-training."""

    side: int = 64
    epochs: int = 30
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 0
    val_fraction: float = 0.2
    image_encoder: str = "resnext"
    image_width: int = 32
    features: int = 128


class _Classifier(nn.Module):
    def __init__(self, encoder: ImageEncoder, features: int, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[0])


def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(
        ((images - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    )


def pretrain(scenes: Scenes, cfg: PretrainConfig = PretrainConfig()) -> dict[str, object]:
    """Fit encoder + head on a stratified split; returns what :func:`save_encoder` writes."""
    generator = seeded(cfg.seed)
    device = pick_device()
    val = stratified_split(scenes.labels, cfg.val_fraction, cfg.seed)
    mean = scenes.images[~val].mean(axis=(0, 2, 3))
    std = np.maximum(scenes.images[~val].std(axis=(0, 2, 3)), 1e-3)
    x_train, y_train = (
        _normalise(scenes.images[~val], mean, std),
        torch.from_numpy(scenes.labels[~val]),
    )
    x_val, y_val = _normalise(scenes.images[val], mean, std), scenes.labels[val]
    net_cfg = NetworkConfig(
        image_encoder=cfg.image_encoder,
        image_width=cfg.image_width,
        features=cfg.features,
        chip_px=cfg.side,  # type: ignore[arg-type]
    )
    model = _Classifier(ImageEncoder(net_cfg), cfg.features, len(scenes.classes)).to(device)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        x = augment_chips(x_train[idx], generator).to(device)
        return nn.functional.cross_entropy(model(x), y_train[idx].to(device))

    def validate() -> float:
        return float((_predict(model, x_val, device) == y_val).mean())

    loop = TrainingLoop.of(model, generator, cfg)
    loop.run(len(x_train), loss_of, validate)
    best_epoch = loop.best_epoch
    result = scores(y_val, _predict(model, x_val, device), scenes.classes)
    return {
        "encoder": {k: v.cpu() for k, v in model.encoder.state_dict().items()},
        "head": {k: v.cpu() for k, v in model.head.state_dict().items()},
        "network": asdict(net_cfg),
        "classes": scenes.classes,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "side": cfg.side,
        "validation": result,
        "best_epoch": best_epoch,
    }


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    model.eval()
    out = [model(x[s : s + 256].to(device)).argmax(1).cpu().numpy() for s in range(0, len(x), 256)]
    return np.concatenate(out)


def save_encoder(path: Path, state: dict[str, object]) -> None:
    """Write a pre-trained encoder file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)


def load_encoder(path: Path) -> dict[str, object]:
    """Read a pre-trained encoder file.

    Raises:
        ModelError: the file is missing or not an urbanfusion encoder.
    """
    if not path.is_file():
        raise ModelError(f"encoder file {path} does not exist; create it with pretrain-image")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a bad file
        raise ModelError(f"{path}: not a torch file ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or "encoder" not in state or "network" not in state:
        raise ModelError(f"{path}: not an urbanfusion encoder; create it with pretrain-image")
    return state


def evaluate_encoder(path: Path, folder: Path) -> dict[str, object]:
    """Score a pre-trained encoder (with its head) on a folder with the same class sub-folders."""
    state = load_encoder(path)
    scenes = load_scenes(folder, int(state["side"]), list(state["classes"]))  # type: ignore[arg-type]
    net_cfg = NetworkConfig(**state["network"])  # type: ignore[arg-type]
    model = _Classifier(ImageEncoder(net_cfg), net_cfg.features, len(scenes.classes))
    model.encoder.load_state_dict(state["encoder"])  # type: ignore[arg-type]
    model.head.load_state_dict(state["head"])  # type: ignore[arg-type]
    x = _normalise(scenes.images, np.array(state["mean"]), np.array(state["std"]))
    return scores(scenes.labels, _predict(model, x, torch.device("cpu")), scenes.classes)


def load_into(model_encoder: ImageEncoder, cfg: NetworkConfig, path: Path) -> None:
    """Initialise a fusion model's image encoder from a pre-trained file.

    Raises:
        ModelError: the file's encoder is not the same architecture.
    """
    state = load_encoder(path)
    saved = state["network"]
    for key in ("image_encoder", "image_width", "features"):
        if saved[key] != getattr(cfg, key):  # type: ignore[index]
            raise ModelError(
                f"{path}: pre-trained {key} is {saved[key]!r} but the model uses "  # type: ignore[index]
                f"{getattr(cfg, key)!r}; pre-train with the same settings"
            )
    weights = dict(state["encoder"])  # type: ignore[call-overload]
    if cfg.image_encoder == "vit":
        weights["pos"] = resize_positions(weights["pos"], model_encoder.pos.shape[1])
    model_encoder.load_state_dict(weights)


def resize_positions(pos: torch.Tensor, tokens: int) -> torch.Tensor:
    """A ViT's positional embeddings ``(1, 1 + g*g, d)`` for ``tokens`` = 1 + G*G tokens.

    The class token's embedding is kept; the patch grid's is resized bicubically, as ViT and
    DeiT do to fine-tune at another image size.
    """
    old, new = round((pos.shape[1] - 1) ** 0.5), round((tokens - 1) ** 0.5)
    if old == new:
        return pos
    grid = pos[:, 1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    grid = nn.functional.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, new * new, -1)], dim=1)
