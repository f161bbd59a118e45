"""The 'savedmodel' kind: tiny SavedModels built here run through tag_audio like a user's encoder."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from audio_models.loading import ModelUnavailableError, load_model, load_spec, resolve_source  # noqa: E402
from schemas.tables import class_names_from, read_model_metadata  # noqa: E402
from tests.support import savedmodel_factory as factory  # noqa: E402
from tests.support.audio_factory import sine, write_audio  # noqa: E402
from tests.support.pipeline_helpers import FIXTURE_MODEL, read_table, require_shared, run_tag_audio  # noqa: E402
from transforms.decoding.stream import AudioStream  # noqa: E402
from transforms.decoding.windows import frames_of, num_frames  # noqa: E402

RATE = 16000
CLIP_S = 3.3


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 3.3-s 16 kHz WAV (tone plus noise) and the waveform the job decodes from it."""
    rng = np.random.default_rng(11)
    signal = 0.3 * sine(330, CLIP_S, RATE) + rng.uniform(-0.2, 0.2, (1, int(CLIP_S * RATE)))
    path = write_audio(tmp_path_factory.mktemp("audio") / "clip.wav", signal, RATE)
    return path, np.concatenate(list(AudioStream(str(path), RATE)))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "batched": factory.save_batched_encoder(root / "batched"),
        "single": factory.save_single_waveform_encoder(root / "single"),
        "sequence": factory.save_sequence_encoder(root / "sequence"),
    }


def _tag(tmp_path: Path, clip_path: Path, model: Path, *flags: str) -> Path:
    out = tmp_path / "out"
    status = run_tag_audio(["--input", str(clip_path), "--output", str(out), "--model", "savedmodel",
                            "--model_path", str(model), "--batch_size", "4", *flags])
    assert status == 0
    return out


def _frames(out: Path):
    table = read_table(out, "frames")
    return table, table.to_pandas().sort_values("frame_index").reset_index(drop=True)


def _check_framing(frames, wave: np.ndarray, window: int, hop: int) -> None:
    expected = num_frames(len(wave), window, hop)
    assert list(frames.frame_index) == list(range(expected))
    np.testing.assert_allclose(frames.start_s, np.arange(expected) * hop / RATE)
    np.testing.assert_allclose(frames.end_s, np.arange(expected) * hop / RATE + window / RATE)


def test_batched_encoder_with_labels_asset(tmp_path, clip, models):
    """[B, 16000] -> {embedding, scores}: window from the signature, hop and labels from assets/."""
    clip_path, wave = clip
    table, frames = _frames(_tag(tmp_path, clip_path, models["batched"]))
    window, hop = 16000, factory.BATCHED_HOP_SAMPLES
    _check_framing(frames, wave, window, hop)
    assert len(frames) == 6  # 52800 samples: 1 + ceil((52800 - 16000) / 8000)

    meta = read_model_metadata(table.schema)
    assert (meta["window_samples"], meta["hop_samples"], meta["embedding_dim"]) == ("16000", "8000", "8")
    assert class_names_from(table.schema) == list(factory.BATCHED_LABELS)
    reference = factory.call_signature(models["batched"], waveform=frames_of(wave, window, hop))
    np.testing.assert_allclose(np.stack(frames.embedding), reference["embedding"], atol=1e-5)
    np.testing.assert_allclose(np.stack(frames.scores), reference["scores"], atol=1e-5)

    files = read_table(tmp_path / "out", "files").to_pylist()
    assert files[0]["status"] == "ok" and files[0]["num_frames"] == 6
    assert files[0]["top_labels_mean"][0]["label"] in factory.BATCHED_LABELS


def test_single_waveform_signature_runs_window_by_window(tmp_path, clip, models, caplog):
    """[N] -> [1, 8] (TF Hub style): looped per window with one warning; no scores output."""
    clip_path, wave = clip
    with caplog.at_level(logging.WARNING, logger="audio_models.savedmodel"):
        out = _tag(tmp_path, clip_path, models["single"], "--window_s", "0.8", "--hop_s", "0.4")
    warnings = [r for r in caplog.records if "cannot batch" in r.getMessage()]
    assert len(warnings) == 1, "warned once, not per batch"

    table, frames = _frames(out)
    window, hop = 12800, 6400
    _check_framing(frames, wave, window, hop)
    assert len(frames) == 8
    assert class_names_from(table.schema) == []
    assert all(len(s) == 0 for s in frames.scores)

    loaded = tf.saved_model.load(str(models["single"]))
    reference = np.concatenate([loaded(tf.constant(w)).numpy() for w in frames_of(wave, window, hop)])
    assert reference.shape == (8, factory.EMBEDDING_DIM)
    np.testing.assert_allclose(np.stack(frames.embedding), reference, atol=1e-5)


def test_sequence_encoder_is_pooled_per_window(tmp_path, clip, models):
    """[B, N] -> [B, T, 16]: one row per window, T pooled (max here), timestamps of the window."""
    clip_path, wave = clip
    out = _tag(tmp_path, clip_path, models["sequence"], "--window_s", "2.0", "--hop_s", "1.0",
               "--embedding_output", "last_hidden_state", "--pooling", "max")
    table, frames = _frames(out)
    window, hop = 32000, 16000
    _check_framing(frames, wave, window, hop)
    assert len(frames) == 3
    assert read_model_metadata(table.schema)["embedding_dim"] == str(factory.SEQUENCE_DIM)

    reference = factory.call_signature(models["sequence"], audio=frames_of(wave, window, hop))
    hidden = reference["last_hidden_state"]
    assert hidden.shape == (3, 1 + (window - 400) // 320, factory.SEQUENCE_DIM)
    np.testing.assert_allclose(np.stack(frames.embedding), hidden.max(axis=1), atol=1e-5)


def test_sequence_pooling_defaults_to_mean_and_changes_the_identity(models):
    windows = np.random.default_rng(3).uniform(-0.5, 0.5, (3, 32000)).astype(np.float32)
    options = (("embedding_output", "last_hidden_state"), ("window_s", "2.0"))
    mean_source = resolve_source("savedmodel", str(models["sequence"]), options=options)
    max_source = resolve_source("savedmodel", str(models["sequence"]),
                                options=options + (("pooling", "max"),))

    embedding = load_model(mean_source).predict(windows)["embedding"]
    hidden = factory.call_signature(models["sequence"], audio=windows)["last_hidden_state"]
    np.testing.assert_allclose(embedding, hidden.mean(axis=1), atol=1e-6)
    assert load_spec(mean_source).fingerprint != load_spec(max_source).fingerprint


def test_an_ambiguous_model_stops_the_job_with_its_output_names(tmp_path, clip, models, capsys):
    status = run_tag_audio(["--input", str(clip[0]), "--output", str(tmp_path / "out"),
                            "--model", "savedmodel", "--model_path", str(models["sequence"]),
                            "--window_s", "2.0"])
    assert status == 2
    message = capsys.readouterr().err
    assert "--embedding_output" in message and "last_hidden_state" in message
    assert "extract_features" in message
    assert not (tmp_path / "out" / "frames").exists()


def test_flags_override_model_spec_json(models):
    path = str(models["batched"])
    spec = load_spec(resolve_source("savedmodel", path, hop_s=0.25))
    assert (spec.window_samples, spec.hop_samples) == (16000, 4000)  # flag over model_spec.json's 8000

    with pytest.raises(ModelUnavailableError, match="takes exactly 16000 samples"):
        load_spec(resolve_source("savedmodel", path, options=(("window_s", "0.5"),)))
    with pytest.raises(ModelUnavailableError, match="--window_s"):
        load_spec(resolve_source("savedmodel", str(models["single"])))
    with pytest.raises(ModelUnavailableError, match="no output 'logits'"):
        load_spec(resolve_source("savedmodel", path, options=(("scores_output", "logits"),)))


def test_model_spec_json_gives_the_whole_spec(tmp_path):
    """A model_spec.json in the keyword export's layout: sample rate, window, hop, labels, output names."""
    document = {"kind": "keyword", "sample_rate": 8000, "window_samples": 16000, "hop_samples": 4000,
                "labels": ["yes", "no", "up"], "signature": "serving_default", "input": "waveform",
                "scores_output": "scores", "embedding_output": "embedding", "embedding_dim": 8}
    path = factory.save_batched_encoder(tmp_path / "m", document)
    spec = load_spec(resolve_source("savedmodel", str(path)))
    assert (spec.sample_rate, spec.window_samples, spec.hop_samples) == (8000, 16000, 4000)
    assert spec.class_names == ("yes", "no", "up")  # model_spec.json's labels before labels.txt
    assert spec.embedding_dim == 8

    document["labels"] = ["yes", "no"]
    (path / "assets" / "model_spec.json").write_text(json.dumps(document))
    with pytest.raises(ModelUnavailableError, match="3 scores per window but .* lists 2 labels"):
        load_spec(resolve_source("savedmodel", str(path)))


def test_the_yamnet_hub_export_runs_as_a_generic_savedmodel():
    """The real TF Hub YAMNet export (1-D signature, unnamed outputs) equals the yamnet kind."""
    fixture = require_shared(FIXTURE_MODEL)
    source = resolve_source("savedmodel", str(fixture), hop_s=0.48, options=(
        ("embedding_output", "output_1"), ("scores_output", "output_0"), ("window_s", "0.975")))
    spec = load_spec(source)
    assert (spec.window_samples, spec.hop_samples, spec.embedding_dim) == (15600, 7680, 1024)
    assert spec.class_names[0] == "Speech" and spec.num_classes == 521  # from assets/*.csv

    windows = np.random.default_rng(5).uniform(-0.5, 0.5, (3, 15600)).astype(np.float32)
    generic = load_model(source).predict(windows)
    yamnet = load_model(resolve_source("yamnet", str(fixture))).predict(windows)
    np.testing.assert_allclose(generic["scores"], yamnet["scores"], atol=1e-4)
    np.testing.assert_allclose(generic["embedding"], yamnet["embedding"], atol=1e-3)
