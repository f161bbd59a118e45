"""Work units: plan each file's pieces on a worker, then decode a piece into model windows.

A long file is cut into units on the model's hop grid (``framing.plan_units``)
so a many-hour recording spreads over workers and never sits whole in memory.
Decoding a unit yields ``WindowChunk``s of consecutive frames; whatever goes
wrong is caught and reported for that file alone.  With ``--channels`` other
than mix a unit is still decoded once: its samples come with one column per
kept channel and each column is framed on its own (one assembler a channel).
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib

import apache_beam as beam
import numpy as np
from apache_beam import pvalue
from apache_beam.transforms.util import ReshufflePerKey

import storage
from transforms.decoding.messages import END, FINAL_KINDS, INFO, SAMPLES, DecodeRequest, decode_messages
from transforms.decoding.pool import DEFAULT_TIMEOUT_S, DecodeSession, resolve_processes, shared_pool
from transforms.decoding.stream import MIN_BYTES_PER_SECOND, MIX, DecodeError, probe
from transforms.decoding.windows import WindowAssembler, WorkUnit, plan_units
from transforms.tagging import malloc_tuning, progress
from transforms.tagging.bundle_outputs import finish_bundle_outputs
from transforms.tagging.file_report import UnitReport
from transforms.tagging.listing import FileEntry

REPORTS = "reports"  # tag of the (uri, report) side output

# A file can only be longer than one unit if it holds more bytes than a unit at
# the lowest bitrate audio is stored at (MIN_BYTES_PER_SECOND).  Smaller files
# are one unit without probing their header: a probe is an extra open (an extra
# request on GCS) that would buy nothing.  For the same reason a header that
# declares more audio than the bytes can hold is believed only that far.


@dataclasses.dataclass
class WindowChunk:
    """Consecutive model windows of one file: frames ``first_frame .. first_frame + n - 1``."""

    uri: str
    first_frame: int
    windows: np.ndarray  # [n, window_samples] float32
    channel: int | None = None  # the file's channel these windows come from; None: all mixed


@dataclasses.dataclass(frozen=True)
class Framing:
    sample_rate: int
    window: int
    hop: int
    unit_frames: int  # frames per work unit; 0 = never cut files


class PlanUnits(beam.DoFn):
    """FileEntry -> WorkUnits (main output) and the entry itself as a report."""

    def __init__(self, framing: Framing):
        self._framing = framing
        unit_seconds = framing.unit_frames * framing.hop / framing.sample_rate
        self._probe_min_bytes = int(unit_seconds * MIN_BYTES_PER_SECOND)

    def process(self, entry: FileEntry):
        yield pvalue.TaggedOutput(REPORTS, (entry.uri, entry))
        if entry.error:
            return
        f = self._framing
        expected = None
        # A table's row is one unit: its size is its table's, and its bytes are in memory once read
        # (storage.tables), so cutting it would cost a probe of every row and buy only parallelism.
        if (f.unit_frames > 0 and (entry.size_bytes is None or entry.size_bytes >= self._probe_min_bytes)
                and not storage.is_table_row(entry.uri)):
            try:
                info = probe(entry.uri)
                if info.duration_s:
                    seconds = min(info.duration_s, info.size_bytes / MIN_BYTES_PER_SECOND)
                    expected = math.ceil(seconds * f.sample_rate)
            except (DecodeError, OSError):
                pass  # decoding the (single) unit meets the problem again and reports it with its reason
        units = plan_units(entry.uri, expected, f.window, f.hop, f.unit_frames, entry.read_with)
        beam.metrics.Metrics.counter("tag_audio", "work_units").inc(len(units))
        progress.record(units_planned=len(units))
        yield from units


def spread_key(unit: WorkUnit) -> int:
    """The key units are spread on: their shared block's (``read_with``; a CRC, the same in every
    process, as ``hash`` is not), else one of their own."""
    return zlib.crc32(unit.read_with.encode()) if unit.read_with is not None else random.getrandbits(32)


@beam.ptransform_fn
def SpreadUnits(units):  # noqa: N802
    """A Reshuffle, except that units read from one block (a table's row group) stay together: one
    worker decodes them in turn and reads the block once, instead of every worker reading it for one
    row (the block is kept per decoder process, storage.tables)."""
    return (units
            | "KeyByBlock" >> beam.Map(lambda unit: (spread_key(unit), unit))
            | "Spread" >> ReshufflePerKey()
            | "Units" >> beam.Values())


class _UnitDecoding:
    """One unit's decode messages turned into WindowChunks and, at the end, its UnitReport."""

    def __init__(self, unit: WorkUnit, framing: Framing, frames_per_chunk: int,
                 channels: str | tuple[int, ...] = MIX):
        self.unit = unit
        self.start_sample = unit.first_frame * framing.hop
        self.report = UnitReport(unit.unit_index, unit.num_units, end_sample=self.start_sample)
        self._framing = framing
        self._frames_per_chunk = frames_per_chunk
        # {channel (None: mixed): assembler}, made once the file says which channels it has
        self.assemblers: dict[int | None, WindowAssembler] = {}
        self.request = DecodeRequest(unit.uri, framing.sample_rate, start_sample=self.start_sample,
                                     max_samples=self._samples_needed(unit, framing), channels=channels)

    def _assembler(self) -> WindowAssembler:
        f, unit = self._framing, self.unit
        return WindowAssembler(f.window, f.hop, unit.first_frame, unit.end_frame, self._frames_per_chunk)

    @property
    def samples_seen(self) -> int:
        return max((a.samples_seen for a in self.assemblers.values()), default=0)

    def _each(self, method: str, samples: np.ndarray | None = None):
        """``assembler.method(...)`` of every channel's assembler, as WindowChunks of that channel."""
        for column, (channel, assembler) in enumerate(self.assemblers.items()):
            if method == "push":
                if assembler.done:
                    continue
                produced = assembler.push(samples if channel is None else samples[:, column])
            else:
                produced = getattr(assembler, method)()
            for first, windows in produced:
                yield WindowChunk(self.unit.uri, first, windows, channel)

    @staticmethod
    def _samples_needed(unit: WorkUnit, framing: Framing) -> int | None:
        """Samples that complete a bounded unit's last window (None: decode to the end of the file)."""
        if unit.end_frame is None:
            return None
        return (unit.end_frame - unit.first_frame - 1) * framing.hop + framing.window

    def handle(self, message: tuple):
        """Yields the WindowChunks a message completes."""
        kind, *body = message
        report = self.report
        if kind == INFO:
            info, kept = body
            report.codec, report.sample_rate, report.channels = info.codec, info.sample_rate, info.channels
            report.kept = kept
            self.assemblers = {channel: self._assembler() for channel in (kept or (None,))}
        elif kind == SAMPLES:
            yield from self._each("push", body[0])
        elif kind == END:
            reached_eof, samples_out, problem = body
            report.end_sample = self.start_sample + samples_out
            if reached_eof:
                report.reached_eof, report.problem = True, problem
                yield from self._each("finish")
        else:  # ERROR: the unit produced nothing usable after this
            report.error, samples_out = body
            if samples_out is not None:
                report.end_sample = self.start_sample + samples_out
            else:  # the decoder process died: count what reached the windows
                report.end_sample = self.start_sample + self.samples_seen
            # Frames whose samples all came before the failure are the audio's own: they are kept.
            yield from self._each("complete")


class DecodeUnits(beam.DoFn):
    """WorkUnit -> WindowChunks (main output) and one UnitReport per unit.

    With ``decode_processes`` > 0 (or < 0: one per core), units decode in a
    pool of decoder processes (``transforms.decoding.pool``) while this thread
    turns their samples into windows; several units are in flight at once and
    their chunks come out in the order they are decoded.  With 0, each unit is
    decoded here, on the bundle's thread.  Both run the same code
    (``decode_protocol.decode_messages``).
    """

    def __init__(self, framing: Framing, frames_per_chunk: int = 32, decode_processes: int = 0,
                 processes_per_machine: int = 1, decode_timeout_s: float = DEFAULT_TIMEOUT_S,
                 io_retry: storage.RetryPolicy | None = None, channels: str | tuple[int, ...] = MIX):
        self._framing = framing
        self._channels = channels
        self._frames_per_chunk = frames_per_chunk
        self._decode_processes = decode_processes
        self._processes_per_machine = processes_per_machine
        self._decode_timeout_s = decode_timeout_s
        self._io_retry = io_retry
        self._audio_seconds = beam.metrics.Metrics.counter("tag_audio", "audio_seconds_decoded")
        self._failures = beam.metrics.Metrics.counter("tag_audio", "units_with_problems")

    def setup(self):
        malloc_tuning.pin_mmap_threshold()
        if self._io_retry is not None:  # before the decoder processes start: they inherit it
            storage.set_retry_policy(self._io_retry)
        # Resolved here, on the worker: its cores are what count, not the driver's.
        processes = resolve_processes(self._decode_processes, self._processes_per_machine)
        self._pool = shared_pool(processes, self._decode_timeout_s) if processes else None
        # Enough units in flight that no decoder waits for the next one.
        self._max_in_flight = 2 * processes
        self._session: DecodeSession | None = None

    def start_bundle(self):
        self._session = DecodeSession(self._pool) if self._pool else None
        self._units: dict[int, _UnitDecoding] = {}
        self._next_tag = 0

    def process(self, unit: WorkUnit):
        decoding = _UnitDecoding(unit, self._framing, self._frames_per_chunk, self._channels)
        if self._session is None:
            for message in decode_messages(decoding.request):
                yield from decoding.handle(message)
            yield self._finished(decoding)
            return
        tag, self._next_tag = self._next_tag, self._next_tag + 1
        self._units[tag] = decoding
        self._session.submit(decoding.request, tag)
        while self._session.in_flight > self._max_in_flight:
            yield from self._next_outputs()

    def finish_bundle(self):
        # Streamed, not collected: the units still in flight can be hours of audio.
        yield from finish_bundle_outputs(self._remaining_outputs())
        progress.flush()

    def _remaining_outputs(self):
        while self._session is not None and self._session.in_flight:
            yield from self._next_outputs()

    def teardown(self):
        if getattr(self, "_session", None) is not None:
            self._session.close()  # a failed bundle: nobody will read what is still coming

    def _next_outputs(self):
        """The outputs of the next message from the decoder processes."""
        tag, message = self._session.next_message()
        decoding = self._units[tag]
        yield from decoding.handle(message)
        if message[0] in FINAL_KINDS:
            del self._units[tag]
            yield self._finished(decoding)

    def _finished(self, decoding: _UnitDecoding) -> pvalue.TaggedOutput:
        report, f = decoding.report, self._framing
        decoded_s = (report.end_sample - decoding.start_sample) / f.sample_rate
        self._audio_seconds.inc(int(decoded_s))
        failed = report.error is not None or report.problem is not None
        if failed:
            self._failures.inc()
        progress.record(units_done=1, failures=int(failed), audio_seconds=decoded_s)
        return pvalue.TaggedOutput(REPORTS, (decoding.unit.uri, report))
