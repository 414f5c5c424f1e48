"""Signalling at city scale: a Zhengzhou-sized week against plain pandas, in one run.

150,000 points on a 250 m lattice x 24 hours x 7 days = 25.2 million rows (CSV, about 1 GB, and
the same rows as Parquet), aggregated to (cell, day, hour) on a 250 m UTM grid. Each reader runs
in its own process so that its peak RSS is its own. Ours runs twice: ``load_signalling`` alone,
and as a run does it (the file kept in a run store as a part, then combined). The peers:

- pandas, what a user would write: ``read_csv``, project the points, ``groupby(cell, day, hour)``;
- DuckDB (``pip install -e '.[bench]'``) with all cores, as a DuckDB user would: one pass for the
  distinct points, projected to cells with pyproj, and a second pass joining the rows to them
  and summing per (cell, day, hour) in SQL. It detects no duplicates and keeps no ledger of
  rejected rows, so its job is lighter than ours.

    .venv/bin/python benchmarks/signalling_scale.py [--points 150000] [--days 7] [--keep DIR]
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
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from peak import PEAK

CENTRE = (113.66, 34.76)
STEP = (0.0027, 0.00225)  # about 247 m x 250 m at 34.8 N


def _lattice(n_points: int) -> tuple[np.ndarray, np.ndarray]:
    side = int(np.ceil(np.sqrt(n_points)))
    i, j = np.divmod(np.arange(n_points), side)
    lon = np.round(CENTRE[0] + (j - side / 2) * STEP[0], 6)
    lat = np.round(CENTRE[1] + (i - side / 2) * STEP[1], 6)
    return lon, lat


def extent(n_points: int) -> tuple[float, float, float, float]:
    """The lon/lat box of the lattice, with a small margin."""
    lon, lat = _lattice(n_points)
    return (lon.min() - 0.001, lat.min() - 0.001, lon.max() + 0.001, lat.max() + 0.001)


def write_inputs(folder: Path, n_points: int, days: int) -> tuple[Path, Path, int]:
    """Write the week as CSV and Parquet, hour by hour; returns the paths and the row count."""
    lon, lat = _lattice(n_points)
    rng = np.random.default_rng(0)
    csv_path, parquet_path = folder / "week.csv", folder / "week.parquet"
    schema = pa.schema(
        [("time", pa.string()), ("lon", pa.float64()), ("lat", pa.float64()), ("count", pa.int64())]
    )
    start = np.datetime64("2026-03-02T00:00:00")
    with (
        pcsv.CSVWriter(csv_path, schema) as csv_out,
        pq.ParquetWriter(parquet_path, schema) as pq_out,
    ):
        for h in range(days * 24):
            stamp = str(start + np.timedelta64(h, "h")).replace("T", " ")
            table = pa.table(
                {
                    "time": pa.array([stamp] * n_points),
                    "lon": lon,
                    "lat": lat,
                    "count": rng.poisson(300, n_points),
                },
                schema=schema,
            )
            csv_out.write_table(table)
            pq_out.write_table(table)
    return csv_path, parquet_path, n_points * days * 24


OURS = (
    PEAK
    + """
import sys, json, time, tempfile
from pathlib import Path
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.store import ResultStore
from urbanfusion.ingest.points_store import load_part, part_files, read_and_keep
from urbanfusion.ingest.signalling import load_signalling
ext = tuple(json.loads(sys.argv[2]))
grid = CityGrid.from_extent(ext, 250, 8)
cfg = SignallingConfig(paths=["x"])
path = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    parts = None
    if sys.argv[3:] == ["store"]:  # as a run: the file kept as a part, then combined
        files = part_files(ResultStore(Path(tmp)), "week")
        read_and_keep(path, grid, cfg, files)
        parts = [load_part(files)]
    ds, rejects, report = load_signalling([path], grid, cfg, parts)
    secs = time.perf_counter() - t
print(json.dumps({"secs": secs, "rows": report.rows_read, "aggregated": report.rows_aggregated,
                  "total": report.count_aggregated,
                  "peak_rss_mb": peak_rss_mb()}))
"""
)

DUCKDB = (
    PEAK
    + """
import sys, json, time
import duckdb, numpy as np, pandas as pd
from pyproj import Transformer
from urbanfusion.pipeline.grid import CityGrid
ext = tuple(json.loads(sys.argv[2]))
grid = CityGrid.from_extent(ext, 250, 8)
t = time.perf_counter()
con = duckdb.connect()
con.execute(f"CREATE VIEW week AS SELECT * FROM read_csv('{sys.argv[1]}')")
points = con.sql("SELECT DISTINCT lon, lat FROM week").df()
to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
x, y = to_grid.transform(points["lon"].to_numpy(), points["lat"].to_numpy())
points["cell"] = grid.cell_index(x, y)
con.register("points", points)
out = con.sql(
    "SELECT cell, CAST(time AS DATE) AS day, hour(time) AS hour, sum(count) AS count, "
    "count(*) AS n FROM week JOIN points USING (lon, lat) GROUP BY ALL"
).df()
secs = time.perf_counter() - t
inside = out["cell"] >= 0
print(json.dumps({"secs": secs, "rows": int(out["n"].sum()),
                  "aggregated": int(out["n"][inside].sum()),
                  "total": float(out["count"][inside].sum()),
                  "peak_rss_mb": peak_rss_mb()}))
"""
)

PANDAS = (
    PEAK
    + """
import sys, json, time
import numpy as np, pandas as pd
from pyproj import Transformer
from urbanfusion.pipeline.grid import CityGrid
ext = tuple(json.loads(sys.argv[2]))
grid = CityGrid.from_extent(ext, 250, 8)
t = time.perf_counter()
df = pd.read_csv(sys.argv[1], parse_dates=["time"])
to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
x, y = to_grid.transform(df["lon"].to_numpy(), df["lat"].to_numpy())
df["cell"] = grid.cell_index(x, y)
df = df[df["cell"] >= 0]
out = df.groupby([df["cell"], df["time"].dt.date, df["time"].dt.hour])["count"].sum()
secs = time.perf_counter() - t
print(json.dumps({"secs": secs, "rows": int(len(df)), "aggregated": int(len(df)),
                  "total": float(out.sum()),
                  "peak_rss_mb": peak_rss_mb()}))
"""
)


def _measure(code: str, path: Path, ext: tuple[float, ...], *extra: str) -> dict[str, float]:
    """Run one reader in a fresh process; it reports its own time and peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(ext), *extra],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_duckdb() -> bool:
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run of median time (its own peak RSS), so figures of one line come from one run."""
    return sorted(runs, key=lambda r: r["secs"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=150_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--keep", type=Path, default=None, help="reuse or keep inputs here")
    parser.add_argument("--repeat", type=int, default=3, help="runs per reader (median)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="urbanfusion-sig-"))
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = folder / "week.csv", folder / "week.parquet"
    rows = args.points * args.days * 24
    if not (csv_path.exists() and parquet_path.exists()):
        t = time.perf_counter()
        csv_path, parquet_path, rows = write_inputs(folder, args.points, args.days)
        print(f"wrote {rows:,} rows in {time.perf_counter() - t:.0f} s")
    print(
        f"CSV {csv_path.stat().st_size / 1e9:.2f} GB, "
        f"Parquet {parquet_path.stat().st_size / 1e9:.2f} GB"
    )
    ext = extent(args.points)
    jobs = {
        "urbanfusion CSV": (OURS, csv_path, ()),
        "urbanfusion CSV, run store": (OURS, csv_path, ("store",)),
        "urbanfusion Parquet": (OURS, parquet_path, ()),
        "DuckDB CSV": (DUCKDB, csv_path, ()),
        "pandas read_csv + groupby": (PANDAS, csv_path, ()),
    }
    if not _has_duckdb():
        print("DuckDB is not installed (pip install -e '.[bench]'): its line is left out")
        del jobs["DuckDB CSV"]
    # Medians of `--repeat` runs, the readers taking turns so that a slow minute hits them all.
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in jobs}
    for _ in range(args.repeat):
        for name, (code, path, extra) in jobs.items():
            runs[name].append(_measure(code, path, ext, *extra))
    results = {name: _median(r) for name, r in runs.items()}
    print(
        f"\n{'reader':<28} {'seconds':>8} {'rows/s':>12} {'peak RSS MB':>12} "
        f"{'vs pandas':>10} {'vs DuckDB':>10}"
    )
    pandas_s = results["pandas read_csv + groupby"]["secs"]
    duck_s = results.get("DuckDB CSV", {"secs": float("nan")})["secs"]
    for name, r in results.items():
        rate = r["rows"] / r["secs"]
        print(
            f"{name:<28} {r['secs']:>8.1f} {rate:>12,.0f} {r['peak_rss_mb']:>12,.0f} "
            f"{pandas_s / r['secs']:>9.1f}x {duck_s / r['secs']:>9.2f}x"
        )
    for name, r in runs.items():
        print(
            f"  {name}: " + ", ".join(f"{x['secs']:.2f} s / {x['peak_rss_mb']:,.0f} MB" for x in r)
        )
    totals = {name: r["total"] for name, r in results.items()}
    print("\ntotals agree:", len({round(v) for v in totals.values()}) == 1, totals)


if __name__ == "__main__":
    main()
