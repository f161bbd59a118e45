"""Throughput of YAMNet: the TF Hub graph called once per clip vs the batched re-implementation.

    python -m bench.model_throughput [--model_path DIR] [--clips N] [--batch_sizes 16,32,64,128]

Both run in this process on the same machine, on the same 5-second clips
(uniform noise: the content does not change the cost), alternating over
``--rounds`` rounds so that load from other processes hits both alike.

(a) per clip: the Hub-format SavedModel called on each 5 s waveform (80000
    samples -> 10 frames), the way the official model is used;
(b) batched: ``YamnetModel.predict`` on the same clips' windows, prepared
    beforehand, in batches of each size (a partial last batch is zero-padded
    to full size, as the pipeline does; only real frames are counted).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO_ROOT.parent / "shared" / "fixtures" / "yamnet-hub-random"
CLIP_SAMPLES = 5 * 16000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL),
                        help="A YAMNet SavedModel directory in TF Hub format (default: the test fixture).")
    parser.add_argument("--clips", type=int, default=60, help="5-second clips per measurement.")
    parser.add_argument("--batch_sizes", default="16,32,64,128",
                        help="Comma-separated batch sizes for the batched model.")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Alternating rounds; best and median shown, ratios of medians.")
    parser.add_argument("--intra_op_threads", type=int, default=0, help="0 = TensorFlow's default.")
    parser.add_argument("--inter_op_threads", type=int, default=0, help="0 = TensorFlow's default.")
    return parser.parse_args(argv)


@dataclasses.dataclass(frozen=True)
class Rate:
    wall: float  # frames per second of elapsed time
    cpu: float  # frames per CPU-second of this process: less sensitive to other processes' load


def _rate(frames: int, wall_start: float, cpu_start: float) -> Rate:
    return Rate(frames / (time.perf_counter() - wall_start), frames / (time.process_time() - cpu_start))


def per_clip_rate(hub_model, clips: list[np.ndarray]) -> Rate:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    frames = 0
    for clip in clips:
        frames += int(hub_model(clip)[0].shape[0])
    return _rate(frames, wall_start, cpu_start)


def batched_rate(model, windows: np.ndarray, batch_size: int) -> Rate:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        if len(batch) < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - len(batch), batch.shape[1]), np.float32)])
        model.predict(batch)
    return _rate(len(windows), wall_start, cpu_start)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = Path(args.model_path)
    if not (model_path / "saved_model.pb").exists():
        print(f"No YAMNet SavedModel at {model_path}. The default is the test fixture at "
              f"../shared/fixtures/yamnet-hub-random (next to the repository); pass --model_path DIR "
              f"pointing at a TF Hub-format YAMNet (e.g. a downloaded google/yamnet/1).", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]

    from audio_models.device import configure_tensorflow

    device = configure_tensorflow("auto", args.intra_op_threads, args.inter_op_threads)
    import tensorflow as tf

    from audio_models.yamnet import YamnetModel
    from transforms.decoding.windows import frames_of

    rng = np.random.default_rng(0)
    clips = [rng.uniform(-1, 1, CLIP_SAMPLES).astype(np.float32) for _ in range(args.clips)]
    windows = np.concatenate([frames_of(clip, 15600, 7680) for clip in clips])

    hub_model = tf.saved_model.load(str(model_path))
    model = YamnetModel.from_savedmodel(str(model_path))
    hub_model(clips[0])  # first calls trace and build kernels
    for batch_size in batch_sizes:
        model.predict(windows[:batch_size])

    rates: dict[str, list[Rate]] = {}
    for _ in range(args.rounds):
        rates.setdefault("per_clip", []).append(per_clip_rate(hub_model, clips))
        for batch_size in batch_sizes:
            rates.setdefault(f"batch {batch_size}", []).append(batched_rate(model, windows, batch_size))

    print(f"YAMNet throughput on {device} ({os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}, inter-op "
          f"{tf.config.threading.get_inter_op_parallelism_threads() or 'default'}); "
          f"{args.clips} clips of 5 s = {len(windows)} frames, {args.rounds} rounds; model {model_path}")
    base_wall = statistics.median(r.wall for r in rates["per_clip"])
    base_cpu = statistics.median(r.cpu for r in rates["per_clip"])
    print(f"{'frames/s (wall clock)':32s}{'best':>8s}{'median':>8s}{'ratio':>7s}"
          f"   {'frames/CPU-s':>12s}{'ratio':>7s}")
    for name, values in rates.items():
        label = "(a) Hub SavedModel, per clip" if name == "per_clip" else f"(b) batched, {name}"
        wall = statistics.median(r.wall for r in values)
        cpu = statistics.median(r.cpu for r in values)
        print(f"{label:32s}{max(r.wall for r in values):8.0f}{wall:8.0f}{wall / base_wall:6.2f}x"
              f"   {cpu:12.0f}{cpu / base_cpu:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
