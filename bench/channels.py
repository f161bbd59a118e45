"""``--channels each`` on one 4-channel file against the same four channels as four mono files.

    python -m bench.channels [--seconds 60] [--rounds 2] [--model_path DIR]

Each channel is a different real recording (ESC-10 clips, one after another, 44.1 kHz; generated
audio of the same kind without ../shared/data/esc10), stored as 16-bit FLAC: one 4-channel file and
four mono files holding the same samples.  Two costs, in CPU seconds of this process (every thread;
tag_audio runs with ``--decode_processes 0`` so its decoding is counted here too):

- decode: ``decode_all(file, channels='each')`` against ``decode_all`` of each mono file;
- end to end: ``tag_audio --channels each`` on the 4-channel file against ``tag_audio`` on the four
  mono files (same frames, same model; the model's cost is the same in both, so the ratio says what
  splitting costs beside it).

Rows are interleaved over ``--rounds``; the table gives the median CPU seconds and the ratio
channels/mono per row (the issue's target: at most 1.1).
"""

from __future__ import annotations

import argparse
import fractions
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from bench.corpus import CLIP_RATE, DEFAULT_MODEL, ESC10_AUDIO, synthetic_audio
from transforms.decoding.stream import decode_all

CHANNELS = 4
SAMPLE_RATE = 16000


def channel_signals(seconds: float) -> np.ndarray:
    """``[4, n]``: per channel, different recordings one after another (float, 44.1 kHz)."""
    total = int(seconds * CLIP_RATE)
    clips = sorted(ESC10_AUDIO.glob("*.ogg")) if ESC10_AUDIO.exists() else []
    signals = np.zeros((CHANNELS, total), np.float32)
    rng = np.random.default_rng(0)
    for channel in range(CHANNELS):
        filled, index = 0, channel
        while filled < total:
            piece = (decode_all(str(clips[index % len(clips)]), CLIP_RATE) if clips
                     else synthetic_audio(5 * CLIP_RATE, CLIP_RATE, rng))
            take = min(len(piece), total - filled)
            signals[channel, filled:filled + take] = piece[:take]
            filled, index = filled + take, index + CHANNELS
    return signals


def write_flac(path: Path, signals: np.ndarray) -> Path:
    """``[C, n]`` floats as 16-bit FLAC (C channels)."""
    channels = signals.shape[0]
    layout = {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=CLIP_RATE, layout=layout)
        stream.codec_context.format = "s16"
        block = CLIP_RATE
        for start in range(0, signals.shape[1], block):
            piece = signals[:, start:start + block]
            data = np.clip(np.round(piece * 32768.0), -32768, 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T).reshape(1, -1), format="s16",
                                               layout=layout)
            frame.sample_rate, frame.pts = CLIP_RATE, start
            frame.time_base = fractions.Fraction(1, CLIP_RATE)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def cpu_seconds(action) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def tag(inputs: list[Path], out: Path, model: str, *extra: str) -> None:
    from beam_jobs import tag_audio

    args = [a for path in inputs for a in ("--input", str(path))]
    status = tag_audio.run([*args, "--output", str(out), "--model", "yamnet", "--model_path", model,
                            "--decode_processes", "0", "--progress_s", "0", "--force", *extra])
    if status != 0:
        raise SystemExit(f"tag_audio exited with {status}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="Seconds of audio per channel.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_channels_") as scratch:
        root = Path(scratch)
        signals = channel_signals(args.seconds)
        (root / "array").mkdir()
        (root / "mono").mkdir()
        array = write_flac(root / "array" / "array.flac", signals)
        monos = [write_flac(root / "mono" / f"channel{c}.flac", signals[c:c + 1]) for c in range(CHANNELS)]
        each = decode_all(str(array), SAMPLE_RATE, channels="each")
        for c, mono in enumerate(monos):  # the same samples either way, or the comparison means nothing
            assert np.array_equal(decode_all(str(mono), SAMPLE_RATE), each[:, c])
        rows = {
            "decode": (lambda: decode_all(str(array), SAMPLE_RATE, channels="each"),
                       lambda: [decode_all(str(m), SAMPLE_RATE) for m in monos]),
            "tag_audio end to end": (
                lambda: tag([array], root / "out_each", args.model_path, "--channels", "each"),
                lambda: tag(monos, root / "out_mono", args.model_path)),
        }
        tag([monos[0]], root / "warm", args.model_path)  # loads TensorFlow and the model once, untimed
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in rows}
        for _ in range(args.rounds):
            for name, (split, mono) in rows.items():
                times[name][0].append(cpu_seconds(split))
                times[name][1].append(cpu_seconds(mono))

    print(f"\n{CHANNELS} channels x {args.seconds:.0f} s, {args.rounds} rounds "
          "(median CPU s of this process)")
    print(f"{'row':24} {'--channels each':>16} {'4 mono files':>13} {'ratio':>7}")
    for name, (split, mono) in times.items():
        a, b = statistics.median(split), statistics.median(mono)
        print(f"{name:24} {a:16.2f} {b:13.2f} {a / b:7.2f}")


if __name__ == "__main__":
    main()
