"""Running tag_audio from code: prepare (every read before the graph), execute, or only plan.

    config, record = prepare(["audio/"], "out/", model="yamnet", model_path="/models/yamnet")
    final = execute(config, record, PipelineOptions([], runner="FnApiRunner"))

``beam_jobs.tag_audio`` is the command line over these; other jobs (the demo)
call them directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from transforms.output.layout import STAGING, RunRecord, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, Lease, Renewer
from transforms.output.reader import published_runs
from transforms.tagging.heads import resolve_heads
from transforms.tagging.listing import AUDIO_EXTENSIONS, InputSpec, input_specs
from transforms.tagging.pipeline import PlanWork, TagAudio, TagAudioConfig
from transforms.tagging.progress import ProgressMonitor


class UsageError(Exception):
    """A problem with what the user asked for; reported in one line, without a stack trace."""


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
        root = spec.pattern.split("*", 1)[0].rsplit("/", 1)[0] or "/"
        try:
            if storage.is_remote(root):
                storage.match(root.rstrip("/") + "/*", limit=1)
            elif not storage.exists(root):
                raise FileNotFoundError(f"no such directory: {root}")
        except Exception as e:  # noqa: BLE001
            raise UsageError(f"cannot list --input {spec.pattern}: {one_line(str(e))}") from None
    if manifest and not storage.exists(manifest):
        raise UsageError(f"--input_manifest {manifest} does not exist")


def prepare(inputs: Sequence[str], output: str, *, manifest: str | None = None, model: str | None = None,
            model_path: str | None = None, hop_s: float | None = None,
            model_options: tuple[tuple[str, str], ...] = (),
            extensions: tuple[str, ...] = AUDIO_EXTENSIONS, force: bool = False, run_id: str | None = None,
            parameters: dict[str, Any] | None = None, check_output: bool = True,
            heads: Sequence[str] = (), **settings) -> tuple[TagAudioConfig, RunRecord]:
    """Checks that everything named can be reached, resolves the model, classifies the inputs and lists
    earlier runs; raises UsageError, in seconds, before any work.

    ``settings`` are the remaining ``TagAudioConfig`` fields (columns, unit_s,
    batch_size, device, decode_processes, ...).
    """
    if not inputs and not manifest:
        raise UsageError("nothing to tag: give --input DIR_OR_GLOB (repeatable) or --input_manifest FILE")
    if not output:
        raise UsageError("--output OUT_DIR is required")
    paths = [*inputs, output, *([manifest] if manifest else []), *([model_path] if model_path else [])]
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
        specs = tuple(input_specs(list(inputs), extensions))
    except Exception as e:  # noqa: BLE001 - no credentials, a missing bucket: said in one line
        raise UsageError(f"cannot tell what --input names: {one_line(str(e))}") from None
    check_reachable(specs, manifest, out_dir, check_output)
    config = TagAudioConfig(
        inputs=specs, output=out_dir, source=source, spec=spec,
        manifest=manifest, prior_runs=() if force else tuple(published_runs(out_dir)), heads=head_outputs,
        head_prior_runs=() if force else tuple(tuple(published_runs(h.out_dir)) for h in head_outputs),
        **settings)
    record = RunRecord(
        run_id=run_id or new_run_id(), out_dir=out_dir, started_at=time.time(), version=PACKAGE_VERSION,
        parameters=dict(parameters or {}),
        model={"kind": spec.name, "identity": spec.identity, "fingerprint": spec.fingerprint,
               "config_id": config.config_id, "sample_rate": spec.sample_rate,
               "window_samples": spec.window_samples, "hop_samples": spec.hop_samples,
               "num_classes": spec.num_classes, "embedding_dim": spec.embedding_dim,
               "source": source.path})
    return config, record


def build(config: TagAudioConfig, record: RunRecord, options: PipelineOptions) -> beam.Pipeline:
    """The pipeline, built but not run."""
    pipeline = beam.Pipeline(options=options)
    _ = pipeline | "TagAudio" >> TagAudio(config, record)
    return pipeline


def take_output(config: TagAudioConfig, record: RunRecord,
                ttl_s: float = DEFAULT_TTL_S) -> TagAudioConfig:
    """The config with the output's lease held by this run; raises OutputBusyError if a live run has it."""
    return dataclasses.replace(config, lease=Lease(config.output, record.run_id, ttl_s).acquire())


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


def execute(config: TagAudioConfig, record: RunRecord, options: PipelineOptions,
            progress_s: float = 0.0, lease_ttl_s: float = DEFAULT_TTL_S) -> RunRecord:
    """Takes the output's lease, writes the 'running' record, runs the pipeline to its end and
    returns the final record. Raises OutputBusyError (before writing anything) when another run is live."""
    config = take_output(config, record, lease_ttl_s)
    try:
        record.write()
        for head in config.heads:  # 'running' until the run publishes it: readers skip it meanwhile
            head.record(record).write()
        pipeline = build(config, record, options)
        with (_renewing(config.lease),
              ProgressMonitor(interval_s=progress_s) if progress_s > 0 else contextlib.nullcontext()):
            pipeline.run().wait_until_finish()
    finally:
        config.lease.release()  # normally done by the publish step; a failed pipeline leaves it here
    final = RunRecord.read(record.layout.record_path())
    if final is None:
        raise RuntimeError(f"the run ended without its record at {record.layout.record_path()}")
    return final


def plan_only(config: TagAudioConfig, options: PipelineOptions) -> dict[str, int]:
    """Runs only the listing and the done-set join; returns the plan counts. Decodes nothing."""
    plan_path = storage.join(config.output, STAGING, f"plan-{new_run_id()}.json")
    pipeline = beam.Pipeline(options=options)
    _entries, counts = pipeline | "Plan" >> PlanWork(config)
    _ = counts | "WritePlan" >> beam.Map(lambda c: storage.write_json(plan_path, c))
    pipeline.run().wait_until_finish()
    counts = storage.read_json(plan_path)
    storage.delete([plan_path])
    return counts

