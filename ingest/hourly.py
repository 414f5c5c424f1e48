"""Accumulators for hourly signalling: distinct points, seen (point, hour) pairs, cell totals.

A city-week has tens of millions of rows but only about a hundred thousand distinct points, so
points are projected once (:class:`PointIndex`) and rows carry a point id. Totals are dense per
day (cells x 24), so memory depends on the grid and the days, never on the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import Transformer

from urbanfusion.ingest.coords import to_wgs84
from urbanfusion.ingest.hourly_spill import HourlySpill
from urbanfusion.pipeline.grid import CityGrid

_EPOCH = np.datetime64("1970-01-01", "D")


class PointIndex:
    """Distinct (lon, lat) points in the declared datum, each with its grid cell (-1 outside)."""

    def __init__(self, grid: CityGrid, datum: str) -> None:
        """Index points for ``grid``; coordinates are in ``datum`` (wgs84, gcj02, bd09)."""
        self.grid = grid
        self.datum = datum
        self._to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
        self._index = pd.Index(np.zeros(0, np.complex128))
        self.cell = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.cell)

    def keys(self, start: int = 0) -> np.ndarray:
        """The points from id ``start`` on as ``lon + 1j * lat`` (complex128), in id order."""
        return self._index[start:].to_numpy(dtype=np.complex128)

    def cells_as(self, datum: str) -> np.ndarray:
        """Each point's grid cell (-1 outside) had its coordinates been given in ``datum``."""
        keys = self.keys()
        x, y = self._to_grid.transform(*to_wgs84(keys.real, keys.imag, datum))
        return self.grid.cell_index(x, y)

    def ids(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Point ids of finite coordinates, adding (and projecting) points not seen before."""
        key = lon + 1j * lat
        ids = self._index.get_indexer(pd.Index(key))
        new = ids < 0
        if new.any():
            fresh = pd.unique(key[new])
            wlon, wlat = to_wgs84(fresh.real, fresh.imag, self.datum)
            x, y = self._to_grid.transform(wlon, wlat)
            self.cell = np.concatenate([self.cell, self.grid.cell_index(x, y)])
            self._index = self._index.append(pd.Index(fresh))
            ids[new] = self._index.get_indexer(pd.Index(key[new]))
        return ids


class SeenHours:
    """Which (key, local day, hour) records have been seen, to find re-sent duplicates."""

    def __init__(self) -> None:
        """Nothing seen yet."""
        self._seen: dict[int, np.ndarray] = {}
        self._marked: dict[int, int] = {}  # records seen per day

    def first_time(self, key: np.ndarray, day: np.ndarray, hour: np.ndarray) -> np.ndarray:
        """True where a record is new; marks them seen. Repeats inside the batch count too."""
        out = np.ones(len(key), dtype=bool)
        if len(key) == 0:
            return out
        for d, sel in _by_day(day):
            flat = key[sel] * 24 + hour[sel]
            seen = self._seen.get(int(d))
            need = int(flat.max()) + 1
            if seen is None or len(seen) < need:
                grown = np.zeros(max(need, 2 * (0 if seen is None else len(seen))), dtype=bool)
                if seen is not None:
                    grown[: len(seen)] = seen
                self._seen[int(d)] = seen = grown
            new = ~seen[flat]
            seen[flat] = True
            marked = int(np.count_nonzero(seen))
            # As many records newly marked as rows new to the bitmap: no repeat inside the batch
            # (the usual case), found without hashing the batch.
            if marked - self._marked.get(int(d), 0) != int(new.sum()):
                new &= ~pd.Series(flat).duplicated().to_numpy()
            self._marked[int(d)] = marked
            out[sel] = new
        return out


def _days(day: np.ndarray) -> range:
    """The days from the first to the last in ``day`` (cheaper than np.unique: rows are days)."""
    return range(int(day.min()), int(day.max()) + 1) if len(day) else range(0)


def _by_day(day: np.ndarray) -> Iterator[tuple[int, np.ndarray | slice]]:
    """Each day in ``day`` with the rows of that day (all of them, uncopied, when one day)."""
    days = _days(day)
    if len(days) == 1:
        yield days[0], slice(None)
        return
    for d in days:
        sel = np.flatnonzero(day == d)
        if sel.size:
            yield d, sel


class HourlyTotals:
    """Sums of counts and whether any row was seen, per (cell, local day, hour).

    In memory for the whole grid, or, with a ``spill``, written a partition at a time to disk
    (:mod:`.hourly_spill`): then the sums are read back a partition at a time
    (:meth:`HourlySpill.sums`), never for the whole grid.
    """

    # Rows buffered per day before one bincount: a bincount costs the grid's size, so it is
    # worth paying once per few million rows, not once per block.
    FLUSH_ROWS = 2_000_000

    def __init__(self, n_cells: int, spill: HourlySpill | None = None) -> None:
        """Empty totals for ``n_cells`` cells (written to ``spill`` when given)."""
        self.n_cells = n_cells
        self.spill = spill
        self._spilled_days: set[int] = set()
        self._sums: dict[int, np.ndarray] = {}
        self._observed: dict[int, np.ndarray] = {}  # bool per (cell, hour)
        self._pending: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        self._pending_rows = 0
        # Rows and the sum of their counts added per day (by `add`), for the signalling ledger.
        self.rows_by_day: dict[int, int] = {}
        self.count_by_day: dict[int, float] = {}

    @property
    def sums(self) -> dict[int, np.ndarray]:
        """Sum of counts per day, flat ``cell * 24 + hour`` (not with a spill)."""
        self._flush()
        self._in_memory()
        return self._sums

    @property
    def observed(self) -> dict[int, np.ndarray]:
        """Whether any row was seen per day, flat ``cell * 24 + hour`` (not with a spill)."""
        self._flush()
        self._in_memory()
        return self._observed

    def _in_memory(self) -> None:
        if self.spill is not None:
            raise RuntimeError("spilled totals are read a partition at a time: HourlySpill.sums")

    def _flush(self) -> None:
        size = self.n_cells * 24
        for d, parts in self._pending.items():
            flat = np.concatenate([f for f, _ in parts])
            count = np.concatenate([c for _, c in parts])
            if self.spill is not None:
                self.spill.add_group(d, flat, count)
                self._spilled_days.add(d)
                continue
            sums, seen = self._day(d)
            sums += np.bincount(flat, weights=count, minlength=size)
            seen[flat] = True
        self._pending.clear()
        self._pending_rows = 0

    def _day(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        if d not in self._sums:
            self._sums[d] = np.zeros(self.n_cells * 24, np.float64)
            self._observed[d] = np.zeros(self.n_cells * 24, bool)
        return self._sums[d], self._observed[d]

    def add(self, cell: np.ndarray, day: np.ndarray, hour: np.ndarray, count: np.ndarray) -> None:
        """Add rows: cells (row-major index), days since 1970-01-01, local hours, counts."""
        for d, sel in _by_day(day):
            flat, day_count = cell[sel] * 24 + hour[sel], count[sel]
            self._pending.setdefault(d, []).append((flat, day_count))
            self.rows_by_day[d] = self.rows_by_day.get(d, 0) + len(flat)
            self.count_by_day[d] = self.count_by_day.get(d, 0.0) + float(day_count.sum())
        self._pending_rows += len(day)
        if self._pending_rows >= self.FLUSH_ROWS:
            self._flush()

    def add_dense(self, day: int, values: np.ndarray, observed: np.ndarray) -> None:
        """Add a whole day ``(cell, 24)`` at once (spread from another grid)."""
        self._flush()
        if self.spill is not None:
            flat = np.flatnonzero(observed.ravel() | (values.ravel() != 0))
            self.spill.add_group(day, flat, values.ravel()[flat], observed.ravel()[flat])
            self._spilled_days.add(day)
            return
        sums, seen = self._day(day)
        sums += values.ravel()
        seen |= observed.ravel()

    def drop_before(self, first: int) -> tuple[int, float]:
        """Forget the days before ``first``; returns the rows and the count they had."""
        old = [d for d in self.days if d < first]
        self._forget(old)
        rows = sum(self.rows_by_day.pop(d, 0) for d in old)
        return rows, sum(self.count_by_day.pop(d, 0.0) for d in old)

    def drop_after(self, last: int) -> tuple[int, float]:
        """Forget the days after ``last``; returns the rows and the count they had."""
        late = [d for d in self.days if d > last]
        self._forget(late)
        rows = sum(self.rows_by_day.pop(d, 0) for d in late)
        return rows, sum(self.count_by_day.pop(d, 0.0) for d in late)

    def _forget(self, days: list[int]) -> None:
        for d in days:
            if self.spill is not None:
                self.spill.drop_day(d)
                self._spilled_days.discard(d)
            else:
                del self._sums[d], self._observed[d]

    def observed_hours(self) -> dict[int, int]:
        """Per day with data, how many (place, hour) pairs it observed: where the data is."""
        if self.spill is not None:
            return self.spill.observed_hours(self.days)
        return {d: int(seen.sum()) for d, seen in sorted(self.observed.items())}

    @property
    def days(self) -> list[int]:
        """Days with data, sorted."""
        self._flush()
        return sorted(self._spilled_days if self.spill is not None else self._sums)

    def dataset(
        self, cell_ids: np.ndarray, first: int | None = None, last: int | None = None
    ) -> xr.Dataset:
        """Activity ``(cell, day, hour)`` float32 (NaN where unobserved) and ``observed``.

        The days are those with data between ``first`` and ``last`` (days since 1970-01-01;
        default: all of them). The day axis is sparse on purpose: one row dated 2300 adds one
        day, not a hundred thousand empty ones. A day without any row has nothing to say.
        """
        days = [
            d for d in self.days if (first is None or d >= first) and (last is None or d <= last)
        ]
        activity = np.full((self.n_cells, len(days), 24), np.nan, dtype=np.float32)
        for i, d in enumerate(days):
            sums = self.sums[d].reshape(self.n_cells, 24)
            seen = self.observed[d].reshape(self.n_cells, 24)
            activity[:, i] = np.where(seen, sums, np.nan)
        return activity_dataset(activity, cell_ids, _EPOCH + np.array(days, dtype=np.int64))


def activity_dataset(activity: np.ndarray, cell_ids: np.ndarray, days: np.ndarray) -> xr.Dataset:
    """The activity contract: ``activity`` (cell, day, hour) float32 (NaN unobserved), ``observed``.

    ``days`` are the dates of the day axis (datetime64).
    """
    return xr.Dataset(
        {
            "activity": (("cell", "day", "hour"), activity),
            "observed": (("cell", "day", "hour"), ~np.isnan(activity)),
        },
        coords={"cell": cell_ids, "day": days.astype("datetime64[ns]"), "hour": np.arange(24)},
    )


def day_and_hour(when: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Days since 1970-01-01 and hours of local wall times (datetime64)."""
    day = when.astype("datetime64[D]")
    hour = ((when - day) // np.timedelta64(1, "h")).astype(np.int64)
    return (day - _EPOCH).astype(np.int64), hour
