"""A Dask client: a local cluster of worker processes by default, or an existing scheduler's address."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from scheduler.errors import ClusterUnreachableError


@contextmanager
def dask_client(
    scheduler: str | None = None, workers: int = 2, *, keep_objects: bool = False
) -> Iterator[Any]:
    """Yield a ``dask.distributed.Client``; a local cluster it started is closed (workers and all) on exit.

    ``keep_objects``: the tasks leave objects on the workers that cannot be pickled (a solver's model
    kept warm between iterations), so the local cluster gets no memory limit (Dask would spill them to
    disk) and no work stealing (it would move them)."""
    import dask
    from dask.distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, ValueError, TypeError) as exc:  # unreachable, or not an address at all
            raise ClusterUnreachableError(f"Dask scheduler {scheduler!r}: {exc}") from exc
        try:
            yield client
        finally:
            client.close()
        return
    settings: dict[str, Any] = {
        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which hands freed memory back to
        # the OS so eagerly that many small numpy arrays cost a third more time; keep glibc's default.
        "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    }
    if keep_objects:
        settings["distributed.scheduler.work-stealing"] = False
    with dask.config.set(settings):
        # A task's own failure reaches the caller through its future; the workers' log would only add
        # the heartbeat noise of the cluster shutting down.
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=workers > 1,
            dashboard_address=None,
            # the scheduler serves health routes over HTTP even without a dashboard: on a free port
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.CRITICAL,
            memory_limit=0 if keep_objects else "auto",
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
