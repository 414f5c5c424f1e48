"""Identities of files: what a manifest records and what tells a rerun that an input changed."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path, relative: bool = False) -> dict[str, object]:
    """``{"path", "bytes", "sha256"}`` of a file, as the manifest lists inputs and outputs.

    ``relative`` leaves the path out (outputs are listed by name, beside the manifest).
    """
    entry: dict[str, object] = {} if relative else {"path": str(path)}
    return {**entry, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
