"""The output layout, the product's public contract: where a run writes, its record, its id.

Layout under OUT_DIR (one dataset per table, one Hive partition per run)::

    frames/run=<id>/part-*.parquet     # readers: pyarrow.dataset / DuckDB / BigQuery / Spark
    files/run=<id>/part-*.parquet
    events/run=<id>/part-*.parquet     # with tag_audio --events, or written by beam_jobs.events
    runs/<id>.json                     # run record: what was asked, how it went (never the authority)
    runs/compacted/<id>.json           # records of runs that compaction removed
    _log/<commit>.json                 # the commit log: one object per published run, created if absent
    _lease.json                        # the run (or compaction) that holds the output now
    _readers/<id>.json                 # jobs reading the output now (compaction leaves their runs)
    _staging/run=<id>/...              # work in progress; readers skip '_' paths
    _quarantine/...                    # damaged parts moved aside by ``compact --repair``

A run is *published* when the commit log names it (``transforms.output.commit_log``):
one object, created only if absent and never rewritten, numbered so that the
highest commit is the latest everywhere.  Parquet of a run that never committed
(killed, interrupted, lost its lease) is invisible to every reader, and the next
run that holds the lease removes it.  This module names every path under OUT.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any, Self

import storage

FRAMES = "frames"
FILES = "files"
EVENTS = "events"
TABLES = (FRAMES, FILES, EVENTS)
STAGING = "_staging"
RUNS = "runs"
COMPACTED = "compacted"
LOG = "_log"
LEASE_FILE = "_lease.json"
READERS = "_readers"
QUARANTINE = "_quarantine"
COMMIT_DIGITS = 20  # zero-padded, so that names sort as numbers (Delta Lake's log does the same)
RUN_PREFIX = "run="
PARQUET_SUFFIX = ".parquet"

RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
PUBLISHED_STATUSES = (SUCCEEDED, FAILED)

LEGACY_PROTOCOL = 1  # a run is published when its record says succeeded or failed
LOG_PROTOCOL = 2  # a run is published when the commit log names it


def new_run_id(now: float | None = None) -> str:
    """Sortable by start time (to the millisecond: runs can be under a second apart), unique across
    concurrent launches."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{secrets.token_hex(3)}"


def run_of_path(path: str) -> str | None:
    """The run id of a part path ``.../<table>/run=<id>/part.parquet`` wherever it is stored; None when
    no segment names a run (a table read whole, outside the layout)."""
    return next((p[len(RUN_PREFIX):] for p in reversed(path.split("/")) if p.startswith(RUN_PREFIX)), None)


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


class JsonFields:
    """A dataclass as one JSON object: fields that are None are left out, and keys a newer version
    added are ignored when read, so records and log entries stay readable both ways across versions."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Self:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in value.items() if k in known})


@dataclasses.dataclass(frozen=True)
class OutputLayout:
    """The paths of an OUT_DIR that belong to no single run."""

    out_dir: str

    def lease_path(self) -> str:
        return storage.join(self.out_dir, LEASE_FILE)

    def log_dir(self) -> str:
        return storage.join(self.out_dir, LOG)

    def commit_path(self, commit: int) -> str:
        return storage.join(self.log_dir(), f"{commit:0{COMMIT_DIGITS}d}.json")

    def runs_dir(self) -> str:
        return storage.join(self.out_dir, RUNS)

    def record_path(self, run_id: str) -> str:
        return storage.join(self.runs_dir(), f"{run_id}.json")

    def compacted_record_path(self, run_id: str) -> str:
        return storage.join(self.runs_dir(), COMPACTED, f"{run_id}.json")

    def staging_root(self) -> str:
        return storage.join(self.out_dir, STAGING)

    def plan_path(self, plan_id: str) -> str:
        """Where ``--plan_only`` leaves its counts for the driver to read (then deletes them)."""
        return storage.join(self.staging_root(), f"plan-{plan_id}.json")

    def table_dir(self, table: str, run_id: str) -> str:
        return storage.join(self.out_dir, table, f"{RUN_PREFIX}{run_id}")

    def table_parts(self, table: str, run_id: str) -> str:
        """A glob of one run's Parquet parts of ``table``."""
        return storage.join(self.table_dir(table, run_id), f"*{PARQUET_SUFFIX}")

    def readers_dir(self) -> str:
        return storage.join(self.out_dir, READERS)

    def reader_path(self, reader_id: str) -> str:
        return storage.join(self.readers_dir(), f"{reader_id}.json")

    def quarantine_path(self, path: str) -> str:
        """Where a damaged part below OUT is moved by ``compact --repair`` (its relative path kept)."""
        root = self.out_dir.rstrip("/") + "/"
        relative = path[len(root):] if path.startswith(root) else path.rsplit("/", 1)[-1]
        return storage.join(self.out_dir, QUARANTINE, relative)


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """The paths of one run under OUT_DIR."""

    out_dir: str
    run_id: str

    @property
    def output(self) -> OutputLayout:
        return OutputLayout(self.out_dir)

    def table_dir(self, table: str) -> str:
        return self.output.table_dir(table, self.run_id)

    def staging_dir(self) -> str:
        return storage.join(self.output.staging_root(), f"{RUN_PREFIX}{self.run_id}")

    def staging_prefix(self, table: str) -> str:
        return storage.join(self.staging_dir(), table, "part")

    def record_path(self) -> str:
        return self.output.record_path(self.run_id)


@dataclasses.dataclass
class RunRecord(JsonFields):
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
    commit: int | None = None  # its number in the commit log, once committed
    protocol: int = LEGACY_PROTOCOL  # records written before the commit log have none (1)

    @property
    def legacy_published(self) -> bool:
        """A record of the protocol before the commit log, whose final record was its publication."""
        return self.protocol == LEGACY_PROTOCOL and self.status in PUBLISHED_STATUSES

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.out_dir, self.run_id)

    def write(self) -> None:
        """Whole or not at all: a reader never sees a half-written record."""
        storage.write_json_atomic(self.layout.record_path(), self.to_json())

    @classmethod
    def read(cls, path: str) -> RunRecord | None:
        """The record at ``path``; None when it is half-written or damaged (an unfinished run)."""
        try:
            value = storage.read_json(path)
            return cls.from_json(value) if isinstance(value, dict) else None
        except (OSError, ValueError, TypeError):
            return None

    def reread(self) -> RunRecord:
        """The record as the run's pipeline left it; RuntimeError when it left none."""
        final = RunRecord.read(self.layout.record_path())
        if final is None:
            raise RuntimeError(f"run {self.run_id} ended without its record at {self.layout.record_path()}")
        return final
