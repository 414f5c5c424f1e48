"""The one training loop: AdamW, cosine schedule, early stopping, exact resume.

Seeded, shuffled mini-batches; early stopping on a validation score keeps the best weights.

Fusion training (:mod:`.train`) and image-encoder pre-training (:mod:`.pretrain`) differ only in
how a batch becomes a loss and how an epoch is scored; both hand those two functions to
:class:`TrainingLoop`. Every random draw comes from one ``torch.Generator`` (plus the global
torch generator that initialises weights and dropout), so a seed fixes the result and a
checkpoint of :meth:`TrainingLoop.state` resumes to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import copy
import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed activation buffers for the next step instead of unmapping them.

    By default glibc serves blocks over its mmap threshold with fresh mappings and returns
    freed memory to the kernel, so every training step faults its activations in again: a
    third of pre-training's CPU time went to the kernel. The largest mmap threshold glibc takes
    (32 MB on 64-bit) and a high trim threshold keep them in the heap. The numbers computed do
    not change. Elsewhere than glibc (macOS, musl) this does nothing and returns False.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, 32 * 2**20),
            (_M_TRIM_THRESHOLD, 1 << 30),
            (_M_TOP_PAD, 64 * 2**20),
        )
    )


def seeded(seed: int) -> torch.Generator:
    """Seed torch's and numpy's global generators; the generator for shuffling and augmenting."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


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


def augment_chips(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random right-angle rotations and flips: imagery has no up or left."""
    k = int(torch.randint(0, 4, (1,), generator=generator))
    image = torch.rot90(image, k, dims=(2, 3))
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        image = torch.flip(image, dims=(3,))
    return image


class LoopSettings(Protocol):
    """The hyper-parameters a loop needs (``TrainConfig`` and ``PretrainConfig`` have them)."""

    @property
    def epochs(self) -> int: ...  # noqa: D102
    @property
    def batch(self) -> int: ...  # noqa: D102
    @property
    def lr(self) -> float: ...  # noqa: D102
    @property
    def weight_decay(self) -> float: ...  # noqa: D102
    @property
    def patience(self) -> int: ...  # noqa: D102


Weights = dict[str, torch.Tensor]


@dataclass
class LoopState:
    """What resuming a loop needs: weights, optimiser, schedule, every generator, the best."""

    epoch: int
    model: Weights
    optimizer: dict[str, object]
    scheduler: dict[str, object]
    generator: torch.Tensor
    torch_rng: torch.Tensor
    cuda_rng: torch.Tensor | None  # dropout on a GPU draws from the device's generator
    best: Weights
    best_acc: float
    best_epoch: int
    history: list[dict[str, float]]


class TrainingLoop:
    """Epochs of shuffled mini-batches over ``n`` training rows, with early stopping.

    Attributes:
        epoch: epochs finished.
        best_score: the best validation score so far (-1 before the first epoch).
        best_epoch: the epoch that reached it (0 before the first epoch).
        history: per epoch ``{"epoch", "loss", "val_accuracy"}``.
    """

    def __init__(
        self,
        model: nn.Module,
        generator: torch.Generator,
        *,
        epochs: int,
        batch: int,
        lr: float,
        weight_decay: float,
        patience: int,
    ) -> None:
        """AdamW and a cosine schedule over ``epochs`` for ``model``'s parameters."""
        self.model, self.generator = model, generator
        self.epochs, self.batch, self.patience = epochs, batch, patience
        self.optim = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.optim, T_max=epochs)
        self.best = copy.deepcopy(model.state_dict())
        self.best_score, self.best_epoch, self.epoch = -1.0, 0, 0
        self.history: list[dict[str, float]] = []

    @classmethod
    def of(
        cls, model: nn.Module, generator: torch.Generator, settings: LoopSettings
    ) -> TrainingLoop:
        """A loop with the epochs, batch, learning rate, weight decay and patience of a config."""
        return cls(
            model,
            generator,
            epochs=settings.epochs,
            batch=settings.batch,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            patience=settings.patience,
        )

    @property
    def finished(self) -> bool:
        """All epochs done, or stopped early (a resumed loop may already be)."""
        stopped = self.epoch - self.best_epoch >= self.patience > 0
        return self.epoch >= self.epochs or stopped

    def run(
        self,
        n: int,
        loss_of: Callable[[torch.Tensor], torch.Tensor],
        validate: Callable[[], float] | None,
        after_epoch: Callable[[bool], None] | None = None,
    ) -> None:
        """Train until the last epoch or early stopping, then load the best weights.

        Args:
            n: training rows; each epoch visits them in a new order.
            loss_of: the loss of the batch of those row indexes (a batch of one is skipped:
                batch norm needs two samples).
            validate: the epoch's validation score (higher is better); None keeps the last
                epoch's weights and never stops early (a schedule run to its end).
            after_epoch: called after each epoch with whether it was the best so far.
        """
        keep_freed_memory()
        for epoch in range(self.epoch, self.epoch if self.finished else self.epochs):
            self.model.train()
            order = torch.randperm(n, generator=self.generator)
            total = 0.0
            for s in range(0, n, self.batch):
                idx = order[s : s + self.batch]
                if len(idx) < 2:
                    continue
                loss = loss_of(idx)
                self.optim.zero_grad(set_to_none=True)
                torch.autograd.backward(loss)
                self.optim.step()
                total += loss.item() * len(idx)
            self.sched.step()
            score = float(epoch + 1) if validate is None else validate()
            self.epoch = epoch + 1
            self.history.append(
                {
                    "epoch": self.epoch,
                    "loss": total / n,
                    "val_accuracy": float("nan") if validate is None else score,
                }
            )
            improved = score > self.best_score
            if improved:
                self.best = copy.deepcopy(self.model.state_dict())
                self.best_score, self.best_epoch = score, self.epoch
            if after_epoch is not None:
                after_epoch(improved)
            if self.epoch - self.best_epoch >= self.patience:
                break
        self.model.load_state_dict(self.best)

    def state(self, device: torch.device) -> LoopState:
        """What resuming needs: weights, optimiser, schedule, every generator, the best so far."""
        return LoopState(
            epoch=self.epoch,
            model=self.model.state_dict(),
            optimizer=self.optim.state_dict(),
            scheduler=self.sched.state_dict(),
            generator=self.generator.get_state(),
            torch_rng=torch.get_rng_state(),
            cuda_rng=torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            best=self.best,
            best_acc=self.best_score,
            best_epoch=self.best_epoch,
            history=self.history,
        )

    def restore(self, state: LoopState, device: torch.device) -> None:
        """Continue from a :meth:`state` (the caller checked that it belongs to this run)."""
        self.model.load_state_dict(state.model)
        self.optim.load_state_dict(state.optimizer)
        self.sched.load_state_dict(state.scheduler)
        self.generator.set_state(state.generator)
        torch.set_rng_state(state.torch_rng)
        if device.type == "cuda" and state.cuda_rng is not None:
            torch.cuda.set_rng_state(state.cuda_rng, device)
        self.best = state.best
        self.best_score = state.best_acc
        self.best_epoch = state.best_epoch
        self.history = list(state.history)
        self.epoch = state.epoch
