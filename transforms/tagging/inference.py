"""The batched model DoFn: windows from many files packed into fixed-size batches.

One model per worker process, shared by all its threads and DoFn instances
(loading YAMNet costs seconds and hundreds of MB; a GPU holds one copy).
Batches always have ``batch_size`` rows -- the partial last batch of a bundle
is zero-padded -- so the compiled graph is traced once and a GPU sees one shape.

The model runs on a thread of its own, one batch behind: while it computes a
batch, the bundle's thread goes on decoding the next one (decoding is fused
into the same stage) and writing the previous one's rows.  TensorFlow releases
the GIL while it computes, so decoding and inference overlap; at most two
batches wait on the model, whatever the input's length.
"""

from __future__ import annotations

import collections
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
import numpy as np
from apache_beam import pvalue

from audio_models.loading import ModelSource, load_model
from audio_models.spec import EMBEDDING, LOGMEL, SCORES, BatchedModel
from transforms.output.lease import Lease, Renewer
from transforms.tagging import malloc_tuning, progress
from transforms.tagging.bundle_outputs import finish_bundle_outputs
from transforms.tagging.file_report import ScoreStats
from transforms.tagging.frame_table import FrameTableBuilder, logmel_statistics
from transforms.tagging.heads import HeadOutput
from transforms.tagging.units import WindowChunk

SCORE_STATS = "score_stats"  # tag of the (uri, ScoreStats) side output


def head_frames_tag(index: int) -> str:
    """Tag of the frames tables of the run's ``index``-th head."""
    return f"head{index}_frames"


def head_stats_tag(index: int) -> str:
    """Tag of the (uri, ScoreStats) of the run's ``index``-th head."""
    return f"head{index}_stats"

_models: dict[tuple[ModelSource, str], BatchedModel] = {}
_models_lock = threading.Lock()


def shared_model(source: ModelSource, device: str = "auto") -> BatchedModel:
    """The process-wide model for ``source``, loaded on first use."""
    key = (source, device)
    with _models_lock:
        if key not in _models:
            from audio_models.device import configure_tensorflow

            configure_tensorflow(device)
            _models[key] = load_model(source)
        return _models[key]


class WindowQueue:
    """FIFO of window chunks from which fixed-size batches are cut (chunks may be split)."""

    def __init__(self):
        self._chunks: collections.deque[WindowChunk] = collections.deque()
        self.size = 0

    def push(self, chunk: WindowChunk) -> None:
        if len(chunk.windows):
            self._chunks.append(chunk)
            self.size += len(chunk.windows)

    def pop(self, count: int) -> tuple[list[WindowChunk], np.ndarray]:
        """Removes ``count`` windows; returns the pieces (uri, first frame, windows) and the stacked batch."""
        pieces = []
        remaining = count
        while remaining > 0:
            head = self._chunks[0]
            if len(head.windows) <= remaining:
                pieces.append(self._chunks.popleft())
                remaining -= len(head.windows)
            else:
                pieces.append(WindowChunk(head.uri, head.first_frame, head.windows[:remaining], head.channel))
                self._chunks[0] = WindowChunk(head.uri, head.first_frame + remaining,
                                              head.windows[remaining:], head.channel)
                remaining = 0
        self.size -= count
        return pieces, np.concatenate([p.windows for p in pieces])


class RunModelBatched(beam.DoFn):
    """WindowChunks -> frames tables (main output) and per-file ScoreStats (SCORE_STATS).

    ``batch_size`` 0 picks the default of the device the worker finds.
    """

    def __init__(self, source: ModelSource, builder: FrameTableBuilder, batch_size: int,
                 device: str = "auto", overlap: bool = True, lease: Lease | None = None,
                 heads: tuple[HeadOutput, ...] = ()):
        self._source = source
        self._heads = heads  # each scores the batch's embeddings: its tables and stats go to its own tags
        self._builder = builder
        self._batch_size = batch_size
        self._device = device
        self._overlap = overlap  # False: the model runs on the bundle's thread, one batch at a time
        self._lease = lease  # renewed as batches go by: on Dataflow no driver is left to do it
        self._frames = beam.metrics.Metrics.counter("tag_audio", "frames")
        self._batches = beam.metrics.Metrics.counter("tag_audio", "batches")

    def setup(self):
        malloc_tuning.pin_mmap_threshold()
        self._model = shared_model(self._source, self._device)
        self._head_models = [shared_model(head.source, self._device) for head in self._heads]
        self._head_builders = [head.builder() for head in self._heads]
        self._heads_need_logmel = any("logmel_stats" in head.columns for head in self._heads)
        if not self._batch_size:
            # Decided here, on the worker: the driver may have no GPU while workers do.
            from audio_models.device import default_batch_size

            self._batch_size = default_batch_size(self._device)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model") if self._overlap else None
        self._renewer = Renewer(self._lease)

    def teardown(self):
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=True)

    def start_bundle(self):
        self._queue = WindowQueue()
        self._in_flight: collections.deque[Future] = collections.deque()

    @property
    def batches_in_flight(self) -> int:
        """Batches handed to the model thread whose outputs were not collected yet."""
        return len(self._in_flight)

    def process(self, chunk: WindowChunk):
        self._renewer.tick()
        self._queue.push(chunk)
        while self._queue.size >= self._batch_size:
            yield from self._submit(self._batch_size)

    def finish_bundle(self):
        outputs = []
        while self._queue.size:
            outputs.extend(self._submit(min(self._batch_size, self._queue.size)))
        while self._in_flight:
            outputs.extend(self._collect())
        yield from finish_bundle_outputs(outputs)

    def _submit(self, count: int) -> list:
        """Hands the next ``count`` windows to the model; returns the outputs of the batch before it."""
        pieces, windows = self._queue.pop(count)
        if self._executor is None:
            return self._counted(*self._infer(pieces, windows, count))
        self._in_flight.append(self._executor.submit(self._infer, pieces, windows, count))
        return self._collect() if len(self._in_flight) > 1 else []

    def _collect(self) -> list:
        """Waits for the oldest batch in flight; its outputs (metrics are counted on this thread)."""
        return self._counted(*self._in_flight.popleft().result())

    def _counted(self, count: int, outputs: list) -> list:
        self._batches.inc()
        self._frames.inc(count)
        progress.record(frames=count)
        return outputs

    def _infer(self, pieces: list[WindowChunk], windows: np.ndarray, count: int) -> tuple[int, list]:
        """Runs one batch and builds its outputs (on the model thread when overlapping)."""
        if count < self._batch_size:  # keep one input shape for the whole run
            pad = np.zeros((self._batch_size - count, windows.shape[1]), np.float32)
            windows = np.concatenate([windows, pad])
        with_logmel = self._builder.needs_logmel or self._heads_need_logmel
        outputs = self._model.predict(windows, with_logmel=with_logmel)
        outputs = {name: value[:count] for name, value in outputs.items()}
        head_scores = self._score_heads(outputs)

        results: list = []
        uris: list[str] = []
        channels: list[int | None] = []
        frame_index = np.empty(count, np.int64)
        row = 0
        for piece in pieces:
            n = len(piece.windows)
            uris.extend([piece.uri] * n)
            channels.extend([piece.channel] * n)
            frame_index[row:row + n] = np.arange(piece.first_frame, piece.first_frame + n)
            scores = outputs[SCORES][row:row + n]
            stats = ScoreStats.of(scores, piece.channel)
            results.append(pvalue.TaggedOutput(SCORE_STATS, (piece.uri, stats)))
            for index, scored in enumerate(head_scores):
                results.append(pvalue.TaggedOutput(head_stats_tag(index), (
                    piece.uri, ScoreStats.of(scored[row:row + n], piece.channel))))
            row += n
        results.append(self._builder.build(uris, frame_index, outputs, channels))
        for index, (builder, scored) in enumerate(zip(self._head_builders, head_scores)):
            results.append(pvalue.TaggedOutput(head_frames_tag(index), builder.build(
                uris, frame_index, {SCORES: scored}, channels)))
        return count, results

    def _score_heads(self, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Each head's scores ``[B, classes]`` from the batch's embeddings (no audio, no YAMNet)."""
        if not self._heads:
            return []
        columns = {"embedding": outputs[EMBEDDING]}
        if LOGMEL in outputs:
            columns["logmel_stats"] = logmel_statistics(outputs[LOGMEL])
        return [model.score_frames(columns) for model in self._head_models]

