"""The dask scheduler a run uses, from the ``dask`` section of the config."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import dask

from urbanfusion.pipeline.config import DaskConfig
from urbanfusion.pipeline.errors import ConfigError


@contextlib.contextmanager
def dask_scheduler(cfg: DaskConfig) -> Iterator[str]:
    """Make ``cfg``'s scheduler the default for the block; yields a description of it.

    Raises:
        ConfigError: a ``tcp://`` scheduler cannot be reached.
    """
    if cfg.scheduler in ("threads", "synchronous"):
        with dask.config.set(scheduler=cfg.scheduler, num_workers=cfg.workers):
            yield cfg.scheduler
        return
    from distributed import Client, LocalCluster

    if cfg.scheduler == "local-cluster":
        with (
            LocalCluster(
                n_workers=cfg.workers, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield f"local-cluster ({len(client.scheduler_info()['workers'])} workers)"
        return
    try:
        client = Client(cfg.scheduler, timeout="10s")
    except OSError as err:
        raise ConfigError(
            f"dask.scheduler: cannot reach {cfg.scheduler} ({err}); start the scheduler or "
            "use scheduler: threads"
        ) from None
    with client:
        yield cfg.scheduler


def model_threads(cfg: DaskConfig) -> int:
    """Onnxruntime threads per session, so that the tasks running the model use the cores once.

    Every worker thread runs its own blocks through the model: with as many workers as cores,
    each session gets one thread (more would make two sessions fight for each core: 1,500
    cells/s instead of 2,400 on 2 cores). The synchronous scheduler runs one block at a time, so
    its session takes every core. Cluster workers run one thread each (``local-cluster``) or an
    unknown number (``tcp://``): one.
    """
    cores = os.cpu_count() or 1
    if cfg.scheduler == "synchronous":
        return cores
    if cfg.scheduler == "threads":
        return max(1, cores // (cfg.workers or cores))
    return 1
