"""An extent given as an area (a feature of a vector file): only its cells are computed."""

import json

import geopandas as gpd
import numpy as np
import pytest
import yaml
from shapely.geometry import Polygon

import urbanfusion.api as uf
from tests.conftest import write_config
from urbanfusion.models.classes import NO_CLASS


def _areas(path, box):
    """Two features over the city's box: a triangle (its half) and a far-away square."""
    x0, y0, x1, y1 = box
    gpd.GeoDataFrame(
        {"name": ["half", "elsewhere"]},
        geometry=[
            Polygon([(x0, y0), (x1, y0), (x0, y1)]),
            Polygon([(0, 0), (0.01, 0), (0.01, 0.01), (0, 0.01)]),
        ],
        crs="EPSG:4326",
    ).to_file(path, layer="cities")
    return path


@pytest.fixture(scope="module")
def runs(small_city, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("area")
    box = tuple(yaml.safe_load(small_city.config.read_text())["extent"])
    areas = _areas(tmp / "areas.gpkg", box)
    (tmp / "box").mkdir()
    (tmp / "area").mkdir()
    whole = uf.run(write_config(tmp / "box" / "c.yaml", small_city))
    area = {"path": str(areas), "layer": "cities", "field": "name", "value": "half"}
    cfg = write_config(tmp / "area" / "c.yaml", small_city, extent=area)
    return whole, uf.run(cfg), cfg, areas


def test_cells_outside_the_area_get_no_prediction_and_say_why(runs):
    whole, half, _, _ = runs
    assert half.grid == whole.grid  # the triangle's box is the city's box
    cells = gpd.read_file(half.outputs["cells.gpkg"], layer="cells")
    outside = (cells["no_data_reason"] == "outside the extent's area").to_numpy()
    assert 0.3 < outside.mean() < 0.7
    assert (half.class_id[outside] == NO_CLASS).all()
    # Inside, the cells are those of the whole box's run, to the bit.
    inside = ~outside
    np.testing.assert_array_equal(half.class_id[inside], whole.class_id[inside])
    ours, theirs = uf.open_result(half), uf.open_result(whole)
    mask = inside.reshape(half.grid.nrows, half.grid.ncols)
    np.testing.assert_array_equal(
        ours.probability.to_numpy()[:, mask], theirs.probability.to_numpy()[:, mask]
    )
    m = half.manifest
    assert m["cells"]["no_prediction"]["outside the extent's area"] == int(outside.sum())
    assert m["area"]["cells_inside"] == int(inside.sum())
    assert m["extent_wgs84"] == pytest.approx(list(whole.manifest["extent_wgs84"]))


def test_a_changed_area_file_makes_the_run_again(runs):
    from urbanfusion.workflows.run import what_would_run

    *_, cfg, areas = runs
    assert uf.run(cfg).up_to_date
    table = gpd.read_file(areas, layer="cities")
    table.loc[0, "geometry"] = table.geometry[0].buffer(-0.001)
    table.to_file(areas, layer="cities")
    assert what_would_run(uf.load_config(cfg)).startswith("would run: area changed")
    assert not uf.run(cfg).up_to_date


@pytest.mark.parametrize(
    ("extent", "says"),
    [
        ({"value": "nowhere"}, "no feature with that value (values like ['elsewhere', 'half'])"),
        ({"field": "title"}, "no field 'title'"),
        ({"layer": "towns"}, "cannot read it"),
        ({"path": "missing.gpkg"}, "does not exist"),
        ({"value": "elsewhere"}, "touches the extent"),
    ],
)
def test_a_bad_area_is_one_line(runs, small_city, tmp_path, extent, says):
    _, _, _, areas = runs
    area = {"path": str(areas), "layer": "cities", "field": "name", "value": "half", **extent}
    cfg = write_config(tmp_path / "c.yaml", small_city, extent=area)
    with pytest.raises(uf.UrbanFusionError) as err:
        uf.run(cfg)
    assert says in str(err.value) and "\n" not in str(err.value)
    out = tmp_path / "out"  # nothing published: at most the lock and the store are left
    assert (
        set(p.name for p in out.iterdir()) <= {".urbanfusion.lock", "store"}
        if out.exists()
        else True
    )


def test_the_api_plan_of_an_area_reads_no_pixels_and_knows_its_cells(runs):
    *_, cfg, _ = runs
    planned = uf.plan(cfg).layout
    assert planned.inside is not None
    assert planned.inside.sum() == uf.run(cfg).manifest["area"]["cells_inside"]
    assert json.loads(json.dumps(list(planned.bbox)))  # a plain box in degrees


def test_chunks_without_a_cell_of_the_area_are_not_computed(
    runs, small_city, tmp_path, monkeypatch
):
    from urbanfusion.ingest import imagery

    monkeypatch.setattr(imagery, "CHUNK_TARGET_PX", 128)  # 4 x 4 cells a chunk: 4 x 4 chunks
    *_, areas = runs
    area = {"path": str(areas), "layer": "cities", "field": "name", "value": "half"}
    half = uf.run(write_config(tmp_path / "c.yaml", small_city, extent=area))
    box = uf.run(write_config(tmp_path / "b.yaml", small_city, **{"output.dir": "box"}))
    chips = half.manifest["store"]["chips"]
    assert 0 < chips["computed"] < box.manifest["store"]["chips"]["computed"]
    stored = {p.name for p in (half.output_dir / "store" / "chips").glob("*.npy")}
    assert len(stored) == chips["computed"] + chips["reused"]


def test_a_batch_of_extents_runs_one_city_per_feature(runs, small_city, tmp_path):
    from typer.testing import CliRunner

    from urbanfusion.workflows.cli import app

    box = tuple(yaml.safe_load(small_city.config.read_text())["extent"])
    x0, y0, x1, y1 = box
    cities = tmp_path / "cities.geojson"
    gpd.GeoDataFrame(
        {"city": ["West Side", "East Side"]},
        geometry=[
            Polygon([(x0, y0), ((x0 + x1) / 2, y0), ((x0 + x1) / 2, y1), (x0, y1)]),
            Polygon([((x0 + x1) / 2, y0), (x1, y0), (x1, y1), ((x0 + x1) / 2, y1)]),
        ],
        crs="EPSG:4326",
    ).to_file(cities)
    template = write_config(tmp_path / "template.yaml", small_city)
    report = tmp_path / "batch.json"
    result = CliRunner().invoke(
        app,
        ["batch", "--extents", str(cities), "--template", str(template), "--field", "city",
         "--report", str(report)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(report.read_text())["results"]
    assert [r["city"] for r in rows] == ["West-Side", "East-Side"]  # as the configs are named
    assert all(r["status"] == "ok" for r in rows)
    west = uf.open_result(tmp_path / "out" / "West-Side")
    east = uf.open_result(tmp_path / "out" / "East-Side")
    assert west.attrs["city"] == "West Side" and east.rio.crs == west.rio.crs
    assert (tmp_path / "cities-cities" / "West-Side.yaml").is_file()
    # A name that is not one: one line.
    bad = CliRunner().invoke(app, ["batch", "--extents", str(cities), "--template", str(template)])
    assert bad.exit_code == 2 and "no field 'name'" in bad.output


@pytest.mark.parametrize(
    ("extent", "says"),
    [
        ([113.6, 34.7, 113.7], "extent must be [min_lon, min_lat, max_lon, max_lat]"),
        (["a", "b", "c", "d"], "extent must be [min_lon, min_lat, max_lon, max_lat]"),
        ({"path": "a.gpkg"}, "an area extent needs path and value"),
        ({"path": "a.gpkg", "value": "x", "colour": "red"}, "colour: Extra inputs"),
    ],
)
def test_an_extent_in_neither_form_says_which_form_is_wrong(small_city, tmp_path, extent, says):
    cfg = write_config(tmp_path / "c.yaml", small_city, extent=extent)
    with pytest.raises(uf.UrbanFusionError) as err:
        uf.load_config(cfg)
    assert says in str(err.value) and "tuple[" not in str(err.value)
