"""The small corpus the end-to-end tag_audio tests share, built once a session.

A real SavedModel (``savedmodel_factory.save_batched_encoder``) and real audio encoded by FFmpeg:
FLAC, WAV and MP3 of known signals, a file that only claims to be a WAV, and a text file that directory
inputs never list. Tests read it and never change it; each writes its output elsewhere.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.support.audio_factory import chirp, sine, write_audio
from tests.support.savedmodel_factory import save_batched_encoder

RATE = 16000
TONE = "tone.flac"  # 440 Hz for 3 s
SWEEP = "sweep.wav"  # a chirp for 2.5 s
SHORT = "short.mp3"  # 880 Hz for 0.4 s, quieter
BROKEN = "broken.wav"  # a RIFF header and nothing FFmpeg can read
NOT_LISTED = "notes.txt"  # not an audio extension


def tone_wave():
    return sine(440.0, 3.0, RATE)


@dataclasses.dataclass(frozen=True)
class SmallCorpus:
    model: Path
    audio: Path

    @property
    def listed(self) -> list[Path]:
        """The files a directory input lists (every one gets a files row)."""
        return [self.audio / name for name in sorted((TONE, SWEEP, SHORT, BROKEN))]


def build_small_corpus(root: Path) -> SmallCorpus:
    model = save_batched_encoder(root / "model")
    audio = root / "audio"
    audio.mkdir()
    write_audio(audio / TONE, tone_wave(), RATE)
    write_audio(audio / SWEEP, chirp(2.5, RATE), RATE)
    write_audio(audio / SHORT, sine(880.0, 0.4, RATE, amplitude=0.3), RATE)
    (audio / BROKEN).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (audio / NOT_LISTED).write_text("not audio")
    return SmallCorpus(model, audio)
