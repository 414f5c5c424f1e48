"""QGIS styles that travel with the outputs: opened in QGIS, the maps look like the quicklook.

``cells.gpkg`` carries its style in the GeoPackage's ``layer_styles`` table, where QGIS looks
when it opens a layer (categorised by class, the model's colours and names, counts in the
labels); ``probabilities.qml`` sits beside ``probabilities.tif``, where QGIS looks for a
raster's default style (a 0-1 colour ramp on the first class's band, every band named).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from urbanfusion.models.classes import NO_CLASS
from urbanfusion.models.contract import ModelContract

STYLE_NAME = "urbanfusion classes"
FILL_ALPHA = 204  # 80 %: the cell outlines and a base map show through a little
_NO_PREDICTION_RGB = [200, 200, 200]
# The layer_styles table as QGIS creates it (QgsOgrProviderUtils), registered as attributes.
_CREATE = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
    styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT CURRENT_TIMESTAMP)
"""


def _fill_symbol(name: int, rgb: tuple[int, ...] | list[int]) -> str:
    colour = f"{rgb[0]},{rgb[1]},{rgb[2]},{FILL_ALPHA}"
    props = {
        "color": colour,
        "style": "solid",
        "outline_color": "90,90,90,255",
        "outline_style": "solid",
        "outline_width": "0.1",
        "outline_width_unit": "MM",
        "joinstyle": "miter",
    }
    # Both forms: <Option> (QGIS 3.26+) and <prop> (older 3.x) describe the same fill.
    options = "".join(f'<Option type="QString" name="{k}" value="{v}"/>' for k, v in props.items())
    legacy = "".join(f'<prop k="{k}" v="{v}"/>' for k, v in props.items())
    return (
        f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
        '<layer class="SimpleFill" enabled="1" locked="0" pass="0">'
        f'<Option type="Map">{options}</Option>{legacy}</layer></symbol>'
    )


def cells_qml(contract: ModelContract, class_id: np.ndarray) -> str:
    """A categorised QML style on ``class_name``: one category a class, labels with counts."""
    counts = np.bincount(class_id[class_id != NO_CLASS], minlength=len(contract.classes))
    rows = [
        (name, f"{label} ({n:,})", colour)
        for name, label, colour, n in zip(
            contract.classes, contract.labels, contract.colours, counts, strict=True
        )
    ]
    rows.append(("", f"No prediction ({int((class_id == NO_CLASS).sum()):,})", _NO_PREDICTION_RGB))
    categories = "".join(
        f'<category render="true" value={quoteattr(value)} label={quoteattr(label)} symbol="{k}"/>'
        for k, (value, label, _) in enumerate(rows)
    )
    symbols = "".join(_fill_symbol(k, colour) for k, (_, _, colour) in enumerate(rows))
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        '<renderer-v2 type="categorizedSymbol" attr="class_name" symbollevels="0" '
        'enableorderby="0" forceraster="0">'
        f"<categories>{categories}</categories><symbols>{symbols}</symbols>"
        "</renderer-v2>\n</qgis>\n"
    )


def write_cells_style(gpkg: Path, contract: ModelContract, class_id: np.ndarray) -> None:
    """Store the style in ``gpkg``'s ``layer_styles`` as the default of layer ``cells``."""
    qml = cells_qml(contract, class_id)
    with contextlib.closing(sqlite3.connect(gpkg)) as db, db:
        db.execute(_CREATE)
        db.execute(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui, update_time) VALUES ('', '', 'cells', 'geom', ?, ?, '', 1, ?, '', '', "
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
            (STYLE_NAME, qml, "Cells by class, in the model's colours (urbanfusion)"),
        )
        db.execute(
            "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, "
            "description, last_change) VALUES ('layer_styles', 'attributes', 'layer_styles', "
            "'', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
        )


def probabilities_qml(contract: ModelContract) -> str:
    """A raster style: band 1 on a 0-1 ramp from white to its class colour, bands named."""
    r, g, b = contract.colours[0]
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n<pipe>'
        '<rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" '
        'classificationMin="0" classificationMax="1" alphaBand="-1" nodataColor="">'
        '<rastershader><colorrampshader colorRampType="INTERPOLATED" classificationMode="1" '
        'clip="0" minimumValue="0" maximumValue="1">'
        '<item alpha="255" value="0" label="0" color="#ffffff"/>'
        f'<item alpha="255" value="1" label="1" color="#{r:02x}{g:02x}{b:02x}"/>'
        "</colorrampshader></rastershader></rasterrenderer>"
        '<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
        '<huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>'
        '<rasterresampler maxOversampling="2"/>'
        "</pipe>\n</qgis>\n"
    )


def write_probabilities_style(tif: Path, contract: ModelContract) -> Path:
    """``<raster>.qml`` beside the probabilities raster; returns its path."""
    path = tif.with_suffix(".qml")
    path.write_text(probabilities_qml(contract), encoding="utf-8")
    return path
