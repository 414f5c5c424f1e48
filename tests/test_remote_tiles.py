"""Tiles read where they lie: over HTTP with range requests, and from S3, as if they were local.

The HTTP server is a real one (werkzeug's, on localhost) that answers ``Range`` requests with
``206 Partial Content`` and sends ``ETag`` and ``Last-Modified``; S3 is moto_server.
"""

import json
import os
import time

import numpy as np
import pytest
import rasterio

from tests.conftest import RangeServer, write_config
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import InputNotFoundError
from urbanfusion.workflows.run import run


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, small_city):
    """The small city run on its local tiles: what every remote run must give."""
    tmp = tmp_path_factory.mktemp("local")
    return run(load_config(write_config(tmp / "c.yaml", small_city)))


def _tile_urls(base: str, small_city) -> list[str]:
    return [f"{base}/{t.name}" for t in sorted((small_city.root / "tiles").glob("*.tif"))]


def test_tiles_over_http_are_read_by_range_and_give_the_local_map(tmp_path, small_city, local_run):
    with RangeServer(small_city.root / "tiles") as server:
        urls = _tile_urls(server.url, small_city)
        cfg = load_config(write_config(tmp_path / "c.yaml", small_city, **{"imagery.paths": urls}))
        result = run(cfg)
        assert np.array_equal(result.class_id, local_run.class_id)
        with (
            rasterio.open(result.outputs["probabilities.tif"]) as a,
            rasterio.open(local_run.outputs["probabilities.tif"]) as b,
        ):
            assert np.array_equal(a.read(), b.read())
        ranged = [r for r in server.requests if r[0] == "GET" and r[1]]
        assert ranged and all(status == 206 for _, _, status in ranged)
        assert not [r for r in server.requests if r[0] == "GET" and not r[1]]  # none whole
        tiles = json.loads(result.outputs["manifest.json"].read_text())["inputs"]["tiles"]
        assert [t["path"] for t in tiles] == urls
        assert all(t["etag"] and "sha256" not in t for t in tiles)

        # Unchanged on the server: up to date, by HEAD requests alone.
        server.requests.clear()
        assert run(cfg).up_to_date
        assert {method for method, _, _ in server.requests} == {"HEAD"}

        # A tile uploaded again (new bytes' time): the run is made again.
        tile = small_city.root / "tiles" / urls[0].rsplit("/", 1)[-1]
        later = time.time() + 5
        try:
            os.utime(tile, (later, later))
            assert not run(cfg).up_to_date
        finally:
            now = time.time()
            os.utime(tile, (now, now))


def test_tiles_on_s3_by_glob_give_the_local_map(tmp_path, small_city, s3_server, local_run):
    client = s3_server.client()
    for tile in sorted((small_city.root / "tiles").glob("*.tif")):
        client.upload_file(str(tile), s3_server.bucket, f"remote-tiles/{tile.name}")
    client.put_object(Bucket=s3_server.bucket, Key="remote-tiles/deeper/other.tif", Body=b"x")
    pattern = f"s3://{s3_server.bucket}/remote-tiles/*.tif"  # * stays in its folder
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city, **{"imagery.paths": [pattern]}))
    result = run(cfg)
    assert np.array_equal(result.class_id, local_run.class_id)
    tiles = json.loads(result.outputs["manifest.json"].read_text())["inputs"]["tiles"]
    assert len(tiles) == len(list((small_city.root / "tiles").glob("*.tif")))


def test_remote_inputs_that_cannot_be_read_are_one_line_errors(tmp_path, small_city, s3_server):
    with RangeServer(small_city.root / "tiles") as server:
        cases = {
            f"{server.url}/missing.tif": "the server has no such file",
            f"{server.url}/*.tif": "a URL takes no wildcards",
            f"s3://{s3_server.bucket}/nothing-here/*.tif": "matched no object",
        }
        for url, said in cases.items():
            cfg = load_config(
                write_config(tmp_path / "c.yaml", small_city, **{"imagery.paths": [url]})
            )
            with pytest.raises(InputNotFoundError, match=said):
                run(cfg)
    cfg = load_config(
        write_config(
            tmp_path / "s.yaml", small_city, **{"signalling.paths": ["https://example.org/a.csv"]}
        )
    )
    with pytest.raises(InputNotFoundError, match="read from local files only"):
        run(cfg)
