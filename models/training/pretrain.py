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
from urbanfusion.models.training.loop import TrainingLoop, pick_device, seeded
from urbanfusion.models.training.network import ImageEncoder, NetworkConfig
from urbanfusion.models.training.scenes import Scenes, load_scenes, stratified_split
from urbanfusion.pipeline.errors import ModelError


@dataclass(frozen=True)
class PretrainConfig:
    """Hyper-parameters of image-encoder pre-training.

    ``test_fraction`` of each class is held out (the same scenes whatever the seed) and only
    scored at the end: neither early stopping nor anyone tuning looks at it. With
    ``val_fraction`` 0 (the default) the cosine schedule runs to its end and the last epoch is
    kept, so all the other scenes train; above 0, that share of all scenes chooses the epoch.
    ``crop_area`` bounds the random crops' share of a scene. Crops are resampled to
    ``train_scale`` of ``side`` (see :func:`train_side`).
    """

    side: int = 64
    train_scale: float = 0.75
    epochs: int = 50
    # 32, not 64: a 64-scene batch's full-resolution activations (33.5 MB at 64 px, width 32)
    # pass glibc's 32 MB mmap ceiling and were faulted in afresh every step.
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 0
    val_fraction: float = 0.0
    test_fraction: float = 0.2
    crop_area: tuple[float, float] = (0.35, 1.0)
    label_smoothing: float = 0.1
    image_encoder: str = "resnext"
    image_width: int = 32
    features: int = 128


# Batches of 32 keep each activation under glibc's 32 MB mmap ceiling (see keep_freed_memory):
# larger ones are mapped and faulted in afresh every time.
_PREDICT_BATCH = 32
# Scenes normalised, averaged or summed this many at a time (25 MB as float32 at 128 px).
_CHUNK = 128
# The held-out scenes do not move with --seed, so seeds are compared on the same scenes.
_TEST_SPLIT_SEED = 0


class _Classifier(nn.Module):
    def __init__(self, encoder: ImageEncoder, features: int, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[0])


def _normalise(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """uint8 scenes to float32 tensors scaled to [0, 1] and standardised per band."""
    x = images.astype(np.float32) / 255.0
    return torch.from_numpy(((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32))


def band_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation of uint8 scenes on the [0, 1] scale.

    Summed in float64 a chunk at a time: no float copy of all the scenes.
    """
    total, squares, count = np.zeros(images.shape[1]), np.zeros(images.shape[1]), 0
    for s in range(0, len(images), _CHUNK):
        x = images[s : s + _CHUNK].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 2, 3))
        squares += (x * x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    return mean, np.sqrt(np.maximum(squares / max(count, 1) - mean * mean, 0.0))


def averaged_views(
    images: np.ndarray, mean: np.ndarray, std: np.ndarray, sides: tuple[int, ...]
) -> list[torch.Tensor]:
    """The scenes normalised and area-averaged to each of ``sides``, a chunk at a time.

    A side not smaller than the scenes' keeps them as they are. Only the averaged copies are
    ever whole in memory.
    """
    parts: list[list[torch.Tensor]] = [[] for _ in sides]
    for s in range(0, len(images), _CHUNK):
        x = _normalise(images[s : s + _CHUNK], mean, std)
        for part, side in zip(parts, sides, strict=True):
            part.append(nn.functional.adaptive_avg_pool2d(x, side) if side < x.shape[-1] else x)
    return [torch.cat(part) for part in parts]


def train_side(cfg: PretrainConfig) -> int:
    """The side training crops are resampled to: ``train_scale`` of ``cfg.side``, a multiple of 8.

    A random crop (35-100 % of the scene) enlarges what it shows when it is resampled to the
    evaluation's side, so training sees objects larger than whole scenes show them; training a
    little smaller than it is used at matches their apparent size again ("FixRes", Touvron et
    al. 2019) and makes each step cheaper. A ViT's positional embeddings fix its input size,
    so a ViT trains at ``cfg.side``.
    """
    if cfg.image_encoder == "vit":
        return cfg.side
    return max(8, round(cfg.side * cfg.train_scale / 8) * 8)


def random_views(
    scenes: torch.Tensor,
    side: int,
    area: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """A random crop of each scene, resampled to ``side``, turned and flipped at random.

    Each scene gets its own crop (``area`` bounds its share of the scene, square, anywhere
    inside), its own right-angle turn and its own mirror image: all one affine sampling grid,
    so a view costs one bilinear resampling. The whole scene unturned is an exact 2 x 2 average
    when the scenes are ``2 * side`` a side, the same pixels as the evaluation's.
    """
    n = scenes.shape[0]
    scale = torch.empty(n).uniform_(*area, generator=generator).sqrt()
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]
    turn = torch.randint(0, 4, (n,), generator=generator) * (torch.pi / 2)
    mirror = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    cos, sin = torch.cos(turn).round(), torch.sin(turn).round()
    theta = torch.stack(
        [
            torch.stack([scale * cos * mirror, -scale * sin, shift[:, 0]], dim=1),
            torch.stack([scale * sin * mirror, scale * cos, shift[:, 1]], dim=1),
        ],
        dim=1,
    )
    grid = nn.functional.affine_grid(theta, [n, scenes.shape[1], side, side], align_corners=False)
    return nn.functional.grid_sample(scenes, grid, mode="bilinear", align_corners=False)


def pretrain(scenes: Scenes, cfg: PretrainConfig = PretrainConfig()) -> dict[str, object]:
    """Fit encoder + head on scenes loaded at ``2 * cfg.side``; what :func:`save_encoder` writes.

    The held-out scenes' scores are under ``"test"``, the early-stopping scenes' under
    ``"validation"``. Training sees random crops of the scenes at :func:`train_side` (see
    :func:`random_views`); validation and test see whole scenes averaged down to ``cfg.side``.
    ``mean`` and ``std`` are per band, on the [0, 1] scale of the scenes' bytes / 255.
    """
    generator = seeded(cfg.seed)
    device = pick_device()
    if cfg.test_fraction <= 0 or cfg.val_fraction + cfg.test_fraction >= 1:
        raise ModelError(
            f"test fraction {cfg.test_fraction} and validation fraction {cfg.val_fraction} "
            "leave no scenes to train or to test on; use a test fraction in (0, 1)"
        )
    test = stratified_split(scenes.labels, cfg.test_fraction, _TEST_SPLIT_SEED)
    val = np.zeros_like(test)
    if cfg.val_fraction > 0:
        val[~test] = stratified_split(
            scenes.labels[~test], cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed
        )
    train = ~(test | val)
    mean, std = band_statistics(scenes.images[train])
    std = np.maximum(std, 1e-3)
    crop_side = train_side(cfg)
    # Validation and test see whole scenes area-averaged to the run's size. Training crops
    # come from the scenes area-averaged to twice the crop side: bilinear resampling by more
    # than 2x skips pixels (aliasing), and a whole-scene crop is again a 2 x 2 average.
    # Averaging is linear, so normalising first changes nothing.
    whole, source = averaged_views(scenes.images, mean, std, (cfg.side, 2 * crop_side))
    # Batches are gathered from ``source`` by index: no second copy of the training scenes.
    rows, labels = torch.from_numpy(np.flatnonzero(train)), torch.from_numpy(scenes.labels)
    net_cfg = NetworkConfig(
        image_encoder=cfg.image_encoder,
        image_width=cfg.image_width,
        features=cfg.features,
        chip_px=cfg.side,  # type: ignore[arg-type]
    )
    model = _Classifier(ImageEncoder(net_cfg), cfg.features, len(scenes.classes)).to(device)
    # oneDNN's convolutions run about 1.3x faster on CPU with channels last.
    model = model.to(memory_format=torch.channels_last)

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        x = random_views(source[rows[idx]], crop_side, cfg.crop_area, generator)
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        return nn.functional.cross_entropy(
            model(x), labels[rows[idx]].to(device), label_smoothing=cfg.label_smoothing
        )

    def validate() -> float:
        return float((_predict(model, whole[val], device) == scenes.labels[val]).mean())

    loop = TrainingLoop.of(model, generator, cfg)
    loop.run(len(rows), loss_of, validate if val.any() else None)
    return {
        "encoder": {k: v.cpu().contiguous() for k, v in model.encoder.state_dict().items()},
        "head": {k: v.cpu().contiguous() for k, v in model.head.state_dict().items()},
        "network": asdict(net_cfg),
        "classes": scenes.classes,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "side": cfg.side,
        "validation": scores(
            scenes.labels[val], _predict(model, whole[val], device), scenes.classes
        )
        if val.any()
        else None,
        "test": scores(scenes.labels[test], _predict(model, whole[test], device), scenes.classes),
        "test_scenes": [p for p, t in zip(scenes.paths, test, strict=True) if t],
        "validation_scenes": [p for p, v in zip(scenes.paths, val, strict=True) if v],
        "best_epoch": loop.best_epoch,
    }


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, device: torch.device) -> np.ndarray:
    model.eval()
    out = [
        model(x[s : s + _PREDICT_BATCH].to(device).contiguous(memory_format=torch.channels_last))
        .argmax(1)
        .cpu()
        .numpy()
        for s in range(0, len(x), _PREDICT_BATCH)
    ]
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
