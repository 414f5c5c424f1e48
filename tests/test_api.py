"""The Python API: plan, run and open_result, as a notebook user holds them."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio

import urbanfusion.api as uf
from tests.conftest import write_config
from urbanfusion.models.classes import CLASS_NAMES, NO_CLASS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def city_yaml(small_city, tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("api") / "city.yaml", small_city)


@pytest.fixture(scope="module")
def first(city_yaml) -> uf.RunResult:
    return uf.run(city_yaml)


def test_the_api_names_plan_run_open_result_and_its_version():
    assert {"plan", "run", "open_result", "load_config", "RunConfig"} <= set(uf.__all__)
    assert all(hasattr(uf, name) for name in uf.__all__)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert uf.__version__ == project["version"]


def test_plan_takes_a_yaml_path_or_a_config_and_reads_no_pixels(city_yaml):
    from_path = uf.plan(city_yaml)
    from_config = uf.plan(uf.load_config(city_yaml), workers=4, worker_memory_gb=2.0)
    assert from_path.grid.n_cells == from_config.grid.n_cells == 13 * 14
    assert len(from_path.tiles) == 4 and from_path.signalling_files
    assert len(from_path.partitions) == 1 and len(from_config.partitions) >= 4
    assert from_path.seconds > 0 and from_path.lines()[0].startswith("demo-city-11")


def test_open_result_is_the_run_s_maps_on_the_grid_with_its_crs(first):
    ds = uf.open_result(first)
    grid = first.grid
    assert dict(ds.sizes) == {"y": grid.nrows, "x": grid.ncols, "class": len(CLASS_NAMES)}
    assert ds.rio.crs == grid.crs and ds.rio.transform() == grid.transform
    # Cell centres, north up.
    assert ds.x[0] == grid.transform.c + grid.cell_size / 2 and (np.diff(ds.y) < 0).all()
    np.testing.assert_array_equal(ds.class_id.to_numpy().ravel(), first.class_id)
    assert list(ds["class"].to_numpy()) == list(CLASS_NAMES)
    assert ds.class_id.attrs["flag_meanings"].split() == list(CLASS_NAMES)
    predicted = ds.class_id != NO_CLASS
    total = ds.probability.sum("class").where(predicted)
    assert np.allclose(total.to_numpy()[predicted.to_numpy()], 1, atol=1e-4)
    argmax = ds.probability.fillna(-1).argmax("class")
    assert (argmax.where(predicted) == ds.class_id.where(predicted)).all()
    assert ds.attrs["run_id"] == first.run_id and ds.attrs["city"] == "demo-city-11"


def test_open_result_carries_each_cell_s_margin_and_domain_score(first):
    ds = uf.open_result(first)
    cells = pyogrio.read_dataframe(first.outputs["cells.gpkg"], layer="cells", read_geometry=False)
    for name in ("margin", "domain_score"):
        on_grid = ds[name].to_numpy()[cells["row"], cells["col"]]
        np.testing.assert_array_equal(on_grid, cells[name].to_numpy(np.float32))
    assert (ds.in_domain == (ds.domain_score <= 1)).all()
    assert ds.has_imagery.dtype == bool and bool(ds.has_signalling.any())


def test_a_class_raster_written_from_the_dataset_matches_the_published_map(first, tmp_path):
    uf.open_result(first).class_id.rio.to_raster(tmp_path / "class.tif")
    with (
        rasterio.open(tmp_path / "class.tif") as a,
        rasterio.open(first.outputs["class_map.tif"]) as b,
    ):
        assert a.crs == b.crs and a.transform == b.transform
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_an_earlier_run_opens_as_itself_after_a_newer_one_is_published(first, city_yaml):
    second = uf.run(city_yaml, force=True)
    assert second.run_id != first.run_id
    assert uf.open_result(first.output_dir).attrs["run_id"] == second.run_id
    earlier = uf.open_result(first)
    # The history keeps an older run's class map only.
    assert earlier.attrs["run_id"] == first.run_id and set(earlier.data_vars) == {"class_id"}
    np.testing.assert_array_equal(earlier.class_id.to_numpy().ravel(), first.class_id)


def test_a_rerun_with_nothing_changed_opens_the_published_run(first, city_yaml):
    again = uf.run(city_yaml)
    assert again.up_to_date
    assert uf.open_result(again).attrs["run_id"] == again.run_id


def test_a_folder_without_a_run_is_one_clear_error(tmp_path):
    with pytest.raises(uf.UrbanFusionError, match="holds no published run"):
        uf.open_result(tmp_path)


def test_nothing_imports_the_api_by_its_folder_s_name():
    folder_name = ".".join(("urbanfusion", "workflows", "api"))
    for path in ROOT.glob("*/**/*.py"):
        if ".venv" not in path.parts:
            assert folder_name not in path.read_text(encoding="utf-8"), path


def test_cells_as_geoparquet_hold_the_geopackage_s_table(first, small_city, tmp_path):
    import geopandas as gpd

    cfg = write_config(tmp_path / "c.yaml", small_city, **{"output.cells_format": "parquet"})
    result = uf.run(cfg)
    assert "cells.parquet" in result.outputs and "cells.gpkg" not in result.outputs
    assert not (result.output_dir / "cells.gpkg").exists()
    ours = gpd.read_parquet(result.outputs["cells.parquet"])
    theirs = gpd.read_file(first.outputs["cells.gpkg"], layer="cells")
    assert ours.crs == theirs.crs and list(ours.columns) == list(theirs.columns)
    assert ours.geometry.geom_equals(theirs.geometry).all()
    np.testing.assert_array_equal(ours["class_id"], theirs["class_id"])
    np.testing.assert_allclose(ours["margin"], theirs["margin"])
    ds = uf.open_result(result)
    grid = result.grid
    assert "domain_score" in ds and dict(ds.sizes) == {"y": grid.nrows, "x": grid.ncols, "class": 9}
    asset = json.loads(result.outputs["item.json"].read_text())["assets"]["cells.parquet"]
    assert asset["type"] == "application/vnd.apache.parquet"
    # Back to the GeoPackage: the folder's names follow the latest run, no link left dangling.
    back = write_config(tmp_path / "c.yaml", small_city)
    again = uf.run(back)
    assert "cells.gpkg" in again.outputs and not (again.output_dir / "cells.parquet").is_symlink()
