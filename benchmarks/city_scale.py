"""A whole run of a large city: seconds per stage and peak RSS, against just reading the tiles.

Writes a synthetic city of AREA km2 at 2 m: 3-band uint8 tiles of 4,096 px with 100 m of overlap,
every other tile in EPSG:3857 (the rest UTM 49N), a quarter of them hazy; one signalling CSV per
day for 8 days, a row per hour for every point of a 250 m lattice (one point a cell). Then,
each in its own process: `urbanfusion run --force` on the city (250 m cells, 32 px chips: a
7.8 m pixel grid), and a plain read of every tile decimated to 7.8 m (the read floor). Prints
seconds per stage (the manifest's), the whole command's seconds and peak RSS, and the ratio.

    .venv/bin/python benchmarks/city_scale.py [--areas 1000 4000] [--keep DIR]
        [--partition-cells N]   # also each city in partitions of at most N cells, side by side
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import yaml
from affine import Affine
from package_bytecode import compile_packages
from peak import PEAK
from pyproj import Transformer
from rasterio.warp import calculate_default_transform

ORIGIN = (700_000.0, 3_900_000.0)  # UTM 49N, north of Zhengzhou
PIXEL_M = 2.0
TILE_PX = 4_096
OVERLAP_M = 100.0
LATTICE_M = 250.0
DAYS = 8
RUNNER = (
    PEAK
    + """
import atexit, sys
from urbanfusion.workflows.cli import app
atexit.register(lambda: print("PEAK_MB", peak_rss_mb(), file=sys.stderr))
app(sys.argv[1:], prog_name="urbanfusion")
"""
)
READ_FLOOR = (
    PEAK
    + """
import json, sys, time
import rasterio
from rasterio.enums import Resampling
t = time.perf_counter()
for path in json.loads(sys.argv[1]):
    with rasterio.open(path) as src:
        f = 7.8125 / abs(src.res[0]) if src.crs.is_projected else 1
        src.read(out_shape=(src.count, int(src.height / f), int(src.width / f)),
                 resampling=Resampling.average)
print(json.dumps({"secs": time.perf_counter() - t, "peak_mb": peak_rss_mb()}))
"""
)


def _texture(h: int, w: int, seed: int, hazy: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    base = 90 + 40 * np.sin(x / 37.0 + seed) * np.cos(y / 53.0)
    noise = rng.integers(0, 24, (h, w), dtype=np.uint8)
    bands = np.stack([base + noise + off for off in (0, 8, 16)])
    if hazy:
        bands = bands * 0.6 + 225 * 0.4
    return np.clip(bands, 1, 255).astype(np.uint8)


def write_city(folder: Path, area_km2: float) -> Path:
    """Tiles, signalling and a config for a square city of ``area_km2``; returns the config."""
    side = float(np.sqrt(area_km2) * 1000)
    step = TILE_PX * PIXEL_M - 2 * OVERLAP_M
    n = int(np.ceil(side / step))
    (folder / "tiles").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for j in range(n):
            path = folder / "tiles" / f"t{i:02d}_{j:02d}.tif"
            if path.exists():
                continue
            x0, y1 = ORIGIN[0] + j * step - OVERLAP_M, ORIGIN[1] - i * step + OVERLAP_M
            size = TILE_PX
            crs, transform, w, h = "EPSG:32649", Affine(PIXEL_M, 0, x0, 0, -PIXEL_M, y1), size, size
            if (i + j) % 2:
                crs = "EPSG:3857"
                transform, w, h = calculate_default_transform(
                    "EPSG:32649", crs, size, size, x0, y1 - size * PIXEL_M, x0 + size * PIXEL_M, y1
                )
            with rasterio.open(
                path, "w", driver="GTiff", width=w, height=h, count=3, dtype="uint8", crs=crs,
                transform=transform, tiled=True, blockxsize=512, blockysize=512, nodata=0,
                compress="deflate",
            ) as dst:  # fmt: skip
                dst.write(_texture(h, w, i * n + j, hazy=(i * n + j) % 4 == 0))
    to_lonlat = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True)
    xs = ORIGIN[0] + np.arange(LATTICE_M / 2, side, LATTICE_M)
    ys = ORIGIN[1] - np.arange(LATTICE_M / 2, side, LATTICE_M)
    gx, gy = np.meshgrid(xs, ys)
    lon, lat = to_lonlat.transform(gx.ravel(), gy.ravel())
    (folder / "signalling").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    level = rng.gamma(2.0, 40.0, lon.size)
    for d in range(DAYS):
        path = folder / "signalling" / f"day_{d}.csv"
        if path.exists():
            continue
        day = np.datetime64("2026-03-02") + d
        hours = np.repeat(np.arange(24), lon.size)
        frame = pd.DataFrame(
            {
                "time": (day + hours.astype("timedelta64[h]")).astype(str),
                "lon": np.tile(np.round(lon, 6), 24),
                "lat": np.tile(np.round(lat, 6), 24),
                "count": rng.poisson(np.tile(level, 24) * (1 + np.sin(hours / 24 * 6.28))),
            }
        )
        frame.to_csv(path, index=False)
    lon0, lat0 = to_lonlat.transform(ORIGIN[0] + 1, ORIGIN[1] - side + 1)
    lon1, lat1 = to_lonlat.transform(ORIGIN[0] + side - 1, ORIGIN[1] - 1)
    config = folder / "city.yaml"
    spec = {
        "name": f"city of {area_km2:g} km2",
        "extent": [lon0, lat0, lon1, lat1],
        "crs": "EPSG:32649",
        "imagery": {"paths": ["tiles/*.tif"]},
        "signalling": {"paths": ["signalling/*.csv"]},
        "output": {"dir": "out"},
    }
    config.write_text(yaml.safe_dump(spec))
    return config


def run_config(config: Path) -> tuple[float, float, dict[str, object]]:
    """``urbanfusion run --force`` in its own process: seconds, peak MB and the manifest."""
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "run", str(config), "-q", "--force"],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - t
    if proc.returncode:
        sys.exit(proc.stderr)
    peak = float(next(x.split()[1] for x in proc.stderr.splitlines() if "PEAK_MB" in x))
    out = config.parent / yaml.safe_load(config.read_text())["output"]["dir"]
    return seconds, peak, json.loads((out / "manifest.json").read_text())


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--areas", type=float, nargs="+", default=[1000.0, 4000.0])
    parser.add_argument("--keep", type=Path, help="reuse or keep the cities here")
    parser.add_argument("--partition-cells", type=int, help="also run in partitions of N cells")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="uf-city-"))
    compile_packages(Path(__file__).resolve().parents[1])
    rows = []
    for area in args.areas:
        t = time.perf_counter()
        config = write_city(root / f"city-{area:g}", area)
        written = time.perf_counter() - t
        tiles = sorted(str(p) for p in (config.parent / "tiles").glob("*.tif"))
        floor = json.loads(
            subprocess.run(
                [sys.executable, "-c", READ_FLOOR, json.dumps(tiles)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for cells in (None, args.partition_cells) if args.partition_cells else (None,):
            if cells:  # the same city, cut into partitions of at most so many cells
                spec = yaml.safe_load(config.read_text())
                config = config.with_name("city-partitions.yaml")
                config.write_text(yaml.safe_dump({**spec, "grid": {"partition_cells": cells}}))
            seconds, peak, manifest = run_config(config)
            rows.append((area, written, seconds, peak, manifest, floor, len(tiles)))
    print(
        f"{'km2':>6} {'tiles':>5} {'cells':>7} {'parts':>5} {'rows M':>6} {'write s':>7} "
        f"{'run s':>6} {'peak MB':>8} {'read s':>6} {'x read':>6}  stages (s)"
    )
    for area, written, seconds, peak, manifest, floor, n_tiles in rows:
        timings = ", ".join(f"{k} {v:.1f}" for k, v in manifest["timings_s"].items())
        print(
            f"{area:>6g} {n_tiles:>5} {manifest['cells']['total']:>7} "
            f"{manifest['partitions']['count']:>5} "
            f"{manifest['signalling']['rows_read'] / 1e6:>6.1f} {written:>7.0f} {seconds:>6.1f} "
            f"{peak:>8.0f} {floor['secs']:>6.1f} {seconds / floor['secs']:>6.1f}  {timings}"
        )
    if len(rows) == 2 and not args.partition_cells:
        print(f"peak RSS ratio {rows[1][3] / rows[0][3]:.2f} for {rows[1][0] / rows[0][0]:g}x area")


if __name__ == "__main__":
    main()
