"""Progress counting: what a worker records reaches the driver's totals, once per run."""

from __future__ import annotations

from transforms.tagging import progress


def test_a_second_run_in_the_same_process_counts_from_zero():
    # Two local runs one after the other in one process (a notebook, the demo): the worker side of
    # each run records into this process's counters, the driver reads the run's own directory.
    with progress.ProgressMonitor(interval_s=3600) as first:
        progress.record(files_listed=3, units_planned=4)
        progress.record(units_done=4, audio_seconds=12.5)
        progress.flush()
        assert progress.read_totals(first.directory) == {
            "files_listed": 3, "units_planned": 4, "units_done": 4, "audio_seconds": 12.5}

    with progress.ProgressMonitor(interval_s=3600) as second:
        progress.record(files_listed=1, units_planned=1)
        progress.flush()
        totals = progress.read_totals(second.directory)
        assert totals == {"files_listed": 1, "units_planned": 1}
        assert progress.format_progress(totals, 10.0).startswith(
            "[tag_audio] 1 files listed, work units 0/1 done, 0.00 h audio")
