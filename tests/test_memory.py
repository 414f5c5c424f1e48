"""The plan-time memory estimate: what it counts and what it tells the user to change."""

import json
import resource
import subprocess
import sys

import pytest

from tests.conftest import write_config
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import ConfigError
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.workflows.memory import BASE_BYTES, check_memory, estimate_bytes, expected_days

GB = 2**30


def test_the_estimate_grows_with_cells_days_and_the_partition():
    assert estimate_bytes(200_000, 16) > estimate_bytes(200_000, 8) > estimate_bytes(100_000, 8)
    # A province at 250 m, a week of files: at once, about half a 24 GB machine; in
    # partitions of 131,072 cells, what it keeps of every cell and one partition.
    whole, parts = estimate_bytes(5_455_326, 8), estimate_bytes(5_455_326, 8, 131_072)
    assert whole > 11 * GB and parts < 3.5 * GB


def test_days_come_from_the_window_else_one_per_file(tmp_path, small_city):
    config = load_config(write_config(tmp_path / "c.yaml", small_city))
    assert expected_days(config, 8) == 8 and expected_days(config, 0) == 1
    windowed = load_config(
        write_config(tmp_path / "w.yaml", small_city, **{"signalling.window_days": 3})
    )
    assert expected_days(windowed, 400) == 3


def test_a_grid_that_fits_passes_and_one_that_does_not_names_the_fix(tmp_path, small_city):
    config = load_config(write_config(tmp_path / "c.yaml", small_city, **{"grid.cell_size_m": 25}))
    grid = CityGrid.from_extent(config.extent, 25.0, 32, config.crs)
    need = estimate_bytes(grid.n_cells, 8)
    check_memory(config, grid, 8, available=need)  # just fits
    with pytest.raises(ConfigError) as err:
        check_memory(config, grid, 8, available=BASE_BYTES + (need - BASE_BYTES) // 4)
    message = str(err.value)
    assert f"{grid.n_cells:,} cells x 8 day(s)" in message
    assert f"{need / GB:.1f} GB" in message
    # A quarter of the memory: cells about 2x larger on a side, or 4+ parts.
    size = int(message.split("grid.cell_size_m to ")[1].split()[0])
    assert 50 <= size <= 70
    assert "into 4 or more parts" in message or "into 5 or more parts" in message
    with pytest.raises(ConfigError, match="close other programs"):
        check_memory(config, grid, 8, available=BASE_BYTES // 2)


# Runs the command line in-process and says its peak resident memory (VmHWM) on stderr's last
# line: what one process of a run took, whatever else the test process ran before.
_PEAK = """
import re, sys
from urbanfusion.workflows.cli import main
sys.argv = ["urbanfusion", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
status = open("/proc/self/status").read()
print("VmHWM", re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1), file=sys.stderr)
sys.exit(code)
"""


def _capped(cap: int, *args: str) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run(
        [sys.executable, "-c", _PEAK, *args],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_under_a_memory_cap_runs_by_partition_within_its_plan_or_is_refused_early(
    tmp_path, small_city
):
    from urbanfusion.workflows.memory import address_reserve
    from urbanfusion.workflows.planning import plan_run

    cfg = write_config(
        tmp_path / "c.yaml",
        small_city,
        **{"grid.partition_cells": 16},
    )
    plan = plan_run(load_config(cfg), workers=1)
    assert len(plan.partitions) > 8
    # The cap the plan needs: the interpreter's start, the address space a run reserves beyond
    # what it uses, and the plan's estimate of the run's own process.
    enough = int(1.2 * GB) + address_reserve() + plan.driver_bytes
    ran = _capped(enough, "run", str(cfg), "--force", "--quiet")
    assert ran.returncode == 0, ran.stderr[-2000:]
    peak_kb = int(ran.stderr.strip().splitlines()[-1].split()[1])
    assert peak_kb * 1024 <= plan.driver_bytes  # the run stayed within what its plan said
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["partitions"]["count"] == len(plan.partitions)

    # A cap the run cannot live in: one line, before any work, never an allocator's crash.
    refused = _capped(3 * GB, "run", str(cfg), "--force")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 2, refused.stderr  # the error, VmHWM
    assert "ulimit -v limits address space" in lines[0] and "cgroup" in lines[0]
