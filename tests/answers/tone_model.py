"""A tiny real SavedModel that hears two tones, so event times can be checked against known truth.

``serving_default(waveform [B, 8000]) -> scores [B, 3], embedding [B, 16]`` at 16 kHz: 0.5 s windows,
0.25 s hop (``assets/model_spec.json``), labels ``_silence_``, ``low`` (500 Hz), ``high`` (2 kHz).  A
tone's score is sqrt(its band's energy / that of a window full of it at ``AMPLITUDE``), clipped to 1:
1 when the tone fills the window, about 0.7 when it fills half of it, 0 without it.  The embedding is
the log energy in 16 bands, centred and normalised, so windows of one sound point one way.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

LABELS = ("_silence_", "low", "high")
TONES_HZ = {"low": 500.0, "high": 2000.0}
RATE, WINDOW, HOP = 16000, 8000, 4000
AMPLITUDE = 0.3
BAND_HZ = 40.0


def tone(freq_hz: float, duration_s: float, amplitude: float = AMPLITUDE) -> np.ndarray:
    t = np.arange(int(round(duration_s * RATE))) / RATE
    return amplitude * np.sin(2 * np.pi * freq_hz * t)


class ToneDetector(tf.Module):
    def __init__(self):
        super().__init__()
        hann = np.hanning(WINDOW).astype(np.float32)
        freqs = np.fft.rfftfreq(WINDOW, 1 / RATE)
        bands = np.stack([np.abs(freqs - f) <= BAND_HZ for f in TONES_HZ.values()], 1).astype(np.float32)
        full = np.stack([np.abs(np.fft.rfft(tone(f, WINDOW / RATE) * hann)) ** 2 for f in TONES_HZ.values()])
        self.hann = tf.constant(hann)
        self.bands = tf.constant(bands)
        self.full = tf.constant(np.diag(full @ bands).astype(np.float32))
        edges = np.geomspace(50, 8000, 17)
        self.embedding_bands = tf.constant(np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in
                                                     zip(edges[:-1], edges[1:])], 1).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, WINDOW], tf.float32, name="waveform")])
    def serve(self, waveform):
        power = tf.abs(tf.signal.rfft(waveform * self.hann)) ** 2
        tones = tf.clip_by_value(tf.sqrt((power @ self.bands) / self.full), 0.0, 1.0)
        scores = tf.concat([1.0 - tf.reduce_max(tones, axis=1, keepdims=True), tones], axis=1)
        embedding = tf.math.log(power @ self.embedding_bands + 1e-6)
        embedding = embedding - tf.reduce_mean(embedding, axis=1, keepdims=True)
        return {"scores": scores, "embedding": tf.math.l2_normalize(embedding, axis=1)}


def save_tone_model(export_dir: Path) -> Path:
    module = ToneDetector()
    document = {"sample_rate": RATE, "window_samples": WINDOW, "hop_samples": HOP, "labels": list(LABELS)}
    with tempfile.TemporaryDirectory() as staging:
        spec = Path(staging) / "model_spec.json"
        spec.write_text(json.dumps(document))
        module.spec_asset = tf.saved_model.Asset(str(spec))
        tf.saved_model.save(module, str(export_dir), signatures={"serving_default": module.serve})
    return export_dir
