import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio

from tests.conftest import write_config
from urbanfusion.models.classes import CLASS_NAMES, NO_CLASS
from urbanfusion.pipeline.config import load_config
from urbanfusion.workflows.manifest import NO_INPUT_REASON
from urbanfusion.workflows.run import run


@pytest.fixture(scope="module")
def result(small_city, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("run") / "city.yaml", small_city)
    return run(load_config(cfg)), load_config(cfg)


def test_class_map_is_a_valid_cog_with_colours_and_class_names(result):
    res, _ = result
    with rasterio.open(res.outputs["class_map.tif"]) as src:
        assert src.driver == "GTiff" and src.profile["tiled"]
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.overviews(1), "a COG needs overviews"
        assert src.crs.to_epsg() == 32649 and src.nodata == NO_CLASS and src.dtypes[0] == "uint8"
        assert src.tags()["CLASS_NAMES"].split(",") == list(CLASS_NAMES)
        assert src.colormap(1)[0][:3] != src.colormap(1)[1][:3]
        grid = res.grid
        assert grid.cell_size == 250 and grid.chip_px == 32
        assert src.transform == grid.transform and (src.height, src.width) == (
            grid.nrows,
            grid.ncols,
        )
        assert (src.read(1).ravel() == res.class_id).all()


def test_probabilities_have_one_named_band_per_class_summing_to_one(result):
    res, _ = result
    with rasterio.open(res.outputs["probabilities.tif"]) as src:
        assert src.count == len(CLASS_NAMES) and list(src.descriptions) == list(CLASS_NAMES)
        prob = src.read()
    total = prob.sum(axis=0)
    assert np.allclose(total[~np.isnan(total)], 1, atol=1e-4)


def test_cells_gpkg_holds_every_cell_with_a_class_or_a_reason(result):
    res, _ = result
    cells = gpd.read_file(res.outputs["cells.gpkg"], layer="cells")
    grid = res.grid
    assert len(cells) == grid.n_cells and set(cells.cell_id) == set(grid.cell_ids())
    assert cells.crs.to_epsg() == 32649
    expected = {
        "cell_id",
        "row",
        "col",
        "class_id",
        "class_name",
        "confidence",
        "has_imagery",
        "has_signalling",
        "no_data_reason",
    } | {f"p_{c}" for c in CLASS_NAMES}
    assert expected <= set(cells.columns)
    predicted = cells.class_id != NO_CLASS
    assert (cells.loc[predicted, "class_name"].isin(CLASS_NAMES)).all()
    assert (cells.loc[~predicted, "no_data_reason"] == NO_INPUT_REASON).all()
    assert predicted.mean() > 0.95


def test_manifest_accounts_for_inputs_rows_and_model(result):
    res, _ = result
    m = json.loads(res.outputs["manifest.json"].read_text())
    s = m["signalling"]
    assert s["rows_read"] == s["rows_aggregated"] + s["rows_rejected"] + s["rows_outside"]
    assert s["rows_rejected"] > 0 and s["rejects_file"] == "rejects.parquet"
    assert m["imagery"]["tiles_used"] == 4 and m["imagery"]["tiles_failed"] == []
    assert len(m["model"]["sha256"]) == 64 and m["model"]["provider"].endswith("ExecutionProvider")
    assert {"plan", "ingest", "prepare", "predict", "write", "hash"} <= set(m["timings_s"])
    assert m["gdal_settings"]["GDAL_CACHEMAX"]  # set on purpose, and recorded
    assert all(len(f["sha256"]) == 64 for f in m["inputs"]["tiles"] + m["inputs"]["signalling"])


def test_quicklook_shows_the_imagery_beneath_the_classes(result):
    import cv2

    from urbanfusion.workflows.quicklook import CLASS_ALPHA

    res, _ = result
    image = cv2.imread(str(res.outputs["quicklook.png"]))
    assert image is not None and image.shape[0] > 200
    # The map's top-left cell: flat colour if classes hid the picture, texture if they do not.
    scale = 800 // max(res.class_id.size**0.5, 1)
    cell = image[45 : 40 + int(scale) - 5, 15 : 10 + int(scale) - 5].astype(float)
    assert cell.std(axis=(0, 1)).mean() > 5 and 0 < CLASS_ALPHA < 1


def test_an_unseen_demo_city_is_mostly_in_the_model_s_domain(result):
    res, _ = result
    share = res.manifest["cells"]["in_domain_share"]
    assert share is not None and share > 0.7
    cells = gpd.read_file(res.outputs["cells.gpkg"], layer="cells")
    assert cells["in_domain"].mean() == pytest.approx(share, abs=1e-9)
    assert (cells["in_domain"] == (cells["domain_score"] <= 1)).all()


def test_cells_carry_the_margin_between_the_two_likeliest_classes(result):
    res, _ = result
    cells = gpd.read_file(res.outputs["cells.gpkg"], layer="cells")
    probs = np.sort(cells.filter(like="p_").to_numpy(), axis=1)
    predicted = cells["class_name"] != ""
    expected = probs[predicted, -1] - probs[predicted, -2]
    assert np.allclose(cells.loc[predicted, "margin"], expected, atol=1e-6)
    assert ((cells["margin"][predicted] >= 0) & (cells["margin"][predicted] <= 1)).all()


def test_the_shipped_model_maps_an_unseen_city_well(result, small_city):
    from urbanfusion.ingest.labels import NO_LABEL, cell_labels, read_zones
    from urbanfusion.models.metrics import scores

    res, _ = result
    labels, _ = cell_labels(res.grid, read_zones(small_city.zones, CLASS_NAMES), len(CLASS_NAMES))
    keep = (labels != NO_LABEL) & (res.class_id != NO_CLASS)
    assert scores(labels[keep], res.class_id[keep], CLASS_NAMES)["overall_accuracy"] > 0.7


def test_a_distributed_local_cluster_gives_the_same_map_as_threads(result, small_city, tmp_path):
    cfg = write_config(
        tmp_path / "city.yaml", small_city, dask={"scheduler": "local-cluster", "workers": 2}
    )
    other = run(load_config(cfg))
    assert other.manifest["dask"]["scheduler"].startswith("local-cluster")
    np.testing.assert_array_equal(other.class_id, result[0].class_id)
