"""Peak RSS of a run against its cell count and days: the figures behind the plan-time estimate.

One 4 km x 4 km city at 2 m (one tile, a signalling point per 250 m cell, DAYS days) sits in
the corner of square extents of growing side, so the imagery and the signalling rows stay the
same while the grid grows. Each run is `urbanfusion run --force` in its own process; its peak
RSS is its own VmHWM. Prints peak RSS per run, then the fitted bytes per cell and per cell-day
next to the constants that ``urbanfusion.workflows.memory`` estimates with.

    .venv/bin/python benchmarks/run_memory.py [--sides 10 20 40 80 160] [--days 8 32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import yaml
from affine import Affine
from city_scale import RUNNER, _texture
from pyproj import Transformer

from urbanfusion.workflows.memory import BASE_BYTES, CELL_BYTES, CELL_DAY_BYTES

ORIGIN = (700_000.0, 3_900_000.0)  # UTM 49N, north of Zhengzhou
CITY_M = 4_000.0
PIXEL_M = 2.0
CELL_M = 250.0


def write_inputs(folder: Path, days: int) -> None:
    """One tile and ``days`` daily signalling files over the 4 km city."""
    (folder / "tiles").mkdir(parents=True, exist_ok=True)
    size = int(CITY_M / PIXEL_M)
    with rasterio.open(
        folder / "tiles" / "city.tif", "w", driver="GTiff", width=size, height=size, count=3,
        dtype="uint8", crs="EPSG:32649", transform=Affine(PIXEL_M, 0, ORIGIN[0], 0, -PIXEL_M,
        ORIGIN[1]), tiled=True, compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(_texture(size, size, 0, hazy=False))
    to_lonlat = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True)
    xs = ORIGIN[0] + np.arange(CELL_M / 2, CITY_M, CELL_M)
    gx, gy = np.meshgrid(xs, ORIGIN[1] - (xs - ORIGIN[0]))
    lon, lat = to_lonlat.transform(gx.ravel(), gy.ravel())
    (folder / "signalling").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for d in range(days):
        hours = np.repeat(np.arange(24), lon.size)
        day = np.datetime64("2026-03-02") + d
        pd.DataFrame(
            {
                "time": (day + hours.astype("timedelta64[h]")).astype(str),
                "lon": np.tile(np.round(lon, 6), 24),
                "lat": np.tile(np.round(lat, 6), 24),
                "count": rng.poisson(50, hours.size),
            }
        ).to_csv(folder / "signalling" / f"day_{d:03d}.csv", index=False)


def config_for(folder: Path, side_km: float) -> Path:
    """A config whose extent is a square of ``side_km`` with the city in its north-west corner."""
    to_lonlat = Transformer.from_crs("EPSG:32649", "EPSG:4326", always_xy=True)
    side = side_km * 1000
    lon0, lat0 = to_lonlat.transform(ORIGIN[0] + 1, ORIGIN[1] - side + 1)
    lon1, lat1 = to_lonlat.transform(ORIGIN[0] + side - 1, ORIGIN[1] - 1)
    config = folder / f"side-{side_km:g}.yaml"
    spec = {
        "name": f"{side_km:g} km",
        "extent": [lon0, lat0, lon1, lat1],
        "crs": "EPSG:32649",
        "imagery": {"paths": ["tiles/*.tif"]},
        "signalling": {"paths": ["signalling/*.csv"]},
        "output": {"dir": f"out-{side_km:g}"},
    }
    config.write_text(yaml.safe_dump(spec))
    return config


def run(config: Path) -> tuple[int, float]:
    """Cells and peak MB of one run."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "run", str(config), "-q", "--force"],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        sys.exit(proc.stderr)
    peak = float(next(x.split()[1] for x in proc.stderr.splitlines() if "PEAK_MB" in x))
    out = config.parent / yaml.safe_load(config.read_text())["output"]["dir"]
    return json.loads((out / "manifest.json").read_text())["cells"]["total"], peak


def main() -> None:
    """Print the table and the fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=float, nargs="+", default=[10, 20, 40, 80, 160])
    parser.add_argument("--days", type=int, nargs=2, default=[8, 32])
    parser.add_argument("--keep", type=Path, help="keep the inputs and outputs here")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="uf-memory-"))
    rows = []
    for days in args.days:
        folder = root / f"days-{days}"
        write_inputs(folder, days)
        sides = args.sides if days == args.days[0] else args.sides[-2:]
        for side in sides:
            cells, peak = run(config_for(folder, side))
            rows.append((side, cells, days, peak))
            print(f"side {side:>5g} km  cells {cells:>9,}  days {days:>3}  peak {peak:>7.0f} MB")
    cells = np.array([r[1] for r in rows], float)
    days = np.array([r[2] for r in rows], float)
    peak = np.array([r[3] for r in rows], float) * 2**20
    fit, *_ = np.linalg.lstsq(np.stack([np.ones_like(cells), cells, cells * days], 1), peak)
    print(
        f"fit: {fit[0] / 2**20:.0f} MB + {fit[1]:.0f} B/cell + {fit[2]:.0f} B/cell-day   "
        f"(the estimate uses {BASE_BYTES / 2**20:.0f} MB + {CELL_BYTES} B/cell + "
        f"{CELL_DAY_BYTES} B/cell-day)"
    )


if __name__ == "__main__":
    main()
