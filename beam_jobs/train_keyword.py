"""Trains the keyword-spotting CNN on a folder of labelled clips and exports it for tag_audio.

    python -m beam_jobs.train_keyword --data DIR --output MODEL_DIR [--augment]

``DIR`` holds one folder per label; every clip is decoded, resampled to 16 kHz
and padded or cut to one second.  Clips are split into train / validation /
test by speaker (the 8-hex-digit prefix of Speech Commands file names; clips
without one are split by file name).  The model trains with Adam and early
stopping on the validation loss, is tested on the held-out speakers, and is
exported to ``MODEL_DIR`` as a SavedModel that ``tag_audio --model keyword
--model_path MODEL_DIR`` runs.  ``MODEL_DIR`` also receives ``metrics.json``
(test accuracy overall and per label, confusion matrix, split sizes) and
``confusion_matrix.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

from transforms.training import keyword_clips as kd
from transforms.training.keyword_trainer import (
    CONFUSION_FILE,
    METRICS_FILE,
    RECOMMENDED_AUGMENT,
    TrainConfig,
    percent,
    train,
)


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.train_keyword",
        description="Train the keyword-spotting CNN (TensorFlow 'simple audio recognition' recipe) on a "
                    "folder with one sub-folder of clips per label, test it on held-out speakers and "
                    "export it as a SavedModel for tag_audio --model keyword.")
    parser.add_argument("--data", required=True, help="dataset folder: one sub-folder per label")
    parser.add_argument("--output", required=True,
                        help="model directory (local or gs://) for the SavedModel, metrics.json and "
                             "confusion_matrix.png")
    parser.add_argument("--epochs", type=int, default=150, help="maximum epochs (early stopping ends sooner)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--patience", type=int, default=20,
                        help="early stopping: epochs without a better validation loss before stopping")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="initial Adam learning rate")
    parser.add_argument("--lr_patience", type=int, default=0,
                        help="if > 0, halve the learning rate after this many epochs without a better "
                             "validation loss (default 0: constant, as the recipe trains)")
    parser.add_argument("--validation_percent", type=float, default=10.0,
                        help="share of speakers held out for validation")
    parser.add_argument("--test_percent", type=float, default=10.0,
                        help="share of speakers held out for test")
    parser.add_argument("--augment", action="store_true",
                        help="turn on the recommended augmentations: "
                             f"time shift {RECOMMENDED_AUGMENT.time_shift_s} s, background noise from "
                             f"{kd.SILENCE_LABEL} (p={RECOMMENDED_AUGMENT.noise_probability}, gain up to "
                             f"{RECOMMENDED_AUGMENT.noise_max_gain}), "
                             f"gain +-{RECOMMENDED_AUGMENT.gain_db} dB, reversed keywords as "
                             f"{kd.UNKNOWN_LABEL} (p={RECOMMENDED_AUGMENT.reverse_to_unknown}), "
                             f"{RECOMMENDED_AUGMENT.spliced_unknown:.0%} extra spliced "
                             f"{kd.UNKNOWN_LABEL} clips; "
                             "the options below override single values")
    parser.add_argument("--time_shift_s", type=float, default=None,
                        help="shift clips by up to +-this many seconds (zero-filled)")
    parser.add_argument("--noise_probability", type=float, default=None,
                        help=f"chance of mixing a training-split {kd.SILENCE_LABEL} clip into a clip")
    parser.add_argument("--noise_max_gain", type=float, default=None,
                        help="mixed noise is scaled by uniform(0, this)")
    parser.add_argument("--gain_db", type=float, default=None, help="random gain of up to +-this many dB")
    parser.add_argument("--reverse_to_unknown", type=float, default=None,
                        help=f"chance of playing a keyword clip backwards as an extra {kd.UNKNOWN_LABEL} "
                             "example (fewer false alarms on other speech)")
    parser.add_argument("--spliced_unknown", type=float, default=None,
                        help=f"add this fraction of extra {kd.UNKNOWN_LABEL} clips spliced from halves of "
                             "two keyword clips (fewer false alarms between words)")
    parser.add_argument("--weights_dtype", choices=("float32", "float16"), default="float32",
                        help="storage type of the exported kernels (float16 halves the model's size)")
    parser.add_argument("--hop_s", type=float, default=0.5,
                        help="default hop between one-second windows stored with the model")
    parser.add_argument("--max_clips_per_label", type=int, default=0,
                        help="use at most this many clips per label in each split (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    base = RECOMMENDED_AUGMENT if args.augment else kd.AugmentOptions()
    overrides = {name: getattr(args, name) for name in
                 ("time_shift_s", "noise_probability", "noise_max_gain", "gain_db", "reverse_to_unknown",
                  "spliced_unknown")
                 if getattr(args, name) is not None}
    return TrainConfig(
        data_dir=args.data, output_dir=args.output, epochs=args.epochs, batch_size=args.batch_size,
        patience=args.patience, learning_rate=args.learning_rate, lr_patience=args.lr_patience,
        split=kd.SplitPercents(args.validation_percent, args.test_percent),
        augment=dataclasses.replace(base, **overrides), weights_dtype=args.weights_dtype,
        hop_s=args.hop_s, max_clips_per_label=args.max_clips_per_label, seed=args.seed)


def run(argv: Sequence[str] | None = None) -> dict:
    config = parse_args(argv)
    metrics = train(config).metrics
    test = metrics["splits"][kd.TEST]
    print(f"test accuracy on held-out speakers: {percent(metrics['test_accuracy'])} "
          f"({test['clips']} clips, {test['speakers']} speakers)")
    for label, row in metrics["test_per_label"].items():
        print(f"  {label:>10}: {percent(row['accuracy'])} of {row['count']}")
    print(f"model, {METRICS_FILE} and {CONFUSION_FILE} written to {config.output_dir}")
    return metrics


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    run()
