"""--runner dask as a short name, and what the driver learns from the scheduler before any work."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.runners import DASK_RUNNER, dask_threads_per_host, expand_runner_alias, is_dask


def test_short_names_expand_and_others_stay():
    assert expand_runner_alias(["--runner", "dask", "--x"]) == ["--runner", DASK_RUNNER, "--x"]
    assert expand_runner_alias(["--runner=Dask"]) == [f"--runner={DASK_RUNNER}"]
    assert expand_runner_alias(["--runner", "DaskRunner"]) == ["--runner", DASK_RUNNER]
    for args in (["--runner", "DataflowRunner"], ["--input", "dask"], ["--runner"], []):
        assert expand_runner_alias(args) == args
    assert is_dask(PipelineOptions(expand_runner_alias(["--runner", "dask"])))
    assert not is_dask(PipelineOptions(["--runner", "FnApiRunner"]))


def test_decoder_pools_are_sized_by_the_worker_threads_on_a_host(dask_cluster):
    # Two single-thread worker processes on 127.0.0.1: each process's decoder pool gets half the cores.
    options = PipelineOptions(expand_runner_alias(dask_cluster.runner_args()))
    assert dask_threads_per_host(options) == 2
