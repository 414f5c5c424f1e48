"""Ingest memory against the number of tiles: one city's tiles cut into N small ones.

The demo city (seed 11, 3 km) is run as it is and with its tiles cut into pieces of ``--px``
pixels (hundreds to thousands of small tiles, the way some archives deliver a city), each run a
whole ``urbanfusion run`` process under the faults' memory cap, printing exit status, tiles,
peak RSS and seconds. With ``--before REV`` the same runs also use the code of git revision
REV, side by side (the peer is our own earlier code: no library mosaics a tile folder onto a
grid with the same rules).

    .venv/bin/python benchmarks/many_tiles.py [--px 48 24] [--before 4b67891]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import rasterio
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.faults import code_of  # noqa: E402
from tests.faults import Fault, edit_config, run_fault  # noqa: E402
from urbanfusion.workflows.democity.city import generate_demo_city  # noqa: E402


def cut_tiles(px: int):
    """A fault maker: every tile of the city cut into ``px``-pixel pieces (the city's order)."""

    def make(city: Path) -> list[str]:
        pieces = city / "pieces"
        pieces.mkdir()
        for tile in sorted((city / "tiles").glob("*.tif")):
            with rasterio.open(tile) as src:
                profile = {**src.profile, "tiled": False, "compress": None}
                for row in range(0, src.height, px):
                    for col in range(0, src.width, px):
                        width, height = min(px, src.width - col), min(px, src.height - row)
                        window = Window(col, row, width, height)
                        profile.update(
                            width=window.width,
                            height=window.height,
                            transform=src.window_transform(window),
                        )
                        name = f"{tile.stem}_{row:05d}_{col:05d}.tif"
                        with rasterio.open(pieces / name, "w", **profile) as dst:
                            dst.write(src.read(window=window))
        edit_config(city, **{"imagery.paths": ["pieces/*.tif"]})
        return []

    return make


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--px", type=int, nargs="*", default=[96, 48, 24])
    parser.add_argument("--before", help="also run the code of this git revision")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="uf-many-tiles-"))
    clean = generate_demo_city(root / "clean", seed=11, size_km=3.0).root
    envs = {"after": None}
    if args.before:
        envs = {"before": code_of(args.before, root / "before"), **envs}
    print("| tiles | MB on disk | " + " | ".join(f"{k}: exit, peak MB, s" for k in envs) + " |")
    print("| --- | --- |" + " --- |" * len(envs))
    cases = [None, *args.px]
    for k, px in enumerate(cases):
        cells = []
        n_tiles = mb = 0.0
        for label, env in envs.items():
            work = root / label / f"{k:02d}"
            fault = None if px is None else Fault(f"{px} px", "", cut_tiles(px), "ok")
            outcome = run_fault(fault, clean, work, env=env)
            folder = work / "city" / ("tiles" if px is None else "pieces")
            files = list(folder.glob("*.tif"))
            n_tiles, mb = len(files), sum(f.stat().st_size for f in files) / 2**20
            cells.append(f"{outcome.exit}, {outcome.peak_mb:.0f}, {outcome.seconds:.1f}")
        print(f"| {n_tiles} | {mb:.1f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
