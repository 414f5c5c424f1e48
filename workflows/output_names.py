"""The name of every output of a run: the one place each is spelled.

Readers open them as ``OUT/<name>`` (linked through ``latest``); writers write them into the
run's staging folder under the same names.
"""

from __future__ import annotations

CLASS_MAP = "class_map.tif"
PROBABILITIES = "probabilities.tif"
PROBABILITIES_STYLE = "probabilities.qml"  # QGIS's style beside PROBABILITIES, same stem
CELLS = "cells.gpkg"
CELLS_PARQUET = "cells.parquet"  # instead of CELLS, with output.cells_format: parquet
ACTIVITY = "activity.parquet"
REJECTS = "rejects.parquet"
QUICKLOOK = "quicklook.png"
MAP = "map.html"
MAP_TILES = "map.pmtiles"  # beside MAP for a region: its classes and cells as tiles
CHANGES = "changes.gpkg"
ITEM = "item.json"
MANIFEST = "manifest.json"

# Every output a run may write, in the order they are listed to users (a run writes the cells
# in one of two formats).
OUTPUT_FILES = (
    CLASS_MAP,
    PROBABILITIES,
    PROBABILITIES_STYLE,
    CELLS,
    CELLS_PARQUET,
    ACTIVITY,
    REJECTS,
    QUICKLOOK,
    MAP,
    MAP_TILES,
    CHANGES,
    ITEM,
    MANIFEST,
)
# What an older run keeps once a newer one is published: enough to compare and to audit.
KEPT_IN_HISTORY = frozenset({CLASS_MAP, MANIFEST, CHANGES})
