"""Train a :class:`models.network.FusionNet` on labelled cells (torch; CPU or CUDA).

Splits are spatial blocks of cells (:data:`models.dataset.BLOCK_CELLS` a side), chosen with a
fixed seed, so that validation cells are not neighbours of training cells. The loss is deep
supervision: fused cross-entropy plus ``aux_weight`` times each branch head's. Modalities are
dropped at random so the model copes with a missing input. Early stopping keeps the weights of
the best validation accuracy. A checkpoint after every epoch lets an interrupted run resume.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from models.checkpoint import (
    check_resumable,
    contract_of,
    data_fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from models.classes import CLASS_NAMES
from models.dataset import CellData
from models.metrics import scores
from models.network import FusionNet, NetworkConfig
from preprocess.chips import has_image, image_inputs


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a training run."""

    epochs: int = 60
    batch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 12
    seed: int = 0
    aux_weight: float = 0.3
    modality_dropout: float = 0.2
    loss: Literal["ce", "balanced", "focal"] = "ce"
    image_weights: str | None = None  # a pre-trained encoder file (pretrain-image)
    focal_gamma: float = 2.0
    consistency: float = 0.0
    val_fraction: float = 0.2
    device: str = "auto"
    network: NetworkConfig = field(default_factory=NetworkConfig)


@dataclass
class TrainResult:
    """A trained network with what inference needs to use it."""

    model: FusionNet
    image_mean: list[float]
    image_std: list[float]
    history: list[dict[str, float]]
    validation: dict[str, object]
    best_epoch: int
    state: dict[str, object]  # what a checkpoint holds after the last epoch


def pick_device(name: str = "auto") -> torch.device:
    """CUDA when asked or available (``auto``), else CPU; cuDNN set to be deterministic."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    )
    if device.type == "cuda":
        # Same seed, same weights on a GPU too: no autotuned (run-dependent) convolution choice.
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return device


def block_split(blocks: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: whole spatial blocks, about ``fraction`` of them."""
    unique = np.unique(blocks)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(unique)[: max(1, round(len(unique) * fraction))]
    return np.isin(blocks, chosen)


def class_weights(counts: np.ndarray, loss: str, beta: float = 0.999) -> np.ndarray:
    """Per-class loss weights with mean 1 over the classes present.

    ``balanced``: the effective number of samples (Cui et al. 2019), ``(1 - beta) / (1 - beta^n)``;
    otherwise inverse square-root frequency, so rare classes count more without swamping the rest.
    """
    present = counts > 0
    n = np.maximum(counts, 1)
    w = (1 - beta) / (1 - beta**n) if loss == "balanced" else 1 / np.sqrt(n)
    w = np.where(present, w, 0.0)
    return w / w[present].mean()


def consistency_loss(
    img_logits: torch.Tensor, act_logits: torch.Tensor, hi: torch.Tensor, ha: torch.Tensor
) -> torch.Tensor:
    """Symmetric KL divergence between the branch heads, on cells that have both inputs."""
    both = (hi[:, 0] > 0) & (ha[:, 0] > 0)
    if not both.any():
        return img_logits.sum() * 0
    li = nn.functional.log_softmax(img_logits[both], dim=1)
    la = nn.functional.log_softmax(act_logits[both], dim=1)
    kl = nn.functional.kl_div
    return 0.5 * (
        kl(li, la, log_target=True, reduction="batchmean")
        + kl(la, li, log_target=True, reduction="batchmean")
    )


def band_statistics(chips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over the valid pixels of chips with imagery."""
    with_image = chips[has_image(chips)]
    flat = np.moveaxis(with_image, 1, 0).reshape(chips.shape[1], -1)
    mean = np.nanmean(flat, axis=1)
    std = np.maximum(np.nanstd(flat, axis=1), 1e-3)
    return mean.astype(np.float32), std.astype(np.float32)


def _tensors(data: CellData, mean: np.ndarray, std: np.ndarray) -> list[torch.Tensor]:
    image, flag = image_inputs(data.chips, mean, std)
    return [
        torch.from_numpy(image),
        torch.from_numpy(data.activity),
        torch.from_numpy(flag).unsqueeze(1),
        torch.from_numpy(data.has_activity.astype(np.float32)).unsqueeze(1),
        torch.from_numpy(data.labels),
    ]


def augment_chips(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random right-angle rotations and flips: imagery has no up or left."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    image = torch.rot90(image, k, dims=(2, 3))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        image = torch.flip(image, dims=(3,))
    return image


def _drop_modalities(
    has_image: torch.Tensor, has_activity: torch.Tensor, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide one input of some cells (never both), so each branch must stand alone."""
    u = torch.rand(len(has_image), 1, generator=generator, device="cpu").to(has_image.device)
    both = (has_image > 0) & (has_activity > 0)
    drop_image = both & (u < p / 2)
    drop_activity = both & (u >= p / 2) & (u < p)
    return has_image * ~drop_image, has_activity * ~drop_activity


@torch.no_grad()
def predict_proba(
    model: FusionNet, tensors: list[torch.Tensor], device: torch.device
) -> np.ndarray:
    """Fused probabilities for prepared tensors (image, activity, has_image, has_activity)."""
    model.eval()
    out = []
    for s in range(0, len(tensors[0]), 1024):
        batch = [t[s : s + 1024].to(device) for t in tensors[:4]]
        out.append(model(*batch).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.classes), np.float32)


@contextlib.contextmanager
def _progress(total: int, show: bool) -> Iterator[tuple[Progress | None, int | None]]:
    if not show:
        yield None, None
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield bar, bar.add_task("training", total=total)


def train(
    data: CellData,
    class_names: list[str],
    cfg: TrainConfig = TrainConfig(),
    quiet: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
    trained_on: str = "",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fit a network on ``data`` with a blocked validation split; deterministic for a seed.

    Args:
        data: labelled cells; a blocked ``cfg.val_fraction`` of them validates.
        class_names: the classes, in label order.
        cfg: hyper-parameters and the network.
        quiet: no progress bar (there is none either when stderr is not a terminal).
        checkpoint: written after every epoch (see :mod:`models.checkpoint`).
        resume: continue from ``checkpoint`` when it exists; the result is the same as an
            uninterrupted run's.
        trained_on: what the data is, for the model contract.
        on_epoch: called with each epoch's history entry, after the checkpoint is written.

    Raises:
        ModelError: resuming from a checkpoint of another config or other data.
    """
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    device = pick_device(cfg.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    val_mask = block_split(data.blocks, cfg.val_fraction, cfg.seed)
    train_data, val_data = (
        data.subset(np.flatnonzero(~val_mask)),
        data.subset(np.flatnonzero(val_mask)),
    )
    mean, std = band_statistics(train_data.chips)
    train_t = _tensors(train_data, mean, std)
    val_t = _tensors(val_data, mean, std)

    net_cfg = NetworkConfig(
        **{
            **cfg.network.__dict__,
            "bands": data.chips.shape[1],
            "chip_px": data.chip_px,
            "classes": len(class_names),
        }
    )
    model = FusionNet(net_cfg)
    if cfg.image_weights:
        from models.pretrain import load_into

        load_into(model.image_encoder, net_cfg, Path(cfg.image_weights))
    model = model.to(device)
    counts = np.bincount(train_data.labels, minlength=len(class_names)).astype(np.float64)
    weights = torch.tensor(class_weights(counts, cfg.loss), dtype=torch.float32, device=device)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(logits, y, weight=weights, reduction="none")
        if cfg.loss == "focal":
            # Focal loss (Lin et al. 2017): easy cells, predicted with confidence p, weigh (1-p)^g.
            p = torch.exp(-nn.functional.cross_entropy(logits, y, reduction="none"))
            ce = (1 - p) ** cfg.focal_gamma * ce
        return ce.sum() / weights[y].sum()

    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=cfg.epochs)

    config_dict, fingerprint = asdict(cfg), data_fingerprint(data)
    best, best_acc, best_epoch, history = copy.deepcopy(model.state_dict()), -1.0, 0, []
    best_validation: dict[str, object] = {}
    first_epoch = 0
    if resume and checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        check_resumable(state, config_dict, fingerprint)
        model.load_state_dict(state["model"])  # type: ignore[arg-type]
        optim.load_state_dict(state["optimizer"])  # type: ignore[arg-type]
        sched.load_state_dict(state["scheduler"])  # type: ignore[arg-type]
        generator.set_state(state["generator"])  # type: ignore[arg-type]
        torch.set_rng_state(state["torch_rng"])  # type: ignore[arg-type]
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"], device)  # type: ignore[arg-type]
        best = state["best"]  # type: ignore[assignment]
        best_acc, best_epoch = float(state["best_acc"]), int(state["best_epoch"])  # type: ignore[arg-type]
        best_validation = dict(state["best_validation"])  # type: ignore[call-overload]
        history = list(state["history"])  # type: ignore[call-overload]
        first_epoch = int(state["epoch"])  # type: ignore[call-overload]

    def state_now(epoch: int) -> dict[str, object]:
        return {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optim.state_dict(),
            "scheduler": sched.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # Dropout on a GPU draws from the device's generator.
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "best": best,
            "best_acc": best_acc,
            "best_epoch": best_epoch,
            "best_validation": best_validation,
            "history": history,
            "train_config": config_dict,
            "data": fingerprint,
            "network": asdict(net_cfg),
            "image_mean": mean.tolist(),
            "image_std": std.tolist(),
            "bands": list(data.bands),
            "chip_px": data.chip_px,
            "cell_size_m": data.cell_size_m,
            "trained_on": trained_on,
        }

    n = len(train_t[0])
    finished = first_epoch >= cfg.epochs or (first_epoch - best_epoch >= cfg.patience > 0)
    with _progress(cfg.epochs, not quiet and Console(stderr=True).is_terminal) as (bar, task):
        if bar is not None:
            bar.update(task, completed=first_epoch)
        for epoch in range(first_epoch, first_epoch if finished else cfg.epochs):
            model.train()
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for s in range(0, n, cfg.batch):
                idx = order[s : s + cfg.batch]
                if len(idx) < 2:
                    continue  # batch norm needs two samples
                image, act, hi, ha, y = (t[idx] for t in train_t)
                image = augment_chips(image, generator)
                hi, ha = _drop_modalities(hi, ha, cfg.modality_dropout, generator)
                image, act, hi, ha, y = (t.to(device) for t in (image, act, hi, ha, y))
                fused, img_logits, act_logits = model.heads(image, act, hi, ha)
                loss = loss_fn(fused, y)
                if cfg.consistency:
                    loss = loss + cfg.consistency * consistency_loss(img_logits, act_logits, hi, ha)
                if cfg.aux_weight:
                    # Deep supervision, each branch on the cells that have its input.
                    for logits, flag in ((img_logits, hi), (act_logits, ha)):
                        sel = flag[:, 0] > 0
                        if sel.any():
                            loss = loss + cfg.aux_weight * loss_fn(logits[sel], y[sel])
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += loss.item() * len(idx)
            sched.step()
            pred = predict_proba(model, val_t, device).argmax(axis=1)
            acc = float((pred == val_data.labels).mean()) if len(pred) else 0.0
            history.append({"epoch": epoch + 1, "loss": total / n, "val_accuracy": acc})
            if acc > best_acc:
                best, best_acc, best_epoch = copy.deepcopy(model.state_dict()), acc, epoch + 1
                best_validation = scores(val_data.labels, pred, class_names)
            if checkpoint is not None:
                save_checkpoint(checkpoint, state_now(epoch + 1))
            if bar is not None:
                bar.update(task, advance=1, description=f"epoch {epoch + 1} val acc {acc:.3f}")
            if on_epoch is not None:
                on_epoch(history[-1])
            if epoch + 1 - best_epoch >= cfg.patience:
                break
    model.load_state_dict(best)
    model.eval()
    final = state_now(len(history))
    return TrainResult(
        model.cpu(),
        mean.tolist(),
        std.tolist(),
        history,
        best_validation,
        best_epoch,
        final,
    )


def train_and_export(
    data: CellData,
    out: Path,
    cfg: TrainConfig = TrainConfig(),
    trained_on: str = "",
    quiet: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> tuple[TrainResult, float]:
    """Train on ``data``, export to ``out`` with its contract; returns the result and the parity."""
    from models.export import export_onnx  # onnx is only needed here

    result = train(
        data,
        list(CLASS_NAMES),
        cfg,
        quiet=quiet,
        checkpoint=checkpoint,
        resume=resume,
        trained_on=trained_on,
    )
    return result, export_onnx(result.model, contract_of(result.state), out)
