"""A ``points`` signalling file read on its own (:class:`~.signalling.PointsPart`), on disk.

Each file of a run is read by its own task (on a dask worker when the run uses a cluster) and
kept in the run store under a fingerprint of the file's identity, the signalling settings, the
grid and the code; the run then combines the parts one at a time (:func:`.load_signalling`),
so memory holds a block of rows, and a nightly run reads only its new daily file.

Files of a part ``<key>``: ``.rows.parquet`` (place, day, hour, count, line), ``.places.npy``
(complex lon + 1j*lat), ``.rejects.parquet`` and ``.json`` (its counts), written last: a part
without its ``.json`` is not there.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from urbanfusion.ingest.signalling import PointRows, PointsPart, RowLedger, points_part
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.prefetch import prefetched
from urbanfusion.pipeline.store import ResultStore

KIND = "signalling-files"
_EXTENSIONS = ("rows.parquet", "places.npy", "rejects.parquet", "json")
_ROWS = ("place", "day", "hour", "count", "line")
_WIDE = {"i": np.int64, "f": np.float64}
# Narrow on disk (a day fits int32, an hour int8), int64 again in memory.
_SCHEMA = pa.schema(
    [
        ("place", pa.int64()),
        ("day", pa.int32()),
        ("hour", pa.int8()),
        ("count", pa.float64()),
        ("line", pa.int64()),
    ]
)


def part_files(store: ResultStore, key: str) -> dict[str, Path]:
    """The paths of part ``key``'s files, by extension (the ``json`` says the part is whole)."""
    return {ext: store.path(KIND, key, ext) for ext in _EXTENSIONS}


def read_and_keep(path: Path, grid: CityGrid, cfg: SignallingConfig, files: dict[str, Path]) -> str:
    """Read one file and keep its part (a task: returns only the file's path, not its rows).

    The rows are written block by block (a row group each), so memory holds a block.
    """
    part = points_part(path, grid, cfg)
    files["rows.parquet"].parent.mkdir(parents=True, exist_ok=True)
    places = []
    with pq.ParquetWriter(files["rows.parquet"], _SCHEMA) as rows:
        for block in prefetched(part.blocks):
            places.append(block.new_places)
            rows.write_table(pa.table({c: getattr(block, c) for c in _ROWS}, schema=_SCHEMA))
    ResultStore.save_array(files["places.npy"], np.concatenate([np.zeros(0, complex), *places]))
    part.ledger.rejects().to_parquet(files["rejects.parquet"], index=False)
    ResultStore.save_json(files["json"], part.ledger.record(part.source))
    return str(path)


def load_part(files: dict[str, Path]) -> PointsPart:
    """A part kept by :func:`read_and_keep`; its rows are read as its blocks are taken."""
    record = ResultStore.load_json(files["json"])
    if not isinstance(record, dict):
        raise ValueError(f"{files['json']} is not a part's record")
    ledger = RowLedger.from_record(record, pd.read_parquet(files["rejects.parquet"]))
    return PointsPart(str(record["source"]), _stored_blocks(files), ledger)


def _stored_blocks(files: dict[str, Path]) -> Iterator[PointRows]:
    places = ResultStore.load_array(files["places.npy"])
    rows = pq.ParquetFile(files["rows.parquet"])
    # A row group at a time: iter_batches buffers far ahead (hundreds of MB on a city-week).
    for i in range(rows.num_row_groups):
        group = rows.read_row_group(i)
        columns = (group.column(c).to_numpy() for c in _ROWS)
        yield PointRows(places, *(v.astype(_WIDE[v.dtype.kind], copy=False) for v in columns))
        places = places[:0]
