"""The name of every output of a run: the one place each is spelled.

Readers open them as ``OUT/<name>`` (linked through ``latest``); writers write them into the
run's staging folder under the same names.
"""

from __future__ import annotations

CLASS_MAP = "class_map.tif"
PROBABILITIES = "probabilities.tif"
PROBABILITIES_STYLE = "probabilities.qml"  # QGIS's style beside PROBABILITIES, same stem
CELLS = "cells.gpkg"
ACTIVITY = "activity.parquet"
REJECTS = "rejects.parquet"
QUICKLOOK = "quicklook.png"
MAP = "map.html"
CHANGES = "changes.gpkg"
ITEM = "item.json"
MANIFEST = "manifest.json"

# Every output of a run, in the order they are listed to users.
OUTPUT_FILES = (
    CLASS_MAP,
    PROBABILITIES,
    PROBABILITIES_STYLE,
    CELLS,
    ACTIVITY,
    REJECTS,
    QUICKLOOK,
    MAP,
    CHANGES,
    ITEM,
    MANIFEST,
)
# What an older run keeps once a newer one is published: enough to compare and to audit.
KEPT_IN_HISTORY = frozenset({CLASS_MAP, MANIFEST, CHANGES})
