"""How a run becomes visible: its staged Parquet moved into place, then its final record.

The record is written last, so a reader that sees a published record sees the
whole run, and a run killed at any point before leaves only staging files and
a 'running' record behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import apache_beam as beam

import storage
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


class PublishRun(beam.DoFn):
    """Runs once, after both tables are written: publish files, then write the final run record,
    then give the output's lease up. A run that lost its lease publishes nothing."""

    def __init__(self, record: RunRecord, max_failed_fraction: float, lease: Lease | None = None):
        self._record = record
        self._max_failed_fraction = max_failed_fraction
        self._lease = lease

    def process(self, summary: dict, staged: list[str], plan: dict):
        if self._lease is not None and not self._lease.held():
            final = dataclasses.replace(self._record, status=FAILED, counts=summary, plan=plan,
                                        finished_at=time.time(),
                                        reason=f"lost the lease on {self._record.out_dir} to another run; "
                                               "nothing was published (the next run tags these files)")
            final.write()
            yield final.to_json()
            return
        published = publish(self._record.layout, staged)
        final = final_record(self._record, summary, plan, published, self._max_failed_fraction)
        final.write()
        if self._lease is not None:
            self._lease.release()
        yield final.to_json()
