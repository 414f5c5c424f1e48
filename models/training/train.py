"""Train a :class:`~.network.FusionNet` on labelled cells (CPU or CUDA).

Splits are spatial blocks of cells (:data:`~urbanfusion.models.dataset.BLOCK_CELLS` a side),
chosen with a fixed seed, so that validation cells are not neighbours of training cells. The
loss is deep supervision: fused cross-entropy plus ``aux_weight`` times each branch head's.
Modalities are dropped at random so the model copes with a missing input. The epochs are
:class:`~.loop.TrainingLoop`'s (early stopping keeps the weights of the best validation score:
by default the mean of the fused accuracy and each branch's with the other input masked); a
checkpoint after every epoch lets an interrupted run resume.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.models.dataset import BLOCK_CELLS, CellData
from urbanfusion.models.metrics import scores
from urbanfusion.models.training.align import MomentumAlign, alignment_loss
from urbanfusion.models.training.checkpoint import (
    check_resumable,
    contract_of,
    data_fingerprint,
    init_from,
    load_checkpoint,
    save_checkpoint,
)
from urbanfusion.models.training.loop import TrainingLoop, augment_chips, pick_device, seeded
from urbanfusion.models.training.network import FusionNet, NetworkConfig
from urbanfusion.models.training.pretrain import load_into
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.preprocess.chips import has_image, image_inputs


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
    # A training checkpoint (``train`` writes OUT.ckpt) whose best weights start the network:
    # fine-tuning a model of other cities on a new one (at FINE_TUNE_LR unless told otherwise).
    init: str | None = None
    focal_gamma: float = 2.0
    consistency: float = 0.0
    # Deep distillation: each branch head also learns the fused head's predictions softened by
    # `distill_temperature`, on cells with both inputs (loss = main + aux_weight * supervision
    # + distill * distillation).
    distill: float = 0.0
    distill_temperature: float = 2.0
    # Align before fuse: an image-activity contrastive loss (InfoNCE both ways, ALBEF's ITC) on
    # the two branch features before fusion, projected to `network.align_dim` (64 if unset).
    align: float = 0.0
    align_temperature: float = 0.07
    # ALBEF's momentum encoders for the alignment (0 = none): moving averages of the encoders
    # and projections at this momentum give the keys, a queue of `align_queue` earlier keys
    # adds negatives, and targets are softened by the copies' similarities at `align_alpha`.
    align_momentum: float = 0.0
    align_queue: int = 1024
    align_alpha: float = 0.4
    # Channel exchanging (network.exchange): the L1 weight on the BatchNorm scales that decide it.
    exchange_l1: float = 1e-3
    # What early stopping keeps: "heads", the epoch best on the mean of the fused accuracy and
    # each branch's accuracy with the other input masked (a cell missing an input is classified
    # by its branch head, so that head must be at its best too); "fused", the fused accuracy.
    select: Literal["heads", "fused"] = "heads"
    val_fraction: float = 0.2
    device: str = "auto"
    network: NetworkConfig = field(default_factory=NetworkConfig)


# Fine-tuning from a trained model (``init``) takes a tenth of training's learning rate, the
# usual choice: at the full rate a few labelled blocks overwrite what other cities taught it.
FINE_TUNE_LR = 2e-4


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


def distillation_loss(
    fused: torch.Tensor,
    branches: tuple[torch.Tensor, torch.Tensor],
    hi: torch.Tensor,
    ha: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """KL from the fused head's softened predictions (a fixed teacher) to each branch head's.

    On the cells with both inputs, where the fused head sees more than either branch; scaled by
    the temperature squared, as in Hinton et al. 2015, so its gradients do not shrink with it.
    """
    both = (hi[:, 0] > 0) & (ha[:, 0] > 0)
    if not both.any():
        return fused.sum() * 0
    teacher = nn.functional.log_softmax(fused[both].detach() / temperature, dim=1)
    total = fused.new_zeros(())
    for logits in branches:
        student = nn.functional.log_softmax(logits[both] / temperature, dim=1)
        total = total + nn.functional.kl_div(
            student, teacher, log_target=True, reduction="batchmean"
        )
    return total * temperature**2


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


def _head_accuracies(
    model: FusionNet, tensors: list[torch.Tensor], fused_pred: np.ndarray, device: torch.device
) -> dict[str, float]:
    """Validation accuracy of the fused output and, for a fused model, of each branch alone.

    ``val_image_only``: the cells with imagery, their signalling masked; ``val_activity_only``:
    the cells with signalling, their imagery masked. Either is left out when no cell has it.
    """
    labels = tensors[4].numpy()
    out = {"val_fused": float((fused_pred == labels).mean()) if len(labels) else 0.0}
    if not (model.cfg.use_image and model.cfg.use_activity):
        return out
    image, activity, hi, ha = tensors[:4]
    for name, keep, masked in (
        ("val_image_only", hi[:, 0] > 0, [image, activity, hi, torch.zeros_like(ha)]),
        ("val_activity_only", ha[:, 0] > 0, [image, activity, torch.zeros_like(hi), ha]),
    ):
        if keep.any():
            pred = predict_proba(model, [t[keep] for t in masked], device).argmax(axis=1)
            out[name] = float((pred == labels[keep.numpy()]).mean())
    return out


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
        checkpoint: written after every epoch (see :mod:`urbanfusion.models.training.checkpoint`).
        resume: continue from ``checkpoint`` when it exists; the result is the same as an
            uninterrupted run's.
        trained_on: what the data is, for the model contract.
        on_epoch: called with each epoch's history entry, after the checkpoint is written.

    Raises:
        ModelError: resuming from a checkpoint of another config or other data.
        InputFormatError: the labelled cells lie in a single block.
    """
    generator = seeded(cfg.seed)
    device = pick_device(cfg.device)
    if len(np.unique(data.blocks)) < 2:
        # Validation takes whole blocks: with one, nothing would be left to train on.
        raise InputFormatError(
            f"the {len(data)} labelled cells all lie in one block of {BLOCK_CELLS} x "
            f"{BLOCK_CELLS} cells; training keeps whole blocks apart to validate on, so it needs "
            "labelled cells in two or more: label another zone, away from this one"
        )
    val_mask = block_split(data.blocks, cfg.val_fraction, cfg.seed)
    train_data, val_data = (
        data.subset(np.flatnonzero(~val_mask)),
        data.subset(np.flatnonzero(val_mask)),
    )
    net_cfg = NetworkConfig(
        **{
            **cfg.network.__dict__,
            "bands": data.chips.shape[1],
            "chip_px": data.chip_px,
            "classes": len(class_names),
            "align_dim": cfg.network.align_dim or (64 if cfg.align else 0),
        }
    )
    model = FusionNet(net_cfg)
    if cfg.image_weights:
        load_into(model.image_encoder, net_cfg, Path(cfg.image_weights))
    if cfg.init:
        mean, std = (np.asarray(v) for v in init_from(model, Path(cfg.init)))
    else:
        mean, std = band_statistics(train_data.chips)
    train_t = _tensors(train_data, mean, std)
    val_t = _tensors(val_data, mean, std)
    model = model.to(device)
    momentum = (
        MomentumAlign(model, cfg.align_momentum, cfg.align_queue, cfg.align_alpha).to(device)
        if cfg.align and cfg.align_momentum
        else None
    )
    counts = np.bincount(train_data.labels, minlength=len(class_names)).astype(np.float64)
    weights = torch.tensor(class_weights(counts, cfg.loss), dtype=torch.float32, device=device)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(logits, y, weight=weights, reduction="none")
        if cfg.loss == "focal":
            # Focal loss (Lin et al. 2017): easy cells, predicted with confidence p, weigh (1-p)^g.
            p = torch.exp(-nn.functional.cross_entropy(logits, y, reduction="none"))
            ce = (1 - p) ** cfg.focal_gamma * ce
        return ce.sum() / weights[y].sum()

    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        image, act, hi, ha, y = (t[idx] for t in train_t)
        image = augment_chips(image, generator)
        hi, ha = _drop_modalities(hi, ha, cfg.modality_dropout, generator)
        image, act, hi, ha, y = (t.to(device) for t in (image, act, hi, ha, y))
        fused, img_logits, act_logits, vi, va = model.outputs(image, act, hi, ha)
        loss = loss_fn(fused, y)
        if cfg.consistency:
            loss = loss + cfg.consistency * consistency_loss(img_logits, act_logits, hi, ha)
        if cfg.distill:
            loss = loss + cfg.distill * distillation_loss(
                fused, (img_logits, act_logits), hi, ha, cfg.distill_temperature
            )
        if cfg.align and model.align is not None:
            loss = loss + cfg.align * (
                momentum.loss(model, (image, act), vi, va, hi, ha, cfg.align_temperature)
                if momentum is not None
                else alignment_loss(model.align, vi, va, hi, ha, cfg.align_temperature)
            )
        if model.exchange is not None:
            loss = loss + cfg.exchange_l1 * model.exchange.sparsity()
        if cfg.aux_weight:
            # Deep supervision, each branch on the cells that have its input.
            for logits, flag in ((img_logits, hi), (act_logits, ha)):
                sel = flag[:, 0] > 0
                if sel.any():
                    loss = loss + cfg.aux_weight * loss_fn(logits[sel], y[sel])
        return loss

    loop = TrainingLoop.of(model, generator, cfg)
    config_dict, fingerprint = asdict(cfg), data_fingerprint(data)
    best_validation: dict[str, object] = {}
    if resume and checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        check_resumable(state, config_dict, fingerprint, model)
        loop.restore(state, device)
        if momentum is not None:
            momentum.load_state_dict(state["align_momentum"])  # type: ignore[arg-type]
        best_validation = dict(state["best_validation"])  # type: ignore[call-overload]

    def state_now() -> dict[str, object]:
        return {
            **loop.state(device),
            "best_validation": best_validation,
            "train_config": config_dict,
            "data": fingerprint,
            "network": asdict(net_cfg),
            "image_mean": mean.tolist(),
            "image_std": std.tolist(),
            "bands": list(data.bands),
            "chip_px": data.chip_px,
            "cell_size_m": data.cell_size_m,
            "trained_on": trained_on,
            "align_momentum": None if momentum is None else momentum.state_dict(),
        }

    last_pred = np.zeros(0, dtype=np.int64)
    last_scores: dict[str, float] = {}

    def validate() -> float:
        nonlocal last_pred, last_scores
        last_pred = predict_proba(model, val_t, device).argmax(axis=1)
        last_scores = _head_accuracies(model, val_t, last_pred, device)
        if cfg.select == "fused" or len(last_scores) == 1:
            return last_scores["val_fused"]
        return float(np.mean(list(last_scores.values())))

    with _progress(cfg.epochs, not quiet and Console(stderr=True).is_terminal) as (bar, task):
        if bar is not None:
            bar.update(task, completed=loop.epoch)

        def after_epoch(improved: bool) -> None:
            nonlocal best_validation
            if improved:
                best_validation = scores(val_data.labels, last_pred, class_names)
            loop.history[-1].update(last_scores)
            if checkpoint is not None:
                save_checkpoint(checkpoint, state_now())
            entry = loop.history[-1]
            if bar is not None:
                bar.update(
                    task,
                    advance=1,
                    description=f"epoch {loop.epoch} val acc {entry['val_fused']:.3f}",
                )
            if on_epoch is not None:
                on_epoch(entry)

        loop.run(len(train_t[0]), loss_of, validate, after_epoch)
    model.eval()
    return TrainResult(
        model.cpu(),
        mean.tolist(),
        std.tolist(),
        loop.history,
        best_validation,
        loop.best_epoch,
        state_now(),
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
    """Train on ``data``, export and calibrate to ``out``; returns the result and the parity."""
    # onnx is only needed here
    from urbanfusion.models.training.export import calibrate_onnx, export_onnx

    result = train(
        data,
        list(CLASS_NAMES),
        cfg,
        quiet=quiet,
        checkpoint=checkpoint,
        resume=resume,
        trained_on=trained_on,
    )
    diff = export_onnx(result.model, contract_of(result.state), out)
    # Temperature and in-domain radius from the same validation blocks as early stopping.
    calibrate_onnx(out, data, block_split(data.blocks, cfg.val_fraction, cfg.seed), out)
    return result, diff
