import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio

from urbanfusion.models.classes import CLASS_NAMES
from urbanfusion.workflows.democity.curves import derive_archetypes, load_archetypes


def test_builtin_archetypes_are_the_ones_derived_from_the_real_helsinki_data(shared_data):
    derived = derive_archetypes(shared_data / "mobility" / "helsinki_dynpop")
    builtin = load_archetypes(None)
    assert derived.keys() == builtin.keys()
    for name in derived:
        np.testing.assert_allclose(derived[name], builtin[name], atol=1e-6, err_msg=name)


def test_archetypes_have_the_rhythms_residents_would_recognise():
    a = load_archetypes(None)
    workday = {k: v[0] for k, v in a.items()}
    assert workday["home"][2] > 2 * workday["home"][12]  # people sleep at home
    assert workday["work"][11] > 5 * workday["work"][2]  # and work by day
    assert a["leisure"][2, 14] > a["leisure"][0, 14]  # Sunday afternoon out
    assert workday["transit"][8] > workday["transit"][12]  # the morning rush


def test_the_demo_city_has_what_the_pipeline_must_cope_with(small_city):
    tiles = sorted((small_city.root / "tiles").glob("*.tif"))
    assert len(tiles) >= 4
    crss = set()
    for t in tiles:
        with rasterio.open(t) as src:
            crss.add(src.crs.to_epsg())
    assert {32649, 3857, 4326} <= crss
    assert any("hazy" in t.name for t in tiles)
    files = sorted((small_city.root / "signalling").glob("*.csv"))
    assert len(files) == 8
    text = "\n".join(f.read_text() for f in files)
    assert "yesterday," in text and "Z," in text  # broken rows and UTC times are there
    frame = pd.read_csv(files[0], on_bad_lines="skip")
    assert list(frame.columns) == ["time", "lon", "lat", "count"]
    zones = gpd.read_file(small_city.zones, layer="zones")
    assert set(zones.class_name) <= set(CLASS_NAMES) and zones.crs.to_epsg() == 32649


def test_a_six_km_demo_city_has_zones_of_all_nine_classes(tmp_path):
    from urbanfusion.workflows.democity.city import generate_demo_city

    city = generate_demo_city(tmp_path / "c", seed=7)
    zones = gpd.read_file(city.zones, layer="zones")
    assert set(zones.class_name) == set(CLASS_NAMES)


def test_the_same_seed_makes_the_same_city(tmp_path):
    from urbanfusion.workflows.democity.city import generate_demo_city

    a = generate_demo_city(tmp_path / "a", seed=3, size_km=2.0)
    b = generate_demo_city(tmp_path / "b", seed=3, size_km=2.0)
    for rel in ("signalling/day_2026-03-05.csv", "tiles/a_nw_utm.tif"):
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes()
