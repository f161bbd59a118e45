"""What soxr's quality setting does to YAMNet's output, and what it costs.

    python -m bench.resample_quality [--clips 24] [--model_path DIR] [--qualities VHQ,HQ,MQ,LQ]

Decodes ESC-10 clips (44.1 kHz: every sample goes through the resampler) with
the product's decoder at each soxr quality, runs YAMNet on the windows, and
prints per quality: the largest difference from the first quality's scores and
embeddings (max |delta| over all frames and values), and soxr's CPU time per
YAMNet frame (resampling the same decoded audio in 16k-sample blocks, as the
decoder does). The default model is ``../shared/models/yamnet-approx`` (real
weights: the scores mean something); the quality is acceptable when the
differences stay within the bar a model re-implementation is held to (scores
1e-4, embeddings 1e-3).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.corpus import SHARED, clip_corpus  # noqa: E402

DEFAULT_MODEL = SHARED / "models" / "yamnet-approx"
SCORES_BAR, EMBEDDING_BAR = 1e-4, 1e-3


def decode_with(files: list[str], quality: str) -> list[np.ndarray]:
    from transforms.decoding import stream

    previous, stream.RESAMPLE_QUALITY = stream.RESAMPLE_QUALITY, quality
    try:
        return [stream.decode_all(uri, 16000) for uri in files]
    finally:
        stream.RESAMPLE_QUALITY = previous


def soxr_cost(sources: list[tuple[np.ndarray, int]], quality: str, frames: int, rounds: int = 3) -> float:
    """Median CPU-ms per YAMNet frame that soxr spends at ``quality`` on these sources."""
    import soxr

    costs = []
    for _ in range(rounds):
        start = time.process_time()
        for samples, rate in sources:
            resampler = soxr.ResampleStream(rate, 16000, 1, dtype="float32", quality=quality)
            for begin in range(0, samples.size, 16384):
                resampler.resample_chunk(samples[begin:begin + 16384])
            resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        costs.append((time.process_time() - start) / frames * 1000)
    return float(np.median(costs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL))
    parser.add_argument("--qualities", default="VHQ,HQ,MQ,LQ")
    args = parser.parse_args(argv)
    if not (Path(args.model_path) / "saved_model.pb").exists():
        print(f"No YAMNet SavedModel at {args.model_path}: pass --model_path DIR", file=sys.stderr)
        return 2
    qualities = [q.strip() for q in args.qualities.split(",") if q.strip()]

    import av

    from audio_models.device import configure_tensorflow
    from audio_models.yamnet import YamnetModel
    from transforms.decoding.windows import frames_of

    configure_tensorflow("cpu")
    model = YamnetModel.from_savedmodel(args.model_path)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench_resample_") as work:
        corpus = clip_corpus(Path(work) / "corpus", args.clips)
        sources = []
        for uri in corpus.files:
            with av.open(uri) as container:
                stream = container.streams.audio[0]
                parts = [f.to_ndarray() for f in container.decode(stream)]
            sources.append((np.concatenate(parts, axis=1).mean(axis=0, dtype=np.float32), stream.sample_rate))
        outputs = {}
        for quality in qualities:
            windows = np.concatenate([frames_of(w, 15600, 7680) for w in decode_with(corpus.files, quality)])
            outputs[quality] = model.predict(windows)
        frames = len(windows)
        print(f"{len(corpus.files)} clips, {frames} frames, {corpus.source}; model {args.model_path}; "
              f"load average {os.getloadavg()[0]:.1f}")
        reference = qualities[0]
        print(f"{'quality':10s}{'max |d scores|':>16s}{'max |d embedding|':>19s}{'top-1 changed':>15s}"
              f"{'soxr CPU-ms/frame':>19s}  within the bar")
        for quality in qualities:
            scores = np.abs(outputs[quality]["scores"] - outputs[reference]["scores"]).max()
            embedding = np.abs(outputs[quality]["embedding"] - outputs[reference]["embedding"]).max()
            top1 = np.mean(outputs[quality]["scores"].argmax(1) != outputs[reference]["scores"].argmax(1))
            within = "yes" if scores <= SCORES_BAR and embedding <= EMBEDDING_BAR else "no"
            print(f"{quality:10s}{scores:16.2e}{embedding:19.2e}{top1:14.1%} "
                  f"{soxr_cost(sources, quality, frames):18.3f}  {within}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
