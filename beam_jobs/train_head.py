"""train_head: a classifier head (YAMNet transfer learning: two dense layers) on a build_training_set
dataset, and its end-to-end export (audio -> YAMNet -> transform -> head) for tag_audio --model head.

    python -m beam_jobs.train_head --dataset DS_DIR --output HEAD_DIR [--hidden_units 512] [--dropout 0.3]

HEAD_DIR receives metrics.json, confusion_matrix.png, head.keras and export/
(``tag_audio --model head --model_path HEAD_DIR/export``); see
``transforms/training/head_trainer.py``.
"""

from __future__ import annotations

import argparse

from audio_models.loading import ModelUnavailableError
from beam_jobs import cli
from transforms.training.head_trainer import CONFUSION_FILE, METRICS_FILE, HeadConfig, format_metrics, train

JOB = "train_head"


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="training-set directory DS_DIR (local or gs://)")
    parser.add_argument("--output", required=True,
                        help="HEAD_DIR (local or gs://): export/, metrics.json, confusion_matrix.png")
    parser.add_argument("--hidden_units", type=int, default=512, help="width of the hidden dense layer")
    parser.add_argument("--dropout", type=float, default=0.3,
                        help="dropout after the hidden layer (0 = none)")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=100, help="maximum epochs (early stopping ends sooner)")
    parser.add_argument("--patience", type=int, default=10,
                        help="epochs without a better eval loss before stopping")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--yamnet_path", default=None,
                        help="YAMNet weights for the export (default: the model that made the frames, as "
                             "recorded in DS_DIR/dataset.json); must be the same weights")
    parser.add_argument("--no_export", action="store_true", help="train and report only")


def head_config(args: argparse.Namespace) -> HeadConfig:
    return HeadConfig(args.dataset.rstrip("/"), args.output.rstrip("/"), args.hidden_units, args.dropout,
                      args.learning_rate, args.batch_size, args.epochs, args.patience, args.seed,
                      args.yamnet_path, not args.no_export)


@cli.job(JOB, add_options)
def run(args: argparse.Namespace) -> int:
    config = head_config(args)
    try:
        metrics = train(config)
    except (FileNotFoundError, ValueError, ModelUnavailableError) as e:
        return cli.fail(JOB, str(e))
    print(format_metrics(metrics))
    print(f"{METRICS_FILE} and {CONFUSION_FILE} written to {config.output_dir}")
    return 0


main = cli.main_for(run, __name__)
