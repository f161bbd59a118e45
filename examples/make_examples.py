"""Makes the demo recordings in examples/audio/ and the keyword timings in examples/audio/expected.json.

    python examples/make_examples.py                 # needs: apt-get install flite espeak-ng
    python examples/make_examples.py --check examples/models/keyword

Each recording is a short sentence containing some of the keywords (yes, no,
up, down, left, right, on, off, stop, go), spoken by a TTS engine from Debian
(flite 2.2, espeak-ng 1.51).  Sentences are synthesised *word by word*: every
word is rendered on its own, its leading and trailing silence trimmed, and the
words are joined with fixed gaps (a short one inside a phrase, a pause where
the sentence marks one with '|').  So the position of every keyword is known
to the sample and written to expected.json, with no forced alignment.  A faint
seeded noise bed keeps the pauses from being digital silence.

The recordings are saved in different formats and rates (FLAC 16 kHz, Ogg/Opus
48 kHz, MP3 22.05 kHz stereo, WAV 8 kHz) so the demo also exercises decoding,
downmixing and resampling.  The outputs are committed: the demo never needs a
TTS engine.  Re-running this script rebuilds identical audio as
long as the engines' versions stay the same (lossy encoders may differ in the
last bits between FFmpeg versions).

``--check MODEL_DIR`` runs an exported keyword model over the recordings
(one-second windows every ``--hop_s``, framed as tag_audio frames them) and
prints which of the expected keywords it finds and what else it heard.
"""

from __future__ import annotations

import argparse
import dataclasses
import fractions
import json
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import av
import numpy as np
import soxr

HERE = Path(__file__).resolve().parent
AUDIO_DIR = HERE / "audio"
EXPECTED_FILE = "expected.json"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")

PAUSE = "|"
COMPOSE_RATE = 16000  # words are joined at the keyword model's rate, then encoded at each file's own
WORD_GAP_S = 0.08  # between words of one phrase
PAUSE_S = 0.6  # at a '|'
LEAD_S, TAIL_S = 0.6, 0.8  # before the first and after the last word
PEAK = 0.7  # every recording is scaled to this peak (about -3 dBFS)
NOISE_RMS = 10 ** (-66 / 20)  # the noise bed, about -66 dBFS
TRIM_DB = -40.0  # a word starts/ends where it first/last rises within this of its peak
TRIM_MARGIN_S = 0.01


@dataclasses.dataclass(frozen=True)
class Recording:
    file: str
    engine: str  # 'flite' | 'espeak-ng'
    voice: str
    speed: float  # flite: duration stretch (1.0 = normal, larger = slower); espeak-ng: words per minute
    sentence: str  # words, with '|' marking pauses
    codec: str
    container: str
    rate: int
    channels: int = 1
    bit_rate: int | None = None

    @property
    def tokens(self) -> list[str]:
        return self.sentence.replace(PAUSE, f" {PAUSE} ").split()

    @property
    def text(self) -> str:
        return " ".join(t for t in self.tokens if t != PAUSE)


# Voices and speeds were picked among flite's slt/rms/awb/kal16 and espeak-ng's en-us/en at a few
# speeds, as the ones the shipped model (trained on real speakers only) recognises best; the
# synthetic voices differ a lot from Speech Commands' speakers.  Slightly slow speech helps.
RECORDINGS = (
    Recording("robot_commands.flac", "flite", "rms", 1.3,
              "robot | go | forward then turn | left | and | stop",
              codec="flac", container="flac", rate=16000),
    Recording("door_answers.opus", "espeak-ng", "en-us", 130, "is the door open | no | is it locked | yes",
              codec="libopus", container="ogg", rate=48000, bit_rate=24000),
    Recording("kitchen_lights.mp3", "espeak-ng", "en", 130, "switch the kitchen lights | on | "
              "and the hall lights | off", codec="libmp3lame", container="mp3", rate=22050, channels=2,
              bit_rate=48000),
    Recording("lift.wav", "flite", "rms", 1.0, "take the lift | up | then | down | and turn | right",
              codec="pcm_s16le", container="wav", rate=8000),
)


# --- synthesis ----------------------------------------------------------------------------------

def engine_version(engine: str) -> str:
    """E.g. '2.2' for flite, '1.51' for espeak-ng (what the recordings depend on)."""
    if engine == "flite":
        out = subprocess.run(["flite", "--version"], capture_output=True, text=True).stdout
        line = next((line for line in out.splitlines() if "version:" in line), "")
        return line.split("version:")[-1].split()[0].removeprefix("flite-") if line else "unknown"
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    return out.split("text-to-speech:")[-1].split()[0] if "text-to-speech:" in out else "unknown"


def synthesise_word(engine: str, voice: str, speed: float, word: str, workdir: Path) -> np.ndarray:
    """One word, rendered alone, as float32 at COMPOSE_RATE."""
    path = workdir / f"{engine}_{voice}_{speed}_{word}.wav"
    if engine == "flite":
        command = ["flite", "-voice", voice, "--setf", f"duration_stretch={speed}", "-t", word,
                   "-o", str(path)]
    elif engine == "espeak-ng":
        command = ["espeak-ng", "-v", voice, "-s", str(int(speed)), "-w", str(path), word]
    else:
        raise ValueError(f"unknown engine {engine}")
    subprocess.run(command, check=True, capture_output=True)
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise ValueError(f"{engine} wrote {8 * f.getsampwidth()}-bit audio; expected 16-bit")
        rate, channels = f.getframerate(), f.getnchannels()
        samples = np.frombuffer(f.readframes(f.getnframes()), np.int16).astype(np.float32) / 32768.0
    samples = samples.reshape(-1, channels).mean(axis=1)
    return soxr.resample(samples, rate, COMPOSE_RATE).astype(np.float32)


def trim_silence(samples: np.ndarray, rate: int = COMPOSE_RATE) -> np.ndarray:
    """Cuts the engine's leading and trailing silence, keeping a 10 ms margin."""
    level = np.abs(samples)
    loud = np.nonzero(level >= level.max() * 10 ** (TRIM_DB / 20))[0]
    margin = int(TRIM_MARGIN_S * rate)
    return samples[max(0, loud[0] - margin):loud[-1] + 1 + margin]


def compose(recording: Recording, workdir: Path, seed: int) -> tuple[np.ndarray, list[dict]]:
    """The whole recording at COMPOSE_RATE and the ``[start_s, end_s)`` of every word."""
    pieces = [np.zeros(int(LEAD_S * COMPOSE_RATE), np.float32)]
    position = pieces[0].size
    words = []
    previous_was_word = False
    for token in recording.tokens:
        if token == PAUSE:
            gap = int(PAUSE_S * COMPOSE_RATE)
            previous_was_word = False
        else:
            gap = int(WORD_GAP_S * COMPOSE_RATE) if previous_was_word else 0
        if gap:
            pieces.append(np.zeros(gap, np.float32))
            position += gap
        if token == PAUSE:
            continue
        word = trim_silence(synthesise_word(recording.engine, recording.voice, recording.speed, token,
                                            workdir))
        words.append({"word": token, "start_s": position / COMPOSE_RATE,
                      "end_s": (position + word.size) / COMPOSE_RATE})
        pieces.append(word)
        position += word.size
        previous_was_word = True
    pieces.append(np.zeros(int(TAIL_S * COMPOSE_RATE), np.float32))
    speech = np.concatenate(pieces)
    speech *= PEAK / np.abs(speech).max()
    noise = np.random.default_rng(seed).normal(0.0, NOISE_RMS, speech.size).astype(np.float32)
    return speech + noise, words


# --- encoding -----------------------------------------------------------------------------------

def encode(path: Path, samples: np.ndarray, recording: Recording) -> None:
    """Writes mono ``samples`` (at COMPOSE_RATE) with the recording's codec, rate and channel count."""
    audio = samples if recording.rate == COMPOSE_RATE else soxr.resample(samples, COMPOSE_RATE,
                                                                         recording.rate)
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    layout = "mono" if recording.channels == 1 else "stereo"
    # bitexact: no random Ogg serial numbers and no encoder version tags, so re-runs give the same bytes.
    with av.open(str(path), mode="w", format=recording.container,
                 container_options={"fflags": "+bitexact"}) as output:
        stream = output.add_stream(recording.codec, rate=recording.rate, layout=layout)
        stream.codec_context.options = {"flags": "+bitexact"}
        if recording.bit_rate:
            stream.codec_context.bit_rate = recording.bit_rate
        # Samples are quantised here, not by FFmpeg's converter, which may change between versions.
        fmt = stream.codec_context.format.name
        step = 4096
        for pts in range(0, audio.size, step):
            piece = np.repeat(audio[None, pts:pts + step], recording.channels, axis=0)
            frame = av.AudioFrame.from_ndarray(_in_format(piece, fmt), format=fmt, layout=layout)
            frame.sample_rate = recording.rate
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, recording.rate)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))


def _in_format(planar: np.ndarray, fmt: str) -> np.ndarray:
    if fmt.startswith("s16"):
        values = np.clip(np.round(planar * 32768.0), -32768, 32767).astype(np.int16)
    elif fmt.startswith("s32"):
        values = np.clip(np.round(planar * 2.0**31), -(2.0**31), 2.0**31 - 1).astype(np.int32)
    elif fmt.startswith("flt"):
        values = planar.astype(np.float32)
    else:
        raise ValueError(f"unsupported encoder sample format {fmt}")
    if not fmt.endswith("p"):  # packed formats interleave the channels
        values = np.ascontiguousarray(values.T).reshape(1, -1)
    return np.ascontiguousarray(values)


# --- the whole set ------------------------------------------------------------------------------

def make_examples(out_dir: Path = AUDIO_DIR) -> dict:
    for engine in sorted({r.engine for r in RECORDINGS}):
        if shutil.which(engine) is None:
            sys.exit(f"{engine} is not installed: apt-get install flite espeak-ng")
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "made_by": "examples/make_examples.py",
        "keywords": list(KEYWORDS),
        "method": "word-by-word TTS joined with fixed gaps: "
                  f"{WORD_GAP_S} s inside a phrase, {PAUSE_S} s at '|', words trimmed at {TRIM_DB} dB",
        "recordings": [],
    }
    with tempfile.TemporaryDirectory() as workdir:
        for seed, recording in enumerate(RECORDINGS):
            samples, words = compose(recording, Path(workdir), seed)
            path = out_dir / recording.file
            encode(path, samples, recording)
            document["recordings"].append({
                "file": recording.file,
                "text": recording.text,
                "sentence": recording.sentence,
                "engine": f"{recording.engine} {engine_version(recording.engine)}",
                "voice": recording.voice,
                "speed": recording.speed,
                "format": f"{recording.container}/{recording.codec}, {recording.rate} Hz, "
                          f"{recording.channels} ch",
                "duration_s": round(samples.size / COMPOSE_RATE, 4),
                "keywords": [{"label": w["word"], **_times(w)} for w in words if w["word"] in KEYWORDS],
                "words": [{"word": w["word"], **_times(w)} for w in words],
            })
            print(f"{path}: {samples.size / COMPOSE_RATE:.1f} s, "
                  f"{path.stat().st_size // 1024} KB, \"{recording.text}\"")
    with open(out_dir / EXPECTED_FILE, "w") as f:
        json.dump(document, f, indent=2)
        f.write("\n")
    return document


def _times(word: dict) -> dict:
    return {"start_s": round(word["start_s"], 4), "end_s": round(word["end_s"], 4)}


# --- checking a model against the timings -------------------------------------------------------

def check(model_dir: str, audio_dir: Path = AUDIO_DIR, min_score: float = 0.3, hop_s: float = 0.25,
          smooth_s: float = 0.5) -> int:
    """Runs the model over every recording; prints found / missed keywords and extra detections."""
    sys.path.insert(0, str(HERE.parent))  # run from a checkout: the package is the parent folder
    from audio_models.keyword import load_keyword_model
    from transforms.answers.events import events_from_scores
    from transforms.answers.thresholds import rules_above
    from transforms.decoding.stream import decode_all
    from transforms.decoding.windows import frames_of

    model = load_keyword_model(model_dir, int(round(hop_s * 16000)))
    spec = model.spec
    expected = json.loads((audio_dir / EXPECTED_FILE).read_text())
    found_total = expected_total = extra_total = 0
    for entry in expected["recordings"]:
        waveform = decode_all(str(audio_dir / entry["file"]), spec.sample_rate)
        windows = frames_of(waveform, spec.window_samples, spec.hop_samples)
        scores = model.predict(windows)["scores"]
        starts = np.arange(len(windows)) * spec.hop_s
        events = events_from_scores(starts, starts + spec.window_s, scores, spec.class_names, spec.hop_s,
                                    rules_above(min_score, smooth_s))
        matched = set()
        print(f"{entry['file']}: \"{entry['text']}\"")
        for keyword in entry["keywords"]:
            hit = next((i for i, e in enumerate(events) if i not in matched and e.label == keyword["label"]
                        and e.start_s < keyword["end_s"] and keyword["start_s"] < e.end_s), None)
            expected_total += 1
            if hit is None:
                print(f"  missed {keyword['label']:>5} at {keyword['start_s']:.2f}-{keyword['end_s']:.2f} s")
                continue
            matched.add(hit)
            found_total += 1
            event = events[hit]
            print(f"  found  {keyword['label']:>5} at {keyword['start_s']:.2f}-{keyword['end_s']:.2f} s: "
                  f"heard {event.start_s:.1f}-{event.end_s:.1f} s, score {event.peak_score:.2f}")
        for i, event in enumerate(events):
            if i not in matched:
                extra_total += 1
                print(f"  extra  {event.label:>5} at {event.start_s:.1f}-{event.end_s:.1f} s, "
                      f"score {event.peak_score:.2f}")
    print(f"found {found_total} of {expected_total} keywords; {extra_total} extra detections "
          f"(min score {min_score}, hop {hop_s} s, smoothed over {smooth_s} s)")
    return found_total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=AUDIO_DIR, help="where to write the recordings")
    parser.add_argument("--check", metavar="MODEL_DIR", default=None,
                        help="instead of synthesising, run this exported keyword model over the recordings")
    # --check's defaults are the demo's (beam_jobs/demo.py)
    parser.add_argument("--min_score", type=float, default=0.3, help="--check: event start score")
    parser.add_argument("--hop_s", type=float, default=0.25, help="--check: hop between one-second windows")
    parser.add_argument("--smooth_s", type=float, default=0.5, help="--check: averaging span")
    args = parser.parse_args(argv)
    if args.check:
        check(args.check, args.out, args.min_score, args.hop_s, args.smooth_s)
    else:
        make_examples(args.out)


if __name__ == "__main__":
    main()
