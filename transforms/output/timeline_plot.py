"""One file's timeline as a PNG: waveform, log-mel spectrogram and its top classes over time.

Works for any model's frames (YAMNet, keyword, exported heads), with ``scores``
or ``top_classes`` columns, local or ``gs://``.  The audio is decoded again from
the URI for the upper two panels; when it cannot be (moved, deleted, no
access), the score heatmap is drawn alone with a note saying why.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import storage
from transforms.decoding.span import AudioSpan, load_audio_span
from transforms.output.reader import (
    ModelInfo,
    OutputDir,
    RunOutput,
    find_output,
    read_files,
    read_frames,
    read_schema,
)

SPECTROGRAM_RATE = 16000  # the log-mel frontend is YAMNet's, defined at 16 kHz
MAX_AUDIO_SPAN_S = 1800.0  # longer spans show scores only: decoding hours for a picture is not worth it
MAX_LABEL_CHARS = 32
RANK_BY = ("max", "mean")

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FrameScores:
    """Dense per-frame scores of one file: ``scores[frame, class]`` (classes absent from top_k are 0)."""

    uri: str
    run_id: str | None
    model: ModelInfo
    frame_index: np.ndarray  # [F] int
    start_s: np.ndarray  # [F] float
    end_s: np.ndarray  # [F] float
    scores: np.ndarray  # [F, C] float32
    class_names: tuple[str, ...]  # [C]

    @property
    def num_frames(self) -> int:
        return int(self.frame_index.size)

    @property
    def window_s(self) -> float:
        if self.model.window_s:
            return self.model.window_s
        return float(np.median(self.end_s - self.start_s)) if self.num_frames else 1.0

    @property
    def hop_s(self) -> float:
        if self.model.hop_s:
            return self.model.hop_s
        return float(np.median(np.diff(self.start_s))) if self.num_frames > 1 else self.window_s

    def centres(self) -> np.ndarray:
        return self.start_s + self.window_s / 2

    def within(self, start_s: float, end_s: float) -> FrameScores:
        """Frames whose window overlaps ``[start_s, end_s)``."""
        keep = (self.start_s < end_s) & (self.start_s + self.window_s > start_s)
        return dataclasses.replace(self, frame_index=self.frame_index[keep], start_s=self.start_s[keep],
                                   end_s=self.end_s[keep], scores=self.scores[keep])

    def top_classes(self, count: int, rank_by: str = "max") -> np.ndarray:
        """Indices of the ``count`` classes with the highest peak (or mean) score over these frames."""
        if not self.num_frames or not self.scores.shape[1]:
            return np.zeros(0, dtype=np.int64)
        peak, mean = self.scores.max(axis=0), self.scores.mean(axis=0)
        primary, secondary = (peak, mean) if rank_by == "max" else (mean, peak)
        order = np.lexsort((secondary, primary))[::-1]  # last key sorts first
        return order[:count]


@dataclasses.dataclass(frozen=True)
class PlotResult:
    output: str
    width_px: int
    height_px: int
    run_id: str | None
    model_identity: str
    start_s: float
    end_s: float
    frames_shown: int
    classes: tuple[str, ...]  # top first
    audio_note: str | None  # why the audio panels are missing; None when drawn


# -- loading ----------------------------------------------------------------------------------------

def load_frame_scores(output: str | OutputDir, uri: str, run_id: str | None = None,
                      channel: int | None = None) -> FrameScores:
    """The frames of ``uri`` from the newest run that has any (or from ``run_id``); with ``channel``,
    those of that channel (``tag_audio --channels``), else those of its channels mixed."""
    found = find_output(output) if isinstance(output, str) else output
    runs = [found.run(run_id)] if run_id is not None else list(found.latest_first)
    searched = 0
    for run in runs:
        if not run.frames:
            continue
        searched += 1
        scores = _read_scores(run, uri, channel)
        if scores is not None:
            return scores
    where = f"run={run_id}" if run_id is not None else f"{searched} run(s) with frames"
    which = f"{uri} channel {channel}" if channel is not None else uri
    raise LookupError(f"no frames for {which} under {found.root} ({where} searched)")


def _read_scores(run: RunOutput, uri: str, channel: int | None = None) -> FrameScores | None:
    schema = read_schema(run.frames)
    score_column = "scores" if "scores" in schema.names else "top_classes"
    if score_column not in schema.names:
        raise ValueError(f"{run.label}: frames have neither 'scores' nor 'top_classes' (model without "
                         "class scores, e.g. an embedding-only SavedModel): nothing to plot")
    has_channels = "channel" in schema.names  # runs older than --channels have none: all mixed
    table = read_frames(run, ["frame_index", "start_s", "end_s", score_column,
                              *(["channel"] if has_channels else [])], uri=uri)
    if has_channels:
        column = table["channel"]
        table = table.filter(pc.is_null(column) if channel is None else pc.equal(column, channel))
    elif channel is not None:
        return None
    if table.num_rows == 0:
        return None
    # One row per frame index, in time order (a retried work unit could have written a frame twice).
    table = table.sort_by("frame_index")
    frame_index = table["frame_index"].to_numpy()
    first = np.concatenate([[True], np.diff(frame_index) != 0])
    table = table.filter(pa.array(first))
    model = ModelInfo.from_schema(schema)
    column = table[score_column].combine_chunks()
    if score_column == "scores":
        dense = _dense_from_lists(column)
        extra_names: dict[int, str] = {}
    else:
        dense, extra_names = _dense_from_top_classes(column, len(model.class_names))
    names = tuple(
        model.class_names[i] if i < len(model.class_names) else extra_names.get(i, f"class {i}")
        for i in range(dense.shape[1]))
    return FrameScores(uri=uri, run_id=run.run_id, model=model,
                       frame_index=table["frame_index"].to_numpy(), start_s=table["start_s"].to_numpy(),
                       end_s=table["end_s"].to_numpy(), scores=dense, class_names=names)


def _dense_from_lists(column: pa.ListArray) -> np.ndarray:
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
    width = int(lengths.max()) if lengths.size else 0
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.float32)
    if (lengths == width).all():
        return values.reshape(len(column), width)
    dense = np.zeros((len(column), width), np.float32)  # ragged or null rows: pad with 0
    rows = pc.list_parent_indices(column).to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    dense[rows, np.arange(values.size) - offsets[rows]] = values
    return dense


def _dense_from_top_classes(column: pa.ListArray, num_classes: int) -> tuple[np.ndarray, dict[int, str]]:
    """top_classes rows -> ``[F, C]`` with 0 for classes a frame did not keep; labels seen, by index."""
    flat = pc.list_flatten(column)
    rows = pc.list_parent_indices(column).to_numpy()
    index = flat.field("index").to_numpy(zero_copy_only=False).astype(np.int64)
    score = flat.field("score").to_numpy(zero_copy_only=False).astype(np.float32)
    width = max(num_classes, int(index.max()) + 1 if index.size else 0)
    dense = np.zeros((len(column), width), np.float32)
    dense[rows, index] = score
    labels = dict(zip(index.tolist(), flat.field("label").to_pylist()))
    return dense, labels


def file_duration(output: OutputDir, run_id: str | None, uri: str) -> float | None:
    """duration_s of the files row of ``uri`` in that run, when there is one."""
    try:
        run = output.run(run_id)
    except KeyError:
        return None
    if not run.files:
        return None
    rows = read_files(run, ["duration_s"], uri=uri)
    values = [v for v in rows["duration_s"].to_pylist() if v is not None] if rows.num_rows else []
    return max(values) if values else None


def log_mel(audio: AudioSpan) -> np.ndarray:
    """``[frames, 64]`` log-mel of the span (YAMNet's frontend: 25 ms windows every 10 ms, 16 kHz)."""
    from audio_models import logmel

    samples = audio.samples
    if audio.sample_rate != SPECTROGRAM_RATE:
        import soxr

        samples = soxr.resample(samples, audio.sample_rate, SPECTROGRAM_RATE).astype(np.float32)
    if samples.size < logmel.STFT_WINDOW_SAMPLES:
        return np.zeros((0, logmel.MEL_BANDS), np.float32)
    return np.asarray(logmel.waveform_to_log_mel(samples))


# -- drawing ----------------------------------------------------------------------------------------

def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL_CHARS else name[:MAX_LABEL_CHARS - 1] + "…"


def _cell_edges(frames: FrameScores) -> np.ndarray:
    """Each frame's cell spans halfway to its neighbours' centres; the outer cells reach out to
    the first window's start and the last window's end, so the heatmap covers what the frames saw."""
    centres = frames.centres()
    middle = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[frames.start_s[0]], middle, [frames.start_s[-1] + frames.window_s]])


def _draw_waveform(ax, audio: AudioSpan, width_px: int) -> None:
    samples = audio.samples
    times_per_sample = 1.0 / audio.sample_rate
    bins = 2 * width_px
    if samples.size > 4 * bins:  # min/max envelope: same picture, far fewer points
        per_bin = math.ceil(samples.size / bins)
        padded = np.pad(samples, (0, per_bin * bins - samples.size), mode="edge").reshape(bins, per_bin)
        times = audio.start_s + (np.arange(bins) + 0.5) * per_bin * times_per_sample
        ax.fill_between(times, padded.min(axis=1), padded.max(axis=1), color="tab:blue", linewidth=0)
    else:
        ax.plot(audio.start_s + np.arange(samples.size) * times_per_sample, samples, color="tab:blue",
                linewidth=0.6)
    peak = float(np.abs(samples).max()) if samples.size else 1.0
    ax.set_ylim(-max(peak, 1e-3) * 1.1, max(peak, 1e-3) * 1.1)
    ax.set_ylabel("amplitude")


def _mel_band_ticks() -> tuple[list[float], list[str]]:
    """Where some round frequencies fall on the 64 HTK mel bands (125-7500 Hz)."""
    from audio_models import logmel

    def mel(hz: float) -> float:
        return 1127.0 * math.log1p(hz / 700.0)

    low, high = mel(logmel.MEL_MIN_HZ), mel(logmel.MEL_MAX_HZ)
    ticks, labels = [], []
    for hz in (250, 500, 1000, 2000, 4000, 7000):
        band = (mel(hz) - low) / (high - low) * (logmel.MEL_BANDS + 1) - 1  # band centres at k + 1
        ticks.append(band + 0.5)
        labels.append(f"{hz / 1000:g}k" if hz >= 1000 else str(hz))
    return ticks, labels


def _draw_spectrogram(fig, ax, cax, audio: AudioSpan, spectrogram: np.ndarray) -> None:
    from audio_models import logmel

    rate, hop, window = SPECTROGRAM_RATE, logmel.STFT_HOP_SAMPLES, logmel.STFT_WINDOW_SAMPLES
    # STFT frame i covers samples [hop*i, hop*i + window): draw it hop wide around its centre.
    left = audio.start_s + (window / 2 - hop / 2) / rate
    right = left + spectrogram.shape[0] * hop / rate
    image = ax.imshow(spectrogram.T, origin="lower", aspect="auto", cmap="magma", interpolation="nearest",
                      extent=(left, right, 0, spectrogram.shape[1]))
    ticks, labels = _mel_band_ticks()
    ax.set_yticks(ticks, labels)
    ax.set_ylabel("frequency (Hz, mel)")
    fig.colorbar(image, cax=cax, label="log mel")


def _draw_heatmap(fig, ax, cax, frames: FrameScores, classes: np.ndarray) -> None:
    matrix = frames.scores[:, classes].T  # [N, F], best class in row 0
    x_edges = _cell_edges(frames)
    y_edges = np.arange(classes.size + 1)
    vmax = 1.0 if matrix.size == 0 or (matrix.min() >= 0 and matrix.max() <= 1) else float(matrix.max())
    vmin = 0.0 if matrix.size == 0 or matrix.min() >= 0 else float(matrix.min())
    mesh = ax.pcolormesh(x_edges, y_edges, matrix, cmap="viridis", vmin=vmin, vmax=vmax, shading="flat")
    ax.set_yticks(np.arange(classes.size) + 0.5, [_short(frames.class_names[i]) for i in classes])
    ax.set_ylim(classes.size, 0)  # best class on top
    ax.set_ylabel("class")
    fig.colorbar(mesh, cax=cax, label="score")


def render_timeline(frames: FrameScores, audio: AudioSpan | None, start_s: float, end_s: float, top: int,
                    rank_by: str = "max", note: str | None = None, width_px: int = 1600,
                    height_px: int = 1000, dpi: int = 100) -> tuple[Figure, np.ndarray]:
    """Builds the figure (no pyplot: headless and thread-safe); returns it and the classes shown."""
    shown = frames.within(start_s, end_s)
    if shown.num_frames == 0:
        raise LookupError(f"{frames.uri} has no frames between {start_s} and {end_s} s")
    classes = shown.top_classes(top, rank_by)
    spectrogram = log_mel(audio) if audio is not None and audio.samples.size else None
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    heat_ratio = max(1.6, 0.22 * max(classes.size, 1) + 0.4)
    if audio is not None:
        grid = fig.add_gridspec(3, 2, width_ratios=[60, 1], height_ratios=[1.0, 1.5, heat_ratio],
                                hspace=0.08, wspace=0.02)
        ax_wave = fig.add_subplot(grid[0, 0])
        ax_spec = fig.add_subplot(grid[1, 0], sharex=ax_wave)
        ax_heat = fig.add_subplot(grid[2, 0], sharex=ax_wave)
        _draw_waveform(ax_wave, audio, width_px)
        if spectrogram is not None and spectrogram.size:
            _draw_spectrogram(fig, ax_spec, fig.add_subplot(grid[1, 1]), audio, spectrogram)
        else:
            ax_spec.text(0.5, 0.5, "audio too short for a spectrogram", ha="center", va="center",
                         transform=ax_spec.transAxes)
        for ax in (ax_wave, ax_spec):
            ax.tick_params(labelbottom=False)
        cax_heat = fig.add_subplot(grid[2, 1])
    else:
        grid = fig.add_gridspec(1, 2, width_ratios=[60, 1], wspace=0.02)
        ax_heat, cax_heat = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])
    _draw_heatmap(fig, ax_heat, cax_heat, shown, classes)
    ax_heat.set_xlim(start_s, end_s)
    ax_heat.set_xlabel("time (s)")
    ranking = "peak" if rank_by == "max" else "mean"
    run = f"run={frames.run_id}" if frames.run_id is not None else "no run partition"
    fig.suptitle(f"{os.path.basename(frames.uri.rstrip('/')) or frames.uri}  ·  "
                 f"{frames.model.identity or frames.model.name}  ·  {run}", fontsize=13, y=0.985)
    subtitle = (f"{frames.uri}   {start_s:.2f}-{end_s:.2f} s   top {classes.size} classes by {ranking} "
                f"score over the span, {shown.num_frames} frames (window {frames.window_s:g} s, "
                f"hop {frames.hop_s:g} s)")
    fig.text(0.5, 0.952, subtitle, ha="center", fontsize=9, color="0.3")
    if note:
        fig.text(0.5, 0.93, note, ha="center", fontsize=10, color="tab:red")
    fig.subplots_adjust(left=0.17, right=0.95, top=0.90 if note else 0.92, bottom=0.07)
    return fig, classes


def save_figure(fig: Figure, output: str, dpi: int) -> None:
    """Writes a PNG locally or to any Beam filesystem (``gs://``...)."""
    if storage.is_remote(output):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        storage.write_bytes(output, buffer.getvalue(), mime_type="image/png")
        return
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    fig.savefig(output, format="png", dpi=dpi)


def plot_timeline(out_dir: str, uri: str, output: str, top: int = 10, start_s: float = 0.0,
                  end_s: float | None = None, run_id: str | None = None, rank_by: str = "max",
                  audio_uri: str | None = None, width_px: int = 1600, height_px: int = 1000,
                  dpi: int = 100, channel: int | None = None) -> PlotResult:
    """Reads the frames of ``uri`` (of one ``channel`` of it, with ``tag_audio --channels``), decodes its
    audio span, draws and writes the PNG."""
    if rank_by not in RANK_BY:
        raise ValueError(f"rank_by must be one of {RANK_BY}")
    found = find_output(out_dir)
    frames = load_frame_scores(found, uri, run_id, channel)
    if end_s is None:
        end_s = file_duration(found, frames.run_id, uri) or float(frames.end_s.max())
    if not 0 <= start_s < end_s:
        raise ValueError(f"need 0 <= start_s < end_s, got {start_s} and {end_s}")
    if frames.within(start_s, end_s).num_frames == 0:
        raise LookupError(f"{uri} has no frames between {start_s} and {end_s} s "
                          f"(its frames cover {frames.start_s.min():.2f}-{frames.end_s.max():.2f} s)")
    audio, note = _audio_or_note(audio_uri or uri, frames.model.sample_rate or SPECTROGRAM_RATE,
                                 start_s, end_s, channel)
    fig, classes = render_timeline(frames, audio, start_s, end_s, top, rank_by, note, width_px, height_px,
                                   dpi)
    save_figure(fig, output, dpi)
    return PlotResult(output=output, width_px=width_px, height_px=height_px, run_id=frames.run_id,
                      model_identity=frames.model.identity, start_s=start_s, end_s=end_s,
                      frames_shown=frames.within(start_s, end_s).num_frames,
                      classes=tuple(frames.class_names[i] for i in classes), audio_note=note)


def _audio_or_note(uri: str, sample_rate: int, start_s: float, end_s: float,
                   channel: int | None = None) -> tuple[AudioSpan | None, str | None]:
    if end_s - start_s > MAX_AUDIO_SPAN_S:
        return None, (f"waveform and spectrogram left out: span longer than {MAX_AUDIO_SPAN_S:g} s "
                      "(narrow it with --start_s/--end_s)")
    try:
        audio = load_audio_span(uri, sample_rate, start_s, end_s, channel)
    except Exception as e:  # noqa: BLE001 - any reason the audio is unavailable only drops two panels
        _log.info("audio of %s not drawn: %s", uri, e)
        return None, f"audio not shown: {type(e).__name__}: {e}"[:200]
    if audio.samples.size == 0:
        return None, f"audio not shown: nothing decodable between {start_s:g} and {end_s:g} s"
    return audio, None



