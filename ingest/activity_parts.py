"""A run's activity ``(cell, day, hour)``, handed out a partition at a time.

A run in one partition holds the activity of the whole grid; a run in several never does:
each partition's activity is made (from a spill, :mod:`.hourly_spill`) or read (from the run
store) when that partition is prepared, and the day axis is the run's, the same for all.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr

from urbanfusion.ingest.hourly import HourlyTotals, activity_dataset
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.partitions import Partition

_EPOCH = np.datetime64("1970-01-01", "D")


class Activity:
    """Activity per partition of a grid: ``of(part)`` is one partition's, as a dataset."""

    def __init__(
        self,
        grid: CityGrid,
        partitions: list[Partition],
        days: list[int],
        load: Callable[[int], np.ndarray],
    ) -> None:
        """``load(k)``: partition ``k``'s activity ``(cell, day, hour)`` float32, NaN unobserved.

        ``days``: days since 1970-01-01 of the day axis, the same for every partition.
        """
        self.grid = grid
        self.partitions = partitions
        self.days = days
        self._load = load

    @classmethod
    def whole(cls, ds: xr.Dataset, grid: CityGrid) -> Activity:
        """One partition, the whole grid, from a dataset in memory."""
        days = (ds["day"].values.astype("datetime64[D]") - _EPOCH).astype(np.int64).tolist()
        values = ds["activity"].values
        return cls(grid, [Partition(0, 0, grid.nrows, grid.ncols)], days, lambda _: values)

    @classmethod
    def from_totals(
        cls, totals: HourlyTotals, grid: CityGrid, first: int | None, last: int | None
    ) -> Activity:
        """The days of ``totals`` with data from ``first`` to ``last`` (None: open).

        In memory, or made from their spill a partition at a time when ``of`` asks for it.
        """
        spill = totals.spill
        if spill is None:
            return cls.whole(totals.dataset(grid.cell_ids(), first, last), grid)
        days = [
            d for d in totals.days if (first is None or d >= first) and (last is None or d <= last)
        ]
        # One partition's, never the grid's.
        return cls(grid, spill.partitions, days, lambda k: spill.activity(k, days))

    @property
    def day_dates(self) -> np.ndarray:
        """The day axis as dates (datetime64[ns])."""
        return (_EPOCH + np.array(self.days, dtype=np.int64)).astype("datetime64[ns]")

    def values(self, part: Partition) -> np.ndarray:
        """``part``'s activity ``(cell, day, hour)`` float32, NaN where unobserved.

        ``part`` is one of :attr:`partitions`, or any rectangle when the activity is one
        partition in memory.

        Raises:
            ValueError: ``part`` is not one of several partitions.
        """
        if part in self.partitions:
            return self._load(self.partitions.index(part))
        if len(self.partitions) > 1:
            raise ValueError(f"{part} is not one of the activity's partitions")
        return self._load(0)[part.cells(self.grid.ncols)]

    def of(self, part: Partition) -> xr.Dataset:
        """``part``'s activity as the activity contract (its cells in row-major order)."""
        cells = part.cells(self.grid.ncols)
        return activity_dataset(self.values(part), self.grid.cell_ids()[cells], self.day_dates)
