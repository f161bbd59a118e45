"""Command-line options of tag_audio that change how the job is sized."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_jobs.tag_audio import sdk_processes_per_machine


@pytest.mark.parametrize("runner", ["DataflowRunner", "dataflow", "Dataflow", "dataflowrunner", "DATAFLOW"])
def test_every_spelling_of_the_dataflow_runner_sizes_decoders_per_machine(runner):
    # 0: one SDK process per core, so each one starts a single decoder (not one per core each).
    assert sdk_processes_per_machine(PipelineOptions(["--runner", runner])) == 0
    single = PipelineOptions(["--runner", runner, "--experiments", "no_use_multiple_sdk_containers"])
    assert sdk_processes_per_machine(single) == 1


def test_local_runners_share_the_machine_by_their_worker_count():
    assert sdk_processes_per_machine(PipelineOptions(["--runner", "FnApiRunner"])) == 1
    multi = PipelineOptions(["--direct_running_mode", "multi_processing", "--direct_num_workers", "3"])
    assert sdk_processes_per_machine(multi) == 3
