"""The events options, shared by ``tag_audio --events`` and ``beam_jobs.events``."""

from __future__ import annotations

import argparse

from schemas.answers import TIME_SOURCES
from transforms.answers.event_options import event_settings
from transforms.answers.event_pipeline import EventSettings


def add_event_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--event_thresholds", default=None,
        help="CSV or JSON (local or gs://) of per-class thresholds: class,on,off,min_duration_s,merge_gap_s,"
             "smooth_s ('*' sets the defaults). Default: on 0.5, off 0.3, no minimum duration, no merging, "
             "no smoothing.")
    parser.add_argument(
        "--event_class", action="append", default=[],
        help="A class to detect events of (repeatable; names may contain commas). Default: the classes "
             "the thresholds file lists, else every class except background ones such as _silence_.")
    parser.add_argument(
        "--start_times", default=None,
        help="CSV (local or gs://) with a uri column and a start_utc column (ISO 8601): when each "
             "recording started, for the events' UTC times.")
    parser.add_argument(
        "--time_sources", default=",".join(TIME_SOURCES),
        help="Where a recording's start time is looked for, in order: manifest (--start_times), bext "
             "(Broadcast WAV origination date/time), creation_time (the container's), file_name.")
    parser.add_argument(
        "--file_time_pattern", default=None,
        help="strftime pattern of the time in file names, e.g. REC_%%Y-%%m-%%d_%%H.%%M.%%S. "
             "Default: YYYYMMDD_HHMMSS anywhere in the name (AudioMoth, Song Meter).")
    parser.add_argument(
        "--time_zone", default="UTC",
        help="Zone of times that carry none (bext, file names): UTC, an offset such as +02:00, or a "
             "name such as Europe/Paris.")


def event_settings_from(opts: argparse.Namespace) -> EventSettings:
    """The settings the options ask for, read and checked; raises EventOptionsError."""
    return event_settings(
        opts.event_thresholds, opts.event_class, start_times=opts.start_times,
        time_sources=[s.strip() for s in opts.time_sources.split(",") if s.strip()],
        file_time_pattern=opts.file_time_pattern, time_zone=opts.time_zone)
