"""urbanfusion from Python: plan a run, run it, and open its maps as an ``xarray.Dataset``.

::

    import urbanfusion.api as uf

    result = uf.run("city.yaml")          # or a RunConfig (uf.load_config, then model_copy)
    ds = uf.open_result(result)           # or uf.open_result("out/city"): class_id, probability...
    ds.class_id.rio.to_raster("class.tif")

Everything else in the ``urbanfusion`` packages is internal and may change between versions;
what is named in ``__all__`` here is kept.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import xarray as xr

from urbanfusion.pipeline.config import RunConfig, load_config
from urbanfusion.pipeline.errors import UrbanFusionError
from urbanfusion.pipeline.progress import StageTimer
from urbanfusion.workflows import run as _run
from urbanfusion.workflows.planning import RunPlan, plan_run
from urbanfusion.workflows.result_dataset import open_result as _open_result
from urbanfusion.workflows.run import RunResult

__version__ = version("urbanfusion")

__all__ = [
    "RunConfig",
    "RunPlan",
    "RunResult",
    "UrbanFusionError",
    "__version__",
    "load_config",
    "open_result",
    "plan",
    "run",
]


def _config(config: RunConfig | str | Path) -> RunConfig:
    return config if isinstance(config, RunConfig) else load_config(config)


def plan(
    config: RunConfig | str | Path,
    *,
    workers: int | None = None,
    worker_memory_gb: float | None = None,
    partition_cells: int | None = None,
) -> RunPlan:
    """What a run of ``config`` (a config or its YAML path) will take, as ``urbanfusion plan``.

    Reads no pixels and no rows. ``plan.grid``, ``plan.tiles`` and ``plan.signalling_files``
    are what the run would use; ``plan.partitions`` cut the grid for ``workers`` workers of
    ``worker_memory_gb`` (by default the config's ``dask`` settings, else one worker with this
    machine's free memory); ``plan.seconds`` is the expected time and ``plan.lines()`` the
    command's report.

    Raises:
        UrbanFusionError: the config or its inputs are not usable (the message says how to fix it).
    """
    memory = None if worker_memory_gb is None else round(worker_memory_gb * 2**30)
    return plan_run(_config(config), workers, memory, partition_cells)


def run(
    config: RunConfig | str | Path,
    *,
    force: bool = False,
    wait: bool = True,
    new_city: bool = False,
    progress: bool = False,
) -> RunResult:
    """Run ``config`` (a config or its YAML path) and publish its outputs, as ``urbanfusion run``.

    A rerun with nothing changed computes nothing (``result.up_to_date``); ``force`` recomputes.
    ``wait``: wait while another run writes the same output folder (else raise at once).
    ``new_city``: the output folder holds another city's maps; start its history over.
    ``progress``: show each stage on stderr; warnings are printed to stderr either way.

    Raises:
        UrbanFusionError: bad input, a busy output folder, a failed cluster; nothing is published.
    """
    return _run.run(
        _config(config), StageTimer(quiet=not progress), wait=wait, force=force, new_city=new_city
    )


def open_result(result: RunResult | str | Path) -> xr.Dataset:
    """A run's maps as an ``xarray.Dataset`` on the cell grid, with the grid's CRS and transform.

    ``result``: what :func:`run` returned (its own run, even if another was published since),
    an output folder (its latest run) or one of its ``runs/<id>`` folders. Variables on (y, x):
    ``class_id``, ``probability`` (class, y, x), ``margin``, ``domain_score``, ``in_domain``,
    ``has_imagery``, ``has_signalling``, on the grid's cell centres with its CRS (rioxarray's
    ``spatial_ref``: ``ds.rio.crs``, ``ds.rio.transform()``, ``ds.class_id.rio.to_raster``).

    Raises:
        UrbanFusionError: the folder holds no published run.
    """
    if isinstance(result, RunResult):
        return _open_result(result.run_folder)
    return _open_result(Path(result))
