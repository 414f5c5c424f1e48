"""QGIS styles and the STAC Item travel with the outputs: read back, and opened by QGIS."""

import shutil
import sqlite3
import subprocess
import xml.etree.ElementTree as ET

import pytest

from tests.conftest import write_config
from urbanfusion.models.inference import SHIPPED_MODEL, load_predictor
from urbanfusion.pipeline.config import load_config
from urbanfusion.workflows.run import run
from urbanfusion.workflows.styles import STYLE_NAME

QGIS_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def result(small_city, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("styles") / "c.yaml", small_city)
    return run(load_config(cfg))


def _has_qgis() -> bool:
    if not shutil.which(QGIS_PYTHON):
        return False
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return probe.returncode == 0


def test_cells_gpkg_carries_its_class_style_as_the_default(result):
    contract = load_predictor(str(SHIPPED_MODEL)).contract
    with sqlite3.connect(result.outputs["cells.gpkg"]) as db:
        rows = db.execute(
            "SELECT f_table_name, f_geometry_column, styleName, useAsDefault, styleQML "
            "FROM layer_styles"
        ).fetchall()
        kinds = dict(db.execute("SELECT table_name, data_type FROM gpkg_contents"))
    ((table, geom, name, default, qml),) = rows
    assert (table, geom, name, default) == ("cells", "geom", STYLE_NAME, 1)
    assert kinds == {"cells": "features", "layer_styles": "attributes"}
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class_name"
    values = [c.get("value") for c in renderer.iter("category")]
    assert values == [*contract.classes, ""]
    colours = [o.get("value") for o in renderer.iter("Option") if o.get("name") == "color"]
    assert colours[: len(contract.colours)] == [f"{r},{g},{b},204" for r, g, b in contract.colours]


def test_probabilities_tif_has_its_qml_beside_it(result):
    qml = result.outputs["probabilities.qml"]
    assert qml.parent == result.outputs["probabilities.tif"].parent
    pipe = ET.fromstring(qml.read_text().split("\n", 1)[1]).find("pipe/rasterrenderer")
    assert pipe.get("type") == "singlebandpseudocolor" and pipe.get("band") == "1"


OPEN_IN_QGIS = """
import os, sys
from qgis.core import QgsApplication, QgsVectorLayer, QgsRasterLayer
app = QgsApplication([], False)
app.initQgis()
cells = QgsVectorLayer(sys.argv[1] + "|layername=cells", "cells", "ogr")
renderer = cells.renderer()
print("valid", cells.isValid(), cells.featureCount())
print("renderer", renderer.type(), renderer.classAttribute())
for c in renderer.categories():
    print("category", repr(c.value()), c.label(), c.symbol().color().name())
raster = QgsRasterLayer(sys.argv[2], "probabilities")
print("raster", raster.isValid(), raster.renderer().type(), flush=True)
os._exit(0)  # QGIS 3.22 can crash in exitQgis() without a display; everything is printed
"""


@pytest.mark.skipif(not _has_qgis(), reason="no QGIS Python here (Debian: python3-qgis)")
def test_qgis_opens_both_with_their_styles(result):
    proc = subprocess.run(
        [
            QGIS_PYTHON,
            "-c",
            OPEN_IN_QGIS,
            str(result.outputs["cells.gpkg"]),
            str(result.outputs["probabilities.tif"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr
    contract = load_predictor(str(SHIPPED_MODEL)).contract
    assert f"valid True {len(result.class_id)}" in out
    assert "renderer categorizedSymbol class_name" in out
    r, g, b = contract.colours[0]
    assert f"category '{contract.classes[0]}' {contract.labels[0]}" in out
    assert f"#{r:02x}{g:02x}{b:02x}" in out
    assert "raster True singlebandpseudocolor" in out


def test_item_json_is_a_stac_item_of_the_run_with_its_classes(result):
    import pystac
    from pystac.extensions.classification import ClassificationExtension

    folder = result.outputs["item.json"].resolve().parent
    item = pystac.Item.from_file(str(result.outputs["item.json"]))
    manifest = result.manifest
    assert item.id.endswith(manifest["run"]["id"])
    assert item.properties["start_datetime"].startswith(manifest["signalling"]["first_day"])
    assert item.properties["proj:code"] == manifest["grid"]["crs"]
    lon0, lat0, lon1, lat1 = manifest["config"]["extent"]
    west, south, east, north = item.bbox
    assert west <= lon0 + 0.01 and east >= lon1 - 0.01
    assert south <= lat0 + 0.01 and north >= lat1 - 0.01
    for key, asset in item.assets.items():
        assert (folder / asset.href).is_file(), key  # relative hrefs, every file there
        assert asset.media_type and asset.roles
    assert item.assets["class_map.tif"].media_type.endswith("profile=cloud-optimized")
    classes = ClassificationExtension.ext(item.assets["class_map.tif"]).classes
    counts = manifest["cells"]["per_class"]
    assert {c.name: c.count for c in classes if not c.nodata} == counts
