from pathlib import Path

import pytest

from urbanfusion.pipeline.config import expand_paths, glob_matches, load_config, parse_config
from urbanfusion.pipeline.errors import ConfigError, InputNotFoundError

BASE = {
    "name": "t",
    "extent": [113.55, 34.70, 113.80, 34.85],
    "imagery": {"paths": ["tiles/*.tif"]},
    "signalling": {"paths": ["sig/*.csv"]},
    "output": {"dir": "out"},
}


def test_unknown_keys_are_rejected_by_name_at_any_depth():
    with pytest.raises(ConfigError, match=r"unknown key 'imagery.dehaz'"):
        parse_config({**BASE, "imagery": {"paths": ["a"], "dehaz": "auto"}}, Path("."))
    with pytest.raises(ConfigError, match=r"unknown key 'colour'"):
        parse_config({**BASE, "colour": "red"}, Path("."))


def test_missing_keys_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="missing key 'output'"):
        parse_config({k: v for k, v in BASE.items() if k != "output"}, Path("."))
    with pytest.raises(ConfigError, match="extent"):
        parse_config({**BASE, "extent": [113.8, 34.7, 113.5, 34.8]}, Path("."))
    with pytest.raises(ConfigError, match="not projected"):
        parse_config({**BASE, "crs": "EPSG:4326"}, Path("."))
    with pytest.raises(ConfigError, match="time zone"):
        parse_config({**BASE, "signalling": {"paths": ["a"], "timezone": "Mars/Base"}}, Path("."))


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "tiles").mkdir()
    (tmp_path / "tiles" / "b.tif").write_bytes(b"x")
    (tmp_path / "tiles" / "a.tif").write_bytes(b"x")
    cfg_path = tmp_path / "city.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(BASE))
    cfg = load_config(cfg_path)
    assert cfg.output_dir == tmp_path / "out"
    found = expand_paths(cfg, cfg.imagery.paths, "imagery.paths")
    assert [p.name for p in found] == ["a.tif", "b.tif"]


def test_a_glob_matching_nothing_names_the_key_and_pattern(tmp_path):
    cfg = parse_config(BASE, tmp_path)
    with pytest.raises(
        InputNotFoundError, match=r"signalling.paths\[0\] 'sig/\*.csv' matched no file"
    ):
        expand_paths(cfg, cfg.signalling.paths, "signalling.paths")


def test_a_broken_link_or_a_fifo_among_inputs_is_named_not_skipped(tmp_path):
    import os

    cfg = parse_config(BASE, tmp_path)
    (tmp_path / "sig").mkdir()
    (tmp_path / "sig" / "a.csv").write_text("time,lon,lat,count\n")
    (tmp_path / "sig" / "b.csv").symlink_to(tmp_path / "gone.csv")
    with pytest.raises(InputNotFoundError, match=r"b.csv, a link to .*gone.csv, which does not"):
        expand_paths(cfg, cfg.signalling.paths, "signalling.paths")
    (tmp_path / "sig" / "b.csv").unlink()
    os.mkfifo(tmp_path / "sig" / "c.csv")
    with pytest.raises(InputNotFoundError, match=r"c.csv, a FIFO \(named pipe\), not a file"):
        expand_paths(cfg, cfg.signalling.paths, "signalling.paths")


def test_a_key_given_twice_is_an_error_naming_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\ngrid:\n  cell_size_m: 250\nname: y\n")
    with pytest.raises(ConfigError, match="key 'name' is given twice \\(lines 1 and 4\\)"):
        load_config(p)
    p.write_text("name: x\n? [a, b]\n: 1\n")  # a list as a key: PyYAML's error, not a traceback
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_config(p)


def test_values_of_the_wrong_type_are_refused_not_converted(tmp_path):
    with pytest.raises(ConfigError, match=r"'history.keep'.*got true: YAML reads yes"):
        parse_config({**BASE, "history": {"keep": True}}, Path("."))
    with pytest.raises(ConfigError, match=r"'grid.chip_px'.*got '32'"):
        parse_config({**BASE, "grid": {"chip_px": "32"}}, Path("."))
    p = tmp_path / "c.yaml"
    import yaml

    p.write_text(yaml.safe_dump(BASE) + "signalling:\n  paths: [a]\n  max_count: 1e6\n")
    with pytest.raises(ConfigError, match="given twice"):
        load_config(p)
    p.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "signalling"}))
    signalling = "signalling:\n  paths: [a]\n  max_count: 1e6\n  start: 2026-03-02\n"
    p.write_text(p.read_text() + signalling)
    cfg = load_config(p)
    assert cfg.signalling.max_count == 1e6 and str(cfg.signalling.start) == "2026-03-02"


def test_an_extent_across_the_antimeridian_says_so():
    with pytest.raises(ConfigError, match="across the antimeridian"):
        parse_config({**BASE, "extent": [179.5, -17.0, -179.5, -16.0]}, Path("."))


def test_malformed_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nextent: [1, 2\n")
    with pytest.raises(ConfigError, match="line"):
        load_config(p)


def test_platform_grid_formats_need_the_platform_grid():
    with pytest.raises(ConfigError, match=r"needs signalling\.grid"):
        parse_config({**BASE, "signalling": {"paths": ["a"], "format": "wide"}}, Path("."))


def test_glob_matches_like_glob_does_star_in_one_folder_double_star_in_any():
    out = Path("/data/tiles/maps/class_map.tif")
    assert glob_matches(Path("/data/tiles/**/*.tif"), out)
    assert glob_matches(Path("/data/**/*.tif"), out)
    assert not glob_matches(Path("/data/tiles/*.tif"), out)  # * stays in tiles/
    assert glob_matches(Path("/data/tiles/*/*.tif"), out)
    assert not glob_matches(Path("/data/tiles/**/*.csv"), out)
    assert glob_matches(Path("/data/tiles/**"), Path("/data/tiles/a.tif"))
