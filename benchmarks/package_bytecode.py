"""Bytecode for a checkout's packages, written before a benchmark times whole processes.

A pip-installed package comes with its bytecode, and an editable install writes it on first
import, unless ``PYTHONDONTWRITEBYTECODE`` is set (as on the team's machine): then every process
compiles the package again, 0.05-0.3 s a start that no user pays. The benchmarks that time
whole processes compile first, this code and a ``--before`` revision's alike.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGES = ("pipeline", "ingest", "preprocess", "models", "workflows")


def compile_packages(root: Path) -> None:
    """Write the bytecode of the urbanfusion packages under ``root`` (a checkout)."""
    folders = [str(root / name) for name in PACKAGES]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True)
