"""The tag_audio pipeline as one composite: list -> plan -> decode -> batched model -> Parquet.

``TagAudio`` takes a ``TagAudioConfig`` that is fully resolved before the
graph is built (``transforms.tagging.run.prepare``): inputs classified, the
model's spec read, earlier runs listed.  Building the graph reads nothing.

With heads (``tag_audio --head``) the model's outputs also go through each
head in the same batch, and each head's tables are written and published by
the same steps as the base run's (``WriteTables``) under ``OUT/heads/<name>``
(``transforms.tagging.heads``); the base run publishes last.
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
from transforms.decoding.stream import MIX
from transforms.output.layout import EVENTS, FILES, FRAMES, RunLayout, RunRecord
from transforms.output.lease import Lease
from transforms.output.publish import PublishRun
from transforms.output.summary import SummarizeFiles
from transforms.output.table_coder import ARROW_TABLE
from transforms.tagging.done_set import NEW, CountPlan, PriorResults, SkipDone
from transforms.tagging.file_report import CombineFileReports, MakeFileRows
from transforms.tagging.frame_table import CoalesceTables, FrameTableBuilder
from transforms.tagging.heads import HeadOutput, PublishHeadRun
from transforms.tagging.inference import SCORE_STATS, RunModelBatched, head_frames_tag, head_stats_tag
from transforms.tagging.listing import SKIPPED_LINKS, FileEntry, InputSpec, ListInputs, TableColumns
from transforms.tagging.units import REPORTS, DecodeUnits, Framing, PlanUnits, SpreadUnits


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
    archive_sidecar: str | None = None  # 'json': an archive member's key.json goes to files.sidecar
    table: TableColumns = TableColumns()  # tables as inputs: their audio column, what names their rows
    retry_failed: bool = False
    max_failed_fraction: float = 1.0
    lease: Lease | None = None  # held by the run; workers renew it, the publish step checks it
    io_retry: RetryPolicy = RetryPolicy()  # reads through transient storage errors, then 'transient'
    events: EventSettings | None = None  # also write the events table (tag_audio --events)
    channels: str | tuple[int, ...] = MIX  # 'mix', 'each' or channel indices (tag_audio --channels)
    heads: tuple[HeadOutput, ...] = ()  # classifier heads scoring this pass's embeddings (tag_audio --head)
    head_prior_runs: tuple[tuple[tuple[str, int], ...], ...] = ()  # per head, (run id, commit) of its
    # committed runs (OUT/heads/NAME)
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


class WriteTables(beam.PTransform):
    """(reports, frames tables, score stats) -> (files rows, staged Parquet paths) of one run's tables.

    ``reports``: the listing's and the decoder's reports (shared by the base run and its heads);
    frames are sorted by ``sort_by`` within each written table.
    """

    def __init__(self, layout: RunLayout, frames_schema: pa.Schema, files_schema: pa.Schema,
                 make_rows: MakeFileRows, sort_by: tuple[str, ...]):
        super().__init__()
        self._layout, self._frames_schema, self._files_schema = layout, frames_schema, files_schema
        self._make_rows, self._sort_by = make_rows, sort_by

    def expand(self, inputs):
        reports, frames, stats = inputs
        layout, schema = self._layout, self._files_schema
        frames_written = (frames
                          | "CoalesceFrames" >> beam.ParDo(CoalesceTables(sort_by=self._sort_by))
                          .with_output_types(ARROW_TABLE)
                          | "WriteFrames" >> WriteToParquetBatched(
                              layout.staging_prefix(FRAMES), self._frames_schema, codec="zstd",
                              file_name_suffix=".parquet"))
        file_rows = ((reports, stats)
                     | "AllFileReports" >> beam.Flatten()
                     | "CombinePerFile" >> beam.CombinePerKey(CombineFileReports())
                     | "FileRows" >> beam.ParDo(self._make_rows))
        files_written = (file_rows
                         | "BatchFileRows" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
                         | "FileTables" >> beam.Map(lambda rows: pa.Table.from_pylist(rows, schema=schema))
                         .with_output_types(ARROW_TABLE)
                         | "CoalesceFiles" >> beam.ParDo(CoalesceTables()).with_output_types(ARROW_TABLE)
                         | "WriteFiles" >> WriteToParquetBatched(
                             layout.staging_prefix(FILES), schema, codec="zstd", file_name_suffix=".parquet"))
        return file_rows, (frames_written, files_written) | "Written" >> beam.Flatten()


class PlanWork(beam.PTransform):
    """Lists the inputs and drops those earlier runs already did; returns (entries, plan counts)."""

    def __init__(self, config: TagAudioConfig):
        super().__init__()
        self._config = config

    def expand(self, pbegin):
        c = self._config
        if c.entries is not None:
            entries = pbegin | "PlannedEntries" >> beam.Create(list(c.entries))
            skipped_links = pbegin | "NoSkippedLinks" >> beam.Create([])  # counted by the wave plan
        else:
            entries, skipped_links = pbegin | "ListInputs" >> ListInputs(list(c.inputs), c.manifest,
                                                                              c.archive_sidecar, c.table)
        if c.prior_runs:
            only = frozenset(e.uri for e in c.entries) if c.entries is not None else None
            prior = pbegin | "PriorResults" >> PriorResults(c.output, dict(c.prior_runs), c.config_id,
                                                            only_uris=only)
            for head, runs in zip(c.heads, c.head_prior_runs):  # a file is done for the base and every head
                if runs:
                    head_prior = pbegin | f"Head[{head.name}]/PriorResults" >> PriorResults(
                        head.out_dir, dict(runs), head.config, head.name, only)
                    prior = (prior, head_prior) | f"Head[{head.name}]/Priors" >> beam.Flatten()
            targets = ("", *(head.name for head in c.heads))
            entries, categories = entries | "SkipDone" >> SkipDone(prior, c.retry_failed, c.channels, targets)
        else:
            categories = entries | "AllNew" >> beam.Map(lambda _: NEW)
        # Symlinked folders not followed are counted in the plan, beside the files' categories.
        skipped = skipped_links | "SkippedLinks" >> beam.Map(lambda _: SKIPPED_LINKS)
        return entries, (categories, skipped) | "PlanItems" >> beam.Flatten() | "CountPlan" >> CountPlan()


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
                   | "SpreadUnits" >> SpreadUnits()
                   | "Decode" >> beam.ParDo(DecodeUnits(
                       c.framing, decode_processes=c.decode_processes,
                       processes_per_machine=c.processes_per_machine,
                       decode_timeout_s=c.decode_timeout_s, io_retry=c.io_retry,
                       channels=c.channels)).with_outputs(
                       REPORTS, main="chunks"))
        builder = FrameTableBuilder(c.spec, c.columns)
        run_model = RunModelBatched(c.source, builder, c.batch_size, c.device, lease=c.lease, heads=c.heads)
        head_tags = [tag for i in range(len(c.heads)) for tag in (head_frames_tag(i), head_stats_tag(i))]
        inferred = decoded.chunks | "RunModel" >> beam.ParDo(run_model).with_outputs(
            SCORE_STATS, *head_tags, main="frames")

        # Mixed runs have no channel to sort on (null compares as unknown): the key of today's runs.
        sort_by = ("uri", "frame_index") if c.channels == MIX else ("uri", "channel", "frame_index")
        reports = (planned[REPORTS], decoded[REPORTS]) | "AllReports" >> beam.Flatten()
        file_rows, written = (reports, inferred.frames, inferred[SCORE_STATS]) | "Tables" >> WriteTables(
            layout, builder.schema, files_schema(c.spec, sidecar=c.archive_sidecar is not None),
            MakeFileRows(c.spec.sample_rate, c.spec.class_names, c.spec.identity, c.config_id), sort_by)
        written = [written]
        head_finals = []
        for i, head in enumerate(c.heads):  # each head: its own tables, record and publish, under OUT/heads
            record = head.record(self._record)
            rows, staged_head = (reports, inferred[head_frames_tag(i)], inferred[head_stats_tag(i)]) | (
                f"Head[{head.name}]" >> WriteTables(
                    record.layout, head.builder().schema, files_schema(head.table_spec, head.config),
                    MakeFileRows(c.spec.sample_rate, head.spec.class_names, head.spec.identity, head.config),
                    sort_by))
            head_finals.append(
                rows
                | f"Head[{head.name}]/Summarize" >> beam.CombineGlobally(SummarizeFiles())
                | f"Head[{head.name}]/Publish" >> beam.ParDo(
                    PublishHeadRun(record, c.max_failed_fraction, c.lease),
                    staged=beam.pvalue.AsSingleton(staged_head | f"Head[{head.name}]/ListWritten"
                                                   >> beam.combiners.ToList()),
                    plan=beam.pvalue.AsSingleton(plan)))
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
        summary = file_rows | "Summarize" >> beam.CombineGlobally(SummarizeFiles())
        if head_finals:  # the base run publishes last: it gives the output's lease up
            finals = head_finals | "HeadsPublished" >> beam.Flatten()
            summary = summary | "AfterHeads" >> beam.Map(lambda s, _: s, beam.pvalue.AsList(finals))
        return (summary
                | "Publish" >> beam.ParDo(PublishRun(self._record, c.max_failed_fraction, c.lease),
                                          staged=beam.pvalue.AsSingleton(staged),
                                          plan=beam.pvalue.AsSingleton(plan)))
