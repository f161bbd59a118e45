"""What a training set is: its tf.Example features, before and after tf.Transform, and its files.

A training set (``DS_DIR``, written by ``beam_jobs.build_training_set``)::

    DS_DIR/train/part-*.tfrecord.gz      # transformed tf.Examples, one per frame (or per clip)
    DS_DIR/eval/part-*.tfrecord.gz
    DS_DIR/test/part-*.tfrecord.gz
    DS_DIR/transform_output/             # tft.TFTransformOutput: transform_fn/ + transformed_metadata/
    DS_DIR/raw_sample/part-*.tfrecord.gz # a few raw (untransformed) held-out examples, for export checks
    DS_DIR/dataset.json                  # FeatureLayout, base model, split rule, sources
    DS_DIR/report.json                   # class counts per split, unmatched files and labels

Raw examples carry one float feature per (frame column, pooling statistic):
``embedding`` for frame rows, ``embedding_mean`` / ``embedding_max`` for
pooled clips, likewise ``logmel_stats``.  The transform concatenates them in
``FeatureLayout.raw_feature_names()`` order and z-scores every element, so a
head sees one ``features`` vector whatever was chosen; adding a frame column
is one entry in ``FEATURE_SETS`` and ``COLUMN_DIMS``.
"""

from __future__ import annotations

import dataclasses

# Frame columns a training set can take its features from.
from schemas.tables import EMBEDDING, LOGMEL_STATS, URI

LOGMEL_STATS_DIM = 128  # per-band mean and std of YAMNet's 64 mel bands

# --features choices -> frame columns, in concatenation order.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "embedding": (EMBEDDING,),
    "logmel": (LOGMEL_STATS,),
    "both": (EMBEDDING, LOGMEL_STATS),
}

# --pooling choices -> statistics over a clip's frames ('none' keeps frame rows).
POOLING_NONE = "none"
POOLINGS: dict[str, tuple[str, ...]] = {
    POOLING_NONE: (),
    "mean": ("mean",),
    "max": ("max",),
    "mean_max": ("mean", "max"),
}

# Raw example keys besides the features.
LABEL = "label"
# URI (above): the frame column, kept as is
FRAME_INDEX = "frame_index"  # -1 on pooled (clip) rows
NUM_FRAMES = "num_frames"  # frames behind the row: 1 for frame rows

# Transformed example keys.
FEATURES = "features"  # float32 [input_dim], z-scored
LABEL_ID = "label_id"  # int64 index into the label vocabulary, -1 for a label unseen in training
LABEL_VOCABULARY = "label"  # vocabulary file name in the transform output

# Files and folders of DS_DIR.
TRAIN, EVAL, TEST = "train", "eval", "test"
SPLITS = (TRAIN, EVAL, TEST)
TRANSFORM_DIR = "transform_output"
RAW_SAMPLE_DIR = "raw_sample"
TRANSFORM_TEMP_DIR = "_tft_temp"
DATASET_FILE = "dataset.json"
REPORT_FILE = "report.json"
SPANS_FILE = "spans.csv"  # split,uri,label,start_s,end_s: the labelled spans of each split (span labels)
SPANS_HEADER = ("split", "uri", "label", "start_s", "end_s")
SHARD_PREFIX = "part"
SHARD_SUFFIX = ".tfrecord.gz"
COMPRESSION = "GZIP"  # tf.data's name for SHARD_SUFFIX's compression


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    """Which frame columns feed the head, how frames are pooled, and each column's width."""

    columns: tuple[str, ...]  # frame columns, in concatenation order
    dims: tuple[int, ...]  # width of each column
    pooling: str = POOLING_NONE

    def __post_init__(self):
        if len(self.columns) != len(self.dims) or not self.columns:
            raise ValueError(f"one width per column needed: {self.columns} / {self.dims}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")

    @property
    def pooled(self) -> bool:
        return self.pooling != POOLING_NONE

    @property
    def statistics(self) -> tuple[str, ...]:
        return POOLINGS[self.pooling]

    def raw_features(self) -> list[tuple[str, str, str | None, int]]:
        """``(raw feature name, frame column, statistic or None, width)`` in concatenation order."""
        if not self.pooled:
            return [(column, column, None, dim) for column, dim in zip(self.columns, self.dims)]
        return [(f"{column}_{stat}", column, stat, dim)
                for column, dim in zip(self.columns, self.dims) for stat in self.statistics]

    def raw_feature_names(self) -> list[str]:
        return [name for name, _, _, _ in self.raw_features()]

    @property
    def input_dim(self) -> int:
        """Width of the transformed ``features`` vector."""
        return sum(dim for _, _, _, dim in self.raw_features())

    def raw_feature_spec(self) -> dict:
        """tf.io feature spec of a raw example (the transform's input)."""
        import tensorflow as tf

        spec = {name: tf.io.FixedLenFeature([dim], tf.float32) for name, _, _, dim in self.raw_features()}
        spec[LABEL] = tf.io.FixedLenFeature([], tf.string)
        spec[URI] = tf.io.FixedLenFeature([], tf.string)
        spec[FRAME_INDEX] = tf.io.FixedLenFeature([], tf.int64)
        spec[NUM_FRAMES] = tf.io.FixedLenFeature([], tf.int64)
        return spec

    def to_document(self) -> dict:
        return {"columns": list(self.columns), "dims": list(self.dims), "pooling": self.pooling,
                "raw_features": self.raw_feature_names(), "input_dim": self.input_dim}

    @classmethod
    def from_document(cls, document: dict) -> FeatureLayout:
        return cls(tuple(document["columns"]), tuple(int(d) for d in document["dims"]),
                   document.get("pooling", POOLING_NONE))


def feature_columns(features: str) -> tuple[str, ...]:
    """Frame columns of a ``--features`` choice."""
    if features not in FEATURE_SETS:
        raise ValueError(f"--features must be one of {', '.join(FEATURE_SETS)}, not {features!r}")
    return FEATURE_SETS[features]


def split_dir(ds_dir: str, split: str) -> str:
    return f"{ds_dir.rstrip('/')}/{split}"


def shard_pattern(ds_dir: str, split: str) -> str:
    """Glob of a split's TFRecord shards (local or ``gs://``)."""
    return f"{split_dir(ds_dir, split)}/{SHARD_PREFIX}-*{SHARD_SUFFIX}"


def ds_path(ds_dir: str, *parts: str) -> str:
    return "/".join([ds_dir.rstrip("/"), *parts])
