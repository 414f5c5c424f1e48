"""A ``points`` signalling file read on its own (:class:`~.signalling.PointsPart`), on disk.

Each file of a run is read by its own task (on a dask worker when the run uses a cluster) and
kept in the run store under a fingerprint of the file's identity, the signalling settings, the
grid and the code; the run then combines the parts one at a time (:func:`.load_signalling`),
so memory holds one file's rows at most, and a nightly run reads only its new daily file.

Files of a part ``<key>``: ``.rows.parquet`` (place, day, hour, count, line), ``.places.npy``
(complex lon + 1j*lat), ``.rejects.parquet`` and ``.json`` (its counts), written last: a part
without its ``.json`` is not there.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from urbanfusion.ingest.signalling import PointsPart, SignallingReport, points_part
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.store import ResultStore

KIND = "signalling-files"
_EXTENSIONS = ("rows.parquet", "places.npy", "rejects.parquet", "json")
_ROWS = ("place", "day", "hour", "count", "line")


def part_files(store: ResultStore, key: str) -> dict[str, Path]:
    """The paths of part ``key``'s files, by extension (the ``json`` says the part is whole)."""
    return {ext: store.path(KIND, key, ext) for ext in _EXTENSIONS}


def read_and_keep(path: Path, grid: CityGrid, cfg: SignallingConfig, files: dict[str, Path]) -> str:
    """Read one file and keep its part (a task: returns only the file's path, not its rows)."""
    part = points_part(path, grid, cfg)
    files["rows.parquet"].parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({c: getattr(part, c) for c in _ROWS}).to_parquet(files["rows.parquet"])
    ResultStore.save_array(files["places.npy"], part.places)
    part.rejects.to_parquet(files["rejects.parquet"], index=False)
    record = {"source": part.source, "report": part.report.to_dict(), "reasons": part.reasons}
    ResultStore.save_json(files["json"], record)
    return str(path)


def load_part(files: dict[str, Path]) -> PointsPart:
    """A part kept by :func:`read_and_keep`."""
    record = ResultStore.load_json(files["json"])
    rows = pd.read_parquet(files["rows.parquet"])
    return PointsPart(
        record["source"],  # type: ignore[index]
        ResultStore.load_array(files["places.npy"]),
        *(rows[c].to_numpy() for c in _ROWS),
        rejects=pd.read_parquet(files["rejects.parquet"]),
        report=SignallingReport(**record["report"]),  # type: ignore[index]
        reasons=dict(record["reasons"]),  # type: ignore[index]
    )
