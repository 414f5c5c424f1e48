"""Commands of the image encoder and of model files: `pretrain-image`, `evaluate-image`, `model`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from urbanfusion.models.training.configs import ImageKind, PretrainConfig
from urbanfusion.pipeline import strict_json
from urbanfusion.workflows.cli.common import (
    app,
    err,
    flagged,
    model_app,
    needs_train_extra,
    one_line_errors,
    out,
    print_per_class_f1,
    settings,
)

_PRETRAIN = PretrainConfig()


@app.command("pretrain-image")
@one_line_errors
def pretrain_image_command(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="Labelled scene folders (one sub-folder per class), each its own data set "
            "with its own head, e.g. AID and RSSCN7 together."
        ),
    ],
    encoder_out: Annotated[Path, typer.Option("--out", help="Encoder file to write (.pt).")],
    epochs: Annotated[
        int, typer.Option(min=1, help="Epochs of the cosine schedule.")
    ] = _PRETRAIN.epochs,
    side: Annotated[
        int, typer.Option(min=8, help="Chip side in pixels (the grid's chip_px).")
    ] = _PRETRAIN.side,
    chip_m: Annotated[
        float, typer.Option(min=1.0, help="Ground side of a chip in metres (the grid's cell).")
    ] = _PRETRAIN.chip_m,
    scene_m: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Ground side of a scene in metres (AID: 300-4,800; its urban scenes mostly "
            "300-600): scenes are resized so that a chip covers chip_m of them.",
        ),
    ] = _PRETRAIN.scene_m,
    image_encoder: Annotated[
        ImageKind,
        typer.Option(
            help="Image encoder (a ViT's positional embeddings are resized to the chips of the "
            "model it is loaded into)."
        ),
    ] = _PRETRAIN.image_encoder,
    seed: Annotated[int, typer.Option(help="Seed of initialisation and order.")] = 0,
) -> None:
    """Pre-train the image encoder on labelled scenes at a chip's ground size (train extra)."""
    cfg = settings(
        PretrainConfig,
        side=side,
        chip_m=chip_m,
        scene_m=scene_m,
        epochs=epochs,
        image_encoder=image_encoder,
        seed=seed,
    )
    with needs_train_extra("pre-training"):
        from urbanfusion.models.training.pretrain import pretrain, save_encoder, scene_px
    from urbanfusion.models.training.scenes import load_scene_sets

    start = time.perf_counter()
    state: dict[str, Any] = pretrain(load_scene_sets(folders, scene_px(cfg)), cfg)
    save_encoder(encoder_out, state)
    t = state["test"]
    out.print(
        f"held-out test ({t['n']} scenes, {cfg.test_fraction:.0%} of each class, never trained "
        f"on): overall accuracy {t['overall_accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f} "
        f"after {state['best_epoch']} epochs in {time.perf_counter() - start:.0f} s; "
        f"wrote {encoder_out}",
        highlight=False,
    )
    print_per_class_f1(t["per_class_f1"])


@app.command("evaluate-image")
@one_line_errors
def evaluate_image_command(
    encoder: Annotated[Path, typer.Argument(help="Encoder file from pretrain-image.")],
    folder: Annotated[
        Path,
        typer.Argument(
            help="Labelled scenes: class sub-folders named as classes of one of the encoder's "
            "data sets (a subset is scored among its own classes)."
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a pre-trained image encoder on a folder of labelled scenes."""
    with needs_train_extra("evaluate-image"):
        from urbanfusion.models.training.pretrain import evaluate_encoder

    result: dict[str, Any] = evaluate_encoder(encoder, folder)
    if as_json:
        sys.stdout.write(strict_json.dumps(result) + "\n")
        return
    out.print(
        f"overall accuracy {result['overall_accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f} "
        f"({result['n']} scenes)",
        highlight=False,
    )
    print_per_class_f1(result["per_class_f1"])


@model_app.command("info")
@one_line_errors
def model_info_command(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
) -> None:
    """Print a model's contract and the execution provider onnxruntime really uses."""
    from urbanfusion.models.inference import Predictor, default_providers

    p = Predictor(model)
    out.print_json(p.contract.to_json())
    out.print(f"providers requested: {default_providers()}; in use: {p.session.get_providers()}")
    if "CUDAExecutionProvider" in p.requested_providers and p.provider != "CUDAExecutionProvider":
        err.print(
            flagged(
                "warning:", "bold yellow", "CUDA was requested but onnxruntime fell back to the CPU"
            )
        )
