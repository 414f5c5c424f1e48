"""Align before fuse: the image-activity contrastive loss, optionally with momentum encoders.

ALBEF (Li et al. 2021) pulls an image's and its text's features together before fusing them
(image-text contrastive loss, ITC). Here the pair is a cell's imagery and its signalling: the
two branch features, projected to a shared space and L2-normalised, must pick each other out
among the batch's other cells. With ``momentum`` > 0, ALBEF's momentum encoders join in:
slowly moving copies of the two encoders and projections give the keys, a queue of earlier
batches' keys adds negatives, and the copies' own similarities soften the targets (momentum
distillation), so a cell that looks like another one is not pushed away from it as hard.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from urbanfusion.models.training.network import FusionNet


def _info_nce(
    queries: tuple[torch.Tensor, torch.Tensor],
    keys: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    """Mean of image -> activity and activity -> image cross-entropy with soft targets."""
    (zi, za), (ka, ki), (ti, ta) = queries, keys, targets
    image_to_activity = nn.functional.log_softmax(zi @ ka.T / temperature, dim=1)
    activity_to_image = nn.functional.log_softmax(za @ ki.T / temperature, dim=1)
    return -0.5 * ((image_to_activity * ti).sum(1).mean() + (activity_to_image * ta).sum(1).mean())


def _both(hi: torch.Tensor, ha: torch.Tensor) -> torch.Tensor:
    return (hi[:, 0] > 0) & (ha[:, 0] > 0)


def alignment_loss(
    projections: nn.ModuleDict,
    vi: torch.Tensor,
    va: torch.Tensor,
    hi: torch.Tensor,
    ha: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Image-activity contrastive loss: a cell's two features match each other, not the batch's.

    InfoNCE both ways over the cells with both inputs (other cells of the batch are the
    negatives), on L2-normalised projections.
    """
    both = _both(hi, ha)
    if int(both.sum()) < 2:
        return vi.sum() * 0
    zi = nn.functional.normalize(projections["image"](vi[both]), dim=1)
    za = nn.functional.normalize(projections["activity"](va[both]), dim=1)
    onehot = torch.eye(len(zi), device=zi.device)
    return _info_nce((zi, za), (za, zi), (onehot, onehot), temperature)


class MomentumAlign(nn.Module):
    """ALBEF's momentum encoders, key queues and momentum distillation for the alignment loss.

    Holds exponential moving averages of the model's two encoders and alignment projections
    (never trained by gradients) and the last ``queue`` cells' keys of each branch. Its
    ``state_dict`` is all a checkpoint needs to resume it exactly.
    """

    # Buffers (in the state_dict): the last keys of each branch, and how many were enqueued.
    image_queue: torch.Tensor
    activity_queue: torch.Tensor
    seen: torch.Tensor

    def __init__(self, model: FusionNet, momentum: float, queue: int, alpha: float) -> None:
        """Copies of ``model``'s encoders and projections (``model.align`` must exist)."""
        super().__init__()
        if model.align is None:
            raise ValueError("momentum alignment needs a model with alignment projections")
        self.momentum, self.alpha = momentum, alpha
        self.image_encoder = copy.deepcopy(model.image_encoder)
        self.activity_encoder = copy.deepcopy(model.activity_encoder)
        self.align = copy.deepcopy(model.align)
        for p in self.parameters():
            p.requires_grad_(False)
        dim = model.cfg.align_dim
        self.register_buffer("image_queue", torch.zeros(queue, dim))
        self.register_buffer("activity_queue", torch.zeros(queue, dim))
        # Keys enqueued so far: the queue holds min(seen, queue) of them, the oldest overwritten.
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def _pairs(self, model: FusionNet) -> list[tuple[torch.Tensor, torch.Tensor]]:
        theirs = (model.image_encoder, model.activity_encoder, model.align)
        online = [m for m in theirs if m is not None]
        mine = [m for m in (self.image_encoder, self.activity_encoder, self.align) if m is not None]
        return [
            (p_m, p)
            for m_mod, o_mod in zip(mine, online, strict=True)
            for p_m, p in zip(m_mod.parameters(), o_mod.parameters(), strict=True)
        ]

    @torch.no_grad()
    def update(self, model: FusionNet) -> None:
        """One moving-average step towards ``model``'s current weights."""
        for p_m, p in self._pairs(model):
            p_m.mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def _keys(
        self, image: torch.Tensor, activity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.align is not None
        # Training mode, as ALBEF's momentum models run: batch statistics in BatchNorm (as
        # MoCo's key encoder), dropout on.
        self.train()
        ki = self.align["image"](self.image_encoder(image)[0])
        ka = self.align["activity"](self.activity_encoder(activity)[0])
        return nn.functional.normalize(ki, dim=1), nn.functional.normalize(ka, dim=1)

    @torch.no_grad()
    def _enqueue(self, ki: torch.Tensor, ka: torch.Tensor) -> None:
        size = self.image_queue.shape[0]
        ki, ka = ki[-size:], ka[-size:]  # a batch larger than the queue: its last cells
        slots = (int(self.seen) + torch.arange(len(ki), device=ki.device)) % size
        self.image_queue[slots] = ki
        self.activity_queue[slots] = ka
        self.seen += len(ki)

    def loss(
        self,
        model: FusionNet,
        inputs: tuple[torch.Tensor, torch.Tensor],
        vi: torch.Tensor,
        va: torch.Tensor,
        hi: torch.Tensor,
        ha: torch.Tensor,
        temperature: float,
    ) -> torch.Tensor:
        """The contrastive loss of a batch against momentum keys and the queue; then enqueue.

        ``inputs`` are the batch's (augmented) image and activity tensors, ``vi``/``va`` the
        model's branch features of them. Moves the copies one step towards the model first
        (ALBEF does so before each batch's keys).
        """
        both = _both(hi, ha)
        if int(both.sum()) < 2:
            return vi.sum() * 0
        assert model.align is not None
        self.update(model)
        ki, ka = self._keys(inputs[0][both], inputs[1][both])
        filled = min(int(self.seen), self.image_queue.shape[0])
        keys_i = torch.cat([ki, self.image_queue[:filled]])
        keys_a = torch.cat([ka, self.activity_queue[:filled]])
        with torch.no_grad():
            onehot = torch.eye(len(ki), len(keys_a), device=ki.device)
            soft_i = torch.softmax(ki @ keys_a.T / temperature, dim=1)
            soft_a = torch.softmax(ka @ keys_i.T / temperature, dim=1)
            targets = (
                self.alpha * soft_i + (1 - self.alpha) * onehot,
                self.alpha * soft_a + (1 - self.alpha) * onehot,
            )
        zi = nn.functional.normalize(model.align["image"](vi[both]), dim=1)
        za = nn.functional.normalize(model.align["activity"](va[both]), dim=1)
        loss = _info_nce((zi, za), (keys_a, keys_i), targets, temperature)
        self._enqueue(ki, ka)
        return loss
