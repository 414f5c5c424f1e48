"""Shared fixtures: a small seeded demo city, the real data folder, config helpers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from werkzeug.serving import make_server
from werkzeug.utils import send_file
from werkzeug.wrappers import Request, Response

from urbanfusion.workflows.democity.city import DemoCity, generate_demo_city

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# Modules of whole runs, training, clusters, browsers and the fault suite: marked slow, so that
# `make test-fast` (the edit-run loop, under a minute) leaves them to `make test` and CI.
SLOW_MODULES = frozenset(
    {
        "test_batch",
        "test_calibration",
        "test_checkpoints",
        "test_cli",
        "test_cluster",
        "test_faults",
        "test_memory",
        "test_model",
        "test_pretrain",
        "test_publish",
        "test_remote_tiles",
        "test_s3_output",
        "test_signalling_helsinki",
        "test_store",
        "test_urfc_training",
        "test_webmap",
        "test_workflows",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests of :data:`SLOW_MODULES` slow."""
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tile-index caches go to a temporary folder, not the user's ~/.cache."""
    import os

    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder beside the repository; tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (fresh clone without ../shared)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> DemoCity:
    """A 3 km demo city (seed 11), generated once per session."""
    return generate_demo_city(tmp_path_factory.mktemp("city") / "inputs", seed=11, size_km=3.0)


def write_config(path: Path, city: DemoCity, **changes: object) -> Path:
    """A copy of ``city``'s config at ``path`` with absolute input paths and ``changes`` applied.

    A change whose value is ``None`` under a dotted key removes that key.
    """
    config = yaml.safe_load(city.config.read_text())
    config["imagery"]["paths"] = [str(city.root / "tiles" / "*.tif")]
    config["signalling"]["paths"] = [str(city.root / "signalling" / "*.csv")]
    config["output"]["dir"] = str(path.parent / "out")
    for key, value in changes.items():
        node = config
        *parents, last = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[last] = value
    path.write_text(yaml.safe_dump(config))
    return path


class RangeServer:
    """Files of a folder over HTTP on localhost, with range requests, ETag and Last-Modified.

    A real server (werkzeug's, threaded); it records each request's method, Range and status.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str, int]] = []  # (method, Range header, status)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @Request.application
    def app(self, request: Request) -> Response:
        path = self.root / request.path.lstrip("/")
        if not path.is_file():
            response = Response("not found", status=404)
        else:
            # conditional: Range -> 206 with the bytes asked for, ETag and Last-Modified.
            response = send_file(path, request.environ, conditional=True, etag=True)
        self.requests.append(
            (request.method, request.headers.get("Range", ""), response.status_code)
        )
        return response

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


@dataclass(frozen=True)
class S3Server:
    """A real S3-compatible server on localhost (moto_server) and a bucket made on it."""

    endpoint: str
    bucket: str

    def client(self) -> Any:
        """A boto3 client of the server (the environment points boto3 at it)."""
        import boto3

        return boto3.client("s3")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``moto_server`` started on a free port; boto3 and GDAL pointed at it by environment.

    The environment is what a user's would be for MinIO or any S3-compatible store:
    ``AWS_ENDPOINT_URL_S3`` and credentials (urbanfusion gives GDAL the same endpoint).
    """
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("moto_server is not installed (pip install -e .[dev])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    gdal = ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING")
    saved = {k: os.environ.get(k) for k in (*env, *gdal)}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start (see {log.name})")
                time.sleep(0.1)
        server = S3Server(endpoint, "urbanfusion-test")
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
