"""The commands that map cities: ``run``, ``batch``, ``demo``, ``demo-city`` and ``dehaze``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from urbanfusion.pipeline.errors import UrbanFusionError
from urbanfusion.workflows.cli.common import (
    FORCE,
    NO_WAIT,
    app,
    err,
    how,
    interrupt_status,
    one_line_errors,
    out,
    print_outputs,
    rasterio_without_boto3,
)

if TYPE_CHECKING:
    from urbanfusion.workflows.batch import CityResult


@app.command("run")
@one_line_errors
def run_command(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    strict: Annotated[
        bool, typer.Option("--strict", help="Any unreadable or unusable tile is an error.")
    ] = False,
    no_wait: Annotated[bool, NO_WAIT] = False,
    force: Annotated[bool, FORCE] = False,
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
    from urbanfusion.workflows.up_to_date import published_unchanged, up_to_date_summary

    cfg = load_config(config)
    if strict:
        cfg = cfg.model_copy(update={"imagery": cfg.imagery.model_copy(update={"strict": True})})
    published = None if force or new_city else published_unchanged(cfg)
    if published is not None:  # said without importing what a run computes with
        summary = up_to_date_summary(published.folder.name)
        out.print(f"{cfg.output_dir}: {summary}", highlight=False, soft_wrap=True)
        return
    from urbanfusion.workflows.run import run

    result = run(
        cfg, StageTimer(quiet=quiet or None), wait=not no_wait, force=force, new_city=new_city
    )
    where = cfg.output_url or result.output_dir
    if result.up_to_date:
        out.print(f"{where}: {result.changes.summary}", highlight=False, soft_wrap=True)
        return
    out.print(f"outputs in {where}:", highlight=False)
    print_outputs(result.published_to or result.outputs)
    out.print(f"changes: {result.changes.summary}", highlight=False, soft_wrap=True)


@app.command("plan")
@one_line_errors
def plan_command(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Workers the run would have (default: dask.workers).")
    ] = None,
    worker_memory: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Memory of each worker in GB (default: dask.worker_memory_gb, else what is free "
            "here).",
        ),
    ] = None,
    partition_cells: Annotated[
        int | None,
        typer.Option(
            min=1, help="At most so many cells a partition (default: grid.partition_cells)."
        ),
    ] = None,
) -> None:
    """Print what a run will take: cells, partitions, memory per worker, rows, time (no pixels)."""
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.planning import plan_run

    cfg = load_config(config)
    memory = None if worker_memory is None else round(worker_memory * 2**30)
    planned = plan_run(cfg, workers, memory, partition_cells)  # as uf.plan
    for line in planned.lines():
        out.print(line, highlight=False, soft_wrap=True)


@app.command("batch")
@one_line_errors
def batch_command(
    sources: Annotated[
        list[Path] | None,
        typer.Argument(help="City configs, or folders of them (*.yaml)."),
    ] = None,
    extents: Annotated[
        Path | None,
        typer.Option(
            help="A vector file of city areas (GeoPackage, GeoJSON): one city per feature, "
            "configured by --template (its configs are written to --configs)."
        ),
    ] = None,
    template: Annotated[
        Path | None, typer.Option(help="The config each feature of --extents fills in.")
    ] = None,
    field: Annotated[str, typer.Option(help="The field of --extents naming each city.")] = "name",
    layer: Annotated[str | None, typer.Option(help="The layer of --extents.")] = None,
    configs: Annotated[
        Path | None,
        typer.Option(
            help="Where --extents' configs go (default: FILE's name + -cities/ beside it)."
        ),
    ] = None,
    jobs: Annotated[int, typer.Option(min=1, help="Cities run at once (processes).")] = 1,
    no_wait: Annotated[bool, NO_WAIT] = False,
    force: Annotated[bool, FORCE] = False,
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
    if (extents is None) != (template is None):
        raise UrbanFusionError("--extents and --template go together: give both, or neither")
    if extents is not None and template is not None:
        from urbanfusion.workflows.extents import write_extent_configs

        folder = configs or extents.with_name(f"{extents.stem}-cities")
        found = write_extent_configs(extents, template, folder, field, layer)
        out.print(f"{len(found)} city config(s) from {extents} in {folder}", highlight=False)
        sources = [*(sources or []), *found]
    if not sources:
        raise UrbanFusionError("give city configs or folders, or --extents FILE --template CONFIG")
    configs_found = city_configs(sources)

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
            configs_found, jobs, wait=not no_wait, force=force, dry_run=dry_run, on_done=record
        )
    except KeyboardInterrupt as e:
        # The cities that ended are in the report; the others are marked interrupted.
        results = interrupted_results(configs_found, finished)
        write_report(report, results, time.perf_counter() - start)
        ended = sum(r.status != "interrupted" for r in results)
        err.print(
            f"{how(e)} after {ended} of {len(configs_found)} cities; report {report} lists them "
            "(the others: interrupted, their published outputs untouched)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(interrupt_status(e)) from None
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
    from rich.table import Table  # here: its import is start-up time of every other command

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
@one_line_errors
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
    print_outputs(result.run.outputs)
    out.print(
        f"accuracy against the city's zones: overall {s['overall_accuracy']:.3f}, "
        f"kappa {s['kappa']:.3f}, macro-F1 {s['macro_f1']:.3f} on {s['n']} labelled cells "
        f"({time.perf_counter() - start:.1f} s)",
        highlight=False,
    )


@app.command("demo-city")
@one_line_errors
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
@one_line_errors
def dehaze_command(
    source: Annotated[Path, typer.Argument(help="Raster to dehaze (GeoTIFF, PNG, JPEG...).")],
    target: Annotated[Path, typer.Argument(help="Where to write the result (same format).")],
    bands: Annotated[
        str | None, typer.Option(help="Bands to dehaze, 1-based, e.g. 1,2,3 (default first 3).")
    ] = None,
    pixel_size: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="The grid pixel of the run to match, in metres (cell size / chip_px; default "
            "the default grid's 250 / 32 = 7.8125): the airlight is taken from the raster "
            "previewed at that size, as a run takes it.",
        ),
    ] = None,
) -> None:
    """Dehaze one raster as a run would, keeping its georeferencing, dtype, nodata and profile."""
    with rasterio_without_boto3():  # local files only: rasterio's AWS sessions are never used
        from urbanfusion.preprocess.dehaze_raster import dehaze_raster

    try:
        chosen = [int(b) for b in bands.split(",")] if bands else None
    except ValueError:
        raise UrbanFusionError(f"--bands {bands!r}: give 1-based band numbers like 1,2,3") from None
    result = dehaze_raster(source, target, chosen, pixel_size_m=pixel_size)
    out.print(
        f"wrote {target}: haze score {result.haze_score:.3f}, airlight "
        f"{[round(v, 3) for v in result.airlight]}, strength {result.strength:.2f}",
        highlight=False,
    )
