"""The report of a training-set build: class counts per split and everything that did not match.

Nothing is dropped silently: tagged files without a label row, label rows
that matched no frames (with the files table's reason when the file was
tagged but failed), clips left out because their fold is in no split, and
labels that eval/test have but training lacks are all counted and listed.
JSON lists stop at ``LIST_LIMIT`` entries; the complete lists go to text
files next to the report.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import apache_beam as beam

import storage
from schemas import training as ts
from transforms.training.labelled_rows import LEFT_OUT, ClipFacts, LabelIndex, LabelTable

LIST_LIMIT = 1000
UNLABELLED_FILES = "unmatched_files.txt"
UNMATCHED_LABELS = "unmatched_labels.csv"
EXCLUDED_FILES = "excluded_files.txt"


class CountClips(beam.CombineFn):
    """(uri, [ClipFacts, one per label]) with one element per URI -> class counts per split (a file counts
    as a clip of each label its frames have) and label-row hits."""

    def create_accumulator(self):
        return {"counts": {}, "label_paths": {}}

    def add_input(self, accumulator, element):
        _, per_label_facts = element
        for facts in per_label_facts:
            per_label = accumulator["counts"].setdefault(facts.split, {}).setdefault(facts.label, [0, 0])
            per_label[0] += 1
            per_label[1] += facts.frames
        paths = accumulator["label_paths"]
        path = per_label_facts[0].label_path
        paths[path] = paths.get(path, 0) + 1
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            for split, labels in accumulator["counts"].items():
                for label, (clips, frames) in labels.items():
                    target = merged["counts"].setdefault(split, {}).setdefault(label, [0, 0])
                    target[0] += clips
                    target[1] += frames
            for path, files in accumulator["label_paths"].items():
                merged["label_paths"][path] = merged["label_paths"].get(path, 0) + files
        return merged

    def extract_output(self, accumulator):
        return accumulator


def merge_clip_pieces(pieces) -> list[ClipFacts]:
    """One URI's facts from its pieces (a file's frames may span several Parquet tables), one per split and
    label (a file labelled by time spans has frames of several labels, and with eval from time blocks of
    two splits)."""
    by_key: dict[tuple[str, str], ClipFacts] = {}
    for piece in pieces:
        key = (piece.split, piece.label)
        seen = by_key.get(key)
        by_key[key] = piece if seen is None else dataclasses.replace(seen, frames=seen.frames + piece.frames)
    return [by_key[key] for key in sorted(by_key)]


def files_without_frames(element, labels: LabelTable):
    """(file name, files table) -> (label path, uri, status, error) for labelled files that gave no frames."""
    _, table = element
    index = LabelIndex(labels)
    for row in table.to_pylist():
        if row["status"] == "ok" and row["num_frames"]:
            continue
        match = index.match(row["uri"])
        if match is not None:
            yield match.path, row["uri"], row["status"], row["error"]


@dataclasses.dataclass(frozen=True)
class ReportContext:
    """What the report says about the build's inputs (known on the driver)."""

    labels: LabelTable
    frames_dir: str
    runs: tuple[str, ...]
    split_rule: str
    layout: dict
    eval_from: str = "files"  # how eval was made: files (by fold or URI hash) or time_blocks


def labels_without_frames(labels: LabelTable, matched_paths: set[str],
                          failed_files: list[tuple[str, str, str, str]]) -> list[dict]:
    """Label rows no frame matched, in file order, each with the reason (from the files table if tagged)."""
    failed_by_path: dict[str, list[tuple[str, str, str]]] = {}
    for path, uri, status, error in failed_files:
        failed_by_path.setdefault(path, []).append((uri, status, error))
    rows = []
    for row in sorted(labels.rows, key=lambda r: r.line):
        if row.path in matched_paths:
            continue
        if row.path in failed_by_path:
            uri, status, error = sorted(failed_by_path[row.path])[0]
            reason = f"{uri} was tagged with status {status} and no frames" + (f": {error}" if error else "")
        else:
            reason = "no tagged file in the frames matches this path"
        rows.append({"line": row.line, "path": row.path, "label": row.label, "fold": row.fold,
                     "reason": reason})
    return rows


def build_report(context: ReportContext, counted: dict, unlabelled: list[str],
                 excluded: list[tuple[str, str, str]], without_frames: list[dict],
                 spans: list[tuple] = ()) -> dict:
    """The report document (see module docstring); lists in it are sorted and capped."""
    splits = {}
    for split in ts.SPLITS:
        classes = {label: {"clips": c, "frames": f}
                   for label, (c, f) in sorted(counted["counts"].get(split, {}).items())}
        splits[split] = {"clips": sum(v["clips"] for v in classes.values()),
                         "frames": sum(v["frames"] for v in classes.values()), "classes": classes,
                         "spans": sum(1 for row in spans if row[0] == split)}
    trained = set(splits[ts.TRAIN]["classes"])
    unseen = {split: sorted(set(splits[split]["classes"]) - trained) for split in (ts.EVAL, ts.TEST)}
    several = sorted(path for path, files in counted["label_paths"].items() if files > 1)
    return {
        "labels_file": context.labels.source,
        "label_rows": len(context.labels.rows),
        "duplicate_label_rows": context.labels.duplicate_rows,
        "frames_dir": context.frames_dir,
        "runs": list(context.runs),
        "split_rule": context.split_rule,
        "eval_from": context.eval_from,
        "layout": context.layout,
        "splits": splits,
        # eval from time blocks: frames within the gap of a block, in no split
        "frames_left_out_near_eval_blocks": sum(f for _, f in counted["counts"].get(LEFT_OUT, {}).values()),
        "labels_unseen_in_train": unseen,
        "unmatched": {
            "files_without_label": _listed(sorted(set(unlabelled))),
            "labels_without_frames": _listed(without_frames),
            "excluded_by_fold": _listed([{"uri": uri, "fold": fold}
                                         for uri, fold, _ in sorted(set(excluded))]),
            "label_rows_matching_several_files": _listed(several),
        },
        "list_limit": LIST_LIMIT,
    }


def _listed(items: list) -> dict:
    return {"count": len(items), "items": items[:LIST_LIMIT], "truncated": len(items) > LIST_LIMIT}


def write_report(ds_dir: str, report: dict, unlabelled: list[str], excluded: list[tuple[str, str, str]],
                 without_frames: list[dict], spans: list[tuple] = ()) -> None:
    """report.json, plus the complete unmatched lists when there are any, and the labelled spans per split
    (the truth of event-level metrics)."""
    _write(ts.ds_path(ds_dir, ts.REPORT_FILE), json.dumps(report, indent=2) + "\n")
    if spans:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(ts.SPANS_HEADER)
        writer.writerows(sorted(spans, key=lambda row: (row[1], row[3], row[4], row[2], row[0])))
        _write(ts.ds_path(ds_dir, ts.SPANS_FILE), buffer.getvalue())
    if unlabelled:
        _write(ts.ds_path(ds_dir, UNLABELLED_FILES), "".join(f"{uri}\n" for uri in sorted(set(unlabelled))))
    if without_frames:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["line", "path", "label", "fold", "reason"])
        for row in without_frames:
            writer.writerow([row["line"], row["path"], row["label"], row["fold"] or "", row["reason"]])
        _write(ts.ds_path(ds_dir, UNMATCHED_LABELS), buffer.getvalue())
    if excluded:
        _write(ts.ds_path(ds_dir, EXCLUDED_FILES),
               "".join(f"{uri}\t{fold}\n" for uri, fold, _ in sorted(set(excluded))))


def _write(path: str, text: str) -> None:
    storage.write_text(path, text)


class WriteReport(beam.DoFn):
    """Runs once with every side input ready: builds and writes the report."""

    def __init__(self, ds_dir: str, context: ReportContext):
        self._ds_dir = ds_dir
        self._context = context

    def process(self, _, counted: dict, unlabelled: list, excluded: list, failed_files: list,
                spans: list = ()):
        matched = set(counted["label_paths"]) | {path for _, _, path in excluded}
        missing = labels_without_frames(self._context.labels, matched, failed_files)
        report = build_report(self._context, counted, unlabelled, excluded, missing, spans)
        write_report(self._ds_dir, report, unlabelled, excluded, missing, spans)
        yield report


def format_report(report: dict) -> str:
    """A few lines for the terminal."""
    lines = [f"split rule: {report['split_rule']}"]
    for split in ts.SPLITS:
        s = report["splits"][split]
        spans = f" {s['spans']:6d} spans" if s.get("spans") else ""
        lines.append(f"  {split:>5}: {s['clips']:6d} clips {s['frames']:8d} frames{spans} "
                     f"{len(s['classes'])} classes")
    if report.get("eval_from") == "time_blocks":
        lines.append(f"eval from time blocks within the training files; frames left out near the blocks: "
                     f"{report['frames_left_out_near_eval_blocks']}")
    if not report["splits"][ts.EVAL]["frames"]:
        lines.append("eval split: EMPTY, so train_head will stop early on the training loss (give eval "
                     "folds, a larger --eval_percent, or --eval_from time_blocks with time-span labels)")
    unmatched = report["unmatched"]
    lines.append(f"tagged files without a label: {unmatched['files_without_label']['count']}")
    lines.append(f"label rows without frames:    {unmatched['labels_without_frames']['count']}")
    for row in unmatched["labels_without_frames"]["items"][:5]:
        lines.append(f"    line {row['line']}: {row['path']}: {row['reason']}")
    if unmatched["excluded_by_fold"]["count"]:
        lines.append(f"clips in no split (fold):     {unmatched['excluded_by_fold']['count']}")
    for split, labels in report["labels_unseen_in_train"].items():
        if labels:
            lines.append(f"labels in {split} but not in train: {', '.join(labels)}")
    return "\n".join(lines)
