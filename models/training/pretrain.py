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

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from urbanfusion.models.metrics import scores
from urbanfusion.models.training.configs import NetworkConfig, PretrainConfig
from urbanfusion.models.training.loop import TrainingLoop, pick_device, seeded
from urbanfusion.models.training.network import ImageEncoder
from urbanfusion.models.training.scenes import (
    LabelSpace,
    Scenes,
    load_scenes,
    scene_classes,
    stratified_split,
)
from urbanfusion.pipeline.errors import InputFormatError, ModelError

# Batches of 32 keep each activation under glibc's 32 MB mmap ceiling (see keep_freed_memory):
# larger ones are mapped and faulted in afresh every time.
_PREDICT_BATCH = 32
# Scenes normalised, averaged or summed this many at a time (25 MB as float32 at 128 px).
_CHUNK = 128
# The held-out scenes do not move with --seed, so seeds are compared on the same scenes.
_TEST_SPLIT_SEED = 0
# Chips along each side of a scene at evaluation.
_GRID = 3


class _Classifier(nn.Module):
    """The encoder with one linear head over every label space's classes, side by side.

    A scene is scored among its own space's columns only, so this is a head per data set.
    """

    def __init__(self, encoder: ImageEncoder, features: int, classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(features, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[0])


def held_out(labels: np.ndarray, fraction: float) -> np.ndarray:
    """The held-out scenes of labels in :func:`~.scenes.scene_listing` order, whatever the seed.

    A real-pixel city for testing is built from these scenes alone (none trained the encoder).
    """
    return stratified_split(labels, fraction, _TEST_SPLIT_SEED)


def scene_px(cfg: PretrainConfig) -> int:
    """The side scenes are loaded at: ``scene_m`` at the chip's pixel size."""
    return max(cfg.side, round(cfg.side * cfg.scene_m / cfg.chip_m))


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


def normalised(images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    """The uint8 scenes normalised per band, a chunk at a time (one float copy in all)."""
    return torch.cat(
        [_normalise(images[s : s + _CHUNK], mean, std) for s in range(0, len(images), _CHUNK)]
    )


def chip_grid(scenes: torch.Tensor, side: int, grid: int = _GRID) -> torch.Tensor:
    """``grid`` x ``grid`` chips of ``side`` pixels evenly spread over each scene.

    ``(n, c, h, w)`` to ``(n, grid * grid, c, side, side)``: plain slices, no resampling (the
    scenes are at the chip's pixel size). A scene no larger than a chip is its one chip, each
    of the grid's places.
    """
    n, c, h, w = scenes.shape
    if h <= side and w <= side:
        x = nn.functional.interpolate(scenes, size=(side, side), mode="area")
        return x[:, None].expand(n, grid * grid, c, side, side)
    rows = np.linspace(0, h - side, grid).round().astype(int)
    cols = np.linspace(0, w - side, grid).round().astype(int)
    chips = [scenes[:, :, r : r + side, q : q + side] for r in rows for q in cols]
    return torch.stack(chips, dim=1)


def random_views(
    scenes: torch.Tensor,
    side: int,
    share: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """A random square crop of each scene, resampled to ``side``, turned and flipped at random.

    Each scene gets its own crop (``share`` bounds its side as a share of the scene's,
    anywhere inside), its own right-angle turn and its own mirror image: all one affine
    sampling grid, so a view costs one bilinear resampling.
    """
    n = scenes.shape[0]
    scale = torch.empty(n).uniform_(*share, generator=generator).clamp(max=1.0)
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


def crop_share(cfg: PretrainConfig, px: int) -> tuple[float, float]:
    """The range of training crops' sides as a share of a ``px`` scene's side."""
    share = cfg.side / px
    return share / cfg.scale_jitter, min(1.0, share * cfg.scale_jitter)


def pretrain(scenes: Scenes, cfg: PretrainConfig | None = None) -> dict[str, object]:
    """Fit encoder + heads on scenes loaded at :func:`scene_px`; what :func:`save_encoder` writes.

    The held-out scenes' scores are under ``"test"``, the early-stopping scenes' under
    ``"validation"``: each scene is scored among its own data set's classes, from the
    averaged probabilities of its :func:`chip_grid`. Training sees random chip-sized crops
    (:func:`random_views`). ``mean`` and ``std`` are per band, on the [0, 1] scale of the
    scenes' bytes / 255.
    """
    cfg = cfg or PretrainConfig()
    generator = seeded(cfg.seed)
    device = pick_device()
    if cfg.test_fraction <= 0 or cfg.val_fraction + cfg.test_fraction >= 1:
        raise ModelError(
            f"test fraction {cfg.test_fraction} and validation fraction {cfg.val_fraction} "
            "leave no scenes to train or to test on; use a test fraction in (0, 1)"
        )
    test = held_out(scenes.labels, cfg.test_fraction)
    val = np.zeros_like(test)
    if cfg.val_fraction > 0:
        val[~test] = stratified_split(
            scenes.labels[~test], cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed
        )
    train = ~(test | val)
    mean, std = band_statistics(scenes.images[train])
    std = np.maximum(std, 1e-3)
    source = normalised(scenes.images, mean, std)
    share = crop_share(cfg, source.shape[-1])
    # Batches are gathered from ``source`` by index: no second copy of the training scenes.
    rows, labels = torch.from_numpy(np.flatnonzero(train)), torch.from_numpy(scenes.labels)
    space = torch.from_numpy(scenes.space)
    net_cfg = NetworkConfig(
        image_encoder=cfg.image_encoder,
        image_width=cfg.image_width,
        features=cfg.features,
        chip_px=cfg.side,
    )
    model = _Classifier(ImageEncoder(net_cfg), cfg.features, len(scenes.classes)).to(device)
    # oneDNN's convolutions run about 1.3x faster on CPU with channels last.
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        picked = rows[idx]
        x = random_views(source[picked], cfg.side, share, generator)
        logits = model(x.to(device).contiguous(memory_format=torch.channels_last))
        y, where = labels[picked].to(device), space[picked]
        total = logits.new_zeros(())
        # Each data set's scenes are scored by its own head (its columns) alone.
        for k, s in enumerate(scenes.spaces):
            sel = (where == k).to(device)
            if sel.any():
                total = total + nn.functional.cross_entropy(
                    logits[sel, s.columns],
                    y[sel] - s.offset,
                    label_smoothing=cfg.label_smoothing,
                    reduction="sum",
                )
        return total / len(picked)

    def predicted(mask: np.ndarray) -> np.ndarray:
        return predict_scenes(model, source[mask], scenes.space[mask], scenes.spaces, cfg.side)

    def validate() -> float:
        return float((predicted(val) == scenes.labels[val]).mean())

    loop = TrainingLoop.of(model, generator, cfg)
    loop.run(len(rows), loss_of, validate if val.any() else None)
    names = scenes.qualified_classes()
    return {
        "encoder": {k: v.cpu().contiguous() for k, v in model.encoder.state_dict().items()},
        "head": {k: v.cpu().contiguous() for k, v in model.head.state_dict().items()},
        "network": net_cfg.model_dump(),
        "classes": scenes.classes,
        "spaces": [{"name": s.name, "classes": list(s.classes)} for s in scenes.spaces],
        "mean": mean.tolist(),
        "std": std.tolist(),
        "side": cfg.side,
        "scene_px": int(source.shape[-1]),
        "chip_m": cfg.chip_m,
        "scene_m": cfg.scene_m,
        "validation": scores(scenes.labels[val], predicted(val), names) if val.any() else None,
        "test": scores(scenes.labels[test], predicted(test), names),
        "test_scenes": [p for p, t in zip(scenes.paths, test, strict=True) if t],
        "validation_scenes": [p for p, v in zip(scenes.paths, val, strict=True) if v],
        "best_epoch": loop.best_epoch,
    }


@torch.no_grad()
def scene_probabilities(
    model: nn.Module, scenes: torch.Tensor, columns: slice | list[int], side: int
) -> np.ndarray:
    """Class probabilities among ``columns`` of normalised scenes, averaged over their chips."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    step = max(1, 4 * _PREDICT_BATCH // (_GRID * _GRID))  # chips of 14 scenes: 126 at a time
    for s in range(0, len(scenes), step):
        chips = chip_grid(scenes[s : s + step], side)
        n, k = chips.shape[:2]
        x = chips.reshape(n * k, *chips.shape[2:]).to(device)
        logits = model(x.contiguous(memory_format=torch.channels_last))[:, columns]
        out.append(logits.softmax(1).reshape(n, k, -1).mean(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def predict_scenes(
    model: nn.Module,
    scenes: torch.Tensor,
    space: np.ndarray,
    spaces: list[LabelSpace],
    side: int,
) -> np.ndarray:
    """Each scene's class (an index of all spaces' classes) among its own space's classes."""
    pred = np.zeros(len(scenes), np.int64)
    for k, s in enumerate(spaces):
        sel = np.flatnonzero(space == k)
        if sel.size:
            probs = scene_probabilities(model, scenes[torch.from_numpy(sel)], s.columns, side)
            pred[sel] = probs.argmax(1) + s.offset
    return pred


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


def label_spaces(state: dict[str, object]) -> list[LabelSpace]:
    """The label spaces of an encoder file (a file from before them has one, ``scenes``)."""
    raw = cast(
        list[dict[str, Any]],
        state.get("spaces") or [{"name": "scenes", "classes": state["classes"]}],
    )
    spaces, offset = [], 0
    for s in raw:
        spaces.append(LabelSpace(str(s["name"]), tuple(s["classes"]), offset))
        offset += len(s["classes"])
    return spaces


def space_for(classes: list[str], spaces: list[LabelSpace], where: str) -> LabelSpace:
    """The first label space holding every one of ``classes`` (folder names, matched exactly).

    Raises:
        InputFormatError: no space holds them all; the message names what is missing.
    """
    for s in spaces:
        if set(classes) <= set(s.classes):
            return s
    best = max(spaces, key=lambda s: len(set(classes) & set(s.classes)))
    missing = sorted(set(classes) - set(best.classes))
    raise InputFormatError(
        f"{where}: class folder(s) {', '.join(missing)} are not classes of the encoder's "
        f"{best.name!r} scenes ({', '.join(best.classes)}); rename them to its classes or "
        "leave them out"
    )


def evaluate_encoder(path: Path, folder: Path) -> dict[str, object]:
    """Score a pre-trained encoder (with its head) on a folder of labelled scenes.

    The folder's class sub-folders must be classes of one of the encoder's data sets (matched
    by name); each scene is predicted among the folder's classes only, so a folder of ten of
    AID's thirty classes is scored as a ten-class problem.

    Raises:
        InputFormatError: a class folder names no class of the encoder's data sets.
    """
    state = load_encoder(path)
    spaces = label_spaces(state)
    classes = scene_classes(folder)
    space = space_for(classes, spaces, str(folder))
    # Files from before scene_px scored whole scenes at ``side`` (their one chip).
    chip = cast(int, state["side"])
    px = cast(int, state.get("scene_px") or chip)
    scenes = load_scenes(folder, px, classes)
    net_cfg = NetworkConfig.model_validate(state["network"])
    width = sum(len(s.classes) for s in spaces)
    model = _Classifier(ImageEncoder(net_cfg), net_cfg.features, width)
    model.encoder.load_state_dict(state["encoder"])  # type: ignore[arg-type]
    model.head.load_state_dict(state["head"])  # type: ignore[arg-type]
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
    x = normalised(scenes.images, np.array(state["mean"]), np.array(state["std"]))
    columns = [space.offset + space.classes.index(c) for c in classes]
    probs = scene_probabilities(model, x, columns, chip)
    return scores(scenes.labels, probs.argmax(1), classes)


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
