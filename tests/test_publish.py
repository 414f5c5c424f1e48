"""One output folder, many runs: a lock, one atomic publish, history, changes, clean resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import pytest
from filelock import FileLock

from tests.conftest import write_config
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import OutputBusyError
from urbanfusion.pipeline.fingerprint import file_sha256
from urbanfusion.workflows.publish import LOCK, OutputFolder
from urbanfusion.workflows.run import run


def _cli(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "urbanfusion.workflows", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _published_set_is_whole(out: Path) -> dict:
    """Every file readers see through OUT is the one the manifest lists, with its hash."""
    manifest = json.loads((out / "manifest.json").read_text())
    run_dir = (out / "latest").resolve()
    assert run_dir.name == manifest["run"]["id"]
    for name, entry in manifest["outputs"].items():
        assert file_sha256(out / name) == entry["sha256"], name
        assert (out / name).resolve() == run_dir / name
    return manifest


def test_runs_publish_whole_sets_keep_history_and_report_changes(tmp_path, small_city):
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino  # OUT itself is never replaced, so it may be a mount point
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city, **{"history.keep": 2}))
    first = run(cfg)
    assert first.changes.previous_run is None
    assert len(gpd.read_file(out / "changes.gpkg", layer="changes")) == 0
    _published_set_is_whole(out)

    days = sorted((small_city.root / "signalling").glob("*.csv"))
    one_day = write_config(
        tmp_path / "one.yaml", small_city, **{"signalling.paths": [str(days[0])]}
    )
    second = run(load_config(one_day))
    manifest = _published_set_is_whole(out)
    changed = gpd.read_file(out / "changes.gpkg", layer="changes")
    assert len(changed) == manifest["changes"]["cells_changed"] > 0
    assert list(changed.columns) == [
        "cell_id",
        "previous_class",
        "class",
        "previous_confidence",
        "confidence",
        "geometry",
    ]
    assert (changed["previous_class"] != changed["class"]).all()
    cells = gpd.read_file(out / "cells.gpkg").set_index("cell_id")
    assert (cells.loc[changed["cell_id"], "class_name"].to_numpy() == changed["class"]).all()
    assert second.changes.summary.startswith(f"{len(changed)} cells changed: ")
    assert manifest["run"]["previous"] == first.manifest["run"]["id"]

    run(cfg)  # a third run: history.keep 2 drops the first, trims the second
    runs = OutputFolder(out).history()
    assert [r.name for r in runs] == [second.manifest["run"]["id"], runs[1].name]
    assert sorted(p.name for p in runs[0].iterdir()) == [
        "changes.gpkg",
        "class_map.tif",
        "manifest.json",
    ]
    assert out.stat().st_ino == inode


def test_a_second_run_on_a_locked_output_waits_or_with_no_wait_exits_75(tmp_path, small_city):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    out = tmp_path / "out"
    out.mkdir()
    held = FileLock(out / LOCK)
    held.acquire()
    try:
        busy = _cli("run", cfg, "--no-wait")
        _, err = busy.communicate(timeout=300)
        assert busy.returncode == 75, err
        assert len(err.strip().splitlines()) == 1 and "being written by another run" in err
        with pytest.raises(OutputBusyError):
            run(load_config(cfg), wait=False)
        waiting = _cli("run", cfg)
        time.sleep(3)
        assert waiting.poll() is None, "a run must wait for the lock"
    finally:
        held.release()
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert "waiting for another run to finish writing" in err  # the lock held by no run of ours
    _published_set_is_whole(out)


def test_a_run_that_waits_names_the_run_it_waits_for(tmp_path, small_city):
    out = tmp_path / "out"
    folder = OutputFolder(out)
    with folder.locked():
        holder = folder.lock_holder()
        assert f"run PID {os.getpid()}" in holder and "min ago" in holder
        busy = _cli("run", write_config(tmp_path / "c.yaml", small_city), "--no-wait")
        _, err = busy.communicate(timeout=300)
    assert busy.returncode == 75 and f"being written by run PID {os.getpid()}" in err, err
    assert folder.lock_holder() == "another run"  # released: no owner claimed


def test_sigterm_stops_a_run_like_ctrl_c_and_says_truly_what_was_published(tmp_path, small_city):
    from urbanfusion.workflows.cli.common import Terminated, interrupted_line

    cfg = write_config(tmp_path / "c.yaml", small_city)
    proc = _cli("run", cfg)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "store").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM); no output was published"
    assert "Traceback" not in err and not (tmp_path / "out" / "latest").exists()
    published = run(load_config(cfg))  # in this process: what a signal after it would say
    line = interrupted_line(KeyboardInterrupt())
    assert line.startswith(f"interrupted after run {published.manifest['run']['id']} was")
    assert interrupted_line(Terminated()).startswith("terminated (SIGTERM) after run")


def test_another_city_in_the_same_output_folder_is_refused_unless_new_city(tmp_path, small_city):
    from urbanfusion.pipeline.errors import ConfigError

    cfg = load_config(write_config(tmp_path / "c.yaml", small_city))
    first = run(cfg)
    west, south, east, north = cfg.extent
    other = cfg.model_copy(
        update={"name": "another-city", "extent": (west + 0.2, south, east + 0.2, north)}
    )
    with pytest.raises(ConfigError, match="holds the maps of city 'demo-city-11'"):
        run(other)
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["run"]["id"]
        == (first.manifest["run"]["id"])
    )
    renamed = cfg.model_copy(update={"name": "renamed"})
    with pytest.raises(ConfigError, match="--new-city"):
        run(renamed)
    taken = run(renamed, new_city=True)
    assert taken.manifest["run"]["previous"] is None and len(taken.changes.table) == 0
    assert run(renamed).up_to_date


def test_an_output_written_over_after_publishing_is_noticed_and_made_again(tmp_path, small_city):
    import shutil

    cfg = load_config(write_config(tmp_path / "c.yaml", small_city))
    first = run(cfg)
    published = tmp_path / "out" / "class_map.tif"
    assert (published.resolve().stat().st_mode & 0o222) == 0
    os.chmod(published.resolve(), 0o644)  # `cp` as root writes over a read-only file anyway
    shutil.copy(first.outputs["probabilities.tif"], published)
    again = run(cfg)
    assert not again.up_to_date
    _published_set_is_whole(tmp_path / "out")
    assert run(cfg).up_to_date


def test_run_ids_keep_publication_order_when_the_clock_is_set_back():
    import datetime as dt

    from urbanfusion.workflows.publish import new_run_id

    late = new_run_id(dt.datetime(2026, 12, 4, 2, 30, tzinfo=dt.UTC))
    early = dt.datetime(2026, 12, 3, 2, 30, tzinfo=dt.UTC)
    assert new_run_id(early, after=late) > late
    assert new_run_id(early, after=late) == "20261204T023000000001Z"
    assert new_run_id(early, after="20201201T000000000000Z") == new_run_id(early)


def test_two_runs_started_together_compute_once_and_the_second_finds_it_up_to_date(
    tmp_path, small_city
):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    procs = [_cli("run", cfg, "-q") for _ in range(2)]
    said = []
    for p in procs:
        stdout, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        said.append(stdout)
    out = tmp_path / "out"
    manifest = _published_set_is_whole(out)
    assert len(OutputFolder(out).history()) == 1 and manifest["run"]["previous"] is None
    assert sum("up to date" in s for s in said) == 1


def test_a_rerun_with_nothing_changed_computes_nothing_unless_forced(tmp_path, small_city):
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city))
    first = run(cfg)
    again = run(cfg)
    assert again.up_to_date and "up to date" in again.changes.summary
    assert again.manifest["run"]["id"] == first.manifest["run"]["id"]
    assert (again.class_id == first.class_id).all()
    assert len(OutputFolder(tmp_path / "out").history()) == 1
    forced = run(cfg, force=True)
    assert not forced.up_to_date and forced.changes.summary == "no cell changed class"
    day = sorted((small_city.root / "signalling").glob("*.csv"))[0]
    stat = day.stat()
    os.utime(day, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        touched = run(cfg)
    finally:
        os.utime(day, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert not touched.up_to_date
    assert (
        touched.manifest["fingerprint"]["signalling"] != first.manifest["fingerprint"]["signalling"]
    )
    assert touched.manifest["fingerprint"]["tiles"] == first.manifest["fingerprint"]["tiles"]
    assert len(OutputFolder(tmp_path / "out").history()) == 3


# The command line in-process, then which of a run's heavy libraries it imported.
_IMPORTED = """
import sys
from urbanfusion.workflows.cli import main
sys.argv = ["urbanfusion", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = ("rasterio", "onnxruntime", "dask", "geopandas", "xarray", "cv2", "pyogrio")
heavy += ("urbanfusion.workflows.cli.model_commands",)  # the train options: 0.05 s of a start
print("IMPORTED", *[m for m in heavy if m in sys.modules])
"""


def test_an_unchanged_rerun_answers_without_a_runs_libraries_and_a_change_still_runs(
    tmp_path, small_city
):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    first = run(load_config(cfg))

    def cli(*args: str) -> list[str]:
        p = subprocess.run(
            [sys.executable, "-c", _IMPORTED, *args], capture_output=True, text=True, timeout=300
        )
        assert p.returncode == 0, p.stderr
        return p.stdout.strip().splitlines()

    said = cli("run", str(cfg), "-q")
    assert (
        f"up to date: inputs, settings, model and code are those of run {first.run_id}" in (said[0])
    )
    assert said[-1] == "IMPORTED"  # none of them
    batch = cli("batch", str(cfg), "--report", str(tmp_path / "batch.json"))
    assert batch[-1] == "IMPORTED" and any("up to date" in line for line in batch)
    # Written over after publishing: the full run notices it and makes the run again.
    (tmp_path / "out" / "latest" / "quicklook.png").chmod(0o644)
    (tmp_path / "out" / "latest" / "quicklook.png").write_bytes(b"not the run's")
    again = cli("run", str(cfg), "-q")
    assert "rasterio" in again[-1] and not any("up to date" in line for line in again)
    assert OutputFolder(tmp_path / "out").latest().name != first.run_id


@pytest.mark.parametrize("moment", ["staging", "published"])
def test_a_killed_run_leaves_the_published_set_whole_and_the_next_run_cleans_up(
    tmp_path, small_city, moment
):
    cfg = write_config(tmp_path / "c.yaml", small_city)
    out = tmp_path / "out"
    reference = run(load_config(cfg))
    before = _published_set_is_whole(out)
    proc = _cli("run", cfg, "-q", "--force", start_new_session=True)
    runs = out / "runs"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill -9 while it writes its staging folder,
        staged = [p for p in runs.iterdir() if p.name.startswith(".staging-")]
        if moment == "staging" and staged and any(staged[0].iterdir()):
            break
        # ... or right after it published (its lock and no cleanup of its own left to do)
        if moment == "published" and len(OutputFolder(out).history()) == 2:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"the run never reached the moment to kill it ({moment})")
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    now = _published_set_is_whole(out)  # a reader sees one whole run, old or new
    assert now["run"]["id"] in (before["run"]["id"], *[r.name for r in runs.iterdir()])
    again = run(load_config(cfg), force=True)
    _published_set_is_whole(out)
    assert not [p for p in runs.iterdir() if p.name.startswith(".")]
    assert not [p for p in out.iterdir() if p.name.startswith(".latest-")]
    for name in ("class_map.tif", "probabilities.tif", "activity.parquet"):
        assert file_sha256(again.outputs[name]) == reference.manifest["outputs"][name]["sha256"]


def test_an_input_overwritten_while_the_run_reads_it_publishes_nothing(
    tmp_path, small_city, monkeypatch
):
    import shutil

    from urbanfusion.pipeline.errors import InputFormatError
    from urbanfusion.workflows import run as run_module

    days = tmp_path / "signalling"
    shutil.copytree(small_city.root / "signalling", days)
    cfg = load_config(
        write_config(tmp_path / "c.yaml", small_city, **{"signalling.paths": [str(days / "*.csv")]})
    )
    real_ingest = run_module.ingest

    def ingest_then_redeliver(p, store, partitions):
        ingested = real_ingest(p, store, partitions)
        with (days / "day_2026-03-03.csv").open("a") as f:  # a new delivery overwrites it
            f.write("2026-03-03 08:00:00,113.66,34.76,10\n")
        return ingested

    monkeypatch.setattr(run_module, "ingest", ingest_then_redeliver)
    with pytest.raises(InputFormatError, match=r"signalling input files changed while the run"):
        run(cfg)
    assert OutputFolder(tmp_path / "out").latest() is None
