"""Hourly signalling rows for a demo city: class-typical rhythms from real archetypes, made messy.

Each lattice point draws its own mixture of the archetypes (:mod:`.curves`) around its
class's recipe, so classes overlap: schools, offices and factories all work by day;
parks and homes are both busy at night on workdays. Counts are Poisson around a lognormal
level, some hours are missing, and a few rows are malformed on purpose.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanfusion.workflows.democity.curves import ARCHETYPES
from urbanfusion.workflows.democity.layout import CLS

# Mixture weights over (home, work, leisure, transit, steady) and mean people per point-hour.
RECIPES: dict[int, tuple[tuple[float, float, float, float, float], float]] = {
    CLS["residential"]: ((0.70, 0.05, 0.15, 0.00, 0.10), 700.0),
    CLS["school"]: ((0.40, 0.45, 0.05, 0.00, 0.10), 600.0),
    CLS["industrial"]: ((0.15, 0.55, 0.00, 0.05, 0.25), 400.0),
    CLS["railway_station"]: ((0.00, 0.05, 0.05, 0.65, 0.25), 1500.0),
    CLS["airport"]: ((0.00, 0.10, 0.05, 0.35, 0.50), 700.0),
    CLS["park"]: ((0.30, 0.00, 0.60, 0.00, 0.10), 150.0),
    CLS["shopping"]: ((0.05, 0.30, 0.55, 0.10, 0.00), 900.0),
    CLS["administrative"]: ((0.10, 0.75, 0.00, 0.05, 0.10), 700.0),
    CLS["hospital"]: ((0.15, 0.30, 0.05, 0.00, 0.50), 600.0),
}
# How tightly a point's mixture follows its class recipe (Dirichlet concentration).
CONCENTRATION = 9.0
LATTICE_DEG = (0.0025, 0.002)  # lon, lat step: about 230 m x 222 m at 34.7 N


def lattice(extent: tuple[float, float, float, float], margin_deg: float = 0.004) -> np.ndarray:
    """Lon/lat points of the signalling lattice over the extent and a margin around it."""
    min_lon, min_lat, max_lon, max_lat = extent
    lons = np.arange(min_lon - margin_deg, max_lon + margin_deg, LATTICE_DEG[0])
    lats = np.arange(min_lat - margin_deg, max_lat + margin_deg, LATTICE_DEG[1])
    lon, lat = np.meshgrid(np.round(lons, 6), np.round(lats, 6))
    return np.stack([lon.ravel(), lat.ravel()], 1)


def hourly_counts(
    point_classes: np.ndarray,
    archetypes: dict[str, np.ndarray],
    days: pd.DatetimeIndex,
    rng: np.random.Generator,
) -> np.ndarray:
    """Counts ``(point, day, hour)`` for points of the given classes."""
    shapes = np.stack([archetypes[a] for a in ARCHETYPES])  # (5, 3 day types, 24)
    day_type = np.array([0 if d.weekday() < 5 else d.weekday() - 4 for d in days])
    n = len(point_classes)
    weights = np.empty((n, len(ARCHETYPES)))
    level = np.empty(n)
    for k, (recipe, mean) in RECIPES.items():
        sel = point_classes == k
        alpha = CONCENTRATION * np.asarray(recipe) + 0.15
        weights[sel] = rng.dirichlet(alpha, size=int(sel.sum()))
        level[sel] = mean * rng.lognormal(0.0, 0.6, size=int(sel.sum()))
    curves = np.einsum("pa,adh->pdh", weights, shapes)[:, day_type]  # (point, day, 24)
    wobble = rng.lognormal(0.0, 0.25, size=curves.shape)
    return rng.poisson(level[:, None, None] * curves * wobble).astype(np.int64)


def signalling_rows(
    points: np.ndarray, counts: np.ndarray, days: pd.DatetimeIndex, rng: np.random.Generator
) -> pd.DataFrame:
    """Long rows ``time, lon, lat, count`` (local wall time), about 3 % of hours missing."""
    n, d, _ = counts.shape
    p, day, hour = np.meshgrid(np.arange(n), np.arange(d), np.arange(24), indexing="ij")
    keep = rng.random(counts.shape) > 0.02
    # A platform outage: one afternoon missing for a tenth of the points.
    outage = rng.random(n) < 0.1
    keep[outage, int(rng.integers(d)), 13:17] = False
    times = (days.values[day[keep]] + hour[keep].astype("timedelta64[h]")).astype("datetime64[s]")
    return pd.DataFrame(
        {
            "time": pd.Series(times).dt.strftime("%Y-%m-%d %H:%M:%S"),
            "lon": points[p[keep], 0],
            "lat": points[p[keep], 1],
            "count": counts[keep],
        }
    )


def malformed_lines(rng: np.random.Generator, day: pd.Timestamp) -> list[str]:
    """A handful of broken CSV lines of the kinds real exports contain."""
    t = day.strftime("%Y-%m-%d")
    return [
        f"{t} 25:00:00,113.66,34.76,12",  # impossible hour
        "yesterday,113.66,34.76,8",  # not a time
        f"{t} 10:00:00,,34.76,9",  # missing longitude
        f"{t} 11:00:00,113.66,34.76,-4",  # negative count
        f"{t} 12:00:00,113.66,34.76,n/a",  # non-numeric count
        f"{t} 13:00:00,113.66,34.76",  # a field short
        f"{t} 14:00:00,113.66,34.76,7,extra",  # a field too many
    ][: int(rng.integers(4, 8))]
