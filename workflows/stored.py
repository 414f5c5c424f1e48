"""How the stages find their results in the run store, and keep what they compute there.

The store itself (:mod:`urbanfusion.pipeline.store`) knows nothing of stages; here each kind of
result gets its fingerprint: exactly the inputs' identities, the settings and the code it
depends on. Used by :mod:`.stages` when a run has an output folder.
"""

from __future__ import annotations

from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from urbanfusion.ingest import imagery as imagery_stage
from urbanfusion.ingest.hourly import activity_dataset
from urbanfusion.ingest.points_store import KIND as POINTS_KIND
from urbanfusion.ingest.points_store import load_part, part_files, read_and_keep
from urbanfusion.ingest.signalling import SignallingReport, load_signalling
from urbanfusion.pipeline.config import ImageryConfig, RunConfig
from urbanfusion.pipeline.fingerprint import code_fingerprint, digest, file_identity
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.store import ResultStore


def stored_activity(
    grid: CityGrid, config: RunConfig, paths: list[Path], store: ResultStore
) -> tuple[xr.Dataset, pd.DataFrame, SignallingReport, str]:
    """The activity of the signalling files ``paths``, from the store when they are unchanged.

    Returns the activity, the rejected rows, the report and the activity's fingerprint.

    ``points`` files are also kept one by one: when files are added (a new day), only those are
    read, each by its own task (on the cluster's workers when there is one).
    """
    cfg = config.resolved_signalling
    platform_grid = Path(cfg.grid.path) if cfg.grid is not None else None
    common = {
        "signalling": cfg.model_dump(mode="json", exclude={"paths", "window_days"}),
        "grid": grid.describe(),
        "code": code_fingerprint(),
    }
    part_keys = [
        digest({**common, "file": file_identity(f)})
        for f in (paths if cfg.format == "points" else [])
    ]
    key = digest(
        {
            **common,
            "window_days": cfg.window_days,
            "files": [file_identity(f) for f in paths],
            "platform_grid": file_identity(platform_grid) if platform_grid else None,
        }
    )
    record, values, rejects = (store.path("activity", key, e) for e in ("json", "npy", "parquet"))
    if store.has("activity", key, "json"):
        store.keep(values, rejects)
        for k in part_keys:  # still the parts of these files, for the next new day
            store.keep(*part_files(store, k).values())
        saved = store.load_json(record)
        days = np.array(saved["days"], dtype="datetime64[ns]")  # type: ignore[index]
        ds = activity_dataset(store.load_array(values), grid.cell_ids(), days)
        report = SignallingReport(**saved["report"])  # type: ignore[index]
        return ds, pd.read_parquet(rejects), report, key
    parts = None
    if part_keys:
        files = [part_files(store, k) for k in part_keys]
        tasks = [
            dask.delayed(read_and_keep)(f, grid, cfg, part)
            for f, k, part in zip(paths, part_keys, files, strict=True)
            if not store.has(POINTS_KIND, k, "json")
        ]
        for k in part_keys:
            store.keep(*part_files(store, k).values())
        dask.compute(*tasks)
        parts = (load_part(part) for part in files)
    ds, table, report = load_signalling(paths, grid, cfg, parts)
    store.keep(values, rejects)
    store.save_array(values, ds["activity"].values)
    rejects.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(rejects, index=False)
    days = [str(d)[:10] for d in ds["day"].values.astype("datetime64[D]")]
    store.save_json(record, {"days": days, "report": report.to_dict()})  # written last
    return ds, table, report, key


def stored_chips(
    grid: CityGrid,
    imagery: ImageryConfig,
    chips: da.Array,
    sources: dict[tuple[int, int], list[dict[str, object]]],
    store: ResultStore,
) -> tuple[da.Array, str]:
    """Chips whose chunks come from the store when their tiles are unchanged, else are kept.

    ``sources``: per chunk, the tiles it is made of (the imagery's ``chunk_sources``). Returns
    the chips and a fingerprint of all their chunks.
    """
    common = {
        "grid": grid.describe(),
        "chunk_px": grid.chunks(imagery_stage.CHUNK_TARGET_PX).size,
        "bands": imagery.bands,
        "dehaze": imagery.dehaze,
        "code": code_fingerprint(),
    }
    blocks = chips.to_delayed()
    rows: list[da.Array] = []
    keys = []
    for r, height in enumerate(chips.chunks[0]):
        row = []
        for c, width in enumerate(chips.chunks[1]):
            key = digest({**common, "chunk": [r, c], "sources": sources[(r, c)]})
            keys.append(key)
            path = store.path("chips", key, "npy")
            if store.has("chips", key, "npy"):
                block = dask.delayed(ResultStore.load_array)(path)
            else:
                block = dask.delayed(ResultStore.save_array)(path, blocks[r, c, 0, 0, 0])
            shape = (height, width, *chips.shape[2:])
            row.append(da.from_delayed(block, shape, dtype=chips.dtype))
        rows.append(da.concatenate(row, axis=1))
    return da.concatenate(rows, axis=0), digest(keys)
