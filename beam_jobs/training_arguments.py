"""The options a training set is asked for with, shared by ``build_training_set`` and
``compare_features``."""

from __future__ import annotations

import argparse

from beam_jobs.cli import UsageError, add_frames_options, comma_separated
from schemas import training as ts
from transforms.training.build import NEGATIVE_LABEL, TrainingSetRequest
from transforms.training.labelled_rows import EVAL_FROM, EVAL_FROM_AUTO, MIN_EVAL_FILES, SplitRule


def add_training_set_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's own options.  A plain parser, not a PipelineOptions subclass: Beam's Google Cloud
    options already own ``--labels`` (Dataflow job labels), and every PipelineOptions subclass in a
    process shares one namespace with tag_audio's ``--output`` and ``--features``."""
    add_frames_options(parser, runs="learn from")
    parser.add_argument("--labels", default=None,
                        help="CSV (local or gs://) with columns path (or uri), label and optionally fold; "
                             "a path labels every frames URI it equals or ends with. With start_s and "
                             "end_s columns (uri,start_s,end_s,label), the frames that overlap a span take "
                             "its label.")
    parser.add_argument("--negatives_from_labelled_files", nargs="?", const=NEGATIVE_LABEL, default=None,
                        metavar="LABEL",
                        help=f"With time-span labels: the frames of a labelled file that overlap no span "
                             f"become examples of LABEL (default {NEGATIVE_LABEL}) instead of being left "
                             "out.")
    parser.add_argument("--output", default=None, help="Training-set directory DS_DIR (local or gs://).")
    parser.add_argument("--features", default="embedding", choices=tuple(ts.FEATURE_SETS),
                        help="Frame columns to learn from: embedding (YAMNet's 1024-d), logmel "
                             "(logmel_stats, written by tag_audio --features logmel) or both.")
    parser.add_argument("--pooling", default=ts.POOLING_NONE, choices=tuple(ts.POOLINGS),
                        help="none: one example per frame; mean / max / mean_max: one example per clip "
                             "with the statistic(s) of its frames.")
    parser.add_argument("--train_folds", default="", help="Comma-separated folds for training "
                        "(default with fold options: every fold not named for eval or test).")
    parser.add_argument("--eval_folds", default="", help="Comma-separated folds for eval (default: "
                        "--eval_percent of the training clips, chosen by URI hash).")
    parser.add_argument("--test_folds", default="", help="Comma-separated folds for test. Without any "
                        "fold option, splits are chosen by URI hash.")
    parser.add_argument("--eval_percent", type=float, default=10.0,
                        help="Share of clips for eval when not given by fold.")
    parser.add_argument("--test_percent", type=float, default=10.0,
                        help="Share of clips for test when splitting by URI hash.")
    parser.add_argument("--split_salt", default="", help="Changes which clips the URI hash picks.")
    parser.add_argument("--eval_from", default=EVAL_FROM_AUTO, choices=EVAL_FROM,
                        help="Where eval carved from the training files comes from: files (by URI hash), "
                             "time_blocks (stretches of each file, for labels given as time spans), or auto: "
                             f"time blocks when the URI hash would give fewer than {MIN_EVAL_FILES} eval "
                             "files and the labels are time spans. The report says which.")
    parser.add_argument("--eval_block_s", type=float, default=10.0,
                        help="Time blocks: seconds of each eval block; one block in every eval_block_s / "
                             "(eval_percent / 100) seconds, widened to whole spans.")
    parser.add_argument("--eval_gap_s", type=float, default=1.0,
                        help="Time blocks: frames within this many seconds of an eval block go to no split, "
                             "so no training frame holds audio next to an eval frame's.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace a training set already in DS_DIR.")


def split_rule_from(opts: argparse.Namespace) -> SplitRule:
    """The split options as a rule; raises UsageError (one line, exit status 2) for impossible ones."""
    try:
        return _split_rule(opts)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _split_rule(opts: argparse.Namespace) -> SplitRule:
    return SplitRule(comma_separated(opts.train_folds), comma_separated(opts.eval_folds),
                     comma_separated(opts.test_folds), opts.eval_percent, opts.test_percent, opts.split_salt,
                     opts.eval_from, opts.eval_block_s, opts.eval_gap_s)


def request_from(opts: argparse.Namespace) -> TrainingSetRequest:
    return TrainingSetRequest(opts.frames, opts.labels, opts.output, opts.features, opts.pooling,
                              split_rule_from(opts), comma_separated(opts.runs), opts.overwrite,
                              opts.negatives_from_labelled_files)
