"""Labelled keyword clips: listing, speaker split, loading and augmentation.

A dataset is a folder with one sub-folder per label (``yes/``, ``no/``,
``_silence_/`` ...).  Every clip becomes exactly one second at 16 kHz: shorter
clips are zero-padded at the end, longer ones cut, so nothing is dropped.

Clips are split by *speaker*, never by file: Speech Commands names a clip
``[word_]<8 hex digits>_nohash_<n>``, and the hex digits identify the speaker.
A speaker's clips all land in the same split, so test accuracy measures how
the model does on voices it has never heard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import storage
from transforms.decoding.stream import AudioStream

SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000
SILENCE_LABEL = "_silence_"
UNKNOWN_LABEL = "_unknown_"

TRAIN = "train"
VALIDATION = "validation"
TEST = "test"
SPLITS = (TRAIN, VALIDATION, TEST)

_SPEAKER = re.compile(r"(?:^|_)([0-9a-f]{8})_nohash_", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class LabelledClip:
    path: str
    label: str
    speaker: str | None  # None when the file name carries no speaker id

    @property
    def split_key(self) -> str:
        """What decides the split: the speaker, or the file name when there is none."""
        return self.speaker if self.speaker is not None else Path(self.path).name


@dataclasses.dataclass(frozen=True)
class SplitPercents:
    validation: float = 10.0
    test: float = 10.0

    def __post_init__(self) -> None:
        if self.validation < 0 or self.test < 0 or self.validation + self.test >= 100:
            raise ValueError(f"bad split percentages: {self}")


@dataclasses.dataclass(frozen=True)
class AugmentOptions:
    """Waveform augmentations for training; all off by default (the recipe trains without them)."""

    time_shift_s: float = 0.0  # shift each clip by up to +-this, zero-filled
    noise_probability: float = 0.0  # chance of mixing in a random background-noise clip
    noise_max_gain: float = 0.0  # the noise clip is scaled by uniform(0, this)
    gain_db: float = 0.0  # scale each clip by uniform(-this, +this) dB
    # Chance that a keyword clip is played backwards and relabelled _unknown_: reversed speech is
    # speech that is no keyword, which the few _unknown_ clips of a small dataset under-represent.
    reverse_to_unknown: float = 0.0
    # Extra _unknown_ clips, as a fraction of the training set, spliced from the second half of one
    # keyword clip and the first half of another: what a sliding window sees between two words.
    spliced_unknown: float = 0.0
    # Speed perturbation: resample each clip by a factor in [1 - this, 1 + this] around its middle
    # (tempo and pitch change together, as a faster or slower talker's would).
    speed: float = 0.0
    # Frequency warping (pitch and formants without tempo, as another voice): every frequency of a
    # clip's spectrum scaled by a factor in [1 - this, 1 + this], before the mel bands.
    frequency_warp: float = 0.0
    # SpecAugment on the features [time, frequency]: this many masks of up to this many frames / bins.
    time_masks: int = 0
    time_mask_frames: int = 0
    frequency_masks: int = 0
    frequency_mask_bins: int = 0

    @property
    def enabled(self) -> bool:
        """Whether any waveform augmentation is on (splicing happens before the dataset, masks after)."""
        return (self.time_shift_s > 0 or (self.noise_probability > 0 and self.noise_max_gain > 0)
                or self.gain_db > 0 or self.reverse_to_unknown > 0 or self.speed > 0)

    @property
    def masks_enabled(self) -> bool:
        return (self.time_masks > 0 and self.time_mask_frames > 0) or (
            self.frequency_masks > 0 and self.frequency_mask_bins > 0)


def speaker_of(file_name: str) -> str | None:
    """The 8-hex-digit speaker id in a Speech Commands style file name, lower-cased."""
    match = _SPEAKER.search(Path(file_name).name)
    return match.group(1).lower() if match else None


def list_clips(data_dir: str | Path) -> list[LabelledClip]:
    """Every file in every label folder of ``data_dir`` (hidden files skipped), in a stable order."""
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset folder at {root}")
    clips = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(label_dir.iterdir()):
            if path.is_file() and not path.name.startswith("."):
                clips.append(LabelledClip(str(path), label_dir.name, speaker_of(path.name)))
    return clips


def labels_of(clips: Sequence[LabelledClip]) -> list[str]:
    return sorted({clip.label for clip in clips})


def split_of(key: str, percents: SplitPercents = SplitPercents()) -> str:
    """A deterministic split for ``key`` (a speaker id or file name): stable across runs and machines."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16) % 10000 / 100.0
    if bucket < percents.validation:
        return VALIDATION
    if bucket < percents.validation + percents.test:
        return TEST
    return TRAIN


def split_clips(clips: Sequence[LabelledClip],
                percents: SplitPercents = SplitPercents()) -> dict[str, list[LabelledClip]]:
    splits: dict[str, list[LabelledClip]] = {name: [] for name in SPLITS}
    for clip in clips:
        splits[split_of(clip.split_key, percents)].append(clip)
    return splits


def speaker_folds(clips: Sequence[LabelledClip], folds: int,
                  percents: SplitPercents = SplitPercents()) -> list[list[LabelledClip]]:
    """``folds`` speaker-disjoint folds of the clips outside the test split, for k-fold by speaker.

    The training and validation speakers are ordered by a SHA-1 hash of their
    id (salted, so the order is not the one that chose the split) and dealt
    round-robin, so every such speaker is in exactly one fold and the folds
    differ in size by at most one speaker.  Clips without a speaker id are
    dealt by file name, like the split.  The test split's speakers are in no
    fold: they stay untouched until the final model is reported.
    """
    if folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, not {folds}")
    kept = [clip for clip in clips if split_of(clip.split_key, percents) != TEST]
    speakers = {clip.speaker for clip in kept if clip.speaker is not None}
    if len(speakers) < folds:
        raise ValueError(f"{folds} folds need at least {folds} training and validation speakers, "
                         f"found {len(speakers)}")
    unnamed = {clip.split_key for clip in kept if clip.speaker is None}
    fold_of = {}
    for keys in (speakers, unnamed):  # dealt apart, so speakers spread evenly whatever else there is
        ordered = sorted(keys, key=lambda key: hashlib.sha1(f"fold:{key}".encode()).hexdigest())
        fold_of.update({key: n % folds for n, key in enumerate(ordered)})
    result: list[list[LabelledClip]] = [[] for _ in range(folds)]
    for clip in kept:
        result[fold_of[clip.split_key]].append(clip)
    return result


def limit_per_label(clips: Sequence[LabelledClip], per_label: int) -> list[LabelledClip]:
    """At most ``per_label`` clips of each label (the first ones in listing order); for quick runs."""
    counts: dict[str, int] = {}
    kept = []
    for clip in clips:
        if counts.get(clip.label, 0) < per_label:
            counts[clip.label] = counts.get(clip.label, 0) + 1
            kept.append(clip)
    return kept


def fit_to_length(waveform: np.ndarray, length: int = CLIP_SAMPLES) -> np.ndarray:
    """Zero-pads at the end or cuts to exactly ``length`` samples (float32)."""
    waveform = np.asarray(waveform, dtype=np.float32).reshape(-1)
    if waveform.size >= length:
        return waveform[:length].copy()
    return np.concatenate([waveform, np.zeros(length - waveform.size, np.float32)])


def decode_head(uri: str, num_samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first ``num_samples`` samples of ``uri``: mono float32 at ``sample_rate``, fewer if short."""
    with AudioStream(uri, sample_rate, chunk_samples=num_samples) as stream:
        for chunk in stream:  # the first chunk is the head: stop decoding there
            return np.asarray(chunk, dtype=np.float32)
    return np.zeros(0, np.float32)


def load_clip(uri: str, length: int = CLIP_SAMPLES, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip, mono, resampled, padded or cut to ``length`` samples."""
    return fit_to_length(decode_head(uri, length, sample_rate), length)


def load_clips(clips: Sequence[LabelledClip], labels: Sequence[str],
               cache_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(waveforms [N, CLIP_SAMPLES] float32, label_ids [N] int32)`` for ``clips``.

    With ``cache_dir``, the decoded waveforms are kept there as one ``.npy`` per
    list of clips, keyed by the clips' paths, sizes and modification times, so
    repeated trainings on the same files skip decoding and a changed file is
    decoded again.
    """
    index = {label: i for i, label in enumerate(labels)}
    label_ids = np.array([index[clip.label] for clip in clips], np.int32)
    cache_path = storage.join(cache_dir, f"keyword-clips-{_clips_key(clips)}.npy") if cache_dir else None
    if cache_path and storage.exists(cache_path):
        return np.load(io.BytesIO(storage.read_bytes(cache_path))), label_ids
    waveforms = np.zeros((len(clips), CLIP_SAMPLES), np.float32)
    for row, clip in enumerate(clips):
        waveforms[row] = load_clip(clip.path)
    if cache_path:
        buffer = io.BytesIO()
        np.save(buffer, waveforms)
        storage.write_bytes(cache_path, buffer.getvalue())
    return waveforms, label_ids


def _clips_key(clips: Sequence[LabelledClip]) -> str:
    digest = hashlib.sha1(f"{CLIP_SAMPLES}@{SAMPLE_RATE}".encode())
    for clip in clips:
        stat = os.stat(clip.path)
        digest.update(f"\n{clip.path}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def make_dataset(waveforms: np.ndarray, label_ids: np.ndarray, batch_size: int,
                 shuffle: bool = False, augment: AugmentOptions | None = None,
                 noise_bank: np.ndarray | None = None, labels: Sequence[str] = (), seed: int = 0):
    """A ``tf.data.Dataset`` of ``(waveform [B, CLIP_SAMPLES], label [B])`` batches.

    ``noise_bank`` (``[M, CLIP_SAMPLES]``, e.g. the training split's ``_silence_``
    clips) is what noise mixing draws from; keep it to training clips so no test
    audio leaks into training.  ``labels`` (names by id) tells reversal which
    ids are keywords and which is ``_unknown_``.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((waveforms, label_ids))
    if shuffle:
        dataset = dataset.shuffle(len(waveforms), seed=seed, reshuffle_each_iteration=True)
    if augment is not None and augment.enabled:
        augmenter = _augmenter(augment, noise_bank, labels, seed)
        dataset = dataset.map(augmenter, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def spliced_unknowns(waveforms: np.ndarray, label_ids: np.ndarray, labels: Sequence[str], count: int,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` ``_unknown_`` clips: the second half of one keyword clip, then the first half of another.

    Only clips whose word straddles the middle (a quarter to three quarters of
    their energy in the first half) take part, so a splice holds two cut words,
    not a whole keyword.
    """
    if count <= 0 or UNKNOWN_LABEL not in labels:
        return np.zeros((0, CLIP_SAMPLES), np.float32), np.zeros(0, np.int32)
    half = CLIP_SAMPLES // 2
    energy = np.square(waveforms.astype(np.float64))
    first_half_share = energy[:, :half].sum(axis=1) / np.maximum(energy.sum(axis=1), 1e-12)
    keyword_ids = [i for i, name in enumerate(labels) if name not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    straddles = (first_half_share > 0.25) & (first_half_share < 0.75)
    rows = np.flatnonzero(np.isin(label_ids, keyword_ids) & straddles)
    if len(rows) < 2:
        return np.zeros((0, CLIP_SAMPLES), np.float32), np.zeros(0, np.int32)
    rng = np.random.default_rng(seed)
    spliced = np.zeros((count, CLIP_SAMPLES), np.float32)
    for n in range(count):
        first, second = rng.choice(rows, size=2, replace=False)
        spliced[n, :half] = waveforms[first, half:]
        spliced[n, half:] = waveforms[second, :half]
    return spliced, np.full(count, labels.index(UNKNOWN_LABEL), np.int32)


def _augmenter(options: AugmentOptions, noise_bank: np.ndarray | None, labels: Sequence[str], seed: int):
    """A per-clip ``(waveform, label) -> (waveform, label)`` tf function; augmentations in a fixed order."""
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(seed)
    max_shift = int(round(options.time_shift_s * SAMPLE_RATE))
    use_noise = (options.noise_probability > 0 and options.noise_max_gain > 0
                 and noise_bank is not None and len(noise_bank) > 0)
    noise = tf.constant(noise_bank, tf.float32) if use_noise else None
    use_reversal = options.reverse_to_unknown > 0 and UNKNOWN_LABEL in labels
    if use_reversal:
        unknown_id = labels.index(UNKNOWN_LABEL)
        is_keyword = tf.constant([name not in (SILENCE_LABEL, UNKNOWN_LABEL) for name in labels])

    def augment(waveform, label):
        if use_reversal:
            reverse = tf.logical_and(is_keyword[label], generator.uniform([]) < options.reverse_to_unknown)
            waveform = tf.cond(reverse, lambda: tf.reverse(waveform, [0]), lambda: waveform)
            label = tf.where(reverse, tf.constant(unknown_id, label.dtype), label)
        if options.speed > 0:
            waveform = _resample_about_middle(
                waveform, generator.uniform([], 1.0 - options.speed, 1.0 + options.speed))
        if max_shift > 0:
            # Zero-filled shift: pad both sides, then take a random one-second slice.
            padded = tf.pad(waveform, [[max_shift, max_shift]])
            start = generator.uniform([], 0, 2 * max_shift + 1, dtype=tf.int32)
            waveform = padded[start:start + CLIP_SAMPLES]
        if options.gain_db > 0:
            gain_db = generator.uniform([], -options.gain_db, options.gain_db)
            waveform = waveform * tf.pow(10.0, gain_db / 20.0)
        if use_noise:
            which = generator.uniform([], 0, tf.shape(noise)[0], dtype=tf.int32)
            mix = tf.cast(generator.uniform([]) < options.noise_probability, tf.float32)
            gain = generator.uniform([], 0.0, options.noise_max_gain)
            waveform = waveform + mix * gain * noise[which]
        return tf.clip_by_value(waveform, -1.0, 1.0), label

    return augment


def _resample_about_middle(waveform, rate):
    """``waveform`` played ``rate`` times as fast, by linear interpolation, keeping its middle in place.

    Samples that would come from outside the clip are zero.
    """
    import tensorflow as tf

    middle = CLIP_SAMPLES / 2.0
    positions = middle + (tf.range(CLIP_SAMPLES, dtype=tf.float32) - middle) * rate
    lower = tf.floor(positions)
    fraction = positions - lower
    lower = tf.cast(lower, tf.int32)
    inside = tf.cast((lower >= 0) & (lower < CLIP_SAMPLES - 1), tf.float32)
    lower = tf.clip_by_value(lower, 0, CLIP_SAMPLES - 2)
    left, right = tf.gather(waveform, lower), tf.gather(waveform, lower + 1)
    return (left * (1.0 - fraction) + right * fraction) * inside


def mask_features(features, options: AugmentOptions, generator):
    """SpecAugment: zeroes random bands of frames and of bins in ``features [B, T, F]``.

    Zero is the mean of per-utterance normalised features, so a masked band
    carries no information rather than a loud or silent patch.
    """
    import tensorflow as tf

    shape = tf.shape(features)
    keep = tf.ones_like(features)
    if options.time_masks > 0 and options.time_mask_frames > 0:
        masked = _bands(generator, shape[0], shape[1], options.time_masks, options.time_mask_frames)
        keep = keep * tf.cast(~masked, features.dtype)[:, :, tf.newaxis]
    if options.frequency_masks > 0 and options.frequency_mask_bins > 0:
        masked = _bands(generator, shape[0], shape[2], options.frequency_masks, options.frequency_mask_bins)
        keep = keep * tf.cast(~masked, features.dtype)[:, tf.newaxis, :]
    return features * keep


def _bands(generator, batch, length, count: int, max_width: int):
    """``[batch, length]`` bool: ``count`` bands of width uniform in [0, max_width] per row."""
    import tensorflow as tf

    widths = generator.uniform([batch, count], 0, max_width + 1, dtype=tf.int32)
    starts = generator.uniform([batch, count], 0, length, dtype=tf.int32)
    index = tf.range(length)[tf.newaxis, tf.newaxis, :]
    inside = (index >= starts[..., tf.newaxis]) & (index < (starts + widths)[..., tf.newaxis])
    return tf.reduce_any(inside, axis=1)
