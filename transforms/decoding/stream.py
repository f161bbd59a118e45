"""Decoding any audio (or video) file to float32 at a model's sample rate, streaming.

FFmpeg (through PyAV) demuxes and decodes; channels are averaged (or, with
``channels``, the chosen ones kept side by side) and integer samples scaled
to [-1, 1]; soxr converts the rate of all kept channels in one stream, so a
file is decoded once whatever the number of channels taken from it.  Nothing
here holds more than a few decoded frames and one output chunk, whatever the
file's length (up to a few seconds of frames where timestamps jump, see
``_Timeline``).

A work unit that starts inside a file (``start_sample > 0``) produces the same
samples a decode of the whole file would produce from that index on:

* the resampler is restarted on a point where the input and output sample
  grids coincide (a multiple of ``in_rate / gcd`` input samples), far enough
  before the unit for its filter to settle, and its output up to the unit's
  start is dropped;
* the decoder starts earlier still (lossy codecs need preceding packets to
  rebuild their state), its output before the resampler's start is dropped;
* the container is asked to seek only for formats whose timestamps after a
  seek are exact (WAV, AIFF, FLAC, Ogg, MP4...), and where the seek lands is
  checked: by the frames after it, and over the next seconds for a stretch
  of timestamp jitter the seek landed in.  For raw MP3 and ADTS AAC (FFmpeg
  estimates where a seek lands from the bitrate) the packets before the start
  are read but not decoded, which is cheap and exact.  Matroska/WebM
  timestamps count milliseconds, too coarse to place a sample: those files,
  and any whose seek misses, are decoded from the beginning.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fractions
import itertools
import math
from collections.abc import Iterator

import av
import numpy as np
import soxr

from transforms.decoding.source import (
    AudioInfo,
    DecodeError,
    describe_error,
    format_names,
    open_container,
    open_source,
    pick_audio_stream,
    read_audio_info,
)

__all__ = ["AudioInfo", "AudioStream", "DecodeError", "probe", "decode_all", "parse_channels",
           "resolve_channels"]

MIX = "mix"  # every channel averaged into one: the default
EACH = "each"  # every channel on its own

RESAMPLE_QUALITY = "VHQ"  # as fast as 'HQ' here, and a restarted stream matches the whole-file one exactly
RESAMPLER_PREROLL_S = 0.25  # soxr VHQ settles in < 0.05 s of output; margin for low input rates
DECODER_PREROLL_S = 0.5  # MP3 bit reservoir, Vorbis/AAC overlap, Opus's recommended 80 ms, with margin

# Demuxers whose packet timestamps are exact after a seek (sample tables, granule positions,
# frame numbers, byte offsets of PCM).  Format names as FFmpeg reports them, split on ','.
_SEEK_TRUSTED_FORMATS = frozenset(
    {"wav", "w64", "aiff", "caf", "au", "flac", "ogg", "mov", "mp4", "m4a", "matroska", "webm"})
_EXACT_SHORTFALL_S = 0.05  # Opus pre-skip (6.5 ms) and encoder padding stay well under this
_ESTIMATE_SHORTFALL = 0.2  # a length estimated from a bitrate can be this far off
_MAX_CONSECUTIVE_BAD_PACKETS = 200
_MAX_PRIMING_S = 0.2  # encoder delays: Opus 6.5-80 ms, AAC 2112 samples, MP3 1105 (+ a frame)
_ORIGIN_PROBE_PACKETS = 64  # packets decoded at most to find the file's first frame before a seek
_LOOKAHEAD_FRAMES = 2  # frames that vouch for a timestamp before it moves anything
_UNKNOWN_LENGTH_MAX_GAP_S = 60.0  # larger timestamp jumps in a file of unknown length are not gaps
# Timestamp jitter.  A forward jump shorter than FFmpeg's own hard-compensation threshold (aresample's
# min_hard_comp, 0.1 s) is not a gap unless a packet failed before it: Debian 12's FFmpeg 5.1 writes
# Ogg Opus whose granule positions run 5-10 ms ahead for 1-2 s and come back.  A longer clean jump
# is a gap unless the stream gives it back (a later frame back on the running count) in the horizon.
JITTER_MAX_S = 0.1
_JITTER_HORIZON_S = 10.0
# A seek that lands in a stretch of jitter learns it from the stretch's end.  Every seek looks this
# far ahead before its first sample goes out (~2 ms of CPU a unit), so it is shorter.
_LANDING_HORIZON_S = 3.0
# No audio is stored in fewer bytes per second (~6 kbit/s speech codecs): a hole longer than the
# whole file could hold is a bogus timestamp, not missing audio, and is never filled.
MIN_BYTES_PER_SECOND = 750
_INTEGER_SCALE = {"u8": 1 / 128, "s16": 1 / 32768, "s32": 1 / 2**31, "s64": 1 / 2**63}
# soxr's output does not depend on how its input is cut, and one call per ~16k samples costs far
# less than one per packet (a Vorbis packet holds 128-1024 samples).
_RESAMPLE_BLOCK_SAMPLES = 16_384
# Sample formats read straight from a frame's planes (the dtypes PyAV's to_ndarray knows).
_PLANE_DTYPES = {"dbl": np.dtype("f8"), "flt": np.dtype("f4"), "s16": np.dtype("i2"), "s32": np.dtype("i4"),
                 "u8": np.dtype("u1")}


def probe(uri: str) -> AudioInfo:
    """Reads a file's headers (never its whole audio); raises DecodeError."""
    source = open_source(uri)
    try:
        with open_container(source) as container:
            return read_audio_info(container, pick_audio_stream(container, uri), source)
    finally:
        source.close()


def parse_channels(text: str) -> str | tuple[int, ...]:
    """``--channels``: 'mix', 'each' or comma-separated indices ('0,2'); ValueError says what is wrong."""
    text = text.strip().lower()
    if text in (MIX, EACH):
        return text
    try:
        indices = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not mix, each or channel numbers such as 0,2") from None
    if any(index < 0 for index in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"{text!r}: channel numbers count from 0, each at most once")
    return indices


def resolve_channels(selection: str | tuple[int, ...], channels: int) -> tuple[int, ...] | None:
    """The channel indices ``selection`` takes from a file of ``channels`` (None: mixed to mono).

    ``selection`` is ``MIX``, ``EACH`` or a tuple of indices; an index the file does
    not have is a DecodeError of kind ``no_such_channel`` (that file fails, no other).
    """
    if selection == MIX:
        return None
    if selection == EACH:
        return tuple(range(channels))
    missing = [index for index in selection if index >= channels]
    if missing:
        have = "1 channel (0)" if channels == 1 else f"{channels} channels (0-{channels - 1})"
        raise DecodeError("no_such_channel", f"the file has {have}; --channels asks for "
                                             f"{', '.join(map(str, missing))}")
    return tuple(selection)


def frame_to_channels(frame: av.AudioFrame, keep: tuple[int, ...] | None) -> np.ndarray:
    """``frame_to_mono`` with ``keep`` None, else ``[samples, len(keep)]`` float32 of those channels."""
    if keep is None:
        return frame_to_mono(frame)
    kind = frame.format.name.rstrip("p")
    if max(keep) >= frame.layout.nb_channels:  # the channel count changed mid-stream
        raise DecodeError("no_such_channel", f"the stream drops to {frame.layout.nb_channels} channels "
                                             f"part-way; --channels asks for {max(keep)}")
    values = _channel_rows(frame)
    kept = np.empty((frame.samples, len(keep)), np.float32)
    for column, index in enumerate(keep):
        kept[:, column] = values[index]
    if kind == "u8":
        kept -= 128.0
    scale = _INTEGER_SCALE.get(kind, 1.0)
    if scale != 1.0:
        kept *= scale
    return kept


def _channel_rows(frame: av.AudioFrame):
    """The frame's samples as one row (array) per channel, in the frame's own dtype."""
    fmt = frame.format
    kind = fmt.name.rstrip("p")
    channels = frame.layout.nb_channels
    dtype = _PLANE_DTYPES.get(kind)
    if dtype is None:  # anything else: PyAV's own conversion (which names the format it cannot read)
        values = frame.to_ndarray()
        if not fmt.is_planar:
            values = values.reshape(-1, channels).T
    elif fmt.is_planar:  # the planes as they are: to_ndarray would stack them into a new array first
        values = [np.frombuffer(plane, dtype=dtype, count=frame.samples) for plane in frame.planes]
    else:  # packed formats interleave the channels in one plane
        values = np.frombuffer(frame.planes[0], dtype=dtype, count=frame.samples * channels)
        values = values.reshape(-1, channels).T
    return values


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as mono float32: channels averaged, integers scaled to [-1, 1]."""
    kind = frame.format.name.rstrip("p")
    channels = frame.layout.nb_channels
    values = _channel_rows(frame)
    mono = values[0].astype(np.float32)  # summing in place is several times faster than mean()
    for channel in values[1:]:
        mono += channel
    if kind == "u8":
        mono -= 128.0 * channels
    scale = _INTEGER_SCALE.get(kind, 1.0) / channels
    if scale != 1.0:
        mono *= scale
    return mono


class _SeekFailedError(Exception):
    """A seek that cannot be trusted for this file (raised before any sample is yielded)."""

    def __init__(self, rate: int | None = None):
        super().__init__()
        self.rate = rate  # the decoder's real rate, when it differs from the declared one


class _Frame:
    """What the timeline asks of a decoded frame, worked out once.

    ``pts_samples`` is the frame's timestamp in samples of its own rate (None
    without a timestamp); ``tolerance`` the timestamp rounding to ignore: two
    ticks of the time base, and at least 2 ms.
    """

    __slots__ = ("rate", "samples", "pts_samples", "tolerance")

    def __init__(self, rate: int, samples: int, pts_samples: int | None, tolerance: int):
        self.rate = rate
        self.samples = samples
        self.pts_samples = pts_samples
        self.tolerance = tolerance


class _FrameBlock:
    """Consecutive frames of one sample format and channel count, converted together.

    To mono, or with ``keep`` to ``[samples, len(keep)]`` of the kept channels.

    Converting frame by frame costs more Python than FFmpeg spends decoding
    a small (Vorbis, AAC) frame; here FFmpeg's audio FIFO gathers the frames'
    samples and they are converted once per ~16k samples.  ``begin`` is the
    index of the first sample, in the rate of the frames.
    """

    __slots__ = ("_fifo", "_format", "_channels", "_rate", "begin", "samples", "_refused", "yielded", "_keep")

    def __init__(self, keep: tuple[int, ...] | None = None):
        self._keep = keep
        self._fifo: av.AudioFifo | None = None
        self._format = ""
        self._channels = 0
        self._rate = 0
        self.begin = 0
        self.samples = 0
        self._refused: tuple[av.AudioFrame, int] | None = None
        self.yielded = False  # whether any samples have gone out (through here or beside it)

    def take(self, frame: av.AudioFrame, begin: int) -> bool:
        """Adds a frame that starts at ``begin``; False when ``settle`` must run (full, or a new format)."""
        if not self.samples:
            self._start(frame, begin)
        elif frame.format.name != self._format or frame.layout.nb_channels != self._channels:
            self._refused = (frame, begin)
            return False
        frame.pts = None  # the FIFO would check timestamps against its own count: the timeline did
        try:
            self._fifo.write(frame)
        except ValueError:  # a rate or time base the FIFO was not made for
            self._refused = (frame, begin)
            return False
        self.samples += frame.samples
        return self.samples < _RESAMPLE_BLOCK_SAMPLES

    def settle(self, start_index: int) -> Iterator[tuple[int, np.ndarray]]:
        """After ``take`` said False: sends the block, then starts the next one with a refused frame."""
        refused, self._refused = self._refused, None
        yield from self.flush(start_index)
        if refused is not None and not self.take(*refused):
            yield from self.settle(start_index)

    def flush(self, start_index: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(rate, samples)`` of the block from ``start_index`` on; empties the block."""
        if not self.samples:
            return
        frame, begin, rate = self._fifo.read(), self.begin, self._rate
        self._fifo, self.samples = None, 0
        samples = frame_to_channels(frame, self._keep)
        if self._format.rstrip("p") in ("flt", "dbl") and not np.isfinite(samples).all():
            finite = np.isfinite(samples) if samples.ndim == 1 else np.isfinite(samples).all(axis=1)
            first_bad = int(np.argmin(finite))
            for out in AudioStream._trimmed(begin, samples[:first_bad], rate, start_index):
                self.yielded = True  # what precedes is audio
                yield out
            raise DecodeError("non_finite", f"the audio holds NaN or infinite samples from "
                                            f"{(begin + first_bad) / rate:.2f} s")
        for out in AudioStream._trimmed(begin, samples, rate, start_index):
            self.yielded = True
            yield out

    def _start(self, frame: av.AudioFrame, begin: int) -> None:
        self._fifo = av.AudioFifo()
        self._format = frame.format.name
        self._channels = frame.layout.nb_channels
        self._rate = frame.sample_rate
        self.begin = begin


class _Timeline:
    """Where each decoded frame sits, in source-rate samples from the file's first sample.

    Frames normally follow each other and the running count places them.
    Timestamps only matter where they disagree with the count, and only when
    the next frame confirms them: FFmpeg gives an odd Vorbis frame (at a
    block-size switch) a timestamp hundreds of samples off, and the frame
    after it is back in line.  A confirmed jump ahead after a packet that
    failed to decode means audio is missing: the gap is returned so it can be
    filled with silence.  A clean jump ahead is timestamp jitter when it is
    shorter than FFmpeg's hard-compensation threshold (``JITTER_MAX_S``) or
    when the stream gives it back later (``_Lookahead``); longer ones (a
    dropped segment) are gaps.  Jitter, a confirmed jump backwards, or one
    implausibly far ahead re-anchors the timestamps to the count.

    The file's first decoded frame is sample 0 when it sits within an
    encoder's priming of the stream's start: decoders drop the priming
    (Opus pre-skip, AAC and MP3 encoder delay) and move the frame's timestamp
    past it, and containers without an edit list (fragmented MP4) still
    start the stream at the first packet.  That is not missing audio.

    ``start_index`` (where the caller's output starts) and every index are
    counted in the current rate; when the decoder's rate changes mid-stream
    both are converted, so they keep meaning the same instant.
    """

    def __init__(self, rate: int, pts_origin: int, limit_samples: int | None, start_index: int = 0,
                 anchor_first: bool = True, max_gap_s: float = _UNKNOWN_LENGTH_MAX_GAP_S,
                 time_base: fractions.Fraction | None = None):
        self.rate = rate
        self.pts_offset = pts_origin  # a frame with pts p (in samples) starts at p - pts_offset
        self.next_index = 0
        self.start_index = start_index
        self.limit_samples = limit_samples  # gaps are filled only up to the declared length
        self.max_gap_s = max_gap_s  # and never longer than this
        self._anchor_first = anchor_first  # the next frame placed is the file's first decoded frame
        self._tolerances: dict[tuple[int, int, int], int] = {}  # (tb numerator, tb denominator, rate)
        # Frames decoded from packets carry the stream's time base (PyAV stamps each demuxed packet
        # with it): ``in_line`` reads it from here rather than build a Fraction per frame.
        self._num, self._den = (0, 1) if time_base is None else (time_base.numerator, time_base.denominator)
        self._in_line_rate = 0  # the rate ``_in_line_tolerance`` was worked out for
        self._in_line_tolerance = 0

    def describe(self, frame: av.AudioFrame) -> _Frame:
        """The frame with its timestamp in samples and its tolerance (per time base, not per frame)."""
        rate = frame.sample_rate
        time_base = frame.time_base
        num, den = (0, 1) if time_base is None else (time_base.numerator, time_base.denominator)
        key = (num, den, rate)
        tolerance = self._tolerances.get(key)
        if tolerance is None:
            tick = num / den * rate
            tolerance = self._tolerances[key] = max(math.ceil(2 * tick), math.ceil(0.002 * rate))
        pts = frame.pts
        # (pts * num) / den is the correctly rounded quotient, the float of the Fraction pts * time_base
        pts_samples = None if pts is None or not num else round(pts * num / den * rate)
        return _Frame(rate, frame.samples, pts_samples, tolerance)

    def in_line(self, frame: av.AudioFrame, timed: bool) -> int | None:
        """The frame's index when it simply follows the previous one, counted; else None, nothing changed.

        "Simply follows": ``place`` would put it at the running count without
        looking at the frames after it (same rate, not the file's first frame,
        no timestamp or one within the tolerance of the count), so it can be
        placed without them.  ``timed`` is False for frames without a time base.
        """
        rate = self.rate
        if self._anchor_first or frame.sample_rate != rate:
            return None
        begin = self.next_index
        pts = frame.pts
        if timed and pts is not None and self._num:
            if rate != self._in_line_rate:
                tick = self._num / self._den * rate
                self._in_line_tolerance = max(math.ceil(2 * tick), math.ceil(0.002 * rate))
                self._in_line_rate = rate
            # The same arithmetic as ``describe``: the frame's time base is the stream's.
            start = round(pts * self._num / self._den * rate) - self.pts_offset
            if abs(start - begin) > self._in_line_tolerance:
                return None
        self.next_index = begin + frame.samples
        return begin

    def frame_start(self, frame: _Frame) -> int | None:
        """The frame's index according to its timestamp alone."""
        return None if frame.pts_samples is None else frame.pts_samples - self.pts_offset

    def landing(self, frame: _Frame, following: list[_Frame]) -> int | None:
        """Index of the first frame after a seek: where its timestamp and the next frames' agree."""
        claims, offset = [], 0
        for candidate in [frame, *following]:
            start = self.frame_start(candidate)
            if start is not None:
                claims.append(start - offset)
            offset += candidate.samples
        tolerance = frame.tolerance
        for claim in claims:
            if sum(abs(claim - other) <= tolerance for other in claims) >= 2:
                return claim
        return claims[0] if len(claims) == 1 else None

    def anchor_on_first_frame(self, frame: _Frame, following: _Frame | None) -> None:
        """Makes ``frame`` (the file's first decoded one) sample ``next_index``, if it is only primed late."""
        self._anchor_first = False
        if frame.pts_samples is None or frame.rate != self.rate:
            return
        start = frame.pts_samples - self.pts_offset
        if (start != self.next_index and abs(start - self.next_index) <= _MAX_PRIMING_S * self.rate
                and self._confirmed(start, frame, following)):
            self._anchor(frame)

    def place(self, frame: _Frame, following: _Frame | None, damaged: bool = False,
              given_back: bool = False) -> tuple[int, int]:
        """``(start index, samples of silence to insert before it)`` for the next frame.

        ``damaged``: a packet failed to decode since the previous frame, so a
        jump ahead is audio that is missing, however short.  ``given_back``:
        the frames after a long jump ahead return to the running count (see
        ``_Lookahead``), so it is timestamp jitter too.
        """
        if self._anchor_first:
            self.anchor_on_first_frame(frame, following)
        if frame.rate != self.rate:  # the rate changed mid-stream: count in the new rate
            self.next_index = round(self.next_index * frame.rate / self.rate)
            self.start_index = round(self.start_index * frame.rate / self.rate)
            if self.limit_samples is not None:
                self.limit_samples = round(self.limit_samples * frame.rate / self.rate)
            self.rate = frame.rate
            self._anchor(frame)
        pts_samples = frame.pts_samples
        if pts_samples is None:
            gap = 0
        else:
            start = pts_samples - self.pts_offset
            gap = start - self.next_index
            if abs(gap) > frame.tolerance and self._confirmed(start, frame, following):
                if gap < 0 or not self._fillable(start, gap) or given_back or (
                        not damaged and gap < JITTER_MAX_S * self.rate):
                    self._anchor(frame)  # the count goes on: no silence, nothing missing
                    gap = 0
            else:
                gap = 0
        begin = self.next_index + gap
        self.next_index = begin + frame.samples
        return begin, gap

    def land_earlier(self, samples: int) -> None:
        """Moves where a seek landed ``samples`` earlier, its timestamps with it (they ran ahead)."""
        self.next_index -= samples
        self.pts_offset += samples

    def jump_to_watch(self, frame: _Frame, following: _Frame | None, damaged: bool) -> int:
        """Samples of a confirmed clean jump ahead, too long for jitter unless given back; else 0."""
        if damaged or self._anchor_first or frame.rate != self.rate or frame.pts_samples is None:
            return 0
        start = frame.pts_samples - self.pts_offset
        gap = start - self.next_index
        if (gap < JITTER_MAX_S * self.rate or not self._fillable(start, gap)
                or not self._confirmed(start, frame, following)):
            return 0
        return gap

    def off_count(self, index: int, frame: _Frame, following: _Frame | None) -> int:
        """How far the frame's confirmed timestamp puts it from ``index`` of the running count (0: not)."""
        start = self.frame_start(frame)
        if start is None or abs(start - index) <= frame.tolerance:
            return 0
        if not self._confirmed(start, frame, following):
            return 0
        return start - index

    def _confirmed(self, start: int, frame: _Frame, following: _Frame | None) -> bool:
        if following is None or following.rate != frame.rate or following.pts_samples is None:
            return False
        next_start = following.pts_samples - self.pts_offset
        return abs(next_start - start - frame.samples) <= frame.tolerance

    def _fillable(self, start: int, gap: int) -> bool:
        if gap > self.max_gap_s * self.rate:
            return False
        if self.limit_samples is None:
            return gap <= _UNKNOWN_LENGTH_MAX_GAP_S * self.rate
        return start <= self.limit_samples

    def _anchor(self, frame: _Frame) -> None:
        if frame.pts_samples is not None:
            self.pts_offset = frame.pts_samples - self.next_index


class _Lookahead:
    """The first departure from the running count among the frames held after one, looked for ahead.

    ``held[0]`` is the frame being placed, and ``index`` the running-count
    index of the frame after it.  The held frames are looked at as they are
    decoded (each once); the first whose confirmed timestamp leaves the count
    gives the departure (its timestamp less its index; an odd frame that its
    successor does not confirm is not one).  Frames covering
    ``horizon_s`` of audio, a new rate, or the end of the stream without a
    departure give 0.
    """

    __slots__ = ("_index", "_limit", "_looked_at")

    def __init__(self, index: int, rate: int, horizon_s: float):
        self._index = index
        self._limit = index + int(horizon_s * rate)
        self._looked_at = 1

    def departure(self, timeline: _Timeline, held: collections.deque, finished: bool) -> int | None:
        """Samples the first departure is off the count (0: none), or None: not known before more frames."""
        while self._looked_at < len(held):
            if self._index > self._limit:
                return 0
            if self._looked_at + 1 == len(held) and not finished:
                return None  # its successor confirms its timestamp
            frame = timeline.describe(held[self._looked_at][0])
            if frame.rate != timeline.rate:
                return 0
            following = (timeline.describe(held[self._looked_at + 1][0])
                         if self._looked_at + 1 < len(held) else None)
            off = timeline.off_count(self._index, frame, following)
            if off:
                return off
            self._index += frame.samples
            self._looked_at += 1
        return 0 if finished or self._index > self._limit else None


@dataclasses.dataclass
class _Damage:
    """Packets that failed to decode and silence put in their place."""

    bad_packets: int = 0  # reported ones: not those of a seek's pre-roll
    failed_packets: int = 0  # every packet that failed, reported or not
    consecutive_bad: int = 0
    first_at_s: float | None = None
    first_reason: str = ""
    silence_samples: int = 0
    silence_rate: int = 1
    stopped: str | None = None  # why decoding stopped before the end of the file

    def record_bad_packet(self, at_s: float, reason: str) -> None:
        self.bad_packets += 1
        if self.first_at_s is None:
            self.first_at_s, self.first_reason = at_s, reason

    def summary(self) -> str | None:
        if self.stopped:
            return f"decoder_error: stopped because {self.stopped}"
        parts = []
        if self.bad_packets:
            first = f"first at {self.first_at_s:.2f} s: {self.first_reason}"
            parts.append(f"{_count(self.bad_packets, 'damaged packet')} skipped ({first})")
        if self.silence_samples:
            parts.append(f"{self.silence_samples / self.silence_rate:.2f} s of missing audio "
                         "filled with silence")
        return "decoder_error: " + "; ".join(parts) if parts else None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class AudioStream:
    """Float32 samples at ``target_rate``, from target-rate index ``start_sample`` to EOF.

    Iterating yields chunks of ``chunk_samples`` (the last may be shorter):
    1-D mono with ``channels`` ``MIX`` (the default), else ``[n, len(keep)]``
    with one column per channel of ``keep`` (``channels`` ``EACH`` or a tuple of
    indices, resolved against the file's header by ``resolve_channels``).  The
    kept channels go through one resampler, so column ``i`` equals what a mono
    file holding only that channel would give.  ``info`` is ready after construction, which raises DecodeError
    when the file cannot be opened.  Iteration raises DecodeError for NaN/Inf
    samples (once every sample before the first of them has been yielded) and
    for a file that yields no audio at all; a stream that ends
    early or loses packets is not an error: what could be decoded is yielded
    and ``problem`` says what happened.

    Damaged packets are skipped and decoding carries on with the next one;
    where timestamps show that audio is missing (a skipped packet, a dropped
    segment), the gap is filled with silence so every later sample stays at
    its true time.  That yields the most audio and keeps frame timestamps
    right.  Timestamp jitter (a clean jump ahead under 0.1 s, or one the
    stream gives back) is not a gap: the samples go on as decoded.  Only a
    long run of undecodable packets stops the stream.
    """

    def __init__(self, uri: str, target_rate: int, start_sample: int = 0, chunk_samples: int = 160_000,
                 sha256: bool = False, channels: str | tuple[int, ...] = MIX):
        if target_rate <= 0 or start_sample < 0 or chunk_samples <= 0:
            raise ValueError("target_rate and chunk_samples must be positive, start_sample >= 0")
        self.uri = uri
        self.target_rate = target_rate
        self.start_sample = start_sample
        self.chunk_samples = chunk_samples
        self.samples_out = 0
        self.problem: str | None = None
        self.sha256: str | None = None
        self.seek_method = "none"  # how the unit start was reached: 'container', 'skip_packets', 'sequential'

        self._hash = sha256 and start_sample == 0
        self._damage = _Damage()
        self._chunk_generator: Iterator[np.ndarray] | None = None
        self._container: av.container.InputContainer | None = None
        self._source = open_source(uri, hash_bytes=self._hash)
        try:
            self._container = open_container(self._source)
            self.info = read_audio_info(self._container, pick_audio_stream(self._container, uri),
                                        self._source)
            self.keep = resolve_channels(channels, self.info.channels)
        except BaseException:
            self.close()
            raise

    # -- public surface -------------------------------------------------------------------------

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._chunk_generator is not None:
            raise RuntimeError("an AudioStream can be iterated only once")
        self._chunk_generator = self._chunks()
        return self._chunk_generator

    def close(self) -> None:
        """Stops decoding and releases the file; safe to call at any point, and more than once."""
        if self._chunk_generator is not None:
            self._chunk_generator.close()  # a consumer that stopped early leaves it suspended
        self._release()

    def _release(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if not self._source.closed:
            self._source.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def bytes_read(self) -> int:
        """Bytes FFmpeg has read so far (what a unit costs in I/O)."""
        return self._source.bytes_read

    # -- pipeline: decode -> trim to resampler start -> resample -> trim to unit start -> chunk --

    def _chunks(self) -> Iterator[np.ndarray]:
        try:
            yield from self._fixed_size_chunks()
        finally:
            self._release()

    def _fixed_size_chunks(self) -> Iterator[np.ndarray]:
        pending: list[np.ndarray] = []
        pending_samples = 0
        try:
            for block in self._output_blocks():
                pending.append(block)
                pending_samples += len(block)
                if pending_samples < self.chunk_samples:
                    continue
                joined = np.concatenate(pending)
                whole = len(joined) - len(joined) % self.chunk_samples
                for begin in range(0, whole, self.chunk_samples):
                    self.samples_out += self.chunk_samples
                    yield joined[begin:begin + self.chunk_samples]
                pending = [joined[whole:]] if whole < len(joined) else []
                pending_samples = len(joined) - whole
        except DecodeError:  # NaN/Inf: every sample before them is audio, and goes out first
            if pending_samples:
                self.samples_out += pending_samples
                yield np.concatenate(pending)
            raise
        if pending_samples:
            self.samples_out += pending_samples
            yield np.concatenate(pending)
        if self._source.read_error is not None:  # the file ended because reading failed
            raise self._source.read_error
        self._finish()

    def _output_blocks(self) -> Iterator[np.ndarray]:
        """Target-rate blocks from ``start_sample`` on."""
        rate = self.info.sample_rate
        stream = self._container.streams[self.info.stream_index]
        if stream.time_base is not None and stream.time_base * rate <= 1:
            trusted = bool(format_names(self._container) & _SEEK_TRUSTED_FORMATS)
            modes = ("container" if trusted else "skip_packets", "sequential")
        else:  # timestamps coarser than a sample (Matroska's 1 ms) cannot place a seek exactly
            modes = ("sequential",)
        for attempt, mode in enumerate(modes):
            if attempt:
                self._reopen()
                self._damage = _Damage()
            try:
                yield from self._output_blocks_with(rate, mode, may_fail=attempt < len(modes) - 1)
                return
            except _SeekFailedError as failure:  # raised before anything was yielded
                rate = failure.rate or rate

    def _output_blocks_with(self, rate: int, mode: str, may_fail: bool) -> Iterator[np.ndarray]:
        resampler_start = self._resampler_start(rate)
        drop = self.start_sample - resampler_start * self.target_rate // rate
        samples = self._source_samples(resampler_start, rate, mode, may_fail)
        for block in self._resampled(samples):
            if drop > 0:
                cut = min(drop, len(block))
                block, drop = block[cut:], drop - cut
            if len(block):
                yield block

    def _resampler_start(self, rate: int) -> int:
        """Source index where resampling starts: a point both sample grids share, before the unit."""
        if self.start_sample == 0:
            return 0
        if rate == self.target_rate:
            return self.start_sample
        common = math.gcd(rate, self.target_rate)
        out_step, in_step = self.target_rate // common, rate // common
        preroll = int(RESAMPLER_PREROLL_S * self.target_rate)
        return (max(0, self.start_sample - preroll) // out_step) * in_step

    def _resampled(self, blocks: Iterator[tuple[int, np.ndarray]]) -> Iterator[np.ndarray]:
        """Source blocks at ``target_rate``, converted ~16k input samples at a time."""
        resampler: soxr.ResampleStream | None = None
        current_rate = None
        pending: list[np.ndarray] = []  # source samples at current_rate not yet converted
        pending_samples = 0
        try:
            for rate, samples in blocks:
                if rate != current_rate:
                    if pending:
                        yield self._converted(resampler, pending)
                        pending, pending_samples = [], 0
                    if resampler is not None:  # the rate changed mid-stream: flush, start anew
                        yield resampler.resample_chunk(self._silent(0), last=True)
                    resampler = None if rate == self.target_rate else soxr.ResampleStream(
                        rate, self.target_rate, 1 if self.keep is None else len(self.keep), dtype="float32",
                        quality=RESAMPLE_QUALITY)
                    current_rate = rate
                pending.append(samples)
                pending_samples += len(samples)
                if pending_samples >= _RESAMPLE_BLOCK_SAMPLES:
                    yield self._converted(resampler, pending)
                    pending, pending_samples = [], 0
        except _SeekFailedError:
            raise  # the next attempt starts over: what is pending belongs to this one
        except Exception:
            if pending:  # the samples before a failure come out as they would one packet at a time
                yield self._converted(resampler, pending)
            raise
        if pending:
            yield self._converted(resampler, pending)
        if resampler is not None:
            yield resampler.resample_chunk(self._silent(0), last=True)

    def _silent(self, samples: int) -> np.ndarray:
        """Zeros shaped like this stream's samples (1-D mono, else one column per kept channel)."""
        return np.zeros(samples if self.keep is None else (samples, len(self.keep)), np.float32)

    @staticmethod
    def _converted(resampler: soxr.ResampleStream | None, pending: list[np.ndarray]) -> np.ndarray:
        samples = np.concatenate(pending)  # a copy: frames' buffers are not kept alive past this
        return samples if resampler is None else resampler.resample_chunk(samples)

    # -- decoding ----------------------------------------------------------------------------------

    def _reopen(self) -> None:
        self._container.close()
        self._container = open_container(self._source)

    def _source_samples(self, start_index: int, rate: int, mode: str, may_fail: bool
                        ) -> Iterator[tuple[int, np.ndarray]]:
        """``(rate, mono float32)`` blocks of the decoded signal from source index ``start_index`` on.

        ``mode`` says how to get near ``start_index``: 'container' (seek, then
        check where the seek landed), 'skip_packets' (read packets without
        decoding them) or 'sequential' (decode everything, drop what precedes).
        """
        decode_from = start_index - int(DECODER_PREROLL_S * rate)
        if decode_from <= 0:
            mode = "sequential"
        self.seek_method = mode if start_index > 0 else "none"
        origin = self._pts_origin(self._container.streams[self.info.stream_index], rate)
        if mode != "sequential":  # the same sample 0 as a decode from the start: find the first frame
            origin = self._first_frame_origin(rate, origin)
        container = self._container
        stream = container.streams[self.info.stream_index]
        limit = None if self.info.duration_s is None else int((self.info.duration_s + 1.0) * rate)
        timeline = _Timeline(rate, origin, limit, start_index, anchor_first=mode == "sequential",
                             max_gap_s=self.info.size_bytes / MIN_BYTES_PER_SECOND,
                             time_base=stream.time_base)
        if mode == "container":
            self._container_seek(container, stream, decode_from + timeline.pts_offset, rate)
        skip_until = decode_from if mode == "skip_packets" else None
        block = _FrameBlock(self.keep)
        # Frames whose place depends on the frames after them (a landing to check after a seek, a
        # timestamp that disagrees with the count, a new rate), each placed once _LOOKAHEAD_FRAMES
        # successors are decoded (or, after a long clean jump ahead, once ``watch`` has its verdict).
        # Every other frame goes straight into ``block``.
        careful: collections.deque[tuple[av.AudioFrame, bool, bool]] = collections.deque()
        landing_check: _Lookahead | None = None  # after a seek, until the landing is known to be right
        jump: int | None = None  # a long clean jump ahead, until ``watch`` says whether it is given back
        watch: _Lookahead | None = None
        awaiting_landing = mode != "sequential"
        in_line = timeline.in_line
        for item in itertools.chain(self._frames(container, stream, timeline, skip_until), [None]):
            if item is not None:
                if not careful and not awaiting_landing:  # the hot path: one check per frame
                    begin = in_line(item[0], item[1])
                    if begin is not None:
                        if not block.take(item[0], begin):
                            yield from block.settle(timeline.start_index)
                        continue
                careful.append(item)
            while careful:
                frame, timed, damaged = careful[0]
                settled = not awaiting_landing and landing_check is None
                if settled and (begin := in_line(frame, timed)) is not None:
                    careful.popleft()
                    if not block.take(frame, begin):
                        yield from block.settle(timeline.start_index)
                    continue
                if item is not None and len(careful) <= _LOOKAHEAD_FRAMES:
                    break  # wait for its successors
                placed = timeline.describe(frame)
                following = [timeline.describe(f)
                             for f, _, _ in itertools.islice(careful, 1, _LOOKAHEAD_FRAMES + 1)]
                if placed.rate != timeline.rate:
                    yield from block.flush(timeline.start_index)  # in the old rate, before the count moves
                    if may_fail and not block.yielded:
                        raise _SeekFailedError(placed.rate)  # planned on the header rate; the decoder differs
                if awaiting_landing:
                    landed = timeline.landing(placed, following)
                    if landed is None or landed > start_index:
                        if may_fail:
                            raise _SeekFailedError()
                        landed = start_index  # unreachable: the last attempt decodes sequentially
                    timeline.next_index = landed
                    awaiting_landing = False
                    # A seek into a stretch of jitter lands by timestamps that run ahead of the count
                    # a decode from the start keeps: the stretch's end (a short jump back) says by how much.
                    landing_check = _Lookahead(landed + placed.samples, timeline.rate, _LANDING_HORIZON_S)
                # Past this point nothing raises _SeekFailedError: a retry would send these samples again.
                following_one = following[0] if following else None
                if landing_check is not None:
                    off = landing_check.departure(timeline, careful, finished=item is None)
                    if off is None:
                        break  # not known yet
                    if -JITTER_MAX_S * timeline.rate < off < 0:
                        timeline.land_earlier(-off)
                    landing_check = None
                if jump is None and (size := timeline.jump_to_watch(placed, following_one, damaged)):
                    after = timeline.next_index + size + placed.samples
                    jump, watch = size, _Lookahead(after, timeline.rate, _JITTER_HORIZON_S)
                given_back = False
                if jump is not None:
                    off = watch.departure(timeline, careful, finished=item is None)
                    if off is None:
                        break  # the frames held so far neither give the jump back nor pass the horizon
                    given_back, jump = abs(off + jump) <= placed.tolerance, None
                careful.popleft()
                begin, gap = timeline.place(placed, following_one, damaged, given_back)
                if gap:
                    yield from block.flush(timeline.start_index)
                    for out in self._silence(begin, gap, placed.rate, timeline.start_index):
                        block.yielded = True
                        yield out
                if not block.take(frame, begin):
                    yield from block.settle(timeline.start_index)
        yield from block.flush(timeline.start_index)

    def _first_frame_origin(self, rate: int, origin: int) -> int:
        """pts (in samples) that a decode from the file's start makes sample 0; leaves the file reopened."""
        container = self._container
        stream = container.streams[self.info.stream_index]
        timeline = _Timeline(rate, origin, None)
        frames: list[_Frame] = []
        try:
            for count, packet in enumerate(container.demux(stream)):
                if count >= _ORIGIN_PROBE_PACKETS or len(frames) >= 2:
                    break
                if packet.size:
                    with contextlib.suppress(av.error.FFmpegError):
                        frames += [timeline.describe(f) for f in stream.codec_context.decode(packet)]
        except av.error.FFmpegError:
            pass  # unreadable from the start: the stream's own start stands
        if frames:
            timeline.anchor_on_first_frame(frames[0], frames[1] if len(frames) > 1 else None)
        self._reopen()
        return timeline.pts_offset

    def _frames(self, container: av.container.InputContainer, stream: av.AudioStream, timeline: _Timeline,
                skip_until: int | None) -> Iterator[tuple[av.AudioFrame, bool, bool]]:
        """``(frame, timed, damaged)``: decoded frames; packets ending before ``skip_until`` are not decoded.

        ``timed`` is False for the frames flushed at the end, which carry no
        time base; ``damaged`` is True for the first frame after a packet that
        failed to decode (whose audio is missing).
        """
        failed = self._damage.failed_packets
        for packet in self._packets(container, stream, timeline):
            if skip_until is not None:
                if self._packet_ends_before(packet, skip_until, timeline):
                    continue
                skip_until = None  # decoding has begun: every later packet is decoded
            quiet = timeline.next_index < timeline.start_index  # pre-roll errors are normal after a seek
            for frame in self._decode(stream, packet, timeline, quiet):
                yield frame, True, self._damage.failed_packets != failed
                failed = self._damage.failed_packets
            if self._damage.stopped:
                return
        for frame in self._decode(stream, None, timeline, quiet=False):
            yield frame, False, self._damage.failed_packets != failed
            failed = self._damage.failed_packets

    def _silence(self, begin: int, gap: int, rate: int, start_index: int) -> Iterator[tuple[int, np.ndarray]]:
        """Silence for the ``gap`` samples missing before index ``begin``, from ``start_index`` on."""
        if begin > start_index:
            self._damage.silence_samples += min(gap, begin - start_index)
            self._damage.silence_rate = rate
        for at in range(begin - gap, begin, rate):  # one second at a time: a hole can be long
            yield from self._trimmed(at, self._silent(min(rate, begin - at)), rate, start_index)

    @staticmethod
    def _trimmed(begin: int, samples: np.ndarray, rate: int, start_index: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
        end = begin + len(samples)
        if end <= start_index:
            return
        if begin < start_index:
            samples = samples[start_index - begin:]
        yield rate, samples

    @staticmethod
    def _pts_origin(stream: av.AudioStream, rate: int) -> int:
        """pts, in source samples, of the file's first sample."""
        if stream.start_time is None:
            return 0
        return round(float(stream.start_time * stream.time_base) * rate)

    @staticmethod
    def _container_seek(container: av.container.InputContainer, stream: av.AudioStream, pts_samples: int,
                        rate: int) -> None:
        target = int(pts_samples / rate / stream.time_base)
        try:
            container.seek(target, backward=True, any_frame=False, stream=stream)
        except av.error.FFmpegError:
            raise _SeekFailedError() from None

    @staticmethod
    def _packet_ends_before(packet: av.Packet, index: int, timeline: _Timeline) -> bool:
        if packet.pts is None or not packet.duration or packet.time_base is None:
            return False
        end = float((packet.pts + packet.duration) * packet.time_base) * timeline.rate - timeline.pts_offset
        return end < index

    def _packets(self, container: av.container.InputContainer, stream: av.AudioStream,
                 timeline: _Timeline) -> Iterator[av.Packet]:
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as error:
                at_s, reason = timeline.next_index / timeline.rate, describe_error(error)
                self._damage.stopped = f"the file could not be read past {at_s:.2f} s ({reason})"
                return
            if packet.size:  # demux() ends with an empty flush packet; decoding flushes separately
                yield packet

    def _decode(self, stream: av.AudioStream, packet: av.Packet | None, timeline: _Timeline,
                quiet: bool) -> list[av.AudioFrame]:
        damage = self._damage
        try:
            frames = stream.codec_context.decode(packet)
        except av.error.FFmpegError as error:
            if packet is None:
                return []
            damage.consecutive_bad += 1
            damage.failed_packets += 1
            at_s, reason = self._packet_time(packet, timeline), describe_error(error)
            if not quiet:
                damage.record_bad_packet(at_s, reason)
            if damage.consecutive_bad > _MAX_CONSECUTIVE_BAD_PACKETS:
                damage.stopped = f"{damage.consecutive_bad} packets in a row could not be decoded ({reason})"
            return []
        damage.consecutive_bad = 0
        return frames

    @staticmethod
    def _packet_time(packet: av.Packet, timeline: _Timeline) -> float:
        """Seconds from the file's start to a packet (the running count when it has no timestamp)."""
        if packet.pts is None or packet.time_base is None:
            return timeline.next_index / timeline.rate
        return max(0.0, float(packet.pts * packet.time_base) - timeline.pts_offset / timeline.rate)

    # -- the end of the stream -------------------------------------------------------------------

    def _finish(self) -> None:
        damage = self._damage
        decoded_s = (self.start_sample + self.samples_out) / self.target_rate
        declared = self.info.duration_s
        if self.samples_out == 0 and self.start_sample == 0:
            if damage.bad_packets or damage.stopped:
                reason = damage.stopped or f"{damage.bad_packets} packets failed ({damage.first_reason})"
                raise DecodeError("decoder_error", f"no audio could be decoded: {reason}")
            if declared:
                raise DecodeError("no_audio_data",
                                  f"the header declares {declared:.2f} s of audio but the file holds none")
        problems = []
        if declared is not None and declared > decoded_s:
            shortfall = declared - decoded_s
            if (self.info.duration_exact and shortfall > _EXACT_SHORTFALL_S) or (
                    shortfall > max(1.0, _ESTIMATE_SHORTFALL * declared)):
                if self.samples_out == 0 and self.start_sample > 0:
                    start_s = self.start_sample / self.target_rate
                    problems.append(f"truncated: the audio ends before {start_s:.2f} s, "
                                    f"of a declared {declared:.2f} s")
                else:
                    problems.append(f"truncated: decoded {decoded_s:.2f} s of a declared {declared:.2f} s")
        summary = damage.summary()
        if problems and not damage.silence_samples and damage.bad_packets <= 1 and not damage.stopped:
            summary = None  # the partial last packet of a cut file: "truncated" says it all
        if summary is not None:
            problems.append(summary)
        self.problem = "; ".join(problems) or None
        if self._hash:
            self.sha256 = self._source.finish_sha256()


def decode_all(uri: str, target_rate: int, start_sample: int = 0,
               channels: str | tuple[int, ...] = MIX) -> np.ndarray:
    """A whole file (from ``start_sample``) as one array: for tests and short clips only."""
    with AudioStream(uri, target_rate, start_sample=start_sample, channels=channels) as stream:
        chunks = list(stream)
        return np.concatenate(chunks) if chunks else stream._silent(0)
