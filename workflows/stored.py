"""How the stages find their results in the run store, and keep what they compute there.

The store itself (:mod:`urbanfusion.pipeline.store`) knows nothing of stages; here each kind of
result gets its fingerprint: exactly the inputs' identities, the settings and the code it
depends on. Used by :mod:`.stages` when a run has an output folder.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
from dask.base import compute
from dask.delayed import delayed

from urbanfusion.ingest import imagery as imagery_stage
from urbanfusion.ingest.activity_parts import Activity
from urbanfusion.ingest.hourly_spill import HourlySpill
from urbanfusion.ingest.imagery import ChunkSources
from urbanfusion.ingest.points_store import KIND as POINTS_KIND
from urbanfusion.ingest.points_store import load_part, part_files, read_and_keep
from urbanfusion.ingest.signalling import SignallingReport, load_activity
from urbanfusion.ingest.signalling.days import day_number, iso
from urbanfusion.ingest.store_keys import (
    activity_key,
    chips_keys,
    points_part_key,
)
from urbanfusion.pipeline.config import ImageryConfig, RunConfig
from urbanfusion.pipeline.fingerprint import digest
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.partitions import Partition
from urbanfusion.pipeline.release import release_memory
from urbanfusion.pipeline.store import ResultStore


def stored_activity(
    grid: CityGrid,
    config: RunConfig,
    paths: list[Path],
    store: ResultStore,
    partitions: list[Partition],
) -> tuple[Activity, pd.DataFrame, SignallingReport, str]:
    """The activity of the signalling files ``paths``, from the store when they are unchanged.

    Returns the activity (kept a partition at a time: its ``of`` reads one partition's from the
    store), the rejected rows, the report and the activity's fingerprint. With several
    partitions the rows are spilled to disk a partition at a time while they are read
    (:mod:`urbanfusion.ingest.hourly_spill`), so no step holds the whole grid's days.

    ``points`` files are also kept one by one: when files are added (a new day), only those are
    read, each by its own task (on the cluster's workers when there is one).
    """
    cfg = config.resolved_signalling
    part_keys = [points_part_key(grid, cfg, f) for f in (paths if cfg.format == "points" else [])]
    key = digest([activity_key(grid, cfg, paths), [list(p) for p in partitions]])
    record, rejects = store.path("activity", key, "json"), store.path("activity", key, "parquet")
    values = [store.path("activity", f"{key}-{k}", "npy") for k in range(len(partitions))]
    if store.use("activity", key, "json"):
        store.keep(*values, rejects)
        for k in part_keys:  # still the parts of these files, for the next new day
            store.keep(*part_files(store, k).values())
        saved = store.load_json(record)
        report = SignallingReport(**saved["report"])  # type: ignore[index]
        days = [day_number(dt.date.fromisoformat(d)) for d in saved["days"]]  # type: ignore[index]
        return _stored(grid, partitions, days, values), pd.read_parquet(rejects), report, key
    parts = None
    if part_keys:
        files = [part_files(store, k) for k in part_keys]
        tasks = [
            delayed(read_and_keep)(f, grid, cfg, part)
            for f, k, part in zip(paths, part_keys, files, strict=True)
            if not store.use(POINTS_KIND, k, "json")
        ]
        for k in part_keys:
            store.keep(*part_files(store, k).values())
        compute(*tasks)
        parts = (load_part(part) for part in files)
    store.keep(*values, rejects)
    with _spill_folder(store, len(partitions)) as folder:
        spill = None if folder is None else HourlySpill(folder, grid.ncols, partitions)
        activity, table, report = load_activity(paths, grid, cfg, parts, spill)
        for part, path in zip(partitions, values, strict=True):  # one partition at a time
            store.save_array(path, activity.values(part))
            release_memory()
    rejects.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(rejects, index=False)
    store.save_json(record, {"days": [iso(d) for d in activity.days], "report": report.to_dict()})
    return _stored(grid, partitions, activity.days, values), table, report, key


def _stored(
    grid: CityGrid, partitions: list[Partition], days: list[int], values: list[Path]
) -> Activity:
    return Activity(grid, partitions, days, lambda k: ResultStore.load_array(values[k]))


@contextlib.contextmanager
def _spill_folder(store: ResultStore, n_partitions: int) -> Iterator[Path | None]:
    """A folder in the store for a spill of several partitions, removed after (None: one)."""
    if n_partitions == 1:
        yield None
        return
    store.root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".spill-", dir=store.root) as folder:
        yield Path(folder)


def stored_chips(
    grid: CityGrid,
    imagery: ImageryConfig,
    chips: da.Array,
    sources: ChunkSources,
    store: ResultStore,
    outside: frozenset[tuple[int, int]] = frozenset(),
) -> tuple[da.Array, dict[tuple[int, int], str]]:
    """Chips whose chunks come from the store when their tiles are unchanged, else are kept.

    ``sources``: per chunk, the tiles it is made of (:attr:`Imagery.chunk_sources`). Returns
    the chips and each chunk's key. Chunks in ``outside`` (no cell of an
    extent's area) are NaN: neither computed nor stored.
    """
    chunk_px = grid.chunks(imagery_stage.CHUNK_TARGET_PX).size
    as_dicts = {rc: [s.to_dict() for s in layers] for rc, layers in sources.items()}
    keys = chips_keys(grid, imagery, chunk_px, as_dicts)
    blocks = chips.to_delayed()
    rows: list[da.Array] = []
    for r, height in enumerate(chips.chunks[0]):
        row = []
        for c, width in enumerate(chips.chunks[1]):
            path = store.path("chips", keys[(r, c)], "npy")
            shape = (height, width, *chips.shape[2:])
            if (r, c) in outside:
                row.append(da.full(shape, np.nan, dtype=chips.dtype, chunks=shape))
                continue
            if store.use("chips", keys[(r, c)], "npy"):
                block = delayed(ResultStore.load_array)(path)
            else:
                block = delayed(ResultStore.save_array)(path, blocks[r, c, 0, 0, 0])
            row.append(da.from_delayed(block, shape, dtype=chips.dtype))
        rows.append(da.concatenate(row, axis=1))
    return da.concatenate(rows, axis=0), keys
