"""map.html: self-contained, and drawn by a real browser (headless Chromium) without errors.

`.ci/run` installs Debian's `chromium` when it is missing; where no Chromium can be had the
browser tests skip with the reason. Set UF_SCREENSHOT_DIR to keep the screenshots.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pytest

from tests.conftest import write_config
from urbanfusion.pipeline.config import load_config
from urbanfusion.workflows.run import run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium here (.ci/run installs Debian's chromium)"
)


def _browser(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1200,850",
            "--virtual-time-budget=5000",
            *args,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _keep(path: Path) -> None:
    keep = os.environ.get("UF_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


@pytest.fixture(scope="module")
def two_runs(small_city, tmp_path_factory):
    """A first run, then one where a tile is gone: the second map has changed cells."""
    tmp = tmp_path_factory.mktemp("webmap")
    tiles = tmp / "tiles"
    tiles.mkdir()
    for tile in (small_city.root / "tiles").glob("*.tif"):
        shutil.copy(tile, tiles / tile.name)
    cfg = write_config(tmp / "c.yaml", small_city, **{"imagery.paths": [str(tiles / "*.tif")]})
    first = run(load_config(cfg))
    (tiles / "c_sw_utm_hazy.tif").unlink()
    second = run(load_config(cfg))
    return first, second


def test_the_page_is_one_file_that_needs_no_network(two_runs):
    html = two_runs[0].outputs["map.html"].read_text()
    assert "Leaflet 1.9.4" in html and '<script type="application/json" id="run-data">' in html
    # Nothing is fetched: no script, style or image from elsewhere.
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)
    assert "url(images/" in html  # Leaflet's own CSS mentions icons...
    assert "background-image: none !important" in html  # ...which the page never asks for


@needs_browser
def test_the_browser_draws_the_map_with_no_console_error(two_runs, tmp_path):
    first, _ = two_runs
    url = first.outputs["map.html"].resolve().as_uri()
    dom = _browser(url, "--dump-dom").stdout
    assert 'data-errors="0"' in dom and 'data-ready="1"' in dom, dom[:300]
    shot = tmp_path / "map_demo_city.png"
    _browser(url, f"--screenshot={shot}")
    _keep(shot)
    image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB)
    # The map is drawn: the middle of the window is imagery and classes, not the empty map.
    middle = image[300:550, 350:850].reshape(-1, 3).astype(int)
    assert (np.abs(middle - [244, 244, 242]).sum(axis=1) > 30).mean() > 0.95
    assert middle.std(axis=0).mean() > 20
    # The legend's swatches show every class the run found, in the model's colours.
    pixels = {tuple(p) for p in image.reshape(-1, 3)}
    manifest_classes = first.manifest["cells"]["per_class"]
    colours = {c["name"]: c for c in _classes(first)}
    for name, count in manifest_classes.items():
        if count:
            assert tuple(colours[name]["colour"]) in pixels, name


def _classes(result):
    from urbanfusion.models.inference import load_predictor

    contract = load_predictor(str(result.manifest["model"]["path"])).contract
    return [
        {"name": n, "colour": c} for n, c in zip(contract.classes, contract.colours, strict=True)
    ]


@needs_browser
def test_a_linked_cell_shows_its_id_class_probabilities_and_week(two_runs, tmp_path):
    first, _ = two_runs
    cells = gpd.read_file(first.outputs["cells.gpkg"])
    cell = cells[cells["has_signalling"] & cells["has_imagery"]].iloc[0]
    url = first.outputs["map.html"].resolve().as_uri() + f"#cell={cell['row']},{cell['col']}"
    dom = _browser(url, "--dump-dom").stdout
    assert 'data-errors="0"' in dom
    assert str(cell["cell_id"]) in dom and "imagery + signalling" in dom
    assert "top 3" in dom and 'id="uf-week"' in dom
    shot = tmp_path / "map_demo_city_cell.png"
    _browser(url, f"--screenshot={shot}")
    _keep(shot)


@needs_browser
def test_the_second_run_shows_its_changed_cells_as_a_layer(two_runs, tmp_path):
    first, second = two_runs
    changed = second.manifest["changes"]["cells_changed"]
    assert changed > 0
    dom = _browser(second.outputs["map.html"].resolve().as_uri(), "--dump-dom").stdout
    assert 'data-errors="0"' in dom
    assert f"Changed since run {first.manifest['run']['id']} ({changed})" in dom
    shot = tmp_path / "map_demo_city_changes.png"
    _browser(second.outputs["map.html"].resolve().as_uri(), f"--screenshot={shot}")
    _keep(shot)
    image = cv2.cvtColor(cv2.imread(str(shot)), cv2.COLOR_BGR2RGB).reshape(-1, 3).astype(int)
    from urbanfusion.workflows.webmap.page import CHANGED_RGBA

    assert (np.abs(image - CHANGED_RGBA[:3]).sum(axis=1) < 60).sum() > 100  # drawn in red


@pytest.fixture(scope="module")
def region_run(small_city, tmp_path_factory):
    """The small city written as a region's page is: classes and cells in map.pmtiles."""
    from urbanfusion.workflows.webmap import page, tiles

    tmp = tmp_path_factory.mktemp("region")
    cfg = write_config(tmp / "c.yaml", small_city, **{"grid.cell_size_m": 62.5})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(page, "INLINE_MAX_CELLS", 1_000)  # this city's 2,601 cells count as a region
        mp.setattr(tiles, "TILE", 16)  # tiles of 16 cells: 3 zooms and 16 data tiles
        return run(load_config(cfg))


def test_a_region_page_keeps_its_classes_and_cells_in_map_pmtiles(region_run):
    import gzip
    import json

    import rasterio
    from pmtiles.reader import MmapSource, Reader

    html = region_run.outputs["map.html"].read_text()
    data = json.loads(re.search(r'id="run-data">(.*?)</script>', html, re.S).group(1))
    assert data["cells"] is None and data["class_layer"] is None
    tiles = data["tiles"]
    assert tiles["file"] == "map.pmtiles" and "pmtiles=" in html
    with rasterio.open(region_run.outputs["class_map.tif"]) as src:
        classes = src.read(1)
    rows, cols = classes.shape
    t = tiles["size"]
    assert t == 16 and 32 < max(rows, cols) <= 64 and tiles["top_zoom"] == 2
    with region_run.outputs["map.pmtiles"].open("rb") as f:
        archive = Reader(MmapSource(f))
        k = len(data["classes"])
        # A data tile: the class ids of its 256 x 256 cells, as the class map has them.
        for y, x in ((0, 0), (rows // t, cols // t)):  # the first, and a padded last one
            data_tile = archive.get(tiles["data_zoom"], x, y)
            block = np.frombuffer(gzip.decompress(data_tile), np.uint8)
            n = t * t
            assert block.size == n * (3 + k)
            want = classes[y * t : (y + 1) * t, x * t : (x + 1) * t]
            ids = block[:n].reshape(t, t)[: want.shape[0], : want.shape[1]]
            assert np.array_equal(ids, want)
        # A class tile at the top zoom: a pixel per cell, in the class's colour.
        png = archive.get(tiles["top_zoom"], 0, 0)
        rgba = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), -1), cv2.COLOR_BGRA2RGBA)
        colours = {k: c["colour"] for k, c in enumerate(data["classes"])}
        r, c = np.argwhere(classes[:t, :t] != 255)[0]
        assert "#{:02x}{:02x}{:02x}".format(*rgba[r, c, :3]) == colours[classes[r, c]]
        assert archive.get(0, 0, 0) is not None  # the overview zoom
    item = json.loads(region_run.outputs["item.json"].read_text())
    assert item["assets"]["map.pmtiles"]["type"] == "application/vnd.pmtiles"
    assert "map.pmtiles" in region_run.manifest["outputs"]


@needs_browser
def test_a_region_page_over_http_reads_a_cell_from_its_archive(region_run, tmp_path):
    from tests.conftest import RangeServer

    with rasterio_classes(region_run) as classes:
        rows, cols = classes.shape
        row, col = rows - 3, cols - 2  # in the last data tile, not the first
        label = next(
            c["label"] for k, c in enumerate(_labels(region_run)) if k == classes[row, col]
        )
    with RangeServer(region_run.run_folder) as server:
        url = f"{server.url}/map.html#cell={row},{col}"
        dom = _browser(url, "--dump-dom").stdout
        ranged = [r for r in server.requests if r[1] and r[0] == "GET"]
    assert 'data-errors="0"' in dom and 'data-ready="1"' in dom, dom[:400]
    assert label in dom and "confidence" in dom and "top 3" in dom
    assert ranged and all(status == 206 for _, _, status in ranged)
    # The class tiles in view were read from the archive and drawn.
    assert len(re.findall(r'<img class="leaflet-tile leaflet-tile-loaded" src="blob:', dom)) >= 1
    shot = tmp_path / "map_region.png"
    with RangeServer(region_run.run_folder) as server:
        _browser(f"{server.url}/map.html#cell={row},{col}", f"--screenshot={shot}")
    _keep(shot)


@needs_browser
def test_a_region_page_opened_from_disk_asks_for_its_archive(region_run):
    dom = _browser(region_run.outputs["map.html"].resolve().as_uri(), "--dump-dom").stdout
    assert 'data-errors="0"' in dom and 'data-needs-archive="1"' in dom
    assert 'type="file"' in dom and "map.pmtiles" in dom


def rasterio_classes(result):
    import contextlib

    import rasterio

    @contextlib.contextmanager
    def opened():
        with rasterio.open(result.outputs["class_map.tif"]) as src:
            yield src.read(1)

    return opened()


def _labels(result):
    import json

    html = result.outputs["map.html"].read_text()
    return json.loads(re.search(r'id="run-data">(.*?)</script>', html, re.S).group(1))["classes"]
