"""Keyword events on long audio made of held-out speakers' clips: hits and false alarms by setting.

    python -m bench.keyword_events [--model examples/models/keyword] [--split validation]
                                   [--data ../shared/data/speech_commands]

Chooses the demo's event settings on data that is neither the training data nor the demo:

1. Recordings: the clips of one speaker-disjoint split (default: validation, the speakers the
   model never trained on and the test accuracy does not use), shuffled with a fixed seed and
   joined end to end into 60-second recordings.  Keyword clips are the words to find; ``_unknown_``
   clips are other words (the filler a sentence has); ``_silence_`` clips are background noise.
2. Truth: each keyword clip's span in its recording.  A detection hits a truth of its label that it
   overlaps (one to one); any other detection is a false alarm.
3. Tagging as tag_audio tags: one-second windows every ``--hop_s``, the model's scores, then events
   (``transforms.answers.events``) for each setting of the grid: scores averaged over ``smooth_s``,
   an event starting at ``on`` and lasting while scores stay at or above ``min(on, 0.3)``.

Prints one line per setting (recall, false alarms per minute of audio, F1) and the best F1.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "speech_commands"
RECORDING_S = 60.0
SMOOTH_S = (0.0, 0.5, 0.75, 1.0)
ON = (0.3, 0.35, 0.4, 0.45, 0.5, 0.6)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "examples" / "models" / "keyword"))
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Speech Commands-style folders")
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--hop_s", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def recordings(waveforms: np.ndarray, labels: list[str], seed: int) -> list[tuple[np.ndarray, list]]:
    """Clips shuffled and joined into recordings of ~RECORDING_S: (waveform, [(label, start_s, end_s)])."""
    from transforms.answers.thresholds import is_background
    from transforms.training.keyword_clips import CLIP_SAMPLES, SAMPLE_RATE

    order = np.random.default_rng(seed).permutation(len(labels))
    per_recording = int(RECORDING_S * SAMPLE_RATE) // CLIP_SAMPLES
    out = []
    for first in range(0, len(order), per_recording):
        rows = order[first:first + per_recording]
        truth = [(labels[row], i * CLIP_SAMPLES / SAMPLE_RATE, (i + 1) * CLIP_SAMPLES / SAMPLE_RATE)
                 for i, row in enumerate(rows) if not is_background(labels[row])]
        out.append((waveforms[rows].reshape(-1), truth))
    return out


def score(events, truth) -> tuple[int, int]:
    """(hits, false alarms) of one recording's events against its truth, matched one to one by overlap
    (the events benchmarks' matching)."""
    from transforms.answers.event_matching import match_by_overlap

    detections = [{"file": 0, "class": e.label, "start_s": e.start_s, "end_s": e.end_s} for e in events]
    truths = [{"file": 0, "class": label, "start_s": start, "end_s": end} for label, start, end in truth]
    hits = len(match_by_overlap(detections, truths))
    return hits, len(events) - hits


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.data).is_dir():
        print(f"No clips at {args.data}: pass --data DIR (one folder per label).")
        return 2
    from audio_models.keyword import load_keyword_model
    from transforms.answers.events import events_from_scores
    from transforms.answers.thresholds import rules_above
    from transforms.decoding.windows import frames_of
    from transforms.training import keyword_clips as kc

    model = load_keyword_model(args.model, int(round(args.hop_s * kc.SAMPLE_RATE)))
    spec = model.spec
    clips = kc.split_clips(kc.list_clips(args.data))[args.split]
    waveforms, label_ids = kc.load_clips(clips, list(spec.class_names))
    labels = [spec.class_names[i] for i in label_ids]
    scored, samples = [], 0
    for waveform, truth in recordings(waveforms, labels, args.seed):
        windows = frames_of(waveform, spec.window_samples, spec.hop_samples)
        starts = np.arange(len(windows)) * spec.hop_s
        scored.append((starts, model.predict(windows)["scores"], truth))
        samples += waveform.size
    minutes = samples / kc.SAMPLE_RATE / 60
    keywords = sum(len(truth) for _, _, truth in scored)
    print(f"{args.model}: {len(clips)} clips of the {args.split} split ({keywords} keywords), "
          f"{minutes:.1f} min in {len(scored)} recordings; hop {args.hop_s} s")
    print(f"{'smooth_s':>8} {'on':>5} {'hits':>5} {'missed':>6} {'false':>6} {'false/min':>9} {'recall':>7} "
          f"{'precision':>9} {'F1':>6}")
    best = None
    for smooth_s, on in itertools.product(SMOOTH_S, ON):
        rules = rules_above(on, smooth_s)
        hits = false = 0
        for starts, scores, truth in scored:
            events = events_from_scores(starts, starts + spec.window_s, scores, spec.class_names,
                                        spec.hop_s, rules)
            h, f = score(events, truth)
            hits, false = hits + h, false + f
        recall, precision = hits / keywords, hits / max(hits + false, 1)
        f1 = 2 * recall * precision / max(recall + precision, 1e-9)
        print(f"{smooth_s:8.2f} {on:5.2f} {hits:5d} {keywords - hits:6d} {false:6d} {false / minutes:9.2f} "
              f"{recall:7.1%} {precision:9.1%} {f1:6.3f}")
        if best is None or f1 > best[0]:
            best = (f1, smooth_s, on)
    print(f"best F1 {best[0]:.3f}: smooth_s {best[1]}, on {best[2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
