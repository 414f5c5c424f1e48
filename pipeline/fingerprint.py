"""Identities of files: what a manifest records and what tells a rerun that an input changed."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

from urbanfusion.pipeline.remote_files import InputPath, RemoteFile, RemoteStat

# The packages whose source is the code a run's outputs depend on.
_PACKAGES = ("pipeline", "preprocess", "ingest", "models", "workflows")
# Libraries whose version can change the numbers (GDAL comes inside rasterio's wheels).
_LIBRARIES = (
    "numpy",
    "rasterio",
    "pyproj",
    "shapely",
    "opencv-python-headless",
    "onnxruntime",
    "onnxruntime-gpu",
    "dask",
    "xarray",
    "pandas",
    "pyarrow",
)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: InputPath, relative: bool = False) -> dict[str, object]:
    """``{"path", "bytes", "sha256"}`` of a file, as the manifest lists inputs and outputs.

    ``relative`` leaves the path out (outputs are listed by name, beside the manifest). A remote
    tile is listed by its ETag, not read whole for a hash (``{"path", "bytes", "etag"}``).
    """
    entry: dict[str, object] = {} if relative else {"path": str(path)}
    if isinstance(path, RemoteFile):
        return {**entry, "bytes": path.stat().st_size, "etag": path.etag()}
    return {**entry, "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def stat_identity(stat: os.stat_result | RemoteStat) -> dict[str, int]:
    """Size, modification and change times and inode: what tells cheaply that a file changed.

    As git's index does. The size and modification time alone miss a rewrite that keeps both (a
    tool that restores times, ``cp -p``, ``rsync -t``); the change time cannot be set by any
    tool and moves on every write, and a file replaced by another has another inode. All four
    come from the one ``stat`` call, so the check costs what it did.
    """
    return {
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
    }


def file_identity(path: InputPath) -> dict[str, object]:
    """The path and :func:`stat_identity` of a file: whether it changed, without reading it.

    A missing file has no identity (its reader says so, in its own words, when it is read).
    """
    try:
        stat = path.stat()
    except FileNotFoundError:
        return {"path": str(path), "bytes": None, "mtime_ns": None}
    return {"path": str(path), **stat_identity(stat)}


def digest(value: object) -> str:
    """Hex SHA-256 of a JSON-able value (keys sorted, so equal values give equal digests)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.cache
def code_fingerprint() -> str:
    """Digest of the installed urbanfusion source (``.py`` and ``.json`` files) and libraries.

    Any change of the code that runs makes earlier results stale, released or not, and so does
    another version of a library that computes with it.
    """
    h = hashlib.sha256()
    for library in _LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            h.update(f"{library}=={importlib.metadata.version(library)}\0".encode())
    for name in _PACKAGES:
        spec = importlib.util.find_spec(f"urbanfusion.{name}")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            root = Path(folder)
            for f in sorted(root.rglob("*")):
                if f.suffix in (".py", ".json") and "__pycache__" not in f.parts:
                    h.update(f"{name}/{f.relative_to(root).as_posix()}\0".encode())
                    h.update(f.read_bytes())
    return h.hexdigest()
