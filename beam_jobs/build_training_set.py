"""build_training_set: tagged frames + a labels file -> tf.Transform'ed TFRecord splits for a head.

    python -m beam_jobs.build_training_set --frames OUT_DIR --labels LABELS.csv --output DS_DIR \\
        [--features embedding|logmel|both] [--pooling none|mean|max|mean_max] \\
        [--test_folds 3 [--eval_folds ...] [--train_folds 1,2]] [Beam pipeline options]

What it does and what DS_DIR receives: ``transforms/training/build.py``.
"""

from __future__ import annotations

import argparse
import sys

from beam_jobs import command, parse_job_args
from beam_jobs.runners import expand_runner_alias
from transforms.training.build import (
    TrainingSetError,
    add_job_arguments,
    build_training_set,
    local_options,
    request_from,
)
from transforms.training.report import format_report


def _fail(message: str) -> int:
    print(f"build_training_set: {message}", file=sys.stderr)
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m beam_jobs.build_training_set", description=__doc__, allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any Apache Beam pipeline option is accepted as well. Default runner: FnApiRunner (local).")
    add_job_arguments(parser)
    return parser


def run(argv: list[str] | None = None) -> int:
    """Runs the job; returns the exit status (0 ok, 1 no training rows, 2 usage or input error)."""
    parsed = parse_job_args(_parser(), argv)
    if parsed is None:
        return 0
    opts, pipeline_args = parsed
    if not (opts.frames and opts.labels and opts.output):
        return _fail("--frames OUT_DIR, --labels LABELS.csv and --output DS_DIR are required")
    try:
        built = build_training_set(request_from(opts), local_options(expand_runner_alias(pipeline_args)))
    except TrainingSetError as e:
        return _fail(str(e))
    print(format_report(built.report))
    if built.document is None:
        print("build_training_set: the training split is empty: no labelled frames to learn from",
              file=sys.stderr)
        return 1
    print(f"training set written to {opts.output} ({len(built.document['labels'])} classes, "
          f"{built.document['build_seconds']} s)")
    return 0


if __name__ == "__main__":
    command(run)
