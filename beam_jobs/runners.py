"""Runner short names and what a job needs to know about the runner it was given.

``--runner dask`` names Beam's Dask runner with the fixes in
``beam_jobs.dask_runner`` (docs/cluster.md says why they are needed); the
cluster is ``--dask_client_address tcp://HOST:8786`` as Beam's runner takes it.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

DASK_RUNNER = "beam_jobs.dask_runner.DaskRunner"
# Beam's own short name is taken too: its translation mixes tagged outputs and drops finish_bundle output.
RUNNER_ALIASES = {"dask": DASK_RUNNER, "daskrunner": DASK_RUNNER}
CONNECT_TIMEOUT_S = 5.0


def expand_runner_alias(args: list[str]) -> list[str]:
    """``args`` with a short runner name (``--runner dask`` or ``--runner=dask``) replaced by its class."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--runner" and i + 1 < len(out):
            out[i + 1] = RUNNER_ALIASES.get(out[i + 1].lower(), out[i + 1])
        elif arg.startswith("--runner="):
            name = arg.split("=", 1)[1]
            out[i] = f"--runner={RUNNER_ALIASES.get(name.lower(), name)}"
    return out


def is_dask(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or ""
    return runner == DASK_RUNNER or runner.rsplit(".", 1)[-1] == "DaskRunner"


class ClusterUnreachableError(Exception):
    """The Dask scheduler named by --dask_client_address did not answer."""


def dask_threads_per_host(options: PipelineOptions) -> int:
    """The most Dask worker threads on one host: each runs bundles, so each gets a share of the cores for
    its decoder pool (``processes_per_machine``). Asks the scheduler once, before any work; workers that
    join later get the same share. Raises ClusterUnreachableError in seconds when nobody answers."""
    from apache_beam.runners.dask.dask_runner import DaskOptions
    from distributed import Client

    address = options.view_as(DaskOptions).address
    if not address:
        return 0  # Beam starts a LocalCluster in the driver: a worker per core, so one decoder each
    try:
        with Client(address, timeout=CONNECT_TIMEOUT_S) as client:
            workers = client.scheduler_info().get("workers", {}).values()
    except (OSError, TimeoutError) as e:
        raise ClusterUnreachableError(
            f"no Dask scheduler answered at --dask_client_address {address} ({e}); start one with "
            "`python -m distributed.cli.dask_scheduler` and its workers (docs/cluster.md)") from None
    per_host: dict[str, int] = {}
    for worker in workers:
        host = worker.get("host", "")
        per_host[host] = per_host.get(host, 0) + int(worker.get("nthreads", 1))
    return max(per_host.values(), default=1)


def progress_unobservable_line(options: PipelineOptions) -> str | None:
    """What to print instead of progress lines when the driver cannot see the workers' counters."""
    if not is_dask(options):
        return None
    return ("progress: Dask workers are separate processes the driver does not hear from; follow the run "
            "on the Dask dashboard (the scheduler's :8787/status) and the summary at the end")
