"""tag_audio: per-frame scores and embeddings for every audio file of a folder, glob or bucket.

    python -m beam_jobs.tag_audio --input DIR_OR_GLOB [--input ...] [--input_manifest FILE] \\
        [--input_table TABLE.parquet [--audio_column audio] [--id_column ID]] \\
        --output OUT_DIR --model yamnet [--model_path PATH] [Beam pipeline options]

Every input file gets exactly one row in OUT_DIR/files (status ok | partial |
failed, with the reason); frames go to OUT_DIR/frames.  See the README.
"""

from __future__ import annotations

import argparse
import sys

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    TestOptions,
)

from audio_models.loading import known_kinds
from beam_jobs import cli
from beam_jobs.event_arguments import add_event_arguments, event_settings_from
from beam_jobs.runners import (
    ClusterUnreachableError,
    dask_threads_per_host,
    is_dask,
    progress_unobservable_line,
)
from schemas.tables import FrameColumns
from storage import AUDIO_COLUMN, RetryPolicy
from transforms.answers.event_options import EventOptionsError
from transforms.decoding.pool import DEFAULT_TIMEOUT_S
from transforms.decoding.stream import parse_channels
from transforms.output.layout import EVENTS, RunRecord
from transforms.output.lease import DEFAULT_TTL_S, OutputBusyError
from transforms.output.summary import format_summary
from transforms.tagging import run as tagging
from transforms.tagging import waves
from transforms.tagging.done_set import format_plan
from transforms.tagging.listing import AUDIO_EXTENSIONS, TableColumns
from transforms.tagging.pipeline import TagAudioConfig

JOB = "tag_audio"
BUSY = 3  # exit status when another run holds the output


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
            "--input_table", action="append", default=[],
            help="A Parquet table of audio (a Hugging Face datasets export ...), a folder or a glob of "
                 "them; local or gs://. Each row of --audio_column is one input, TABLE#row=N (or "
                 "TABLE#ID_COLUMN=ID). Repeatable; combines with --input.")
        parser.add_argument(
            "--audio_column", default=AUDIO_COLUMN,
            help="The tables' column holding each row's encoded audio: binary, or a struct of bytes and "
                 "path as Hugging Face writes Audio features (default: audio).")
        parser.add_argument(
            "--id_column", default=None,
            help="A column of the tables naming each row: its URI is TABLE#ID_COLUMN=ID (default: the "
                 "row's index, TABLE#row=N).")
        parser.add_argument(
            "--input_manifest", default=None,
            help="A text file of URIs, one per line ('#' comments allowed); local or gs://.")
        parser.add_argument(
            "--output", default=None,
            help="Output directory (local or gs://): frames/, files/ and runs/ are written below it.")
        parser.add_argument(
            "--model", default=None, choices=known_kinds(),
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
            "--head", action="append", default=[],
            help="A classifier head (HEAD_DIR/export from train_head, local or gs://; NAME=PATH names it) "
                 "scoring YAMNet's embedding in the same pass: audio decoded once, YAMNet run once, each "
                 "head's frames and files under OUT/heads/NAME. Repeatable; needs --model yamnet.")
        parser.add_argument(
            "--base_scores", type=_truthy, nargs="?", const=True, default=True,
            help="Write the base model's scores in OUT/frames (default). --no_base_scores keeps only its "
                 "embeddings there, for runs whose answers come from --head.")
        parser.add_argument(
            "--no_base_scores", dest="base_scores", action="store_false",
            help="See --base_scores.")
        parser.add_argument(
            "--channels", default="mix",
            help="mix: average a file's channels into one (default); each: tag every channel on its own; "
                 "0,2: tag those channels (counted from 0) on their own. Rows carry a 'channel' column "
                 "(null for mix). A file is decoded once whatever the choice.")
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
            "--follow_symlinks", type=_truthy, nargs="?", const=True, default=False,
            help="Enter symlinked folders below a folder or pattern --input, each folder once (default: "
                 "not followed, as find does; the plan line counts them).")
        parser.add_argument(
            "--archive_sidecar", default=None, choices=("json",),
            help="Archive inputs (WebDataset shards): carry each audio member's key.json sidecar into a "
                 "'sidecar' column of the files table (default: sidecars are ignored).")
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
            "--io_retries", type=int, default=RetryPolicy.attempts,
            help="Attempts at a storage read that fails in a way that usually passes (connection reset, "
                 "timeout, HTTP 429/5xx, a cut download), resuming at the byte reached.")
        parser.add_argument(
            "--io_retry_s", type=float, default=RetryPolicy.total_s,
            help="Most seconds spent retrying one read; after that the file gets a 'transient' row, "
                 "which the next run retries.")
        parser.add_argument(
            "--lease_ttl_s", type=float, default=DEFAULT_TTL_S,
            help="A run holds OUT_DIR/_lease.json while it works and renews it; another run finding it "
                 "renewed within this many seconds yields (exit status 3), after it takes it over.")
        parser.add_argument(
            "--run_id", default=None,
            help="Name of this run's partition (default: UTC start time plus a random suffix).")
        parser.add_argument(
            "--wave_files", type=int, default=waves.DEFAULT_WAVE_FILES,
            help="On local runners, tag at most this many files per run: a larger input is planned once "
                 "and tagged in waves, each a run committed as it ends, so memory does not grow with the "
                 "number of files. 0 = one run whatever the size. Not with --run_id (one named run).")
        parser.add_argument(
            "--events", type=_truthy, nargs="?", const=True, default=False,
            help="Also write OUT_DIR/events/: per class, sound events with start, end, peak and mean "
                 "score, and UTC times when a recording's start is known (see the --event_* and time "
                 "options).")
        add_event_arguments(parser)


def _frame_columns(opts: TagAudioOptions) -> FrameColumns:
    return FrameColumns(
        embedding_dtype=opts.embedding_dtype,
        top_k=opts.top_k,
        logmel_stats=opts.features in ("logmel", "both"),
        logmel_patch=opts.features in ("logmel_patch", "both"),
        scores=opts.base_scores,
    )


def _model_options(opts: TagAudioOptions) -> tuple[tuple[str, str], ...]:
    """The model-kind settings given on the command line, as ``ModelSource.options``."""
    given = {"sample_rate": opts.sample_rate, "window_s": opts.window_s, "pooling": opts.pooling,
             "embedding_output": opts.embedding_output, "scores_output": opts.scores_output}
    return tuple(sorted((name, str(value)) for name, value in given.items() if value is not None))


def sdk_processes_per_machine(options: PipelineOptions) -> int:
    """How many SDK processes share a worker machine (0: one per core), to size decoder pools."""
    runner = (options.view_as(StandardOptions).runner or "").lower()
    if runner in ("dataflowrunner", "dataflow"):
        experiments = options.view_as(DebugOptions).experiments or []
        return 1 if "no_use_multiple_sdk_containers" in experiments else 0
    if is_dask(options):
        return dask_threads_per_host(options)
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_processing":
        return max(1, direct.direct_num_workers)
    return 1


def _parser() -> argparse.ArgumentParser:
    """The job's own options as a parser, for --help, for telling them from Beam's and for naming the
    nearest one of a misspelled option."""
    parser = cli.job_parser(
        JOB, __doc__,
        epilog="Any Apache Beam pipeline option is accepted as well (--runner, --direct_num_workers, "
               f"--direct_running_mode, Dataflow options ...). Default runner: {cli.DEFAULT_RUNNER} (local).")
    TagAudioOptions._add_argparse_args(parser)
    return parser


def prepare_job(options: PipelineOptions) -> tuple[TagAudioConfig, RunRecord]:
    """Checks the options, resolves the model and lists earlier runs. Raises tagging.UsageError."""
    opts = options.view_as(TagAudioOptions)
    cli.with_default_runner(options)
    if not opts.lease_ttl_s > 0:
        raise tagging.UsageError(f"--lease_ttl_s must be more than 0 seconds, not {opts.lease_ttl_s:g} (the "
                                 "lease is renewed a few times within it)")
    if opts.wave_files < 0:
        raise tagging.UsageError(f"--wave_files must be 0 (one run) or a number of files per run, not "
                                 f"{opts.wave_files}")
    own = _own_option_names()
    try:
        channels = parse_channels(opts.channels)
    except ValueError as e:
        raise tagging.UsageError(f"--channels: {e}") from None
    events = None
    if opts.events:
        try:
            events = event_settings_from(opts)
        except EventOptionsError as e:
            raise tagging.UsageError(f"--events: {e}") from None
    try:
        processes_per_machine = sdk_processes_per_machine(options)
    except ClusterUnreachableError as e:
        raise tagging.UsageError(str(e)) from None
    config, record = tagging.prepare(
        opts.input, opts.output, manifest=opts.input_manifest, model=opts.model, model_path=opts.model_path,
        hop_s=opts.hop_s, model_options=_model_options(opts), extensions=_extensions(opts),
        follow_symlinks=opts.follow_symlinks,
        force=opts.force, run_id=opts.run_id, check_output=not _only_builds_a_job(options),
        parameters={k: v for k, v in opts.get_all_options().items() if k in own},
        columns=_frame_columns(opts), unit_s=opts.unit_s, batch_size=opts.batch_size, device=opts.device,
        decode_processes=opts.decode_processes, processes_per_machine=processes_per_machine,
        decode_timeout_s=opts.decode_timeout_s, retry_failed=opts.retry_failed,
        max_failed_fraction=opts.max_failed_fraction,
        io_retry=RetryPolicy(opts.io_retries, opts.io_retry_s), events=events, channels=channels,
        heads=tuple(opts.head), archive_sidecar=opts.archive_sidecar, tables=tuple(opts.input_table),
        table=TableColumns(opts.audio_column, opts.id_column))
    return config, record


def build_pipeline(options: PipelineOptions):
    """The whole tag_audio pipeline for these options, built but not run."""
    config, record = prepare_job(options)
    return tagging.build(config, record, options)


def _only_builds_a_job(options: PipelineOptions) -> bool:
    """--dry_run and --template_location produce a job description; nothing runs now."""
    dry_run = options.view_as(TestOptions).dry_run  # a string when given: '--dry_run=False' is truthy
    return bool(dry_run) or bool(options.view_as(GoogleCloudOptions).template_location)


@cli.job(JOB)
def run(argv: list[str] | None = None) -> int:
    """Runs the job; returns the process exit status (0 ok, 1 run marked failed, 2 usage/model error,
    3 another run is tagging the same output)."""
    argv = cli.arguments(argv)
    cli.parse(_parser(), argv, beam=True)  # refuses what neither the job nor Beam knows
    options = cli.pipeline_options(argv)  # the job's options too: TagAudioOptions is a PipelineOptions
    opts = options.view_as(TagAudioOptions)
    try:
        config, record = prepare_job(options)
    except tagging.UsageError as e:
        return cli.fail(JOB, str(e))
    if opts.plan_only:
        print(format_plan(tagging.plan_only(config, options), opts.retry_failed))
        return 0
    if _only_builds_a_job(options):
        tagging.build(tagging.with_published_runs(config), record, options).run()
        print(f"tag_audio: job built for {options.view_as(StandardOptions).runner}; nothing was run")
        return 0
    progress_s = opts.progress_s
    if progress_s > 0 and (line := progress_unobservable_line(options)):
        print(f"tag_audio: {line}", file=sys.stderr)
        progress_s = 0.0
    in_waves = opts.wave_files > 0 and not opts.run_id and waves.runs_locally(options)
    wave_files = opts.wave_files if in_waves else 0
    try:
        if wave_files:
            result = waves.execute_in_waves(config, record, options, wave_files, progress_s=progress_s,
                                            lease_ttl_s=opts.lease_ttl_s)
            final = result.records[-1]
            if "wave" in final.parameters:  # more than one wave planned: a line for each
                print(format_plan(result.plan, opts.retry_failed))
                print(waves.format_waves(result))
                return 0 if result.status != "failed" else 1
        else:
            final = tagging.execute(config, record, options, progress_s=progress_s,
                                    lease_ttl_s=opts.lease_ttl_s)
    except OutputBusyError as e:
        return cli.fail(JOB, str(e), status=BUSY)
    except tagging.UsageError as e:  # found under the lease: a damaged part, a run id taken meanwhile
        return cli.fail(JOB, str(e))
    except tagging.RunStoppedError as e:
        return cli.fail(JOB, str(e), status=e.exit_code)
    print(format_plan(final.plan, opts.retry_failed))
    print(format_summary(final))
    for head in config.heads:
        print(f"  head       {head.name} ({head.spec.identity}, {head.spec.num_classes} classes): "
              f"{head.out_dir}/  (frames, files and its run record)")
    if config.events is not None:
        print(f"  events     {final.layout.table_dir(EVENTS)}/  (python -m beam_jobs.events --events "
              f"{config.output} --raven DIR exports them)")
    return 0 if final.status != "failed" else 1


def _extensions(opts: TagAudioOptions) -> tuple[str, ...]:
    return tuple(e.strip().lower().lstrip(".") for e in opts.extensions.split(",") if e.strip())


def _own_option_names() -> set[str]:
    return {action.dest for action in _parser()._actions}


main = cli.main_for(run, __name__)
