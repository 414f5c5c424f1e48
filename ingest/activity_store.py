"""Activity stored as Parquet, one row group per day, so later runs reuse it instead of re-reading.

The table holds observed (cell, day, hour) entries only: ``cell_id`` (the grid's stable id),
``day`` (local date), ``hour`` and ``count``. Unobserved hours are simply absent, never zero.
Because cell ids are stable across extents, a stored table can be read back onto any grid of the
same CRS and cell size (``signalling.format: activity``); cells outside it are counted as outside.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

SCHEMA = pa.schema(
    [("cell_id", pa.int64()), ("day", pa.date32()), ("hour", pa.int8()), ("count", pa.float32())]
)


def write_activity(path: Path, datasets: xr.Dataset | Iterable[xr.Dataset]) -> None:
    """Write the observed entries of activity datasets, one row group per dataset and day.

    Several datasets: the partitions of a grid, one in memory at a time from a generator.
    """
    parts = [datasets] if isinstance(datasets, xr.Dataset) else datasets
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as out:
        for ds in parts:
            cells = ds["cell"].values
            for i, day in enumerate(pd.DatetimeIndex(ds["day"].values)):
                observed = ds["observed"].values[:, i]
                cell, hour = np.nonzero(observed)
                out.write_table(
                    pa.table(
                        {
                            "cell_id": cells[cell],
                            "day": pa.array([day.date()] * len(cell), pa.date32()),
                            "hour": hour.astype(np.int8),
                            "count": ds["activity"].values[:, i][cell, hour].astype(np.float32),
                        },
                        schema=SCHEMA,
                    )
                )


def stored_blocks(path: Path) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Row groups of a stored table: cell ids, days since 1970-01-01, hours, counts."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1 << 20):
        yield (
            batch.column("cell_id").to_numpy(),
            batch.column("day").cast(pa.int32()).to_numpy().astype(np.int64),
            batch.column("hour").to_numpy().astype(np.int64),
            batch.column("count").to_numpy().astype(np.float64),
        )
