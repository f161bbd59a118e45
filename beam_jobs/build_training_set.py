"""build_training_set: tagged frames + a labels file -> tf.Transform'ed TFRecord splits for a head.

    python -m beam_jobs.build_training_set --frames OUT_DIR --labels LABELS.csv --output DS_DIR \\
        [--features embedding|logmel|both] [--pooling none|mean|max|mean_max] \\
        [--test_folds 3 [--eval_folds ...] [--train_folds 1,2]] [Beam pipeline options]

What it does and what DS_DIR receives: ``transforms/training/build.py``.
"""

from __future__ import annotations

import argparse

from beam_jobs import cli
from beam_jobs.training_arguments import add_training_set_arguments, request_from
from transforms.training.build import TrainingSetError, build_training_set
from transforms.training.report import format_report

JOB = "build_training_set"


@cli.job(JOB, add_training_set_arguments, beam=True)
def run(opts: argparse.Namespace, pipeline_args: list[str]) -> int:
    """Runs the job; returns the exit status (0 ok, 1 no training rows, 2 usage or input error)."""
    cli.require(opts, frames="OUT_DIR", labels="LABELS.csv", output="DS_DIR")
    try:
        built = build_training_set(request_from(opts), cli.pipeline_options(pipeline_args))
    except TrainingSetError as e:
        return cli.fail(JOB, str(e))
    print(format_report(built.report))
    if built.document is None:
        return cli.fail(JOB, "the training split is empty: no labelled frames to learn from", status=1)
    print(f"training set written to {opts.output} ({len(built.document['labels'])} classes, "
          f"{built.document['build_seconds']} s)")
    return 0


main = cli.main_for(run, __name__)
