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
import json
import sys

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_jobs import command, parse_job_args
from beam_jobs.runners import expand_runner_alias
from schemas.tables import METADATA_PREFIX
from transforms.answers.event_options import (
    EventOptionsError,
    add_event_arguments,
    check_for_model,
    event_settings_from,
)
from transforms.answers.event_pipeline import EventContext
from transforms.answers.event_run import new_record, run_events
from transforms.answers.exports import AUDACITY, RAVEN, export_events
from transforms.output.layout import EVENTS
from transforms.output.reader import ModelInfo, find_output, read_events, read_schema
from transforms.training.frame_source import FramesNotUsableError, find_frames


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.events", description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Apache Beam pipeline option is accepted as well. Default runner: FnApiRunner (local).")
    parser.add_argument("--frames", default=None, help="A tag_audio output directory (local or gs://).")
    parser.add_argument("--output", default=None,
                        help="Where the events run is written (events/run=<id>/ and runs/<id>.json "
                             "below it).")
    parser.add_argument("--runs", default="", help="Comma-separated run ids of --frames to read "
                        "(default: every succeeded run; they must share one model and framing).")
    parser.add_argument("--events", default=None,
                        help="Export only: a directory holding events (the latest events run is exported).")
    parser.add_argument("--raven", default=None, help="Write Raven selection tables into this directory.")
    parser.add_argument("--audacity", default=None, help="Write Audacity label files into this directory.")
    parser.add_argument("--run_id", default=None, help="Name of the events run (default: a new run id).")
    add_event_arguments(parser)
    parser.add_argument("--thresholds", dest="event_thresholds", help="Same as --event_thresholds.")
    parser.add_argument("--classes", dest="event_class", action="extend", nargs="+",
                        help="Classes to detect events of (same as repeating --event_class).")
    return parser


def _fail(message: str) -> int:
    print(f"events: {message}", file=sys.stderr)
    return 2


def _export(directory: str, opts: argparse.Namespace, run_id: str | None = None) -> int:
    output = find_output(directory)
    runs = [run for run in output.published if run.events and (run_id is None or run.run_id == run_id)]
    if not runs:
        return _fail(f"no events under {directory}: run tag_audio --events or python -m beam_jobs.events "
                     "first")
    run = runs[-1]
    table = read_events(run)
    rate = ModelInfo.from_schema(read_schema(run.events)).sample_rate  # events carry the frames' metadata
    for fmt, target in ((RAVEN, opts.raven), (AUDACITY, opts.audacity)):
        if target:
            paths = export_events(table, target, [fmt], rate)
            print(f"{fmt}: {len(paths)} file(s) in {target} ({table.num_rows} events of run {run.run_id})")
    return 0


def run(argv: list[str] | None = None) -> int:
    """Runs the job; returns the exit status (0 ok, 2 usage or input error)."""
    parsed = parse_job_args(_parser(), argv)
    if parsed is None:
        return 0
    opts, pipeline_args = parsed
    if opts.events:
        if not (opts.raven or opts.audacity):
            return _fail("--events DIR exports events: give --raven DIR and/or --audacity DIR")
        try:
            return _export(opts.events, opts)
        except FileNotFoundError as e:
            return _fail(str(e))
    if not (opts.frames and opts.output):
        return _fail("--frames OUT_DIR and --output EVENTS_DIR are required (or --events DIR to export)")
    try:
        settings = event_settings_from(opts)
        source = find_frames(opts.frames, tuple(r.strip() for r in opts.runs.split(",") if r.strip()))
        columns = {c for run in source.runs for c in run.columns}
        score_column = "scores" if all("scores" in run.columns for run in source.runs) else "top_classes"
        if not all(score_column in run.columns for run in source.runs):
            raise FramesNotUsableError(f"the runs have no scores column to find events in (columns: "
                                       f"{', '.join(sorted(columns))})")
        meta = source.metadata
        class_names = json.loads(meta.get("class_names", "[]"))
        check_for_model(settings, class_names, "--classes")
        context = EventContext.for_model(
            settings, class_names, float(meta["hop_s"]), meta["model_identity"], meta["config_id"],
            {(METADATA_PREFIX + k).encode(): v.encode() for k, v in meta.items()})
    except (EventOptionsError, FramesNotUsableError) as e:
        return _fail(str(e))
    options = PipelineOptions(expand_runner_alias(pipeline_args))
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        standard.runner = "FnApiRunner"  # DirectRunner first tries Prism, which downloads a binary
    parameters = {"frames": source.out_dir, "runs": list(source.run_ids), **settings.to_document()}
    record = new_record(opts.output, parameters, source.base_model(), opts.run_id)
    final = run_events(source.frame_files, score_column, context, record, options)
    counts = final.counts or {}
    print(f"events run {final.run_id}: {counts.get('events', 0)} events in "
          f"{counts.get('recordings_with_events', 0)} recordings, {len(context.classes)} classes, "
          f"{final.wall_s:.1f} s")
    print(f"  events     {final.layout.table_dir(EVENTS)}/")
    print(f"  record     {final.layout.record_path()}")
    if opts.raven or opts.audacity:
        return _export(opts.output, opts, final.run_id)
    return 0


if __name__ == "__main__":
    command(run)
