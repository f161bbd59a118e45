"""Where a run writes, and how it becomes visible: stage, publish, record.

Layout under OUT_DIR (one dataset per table, one Hive partition per run)::

    frames/run=<id>/part-*.parquet     # readers: pyarrow.dataset / DuckDB / BigQuery / Spark
    files/run=<id>/part-*.parquet
    runs/<id>.json                     # run record: 'running' at start, final status written last
    _staging/run=<id>/...              # work in progress; readers skip '_' paths

A run writes into ``_staging`` and only its final step moves the finished
Parquet files into ``frames/`` and ``files/`` and then writes the run record,
so a run that is killed half-way leaves nothing a reader takes as output.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

FRAMES = "frames"
FILES = "files"
STAGING = "_staging"
RUNS = "runs"

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"


def new_run_id(now: float | None = None) -> str:
    """Sortable by start time (to the millisecond: runs can be under a second apart), unique across
    concurrent launches."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True)
class RunLayout:
    out_dir: str
    run_id: str

    def table_dir(self, table: str) -> str:
        return FileSystems.join(self.out_dir, table, f"run={self.run_id}")

    def staging_dir(self) -> str:
        return FileSystems.join(self.out_dir, STAGING, f"run={self.run_id}")

    def staging_prefix(self, table: str) -> str:
        return FileSystems.join(self.staging_dir(), table, "part")

    def record_path(self) -> str:
        return FileSystems.join(self.out_dir, RUNS, f"{self.run_id}.json")


def write_json(path: str, value: dict) -> None:
    _ensure_parent(path)
    with FileSystems.create(path, mime_type="application/json") as f:
        f.write(json.dumps(value, indent=2, sort_keys=True).encode())


def read_json(path: str) -> dict:
    with FileSystems.open(path) as f:
        return json.loads(f.read().decode())


def _ensure_parent(path: str) -> None:
    _ensure_dir(path.rsplit("/", 1)[0])


def publish(layout: RunLayout, staged: list[str]) -> dict[str, list[str]]:
    """Moves staged Parquet files to their run partitions. Idempotent (a retried step is harmless)."""
    published: dict[str, list[str]] = {FRAMES: [], FILES: []}
    sources, destinations = [], []
    for path in sorted(set(staged)):
        table = FRAMES if f"/{FRAMES}/" in path[len(layout.staging_dir()):] else FILES
        destination = FileSystems.join(layout.table_dir(table), path.rsplit("/", 1)[-1])
        published[table].append(destination)
        if FileSystems.exists(path):
            sources.append(path)
            destinations.append(destination)
    for table in (FRAMES, FILES):
        _ensure_dir(layout.table_dir(table))
    if sources:
        FileSystems.rename(sources, destinations)
    # Leftovers (the sink's temp dir) would be harmless under '_staging'; best effort.
    with contextlib.suppress(Exception):
        FileSystems.delete([layout.staging_dir()])
    return published


def _ensure_dir(path: str) -> None:
    # Object stores have no directories; local filesystems need them before a rename.
    if "://" not in path and not FileSystems.exists(path):
        FileSystems.mkdirs(path)


class PublishRun(beam.DoFn):
    """Runs once, after both tables are written: publish files, then write the final run record."""

    def __init__(self, layout: RunLayout, record: dict, max_failed_fraction: float):
        self._layout = layout
        self._record = record
        self._max_failed_fraction = max_failed_fraction

    def process(self, summary: dict, staged: list[str], plan: dict):
        published = publish(self._layout, staged)
        record = dict(self._record)
        record["counts"] = summary
        record["plan"] = plan
        record["finished_at"] = time.time()
        record["wall_s"] = record["finished_at"] - record["started_at"]
        record["outputs"] = {table: len(paths) for table, paths in published.items()}
        record["status"] = SUCCEEDED
        total = summary.get("files", 0)
        if total and summary.get("failed", 0) / total > self._max_failed_fraction:
            record["status"] = FAILED
            record["reason"] = (f"{summary['failed']} of {total} files failed, more than "
                                f"--max_failed_fraction={self._max_failed_fraction}")
        write_json(self._layout.record_path(), record)
        yield record
