"""The tag_audio pipeline as one composite: list -> plan -> decode -> batched model -> Parquet.

``TagAudio`` takes a ``TagAudioConfig`` that is fully resolved before the
graph is built (``transforms.tagging.run.prepare``): inputs classified, the
model's spec read, earlier runs listed.  Building the graph reads nothing.
"""

from __future__ import annotations

import dataclasses

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.parquetio import WriteToParquetBatched

from audio_models.loading import ModelSource
from audio_models.spec import ModelSpec
from schemas.tables import FrameColumns, config_id, files_schema
from storage import RetryPolicy
from transforms.answers.event_pipeline import EventContext, EventSettings, FramesToEvents
from transforms.decoding.pool import DEFAULT_TIMEOUT_S
from transforms.output.layout import EVENTS, FILES, FRAMES, RunRecord
from transforms.output.lease import Lease
from transforms.output.publish import PublishRun
from transforms.output.summary import SummarizeFiles
from transforms.output.table_coder import ARROW_TABLE
from transforms.tagging.done_set import NEW, CountPlan, PriorResults, SkipDone
from transforms.tagging.file_report import CombineFileReports, MakeFileRows
from transforms.tagging.frame_table import CoalesceTables, FrameTableBuilder
from transforms.tagging.inference import SCORE_STATS, RunModelBatched
from transforms.tagging.listing import FileEntry, InputSpec, ListInputFiles
from transforms.tagging.units import REPORTS, DecodeUnits, Framing, PlanUnits


@dataclasses.dataclass(frozen=True)
class TagAudioConfig:
    """Everything a tag_audio pipeline needs, resolved: no field is read from storage later."""

    inputs: tuple[InputSpec, ...]
    output: str
    source: ModelSource
    spec: ModelSpec
    manifest: str | None = None
    columns: FrameColumns = FrameColumns()
    unit_s: float = 600.0  # files longer than this are cut into units of about this length; 0 = never
    batch_size: int = 0  # 0: the device's default, decided on the worker
    device: str = "auto"
    decode_processes: int = -1  # -1: the cores left to each SDK process; 0: on the bundle's thread
    processes_per_machine: int = 1  # SDK processes sharing a worker machine (0: one per core)
    decode_timeout_s: float = DEFAULT_TIMEOUT_S
    prior_runs: tuple[tuple[str, int], ...] = ()  # (run id, commit) of committed runs: their done files
    force: bool = False  # ignore earlier runs (prior_runs stays empty)
    retry_failed: bool = False
    max_failed_fraction: float = 1.0
    lease: Lease | None = None  # held by the run; workers renew it, the publish step checks it
    io_retry: RetryPolicy = RetryPolicy()  # reads through transient storage errors, then 'transient'
    events: EventSettings | None = None  # also write the events table (tag_audio --events)
    # Set for one wave of a run done in waves (transforms.tagging.waves): the entries this run tags,
    # listed by the wave plan; they still go through the done-set join, under this run's lease.
    entries: tuple[FileEntry, ...] | None = None

    @property
    def framing(self) -> Framing:
        spec = self.spec
        unit_frames = int(round(self.unit_s / spec.hop_s)) if self.unit_s > 0 else 0
        return Framing(spec.sample_rate, spec.window_samples, spec.hop_samples, unit_frames)

    @property
    def config_id(self) -> str:
        return config_id(self.spec)


class PlanWork(beam.PTransform):
    """Lists the inputs and drops those earlier runs already did; returns (entries, plan counts)."""

    def __init__(self, config: TagAudioConfig):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        c = self._config
        if c.entries is not None:
            entries = pbegin | "PlannedEntries" >> beam.Create(list(c.entries))
        else:
            entries = pbegin | "ListInputs" >> ListInputFiles(list(c.inputs), c.manifest)
        if c.prior_runs:
            only = frozenset(e.uri for e in c.entries) if c.entries is not None else None
            prior = pbegin | "PriorResults" >> PriorResults(c.output, dict(c.prior_runs), c.config_id, only)
            entries, categories = entries | "SkipDone" >> SkipDone(prior, c.retry_failed)
        else:
            categories = entries | "AllNew" >> beam.Map(lambda _: NEW)
        return entries, categories | "CountPlan" >> CountPlan()


class TagAudio(beam.PTransform):
    """The whole job; its output is the final run record (a dict), once both tables are published."""

    def __init__(self, config: TagAudioConfig, record: RunRecord):
        super().__init__()
        self._config = config
        self._record = record

    def expand(self, pbegin):
        c, layout = self._config, self._record.layout
        entries, plan = pbegin | "Plan" >> PlanWork(c)
        planned = entries | "PlanUnits" >> beam.ParDo(PlanUnits(c.framing)).with_outputs(
            REPORTS, main="units")
        decoded = (planned.units
                   | "SpreadUnits" >> beam.Reshuffle()
                   | "Decode" >> beam.ParDo(DecodeUnits(
                       c.framing, decode_processes=c.decode_processes,
                       processes_per_machine=c.processes_per_machine,
                       decode_timeout_s=c.decode_timeout_s, io_retry=c.io_retry)).with_outputs(
                       REPORTS, main="chunks"))
        builder = FrameTableBuilder(c.spec, c.columns)
        run_model = RunModelBatched(c.source, builder, c.batch_size, c.device, lease=c.lease)
        inferred = decoded.chunks | "RunModel" >> beam.ParDo(run_model).with_outputs(
            SCORE_STATS, main="frames")

        frames_written = (inferred.frames
                          | "CoalesceFrames" >> beam.ParDo(CoalesceTables(sort_by=("uri", "frame_index")))
                          .with_output_types(ARROW_TABLE)
                          | "WriteFrames" >> WriteToParquetBatched(
                              layout.staging_prefix(FRAMES), builder.schema, codec="zstd",
                              file_name_suffix=".parquet"))

        file_rows = ((planned[REPORTS], decoded[REPORTS], inferred[SCORE_STATS])
                     | "AllFileReports" >> beam.Flatten()
                     | "CombinePerFile" >> beam.CombinePerKey(CombineFileReports())
                     | "FileRows" >> beam.ParDo(MakeFileRows(c.spec.sample_rate, c.spec.class_names,
                                                             c.spec.identity, c.config_id)))
        schema = files_schema(c.spec)
        files_written = (file_rows
                         | "BatchFileRows" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
                         | "FileTables" >> beam.Map(lambda rows: pa.Table.from_pylist(rows, schema=schema))
                         .with_output_types(ARROW_TABLE)
                         | "CoalesceFiles" >> beam.ParDo(CoalesceTables()).with_output_types(ARROW_TABLE)
                         | "WriteFiles" >> WriteToParquetBatched(
                             layout.staging_prefix(FILES), schema, codec="zstd", file_name_suffix=".parquet"))

        written = [frames_written, files_written]
        if c.events is not None:  # a recording's events need all its frames: grouped by URI inside
            events = EventContext.for_spec(c.events, c.spec)
            written.append(inferred.frames
                           | "Events" >> FramesToEvents(events)
                           | "WriteEvents" >> WriteToParquetBatched(
                               layout.staging_prefix(EVENTS), events.schema, codec="zstd",
                               file_name_suffix=".parquet"))
        staged = (written
                  | "AllWritten" >> beam.Flatten()
                  | "ListWritten" >> beam.combiners.ToList())
        return (file_rows
                | "Summarize" >> beam.CombineGlobally(SummarizeFiles())
                | "Publish" >> beam.ParDo(PublishRun(self._record, c.max_failed_fraction, c.lease),
                                          staged=beam.pvalue.AsSingleton(staged),
                                          plan=beam.pvalue.AsSingleton(plan)))
