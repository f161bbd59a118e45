"""A dask.distributed cluster as dask-jobqueue starts one: a scheduler process and worker processes
started apart, on 127.0.0.1, running this checkout's code (PYTHONPATH) the way an installed package would."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.processes import free_port, start, stop, wait_for_port

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class DaskCluster:
    address: str
    scheduler: subprocess.Popen
    workers: subprocess.Popen  # `dask worker --nworkers N`: one nanny per worker, each restarts its worker
    logs: Path

    def runner_args(self) -> list[str]:
        return ["--runner", "dask", "--dask_client_address", self.address]

    def client(self):
        from distributed import Client

        return Client(self.address, timeout=30)


def cluster_env() -> dict:
    # The scheduler unpickles the task graph, so it needs the code too; workers need it to run tasks.
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}


def start_dask_cluster(directory: Path, workers: int = 2) -> DaskCluster:
    pytest.importorskip("distributed", reason="needs the dask extra: pip install '.[dask]'")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = cluster_env()
    scheduler = start([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                       "--port", str(port), "--dashboard-address", ":0"],
                      directory / "scheduler.log", env, directory)
    address = f"tcp://127.0.0.1:{port}"
    try:
        wait_for_port(port, scheduler, directory / "scheduler.log")
        worker_group = start([sys.executable, "-m", "distributed.cli.dask_worker", address,
                              "--nworkers", str(workers), "--nthreads", "1", "--dashboard-address", ":0",
                              "--local-directory", str(directory / "workers")],
                             directory / "workers.log", env, directory)
    except Exception:
        stop(scheduler)
        raise
    cluster = DaskCluster(address, scheduler, worker_group, directory)
    try:
        with cluster.client() as client:
            client.wait_for_workers(workers, timeout=120)
    except Exception:
        stop_dask_cluster(cluster)
        raise
    return cluster


def stop_dask_cluster(cluster: DaskCluster) -> None:
    stop(cluster.workers)
    stop(cluster.scheduler)
