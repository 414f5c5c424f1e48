"""The fusion network (torch): image encoder, activity encoder, fusion head, one head per branch.

Missing inputs are flagged, not faked: a branch's features are multiplied by its ``has_*`` flag,
and the flags themselves go to the fusion head, so a cell without imagery or without signalling
is classified from what it has. Training drops modalities at random so that this works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the network."""

    bands: int = 3
    chip_px: int = 32
    days: int = 7
    hours: int = 24
    classes: int = 9
    image_width: int = 32
    activity_width: int = 16
    features: int = 128
    dropout: float = 0.3
    use_image: bool = True
    use_activity: bool = True

    def describe(self) -> str:
        """One line for the model's contract."""
        branches = "+".join(
            b for b, on in (("image", self.use_image), ("activity", self.use_activity)) if on
        )
        return (
            f"urbanfusion-cnn v1: {branches}; ResNet-style image encoder (width "
            f"{self.image_width}), conv activity encoder over weekday x hour (width "
            f"{self.activity_width}), concatenation fusion, {self.features} features"
        )


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ImageEncoder(nn.Module):
    """A small ResNet: stem and three stages, each halving the chip, then global pooling."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        w = cfg.image_width
        self.net = nn.Sequential(
            nn.Conv2d(cfg.bands, w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            _Residual(w, w, 1),
            _Residual(w, 2 * w, 2),
            _Residual(2 * w, 3 * w, 2),
            _Residual(3 * w, 4 * w, 2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * w, cfg.features),
            nn.ReLU(inplace=True),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Features ``(n, features)`` of chips ``(n, bands, chip, chip)``."""
        return self.net(image)


class ActivityEncoder(nn.Module):
    """Convolutions over the weekday x hour matrix; flattening keeps when things happen."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        w = cfg.activity_width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(inplace=True),
            nn.MaxPool2d((1, 2)),
            nn.Flatten(),
            nn.Dropout(cfg.dropout),
            nn.Linear(2 * w * cfg.days * (cfg.hours // 2), cfg.features),
            nn.ReLU(inplace=True),
        )

    def forward(self, activity: torch.Tensor) -> torch.Tensor:
        """Features ``(n, features)`` of weekly profiles ``(n, days, hours)``."""
        return self.net(activity.unsqueeze(1))


class FusionNet(nn.Module):
    """Two encoders, concatenation fusion with the presence flags, and three heads."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.activity_encoder = ActivityEncoder(cfg)
        self.fusion = nn.Sequential(
            nn.Linear(2 * cfg.features + 2, cfg.features),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.features, cfg.classes),
        )
        self.image_head = nn.Linear(cfg.features, cfg.classes)
        self.activity_head = nn.Linear(cfg.features, cfg.classes)

    def heads(
        self,
        image: torch.Tensor,
        activity: torch.Tensor,
        has_image: torch.Tensor,
        has_activity: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the fused head, the image head and the activity head."""
        # A single-source model sees its other input as permanently missing.
        if not self.cfg.use_image:
            has_image = torch.zeros_like(has_image)
        if not self.cfg.use_activity:
            has_activity = torch.zeros_like(has_activity)
        fi = self.image_encoder(image) * has_image
        fa = self.activity_encoder(activity) * has_activity
        fused = self.fusion(torch.cat([fi, fa, has_image, has_activity], dim=1))
        return fused, self.image_head(fi), self.activity_head(fa)

    def forward(
        self,
        image: torch.Tensor,
        activity: torch.Tensor,
        has_image: torch.Tensor,
        has_activity: torch.Tensor,
    ) -> torch.Tensor:
        """Class probabilities of the fused head (what the ONNX file outputs)."""
        return torch.softmax(self.heads(image, activity, has_image, has_activity)[0], dim=1)
