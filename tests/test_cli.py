"""Bad input through the real command line: one line, non-zero exit, no traceback, no output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_config


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "urbanfusion.workflows", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_clean_failure(proc, pattern, out_dir):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and pattern in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    # Bad config or paths stop a run before it touches the output folder; later errors leave at
    # most the folder's lock file (never deleted: see workflows/publish.py) and the store of what
    # was computed before the error, which the next run reuses. No output, no run.
    left = sorted(p.name for p in out_dir.iterdir()) if out_dir.exists() else []
    assert set(left) <= {".urbanfusion.lock", "store"}, f"a failed run must leave no output: {left}"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "c.yaml", "--nope"], "No such option: --nope"),
        (["batch", "cities", "--jobs", "0"], "Invalid value for '--jobs'"),
        (["train"], "Missing argument"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_command_s_help(tmp_path, args, says):
    proc = _run(*args)
    _assert_clean_failure(proc, says, tmp_path / "out")
    assert f"see `urbanfusion {args[0]} --help`" in proc.stderr and proc.stdout == ""


def test_unknown_config_key(tmp_path, small_city):
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"grid.cell_sise_m": 100})
    _assert_clean_failure(_run("run", cfg), "unknown key 'grid.cell_sise_m'", tmp_path / "out")


def test_missing_input_path(tmp_path, small_city):
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"signalling.paths": ["nowhere/*.csv"]})
    _assert_clean_failure(
        _run("run", cfg), "signalling.paths[0] 'nowhere/*.csv' matched no file", tmp_path / "out"
    )


def test_missing_config_file(tmp_path):
    _assert_clean_failure(_run("run", tmp_path / "none.yaml"), "does not exist", tmp_path / "out")


def test_extent_that_no_tile_touches(tmp_path, small_city):
    cfg = write_config(
        tmp_path / "c.yaml", small_city, extent=[116.30, 39.90, 116.33, 39.92], crs=None
    )
    _assert_clean_failure(_run("run", cfg), "touches the extent", tmp_path / "out")


def test_signalling_file_without_the_mapped_columns(tmp_path, small_city):
    sig = tmp_path / "sig"
    sig.mkdir()
    src = sorted((small_city.root / "signalling").glob("*.csv"))[0]
    text = src.read_text().split("\n", 1)
    (sig / "renamed.csv").write_text("timestamp,x,y,people\n" + text[1])
    cfg = write_config(
        tmp_path / "c.yaml", small_city, **{"signalling.paths": [str(sig / "*.csv")]}
    )
    _assert_clean_failure(
        _run("run", cfg), "expected ['time', 'lon', 'lat', 'count']", tmp_path / "out"
    )


def test_a_bad_model_file(tmp_path, small_city):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"\x00" * 100)
    cfg = write_config(tmp_path / "c.yaml", small_city, model=str(bad))
    _assert_clean_failure(_run("run", cfg), "cannot load", tmp_path / "out")


def test_run_prints_the_output_paths(tmp_path, small_city):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    proc = _run("run", cfg, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "class_map.tif" in proc.stdout and (tmp_path / "out" / "cells.gpkg").is_file()
    assert proc.stderr == ""  # quiet, and no warnings leak


def test_a_config_that_is_not_utf8(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"name: x\xff\xfe\n")
    _assert_clean_failure(_run("run", cfg), "not UTF-8", tmp_path / "out")


def test_an_output_path_through_a_file_is_one_line(tmp_path, small_city):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    tile = sorted((small_city.root / "tiles").glob("*.tif"))[0]
    proc = _run("dehaze", tile, blocker / "out.tif")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["train", "city.yaml", "--labels", "z.gpkg", "--out", "m.onnx"], "training"),
        (["export", "m.ckpt", "--out", "m.onnx"], "export"),
        (["pretrain-image", "scenes", "--out", "e.pt"], "pre-training"),
        (["evaluate-image", "e.pt", "scenes"], "evaluate-image"),
    ],
)
def test_commands_that_need_torch_say_how_to_install_it(tmp_path, args, what):
    # None in sys.modules makes `import torch` fail, as on an install without the train extra.
    code = (
        "import sys; sys.modules['torch'] = None; from urbanfusion.workflows.cli import app; app()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    _assert_clean_failure(proc, f"{what} needs torch and onnx (torch is missing)", tmp_path / "o")
    assert "`pip install torch==2.13.0` then `pip install -e .[train]`" in proc.stderr


def test_an_output_dir_that_is_a_file_is_one_line(tmp_path, small_city):
    (tmp_path / "afile").write_text("not a folder")
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"output.dir": str(tmp_path / "afile")})
    proc = _run("run", cfg)
    assert proc.returncode == 2 and "is a file, not a folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_an_output_dir_inside_the_input_folders_is_refused_before_any_work(tmp_path, small_city):
    out = small_city.root / "signalling" / "out"
    cfg = write_config(
        tmp_path / "c.yaml",
        small_city,
        **{
            "output.dir": str(out),
            "signalling.paths": [str(small_city.root / "signalling" / "**" / "*.csv")],
        },
    )
    out.mkdir()
    (out / "old.csv").write_text("time,lon,lat,count\n")
    try:
        proc = _run("run", cfg)
    finally:
        (out / "old.csv").unlink()
        out.rmdir()
    assert proc.returncode == 2 and "inside output.dir" in proc.stderr


def test_an_output_dir_an_input_glob_would_reach_is_refused_on_the_first_run(tmp_path, small_city):
    # Nothing is there yet, but the next run would read this run's class_map.tif as a tile.
    cfg = write_config(
        tmp_path / "c.yaml",
        small_city,
        **{
            "output.dir": str(small_city.root / "tiles" / "maps"),
            "imagery.paths": [str(small_city.root / "tiles" / "**" / "*.tif")],
        },
    )
    _assert_clean_failure(_run("run", cfg), "reaches inside output.dir", tmp_path / "out")
    assert not (small_city.root / "tiles" / "maps").exists()


def test_an_empty_output_dir_or_a_config_folder_is_one_line(tmp_path, small_city):
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"output.dir": ""})
    proc = _run("run", cfg)
    assert proc.returncode == 2 and "output.dir" in proc.stderr
    proc = _run("run", tmp_path)
    assert proc.returncode == 2 and "is a folder" in proc.stderr


def test_a_failed_tile_is_a_warning_on_the_console_not_only_in_the_manifest(tmp_path, small_city):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for tile in (small_city.root / "tiles").glob("*.tif"):
        (tiles / tile.name).write_bytes(tile.read_bytes())
    (tiles / "zz_broken.tif").write_bytes(b"")
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"imagery.paths": [str(tiles / "*.tif")]})
    proc = _run("run", cfg, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "warning: tile" in proc.stderr and "zz_broken.tif was not used" in proc.stderr
    assert "1 tile(s) failed, 4 used" in proc.stderr


def test_a_grid_too_large_for_memory_is_refused_at_plan_time_with_the_estimate(
    tmp_path, small_city
):
    # 1 m cells over the 3 km city: 10 million cells, whose results alone pass 2 GB.
    cfg = write_config(
        tmp_path / "c.yaml",
        small_city,
        **{"grid.cell_size_m": 1, "dask.worker_memory_gb": 2},
    )
    proc = _run("run", cfg)
    _assert_clean_failure(proc, "GB of memory", tmp_path / "out")
    assert "raise grid.cell_size_m to" in proc.stderr and "split the extent" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before the lock: nothing was touched


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--pyramid", "--image-encoder", "vit"], "--pyramid needs a convolutional"),
        (["--exchange", "--branches", "image"], "use --branches fusion"),
        (["--double-fusion", "--branches", "signalling"], "use --branches fusion"),
        (["--activity-encoder", "lstm"], "'lstm' is not one of 'conv', 'bilstm', 'mlp'"),
        (["--select", "best"], "'best' is not one of 'heads', 'fused'"),
        (["--align-momentum", "0.995"], "--align-momentum needs the alignment loss"),
        (["--align", "0.1", "--align-momentum", "1"], "--align-momentum 1.0: input should be less"),
        (["--consistency", "-1"], "--consistency -1.0: input should be greater than or equal to 0"),
    ],
)
def test_training_options_that_cannot_go_together_are_one_line(tmp_path, small_city, args, says):
    pytest.importorskip("torch", reason="training needs the train extra")
    cfg = write_config(tmp_path / "c.yaml", small_city)
    proc = _run("train", cfg, "--out", tmp_path / "o" / "m.onnx", *args)
    _assert_clean_failure(proc, says, tmp_path / "o")


@pytest.fixture(params=[2, 4], ids=["2 MB: the store", "4 MB: the maps"])
def tiny_disk(request, tmp_path):
    """A small tmpfs: a disk that fills up (needs root and mount; skips otherwise).

    The small city's run fills 2 MB with its store and 4 MB with its maps. There GDAL wrote on
    past libtiff's "No space left on device", and building overviews on the truncated scratch
    crashed the process (exit 139); a little more room ended in a COG copy's CPLE error, a
    traceback. Its maps' scratch files then took 7 MB of padded 256 px blocks; now 5 MB runs.
    """
    import subprocess

    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={request.param}m", "tmpfs", str(folder)],
        capture_output=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_one_line_naming_the_file_and_publishes_nothing(
    tmp_path, small_city, tiny_disk
):
    cfg = write_config(tmp_path / "c.yaml", small_city, **{"output.dir": str(tiny_disk / "out")})
    proc = subprocess.run(
        [sys.executable, "-m", "urbanfusion.workflows", "run", str(cfg), "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: disk full writing {tiny_disk / 'out'}"), line
    assert not (tiny_disk / "out" / "latest").exists()


@pytest.mark.parametrize("compress", [None, "deflate"], ids=["known size", "compressed"])
def test_dehazing_onto_a_full_disk_says_so_naming_the_output(tmp_path, compress):
    import subprocess

    import numpy as np
    import rasterio
    from affine import Affine

    # 1,500 px of seeded noise, 6.75 MB however compressed: more than the 3 MB disk.
    scene = tmp_path / "scene.tif"
    pixels = np.random.default_rng(5).integers(0, 256, (3, 1500, 1500), dtype=np.uint8)
    profile = {"compress": compress} if compress else {}
    with rasterio.open(
        scene, "w", driver="GTiff", width=1500, height=1500, count=3, dtype="uint8",
        crs="EPSG:32649", transform=Affine(2.0, 0, 700_000, 0, -2.0, 3_900_000), **profile,
    ) as dst:  # fmt: skip
        dst.write(pixels)
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        proc = _run("dehaze", scene, folder / "out.tif")
        left = list(folder.iterdir())
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
    assert proc.returncode == 2, proc.stderr
    *gdal, line = proc.stderr.strip().splitlines()
    # It was "cannot be read to the end ... is the file truncated?", blaming the input.
    assert line == (
        f"error: disk full writing {folder / 'out.tif'}; free space on that file system, or "
        "write to another (output.dir for a run)"
    )
    # A size known beforehand is checked before GDAL writes; a compressed one fails in GDAL,
    # which prints libtiff's complaints itself first.
    assert all(said.endswith("No space left on device.") for said in gdal)
    assert compress or not gdal
    assert left == []


def test_every_command_is_listed_under_the_module_that_adds_it():
    # main() imports only the listed module of the command it is given.
    from urbanfusion.workflows.cli import COMMANDS, app

    def module(callback) -> str:
        return callback.__module__.rsplit(".", 1)[-1]

    found = {c.name: module(c.callback) for c in app.registered_commands}
    for group in app.registered_groups:
        commands = group.typer_instance.registered_commands
        (found[group.name],) = {module(c.callback) for c in commands}
    assert found == {name: m for m, names in COMMANDS.items() for name in names}
