"""The fusion network (torch): image encoder, activity encoder, fusion head, one head per branch.

Missing inputs are flagged, not faked: a branch's features are multiplied by its ``has_*`` flag,
and the flags themselves go to the fusion head, so a cell without imagery or without signalling
is classified from what it has: by the head of the branch it has (see ``FusionNet.forward``).
Training drops modalities at random so that the fused head copes too.
"""

from __future__ import annotations

import torch
from torch import nn

from urbanfusion.models.training.configs import VIT_PATCH, NetworkConfig


class _Residual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False, groups=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            # ResNeXt: the second convolution is split into groups (cardinality).
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False, groups=groups),
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
    """Chips to a feature vector and a sequence of spatial tokens.

    ResNet/ResNeXt: a stem and three stages, each halving the chip; ViT: 8 px patches, two
    transformer layers and a class token.
    """

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.kind = cfg.image_encoder
        w, d = cfg.image_width, cfg.features
        if self.kind == "vit":  # NetworkConfig refuses a pyramid or chips of odd patches here
            patch = VIT_PATCH
            n = (cfg.chip_px // patch) ** 2
            self.embed = nn.Conv2d(cfg.bands, d, patch, patch)
            self.cls = nn.Parameter(torch.zeros(1, 1, d))
            self.pos = nn.Parameter(torch.randn(1, n + 1, d) * 0.02)
            layer = nn.TransformerEncoderLayer(
                d, cfg.heads, 2 * d, cfg.dropout / 3, batch_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            return
        groups = 8 if self.kind == "resnext" else 1
        self.net = nn.Sequential(
            nn.Conv2d(cfg.bands, w, 3, 1, 1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            _Residual(w, w, 1, groups),
            _Residual(w, 2 * w, 2, groups),
            _Residual(2 * w, 3 * w, 2, groups),
            _Residual(3 * w, 4 * w, 2, groups),
        )
        # A pyramid pools the last three stages (1/2, 1/4, 1/8 of the chip): the features of
        # small objects survive next to the whole chip's.
        self.pyramid = cfg.pyramid
        pooled = (2 + 3 + 4) * w if cfg.pyramid else 4 * w
        self.vector = nn.Sequential(nn.Linear(pooled, d), nn.ReLU(inplace=True))
        self.token = nn.Linear(4 * w, d)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(n, features)`` and tokens ``(n, patches, features)`` of chips."""
        if self.kind == "vit":
            tokens = self.embed(image).flatten(2).transpose(1, 2)
            tokens = torch.cat([self.cls.expand(image.shape[0], -1, -1), tokens], dim=1) + self.pos
            tokens = self.norm(self.blocks(tokens))
            return torch.relu(tokens[:, 0]), tokens[:, 1:]
        if not self.pyramid:
            fmap = self.net(image)
            return self.vector(fmap.mean(dim=(2, 3))), self.token(fmap.flatten(2).transpose(1, 2))
        x, stages = image, []
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i >= len(self.net) - 3:
                stages.append(x.mean(dim=(2, 3)))
        pooled = torch.cat(stages, dim=1)
        return self.vector(pooled), self.token(x.flatten(2).transpose(1, 2))


class ActivityEncoder(nn.Module):
    """Weekly profiles ``(n, days, hours)`` to a feature vector and a sequence of tokens."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.kind = cfg.activity_encoder
        w, d = cfg.activity_width, cfg.features
        if self.kind == "bilstm":
            self.lstm = nn.LSTM(
                cfg.hours, d // 2, 2, batch_first=True, bidirectional=True, dropout=cfg.dropout / 3
            )
            self.vector = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True))
        elif self.kind == "convlstm":
            self.cell = _ConvLSTMCell(1, 2 * w)
            self.vector = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(cfg.dropout),
                nn.Linear(2 * w * cfg.hours, d),
                nn.ReLU(inplace=True),
            )
            self.token = nn.Linear(2 * w, d)
        elif self.kind == "mlp":
            self.inp = nn.Linear(cfg.days * cfg.hours, d)
            self.blocks = nn.ModuleList(
                nn.Sequential(
                    nn.LayerNorm(d),
                    nn.Linear(d, 2 * d),
                    nn.ReLU(inplace=True),
                    nn.Dropout(cfg.dropout),
                    nn.Linear(2 * d, d),
                )
                for _ in range(2)
            )
        else:
            self.net = nn.Sequential(
                nn.Conv2d(1, w, 3, 1, 1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False),
                nn.BatchNorm2d(2 * w),
                nn.ReLU(inplace=True),
                nn.MaxPool2d((1, 2)),
            )
            self.vector = nn.Sequential(
                nn.Flatten(),
                nn.Dropout(cfg.dropout),
                nn.Linear(2 * w * cfg.days * (cfg.hours // 2), d),
                nn.ReLU(inplace=True),
            )
            self.token = nn.Linear(2 * w, d)

    def forward(self, activity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features ``(n, features)`` and tokens ``(n, days or 1, features)``."""
        if self.kind == "bilstm":
            tokens, _ = self.lstm(activity)
            return self.vector(tokens.mean(dim=1)), tokens
        if self.kind == "convlstm":
            n, days, hours = activity.shape
            h = activity.new_zeros(n, self.cell.width, hours)
            c = torch.zeros_like(h)
            states = []
            for day in range(days):  # a fixed number of days: the loop unrolls in the export
                h, c = self.cell(activity[:, day].unsqueeze(1), h, c)
                states.append(h.mean(dim=2))
            return self.vector(h), self.token(torch.stack(states, dim=1))
        if self.kind == "mlp":
            x = self.inp(activity.flatten(1))
            for block in self.blocks:
                x = x + block(x)
            x = torch.relu(x)
            return x, x.unsqueeze(1)
        fmap = self.net(activity.unsqueeze(1))  # (n, c, days, hours / 2)
        return self.vector(fmap), self.token(fmap.mean(dim=3).transpose(1, 2))


class _ConvLSTMCell(nn.Module):
    """A convolutional LSTM step (Shi et al. 2015) over a day's hours.

    Gates are 1-D convolutions of the day and the state, so an hour's state sees its
    neighbouring hours, and the state carries from one day to the next.
    """

    def __init__(self, cin: int, width: int, kernel: int = 3) -> None:
        super().__init__()
        self.width = width
        self.gates = nn.Conv1d(cin + width, 4 * width, kernel, padding=kernel // 2)
        bias = self.gates.bias
        with torch.no_grad():  # forget gate open at first (Jozefowicz et al. 2015): days carry
            if bias is not None:
                bias[width : 2 * width].fill_(1.0)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class _Exchange(nn.Module):
    """Channel exchanging (CEN) between the two branch features.

    A branch's channels whose BatchNorm scale has shrunk below ``threshold`` take the other
    branch's value of that channel.

    The training's L1 penalty on the scales (:meth:`sparsity`) shrinks the first half of the
    image scales and the second half of the activity scales, so channels flow both ways.
    A missing partner's features are zero (masked before this), so nothing of it leaks.
    """

    image_half: torch.Tensor  # a buffer: 1 for the image scales that may shrink

    def __init__(self, features: int, threshold: float = 2e-2) -> None:
        super().__init__()
        self.image_norm = nn.BatchNorm1d(features)
        self.activity_norm = nn.BatchNorm1d(features)
        self.threshold = threshold
        half = features // 2
        self.register_buffer("image_half", (torch.arange(features) < half).float())

    def forward(self, vi: torch.Tensor, va: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ni, na = self.image_norm(vi), self.activity_norm(va)
        take_i = (self.image_norm.weight.abs() < self.threshold).float()
        take_a = (self.activity_norm.weight.abs() < self.threshold).float()
        return ni * (1 - take_i) + na * take_i, na * (1 - take_a) + ni * take_a

    def sparsity(self) -> torch.Tensor:
        """L1 of the scales that may shrink (image: first half, activity: second half)."""
        half = self.image_half
        return (self.image_norm.weight.abs() * half).sum() + (
            self.activity_norm.weight.abs() * (1 - half)
        ).sum()


class _Bottleneck(nn.Module):
    """MBT: the modalities exchange information only through a few shared tokens."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        d = cfg.features
        self.tokens = nn.Parameter(torch.randn(1, cfg.bottleneck_tokens, d) * 0.02)

        def make() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(
                d, cfg.heads, 2 * d, cfg.dropout / 3, batch_first=True
            )

        self.image_layers = nn.ModuleList(make() for _ in range(2))
        self.activity_layers = nn.ModuleList(make() for _ in range(2))

    def forward(
        self, ti: torch.Tensor, ta: torch.Tensor, hi: torch.Tensor, ha: torch.Tensor
    ) -> torch.Tensor:
        b = self.tokens.shape[1]
        z = self.tokens.expand(ti.shape[0], -1, -1)
        for li, la in zip(self.image_layers, self.activity_layers, strict=True):
            oi = li(torch.cat([ti, z], dim=1))
            oa = la(torch.cat([ta, z], dim=1))
            ti, zi = oi[:, :-b], oi[:, -b:]
            ta, za = oa[:, :-b], oa[:, -b:]
            # Average the bottleneck over the modalities a cell has (none: keep it).
            wi, wa = hi.unsqueeze(2), ha.unsqueeze(2)
            z = (wi * zi + wa * za + (1 - torch.clamp(wi + wa, max=1)) * z) / torch.clamp(
                wi + wa, min=1
            )
        return z.mean(dim=1)


class _Cross(nn.Module):
    """Each modality's tokens attend to the other's; a missing partner contributes nothing."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        d = cfg.features
        self.i2a = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout / 3, batch_first=True)
        self.a2i = nn.MultiheadAttention(d, cfg.heads, dropout=cfg.dropout / 3, batch_first=True)
        self.norm = nn.LayerNorm(2 * d)

    def forward(
        self, ti: torch.Tensor, ta: torch.Tensor, hi: torch.Tensor, ha: torch.Tensor
    ) -> torch.Tensor:
        ci, _ = self.i2a(ti, ta, ta, need_weights=False)
        ca, _ = self.a2i(ta, ti, ti, need_weights=False)
        pi = (ti + ci * ha.unsqueeze(2)).mean(dim=1) * hi
        pa = (ta + ca * hi.unsqueeze(2)).mean(dim=1) * ha
        return self.norm(torch.cat([pi, pa], dim=1))


class FusionNet(nn.Module):
    """Two encoders, a fusion with the presence flags, and three heads."""

    def __init__(self, cfg: NetworkConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.features
        self.image_encoder = ImageEncoder(cfg)
        self.activity_encoder = ActivityEncoder(cfg)
        extra = {"concat": 0, "bottleneck": d, "cross": 2 * d}[cfg.fusion]
        self.mixer: nn.Module | None = (
            _Bottleneck(cfg)
            if cfg.fusion == "bottleneck"
            else _Cross(cfg)
            if cfg.fusion == "cross"
            else None
        )
        self.fusion = nn.Sequential(
            nn.Linear(2 * d + extra + 2, d),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(d, cfg.classes),
        )
        self.image_head = nn.Linear(d, cfg.classes)
        self.activity_head = nn.Linear(d, cfg.classes)
        self.exchange = _Exchange(d) if cfg.exchange else None
        # Align-before-fuse: the training's contrastive loss pulls a cell's two projections
        # together; the projections are not on the path to the output.
        self.align: nn.ModuleDict | None = (
            nn.ModuleDict(
                {"image": nn.Linear(d, cfg.align_dim), "activity": nn.Linear(d, cfg.align_dim)}
            )
            if cfg.align_dim
            else None
        )

    def heads(
        self,
        image: torch.Tensor,
        activity: torch.Tensor,
        has_image: torch.Tensor,
        has_activity: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits of the fused head, the image head and the activity head."""
        fused, image_logits, activity_logits, _, _ = self.outputs(
            image, activity, has_image, has_activity
        )
        return fused, image_logits, activity_logits

    def outputs(
        self,
        image: torch.Tensor,
        activity: torch.Tensor,
        has_image: torch.Tensor,
        has_activity: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three heads' logits and the two branch features before fusion (for losses)."""
        has_image, has_activity = self._flags(has_image, has_activity)
        vi, ti = self.image_encoder(image) if self.cfg.use_image else self._absent(image)
        va, ta = (
            self.activity_encoder(activity) if self.cfg.use_activity else self._absent(activity)
        )
        vi, va = vi * has_image, va * has_activity
        embeddings = (vi, va)
        if self.exchange is not None:
            vi, va = self.exchange(vi, va)
            vi, va = vi * has_image, va * has_activity
        parts = [vi, va, has_image, has_activity]
        if self.mixer is not None:
            ti, ta = ti * has_image.unsqueeze(2), ta * has_activity.unsqueeze(2)
            parts.insert(2, self.mixer(ti, ta, has_image, has_activity))
        fused = self.fusion(torch.cat(parts, dim=1))
        image_logits, activity_logits = self.image_head(vi), self.activity_head(va)
        if self.cfg.double_fusion:
            fused = (fused + image_logits + activity_logits) / 3
        return fused, image_logits, activity_logits, *embeddings

    def forward(
        self,
        image: torch.Tensor,
        activity: torch.Tensor,
        has_image: torch.Tensor,
        has_activity: torch.Tensor,
    ) -> torch.Tensor:
        """Class probabilities (what the ONNX file outputs).

        A cell with both inputs gets the fused head's; a cell with one input gets that branch's
        own head, trained (deep supervision) on every cell that has the input: as good as a
        single-source model, where the fused head with one input masked loses a few points.
        """
        fused, image_logits, activity_logits = self.heads(image, activity, has_image, has_activity)
        if self.cfg.use_image and self.cfg.use_activity:
            hi, ha = self._flags(has_image, has_activity)
            only_image, only_activity = hi * (1 - ha), ha * (1 - hi)
            fused = (
                fused
                + only_image * (image_logits - fused)
                + only_activity * (activity_logits - fused)
            )
        return torch.softmax(fused, dim=1)

    def _absent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero features and one zero token for the branch a single-source model does not use.

        Its flag is always 0, so its encoder's output would be multiplied by 0 anyway; not
        running it leaves the encoder out of the exported graph. One token: attention over
        identical zero tokens is the same for one as for many.
        """
        zeros = x.new_zeros(x.shape[0], self.cfg.features)
        return zeros, zeros.unsqueeze(1)

    def _flags(
        self, has_image: torch.Tensor, has_activity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # A single-source model sees its other input as permanently missing.
        if not self.cfg.use_image:
            has_image = torch.zeros_like(has_image)
        if not self.cfg.use_activity:
            has_activity = torch.zeros_like(has_activity)
        return has_image, has_activity
