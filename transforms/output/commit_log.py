"""The commit log: how a run becomes visible, once, in a total order.

``OUT/_log/<commit>.json`` holds one entry per commit, numbered from 1 and
created only if absent (``storage.create_exclusive``: a generation-0 write on
GCS, an exclusive link locally), never rewritten.  Delta Lake's transaction
log is the model: the number is the order, so "latest" is the highest commit
for every reader (done-set, current view, events, training sets), never a sort
of run ids or start times.  Each entry is one line of JSON, so DuckDB's
``read_json`` and BigQuery's newline-delimited JSON tables read the log as it is.

A run that holds the output's lease commits at the number after the head it
saw when it took the lease (``Lease.base_commit``).  A run taking over a stale
lease first writes a *fence* at that number in the old holder's name, so the
old holder, should it wake up mid-publish, finds its number taken and cannot
commit: a run that lost its lease never becomes visible.

Kinds of entry:

- ``run``: a run's data is published; the entry carries its final record;
- ``fence``: the run it names lost the output and never commits.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import storage
from transforms.output.layout import COMMIT_DIGITS, JsonFields, OutputLayout

_log = logging.getLogger(__name__)

RUN = "run"
FENCE = "fence"


@dataclasses.dataclass(frozen=True)
class Commit(JsonFields):
    commit: int
    kind: str
    run_id: str
    committed_at: float
    status: str | None = None  # a run's final status (succeeded | failed)
    record: dict[str, Any] | None = None  # a run's final record
    reason: str | None = None  # why a fence was written


def _number(name: str) -> int | None:
    stem = name[:-len(".json")] if name.endswith(".json") else ""
    return int(stem) if len(stem) == COMMIT_DIGITS and stem.isdigit() else None


def commit_numbers(out_dir: str) -> list[int]:
    """The numbers in the log, ascending; none for an output without a log."""
    names = storage.list_names(OutputLayout(out_dir).log_dir(), missing_ok=True)
    return sorted(n for n in map(_number, names) if n is not None)


def head(out_dir: str) -> int:
    """The highest commit number, 0 when nothing was committed."""
    numbers = commit_numbers(out_dir)
    return numbers[-1] if numbers else 0


def read_commit(out_dir: str, number: int) -> Commit | None:
    path = OutputLayout(out_dir).commit_path(number)
    try:
        value = storage.read_json(path)
        return Commit.from_json(value) if isinstance(value, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:  # created whole, so only a foreign object gets here
        _log.warning("commit log entry %s is unreadable (%s); it is ignored", path, e)
        return None


def read_log(out_dir: str, parallel=None) -> list[Commit]:
    """Every readable entry, in commit order. ``parallel``: a map function for the reads (I/O-bound)."""
    numbers = commit_numbers(out_dir)
    mapper = parallel or (lambda f, items: [f(i) for i in items])
    entries = mapper(lambda n: read_commit(out_dir, n), numbers)
    return [e for e in entries if e is not None]


def append(out_dir: str, entry: Commit) -> bool:
    """Creates entry ``entry.commit`` if no entry has that number; returns whether this call did."""
    path = OutputLayout(out_dir).commit_path(entry.commit)
    data = (json.dumps(entry.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()
    return storage.create_exclusive(path, data)


def fence(out_dir: str, seen_head: int, run_id: str, reason: str) -> int:
    """Takes the number after ``seen_head`` from ``run_id`` (a stale lease holder); returns the head
    after it: the fence's number, or a higher one if the old holder committed first."""
    while True:
        entry = Commit(commit=seen_head + 1, kind=FENCE, run_id=run_id, committed_at=time.time(),
                       reason=reason)
        if append(out_dir, entry):
            return entry.commit
        seen_head = head(out_dir)  # somebody committed meanwhile: the old holder, just before the fence
