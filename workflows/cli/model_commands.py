"""The commands that make and check models: ``train``, ``calibrate``, ``export``, ``evaluate``.

Their options are built from the training settings (:mod:`urbanfusion.models.training.configs`):
the choices are the settings' types and the defaults their defaults, and the settings check
what goes together.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from urbanfusion.models.training.configs import (
    FINE_TUNE_LR,
    ActivityKind,
    FusionKind,
    ImageKind,
    LossKind,
    NetworkConfig,
    SelectKind,
    TrainConfig,
)
from urbanfusion.pipeline import strict_json
from urbanfusion.workflows.cli.common import (
    SOURCES_HELP,
    app,
    err,
    how,
    interrupt_status,
    needs_train_extra,
    one_line_errors,
    out,
    print_notes,
    print_per_class_f1,
    settings,
)

_TRAIN, _NET = TrainConfig(), NetworkConfig()


class Branches(StrEnum):
    """Which inputs a trained model uses."""

    fusion = "fusion"
    image = "image"
    signalling = "signalling"


@app.command("train")
@one_line_errors
def train_command(
    sources: Annotated[list[Path], typer.Argument(help=SOURCES_HELP)],
    model_out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Zones GeoPackage per run config, in order."),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs (early stopping may end sooner).")
    ] = _TRAIN.epochs,
    batch: Annotated[int, typer.Option(min=2, help="Cells per training step.")] = _TRAIN.batch,
    seed: Annotated[int, typer.Option(help="Seed of split, initialisation and order.")] = 0,
    branches: Annotated[Branches, typer.Option(help="Inputs the model uses.")] = Branches.fusion,
    image_encoder: Annotated[ImageKind, typer.Option(help="Image encoder.")] = _NET.image_encoder,
    activity_encoder: Annotated[
        ActivityKind, typer.Option(help="Activity encoder.")
    ] = _NET.activity_encoder,
    fusion: Annotated[FusionKind, typer.Option(help="How the branches meet.")] = _NET.fusion,
    loss: Annotated[LossKind, typer.Option(help="Loss.")] = _TRAIN.loss,
    consistency: Annotated[
        float, typer.Option(help="Weight of the cross-modal consistency loss (0 = off).")
    ] = _TRAIN.consistency,
    pyramid: Annotated[
        bool, typer.Option(help="Multi-scale image features (last three stages pooled).")
    ] = _NET.pyramid,
    exchange: Annotated[
        bool, typer.Option(help="Channel exchanging between the branches (CEN).")
    ] = _NET.exchange,
    align: Annotated[
        float,
        typer.Option(help="Weight of the align-before-fuse contrastive loss (0 = off)."),
    ] = _TRAIN.align,
    align_momentum: Annotated[
        float,
        typer.Option(
            help="Momentum encoders for --align (ALBEF): moving averages at this momentum give "
            "the keys, with a queue of earlier keys and softened targets (0 = none; ALBEF: 0.995).",
        ),
    ] = _TRAIN.align_momentum,
    double_fusion: Annotated[
        bool,
        typer.Option(
            help="Fuse again at the decision level: the fused head's logits averaged with the "
            "branch heads' (a naive double fusion, for ablations)."
        ),
    ] = _NET.double_fusion,
    distill: Annotated[
        float,
        typer.Option(help="Weight of deep distillation from the fused head (0 = off)."),
    ] = _TRAIN.distill,
    image_width: Annotated[
        int, typer.Option(min=1, help="Channels of the image encoder's first stage.")
    ] = _NET.image_width,
    features: Annotated[
        int, typer.Option(min=1, help="Width of each branch's features and of the fusion.")
    ] = _NET.features,
    teacher: Annotated[
        Path | None,
        typer.Option(
            help="A trained model (ONNX) whose predictions the new one learns too: a smaller "
            "student distilled from it."
        ),
    ] = None,
    teacher_weight: Annotated[
        float,
        typer.Option(help="Share of the teacher's loss beside the labels' (with --teacher)."),
    ] = _TRAIN.teacher_weight,
    teacher_temperature: Annotated[
        float, typer.Option(help="Softening of the teacher's predictions (with --teacher).")
    ] = _TRAIN.teacher_temperature,
    select: Annotated[
        SelectKind,
        typer.Option(
            help="Early stopping on: heads (mean of the fused accuracy and each branch's with "
            "the other input masked) or fused (the fused accuracy)."
        ),
    ] = _TRAIN.select,
    image_weights: Annotated[
        Path | None, typer.Option(help="Pre-trained image encoder (from pretrain-image).")
    ] = None,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Fine-tune: start from the best weights of this training checkpoint (the "
            ".ckpt `train` writes beside its model), with the same network options."
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            min=1e-7,
            help=f"Learning rate (default {_TRAIN.lr:g}; {FINE_TUNE_LR:g} with --init, so that a "
            "few labelled blocks fine-tune a model rather than overwrite it).",
        ),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Checkpoint written after every epoch (default: OUT with .ckpt)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the checkpoint if it exists.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Train a fusion model on labelled data and export it to ONNX (needs the train extra)."""
    net = settings(
        NetworkConfig,
        use_image=branches != Branches.signalling,
        use_activity=branches != Branches.image,
        image_encoder=image_encoder,
        activity_encoder=activity_encoder,
        fusion=fusion,
        pyramid=pyramid,
        exchange=exchange,
        double_fusion=double_fusion,
        image_width=image_width,
        features=features,
    )
    cfg = settings(
        TrainConfig,
        epochs=epochs,
        batch=batch,
        seed=seed,
        network=net,
        loss=loss,
        consistency=consistency,
        align=align,
        align_momentum=align_momentum,
        distill=distill,
        teacher=str(teacher) if teacher else None,
        teacher_weight=teacher_weight,
        teacher_temperature=teacher_temperature,
        select=select,
        image_weights=str(image_weights) if image_weights else None,
        init=str(init) if init else None,
        lr=lr if lr is not None else FINE_TUNE_LR if init else _TRAIN.lr,
    )
    with needs_train_extra("training"):
        from urbanfusion.models.training.train import train_and_export
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.labelled import coverage_note, load_labelled_cities

    data = load_labelled_cities(sources, labels or [])
    coverage = coverage_note(data, fine_tuning=init is not None)
    print_notes(data.notes + ([coverage] if coverage else []))
    names = ", ".join(
        f"URFC folder {s.name}" if s.is_dir() else load_config(s).name for s in sources
    )
    checkpoint = checkpoint or model_out.with_suffix(".ckpt")
    try:
        result, diff = train_and_export(
            data, model_out, cfg, names, quiet, checkpoint=checkpoint, resume=resume
        )
    except KeyboardInterrupt as e:
        err.print(
            f"{how(e)}; finished epochs are in {checkpoint}: add --resume to continue",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(interrupt_status(e)) from None
    v = result.validation
    out.print(
        f"trained on {len(data)} labelled cells; best epoch {result.best_epoch}; blocked "
        f"validation: overall {v['overall_accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f} "
        f"({v['n']} cells); parity torch vs onnxruntime {diff:.1e}\nwrote {model_out} "
        f"(checkpoint {checkpoint})",
        highlight=False,
    )


@app.command("calibrate")
@one_line_errors
def calibrate_command(
    model: Annotated[Path, typer.Argument(help="ONNX model to calibrate.")],
    sources: Annotated[list[Path], typer.Argument(help=SOURCES_HELP)],
    model_out: Annotated[Path, typer.Option("--out", help="Calibrated ONNX file to write.")],
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Zones GeoPackage per run config, in order."),
    ] = None,
    seed: Annotated[
        int, typer.Option(help="Seed of the blocked split (the one the model was trained with).")
    ] = 0,
) -> None:
    """Fit a model's temperature and in-domain score on labelled data (needs the train extra).

    The validation blocks (the same split as `train` with this seed) set the temperature and
    the in-domain radius; the other cells are the training distribution. Weights and argmax
    are unchanged. `train` does this by itself.
    """
    with needs_train_extra("calibration"):
        from urbanfusion.models.training.export import calibrate_onnx
        from urbanfusion.models.training.train import block_split
    from urbanfusion.workflows.labelled import load_labelled_cities

    data = load_labelled_cities(sources, labels or [])
    print_notes(data.notes)
    validation = block_split(data.blocks, _TRAIN.val_fraction, seed)
    contract = calibrate_onnx(model, data, validation, model_out)
    c = contract.calibration
    out.print(
        f"temperature {contract.temperature:.3f} on {c['validation_cells']} validation cells: "
        f"expected calibration error {c['ece_before']:.3f} -> {c['ece_after']:.3f}, "
        f"NLL {c['nll_before']:.3f} -> {c['nll_after']:.3f}; in-domain radius for "
        f"{', '.join(contract.domain) or 'no branch'} at the "
        f"{c['in_domain_quantile']:.0%} quantile\nwrote {model_out}",
        highlight=False,
    )


@app.command("export")
@one_line_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint (.ckpt).")],
    model_out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
) -> None:
    """Export a checkpoint's best model to ONNX, checked against torch (needs the train extra)."""
    with needs_train_extra("export"):
        from urbanfusion.models.training.checkpoint import best_model, contract_of, load_checkpoint
        from urbanfusion.models.training.export import export_onnx
    saved = load_checkpoint(checkpoint)
    diff = export_onnx(best_model(saved, checkpoint), contract_of(saved), model_out)
    out.print(
        f"wrote {model_out} (best epoch {saved.loop.best_epoch} of {saved.loop.epoch}); "
        f"parity torch vs onnxruntime {diff:.1e}",
        highlight=False,
    )


@app.command("evaluate")
@one_line_errors
def evaluate_command(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    sources: Annotated[list[Path], typer.Argument(help=SOURCES_HELP)],
    labels: Annotated[
        list[Path] | None, typer.Option("--labels", help="Zones per run config, in order.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Also write confusion.csv, confusion.png and reliability.png here."
        ),
    ] = None,
) -> None:
    """Score a model on labelled data: accuracy, kappa, F1, confusion, ablation, calibration."""
    import numpy as np

    from urbanfusion.models.evaluation import evaluate
    from urbanfusion.models.metrics import write_confusion, write_reliability
    from urbanfusion.workflows.labelled import load_labelled_cities

    data = load_labelled_cities(sources, labels or [])
    print_notes(data.notes)
    result: dict[str, Any] = evaluate(model, data)
    if report_dir is not None:
        write_confusion(report_dir, np.asarray(result["confusion"]), result["classes"])
        curves = result["calibration"].get("reliability", {})
        if curves:
            write_reliability(
                report_dir,
                {
                    k: (
                        np.asarray(v["confidence"]),
                        np.asarray(v["accuracy"]),
                        np.asarray(v["count"]),
                    )
                    for k, v in curves.items()
                },
            )
    if as_json:
        sys.stdout.write(strict_json.dumps(result) + "\n")
        return
    a = result["ablation"]
    out.print(
        f"overall accuracy {result['overall_accuracy']:.3f}  kappa {result['kappa']:.3f}  "
        f"macro-F1 {result['macro_f1']:.3f}  ({result['n']} cells)\n"
        f"ablation: fusion {a['fusion']:.3f}  image only {a['image_only']:.3f}  "
        f"signalling only {a['signalling_only']:.3f}",
        highlight=False,
    )
    print_per_class_f1(result["per_class_f1"])
    cal = result["calibration"]
    if cal.get("temperature") is None:
        out.print("calibration: none (an uncalibrated model; see urbanfusion calibrate)")
        return
    share = cal["in_domain_share"]
    out.print(
        f"calibration: expected calibration error {cal['ece_uncalibrated']:.3f} uncalibrated, "
        f"{cal['ece_calibrated']:.3f} with temperature {cal['temperature']:.2f}; "
        + ("no in-domain score" if share is None else f"{share:.0%} of cells in domain"),
        highlight=False,
    )
