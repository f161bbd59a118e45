"""The output layout, the product's public contract: where a run writes, its record, its id.

Layout under OUT_DIR (one dataset per table, one Hive partition per run)::

    frames/run=<id>/part-*.parquet     # readers: pyarrow.dataset / DuckDB / BigQuery / Spark
    files/run=<id>/part-*.parquet
    events/run=<id>/part-*.parquet     # with tag_audio --events, or written by beam_jobs.events
    runs/<id>.json                     # run record: 'running' at start, final status written last
    _staging/run=<id>/...              # work in progress; readers skip '_' paths

A run is *published* once its final record (succeeded or failed) is written:
its Parquet was moved into ``frames/`` and ``files/`` before that, so a run
killed half-way is still 'running' and leaves nothing a reader takes as
output (``transforms.output.publish``).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

import storage

FRAMES = "frames"
FILES = "files"
EVENTS = "events"
TABLES = (FRAMES, FILES, EVENTS)
STAGING = "_staging"
RUNS = "runs"
RUN_PREFIX = "run="
PARQUET_SUFFIX = ".parquet"

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
PUBLISHED_STATUSES = (SUCCEEDED, FAILED)


def new_run_id(now: float | None = None) -> str:
    """Sortable by start time (to the millisecond: runs can be under a second apart), unique across
    concurrent launches."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{secrets.token_hex(3)}"


def run_id_of(out_dir: str, path: str) -> str | None:
    """The run a published path belongs to, read from the path *below* ``out_dir`` only
    (``out_dir`` itself may contain ``run=``): ``frames/run=<id>/...`` or ``runs/<id>.json``."""
    root = out_dir.rstrip("/") + "/"
    if not path.startswith(root):
        root = storage.local_path(root)
        path = storage.local_path(path)
        if not path.startswith(root):
            return None
    segments = path[len(root):].split("/")
    if len(segments) == 2 and segments[0] == RUNS and segments[1].endswith(".json"):
        return segments[1][:-len(".json")]
    if len(segments) >= 2 and segments[0] in TABLES and segments[1].startswith(RUN_PREFIX):
        return segments[1][len(RUN_PREFIX):]
    return None


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The paths of one run under OUT_DIR."""

    out_dir: str
    run_id: str

    def table_dir(self, table: str) -> str:
        return storage.join(self.out_dir, table, f"{RUN_PREFIX}{self.run_id}")

    def staging_dir(self) -> str:
        return storage.join(self.out_dir, STAGING, f"{RUN_PREFIX}{self.run_id}")

    def staging_prefix(self, table: str) -> str:
        return storage.join(self.staging_dir(), table, "part")

    def record_path(self) -> str:
        return storage.join(self.out_dir, RUNS, f"{self.run_id}.json")


@dataclasses.dataclass
class RunRecord:
    """``runs/<id>.json``: what a run was asked to do, with which model, and how it ended."""

    run_id: str
    out_dir: str = ""
    started_at: float = 0.0
    version: str = ""
    status: str = RUNNING
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: dict[str, Any] = dataclasses.field(default_factory=dict)
    counts: dict[str, Any] | None = None
    plan: dict[str, int] | None = None
    finished_at: float | None = None
    wall_s: float | None = None
    outputs: dict[str, int] | None = None
    reason: str | None = None

    @property
    def published(self) -> bool:
        """Its Parquet is in place and final: the one definition readers and backfills use."""
        return self.status in PUBLISHED_STATUSES

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.out_dir, self.run_id)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RunRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})

    def write(self) -> None:
        storage.write_json(self.layout.record_path(), self.to_json())

    @classmethod
    def read(cls, path: str) -> RunRecord | None:
        """The record at ``path``; None when it is half-written or damaged (an unfinished run)."""
        try:
            value = storage.read_json(path)
            return cls.from_json(value) if isinstance(value, dict) else None
        except (OSError, ValueError, TypeError):
            return None
