"""Compaction: remove the runs whose every row is superseded, on request.

A run is removed only when it is published (its final record is written) and
none of its files rows is current or latest (``transforms.output.current``):
every file and config it holds has a later result that stays.  What readers
see through the current view, and what the next run's done-set decides, are
the same before and after.  Runs still 'running' (or killed, or without a
record) are never touched, and runs that hold any current row are kept whole:
compaction deletes whole runs, it never rewrites Parquet.

Order, so that a compaction stopped half-way is finished by the next one: a
run's frames parts, then its files parts, then its record, which is moved to
``runs/compacted/<id>.json`` (kept for its parameters and counts; readers of
the layout only look at ``runs/<id>.json``).  Every delete and move goes
through ``storage``.  Compaction holds the output's lease
(``transforms.output.lease``) while it plans and deletes, so no tag_audio run
works on the output meanwhile, and it does not start while one does.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import storage
from transforms.output.current import RowStates, row_states
from transforms.output.layout import TABLES, OutputLayout, new_run_id
from transforms.output.lease import DEFAULT_TTL_S, Lease
from transforms.output.read_pins import pinned_runs
from transforms.output.reader import OutputDir, RunOutput, count_rows, find_output
from transforms.output.tidy import tidy


@dataclasses.dataclass(frozen=True)
class RunRemoval:
    run: RunOutput
    files_rows: int
    frames_rows: int

    @property
    def bytes(self) -> int:
        return self.run.frames_bytes + self.run.files_bytes


@dataclasses.dataclass(frozen=True)
class CompactionPlan:
    out_dir: str
    remove: tuple[RunRemoval, ...]  # oldest first
    kept: tuple[str, ...]  # published runs that hold current or latest rows
    untouched: tuple[RunOutput, ...]  # not published: running, killed, no or damaged record
    states: RowStates
    being_read: dict[str, str] = dataclasses.field(default_factory=dict)  # superseded, but a job reads them

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.remove)


def plan_compaction(out_dir: str | OutputDir) -> CompactionPlan:
    found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
    states = row_states(found)
    superseded = set(states.superseded_runs())
    pinned = pinned_runs(found.root)
    being_read = {run_id: job for run_id, job in pinned.items() if run_id in superseded}
    remove = []
    for run in found.published:
        if run.run_id in being_read:
            continue
        if run.run_id in superseded and run.files:  # an events-only run (beam_jobs.events) has no rows here
            counts = states.counts(run.run_id)
            remove.append(RunRemoval(run, files_rows=sum(counts.values()),
                                     frames_rows=count_rows(run.frames)))
    kept = tuple(r for r in states.run_ids if r not in superseded)
    untouched = tuple(run for run in found.runs if not run.published)
    return CompactionPlan(out_dir=found.root, remove=tuple(remove), kept=kept, untouched=untouched,
                          states=states, being_read=being_read)


def repair(out_dir: str, damaged: list[tuple[str, str]]) -> list[str]:
    """Moves each damaged part's run (every part of it) to ``_quarantine/``; returns the runs moved."""
    found = find_output(out_dir)
    layout = OutputLayout(found.root)
    paths = {path for path, _ in damaged}
    moved = []
    for run in found.runs:
        parts = [p.path for table in TABLES for p in run.parts(table)]
        if paths & set(parts):
            storage.rename(parts, [layout.quarantine_path(p) for p in parts])
            moved.append(run.run_id)
    return moved


def remove_run(removal: RunRemoval, states: RowStates, out_dir: str) -> None:
    run = removal.run
    # Checked again here, whoever built the plan: a run that is not published, or that holds a current
    # or latest row, is never removed.
    if not run.published:
        raise ValueError(f"run {run.run_id} is not published (status {run.status}); it is never removed")
    if run.run_id in states.kept_runs() or run.run_id not in states.run_ids:
        raise ValueError(f"run {run.run_id} holds current or latest rows; it is never removed")
    for parts in (run.frames, run.files, run.events):  # a run's events go with the frames they came from
        storage.delete([p.path for p in parts])
        for directory in sorted({storage.parent(p.path) for p in parts}):
            storage.delete_tree(directory)  # the run's partition directory (local: now empty)
    if run.record_path is not None:
        archive = OutputLayout(out_dir).compacted_record_path(run.run_id)
        storage.write_bytes(archive, storage.read_bytes(run.record_path), "application/json")
        storage.delete([run.record_path])


@contextlib.contextmanager
def holding_output(out_dir: str, ttl_s: float = DEFAULT_TTL_S) -> Iterator[Lease]:
    """The output's lease, held by this compaction; raises OutputBusyError while a run holds it."""
    lease = Lease(out_dir, f"compact-{new_run_id()}", ttl_s).acquire()
    try:
        tidy(out_dir, lease.run_id, check=False)
        yield lease
    finally:
        lease.release()


def compact(plan: CompactionPlan, lease: Lease | None = None) -> list[str]:
    """Removes the plan's runs (renewing ``lease`` between runs); returns their ids."""
    removed = []
    for removal in plan.remove:
        if lease is not None:
            lease.renew()  # raises LeaseLostError rather than delete under another holder
        remove_run(removal, plan.states, plan.out_dir)
        removed.append(removal.run.run_id)
    return removed
