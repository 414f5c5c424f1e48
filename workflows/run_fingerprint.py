"""What a run's outputs depend on, as digests, from the config and the files' identities alone.

Imported by the "nothing changed" path (:mod:`.up_to_date`), so it imports no pixel, table or
model library: a nightly rerun of an unchanged city answers in start-up time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from urbanfusion.pipeline.config import ExtentArea, RunConfig, expand_inputs, expand_paths
from urbanfusion.pipeline.fingerprint import code_fingerprint, digest, file_identity
from urbanfusion.pipeline.remote_files import InputPath


class RunFiles(Protocol):
    """The files a run reads (a :class:`~.layout.Plan` is one)."""

    @property
    def config(self) -> RunConfig: ...  # noqa: D102
    @property
    def tiles(self) -> Sequence[InputPath]: ...  # noqa: D102
    @property
    def signalling_files(self) -> Sequence[Path]: ...  # noqa: D102
    @property
    def area_file(self) -> Path | None: ...  # noqa: D102


@dataclass(frozen=True)
class ConfigFiles:
    """The files a config names, expanded as :func:`~.layout.layout` expands them."""

    config: RunConfig
    tiles: Sequence[InputPath]
    signalling_files: Sequence[Path]
    area_file: Path | None

    @classmethod
    def of(cls, config: RunConfig) -> ConfigFiles:
        """Expand the config's patterns (raises as :func:`~.layout.layout` would)."""
        area = config.extent
        return cls(
            config,
            expand_inputs(config, config.imagery.paths, "imagery.paths"),
            expand_paths(config, config.signalling.paths, "signalling.paths"),
            config.resolve(area.path) if isinstance(area, ExtentArea) else None,
        )


def run_fingerprint(p: RunFiles, model: Path) -> dict[str, str]:
    """Digests of everything a run's outputs depend on, and of all of them (``run``).

    The config without the settings that do not change the outputs (dask, history, where they
    go, the partitions' size; the cells' format does), each input file's identity
    (:func:`~urbanfusion.pipeline.fingerprint.file_identity`), the model file's, and the code's.
    Two runs with the same ``run`` digest make the same outputs.
    """
    config = p.config.model_dump(
        mode="json",
        exclude={
            "dask": True,
            "history": True,
            "output": {"dir", "work_dir"},
            "grid": {"partition_cells"},
        },
    )
    parts = {
        "config": digest(config),
        **inputs_fingerprint(p),
        "model": digest(file_identity(model)),
        "code": code_fingerprint(),
    }
    return {"run": digest(parts), **parts}


def inputs_fingerprint(p: RunFiles) -> dict[str, str]:
    """The digests of the input files' identities, as :func:`run_fingerprint` has them."""
    grid = p.config.resolved_signalling.grid
    return {
        "tiles": digest([file_identity(f) for f in p.tiles]),
        "signalling": digest([file_identity(f) for f in p.signalling_files]),
        "platform_grid": digest(file_identity(Path(grid.path)) if grid else None),
        "area": digest(file_identity(p.area_file) if p.area_file else None),
    }


def changed_since(manifest: dict[str, object], fingerprint: dict[str, str]) -> list[str]:
    """What differs from a published run's fingerprint (config, tiles, signalling, model...)."""
    before = manifest.get("fingerprint")
    saved = before if isinstance(before, dict) else {}
    return [k for k, v in fingerprint.items() if k != "run" and saved.get(k) != v]
