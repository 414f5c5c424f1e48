"""Imagery at city scale: tiles in two CRSs, aligned, dehazed and mosaicked in bounded memory.

Writes a synthetic extent of N x N pixels at 1 m (3 bands, uint8) as tiles of 5,000 px with a
100 m overlap, every other tile in Web Mercator instead of UTM, all hazy. Each size is then
ingested in its own process with ``dehaze: always`` and every pixel of the mosaic computed (a
reduction, so nothing scene-sized is kept), on dask's threaded scheduler with 2 workers. Prints
seconds, megapixels per second and peak RSS; peak RSS must not grow with the extent.

    .venv/bin/python benchmarks/imagery_scale.py [--sides 20000 40000] [--keep DIR]
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
import rasterio
from affine import Affine
from peak import PEAK
from rasterio.warp import calculate_default_transform

ORIGIN = (700_000.0, 3_900_000.0)  # UTM 49N, north of Zhengzhou
TILE_PX = 5_000
OVERLAP = 100


def _texture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 90 + 40 * np.sin(x / 37.0 + seed) * np.cos(y / 53.0)
    bands = [base + rng.normal(0, 12, (h, w)).astype(np.float32) + off for off in (0, 8, 16)]
    clear = np.clip(np.stack(bands), 1, 255)
    t = 0.6  # thin, even haze of a grey airlight
    return np.clip(clear * t + 225 * (1 - t), 1, 255).astype(np.uint8)


def write_tiles(folder: Path, side: int) -> list[Path]:
    """Tiles covering ``side`` x ``side`` metres from ORIGIN; odd tiles in EPSG:3857."""
    paths = []
    n = -(-side // TILE_PX)
    for i in range(n):
        for j in range(n):
            x0 = ORIGIN[0] + j * TILE_PX - OVERLAP
            y1 = ORIGIN[1] - i * TILE_PX + OVERLAP
            size = TILE_PX + 2 * OVERLAP
            path = folder / f"tile_{side}_{i:02d}_{j:02d}.tif"
            paths.append(path)
            if path.exists():
                continue
            crs, transform, w, h = "EPSG:32649", Affine(1, 0, x0, 0, -1, y1), size, size
            if (i + j) % 2:
                crs = "EPSG:3857"
                transform, w, h = calculate_default_transform(
                    "EPSG:32649", crs, size, size, x0, y1 - size, x0 + size, y1
                )
            with rasterio.open(
                path,
                "w",
                driver="GTiff",
                width=w,
                height=h,
                count=3,
                dtype="uint8",
                crs=crs,
                transform=transform,
                tiled=True,
                blockxsize=512,
                blockysize=512,
                nodata=0,
            ) as dst:
                dst.write(_texture(h, w, i * n + j))
    return paths


RUN = (
    PEAK
    + """
import json, sys, time
from pathlib import Path
import dask, dask.array as da
from urbanfusion.ingest.imagery import load_imagery
from urbanfusion.pipeline.grid import CityGrid
side, tiles = int(sys.argv[1]), json.loads(sys.argv[2])
x0, y1 = {origin}
grid = CityGrid.from_bounds((x0, y1 - side, x0 + side, y1), 32.0, 32, "EPSG:32649")
t = time.perf_counter()
with dask.config.set(scheduler="threads", num_workers=2):
    image, reports, _ = load_imagery([Path(p) for p in tiles], grid, [1, 2, 3], dehaze="always")
    total = da.nansum(image.data, axis=(1, 2)).compute()
secs = time.perf_counter() - t
print(json.dumps({{"secs": secs, "pixels": grid.pixel_shape[0] * grid.pixel_shape[1],
    "tiles": sum(r.status == "used" for r in reports), "dehazed": sum(r.dehazed for r in reports),
    "peak_rss_mb": peak_rss_mb(),
    "mean": [float(v) for v in total / (grid.pixel_shape[0] * grid.pixel_shape[1])]}}))
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[20_000, 40_000])
    parser.add_argument("--keep", type=Path, default=None, help="reuse or keep tiles here")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="urbanfusion-img-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"{'side px':>8} {'tiles':>6} {'Mpx':>7} {'write s':>8} {'run s':>7} {'Mpx/s':>7} "
        f"{'peak RSS MB':>12}"
    )
    for side in args.sides:
        t = time.perf_counter()
        tiles = write_tiles(folder, side)
        written = time.perf_counter() - t
        code = RUN.format(origin=ORIGIN)
        argv = [sys.executable, "-c", code, str(side), json.dumps([str(p) for p in tiles])]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        mpx = r["pixels"] / 1e6
        print(
            f"{side:>8} {r['tiles']:>6} {mpx:>7.0f} {written:>8.0f} {r['secs']:>7.0f} "
            f"{mpx / r['secs']:>7.1f} {r['peak_rss_mb']:>12.0f}   (dehazed {r['dehazed']})"
        )


if __name__ == "__main__":
    main()
