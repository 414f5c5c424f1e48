import os

import numpy as np
import pytest
import rasterio
from affine import Affine

import urbanfusion.ingest.tile_index as ti
from urbanfusion.ingest.imagery import load_imagery
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.pipeline.grid import CityGrid

GRID = CityGrid.from_bounds((740000, 3849000, 741000, 3850000), 250, 8, "EPSG:32649")


def _tile(path, value, date_tag=None, count=3, descriptions=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=50,
        height=50,
        count=count,
        dtype="uint8",
        crs="EPSG:32649",
        transform=Affine(20, 0, 740000, 0, -20, 3850000),
    ) as dst:
        dst.write(np.full((count, 50, 50), value, np.uint8))
        if date_tag:
            dst.update_tags(TIFFTAG_DATETIME=date_tag)
        for i, d in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, d)
        if count == 4:  # GDAL would take a fourth byte band for alpha; this one is data
            from rasterio.enums import ColorInterp as C

            dst.colorinterp = [C.blue, C.green, C.red, C.undefined]
    return path


def test_the_index_rereads_only_files_that_changed(tmp_path, monkeypatch):
    a, b = _tile(tmp_path / "a.tif", 10), _tile(tmp_path / "b.tif", 20)
    calls = []
    real = ti.describe_tile
    monkeypatch.setattr(ti, "describe_tile", lambda p: calls.append(p.name) or real(p))
    ti.tile_index([a, b])
    ti.tile_index([a, b])
    assert calls == ["a.tif", "b.tif"]  # the second time everything came from the cache
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 10**9))
    index = ti.tile_index([a, b])
    assert calls == ["a.tif", "b.tif", "b.tif"]
    assert index["path"].tolist() == [str(a), str(b)] and (index["error"] == "").all()


def test_acquisition_dates_come_from_tags_or_names(tmp_path):
    a = _tile(tmp_path / "scene.tif", 1, date_tag="2024:05:17 10:11:12")
    b = _tile(tmp_path / "S2_20230102_T49SGU.tif", 1)
    c = _tile(tmp_path / "plain.tif", 1)
    index = ti.tile_index([a, b, c], use_cache=False)
    assert index["acquired"].tolist() == ["2024-05-17", "2023-01-02", None]


def test_the_newest_acquisition_wins_where_tiles_overlap(tmp_path):
    old = _tile(tmp_path / "a_old.tif", 50, date_tag="2020:01:01 00:00:00")
    new = _tile(tmp_path / "b_new.tif", 200, date_tag="2025:06:01 00:00:00")
    image, reports, _ = load_imagery([old, new], GRID, [1, 2, 3], dehaze="never")
    assert np.allclose(image.values, 200 / 255)
    assert [r.acquired for r in reports] == ["2020-01-01", "2025-06-01"]


def test_bands_can_be_chosen_by_name(tmp_path):
    path = _tile(tmp_path / "bgrn.tif", 0, count=4, descriptions=["blue", "green", "red", "nir"])
    with rasterio.open(path, "r+") as dst:
        for i, v in enumerate((10, 20, 30, 40), start=1):
            dst.write(np.full((50, 50), v, np.uint8), i)
    image, _, _ = load_imagery([path], GRID, ["red", "green", "blue"], dehaze="never")
    assert np.allclose(image.values[:, 0, 0] * 255, [30, 20, 10])
    with pytest.raises(InputFormatError, match="no band named 'swir'"):
        load_imagery([path], GRID, ["swir"], dehaze="never")


def test_strict_lets_a_city_of_good_tiles_through(tmp_path):
    good = [_tile(tmp_path / f"good{i}.tif", 10 + i) for i in range(2)]
    _, reports, _ = load_imagery(good, GRID, [1, 2, 3], dehaze="never", strict=True)
    assert [r.status for r in reports] == ["used", "used"]


def test_strict_turns_a_failed_tile_into_an_error(tmp_path):
    good = _tile(tmp_path / "good.tif", 10)
    bad = tmp_path / "bad.tif"
    bad.write_bytes(good.read_bytes()[:200])
    _, reports, _ = load_imagery([good, bad], GRID, [1, 2, 3], dehaze="never")
    assert [r.status for r in reports] == ["used", "failed"] and reports[1].reason
    with pytest.raises(InputFormatError, match="--strict"):
        load_imagery([good, bad], GRID, [1, 2, 3], dehaze="never", strict=True)


def test_a_wkt_crs_without_epsg_code_lands_where_it_should(shared_data):
    path = shared_data / "geotiff" / "rgb1.tif"
    with rasterio.open(path) as src:
        crs, bounds, data = src.crs, src.bounds, src.read(1)
        assert src.crs.to_epsg() is None
        px, py = src.transform @ (src.width * 0.4 + 0.5, src.height * 0.6 + 0.5)
        expected = data[int(src.height * 0.6), int(src.width * 0.4)] / 255
    from rasterio.warp import transform, transform_bounds

    utm = "EPSG:32632" if bounds.left > -30 else "EPSG:32618"
    grid = CityGrid.from_bounds(transform_bounds(crs, utm, *bounds), 100 * 8, 8, utm)
    image, reports, _ = load_imagery([path], grid, [1, 2, 3], dehaze="never")
    assert reports[0].status == "used"
    (x,), (y,) = transform(crs, grid.crs, [px], [py])
    col, row = ~grid.pixel_transform @ (x, y)
    got = image.values[0, int(row), int(col)]
    assert abs(got - expected) < 0.08  # the same ground, resampled


def test_a_tiles_own_alpha_band_is_its_mask(tmp_path):
    path = tmp_path / "rgba.tif"
    data = np.full((4, 50, 50), 120, np.uint8)
    data[3] = 255
    data[3, :25, :] = 0  # the northern half is transparent
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=50,
        height=50,
        count=4,
        dtype="uint8",
        crs="EPSG:32649",
        photometric="RGB",
        alpha="YES",
        transform=Affine(20, 0, 740000, 0, -20, 3850000),
    ) as dst:
        dst.write(data)
    image, _, _ = load_imagery([path], GRID, [1, 2, 3], dehaze="never")
    values = image.values
    assert np.isnan(values[:, :8]).all() and np.allclose(values[:, -8:], 120 / 255)


def test_a_coarse_tile_listed_first_only_fills_what_finer_tiles_leave(tmp_path):
    # GRID's pixels are 31.25 m; a 500 m tile covering more than the extent, listed first.
    coarse = tmp_path / "coarse.tif"
    with rasterio.open(
        coarse,
        "w",
        driver="GTiff",
        width=8,
        height=8,
        count=3,
        dtype="uint8",
        crs="EPSG:32649",
        transform=Affine(500, 0, 738000, 0, -500, 3851000),
    ) as dst:
        dst.write(np.full((3, 8, 8), 40, np.uint8))
    fine = _tile(tmp_path / "fine.tif", 200)  # covers the whole extent at 20 m
    image, reports, _ = load_imagery([coarse, fine], GRID, [1, 2, 3], dehaze="never")
    assert np.allclose(image.values, 200 / 255)
    assert reports[0].status == "used" and "used only where no finer tile" in reports[0].note
    assert reports[1].note == ""
