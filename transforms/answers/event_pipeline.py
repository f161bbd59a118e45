"""The Beam shells around ``events``: frames tables in, events rows out.

A recording's events need all its frames in order, and its frames arrive in
pieces (work units, batches, Parquet parts, runs), so each piece is reduced
to the frames events can use (``events.keep_rows``), keyed by URI, grouped,
put in order and only then scanned.  The recording's start time is looked up
after the grouping, once per recording that has events.

Used by ``tag_audio --events`` (on the frames as the model makes them) and by
``beam_jobs.events`` (on the Parquet of earlier runs).
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import numpy as np
import pyarrow as pa

from schemas.answers import events_schema
from schemas.model_spec import ModelSpec
from schemas.tables import config_id, model_metadata
from transforms.answers import recording_time as rt
from transforms.answers.events import Event, FrameTrack, detect_events, keep_floor, table_tracks
from transforms.answers.thresholds import ClassThresholds, EventRules
from transforms.output.layout import run_of_path
from transforms.output.table_coder import ARROW_TABLE

TRACKS, STARTS = "tracks", "starts"


@dataclasses.dataclass(frozen=True)
class EventSettings:
    """What the user asked for: thresholds and classes, and where start times come from."""

    rules: EventRules = EventRules()
    time: rt.TimeSettings = rt.TimeSettings()

    def to_document(self) -> dict:
        return {**self.rules.to_document(), "time": dataclasses.asdict(self.time)}


@dataclasses.dataclass(frozen=True)
class EventContext:
    """Settings resolved against one model: the classes with their thresholds, framing and identity."""

    settings: EventSettings
    classes: tuple[tuple[int, str, ClassThresholds], ...]
    hop_s: float
    model: str  # identity, as frames rows carry it
    config_id: str
    schema: pa.Schema
    run_order: tuple[str, ...] = ()  # the runs read, in commit order: the last is the latest

    @classmethod
    def for_model(cls, settings: EventSettings, class_names, hop_s: float, model: str, config_id: str,
                  metadata: dict[bytes, bytes] | None) -> EventContext:
        classes = tuple(settings.rules.for_classes(class_names))
        schema = events_schema(metadata, settings.to_document())
        return cls(settings, classes, hop_s, model, config_id, schema)

    @classmethod
    def for_spec(cls, settings: EventSettings, spec: ModelSpec) -> EventContext:
        return cls.for_model(settings, spec.class_names, spec.hop_s, spec.identity, config_id(spec),
                             model_metadata(spec))

    @property
    def class_indices(self) -> list[int]:
        return [index for index, _, _ in self.classes]

    @property
    def keep_floor(self) -> np.ndarray:
        return keep_floor([t for _, _, t in self.classes])


def event_rows(uri: str, events: list[Event], start: rt.RecordingStart | None,
               context: EventContext, channel: int | None = None) -> list[dict]:
    starts = rt.utc_millis(start, [e.start_s for e in events])
    ends = rt.utc_millis(start, [e.end_s for e in events])
    return [{"uri": uri, "channel": channel, "label": e.label, "class_index": e.class_index,
             "start_s": e.start_s, "end_s": e.end_s, "peak_s": e.peak_s, "peak_score": e.peak_score,
             "mean_score": e.mean_score,
             "num_frames": e.num_frames, "start_utc": s, "end_utc": t,
             "time_source": start.source if start else None, "model": context.model,
             "config_id": context.config_id}
            for e, s, t in zip(events, starts, ends)]


class FrameTracks(beam.DoFn):
    """A frames table, or (Parquet file name, table) -> (uri, (run id, FrameTrack)) per URI with usable
    frames."""

    def __init__(self, context: EventContext):
        self._indices = context.class_indices
        self._floor = context.keep_floor

    def process(self, element):
        run = ""
        if isinstance(element, tuple):
            filename, element = element
            run = run_of_path(filename) or ""
        for uri, track in table_tracks(element, self._indices, self._floor):
            yield uri, (run, track)


class DetectEvents(beam.DoFn):
    """(uri, {tracks: [(run, FrameTrack)], starts: [start text]}) -> events rows of that uri.

    Pieces of several runs (the same recording tagged twice with one model):
    the latest run's only, in commit order (``EventContext.run_order``).  Each channel
    of a recording tagged per channel has its own events.
    """

    def __init__(self, context: EventContext):
        self._context = context
        self._events = beam.metrics.Metrics.counter("events", "events")

    def process(self, element):
        uri, grouped = element
        by_channel: dict[int | None, list] = {}
        for run, track in grouped[TRACKS]:
            by_channel.setdefault(track.channel, []).append((run, track))
        c = self._context
        order = {run: i for i, run in enumerate(c.run_order)}
        start = None
        for channel in sorted(by_channel, key=lambda channel: -1 if channel is None else channel):
            pieces = by_channel[channel]
            latest = max((run for run, _ in pieces), key=lambda run: (order.get(run, -1), run))
            track = FrameTrack.merge(t for run, t in pieces if run == latest)
            events = detect_events(track, c.classes, c.hop_s)
            if not events:
                continue
            if start is None:
                starts = list(grouped.get(STARTS, ()))
                start = rt.recording_start(uri, c.settings.time, starts[0] if starts else None)
            self._events.inc(len(events))
            yield from event_rows(uri, events, start, c, channel)


@beam.ptransform_fn
def FramesToEvents(frames, context: EventContext):  # noqa: N802
    """Frames tables (or (file name, table) pairs) -> events Arrow tables, in batches of rows."""
    pipeline = frames.pipeline
    keyed = {TRACKS: frames | "UsableFrames" >> beam.ParDo(FrameTracks(context))}
    manifest = context.settings.time.manifest
    if manifest and "manifest" in context.settings.time.sources:
        columns = rt.read_manifest_header(manifest)
        keyed[STARTS] = (pipeline
                         | "ReadStarts" >> beam.io.ReadFromText(manifest, skip_header_lines=1)
                         | "ParseStarts" >> beam.FlatMap(rt.manifest_entry, columns))
    else:
        keyed[STARTS] = pipeline | "NoStarts" >> beam.Create([])
    schema = context.schema
    return (keyed
            | "GroupByRecording" >> beam.CoGroupByKey()
            | "DetectEvents" >> beam.ParDo(DetectEvents(context))
            | "BatchEventRows" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
            | "EventTables" >> beam.Map(lambda rows: pa.Table.from_pylist(rows, schema=schema))
            .with_output_types(ARROW_TABLE))
