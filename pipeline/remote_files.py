"""Input files read where they lie: COG tiles over HTTP(S) or on S3, by GDAL's range requests.

A :class:`RemoteFile` stands where a local :class:`~pathlib.Path` would: rasterio opens it (its
``os.fspath`` is the URL, which GDAL reads through ``/vsicurl/`` or ``/vsis3/``, fetching only
the byte ranges a window needs), and :meth:`RemoteFile.stat` gives what tells that it changed,
from one ``HEAD`` request: its size, its ``Last-Modified`` time and its ``ETag`` (in the place of
an inode: a new upload has a new ETag). So the tile index, the store's keys and the run's
fingerprint treat a remote tile as they treat a local one, without downloading it.

S3 goes through boto3 (the ``[s3]`` extra) for ``HEAD`` and listing; GDAL is pointed at the same
endpoint: ``AWS_ENDPOINT_URL_S3``, boto3's variable, is given to GDAL as ``AWS_S3_ENDPOINT``.
"""

from __future__ import annotations

import email.utils
import fnmatch
import hashlib
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from urbanfusion.pipeline.errors import InputNotFoundError, RemoteStorageError
from urbanfusion.pipeline.object_store import (
    S3Location,
    gdal_s3_endpoint,
    is_s3,
    s3_client,
    s3_errors,
)

REMOTE_SCHEMES = ("http://", "https://", "s3://")
_HEAD_TIMEOUT_S = 30


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL a tile can be read from (http, https, s3)."""
    return path.lower().startswith(REMOTE_SCHEMES)


@dataclass(frozen=True)
class RemoteStat:
    """The fields of ``os.stat_result`` that :func:`~.fingerprint.stat_identity` reads."""

    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_ino: int
    etag: str


# HEAD replies by URL, for the life of the process: a run asks for a tile's identity once per
# chunk it covers. :func:`forget_identities` clears them before a run's end-of-run check.
_known: dict[str, RemoteStat] = {}
_known_lock = threading.Lock()


def forget_identities() -> None:
    """Ask the servers again the next time (the check that inputs did not change mid-run)."""
    with _known_lock:
        _known.clear()


@dataclass(frozen=True)
class RemoteFile:
    """A file named by an ``http(s)://`` or ``s3://`` URL (see the module's docs)."""

    url: str

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        """The URL: what rasterio (GDAL) opens."""
        return self.url

    @property
    def name(self) -> str:
        """The last segment of the URL's path (``tile_03.tif``)."""
        return urllib.parse.urlsplit(self.url).path.rsplit("/", 1)[-1]

    @property
    def folder(self) -> str:
        """The URL up to the last ``/``: the tiles beside this one."""
        return self.url.rsplit("/", 1)[0]

    def is_file(self) -> bool:
        """True: a remote input is always a file (its reader says so when it is not there)."""
        return True

    def etag(self) -> str:
        """The server's version tag of the file (what the manifest lists for it)."""
        return self.stat().etag

    def stat(self) -> RemoteStat:
        """Size, modification time and ETag digest, from one HEAD request (cached).

        Raises:
            InputNotFoundError: the server says there is no such file.
            RemoteStorageError: the server cannot be reached or refuses.
        """
        with _known_lock:
            known = _known.get(self.url)
        if known is None:
            known = _head_s3(self.url) if is_s3(self.url) else _head_http(self.url)
            with _known_lock:
                _known[self.url] = known
        return known


def _stat(size: int, modified_ns: int, etag: str) -> RemoteStat:
    # An ETag is the server's name for one version of the file: digested into an int like an
    # inode, so a file uploaded again with the same size and second has another identity.
    ino = int(hashlib.sha256(etag.encode()).hexdigest()[:15], 16)
    return RemoteStat(size, modified_ns, modified_ns, ino, etag.strip('"'))


def _head_http(url: str) -> RemoteStat:
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=_HEAD_TIMEOUT_S) as reply:
            headers = reply.headers
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise InputNotFoundError(
                f"{url}: the server has no such file (HTTP 404); check the URL in imagery.paths"
            ) from None
        raise RemoteStorageError(
            f"{url}: HTTP {e.code} {e.reason}; check the URL and its access"
        ) from None
    except (urllib.error.URLError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise OSError(
            f"{url} cannot be reached ({reason}); check the URL and the network"
        ) from None
    modified = headers.get("Last-Modified")
    when = email.utils.parsedate_to_datetime(modified) if modified else None
    return _stat(
        int(headers.get("Content-Length") or 0),
        int(when.timestamp() * 1e9) if when else 0,
        headers.get("ETag") or f"{modified}/{headers.get('Content-Length')}",
    )


def _head_s3(url: str) -> RemoteStat:
    from botocore.exceptions import ClientError

    where = S3Location.parse(url, "imagery.paths")
    with s3_errors(url, "reading"):
        try:
            reply = s3_client(url).head_object(Bucket=where.bucket, Key=where.prefix)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise InputNotFoundError(
                    f"{url}: no such object; check the key in imagery.paths"
                ) from None
            raise
    modified = reply["LastModified"]
    return _stat(reply["ContentLength"], int(modified.timestamp() * 1e9), reply["ETag"])


def expand_remote(pattern: str, key: str) -> list[RemoteFile]:
    """The files a URL names: itself, or on S3 the objects a glob (``*``, ``?``, ``[]``) matches.

    Raises:
        InputNotFoundError: a glob over HTTP (a server lists nothing), or an S3 glob that
            matches no object.
    """
    wild = any(c in pattern for c in "*?[")
    if not wild:
        return [RemoteFile(pattern)]
    if not is_s3(pattern):
        raise InputNotFoundError(
            f"{key} '{pattern}': a web server cannot be listed, so a URL takes no wildcards; "
            "list each tile's URL, or put the tiles on S3"
        )
    where = S3Location.parse(pattern, key)
    fixed = where.prefix[: min(where.prefix.index(c) for c in "*?[" if c in where.prefix)]
    client = s3_client(pattern)
    found: list[str] = []
    with s3_errors(pattern, "listing"):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=where.bucket, Prefix=fixed
        ):
            found += [
                o["Key"] for o in page.get("Contents", []) if _matches(o["Key"], where.prefix)
            ]
    if not found:
        raise InputNotFoundError(
            f"{key} '{pattern}' matched no object in bucket {where.bucket}; check the prefix "
            "and the pattern"
        )
    return [RemoteFile(f"s3://{where.bucket}/{k}") for k in sorted(found)]


def _matches(key: str, pattern: str) -> bool:
    """A glob's match as on a disk: ``*`` stays within one folder, ``**`` spans folders."""
    if "**" in pattern:
        return fnmatch.fnmatchcase(key, pattern.replace("**", "*"))
    return key.count("/") == pattern.count("/") and fnmatch.fnmatchcase(key, pattern)


def gdal_for_remote() -> None:
    """Settings for GDAL's remote reads, unless the user set them (child processes inherit).

    GDAL is told not to list a tile's folder to look for sidecar files (a listing per tile over
    HTTP, for nothing: a COG carries its overviews and mask), and pointed at boto3's S3
    endpoint (:func:`~.object_store.gdal_s3_endpoint`).
    """
    os.environ.setdefault("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    gdal_s3_endpoint()


InputPath = Path | RemoteFile
"""An input file: a local path or a remote tile."""


def input_path(path: str) -> InputPath:
    """``path`` as it was given to a reader: a URL stays a URL (``Path`` would fold its ``//``)."""
    return RemoteFile(path) if is_remote(path) else Path(path)
