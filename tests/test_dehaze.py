import dask.array as da
import numpy as np
import pytest

from urbanfusion.preprocess.dehaze import (
    DehazeParams,
    atmospheric_light,
    dehaze,
    dehaze_in_strips,
    dehaze_with_light,
    haze_score,
)
from urbanfusion.preprocess.dehaze_dask import dehaze_dask
from urbanfusion.workflows.democity.layout import make_layout
from urbanfusion.workflows.democity.render import add_haze, render_city


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(3)
    bounds = (0.0, 0.0, 1500.0, 1500.0)
    image, _ = render_city(make_layout(bounds, rng), bounds, 5.0, rng)
    hazy = add_haze(image, rng)
    return image.astype(np.float32) / 255, hazy.astype(np.float32) / 255


@pytest.mark.parametrize("chunks", [(3, 37, 29), (3, 64, 101), (3, 300, 300)])
def test_dehaze_is_seamless_across_chunks(scene, chunks):
    _, hazy = scene
    image = hazy.copy()
    image[:, :40, :55] = np.nan  # a nodata corner straddling chunk edges
    params = DehazeParams(patch=7, radius=6)
    whole = dehaze(image, params)
    arr = da.from_array(image, chunks=chunks)
    light = atmospheric_light(image, params)
    chunked = dehaze_dask(arr, light, params).compute()
    np.testing.assert_array_equal(np.isnan(chunked), np.isnan(whole))
    np.testing.assert_allclose(chunked, whole, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("workers", [2, 3])
def test_dehazing_in_strips_on_threads_gives_the_whole_array_result(scene, workers):
    _, hazy = scene
    image = hazy.copy()
    image[:, 100:140, :55] = np.nan  # nodata across a strip's edge
    params = DehazeParams(patch=7, radius=6)
    light = atmospheric_light(image, params)
    whole = dehaze_with_light(image, light, params)
    strips = dehaze_in_strips(image, light, params, workers=workers)
    np.testing.assert_array_equal(np.isnan(strips), np.isnan(whole))
    np.testing.assert_allclose(strips, whole, atol=1e-6, equal_nan=True)


def test_dehazing_brings_a_hazy_scene_closer_to_the_clear_one(scene):
    clear, hazy = scene
    assert _psnr(dehaze(hazy), clear) > _psnr(hazy, clear) + 2


def test_haze_score_is_higher_for_the_hazy_scene(scene):
    clear, hazy = scene
    assert haze_score(hazy) > haze_score(clear) + 0.1


def test_nodata_stays_nodata_and_values_stay_in_range(scene):
    _, hazy = scene
    image = hazy.copy()
    image[1, 10:20, 10:20] = np.nan
    out = dehaze(image)
    assert np.isnan(out[:, 10:20, 10:20]).all()
    assert np.nanmin(out) >= 0 and np.nanmax(out) <= 1


def test_white_level_is_the_bit_depth_in_use_not_the_scene_range():
    from urbanfusion.preprocess.scaling import white_level

    assert white_level("uint8", 17.0) == 255.0
    assert white_level("uint16", 4000.0) == 4095.0  # 12-bit data in 16-bit words
    assert white_level("uint16", 65535.0) == 65535.0
    assert white_level("uint16", 60.0) == 255.0
    assert white_level("int16", 32000.0) == 32767.0
    assert white_level("float32", 0.93) == 1.0  # reflectance
    assert white_level("float32", 180.0) == 255.0  # 8-bit values kept as floats
    assert white_level("float64", 1e6) == 1e6  # beyond 16 bits: the data's own top
    assert white_level("uint16", 900.0, nbits="12") == 4095.0  # GDAL's NBITS wins
    assert white_level("float32", float("nan")) == 1.0
