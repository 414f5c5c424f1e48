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
from dataclasses import dataclass
from pathlib import Path

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
    Checkpoint,
    check_resumable,
    contract_of,
    data_fingerprint,
    init_from,
    load_checkpoint,
    save_checkpoint,
)
from urbanfusion.models.training.configs import NetworkConfig, TrainConfig
from urbanfusion.models.training.loop import TrainingLoop, augment_chips, pick_device, seeded
from urbanfusion.models.training.losses import (
    class_weights,
    consistency_loss,
    distillation_loss,
    teacher_loss,
)
from urbanfusion.models.training.network import FusionNet
from urbanfusion.models.training.pretrain import load_into
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.preprocess.chips import has_image, image_inputs


@dataclass
class TrainResult:
    """A trained network with what inference needs to use it."""

    model: FusionNet
    image_mean: list[float]
    image_std: list[float]
    history: list[dict[str, float]]
    validation: dict[str, object]
    best_epoch: int
    checkpoint: Checkpoint  # what a checkpoint holds after the last epoch


def block_split(blocks: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation rows: whole spatial blocks, about ``fraction`` of them."""
    unique = np.unique(blocks)
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(unique)[: max(1, round(len(unique) * fraction))]
    return np.isin(blocks, chosen)


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


def teacher_logits(path: Path, data: CellData) -> torch.Tensor:
    """A trained model's log-probabilities for ``data``'s cells, from its own inputs (onnxruntime).

    Its calibrated probabilities, which are what the model says of a cell; a softmax of them
    divided by a temperature is the teacher's prediction softened, as distillation takes it.

    Raises:
        InputNotFoundError: the teacher model does not exist.
        ModelError: it is not an urbanfusion model, or reads other chips than ``data``'s.
    """
    from urbanfusion.models.inference import Predictor

    teacher = Predictor(path)
    teacher.check_chips(
        data.chip_px,
        data.chips.shape[1],
        "distil from a teacher trained on chips like these (its `grid.chip_px` and bands)",
    )
    prob = teacher.predict_cells(data.chips, data.activity, data.has_activity).prob
    return torch.from_numpy(np.log(np.clip(prob, 1e-12, 1.0)).astype(np.float32))


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
def _progress(total: int, done: int, show: bool) -> Iterator[Callable[[int, float], None]]:
    """A progress bar's update (epoch, validation accuracy); does nothing when not shown."""
    if not show:
        yield lambda epoch, accuracy: None
        return
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("training", total=total, completed=done)

        def update(epoch: int, accuracy: float) -> None:
            bar.update(task, advance=1, description=f"epoch {epoch} val acc {accuracy:.3f}")

        yield update


class _Run:
    """One training run: its split, tensors, network, loss, loop, and the best epoch's scores.

    The loop (:class:`~.loop.TrainingLoop`) calls :meth:`loss_of` per batch, :meth:`validate`
    and :meth:`after_epoch` per epoch; :meth:`checkpoint` is what a checkpoint holds.
    """

    def __init__(
        self, data: CellData, class_names: list[str], cfg: TrainConfig, trained_on: str
    ) -> None:
        if len(np.unique(data.blocks)) < 2:
            # Validation takes whole blocks: with one, nothing would be left to train on.
            raise InputFormatError(
                f"the {len(data)} labelled cells all lie in one block of {BLOCK_CELLS} x "
                f"{BLOCK_CELLS} cells; training keeps whole blocks apart to validate on, so it "
                "needs labelled cells in two or more: label another zone, away from this one"
            )
        self.cfg, self.class_names, self.trained_on = cfg, class_names, trained_on
        self.data, self.fingerprint = data, data_fingerprint(data)
        self.generator = seeded(cfg.seed)
        self.device = pick_device(cfg.device)
        val_mask = block_split(data.blocks, cfg.val_fraction, cfg.seed)
        self.train_data = data.subset(np.flatnonzero(~val_mask))
        self.val_data = data.subset(np.flatnonzero(val_mask))
        self.network = NetworkConfig.model_validate(
            {
                **cfg.network.model_dump(),
                "bands": data.chips.shape[1],
                "chip_px": data.chip_px,
                "classes": len(class_names),
                "align_dim": cfg.network.align_dim or (64 if cfg.align else 0),
            }
        )
        model = FusionNet(self.network)
        if cfg.image_weights:
            load_into(model.image_encoder, self.network, Path(cfg.image_weights))
        if cfg.init:
            self.mean, self.std = (np.asarray(v) for v in init_from(model, Path(cfg.init)))
        else:
            self.mean, self.std = band_statistics(self.train_data.chips)
        self.train_t = _tensors(self.train_data, self.mean, self.std)
        self.val_t = _tensors(self.val_data, self.mean, self.std)
        self.teacher_t = teacher_logits(Path(cfg.teacher), self.train_data) if cfg.teacher else None
        self.model = model.to(self.device)
        self.momentum = (
            MomentumAlign(model, cfg.align_momentum, cfg.align_queue, cfg.align_alpha).to(
                self.device
            )
            if cfg.align and cfg.align_momentum
            else None
        )
        counts = np.bincount(self.train_data.labels, minlength=len(class_names))
        self.weights = torch.tensor(
            class_weights(counts.astype(np.float64), cfg.loss),
            dtype=torch.float32,
            device=self.device,
        )
        self.loop = TrainingLoop.of(self.model, self.generator, cfg)
        self.best_validation: dict[str, object] = {}
        self.last_pred = np.zeros(0, dtype=np.int64)
        self.last_scores: dict[str, float] = {}

    def resume(self, path: Path) -> None:
        """Continue from checkpoint ``path`` (refused if it is of another run)."""
        saved = load_checkpoint(path)
        check_resumable(saved, self.cfg.model_dump(), self.fingerprint, self.model)
        self.loop.restore(saved.loop, self.device)
        if self.momentum is not None and saved.align_momentum is not None:
            self.momentum.load_state_dict(saved.align_momentum)
        self.best_validation = saved.best_validation

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ce = nn.functional.cross_entropy(logits, y, weight=self.weights, reduction="none")
        if self.cfg.loss == "focal":
            # Focal loss (Lin et al. 2017): easy cells, predicted with confidence p, weigh (1-p)^g.
            p = torch.exp(-nn.functional.cross_entropy(logits, y, reduction="none"))
            ce = (1 - p) ** self.cfg.focal_gamma * ce
        return ce.sum() / self.weights[y].sum()

    def loss_of(self, idx: torch.Tensor) -> torch.Tensor:
        """The loss of the training rows ``idx`` (augmented, inputs dropped at random)."""
        cfg, model = self.cfg, self.model
        image, act, hi, ha, y = (t[idx] for t in self.train_t)
        image = augment_chips(image, self.generator)
        hi, ha = _drop_modalities(hi, ha, cfg.modality_dropout, self.generator)
        image, act, hi, ha, y = (t.to(self.device) for t in (image, act, hi, ha, y))
        fused, img_logits, act_logits, vi, va = model.outputs(image, act, hi, ha)
        loss = self._loss(fused, y)
        if self.teacher_t is not None:
            taught = teacher_loss(
                fused, self.teacher_t[idx].to(self.device), cfg.teacher_temperature
            )
            loss = (1 - cfg.teacher_weight) * loss + cfg.teacher_weight * taught
        if cfg.consistency:
            loss = loss + cfg.consistency * consistency_loss(img_logits, act_logits, hi, ha)
        if cfg.distill:
            loss = loss + cfg.distill * distillation_loss(
                fused, (img_logits, act_logits), hi, ha, cfg.distill_temperature
            )
        if cfg.align and model.align is not None:
            loss = loss + cfg.align * (
                self.momentum.loss(model, (image, act), vi, va, hi, ha, cfg.align_temperature)
                if self.momentum is not None
                else alignment_loss(model.align, vi, va, hi, ha, cfg.align_temperature)
            )
        if model.exchange is not None:
            loss = loss + cfg.exchange_l1 * model.exchange.sparsity()
        if cfg.aux_weight:
            # Deep supervision, each branch on the cells that have its input.
            for logits, flag in ((img_logits, hi), (act_logits, ha)):
                sel = flag[:, 0] > 0
                if sel.any():
                    loss = loss + cfg.aux_weight * self._loss(logits[sel], y[sel])
        return loss

    def validate(self) -> float:
        """The epoch's score: the fused accuracy, or its mean with each branch's alone."""
        self.last_pred = predict_proba(self.model, self.val_t, self.device).argmax(axis=1)
        self.last_scores = _head_accuracies(self.model, self.val_t, self.last_pred, self.device)
        if self.cfg.select == "fused" or len(self.last_scores) == 1:
            return self.last_scores["val_fused"]
        return float(np.mean(list(self.last_scores.values())))

    def after_epoch(self, improved: bool) -> dict[str, float]:
        """Keep the best epoch's scores and note the epoch's in the history; returns its entry."""
        if improved:
            self.best_validation = scores(self.val_data.labels, self.last_pred, self.class_names)
        self.loop.history[-1].update(self.last_scores)
        return self.loop.history[-1]

    def checkpoint(self) -> Checkpoint:
        """What a checkpoint holds now."""
        return Checkpoint(
            loop=self.loop.state(self.device),
            best_validation=self.best_validation,
            train_config=self.cfg.model_dump(),
            data=self.fingerprint,
            network=self.network.model_dump(),
            image_mean=self.mean.tolist(),
            image_std=self.std.tolist(),
            bands=list(self.data.bands),
            chip_px=self.data.chip_px,
            cell_size_m=self.data.cell_size_m,
            trained_on=self.trained_on,
            align_momentum=None if self.momentum is None else self.momentum.state_dict(),
        )


def train(
    data: CellData,
    class_names: list[str],
    cfg: TrainConfig | None = None,
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
        cfg: hyper-parameters and the network (the defaults when None).
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
    run = _Run(data, class_names, cfg or TrainConfig(), trained_on)
    if resume and checkpoint is not None and checkpoint.exists():
        run.resume(checkpoint)
    show = not quiet and Console(stderr=True).is_terminal
    with _progress(run.cfg.epochs, run.loop.epoch, show) as progress:

        def after_epoch(improved: bool) -> None:
            entry = run.after_epoch(improved)
            if checkpoint is not None:
                save_checkpoint(checkpoint, run.checkpoint())
            progress(run.loop.epoch, entry["val_fused"])
            if on_epoch is not None:
                on_epoch(entry)

        run.loop.run(len(run.train_t[0]), run.loss_of, run.validate, after_epoch)
    run.model.eval()
    return TrainResult(
        run.model.cpu(),
        run.mean.tolist(),
        run.std.tolist(),
        run.loop.history,
        run.best_validation,
        run.loop.best_epoch,
        run.checkpoint(),
    )


def train_and_export(
    data: CellData,
    out: Path,
    cfg: TrainConfig | None = None,
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
    diff = export_onnx(result.model, contract_of(result.checkpoint), out)
    # Temperature and in-domain radius from the same validation blocks as early stopping.
    cfg = cfg or TrainConfig()
    calibrate_onnx(out, data, block_split(data.blocks, cfg.val_fraction, cfg.seed), out)
    return result, diff
