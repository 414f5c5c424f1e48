import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from urbanfusion.ingest.coords import gcj02_to_bd09, gcj02_to_wgs84, wgs84_to_gcj02
from urbanfusion.ingest.signalling import DUPLICATE
from urbanfusion.ingest.signalling import load_signalling as _load
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.errors import InputFormatError
from urbanfusion.pipeline.grid import CityGrid

GRID = CityGrid.from_extent((113.60, 34.72, 113.70, 34.80), crs="EPSG:32649")


def load_signalling(paths, grid, **cfg):
    return _load(paths, grid, SignallingConfig(paths=["x"], **cfg))


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
    ds, _, report = load_signalling([path], GRID)
    assert report.rows_read == 12  # the blank line is not a row
    assert report.rows_read == report.rows_aggregated + report.rows_rejected + report.rows_outside
    assert (report.rows_aggregated, report.rows_rejected, report.rows_outside) == (4, 7, 1)
    assert report.count_aggregated == float(np.nansum(ds["activity"].values)) == 100 + 50 + 11 + 12
    assert report.count_outside == 70
    assert report.count_read == 100 + 50 + 4 + 4 - 3 + 70 + 11 + 12 + 4  # every numeric count
    assert report.count_read == (
        report.count_aggregated + report.count_outside + report.count_rejected
    )


def test_rejects_name_the_file_line_and_reason(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    _, rejects, _ = load_signalling([path], GRID)
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
    ds, _, _ = load_signalling([path], GRID)
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
        load_signalling([path], GRID)


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
        ds, _, _ = load_signalling([path], GRID, coords=coords)
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
        load_signalling([path], GRID)
    assert str(path) in str(info.value)


def _clean_rows(n_points=40, seed=0):
    rng = np.random.default_rng(seed)
    lon = np.round(rng.uniform(113.61, 113.69, n_points), 5)
    lat = np.round(rng.uniform(34.73, 34.79, n_points), 5)
    times = pd.date_range("2026-03-02", periods=48, freq="h")
    frame = pd.DataFrame(
        {
            "time": np.repeat(times.strftime("%Y-%m-%d %H:%M:%S"), n_points),
            "lon": np.tile(lon, len(times)),
            "lat": np.tile(lat, len(times)),
            "count": rng.integers(0, 500, n_points * len(times)),
        }
    )
    return frame


def test_fast_exact_and_parquet_readers_agree(tmp_path):
    frame = _clean_rows()
    clean = tmp_path / "clean.csv"
    frame.to_csv(clean, index=False)
    messy = tmp_path / "messy.csv"
    lines = clean.read_text().splitlines()
    at = len(lines) // 2
    lines.insert(at, "not,a,valid,row,at,all")  # forces the exact path midway
    messy.write_text("\n".join(lines) + "\n")
    parquet = tmp_path / "rows.parquet"
    frame.assign(time=pd.to_datetime(frame["time"])).to_parquet(parquet)
    gz = tmp_path / "rows.csv.gz"
    frame.to_csv(gz, index=False, compression="gzip")
    results = {p.name: load_signalling([p], GRID) for p in (clean, messy, parquet, gz)}
    base = results["clean.csv"][0]["activity"].values
    for name, (ds, _, report) in results.items():
        np.testing.assert_array_equal(ds["activity"].values, base, err_msg=name)
        assert report.rows_aggregated + report.rows_outside == len(frame), name
    _, rejects, report = results["messy.csv"]
    assert rejects["line"].tolist() == [at + 1] and report.rows_rejected == 1


def test_a_resent_row_is_rejected_as_a_duplicate_not_counted_twice(tmp_path):
    frame = _clean_rows(5)
    again = frame.iloc[[3, 7]]
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    frame.to_csv(a, index=False)
    again.to_csv(b, index=False)  # a second export re-sending two rows
    _, rejects, report = load_signalling([a, b], GRID)
    assert report.rows_rejected == 2 and set(rejects["reason"]) == {DUPLICATE}
    assert set(rejects["source_file"]) == {str(b)} and rejects["line"].tolist() == [2, 3]
    # The rows' text (read again from the later file, where the duplicates are).
    written = [line.split(",")[1:] for line in b.read_text().splitlines()[1:3]]
    assert [raw.split(",")[1:] for raw in rejects["raw"]] == written
    assert report.count_aggregated == frame["count"].sum()


def test_rows_outside_the_day_range_are_counted_separately(tmp_path):
    import datetime as dt

    path = tmp_path / "rows.csv"
    frame = _clean_rows(5)
    frame.to_csv(path, index=False)
    ds, _, report = load_signalling([path], GRID, start=dt.date(2026, 3, 3))
    assert report.rows_outside_time == 5 * 24 and report.rows_aggregated == 5 * 24
    assert len(ds["day"]) == 1 and str(ds["day"].values[0])[:10] == "2026-03-03"


def test_bd09_points_land_in_their_wgs84_cells(tmp_path):
    lon, lat = np.array([113.65, 113.62]), np.array([34.76, 34.75])
    blon, blat = gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))
    path = tmp_path / "bd.csv"
    pd.DataFrame({"time": "2026-03-02 08:00:00", "lon": blon, "lat": blat, "count": [3, 4]}).to_csv(
        path, index=False
    )
    ds, _, _ = load_signalling([path], GRID, coords="bd09")
    x, y = Transformer.from_crs("EPSG:4326", GRID.crs, always_xy=True).transform(lon, lat)
    got = ds["activity"].isel(day=0, hour=8).values
    assert got[GRID.cell_index(x, y)].tolist() == [3, 4]


def test_aware_times_across_a_dst_change_keep_their_local_hour(tmp_path):
    grid = CityGrid.from_extent((24.90, 60.15, 24.98, 60.20))
    path = tmp_path / "dst.csv"
    # Helsinki moves from UTC+2 to UTC+3 at 01:00 UTC on 2026-03-29.
    path.write_text(
        "time,lon,lat,count\n"
        "2026-03-29T00:30:00Z,24.94,60.17,1\n"  # 02:30 local (EET)
        "2026-03-29T01:30:00Z,24.94,60.17,2\n"  # 04:30 local (EEST): 03:xx never happens
        "2026-03-29 05:00:00,24.94,60.17,4\n"  # naive = wall time
    )
    ds, _, _ = load_signalling([path], grid, timezone="Europe/Helsinki")
    cell = grid.cell_index(
        *Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(24.94, 60.17)
    )
    series = ds["activity"].isel(cell=int(cell), day=0).values
    assert series[2] == 1 and series[4] == 2 and series[5] == 4 and np.isnan(series[3])


def test_a_platform_lattice_in_gcj02_is_spread_by_area_and_conserves_counts(tmp_path):
    # A 0.0025 degree lattice given by its centres in GCJ-02, not aligned with the UTM grid.
    lons, lats = np.meshgrid(np.arange(113.62, 113.68, 0.0025), np.arange(34.74, 34.78, 0.0025))
    glon, glat = wgs84_to_gcj02(lons.ravel(), lats.ravel())
    grid_csv = tmp_path / "lattice.csv"
    pd.DataFrame({"cell": [f"c{i}" for i in range(glon.size)], "x": glon, "y": glat}).to_csv(
        grid_csv, index=False
    )
    rows = tmp_path / "rows.csv"
    counts = np.arange(glon.size, dtype=float) + 1
    pd.DataFrame(
        {
            "time": "2026-03-02 08:00:00",
            "grid_id": [f"c{i}" for i in range(glon.size)],
            "count": counts,
        }
    ).assign(grid_id=lambda f: f.grid_id.where(f.index != 0, "nope")).to_csv(rows, index=False)
    platform = {"path": str(grid_csv), "id_column": "cell", "centre": ("x", "y")}
    ds, rejects, report = _load(
        [rows],
        GRID,
        SignallingConfig(
            paths=["x"],
            format="grid",
            coords="gcj02",
            grid={**platform, "cell_size": 0.0025},
        ),
    )
    assert rejects["reason"].tolist() == ["unknown grid id (not in signalling.grid)"]
    total = float(np.nansum(ds["activity"].values))
    assert abs(total - (counts.sum() - counts[0])) < 1e-6 * counts.sum()  # all inside the extent
    assert report.count_read == pytest.approx(
        report.count_aggregated + report.count_outside + report.count_rejected, rel=1e-12
    )
    filled = (~np.isnan(ds["activity"].isel(day=0, hour=8).values)).sum()
    assert filled > glon.size * 0.5  # spread over the cells the lattice covers


def test_a_stored_activity_table_reads_back_onto_an_overlapping_grid(tmp_path):
    from urbanfusion.ingest.activity_store import write_activity

    path = tmp_path / "rows.csv"
    _clean_rows(30).to_csv(path, index=False)
    ds, _, _ = load_signalling([path], GRID)
    stored = tmp_path / "activity.parquet"
    write_activity(stored, ds)
    again, _, report = load_signalling([stored], GRID, format="activity")
    np.testing.assert_array_equal(again["activity"].values, ds["activity"].values)
    # A smaller grid over part of the city: the same cell ids, the rest counted outside.
    small = CityGrid.from_extent((113.60, 34.72, 113.65, 34.76), crs="EPSG:32649")
    part, _, report = load_signalling([stored], small, format="activity")
    assert report.rows_outside > 0
    assert report.rows_read == report.rows_aggregated + report.rows_outside
    common = np.isin(GRID.cell_ids(), small.cell_ids())
    np.testing.assert_array_equal(
        np.nansum(part["activity"].values), np.nansum(ds["activity"].values[common])
    )


def test_parquet_with_text_times_and_offsets_reads_like_csv(tmp_path):
    path = tmp_path / "rows.parquet"
    pd.DataFrame(
        {
            "time": ["2026-03-02 08:00:00", "2026-03-02T01:00:00Z", "soon"],
            "lon": [113.65, 113.65, 113.65],
            "lat": [34.76, 34.76, 34.76],
            "count": [5, 7, 9],
        }
    ).to_parquet(path)
    ds, rejects, _ = load_signalling([path], GRID)
    assert float(np.nansum(ds["activity"].isel(day=0, hour=8).values)) == 5
    assert float(np.nansum(ds["activity"].isel(day=0, hour=9).values)) == 7  # 01Z = 09 local
    assert rejects["line"].tolist() == [3] and rejects["reason"].tolist() == ["unparsable time"]


def test_a_broken_platform_grid_csv_is_a_clear_error(tmp_path):
    from urbanfusion.ingest.platform_grid import read_platform_grid
    from urbanfusion.pipeline.config import PlatformGridConfig

    bad = tmp_path / "grid.csv"
    bad.write_text('cell,x,y\n"c1,113.6,34.7\nc2,113.6\n')
    with pytest.raises(InputFormatError, match="cannot read the grid CSV"):
        read_platform_grid(
            PlatformGridConfig(
                path=str(bad), id_column="cell", centre=("x", "y"), cell_size=0.0025
            ),
            GRID,
            "wgs84",
        )


def _ledger_balances(report):
    assert report.rows_read == (
        report.rows_aggregated
        + report.rows_outside
        + report.rows_outside_time
        + report.rows_rejected
    )
    assert report.count_read == pytest.approx(
        report.count_aggregated
        + report.count_outside
        + report.count_outside_time
        + report.count_rejected
    )


def test_a_rolling_window_keeps_the_last_days_and_follows_new_daily_files(tmp_path, small_city):
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.layout import plan

    grid = plan(load_config(small_city.config)).grid
    files = sorted((small_city.root / "signalling").glob("*.csv"))
    assert len(files) == 8  # 2026-03-02 .. 2026-03-09
    window = SignallingConfig(paths=["x"], window_days=3)
    ds, _, report = _load(files, grid, window)
    assert [str(d)[:10] for d in ds["day"].values] == ["2026-03-07", "2026-03-08", "2026-03-09"]
    _ledger_balances(report)
    same, _, by_dates = _load(files, grid, SignallingConfig(paths=["x"], start="2026-03-07"))
    np.testing.assert_array_equal(ds["activity"].values, same["activity"].values)
    # The same rows are used; those of the older days are counted outside the days (or, when
    # also outside the extent, outside it: the first reason wins, as for start/end).
    assert report.rows_aggregated == by_dates.rows_aggregated
    assert report.count_aggregated == pytest.approx(by_dates.count_aggregated)
    assert report.rows_outside_time > 0

    # The next night a new day arrives: the window moves one day on.
    rows = pd.read_csv(files[-1])
    rows["time"] = (pd.to_datetime(rows["time"], errors="coerce") + pd.Timedelta(days=1)).astype(
        str
    )
    new_day = tmp_path / "day_2026-03-10.csv"
    rows.dropna().to_csv(new_day, index=False)
    moved, _, report = _load([*files, new_day], grid, window)
    assert [str(d)[:10] for d in moved["day"].values] == [
        "2026-03-08",
        "2026-03-09",
        "2026-03-10",
    ]
    _ledger_balances(report)


def test_a_few_rows_dated_months_later_do_not_move_the_window(tmp_path, small_city):
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.layout import plan

    grid = plan(load_config(small_city.config)).grid
    files = sorted((small_city.root / "signalling").glob("*.csv"))
    window = SignallingConfig(paths=["x"], window_days=3)
    clean, _, _ = _load(files, grid, window)
    typo = tmp_path / "typo.csv"
    rows = pd.read_csv(files[-1]).dropna()
    middle = (rows["lon"] - rows["lon"].median()).abs() + (rows["lat"] - rows["lat"].median()).abs()
    rows = rows.loc[middle.sort_values().index[:2]]  # two rows well inside the extent
    rows["time"] = rows["time"].str.replace("2026-03-09", "2026-09-03")  # month and day swapped
    rows.to_csv(typo, index=False)
    ds, _, report = _load([*files, typo], grid, window)
    # The window still ends on the city's last day: the same activity, nothing lost.
    assert [str(d)[:10] for d in ds["day"].values] == ["2026-03-07", "2026-03-08", "2026-03-09"]
    np.testing.assert_array_equal(ds["activity"].values, clean["activity"].values)
    assert report.stray_days == ["2026-09-03"] and report.stray_rows == 2
    (line,) = [w for w in report.warnings() if "dated after" in w]
    assert "2 row(s) dated after 2026-03-09 (2026-09-03)" in line
    _ledger_balances(report)


def test_a_window_that_leaves_most_rows_out_says_so(tmp_path, small_city):
    from urbanfusion.pipeline.config import load_config
    from urbanfusion.workflows.layout import plan

    grid = plan(load_config(small_city.config)).grid
    files = sorted((small_city.root / "signalling").glob("*.csv"))
    _, _, report = _load(files, grid, SignallingConfig(paths=["x"], window_days=1))
    assert any("window_days keeps 2026-03-09 to 2026-03-09" in w for w in report.warnings())
    _, _, report = _load(files, grid, SignallingConfig(paths=["x"], window_days=7))
    assert not any("window_days" in w for w in report.warnings())


def test_a_row_dated_after_tomorrow_is_rejected_against_the_clock(tmp_path):
    import datetime as dt

    from urbanfusion.ingest.signalling import IMPLAUSIBLE_DATE

    frame = _clean_rows(5)
    soon = (dt.date.today() + dt.timedelta(days=40)).isoformat()
    frame.loc[0, "time"] = f"{soon} 08:00:00"
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    _, rejects, report = load_signalling([path], GRID)
    assert rejects["reason"].tolist() == [IMPLAUSIBLE_DATE]
    _ledger_balances(report)


def test_a_rejected_row_keeps_its_line_as_written(tmp_path):
    import gzip

    text = (
        "time,lon,lat,count,operator\n"
        '2026-03-02T08:00:00,113.65,34.76,12,"China Mobile, Henan"\n'
        "2026-03-02 09:00:00,113.65,34.76,-4,unicom\n"
        "2026-03-02 10:00,113.650000,34.76,abc,telecom\n"
    )
    plain, packed = tmp_path / "rows.csv", tmp_path / "packed.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    for path in (plain, packed):
        _, rejects, _ = load_signalling([path], GRID)
        assert rejects["raw"].tolist() == text.splitlines()[2:], path.name
    long = tmp_path / "long.csv"
    long.write_text(text + "2026-03-02 11:00:00,113.65,34.76,-7," + "x" * 100_000 + "\n")
    _, rejects, _ = load_signalling([long], GRID)
    raw = rejects.set_index("line")["raw"]
    assert raw.loc[[3, 4]].tolist() == text.splitlines()[2:]
    assert raw[5].startswith("2026-03-02 11:00:00,113.65,34.76,-7,xxx")
    assert raw[5].endswith("... [100,036 bytes in all]")


def test_a_line_of_megabytes_is_one_rejected_row_not_a_failed_file(tmp_path):
    frame = _clean_rows(5)
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    lines = path.read_text().splitlines()
    lines.insert(100, "garbage," * (9 << 17))  # 9 MiB: over two of Arrow's blocks
    path.write_text("\n".join(lines) + "\n")
    _, rejects, report = load_signalling([path], GRID)
    assert rejects["line"].tolist() == [101]
    assert rejects["reason"].tolist() == ["wrong number of fields"]
    assert report.rows_read == len(frame) + 1
    _ledger_balances(report)


def test_a_window_on_wide_tables_is_a_config_error():
    with pytest.raises(ValueError, match="window_days needs dated rows"):
        SignallingConfig(paths=["x"], format="wide", grid={"path": "g.gpkg"}, window_days=7)


def test_infinite_and_absurd_counts_are_rejected_with_a_reason(tmp_path):
    from urbanfusion.ingest.signalling import TOO_LARGE

    frame = _clean_rows(5)
    frame["count"] = frame["count"].astype(float)
    frame.loc[[3, 7], "count"] = [np.inf, 1e30]
    path = tmp_path / "rows.csv"
    frame.to_csv(path, index=False)
    ds, rejects, report = load_signalling([path], GRID)
    assert rejects["reason"].tolist() == [TOO_LARGE, TOO_LARGE]
    assert rejects["line"].tolist() == [5, 9]
    assert np.isfinite(report.count_read) and np.isfinite(np.nansum(ds["activity"].values))
    _ledger_balances(report)
    _, rejects, _ = load_signalling([path], GRID, max_count=400)
    assert (rejects["reason"] == TOO_LARGE).sum() == (frame["count"] > 400).sum()


def test_a_mistyped_year_is_rejected_with_a_reason_not_allocated(tmp_path):
    from urbanfusion.ingest.signalling import IMPLAUSIBLE_DATE

    frame = _clean_rows(5)
    far = frame.iloc[[0, 1, 2]].assign(
        time=["2300-01-01 08:00:00", "2099-06-01 09:00:00", "1970-01-02 10:00:00"]
    )
    path = tmp_path / "rows.csv"
    pd.concat([frame, far]).to_csv(path, index=False)
    ds, rejects, report = load_signalling([path], GRID)
    assert [str(d)[:10] for d in ds["day"].values] == ["2026-03-02", "2026-03-03"]
    assert rejects["reason"].tolist() == [IMPLAUSIBLE_DATE] * 3
    assert report.rows_aggregated == len(frame)
    _ledger_balances(report)


def test_the_day_axis_holds_only_days_with_data(tmp_path):
    frame = _clean_rows(5)
    later = frame.assign(time=pd.to_datetime(frame["time"]) + pd.Timedelta(days=30))
    path = tmp_path / "rows.csv"
    pd.concat([frame, later.astype({"time": str})]).to_csv(path, index=False)
    ds, _, _ = load_signalling([path], GRID)
    assert ds.sizes["day"] == 4  # two days, then two a month later: no 28 empty days between


def test_when_no_row_is_used_the_error_says_why_and_what_to_check(tmp_path):
    from urbanfusion.pipeline.errors import NoCoverageError

    path = tmp_path / "rows.csv"
    _clean_rows(5).to_csv(path, index=False)
    with pytest.raises(NoCoverageError, match="rejected as 'coordinates out of range'"):
        load_signalling([path], GRID, columns={"lon": "lat", "lat": "lon"})
    far = _clean_rows(5).assign(lon=lambda f: f["lon"] - 5)  # lon/lat that land elsewhere
    far.to_csv(path, index=False)
    with pytest.raises(NoCoverageError, match="lon and lat are not swapped"):
        load_signalling([path], GRID)
    text = _clean_rows(5).assign(count="many")
    text.to_csv(path, index=False)
    with pytest.raises(NoCoverageError, match="missing or non-numeric count"):
        load_signalling([path], GRID)


def test_local_times_marked_utc_collide_and_the_report_warns_with_the_likely_cause(tmp_path):
    frame = _clean_rows(5)
    shifted = frame.assign(time=frame["time"] + "Z")  # 08:00 local written as 08:00 UTC...
    again = frame.assign(time=frame["time"] + "+08:00")  # ...and re-sent with the offset
    path = tmp_path / "rows.csv"
    pd.concat([again, shifted]).to_csv(path, index=False)
    _, _, report = load_signalling([path], GRID)
    (line,) = report.warnings()
    assert "rows rejected" in line and "local times marked Z" in line
    frame.to_csv(path, index=False)
    assert load_signalling([path], GRID)[2].warnings() == []


def _export(path, lon, lat):
    pd.DataFrame({"time": "2026-03-02 08:00:00", "lon": lon, "lat": lat, "count": 1}).to_csv(
        path, index=False
    )


@pytest.mark.parametrize("margin", [0.0, 0.01], ids=["clipped-export", "larger-export"])
def test_points_given_in_another_datum_than_declared_get_a_warning_naming_it(tmp_path, margin):
    rng = np.random.default_rng(3)
    lon = rng.uniform(113.60 - margin, 113.70 + margin, 4000)
    lat = rng.uniform(34.72 - margin, 34.80 + margin, 4000)
    path = tmp_path / "rows.csv"
    _export(path, lon, lat)  # WGS84, as declared: no warning
    _, _, report = load_signalling([path], GRID)
    assert report.rows_inside_by_datum["wgs84"] == report.rows_aggregated
    assert report.warnings() == []
    _export(path, *wgs84_to_gcj02(lon, lat))  # an Amap export, declared WGS84
    _, _, report = load_signalling([path], GRID)
    if margin:  # the shift moves as many rows in as out: nothing to see, and nothing said
        assert report.warnings() == []
        return
    (line,) = report.warnings()
    assert "read as gcj02 instead of wgs84" in line and "signalling.coords: gcj02" in line
    assert load_signalling([path], GRID, coords="gcj02")[2].warnings() == []


def _many_blocks_rows(tmp_path):
    """Two files with rows re-sent inside each file and across them, a bad row, a malformed
    line and a row outside the extent, over two days: dozens of blocks at 1 KB a block."""
    frame = _clean_rows()
    first = pd.concat([frame, frame.iloc[5:40]], ignore_index=True)  # re-sent inside the file
    first.loc[10, "count"] = -1
    second = pd.concat([frame.iloc[100:160], frame.iloc[::-7]], ignore_index=True)
    second.loc[3, "lon"] = 120.0
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    first.to_csv(a, index=False)
    lines = second.to_csv(index=False).splitlines()
    lines.insert(50, "broken,row")  # the exact path takes over midway through the file
    b.write_text("\n".join(lines) + "\n")
    return [a, b]


def test_blocks_of_any_size_and_stored_parts_give_the_same_activity_rejects_and_counts(
    tmp_path, monkeypatch
):
    from urbanfusion.ingest import row_blocks
    from urbanfusion.ingest.points_store import load_part, part_files, read_and_keep
    from urbanfusion.pipeline.store import ResultStore

    paths = _many_blocks_rows(tmp_path)
    cfg = SignallingConfig(paths=["x"])
    whole = _load(paths, GRID, cfg)
    monkeypatch.setattr(row_blocks, "BLOCK_BYTES", 1024)  # dozens of blocks per file
    small = _load(paths, GRID, cfg)
    store = ResultStore(tmp_path / "store")
    files = [part_files(store, p.stem) for p in paths]
    for path, part in zip(paths, files, strict=True):
        read_and_keep(path, GRID, cfg, part)
    stored = _load(paths, GRID, cfg, [load_part(f) for f in files])
    assert whole[2].rows_rejected > 40 and whole[2].rows_outside > 0  # the cases are there
    assert set(whole[1]["reason"]) >= {DUPLICATE, "negative count", "wrong number of fields"}
    for name, (ds, rejects, report) in {"small blocks": small, "stored": stored}.items():
        np.testing.assert_array_equal(ds["activity"].values, whole[0]["activity"].values, name)
        # `raw` is the line as written, whichever path (fast, exact, stored) read it.
        pd.testing.assert_frame_equal(rejects, whole[1], obj=name)
        assert report == whole[2], name


def test_a_ledger_whose_counters_do_not_add_up_is_an_error():
    from urbanfusion.ingest.signalling import LedgerError, RowLedger, SignallingReport

    ledger = RowLedger(SignallingReport())
    ledger.read(rows=10, count=50.0)
    ledger.aggregated(rows=8, count=45.0)
    ledger.outside(rows=2, count=5.0)
    ledger.check()  # balances
    ledger.outside_days(rows=1, count=0.0)  # a row counted twice
    with pytest.raises(LedgerError, match=r"does not balance: read 10 rows .* accounted 11"):
        ledger.check()
    lost = RowLedger(SignallingReport())
    lost.read(rows=3, count=9.0)
    lost.aggregated(rows=3, count=8.0)  # a count dropped between counters
    with pytest.raises(LedgerError, match="does not balance"):
        lost.check()


def test_a_reader_that_loses_rows_stops_the_load(tmp_path, monkeypatch):
    from urbanfusion.ingest.signalling import READERS, LedgerError
    from urbanfusion.ingest.signalling.load import load_signalling as load

    path = tmp_path / "messy.csv"
    path.write_text(MESSY)
    honest = READERS["activity"]

    def forgetful(paths, grid, cfg, ledger, totals):
        read = honest(paths, grid, cfg, ledger, totals)
        ledger.read(rows=1)  # one more row read than accounted for
        return read

    monkeypatch.setitem(READERS, "activity", forgetful)
    table = tmp_path / "activity.parquet"
    from urbanfusion.ingest.activity_store import write_activity

    ds, _, _ = load_signalling([path], GRID)
    write_activity(table, ds)
    with pytest.raises(LedgerError, match="this is a bug"):
        load([table], GRID, SignallingConfig(paths=["x"], format="activity"))
