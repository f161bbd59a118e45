"""The reader API over an OUT_DIR, local or ``gs://``: runs, their records, their Parquet.

Backfills, training sets, ``inspect``, ``plot`` and the run summary all read
through here.  OUT_DIR may also be a table or run directory itself
(``OUT_DIR/frames`` or ``OUT_DIR/frames/run=<id>``).  Paths below a directory
whose name starts with ``_`` or ``.`` (staging, sink temp dirs) are work in
progress: counted in disk usage, never read as output.

Reading projects columns and pushes a ``uri`` filter down to Parquet row-group
statistics, so a reader pays for the columns and row groups it needs only.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import storage
from schemas.tables import class_names_from, read_model_metadata
from storage import StoredFile
from transforms.output import commit_log
from transforms.output.layout import (
    EVENTS,
    FILES,
    FRAMES,
    LOG,
    PARQUET_SUFFIX,
    READERS,
    RUN_PREFIX,
    RUNS,
    SUCCEEDED,
    TABLES,
    OutputLayout,
    RunRecord,
    run_id_of,
)

_IO_THREADS = 8  # object-store reads are latency-bound; a few in flight hide it


@dataclasses.dataclass(frozen=True)
class RunOutput:
    """One run's Parquet parts and its run record (None: no record, or a damaged one)."""

    run_id: str
    frames: tuple[StoredFile, ...] = ()
    files: tuple[StoredFile, ...] = ()
    events: tuple[StoredFile, ...] = ()  # only with tag_audio --events or beam_jobs.events
    record_path: str | None = None
    record: RunRecord | None = None
    commit: int | None = None  # its place in the commit log; None: never committed (invisible)

    @property
    def status(self) -> str | None:
        """'running' | 'succeeded' | 'failed' from the run record; None without a record."""
        return self.record.status if self.record else None

    @property
    def published(self) -> bool:
        """Committed: its rows are output. The one definition every reader and backfill uses."""
        return self.commit is not None

    @property
    def frames_bytes(self) -> int:
        return sum(f.size_bytes for f in self.frames)

    @property
    def files_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    def parts(self, table: str) -> tuple[StoredFile, ...]:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; expected one of {TABLES}")
        return {FRAMES: self.frames, FILES: self.files, EVENTS: self.events}[table]

    @property
    def label(self) -> str:
        return f"{RUN_PREFIX}{self.run_id}"


@dataclasses.dataclass(frozen=True)
class OutputDir:
    """Everything found under an OUT_DIR; runs oldest first."""

    root: str
    runs: tuple[RunOutput, ...]
    total_bytes: int  # every object under root, run records and work in progress included
    in_progress_bytes: int  # below '_' / '.' directories (staging, sink temp files)
    head: int = 0  # the commit log's highest number

    @property
    def uncommitted(self) -> tuple[RunOutput, ...]:
        """Runs with data or a record that never committed: killed, interrupted, fenced, or running now."""
        return tuple(run for run in self.runs if not run.published)

    def run(self, run_id: str | None) -> RunOutput:
        for run in self.runs:
            if run.run_id == run_id:
                return run
        known = ", ".join(r.label for r in self.runs) or "none"
        raise KeyError(f"no run {run_id!r} under {self.root} (runs: {known})")

    @property
    def latest_first(self) -> tuple[RunOutput, ...]:
        return tuple(reversed(self.runs))

    @property
    def published(self) -> tuple[RunOutput, ...]:
        """Runs whose final record is written (succeeded or failed), oldest first."""
        return tuple(run for run in self.runs if run.published)

    @property
    def succeeded(self) -> tuple[RunOutput, ...]:
        return tuple(run for run in self.runs if run.status == SUCCEEDED)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """How to interpret a table's numbers, from its Parquet key-value metadata."""

    name: str
    identity: str
    fingerprint: str
    class_names: tuple[str, ...]
    sample_rate: int | None
    window_s: float | None
    hop_s: float | None

    @classmethod
    def from_schema(cls, schema: pa.Schema) -> ModelInfo:
        meta = read_model_metadata(schema)

        def number(key: str, kind: Callable[[str], Any]) -> Any:
            return kind(meta[key]) if meta.get(key) else None

        return cls(
            name=meta.get("model", ""),
            identity=meta.get("model_identity", ""),
            fingerprint=meta.get("model_fingerprint", ""),
            class_names=tuple(class_names_from(schema)),
            sample_rate=number("sample_rate", int),
            window_s=number("window_s", float),
            hop_s=number("hop_s", float),
        )


@dataclasses.dataclass(frozen=True)
class Footer:
    """What a Parquet footer says about one part, read without touching column data."""

    part: StoredFile
    num_rows: int
    num_row_groups: int
    schema: pa.Schema  # Arrow schema with the key-value metadata


# -- finding runs -----------------------------------------------------------------------------------

def _split_root(out_dir: str) -> tuple[str, str]:
    """(OUT_DIR, the path given): a table or run directory given as OUT_DIR names its OUT_DIR.

    An OUT_DIR that is merely named like a table (``--output results/events``) has its own ``runs/``.
    """
    root = out_dir.rstrip("/") or out_dir
    segments = root.split("/")
    for depth in (1, 2):
        if len(segments) > depth and segments[-depth] in TABLES and (
                depth == 1 or segments[-1].startswith(RUN_PREFIX)):
            if depth == 1 and storage.exists(OutputLayout(root).runs_dir()):
                break
            return "/".join(segments[:-depth]), root
    return root, root


def find_output(out_dir: str) -> OutputDir:
    """Lists ``out_dir`` once and sorts what is there into runs, tables and run records."""
    base, root = _split_root(out_dir)
    objects = storage.list_files(root)
    if base != root:  # a table or run directory: its runs' records live under OUT_DIR/runs
        with contextlib.suppress(FileNotFoundError):
            objects += storage.list_files(OutputLayout(base).runs_dir())
    parts: dict[str, dict[str, list[StoredFile]]] = {}
    records: dict[str, str] = {}
    in_progress = 0
    for obj in objects:
        relative = obj.path[len(storage.local_path(base).rstrip("/")) + 1:].split("/")
        if any(d.startswith(("_", ".")) for d in relative[:-1]):
            if relative[0] not in (LOG, READERS):  # the commit log and read pins are not work in progress
                in_progress += obj.size_bytes
            continue
        run_id = run_id_of(base, obj.path)
        if run_id is None:
            continue
        if relative[0] == RUNS:
            records[run_id] = obj.path
        elif relative[-1].endswith(PARQUET_SUFFIX) and not relative[-1].startswith(("_", ".")):
            parts.setdefault(run_id, {table: [] for table in TABLES})[relative[0]].append(obj)
    if base != root:  # only the runs below the directory given
        records = {rid: path for rid, path in records.items() if rid in parts}
    log = commit_log.read_log(base, map_parallel)
    committed = {entry.run_id: entry for entry in log if entry.kind == commit_log.RUN}
    if base != root:
        committed = {rid: entry for rid, entry in committed.items() if rid in parts}
    run_ids = list(set(parts) | set(records) | set(committed))
    loaded = dict(zip(run_ids, map_parallel(
        lambda rid: RunRecord.read(records[rid]) if rid in records else None, run_ids)))
    commits = _commit_numbers(committed, loaded)
    runs = []
    for rid in run_ids:
        record = loaded[rid]
        if rid in committed and committed[rid].record:  # the commit's record is the final one
            record = RunRecord.from_json({**committed[rid].record, "commit": committed[rid].commit})
        runs.append(RunOutput(
            run_id=rid,
            frames=tuple(sorted(parts.get(rid, {}).get(FRAMES, []), key=lambda f: f.path)),
            files=tuple(sorted(parts.get(rid, {}).get(FILES, []), key=lambda f: f.path)),
            events=tuple(sorted(parts.get(rid, {}).get(EVENTS, []), key=lambda f: f.path)),
            record_path=records.get(rid),
            record=record,
            commit=commits.get(rid),
        ))
    runs.sort(key=_run_order)
    return OutputDir(root=root, runs=tuple(runs), total_bytes=sum(o.size_bytes for o in objects),
                     in_progress_bytes=in_progress, head=log[-1].commit if log else 0)


def _commit_numbers(committed: dict[str, commit_log.Commit],
                    records: dict[str, RunRecord | None]) -> dict[str, int]:
    """{run id: commit}: the log's numbers; runs published before the log existed (a final record of the
    legacy protocol, not in the log) come first, numbered below 1 in the order of their start."""
    numbers = {rid: entry.commit for rid, entry in committed.items()}
    legacy = sorted((record.started_at or 0.0, rid) for rid, record in records.items()
                    if record is not None and record.legacy_published and rid not in numbers)
    numbers.update({rid: i - len(legacy) for i, (_, rid) in enumerate(legacy)})
    return numbers


def published_runs(out_dir: str) -> list[tuple[str, int]]:
    """(run id, commit) of the committed runs, in commit order; an OUT_DIR that does not exist yet has
    none."""
    try:
        return [(run.run_id, run.commit) for run in find_output(out_dir).published]
    except FileNotFoundError:
        return []


def _run_order(run: RunOutput) -> tuple:
    # Committed runs in commit order; the others after them, by start time then id.
    started = run.record.started_at if run.record else None
    started = started if isinstance(started, int | float) else 0.0
    return (0, run.commit, 0.0, run.run_id) if run.commit is not None else (1, 0, started, run.run_id)


# -- reading Parquet --------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


def map_parallel(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(item) for item in items]``, a few at a time (I/O-bound work: footers, parts)."""
    if len(items) <= 1:
        return [function(item) for item in items]
    with concurrent.futures.ThreadPoolExecutor(min(_IO_THREADS, len(items))) as pool:
        return list(pool.map(function, items))


def read_footer(part: StoredFile) -> Footer:
    with storage.open_read(part.path) as f:
        metadata = pq.ParquetFile(f).metadata
        return Footer(part, metadata.num_rows, metadata.num_row_groups, metadata.schema.to_arrow_schema())


def read_footers(parts: Sequence[StoredFile]) -> list[Footer]:
    return map_parallel(read_footer, parts)


class DamagedOutputError(Exception):
    """A committed Parquet part cannot be read; ``str(e)`` names it and says what to do."""

    def __init__(self, out_dir: str, damaged: list[tuple[str, str]]):
        self.damaged = damaged
        path, why = damaged[0]
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        super().__init__(f"damaged Parquet part {path}{more}: {why}. Run `python -m beam_jobs.compact "
                         f"{out_dir} --repair` to move it to {OutputLayout(out_dir).quarantine_path(path)} "
                         "(its run's files are then tagged again by the next run)")


def damaged_parts(found: OutputDir, tables: tuple[str, ...] = (FILES,),
                  runs: Sequence[RunOutput] | None = None) -> list[tuple[str, str]]:
    """(path, why) of the parts of ``tables`` of ``runs`` (default: the committed ones) whose Parquet
    footer cannot be read."""
    runs = found.published if runs is None else runs
    parts = [part for run in runs for table in tables for part in run.parts(table)]

    def check(part):
        try:
            read_footer(part)
            return None
        except Exception as e:  # noqa: BLE001 - whatever pyarrow says about the bytes
            return part.path, f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"

    return [d for d in map_parallel(check, parts) if d is not None]


def count_rows(parts: Sequence[StoredFile]) -> int:
    """Rows in all parts, from their footers only."""
    return sum(f.num_rows for f in read_footers(parts))


def read_schema(parts: Sequence[StoredFile]) -> pa.Schema | None:
    """The Arrow schema (with model metadata) of the first part; None when there is none."""
    return read_footer(parts[0]).schema if parts else None


def uri_filter(uri: str | Iterable[str]) -> pc.Expression:
    if isinstance(uri, str):
        return pc.field("uri") == uri
    return pc.field("uri").isin(pa.array(list(uri), pa.string()))


def read_part(part: StoredFile, columns: Sequence[str] | None = None,
              uri: str | Iterable[str] | None = None,
              read_dictionary: Sequence[str] | None = None) -> pa.Table:
    """One part, only ``columns``; with ``uri``, only its rows (row groups skipped by statistics).

    ``read_dictionary``: leaf column paths to read as dictionary arrays (e.g.
    ``top_labels_mean.list.element.label``): repeated strings are then decoded
    once per distinct value, several times faster for label columns.
    """
    filters = uri_filter(uri) if uri is not None else None
    with storage.open_read(part.path) as f:
        return pq.read_table(f, columns=list(columns) if columns is not None else None, filters=filters,
                             read_dictionary=list(read_dictionary) if read_dictionary else None,
                             pre_buffer=True)


def read_parts(parts: Sequence[StoredFile], columns: Sequence[str] | None = None,
               uri: str | Iterable[str] | None = None,
               read_dictionary: Sequence[str] | None = None) -> list[pa.Table]:
    """``read_part`` of every part, a few in parallel; one table per part, in order."""
    if uri is not None and not isinstance(uri, str):
        uri = list(uri)  # read by several threads
    return map_parallel(lambda p: read_part(p, columns, uri, read_dictionary), parts)


def read_table(parts: Sequence[StoredFile], columns: Sequence[str] | None = None,
               uri: str | Iterable[str] | None = None) -> pa.Table:
    """All parts of one table as one Arrow table, keeping the first part's model metadata.

    ``columns`` must exist in the parts (check ``read_schema`` first for optional
    ones such as ``scores`` vs ``top_classes``).
    """
    tables = read_parts(parts, columns, uri)
    if not tables:
        return pa.table({name: pa.array([], pa.null()) for name in columns or []})
    metadata = tables[0].schema.metadata
    table = pa.concat_tables(tables, promote_options="default")
    return table.replace_schema_metadata(metadata)


def read_frames(run: RunOutput, columns: Sequence[str] | None = None,
                uri: str | Iterable[str] | None = None) -> pa.Table:
    return read_table(run.frames, columns, uri)


def read_files(run: RunOutput, columns: Sequence[str] | None = None,
               uri: str | Iterable[str] | None = None) -> pa.Table:
    return read_table(run.files, columns, uri)


def read_events(run: RunOutput, columns: Sequence[str] | None = None,
                uri: str | Iterable[str] | None = None) -> pa.Table:
    return read_table(run.events, columns, uri)


def model_info(run: RunOutput) -> ModelInfo | None:
    """The model of a run, from its frames (else files) Parquet metadata."""
    schema = read_schema(run.frames) or read_schema(run.files)
    return ModelInfo.from_schema(schema) if schema is not None else None
