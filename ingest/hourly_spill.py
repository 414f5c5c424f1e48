"""Hourly totals written to disk a partition at a time, so no process holds a region's days.

:class:`~urbanfusion.ingest.hourly.HourlyTotals` adds rows in groups (a flush of buffered rows,
or a whole day spread from a platform's grid). With a spill, each group is appended to one file
per partition and day instead of being summed into arrays of the whole grid; a partition's sums
are made later from its files alone, a day at a time, group by group in the order they were
written, with the same
additions per cell and hour as the whole grid's arrays would have had: the same values, bit for
bit, whatever the partitions.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from urbanfusion.pipeline.partitions import Partition

# One row of a group: the group's number and day, the cell (in its partition) x 24 + hour, the
# count, and whether the row observes its hour (a row always does; a spread day may not).
RECORD = np.dtype(
    [("group", "<i4"), ("day", "<i4"), ("flat", "<i8"), ("count", "<f8"), ("observed", "?")]
)


class HourlySpill:
    """Files of hourly rows, one per partition of a grid and day, in the order they were added."""

    def __init__(self, folder: Path, grid_ncols: int, partitions: list[Partition]) -> None:
        """Spill rows of a grid ``grid_ncols`` wide into ``folder``, split by ``partitions``."""
        self.folder = folder
        self.partitions = partitions
        n_cells = sum(p.n_cells for p in partitions)
        self._bucket = np.empty(n_cells, np.int32)
        self._local = np.empty(n_cells, np.int64)
        for k, part in enumerate(partitions):
            cells = part.cells(grid_ncols)
            self._bucket[cells] = k
            self._local[cells] = np.arange(part.n_cells)
        folder.mkdir(parents=True, exist_ok=True)
        self._groups = 0
        # Per day: rows of groups before this number are left out (days a window dropped).
        self._dropped: dict[int, int] = {}

    def path(self, k: int, day: int) -> Path:
        """The file of partition ``k``'s rows of ``day`` (absent: none)."""
        return self.folder / f"partition-{k}-day-{day}.rows"

    def add_group(
        self, day: int, flat: np.ndarray, count: np.ndarray, observed: np.ndarray | None = None
    ) -> None:
        """Append one group of a day's rows (``flat``: cell x 24 + hour in the whole grid)."""
        cell, hour = np.divmod(flat, 24)
        bucket = self._bucket[cell]
        order = np.argsort(bucket, kind="stable")  # each partition's rows in the order given
        bounds = np.searchsorted(bucket[order], np.arange(len(self.partitions) + 1))
        for k in range(len(self.partitions)):
            rows = order[bounds[k] : bounds[k + 1]]
            if not rows.size:
                continue
            rec = np.empty(rows.size, RECORD)
            rec["group"], rec["day"] = self._groups, day
            rec["flat"] = self._local[cell[rows]] * 24 + hour[rows]
            rec["count"] = count[rows]
            rec["observed"] = True if observed is None else observed[rows]
            with self.path(k, day).open("ab") as f:
                rec.tofile(f)
        self._groups += 1

    def drop_day(self, day: int) -> None:
        """Leave out every row of ``day`` added so far."""
        self._dropped[day] = self._groups

    def activity(self, k: int, days: list[int]) -> np.ndarray:
        """Partition ``k``'s activity ``(cell, day, 24)`` float32 for ``days``, NaN unobserved.

        Made a day at a time: memory holds the partition's activity and one day's sums.
        """
        n = self.partitions[k].n_cells
        out = np.empty((n, len(days), 24), np.float32)
        for i, sums, seen in self._days(k, days):
            out[:, i] = np.where(seen, sums, np.nan).reshape(n, 24)
        return out

    def observed_hours(self, days: list[int]) -> dict[int, int]:
        """Per day, how many (cell, hour) pairs its rows observed, over every partition."""
        out = dict.fromkeys(days, 0)
        for k in range(len(self.partitions)):
            for i, _, seen in self._days(k, days):
                out[days[i]] += int(seen.sum())
        return out

    def _days(self, k: int, days: list[int]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Per day of ``days`` (its index): partition ``k``'s sums and observed flags, flat.

        A day's file at a time: memory holds one day's rows of one partition.
        """
        size = self.partitions[k].n_cells * 24
        for i, day in enumerate(days):
            path = self.path(k, day)
            rows = np.fromfile(path, RECORD) if path.exists() else np.zeros(0, RECORD)
            if day in self._dropped:
                rows = rows[rows["group"] >= self._dropped[day]]
            sums, seen = np.zeros(size, np.float64), np.zeros(size, bool)
            # Group by group, in the order they were added, as the whole grid's arrays add them.
            starts = np.flatnonzero(np.diff(rows["group"], prepend=-1))
            for group in np.split(rows, starts[1:]) if len(rows) else []:
                sums += np.bincount(group["flat"], weights=group["count"], minlength=size)
                seen[group["flat"][group["observed"]]] = True
            yield i, sums, seen
