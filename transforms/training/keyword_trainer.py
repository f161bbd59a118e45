"""Training the keyword-spotting CNN on a folder of labelled clips, and its export for tag_audio.

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

import dataclasses
import json
import logging
import time
from collections.abc import Sequence

import numpy as np

from audio_models.spec import ModelSpec
from transforms import storage
from transforms.training import keyword_clips as kd
from transforms.training.evaluation import Evaluation, confusion_matrix, confusion_png

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"

# What --augment turns on; each value can still be set on its own.
RECOMMENDED_AUGMENT = kd.AugmentOptions(time_shift_s=0.1, noise_probability=0.8, noise_max_gain=0.5,
                                        gain_db=10.0, reverse_to_unknown=0.15,
                                        spliced_unknown=0.1)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    output_dir: str
    epochs: int = 150
    batch_size: int = 32
    patience: int = 20
    learning_rate: float = 1e-3
    lr_patience: int = 0  # > 0: halve the learning rate after this many epochs without progress
    split: kd.SplitPercents = kd.SplitPercents()
    augment: kd.AugmentOptions = kd.AugmentOptions()
    weights_dtype: str = "float32"
    hop_s: float = 0.5
    max_clips_per_label: int = 0  # > 0: at most this many clips per label in each split
    seed: int = 0


def load_splits(config: TrainConfig) -> tuple[list[str], dict[str, list[kd.LabelledClip]]]:
    clips = kd.list_clips(config.data_dir)
    labels = kd.labels_of(clips)
    if len(labels) < 2:
        raise ValueError(f"{config.data_dir} needs at least two label folders, found {labels}")
    splits = kd.split_clips(clips, config.split)
    if config.max_clips_per_label > 0:
        splits = {name: kd.limit_per_label(split, config.max_clips_per_label)
                  for name, split in splits.items()}
    if not splits[kd.TRAIN]:
        raise ValueError("the training split is empty")
    return labels, splits


@dataclasses.dataclass
class TrainingResult:
    classifier: object  # the trained Keras model (spectrogram -> logits)
    spec: ModelSpec  # the exported model's spec
    metrics: dict  # what metrics.json holds


def train(config: TrainConfig) -> TrainingResult:
    """Trains, tests on the held-out speakers, exports, and writes metrics.json and the confusion PNG."""
    from audio_models import keyword

    started = time.monotonic()
    labels, splits = load_splits(config)
    data = {name: kd.load_clips(clips, labels) for name, clips in splits.items()}
    logging.info("clips: %s", {name: len(clips) for name, clips in splits.items()})
    mean, variance = keyword.normalization_stats(data[kd.TRAIN][0])  # the recipe's Normalization.adapt
    classifier = keyword.build_classifier(len(labels), mean, variance, seed=config.seed)
    history, best_epoch = _fit(classifier, config, labels, data)
    training_seconds = time.monotonic() - started

    spec = keyword.export_keyword_model(classifier, labels, config.output_dir,
                                        weights_dtype=config.weights_dtype,
                                        hop_samples=int(round(config.hop_s * keyword.SAMPLE_RATE)))
    # Tested through the export itself, so the numbers describe exactly what ships.
    evaluation = evaluate(keyword.load_keyword_model(config.output_dir), *data[kd.TEST], labels)
    metrics = {
        "labels": labels,
        "test_accuracy": evaluation.accuracy,
        "test_per_label": evaluation.per_label(),
        "confusion_matrix": evaluation.confusion.tolist(),
        "confusion_matrix_axes": "rows: true label, columns: predicted label (order of 'labels')",
        "validation_accuracy": _at_epoch(history, "val_accuracy", best_epoch),
        "epochs_run": len(history["loss"]),
        "best_epoch": best_epoch + 1,
        "training_seconds": round(training_seconds, 1),
        "splits": {name: {"clips": len(clips), "speakers": len({c.speaker for c in clips if c.speaker})}
                   for name, clips in splits.items()},
        "normalization": {"mean": mean, "variance": variance},
        "model": {"fingerprint": spec.fingerprint, "weights_dtype": config.weights_dtype,
                  "parameters": int(classifier.count_params())},
        "config": _config_document(config),
    }
    write_reports(config.output_dir, metrics, evaluation)
    return TrainingResult(classifier, spec, metrics)


def _fit(classifier, config: TrainConfig, labels: list[str],
         data: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict, int]:
    """Adam with early stopping on the validation loss; returns (Keras history, best epoch from 0)."""
    import keras
    import tensorflow as tf

    from audio_models import keyword

    train_waveforms, train_ids = data[kd.TRAIN]
    noise_bank = None  # background noise for mixing: the training split's _silence_ clips only
    if kd.SILENCE_LABEL in labels:
        noise_bank = train_waveforms[train_ids == labels.index(kd.SILENCE_LABEL)]
    spliced, spliced_ids = kd.spliced_unknowns(
        train_waveforms, train_ids, labels, int(round(config.augment.spliced_unknown * len(train_ids))),
        seed=config.seed)
    train_waveforms = np.concatenate([train_waveforms, spliced])
    train_ids = np.concatenate([train_ids, spliced_ids])

    def spectrograms(dataset):
        return dataset.map(lambda w, y: (keyword.spectrogram(w), y), num_parallel_calls=tf.data.AUTOTUNE)

    train_ds = spectrograms(kd.make_dataset(train_waveforms, train_ids, config.batch_size, shuffle=True,
                                            augment=config.augment, noise_bank=noise_bank,
                                            labels=labels, seed=config.seed))
    has_validation = len(data[kd.VALIDATION][0]) > 0
    val_ds = None
    if has_validation:
        val_ds = spectrograms(kd.make_dataset(*data[kd.VALIDATION], config.batch_size))
    monitor = "val_loss" if has_validation else "loss"
    stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience,
                                            restore_best_weights=True, verbose=1)
    callbacks = [stopper]
    if config.lr_patience > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5,
                                                           patience=config.lr_patience, min_lr=1e-5))
    classifier.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                       metrics=["accuracy"])
    # shuffle=False: the dataset reshuffles itself every epoch; Keras cannot shuffle a tf.data input.
    history = classifier.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks,
                             shuffle=False, verbose=2)
    return history.history, int(stopper.best_epoch)


def evaluate(model, waveforms: np.ndarray, label_ids: np.ndarray, labels: Sequence[str],
             batch_size: int = 256) -> Evaluation:
    """Confusion matrix of ``model`` (a ``BatchedModel``) on one-second clips."""
    predicted = [np.argmax(model.predict(waveforms[i:i + batch_size])["scores"], axis=-1)
                 for i in range(0, len(waveforms), batch_size)]
    predicted_ids = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
    return Evaluation(tuple(labels), confusion_matrix(label_ids, predicted_ids, len(labels)))


def write_reports(output_dir: str, metrics: dict, evaluation: Evaluation) -> None:
    storage.write_text(storage.join(output_dir, METRICS_FILE), json.dumps(metrics, indent=2) + "\n")
    accuracy = "n/a" if evaluation.accuracy is None else f"{evaluation.accuracy:.1%}"
    title = f"Keyword CNN, held-out speakers: accuracy {accuracy}"
    storage.write_bytes(storage.join(output_dir, CONFUSION_FILE), confusion_png(evaluation, title),
                        "image/png")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _at_epoch(history: dict, key: str, epoch: int) -> float | None:
    values = history.get(key)
    return float(values[epoch]) if values else None


def _config_document(config: TrainConfig) -> dict:
    document = dataclasses.asdict(config)
    document.pop("output_dir")
    return document



