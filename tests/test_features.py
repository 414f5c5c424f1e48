import geopandas as gpd
import numpy as np
import shapely

from urbanfusion.ingest.labels import NO_LABEL, cell_labels
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.preprocess.activity import activity_inputs
from urbanfusion.preprocess.chips import image_inputs, to_chips

WEEKDAYS = np.array([0, 1, 2, 3, 4, 5, 6, 0])  # 8 days from a Monday


def _activity(seed=0, n=6):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(200, (n, 8, 24)).astype(np.float32)
    return counts, np.ones_like(counts, dtype=bool)


def test_activity_features_ignore_a_constant_factor_on_counts():
    counts, observed = _activity()
    a, _ = activity_inputs(counts, observed, WEEKDAYS)
    b, _ = activity_inputs(counts * 10, observed, WEEKDAYS)
    # log1p is log for counts >> 1: a market share or population factor cancels.
    assert np.abs(a - b).max() < 0.01
    assert (a.max(axis=(1, 2)) == 0).all()


def test_unobserved_hours_are_filled_not_taken_as_zero_people():
    counts, observed = _activity()
    observed[0, :, 3] = False
    counts[0, :, 3] = 0  # what a naive reader would see
    features, has = activity_inputs(counts, observed, WEEKDAYS)
    assert has[0] == 1
    assert features[0, :, 3].min() > features[0].min() - 1e-6
    assert abs(features[0, 0, 3] - features[0, 0, 2]) < 0.2  # close to its neighbours


def test_cells_with_too_few_observed_hours_have_no_activity():
    counts, observed = _activity()
    observed[1] = False
    observed[1, 0, :10] = True
    features, has = activity_inputs(counts, observed, WEEKDAYS)
    assert has[1] == 0 and (features[1] == 0).all()


def test_chips_are_the_pixels_of_their_cell():
    img = np.arange(3 * 6 * 9, dtype=np.float32).reshape(3, 6, 9)
    chips = to_chips(img, 3)
    assert chips.shape == (2, 3, 3, 3, 3)
    np.testing.assert_array_equal(chips[1, 2], img[:, 3:6, 6:9])


def test_chips_mostly_nodata_have_no_image():
    chips = np.full((2, 3, 4, 4), 0.5, np.float32)
    chips[0, :, :3, :] = np.nan  # 75 % nodata
    chips[1, 0, 0, 0] = np.nan
    out, has = image_inputs(chips, np.full(3, 0.5), np.full(3, 0.1))
    assert has.tolist() == [0.0, 1.0]
    assert (out[0] == 0).all() and out[1, 0, 0, 0] == 0 and not np.isnan(out).any()


def test_cells_are_labelled_by_a_pure_enough_majority():
    grid = CityGrid.from_bounds((0, 0, 1000, 250), 250, 8, "EPSG:32649")
    zones = gpd.GeoDataFrame(
        {"class_id": [0, 5]},
        geometry=[shapely.box(0, 0, 650, 250), shapely.box(650, 0, 1000, 250)],
        crs="EPSG:32649",
    )
    labels, purity = cell_labels(grid, zones, 9)
    assert labels.tolist() == [0, 0, 0, 5]  # cell 2 is 60 % class 0: just pure enough
    np.testing.assert_allclose(purity, [1, 1, 0.6, 1])
    labels, _ = cell_labels(grid, zones, 9, min_purity=0.7)
    assert labels[2] == NO_LABEL


def test_the_confusion_report_has_a_table_and_a_picture(tmp_path):
    import cv2
    import pandas as pd

    from urbanfusion.models.metrics import confusion, write_confusion

    m = confusion(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 2, 0]), 3)
    write_confusion(tmp_path, m, ["a", "b", "c"])
    table = pd.read_csv(tmp_path / "confusion.csv", index_col=0)
    assert table.to_numpy().tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert cv2.imread(str(tmp_path / "confusion.png")) is not None
