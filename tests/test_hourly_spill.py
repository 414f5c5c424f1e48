"""Totals spilled a partition at a time are the in-memory totals, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from urbanfusion.ingest.activity_parts import Activity
from urbanfusion.ingest.hourly import HourlyTotals
from urbanfusion.ingest.hourly_spill import HourlySpill
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.partitions import partition_grid

GRID = CityGrid.from_extent((113.60, 34.70, 113.66, 34.75), 500.0, 8)


def _fill(totals: HourlyTotals, seed: int) -> None:
    """Rows over several flushes, fractional counts, a spread day, then a window's cuts."""
    rng = np.random.default_rng(seed)
    n = GRID.n_cells
    for _ in range(7):
        rows = 5_000
        totals.add(
            rng.integers(0, n, rows),
            rng.integers(20_000, 20_006, rows),
            rng.integers(0, 24, rows),
            rng.random(rows) * 1e3,  # not whole numbers: the order of additions shows
        )
    values = rng.random((n, 24)) * (rng.random((n, 24)) < 0.5)
    totals.add_dense(20_003, values, values > 0.2)
    assert totals.drop_before(20_001)[0] > 0
    assert totals.drop_before(20_001) == (0, 0)  # dropped once
    # A dropped day that gets rows again holds only those.
    totals.add(np.arange(10), np.full(10, 20_000), np.zeros(10, np.int64), np.ones(10))
    totals.drop_after(20_004)


@pytest.mark.parametrize("max_cells", [40, 97, 10_000])
def test_spilled_totals_are_the_totals_in_memory(tmp_path, monkeypatch, max_cells):
    monkeypatch.setattr(HourlyTotals, "FLUSH_ROWS", 12_000)  # a flush every few blocks
    parts = partition_grid(GRID.nrows, GRID.ncols, max_cells, align=4)
    memory = HourlyTotals(GRID.n_cells)
    spilled = HourlyTotals(GRID.n_cells, HourlySpill(tmp_path, GRID.ncols, parts))
    for totals in (memory, spilled):
        _fill(totals, seed=3)
    assert memory.days == spilled.days == [20_000, 20_001, 20_002, 20_003, 20_004]
    assert memory.rows_by_day == spilled.rows_by_day
    assert memory.observed_hours() == spilled.observed_hours()
    whole = Activity.from_totals(memory, GRID, None, None)
    parted = Activity.from_totals(spilled, GRID, 20_002, None)
    assert parted.days == whole.days[2:]
    assert np.nansum(whole.values(whole.partitions[0])[:, 0]) == 10
    for part in parts:
        expected = whole.values(part)[:, 2:]
        assert np.array_equal(parted.values(part), expected, equal_nan=True)
        assert parted.values(part).tobytes() == np.ascontiguousarray(expected).tobytes()


def test_spilled_totals_are_read_only_a_partition_at_a_time(tmp_path):
    parts = partition_grid(GRID.nrows, GRID.ncols, 40, align=1)
    spilled = HourlyTotals(GRID.n_cells, HourlySpill(tmp_path, GRID.ncols, parts))
    spilled.add(np.arange(3), np.full(3, 20_000), np.zeros(3, np.int64), np.ones(3))
    with pytest.raises(RuntimeError, match="a partition at a time"):
        spilled.sums  # noqa: B018
    activity = Activity.from_totals(spilled, GRID, None, None)
    with pytest.raises(ValueError, match="not one of"):
        activity.values(parts[0]._replace(nrows=1))
