"""``urbanfusion batch``: many city configs, each isolated, with a summary a scheduler can act on.

Each city is one :func:`~.run.run`: its bad input stops only that city, its output folder is
locked and published as one set. Cities run one after another in this process, or in ``jobs``
worker processes; either way a process opens a model file once and reuses the session for every
city it runs (:func:`~urbanfusion.models.inference.load_predictor`). Tile footprints come from
the shared tile-index cache, so cities over one tile folder index it once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from urbanfusion.pipeline import strict_json
from urbanfusion.pipeline.atomic import atomic_write
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import (
    ConfigError,
    InputNotFoundError,
    OutputBusyError,
    UrbanFusionError,
)
from urbanfusion.pipeline.progress import StageTimer
from urbanfusion.workflows.publish import published_here
from urbanfusion.workflows.up_to_date import published_unchanged, up_to_date_summary

CONFIG_SUFFIXES = (".yaml", ".yml")
# Exit statuses of `urbanfusion batch`: fixed values, never a count (a count can wrap to 0).
EXIT_OK, EXIT_SOME_FAILED = 0, 1


@dataclass
class CityResult:
    """One city of a batch: what happened, in a line of the summary."""

    config: str
    city: str
    status: Literal["ok", "failed", "busy", "ready", "interrupted"]
    error: str = ""
    output: str = ""
    cells: int | None = None
    cells_changed: int | None = None
    changes: str = ""
    computed: bool = False  # False when the city was up to date (or only checked)
    seconds: float = 0.0


def city_configs(sources: list[Path]) -> list[Path]:
    """The config files of ``sources``: files as given, folders' ``*.yaml``/``*.yml`` sorted.

    Raises:
        InputNotFoundError: a source does not exist.
        ConfigError: the sources hold no config at all.
    """
    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found += sorted(p for p in source.iterdir() if p.suffix in CONFIG_SUFFIXES)
        elif source.is_file():
            found.append(source)
        else:
            raise InputNotFoundError(f"{source} does not exist; give city configs or folders")
    if not found:
        raise ConfigError(
            f"no city config (*.yaml) in {', '.join(map(str, sources))}; "
            "put one config per city there"
        )
    return list(dict.fromkeys(found))


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and not isinstance(err, UrbanFusionError):
        where = f": {err.filename}" if err.filename else ""
        return f"{err.strerror or err}{where}"
    return " ".join(str(err).split())


def run_city(
    path: Path, wait: bool = True, force: bool = False, dry_run: bool = False
) -> CityResult:
    """Run (or with ``dry_run`` only check) one city; never raises for the city's own problems."""
    start = time.perf_counter()
    result = CityResult(config=str(path), city=path.stem, status="failed")
    try:
        config = load_config(path)
        result.output = str(config.output_dir)
        published = None if force else published_unchanged(config)
        if published is not None:  # nothing to do: known without a run's libraries
            result.status = "ready" if dry_run else "ok"
            result.changes = (
                f"up to date (run {published.folder.name})"
                if dry_run
                else up_to_date_summary(published.folder.name)
            )
            if not dry_run:
                result.cells, result.cells_changed = predicted_cells(published.manifest), 0
        elif dry_run:
            from urbanfusion.workflows.run import what_would_run

            result.status, result.changes = "ready", what_would_run(config)
        else:
            from urbanfusion.workflows.run import run

            done = run(config, StageTimer(quiet=True), wait=wait, force=force)
            result.status, result.computed = "ok", not done.up_to_date
            result.cells = predicted_cells(done.manifest)
            result.cells_changed, result.changes = len(done.changes.table), done.changes.summary
    except OutputBusyError as err:
        result.status, result.error = "busy", _one_line(err)
    except (UrbanFusionError, OSError) as err:
        result.error = _one_line(err)
    except Exception as err:  # a bug must not stop the other cities; say what it was
        result.error = f"unexpected {type(err).__name__}: {_one_line(err)} (please report it)"
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def predicted_cells(manifest: dict[str, object]) -> int:
    """Cells with a prediction, from a run's manifest."""
    return int(manifest["cells"]["predicted"])  # type: ignore[index]


def run_batch(
    configs: list[Path],
    jobs: int = 1,
    wait: bool = True,
    force: bool = False,
    dry_run: bool = False,
    on_done: Callable[[CityResult], None] | None = None,
) -> list[CityResult]:
    """Run every city, ``jobs`` at a time; results in the order of ``configs``."""
    results: dict[Path, CityResult] = {}
    for path, result in _each(configs, jobs, wait, force, dry_run):
        results[path] = result
        if on_done is not None:
            on_done(result)
    return [results[p] for p in configs]


def _each(
    configs: list[Path], jobs: int, wait: bool, force: bool, dry_run: bool
) -> Iterator[tuple[Path, CityResult]]:
    if jobs <= 1 or len(configs) <= 1:
        for path in configs:
            yield path, run_city(path, wait, force, dry_run)
        return
    # Spawned workers: no inherited dask or onnxruntime state; each keeps its model session.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(run_city, path, wait, force, dry_run): path for path in configs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BaseException:
            # Interrupted: start no other city, and do not wait here for those running (the
            # signal reached them too; their locks and staging folders are safe either way).
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def interrupted_results(configs: list[Path], finished: list[CityResult]) -> list[CityResult]:
    """Every city of an interrupted batch: those that ended as they did, the rest interrupted.

    A city interrupted after it published (in this process) says so: its outputs are whole.
    """
    ended = {r.config: r for r in finished}
    published = {run.parent.parent: run.name for run in published_here()}
    out = []
    for p in configs:
        if str(p) in ended:
            out.append(ended[str(p)])
            continue
        result = CityResult(config=str(p), city=p.stem, status="interrupted", error="interrupted")
        with contextlib.suppress(UrbanFusionError, OSError):
            result.output = str(load_config(p).output_dir)
            run_id = published.get(Path(result.output))
            if run_id is not None:
                result.error = f"interrupted after run {run_id} was published"
        out.append(result)
    return out


def exit_status(results: list[CityResult]) -> int:
    """0 when every city succeeded (or is ready, for a dry run), else 1."""
    return EXIT_OK if all(r.status in ("ok", "ready") for r in results) else EXIT_SOME_FAILED


def write_report(path: Path, results: list[CityResult], seconds: float) -> None:
    """``batch.json``: the summary and one entry per city."""
    statuses = ("ok", "failed", "busy", "ready", "interrupted")
    counts = {s: sum(r.status == s for r in results) for s in statuses}
    payload = {
        "cities": len(results),
        **{k: v for k, v in counts.items() if v},
        "seconds": round(seconds, 2),
        "exit_status": exit_status(results),
        "results": [asdict(r) for r in results],
    }
    text = strict_json.dumps(payload, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
