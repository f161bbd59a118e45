"""What ``train_head`` reports beyond accuracy: per-class metrics beside the majority baseline, the eval
split it stopped on, and a confusion matrix at the level the labels were given.

- Per split, per class: frame-level precision, recall and AP, and for labels
  given as time spans event-level ones against the split's labelled spans
  (``DS_DIR/spans.csv``), for the head and for the baseline that always says
  the training split's majority label (``detection_metrics``).
- The eval split: where it came from (files by fold or URI hash, or time blocks
  within files) and how many rows it had; without one, early stopping watched
  the training loss, and the report says so.
- Confusion matrix: per clip for whole-file labels, per span for time spans
  (a run of consecutive frames of one label: a labelled span, or negatives
  between spans), never one cell for a whole recording.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence

import numpy as np

import storage
from schemas import training as ts
from transforms.answers import threshold_tuning as tuning
from transforms.training import detection_metrics as dm

THRESHOLDS_FILE = "thresholds.csv"  # in HEAD_DIR: for beam_jobs.events --thresholds
BASELINE_RULE = "every row gets the majority label of the training split"


def labelled_by_spans(document: dict) -> bool:
    return document.get("labelled_by") == "spans"


def read_truths(ds_dir: str) -> dict[str, list[dict]]:
    """split -> the labelled spans of that split (file, class, start_s, end_s); {} without spans.csv."""
    path = ts.ds_path(ds_dir, ts.SPANS_FILE)
    if not storage.exists(path):
        return {}
    truths: dict[str, list[dict]] = {}
    for row in csv.DictReader(io.StringIO(storage.read_text(path))):
        truths.setdefault(row["split"], []).append({"file": row["uri"], "class": row["label"],
                                                    "start_s": float(row["start_s"]),
                                                    "end_s": float(row["end_s"])})
    return truths


def frame_timing(base_model: dict) -> dm.FrameTiming | None:
    rate, hop, window = (base_model.get(k) or 0 for k in ("sample_rate", "hop_samples", "window_samples"))
    return dm.FrameTiming(hop / rate, window / rate) if rate and hop and window else None


def majority(report: dict, labels: Sequence[str], pooled: bool) -> str:
    unit = "clips" if pooled else "frames"
    counts = {label: counts[unit] for label, counts in report["splits"][ts.TRAIN]["classes"].items()
              if label in labels}
    return dm.majority_label(counts)


def split_metrics(frames: dm.SplitFrames, labels: Sequence[str], majority_label: str, truths: list[dict],
                  event_classes: Sequence[str], timing: dm.FrameTiming | None) -> dict:
    """{"per_class": {"frame": ..., ["event": ...]}, "baseline": the same for the majority baseline}."""
    baseline = frames.with_scores(dm.majority_scores(len(frames.label_ids), len(labels),
                                                     labels.index(majority_label)))
    out = {}
    for name, scored in (("per_class", frames), ("baseline", baseline)):
        out[name] = {"frame": dm.frame_metrics(scored.probabilities, scored.label_ids, labels)}
        if timing is not None and event_classes:
            out[name]["event"] = dm.event_metrics(scored, truths, labels, event_classes, timing)
    return out


def span_summary(frames: dm.SplitFrames, num_classes: int) -> dict:
    confusion = dm.segment_confusion(frames, num_classes)
    total = int(confusion.sum())
    return {"spans": total, "span_accuracy": float(np.trace(confusion) / total) if total else None}


def tune_event_thresholds(eval_frames: dm.SplitFrames, eval_truths: list[dict], labels: Sequence[str],
                          event_classes: Sequence[str], timing: dm.FrameTiming) -> dict:
    """Per class with labelled spans in eval, the thresholds tuned on them (``threshold_tuning``)."""
    def detect(thresholds):
        return dm.detections(eval_frames, labels, event_classes, timing, thresholds)

    tuned = tuning.tune_thresholds(detect, eval_truths, event_classes)
    return {label: result.thresholds for label, result in tuned.items()}


def events_at(per_class: dict, frames: dm.SplitFrames, truths: list[dict], labels: Sequence[str],
              timing: dm.FrameTiming) -> dict:
    """label -> {"tuned": ..., "default": ...}: a split's event figures at the tuned thresholds and at the
    defaults, for the classes of ``per_class``."""
    at_tuned = dm.detections(frames, labels, list(per_class), timing, tuning.DEFAULTS, per_class)
    at_default = dm.detections(frames, labels, list(per_class), timing, tuning.DEFAULTS)
    return {label: {"tuned": tuning.score_events(at_tuned, truths, label).to_document(),
                    "default": tuning.score_events(at_default, truths, label).to_document()}
            for label in per_class}


def event_thresholds_document(per_class: dict, figures: dict[str, dict]) -> dict:
    """metrics.json's ``event_thresholds``: per class its thresholds and, per split (``figures``: split ->
    ``events_at``), its events at them beside the defaults'."""
    classes = {label: {**dataclasses.asdict(thresholds),
                       "splits": {split: rows[label] for split, rows in figures.items()}}
               for label, thresholds in per_class.items()}
    return {"tuned_on": ts.EVAL, "file": THRESHOLDS_FILE, "default": dataclasses.asdict(tuning.DEFAULTS),
            "grid": {"on": list(tuning.GRID_ON), "off": "on / 2",
                     "min_duration_s": list(tuning.GRID_MIN_DURATION_S),
                     "merge_gap_s": list(tuning.GRID_MERGE_GAP_S)},
            "classes": classes}


def format_event_thresholds(document: dict) -> list[str]:
    """Per class: the tuned thresholds and event P / R per split, tuned beside the defaults'."""
    splits = [s for s in ts.SPLITS if any(s in c["splits"] for c in document["classes"].values())]
    lines = [f"event thresholds tuned on {document['tuned_on']} ({document['file']}); event P / R, tuned | "
             "default thresholds"]
    width = max((len(label) for label in document["classes"]), default=5)
    lines.append(f"  {'class':<{width}}   on  min s  gap s  " + "  ".join(f"{s:>25}" for s in splits))
    for label, row in document["classes"].items():
        cells = []
        for split in splits:
            figures = row["splits"].get(split)
            pairs = [" ".join(_number(figures[which][key]) for key in ("precision", "recall"))
                     for which in ("tuned", "default")] if figures else []
            cells.append(" | ".join(pairs) if pairs else " " * 25)
        thresholds = f"{row['on']:4.2f} {row['min_duration_s']:6.2f} {row['merge_gap_s']:6.2f}"
        lines.append(f"  {label:<{width}} {thresholds}  " + "  ".join(cells))
    return lines


def eval_split(document: dict, eval_rows: int, monitor: str) -> dict:
    """Where eval came from, its size, and what early stopping watched."""
    rule = document.get("split_rule", {})
    source = rule.get("eval_from", "files") if eval_rows else "none"
    return {"from": source, "rows": eval_rows, "split_rule": rule.get("description"),
            "early_stopping_monitor": monitor}


def format_eval_split(summary: dict) -> str:
    if summary["from"] == "none":
        return ("eval split: NONE (0 rows), so early stopping watched the training loss; give eval folds, a "
                "larger --eval_percent or, with time-span labels, --eval_from time_blocks")
    where = "time blocks within the training files" if summary["from"] == "time_blocks" else "files"
    return (f"eval split: {summary['rows']} rows from {where}; early stopping watched "
            f"{summary['early_stopping_monitor']}")


def _number(value: float | None) -> str:
    return "    -" if value is None else f"{value:5.2f}"


def format_per_class(metrics: dict, split: str) -> list[str]:
    """A table per level (frame, event) of ``split``: the head's P / R / AP beside the baseline's."""
    row = metrics["splits"].get(split, {})
    if "per_class" not in row:
        return []
    lines = [f"{split}, per class: head vs baseline ({metrics['baseline']['label']!r} always)"]
    for level, unit in (("frame", "support"), ("event", "truths")):
        head, base = row["per_class"].get(level), row["baseline"].get(level)
        if head is None:
            continue
        width = max(len(label) for label in head)
        lines.append(f"  {level + ' level':<{width}} {unit:>7}     P     R    AP | base P     R    AP")
        for label, values in head.items():
            b = base[label]
            head_numbers = " ".join(_number(values[k]) for k in ("precision", "recall", "average_precision"))
            base_numbers = " ".join(_number(b[k]) for k in ("precision", "recall", "average_precision"))
            lines.append(f"  {label:<{width}} {values[unit]:7d} {head_numbers} | {base_numbers}")
    return lines
