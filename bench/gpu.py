"""YAMNet on a GPU worker: the model alone by batch size and precision, end to end, and the decode bound.

    python -m bench.gpu [--model_path DIR] [--clips 480] [--batch_sizes 32,64,128,256,512,1024]
                        [--decoders 1,2,4,...] [--budget_s 420]

Run it on the machine that will tag (a Dataflow GPU worker type, or a VM with
the same GPU and vCPUs).  On a machine where TensorFlow sees no GPU it says so
and exits 0.  It prints, in this order:

1. the model alone, frames/s by batch size, in float32 and in float16 and
   bfloat16 (convolutions in that type, frontend and classifier float32) where
   their outputs stay within the fidelity bar: scores within 1e-4 and
   embeddings within 1e-3 (max |delta| over all frames) of float32 on the same
   windows, the bar a re-implementation of YAMNet is held to;
2. the batch size the rule below picks: the smallest batch whose float32 rate
   is within 10% of the best one measured (beyond it a larger batch buys
   under 10% and costs memory and latency; ~1 MB of activations per window);
3. the decode-bound ceiling: cores x the product decoder's frames per
   CPU-second on this corpus (decoding stays on the CPU: the GPU cannot tag
   faster than the cores decode);
4. tag_audio end to end on the GPU at that batch size with N decoder
   processes, frames/s and the share of the ceiling.

Every measurement is bounded in time so the whole run stays under
``--budget_s`` (420 s by default; 8 minutes with start-up): parts that would
not fit are skipped and said so.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.corpus import DEFAULT_MODEL, SHARED, clip_corpus  # noqa: E402

SAMPLE_RATE, WINDOW, HOP = 16000, 15600, 7680
SCORES_BAR, EMBEDDING_BAR = 1e-4, 1e-3
PLATEAU = 0.9  # the default batch: the smallest reaching this share of the best float32 rate
NO_GPU = "No GPU visible to TensorFlow"


@dataclasses.dataclass
class Fidelity:
    dtype: str
    scores: float  # max |delta| against float32
    embedding: float

    @property
    def within(self) -> bool:
        return self.scores <= SCORES_BAR and self.embedding <= EMBEDDING_BAR


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL),
                        help="A YAMNet SavedModel in TF Hub format (weights do not change the cost).")
    parser.add_argument("--fidelity_model", default=str(SHARED / "models" / "yamnet-approx"),
                        help="Model with real weights for the precision check (else --model_path).")
    parser.add_argument("--clips", type=int, default=480, help="5-second clips in the end-to-end corpus.")
    parser.add_argument("--batch_sizes", default="32,64,128,256,512,1024")
    parser.add_argument("--decoders", default="",
                        help="Decoder processes of the end-to-end rows (default: 1, half the cores, all).")
    parser.add_argument("--seconds_per_point", type=float, default=4.0,
                        help="Time spent measuring each (precision, batch size) point of the model alone.")
    parser.add_argument("--budget_s", type=float, default=420.0, help="Skip what would not finish by then.")
    parser.add_argument("--device", default="gpu", choices=("gpu", "cpu"),
                        help="cpu runs the same steps on the CPU, to check the script without a GPU "
                             "(the figures are then CPU figures).")
    return parser.parse_args(argv)


def gpu_names() -> list[str]:
    from audio_models.device import visible_gpus

    return [gpu.name for gpu in visible_gpus()]


def model_rate(model, windows: np.ndarray, batch_size: int, seconds: float) -> float:
    """Frames/s of ``model.predict`` on full batches, measured for about ``seconds`` after a warm-up call."""
    batches = [windows[i:i + batch_size] for i in range(0, len(windows) - batch_size + 1, batch_size)]
    if not batches:
        batches = [np.resize(windows, (batch_size, WINDOW))]
    model.predict(batches[0])  # traces for this shape, builds kernels
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.predict(batches[done % len(batches)])
        done += 1
    return done * batch_size / (time.perf_counter() - start)


def fidelity(model_path: str, windows: np.ndarray, dtypes: list[str], device: str) -> list[Fidelity]:
    """How far each compute type moves scores and embeddings from float32 on ``windows``."""
    from audio_models.yamnet import YamnetModel

    reference = YamnetModel.from_savedmodel(model_path, device=device).predict(windows)
    results = []
    for dtype in dtypes:
        out = YamnetModel.from_savedmodel(model_path, device=device, compute_dtype=dtype).predict(windows)
        results.append(Fidelity(dtype, float(np.abs(out["scores"] - reference["scores"]).max()),
                                float(np.abs(out["embedding"] - reference["embedding"]).max())))
    return results


def pick_batch(rates: dict[int, float]) -> int:
    """The smallest batch size within PLATEAU of the best rate."""
    best = max(rates.values())
    return min(b for b, rate in rates.items() if rate >= PLATEAU * best)


def decode_rate(files: list[str]) -> float:
    """Frames per CPU-second of the product decoder on ``files``, in this process."""
    from transforms.decoding.stream import decode_all
    from transforms.decoding.windows import num_frames

    start, frames = time.process_time(), 0
    for uri in files:
        frames += num_frames(decode_all(uri, SAMPLE_RATE).size, WINDOW, HOP)
    return frames / (time.process_time() - start)


def end_to_end(directory: Path, model_path: str, batch_size: int, decoders: int, out: Path,
               device: str = "gpu") -> tuple[float, int]:
    from beam_jobs import tag_audio
    from bench.compare import parquet_rows

    start = time.perf_counter()
    status = tag_audio.run(["--input", str(directory), "--output", str(out), "--model", "yamnet",
                            "--model_path", model_path, "--runner", "FnApiRunner", "--device", device,
                            "--batch_size", str(batch_size), "--decode_processes", str(decoders),
                            "--progress_s", "0"])
    seconds = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"tag_audio exited with status {status}")
    frames = parquet_rows(str(out / "frames" / "**" / "*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    return frames / seconds, frames


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    def left() -> float:
        return args.budget_s - (time.perf_counter() - started)

    from audio_models.device import CPU, GPU, configure_tensorflow

    gpus = gpu_names() if args.device == "gpu" else ["(none: --device cpu)"]
    if not gpus:
        print(f"{NO_GPU} on this machine (no CUDA device, or TensorFlow's CUDA libraries are missing): "
              "nothing to measure here. Run python -m bench.gpu on a GPU worker; "
              "python -m bench.compare measures the CPU.")
        return 0
    if not (Path(args.model_path) / "saved_model.pb").exists():
        print(f"No YAMNet SavedModel at {args.model_path}: pass --model_path DIR", file=sys.stderr)
        return 2
    configure_tensorflow(args.device)
    device = GPU if args.device == "gpu" else CPU
    cores = os.cpu_count() or 1
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    decoders = ([int(n) for n in args.decoders.split(",") if n.strip()] if args.decoders
                else sorted({1, max(1, cores // 2), cores}))

    from audio_models.yamnet import YamnetModel
    from transforms.decoding.stream import decode_all
    from transforms.decoding.windows import frames_of

    work = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    try:
        corpus = clip_corpus(work / "corpus", args.clips)
        distinct = sorted({os.path.realpath(f): f for f in corpus.files}.values())
        windows = np.concatenate([frames_of(decode_all(f, SAMPLE_RATE), WINDOW, HOP) for f in distinct[:120]])
        print(f"GPU: {', '.join(gpus)}; {cores} CPU cores; {len(windows)} windows from {corpus.source}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

        # 1. precision: which compute types keep the outputs within the bar
        fidelity_model = args.fidelity_model if Path(args.fidelity_model, "saved_model.pb").exists() \
            else args.model_path
        checks = fidelity(fidelity_model, windows[:256], ["float16", "bfloat16"], device)
        print(f"\nOutputs against float32 ({fidelity_model}, {len(windows[:256])} windows); "
              f"bar: scores {SCORES_BAR:g}, embeddings {EMBEDDING_BAR:g}")
        for check in checks:
            verdict = "within the bar" if check.within else "outside the bar, not measured further"
            print(f"  {check.dtype:9s} max |d scores| {check.scores:.2e}, "
                  f"max |d embedding| {check.embedding:.2e}: {verdict}")
        dtypes = ["float32"] + [c.dtype for c in checks if c.within]

        # 2. the model alone, by batch size
        rates: dict[str, dict[int, float]] = {}
        for dtype in dtypes:
            model = YamnetModel.from_savedmodel(args.model_path, device=device, compute_dtype=dtype)
            for batch in batch_sizes:
                if left() < 150:  # keep time for the end-to-end rows
                    print(f"  (skipped {dtype} batch {batch} and beyond: time budget)")
                    break
                rates.setdefault(dtype, {})[batch] = model_rate(model, windows, batch, args.seconds_per_point)
        print("\nModel alone, frames/s (prepared windows, full batches)")
        print(f"{'batch':>8s}" + "".join(f"{d:>12s}" for d in rates))
        for batch in batch_sizes:
            if batch in rates.get("float32", {}):
                print(f"{batch:8d}" + "".join(f"{rates[d].get(batch, float('nan')):12.0f}" for d in rates))
        chosen = pick_batch(rates["float32"])
        print(f"Batch size by the rule (smallest within {PLATEAU:.0%} of the best float32 rate): {chosen}")

        # 3. the decode-bound ceiling
        per_core = decode_rate(distinct[:60])
        ceiling = per_core * cores
        print(f"\nDecoding: {per_core:.0f} frames per CPU-second; ceiling with {cores} cores: "
              f"{ceiling:.0f} frames/s")

        # 4. end to end
        print(f"\ntag_audio end to end on the {args.device.upper()}, batch {chosen}, "
              f"{len(corpus.files)} clips")
        warm = work / "warm"  # loads and traces tag_audio's own copy of the model outside the timing
        warm.mkdir()
        os.symlink(corpus.files[0], warm / Path(corpus.files[0]).name)
        end_to_end(warm, args.model_path, chosen, 1, work / "warm_out", args.device)
        for count in decoders:
            if left() < 30:
                print(f"  (skipped {count} decoder processes and beyond: time budget)")
                break
            rate, frames = end_to_end(corpus.directory, args.model_path, chosen, count, work / f"e2e{count}",
                                      args.device)
            print(f"  {count:3d} decoder processes: {rate:8.0f} frames/s ({frames} frames), "
                  f"{rate / ceiling:.0%} of the decode-bound ceiling", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nbench.gpu took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
