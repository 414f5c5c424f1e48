"""Daily activity archetypes taken from real mobile-phone data (Helsinki dynamic population).

Bergroth et al. (2022) give, per 250 m cell and hour, the share of the area's population present,
for workdays, Saturdays and Sundays. Each cell's 3 x 24 profile divided by its mean is a shape;
averaging the shapes of the cells that score highest on a simple criterion gives an archetype:

- ``home``: highest night / midday ratio on workdays (people sleep there);
- ``work``: highest midday / night ratio on workdays (offices, campuses);
- ``leisure``: highest weekend / workday afternoon ratio (parks, malls, beaches);
- ``transit``: highest rush-hour / max(midday, night) ratio on workdays (stations, hubs);
- ``steady``: lowest variation across all 72 hours (round-the-clock places).

Only cells above the median population take part, so that near-empty cells do not dominate.
The demo city mixes these archetypes per class. :func:`load_archetypes` reads ``archetypes.json``,
the copy of exactly those numbers written by :func:`write_builtin`, or derives them from the real
files in a folder it is given (the package never looks for data outside itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

DAY_TYPES = ("workdays", "sat", "sun")
ARCHETYPES = ("home", "work", "leisure", "transit", "steady")
BUILTIN = Path(__file__).with_name("archetypes.json")
_TOP_CELLS = 150


def derive_archetypes(helsinki_dir: Path) -> dict[str, np.ndarray]:
    """Archetype shapes ``(3 day types, 24)`` with mean 1, from the Helsinki wide tables."""
    tables = [
        pd.read_csv(helsinki_dir / f"HMA_Dynamic_population_24H_{d}.csv").set_index("YKR_ID")
        for d in DAY_TYPES
    ]
    ids = tables[0].index
    for t in tables[1:]:
        ids = ids.intersection(t.index)
    ids = ids.sort_values()
    raw = np.stack(
        [t.loc[ids, [f"H{h}" for h in range(24)]].to_numpy(np.float64) for t in tables], 1
    )
    level = raw.mean(axis=(1, 2))
    keep = level > np.median(level)
    shapes = raw[keep] / level[keep, None, None]
    night = shapes[:, 0, 0:5].mean(1)
    midday = shapes[:, 0, 10:16].mean(1)
    rush = shapes[:, 0, [7, 8, 16, 17]].mean(1)
    weekend_pm = shapes[:, 1:, 12:18].mean((1, 2))
    workday_pm = shapes[:, 0, 12:18].mean(1)
    scores = {
        "home": night / midday,
        "work": midday / night,
        "leisure": weekend_pm / workday_pm,
        "transit": rush / np.maximum(midday, night),
        "steady": -shapes.std(axis=(1, 2)),
    }
    out = {}
    for name in ARCHETYPES:
        top = np.argsort(scores[name], kind="stable")[-_TOP_CELLS:]
        shape = shapes[top].mean(0)
        out[name] = np.round(shape / shape.mean(), 6)
    return out


def write_builtin(helsinki_dir: Path, path: Path = BUILTIN) -> None:
    """Refresh the built-in copy from the Helsinki folder (run when the derivation changes)."""
    shapes = derive_archetypes(helsinki_dir)
    payload = {
        "source": "Bergroth et al. 2022, Helsinki dynamic population (CC BY 4.0)",
        "day_types": list(DAY_TYPES),
        "archetypes": {k: v.tolist() for k, v in shapes.items()},
    }
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


def load_archetypes(helsinki_dir: Path | None = None) -> dict[str, np.ndarray]:
    """The archetypes: derived from ``helsinki_dir`` when given, else the built-in copy."""
    if helsinki_dir is not None:
        return derive_archetypes(helsinki_dir)
    data = json.loads(BUILTIN.read_text(encoding="utf-8"))
    return {k: np.asarray(v, dtype=np.float64) for k, v in data["archetypes"].items()}
