"""compare_features: the same head on the log-mel baseline and on the YAMNet encoder, and one report.

    python -m beam_jobs.compare_features --frames OUT_DIR --labels LABELS.csv --output REPORT_DIR \\
        [--features logmel,embedding] [--pooling none] [--train_folds 1,2 --test_folds 3 ...] \\
        [--hidden_units 512 --dropout 0.3 --epochs 100 --patience 10 --seed 0 ...] [--overwrite]

OUT_DIR must be tagged with ``tag_audio --features logmel``.  What is compared
and how the cost is measured: ``transforms/training/feature_comparison.py``.
"""

from __future__ import annotations

import argparse
import dataclasses

from beam_jobs import cli
from beam_jobs.training_arguments import add_training_set_arguments, request_from
from schemas import training as ts
from transforms.training.feature_comparison import (
    COMPARISON_JSON,
    COMPARISON_MD,
    DEFAULT_FEATURE_SETS,
    HEAD_OPTIONS,
    ComparisonConfig,
    ComparisonError,
    compare,
    format_markdown,
    write_report,
)
from transforms.training.head_trainer import HeadConfig

JOB = "compare_features"


def add_options(parser: argparse.ArgumentParser) -> None:
    # build_training_set's own options (split, pooling, runs) with their help; --output and --features
    # are redefined here, hence conflict_handler="resolve" on the parser.
    add_training_set_arguments(parser)
    parser.add_argument("--output", default=None,
                        help="REPORT_DIR (local or gs://): comparison.json, comparison.md and one folder per "
                             "feature set with its training set and head.")
    parser.add_argument("--features", default=",".join(DEFAULT_FEATURE_SETS),
                        help="Comma-separated feature sets to compare (embedding, logmel, both); the first "
                             "is the baseline.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the training sets and heads of an earlier comparison in REPORT_DIR.")
    defaults = {field.name: field.default for field in dataclasses.fields(HeadConfig)}
    for name in HEAD_OPTIONS:
        parser.add_argument(f"--{name}", type=type(defaults[name]), default=defaults[name],
                            help=f"train_head's --{name} (default {defaults[name]}), the same for every head")
    parser.add_argument("--top_pairs", type=int, default=5,
                        help="Confusion pairs listed per feature set.")
    parser.add_argument("--min_gain", type=float, default=2.0,
                        help="Points of clip accuracy the encoder must gain (and at least one clip) to be "
                             "called worth its cost.")
    parser.add_argument("--max_timing_windows", type=int, default=20_000,
                        help="Windows actually run when timing the log-mel frontend and the model; beyond "
                             "it the time is scaled to the run's frame count.")
    parser.add_argument("--no_model_timing", action="store_true",
                        help="Do not load and time the frames' model in-process.")


def comparison_config(opts: argparse.Namespace, pipeline_args: list[str]) -> ComparisonConfig:
    """The comparison the command line asks for.  Raises cli.UsageError."""
    cli.require(opts, frames="OUT_DIR", labels="LABELS.csv", output="REPORT_DIR")
    feature_sets = cli.comma_separated(opts.features)
    unknown = [f for f in feature_sets if f not in ts.FEATURE_SETS]
    if unknown or len(feature_sets) < 2 or len(set(feature_sets)) != len(feature_sets):
        raise cli.UsageError(f"--features needs two or more distinct feature sets of "
                             f"{', '.join(ts.FEATURE_SETS)}, not {opts.features!r}")
    head = HeadConfig(dataset_dir="", output_dir="", export=False,
                      **{name: getattr(opts, name) for name in HEAD_OPTIONS})
    return ComparisonConfig(opts.output.rstrip("/"), feature_sets, request_from(opts),
                            cli.pipeline_options(pipeline_args),
                            head, opts.top_pairs, opts.min_gain, opts.max_timing_windows,
                            not opts.no_model_timing, opts.overwrite)


@cli.job(JOB, add_options, beam=True, conflict_handler="resolve",
         epilog="Any Apache Beam pipeline option is passed on to build_training_set.")
def run(opts: argparse.Namespace, pipeline_args: list[str]) -> int:
    """Runs the comparison; returns the exit status (0 ok, 2 a step failed or bad usage)."""
    config = comparison_config(opts, pipeline_args)
    try:
        doc = compare(config)
    except ComparisonError as e:
        return cli.fail(JOB, str(e))
    write_report(config.output_dir, doc)
    print(format_markdown(doc))
    print(f"{COMPARISON_JSON} and {COMPARISON_MD} written to {config.output_dir}")
    return 0


main = cli.main_for(run, __name__)
