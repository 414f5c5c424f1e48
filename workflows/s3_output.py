"""An output folder on S3 (``output.dir: s3://bucket/prefix``), worked on in a local copy.

::

    s3://bucket/prefix/
      .urbanfusion.lock            one run at a time: a lease that expires (:mod:`.s3_lock`)
      latest.json                  the pointer: the published run, its files' sizes and hashes,
                                   the runs kept in history; publishing = one PUT of it
      runs/<run id>/<name>         each run's files, written before the pointer names them
      store/<kind>/<key>.<ext>     the run store, so a run on another machine reuses it

S3 has no rename and no links, so the pointer takes the place of ``latest``: a run's files go to
``runs/<its id>/`` (a key no reader follows yet), then one PUT of ``latest.json`` names them. A
PUT replaces an object whole, so a reader that reads the pointer, then the files it names, sees
one run's set, never a mix, whatever moment the writer dies at. Files of a run killed before its
pointer, and runs that left the history, are deleted by the next run, which holds the lock.

A run works in a local copy of the folder (``output.work_dir``): it first *pulls* (the pointer's
run becomes the copy's published run; stored results it lacks are downloaded), runs there as on
a local output, then *pushes* (new stored results, the run's files, the pointer, the trim). The
local copy is a cache: deleting it costs downloads, never results.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from urbanfusion.pipeline.fingerprint import file_sha256
from urbanfusion.pipeline.object_store import S3Location, error_code, s3_client, s3_errors
from urbanfusion.workflows.output_names import KEPT_IN_HISTORY, MANIFEST
from urbanfusion.workflows.publish import RUNS, STORE, OutputFolder
from urbanfusion.workflows.s3_lock import LEASE_TTL_S, S3Lease

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

T = TypeVar("T")
POINTER = "latest.json"
# Objects sent or fetched at once: a region's store is thousands of chunks, each a request whose
# time is mostly waiting (boto3's clients are thread-safe).
TRANSFERS = 8
# How long a superseded run's files stay whole for readers that read the pointer before the
# switch (a reader of a region's maps may take minutes).
READ_GRACE_S = 900.0


def _in_grace(when: str | None, now: dt.datetime) -> bool:
    """Whether a run superseded at ``when`` (ISO time, None: never published) is still read."""
    return when is not None and (now - dt.datetime.fromisoformat(when)).total_seconds() < (
        READ_GRACE_S
    )


def _each(work: Callable[[T], object], items: Sequence[T]) -> None:
    """``work`` on every item, :data:`TRANSFERS` at a time; the first failure is raised."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=min(TRANSFERS, len(items))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


class S3Output:
    """The S3 side of an output folder: its pointer, lock, runs and store."""

    def __init__(self, url: str, work: OutputFolder, keep: int, ttl_s: float = LEASE_TTL_S) -> None:
        """``work``: the local copy runs are made in; ``keep``: runs kept in history."""
        self.where = S3Location.parse(url)
        self.client: S3Client = s3_client(url)
        self.work, self.keep = work, keep
        self.lease = S3Lease(self.client, self.where, ttl_s)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``."""
        return self.where.url

    def object_url(self, *parts: str) -> str:
        """``s3://bucket/prefix/<parts>``: what GDAL, fsspec and the AWS CLI open."""
        return self._url(self.where.key(*parts))

    def _url(self, key: str) -> str:
        return f"s3://{self.where.bucket}/{key}"

    @contextlib.contextmanager
    def locked(self, wait: bool, on_wait: Callable[[str], None] | None) -> Iterator[None]:
        """Hold the S3 lock for the block."""
        with self.lease.held(wait, on_wait):
            yield

    def pointer(self) -> dict[str, Any] | None:
        """The published run as ``latest.json`` says (None before the first run)."""
        from botocore.exceptions import ClientError

        with s3_errors(self.object_url(POINTER), "reading"):
            try:
                reply = self.client.get_object(
                    Bucket=self.where.bucket, Key=self.where.key(POINTER)
                )
            except ClientError as e:
                if error_code(e) in ("NoSuchKey", "404"):
                    return None
                raise
            pointer = json.loads(reply["Body"].read())
        return pointer if isinstance(pointer, dict) else None

    def run_manifest(self, pointer: dict[str, Any]) -> dict[str, Any]:
        """The manifest of the run ``pointer`` names, read from the bucket."""
        key = self.where.key(RUNS, str(pointer["run"]), MANIFEST)
        with s3_errors(self._url(key), "reading"):
            body = self.client.get_object(Bucket=self.where.bucket, Key=key)["Body"].read()
        manifest = json.loads(body)
        return manifest if isinstance(manifest, dict) else {}

    def outputs(self) -> dict[str, str]:
        """The published run's files by name, as S3 URLs (empty before the first run)."""
        pointer = self.pointer()
        if pointer is None:
            return {}
        return {name: self.object_url(RUNS, pointer["run"], name) for name in pointer["files"]}

    def _keys(self, *parts: str) -> dict[str, int]:
        """Every key under ``prefix/<parts>/`` with its size, relative to that folder."""
        folder = self.where.key(*parts) + "/"
        keys: dict[str, int] = {}
        with s3_errors(self.object_url(*parts), "listing"):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=self.where.bucket, Prefix=folder):
                for obj in page.get("Contents", []):
                    keys[obj["Key"][len(folder) :]] = obj["Size"]
        return keys

    def _download(self, key: str, path: Path) -> None:
        """``key`` to ``path``, whole or not at all (a temporary name, then a rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        with s3_errors(self._url(key), "downloading"):
            self.client.download_file(self.where.bucket, key, str(tmp))
        os.replace(tmp, path)

    def _upload(self, path: Path, key: str) -> None:
        with s3_errors(self._url(key), "uploading"):
            self.client.upload_file(str(path), self.where.bucket, key)

    def _delete(self, keys: list[str]) -> None:
        with s3_errors(self.url, "deleting old objects in"):
            for start in range(0, len(keys), 1000):  # S3's most per request
                batch: list[ObjectIdentifierTypeDef] = [
                    {"Key": k} for k in keys[start : start + 1000]
                ]
                self.client.delete_objects(
                    Bucket=self.where.bucket, Delete={"Objects": batch, "Quiet": True}
                )

    def pull(self) -> None:
        """Make the local copy's published run and store those of the bucket (lock held)."""
        pointer = self.pointer()
        if pointer is not None:
            run_id = str(pointer["run"])
            local = self.work.latest()
            if local is None or local.name != run_id:
                self._pull_run(run_id, list(pointer["files"]))
        store = self.work.path / STORE
        missing = [
            name
            for name, size in self._keys(STORE).items()
            if not ((store / name).is_file() and (store / name).stat().st_size == size)
        ]
        _each(lambda name: self._download(self.where.key(STORE, name), store / name), missing)

    def _pull_run(self, run_id: str, names: list[str]) -> None:
        old = self.work.runs / run_id  # kept in the copy's history with only its map
        if old.is_dir():
            for f in old.iterdir():
                f.chmod(0o644)
                f.unlink()
            old.rmdir()
        with self.work.staging(run_id) as staging:

            def fetch(name: str) -> None:
                self._download(self.where.key(RUNS, run_id, name), staging / name)

            _each(fetch, names)
            self.work.publish(staging, run_id, self.keep)

    def push(self, run: Path) -> None:
        """Send the store, then ``run``'s files, then the pointer; then trim (lock held).

        ``run``: the folder of the run just published in the local copy.

        Raises:
            RemoteStorageError: S3 refused a request, or the lock was lost (nothing published).
        """
        store = self.work.path / STORE
        remote = self._keys(STORE)
        local = {
            p.relative_to(store).as_posix(): p
            for p in sorted(store.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(store).parts)
        }
        new = [name for name, path in local.items() if remote.get(name) != path.stat().st_size]
        _each(lambda name: self._upload(local[name], self.where.key(STORE, name)), new)
        files = sorted(f for f in run.iterdir() if f.is_file())
        _each(lambda f: self._upload(f, self.where.key(RUNS, run.name, f.name)), files)
        before = self.pointer() or {}
        history = [r for r in before.get("history", []) if r != run.name]
        history = [*history, run.name][-self.keep :]
        now = dt.datetime.now(dt.UTC)
        superseded = dict(before.get("superseded", {}))
        if "run" in before and before["run"] != run.name:
            superseded[before["run"]] = now.isoformat(timespec="seconds")
        superseded = {  # a run out of history and past its grace is deleted below
            r: when for r, when in superseded.items() if r in history or _in_grace(when, now)
        }
        # The manifest has every other file's hash already: a region's maps are not read again.
        listed = json.loads((run / MANIFEST).read_text(encoding="utf-8"))["outputs"]
        pointer = {
            "run": run.name,
            "published": now.isoformat(timespec="seconds"),
            "files": {
                f.name: {
                    "bytes": f.stat().st_size,
                    "sha256": listed[f.name]["sha256"] if f.name in listed else file_sha256(f),
                }
                for f in files
            },
            "history": history,
            # When each older run stopped being the published one: its files stay readable for
            # READ_GRACE_S after, for readers that read the pointer just before the switch.
            "superseded": superseded,
        }
        self.lease.check()  # a run that lost the lock must not switch the pointer
        with s3_errors(self.object_url(POINTER), "publishing"):
            self.client.put_object(
                Bucket=self.where.bucket,
                Key=self.where.key(POINTER),
                Body=json.dumps(pointer, indent=1).encode(),
                ContentType="application/json",
            )
        # Store objects the bucket had that this run did not use (its uploads were all used).
        self._trim(pointer, [name for name in remote if name not in local], now)

    def _trim(self, pointer: dict[str, Any], unused: list[str], now: dt.datetime) -> None:
        """Delete what readers no longer reach: orphans, old runs' files, unused results.

        Files of a run killed before its pointer go at once (no pointer ever named them); a
        run that was published keeps its files for :data:`READ_GRACE_S` after it was
        superseded (S3 has no open files: a reader that read the old pointer is still reading
        them), then only what history keeps (:data:`KEPT_IN_HISTORY`), while it is in history.
        """
        history, superseded = set(pointer["history"]), pointer["superseded"]
        stale = []
        for name in self._keys(RUNS):
            run_id, _, file = name.partition("/")
            if run_id == pointer["run"]:
                continue
            if _in_grace(superseded.get(run_id), now):
                continue
            if run_id not in history or file not in KEPT_IN_HISTORY:
                stale.append(self.where.key(RUNS, name))
        stale += [self.where.key(STORE, name) for name in unused]
        if stale:
            self._delete(stale)
