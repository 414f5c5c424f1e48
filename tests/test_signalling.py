import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from ingest.coords import gcj02_to_wgs84, wgs84_to_gcj02
from ingest.signalling import load_signalling
from pipeline.errors import InputFormatError
from pipeline.grid import CityGrid

COLS = {"time": "time", "lon": "lon", "lat": "lat", "count": "count"}
GRID = CityGrid.from_extent((113.60, 34.72, 113.70, 34.80), crs="EPSG:32649")

MESSY = """time,lon,lat,count
2026-03-02 08:00:00,113.65,34.76,100
2026-03-02 08:00:00,113.6501,34.7601,50

2026-03-02 09:00:00,113.65,34.76,abc
2026-03-02 10:00:00,113.65,34.76
2026-03-02 11:00:00,113.65,34.76,5,9
soon,113.65,34.76,4
2026-03-02 12:00:00,,34.76,4
2026-03-02 12:00:00,113.65,95.0,4
2026-03-02 13:00:00,113.65,34.76,-3
2026-03-02 14:00:00,120.00,30.00,70
2026-03-02T06:00:00Z,113.65,34.76,11
2026-03-03T15:00:00+08:00,113.65,34.76,12
"""


def test_every_row_is_aggregated_rejected_or_counted_outside(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    ds, _, report = load_signalling([path], GRID, COLS)
    assert report.rows_read == 12  # the blank line is not a row
    assert report.rows_read == report.rows_aggregated + report.rows_rejected + report.rows_outside
    assert (report.rows_aggregated, report.rows_rejected, report.rows_outside) == (4, 7, 1)
    assert report.count_aggregated == float(np.nansum(ds["activity"].values)) == 100 + 50 + 11 + 12
    assert report.count_outside == 70


def test_rejects_name_the_file_line_and_reason(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    _, rejects, _ = load_signalling([path], GRID, COLS)
    by_line = dict(zip(rejects["line"], rejects["reason"], strict=True))
    assert by_line == {
        5: "missing or non-numeric count",
        6: "wrong number of fields",
        7: "wrong number of fields",
        8: "unparsable time",
        9: "missing or non-numeric coordinates",
        10: "coordinates out of range",
        11: "negative count",
    }  # line 4 is blank: skipped, not rejected
    assert set(rejects["source_file"]) == {str(path)}


def test_times_with_an_offset_become_local_hours(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    ds, _, _ = load_signalling([path], GRID, COLS)
    cell = GRID.cell_index(
        *Transformer.from_crs("EPSG:4326", GRID.crs, always_xy=True).transform(113.65, 34.76)
    )
    series = ds["activity"].sel(cell=GRID.cell_ids()[cell])
    assert float(series.isel(day=0, hour=8)) == 150  # two points of one cell summed
    assert float(series.isel(day=0, hour=14)) == 11  # 06:00Z is 14:00 in Asia/Shanghai
    assert float(series.isel(day=1, hour=15)) == 12
    assert not bool(ds["observed"].sel(cell=GRID.cell_ids()[cell]).isel(day=0, hour=3))


def test_a_file_without_the_mapped_columns_names_expected_and_found(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("ts,x,y,n\n2026-03-02 08:00:00,113.65,34.76,1\n")
    with pytest.raises(
        InputFormatError,
        match=r"expected \['time', 'lon', 'lat', 'count'\].*found \['ts', 'x', 'y', 'n'\]",
    ):
        load_signalling([path], GRID, COLS)


def test_gcj02_declared_points_recover_their_wgs84_cells(tmp_path):
    rng = np.random.default_rng(0)
    lon = rng.uniform(113.61, 113.69, 300)
    lat = rng.uniform(34.73, 34.79, 300)
    glon, glat = wgs84_to_gcj02(lon, lat)
    back = gcj02_to_wgs84(glon, glat)
    assert np.abs(back[0] - lon).max() < 1e-8 and np.abs(back[1] - lat).max() < 1e-8  # << 1 m
    path = tmp_path / "gcj.csv"
    pd.DataFrame(
        {"time": "2026-03-02 08:00:00", "lon": glon, "lat": glat, "count": np.arange(300)}
    ).to_csv(path, index=False)
    x, y = Transformer.from_crs("EPSG:4326", GRID.crs, always_xy=True).transform(lon, lat)
    truth = GRID.cell_index(x, y)
    for coords, same in (("gcj02", True), ("wgs84", False)):
        ds, _, _ = load_signalling([path], GRID, COLS, coords=coords)
        got = ds["activity"].isel(day=0, hour=8).values
        expected = np.bincount(truth, weights=np.arange(300), minlength=GRID.n_cells)
        assert np.allclose(np.nan_to_num(got), expected) == same


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x1f\x8b\x08garbage" * 10, "cannot read"),
        ("time,lon,lat,count\n2026-03-02 01:00:00,113.6,34.7,\xe9\n".encode("latin-1"), "UTF-8"),
    ],
)
def test_an_unreadable_file_is_a_clear_error_naming_it(tmp_path, content, match):
    path = tmp_path / ("broken.csv.gz" if content[:2] == b"\x1f\x8b" else "latin.csv")
    path.write_bytes(content)
    with pytest.raises(InputFormatError, match=match) as info:
        load_signalling([path], GRID, COLS)
    assert str(path) in str(info.value)
