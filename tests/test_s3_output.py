"""Outputs on S3: a pointer published last, a lock that expires, resumes from the bucket's store.

Every test talks to a real S3 server (moto_server on localhost, :func:`tests.conftest.s3_server`).
"""

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pytest
import rasterio

from tests.conftest import write_config
from urbanfusion.pipeline.config import load_config
from urbanfusion.pipeline.errors import ConfigError, OutputBusyError, RemoteStorageError
from urbanfusion.pipeline.object_store import S3Location, s3_client
from urbanfusion.workflows import s3_output
from urbanfusion.workflows.run import run, what_would_run
from urbanfusion.workflows.s3_lock import S3Lease
from urbanfusion.workflows.s3_output import POINTER


def _prefix() -> str:
    return f"city-{uuid.uuid4().hex[:8]}"


def _get(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def _read_published_set(client, bucket: str, prefix: str) -> str:
    """Read the pointer, then every file it names; check each against it and the manifest."""
    pointer = json.loads(_get(client, bucket, f"{prefix}/{POINTER}"))
    run_id = pointer["run"]
    blobs = {
        name: _get(client, bucket, f"{prefix}/runs/{run_id}/{name}") for name in pointer["files"]
    }
    for name, entry in pointer["files"].items():
        assert hashlib.sha256(blobs[name]).hexdigest() == entry["sha256"], name
    manifest = json.loads(blobs["manifest.json"])
    assert manifest["run"]["id"] == run_id
    for name, entry in manifest["outputs"].items():
        assert hashlib.sha256(blobs[name]).hexdigest() == entry["sha256"], name
    return run_id


def test_a_run_to_s3_publishes_a_whole_set_and_another_machine_resumes_from_it(
    tmp_path, small_city, s3_server, monkeypatch
):
    monkeypatch.setattr(s3_output, "READ_GRACE_S", 0)  # no reader here waits on the old run
    prefix, bucket = _prefix(), s3_server.bucket
    client = s3_server.client()
    url = f"s3://{bucket}/{prefix}"
    first_copy = write_config(tmp_path / "a.yaml", small_city, **{"output.dir": url})
    result = run(load_config(first_copy))
    run_id = _read_published_set(client, bucket, prefix)
    assert result.run_id == run_id
    assert result.published_to["class_map.tif"] == f"{url}/runs/{run_id}/class_map.tif"
    # GDAL opens the published map straight from the bucket.
    with rasterio.open(result.published_to["class_map.tif"]) as src:
        assert (src.read(1).ravel() == result.class_id).all()
    stored = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/store/")
    assert stored["KeyCount"] > 0
    assert (
        client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/.urbanfusion.lock")["KeyCount"] == 0
    )  # released

    # Another machine: an empty working copy. It pulls the published run and is up to date.
    elsewhere = write_config(
        tmp_path / "b.yaml",
        small_city,
        **{"output.dir": url, "output.work_dir": str(tmp_path / "other-machine")},
    )
    # Asked without running, a fresh machine goes by the bucket's pointer, not its empty copy.
    assert what_would_run(load_config(elsewhere)) == f"up to date (run {run_id})"
    again = run(load_config(elsewhere))
    assert again.up_to_date and again.run_id == run_id

    # Forced on that machine: the bucket's store is reused, not computed again.
    forced_copy = tmp_path / "third-machine"
    third = write_config(
        tmp_path / "c.yaml",
        small_city,
        **{"output.dir": url, "output.work_dir": str(forced_copy), "history.keep": 1},
    )
    cfg = load_config(third)
    days = sorted((small_city.root / "signalling").glob("*.csv"))
    cfg = cfg.model_copy(
        update={"signalling": cfg.signalling.model_copy(update={"paths": [str(days[0])]})}
    )
    changed = run(cfg)
    assert changed.run_id != run_id
    assert changed.changes.previous_run == run_id
    assert _read_published_set(client, bucket, prefix) == changed.run_id
    runs = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/runs/")
    assert {o["Key"].split("/")[2] for o in runs["Contents"]} == {changed.run_id}  # keep: 1


def test_a_reader_sees_one_whole_run_while_runs_publish(tmp_path, small_city, s3_server):
    prefix, bucket = _prefix(), s3_server.bucket
    url = f"s3://{bucket}/{prefix}"
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city, **{"output.dir": url}))
    run(cfg)
    seen: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        client = s3_client(url)
        while True:
            last = stop.is_set()  # one more read after the last publish
            try:
                seen.append(_read_published_set(client, bucket, prefix))
            except BaseException as e:  # an assertion or a file that vanished under the reader
                errors.append(e)
                return
            if last:
                return

    reader = threading.Thread(target=read)
    reader.start()
    try:
        published = [run(cfg, force=True).run_id for _ in range(2)]
    finally:
        stop.set()
        reader.join()
    assert not errors, errors[0]
    assert set(published) <= set(seen)  # the reader did see the runs switch


def test_a_run_killed_before_its_pointer_leaves_the_published_run_and_is_cleared(
    tmp_path, small_city, s3_server, monkeypatch
):
    prefix, bucket = _prefix(), s3_server.bucket
    client = s3_server.client()
    url = f"s3://{bucket}/{prefix}"
    cfg = load_config(write_config(tmp_path / "c.yaml", small_city, **{"output.dir": url}))
    first = run(cfg).run_id

    real_upload = s3_output.S3Output._upload
    calls = []

    def dies_after_two_run_files(self, path, key):
        if "/runs/" in key:
            calls.append(key)
            if len(calls) > 2:
                raise KeyboardInterrupt  # the run stopped half way through sending its files
        real_upload(self, path, key)

    monkeypatch.setattr(s3_output.S3Output, "_upload", dies_after_two_run_files)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, force=True)
    assert _read_published_set(client, bucket, prefix) == first
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/runs/")["Contents"]
    half = {o["Key"].split("/")[2] for o in listed}
    assert len(half - {first}) >= 1  # the half-sent run's files are there, named by no pointer

    monkeypatch.setattr(s3_output.S3Output, "_upload", real_upload)
    third = run(cfg, force=True).run_id
    assert _read_published_set(client, bucket, prefix) == third
    runs = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/runs/")["Contents"]
    assert {o["Key"].split("/")[2] for o in runs} == {first, third}  # the orphan is gone


def test_the_lock_refuses_a_second_run_and_a_dead_runs_lock_expires(s3_server):
    where = S3Location(s3_server.bucket, _prefix())
    client = s3_server.client()
    holder = S3Lease(client, where, ttl_s=3)
    assert holder.acquire() == ""
    with pytest.raises(OutputBusyError, match="being written by run PID"):
        S3Lease(client, where, ttl_s=3).acquire(wait=False)
    holder.release()

    # A run that died holding the lock: nothing renews it, so it expires.
    client.put_object(
        Bucket=where.bucket,
        Key=where.key(".urbanfusion.lock"),
        Body=json.dumps(
            {
                "pid": 1,
                "host": "gone",
                "started": "2026-01-01T00:00:00+00:00",
                "command": "urbanfusion run",
                "ttl_s": 2,
            }
        ).encode(),
    )
    waits: list[str] = []
    start = time.monotonic()
    lease = S3Lease(client, where, ttl_s=3)
    note = lease.acquire(wait=True, on_wait=waits.append)
    assert 1.0 < time.monotonic() - start < 15
    assert "took over the expired lock" in note and "on gone" in note
    assert waits and "waiting for run PID 1 on gone" in waits[0]
    lease.check()
    lease.release()


def test_a_frozen_run_loses_its_lock_and_may_not_publish(s3_server, tmp_path):
    where = S3Location(s3_server.bucket, _prefix())
    script = textwrap.dedent(
        f"""
        import sys, time
        from urbanfusion.pipeline.object_store import S3Location
        from urbanfusion.pipeline.errors import RemoteStorageError
        from urbanfusion.workflows.s3_lock import S3Lease
        import boto3
        lease = S3Lease(boto3.client("s3"), S3Location({where.bucket!r}, {where.prefix!r}), 2)
        lease.acquire()
        print("held", flush=True)
        sys.stdin.readline()  # the parent says when it is thawed
        time.sleep(1.5)  # time for the renewal that finds the lock taken
        try:
            lease.check()
            print("still held")
        except RemoteStorageError as e:
            print(e)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "held"
        child.send_signal(signal.SIGSTOP)  # a frozen VM: alive, but renewing nothing
        thief = S3Lease(s3_server.client(), where, ttl_s=2)
        assert "took over" in thief.acquire(wait=True)
        child.send_signal(signal.SIGCONT)
        out, _ = child.communicate("go\n", timeout=30)
    finally:
        child.kill()
    assert "lost the lock" in out and "nothing was published" in out
    thief.check()
    thief.release()


def test_bad_s3_locations_are_one_line_errors(tmp_path, small_city, s3_server):
    bad = write_config(tmp_path / "bad.yaml", small_city, **{"output.dir": "s3://No_Such/x"})
    with pytest.raises(ConfigError, match="is not an S3 bucket name"):
        load_config(bad)
    local = write_config(tmp_path / "local.yaml", small_city, **{"output.work_dir": "/tmp/x"})
    with pytest.raises(ConfigError, match=r"work_dir is the local copy of an s3:// output\.dir"):
        load_config(local)
    missing = write_config(
        tmp_path / "missing.yaml", small_city, **{"output.dir": "s3://no-such-bucket/city"}
    )
    with pytest.raises(
        RemoteStorageError, match=r"no-such-bucket.*NoSuchBucket.*create the bucket"
    ):
        run(load_config(missing))
