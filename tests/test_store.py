"""The run store: a rerun computes only what changed, and gives the outputs a fresh run gives."""

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_config
from tests.test_publish import _cli
from urbanfusion.ingest import imagery
from urbanfusion.pipeline.config import load_config
from urbanfusion.workflows.run import run

OUTPUTS = ("class_map.tif", "probabilities.tif", "activity.parquet", "cells.gpkg")


def _same_outputs(a, b):
    for name in OUTPUTS[:3]:
        assert a.manifest["outputs"][name]["sha256"] == b.manifest["outputs"][name]["sha256"], name


def _fresh(tmp_path, small_city, name, **changes):
    """The same config run into a new output folder: nothing to reuse."""
    cfg = write_config(tmp_path / f"{name}.yaml", small_city, **changes)
    fresh = load_config(cfg).model_copy(
        update={"output": load_config(cfg).output.model_copy(update={"dir": str(tmp_path / name)})}
    )
    return run(fresh)


@pytest.fixture
def small_chunks(monkeypatch):
    # 4 cells a chunk: the 3 km city has 4 x 4 chunks, so one tile covers only some of them.
    monkeypatch.setattr(imagery, "CHUNK_TARGET_PX", 128)


def test_a_new_model_only_predicts_and_a_new_day_does_not_touch_the_imagery(
    tmp_path, small_city, small_chunks
):
    days = sorted((small_city.root / "signalling").glob("*.csv"))
    week = {"signalling.paths": [str(d) for d in days[:-1]]}
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city, **week))
    first = run(cfg)
    n = first.manifest["store"]["chips"]["computed"]
    assert n >= 9 and first.manifest["store"]["chips"]["reused"] == 0

    model = tmp_path / "model.onnx"
    model.write_bytes(Path(first.manifest["model"]["path"]).read_bytes())
    new_model = cfg.model_copy(update={"model": str(model)})
    second = run(new_model)
    store = second.manifest["store"]
    assert store["predictions"] == {"computed": 1, "reused": 0}
    assert store["chips"] == {"computed": 0, "reused": n} and store["activity"]["reused"] == 1
    assert store["scenes"]["computed"] == 0
    _same_outputs(second, first)  # the same weights in another file: the same map
    # No input is read again for the manifest: each one's SHA-256 is kept under its identity.
    inputs = first.manifest["inputs"]
    assert store["hashes"] == {"computed": 0, "reused": len(inputs["tiles"]) + len(days) - 1}
    assert second.manifest["inputs"] == inputs

    new_day = load_config(
        write_config(
            tmp_path / "c.yaml", small_city, **{"signalling.paths": [str(d) for d in days]}
        )
    ).model_copy(update={"model": str(model)})
    third = run(new_day)
    store = third.manifest["store"]
    assert store["activity"] == {"computed": 1, "reused": 0}
    # Only the new day's file is read; the others' rows come from the store.
    assert store["signalling-files"] == {"computed": 1, "reused": len(days) - 1}
    assert store["hashes"]["computed"] == 1
    assert store["chips"] == {"computed": 0, "reused": n} and store["scenes"]["computed"] == 0
    _same_outputs(third, _fresh(tmp_path, small_city, "fresh-week", model=str(model)))


def test_a_changed_tile_recomputes_only_the_chunks_it_covers(tmp_path, small_city, small_chunks):
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city))
    n = run(cfg).manifest["store"]["chips"]["computed"]
    tile = min((small_city.root / "tiles").glob("*.tif"), key=lambda t: t.stat().st_size)
    stat = tile.stat()
    os.utime(tile, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        again = run(cfg)
        store = again.manifest["store"]
        assert store["scenes"] == {"computed": 1, "reused": 3}
        assert 0 < store["chips"]["computed"] < n
        assert store["chips"]["computed"] + store["chips"]["reused"] == n
        _same_outputs(again, _fresh(tmp_path, small_city, "fresh"))
    finally:
        os.utime(tile, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_tile_rewritten_with_its_size_and_time_kept_is_noticed(tmp_path, small_city):
    import rasterio

    from urbanfusion.pipeline.fingerprint import file_sha256

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    for source in (small_city.root / "tiles").glob("*.tif"):
        with rasterio.open(source) as src:  # uncompressed: a rewrite in place keeps the size
            profile, pixels = {**src.profile, "compress": None}, src.read()
        with rasterio.open(tiles / source.name, "w", **profile) as dst:
            dst.write(pixels)
    cfg = load_config(
        write_config(tmp_path / "c.yaml", small_city, **{"imagery.paths": [str(tiles / "*.tif")]})
    )
    first = run(cfg)
    tile = max(tiles.glob("*.tif"), key=lambda t: t.stat().st_size)
    stat = tile.stat()
    with rasterio.open(tile, "r+") as dst:  # other pixels, as a tool re-delivering it would
        dst.write(255 - dst.read())
    os.utime(tile, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (tile.stat().st_size, tile.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    again = run(cfg)
    assert not again.up_to_date and again.manifest["store"]["scenes"]["computed"] == 1
    (entry,) = [e for e in again.manifest["inputs"]["tiles"] if e["path"] == str(tile)]
    assert entry["sha256"] == file_sha256(tile)  # hashed again: its identity is another
    assert again.manifest["store"]["hashes"]["computed"] == 1
    assert (again.class_id != first.class_id).any()


def test_force_recomputes_everything(tmp_path, small_city):
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city))
    first = run(cfg)
    forced = run(cfg, force=True)
    assert all(v["reused"] == 0 for v in forced.manifest["store"].values())
    _same_outputs(forced, first)


def test_a_run_killed_midway_resumes_from_the_store_with_the_uninterrupted_outputs(
    tmp_path, small_city
):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    store = tmp_path / "out" / "store"
    proc = _cli("run", cfg, "-q", start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill -9 once the scene statistics are kept
        # Kept ones only: a record being written is a dot-file with the same suffix.
        kept = [p for p in (store / "scenes").glob("*.json") if not p.name.startswith(".")]
        if len(kept) == 4:
            break
        time.sleep(0.01)
    else:
        pytest.fail("the run never kept its scene statistics")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    resumed = run(load_config(cfg))
    assert resumed.manifest["store"]["scenes"]["reused"] == 4
    assert not [p for p in store.rglob(".*")], "temporary files of the killed run are gone"
    _same_outputs(resumed, _fresh(tmp_path, small_city, "fresh"))


def test_a_damaged_stored_chunk_is_one_line_and_force_recomputes_it(tmp_path, small_city):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    first = run(load_config(cfg))
    (chunk,) = (tmp_path / "out" / "store" / "chips").glob("*.npy")
    chunk.write_bytes(b"not an array")
    day = sorted((small_city.root / "signalling").glob("*.csv"))[0]
    changed = write_config(tmp_path / "c.yaml", small_city, **{"signalling.paths": [str(day)]})
    proc = _cli("run", changed)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "stored result cannot be read" in err and "--force" in err
    forced = run(load_config(changed), force=True)
    assert forced.manifest["store"]["chips"] == {"computed": 1, "reused": 0}
    assert first.manifest["outputs"]["class_map.tif"] != forced.manifest["outputs"]["class_map.tif"]


def test_has_only_looks_and_use_records_what_the_run_needs(tmp_path):
    from urbanfusion.pipeline.store import ResultStore

    store = ResultStore(tmp_path / "store")
    assert not store.has("chips", "k1", "npy")
    assert store.summary() == {} and not store.used  # looking records nothing
    assert not store.use("chips", "k1", "npy")  # needed and missing: to be computed
    ResultStore.save_array(store.path("chips", "k1", "npy"), np.zeros(3))
    assert store.has("chips", "k1", "npy") and store.summary() == {
        "chips": {"computed": 1, "reused": 0}
    }
    assert store.use("chips", "k1", "npy")
    assert store.summary() == {"chips": {"computed": 1, "reused": 1}}
    assert not ResultStore(tmp_path / "store", reuse=False).has("chips", "k1", "npy")  # --force
