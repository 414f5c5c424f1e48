"""The dask scheduler a run uses, from the ``dask`` section of the config."""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import dask

from urbanfusion.pipeline.config import DaskConfig
from urbanfusion.pipeline.errors import ClusterError, ConfigError

if TYPE_CHECKING:
    from distributed import Client

# Raised in the run's thread by the watchdog: the handler of this signal raises ClusterError.
_WATCHDOG_SIGNAL = signal.SIGUSR1


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
                n_workers=cfg.workers,
                threads_per_worker=1,
                dashboard_address=None,
                # dask pauses, then restarts, a worker past it: the memory partitions fit in
                memory_limit=f"{cfg.worker_memory_gb}GiB" if cfg.worker_memory_gb else "auto",
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
        try:
            client.wait_for_workers(1, timeout=cfg.worker_timeout_s)
        except TimeoutError:
            raise ClusterError(_no_worker(cfg, "joined")) from None
        with _watchdog(client, cfg):
            yield cfg.scheduler


def _no_worker(cfg: DaskConfig, what: str) -> str:
    return (
        f"dask.scheduler {cfg.scheduler}: no worker {what} within {cfg.worker_timeout_s:g} s; "
        f"start workers (`dask worker {cfg.scheduler}`), use scheduler: threads, or raise "
        "dask.worker_timeout_s"
    )


@contextlib.contextmanager
def _watchdog(client: Client, cfg: DaskConfig) -> Iterator[None]:
    """End the block with :class:`ClusterError` when the cluster has had no worker too long.

    Dask waits for ever for a worker to run the tasks of a cluster whose workers all died; a
    nightly run would hold its output's lock all night. A thread asks the scheduler every
    second and, after ``worker_timeout_s`` without a worker, interrupts the run's thread (the
    main thread: only it can take a signal; elsewhere there is no watchdog).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stop = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        raise ClusterError(_no_worker(cfg, "was left alive"))

    def watch() -> None:
        alone_since: float | None = None
        while not stop.wait(1.0):
            try:
                alive = bool(client.nthreads())
            except Exception:  # the scheduler itself is gone: as good as no worker
                alive = False
            if alive:
                alone_since = None
            elif alone_since is None:
                alone_since = time.monotonic()
            elif time.monotonic() - alone_since > cfg.worker_timeout_s:
                _thread.interrupt_main(_WATCHDOG_SIGNAL)
                return

    previous = signal.signal(_WATCHDOG_SIGNAL, interrupted)
    thread = threading.Thread(target=watch, name="urbanfusion-cluster-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        signal.signal(_WATCHDOG_SIGNAL, previous)


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
