"""The ``urbanfusion`` command line: parses arguments, calls one function, prints the result.

Errors caused by input (:class:`~urbanfusion.pipeline.errors.UrbanFusionError`) print one line on
stderr and exit with status 2; there is never a traceback for bad input.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from urbanfusion.pipeline import strict_json
from urbanfusion.pipeline.errors import UrbanFusionError

if TYPE_CHECKING:
    from urbanfusion.workflows.batch import CityResult

app = typer.Typer(
    help="Urban function maps from satellite imagery fused with mobile-phone signalling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
model_app = typer.Typer(help="Inspect model files.", no_args_is_help=True)
app.add_typer(model_app, name="model")
# No markup: messages hold paths and install hints like `.[train]` that rich would eat as tags.
out = Console(markup=False)
err = Console(stderr=True, markup=False)


def _flagged(label: str, style: str, message: str) -> Text:
    """``label`` in ``style``, then ``message`` as it is."""
    return Text.assemble((label, style), " ", message)


P = ParamSpec("P")
R = TypeVar("R")


class Terminated(KeyboardInterrupt):
    """SIGTERM (what systemd, cron's kill and container runtimes send), handled as Ctrl-C."""

    exit_code = 128 + signal.SIGTERM


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def _how(e: KeyboardInterrupt) -> str:
    return "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"


def _interrupted_line(e: KeyboardInterrupt) -> str:
    """What an interrupted command leaves behind, truly: published or not."""
    from urbanfusion.workflows.publish import published_here

    how = _how(e)
    published = published_here()
    if published:
        run = published[-1]
        return f"{how} after run {run.name} was published in {run.parent.parent}; it is whole"
    return f"{how}; no output was published"


def _exit_status(e: KeyboardInterrupt) -> int:
    return Terminated.exit_code if isinstance(e, Terminated) else 130


def _one_line_errors(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except UrbanFusionError as e:
            message = " ".join(str(e).split())
            err.print(_flagged("error:", "bold red", message), soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except OSError as e:
            # Disk full, no permission, a path through a file: the system's words, one line.
            where = f": {e.filename}" if e.filename else ""
            if e.errno == errno.ENOSPC:
                message = (
                    f"disk full writing {e.filename or 'the outputs'}; free space on that file "
                    "system, or point output.dir at another"
                )
            else:
                message = f"{e.strerror or e}{where}; check the path and free space"
            err.print(_flagged("error:", "bold red", message), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as e:
            err.print(_interrupted_line(e), highlight=False, soft_wrap=True)
            raise typer.Exit(_exit_status(e)) from None

    return wrapper


@contextlib.contextmanager
def _needs_train_extra(what: str) -> Iterator[None]:
    """Wrap the imports of a command that needs torch: without it, a one-line install hint."""
    try:
        yield
    except ImportError as e:
        raise UrbanFusionError(
            f"{what} needs torch and onnx ({e.name} is missing); install them with "
            "`pip install torch==2.13.0` then `pip install -e .[train]`"
        ) from None


def _print_per_class_f1(f1: dict[str, float]) -> None:
    for name, value in f1.items():
        out.print(f"  F1 {name:<16} {value:.3f}", highlight=False)


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        err.print(_flagged("note:", "yellow", note), soft_wrap=True)


def _print_outputs(paths: dict[str, Path]) -> None:
    for name, path in paths.items():
        out.print(f"  {name:<18} {path}", highlight=False, soft_wrap=True)


_NO_WAIT = typer.Option(
    "--no-wait",
    help="If another run is writing the same output folder, exit at once (status 75).",
)
_FORCE = typer.Option(
    "--force", help="Recompute even when nothing changed since the published run."
)


@app.command("run")
@_one_line_errors
def run_command(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Any unreadable or unusable tile is an error.")
    ] = False,
    no_wait: Annotated[bool, _NO_WAIT] = False,
    force: Annotated[bool, _FORCE] = False,
    new_city: Annotated[
        bool,
        typer.Option(
            "--new-city",
            help="The output folder holds another city's maps: start its history over for "
            "this one (nothing is compared with the other city's map).",
        ),
    ] = False,
) -> None:
    """Map urban function over a city extent from its tiles and signalling files."""
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.pipeline.progress import StageTimer
    from urbanfusion.workflows.run import run

    cfg = load_config(config)
    if strict:
        cfg = cfg.model_copy(update={"imagery": cfg.imagery.model_copy(update={"strict": True})})
    result = run(
        cfg, StageTimer(quiet=quiet or None), wait=not no_wait, force=force, new_city=new_city
    )
    if result.up_to_date:
        out.print(f"{result.output_dir}: {result.changes.summary}", highlight=False, soft_wrap=True)
        return
    out.print(f"outputs in {result.output_dir}:", highlight=False)
    _print_outputs(result.outputs)
    out.print(f"changes: {result.changes.summary}", highlight=False, soft_wrap=True)


@app.command("batch")
@_one_line_errors
def batch_command(
    sources: Annotated[
        list[Path], typer.Argument(help="City configs, or folders of them (*.yaml).")
    ],
    jobs: Annotated[int, typer.Option(min=1, help="Cities run at once (processes).")] = 1,
    no_wait: Annotated[bool, _NO_WAIT] = False,
    force: Annotated[bool, _FORCE] = False,
    report: Annotated[Path, typer.Option(help="Where to write the summary (JSON).")] = Path(
        "batch.json"
    ),
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only check each city's config, inputs and model.")
    ] = False,
) -> None:
    """Run many cities, each on its own; exit 0 only if every city succeeded (else 1)."""
    from urbanfusion.workflows.batch import (
        city_configs,
        exit_status,
        interrupted_results,
        run_batch,
        write_report,
    )

    start = time.perf_counter()
    configs = city_configs(sources)

    def done(r: CityResult) -> None:
        line = f"{r.status:<6} {r.city}  ({r.seconds:.1f} s)"
        detail = r.error or r.changes
        out.print(f"{line}: {detail}" if detail else line, highlight=False, soft_wrap=True)

    finished: list[CityResult] = []

    def record(r: CityResult) -> None:
        finished.append(r)
        done(r)

    try:
        results = run_batch(
            configs, jobs, wait=not no_wait, force=force, dry_run=dry_run, on_done=record
        )
    except KeyboardInterrupt as e:
        # The cities that ended are in the report; the others are marked interrupted.
        results = interrupted_results(configs, finished)
        write_report(report, results, time.perf_counter() - start)
        ended = sum(r.status != "interrupted" for r in results)
        err.print(
            f"{_how(e)} after {ended} of {len(configs)} cities; report {report} lists them "
            "(the others: interrupted, their published outputs untouched)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(_exit_status(e)) from None
    seconds = time.perf_counter() - start
    write_report(report, results, seconds)
    _print_batch_table(results)
    failed = sum(r.status not in ("ok", "ready") for r in results)
    out.print(
        f"{len(results)} cities, {len(results) - failed} ok, {failed} not; {seconds:.1f} s; "
        f"report {report}",
        highlight=False,
    )
    raise typer.Exit(exit_status(results))


def _print_batch_table(results: list[CityResult]) -> None:
    table = Table(box=None, show_edge=False, pad_edge=False)
    for column in ("city", "status", "cells", "changed", "seconds", "error"):
        table.add_column(column, overflow="fold")
    for r in results:
        table.add_row(
            r.city,
            r.status,
            "" if r.cells is None else str(r.cells),
            "" if r.cells_changed is None else str(r.cells_changed),
            f"{r.seconds:.1f}",
            r.error,
        )
    out.print(table)


@app.command("demo")
@_one_line_errors
def demo_command(
    out_dir: Annotated[Path, typer.Option("--out", help="Where to write the demo.")] = Path(
        "out/demo"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the demo city.")] = 7,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
) -> None:
    """Generate the built-in demo city, map it with the shipped model, and score the map."""
    from urbanfusion.pipeline.progress import StageTimer
    from urbanfusion.workflows.demo import run_demo

    start = time.perf_counter()
    result = run_demo(out_dir, seed, StageTimer(quiet=quiet or None))
    s = result.scores
    out.print(f"demo city (seed {seed}) inputs in {result.inputs}", highlight=False)
    out.print(f"outputs in {result.run.output_dir}:", highlight=False)
    _print_outputs(result.run.outputs)
    out.print(
        f"accuracy against the city's zones: overall {s['overall_accuracy']:.3f}, "
        f"kappa {s['kappa']:.3f}, macro-F1 {s['macro_f1']:.3f} on {s['n']} labelled cells "
        f"({time.perf_counter() - start:.1f} s)",
        highlight=False,
    )


@app.command("demo-city")
@_one_line_errors
def demo_city_command(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the city into.")],
    seed: Annotated[int, typer.Option(help="Seed of the city.")] = 7,
    size_km: Annotated[float, typer.Option(help="Side of the city in km.")] = 6.0,
    activity_from: Annotated[
        Path | None,
        typer.Option(
            help="Derive the daily rhythms from this Helsinki dynamic-population folder "
            "instead of the built-in copy of the same numbers."
        ),
    ] = None,
    scenes_from: Annotated[
        Path | None,
        typer.Option(
            help="Fill blocks with real scenes of their class from this folder of labelled "
            "scenes (class sub-folders, e.g. AID's School, Park, DenseResidential...); classes "
            "without scenes stay drawn."
        ),
    ] = None,
) -> None:
    """Only generate a demo city (tiles, signalling, zones.gpkg, city.yaml)."""
    from urbanfusion.workflows.democity.city import generate_demo_city

    city = generate_demo_city(out_dir, seed, size_km, activity_from, scenes_from)
    out.print(f"config {city.config}\nzones  {city.zones}", highlight=False)
    if scenes_from is not None:
        info = json.loads((city.root / "scenes.json").read_text(encoding="utf-8"))
        out.print(
            f"real scenes for {', '.join(info['real_classes'])} "
            f"({info['distinct_scenes_used']} distinct scenes); drawn: "
            f"{', '.join(info['drawn_classes']) or 'none'}",
            highlight=False,
        )


@app.command("dehaze")
@_one_line_errors
def dehaze_command(
    source: Annotated[Path, typer.Argument(help="Raster to dehaze (GeoTIFF, PNG, JPEG...).")],
    target: Annotated[Path, typer.Argument(help="Where to write the result (same format).")],
    bands: Annotated[
        str | None, typer.Option(help="Bands to dehaze, 1-based, e.g. 1,2,3 (default first 3).")
    ] = None,
) -> None:
    """Dehaze one raster, keeping its georeferencing, dtype, nodata and profile."""
    from urbanfusion.preprocess.dehaze_raster import dehaze_raster

    try:
        chosen = [int(b) for b in bands.split(",")] if bands else None
    except ValueError:
        raise UrbanFusionError(f"--bands {bands!r}: give 1-based band numbers like 1,2,3") from None
    result = dehaze_raster(source, target, chosen)
    out.print(
        f"wrote {target}: haze score {result.haze_score:.3f}, airlight "
        f"{[round(v, 3) for v in result.airlight]}, strength {result.strength:.2f}",
        highlight=False,
    )


class Branches(StrEnum):
    """Which inputs a trained model uses."""

    fusion = "fusion"
    image = "image"
    signalling = "signalling"


_SOURCES_HELP = (
    "Run configs of labelled cities (each with a --labels zones file), or URFC-layout folders "
    "(AreaID_CategoryID.jpg images and .txt visits, labelled by their names)."
)


@app.command("train")
@_one_line_errors
def train_command(
    sources: Annotated[list[Path], typer.Argument(help=_SOURCES_HELP)],
    model_out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Zones GeoPackage per run config, in order."),
    ] = None,
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs (early stopping may end sooner).")
    ] = 60,
    batch: Annotated[int, typer.Option(min=2, help="Cells per training step.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed of split, initialisation and order.")] = 0,
    branches: Annotated[Branches, typer.Option(help="Inputs the model uses.")] = Branches.fusion,
    image_encoder: Annotated[
        str, typer.Option(help="Image encoder: resnext, resnet or vit.")
    ] = "resnext",
    activity_encoder: Annotated[
        str, typer.Option(help="Activity encoder: conv, bilstm, mlp or convlstm.")
    ] = "conv",
    fusion: Annotated[str, typer.Option(help="Fusion: cross, concat or bottleneck.")] = "cross",
    loss: Annotated[str, typer.Option(help="Loss: ce, balanced or focal.")] = "ce",
    consistency: Annotated[
        float, typer.Option(help="Weight of the cross-modal consistency loss (0 = off).")
    ] = 0.0,
    pyramid: Annotated[
        bool, typer.Option(help="Multi-scale image features (last three stages pooled).")
    ] = False,
    exchange: Annotated[
        bool, typer.Option(help="Channel exchanging between the branches (CEN).")
    ] = False,
    align: Annotated[
        float,
        typer.Option(help="Weight of the align-before-fuse contrastive loss (0 = off)."),
    ] = 0.0,
    align_momentum: Annotated[
        float,
        typer.Option(
            help="Momentum encoders for --align (ALBEF): moving averages at this momentum give "
            "the keys, with a queue of earlier keys and softened targets (0 = none; ALBEF: 0.995).",
        ),
    ] = 0.0,
    double_fusion: Annotated[
        bool,
        typer.Option(
            help="Fuse again at the decision level: the fused head's logits averaged with the "
            "branch heads' (a naive double fusion, for ablations)."
        ),
    ] = False,
    distill: Annotated[
        float,
        typer.Option(help="Weight of deep distillation from the fused head (0 = off)."),
    ] = 0.0,
    select: Annotated[
        str,
        typer.Option(
            help="Early stopping on: heads (mean of the fused accuracy and each branch's with "
            "the other input masked) or fused (the fused accuracy)."
        ),
    ] = "heads",
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
            help="Learning rate (default 2e-3; 2e-4 with --init, so that a few labelled blocks "
            "fine-tune a model rather than overwrite it).",
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
    with _needs_train_extra("training"):
        from urbanfusion.models.training.train import (
            FINE_TUNE_LR,
            TrainConfig,
            train_and_export,
        )
    from urbanfusion.models.training.network import NetworkConfig
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.labelled import coverage_note, load_labelled_cities

    choices = {
        "--image-encoder": (image_encoder, ("resnet", "resnext", "vit")),
        "--activity-encoder": (activity_encoder, ("conv", "bilstm", "mlp", "convlstm")),
        "--fusion": (fusion, ("concat", "bottleneck", "cross")),
        "--loss": (loss, ("ce", "balanced", "focal")),
        "--select": (select, ("heads", "fused")),
    }
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise UrbanFusionError(f"{option} {value!r}: use one of {', '.join(allowed)}")
    if pyramid and image_encoder == "vit":
        raise UrbanFusionError("--pyramid needs a convolutional --image-encoder (resnext, resnet)")
    if branches != Branches.fusion and (exchange or align or distill or double_fusion):
        raise UrbanFusionError(
            "--exchange, --align, --distill and --double-fusion work between the two branches: "
            "use --branches fusion"
        )
    if not 0 <= align_momentum < 1:
        raise UrbanFusionError(
            f"--align-momentum {align_momentum}: use a momentum in [0, 1) (ALBEF's is 0.995)"
        )
    if align_momentum and not align:
        raise UrbanFusionError(
            "--align-momentum needs the alignment loss it serves: add --align W (e.g. 0.1)"
        )
    data = load_labelled_cities(sources, labels or [])
    coverage = coverage_note(data, fine_tuning=init is not None)
    _print_notes(data.notes + ([coverage] if coverage else []))
    net = NetworkConfig(
        use_image=branches != Branches.signalling,
        use_activity=branches != Branches.image,
        image_encoder=image_encoder,  # type: ignore[arg-type]
        activity_encoder=activity_encoder,  # type: ignore[arg-type]
        fusion=fusion,  # type: ignore[arg-type]
        pyramid=pyramid,
        exchange=exchange,
        double_fusion=double_fusion,
    )
    cfg = TrainConfig(
        epochs=epochs,
        batch=batch,
        seed=seed,
        network=net,
        loss=loss,  # type: ignore[arg-type]
        consistency=consistency,
        align=align,
        align_momentum=align_momentum,
        distill=distill,
        select=select,  # type: ignore[arg-type]
        image_weights=str(image_weights) if image_weights else None,
        init=str(init) if init else None,
        lr=lr if lr is not None else FINE_TUNE_LR if init else TrainConfig.lr,
    )
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
            f"{_how(e)}; finished epochs are in {checkpoint}: add --resume to continue",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(_exit_status(e)) from None
    v = result.validation
    out.print(
        f"trained on {len(data)} labelled cells; best epoch {result.best_epoch}; blocked "
        f"validation: overall {v['overall_accuracy']:.3f}, macro-F1 {v['macro_f1']:.3f} "
        f"({v['n']} cells); parity torch vs onnxruntime {diff:.1e}\nwrote {model_out} "
        f"(checkpoint {checkpoint})",
        highlight=False,
    )


@app.command("calibrate")
@_one_line_errors
def calibrate_command(
    model: Annotated[Path, typer.Argument(help="ONNX model to calibrate.")],
    sources: Annotated[list[Path], typer.Argument(help=_SOURCES_HELP)],
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
    with _needs_train_extra("calibration"):
        from urbanfusion.models.training.export import calibrate_onnx
        from urbanfusion.models.training.train import TrainConfig, block_split
    from urbanfusion.workflows.labelled import load_labelled_cities

    data = load_labelled_cities(sources, labels or [])
    _print_notes(data.notes)
    validation = block_split(data.blocks, TrainConfig().val_fraction, seed)
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
@_one_line_errors
def export_command(
    checkpoint: Annotated[Path, typer.Argument(help="Training checkpoint (.ckpt).")],
    model_out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")],
) -> None:
    """Export a checkpoint's best model to ONNX, checked against torch (needs the train extra)."""
    with _needs_train_extra("export"):
        from urbanfusion.models.training.checkpoint import best_model, contract_of, load_checkpoint
        from urbanfusion.models.training.export import export_onnx
    state = load_checkpoint(checkpoint)
    diff = export_onnx(best_model(state, checkpoint), contract_of(state), model_out)
    out.print(
        f"wrote {model_out} (best epoch {state['best_epoch']} of {state['epoch']}); "
        f"parity torch vs onnxruntime {diff:.1e}",
        highlight=False,
    )


@app.command("evaluate")
@_one_line_errors
def evaluate_command(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    sources: Annotated[list[Path], typer.Argument(help=_SOURCES_HELP)],
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
    _print_notes(data.notes)
    result = evaluate(model, data)
    if report_dir is not None:
        write_confusion(report_dir, np.asarray(result["confusion"]), result["classes"])
        curves = result["calibration"].get("reliability", {})
        if curves:
            write_reliability(
                report_dir,
                {
                    k: tuple(np.asarray(v[f]) for f in ("confidence", "accuracy", "count"))
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
    _print_per_class_f1(result["per_class_f1"])
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


@app.command("pretrain-image")
@_one_line_errors
def pretrain_image_command(
    folders: Annotated[
        list[Path],
        typer.Argument(
            help="Labelled scene folders (one sub-folder per class), each its own data set "
            "with its own head, e.g. AID and RSSCN7 together."
        ),
    ],
    encoder_out: Annotated[Path, typer.Option("--out", help="Encoder file to write (.pt).")],
    epochs: Annotated[int, typer.Option(min=1, help="Epochs of the cosine schedule.")] = 40,
    side: Annotated[
        int, typer.Option(min=8, help="Chip side in pixels (the grid's chip_px).")
    ] = 32,
    chip_m: Annotated[
        float, typer.Option(min=1.0, help="Ground side of a chip in metres (the grid's cell).")
    ] = 250.0,
    scene_m: Annotated[
        float,
        typer.Option(
            min=1.0,
            help="Ground side of a scene in metres (AID: 300-4,800; its urban scenes mostly "
            "300-600): scenes are resized so that a chip covers chip_m of them.",
        ),
    ] = 400.0,
    image_encoder: Annotated[
        str,
        typer.Option(
            help="resnext, resnet or vit (a ViT's positional embeddings are resized to the "
            "chips of the model it is loaded into)."
        ),
    ] = "resnext",
    seed: Annotated[int, typer.Option(help="Seed of initialisation and order.")] = 0,
) -> None:
    """Pre-train the image encoder on labelled scenes at a chip's ground size (train extra)."""
    with _needs_train_extra("pre-training"):
        from urbanfusion.models.training.pretrain import (
            PretrainConfig,
            pretrain,
            save_encoder,
            scene_px,
        )
    from urbanfusion.models.training.scenes import load_scene_sets

    if image_encoder not in ("resnext", "resnet", "vit"):
        raise UrbanFusionError(
            f"--image-encoder {image_encoder!r}: use one of resnext, resnet, vit"
        )
    if image_encoder == "vit" and side % 8:
        raise UrbanFusionError(f"--side {side}: a ViT needs a multiple of its 8 px patches")

    cfg = PretrainConfig(
        side=side,
        chip_m=chip_m,
        scene_m=scene_m,
        epochs=epochs,
        image_encoder=image_encoder,
        seed=seed,
    )
    start = time.perf_counter()
    state = pretrain(load_scene_sets(folders, scene_px(cfg)), cfg)
    save_encoder(encoder_out, state)
    t = state["test"]
    out.print(
        f"held-out test ({t['n']} scenes, {cfg.test_fraction:.0%} of each class, never trained "
        f"on): overall accuracy {t['overall_accuracy']:.3f}, macro-F1 {t['macro_f1']:.3f} "
        f"after {state['best_epoch']} epochs in {time.perf_counter() - start:.0f} s; "
        f"wrote {encoder_out}",
        highlight=False,
    )
    _print_per_class_f1(t["per_class_f1"])


@app.command("evaluate-image")
@_one_line_errors
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
    with _needs_train_extra("evaluate-image"):
        from urbanfusion.models.training.pretrain import evaluate_encoder

    result = evaluate_encoder(encoder, folder)
    if as_json:
        sys.stdout.write(strict_json.dumps(result) + "\n")
        return
    out.print(
        f"overall accuracy {result['overall_accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f} "
        f"({result['n']} scenes)",
        highlight=False,
    )
    _print_per_class_f1(result["per_class_f1"])


@model_app.command("info")
@_one_line_errors
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
            _flagged(
                "warning:", "bold yellow", "CUDA was requested but onnxruntime fell back to the CPU"
            )
        )


def main() -> None:
    """The ``urbanfusion`` console entry point: :data:`app`, with click's usage errors in one line.

    Typer draws an unknown option or an out-of-range value as a multi-line box; here it is one
    ``error:`` line like every other bad input, naming the command whose ``--help`` to read.
    """
    try:
        code = app(prog_name="urbanfusion", standalone_mode=False)
    except typer.TyperException as e:  # click's usage errors (typer vendors click)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":
            # A bare command (no_args_is_help): its help, with click's usage status. Rich help
            # was printed when the error was made; plain help is the error's message.
            out.print(e.format_message(), highlight=False, end="")
        else:
            where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
            message = " ".join(e.format_message().split()) + where
            err.print(_flagged("error:", "bold red", message), soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
