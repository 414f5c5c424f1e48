"""`urbanfusion plan`: what a run will take, from the config alone (no pixels, no rows read)."""

import gzip
import re
import shutil

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import write_config
from urbanfusion.ingest.row_estimate import estimate_rows
from urbanfusion.pipeline.config import load_config
from urbanfusion.workflows.cli import app
from urbanfusion.workflows.planning import plan_run


def _plan(*args: str) -> str:
    result = CliRunner().invoke(app, ["plan", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_city_that_fits_is_one_partition_with_its_rows_and_time(small_city, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    said = _plan(str(cfg))
    assert "partitions: 1 of up to 182 cells" in said and "runs by partition" not in said
    rows = int(re.search(r"signalling rows: about ([\d,]+)", said)[1].replace(",", ""))
    files = load_config(cfg).signalling.paths
    assert rows > 1000 and files  # the generated city's rows, estimated from the files
    assert re.search(r"expected time: about [\d.]+ s on 1 worker", said)
    assert not (tmp_path / "out").exists()  # a plan touches no output


def test_a_grid_too_large_for_a_run_is_planned_in_partitions_that_fit(small_city, tmp_path):
    # 1 m cells over the 3 km city: about 10 million cells, on 8 workers of 2 GB.
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"grid.cell_size_m": 1})
    said = _plan(str(cfg), "--worker-memory", "2", "--workers", "8")
    n = int(re.search(r"partitions: ([\d,]+) of", said)[1].replace(",", ""))
    gb = float(re.search(r"memory per worker: about ([\d.]+) GB of 2.0 GB", said)[1])
    assert n >= 8 and gb <= 2.0
    driver = float(re.search(r"memory of the run's own process: about ([\d.]+) GB", said)[1])
    assert driver > gb  # it keeps something of each of the 10 million cells
    planned = plan_run(load_config(cfg), workers=8, worker_bytes=2 * 2**30)
    assert sum(p.n_cells for p in planned.partitions) == planned.layout.grid.n_cells


def test_a_worker_too_small_for_the_libraries_is_one_line(small_city, tmp_path):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    result = CliRunner().invoke(app, ["plan", str(cfg), "--worker-memory", "0.2"])
    assert result.exit_code == 2 and "give workers more memory" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "parquet"])
def test_rows_are_estimated_from_a_file_s_size_within_a_few_percent(tmp_path, kind):
    lines = ["time,lon,lat,count"] + [
        f"2026-03-02 {h:02d}:00:00,113.{i:05d},34.{i:05d},{i % 97}"
        for i in range(20_000)
        for h in range(3)
    ]
    csv = tmp_path / "rows.csv"
    csv.write_text("\n".join(lines) + "\n")
    path = csv
    if kind == "csv.gz":
        path = tmp_path / "rows.csv.gz"
        with open(csv, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
    elif kind == "parquet":
        path = tmp_path / "rows.parquet"
        pq.write_table(pa.csv.read_csv(csv), path)
    assert estimate_rows(path) == pytest.approx(60_000, rel=0.05)


def test_a_signalling_file_that_is_not_what_its_name_says_is_one_line(small_city, tmp_path):
    bad = tmp_path / "day.csv.gz"
    bad.write_text("time,lon,lat,count\n")  # plain text named .gz
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"signalling.paths": [str(bad)]})
    result = CliRunner().invoke(app, ["plan", str(cfg)])
    assert result.exit_code == 2 and f"{bad}: cannot read it" in result.output
    assert len(result.output.strip().splitlines()) == 1
