"""Running tag_audio from code: prepare (every read before the graph), execute, or only plan.

    config, record = prepare(["audio/"], "out/", model="yamnet", model_path="/models/yamnet")
    final = execute(config, record, PipelineOptions([], runner="FnApiRunner"))

``beam_jobs.tag_audio`` is the command line over these; other jobs (the demo)
call them directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

import storage
from audio_models.loading import ModelUnavailableError, load_spec, one_line, resolve_source
from audio_models.spec import ModelSpec
from schemas.tables import PACKAGE_VERSION, FrameColumns, config_id
from transforms.answers.event_options import classes_problem
from transforms.output import commit_log
from transforms.output.layout import FAILED, LOG_PROTOCOL, TABLES, OutputLayout, RunRecord, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, Lease, Renewer
from transforms.output.reader import published_runs
from transforms.output.tidy import DamagedOutputError, tidy
from transforms.tagging.heads import resolve_heads
from transforms.tagging.listing import (
    AUDIO_EXTENSIONS,
    InputSpec,
    TableColumns,
    first_listed,
    first_match,
    input_specs,
    table_specs,
)
from transforms.tagging.pipeline import PlanWork, TagAudio, TagAudioConfig
from transforms.tagging.progress import ProgressMonitor


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, without a stack trace."""


class RunStoppedError(Exception):
    """The run stopped before it committed (a signal, a full or read-only output); its record says
    failed, its staging is gone and the lease is released. ``str(e)`` is the one line for the user."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """Raised in the driver by SIGINT / SIGTERM; a BaseException so that no library swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STORAGE_FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                 errno.EROFS: "the filesystem is read-only"}


def features_problem(columns: FrameColumns, spec: ModelSpec) -> str | None:
    """Why the optional log-mel columns cannot be written with this model."""
    if not (columns.logmel_stats or columns.logmel_patch) or spec.name == "yamnet":
        return None
    if spec.name == "savedmodel":
        from audio_models.savedmodel import logmel_unsupported_reason

        return logmel_unsupported_reason(spec)
    return "needs --model yamnet or savedmodel (a 16 kHz waveform model)"


def check_reachable(inputs: Sequence[InputSpec], manifest: str | None, output: str,
                    check_output: bool = True) -> None:
    """Before any work: the output writable, each input root listable (its first page), the manifest
    readable. Raises UsageError naming the path, the cause and the fix."""
    if check_output:
        try:
            storage.probe_writable(output)
        except Exception as e:  # noqa: BLE001 - whatever the filesystem says, in one line
            raise UsageError(f"cannot write to --output {output}: {one_line(str(e))} (check the path and "
                             "that these credentials may create objects there)") from None
    for spec in inputs:
        if spec.literal:
            continue  # a single file: a missing one is that file's row, not a configuration error
        if spec.directory:
            try:
                if storage.is_remote(spec.pattern):  # its first page: a missing bucket fails here
                    storage.match(storage.escape_glob(spec.pattern) + "/*", limit=1)
                elif not storage.exists(spec.pattern):
                    raise FileNotFoundError(f"no such directory: {spec.pattern}")
            except Exception as e:  # noqa: BLE001
                raise UsageError(f"cannot list --input {spec.pattern}/**: {one_line(str(e))}") from None
            continue
        try:
            found = first_match(spec)
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"cannot list --input {spec.pattern}: {one_line(str(e))}") from None
        if found is None and check_output:  # a job only built (a template) may name inputs still to come
            raise UsageError(f"--input {spec.pattern} matches no file and names none (a pattern: '*', '?' "
                             "and '[...]' match; write [[] [*] [?] for those characters in a name)")
    if manifest and not storage.exists(manifest):
        raise UsageError(f"--input_manifest {manifest} does not exist")


def check_tables(specs: Sequence[InputSpec], columns: TableColumns) -> None:
    """Before any work: the columns asked for are in the tables (each named one that is there, and the
    first of each folder or pattern; a later table without them gets a row saying so). Reads footers
    alone. Raises UsageError naming the columns a table has."""
    for flag, name in (("--audio_column", columns.audio), ("--id_column", columns.id)):
        if name is not None and (problem := storage.column_name_problem(flag, name)):
            raise UsageError(problem)
    for spec in specs:
        if spec.literal and storage.archive_kind(spec.pattern) != "parquet":
            raise UsageError(f"--input_table {spec.pattern}: a table's name ends in .parquet (its rows are "
                             "named TABLE.parquet#row=N)")
        try:
            table = spec.pattern if spec.literal else first_listed(spec)
            if table is None or (spec.literal and not storage.exists(table)):
                continue  # no table there (yet): a missing one is its row, as a missing --input file is
            problem = storage.columns_problem(table, columns.audio, columns.id)
        except storage.ArchiveError as e:  # not Parquet at all
            raise UsageError(f"--input_table {table}: {e.message}") from None
        except Exception as e:  # noqa: BLE001 - whatever the filesystem says, in one line
            raise UsageError(f"cannot read --input_table {spec.pattern}: {one_line(str(e))}") from None
        if problem:
            raise UsageError(problem)


def prepare(inputs: Sequence[str], output: str, *, manifest: str | None = None, model: str | None = None,
            model_path: str | None = None, hop_s: float | None = None,
            model_options: tuple[tuple[str, str], ...] = (),
            extensions: tuple[str, ...] = AUDIO_EXTENSIONS, follow_symlinks: bool = False,
            force: bool = False, run_id: str | None = None,
            parameters: dict[str, Any] | None = None, check_output: bool = True,
            heads: Sequence[str] = (), tables: Sequence[str] = (),
            **settings) -> tuple[TagAudioConfig, RunRecord]:
    """Checks that everything named can be reached, resolves the model (and heads) and classifies the
    inputs; raises UsageError, in seconds, before any work. Earlier runs are read by ``execute``, under
    the lease.

    ``tables`` are --input_table paths (tables, or folders and patterns of them) whose rows are inputs,
    read as ``settings['table']`` (TableColumns) says.

    ``settings`` are the remaining ``TagAudioConfig`` fields (columns, unit_s,
    batch_size, device, decode_processes, ...).
    """
    if not inputs and not manifest and not tables:
        raise UsageError("nothing to tag: give --input DIR_OR_GLOB (repeatable), --input_table TABLE.parquet "
                         "or --input_manifest FILE")
    if not output:
        raise UsageError("--output OUT_DIR is required")
    paths = [*inputs, *tables, output, *([manifest] if manifest else []),
             *([model_path] if model_path else [])]
    if any(p.startswith("gs://") for p in paths) and (problem := storage.credentials_problem()):
        raise UsageError(problem)
    try:
        source = resolve_source(model, model_path, hop_s=hop_s, options=model_options)
        spec = load_spec(source)
    except ModelUnavailableError as e:
        raise UsageError(str(e)) from None
    columns = settings.get("columns", FrameColumns())
    if problem := features_problem(columns, spec):
        raise UsageError(f"--features: {problem}")
    events = settings.get("events")
    if events is not None and (problem := classes_problem(events, spec.class_names)):
        raise UsageError(f"--event_class: {problem}")
    if columns.top_k > 0 and spec.num_classes == 0:
        raise UsageError(f"--top_k {columns.top_k}: model {spec.identity} has no class scores (embeddings "
                         "only); drop --top_k to write its embeddings")
    out_dir = output.rstrip("/")
    try:
        head_outputs = resolve_heads(heads, spec, config_id(spec), out_dir)
    except ValueError as e:
        raise UsageError(f"--head: {e}") from None
    if not columns.scores and not head_outputs:
        raise UsageError("--no_base_scores without --head would write no scores at all: add --head HEAD_DIR")
    if not columns.scores and events is not None:
        raise UsageError("--events finds events in the base model's scores: drop --no_base_scores, or run "
                         "python -m beam_jobs.events --frames OUT/heads/NAME for a head's events")
    try:
        specs = tuple(input_specs(list(inputs), extensions, follow_symlinks))
        given_tables = tuple(table_specs(list(tables), follow_symlinks))
    except Exception as e:  # noqa: BLE001 - no credentials, a missing bucket: said in one line
        raise UsageError(f"cannot tell what --input names: {one_line(str(e))}") from None
    check_reachable(specs + given_tables, manifest, out_dir, check_output)
    check_tables(given_tables, settings.get("table", TableColumns()))
    specs += given_tables
    if run_id and (problem := run_id_problem(out_dir, run_id)):
        raise UsageError(problem)
    config = TagAudioConfig(inputs=specs, output=out_dir, source=source, spec=spec, manifest=manifest,
                            force=force, heads=head_outputs, **settings)
    record = RunRecord(
        run_id=run_id or new_run_id(), out_dir=out_dir, started_at=time.time(), version=PACKAGE_VERSION,
        parameters=dict(parameters or {}),
        model={"kind": spec.name, "identity": spec.identity, "fingerprint": spec.fingerprint,
               "config_id": config.config_id, "sample_rate": spec.sample_rate,
               "window_samples": spec.window_samples, "hop_samples": spec.hop_samples,
               "num_classes": spec.num_classes, "embedding_dim": spec.embedding_dim,
               "source": source.path},
        protocol=LOG_PROTOCOL)
    return config, record


def run_id_problem(out_dir: str, run_id: str) -> str | None:
    """Why ``run_id`` cannot name a new run of ``out_dir``: a run of that id exists, published or not (its
    record is written before anything else of it, and kept when compaction removes its data)."""
    layout = OutputLayout(out_dir)
    paths = [layout.record_path(run_id), layout.compacted_record_path(run_id),
             *(layout.table_dir(table, run_id) for table in TABLES)]
    try:
        taken = any(storage.exists(path) for path in paths)
    except FileNotFoundError:
        taken = False
    if taken:
        return (f"--run_id {run_id}: {out_dir} already has a run of that id; run ids name one run each "
                "(leave --run_id out for a new one, or pick another)")
    return None


def build(config: TagAudioConfig, record: RunRecord, options: PipelineOptions) -> beam.Pipeline:
    """The pipeline, built but not run."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "TagAudio" >> TagAudio(config, record)
    return pipeline


def take_output(config: TagAudioConfig, record: RunRecord,
                ttl_s: float = DEFAULT_TTL_S) -> TagAudioConfig:
    """The config with the output's lease held by this run; raises OutputBusyError if a live run has it."""
    return dataclasses.replace(config, lease=Lease(config.output, record.run_id, ttl_s).acquire())


def with_prior_runs(config: TagAudioConfig, record: RunRecord) -> TagAudioConfig:
    """Under the lease: tidies the output and each head's (``OUT/heads/NAME``, which the lease on OUT
    covers), then reads which runs are committed (the done-set's input).  Raises UsageError for a run id
    taken meanwhile or a damaged committed part."""
    try:
        tidied = tidy(config.output, record.run_id)
        for head in config.heads:
            tidy(head.out_dir, record.run_id)
    except DamagedOutputError as e:
        raise UsageError(str(e)) from None
    if problem := run_id_problem(config.output, record.run_id):
        raise UsageError(problem)
    lease = dataclasses.replace(config.lease, base_commit=tidied.head) if config.lease else None
    return _with_published(dataclasses.replace(config, lease=lease))


def _with_published(config: TagAudioConfig) -> TagAudioConfig:
    """The committed runs of the output and of each head's output (``OUT/heads/NAME``), for the done-set."""
    if config.force:
        return config
    return dataclasses.replace(config, prior_runs=tuple(published_runs(config.output)),
                               head_prior_runs=tuple(tuple(published_runs(h.out_dir)) for h in config.heads))


@contextlib.contextmanager
def _renewing(lease: Lease | None):
    """Renews the lease from this process while the pipeline runs (local runners, a waiting driver)."""
    if lease is None:
        yield
        return
    stop = threading.Event()
    renewer = Renewer(lease)

    def keep_alive():
        while not stop.wait(min(5.0, lease.ttl_s / 4)):
            renewer.tick()

    thread = threading.Thread(target=keep_alive, name="lease-renewer", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def _interruptible():
    """SIGINT and SIGTERM raise Interrupted in the driver (the main thread only can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _storage_full(error: BaseException) -> tuple[str, str | None] | None:
    """(cause, path if known) when ``error`` or one it wraps is a full or read-only filesystem."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _STORAGE_FULL:
            return _STORAGE_FULL[error.errno], error.filename
        for number, cause in _STORAGE_FULL.items():
            if f"[Errno {number}]" in str(error):  # Beam re-raises a worker's error as text
                return cause, None
        error = error.__cause__ or error.__context__
    return None


def _abandon(config: TagAudioConfig, record: RunRecord, reason: str) -> None:
    """A run that stops before it commits: its partial output removed, its record failed."""
    layout = record.layout
    committed = commit_log.read_commit(config.output, config.lease.commit_number) if config.lease else None
    if committed is not None and committed.run_id == record.run_id:
        return  # it committed just before the stop: its output is published and stays
    for path in [layout.staging_dir(), *(layout.table_dir(table) for table in TABLES)]:
        with contextlib.suppress(Exception):
            storage.delete_tree(path)
    with contextlib.suppress(Exception):
        dataclasses.replace(record, status=FAILED, finished_at=time.time(), reason=reason).write()


def execute(config: TagAudioConfig, record: RunRecord, options: PipelineOptions,
            progress_s: float = 0.0, lease_ttl_s: float = DEFAULT_TTL_S) -> RunRecord:
    """Takes the output's lease, tidies it and reads earlier runs, writes the 'running' record, runs the
    pipeline to its end and returns the final record.

    Raises OutputBusyError (before writing anything) when another run is live, UsageError for a damaged
    output or a taken run id, RunStoppedError for a signal or a full or read-only output."""
    config = take_output(config, record, lease_ttl_s)
    try:
        with _interruptible():
            try:
                config = with_prior_runs(config, record)
                record.write()
                for head in config.heads:  # 'running' until the run commits it: readers skip it meanwhile
                    head.record(record).write()
                pipeline = build(config, record, options)
                with (_renewing(config.lease),
                      ProgressMonitor(interval_s=progress_s) if progress_s > 0 else contextlib.nullcontext()):
                    pipeline.run().wait_until_finish()
            except Interrupted as e:
                name = signal.Signals(e.signum).name
                _abandon(config, record, f"interrupted ({name})")
                raise RunStoppedError(f"interrupted ({name}): run {record.run_id} stopped and recorded as "
                                      "failed; nothing was published and the next run does its files",
                                      128 + e.signum) from None
            except Exception as e:
                if (full := _storage_full(e)) is None:
                    raise
                cause, path = full
                path = path or config.output
                _abandon(config, record, f"{cause}: {path}")
                raise RunStoppedError(f"{cause} at {path}: run {record.run_id} stopped and "
                                      "recorded as failed; nothing was published (free space or make the "
                                      "output writable, then run again)", 1) from None
    finally:
        config.lease.release()  # normally done by the publish step; a failed pipeline leaves it here
    return record.reread()


def with_published_runs(config: TagAudioConfig) -> TagAudioConfig:
    """The config with the committed runs as they are now, read without the lease: for a plan, or a job
    built to run later (a template), where nothing is published by this process."""
    return _with_published(config)


def plan_only(config: TagAudioConfig, options: PipelineOptions) -> dict[str, int]:
    """Runs only the listing and the done-set join; returns the plan counts. Decodes nothing."""
    config = with_published_runs(config)
    plan_path = OutputLayout(config.output).plan_path(new_run_id())
    pipeline = beam.Pipeline(options=options)
    _entries, counts = pipeline | "Plan" >> PlanWork(config)
    _ = counts | "WritePlan" >> beam.Map(lambda c: storage.write_json(plan_path, c))
    pipeline.run().wait_until_finish()
    counts = storage.read_json(plan_path)
    storage.delete([plan_path])
    return counts

