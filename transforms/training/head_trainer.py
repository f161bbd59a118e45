"""Training a classifier head on a build_training_set dataset, and its end-to-end export.

Reads the TFRecord splits through tf.data with the transform output's feature
spec, trains the recipe's two dense layers with Adam and early stopping on the
eval split, and reports per split the frame accuracy and the clip accuracy
(a clip's prediction is the mean of its frames' class probabilities), and per
class precision, recall and AP at frame level (and, for time-span labels, at
event level) beside the majority baseline (``head_metrics``).
HEAD_DIR receives ``metrics.json``, ``confusion_matrix.png`` (clips of the
test split, else eval; spans for time-span labels), ``head.keras`` (the trained head on transformed
features) and ``export/``: one SavedModel from waveform windows
to class scores (``audio_models.head``) that
``tag_audio --model head --model_path HEAD_DIR/export`` runs.  Before it is
reported, the export is reloaded and checked to give the training-time
predictions on the raw sample kept in DS_DIR.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence

import numpy as np

import storage
from schemas import training as ts
from transforms.answers import threshold_tuning as tuning
from transforms.training import detection_metrics as dm
from transforms.training import head_metrics as hm
from transforms.training.detection_metrics import SplitFrames
from transforms.training.evaluation import Evaluation, confusion_png

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"
KERAS_FILE = "head.keras"  # the trained Keras head on transformed features (for fine-tuning, checks)
EXPORT_TOLERANCE = 1e-4  # max |export - training| class probability accepted by the reload check


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    dataset_dir: str
    output_dir: str
    hidden_units: int = 512
    dropout: float = 0.3
    learning_rate: float = 1e-3
    batch_size: int = 64
    epochs: int = 100
    patience: int = 10
    seed: int = 0
    yamnet_path: str | None = None  # default: the model that made the frames (dataset.json)
    export: bool = True


@dataclasses.dataclass
class SplitResult:
    """Predictions of one split: frame-level confusion, per-clip probability sums and every row's
    probabilities (for per-class metrics)."""

    num_classes: int
    frame_confusion: np.ndarray = dataclasses.field(init=False)  # [true, predicted] row counts
    clip_sums: dict = dataclasses.field(default_factory=dict)  # uri -> [sum of probabilities, label id]
    _rows: list = dataclasses.field(default_factory=list)  # (uri codes, frame indices, label ids, scores)
    _uri_codes: dict = dataclasses.field(default_factory=dict)  # uri -> its code in _rows

    def __post_init__(self):
        self.frame_confusion = np.zeros((self.num_classes, self.num_classes), np.int64)

    def add(self, probabilities: np.ndarray, label_ids: np.ndarray, uris: Sequence[bytes],
            frame_index: np.ndarray | None = None) -> None:
        np.add.at(self.frame_confusion, (label_ids, probabilities.argmax(axis=1)), 1)
        for uri, p, label in zip(uris, probabilities, label_ids):
            entry = self.clip_sums.setdefault(uri, [np.zeros(self.num_classes, np.float64), int(label)])
            entry[0] += p
        index = np.full(len(label_ids), -1, np.int64) if frame_index is None else frame_index
        codes = [self._uri_codes.setdefault(_text(u), len(self._uri_codes)) for u in uris]
        self._rows.append((np.asarray(codes, np.int64), np.asarray(index, np.int64),
                           np.asarray(label_ids, np.int64), np.asarray(probabilities, np.float32)))

    def frames(self) -> SplitFrames:
        names = tuple(self._uri_codes)  # insertion order: the codes
        if not self._rows:
            return SplitFrames(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64),
                               np.zeros((0, self.num_classes), np.float32), names)
        return SplitFrames(*(np.concatenate(parts) for parts in zip(*self._rows)), names)

    @property
    def clip_confusion(self) -> np.ndarray:
        matrix = np.zeros((self.num_classes, self.num_classes), np.int64)
        for sums, label in self.clip_sums.values():
            matrix[label, int(np.argmax(sums))] += 1
        return matrix

    def document(self) -> dict:
        frames, clips = self.frame_confusion, self.clip_confusion
        return {"rows": int(frames.sum()), "clips": int(clips.sum()),
                "frame_accuracy": _accuracy(frames), "clip_accuracy": _accuracy(clips)}


def _accuracy(confusion: np.ndarray) -> float | None:
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else None


# --- reading the training set ------------------------------------------------------------------

def read_dataset_document(ds_dir: str) -> dict:
    path = ts.ds_path(ds_dir, ts.DATASET_FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"{ds_dir} is not a finished training set (no {ts.DATASET_FILE}): "
                                "run beam_jobs.build_training_set first")
    return storage.read_json(path)


def read_report(ds_dir: str) -> dict:
    return storage.read_json(ts.ds_path(ds_dir, ts.REPORT_FILE))


def known_rows(report: dict, split: str, labels: Sequence[str], pooled: bool) -> int:
    """Rows of ``split`` whose label the head knows (one per clip when pooled, else per frame)."""
    classes = report["splits"][split]["classes"]
    unit = "clips" if pooled else "frames"
    return sum(counts[unit] for label, counts in classes.items() if label in labels)


def split_files(ds_dir: str, split: str) -> list[str]:
    return [f.path for f in storage.match(ts.shard_pattern(ds_dir, split))]


def split_dataset(ds_dir: str, split: str, feature_spec: dict, batch_size: int, shuffle: bool = False,
                  seed: int = 0):
    """Parsed batches of one split: dicts of features, label_id, uri, frame_index (unknown labels dropped)."""
    import tensorflow as tf

    files = split_files(ds_dir, split)
    dataset = tf.data.TFRecordDataset(files, compression_type=ts.COMPRESSION)
    if shuffle:
        dataset = dataset.shuffle(50_000, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda records: tf.io.parse_example(records, feature_spec),
                                            num_parallel_calls=tf.data.AUTOTUNE)
    # A label the training split lacks has label_id -1: nothing a head could predict.
    dataset = dataset.unbatch().filter(lambda row: row[ts.LABEL_ID] >= 0).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _xy(dataset):
    return dataset.map(lambda row: (row[ts.FEATURES], row[ts.LABEL_ID]))


def read_raw_sample(ds_dir: str, layout: ts.FeatureLayout) -> dict[str, np.ndarray]:
    """The raw rows DS_DIR keeps for export checks, as arrays."""
    import tensorflow as tf

    files = [f.path for f in storage.match(f"{ts.ds_path(ds_dir, ts.RAW_SAMPLE_DIR)}/*{ts.SHARD_SUFFIX}")]
    if not files:
        return {}
    records = list(tf.data.TFRecordDataset(files, compression_type=ts.COMPRESSION).as_numpy_iterator())
    if not records:
        return {}
    parsed = tf.io.parse_example(tf.constant(records), layout.raw_feature_spec())
    return {name: value.numpy() for name, value in parsed.items()}


def _text(uri: bytes | str) -> str:
    return uri.decode() if isinstance(uri, bytes) else uri


def _key(uri: bytes | str, frame_index: int) -> tuple[str, int]:
    return (_text(uri), int(frame_index))


# --- training and evaluation -------------------------------------------------------------------

def evaluate(classifier, dataset, num_classes: int, capture: set | None = None,
             captured: dict | None = None) -> SplitResult:
    """Frame and clip predictions on a parsed split; keeps the probabilities of rows keyed in ``capture``."""
    import tensorflow as tf

    result = SplitResult(num_classes)
    for batch in dataset:
        probabilities = tf.nn.softmax(classifier(batch[ts.FEATURES], training=False)).numpy()
        uris = batch[ts.URI].numpy()
        result.add(probabilities, batch[ts.LABEL_ID].numpy(), uris, batch[ts.FRAME_INDEX].numpy())
        if capture:
            for i, (uri, index) in enumerate(zip(uris, batch[ts.FRAME_INDEX].numpy())):
                key = _key(uri, index)
                if key in capture:
                    captured[key] = probabilities[i]
    return result


def check_export(model, raw: dict[str, np.ndarray], training_probabilities: dict,
                 layout: ts.FeatureLayout) -> dict:
    """Exported ``from_features`` vs the training-time head on the same rows: the largest difference."""
    keys = [_key(u, i) for u, i in zip(raw[ts.URI], raw[ts.FRAME_INDEX])]
    rows = [i for i, key in enumerate(keys) if key in training_probabilities]
    if not rows:
        return {"rows": 0, "max_abs_diff": None}
    exported = model.predict_features({name: raw[name][rows] for name in layout.raw_feature_names()})
    expected = np.stack([training_probabilities[keys[i]] for i in rows])
    return {"rows": len(rows), "max_abs_diff": float(np.abs(exported - expected).max())}


def _load_yamnet(path: str, base_model: dict):
    """The YAMNet that made the frames: the export must compute the same embeddings."""
    from audio_models.loading import load_model, load_spec, resolve_source

    if base_model.get("kind") != "yamnet":
        raise ValueError(f"the frames were made by a {base_model.get('kind')!r} model: the end-to-end export "
                         "needs YAMNet frames (or pass --no_export)")
    source = resolve_source("yamnet", path)
    spec = load_spec(source)
    if base_model.get("fingerprint") and spec.fingerprint != base_model["fingerprint"]:
        raise ValueError(f"{path} is {spec.identity}, but the frames were made by "
                         f"{base_model.get('identity')}: pass the same weights with --yamnet_path")
    return load_model(source)


def train(config: HeadConfig) -> dict:
    """Trains, evaluates, exports, checks the export and writes the reports; returns the metrics."""
    import keras
    import tensorflow as tf
    import tensorflow_transform as tft

    from audio_models import head

    started = time.monotonic()
    document = read_dataset_document(config.dataset_dir)
    layout = ts.FeatureLayout.from_document(document["layout"])
    labels = list(document["labels"])
    base_model = document.get("base_model", {})
    yamnet = None
    if config.export:  # fail on a missing or different YAMNet before spending time on training
        yamnet_path = config.yamnet_path or base_model.get("source")
        if not yamnet_path:
            raise ValueError("dataset.json does not say where the frames' YAMNet is: pass --yamnet_path")
        yamnet = _load_yamnet(yamnet_path, base_model)
    transform_output = tft.TFTransformOutput(ts.ds_path(config.dataset_dir, ts.TRANSFORM_DIR))
    feature_spec = transform_output.transformed_feature_spec()
    datasets = {split: split_dataset(config.dataset_dir, split, feature_spec, config.batch_size)
                for split in ts.SPLITS if split_files(config.dataset_dir, split)}
    if ts.TRAIN not in datasets:
        raise ValueError(f"{config.dataset_dir} has no training shards")

    classifier = head.build_head(layout.input_dim, len(labels), config.hidden_units, config.dropout,
                                 config.seed)
    classifier.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    # The filter on label ids hides the sizes from Keras (which then warns at each epoch's end): state them.
    report = read_report(config.dataset_dir)
    batches = {split: -(-known_rows(report, split, labels, layout.pooled) // config.batch_size)
               for split in ts.SPLITS}
    train_ds = _xy(split_dataset(config.dataset_dir, ts.TRAIN, feature_spec, config.batch_size,
                                 shuffle=True, seed=config.seed))
    train_ds = train_ds.apply(tf.data.experimental.assert_cardinality(batches[ts.TRAIN]))
    eval_ds = None
    if batches[ts.EVAL]:
        eval_ds = _xy(datasets[ts.EVAL]).apply(tf.data.experimental.assert_cardinality(batches[ts.EVAL]))
    stopper = keras.callbacks.EarlyStopping(monitor="val_loss" if eval_ds is not None else "loss",
                                            patience=config.patience, restore_best_weights=True, verbose=0)
    history = classifier.fit(train_ds, validation_data=eval_ds, epochs=config.epochs, callbacks=[stopper],
                             shuffle=False, verbose=2)  # tf.data shuffles the training rows
    training_seconds = time.monotonic() - started

    raw_sample = read_raw_sample(config.dataset_dir, layout)
    capture = {_key(u, i) for u, i in zip(raw_sample.get(ts.URI, []), raw_sample.get(ts.FRAME_INDEX, []))}
    captured: dict = {}
    results = {split: evaluate(classifier, data, len(labels), capture, captured)
               for split, data in datasets.items()}

    metrics = {
        "labels": labels,
        "splits": {split: result.document() for split, result in results.items()},
        "epochs_run": len(history.history["loss"]),
        "best_epoch": int(stopper.best_epoch) + 1,
        "early_stopping_monitor": stopper.monitor,
        "eval_split": hm.eval_split(document, known_rows(report, ts.EVAL, labels, layout.pooled),
                                    stopper.monitor),
        "training_seconds": round(training_seconds, 1),
        "model": {"input_dim": layout.input_dim, "hidden_units": config.hidden_units,
                  "dropout": config.dropout, "parameters": int(classifier.count_params())},
        "layout": layout.to_document(),
        "base_model": base_model,
        "config": dataclasses.asdict(config),
    }
    _add_label_metrics(metrics, results, document, report, config.dataset_dir, config.output_dir)
    spans = hm.labelled_by_spans(document) and not layout.pooled
    shown = ts.TEST if ts.TEST in results and results[ts.TEST].clip_sums else ts.EVAL
    if shown in results:
        if spans:  # the level the labels were given at: spans, not whole recordings
            confusion, level = dm.segment_confusion(results[shown].frames(), len(labels)), "span"
        else:
            confusion, level = results[shown].clip_confusion, "clip"
        metrics["confusion_matrix"] = {
            "split": shown, "level": level, "matrix": confusion.tolist(),
            "axes": "rows: true label, columns: predicted label (order of 'labels')"}
        accuracy = _accuracy(confusion)
        title = f"YAMNet head, {shown} {level}s: accuracy " + ("-" if accuracy is None else f"{accuracy:.1%}")
        _write_bytes(ts.ds_path(config.output_dir, CONFUSION_FILE),
                     confusion_png(Evaluation(tuple(labels), confusion), title))

    _save_keras(classifier, ts.ds_path(config.output_dir, KERAS_FILE))
    if yamnet is not None:
        export_dir = ts.ds_path(config.output_dir, head.EXPORT_DIR)
        head_document = {key: metrics["model"][key] for key in ("hidden_units", "dropout", "parameters")}
        spec = head.export_head(yamnet, transform_output, classifier, labels, layout, export_dir,
                                base_model=base_model, head=head_document)
        exported = head.load_head_model(export_dir)
        check = check_export(exported, raw_sample, captured, layout)
        metrics["export"] = {"path": export_dir, "identity": spec.identity, "fingerprint": spec.fingerprint,
                             "reload_check": check}
        if check["max_abs_diff"] is not None and check["max_abs_diff"] > EXPORT_TOLERANCE:
            raise RuntimeError(f"the reloaded export differs from the trained head by "
                               f"{check['max_abs_diff']:.2e} (> {EXPORT_TOLERANCE}) on {check['rows']} rows")
    metrics["total_seconds"] = round(time.monotonic() - started, 1)
    _write_bytes(ts.ds_path(config.output_dir, METRICS_FILE), (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def _add_label_metrics(metrics: dict, results: dict, document: dict, report: dict, ds_dir: str,
                       output_dir: str) -> None:
    """Per split: per-class frame (and, for time-span labels, event and span) metrics beside the majority
    baseline; for time-span labels also event thresholds tuned on eval, written to output_dir (see
    ``head_metrics``)."""
    labels, layout = metrics["labels"], ts.FeatureLayout.from_document(document["layout"])
    majority = hm.majority(report, labels, layout.pooled)
    metrics["baseline"] = {"rule": hm.BASELINE_RULE, "label": majority}
    spans = hm.labelled_by_spans(document) and not layout.pooled
    truths = hm.read_truths(ds_dir) if spans else {}
    timing = hm.frame_timing(metrics["base_model"]) if spans else None
    negative = document.get("negative_label")
    event_classes = [label for label in labels if label != negative]
    # Event thresholds are tuned on the eval split's spans, then every split is scored at them.
    per_class = {}
    if timing is not None and truths.get(ts.EVAL) and ts.EVAL in results:
        per_class = hm.tune_event_thresholds(results[ts.EVAL].frames(), truths[ts.EVAL], labels,
                                             event_classes, timing)
    figures = {}
    for split, result in results.items():
        frames = result.frames()  # one split's frames at a time
        row = metrics["splits"][split]
        row.update(hm.split_metrics(frames, labels, majority, truths.get(split, []), event_classes, timing))
        if spans:
            row.update(hm.span_summary(frames, len(labels)))
        if per_class and truths.get(split):
            figures[split] = hm.events_at(per_class, frames, truths[split], labels, timing)
    if per_class:
        metrics["event_thresholds"] = hm.event_thresholds_document(per_class, figures)
        _write_bytes(ts.ds_path(output_dir, hm.THRESHOLDS_FILE), tuning.thresholds_csv(per_class).encode())


def _save_keras(classifier, path: str) -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as staging:  # Keras writes local files; gfile copies anywhere
        local = os.path.join(staging, KERAS_FILE)
        classifier.save(local)
        with open(local, "rb") as f:
            _write_bytes(path, f.read())


def _write_bytes(path: str, data: bytes) -> None:
    storage.write_bytes(path, data)


def format_metrics(metrics: dict) -> str:
    lines = []
    for split, row in metrics["splits"].items():
        frame = "-" if row["frame_accuracy"] is None else f"{row['frame_accuracy']:.1%}"
        if "spans" in row:  # time-span labels: a file is no unit of the labels
            unit, accuracy, count = "span", row["span_accuracy"], row["spans"]
        else:
            unit, accuracy, count = "clip", row["clip_accuracy"], row["clips"]
        shown = "-" if accuracy is None else f"{accuracy:.1%}"
        lines.append(f"  {split:>5}: frame accuracy {frame:>6} ({row['rows']} rows), "
                     f"{unit} accuracy {shown:>6} ({count} {unit}s)")
    if "eval_split" in metrics:
        lines.append(hm.format_eval_split(metrics["eval_split"]))
    if ts.EVAL in metrics["splits"]:
        lines.extend(hm.format_per_class(metrics, ts.EVAL))
    if ts.TEST in metrics["splits"]:
        lines.extend(hm.format_per_class(metrics, ts.TEST))
    if "event_thresholds" in metrics:
        lines.extend(hm.format_event_thresholds(metrics["event_thresholds"]))
    if "confusion_matrix" in metrics:
        matrix = metrics["confusion_matrix"]
        lines.append(f"confusion matrix: {matrix['split']} split, per {matrix['level']} "
                     f"({int(np.sum(matrix['matrix']))} {matrix['level']}s)")
    if "export" in metrics:
        check = metrics["export"]["reload_check"]
        lines.append(f"export {metrics['export']['path']} ({metrics['export']['identity']}); reload check: "
                     f"{check['rows']} rows, max |diff| {check['max_abs_diff']}")
    return "\n".join(lines)
