"""Training the keyword-spotting model on a folder of labelled clips, and its export for tag_audio.

``DIR`` holds one folder per label; every clip is decoded, resampled to 16 kHz
and padded or cut to one second.  Clips are split into train / validation /
test by speaker (the 8-hex-digit prefix of Speech Commands file names; clips
without one are split by file name).  Two recipes (``audio_models.keyword``):
``ds_cnn`` trains a log-mel depthwise-separable CNN for a fixed number of
epochs with AdamW on a warm-up + cosine learning-rate schedule; ``seed``
trains TensorFlow's "simple audio" CNN with Adam and early stopping on the
validation loss.  The model is tested on the held-out speakers through its
export in ``MODEL_DIR``, a SavedModel that ``tag_audio --model keyword
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

import storage
from audio_models.keyword import DS_CNN, SEED, Architecture
from audio_models.spec import ModelSpec
from transforms.training import keyword_clips as kd
from transforms.training.evaluation import Evaluation, confusion_matrix, confusion_png

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion_matrix.png"

# What --augment turns on for each recipe; each value can still be set on its own.
RECOMMENDED_AUGMENT = {
    SEED: kd.AugmentOptions(time_shift_s=0.1, noise_probability=0.8, noise_max_gain=0.5, gain_db=10.0,
                            reverse_to_unknown=0.15, spliced_unknown=0.1),
    # SpecAugment masks are off: with them the small model under-fits in 40 epochs (docs/keyword_model.md).
    DS_CNN: kd.AugmentOptions(time_shift_s=0.1, noise_probability=0.8, noise_max_gain=0.1, gain_db=10.0,
                              reverse_to_unknown=0.15, spliced_unknown=0.1, speed=0.1),
}


@dataclasses.dataclass(frozen=True)
class Optimisation:
    """How a model trains: epochs, batches, learning rate and its schedule, regularisation."""

    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str  # "constant" or "cosine" (linear warm-up, then cosine decay to zero)
    warmup_epochs: int = 0
    weight_decay: float = 0.0  # > 0: AdamW
    patience: int = 0  # > 0: early stopping on the validation loss, best weights restored
    lr_patience: int = 0  # > 0: halve the learning rate after this many epochs without progress
    label_smoothing: float = 0.0
    mixup: float = 0.0  # > 0: mix pairs of training clips with a weight ~ Beta(this, this)

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be constant or cosine, not {self.schedule!r}")


RECIPE_OPTIMISATION = {
    SEED: Optimisation(epochs=150, batch_size=32, learning_rate=1e-3, schedule="constant", patience=20),
    DS_CNN: Optimisation(epochs=40, batch_size=64, learning_rate=3e-3, schedule="cosine", warmup_epochs=2,
                         weight_decay=1e-3, label_smoothing=0.1),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data_dir: str
    output_dir: str
    architecture: Architecture = Architecture()
    optimisation: Optimisation = RECIPE_OPTIMISATION[DS_CNN]
    split: kd.SplitPercents = kd.SplitPercents()
    augment: kd.AugmentOptions = kd.AugmentOptions()
    weights_dtype: str = "float32"
    hop_s: float = 0.5
    max_clips_per_label: int = 0  # > 0: at most this many clips per label in each split
    seed: int = 0
    clip_cache: str | None = None  # a folder for decoded clips, reused by later runs on the same files
    # > 1: before the final model, k-fold by speaker over the training and validation speakers.
    folds: int = 0
    # False while choosing a recipe: the export is measured on validation only and the test split stays
    # unread, so that the one test figure is reported once, for the final model.
    evaluate_test: bool = True


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
    classifier: object  # the trained Keras model (frontend features -> logits); an ensemble's first member
    spec: ModelSpec  # the exported model's spec
    metrics: dict  # what metrics.json holds
    members: list = dataclasses.field(default_factory=list)  # every trained Keras model, in seed order


def train(config: TrainConfig) -> TrainingResult:
    """Trains, exports, measures the export on validation and (once, for the final model) on the test
    split, and writes metrics.json and the confusion PNG.

    With ``architecture.members`` > 1, trains that many models with seeds ``seed``,
    ``seed + 1`` ... and exports them as one ensemble.  With ``folds`` > 1, first
    runs k-fold by speaker (``cross_validate``).  With ``evaluate_test`` off, the
    test split is not evaluated (for choosing between recipes on validation).
    """
    from audio_models import keyword

    started = time.monotonic()
    labels, splits = load_splits(config)
    data = {name: kd.load_clips(clips, labels, config.clip_cache) for name, clips in splits.items()}
    logging.info("clips: %s", {name: len(clips) for name, clips in splits.items()})
    cross_validation = cross_validate(config, labels, splits, data) if config.folds > 1 else None
    architecture = config.architecture
    members, fits, normalization = _train_members(config, labels, data)
    training_seconds = time.monotonic() - started - (cross_validation or {}).get("training_seconds", 0.0)

    spec = keyword.export_keyword_model(members if architecture.members > 1 else members[0], labels,
                                        config.output_dir, weights_dtype=config.weights_dtype,
                                        hop_samples=int(round(config.hop_s * keyword.SAMPLE_RATE)),
                                        architecture=architecture)
    # Measured through the export itself, so the numbers describe exactly what ships.
    exported = keyword.load_keyword_model(config.output_dir)
    validation = evaluate(exported, *data[kd.VALIDATION], labels)
    evaluation = evaluate(exported, *data[kd.TEST], labels) if config.evaluate_test else validation
    history, kept_epoch = fits[0]
    member_architecture = dataclasses.replace(architecture, members=1)
    metrics = {
        "labels": labels,
        # The split the per-label figures and the confusion matrix are of: "test" for the final model,
        # "validation" while choosing a recipe (the test split is then not evaluated at all).
        "evaluated_split": kd.TEST if config.evaluate_test else kd.VALIDATION,
        "test_accuracy": evaluation.accuracy if config.evaluate_test else None,
        "test_per_label": evaluation.per_label() if config.evaluate_test else None,
        "validation_per_label": None if config.evaluate_test else validation.per_label(),
        "confusion_matrix": evaluation.confusion.tolist(),
        "confusion_matrix_axes": "rows: true label, columns: predicted label (order of 'labels')",
        "validation_accuracy": validation.accuracy,  # of the export: an ensemble's own, not its members'
        "epochs_run": len(history["loss"]),
        "best_epoch": kept_epoch + 1,
        "training_seconds": round(training_seconds, 1),
        "splits": _split_sizes(splits),
        "normalization": normalization,
        "model": {"fingerprint": spec.fingerprint, "weights_dtype": config.weights_dtype,
                  "parameters": int(sum(c.count_params() for c in members))},
        "config": _config_document(config),
    }
    if cross_validation is not None:
        metrics["cross_validation"] = cross_validation
    if architecture.members > 1:
        metrics["members"] = [
            {"seed": config.seed + i, "validation_accuracy": _at_epoch(h, "val_accuracy", kept)}
            for i, (h, kept) in enumerate(fits)]
        if config.evaluate_test:
            for row, classifier in zip(metrics["members"], members):
                row["test_accuracy"] = evaluate(_KerasModel([classifier], member_architecture),
                                                *data[kd.TEST], labels).accuracy
    write_reports(config.output_dir, metrics, evaluation, metrics["evaluated_split"])
    return TrainingResult(members[0], spec, metrics, members)


def _train_members(config: TrainConfig, labels: list[str], data: dict[str, tuple[np.ndarray, np.ndarray]]):
    """``(Keras models, their (history, kept epoch), the seed recipe's normalisation or None)``:
    ``architecture.members`` models with seeds ``seed``, ``seed + 1`` ..., trained on ``data[TRAIN]``."""
    from audio_models import keyword

    architecture = config.architecture
    normalization = None
    if architecture.recipe == SEED:
        mean, variance = keyword.normalization_stats(data[kd.TRAIN][0])  # the recipe's Normalization.adapt
        normalization = {"mean": mean, "variance": variance}
    member_architecture = dataclasses.replace(architecture, members=1)
    members, fits = [], []
    for member in range(architecture.members):
        member_config = dataclasses.replace(config, seed=config.seed + member,
                                            architecture=member_architecture)
        if architecture.recipe == SEED:
            classifier = keyword.build_classifier(len(labels), mean, variance, seed=member_config.seed)
        else:
            classifier = keyword.build_ds_cnn(len(labels), member_architecture, seed=member_config.seed)
        members.append(classifier)
        fits.append(_fit(classifier, member_config, labels, data))
    return members, fits, normalization


def cross_validate(config: TrainConfig, labels: list[str], splits: dict[str, list[kd.LabelledClip]],
                   data: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """K-fold by speaker over the training and validation speakers (``kd.speaker_folds``).

    Each fold trains the configured recipe (an ensemble too) on the other
    folds, validates on its own fold, and is measured there.  The test split
    takes no part.  Returns what ``metrics.json`` holds under
    ``cross_validation``: accuracy per fold, its mean and sample standard
    deviation.
    """
    started = time.monotonic()
    pool = splits[kd.TRAIN] + splits[kd.VALIDATION]
    waveforms = np.concatenate([data[kd.TRAIN][0], data[kd.VALIDATION][0]])
    label_ids = np.concatenate([data[kd.TRAIN][1], data[kd.VALIDATION][1]])
    row_of = {clip.path: row for row, clip in enumerate(pool)}
    folds = kd.speaker_folds(pool, config.folds, config.split)
    member_architecture = dataclasses.replace(config.architecture, members=1)
    rows_per_fold = [np.array([row_of[clip.path] for clip in fold], np.int64) for fold in folds]
    accuracies = []
    for held_out, rows in enumerate(rows_per_fold):
        others = np.concatenate([r for n, r in enumerate(rows_per_fold) if n != held_out])
        fold_data = {kd.TRAIN: (waveforms[others], label_ids[others]),
                     kd.VALIDATION: (waveforms[rows], label_ids[rows])}
        members, _, _ = _train_members(config, labels, fold_data)
        accuracy = evaluate(_KerasModel(members, member_architecture), waveforms[rows], label_ids[rows],
                            labels).accuracy
        logging.info("fold %d of %d: accuracy %s on %d held-out clips", held_out + 1, config.folds,
                     percent(accuracy), len(rows))
        accuracies.append(accuracy)
    return {
        "folds": config.folds,
        "scheme": "k-fold by speaker over the training and validation speakers; test speakers in no fold",
        "accuracy_per_fold": accuracies,
        "mean_accuracy": float(np.mean(accuracies)),
        "sd_accuracy": float(np.std(accuracies, ddof=1)),  # sample standard deviation over the folds
        "clips_per_fold": [len(fold) for fold in folds],
        "speakers_per_fold": [len({c.speaker for c in fold if c.speaker}) for fold in folds],
        "training_seconds": round(time.monotonic() - started, 1),
    }


def cross_validate_only(config: TrainConfig) -> dict:
    """K-fold by speaker (``config.folds``) without a final model, to weigh a recipe before training it.

    Writes ``metrics.json`` (labels, split sizes, ``cross_validation``, the
    configuration) to ``config.output_dir``; the test split is not read.
    """
    labels, splits = load_splits(config)
    data = {name: kd.load_clips(splits[name], labels, config.clip_cache)
            for name in (kd.TRAIN, kd.VALIDATION)}
    metrics = {"labels": labels, "splits": _split_sizes(splits),
               "cross_validation": cross_validate(config, labels, splits, data),
               "config": _config_document(config)}
    storage.write_text(storage.join(config.output_dir, METRICS_FILE), json.dumps(metrics, indent=2) + "\n")
    return metrics


def report_test(config: TrainConfig) -> dict:
    """Measures the export in ``config.output_dir``, chosen on validation, on the test split: once.

    Adds the test figures to its ``metrics.json`` and redraws the confusion
    matrix from the test split.  Refuses an export that already has a test
    figure, and one trained on another split of the data.
    """
    from audio_models import keyword

    metrics_path = storage.join(config.output_dir, METRICS_FILE)
    metrics = storage.read_json(metrics_path) if storage.exists(metrics_path) else {}
    if metrics.get("test_accuracy") is not None:
        raise ValueError(f"{config.output_dir} already has a test accuracy: the test split is reported once")
    trained_split = metrics.get("config", {}).get("split")
    if trained_split is not None and trained_split != dataclasses.asdict(config.split):
        raise ValueError(f"{config.output_dir} was trained with the split {trained_split}, not "
                         f"{dataclasses.asdict(config.split)}: give the same --validation_percent and "
                         "--test_percent")
    labels, splits = load_splits(config)
    model = keyword.load_keyword_model(config.output_dir)
    if list(model.spec.class_names) != labels:
        raise ValueError(f"{config.output_dir} has the labels {list(model.spec.class_names)}, "
                         f"{config.data_dir} {labels}")
    evaluation = evaluate(model, *kd.load_clips(splits[kd.TEST], labels, config.clip_cache), labels)
    metrics.update({"labels": labels, "evaluated_split": kd.TEST, "test_accuracy": evaluation.accuracy,
                    "test_per_label": evaluation.per_label(),
                    "confusion_matrix": evaluation.confusion.tolist(), "splits": _split_sizes(splits)})
    write_reports(config.output_dir, metrics, evaluation, kd.TEST)
    return metrics


def _split_sizes(splits: dict[str, list[kd.LabelledClip]]) -> dict:
    return {name: {"clips": len(clips), "speakers": len({c.speaker for c in clips if c.speaker})}
            for name, clips in splits.items()}


class _KerasModel:
    """Trained Keras classifiers behind ``predict`` (waveforms -> the mean of their softmax scores),
    to measure one member or an ensemble before export."""

    def __init__(self, classifiers: Sequence, architecture: Architecture):
        self.classifiers, self.architecture = list(classifiers), architecture

    def predict(self, waveforms: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        features = self.architecture.features(waveforms)
        scores = [tf.nn.softmax(c(features, training=False)).numpy() for c in self.classifiers]
        return {"scores": np.mean(scores, axis=0)}


def training_dataset(config: TrainConfig, labels: list[str], waveforms: np.ndarray, label_ids: np.ndarray):
    """``(dataset, clips per epoch)``: batches of ``(features, one-hot labels)``, augmented as configured.

    Order: spliced ``_unknown_`` clips join the set, then per clip reversal,
    speed, time shift, gain and background noise, then per batch the frontend
    (with frequency warping), SpecAugment masks and mixup.
    """
    import tensorflow as tf

    noise_bank = None  # background noise for mixing: the training split's _silence_ clips only
    if kd.SILENCE_LABEL in labels:
        noise_bank = waveforms[label_ids == labels.index(kd.SILENCE_LABEL)]
    spliced, spliced_ids = kd.spliced_unknowns(
        waveforms, label_ids, labels, int(round(config.augment.spliced_unknown * len(label_ids))),
        seed=config.seed)
    waveforms = np.concatenate([waveforms, spliced])
    label_ids = np.concatenate([label_ids, spliced_ids])
    dataset = kd.make_dataset(waveforms, label_ids, config.optimisation.batch_size, shuffle=True,
                              augment=config.augment, noise_bank=noise_bank, labels=labels, seed=config.seed)
    generator = tf.random.Generator.from_seed(config.seed + 1)
    architecture, augment, mixup = config.architecture, config.augment, config.optimisation.mixup

    def prepare(waveform, label):
        warp = None
        if augment.frequency_warp > 0:
            warp = generator.uniform([tf.shape(waveform)[0]], 1.0 - augment.frequency_warp,
                                     1.0 + augment.frequency_warp)
        features = architecture.features(waveform, warp)
        if augment.masks_enabled:
            features = kd.mask_features(features, augment, generator)
        targets = tf.one_hot(label, len(labels))
        if mixup > 0:
            # One weight per batch; each clip is mixed with a partner from a shuffle of the batch.
            weight = tf.maximum(_beta(generator, mixup), 0.5)  # the clip's own label stays the main one
            partner = tf.random.shuffle(tf.range(tf.shape(features)[0]))
            features = weight * features + (1.0 - weight) * tf.gather(features, partner)
            targets = weight * targets + (1.0 - weight) * tf.gather(targets, partner)
        return features, targets

    return dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE), len(label_ids)


def _beta(generator, alpha: float):
    """A Beta(alpha, alpha) sample, as the ratio of two Gamma(alpha) samples."""
    import tensorflow as tf

    # tf.random.Generator draws no gammas; the stateless sampler takes seeds drawn from it.
    seeds = generator.uniform_full_int([2, 2], dtype=tf.int32)
    x = tf.random.stateless_gamma([], seeds[0], alpha)
    y = tf.random.stateless_gamma([], seeds[1], alpha)
    return x / (x + y)


def _fit(classifier, config: TrainConfig, labels: list[str],
         data: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict, int]:
    """Trains ``classifier`` as ``config.optimisation`` says; returns (Keras history, kept epoch from 0)."""
    import keras
    import tensorflow as tf

    opt = config.optimisation
    train_ds, train_count = training_dataset(config, labels, *data[kd.TRAIN])
    has_validation = len(data[kd.VALIDATION][0]) > 0
    val_ds = None
    if has_validation:
        architecture = config.architecture
        val_ds = kd.make_dataset(*data[kd.VALIDATION], opt.batch_size).map(
            lambda w, y: (architecture.features(w), tf.one_hot(y, len(labels))))
    monitor = "val_loss" if has_validation else "loss"
    callbacks = []
    stopper = None
    if opt.patience > 0:
        stopper = keras.callbacks.EarlyStopping(monitor=monitor, patience=opt.patience,
                                                restore_best_weights=True, verbose=1)
        callbacks.append(stopper)
    if opt.lr_patience > 0:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, factor=0.5,
                                                           patience=opt.lr_patience, min_lr=1e-5))
    classifier.compile(optimizer=_optimizer(opt, train_count),
                       loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                                 label_smoothing=opt.label_smoothing),
                       metrics=["accuracy"])
    # shuffle=False: the dataset reshuffles itself every epoch; Keras cannot shuffle a tf.data input.
    history = classifier.fit(train_ds, validation_data=val_ds, epochs=opt.epochs, callbacks=callbacks,
                             shuffle=False, verbose=2)
    # Early stopping restores its best epoch; a schedule keeps the last one (its rate has decayed to 0).
    kept = int(stopper.best_epoch) if stopper is not None else len(history.history["loss"]) - 1
    return history.history, kept


def _optimizer(opt: Optimisation, train_count: int):
    import keras

    learning_rate = opt.learning_rate
    if opt.schedule == "cosine":
        steps = -(-train_count // opt.batch_size)
        warmup = opt.warmup_epochs * steps
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else opt.learning_rate, decay_steps=max(opt.epochs * steps - warmup, 1),
            warmup_target=opt.learning_rate if warmup else None, warmup_steps=warmup)
    if opt.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate, weight_decay=opt.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def evaluate(model, waveforms: np.ndarray, label_ids: np.ndarray, labels: Sequence[str],
             batch_size: int = 256) -> Evaluation:
    """Confusion matrix of ``model`` (a ``BatchedModel``) on one-second clips."""
    predicted = [np.argmax(model.predict(waveforms[i:i + batch_size])["scores"], axis=-1)
                 for i in range(0, len(waveforms), batch_size)]
    predicted_ids = np.concatenate(predicted) if predicted else np.zeros(0, np.int64)
    return Evaluation(tuple(labels), confusion_matrix(label_ids, predicted_ids, len(labels)))


def write_reports(output_dir: str, metrics: dict, evaluation: Evaluation, split: str = kd.TEST) -> None:
    storage.write_text(storage.join(output_dir, METRICS_FILE), json.dumps(metrics, indent=2) + "\n")
    accuracy = "n/a" if evaluation.accuracy is None else f"{evaluation.accuracy:.1%}"
    title = f"Keyword model, {split} speakers: accuracy {accuracy}"
    storage.write_bytes(storage.join(output_dir, CONFUSION_FILE), confusion_png(evaluation, title),
                        "image/png")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _at_epoch(history: dict, key: str, epoch: int) -> float | None:
    values = history.get(key)
    return float(values[epoch]) if values else None


def _config_document(config: TrainConfig) -> dict:
    document = dataclasses.asdict(config)
    for local_only in ("output_dir", "clip_cache"):
        document.pop(local_only)
    return document
