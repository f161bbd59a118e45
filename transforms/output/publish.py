"""How a run becomes visible: its staged Parquet moved into its partitions, then one commit.

The commit (``transforms.output.commit_log``) is the only step that makes a run
visible, and it is one object created only if absent, at the number the run's
lease reserved.  A run killed at any point before it, or one that lost its lease,
leaves Parquet that no reader takes as output; the next run that holds the lease
removes it (``transforms.output.tidy``).  The run record is written after the
commit, for people: readers take a committed run's final record from the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import apache_beam as beam

import storage
from transforms.output import commit_log
from transforms.output.layout import FAILED, FILES, FRAMES, SUCCEEDED, TABLES, RunLayout, RunRecord
from transforms.output.lease import Lease

# The error kind of an input that could not be listed at all: its own word, so that files FFmpeg cannot
# open ('unreadable') never make a run look as if no input could be listed.
UNLISTABLE = "unlistable"


def publish(layout: RunLayout, staged: list[str], tables: tuple[str, ...] = (FRAMES, FILES)
            ) -> dict[str, list[str]]:
    """Moves staged Parquet files to their run partitions. Idempotent (a retried step is harmless).

    ``tables``: the run's partitions made even when nothing was staged for them."""
    published: dict[str, list[str]] = {table: [] for table in tables}
    sources, destinations = [], []
    staging = layout.staging_dir()
    for path in sorted(set(staged)):
        table = next((t for t in TABLES if f"/{t}/" in path[len(staging):]), FILES)
        destination = storage.join(layout.table_dir(table), path.rsplit("/", 1)[-1])
        published.setdefault(table, []).append(destination)
        if storage.exists(path):
            sources.append(path)
            destinations.append(destination)
    for table in published:
        storage.makedirs(layout.table_dir(table))
    storage.rename(sources, destinations)
    # Leftovers (the sink's temp dir) would be harmless under '_staging'; best effort.
    with contextlib.suppress(Exception):
        storage.delete_tree(staging)
    return published


def final_record(record: RunRecord, summary: dict, plan: dict, published: dict[str, list[str]],
                 max_failed_fraction: float, now: float | None = None) -> RunRecord:
    """The record a finished run publishes: its counts, and failed when too many files failed."""
    finished = time.time() if now is None else now
    final = dataclasses.replace(
        record, counts=summary, plan=plan, finished_at=finished, wall_s=finished - record.started_at,
        outputs={table: len(paths) for table, paths in published.items()}, status=SUCCEEDED)
    total = summary.get("files", 0)
    kinds = summary.get("failures_by_kind", {})
    if total and kinds.get(UNLISTABLE, 0) == total:
        final.status = FAILED
        final.reason = f"no input could be listed ({total} of {total} inputs: {UNLISTABLE})"
    elif total and summary.get("failed", 0) / total > max_failed_fraction:
        final.status = FAILED
        final.reason = (f"{summary['failed']} of {total} files failed, more than "
                        f"--max_failed_fraction={max_failed_fraction}")
    return final


def lost_lease(record: RunRecord, **fields) -> RunRecord:
    """The record of a run that lost the output to another run before it could commit."""
    final = dataclasses.replace(record, status=FAILED, finished_at=time.time(), **fields,
                                reason=f"lost the lease on {record.out_dir} to another run; nothing was "
                                       "published (the next run tags these files)")
    final.write()
    return final


def commit(final: RunRecord, lease: Lease | None) -> RunRecord:
    """Commits a run whose Parquet is in its partitions, at the number its lease reserved (without a
    lease: the next free number); then writes its record and gives the lease up. Returns the record:
    failed, with nothing published, when another run took the output first."""
    number = lease.commit_number if lease is not None else commit_log.head(final.out_dir) + 1
    while True:
        committed = dataclasses.replace(final, commit=number)
        entry = commit_log.Commit(commit=number, kind=commit_log.RUN, run_id=final.run_id,
                                  committed_at=time.time(), status=final.status,
                                  record=committed.to_json())
        if commit_log.append(final.out_dir, entry):
            break
        if lease is not None:  # our number is taken: we were fenced out
            return lost_lease(final)
        number = commit_log.head(final.out_dir) + 1
    committed.write()
    if lease is not None:
        lease.release()
    return committed


class PublishRun(beam.DoFn):
    """Runs once, after both tables are written: move the staged parts, commit, write the run record,
    give the output's lease up. A run that lost its lease publishes nothing."""

    def __init__(self, record: RunRecord, max_failed_fraction: float, lease: Lease | None = None):
        self._record = record
        self._max_failed_fraction = max_failed_fraction
        self._lease = lease

    def process(self, summary: dict, staged: list[str], plan: dict):
        if self._lease is not None and not self._lease.held():
            yield lost_lease(self._record, counts=summary, plan=plan).to_json()
            return
        published = publish(self._record.layout, staged)
        final = final_record(self._record, summary, plan, published, self._max_failed_fraction)
        yield self._commit(final).to_json()

    def _commit(self, final: RunRecord) -> RunRecord:
        return commit(final, self._lease)
