"""Nightly reruns on one output folder: what an incremental run costs against a full one.

Generates a demo city of SIDE x SIDE km (default 10: 100 km2, 4 tiles, 8 days of signalling;
seed 21), then runs `urbanfusion run` in its own process, one after another on one output folder:

  (a) the first run;
  (b) a rerun with nothing changed (goal: under 5 % of (a));
  (c) one new signalling day (the last day's file shifted by a day);
  (d) one changed tile (rewritten in place with the same pixels, so only its identity changes);
  (e) a new model (the shipped weights in another file);
  (f) (a) again with --force, for the full cost on a warm machine.

Prints seconds (the whole command, start-up included), what the store computed and reused, and
the process's peak RSS.

    .venv/bin/python benchmarks/nightly.py [--side-km 10] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from urbanfusion.models.inference import SHIPPED_MODEL
from urbanfusion.workflows.democity.city import generate_demo_city

BIN = Path(sys.executable).parent
# `urbanfusion run` inside a wrapper that prints the child's own peak RSS (VmHWM) at exit.
RUNNER = """
import atexit, sys
from urbanfusion.workflows.cli import app
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print("PEAK_MB", int(line.split()[1]) / 1024, file=sys.stderr)
atexit.register(peak)
app(sys.argv[1:], prog_name="urbanfusion")
"""


def run(config: Path, *extra: str) -> tuple[float, float, dict[str, object]]:
    """Seconds, peak RSS (MB) and the published manifest of one `urbanfusion run`."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "run", str(config), "-q", *extra],
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"run failed: {proc.stderr.strip()}")
    peak = float(next(x.split()[1] for x in proc.stderr.splitlines() if x.startswith("PEAK_MB")))
    out = config.parent / yaml.safe_load(config.read_text())["output"]["dir"]
    manifest = json.loads((out / "manifest.json").read_text())
    return seconds, peak, manifest


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side-km", type=float, default=10.0)
    parser.add_argument("--keep", type=Path, help="keep the city and outputs here")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="uf-nightly-"))
    start = time.perf_counter()
    city = generate_demo_city(work / "city", seed=21, size_km=args.side_km)
    took = time.perf_counter() - start
    print(f"city of {args.side_km:g} x {args.side_km:g} km generated in {took:.1f} s: {city.root}")
    config = city.config
    rows: list[tuple[str, float, float, dict[str, object]]] = []

    def step(label: str, *extra: str) -> dict[str, object]:
        seconds, peak, manifest = run(config, *extra)
        rows.append((label, seconds, peak, manifest))
        return manifest

    first = step("(a) first run")
    before = first["run"]["id"]  # type: ignore[index]
    step("(b) nothing changed")
    days = sorted((city.root / "signalling").glob("*.csv"))
    table = pd.read_csv(days[-1], dtype=str, on_bad_lines="skip")
    when = pd.to_datetime(table["time"], errors="coerce") + pd.Timedelta(days=1)
    table["time"] = when.dt.strftime("%Y-%m-%d %H:%M:%S").where(when.notna(), table["time"])
    new_day = days[-1].with_name(f"day_{when.dropna().iloc[0]:%Y-%m-%d}.csv")
    table.to_csv(new_day, index=False)
    step("(c) one new signalling day")
    tile = sorted((city.root / "tiles").glob("*.tif"))[0]
    shutil.copy2(tile, tile.with_suffix(".tmp"))
    tile.with_suffix(".tmp").replace(tile)  # same pixels, a new identity
    tile.touch()
    step("(d) one changed tile")
    model = work / "model-copy.onnx"
    shutil.copy(SHIPPED_MODEL, model)
    spec = yaml.safe_load(config.read_text())
    spec["model"] = str(model)
    config.write_text(yaml.safe_dump(spec))
    step("(e) a new model")
    step("(f) everything again (--force)", "--force")

    full = rows[0][1]
    print(f"\n{'run':<32} {'seconds':>8} {'of (a)':>7} {'peak MB':>8}  computed / reused")
    for label, seconds, peak, manifest in rows:
        if manifest["run"]["id"] == before and label != rows[0][0]:  # type: ignore[index]
            what = "nothing (up to date)"
        else:
            store = manifest.get("store", {})
            what = ", ".join(
                f"{k} {v['computed']}/{v['reused']}"
                for k, v in store.items()  # type: ignore[union-attr]
            )
        print(f"{label:<32} {seconds:8.2f} {seconds / full:7.1%} {peak:8.0f}  {what}")
        before = manifest["run"]["id"]  # type: ignore[index]
    cells = first["cells"]["total"]  # type: ignore[index]
    print(f"\n{cells} cells; seconds include the process start (imports) of each command")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
