"""A real dask cluster of processes on localhost: `dask scheduler` and two `dask worker`s."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import write_config
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.fingerprint import file_sha256
from urbanfusion.workflows.run import run

BIN = Path(sys.executable).parent


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-threaded workers; yields the address and the worker processes."""
    yield from _cluster(tmp_path, 2)


def _cluster(tmp_path, n_workers):
    scheduler_file = tmp_path / "scheduler.json"
    common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    scheduler = subprocess.Popen(
        [
            BIN / "dask",
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            scheduler_file,
        ],
        **common,
    )
    workers = [
        subprocess.Popen(
            [
                BIN / "dask",
                "worker",
                "--scheduler-file",
                scheduler_file,
                "--nthreads",
                "1",
                "--no-dashboard",
                "--memory-limit",
                "2GiB",
                "--name",
                f"w{i}",
            ],
            **common,
        )
        for i in range(n_workers)
    ]
    procs = [scheduler, *workers]
    try:
        from distributed import Client

        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        address = json.loads(scheduler_file.read_text())["address"]
        if n_workers:
            with Client(address, timeout="30s", set_as_default=False) as client:
                client.wait_for_workers(n_workers, timeout=60)
        yield address, workers
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _kill_a_busy_worker(address: str, workers: list, killed: list) -> None:
    """Kill -9 the first worker seen running one of the run's tasks."""
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                name = client.scheduler_info()["workers"][busy[0]]["name"]
                proc = workers[int(str(name).removeprefix("w"))]
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(name)
                return
            time.sleep(0.01)


@pytest.mark.parametrize("partition_cells", [None, 49], ids=["one partition", "4 partitions"])
def test_a_run_on_a_real_cluster_survives_a_killed_worker_with_the_threaded_outputs(
    tmp_path, small_city, cluster, partition_cells
):
    address, workers = cluster
    for sub in ("t", "d"):
        (tmp_path / sub).mkdir()
    threaded = run(load_config(write_config(tmp_path / "t" / "c.yaml", small_city)))
    cfg = write_config(
        tmp_path / "d" / "c.yaml",
        small_city,
        dask={"scheduler": address},
        **{"grid.partition_cells": partition_cells},
    )
    killed: list = []
    killer = threading.Thread(target=_kill_a_busy_worker, args=(address, workers, killed))
    killer.start()
    distributed = run(load_config(cfg))
    killer.join()
    assert killed, "no worker was seen working, so none was killed"
    assert distributed.manifest["dask"]["scheduler"] == address
    assert distributed.manifest["partitions"]["count"] == (4 if partition_cells else 1)
    for name in ("class_map.tif", "probabilities.tif"):
        assert file_sha256(distributed.outputs[name]) == file_sha256(threaded.outputs[name])
    # The activity table has the same rows; with partitions, in row groups per partition.
    tables = [pd.read_parquet(r.outputs["activity.parquet"]) for r in (distributed, threaded)]
    keys = ["day", "cell_id", "hour"]
    pd.testing.assert_frame_equal(*(t.sort_values(keys, ignore_index=True) for t in tables))


def test_a_batch_on_a_real_cluster_gives_the_threaded_outputs(tmp_path, small_city, cluster):
    from urbanfusion.workflows.batch import run_batch

    address, _ = cluster
    configs = []
    for name, scheduler in (("threads", "threads"), ("a", address), ("b", address)):
        folder = tmp_path / name
        folder.mkdir()
        configs.append(
            write_config(
                folder / "c.yaml",
                small_city,
                dask={"scheduler": scheduler},
                **{"output.dir": str(folder / "out")},
            )
        )
    results = run_batch(configs)
    assert [r.status for r in results] == ["ok", "ok", "ok"], [r.error for r in results]
    expected = file_sha256(tmp_path / "threads" / "out" / "class_map.tif")
    for name in ("a", "b"):
        manifest = json.loads((tmp_path / name / "out" / "manifest.json").read_text())
        assert manifest["dask"]["scheduler"] == address
        assert file_sha256(tmp_path / name / "out" / "class_map.tif") == expected


def test_a_cluster_without_workers_is_an_error_in_seconds_not_a_hang(tmp_path, small_city):
    from urbanfusion.pipeline.errors import ClusterError

    for address, _ in _cluster(tmp_path, 0):
        cfg = write_config(
            tmp_path / "c.yaml", small_city, dask={"scheduler": address, "worker_timeout_s": 2}
        )
        started = time.monotonic()
        with pytest.raises(ClusterError, match="no worker joined within 2 s"):
            run(load_config(cfg))
        assert time.monotonic() - started < 30


def test_when_every_worker_dies_the_run_ends_with_an_error_and_frees_the_lock(tmp_path, small_city):
    from urbanfusion.pipeline.errors import ClusterError
    from urbanfusion.workflows.publish import OutputFolder

    for address, workers in _cluster(tmp_path, 1):
        cfg = write_config(
            tmp_path / "c.yaml", small_city, dask={"scheduler": address, "worker_timeout_s": 3}
        )
        killed: list = []
        killer = threading.Thread(target=_kill_a_busy_worker, args=(address, workers, killed))
        killer.start()
        with pytest.raises(ClusterError, match="no worker was left alive within 3 s"):
            run(load_config(cfg))
        killer.join()
        assert killed
        with OutputFolder(tmp_path / "out").locked(wait=False):
            pass  # the lock is free again
