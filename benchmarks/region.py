"""A region-wide run in bounded memory: peak RSS per process, cells/s per worker, partitions.

Writes (once; ``--keep DIR`` reuses it) a square region of AREA km2 (default 50,000: 894 x 894
cells of 250 m, 800,000 cells) in UTM 49N around Zhengzhou: 3-band uint8 tiles of 4,096 px at
10 m over all of it (a quarter of them hazy), and TOWNS towns (discs of 3 to 14 km) where a
signalling point stands in every 250 m cell and sends a row per hour for 8 days (one CSV per
day; at least 30 M rows in all). Then, each ``urbanfusion run --force`` in its own process:

- the whole region, partitions sized for ``--worker-gb`` of memory, dask's threads (2);
- a quarter of it (the same inputs, half the side), the same way;
- the quarter on a dask cluster of 1 worker process, then of 2 (one thread and one core each):
  the speed-up from 1 to 2 workers.

Prints the wall time, cells/s, cells/s per worker, peak RSS of the run's process (``VmHWM``;
a cluster's workers are processes of their own, not in it), the partitions and each stage's
seconds; the peak's ratio between the region and its quarter; the speed-up; and the time for
Henan (5.46 M cells) on 16 and 64 such workers: its cells at the measured predict rate of one
worker times the workers, plus the region's ingest (rows, not cells) and its write scaled by
cells, both done by the run's own process.

    .venv/bin/python benchmarks/region.py [--area 50000] [--worker-gb 2] [--keep DIR]
        [--only region quarter cluster-1 cluster-2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import rasterio
import yaml
from affine import Affine
from city_scale import _texture, run_config
from pyproj import Transformer

ORIGIN = (600_000.0, 3_950_000.0)  # UTM 49N: the north-west corner, north-west of Zhengzhou
PIXEL_M = 10.0
TILE_PX = 4_096
CELL_M = 250.0
DAYS = 8
TOWNS = 60
HENAN_CELLS = 5_460_000


def write_tiles(folder: Path, side_m: float) -> int:
    """10 m tiles covering a square of ``side_m``; returns how many."""
    step = TILE_PX * PIXEL_M
    n = int(np.ceil(side_m / step))
    (folder / "tiles").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        for j in range(n):
            path = folder / "tiles" / f"t{i:02d}_{j:02d}.tif"
            if path.exists():
                continue
            x0, y1 = ORIGIN[0] + j * step, ORIGIN[1] - i * step
            with rasterio.open(
                path.with_suffix(".part"), "w", driver="GTiff", width=TILE_PX, height=TILE_PX,
                count=3, dtype="uint8", crs="EPSG:32649",
                transform=Affine(PIXEL_M, 0, x0, 0, -PIXEL_M, y1), tiled=True, blockxsize=512,
                blockysize=512, nodata=0, compress="deflate",
            ) as dst:  # fmt: skip
                dst.write(_texture(TILE_PX, TILE_PX, i * n + j, hazy=(i * n + j) % 4 == 0))
            path.with_suffix(".part").rename(path)
    return n * n


def town_points(side_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Lon and lat of a point in every 250 m cell inside a town (seeded)."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(0.05 * side_m, 0.95 * side_m, (TOWNS, 2))
    radii = rng.uniform(3_000, 14_000, TOWNS)
    xs = np.arange(CELL_M / 2, side_m, CELL_M)
    gx, gy = np.meshgrid(xs, xs)
    inside = np.zeros(gx.shape, bool)
    for (cx, cy), r in zip(centres, radii, strict=True):
        inside |= (gx - cx) ** 2 + (gy - cy) ** 2 <= r * r
    to_lonlat = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(ORIGIN[0] + gx[inside], ORIGIN[1] - gy[inside])
    return np.round(lon, 6), np.round(lat, 6)


def write_signalling(folder: Path, side_m: float) -> int:
    """One CSV per day of hourly rows at every town point; returns the rows written."""
    lon, lat = town_points(side_m)
    (folder / "signalling").mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    level = rng.gamma(2.0, 40.0, lon.size)
    hours = np.repeat(np.arange(24), lon.size)
    for d in range(DAYS):
        path = folder / "signalling" / f"day_{d}.csv"
        if path.exists():
            continue
        day = np.datetime64("2026-03-02T00", "h") + d * 24
        table = pa.table(
            {
                "time": np.datetime_as_string(day + hours, unit="s"),
                "lon": np.tile(lon, 24),
                "lat": np.tile(lat, 24),
                "count": rng.poisson(np.tile(level, 24) * (1 + np.sin(hours / 24 * 6.28))),
            }
        )
        pcsv.write_csv(table, path.with_suffix(".part"))
        path.with_suffix(".part").rename(path)
    return lon.size * 24 * DAYS


def write_config(
    folder: Path, side_m: float, name: str, workers: int, worker_gb: float, scheduler: str
) -> Path:
    """A config over the square of ``side_m`` from the region's corner, reading every input."""
    to_lonlat = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True)
    lon0, lat0 = to_lonlat.transform(ORIGIN[0] + 1, ORIGIN[1] - side_m + 1)
    lon1, lat1 = to_lonlat.transform(ORIGIN[0] + side_m - 1, ORIGIN[1] - 1)
    config = folder / f"{name}.yaml"
    spec = {
        "name": name,
        "extent": [lon0, lat0, lon1, lat1],
        "crs": "EPSG:32649",
        "grid": {"cell_size_m": CELL_M, "chip_px": 32},
        "imagery": {"paths": ["tiles/*.tif"]},
        "signalling": {"paths": ["signalling/*.csv"]},
        "dask": {"scheduler": scheduler, "workers": workers, "worker_memory_gb": worker_gb},
        "output": {"dir": f"out-{name}"},
    }
    config.write_text(yaml.safe_dump(spec))
    return config


def main() -> None:
    """Write the region once, run it four ways, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--area", type=float, default=50_000.0)
    parser.add_argument("--worker-gb", type=float, default=2.0)
    parser.add_argument("--keep", type=Path, help="reuse or keep the region here")
    parser.add_argument(
        "--only", nargs="+", default=["region", "quarter", "cluster-1", "cluster-2"]
    )
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="uf-region-"))
    folder.mkdir(parents=True, exist_ok=True)
    side = float(np.sqrt(args.area) * 1000)
    t = time.perf_counter()
    n_tiles = write_tiles(folder, side)
    rows = write_signalling(folder, side)
    print(f"region: {folder}, {n_tiles} tiles, {rows / 1e6:.1f} M rows, "
          f"written in {time.perf_counter() - t:.0f} s", flush=True)  # fmt: skip
    runs = {
        "region": (side, 2, "threads"),
        "quarter": (side / 2, 2, "threads"),
        "cluster-1": (side / 2, 1, "local-cluster"),
        "cluster-2": (side / 2, 2, "local-cluster"),
    }
    results = {}
    for name in args.only:
        extent, workers, scheduler = runs[name]
        config = write_config(folder, extent, name, workers, args.worker_gb, scheduler)
        seconds, peak, manifest = run_config(config)
        results[name] = {"seconds": seconds, "peak_mb": peak, "manifest": manifest}
        print(f"{name}: done in {results[name]['seconds']:.0f} s", flush=True)
    print(
        f"\n{'run':<10} {'cells':>9} {'parts':>5} {'workers':>7} {'wall s':>7} {'cells/s':>8} "
        f"{'/worker':>8} {'peak MB':>8}  stages (s)"
    )
    rate = {}
    for name, r in results.items():
        m, workers = r["manifest"], runs[name][1]
        cells = m["cells"]["total"]
        rate[name] = cells / r["seconds"]
        timings = ", ".join(f"{k} {v:.0f}" for k, v in m["timings_s"].items())
        print(
            f"{name:<10} {cells:>9,} {m['partitions']['count']:>5} {workers:>7} "
            f"{r['seconds']:>7.0f} {rate[name]:>8.0f} {rate[name] / workers:>8.0f} "
            f"{r['peak_mb']:>8.0f}  {timings}"
        )
    if {"region", "quarter"} <= results.keys():
        peaks = results["region"]["peak_mb"] / results["quarter"]["peak_mb"]
        print(f"\npeak RSS, region / quarter: {peaks:.2f} (goal: within 1.20)")
    if {"cluster-1", "cluster-2"} <= results.keys():
        print(f"speed-up from 1 to 2 workers: {rate['cluster-2'] / rate['cluster-1']:.2f}")
        one = results["cluster-1"]["manifest"]
        per_worker = one["cells"]["total"] / one["timings_s"]["predict"]
        print(f"predict per worker: {per_worker:.0f} cells/s")
        if "region" in results:
            region = results["region"]["manifest"]
            serial = region["timings_s"]["ingest"] + (
                region["timings_s"]["write"] + region["timings_s"]["hash"]
            ) * (HENAN_CELLS / region["cells"]["total"])
            for n in (16, 64):
                minutes = (serial + HENAN_CELLS / (per_worker * n)) / 60
                print(f"Henan ({HENAN_CELLS:,} cells) on {n} workers: about {minutes:.0f} min")


if __name__ == "__main__":
    main()
