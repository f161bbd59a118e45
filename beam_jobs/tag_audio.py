"""tag_audio: per-frame scores and embeddings for every audio file of a folder, glob or bucket.

    python -m beam_jobs.tag_audio --input DIR_OR_GLOB [--input ...] [--input_manifest FILE] \\
        --output OUT_DIR --model yamnet [--model_path PATH] [Beam pipeline options]

Every input file gets exactly one row in OUT_DIR/files (status ok | partial |
failed, with the reason); frames go to OUT_DIR/frames.  See the README.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
import time

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquetBatched
from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from audio_models.loading import ModelSource, ModelUnavailableError, load_spec, resolve_source
from audio_models.model_assets import read_spec_document
from audio_models.spec import ModelSpec
from schemas.tables import PACKAGE_VERSION, FrameColumns, config_id, files_schema
from transforms.backfill import NEW, CountPlan, PriorResults, SkipDone, format_plan, published_runs
from transforms.decoder_pool import DEFAULT_TIMEOUT_S
from transforms.file_report import CombineFileReports, MakeFileRows
from transforms.frame_table import CoalesceTables, FrameTableBuilder
from transforms.inference import SCORE_STATS, RunModelBatched
from transforms.inputs import AUDIO_EXTENSIONS, ListInputFiles, input_specs
from transforms.progress import ProgressMonitor
from transforms.run_output import (
    FILES,
    FRAMES,
    RUNNING,
    STAGING,
    PublishRun,
    RunLayout,
    new_run_id,
    read_json,
    write_json,
)
from transforms.run_summary import SummarizeFiles, format_summary
from transforms.units import REPORTS, DecodeUnits, Framing, PlanUnits

MODEL_KINDS = ("yamnet", "keyword", "savedmodel", "head")


def _truthy(value: str) -> bool:
    """Flags accept both '--force' and '--force=true' (templates pass every parameter with a value)."""
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


class TagAudioOptions(PipelineOptions):
    """Options of the tag_audio job (any Beam pipeline option may be given too)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--input", action="append", default=[],
            help="A directory (searched recursively for audio/video files), a glob ('**' allowed) or one "
                 "file; local or gs://. Repeatable.")
        parser.add_argument(
            "--input_manifest", default=None,
            help="A text file of URIs, one per line ('#' comments allowed); local or gs://.")
        parser.add_argument(
            "--output", default=None,
            help="Output directory (local or gs://): frames/, files/ and runs/ are written below it.")
        parser.add_argument(
            "--model", default=None, choices=MODEL_KINDS,
            help="Model kind: yamnet (AudioSet, 521 classes), keyword (a model from train_keyword), "
                 "savedmodel (any waveform SavedModel), head (an export of train_head). Default: the kind "
                 "the model at --model_path names in its assets/model_spec.json, else yamnet.")
        parser.add_argument(
            "--model_path", default=None,
            help="Where the model is: a TF Hub handle, a local or gs:// SavedModel directory, or (yamnet) "
                 "the released yamnet.h5. Default for yamnet: https://tfhub.dev/google/yamnet/1.")
        parser.add_argument(
            "--hop_s", type=float, default=None,
            help="Hop between windows in seconds, for models with a configurable hop (keyword: default "
                 "0.5). YAMNet's hop is fixed at 0.48 s.")
        parser.add_argument(
            "--sample_rate", type=int, default=None,
            help="savedmodel: sample rate the model expects (default: its assets/model_spec.json, "
                 "else 16000).")
        parser.add_argument(
            "--window_s", type=float, default=None,
            help="savedmodel: seconds of audio per model call (default: its assets/model_spec.json, "
                 "else the signature's fixed input length).")
        parser.add_argument(
            "--embedding_output", default=None,
            help="savedmodel: name of the signature output holding the embedding (default: 'embedding', "
                 "or the only float output).")
        parser.add_argument(
            "--scores_output", default=None,
            help="savedmodel: name of the signature output holding class scores (default: 'scores' if "
                 "present, else no scores).")
        parser.add_argument(
            "--pooling", default=None, choices=("mean", "max"),
            help="savedmodel: how a sequence output [B, T, D] becomes one vector per window "
                 "(default: mean).")
        parser.add_argument(
            "--batch_size", type=int, default=0,
            help="Windows per model call; 0 picks the measured default for the device.")
        parser.add_argument(
            "--device", default="auto", choices=("auto", "cpu", "gpu"),
            help="Where the model runs: auto uses a GPU when TensorFlow sees one.")
        parser.add_argument(
            "--embedding_dtype", default="float32", choices=("float32", "float16"),
            help="Storage type of the embedding column (float16 halves its size).")
        parser.add_argument(
            "--top_k", type=int, default=0,
            help="If > 0, keep only the top-k (class, score) pairs per frame instead of all scores.")
        parser.add_argument(
            "--features", default="none", choices=("none", "logmel", "logmel_patch", "both"),
            help="Extra spectral columns: logmel = per-band mean and std of the frame's log-mel patch "
                 "(logmel_stats); logmel_patch = the whole patch as float16; both.")
        parser.add_argument(
            "--unit_s", type=float, default=600.0,
            help="Files longer than this are cut into work units of about this many seconds, "
                 "so one long recording spreads over workers. 0 = never cut.")
        parser.add_argument(
            "--decode_processes", type=int, default=-1,
            help="Decoder processes per worker process, so units decode in parallel beside the model: "
                 "-1 = the cores left to each SDK process; 0 = decode on the bundle's own thread.")
        parser.add_argument(
            "--decode_timeout_s", type=float, default=DEFAULT_TIMEOUT_S,
            help="A unit whose decoder process sends nothing for this long gets a 'decoder_timeout' "
                 "row and its decoder is replaced.")
        parser.add_argument(
            "--extensions", default=",".join(AUDIO_EXTENSIONS),
            help="Comma-separated extensions taken when --input is a directory ('' = every file).")
        parser.add_argument(
            "--max_failed_fraction", type=float, default=1.0,
            help="Mark the run failed (exit status 1) when more than this fraction of files failed. "
                 "Default 1.0: never.")
        parser.add_argument(
            "--progress_s", type=float, default=10.0,
            help="On local runners, print a progress line every this many seconds (0 = quiet).")
        parser.add_argument(
            "--force", type=_truthy, nargs="?", const=True, default=False,
            help="Tag every input again, ignoring earlier runs in --output (default: skip files done "
                 "with the same model and framing, unchanged since).")
        parser.add_argument(
            "--retry_failed", type=_truthy, nargs="?", const=True, default=False,
            help="Also re-try files whose earlier result was failed or partial (default: skip them).")
        parser.add_argument(
            "--plan_only", type=_truthy, nargs="?", const=True, default=False,
            help="Only list the inputs and print how many are new, changed, done and failed before; "
                 "decode nothing, write nothing.")
        parser.add_argument(
            "--run_id", default=None,
            help="Name of this run's partition (default: UTC start time plus a random suffix).")


def _frame_columns(opts: TagAudioOptions) -> FrameColumns:
    return FrameColumns(
        embedding_dtype=opts.embedding_dtype,
        top_k=opts.top_k,
        logmel_stats=opts.features in ("logmel", "both"),
        logmel_patch=opts.features in ("logmel_patch", "both"),
    )


def _model_options(opts: TagAudioOptions) -> tuple[tuple[str, str], ...]:
    """The model-kind settings given on the command line, as ``ModelSource.options``."""
    given = {"sample_rate": opts.sample_rate, "window_s": opts.window_s, "pooling": opts.pooling,
             "embedding_output": opts.embedding_output, "scores_output": opts.scores_output}
    return tuple(sorted((name, str(value)) for name, value in given.items() if value is not None))


def _features_problem(opts: TagAudioOptions, spec: ModelSpec) -> str | None:
    """Why --features cannot be written with this model (checked before anything runs)."""
    if opts.features == "none" or spec.name == "yamnet":
        return None
    if spec.name == "savedmodel":
        from audio_models.generic import logmel_unsupported_reason

        reason = logmel_unsupported_reason(spec)
        return f"--features {opts.features}: {reason}" if reason else None
    return f"--features {opts.features} needs --model yamnet or savedmodel (a 16 kHz waveform model)"


def _sdk_processes_per_machine(opts: PipelineOptions) -> int:
    """How many SDK processes share a worker machine (0: one per core), to size decoder pools."""
    if opts.view_as(StandardOptions).runner in ("DataflowRunner", "dataflow"):
        experiments = opts.view_as(DebugOptions).experiments or []
        return 1 if "no_use_multiple_sdk_containers" in experiments else 0
    direct = opts.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        return max(1, direct.direct_num_workers)
    return 1


@beam.ptransform_fn
def TagAudio(pbegin, opts: TagAudioOptions, source: ModelSource, spec: ModelSpec,  # noqa: N802
             layout: RunLayout, record: dict):
    """The whole job: list -> plan -> decode -> batched model -> Parquet, plus one row per file."""
    unit_frames = int(round(opts.unit_s / spec.hop_s)) if opts.unit_s > 0 else 0
    framing = Framing(spec.sample_rate, spec.window_samples, spec.hop_samples, unit_frames)
    columns = _frame_columns(opts)
    entries, plan = pbegin | "Plan" >> PlanWork(opts, spec, _extensions(opts))
    planned = entries | "PlanUnits" >> beam.ParDo(PlanUnits(framing)).with_outputs(REPORTS, main="units")
    decoded = (planned.units
               | "SpreadUnits" >> beam.Reshuffle()
               | "Decode" >> beam.ParDo(DecodeUnits(
                   framing, decode_processes=opts.decode_processes,
                   processes_per_machine=_sdk_processes_per_machine(opts),
                   decode_timeout_s=opts.decode_timeout_s)).with_outputs(REPORTS, main="chunks"))
    builder = FrameTableBuilder(spec, columns)
    run_model = RunModelBatched(source, builder, opts.batch_size, opts.device)
    inferred = decoded.chunks | "RunModel" >> beam.ParDo(run_model).with_outputs(SCORE_STATS, main="frames")

    frames_written = (inferred.frames
                      | "CoalesceFrames" >> beam.ParDo(CoalesceTables(sort_by=("uri", "frame_index")))
                      | "WriteFrames" >> WriteToParquetBatched(
                          layout.staging_prefix(FRAMES), builder.schema, codec="zstd",
                          file_name_suffix=".parquet"))

    schema = files_schema(spec)
    identity, cid = spec.identity, config_id(spec)
    file_rows = ((planned[REPORTS], decoded[REPORTS], inferred[SCORE_STATS])
                 | "AllFileReports" >> beam.Flatten()
                 | "CombinePerFile" >> beam.CombinePerKey(CombineFileReports())
                 | "FileRows" >> beam.ParDo(MakeFileRows(spec.sample_rate, spec.class_names, identity, cid)))
    files_written = (file_rows
                     | "BatchFileRows" >> beam.BatchElements(min_batch_size=256, max_batch_size=8192)
                     | "FileTables" >> beam.Map(lambda rows: pa.Table.from_pylist(rows, schema=schema))
                     | "CoalesceFiles" >> beam.ParDo(CoalesceTables())
                     | "WriteFiles" >> WriteToParquetBatched(
                         layout.staging_prefix(FILES), schema, codec="zstd", file_name_suffix=".parquet"))

    staged = ((frames_written, files_written)
              | "AllWritten" >> beam.Flatten()
              | "ListWritten" >> beam.combiners.ToList())
    return (file_rows
            | "Summarize" >> beam.CombineGlobally(SummarizeFiles())
            | "Publish" >> beam.ParDo(PublishRun(layout, record, opts.max_failed_fraction),
                                      staged=beam.pvalue.AsSingleton(staged),
                                      plan=beam.pvalue.AsSingleton(plan)))


@beam.ptransform_fn
def PlanWork(pbegin, opts: TagAudioOptions, spec: ModelSpec, extensions: tuple[str, ...]):  # noqa: N802
    """Lists the inputs and drops those earlier runs already did; returns (entries, plan counts)."""
    entries = pbegin | "ListInputs" >> ListInputFiles(input_specs(opts.input, extensions),
                                                      opts.input_manifest)
    prior_runs = [] if opts.force else published_runs(opts.output.rstrip("/"))
    if prior_runs:
        prior = pbegin | "PriorResults" >> PriorResults(opts.output.rstrip("/"), prior_runs, config_id(spec))
        entries, categories = entries | "SkipDone" >> SkipDone(prior, opts.retry_failed)
    else:
        categories = entries | "AllNew" >> beam.Map(lambda _: NEW)
    return entries, categories | "CountPlan" >> CountPlan()


def _print_help() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.tag_audio", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Apache Beam pipeline option is accepted as well (--runner, --direct_num_workers, "
               "--direct_running_mode, Dataflow options ...). Default runner: FnApiRunner (local).")
    TagAudioOptions._add_argparse_args(parser)
    parser.print_help()


def _fail(message: str) -> int:
    print(f"tag_audio: {message}", file=sys.stderr)
    return 2


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, without a stack trace."""


@dataclasses.dataclass
class Job:
    """A resolved tag_audio invocation: options, the model, and where this run writes."""

    options: PipelineOptions
    opts: TagAudioOptions
    source: ModelSource
    spec: ModelSpec
    layout: RunLayout
    record: dict


def prepare_job(options: PipelineOptions) -> Job:
    """Checks the options and resolves the model (cheap: no graph is built). Raises UsageError."""
    opts = options.view_as(TagAudioOptions)
    if not opts.input and not opts.input_manifest:
        raise UsageError("nothing to tag: give --input DIR_OR_GLOB (repeatable) or --input_manifest FILE")
    if not opts.output:
        raise UsageError("--output OUT_DIR is required")
    standard = options.view_as(StandardOptions)
    if not standard.runner:
        # DirectRunner first tries Prism, which downloads a binary; FnApiRunner runs offline.
        standard.runner = "FnApiRunner"
    try:
        source = resolve_source(_model_kind(opts), opts.model_path, hop_s=opts.hop_s,
                                options=_model_options(opts))
        spec = load_spec(source)
    except ModelUnavailableError as e:
        raise UsageError(str(e)) from None
    if problem := _features_problem(opts, spec):
        raise UsageError(problem)

    out_dir = opts.output.rstrip("/")
    layout = RunLayout(out_dir, opts.run_id or new_run_id())
    record = {
        "run_id": layout.run_id,
        "status": RUNNING,
        "started_at": time.time(),
        "out_dir": out_dir,
        "version": PACKAGE_VERSION,
        "parameters": {k: v for k, v in opts.get_all_options().items() if k in _own_option_names()},
        "model": {
            "kind": spec.name, "identity": spec.identity, "fingerprint": spec.fingerprint,
            "config_id": config_id(spec), "sample_rate": spec.sample_rate,
            "window_samples": spec.window_samples, "hop_samples": spec.hop_samples,
            "num_classes": spec.num_classes, "embedding_dim": spec.embedding_dim,
            "source": source.path,
        },
    }
    return Job(options, opts, source, spec, layout, record)


def _model_kind(opts: TagAudioOptions) -> str:
    """--model, else the kind an exported model declares (keyword, head ...), else yamnet."""
    if opts.model:
        return opts.model
    if opts.model_path and not opts.model_path.startswith(("http://", "https://")):
        try:
            document = read_spec_document(opts.model_path) or {}
        except Exception:  # noqa: BLE001 - an unreadable path is reported when the model is resolved
            document = {}
        if document.get("kind") in MODEL_KINDS:
            return document["kind"]
    return "yamnet"


def _pipeline_for(job: Job) -> beam.Pipeline:
    pipeline = beam.Pipeline(options=job.options)
    _ = pipeline | "TagAudio" >> TagAudio(job.opts, job.source, job.spec, job.layout, job.record)
    return pipeline


def build_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """The whole tag_audio pipeline for these options, built but not run."""
    return _pipeline_for(prepare_job(options))


def _only_builds_a_job(options: PipelineOptions) -> bool:
    """--dry_run and --template_location produce a job description; nothing runs now."""
    dry_run = options.view_as(TestOptions).dry_run  # a string when given: '--dry_run=False' is truthy
    return bool(dry_run) or bool(options.view_as(GoogleCloudOptions).template_location)


def run(argv: list[str] | None = None) -> int:
    """Runs the job; returns the process exit status (0 ok, 1 run marked failed, 2 usage/model error)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--help" in argv or "-h" in argv:
        _print_help()
        return 0
    options = PipelineOptions(argv)
    try:
        job = prepare_job(options)
    except UsageError as e:
        return _fail(str(e))
    if job.opts.plan_only:
        return _plan_only(job)
    if _only_builds_a_job(options):
        _pipeline_for(job).run()
        print(f"tag_audio: job built for {options.view_as(StandardOptions).runner}; nothing was run")
        return 0

    write_json(job.layout.record_path(), job.record)
    pipeline = _pipeline_for(job)
    progress_s = job.opts.progress_s
    with ProgressMonitor(interval_s=progress_s) if progress_s > 0 else contextlib.nullcontext():
        pipeline.run().wait_until_finish()

    final = read_json(job.layout.record_path())
    print(format_plan(final["plan"], job.opts.retry_failed))
    print(format_summary(final))
    return 0 if final["status"] != "failed" else 1


def _plan_only(job: Job) -> int:
    """Runs only the listing and the done-set join, and prints the counts; decodes nothing."""
    options, opts, spec = job.options, job.opts, job.spec
    plan_path = FileSystems.join(opts.output.rstrip("/"), STAGING, f"plan-{new_run_id()}.json")
    pipeline = beam.Pipeline(options=options)
    _entries, counts = pipeline | "Plan" >> PlanWork(opts, spec, _extensions(opts))
    _ = counts | "WritePlan" >> beam.Map(lambda c: write_json(plan_path, c))
    pipeline.run().wait_until_finish()
    counts = read_json(plan_path)
    FileSystems.delete([plan_path])
    print(format_plan(counts, opts.retry_failed))
    return 0


def _extensions(opts: TagAudioOptions) -> tuple[str, ...]:
    return tuple(e.strip().lower().lstrip(".") for e in opts.extensions.split(",") if e.strip())


def _own_option_names() -> set[str]:
    parser = argparse.ArgumentParser()
    TagAudioOptions._add_argparse_args(parser)
    return {action.dest for action in parser._actions}


def main() -> None:
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(run())


if __name__ == "__main__":
    main()
