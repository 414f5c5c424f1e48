import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
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


def _scene_folder(root, classes, colour_of, n=6):
    """Labelled scenes of one flat, class-specific colour each (easy to find in the tiles)."""
    import cv2

    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(n):
            bgr = np.full((150, 150, 3), colour_of[name][::-1], np.uint8)
            cv2.imwrite(str(root / name / f"{name}_{i}.jpg"), bgr)
    return root


def test_a_city_of_real_scenes_fills_blocks_of_their_classes_and_says_which_are_drawn(tmp_path):
    from urbanfusion.workflows.democity.city import generate_demo_city

    colours = {"Park": (250, 0, 250), "DenseResidential": (0, 250, 250), "Beach": (0, 0, 250)}
    scenes = _scene_folder(tmp_path / "scenes", colours, colours)
    # 4 km: a smaller city is all airport, railway and industry, with no residential block.
    city = generate_demo_city(tmp_path / "real", seed=3, size_km=4.0, scenes_from=scenes)
    info = json.loads((city.root / "scenes.json").read_text())
    assert info["real_classes"] == ["residential", "park"]
    assert set(info["drawn_classes"]) == set(CLASS_NAMES) - {"residential", "park"}
    assert info["unused_folders"] == ["Beach"]
    assert info["files"] and all("/Beach/" not in f for f in info["files"])
    readme = (city.root / "README.md").read_text()
    assert "drawn textures: school" in readme and "research use only" in readme
    with rasterio.open(city.root / "tiles" / "a_nw_utm.tif") as src:
        rgb = src.read().reshape(3, -1).T.astype(int)
    # Park scenes' magenta is in the tiles (a 5 m resampling of the scene keeps its colour).
    assert (np.abs(rgb - colours["Park"]).sum(1) < 40).mean() > 0.01
    # The same seed without scenes draws the same zones and the same signalling.
    drawn = generate_demo_city(tmp_path / "drawn", seed=3, size_km=4.0)
    assert (drawn.root / "zones.gpkg").exists() and not (drawn.root / "scenes.json").exists()
    day = "signalling/day_2026-03-05.csv"
    assert (drawn.root / day).read_bytes() == (city.root / day).read_bytes()


def test_cities_built_from_disjoint_scene_folders_share_no_scene(tmp_path):
    from urbanfusion.workflows.democity.city import generate_demo_city

    colours = {"School": (200, 30, 30), "Park": (30, 200, 30)}
    a = _scene_folder(tmp_path / "a", colours, colours, n=3)
    b = _scene_folder(tmp_path / "b", colours, colours, n=3)
    files = []
    for name, folder in (("ca", a), ("cb", b)):
        city = generate_demo_city(tmp_path / name, seed=5, size_km=4.0, scenes_from=folder)
        files.append(set(json.loads((city.root / "scenes.json").read_text())["files"]))
    assert files[0] and files[1] and not files[0] & files[1]


def test_a_scene_folder_without_any_of_our_classes_is_one_clear_error(tmp_path):
    from urbanfusion.pipeline.errors import InputNotFoundError
    from urbanfusion.workflows.democity.city import generate_demo_city

    scenes = _scene_folder(tmp_path / "s", ["Beach"], {"Beach": (0, 0, 250)}, n=1)
    with pytest.raises(InputNotFoundError, match="no class folder with images is one of ours"):
        generate_demo_city(tmp_path / "c", seed=3, size_km=2.0, scenes_from=scenes)
    assert not (tmp_path / "c").exists()  # nothing written before the scenes were checked
