"""Trains the keyword-spotting model on a folder of labelled clips and exports it for tag_audio.

    python -m beam_jobs.train_keyword --data DIR --output MODEL_DIR [--augment] [--recipe seed]
        [--validation_only] [--folds K [--folds_only]]
    python -m beam_jobs.train_keyword --data DIR --output MODEL_DIR --report_test

Options left unset take the recipe's value.  ``DIR`` holds one folder per label;
every clip is decoded, resampled to 16 kHz
and padded or cut to one second.  Clips are split into train / validation /
test by speaker (the 8-hex-digit prefix of Speech Commands file names; clips
without one are split by file name).  The default recipe (``ds_cnn``) is a
log-mel depthwise-separable CNN trained on a cosine schedule; ``--recipe
seed`` is TensorFlow's "simple audio" recipe, kept for comparison.  The model
is exported to ``MODEL_DIR`` as a SavedModel that ``tag_audio --model keyword
--model_path MODEL_DIR`` runs, and measured on the validation and the test
speakers.  ``MODEL_DIR`` also receives ``metrics.json`` (accuracy overall and
per label, confusion matrix, split sizes) and ``confusion_matrix.png``.

How the figures are made (docs/keyword_model.md): candidates are trained with
``--validation_only`` and chosen on validation accuracy; ``--report_test``
then measures the chosen export on the test split, once.  ``--folds K`` adds
k-fold by speaker over the training and validation speakers (mean and
standard deviation of the fold accuracies); ``--folds_only`` reports only that.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence

from audio_models.keyword import DS_CNN, RECIPES, Architecture
from beam_jobs import cli
from transforms.training import keyword_clips as kd
from transforms.training.keyword_trainer import (
    CONFUSION_FILE,
    METRICS_FILE,
    RECIPE_OPTIMISATION,
    RECOMMENDED_AUGMENT,
    TrainConfig,
    cross_validate_only,
    percent,
    report_test,
    train,
)

JOB = "train_keyword"
_AUGMENT_OPTIONS = tuple(f.name for f in dataclasses.fields(kd.AugmentOptions))
_OPTIMISATION_OPTIONS = ("epochs", "batch_size", "learning_rate", "schedule", "warmup_epochs", "weight_decay",
                         "patience", "lr_patience", "label_smoothing", "mixup")


def _describe(options: kd.AugmentOptions) -> str:
    return ", ".join(f"{f.name}={getattr(options, f.name)}" for f in dataclasses.fields(options)
                     if getattr(options, f.name))


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """The training the command line asks for.  Raises cli.UsageError (cli.HelpShown for --help)."""
    return task_from(run.parse(argv)[0])[0]


def add_options(parser: argparse.ArgumentParser) -> None:
    ds_cnn, seed = RECIPE_OPTIMISATION[DS_CNN], RECIPE_OPTIMISATION["seed"]
    parser.add_argument("--data", required=True, help="dataset folder: one sub-folder per label")
    parser.add_argument("--output", required=True,
                        help="model directory (local or gs://) for the SavedModel, metrics.json and "
                             "confusion_matrix.png")
    parser.add_argument("--recipe", choices=RECIPES, default=DS_CNN,
                        help="ds_cnn: log-mel + depthwise-separable CNN, cosine schedule (default); "
                             "seed: TensorFlow's 'simple audio' CNN, Adam with early stopping")
    model = parser.add_argument_group("ds_cnn model")
    model.add_argument("--mfcc", type=int, default=0,
                       help="use this many MFCCs of the log-mel bands as features (default 0: log-mel)")
    model.add_argument("--width", type=int, default=Architecture.width, help="channels of every convolution")
    model.add_argument("--frequency_stride", type=int, default=Architecture.frequency_stride,
                       help="frequency stride of the first convolution (its time stride is 2)")
    model.add_argument("--blocks", type=int, default=Architecture.blocks,
                       help="depthwise-separable blocks")
    model.add_argument("--residual", action="store_true", help="skip connections around the blocks")
    model.add_argument("--dropout", type=float, default=Architecture.dropout)
    parser.add_argument("--ensemble", type=int, default=Architecture.members,
                        help="train this many models (seeds SEED, SEED + 1, ...) and export them as one, "
                             "scoring with the mean of their softmax outputs (its embedding is the first "
                             "model's); each model trains --epochs")
    training = parser.add_argument_group("optimisation")
    training.add_argument("--epochs", type=int,
                          help=f"epochs (ds_cnn {ds_cnn.epochs}; seed: at most {seed.epochs}, early "
                               "stopping ends sooner)")
    training.add_argument("--batch_size", type=int,
                          help=f"ds_cnn {ds_cnn.batch_size}, seed {seed.batch_size}")
    training.add_argument("--learning_rate", type=float,
                          help=f"peak (cosine) or constant learning rate: ds_cnn {ds_cnn.learning_rate}, "
                               f"seed {seed.learning_rate}")
    training.add_argument("--schedule", choices=("constant", "cosine"),
                          help="learning-rate schedule: cosine = linear warm-up, then cosine decay to zero "
                               f"(ds_cnn {ds_cnn.schedule}, seed {seed.schedule})")
    training.add_argument("--warmup_epochs", type=int, help=f"cosine warm-up (ds_cnn {ds_cnn.warmup_epochs})")
    training.add_argument("--weight_decay", type=float,
                          help=f"AdamW weight decay, 0 for Adam (ds_cnn {ds_cnn.weight_decay}, "
                               f"seed {seed.weight_decay})")
    training.add_argument("--patience", type=int,
                          help="early stopping: epochs without a better validation loss before stopping, "
                               f"0 for none (ds_cnn {ds_cnn.patience}, seed {seed.patience})")
    training.add_argument("--lr_patience", type=int,
                          help="if > 0, halve the learning rate after this many epochs without a better "
                               "validation loss (default 0)")
    training.add_argument("--label_smoothing", type=float,
                          help=f"ds_cnn {ds_cnn.label_smoothing}, seed {seed.label_smoothing}")
    training.add_argument("--mixup", type=float,
                          help="if > 0, mix pairs of training clips with a weight from Beta(this, this) "
                               "(default 0)")
    parser.add_argument("--validation_percent", type=float, default=10.0,
                        help="share of speakers held out for validation")
    parser.add_argument("--test_percent", type=float, default=10.0,
                        help="share of speakers held out for test")
    augment = parser.add_argument_group("augmentation")
    augment.add_argument("--augment", action="store_true",
                         help="turn on the recipe's recommended augmentations (ds_cnn: "
                              f"{_describe(RECOMMENDED_AUGMENT[DS_CNN])}; seed: "
                              f"{_describe(RECOMMENDED_AUGMENT['seed'])}); the options below override "
                              "single values")
    augment.add_argument("--time_shift_s", type=float,
                         help="shift clips by up to +-this many seconds (zero-filled)")
    augment.add_argument("--noise_probability", type=float,
                         help=f"chance of mixing a training-split {kd.SILENCE_LABEL} clip into a clip")
    augment.add_argument("--noise_max_gain", type=float, help="mixed noise is scaled by uniform(0, this)")
    augment.add_argument("--gain_db", type=float, help="random gain of up to +-this many dB")
    augment.add_argument("--reverse_to_unknown", type=float,
                         help=f"chance of playing a keyword clip backwards as an extra {kd.UNKNOWN_LABEL} "
                              "example (fewer false alarms on other speech)")
    augment.add_argument("--spliced_unknown", type=float,
                         help=f"add this fraction of extra {kd.UNKNOWN_LABEL} clips spliced from halves of "
                              "two keyword clips (fewer false alarms between words)")
    augment.add_argument("--speed", type=float,
                         help="speed perturbation: play clips at a rate in [1 - this, 1 + this]")
    augment.add_argument("--frequency_warp", type=float,
                         help="pitch and formant perturbation: scale each clip's frequencies by a factor in "
                              "[1 - this, 1 + this] before the mel bands (tempo unchanged)")
    augment.add_argument("--time_masks", type=int, help="SpecAugment: number of time masks")
    augment.add_argument("--time_mask_frames", type=int, help="SpecAugment: widest time mask (10-ms frames)")
    augment.add_argument("--frequency_masks", type=int, help="SpecAugment: number of frequency masks")
    augment.add_argument("--frequency_mask_bins", type=int, help="SpecAugment: widest frequency mask (bands)")
    parser.add_argument("--weights_dtype", choices=("float32", "float16"), default="float32",
                        help="storage type of the exported kernels (float16 halves the model's size)")
    parser.add_argument("--hop_s", type=float, default=0.5,
                        help="default hop between one-second windows stored with the model")
    parser.add_argument("--max_clips_per_label", type=int, default=0,
                        help="use at most this many clips per label in each split (quick runs)")
    parser.add_argument("--seed", type=int, default=0)
    protocol = parser.add_argument_group(
        "how the figures are made",
        "Choose recipes on validation accuracy (--validation_only); report the test split once, for the "
        "final model; --folds adds k-fold by speaker.")
    protocol.add_argument("--folds", type=int, default=0,
                          help="if > 1, first train the recipe this many times, k-fold by speaker over the "
                               "training and validation speakers (test speakers in none), and report the "
                               "accuracy per fold, its mean and standard deviation (default 0: none)")
    protocol.add_argument("--folds_only", action="store_true",
                          help="with --folds: report k-fold only (metrics.json in --output), no final model")
    protocol.add_argument("--report_test", action="store_true",
                          help="train nothing: measure the model in --output (trained with "
                               "--validation_only and chosen on validation) on the test split, once, and add "
                               "the figures to its metrics.json")
    protocol.add_argument("--validation_only", action="store_true",
                          help="while choosing a recipe: measure the model on the validation split only and "
                               "leave the test split unread")
    parser.add_argument("--clip_cache", default=None,
                        help="folder where decoded clips are kept between runs on the same files")


def task_from(args: argparse.Namespace) -> tuple[TrainConfig, bool, bool]:
    """``(config, folds only, report test)``: what the command line asks for."""
    if args.folds == 1 or args.folds < 0:
        raise cli.UsageError(f"--folds {args.folds}: give 2 or more folds, or 0 for no k-fold")
    if args.folds_only and not args.folds:
        raise cli.UsageError("--folds_only needs --folds K (2 or more)")
    if args.report_test and (args.folds or args.validation_only):
        raise cli.UsageError("--report_test trains nothing: leave out --folds and --validation_only")

    base = RECOMMENDED_AUGMENT[args.recipe] if args.augment else kd.AugmentOptions()
    augment_options = dataclasses.replace(base, **_given(args, _AUGMENT_OPTIONS))
    optimisation = dataclasses.replace(RECIPE_OPTIMISATION[args.recipe],
                                       **_given(args, _OPTIMISATION_OPTIONS))
    architecture = Architecture(recipe=args.recipe, mfcc=args.mfcc, width=args.width,
                                frequency_stride=args.frequency_stride, blocks=args.blocks,
                                residual=args.residual, dropout=args.dropout, members=args.ensemble)
    config = TrainConfig(
        data_dir=args.data, output_dir=args.output, architecture=architecture, optimisation=optimisation,
        split=kd.SplitPercents(args.validation_percent, args.test_percent), augment=augment_options,
        weights_dtype=args.weights_dtype, hop_s=args.hop_s, max_clips_per_label=args.max_clips_per_label,
        seed=args.seed, clip_cache=args.clip_cache, folds=args.folds, evaluate_test=not args.validation_only)
    return config, args.folds_only, args.report_test


def _given(args: argparse.Namespace, names: Sequence[str]) -> dict:
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    """Trains, tests and exports; returns the exit status (0 ok, 2 usage error)."""
    config, folds_only, test_only = task_from(args)
    if test_only:
        _print_test(report_test(config))
        print(f"test figures added to {config.output_dir}/{METRICS_FILE} and {CONFUSION_FILE}")
        return 0
    if folds_only:
        _print_folds(cross_validate_only(config)["cross_validation"])
        print(f"{METRICS_FILE} written to {config.output_dir}")
        return 0
    metrics = train(config).metrics
    validation = metrics["splits"][kd.VALIDATION]
    print(f"validation accuracy (choose on this): {percent(metrics['validation_accuracy'])} "
          f"({validation['clips']} clips, {validation['speakers']} speakers)")
    if metrics.get("cross_validation"):
        _print_folds(metrics["cross_validation"])
    if config.evaluate_test:
        _print_test(metrics)
    else:
        for label, row in metrics["validation_per_label"].items():
            print(f"  {label:>10}: {percent(row['accuracy'])} of {row['count']}")
    print(f"model, {METRICS_FILE} and {CONFUSION_FILE} written to {config.output_dir}")
    return 0


def _print_folds(folds: dict) -> None:
    print(f"k-fold by speaker ({folds['folds']} folds over the training and validation speakers): "
          f"mean {percent(folds['mean_accuracy'])}, sd {100 * folds['sd_accuracy']:.1f} points; "
          f"folds {', '.join(percent(a) for a in folds['accuracy_per_fold'])}")


def _print_test(metrics: dict) -> None:
    test = metrics["splits"][kd.TEST]
    print(f"test accuracy on held-out speakers (report once, never choose on it): "
          f"{percent(metrics['test_accuracy'])} ({test['clips']} clips, {test['speakers']} speakers)")
    for label, row in metrics["test_per_label"].items():
        print(f"  {label:>10}: {percent(row['accuracy'])} of {row['count']}")


main = cli.main_for(run, __name__, log_level=logging.INFO)  # training reports its progress at INFO
