"""events: sound events from the frames of earlier tag_audio runs, without tagging again.

    python -m beam_jobs.events --frames OUT_DIR --output EVENTS_DIR [--thresholds FILE] \\
        [--classes NAME [NAME ...]] [--runs ID,ID] [--raven DIR] [--audacity DIR] [Beam options]
    python -m beam_jobs.events --events OUT_OR_EVENTS_DIR --raven DIR [--audacity DIR]

The first form reads the frames of OUT_DIR (every succeeded run of one model, or
--runs) and writes EVENTS_DIR/events/run=<id>/ with its run record (EVENTS_DIR
may be OUT_DIR itself).  The second exports the latest events found under a
directory (written by this job or by tag_audio --events) as Raven selection
tables and Audacity label files, one per recording.
"""

from __future__ import annotations

import argparse

from beam_jobs import cli
from beam_jobs.event_arguments import add_event_arguments, event_settings_from
from transforms.answers.event_options import EventOptionsError
from transforms.answers.event_run import events_over, run_events
from transforms.answers.exports import AUDACITY, RAVEN, export_events
from transforms.output.current import current_events
from transforms.output.frame_source import FramesNotUsableError, find_frames
from transforms.output.layout import EVENTS
from transforms.output.lease import OutputBusyError
from transforms.output.reader import ModelInfo, find_output, read_events

JOB = "events"


def add_options(parser: argparse.ArgumentParser) -> None:
    cli.add_frames_options(parser, runs="read")
    parser.add_argument("--output", default=None,
                        help="Where the events run is written (events/run=<id>/ and runs/<id>.json "
                             "below it).")
    parser.add_argument("--events", default=None,
                        help="Export only: a directory holding events (the latest events run is exported).")
    parser.add_argument("--raven", default=None, help="Write Raven selection tables into this directory.")
    parser.add_argument("--audacity", default=None, help="Write Audacity label files into this directory.")
    parser.add_argument("--run_id", default=None, help="Name of the events run (default: a new run id).")
    add_event_arguments(parser)
    parser.add_argument("--thresholds", dest="event_thresholds", help="Same as --event_thresholds.")
    parser.add_argument("--classes", dest="event_class", action="extend", nargs="+",
                        help="Classes to detect events of (same as repeating --event_class).")


def _export(directory: str, opts: argparse.Namespace, run_id: str | None = None) -> int:
    output = find_output(directory)
    if run_id is not None:
        run = output.run(run_id)
        found = (read_events(run), f"run {run.run_id}") if run.events else None
    else:
        found = current_events(output)
    if found is None:
        return cli.fail(JOB, f"no events under {directory}: run tag_audio --events or python -m "
                        "beam_jobs.events first")
    table, source = found
    rate = ModelInfo.from_schema(table.schema).sample_rate  # events carry the frames' metadata
    for fmt, target in ((RAVEN, opts.raven), (AUDACITY, opts.audacity)):
        if target:
            paths = export_events(table, target, [fmt], rate)
            print(f"{fmt}: {len(paths)} file(s) in {target} ({table.num_rows} events of {source})")
    return 0


@cli.job(JOB, add_options, beam=True)
def run(opts: argparse.Namespace, pipeline_args: list[str]) -> int:
    """Runs the job; returns the exit status (0 ok, 2 usage or input error)."""
    if opts.events:
        if not (opts.raven or opts.audacity):
            raise cli.UsageError("--events DIR exports events: give --raven DIR and/or --audacity DIR")
        try:
            return _export(opts.events, opts)
        except FileNotFoundError as e:
            return cli.fail(JOB, str(e))
    cli.require(opts, frames="OUT_DIR", output="EVENTS_DIR", or_else="--events DIR to export")
    try:
        settings = event_settings_from(opts)
        frames = events_over(find_frames(opts.frames, cli.comma_separated(opts.runs)),
                             settings, "--classes")
    except (EventOptionsError, FramesNotUsableError) as e:
        return cli.fail(JOB, str(e))
    try:
        final = run_events(frames, opts.output, cli.pipeline_options(pipeline_args), opts.run_id)
    except OutputBusyError as e:
        return cli.fail(JOB, str(e), status=3)
    counts = final.counts or {}
    print(f"events run {final.run_id}: {counts.get('events', 0)} events in "
          f"{counts.get('recordings_with_events', 0)} recordings, {len(frames.context.classes)} classes, "
          f"{final.wall_s:.1f} s")
    print(f"  events     {final.layout.table_dir(EVENTS)}/")
    print(f"  record     {final.layout.record_path()}")
    if opts.raven or opts.audacity:
        return _export(opts.output, opts, final.run_id)
    return 0


main = cli.main_for(run, __name__)
