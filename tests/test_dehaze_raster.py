import subprocess
import sys

import numpy as np
import pytest
import rasterio
from affine import Affine

import urbanfusion.preprocess.dehaze_raster as dr
from urbanfusion.pipeline.errors import InputFormatError, InputNotFoundError
from urbanfusion.preprocess.dehaze import dehaze_with_light
from urbanfusion.preprocess.scene_preview import preview_light, read_preview
from urbanfusion.workflows.democity.layout import make_layout
from urbanfusion.workflows.democity.render import add_haze, render_city


def test_a_real_geotiff_keeps_profile_georeferencing_and_nodata(shared_data, tmp_path):
    src_path = shared_data / "geotiff" / "RGB.byte.tif"
    out = tmp_path / "out.tif"
    dr.dehaze_raster(src_path, out)
    with rasterio.open(src_path) as src, rasterio.open(out) as dst:
        assert dst.profile == src.profile  # driver, dtype, crs, transform, nodata, tiling...
        assert (dst.dataset_mask() == src.dataset_mask()).all()
        assert (dst.read() != src.read()).any()


def test_a_hazy_png_comes_out_closer_to_its_clear_twin(shared_data, tmp_path):
    import cv2

    hazy = shared_data / "haze" / "rice1" / "hazy" / "108.png"
    clear = cv2.imread(str(shared_data / "haze" / "rice1" / "clear" / "108.png")).astype(float)
    out = tmp_path / "out.png"
    dr.dehaze_raster(hazy, out)
    before = np.mean((cv2.imread(str(hazy)).astype(float) - clear) ** 2)
    after = np.mean((cv2.imread(str(out)).astype(float) - clear) ** 2)
    assert after < before
    with rasterio.open(out) as dst:
        assert dst.driver == "PNG" and dst.dtypes[0] == "uint8"


def _uint16_scene(path, nodata=0):
    rng = np.random.default_rng(5)
    bounds = (0.0, 0.0, 1000.0, 900.0)
    image, _ = render_city(make_layout(bounds, rng), bounds, 5.0, rng)
    data = add_haze(image, rng).astype(np.uint16) * 16  # 12-bit range in 16 bits
    data[:, :30, :50] = nodata
    alpha = np.full((1, *data.shape[1:]), 65535, np.uint16)
    alpha[:, :30, :50] = nodata  # a consistent alpha: transparent where there is no data
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=4,
        dtype="uint16",
        crs="EPSG:32649",
        nodata=nodata,
        transform=Affine(5, 0, 740000, 0, -5, 3850000),
    ) as dst:
        dst.write(np.concatenate([data, alpha]))
    return data


def test_uint16_chunked_equals_whole_and_extra_bands_pass_through(tmp_path, monkeypatch):
    src_path = tmp_path / "scene.tif"
    data = _uint16_scene(src_path)
    monkeypatch.setattr(dr, "CHUNK", 77)  # odd chunks, far smaller than the scene
    out = tmp_path / "out.tif"
    result = dr.dehaze_raster(src_path, out)
    assert result.strength > 0.9  # grey synthetic haze
    with rasterio.open(out) as dst:
        got = dst.read()
    with rasterio.open(src_path) as src:
        assert (got[3] == src.read(4)).all()  # the fourth band is not touched
    assert (got[:3, :30, :50] == 0).all()  # nodata stays nodata
    valid = (data != 0).any(axis=0)
    hi = 4095.0  # 12-bit data: its white level, so the haze floor is not stretched away
    scaled = (data / hi).astype(np.float32)
    scaled[:, ~valid] = np.nan
    # The scene's airlight from its preview at the default grid's pixel, as a run takes it.
    with rasterio.open(src_path) as src:
        _, light = preview_light(read_preview(src, (1, 2, 3)).scaled(0.0, hi))
    np.testing.assert_allclose(result.airlight, light, rtol=1e-6)
    whole = np.rint(dehaze_with_light(scaled, light) * hi)
    assert np.abs(got[:3][:, valid] - whole[:, valid]).max() <= 1  # rounding only


def test_bad_inputs_fail_with_one_line(tmp_path):
    with pytest.raises(InputNotFoundError):
        dr.dehaze_raster(tmp_path / "none.tif", tmp_path / "o.tif")
    junk = tmp_path / "junk.tif"
    junk.write_text("not a raster")
    with pytest.raises(InputFormatError, match="GDAL cannot read"):
        dr.dehaze_raster(junk, tmp_path / "o.tif")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "urbanfusion.workflows",
            "dehaze",
            str(junk),
            str(tmp_path / "o.tif"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.tif").exists() and not list(tmp_path.glob("tmp*"))


def test_dehazing_a_file_onto_itself_is_refused_and_the_source_kept(tmp_path):
    src = tmp_path / "scene.tif"
    _uint16_scene(src)
    before = src.read_bytes()
    with pytest.raises(InputFormatError, match="is the input itself"):
        dr.dehaze_raster(src, tmp_path / "." / "scene.tif")
    assert src.read_bytes() == before


def test_the_output_gets_the_users_usual_file_mode(tmp_path):
    import os

    src = tmp_path / "scene.tif"
    _uint16_scene(src)
    old = os.umask(0o022)
    try:
        dr.dehaze_raster(src, tmp_path / "out.tif")
    finally:
        os.umask(old)
    assert (tmp_path / "out.tif").stat().st_mode & 0o777 == 0o644


def test_a_truncated_input_names_the_file(tmp_path):
    src = tmp_path / "scene.tif"
    _uint16_scene(src)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(InputFormatError, match=r"cut\.tif"):
        dr.dehaze_raster(cut, tmp_path / "out.tif")


def test_a_raster_of_one_chunk_is_dehazed_in_memory_like_the_chunked_path(tmp_path, monkeypatch):
    src_path = tmp_path / "scene.tif"
    _uint16_scene(src_path)
    whole = tmp_path / "whole.tif"
    result = dr.dehaze_raster(src_path, whole)  # fits one chunk: numpy, read once
    monkeypatch.setattr(dr, "CHUNK", 64)
    chunked = tmp_path / "chunked.tif"
    assert dr.dehaze_raster(src_path, chunked).airlight == pytest.approx(result.airlight)
    with rasterio.open(whole) as a, rasterio.open(chunked) as b:
        assert np.abs(a.read().astype(int) - b.read().astype(int)).max() <= 1  # rounding


def test_dehazing_one_chunk_imports_no_dask(tmp_path):
    src_path = tmp_path / "scene.tif"
    _uint16_scene(src_path)
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from urbanfusion.preprocess.dehaze_raster import dehaze_raster\n"
        f"dehaze_raster(Path({str(src_path)!r}), Path({str(tmp_path / 'o.tif')!r}))\n"
        "print(' '.join(m for m in ('dask', 'xarray', 'geopandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_command_starts_without_boto3_or_pyproj_and_leaves_boto3_importable(tmp_path):
    # Start-up time the command never uses: rasterio imports boto3 when installed, and the model
    # commands' options need the training settings.
    src_path = tmp_path / "scene.tif"
    _uint16_scene(src_path)
    code = (
        "import importlib.util, sys\n"
        "from urbanfusion.workflows.cli import main\n"
        f"sys.argv = ['urbanfusion', 'dehaze', {str(src_path)!r}, {str(tmp_path / 'o.tif')!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "unused = ('boto3', 'pyproj', 'dask', 'urbanfusion.models.training.configs')\n"
        "print('IMPORTED', *[m for m in unused if m in sys.modules])\n"
        "if importlib.util.find_spec('boto3') is not None:\n"
        "    import boto3\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o.tif").exists() and out.stdout.startswith("wrote")
    assert out.stdout.splitlines()[-1] == "IMPORTED"


def test_the_command_dehazes_with_the_airlight_a_run_uses(small_city, tmp_path):
    from urbanfusion.ingest.imagery import load_imagery
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.layout import plan

    hazy = next((small_city.root / "tiles").glob("*hazy*.tif"))
    grid = plan(load_config(small_city.config)).grid
    run = load_imagery([hazy], grid, [1, 2, 3], dehaze="always").reports[0]
    ours = dr.dehaze_raster(hazy, tmp_path / "out.tif", pixel_size_m=grid.pixel_size)
    assert run.dehazed and ours.airlight == pytest.approx(run.airlight, abs=1e-4)
    assert ours.haze_score == pytest.approx(run.haze_score, abs=1e-4)
    # Another grid pixel, another preview: the command follows the run it is told of.
    coarse = dr.dehaze_raster(hazy, tmp_path / "coarse.tif", pixel_size_m=4 * grid.pixel_size)
    assert coarse.airlight != pytest.approx(ours.airlight, abs=1e-6)
