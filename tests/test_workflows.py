import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import write_config

NIGHTLY = Path(__file__).resolve().parents[1] / "workflows" / "nightly.sh"


def test_nightly_runs_every_city_and_says_which_failed(tmp_path, small_city):
    cities = tmp_path / "cities"
    cities.mkdir()
    write_config(cities / "good.yaml", small_city, **{"output.dir": str(tmp_path / "good-out")})
    write_config(cities / "bad.yaml", small_city, **{"imagery.paths": ["missing/*.tif"]})
    env = {**os.environ, "URBANFUSION": str(Path(sys.executable).with_name("urbanfusion"))}
    proc = subprocess.run(
        ["bash", str(NIGHTLY), str(cities), str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "ok     good" in proc.stdout and "failed bad" in proc.stdout
    assert "imagery.paths[0]" in proc.stdout  # the one-line reason reaches the summary
    assert (tmp_path / "good-out" / "class_map.tif").is_file()
    (report,) = (tmp_path / "logs").glob("batch-*.json")
    assert json.loads(report.read_text())["exit_status"] == 1
    assert len(list((tmp_path / "logs").glob("batch-*.log"))) == 1
