"""Zones of a demo city: jittered city blocks, each given one URFC class by plausible rules.

The airport is a strip at one edge, the railway runs across the city with its station near the
centre, the industrial park sits in a corner away from the centre, administration and shopping
cluster near the centre, and parks, schools and hospitals are scattered through residential
land. Block corners are jittered so that zone edges cut through grid cells, as real ones do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Polygon

from urbanfusion.models.classes import CLASS_NAMES

CLS = {name: i for i, name in enumerate(CLASS_NAMES)}
BLOCK_M = 750.0


@dataclass(frozen=True)
class Layout:
    """Blocks of the city: polygons (projected metres), their class ids, and the rail line."""

    polygons: list[Polygon]
    classes: np.ndarray
    block_rc: list[tuple[int, int]]
    corners: np.ndarray  # (n + 1, n + 1, 2) jittered block corners, x/y metres
    rail_row: int  # the block row whose upper edge carries the railway
    airport_side: str  # n | s | e | w: the edge the airport strip lies along


def _pick(free: np.ndarray, rng: np.random.Generator, n: int, weight: np.ndarray) -> list[int]:
    idx = np.flatnonzero(free)
    if idx.size == 0 or n <= 0:
        return []
    p = weight.ravel()[idx]
    p = p / p.sum()
    return list(rng.choice(idx, size=min(n, idx.size), replace=False, p=p))


def make_layout(bounds: tuple[float, float, float, float], rng: np.random.Generator) -> Layout:
    """Lay out blocks covering ``bounds`` (xmin, ymin, xmax, ymax) and assign their classes."""
    xmin, ymin, xmax, ymax = bounds
    nx = max(4, round((xmax - xmin) / BLOCK_M))
    ny = max(4, round((ymax - ymin) / BLOCK_M))
    xs = np.linspace(xmin, xmax, nx + 1)
    ys = np.linspace(ymax, ymin, ny + 1)
    corners = np.stack(np.meshgrid(xs, ys), axis=-1)  # (ny+1, nx+1, 2), row 0 = north
    bx, by = (xmax - xmin) / nx, (ymax - ymin) / ny
    jitter = rng.uniform(-0.22, 0.22, size=(ny - 1, nx - 1, 2)) * np.array([bx, by])
    corners[1:-1, 1:-1] += jitter

    cls = np.full((ny, nx), -1, dtype=np.int64)
    rr, cc = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    centre_dist = np.hypot((rr - (ny - 1) / 2) / ny, (cc - (nx - 1) / 2) / nx)

    side = str(rng.choice(["n", "s", "e", "w"]))
    length = min(4, (nx if side in "ns" else ny) - 1)
    start = int(rng.integers(0, (nx if side in "ns" else ny) - length + 1))
    span = slice(start, start + length)
    if side == "n":
        cls[0:2, span] = CLS["airport"]
    elif side == "s":
        cls[ny - 2 : ny, span] = CLS["airport"]
    elif side == "w":
        cls[span, 0:2] = CLS["airport"]
    else:
        cls[span, nx - 2 : nx] = CLS["airport"]

    # The railway runs west-east along the upper edge of a block row away from the airport.
    rows_ok = [r for r in range(2, ny - 2) if not (cls[r] == CLS["airport"]).any()]
    rail_row = int(rng.choice(rows_ok)) if rows_ok else ny // 2
    mid = int(np.clip(round((nx - 1) / 2 + rng.integers(-1, 2)), 0, nx - 2))
    for c in (mid, mid + 1):
        if cls[rail_row, c] < 0:
            cls[rail_row, c] = CLS["railway_station"]

    # Industrial park: a 2 x 3 cluster in the free corner farthest from the airport.
    airport_rc = np.argwhere(cls == CLS["airport"]).mean(axis=0)
    free_corners = [
        (r0, c0)
        for r0, c0 in [(0, 0), (0, nx - 3), (ny - 2, 0), (ny - 2, nx - 3)]
        if (cls[r0 : r0 + 2, c0 : c0 + 3] < 0).all()
    ]
    if free_corners:
        r0, c0 = max(free_corners, key=lambda rc: np.hypot(*(np.array(rc) - airport_rc)))
        cls[r0 : r0 + 2, c0 : c0 + 3] = CLS["industrial"]

    n = nx * ny
    near = np.exp(-((centre_dist / 0.25) ** 2))
    anywhere = np.ones_like(near)
    for name, count, weight in [
        ("administrative", max(2, n // 35), near),
        ("shopping", max(3, n // 18), near + 0.3),
        ("park", max(4, n // 12), anywhere),
        ("school", max(4, n // 11), anywhere),
        ("hospital", max(3, n // 16), anywhere),
    ]:
        for i in _pick(cls < 0, rng, count, weight):
            cls.flat[i] = CLS[name]
    cls[cls < 0] = CLS["residential"]

    polygons, classes, rcs = [], [], []
    for r in range(ny):
        for c in range(nx):
            ring = [corners[r, c], corners[r, c + 1], corners[r + 1, c + 1], corners[r + 1, c]]
            polygons.append(Polygon(ring))
            classes.append(cls[r, c])
            rcs.append((r, c))
    return Layout(polygons, np.asarray(classes), rcs, corners, rail_row, side)


def zone_polygons(layout: Layout) -> tuple[list[Polygon], list[int]]:
    """Blocks of the same class that touch merged into zones (what a planner would draw)."""
    geoms, classes = [], []
    for k in np.unique(layout.classes):
        merged = shapely.union_all(
            [p for p, c in zip(layout.polygons, layout.classes, strict=True) if c == k]
        )
        for part in getattr(merged, "geoms", [merged]):
            geoms.append(part)
            classes.append(int(k))
    return geoms, classes
