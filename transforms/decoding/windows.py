"""Frame arithmetic and window assembly, exactly as YAMNet frames a waveform.

YAMNet pads a waveform shorter than one window up to one window, and a longer
one at the end up to ``window + hop * k``.  Frame ``k`` covers samples
``[hop * k, hop * k + window)`` and depends on nothing else, so a file can be
cut anywhere on the hop grid and its pieces framed independently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np


def num_frames(num_samples: int, window: int, hop: int) -> int:
    """Frames YAMNet produces for ``num_samples`` samples (1 for an empty or short input)."""
    if num_samples <= window:
        return 1
    return 1 + math.ceil((num_samples - window) / hop)


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """A piece of one file: frames ``[first_frame, end_frame)``; ``end_frame`` None = to EOF."""

    uri: str
    unit_index: int
    num_units: int
    first_frame: int
    end_frame: int | None
    # Units sharing this are read from one block of bytes (a table's row group): spread as one, so one
    # worker decodes them one after another and reads the block once. None: spread on their own.
    read_with: str | None = None


def plan_units(uri: str, expected_samples: int | None, window: int, hop: int,
               unit_frames: int, read_with: str | None = None) -> list[WorkUnit]:
    """Cuts a file into units of ``unit_frames`` frames on the hop grid.

    The last unit is always open-ended, so a duration estimate that is off
    (VBR MP3 headers, truncated files) never loses or duplicates a frame.
    """
    if expected_samples is None or unit_frames <= 0:
        return [WorkUnit(uri, 0, 1, 0, None, read_with)]
    total = num_frames(expected_samples, window, hop)
    count = max(1, math.ceil(total / unit_frames))
    units = []
    for i in range(count):
        first = i * unit_frames
        end = None if i == count - 1 else first + unit_frames
        units.append(WorkUnit(uri, i, count, first, end, read_with))
    return units


class WindowAssembler:
    """Turns a stream of sample chunks into ``[n, window]`` arrays of consecutive frames.

    Memory stays bounded by one chunk plus one window, whatever the stream's
    length.  Samples are counted from the unit's first frame, i.e. sample 0
    of the stream is sample ``hop * first_frame`` of the file.
    """

    def __init__(self, window: int, hop: int, first_frame: int = 0,
                 end_frame: int | None = None, frames_per_chunk: int = 32):
        self.window = window
        self.hop = hop
        self.first_frame = first_frame
        self.end_frame = end_frame
        self.frames_per_chunk = frames_per_chunk
        self._buffer = np.zeros(0, dtype=np.float32)
        self._buffer_start = 0  # stream sample index of _buffer[0]
        self._next_frame = first_frame
        self._samples_seen = 0

    @property
    def samples_seen(self) -> int:
        return self._samples_seen

    @property
    def done(self) -> bool:
        """True once every frame of a bounded unit has been emitted."""
        return self.end_frame is not None and self._next_frame >= self.end_frame

    def push(self, samples: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Adds samples; yields ``(first_frame_index, windows[n, window])`` for complete frames.

        Frames are released in chunks of ``frames_per_chunk`` (fewer only when
        that completes a bounded unit), so downstream batching sees few, large
        elements.
        """
        if samples.size:
            self._samples_seen += samples.size
            self._buffer = np.concatenate([self._buffer, samples.astype(np.float32, copy=False)])
        last = self._end_of_complete_frames()
        while last - self._next_frame >= self.frames_per_chunk or (
                self._next_frame < last and last == self.end_frame):
            yield self._next_frame, self._take(min(self.frames_per_chunk, last - self._next_frame))

    def complete(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every frame whose samples have all arrived, however few (a stream that failed part-way)."""
        last = self._end_of_complete_frames()
        while self._next_frame < last:
            yield self._next_frame, self._take(min(self.frames_per_chunk, last - self._next_frame))

    def _end_of_complete_frames(self) -> int:
        """One past the last frame whose samples have all arrived (bounded by the unit's end)."""
        available = self._buffer_start + self._buffer.size
        complete = 0 if available < self.window else (available - self.window) // self.hop + 1
        last = self.first_frame + complete
        return last if self.end_frame is None else min(last, self.end_frame)

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """End of stream: emits the remaining, zero-padded frames by YAMNet's rule."""
        file_samples = self.hop * self.first_frame + self._samples_seen
        last = num_frames(file_samples, self.window, self.hop)
        if self.end_frame is not None:
            last = min(last, self.end_frame)
        while self._next_frame < last:
            yield self._next_frame, self._take(min(self.frames_per_chunk, last - self._next_frame))

    def _frame_offset(self, frame: int) -> int:
        """Stream sample index where ``frame`` starts."""
        return (frame - self.first_frame) * self.hop

    def _take(self, count: int) -> np.ndarray:
        start = self._frame_offset(self._next_frame) - self._buffer_start
        needed = start + (count - 1) * self.hop + self.window
        if needed > self._buffer.size:  # end of stream: zero padding
            self._buffer = np.concatenate(
                [self._buffer, np.zeros(needed - self._buffer.size, dtype=np.float32)])
        view = np.lib.stride_tricks.as_strided(
            self._buffer[start:],
            shape=(count, self.window),
            strides=(self.hop * self._buffer.itemsize, self._buffer.itemsize),
            writeable=False)
        windows = np.array(view)  # a copy: the buffer is about to shrink
        self._next_frame += count
        keep_from = min(self._frame_offset(self._next_frame) - self._buffer_start, self._buffer.size)
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._buffer_start += keep_from
        return windows


def frames_of(waveform: np.ndarray, window: int, hop: int) -> np.ndarray:
    """All frames of a whole waveform, ``[num_frames, window]`` (for tests and small inputs)."""
    assembler = WindowAssembler(window, hop, frames_per_chunk=1 << 30)
    parts = [w for _, w in assembler.push(waveform)] + [w for _, w in assembler.finish()]
    return np.concatenate(parts) if parts else np.zeros((0, window), np.float32)

