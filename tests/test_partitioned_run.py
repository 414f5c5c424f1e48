"""A run cut into partitions makes the same outputs as a run in one, byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest

import urbanfusion.api as uf
from tests.conftest import write_config
from urbanfusion.workflows.output_names import (
    ACTIVITY,
    CELLS,
    CELLS_PARQUET,
    CHANGES,
    CLASS_MAP,
    PROBABILITIES,
    QUICKLOOK,
    REJECTS,
)

# Outputs whose bytes hold nothing of when or by which run they were written.
SAME_BYTES = (CLASS_MAP, PROBABILITIES, REJECTS, QUICKLOOK)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(city, folder: Path, **changes: object) -> uf.RunResult:
    folder.mkdir()
    return uf.run(write_config(folder / "city.yaml", city, **changes))


@pytest.fixture(scope="module")
def one_partition(small_city, tmp_path_factory) -> uf.RunResult:
    return _run(small_city, tmp_path_factory.mktemp("one") / "run")


def _assert_same_outputs(a: uf.RunResult, b: uf.RunResult) -> None:
    for name in SAME_BYTES:
        assert _sha(a.run_folder / name) == _sha(b.run_folder / name), name
    for name in (CELLS, CHANGES):  # a GeoPackage records when it was written: its tables
        pd.testing.assert_frame_equal(
            gpd.read_file(a.run_folder / name), gpd.read_file(b.run_folder / name)
        )
    # The activity table: the same rows, in row groups per partition and day.
    rows = [pd.read_parquet(r.run_folder / ACTIVITY) for r in (a, b)]
    rows = [t.sort_values(["day", "cell_id", "hour"], ignore_index=True) for t in rows]
    pd.testing.assert_frame_equal(*rows)
    assert (a.class_id == b.class_id).all()


def test_four_partitions_aligned_to_the_chunks_make_the_same_maps(
    one_partition, small_city, tmp_path, monkeypatch
):
    from urbanfusion.ingest import imagery

    # 4 cells a chunk: partitions of at most 64 cells are 8 x 8, 4 of them on the 13 x 13 city.
    monkeypatch.setattr(imagery, "CHUNK_TARGET_PX", 128)
    one = _run(small_city, tmp_path / "one")  # the same chunks, in one partition
    four = _run(small_city, tmp_path / "four", **{"grid.partition_cells": 64})
    assert four.manifest["partitions"]["count"] == 4
    assert one.manifest["partitions"]["count"] == 1
    _assert_same_outputs(one, four)


def test_partitions_that_cut_through_chunks_make_the_same_maps(one_partition, small_city, tmp_path):
    # Squares of half the city's side: each cuts its one chunk of imagery (32 x 32 cells).
    side = -(-max(one_partition.grid.nrows, one_partition.grid.ncols) // 2)
    parts = _run(small_city, tmp_path / "parts", **{"grid.partition_cells": side * side})
    assert parts.manifest["partitions"]["count"] == 4
    _assert_same_outputs(one_partition, parts)


def test_maps_and_cells_written_in_batches_of_rows_are_those_written_at_once(
    one_partition, small_city, tmp_path, monkeypatch
):
    from urbanfusion.workflows import write

    monkeypatch.setattr(write, "CELLS_BATCH", 30)  # 2 rows of the 14-column city a batch
    gpkg = _run(small_city, tmp_path / "gpkg")
    for name in (CLASS_MAP, PROBABILITIES):  # window by window: the same COG
        assert _sha(gpkg.run_folder / name) == _sha(one_partition.run_folder / name)
    parquet = _run(small_city, tmp_path / "parquet", **{"output.cells_format": "parquet"})
    whole = gpd.read_file(one_partition.run_folder / CELLS, layer="cells")
    pd.testing.assert_frame_equal(gpd.read_file(gpkg.run_folder / CELLS, layer="cells"), whole)
    table = gpd.read_parquet(parquet.run_folder / CELLS_PARQUET)
    pd.testing.assert_frame_equal(table, whole, check_dtype=False)
    assert table.crs == whole.crs and tuple(table.total_bounds) == one_partition.grid.bounds


def test_the_partitions_size_is_not_a_change_of_the_outputs(one_partition, small_city):
    config = uf.load_config(one_partition.output_dir.parent / "city.yaml")
    config = config.model_copy(
        update={"grid": config.grid.model_copy(update={"partition_cells": 36})}
    )
    assert uf.run(config).up_to_date
