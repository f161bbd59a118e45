"""What is in a tag_audio output: runs, models, file outcomes, hours, frames, labels, size.

Fast on large outputs: frames are counted from Parquet footers (no column data
is read), and of the files table only the columns the summary needs are read.
Works on local and ``gs://`` outputs.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import (
    LABEL_SCORE,
    STATUS_FAILED,
    STATUS_OK,
    STATUS_PARTIAL,
    error_kinds,
    read_model_metadata,
)
from transforms.output.current import STATES, SUPERSEDED, classify
from transforms.output.reader import OutputDir, find_output, read_footers, read_parts

# The only files columns the summary reads ('uri' and 'config_id' only when several runs are compared).
RUN_KEY_COLUMNS = ("uri", "config_id")
FILES_COLUMNS = pa.schema([
    pa.field("uri", pa.string()),
    pa.field("config_id", pa.string()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("duration_s", pa.float64()),
    pa.field("top_labels_mean", pa.list_(LABEL_SCORE)),
])
# Labels repeat across millions of rows: read as dictionaries, they decode once per distinct value.
LABEL_LEAF = "top_labels_mean.list.element.label"
STATUSES = (STATUS_OK, STATUS_PARTIAL, STATUS_FAILED)
TEXT_MAX_RUNS = 12  # keeps the text report on one screen; json lists every run
TEXT_MAX_PROBLEMS = 8
UNKNOWN_KIND = "unknown"


@dataclasses.dataclass(frozen=True)
class Problem:
    """Files of one status ('partial' or 'failed') whose error has the same kind prefix."""

    status: str
    kind: str  # 'not_audio' of 'not_audio: ...'
    count: int
    example: str  # one full error message of this kind


@dataclasses.dataclass(frozen=True)
class TableSummary:
    """The numbers of one run (or of all runs together)."""

    files: int
    by_status: dict[str, int]
    audio_s: float
    frames: int
    problems: tuple[Problem, ...]  # most frequent first
    top_labels: tuple[tuple[str, int], ...]  # (label, files whose top-1 label it is), most frequent first
    frames_bytes: int
    files_bytes: int
    frames_parts: int
    files_parts: int

    @property
    def bytes(self) -> int:
        return self.frames_bytes + self.files_bytes


@dataclasses.dataclass(frozen=True)
class RunSummary:
    run_id: str | None
    status: str | None  # from the run record; None without one
    models: tuple[str, ...]  # model identities ('yamnet@0123456789ab')
    started_at: float | None
    wall_s: float | None
    numbers: TableSummary
    rows: dict[str, int] | None = None  # {current, latest, superseded} files rows; None: not compared


@dataclasses.dataclass(frozen=True)
class CurrentView:
    """Current against superseded rows over the published runs (``transforms.output.current``)."""

    rows: dict[str, int]  # {current, latest, superseded}
    compactable_runs: tuple[str, ...]  # published runs holding superseded rows only
    compactable_bytes: int


@dataclasses.dataclass(frozen=True)
class OutputSummary:
    out_dir: str
    total_bytes: int
    in_progress_bytes: int
    runs: tuple[RunSummary, ...]  # oldest first
    totals: TableSummary
    distinct_files: int  # distinct URIs over all runs' files rows
    current: CurrentView | None = None  # None when one run is summarized


# -- computing --------------------------------------------------------------------------------------

def summarize_files(table: pa.Table) -> tuple[dict[str, int], float, list[Problem], collections.Counter]:
    """Status counts, audio seconds, problems and top-1 label counts of a files table."""
    by_status = {row["status"]: row["status_count"]
                 for row in table.group_by("status").aggregate([("status", "count")]).to_pylist()}
    audio_s = pc.sum(table["duration_s"]).as_py() or 0.0
    not_ok = table.filter(pc.not_equal(table["status"], STATUS_OK))
    problems = []
    if not_ok.num_rows:
        errors = pc.fill_null(not_ok["error"], "")
        grouped = (pa.table({"status": not_ok["status"], "kind": error_kinds(errors), "error": errors})
                   .group_by(["status", "kind"])
                   .aggregate([("error", "count"), ("error", "max")]))
        problems = [Problem(r["status"], r["kind"] or UNKNOWN_KIND, r["error_count"], r["error_max"])
                    for r in grouped.to_pylist()]
    counts: collections.Counter = collections.Counter()
    for chunk in table["top_labels_mean"].chunks:  # chunks of different parts have different dictionaries
        top_label = pc.list_flatten(pc.list_slice(chunk, 0, 1)).field("label")
        counts.update({v["values"]: v["counts"] for v in pc.value_counts(top_label).to_pylist()
                       if v["values"] is not None})
    return by_status, float(audio_s), _sorted_problems(problems), counts


def _sorted_problems(problems: Sequence[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (-p.count, p.status, p.kind))


def _merge_problems(groups: Sequence[Sequence[Problem]]) -> list[Problem]:
    merged: dict[tuple[str, str], Problem] = {}
    for group in groups:
        for p in group:
            key = (p.status, p.kind)
            if key in merged:
                merged[key] = dataclasses.replace(merged[key], count=merged[key].count + p.count)
            else:
                merged[key] = p
    return _sorted_problems(list(merged.values()))


def _identity(schema: pa.Schema) -> str | None:
    return read_model_metadata(schema).get("model_identity") or None


def summarize_output(out_dir: str | OutputDir, run_id: str | None = None, top_labels: int = 10,
                     only_run: bool = False) -> OutputSummary:
    """Reads footers of every Parquet part and a few columns of the files table.

    ``only_run``: summarize the run ``run_id`` alone (None = the output without run partitions).
    """
    found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
    runs = [found.run(run_id)] if only_run else list(found.runs)
    # All parts of all runs at once, so the I/O threads stay busy on outputs with many small runs.
    frame_parts = [(i, part) for i, run in enumerate(runs) for part in run.frames]
    file_parts = [(i, part) for i, run in enumerate(runs) for part in run.files]
    footers = read_footers([part for _, part in frame_parts])
    compare_runs = len(runs) > 1
    columns = [c for c in FILES_COLUMNS.names if compare_runs or c not in RUN_KEY_COLUMNS]
    file_tables = read_parts([part for _, part in file_parts], columns, read_dictionary=[LABEL_LEAF])

    summaries, uris, all_counts, run_tables = [], [], collections.Counter(), []
    for i, run in enumerate(runs):
        run_footers = [f for (owner, _), f in zip(frame_parts, footers) if owner == i]
        tables = [t for (owner, _), t in zip(file_parts, file_tables) if owner == i]
        models = {_identity(f.schema) for f in run_footers} | {_identity(t.schema) for t in tables}
        models.discard(None)
        if not models and run.record:
            models.add(run.record.model.get("identity"))
        table = (pa.concat_tables(tables, promote_options="default") if tables
                 else pa.schema([FILES_COLUMNS.field(c) for c in columns]).empty_table())
        by_status, audio_s, problems, label_counts = summarize_files(table)
        all_counts.update(label_counts)
        if compare_runs:
            uris.append(table["uri"])
            run_tables.append(table)
        record = run.record
        summaries.append(RunSummary(
            run_id=run.run_id,
            status=run.status,
            models=tuple(sorted(m for m in models if m)),
            started_at=_number(record.started_at if record else None),
            wall_s=_number(record.wall_s if record else None),
            numbers=TableSummary(
                files=table.num_rows, by_status=by_status, audio_s=audio_s,
                frames=sum(f.num_rows for f in run_footers), problems=tuple(problems),
                top_labels=tuple(label_counts.most_common(top_labels)),
                frames_bytes=run.frames_bytes, files_bytes=run.files_bytes,
                frames_parts=len(run.frames), files_parts=len(run.files))))

    totals = _totals([s.numbers for s in summaries], all_counts, top_labels)
    distinct = (len(pc.unique(pa.chunked_array([c for u in uris for c in u.chunks], pa.string())))
                if compare_runs else totals.files)
    current = None
    if compare_runs:
        published = [i for i, run in enumerate(runs) if run.published]
        states = classify([runs[i] for i in published], [run_tables[i] for i in published])
        summaries = [dataclasses.replace(s, rows=states.counts(s.run_id)) if runs[i].published else s
                     for i, s in enumerate(summaries)]
        compactable = tuple(states.superseded_runs())
        current = CurrentView(rows=states.counts(), compactable_runs=compactable, compactable_bytes=sum(
            run.frames_bytes + run.files_bytes for run in runs if run.run_id in compactable))
    return OutputSummary(out_dir=found.root, total_bytes=found.total_bytes,
                         in_progress_bytes=found.in_progress_bytes, runs=tuple(summaries), totals=totals,
                         distinct_files=distinct, current=current)


def _number(value) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _totals(numbers: Sequence[TableSummary], label_counts: collections.Counter,
            top_labels: int) -> TableSummary:
    by_status: collections.Counter = collections.Counter()
    for n in numbers:
        by_status.update(n.by_status)
    return TableSummary(
        files=sum(n.files for n in numbers), by_status=dict(by_status),
        audio_s=sum(n.audio_s for n in numbers), frames=sum(n.frames for n in numbers),
        problems=tuple(_merge_problems([n.problems for n in numbers])),
        top_labels=tuple(label_counts.most_common(top_labels)),
        frames_bytes=sum(n.frames_bytes for n in numbers), files_bytes=sum(n.files_bytes for n in numbers),
        frames_parts=sum(n.frames_parts for n in numbers), files_parts=sum(n.files_parts for n in numbers))


# -- formatting -------------------------------------------------------------------------------------

def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _run_name(run: RunSummary) -> str:
    return run.run_id if run.run_id is not None else "(no run partition)"


def _status_counts(n: TableSummary) -> tuple[int, int, int]:
    return tuple(n.by_status.get(s, 0) for s in STATUSES)


def format_text(summary: OutputSummary, max_runs: int = TEXT_MAX_RUNS) -> str:
    runs = list(summary.runs)
    shown = runs[-max_runs:]
    in_progress = (f", {human_bytes(summary.in_progress_bytes)} work in progress (staging)"
                   if summary.in_progress_bytes else "")
    lines = [f"output  {summary.out_dir}",
             f"        {len(runs)} run(s), {human_bytes(summary.total_bytes)} on disk{in_progress}", ""]
    # Run ids start with their UTC start time, so the table leaves the start out (json has it).
    rows = [("run", "status", "model", "files", "ok", "partial", "failed", "audio h", "frames", "size")]
    for run in shown:
        n = run.numbers
        ok, partial, failed = _status_counts(n)
        rows.append((_run_name(run), run.status or "-", ",".join(run.models) or "-",
                     f"{n.files:,}", f"{ok:,}", f"{partial:,}", f"{failed:,}", f"{n.audio_s / 3600:.3f}",
                     f"{n.frames:,}", human_bytes(n.bytes)))
    if len(runs) > 1:
        t = summary.totals
        ok, partial, failed = _status_counts(t)
        rows.append(("all runs", "", "", f"{t.files:,}", f"{ok:,}", f"{partial:,}", f"{failed:,}",
                     f"{t.audio_s / 3600:.3f}", f"{t.frames:,}", human_bytes(t.bytes)))
    lines += _table(rows, right_from=3)
    if len(runs) > len(shown):
        lines.append(f"  ... {len(runs) - len(shown)} older run(s) not shown (--format json lists all, "
                     "--run RUN_ID shows one)")
    totals = summary.totals
    if len(runs) > 1 and summary.distinct_files != totals.files:
        lines.append(f"  {summary.distinct_files:,} distinct files over all runs (some were tagged again)")
    if summary.current is not None:
        lines += _current_lines(summary)
    other = {s: c for s, c in totals.by_status.items() if s not in STATUSES}
    if other:
        lines.append("  other statuses: " + ", ".join(f"{s} {c:,}" for s, c in other.items()))
    lines += ["", "problems (partial and failed files, by kind of error)"]
    if not totals.problems:
        lines.append("  none")
    for p in totals.problems[:TEXT_MAX_PROBLEMS]:
        example = p.example if len(p.example) <= 70 else p.example[:69] + "…"
        lines.append(f"  {p.status:<8}{p.count:>8,}  {p.kind:<18} e.g. {example}")
    if len(totals.problems) > TEXT_MAX_PROBLEMS:
        rest = sum(p.count for p in totals.problems[TEXT_MAX_PROBLEMS:])
        lines.append(f"  ... {len(totals.problems) - TEXT_MAX_PROBLEMS} more kinds, {rest:,} files")
    lines += ["", "most frequent top labels (each file's top label by mean score)"]
    labels = "   ".join(f"{label} {count:,}" for label, count in totals.top_labels)
    lines.append(f"  {labels or 'none'}")
    return "\n".join(lines)


def _current_lines(summary: OutputSummary) -> list[str]:
    view = summary.current
    rows = view.rows
    lines = [f"  current view: {rows['current']:,} current rows (latest ok per file and config), "
             f"{rows['latest']:,} latest attempt(s) not ok, {rows[SUPERSEDED]:,} superseded rows"]
    if view.compactable_runs:
        size = human_bytes(view.compactable_bytes)
        lines.append(f"  {len(view.compactable_runs)} run(s) hold superseded rows only ({size}): "
                     f"python -m beam_jobs.compact {summary.out_dir}")
    return lines


def _table(rows: list[tuple[str, ...]], right_from: int) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [cell.rjust(w) if i >= right_from else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        out.append(("  " + "  ".join(cells)).rstrip())
    return out


def _numbers_json(n: TableSummary) -> dict:
    return {
        "files": {"total": n.files, **{s: n.by_status.get(s, 0) for s in STATUSES},
                  **{s: c for s, c in n.by_status.items() if s not in STATUSES}},
        "audio_seconds": n.audio_s,
        "audio_hours": n.audio_s / 3600,
        "frames": n.frames,
        "problems": [dataclasses.asdict(p) for p in n.problems],
        "top_labels": [{"label": label, "files": count} for label, count in n.top_labels],
        "bytes": {"frames": n.frames_bytes, "files": n.files_bytes, "total": n.bytes},
        "parquet_parts": {"frames": n.frames_parts, "files": n.files_parts},
    }


def to_json(summary: OutputSummary) -> dict:
    return {
        "out_dir": summary.out_dir,
        "bytes_on_disk": summary.total_bytes,
        "bytes_in_progress": summary.in_progress_bytes,
        "distinct_files": summary.distinct_files,
        "runs": [{"run_id": r.run_id, "status": r.status, "models": list(r.models),
                  "started_at": r.started_at, "wall_s": r.wall_s, **_numbers_json(r.numbers),
                  **({"rows": dict(r.rows)} if r.rows is not None else {})}
                 for r in summary.runs],
        "totals": _numbers_json(summary.totals),
        **({"current_view": {"rows": {s: summary.current.rows[s] for s in STATES},
                             "compactable_runs": list(summary.current.compactable_runs),
                             "compactable_bytes": summary.current.compactable_bytes}}
           if summary.current is not None else {}),
    }



