"""`urbanfusion batch`: many cities, each isolated, a summary and an exit status to act on."""

import json
import subprocess
import sys

from filelock import FileLock

from tests.conftest import write_config
from urbanfusion.workflows.publish import LOCK


def _batch(*args):
    return subprocess.run(
        [sys.executable, "-m", "urbanfusion.workflows", "batch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_batch_of_three_cities_with_one_broken_runs_the_others_and_exits_1(tmp_path, small_city):
    cities = tmp_path / "cities"
    cities.mkdir()
    for name in ("a", "c"):
        write_config(cities / f"{name}.yaml", small_city, **{"output.dir": str(tmp_path / name)})
    write_config(
        cities / "b.yaml",
        small_city,
        **{"output.dir": str(tmp_path / "b"), "signalling.paths": ["nowhere/*.csv"]},
    )
    report = tmp_path / "logs" / "batch.json"
    proc = _batch(cities, "--jobs", "2", "--report", report)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    summary = json.loads(report.read_text())
    assert (summary["cities"], summary["ok"], summary["failed"]) == (3, 2, 1)
    by_city = {r["city"]: r for r in summary["results"]}
    assert [r["city"] for r in summary["results"]] == ["a", "b", "c"]
    assert by_city["b"]["status"] == "failed" and "signalling.paths[0]" in by_city["b"]["error"]
    for name in ("a", "c"):
        assert by_city[name]["status"] == "ok" and by_city[name]["cells"] > 0
        assert (tmp_path / name / "class_map.tif").is_file()
    assert not (tmp_path / "b" / "class_map.tif").exists()
    assert "3 cities, 2 ok, 1 not" in proc.stdout

    again = _batch(cities / "a.yaml", cities / "c.yaml", "--report", report)
    assert again.returncode == 0, again.stdout
    assert all(r["cells_changed"] == 0 for r in json.loads(report.read_text())["results"])


def test_a_locked_city_is_busy_under_no_wait_and_a_dry_run_checks_without_running(
    tmp_path, small_city
):
    cfg = write_config(tmp_path / "a.yaml", small_city, **{"output.dir": str(tmp_path / "a")})
    (tmp_path / "a").mkdir()
    with FileLock(tmp_path / "a" / LOCK):
        proc = _batch(cfg, "--no-wait", "--report", tmp_path / "r.json")
    assert proc.returncode == 1
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert result["status"] == "busy" and "another run" in result["error"]

    dry = _batch(cfg, "--dry-run", "--report", tmp_path / "dry.json")
    assert dry.returncode == 0, dry.stdout
    (result,) = json.loads((tmp_path / "dry.json").read_text())["results"]
    assert result["status"] == "ready" and result["changes"] == "would run: no published run yet"
    assert not (tmp_path / "a" / "class_map.tif").exists()
    assert _batch(cfg, "--report", tmp_path / "r.json").returncode == 0
    _batch(cfg, "--dry-run", "--report", tmp_path / "dry.json")
    (result,) = json.loads((tmp_path / "dry.json").read_text())["results"]
    assert result["changes"].startswith("up to date (run ")
    day = sorted((small_city.root / "signalling").glob("*.csv"))[0]
    write_config(
        cfg, small_city, **{"output.dir": str(tmp_path / "a"), "signalling.paths": [str(day)]}
    )
    _batch(cfg, "--dry-run", "--report", tmp_path / "dry.json")
    (result,) = json.loads((tmp_path / "dry.json").read_text())["results"]
    assert result["changes"].startswith("would run: config, signalling changed")


def test_a_batch_without_configs_is_a_one_line_error(tmp_path):
    proc = _batch(tmp_path, "--report", tmp_path / "r.json")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: no city config")


def test_sigterm_to_a_batch_writes_the_cities_that_ended_and_exits_143(tmp_path, small_city):
    import signal
    import time

    cities = tmp_path / "cities"
    cities.mkdir()
    for name in ("a", "b", "c"):
        write_config(cities / f"{name}.yaml", small_city, **{"output.dir": str(tmp_path / name)})
    report = tmp_path / "batch.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "urbanfusion.workflows", "batch", cities, "--report", report],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()  # a city's line is printed as it ends
    assert first.startswith("ok") and " a " in first, first
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # while b runs: what systemd sends to stop a unit
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "terminated (SIGTERM) after" in err
    by_city = {r["city"]: r["status"] for r in json.loads(report.read_text())["results"]}
    assert by_city["a"] == "ok" and by_city["c"] == "interrupted"
