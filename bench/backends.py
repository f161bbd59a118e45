"""YAMNet on three CPU runtimes with the same weights: TensorFlow (oneDNN), LiteRT (XNNPACK), ONNX Runtime.

    python -m bench.backends [--model_path DIR] [--batch_size 32] [--rounds 3] [--clips 6]

The product's batched graph (``audio_models.yamnet``, weights from the TF Hub
SavedModel) is converted offline, in this process, for each runtime that is
installed (nothing is downloaded):

- LiteRT: ``tf.lite.TFLiteConverter`` on the graph's concrete function at a
  fixed batch, builtin ops only; run by ``ai_edge_litert`` (or TensorFlow's own
  ``tf.lite.Interpreter``) with its default XNNPACK delegate;
- ONNX Runtime: ``tf2onnx`` at a fixed batch (its ComplexAbs conversion needs
  static shapes), opset 18; run by ``onnxruntime`` on the CPU provider with
  spinning threads off (they burn a shared machine's CPU while waiting).

Each backend is first checked against the official graph (the Hub model called
once per clip, as ``tests/audio_models/test_yamnet.py`` does) on real clips: scores
within 1e-4, embeddings within 1e-3. Then frames/s and frames per CPU-second at
1 and 2 threads, interleaved over ``--rounds``; ratios are against TensorFlow.
Missing runtimes are named with the pip command that adds them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench.corpus import DEFAULT_MODEL, clip_corpus  # noqa: E402

WINDOW, HOP = 15600, 7680
SCORES_BAR, EMBEDDING_BAR = 1e-4, 1e-3
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # [batch, 15600] -> scores, embeddings


def concrete_function(model, batch_size: int):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([batch_size, WINDOW], tf.float32, name="windows")])
    def forward(windows):
        outputs = model._graph(windows)
        return {"scores": outputs["scores"], "embedding": outputs["embedding"]}

    return forward


def tensorflow_runner(model) -> Runner:
    def run(windows):
        out = model.predict(windows)
        return out["scores"], out["embedding"]
    return run


def litert_runners(model, batch_size: int, work: Path) -> dict[str, Runner]:
    import tensorflow as tf

    forward = concrete_function(model, batch_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([forward.get_concrete_function()], forward)
    path = work / "yamnet.tflite"
    path.write_bytes(converter.convert())
    try:
        from ai_edge_litert.interpreter import Interpreter
        runtime = "LiteRT (ai_edge_litert)"
    except ImportError:
        Interpreter = tf.lite.Interpreter  # noqa: N806  (deprecated, same runtime)
        runtime = "LiteRT (tf.lite.Interpreter)"

    def make(threads: int) -> Runner:
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
        source = interpreter.get_input_details()[0]["index"]
        outputs = [detail["index"] for detail in interpreter.get_output_details()]

        def run(windows):
            interpreter.set_tensor(source, windows)
            interpreter.invoke()
            scores, embedding = sorted((interpreter.get_tensor(i) for i in outputs), key=lambda a: a.shape[1])
            return scores, embedding
        return run

    return {f"{runtime}, {n} thread{'s' if n > 1 else ''}": make(n) for n in (1, 2)}


def onnx_runners(model, batch_size: int, work: Path) -> dict[str, Runner]:
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    path = work / "yamnet.onnx"
    signature = [tf.TensorSpec([batch_size, WINDOW], tf.float32, name="windows")]
    tf2onnx.convert.from_function(concrete_function(model, batch_size), input_signature=signature, opset=18,
                                  output_path=str(path))

    def make(threads: int) -> Runner:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        source = session.get_inputs()[0].name

        def run(windows):
            scores, embedding = session.run(["scores", "embedding"], {source: windows})
            return scores, embedding
        return run

    name = f"ONNX Runtime {onnxruntime.__version__}"
    return {f"{name}, {n} thread{'s' if n > 1 else ''}": make(n) for n in (1, 2)}


def batched(run: Runner, windows: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window through ``run`` in full batches (the last one zero-padded)."""
    scores, embeddings = [], []
    for first in range(0, len(windows), batch_size):
        batch = windows[first:first + batch_size]
        real = len(batch)
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real, WINDOW), np.float32)])
        s, e = run(np.ascontiguousarray(batch))
        scores.append(s[:real])
        embeddings.append(e[:real])
    return np.concatenate(scores), np.concatenate(embeddings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", default=str(DEFAULT_MODEL))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clips", type=int, default=6, help="Real clips for the equivalence check.")
    parser.add_argument("--windows", type=int, default=640, help="Windows per speed measurement.")
    args = parser.parse_args(argv)
    if not (Path(args.model_path) / "saved_model.pb").exists():
        print(f"No YAMNet SavedModel at {args.model_path}: pass --model_path DIR", file=sys.stderr)
        return 2

    from audio_models.device import configure_tensorflow

    configure_tensorflow("cpu")
    import tensorflow as tf

    from audio_models.yamnet import YamnetModel
    from transforms.decoding.stream import decode_all
    from transforms.decoding.windows import frames_of

    model = YamnetModel.from_savedmodel(args.model_path)
    official = tf.saved_model.load(args.model_path)
    runners: dict[str, Runner] = {"TensorFlow " + tf.__version__ + " (oneDNN), default threads":
                                  tensorflow_runner(model)}
    with tempfile.TemporaryDirectory(prefix="bench_backends_") as work:
        for name, build, install in (("LiteRT", litert_runners, "pip install ai-edge-litert==2.3.0"),
                                     ("ONNX Runtime", onnx_runners,
                                      "pip install onnxruntime==1.32.0 tf2onnx==1.17.0 onnx==1.23.2")):
            try:
                runners.update(build(model, args.batch_size, Path(work)))
            except ImportError as error:
                print(f"{name}: not installed ({error.name}); {install}")
            except Exception as error:  # a conversion that fails is a result: say it and go on
                print(f"{name}: conversion failed: {type(error).__name__}: {str(error)[:500]}")

        corpus = clip_corpus(Path(work) / "corpus", args.clips)
        waveforms = [decode_all(uri, 16000) for uri in corpus.files]
        print(f"Equivalence with the official graph on {len(waveforms)} clips ({corpus.source}); "
              f"bar: scores {SCORES_BAR:g}, embeddings {EMBEDDING_BAR:g}")
        equivalent = {}
        for name, run in runners.items():
            worst_scores = worst_embedding = 0.0
            for waveform in waveforms:
                scores, embedding, _ = (t.numpy() for t in official(waveform))
                s, e = batched(run, frames_of(waveform, WINDOW, HOP), args.batch_size)
                worst_scores = max(worst_scores, float(np.abs(s - scores).max()))
                worst_embedding = max(worst_embedding, float(np.abs(e - embedding).max()))
            equivalent[name] = worst_scores <= SCORES_BAR and worst_embedding <= EMBEDDING_BAR
            print(f"  {name:48s} max |d scores| {worst_scores:.1e}, max |d embedding| {worst_embedding:.1e}: "
                  + ("equivalent" if equivalent[name] else "NOT equivalent"))

        windows = np.random.default_rng(0).uniform(-1, 1, (args.windows, WINDOW)).astype(np.float32)
        for run in runners.values():
            batched(run, windows[:args.batch_size], args.batch_size)  # first calls build kernels
        load_before = os.getloadavg()[0]
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                wall, cpu = time.perf_counter(), time.process_time()
                batched(run, windows, args.batch_size)
                rates[name].append((len(windows) / (time.perf_counter() - wall),
                                    len(windows) / (time.process_time() - cpu)))
    reference = next(iter(rates))
    base_wall = statistics.median(r[0] for r in rates[reference])
    base_cpu = statistics.median(r[1] for r in rates[reference])
    print(f"\nBatch {args.batch_size}, {args.windows} windows, {args.rounds} rounds (median, min-max); "
          f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(f"{'':50s}{'frames/s':>9s}{'spread':>12s}{'ratio':>7s}{'frames/CPU-s':>14s}{'spread':>12s}{'ratio':>7s}")
    for name, values in rates.items():
        wall = [v[0] for v in values]
        cpu = [v[1] for v in values]
        print(f"{name:50s}{statistics.median(wall):9.0f}{f'{min(wall):.0f}-{max(wall):.0f}':>12s}"
              f"{statistics.median(wall) / base_wall:7.2f}{statistics.median(cpu):14.0f}"
              f"{f'{min(cpu):.0f}-{max(cpu):.0f}':>12s}{statistics.median(cpu) / base_cpu:7.2f}"
              + ("" if equivalent[name] else "  (not equivalent)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
