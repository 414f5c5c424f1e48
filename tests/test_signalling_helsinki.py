"""The real Helsinki hourly population (wide tables, YKR 250 m grid) through the grid-id path."""

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer

from urbanfusion.ingest.signalling import load_signalling
from urbanfusion.pipeline.config import SignallingConfig
from urbanfusion.pipeline.grid import CityGrid

EXTENT = (24.49, 60.10, 25.26, 60.41)  # the whole metropolitan area


@pytest.fixture(scope="module")
def helsinki(shared_data):
    folder = shared_data / "mobility" / "helsinki_dynpop"
    gpkg = folder / "Helsinki_Travel_Time_Matrix_2023_grid.gpkg"
    grid = CityGrid.from_extent(EXTENT, 250, 8, "EPSG:3067")
    cfg = SignallingConfig(
        paths=["x"],
        format="wide",
        timezone="Europe/Helsinki",
        columns={"grid_id": "YKR_ID"},
        grid={"path": str(gpkg), "id_column": "id"},
    )
    files = sorted(folder.glob("HMA_Dynamic_population_24H_*.csv"))
    ds, rejects, report = load_signalling(files, grid, cfg)
    return folder, grid, ds, rejects, report


def test_each_hour_total_is_conserved_for_the_ids_that_join(helsinki):
    folder, _, ds, rejects, report = helsinki
    import geopandas as gpd

    ids = set(gpd.read_file(folder / "Helsinki_Travel_Time_Matrix_2023_grid.gpkg").id.astype(str))
    table = pd.read_csv(folder / "HMA_Dynamic_population_24H_workdays.csv", dtype={"YKR_ID": str})
    joined = table[table.YKR_ID.isin(ids)]
    monday = ds["activity"].isel(day=0).values  # the reference week starts on a Monday
    expected = joined[[f"H{h}" for h in range(24)]].sum().to_numpy()
    np.testing.assert_allclose(np.nansum(monday, axis=0), expected, rtol=1e-5)  # float32 sums
    assert 0.98 < expected.sum() / table[[f"H{h}" for h in range(24)]].sum().sum() < 1.0
    # The ids that do not join are rejected by name, once per file, nothing else is lost.
    assert set(rejects.reason) == {"unknown grid id (not in signalling.grid)"}
    assert report.rows_rejected == 3 * (len(table) - len(joined))
    assert report.count_read == pytest.approx(
        report.count_aggregated + report.count_outside + report.count_rejected
    )


def _area(grid, ds, lon, lat, day):
    """Summed hourly profile of the cells in a lon/lat box on one day of the reference week."""
    lo, la = np.meshgrid(np.linspace(*lon, 20), np.linspace(*lat, 20))
    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(
        lo.ravel(), la.ravel()
    )
    cells = np.unique(grid.cell_index(x, y))
    return np.nansum(ds["activity"].isel(day=day).values[cells], axis=0)


CORE = ((24.935, 24.957), (60.163, 60.173))  # Helsinki's commercial core, around Aleksanterinkatu
KONTULA = ((25.07, 25.10), (60.230, 60.242))  # a housing estate in the east


def test_the_centre_fills_by_day_on_workdays_and_the_suburbs_by_night(helsinki):
    _, grid, ds, _, _ = helsinki
    centre = _area(grid, ds, *CORE, day=0)  # Monday
    suburb = _area(grid, ds, *KONTULA, day=0)
    assert 9 <= int(np.argmax(centre)) <= 17 and centre[12] > 1.5 * centre[3]
    assert int(np.argmax(suburb)) in (*range(20, 24), *range(0, 7)) and suburb[3] > suburb[12]
    sunday = _area(grid, ds, *CORE, day=6)
    assert sunday[12] < centre[12]  # offices are empty on Sunday
