"""The loop a user writes from the TF Hub YAMNet tutorial: one file at a time, the Hub model once per file.

    python -m bench.per_file_loop --output OUT.parquet [--model_path DIR] FILE [FILE ...]

Each file is decoded whole (with the product's decoder, so both sides pay the
same decoding cost), the Hub-format SavedModel is called once on the 1-D
16 kHz waveform (``scores, embeddings, log_mel = model(waveform)``), and one
row per frame is collected; the rows go to one Parquet file at the end
through pandas.  ``bench.compare`` times it; ``bench.memory`` runs this module
in a subprocess to see its peak memory on a long recording.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.corpus import DEFAULT_MODEL  # noqa: E402

SAMPLE_RATE = 16000
HOP_S = 0.48


@dataclasses.dataclass(frozen=True)
class LoopResult:
    frames: int
    audio_seconds: float
    seconds: float  # wall time of decode + model + rows + Parquet


def load_hub_model(model_path: str):
    """The Hub-format SavedModel, as the tutorial loads it (``hub.load`` is ``tf.saved_model.load``)."""
    import tensorflow as tf

    return tf.saved_model.load(model_path)


def tag_files(hub_model, files: list[str], output: str) -> LoopResult:
    """Decode each file, call the model once per file, collect rows, write them: the user's loop."""
    import pandas as pd

    from transforms.decoding.stream import decode_all

    start = time.perf_counter()
    rows = []
    audio_samples = 0
    for uri in files:
        waveform = decode_all(uri, SAMPLE_RATE)
        audio_samples += waveform.size
        scores, embeddings, _log_mel = hub_model(waveform)
        scores, embeddings = scores.numpy(), embeddings.numpy()
        for k in range(scores.shape[0]):
            rows.append({"uri": uri, "frame_index": k, "start_s": k * HOP_S,
                         "scores": scores[k], "embedding": embeddings[k]})
    pd.DataFrame(rows).to_parquet(output)
    return LoopResult(len(rows), audio_samples / SAMPLE_RATE, time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="Audio files to tag.")
    parser.add_argument("--output", required=True, help="Parquet file to write.")
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL),
                        help="A YAMNet SavedModel in TF Hub format (default: the test fixture).")
    args = parser.parse_args(argv)
    model = load_hub_model(args.model_path)
    result = tag_files(model, args.files, args.output)
    print(f"per-file loop: {result.frames} frames, {result.audio_seconds:.1f} s of audio "
          f"in {result.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
