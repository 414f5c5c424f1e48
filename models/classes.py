"""The urban function classes of the URFC data set, in its order (ids 001..009 -> 0..8)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UrbanClass:
    """One class: a short name used in files, a label for people, and a map colour (RGB)."""

    name: str
    label: str
    colour: tuple[int, int, int]


URFC_CLASSES: tuple[UrbanClass, ...] = (
    UrbanClass("residential", "Residential area", (237, 201, 81)),
    UrbanClass("school", "School", (102, 194, 165)),
    UrbanClass("industrial", "Industrial park", (141, 160, 203)),
    UrbanClass("railway_station", "Railway station", (90, 90, 90)),
    UrbanClass("airport", "Airport", (166, 118, 29)),
    UrbanClass("park", "Park", (27, 158, 119)),
    UrbanClass("shopping", "Shopping area", (231, 41, 138)),
    UrbanClass("administrative", "Administrative district", (117, 112, 179)),
    UrbanClass("hospital", "Hospital", (217, 95, 2)),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in URFC_CLASSES)
NO_CLASS = 255
