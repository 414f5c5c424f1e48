"""What a run of a config will take, before it starts: cells, partitions, memory, rows, time.

``urbanfusion plan`` prints it, reading no pixels and no rows (a signalling file's rows are
estimated from its size, :mod:`urbanfusion.ingest.row_estimate`). The grid is cut into
partitions that fit a worker's memory (:func:`urbanfusion.pipeline.partitions.partition_grid`);
today a run is one partition, so a plan of several is one that `urbanfusion run` refuses on one
machine, and the plan says what to change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from urbanfusion.ingest import imagery
from urbanfusion.ingest.row_estimate import estimate_rows
from urbanfusion.pipeline.config import RunConfig
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.partitions import Partition, partition_grid
from urbanfusion.pipeline.remote_files import InputPath
from urbanfusion.workflows.layout import Plan, layout
from urbanfusion.workflows.memory import (
    ADDRESS_LIMIT_HINT,
    BASE_BYTES,
    address_limited,
    available_bytes,
    cells_that_fit,
    estimate_bytes,
    expected_days,
    too_large,
    worker_memory,
)

# Core-seconds per cell of a whole run (read, warp, dehaze, chips, model, outputs), measured on
# the 1,000 km2 city with 2 m imagery (16,000 cells in 19.4-21.4 s on 2 cores,
# benchmarks/city_scale.py): finer imagery costs more, coarser less.
CELL_CORE_SECONDS = 2.6e-3
# Signalling rows read, checked and aggregated per core-second (1.92 M CSV points rows in 0.95 s
# on 2 cores, this machine).
ROWS_PER_CORE_SECOND = 1.0e6
# A worker's start: imports and the model's session (an unchanged rerun of a city takes 1.2 s,
# all of it start-up: benchmarks/up_to_date.py).
START_SECONDS = 1.2
# The most cells a partition holds unless grid.partition_cells says otherwise: a larger one
# only takes memory (about 0.24 GB with 8 days of signalling), since a partition's chunks of
# imagery already keep every core busy. 512 x 256 cells: a city of 8,000 km2 at 250 m is one.
PARTITION_CELLS = 131_072
_GB = 2**30


@dataclass(frozen=True)
class RunPlan:
    """A run's plan: its layout, its partitions and what each will need."""

    layout: Plan
    days: int
    partitions: list[Partition]
    worker_bytes: int  # the memory each worker has
    fits: int  # the most cells a worker's memory holds
    partition_bytes: int  # the estimated peak of a worker on the largest partition
    driver_bytes: int  # the run's own process: what it keeps of every cell, and a partition
    rows: int  # signalling rows, estimated
    workers: int
    cores: int  # per worker

    @property
    def grid(self) -> CityGrid:
        """The run's grid."""
        return self.layout.grid

    @property
    def tiles(self) -> list[InputPath]:
        """The tiles the run would read."""
        return self.layout.tiles

    @property
    def signalling_files(self) -> list[Path]:
        """The signalling files the run would read."""
        return self.layout.signalling_files

    @property
    def seconds(self) -> float:
        """Expected wall time on ``workers`` workers of ``cores`` cores."""
        inside = self.layout.inside
        cells = self.layout.grid.n_cells if inside is None else int(inside.sum())
        work = cells * CELL_CORE_SECONDS + self.rows / ROWS_PER_CORE_SECOND
        busy = min(self.workers, len(self.partitions))  # a partition is one worker's
        return START_SECONDS + work / (busy * self.cores)

    def lines(self) -> list[str]:
        """What ``urbanfusion plan`` prints."""
        grid, config = self.layout.grid, self.layout.config
        largest = max(p.n_cells for p in self.partitions)
        n = len(self.partitions)
        files = len(self.layout.signalling_files)
        inside = self.layout.inside
        area = "" if inside is None else f", {int(inside.sum()):,} inside its area"
        out = [
            f"{config.name}: {grid.n_cells:,} cells{area} ({grid.nrows:,} x {grid.ncols:,} of "
            f"{grid.cell_size:g} m in {grid.crs.to_string()}), {len(self.layout.tiles)} tile(s), "
            f"{files} signalling file(s), {self.days} day(s)",
            f"partitions: {n} of up to {largest:,} cells",
            f"memory per worker: about {self.partition_bytes / _GB:.1f} GB of "
            f"{self.worker_bytes / _GB:.1f} GB",
            f"memory of the run's own process: about {self.driver_bytes / _GB:.1f} GB (what it "
            "keeps of every cell, and a partition while it is prepared)",
            f"signalling rows: about {self.rows:,} (from the files' sizes), about "
            f"{round(self.rows / n):,} per partition",
            f"expected time: about {self.seconds:,.{0 if self.seconds >= 10 else 1}f} s on "
            f"{self.workers} worker(s) of {self.cores} core(s)",
        ]
        return out


def plan_run(
    config: RunConfig,
    workers: int | None = None,
    worker_bytes: int | None = None,
    max_cells: int | None = None,
    cores: int | None = None,
) -> RunPlan:
    """Plan ``config`` for ``workers`` workers of ``worker_bytes`` memory.

    By default the config's ``dask.workers`` (else 1) and ``dask.worker_memory_gb`` (else what
    is free on this machine). Partitions are as large as a worker's memory allows, but at
    least one per worker, and at most ``max_cells`` cells (default: the config's
    ``grid.partition_cells``, else :data:`PARTITION_CELLS`).

    Raises:
        ConfigError: a worker cannot hold the libraries and one chunk of imagery, or what the
            run keeps of every cell of the grid.
        InputNotFoundError: a path or glob of the config matches nothing.
    """
    p = layout(config)
    workers = workers or config.dask.workers or 1
    days = expected_days(config, len(p.signalling_files))
    memory_given = worker_bytes or worker_memory(config)
    memory = memory_given or available_bytes()
    max_cells = max_cells or config.grid.partition_cells
    if cells_that_fit(memory, days) < 1:
        fix = (
            ADDRESS_LIMIT_HINT
            if memory_given is None and address_limited()
            else ("give workers more memory")
        )
        raise ConfigError(
            f"a worker with {memory / _GB:.2f} GB cannot hold a run's libraries and one chunk of "
            f"imagery (about {BASE_BYTES / _GB:.2f} GB); {fix}"
        )
    # One worker is the run's own process, which also keeps what it learns of every cell;
    # several are a cluster's, and the run's process is this machine's.
    driver_memory = memory if workers == 1 else available_bytes()
    fits = cells_that_fit(memory, days, p.grid.n_cells if workers == 1 else 0)
    fits = min(fits, cells_that_fit(driver_memory, days, p.grid.n_cells))
    if fits < 1:
        raise ConfigError(too_large(config, p.grid, days, driver_memory))
    align = max(1, imagery.CHUNK_TARGET_PX // p.grid.chip_px)  # cells along a chunk of imagery
    per_worker = -(-p.grid.n_cells // workers)
    limit = min(fits, per_worker, max_cells or PARTITION_CELLS)
    partitions = partition_grid(p.grid.nrows, p.grid.ncols, limit, align)
    largest = max(part.n_cells for part in partitions)
    rows = sum(estimate_rows(f) for f in p.signalling_files)
    return RunPlan(
        p,
        days,
        partitions,
        memory,
        fits,
        estimate_bytes(p.grid.n_cells if workers == 1 else 0, days, largest),
        estimate_bytes(p.grid.n_cells, days, largest),
        rows,
        workers,
        cores or os.cpu_count() or 1,
    )
