"""A head over stored embeddings (``beam_jobs.apply_head``): no decode, no YAMNet, a matrix product.

The current frames of OUT (the base model's, those a head was trained on) are
streamed part by part, each batch scored by every head's ``from_features``
signature, and written to ``OUT/heads/<name>/`` exactly as ``tag_audio --head``
writes them: the same columns, class names, config id (the base config id
plus the head's fingerprint) and files rows (the base file's row, with the
head's frame count, clip labels, model and config id).  Each head's output
is then published like a run (``transforms.output.publish``): staged Parquet
moved into place, then its final run record, under the head directory's
lease.  A file whose frames a head already scored (a current row of the same
config, unchanged size and time) is skipped unless ``force``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import storage
from schemas.model_spec import ModelSpec
from schemas.tables import FILE_TOP_LABELS, PACKAGE_VERSION, STATUS_OK, STATUS_PARTIAL, files_schema
from transforms.output import current
from transforms.output.layout import FILES, FRAMES, LOG_PROTOCOL, RunRecord, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, Lease
from transforms.output.publish import commit, final_record, publish
from transforms.output.reader import ModelInfo, OutputDir, find_output, read_schema
from transforms.output.summary import SummarizeFiles
from transforms.output.tidy import tidy
from transforms.tagging.file_report import ScoreStats, top_labels
from transforms.tagging.frame_table import CoalesceTables, in_order
from transforms.tagging.heads import HeadOutput, resolve_heads
from transforms.tagging.inference import shared_model

_BATCH_ROWS = 4096  # frames scored per call: one matrix product per head
_FILE_COLUMNS = ("uri", "channel", "status", "error", "duration_s", "sample_rate", "channels", "codec",
                 "size_bytes", "last_modified")


class ApplyHeadError(Exception):
    """What is wrong with the request, in one line (raised before anything is written)."""


@dataclasses.dataclass
class Applied:
    """What one head's application did."""

    head: HeadOutput
    record: RunRecord
    frames: int = 0
    skipped_files: int = 0
    cpu_s: float = 0.0


def base_spec(found: OutputDir) -> tuple[ModelSpec, str]:
    """The base model of OUT's current frames (one config id), as a spec with its config id."""
    schema = next((read_schema(run.frames) for run in found.published if run.frames), None)
    if schema is None:
        raise ApplyHeadError(f"{found.root} has no published frames: tag it first (tag_audio)")
    info = ModelInfo.from_schema(schema)
    meta = {k.decode().split(".", 1)[-1]: v.decode() for k, v in (schema.metadata or {}).items()}
    if "embedding" not in schema.names:
        raise ApplyHeadError(f"the frames of {found.root} hold no embedding column: a head needs them")
    spec = ModelSpec(name=info.name, sample_rate=int(meta.get("sample_rate", 0)),
                     window_samples=int(meta.get("window_samples", 0)),
                     hop_samples=int(meta.get("hop_samples", 0)), class_names=info.class_names,
                     embedding_dim=int(meta.get("embedding_dim", 0)), fingerprint=info.fingerprint)
    return spec, meta.get("config_id", "")


def _done_keys(head: HeadOutput) -> set[tuple[str, int]]:
    """(uri, channel or -1) the head already has a current ok row for."""
    try:
        found = find_output(head.out_dir)
    except FileNotFoundError:
        return set()
    if not found.published:
        return set()
    rows = current.current_files(found, ["uri", "channel", "config_id"])
    if "channel" not in rows.column_names or rows.num_rows == 0:
        return set()
    rows = rows.filter(pc.equal(rows["config_id"], head.config))
    channels = pc.fill_null(rows["channel"], -1).to_pylist()
    return set(zip(rows["uri"].to_pylist(), channels))


def _base_files(found: OutputDir, config: str) -> pa.Table:
    """The base run's current files rows (ok and partial: those with frames) of ``config``."""
    rows = current.current_files(found, [*_FILE_COLUMNS, "config_id"], statuses=(STATUS_OK, STATUS_PARTIAL))
    return rows.filter(pc.equal(rows["config_id"], config))


def _frame_batches(found: OutputDir, columns: list[str], config: str,
                   statuses: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The current frames of ``config``, in batches (only ``columns`` read)."""
    states = current.row_states(found, statuses)
    for selection in current.current_parts(found, states):
        with storage.open_read(selection.part.path) as stream:
            parquet = pq.ParquetFile(stream)
            present = set(parquet.schema_arrow.names)  # 'channel' is absent from runs older than it
            needed = [c for c in dict.fromkeys([*columns, "config_id"]) if c in present]
            for batch in parquet.iter_batches(batch_size=_BATCH_ROWS, columns=needed):
                batch = current.select_rows(batch, selection)
                batch = batch.filter(pc.equal(batch.column("config_id"), config))
                if batch.num_rows:
                    yield batch


def _matrix(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """list<float> -> [rows, width] float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    width = len(column[0]) if len(column) else 0
    return column.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(len(column), width)


def apply_heads(frames_dir: str, head_arguments: Sequence[str], force: bool = False,
                lease_ttl_s: float = DEFAULT_TTL_S, parameters: dict | None = None) -> list[Applied]:
    """Scores OUT's stored embeddings with each head and publishes each head's tables; raises
    ApplyHeadError (before writing anything) for a request that cannot work."""
    out_dir = frames_dir.rstrip("/")
    found = find_output(out_dir)
    spec, config = base_spec(found)
    try:
        heads = resolve_heads(head_arguments, spec, config, out_dir)
    except ValueError as e:
        raise ApplyHeadError(str(e)) from None
    if not heads:
        raise ApplyHeadError("give --head HEAD_DIR/export (repeatable)")
    schema = next(read_schema(run.frames) for run in found.published if run.frames)
    for head in heads:
        missing = [c for c in head.columns if c not in schema.names]
        if missing:
            raise ApplyHeadError(f"head {head.name} reads {', '.join(missing)}, which the frames of "
                                 f"{out_dir} lack: tag with --features logmel, or use tag_audio --head")
    base_record = RunRecord(run_id=new_run_id(), out_dir=out_dir, started_at=time.time(),
                            version=PACKAGE_VERSION, parameters=dict(parameters or {}),
                            model={"identity": spec.identity, "config_id": config}, protocol=LOG_PROTOCOL)
    return [_apply_one(found, head, config, base_record, force, lease_ttl_s) for head in heads]


def _apply_one(found: OutputDir, head: HeadOutput, config: str, base_record: RunRecord, force: bool,
               lease_ttl_s: float) -> Applied:
    cpu = time.process_time()
    record = head.record(base_record)
    applied = Applied(head, record)
    # OUT's lease, as tag_audio --head takes it: one run at a time writes OUT and the heads under it.
    lease = Lease(found.root, record.run_id, lease_ttl_s).acquire()
    try:
        tidy(head.out_dir, record.run_id, check=False)  # what a killed run left in the head's output
        record.write()
        done = set() if force else _done_keys(head)
        model = shared_model(head.source)  # loaded once per process
        builder = head.builder()
        layout = record.layout
        coalesce = CoalesceTables()
        stats: dict[tuple[str, int], ScoreStats] = {}
        staged: list[str] = []
        sort_by = ["uri", "channel", "frame_index"]
        columns = ["uri", "channel", "frame_index", *head.columns]
        tables: list[pa.Table] = []
        for batch in _frame_batches(found, columns, config, (STATUS_OK, STATUS_PARTIAL)):
            channel = pc.fill_null(batch.column("channel"), -1).to_numpy(zero_copy_only=False) \
                if "channel" in batch.schema.names else np.full(batch.num_rows, -1)
            uris = batch.column("uri").to_pylist()
            keep = np.array([(u, int(c)) not in done for u, c in zip(uris, channel)], bool)
            if not keep.all():
                batch = batch.filter(pa.array(keep))
                uris = [u for u, k in zip(uris, keep) if k]
                channel = channel[keep]
            if not batch.num_rows:
                continue
            scores = model.score_frames({name: _matrix(batch.column(name)) for name in head.columns})
            channels = [None if c < 0 else int(c) for c in channel]
            frame_index = batch.column("frame_index").to_numpy().astype(np.int64)
            tables.append(builder.build(uris, frame_index, {"scores": scores}, channels))
            keys = list(zip(uris, channel.tolist()))
            groups: dict[tuple[str, int], list[int]] = {}
            for row, key in enumerate(keys):
                groups.setdefault(key, []).append(row)
            for key, rows in groups.items():
                part = ScoreStats.of(scores[rows], None if key[1] < 0 else key[1])
                stats[key] = part if key not in stats else stats[key].merge(part)
            applied.frames += batch.num_rows
        coalesce.start_bundle()
        for table in tables:
            for ready in coalesce.process(table):
                staged.append(_write(layout.staging_prefix(FRAMES), len(staged), in_order(ready, sort_by)))
        for ready in coalesce.finish_bundle():
            staged.append(_write(layout.staging_prefix(FRAMES), len(staged), in_order(ready.value, sort_by)))
        rows = _file_rows(_base_files(found, config), stats, head)
        applied.skipped_files = len(done)
        file_table = pa.Table.from_pylist(rows, schema=files_schema(head.table_spec, head.config))
        staged.append(_write(layout.staging_prefix(FILES), 0, file_table))
        combiner = SummarizeFiles()
        accumulator = combiner.create_accumulator()
        for row in rows:
            accumulator = combiner.add_input(accumulator, row)
        summary = combiner.extract_output(accumulator)
        published = publish(layout, staged)
        plan = {"new": len(rows), "done": len(done)}
        if not lease.held():
            raise ApplyHeadError(f"lost the lease on {found.root} to another run; nothing was published")
        applied.record = commit(final_record(record, summary, plan, published, 1.0), None)
    finally:
        lease.release()
    applied.cpu_s = time.process_time() - cpu
    return applied


def _write(prefix: str, index: int, table: pa.Table) -> str:
    """One staged Parquet part (local or ``gs://``), as the Beam sink would name it."""
    path = f"{prefix}-{index:05d}.parquet"
    storage.makedirs(path.rsplit("/", 1)[0])
    with storage.open_write(path) as out:
        pq.write_table(table, out, compression="zstd")
    return path


def _file_rows(base: pa.Table, stats: dict[tuple[str, int], ScoreStats], head: HeadOutput) -> list[dict]:
    """The head's files rows: the base file's row with the head's frames, clip labels, model and config."""
    rows = []
    for row in base.to_pylist():
        key = (row["uri"], -1 if row.get("channel") is None else row["channel"])
        found = stats.get(key)
        if found is None:
            continue
        labels = head.spec.class_names
        rows.append({**{k: row.get(k) for k in _FILE_COLUMNS}, "num_frames": found.count,
                     "top_labels_mean": top_labels(found.score_sum / found.count, labels, FILE_TOP_LABELS),
                     "top_labels_max": top_labels(found.score_max, labels, FILE_TOP_LABELS),
                     "model": head.spec.identity, "config_id": head.config})
    return rows
