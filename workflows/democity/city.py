"""Write a complete demo city: tiles, signalling CSVs, labelled zones and a run config.

Everything is generated from one seed in a few seconds. The shipped model is trained on cities of
other seeds (``MODEL_SEEDS`` in the Makefile, ``make model``); ``urbanfusion demo`` shows
:data:`DEMO_SEED`, a city the model has never seen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import yaml
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.models.training.configs import SCENE_M
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.workflows.democity.activity import (
    hourly_counts,
    lattice,
    malformed_lines,
    signalling_rows,
)
from urbanfusion.workflows.democity.curves import load_archetypes
from urbanfusion.workflows.democity.layout import make_layout, zone_polygons
from urbanfusion.workflows.democity.render import add_haze, render_city
from urbanfusion.workflows.democity.scenes import SceneBank

DEMO_SEED = 7
CENTRE = (113.66, 34.76)  # central Zhengzhou
UTM = "EPSG:32649"
PIXEL_M = 5.0
FIRST_DAY = "2026-03-02"  # a Monday
N_DAYS = 8


@dataclass(frozen=True)
class DemoCity:
    """Paths of a written demo city."""

    root: Path
    config: Path
    zones: Path


def _extent(size_km: float) -> tuple[float, float, float, float]:
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    cx, cy = to_utm.transform(*CENTRE)
    half = size_km * 500.0
    lon, lat = to_utm.transform(
        [cx - half, cx + half, cx - half, cx + half],
        [cy - half, cy - half, cy + half, cy + half],
        direction="INVERSE",
    )
    return (round(min(lon), 4), round(min(lat), 4), round(max(lon), 4), round(max(lat), 4))


def _write_tile(path: Path, data: np.ndarray, transform: Affine, dst_crs: str | None) -> None:
    profile = {
        "driver": "GTiff",
        "count": 3,
        "dtype": "uint8",
        "crs": UTM,
        "transform": transform,
        "width": data.shape[2],
        "height": data.shape[1],
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "photometric": "RGB",
    }
    if dst_crs is None:
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return
    left, top = transform.c, transform.f
    bounds = (left, top + transform.e * data.shape[1], left + transform.a * data.shape[2], top)
    dst_t, w, h = calculate_default_transform(UTM, dst_crs, data.shape[2], data.shape[1], *bounds)
    out = np.zeros((3, h, w), dtype=np.uint8)
    reproject(
        data,
        out,
        src_transform=transform,
        src_crs=UTM,
        dst_transform=dst_t,
        dst_crs=dst_crs,
        resampling=Resampling.bilinear,
        dst_nodata=0,
    )
    profile.update(crs=dst_crs, transform=dst_t, width=w, height=h, nodata=0)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(out)


def generate_demo_city(
    out_dir: Path,
    seed: int = DEMO_SEED,
    size_km: float = 6.0,
    helsinki_dir: Path | None = None,
    scenes_from: Path | None = None,
) -> DemoCity:
    """Generate a demo city under ``out_dir`` (created) and return its paths.

    Layout: ``tiles/`` four overlapping GeoTIFFs (UTM, Web Mercator, a hazy UTM one, WGS84),
    ``signalling/`` one CSV per day, ``zones.gpkg`` (layer ``zones``) and ``city.yaml``. The daily
    rhythms come from the built-in archetypes, or are derived from the Helsinki dynamic-population
    folder ``helsinki_dir`` when given (the same numbers; a test checks it).

    With ``scenes_from`` (a folder of labelled scenes, e.g. AID), blocks of the classes it holds
    are real scenes (:mod:`~urbanfusion.workflows.democity.scenes`); ``scenes.json`` and
    ``README.md`` say which classes are real and which drawn, and list the scenes used.
    """
    # The fifth stream draws scenes: the first four are the same as without one.
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(5)]
    layout_rng, render_rng, tile_rng, activity_rng, scene_rng = streams
    bank = None if scenes_from is None else SceneBank.of(scenes_from, scene_rng)
    out_dir.mkdir(parents=True, exist_ok=True)

    extent = _extent(size_km)
    grid = CityGrid.from_extent(extent, 250.0, 32, UTM)
    gx0, gy0, gx1, gy1 = grid.bounds
    margin = 400.0
    bounds = (gx0 - margin, gy0 - margin, gx1 + margin, gy1 + margin)
    layout = make_layout(bounds, layout_rng)
    image, pixel_class = render_city(layout, bounds, PIXEL_M, render_rng, bank)
    _, h, w = image.shape
    transform = Affine(PIXEL_M, 0, bounds[0], 0, -PIXEL_M, bounds[3])

    tiles = out_dir / "tiles"
    tiles.mkdir(exist_ok=True)
    r6, c4, c6, r4 = int(h * 0.6), int(w * 0.4), int(w * 0.6), int(h * 0.4)
    pieces = [
        ("a_nw_utm.tif", (0, r6, 0, c6), None, False),
        ("b_ne_webmercator.tif", (0, r6, c4, w), "EPSG:3857", False),
        ("c_sw_utm_hazy.tif", (r4, h, 0, c6), None, True),
        ("d_se_wgs84.tif", (r4, h, c4, w), "EPSG:4326", False),
    ]
    for name, (r0, r1, c0, c1), crs, hazy in pieces:
        data = image[:, r0:r1, c0:c1]
        if hazy:
            data = add_haze(data, tile_rng)
        _write_tile(tiles / name, data, transform @ Affine.translation(c0, r0), crs)

    zones_path = out_dir / "zones.gpkg"
    geoms, classes = zone_polygons(layout)
    gpd.GeoDataFrame(
        {"class_id": classes, "class_name": [CLASS_NAMES[k] for k in classes]},
        geometry=geoms,
        crs=UTM,
    ).to_file(zones_path, layer="zones", driver="GPKG")

    points = lattice(extent)
    px, py = Transformer.from_crs("EPSG:4326", UTM, always_xy=True).transform(
        points[:, 0], points[:, 1]
    )
    col = np.clip(((px - bounds[0]) / PIXEL_M).astype(int), 0, w - 1)
    row = np.clip(((bounds[3] - py) / PIXEL_M).astype(int), 0, h - 1)
    days = pd.date_range(FIRST_DAY, periods=N_DAYS, freq="D")
    counts = hourly_counts(pixel_class[row, col], load_archetypes(helsinki_dir), days, activity_rng)
    rows = signalling_rows(points, counts, days, activity_rng)
    sig = out_dir / "signalling"
    sig.mkdir(exist_ok=True)
    day_of_row = rows["time"].str.slice(0, 10)
    for i, day in enumerate(days):
        part = rows[day_of_row == day.strftime("%Y-%m-%d")].copy()
        if i == 2:
            # One export gave UTC times with a zone designator for some rows (local = UTC + 8).
            sel = activity_rng.random(len(part)) < 0.05
            utc = pd.to_datetime(part.loc[sel, "time"]) - pd.Timedelta(hours=8)
            part["time"] = part["time"].astype(object)
            part.loc[sel, "time"] = utc.dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy()
        lines = part.to_csv(index=False, lineterminator="\n").splitlines()
        if i in (1, 4, 6):
            for bad in malformed_lines(activity_rng, day):
                lines.insert(int(activity_rng.integers(1, len(lines))), bad)
        (sig / f"day_{day:%Y-%m-%d}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    config = {
        "name": f"demo-city-{seed}",
        "extent": list(extent),
        "crs": UTM,
        "grid": {"cell_size_m": 250, "chip_px": 32},
        "imagery": {"paths": ["tiles/*.tif"], "dehaze": "auto"},
        "signalling": {
            "paths": ["signalling/*.csv"],
            "coords": "wgs84",
            "timezone": "Asia/Shanghai",
            "columns": {"time": "time", "lon": "lon", "lat": "lat", "count": "count"},
        },
        "model": None,
        "output": {"dir": "../outputs"},
    }
    config_path = out_dir / "city.yaml"
    header = f"# Demo city, seed {seed}: generated by urbanfusion, safe to delete.\n"
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if bank is not None:
        _describe_scenes(out_dir, seed, bank)
    return DemoCity(out_dir, config_path, zones_path)


def _describe_scenes(out_dir: Path, seed: int, bank: SceneBank) -> None:
    """``scenes.json`` and ``README.md``: which classes are real pixels, which drawn."""
    (out_dir / "scenes.json").write_text(
        json.dumps(bank.describe(), indent=1) + "\n", encoding="utf-8"
    )
    real = bank.classes()
    drawn = ", ".join(c for c in CLASS_NAMES if c not in real) or "none"
    (out_dir / "README.md").write_text(
        f"# Real-pixel demo city, seed {seed}\n\n"
        f"Blocks of {', '.join(real)} are real aerial scenes from `{bank.folder}` "
        f"({len(set(bank.used))} distinct scenes, {int(SCENE_M)} m a side, resampled to "
        f"{PIXEL_M:g} m); drawn textures: {drawn}.\n"
        "Roads, the railway and the haze of one tile are drawn; the signalling is generated "
        "from each block's class. `scenes.json` lists every scene used. The scenes keep their "
        "data set's licence (AID, RSSCN7: research use only): do not share this city or "
        "train a model to ship on it.\n",
        encoding="utf-8",
    )
