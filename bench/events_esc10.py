"""Events against ground truth: real ESC-10 clips placed on silence or noise at known offsets.

    python -m bench.events_esc10 [--shared ../shared] [--work /tmp/events_esc10] [--seconds 60]

1. Recordings: each ESC-10 clip is placed once, five clips of five classes per 60-second recording,
   at random offsets at least 3 s apart, on digital silence (half the recordings) or on pink noise at
   -40 dBFS RMS (the other half).  A clip's truth is its sounding part: from the first to the last
   10 ms frame whose RMS is within 30 dB of the clip's loudest (and above -60 dBFS).  Recordings of
   folds 1-2 tune, recordings of fold 3 test.
2. Each ESC-10 class is read from one AudioSet class of ``models/yamnet-approx``, chosen by name
   before looking at any score (``CLASSES``).
3. Tuning (folds 1-2): per class, the thresholds (on, off = on / 2, min_duration_s, merge_gap_s) of
   a small grid with the best F1 (``transforms.answers.threshold_tuning``, what train_head tunes
   with), computed in process with ``transforms.answers.events``.  They are written as a thresholds
   CSV.
4. Test (fold 3): ``tag_audio --events --event_thresholds CSV`` on the test recordings; its events
   table is scored.  A detection matches a truth of its class that it overlaps (one to one, greedy
   by overlap); precision = matched detections / detections, recall = matched truths / truths; on
   matched pairs, the share whose onset and whose offset are within one hop (0.48 s) of the truth.

Prints a table per class and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import sys
import wave
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.esc10_head import esc10_setup  # noqa: E402
from transforms.answers.events import events_from_scores  # noqa: E402
from transforms.answers.threshold_tuning import thresholds_csv, tune_thresholds  # noqa: E402
from transforms.answers.thresholds import ClassThresholds, EventRules  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
HOP_S = 0.48
PERCENTILES = (10, 25, 50, 75, 90)
CLASSES = {  # ESC-10 class -> the AudioSet class of the same name
    "dog_bark": "Dog", "rain": "Rain", "sea_waves": "Ocean", "baby_cry": "Baby cry, infant cry",
    "clock_tick": "Tick-tock", "person_sneeze": "Sneeze", "helicopter": "Helicopter", "chainsaw": "Chainsaw",
    "rooster": "Chicken, rooster", "fire_crackling": "Crackle",
}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(REPO_ROOT.parent / "shared"))
    parser.add_argument("--work", default="/tmp/events_esc10")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each recording")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def sounding_span(clip: np.ndarray) -> tuple[float, float]:
    frames = clip[: clip.size // 160 * 160].reshape(-1, 160)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    active = np.flatnonzero(rms >= max(1e-3, rms.max() * 10 ** (-30 / 20)))
    return active[0] * 0.01, (active[-1] + 1) * 0.01


def pink_noise(n: int, rng: np.random.Generator, rms: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    noise = np.fft.irfft(spectrum, n)
    return noise * rms / np.sqrt(np.mean(noise ** 2))


def write_wav(path: Path, signal: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((np.clip(signal, -1, 1 - 1 / 32768) * 32768).astype("<i2").tobytes())


def make_recordings(esc10: Path, folds: tuple[str, ...], out: Path, seconds: float, rng) -> list[dict]:
    """Writes the recordings; returns their truth rows (file, class, start_s, end_s)."""
    from transforms.decoding.stream import decode_all

    with open(esc10 / "labels.csv") as f:
        clips = [r for r in csv.DictReader(f) if r["fold"] in folds]
    by_class = {c: [r for r in clips if r["label"] == c] for c in CLASSES}
    for rows in by_class.values():
        rng.shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    truth, number = [], 0
    while any(by_class.values()):
        classes = [c for c in rng.permutation(list(CLASSES)) if by_class[c]][:5]
        picked = [(c, by_class[c].pop()) for c in classes]
        signal = np.zeros(int(seconds * RATE))
        background = "silence" if number % 2 == 0 else "noise"
        if background == "noise":
            signal += pink_noise(signal.size, rng, 10 ** (-40 / 20))
        slot = seconds / len(picked)
        name = f"rec{number:03d}_{background}.wav"
        for i, (label, row) in enumerate(picked):
            clip = decode_all(str(esc10 / row["path"]), RATE)[: int(5 * RATE)]
            offset = i * slot + rng.uniform(0.5, max(0.5, slot - 5.0 - 2.5))
            start = int(round(offset * RATE))
            signal[start:start + clip.size] += clip
            a, b = sounding_span(clip)
            truth.append({"file": name, "class": label, "start_s": offset + a, "end_s": offset + b,
                          "clip": row["path"], "background": background})
        write_wav(out / name, signal)
        number += 1
    return truth


def tag(audio: Path, model: Path, out: Path, extra: list[str]) -> None:
    from beam_jobs import tag_audio

    shutil.rmtree(out, ignore_errors=True)
    if tag_audio.run(["--input", str(audio), "--output", str(out), "--model_path", str(model),
                      "--progress_s", "0", *extra]) != 0:
        raise RuntimeError("tag_audio failed")


def score(detections: list[dict], truths: list[dict]) -> dict:
    """Greedy one-to-one matching by overlap within each (file, class)."""
    from transforms.answers.event_matching import match_by_overlap

    matched = [(detections[d_i], truths[t_i]) for d_i, t_i in match_by_overlap(detections, truths)]
    signed_onsets = [d["start_s"] - t["start_s"] for d, t in matched]
    signed_offsets = [d["end_s"] - t["end_s"] for d, t in matched]
    onsets, offsets = np.abs(signed_onsets), np.abs(signed_offsets)
    precision = len(matched) / len(detections) if detections else None
    recall = len(matched) / len(truths) if truths else None
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else 0.0
    return {"detections": len(detections), "truths": len(truths), "matched": len(matched),
            "precision": precision, "recall": recall, "f1": f1,
            "onset_within_hop": float(np.mean(onsets <= HOP_S)) if matched else None,
            "offset_within_hop": float(np.mean(offsets <= HOP_S)) if matched else None,
            "both_within_hop": float(np.mean((onsets <= HOP_S) & (offsets <= HOP_S))) if matched else None,
            "median_onset_error_s": float(np.median(onsets)) if matched else None,
            "median_offset_error_s": float(np.median(offsets)) if matched else None,
            # detected - true, seconds: 10th, 25th, 50th, 75th, 90th percentiles
            "onset_error_percentiles_s": np.percentile(signed_onsets, PERCENTILES).round(2).tolist()
            if matched else None,
            "offset_error_percentiles_s": np.percentile(signed_offsets, PERCENTILES).round(2).tolist()
            if matched else None}


def frames_by_file(out: Path):
    import pyarrow.dataset as pads

    dataset = pads.dataset(str(out / "frames"), format="parquet", partitioning="hive")
    names = json.loads(dataset.schema.metadata[b"audio_tagger.class_names"])
    table = dataset.to_table(columns=["uri", "start_s", "end_s", "scores"]).to_pandas()
    return names, {Path(uri).name: group for uri, group in table.groupby("uri")}


def tune(out: Path, truth: list[dict]) -> dict[str, ClassThresholds]:
    """AudioSet class -> the thresholds with the best F1 on the tuning recordings (``threshold_tuning``)."""
    names, frames = frames_by_file(out)
    to_esc = {audioset: esc_class for esc_class, audioset in CLASSES.items()}

    def detect(thresholds: ClassThresholds) -> list[dict]:
        rules = EventRules(thresholds, classes=tuple(CLASSES.values()))
        return [{"file": name, "class": to_esc[e.label], "start_s": e.start_s, "end_s": e.end_s}
                for name, g in frames.items()
                for e in events_from_scores(g.start_s.to_numpy(), g.end_s.to_numpy(),
                                            np.stack(g.scores.to_numpy()), names, HOP_S, rules)]

    tuned = tune_thresholds(detect, truth, list(CLASSES))
    return {CLASSES[esc_class]: result.thresholds for esc_class, result in tuned.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    setup = esc10_setup(args)
    if setup is None:
        return 2
    esc10, model, work, _ = setup
    rng = np.random.default_rng(args.seed)
    shutil.rmtree(work, ignore_errors=True)
    tune_truth = make_recordings(esc10, ("1", "2"), work / "tune_audio", args.seconds, rng)
    test_truth = make_recordings(esc10, ("3",), work / "test_audio", args.seconds, rng)
    tag(work / "tune_audio", model, work / "tune_out", [])
    thresholds = tune(work / "tune_out", tune_truth)
    csv_path = work / "thresholds.csv"
    csv_path.write_text(thresholds_csv(thresholds))
    tag(work / "test_audio", model, work / "test_out", ["--events", "--event_thresholds", str(csv_path)])

    import pyarrow.dataset as pads

    events = pads.dataset(str(work / "test_out" / "events"), format="parquet",
                          partitioning="hive").to_table().to_pylist()
    to_esc = {v: k for k, v in CLASSES.items()}
    detections = [{"file": Path(e["uri"]).name, "class": to_esc[e["label"]], "start_s": e["start_s"],
                   "end_s": e["end_s"]} for e in events]
    results = {"thresholds": {name: dataclasses.asdict(t) for name, t in thresholds.items()},
               "recordings": {"tune": len({t['file'] for t in tune_truth}),
                              "test": len({t['file'] for t in test_truth})},
               "seconds_each": args.seconds, "classes": {}, "by_background": {}}
    for esc_class in CLASSES:
        results["classes"][esc_class] = score([d for d in detections if d["class"] == esc_class],
                                              [t for t in test_truth if t["class"] == esc_class])
    for background in ("silence", "noise"):
        files = {t["file"] for t in test_truth if t["background"] == background}
        results["by_background"][background] = score(
            [d for d in detections if d["file"] in files],
            [t for t in test_truth if t["file"] in files])
    results["all"] = score(detections, test_truth)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    def pct(value):
        return "-" if value is None else f"{value:.0%}"

    print(f"\n{results['recordings']['test']} test recordings of {args.seconds:.0f} s (fold 3), thresholds "
          f"tuned on {results['recordings']['tune']} (folds 1-2): {csv_path}")
    print("| ESC-10 class | AudioSet class | on / min dur / merge gap | truths | detections | precision | "
          "recall | onset within 0.48 s | offset within 0.48 s | median onset / offset error |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for esc_class, row in [*results["classes"].items(), ("all", results["all"]),
                           *[(f"all, on {k}", v) for k, v in results["by_background"].items()]]:
        t = thresholds.get(CLASSES.get(esc_class, ""), None)
        setting = f"{t.on:g} / {t.min_duration_s:g} s / {t.merge_gap_s:g} s" if t else ""
        errors = "-" if row["median_onset_error_s"] is None else \
            f"{row['median_onset_error_s']:.2f} / {row['median_offset_error_s']:.2f} s"
        print(f"| {esc_class} | {CLASSES.get(esc_class, '')} | {setting} | {row['truths']} | "
              f"{row['detections']} | {pct(row['precision'])} | {pct(row['recall'])} | "
              f"{pct(row['onset_within_hop'])} | {pct(row['offset_within_hop'])} | {errors} |")
    print(f"results: {work / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
