"""A head trained on time-range labels, measured honestly: per-class precision, recall and AP at frame and
event level against the majority baseline, on recordings with ESC-10 clips planted at known times.

    python -m bench.heads_time_ranges [--full] [--seconds 60] [--events 13] [--shared ../shared]
                                      [--work /tmp/heads_time_ranges]

1. Recordings: three of ``--seconds`` on pink noise at -40 dBFS RMS, with ``--events`` real ESC-10
   clips of ``CLASSES`` planted one per slot (slot = recording / its events) at a random place in
   the slot.  Recordings 1-2 take clips of ESC-10 folds 1-2, recording 3 clips of fold 3, so no clip
   is heard in training and test.  A clip's labelled span is its sounding part (``bench.events_esc10``:
   from the first to the last 10 ms frame within 30 dB of its loudest).  ``--full``: the trial of
   three 5-minute recordings and 65 events.
2. ``tag_audio`` (``models/yamnet-approx``) -> ``build_training_set`` with the spans as labels
   (``uri,start_s,end_s,label,fold``), ``--negatives_from_labelled_files``, train folds 1-2 (recordings
   1-2), test fold 3 (recording 3); eval is left to ``--eval_from auto``, which takes time blocks of
   recordings 1-2 -> ``train_head --no_export`` with its defaults.  Nothing is chosen by looking at
   recording 3: the per-level tables use the events job's default thresholds, and the thresholds
   train_head tunes per class are tuned on the eval blocks of recordings 1-2.
3. Prints what train_head printed, then a table per level of the test recording's numbers, head
   beside the majority baseline, then the test recording's events at the tuned thresholds beside the
   defaults', and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.events_esc10 import pink_noise, sounding_span, write_wav  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
CLASSES = ("dog_bark", "rooster", "baby_cry", "person_sneeze")
RECORDING_FOLDS = (("1", "2"), ("1", "2"), ("3",))  # clips each recording draws from; its fold is its number
NOISE_DBFS = -40.0


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/heads_time_ranges")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each of the three recordings")
    parser.add_argument("--events", type=int, default=13, help="planted clips over the three recordings")
    parser.add_argument("--full", action="store_true", help="the issue's trial: 3 x 300 s, 65 events")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.full:
        args.seconds, args.events = 300.0, 65
    return args


def plant_recordings(esc10: Path, out: Path, seconds: float, events: int, classes=CLASSES, seed: int = 0
                     ) -> list[dict]:
    """Writes ``rec1.wav`` .. ``rec3.wav`` into ``out``; returns one truth row per planted clip: file, fold
    (the recording's number), class, start_s, end_s (the clip's sounding part), clip."""
    from transforms.decoding.stream import decode_all

    rng = np.random.default_rng(seed)
    with open(esc10 / "labels.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in classes]
    pools = {}
    for folds in set(RECORDING_FOLDS):
        pools[folds] = {c: [r for r in rows if r["label"] == c and r["fold"] in folds] for c in classes}
        for clips in pools[folds].values():
            rng.shuffle(clips)
    counts = [events // 3 + (1 if i < events % 3 else 0) for i in range(3)]
    out.mkdir(parents=True, exist_ok=True)
    truth = []
    for number, (folds, count) in enumerate(zip(RECORDING_FOLDS, counts), start=1):
        signal = pink_noise(int(seconds * RATE), rng, 10 ** (NOISE_DBFS / 20))
        slot = seconds / count
        if slot < 5.5:
            raise ValueError(f"{count} clips of 5 s do not fit {seconds:g} s with room between them")
        name = f"rec{number}.wav"
        for i in range(count):
            label = classes[(i + number) % len(classes)]
            pool = pools[folds][label]
            if not pool:
                raise ValueError(f"not enough {label} clips in ESC-10 fold(s) {','.join(folds)}")
            clip_row = pool.pop()
            clip = decode_all(str(esc10 / clip_row["path"]), RATE)[: 5 * RATE]
            offset = i * slot + rng.uniform(0.25, slot - 5.25)
            start = int(round(offset * RATE))
            signal[start:start + clip.size] += clip
            a, b = sounding_span(clip)
            truth.append({"file": name, "fold": str(number), "class": label, "start_s": round(offset + a, 3),
                          "end_s": round(offset + b, 3), "clip": clip_row["path"]})
        write_wav(out / name, signal)
    return truth


def write_labels(truth: list[dict], audio: Path, path: Path) -> Path:
    """The spans as build_training_set takes them: uri,start_s,end_s,label,fold."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["uri", "start_s", "end_s", "label", "fold"])
        for row in truth:
            writer.writerow([str(audio / row["file"]), row["start_s"], row["end_s"], row["class"],
                             row["fold"]])
    return path


def run_chain(audio: Path, labels: Path, model: Path, work: Path, build_extra=(), train_extra=()) -> dict:
    """tag_audio -> build_training_set (spans, negatives, train 1-2, test 3) -> train_head; metrics.json."""
    from beam_jobs import build_training_set, tag_audio, train_head

    for name in ("tagged", "ds", "head"):
        shutil.rmtree(work / name, ignore_errors=True)
    if tag_audio.run(["--input", str(audio), "--output", str(work / "tagged"), "--model_path", str(model),
                      "--progress_s", "0"]) != 0:
        raise RuntimeError("tag_audio failed")
    if build_training_set.run(["--frames", str(work / "tagged"), "--labels", str(labels),
                               "--output", str(work / "ds"), "--negatives_from_labelled_files",
                               "--train_folds", "1,2", "--test_folds", "3", *build_extra]) != 0:
        raise RuntimeError("build_training_set failed")
    if train_head.run(["--dataset", str(work / "ds"), "--output", str(work / "head"), "--no_export",
                       *train_extra]) != 0:
        raise RuntimeError("train_head failed")
    return json.loads((work / "head" / "metrics.json").read_text())


def markdown_tables(metrics: dict, split: str = "test") -> list[str]:
    """Per level, per class: the head's P / R / AP and the baseline's, as markdown rows."""
    row = metrics["splits"][split]

    def number(value):
        return "-" if value is None else f"{value:.2f}"

    lines = []
    for level, unit in (("frame", "frames"), ("event", "spans")):
        head, base = row["per_class"].get(level), row["baseline"].get(level)
        if head is None:
            continue
        lines += ["", f"| {level} level | {unit} | precision | recall | AP | baseline precision | "
                      "baseline recall | baseline AP |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, values in head.items():
            count = values["support"] if level == "frame" else values["truths"]
            b = base[label]
            cells = [number(v[k]) for v in (values, b) for k in ("precision", "recall", "average_precision")]
            lines.append(f"| {label} | {count} | {' | '.join(cells)} |")
    return lines


def threshold_table(metrics: dict, split: str = "test") -> list[str]:
    """The test recording's events at the thresholds train_head tuned on eval, beside the defaults'."""
    tuned = metrics.get("event_thresholds")
    if not tuned:
        return ["no event thresholds were tuned (no labelled spans in eval)"]

    def number(value):
        return "-" if value is None else f"{value:.2f}"

    lines = ["", f"| events at thresholds tuned on {tuned['tuned_on']} | on / min s / gap s | spans | "
             "precision | recall | F1 | default precision | default recall | default F1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for label, row in tuned["classes"].items():
        figures = row["splits"].get(split)
        if figures is None:
            continue
        at, base = figures["tuned"], figures["default"]
        lines.append(f"| {label} | {row['on']:g} / {row['min_duration_s']:g} / {row['merge_gap_s']:g} | "
                     f"{at['truths']} | {number(at['precision'])} | {number(at['recall'])} | "
                     f"{number(at['f1'])} | {number(base['precision'])} | {number(base['recall'])} | "
                     f"{number(base['f1'])} |")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    shared, work = Path(args.shared), Path(args.work)
    esc10, model = shared / "data" / "esc10", shared / "models" / "yamnet-approx"
    if not (esc10 / "labels.csv").exists() or not model.exists():
        print(f"needs {esc10} and {model}", file=sys.stderr)
        return 2
    shutil.rmtree(work, ignore_errors=True)
    truth = plant_recordings(esc10, work / "audio", args.seconds, args.events, seed=args.seed)
    labels = write_labels(truth, work / "audio", work / "labels.csv")
    metrics = run_chain(work / "audio", labels, model, work)
    test = metrics["splits"]["test"]
    results = {"recordings_s": args.seconds, "events": len(truth), "classes": list(CLASSES),
               "eval_split": metrics["eval_split"], "baseline": metrics["baseline"],
               "epochs_run": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
               "confusion_matrix": metrics["confusion_matrix"], "test": test,
               "event_thresholds": metrics.get("event_thresholds")}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    planted = [label for label in CLASSES if label in metrics["labels"]]
    head_ap = np.mean([test["per_class"]["frame"][c]["average_precision"] for c in planted])
    base_ap = np.mean([test["baseline"]["frame"][c]["average_precision"] for c in planted])
    print(f"\n{len(truth)} events of {len(CLASSES)} classes in 3 recordings of {args.seconds:g} s; "
          f"train on recordings 1-2, test on recording 3 ({test['rows']} frames, "
          f"{sum(t['fold'] == '3' for t in truth)} events)")
    eval_split = metrics["eval_split"]
    print(f"eval: {eval_split['rows']} frames from {eval_split['from']}; best epoch {metrics['best_epoch']} "
          f"of {metrics['epochs_run']} on {eval_split['early_stopping_monitor']}")
    print(f"frame accuracy {test['frame_accuracy']:.1%} (baseline, always {metrics['baseline']['label']!r}: "
          f"{test['baseline']['frame'][metrics['baseline']['label']]['precision']:.1%})")
    print(f"mean frame AP of the planted classes: head {head_ap:.2f}, baseline {base_ap:.2f} "
          f"(ratio {head_ap / base_ap:.1f}x)")
    print("\n".join(markdown_tables(metrics)))
    print("\n".join(threshold_table(metrics)))
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
