"""The run store's keys: what each kind of stored result depends on, in one place.

A key is the digest of exactly the inputs' identities, the settings and the code a result
depends on (:func:`~urbanfusion.pipeline.fingerprint.digest`); an unchanged key means the
stored result can be reused. The store itself (:mod:`urbanfusion.pipeline.store`) knows
nothing of what its results are.

Kinds: ``scenes`` (a tile's scaling, haze score and airlight), ``points`` (one signalling
file's rows on the grid), ``activity`` (every signalling file aggregated), ``chips`` (one
chunk of chips) and ``predictions`` (every cell's model outputs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from urbanfusion.pipeline.config import ImageryConfig, SignallingConfig
from urbanfusion.pipeline.fingerprint import code_fingerprint, digest, file_identity
from urbanfusion.pipeline.grid import CityGrid
from urbanfusion.pipeline.remote_files import InputPath
from urbanfusion.preprocess.dehaze import DehazeParams


def scene_key(
    path: InputPath,
    bands: tuple[int, ...],
    grid: CityGrid,
    params: DehazeParams,
    dehaze: str,
    preview_bounds: tuple[float, float, float, float] | None,
) -> str:
    """A tile's scene statistics: the file, its bands, the grid's pixels, dehazing, the crop."""
    return digest(
        {
            "tile": file_identity(path),
            "bands": bands,
            "pixel_size": grid.pixel_size,
            "crs": grid.crs.to_string(),
            "params": asdict(params),
            "dehaze": dehaze,
            "preview_bounds": preview_bounds,
            "code": code_fingerprint(),
        }
    )


def _signalling_common(grid: CityGrid, cfg: SignallingConfig) -> dict[str, object]:
    return {
        "signalling": cfg.model_dump(mode="json", exclude={"paths", "window_days"}),
        "grid": grid.describe(),
        "code": code_fingerprint(),
    }


def points_part_key(grid: CityGrid, cfg: SignallingConfig, path: Path) -> str:
    """One ``points`` file's rows on the grid: that file and the settings, not the window."""
    return digest({**_signalling_common(grid, cfg), "file": file_identity(path)})


def activity_key(grid: CityGrid, cfg: SignallingConfig, paths: list[Path]) -> str:
    """The activity of all the files: every file, the window and the platform's grid file."""
    platform_grid = Path(cfg.grid.path) if cfg.grid is not None else None
    return digest(
        {
            **_signalling_common(grid, cfg),
            "window_days": cfg.window_days,
            "files": [file_identity(f) for f in paths],
            "platform_grid": file_identity(platform_grid) if platform_grid else None,
        }
    )


def chips_keys(
    grid: CityGrid,
    imagery: ImageryConfig,
    chunk_px: int,
    sources: dict[tuple[int, int], list[dict[str, object]]],
) -> dict[tuple[int, int], str]:
    """Per chunk of chips, its key: the tiles it is made of (in mosaic order) and the settings."""
    common = {
        "grid": grid.describe(),
        "chunk_px": chunk_px,
        "bands": imagery.bands,
        "dehaze": imagery.dehaze,
        "code": code_fingerprint(),
    }
    return {rc: digest({**common, "chunk": list(rc), "sources": s}) for rc, s in sources.items()}


def all_chips_key(chunk_keys: list[str]) -> str:
    """Chips of several chunks: their keys in row-major order."""
    return digest(chunk_keys)


def inputs_key(
    chips: str,
    activity: str,
    inside: np.ndarray | None = None,
    part: Sequence[int] | None = None,
) -> str:
    """What the model reads: the chips' and the activity's keys, and which cells.

    The cells of an extent's area, and of a partition (its first row and column, and size).
    """
    parts: list[object] = [chips, activity, list(part) if part else None]
    if inside is not None:  # an extent given as an area: only its cells are predicted
        parts.append(hashlib.sha256(np.packbits(inside).tobytes()).hexdigest())
    return digest(parts)


def predictions_key(inputs_key: str, model: Path) -> str:
    """Every cell's model outputs: the chips' and activity's keys, and the model file."""
    return digest({"inputs": inputs_key, "model": file_identity(model), "code": code_fingerprint()})
