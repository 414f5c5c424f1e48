"""Where urbanfusion keeps what it can make again: tile indexes, working copies of S3 outputs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/urbanfusion``, else ``~/.cache/urbanfusion``."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "urbanfusion"
