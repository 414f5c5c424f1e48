"""How much memory a run will need, known from its grid before any work starts.

A run works a partition at a time (:mod:`urbanfusion.pipeline.partitions`): a partition's
hourly sums of every day with signalling, its weekly activity features and model inputs are held
while it is prepared and predicted, so that part of the peak grows with the partition's cells x
days. What the run keeps of every cell of the grid (its probabilities and flags, and the tables
written out) grows with the grid. The imagery is read, dehazed and predicted chunk by chunk.
The constants are fitted to measured peaks (``benchmarks/region.py``), so a grid that cannot
fit is refused in the plan stage, in a second, not after minutes of work, and otherwise cut into
partitions that fit.
"""

from __future__ import annotations

import math
import os
import resource
from pathlib import Path

import psutil

from urbanfusion.pipeline.config import RunConfig
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid

# Measured on this project's 2-core reference machine (benchmarks/region.py): in partitions of
# 123,904 cells with 8 days, the 837,720-cell region peaked at 1.47 GB and its 207,424-cell
# quarter at 1.28 GB (estimates: 1.57 and 1.38). A run holds about 1.1 GB whatever its size:
# libraries 0.25 GB, the model sessions' buffers 0.45 GB on 2 threads, a chunk of imagery per
# thread; signalling's read buffers take as much while it is read, before.
BASE_BYTES = 1_100 * 2**20  # interpreter, libraries, model sessions, chunks of imagery, reads
GRID_CELL_BYTES = 300  # per cell of the grid: its predictions and flags, kept to the end
CELL_BYTES = 1_000  # per cell of a partition: features and model inputs
CELL_DAY_BYTES = 100  # per cell of a partition and day: its activity, and a day's sums

_GB = 2**30
# What ``ulimit -v`` counts is address space, and a run reserves far more of it than it uses:
# thread stacks, glibc's malloc arenas (64 MB each, up to 8 a core), onnxruntime's and
# OpenBLAS's buffers. Measured on the 6 km demo city on 2 cores: after the plan, address space
# grew 2.39 GB while resident memory grew 0.57 GB. Arenas and threads follow the cores.
ADDRESS_RESERVE_BYTES = 700 * 2**20
ADDRESS_RESERVE_PER_CORE = 600 * 2**20


def estimate_bytes(n_cells: int, days: int, partition_cells: int | None = None) -> int:
    """Peak memory of a run over ``n_cells`` cells with ``days`` days of signalling.

    In partitions of at most ``partition_cells`` cells (default: one, the whole grid).
    """
    part = n_cells if partition_cells is None else partition_cells
    return BASE_BYTES + n_cells * GRID_CELL_BYTES + part * (CELL_BYTES + CELL_DAY_BYTES * days)


def cells_that_fit(available: int, days: int, grid_cells: int = 0) -> int:
    """The most cells a partition with ``days`` days of signalling can hold in ``available``.

    In a grid of ``grid_cells`` cells (0: only what a partition itself needs).
    """
    free = available - BASE_BYTES - grid_cells * GRID_CELL_BYTES
    return max(0, free // (CELL_BYTES + CELL_DAY_BYTES * days))


def expected_days(config: RunConfig, n_files: int) -> int:
    """Days of signalling a run will hold.

    ``window_days`` when set, a week for wide tables, else one per file (operators deliver a
    file a day).
    """
    s = config.signalling
    if s.window_days:
        return s.window_days
    if s.format == "wide":
        return 7
    return max(1, n_files)


def address_reserve() -> int:
    """Address space a run reserves beyond the memory it uses (:data:`ADDRESS_RESERVE_BYTES`)."""
    return ADDRESS_RESERVE_BYTES + ADDRESS_RESERVE_PER_CORE * (os.cpu_count() or 1)


def address_limited() -> bool:
    """Whether ``ulimit -v`` (an address space limit) is what bounds :func:`available_bytes`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return False
    left = soft - int(psutil.Process().memory_info().vms) - address_reserve()
    return left < int(psutil.virtual_memory().available)


ADDRESS_LIMIT_HINT = (
    "ulimit -v limits address space, which a run reserves gigabytes more of than it uses "
    "(thread stacks, malloc arenas): raise it, or cap memory with a cgroup instead "
    "(systemd-run -p MemoryMax=..., docker run --memory), which counts what is used"
)


def available_bytes() -> int:
    """Memory this process can still take.

    The system's available memory, or less under a cgroup (container) limit or an address
    space limit (``ulimit -v``, less the address space a run reserves beyond what it uses:
    without that, a run the plan let through died in OpenBLAS's allocator).
    """
    free = int(psutil.virtual_memory().available)
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        vms = int(psutil.Process().memory_info().vms)
        free = min(free, max(0, soft - vms - address_reserve()))
    limit, used = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    try:
        text = limit.read_text().strip()
        if text != "max":
            free = min(free, int(text) - int(used.read_text().strip()))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here
    return free


def worker_memory(config: RunConfig) -> int | None:
    """``dask.worker_memory_gb`` in bytes (None: not set)."""
    gb = config.dask.worker_memory_gb
    return None if gb is None else round(gb * _GB)


def check_memory(config: RunConfig, grid: CityGrid, n_files: int, available: int) -> None:
    """Refuse a run of the whole grid at once whose estimated peak exceeds ``available`` bytes.

    Raises:
        ConfigError: the estimate does not fit; the message says what to change.
    """
    days = expected_days(config, n_files)
    need = estimate_bytes(grid.n_cells, days)
    if need > available:
        found = (
            f"grid: {grid.n_cells:,} cells x {days} day(s) of signalling need about "
            f"{need / _GB:.1f} GB of memory, {available / _GB:.1f} GB is available"
        )
        raise ConfigError(_what_to_change(found, config, need, available))


def too_large(config: RunConfig, grid: CityGrid, days: int, available: int) -> str:
    """Why a run of ``grid`` cannot fit in ``available`` bytes even in the smallest partitions.

    What it keeps of every cell of the grid (probabilities, flags, the tables written out)
    does not fit beside the libraries and one partition.
    """
    need = estimate_bytes(grid.n_cells, days, 1)
    found = (
        f"grid: {grid.n_cells:,} cells: what a run keeps of every cell needs about "
        f"{need / _GB:.1f} GB of memory, {available / _GB:.1f} GB is available"
    )
    return _what_to_change(found, config, need, available)


def _what_to_change(found: str, config: RunConfig, need: int, available: int) -> str:
    if address_limited():
        return f"{found}; {ADDRESS_LIMIT_HINT}"
    if available <= BASE_BYTES:
        return f"{found}; close other programs or run on a machine with more memory"
    # Cells shrink with the square of the cell size: the size at which the estimate fits.
    factor = math.sqrt((need - BASE_BYTES) / (available - BASE_BYTES))
    size = math.ceil(config.grid.cell_size_m * factor / 10) * 10
    return (
        f"{found}; raise grid.cell_size_m to {size:g} or more, or split the extent into "
        f"{math.ceil(factor**2)} or more parts (one config each, or areas run with "
        "`urbanfusion batch --extents`)"
    )
