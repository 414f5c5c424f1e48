"""How much memory a run will need, known from its grid before any work starts.

A run holds a few arrays per cell for the whole grid at once: the hourly sums of every day with
signalling, the weekly activity features, the probabilities and the tables written out. So its
peak grows with cells x days, while the imagery is read, dehazed and predicted chunk by chunk.
The constants are fitted to measured peaks (``benchmarks/run_memory.py``: 1,680 to 434,560
cells, 8 and 32 days; within 5 % from 6,720 cells up, 10 % under at 1,680 where the interpreter
dominates), so a grid that cannot fit is refused in the plan stage, in a second, not after
minutes of work.
"""

from __future__ import annotations

import math
from pathlib import Path

import psutil

from urbanfusion.pipeline.config import RunConfig
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid

# Fitted on this project's 2-core reference machine (see the module docstring).
BASE_BYTES = 520 * 2**20  # interpreter, libraries, model session, one chunk of imagery
CELL_BYTES = 2_400  # features, probabilities, output tables and rasters, per cell
CELL_DAY_BYTES = 380  # hourly sums, observed flags and the activity array, per cell and day

_GB = 2**30


def estimate_bytes(n_cells: int, days: int) -> int:
    """Peak memory of a run over ``n_cells`` cells with ``days`` days of signalling."""
    return BASE_BYTES + n_cells * (CELL_BYTES + CELL_DAY_BYTES * days)


def cells_that_fit(available: int, days: int) -> int:
    """The most cells a run with ``days`` days of signalling can hold in ``available`` bytes."""
    return max(0, (available - BASE_BYTES) // (CELL_BYTES + CELL_DAY_BYTES * days))


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


def available_bytes() -> int:
    """Memory this process can still take.

    The system's available memory, or less under a cgroup (container) limit.
    """
    free = int(psutil.virtual_memory().available)
    limit, used = Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")
    try:
        text = limit.read_text().strip()
        if text != "max":
            free = min(free, int(text) - int(used.read_text().strip()))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here
    return free


def check_memory(config: RunConfig, grid: CityGrid, n_files: int, available: int) -> None:
    """Refuse a run whose estimated peak exceeds ``available`` bytes, saying what to change.

    Raises:
        ConfigError: the estimate does not fit.
    """
    days = expected_days(config, n_files)
    need = estimate_bytes(grid.n_cells, days)
    if need <= available:
        return
    found = (
        f"grid: {grid.n_cells:,} cells x {days} day(s) of signalling need about "
        f"{need / _GB:.1f} GB of memory, {available / _GB:.1f} GB is available"
    )
    if available <= BASE_BYTES:
        raise ConfigError(f"{found}; close other programs or run on a machine with more memory")
    # Cells shrink with the square of the cell size: the size at which the estimate fits.
    factor = math.sqrt((need - BASE_BYTES) / (available - BASE_BYTES))
    size = math.ceil(config.grid.cell_size_m * factor / 10) * 10
    raise ConfigError(
        f"{found}; raise grid.cell_size_m to {size:g} or more, split the extent into "
        f"{math.ceil(factor**2)} or more parts (one config each, run with `urbanfusion batch`), "
        "or set signalling.window_days (`urbanfusion plan` shows it in partitions)"
    )
