"""Training settings as validated models: the network, a training run, image pre-training.

Like the run config (:class:`~urbanfusion.pipeline.config.RunConfig`), each is a pydantic model
that refuses an unknown setting, a value of the wrong kind or a combination that cannot work,
from Python as from the command line (which builds its options from these models: their
choices and defaults). Messages name settings in backticks, which the CLI shows as its options.
No torch here: the CLI imports this module to build its options.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ImageKind = Literal["resnet", "resnext", "vit"]
ActivityKind = Literal["conv", "bilstm", "mlp", "convlstm"]
FusionKind = Literal["concat", "bottleneck", "cross"]
LossKind = Literal["ce", "balanced", "focal"]
SelectKind = Literal["heads", "fused"]

# Fine-tuning from a trained model (``init``) takes a tenth of training's learning rate, the
# usual choice: at the full rate a few labelled blocks overwrite what other cities taught it.
FINE_TUNE_LR = 2e-4
# The ground side taken for one labelled scene. AID's 600 px scenes cover 0.3-4.8 km (0.5-8 m
# pixels); its urban ones (residential, schools, shops) are mostly 0.5-1 m, 300-600 m. At 400 m
# a 250 m chip sees 62 % of a scene's side: pre-training crops (``PretrainConfig.scene_m``) and
# a real-pixel demo city's blocks (``democity.scenes``) use the same, so both show the same
# ground. Pre-trained on the training scenes of AID's ten urban classes (20 epochs, one seed) and
# scored on a fifth of them held back (349 scenes): 600 m 0.625, 400 m 0.693, 300 m 0.679.
SCENE_M = 400.0
# A ViT cuts chips into patches of this many pixels a side.
VIT_PATCH = 8


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NetworkConfig(_Settings):
    """Sizes and choices of the network.

    ``image_encoder``: a small ResNet, a ResNeXt (grouped convolutions) or a tiny ViT.
    ``activity_encoder``: convolutions over weekday x hour, a 2-layer BiLSTM over the days of
    24-hour profiles, a TiDE-style residual MLP, or a convolutional LSTM stepping over the days
    with each day's 24 hours as its (1-D) image. ``fusion``: concatenation, attention
    bottleneck tokens (MBT) or cross-attention between the two token sequences.

    Options from the research this project comes from, for ablations (all off by default):
    ``pyramid``, a multi-scale image feature (the pooled features of the last three stages,
    ResNet/ResNeXt); ``exchange``, channel exchanging (CEN, Wang et al. 2020) between the two
    branch features, guided by their BatchNorm scales; ``align_dim``, projections of the two
    branch features into a shared space for align-before-fuse (ALBEF's image-text contrastive
    loss, here image-activity; the loss is the training's ``align``).
    """

    bands: int = Field(3, ge=1)
    chip_px: int = Field(32, ge=8)
    days: int = Field(7, ge=1)
    hours: int = Field(24, ge=1)
    classes: int = Field(9, ge=2)
    image_width: int = Field(32, ge=1)
    activity_width: int = Field(16, ge=1)
    features: int = Field(128, ge=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    use_image: bool = True
    use_activity: bool = True
    image_encoder: ImageKind = "resnext"
    activity_encoder: ActivityKind = "conv"
    fusion: FusionKind = "cross"
    heads: int = Field(4, ge=1)
    bottleneck_tokens: int = Field(4, ge=1)
    pyramid: bool = False
    exchange: bool = False
    align_dim: int = Field(0, ge=0)
    double_fusion: bool = False

    @model_validator(mode="after")
    def _fits(self) -> NetworkConfig:
        if not (self.use_image or self.use_activity):
            raise ValueError("a network needs an input: `use_image`, `use_activity` or both")
        if self.pyramid and self.image_encoder == "vit":
            raise ValueError("`pyramid` needs a convolutional `image_encoder` (resnext or resnet)")
        if self.image_encoder == "vit" and self.chip_px % VIT_PATCH:
            raise ValueError(f"a vit `image_encoder` needs `chip_px` a multiple of {VIT_PATCH}")
        if not (self.use_image and self.use_activity) and (self.exchange or self.double_fusion):
            raise ValueError(
                "`exchange` and `double_fusion` work between the two branches: "
                "set `use_image` and `use_activity`"
            )
        return self

    def describe(self) -> str:
        """One line for the model's contract."""
        branches = "+".join(
            b for b, on in (("image", self.use_image), ("activity", self.use_activity)) if on
        )
        options = [
            name
            for name, on in (
                ("feature pyramid", self.pyramid),
                ("channel exchange", self.exchange),
                ("aligned before fusion", self.align_dim > 0),
                ("double fusion", self.double_fusion),
            )
            if on
        ]
        return (
            f"urbanfusion v1: {branches}; image {self.image_encoder} (width {self.image_width}), "
            f"activity {self.activity_encoder} (width {self.activity_width}), "
            f"{self.fusion} fusion, {self.features} features" + "".join(f", {o}" for o in options)
        )


class TrainConfig(_Settings):
    """Hyper-parameters of a training run."""

    epochs: int = Field(60, ge=0)
    batch: int = Field(128, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(12, ge=1)
    seed: int = 0
    aux_weight: float = Field(0.3, ge=0)
    modality_dropout: float = Field(0.2, ge=0, le=1)
    loss: LossKind = "ce"
    image_weights: str | None = None  # a pre-trained encoder file (pretrain-image)
    # A training checkpoint (``train`` writes OUT.ckpt) whose best weights start the network:
    # fine-tuning a model of other cities on a new one (at FINE_TUNE_LR unless told otherwise).
    init: str | None = None
    focal_gamma: float = Field(2.0, ge=0)
    consistency: float = Field(0.0, ge=0)
    # Deep distillation: each branch head also learns the fused head's predictions softened by
    # `distill_temperature`, on cells with both inputs (loss = main + aux_weight * supervision
    # + distill * distillation).
    distill: float = Field(0.0, ge=0)
    distill_temperature: float = Field(2.0, gt=0)
    # Knowledge distillation from a trained model (Hinton et al. 2015): a smaller student learns
    # the teacher ONNX model's predictions on its training cells, softened by
    # `teacher_temperature`; the fused loss is (1 - `teacher_weight`) x cross-entropy +
    # `teacher_weight` x distillation. The teacher runs once, before the first epoch.
    teacher: str | None = None
    teacher_weight: float = Field(0.7, ge=0, le=1)
    teacher_temperature: float = Field(3.0, gt=0)
    # Align before fuse: an image-activity contrastive loss (InfoNCE both ways, ALBEF's ITC) on
    # the two branch features before fusion, projected to `network.align_dim` (64 if unset).
    align: float = Field(0.0, ge=0)
    align_temperature: float = Field(0.07, gt=0)
    # ALBEF's momentum encoders for the alignment (0 = none): moving averages of the encoders
    # and projections at this momentum give the keys, a queue of `align_queue` earlier keys
    # adds negatives, and targets are softened by the copies' similarities at `align_alpha`.
    align_momentum: float = Field(0.0, ge=0, lt=1)
    align_queue: int = Field(1024, ge=1)
    align_alpha: float = Field(0.4, ge=0, le=1)
    # Channel exchanging (network.exchange): the L1 weight on the BatchNorm scales that decide it.
    exchange_l1: float = Field(1e-3, ge=0)
    # What early stopping keeps: "heads", the epoch best on the mean of the fused accuracy and
    # each branch's accuracy with the other input masked (a cell missing an input is classified
    # by its branch head, so that head must be at its best too); "fused", the fused accuracy.
    select: SelectKind = "heads"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    device: str = "auto"
    network: NetworkConfig = NetworkConfig()

    @model_validator(mode="after")
    def _fits(self) -> TrainConfig:
        both = self.network.use_image and self.network.use_activity
        if not both and (self.align or self.distill):
            raise ValueError(
                "`align` and `distill` work between the two branches: "
                "set `network.use_image` and `network.use_activity`"
            )
        if self.align_momentum and not self.align:
            raise ValueError(
                "`align_momentum` needs the alignment loss it serves: set `align` (0.1)"
            )
        return self


class PretrainConfig(_Settings):
    """Hyper-parameters of image-encoder pre-training.

    Scenes meet the encoder at a chip's ground size: ``side`` pixels over ``chip_m`` metres
    (the grid's 32 px over a 250 m cell). A scene is taken to cover ``scene_m`` metres a side
    (:data:`SCENE_M`) and is loaded at the chip's pixel size (``pretrain.scene_px``); training
    crops a chip's ground from it, the crop's side varied by up to ``scale_jitter`` times either
    way (scene resolutions vary); evaluation averages the class probabilities of a 3 x 3 grid
    of chips covering the scene, as a block of cells would see it.

    ``test_fraction`` of each class is held out (the same scenes whatever the seed) and only
    scored at the end: neither early stopping nor anyone tuning looks at it. With
    ``val_fraction`` 0 (the default) the cosine schedule runs to its end and the last epoch is
    kept, so all the other scenes train; above 0, that share of all scenes chooses the epoch.
    """

    side: int = Field(32, ge=8)
    chip_m: float = Field(250.0, gt=0)
    scene_m: float = Field(SCENE_M, gt=0)
    scale_jitter: float = Field(1.5, ge=1)
    # 40 epochs of AID's 7,130 training scenes: about 13 minutes on 2 CPU cores.
    epochs: int = Field(40, ge=1)
    batch: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(8, ge=1)
    seed: int = 0
    val_fraction: float = Field(0.0, ge=0, lt=1)
    test_fraction: float = Field(0.2, ge=0, lt=1)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    image_encoder: ImageKind = "resnext"
    image_width: int = Field(32, ge=1)
    features: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _fits(self) -> PretrainConfig:
        if self.image_encoder == "vit" and self.side % VIT_PATCH:
            raise ValueError(f"a vit `image_encoder` needs `side` a multiple of its {VIT_PATCH} px")
        return self
