"""`urbanfusion dehaze` as a whole process against adrishyam's file API, on one hazy image.

Both take a file and write a file, each in a fresh process (imports included), as a user runs
them. The image is 2,048 x 2,048 RGB: the demo city's hazy tile, tiled to size, written as a
GeoTIFF for us and as the PNG adrishyam reads (it reads with PIL). adrishyam comes with
``pip install -e '.[bench]'``; without it, only our figure is printed.

    .venv/bin/python benchmarks/dehaze_cli.py [--size 2048] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.package_bytecode import compile_packages  # noqa: E402
from urbanfusion.workflows.democity.city import generate_demo_city  # noqa: E402

ADRISHYAM = "from adrishyam import dehaze_image; import sys; dehaze_image(sys.argv[1], sys.argv[2])"


def hazy_image(folder: Path, size: int) -> np.ndarray:
    """The demo city's hazy tile (RGB, uint8), tiled to ``size`` x ``size``."""
    city = generate_demo_city(folder / "city", seed=7)
    hazy = next((city.root / "tiles").glob("*hazy*.tif"))
    with rasterio.open(hazy) as src:
        rgb = src.read([1, 2, 3])
    reps = (1, -(-size // rgb.shape[1]), -(-size // rgb.shape[2]))
    return np.tile(rgb, reps)[:, :size, :size]


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rgb = hazy_image(folder, args.size)
        tif, png = folder / "hazy.tif", folder / "hazy.png"
        profile = {
            "driver": "GTiff",
            "width": args.size,
            "height": args.size,
            "count": 3,
            "crs": "EPSG:32649",
            "transform": Affine(2.0, 0, 700_000, 0, -2.0, 3_900_000),
        }
        with rasterio.open(tif, "w", dtype="uint8", **profile) as dst:
            dst.write(rgb)
        Image.fromarray(np.moveaxis(rgb, 0, -1)).save(png)
        cli = shutil.which("urbanfusion", path=str(Path(sys.executable).parent))
        jobs = {"urbanfusion dehaze": [cli, "dehaze", str(tif), str(folder / "ours.tif")]}
        try:
            import adrishyam  # noqa: F401

            jobs["adrishyam 0.1.1 dehaze_image"] = [
                sys.executable,
                "-c",
                ADRISHYAM,
                str(png),
                str(folder / "adrishyam"),
            ]
        except ImportError:
            print("adrishyam is not installed (pip install -e '.[bench]'): its line is left out")
        compile_packages(ROOT)  # as adrishyam's install has its bytecode
        for cmd in jobs.values():  # one untimed round: both read their files from the page cache
            _wall(cmd)
        times: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(args.repeat):  # taking turns, so a slow minute hits both
            for name, cmd in jobs.items():
                times[name].append(_wall(cmd))
    print(f"{args.size} x {args.size} RGB, whole process, median of {args.repeat}:")
    peer = statistics.median(times.get("adrishyam 0.1.1 dehaze_image", [float("nan")]))
    for name, runs in times.items():
        secs = statistics.median(runs)
        runs_text = ", ".join(f"{r:.2f}" for r in runs)
        print(f"  {name:<30} {secs:6.2f} s  ({secs / peer:.3f}x adrishyam)  runs: {runs_text}")


if __name__ == "__main__":
    main()
