import numpy as np
import pytest
import rasterio
from affine import Affine

from urbanfusion.ingest.imagery import load_imagery
from urbanfusion.pipeline.errors import InputFormatError, NoCoverageError
from urbanfusion.pipeline.grid import CityGrid


def _grid_over(path, cell=2400.0, chip=8, crs=None):
    with rasterio.open(path) as src:
        from rasterio.warp import transform_bounds

        crs = crs or src.crs
        b = transform_bounds(src.crs, crs, *src.bounds)
    return CityGrid.from_bounds(b, cell, chip, crs)


def test_nodata_border_of_a_real_landsat_scene_stays_nodata(shared_data):
    path = shared_data / "geotiff" / "RGB.byte.tif"
    grid = _grid_over(path)
    image, reports, _ = load_imagery([path], grid, [1, 2, 3], dehaze="never")
    data = image.values
    assert reports[0].status == "used"
    with rasterio.open(path) as src:
        border = src.read(1) == 0
    assert border.mean() > 0.2  # the rotated black frame
    # The frame becomes NaN, not black pixels: no valid pixel is exactly 0 in all bands.
    valid = ~np.isnan(data).any(axis=0)
    assert 0.3 < valid.mean() < 0.8
    assert not ((data[:, valid] == 0).all(axis=0)).any()


def test_a_known_pixel_lands_at_its_world_position_across_crs(shared_data):
    """cogeo.tif is EPSG:3857; aligned onto a UTM grid a pixel keeps its ground position."""
    path = shared_data / "geotiff" / "cogeo.tif"
    grid = _grid_over(path, cell=40.0, chip=32, crs="EPSG:32652")
    image, _, _ = load_imagery([path], grid, [1, 2, 3], dehaze="never")
    data = image.values
    from pyproj import Transformer

    with rasterio.open(path) as src:
        src_data = src.read(1).astype(np.float32) / 255
        to_src = Transformer.from_crs(grid.crs, src.crs, always_xy=True)
        h, w = grid.pixel_shape
        rng = np.random.default_rng(0)
        errors = []
        for r, c in zip(
            rng.integers(h // 4, 3 * h // 4, 200),
            rng.integers(w // 4, 3 * w // 4, 200),
            strict=True,
        ):
            x, y = grid.pixel_transform @ (c + 0.5, r + 0.5)
            sx, sy = to_src.transform(x, y)
            sr, sc = src.index(sx, sy)
            if 0 <= sr < src.height and 0 <= sc < src.width and not np.isnan(data[0, r, c]):
                errors.append(abs(data[0, r, c] - src_data[sr, sc]))
    # Bilinear resampling of a JPEG-compressed 0.6 m image onto 1.25 m pixels: close, not equal.
    assert len(errors) > 100 and np.median(errors) < 0.05


def test_a_corrupt_tile_is_reported_and_the_others_are_used(tmp_path, small_city):
    tiles = sorted((small_city.root / "tiles").glob("*.tif"))
    broken = tmp_path / "broken.tif"
    broken.write_bytes(tiles[0].read_bytes()[:3000])  # truncated
    grid = CityGrid.from_extent((113.65, 34.75, 113.67, 34.77), crs="EPSG:32649")
    _, reports, _ = load_imagery([broken, *tiles], grid, [1, 2, 3])
    assert reports[0].status == "failed" and reports[0].reason
    assert any(r.status == "used" for r in reports[1:])


def test_an_extent_that_no_tile_touches_is_an_error(small_city):
    tiles = sorted((small_city.root / "tiles").glob("*.tif"))
    far = CityGrid.from_extent((116.30, 39.90, 116.35, 39.95), crs="EPSG:32650")
    with pytest.raises(NoCoverageError, match="none of the 4 tile"):
        load_imagery(tiles, far, [1, 2, 3])


def test_asking_for_a_band_a_tile_lacks_is_an_error(tmp_path):
    path = tmp_path / "one_band.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=16,
        height=16,
        count=1,
        dtype="uint8",
        crs="EPSG:32649",
        transform=Affine(10, 0, 740000, 0, -10, 3850000),
    ) as dst:
        dst.write(np.ones((1, 16, 16), np.uint8))
    grid = CityGrid.from_bounds((740000, 3849840, 740160, 3850000), 80, 8, "EPSG:32649")
    with pytest.raises(InputFormatError, match="band"):
        load_imagery([path], grid, [1, 2, 3])


def test_the_demo_city_hazy_tile_is_detected_and_dehazed(small_city):
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.layout import plan
    from urbanfusion.workflows.stages import ingest

    p = plan(load_config(small_city.config))
    ingested = ingest(p)
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in ingested.tiles}
    assert by_name["c_sw_utm_hazy.tif"].dehazed
    assert not any(r.dehazed for n, r in by_name.items() if "hazy" not in n)
    assert {r.crs for r in ingested.tiles} >= {"EPSG:32649", "EPSG:3857", "EPSG:4326"}
    assert not np.isnan(ingested.imagery.values).any()  # the four tiles cover the city


def test_chunks_dehazed_as_they_are_read_equal_the_whole_layer_dehazed(small_city, monkeypatch):
    import urbanfusion.ingest.imagery as im
    from urbanfusion.preprocess.dehaze import DehazeParams, dehaze_with_light

    hazy = small_city.root / "tiles" / "c_sw_utm_hazy.tif"
    with rasterio.open(hazy) as src:
        left, bottom, right, top = src.bounds
    # Inside the tile: at a footprint's edge GDAL blends partly covered source pixels, and
    # that blend depends on the read window, so only interior pixels are window-independent.
    w, h = right - left, top - bottom
    inner = (left + 0.3 * w, bottom + 0.3 * h, left + 0.7 * w, bottom + 0.7 * h)
    grid = CityGrid.from_bounds(inner, 250, 8, "EPSG:32649")
    monkeypatch.setattr(im, "CHUNK_TARGET_PX", 24)  # 3 cells: chunks far smaller than the halo
    params = DehazeParams(patch=7, radius=6)
    chunked, reports, _ = im.load_imagery([hazy], grid, [1, 2, 3], dehaze="always", params=params)
    whole, _, _ = im.load_imagery([hazy], grid, [1, 2, 3], dehaze="never", params=params)
    expected = dehaze_with_light(whole.values, np.array(reports[0].airlight), params)
    got = chunked.values
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=2e-4, equal_nan=True)


@pytest.mark.parametrize(
    ("dtype", "factor"),
    [("uint16", 257.0), ("uint16", 16.0), ("int16", 128.0), ("float32", 1 / 255)],
    ids=["uint16-full", "uint16-12bit", "int16", "float32-reflectance"],
)
def test_the_haze_score_does_not_depend_on_the_storage_type(small_city, tmp_path, dtype, factor):
    hazy = small_city.root / "tiles" / "c_sw_utm_hazy.tif"
    with rasterio.open(hazy) as src:
        profile, data = src.profile, src.read()
        grid = _grid_over(hazy, cell=100.0, chip=8)
    twin = tmp_path / f"hazy_{dtype}.tif"
    profile.update(dtype=dtype, nodata=None, photometric="RGB" if dtype != "float32" else None)
    with rasterio.open(twin, "w", **{k: v for k, v in profile.items() if v is not None}) as dst:
        dst.write((data.astype(np.float64) * factor).astype(dtype))
    _, (as_uint8,), _ = load_imagery([hazy], grid, [1, 2, 3], dehaze="auto")
    _, (as_other,), _ = load_imagery([twin], grid, [1, 2, 3], dehaze="auto")
    assert as_uint8.dehazed and as_uint8.haze_score > 0.4
    # The same picture: the same score, and so the same decision to dehaze it.
    assert as_other.haze_score == pytest.approx(as_uint8.haze_score, abs=0.01)
    assert as_other.dehazed


def _rewrite_with_alpha(src_path, dst_path, alpha_of_mask):
    from rasterio.enums import ColorInterp

    with rasterio.open(src_path) as src:
        profile, data, mask = src.profile, src.read(), src.dataset_mask()
    profile.update(count=4, nodata=None)
    with rasterio.open(dst_path, "w", **profile) as dst:
        dst.write(np.concatenate([data, alpha_of_mask(mask).astype(data.dtype)[None]]))
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]


def test_a_0_1_mask_written_as_alpha_keeps_the_tile_s_pixels(small_city, tmp_path):
    tile = small_city.root / "tiles" / "d_se_wgs84.tif"
    rgba = tmp_path / "rgba01.tif"
    _rewrite_with_alpha(tile, rgba, lambda mask: mask > 0)  # 1 = opaque, as numpy users write
    grid = _grid_over(tile, cell=100.0, chip=8, crs="EPSG:32649")
    plain, _, _ = load_imagery([tile], grid, [1, 2, 3], dehaze="never")
    image, (report,), _ = load_imagery([rgba], grid, [1, 2, 3], dehaze="never")
    assert report.status == "used"
    valid, expected = ~np.isnan(image.values), ~np.isnan(plain.values)
    assert expected.mean() > 0.5 and abs(valid.mean() - expected.mean()) < 0.01


def test_a_tile_whose_every_pixel_is_masked_fails_with_the_reason(small_city, tmp_path):
    tiles = sorted((small_city.root / "tiles").glob("*.tif"))
    clear = tmp_path / "transparent.tif"
    _rewrite_with_alpha(tiles[0], clear, lambda mask: np.zeros_like(mask))
    grid = CityGrid.from_extent((113.65, 34.75, 113.67, 34.77), crs="EPSG:32649")
    _, reports, _ = load_imagery([clear, *tiles], grid, [1, 2, 3], dehaze="never")
    assert reports[0].status == "failed" and "every pixel is masked" in reports[0].reason
    with pytest.raises(InputFormatError, match="every pixel is masked"):
        load_imagery([clear, *tiles], grid, [1, 2, 3], dehaze="never", strict=True)
