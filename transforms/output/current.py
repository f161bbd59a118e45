"""The current view: the latest ok result per file and config, over every run of an OUT_DIR.

Every run keeps its own rows (a re-tag, ``--force``, a changed file, a new
model), so a raw read of ``files/`` or ``frames/`` can see several results for
one file.  Each files row of a published run is in one of three states:

- ``current``: the row of the latest run with an ok result for its
  (``uri``, ``config_id``, ``channel``); its frames are that file's current frames;
- ``latest``: the latest attempt for its (``uri``, ``config_id``) when that
  attempt was not ok (a failed or partial re-tag); kept because it is what the
  next run's done-set sees (``--retry_failed``);
- ``superseded``: any other row: a later run has the current or the latest row.

Rows of runs that are not published (still 'running', killed, no record) are
in no state: they are never current and never supersede anything.  The
channels of one file (``tag_audio --channels``) are results of their own:
one channel's row never supersedes another's, nor a mixed (null) one.  Runs are
ordered as the reader orders them (record start time, then run id); the SQL
views in docs/readers.md order the same way.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import STATUS_OK
from storage import StoredFile
from transforms.output.layout import EVENTS, FILES, FRAMES
from transforms.output.reader import OutputDir, RunOutput, find_output, read_events, read_parts

CURRENT = "current"
LATEST = "latest"
SUPERSEDED = "superseded"
STATES = (CURRENT, LATEST, SUPERSEDED)
KEY = ("uri", "config_id")
RUN_COLUMN = "run"  # the Hive partition column every SQL reader adds: the run id
STATE_COLUMNS = ("uri", "config_id", "status", "channel")  # 'channel': absent from older runs
_CHANNEL_KEY = "channel_key"  # the channel, -1 for mixed: joins never match null keys
_STATE_KEY = (*KEY, _CHANNEL_KEY)


@dataclasses.dataclass(frozen=True)
class RowStates:
    """One row per files row of the published runs: ``run``, ``uri``, ``config_id``, ``status``, ``state``."""

    table: pa.Table
    run_ids: tuple[str, ...]  # the published runs, oldest first

    def counts(self, run_id: str | None = None) -> dict[str, int]:
        """{state: rows} of one run, or of all published runs."""
        table = self.table if run_id is None else self.table.filter(pc.equal(self.table[RUN_COLUMN], run_id))
        found = {row["state"]: row["state_count"]
                 for row in table.group_by("state").aggregate([("state", "count")]).to_pylist()}
        return {state: found.get(state, 0) for state in STATES}

    def kept_runs(self) -> set[str]:
        """Runs holding at least one current or latest row."""
        kept = self.table.filter(pc.not_equal(self.table["state"], SUPERSEDED))
        return set(pc.unique(kept[RUN_COLUMN]).to_pylist())

    def superseded_runs(self) -> list[str]:
        """Published runs none of whose rows is current or latest, oldest first: what compaction removes."""
        kept = self.kept_runs()
        return [run_id for run_id in self.run_ids if run_id not in kept]

    def current_keys(self, run_id: str) -> dict[str, list[str]]:
        """{config_id: [uri, ...]} of the current rows of one run."""
        return self._current_by_run.get(run_id, {})

    @functools.cached_property
    def _current_by_run(self) -> dict[str, dict[str, list[str]]]:
        rows = self.table.filter(pc.equal(self.table["state"], CURRENT))
        keys: dict[str, dict[str, list[str]]] = {}
        for run, uri, config in zip(rows[RUN_COLUMN].to_pylist(), rows["uri"].to_pylist(),
                                    rows["config_id"].to_pylist()):
            keys.setdefault(run, {}).setdefault(config, []).append(uri)
        return keys


def _published(found: OutputDir) -> list[RunOutput]:
    return list(found.published)


def classify(runs: Sequence[RunOutput], tables: Sequence[pa.Table],
             statuses: Sequence[str] = (STATUS_OK,)) -> RowStates:
    """States of the rows of ``tables`` (the files rows of ``runs``, oldest run first).

    Each table needs the columns ``uri``, ``config_id`` and ``status``;
    ``statuses`` are the outcomes that count as a result (default: ok only).
    """
    pieces = []
    for order, (run, table) in enumerate(zip(runs, tables)):
        n = table.num_rows
        channel = (table["channel"].cast(pa.int32()) if "channel" in table.column_names
                   else pa.nulls(n, pa.int32()))
        pieces.append(pa.table({
            RUN_COLUMN: pa.array([run.run_id] * n, pa.string()),
            "order": pa.array([order] * n, pa.int32()),
            "uri": table["uri"].cast(pa.string()),
            "config_id": table["config_id"].cast(pa.string()),
            "status": table["status"].cast(pa.string()),
            _CHANNEL_KEY: pc.fill_null(channel, -1),
        }))
    schema = pa.schema([(RUN_COLUMN, pa.string()), ("order", pa.int32()), ("uri", pa.string()),
                        ("config_id", pa.string()), ("status", pa.string()), (_CHANNEL_KEY, pa.int32())])
    rows = pa.concat_tables(pieces) if pieces else schema.empty_table()
    is_result = pc.is_in(rows["status"], pa.array(list(statuses), pa.string()))
    key = list(_STATE_KEY)
    latest = rows.group_by(key).aggregate([("order", "max")]).rename_columns([*key, "latest_order"])
    current = (rows.filter(is_result).group_by(key).aggregate([("order", "max")])
               .rename_columns([*key, "current_order"]))
    joined = (rows.append_column("is_result", is_result)
              .join(latest, key, join_type="left outer")
              .join(current, key, join_type="left outer"))
    current_order = pc.fill_null(joined["current_order"], -1)
    is_current = pc.and_(joined["is_result"], pc.equal(joined["order"], current_order))
    is_latest = pc.equal(joined["order"], joined["latest_order"])
    state = pc.if_else(is_current, CURRENT, pc.if_else(is_latest, LATEST, SUPERSEDED))
    table = pa.table({
        RUN_COLUMN: joined[RUN_COLUMN], "uri": joined["uri"], "config_id": joined["config_id"],
        "status": joined["status"], "state": state.cast(pa.string()),
    }).sort_by([(RUN_COLUMN, "ascending"), ("uri", "ascending")])
    return RowStates(table=table, run_ids=tuple(run.run_id for run in runs))


def row_states(out_dir: str | OutputDir, statuses: Sequence[str] = (STATUS_OK,)) -> RowStates:
    """Reads ``uri``, ``config_id`` and ``status`` of every published run's files rows and classifies them."""
    found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
    runs = _published(found)
    parts = [(i, part) for i, run in enumerate(runs) for part in run.files]
    tables = read_parts([part for _, part in parts], list(STATE_COLUMNS))
    per_run = []
    for i in range(len(runs)):
        own = [t for (owner, _), t in zip(parts, tables) if owner == i]
        per_run.append(pa.concat_tables(own, promote_options="default") if own
                       else pa.schema([(c, pa.string()) for c in STATE_COLUMNS]).empty_table())
    return classify(runs, per_run, statuses)


# -- reading the current rows ------------------------------------------------------------------------

def _mask(table: pa.Table | pa.RecordBatch, keys: dict[str, list[str]]) -> pa.Array:
    """True where (uri, config_id) of a row is one of ``keys`` ({config_id: [uri, ...]})."""
    mask = pa.array([False] * table.num_rows, pa.bool_())
    for config, uris in keys.items():
        mask = pc.or_(mask, pc.and_(pc.equal(table["config_id"], config),
                                    pc.is_in(table["uri"], pa.array(uris, pa.string()))))
    return pc.fill_null(mask, False)


def _with_needed(columns: Sequence[str] | None) -> list[str] | None:
    if columns is None:
        return None
    return list(dict.fromkeys([*columns, *KEY]))


def _read_current(found: OutputDir, states: RowStates, table: str,
                  columns: Sequence[str] | None) -> pa.Table:
    pieces, metadata = [], None
    for run in _published(found):
        keys = states.current_keys(run.run_id)
        if not keys:
            continue
        uris = sorted({uri for group in keys.values() for uri in group})
        for part_table in read_parts(run.parts(table), _with_needed(columns), uri=uris):
            metadata = metadata or part_table.schema.metadata
            selected = part_table.filter(_mask(part_table, keys))
            if columns is not None:
                selected = selected.select(list(columns))
            pieces.append(selected.append_column(RUN_COLUMN, pa.array([run.run_id] * selected.num_rows,
                                                                      pa.string())))
    if not pieces:
        return pa.table({name: pa.array([], pa.string()) for name in [*(columns or KEY), RUN_COLUMN]})
    result = pa.concat_tables(pieces, promote_options="default")
    return result.replace_schema_metadata(metadata)


def current_files(out_dir: str | OutputDir, columns: Sequence[str] | None = None,
                  statuses: Sequence[str] = (STATUS_OK,)) -> pa.Table:
    """The files rows of the current view (one per file and config), with a ``run`` column."""
    found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
    return _read_current(found, row_states(found, statuses), FILES, columns)


def current_frames(out_dir: str | OutputDir, columns: Sequence[str] | None = None,
                   statuses: Sequence[str] = (STATUS_OK,)) -> pa.Table:
    """The frames of the current files rows, with a ``run`` column (whole table in memory: for
    large outputs stream them with ``iter_current_batches``)."""
    found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
    return _read_current(found, row_states(found, statuses), FRAMES, columns)


def current_events(out_dir: str | OutputDir) -> tuple[pa.Table, str] | None:
    """The current events and a label of where they come from; None when no committed run has events.

    When the latest run with events is an events run (``beam_jobs.events``, no files rows of its own),
    its events are current whole; otherwise (``tag_audio --events``) a file's events are those of the
    run that holds its current files row, so a re-run with nothing to do exports what the earlier one
    found."""
    found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
    with_events = [run for run in _published(found) if run.events]
    if not with_events:
        return None
    latest = with_events[-1]
    if not latest.files:
        return read_events(latest), f"run {latest.run_id}"
    table = _read_current(found, row_states(found), EVENTS, None)
    return table.drop_columns([RUN_COLUMN]) if RUN_COLUMN in table.column_names else table, "the current view"


@dataclasses.dataclass(frozen=True)
class PartSelection:
    """A frames part and, within it, the (config_id -> uris) whose rows are current; None: every row."""

    run_id: str
    part: StoredFile
    keys: dict[str, list[str]] | None


def current_parts(found: OutputDir, states: RowStates | None, table: str = FRAMES) -> list[PartSelection]:
    """The parts a streaming reader needs for the current view (``states`` None: every published row)."""
    selections = []
    for run in _published(found):
        keys = None if states is None else states.current_keys(run.run_id)
        if keys == {}:
            continue
        selections.extend(PartSelection(run.run_id, part, keys) for part in run.parts(table))
    return selections


def select_rows(batch: pa.RecordBatch, selection: PartSelection) -> pa.RecordBatch:
    """The rows of ``batch`` (read from ``selection.part``) that the selection keeps."""
    if selection.keys is None:
        return batch
    return batch.filter(_mask(batch, selection.keys))
