"""What the holder of an output's lease does before it reads earlier runs: adopt, clear, check.

- *Adopt*: runs published before the commit log existed (their final record was
  their publication) are written into the log in the order they started, so
  that every reader, the SQL views included, reads one log.
- *Clear*: Parquet, staging and records of runs that never committed (killed,
  interrupted, fenced out, failed before publishing) are removed or marked, so
  nothing is left that a reader globbing the tables could take as output.
- *Check*: every committed files part (what the done-set reads) has a readable
  footer; a damaged one is named with what to do, before any work.

Only the lease holder may clear: no other run can be writing meanwhile.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

import storage
from transforms.output import commit_log
from transforms.output.layout import FAILED, RUN_PREFIX, RUNNING, TABLES, OutputLayout, RunLayout
from transforms.output.reader import DamagedOutputError, OutputDir, RunOutput, damaged_parts, find_output

PROBE_PREFIX = "_write_probe-"
PROBE_AGE_S = 600.0


@dataclasses.dataclass(frozen=True)
class Tidied:
    head: int  # the log's head after adoption
    adopted: tuple[str, ...]
    cleared: tuple[str, ...]  # uncommitted runs whose Parquet and staging were removed


def adopt_legacy_runs(found: OutputDir) -> tuple[int, tuple[str, ...]]:
    """Writes the legacy-published runs into the log, oldest first; returns (head, their ids)."""
    legacy = [run for run in found.published if run.commit is not None and run.commit <= 0]
    head = commit_log.head(found.root)
    adopted = []
    for run in legacy:
        number = head + 1
        record = dataclasses.replace(run.record, commit=number)
        entry = commit_log.Commit(commit=number, kind=commit_log.RUN, run_id=run.run_id,
                                  committed_at=time.time(), status=record.status, record=record.to_json())
        if not commit_log.append(found.root, entry):
            head = commit_log.head(found.root)  # another holder adopted it first: re-read and stop
            break
        head = number
        adopted.append(run.run_id)
    return head, tuple(adopted)


def clear_run(out_dir: str, run: RunOutput, by: str) -> None:
    """Removes an uncommitted run's Parquet and staging; its record, if any, says what happened."""
    layout = OutputLayout(out_dir)
    for table in TABLES:
        storage.delete_tree(layout.table_dir(table, run.run_id))
    storage.delete_tree(RunLayout(out_dir, run.run_id).staging_dir())
    if run.record is not None and run.record.status == RUNNING and run.record_path:
        # Written where it was found: a copied output's records may name the directory they came from.
        failed = dataclasses.replace(
            run.record, status=FAILED, finished_at=run.record.finished_at or time.time(),
            reason=f"never committed (killed or crashed); its partial output was removed by run {by}")
        storage.write_json_atomic(run.record_path, failed.to_json())


def clear_uncommitted(found: OutputDir, own_run_id: str) -> tuple[str, ...]:
    """Clears every run that never committed except ``own_run_id``, and stale staging and probes."""
    cleared = []
    for run in found.uncommitted:
        if run.run_id == own_run_id:
            continue
        if run.frames or run.files or run.events or (run.record is not None and run.record.status == RUNNING):
            clear_run(found.root, run, own_run_id)
            cleared.append(run.run_id)
    # Staged parts of runs that are gone; a --plan_only's plan file (no lease) is its own business.
    staging_root = storage.local_path(OutputLayout(found.root).staging_root()).rstrip("/") + "/"
    own = storage.local_path(RunLayout(found.root, own_run_id).staging_dir()) + "/"
    with contextlib.suppress(FileNotFoundError):
        storage.delete([stored.path for stored in storage.list_files(staging_root)
                        if storage.local_path(stored.path).startswith(staging_root + RUN_PREFIX)
                        and not storage.local_path(stored.path).startswith(own)])
    # Write probes of runs that died between their probe's write and delete; a fresh one is another
    # run's, checking the output right now (it deletes its own).
    with contextlib.suppress(FileNotFoundError):
        old = time.time() - PROBE_AGE_S
        storage.delete([probe.path for probe in storage.match(storage.join(found.root, PROBE_PREFIX + "*"))
                        if probe.last_modified is not None and probe.last_modified < old])
    return tuple(cleared)


def tidy(out_dir: str, own_run_id: str, check: bool = True) -> Tidied:
    """Adopts legacy runs, clears uncommitted ones and (``check``) checks committed files parts; raises
    DamagedOutputError naming a damaged part. Call only while holding the output's lease."""
    try:
        found = find_output(out_dir)
    except FileNotFoundError:
        return Tidied(head=0, adopted=(), cleared=())
    head, adopted = adopt_legacy_runs(found)
    cleared = clear_uncommitted(found, own_run_id)
    if check and (damaged := damaged_parts(found)):
        raise DamagedOutputError(found.root, damaged)
    return Tidied(head=head, adopted=adopted, cleared=cleared)
