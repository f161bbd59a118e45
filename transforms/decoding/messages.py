"""Decoding one work unit as a stream of messages, and the wire format that carries them.

Decoding a unit is written once, as a generator of messages, so the same code
runs in the worker's own thread and in a decoder process
(``transforms.decoding.worker``).  For each request the messages are, in order:

* ``("info", AudioInfo, kept channels)`` once the file is open (kept channels:
  None when the channels are mixed to mono, else the tuple of indices);
* ``("samples", float32 array)`` any number of times (``[n]`` mono, or
  ``[n, len(kept)]``: one column per kept channel);
* then exactly one of ``("end", reached_eof, samples_out, problem)`` or
  ``("error", "kind: message", samples_out)``.

Between processes each message is an 8-byte little-endian length and a pickle.
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
from collections.abc import Iterator
from typing import BinaryIO

from transforms.decoding.source import describe_failure
from transforms.decoding.stream import MIX, AudioStream

INFO, SAMPLES, END, ERROR = "info", "samples", "end", "error"
FINAL_KINDS = frozenset({END, ERROR})
_HEADER = struct.Struct("<Q")


@dataclasses.dataclass(frozen=True)
class DecodeRequest:
    """Samples of ``uri`` at ``target_rate`` from ``start_sample``; stop after ``max_samples`` (None: EOF)."""

    uri: str
    target_rate: int
    start_sample: int = 0
    max_samples: int | None = None
    chunk_samples: int = 32_768  # ~2 s at 16 kHz: small messages keep a decoder process streaming
    channels: str | tuple[int, ...] = MIX  # 'mix', 'each' or channel indices (stream.resolve_channels)


def decode_messages(request: DecodeRequest) -> Iterator[tuple]:
    """The messages for ``request``; never raises for a bad file (the last message says what failed)."""
    try:
        stream = AudioStream(request.uri, request.target_rate, start_sample=request.start_sample,
                             chunk_samples=request.chunk_samples, channels=request.channels)
    except Exception as error:
        yield ERROR, describe_failure(error), 0
        return
    with stream:
        try:
            yield INFO, stream.info, stream.keep
            for samples in stream:
                yield SAMPLES, samples
                if request.max_samples is not None and stream.samples_out >= request.max_samples:
                    yield END, False, stream.samples_out, None
                    return
        except Exception as error:
            yield ERROR, describe_failure(error), stream.samples_out
            return
        yield END, True, stream.samples_out, stream.problem


def write_message(out: BinaryIO, message: object) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(body)))
    out.write(body)
    out.flush()


def read_message(source: BinaryIO) -> object | None:
    """The next message, or None at the end of the stream (including a stream cut mid-message)."""
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (length,) = _HEADER.unpack(header)
    body = source.read(length)
    if len(body) < length:
        return None
    return pickle.loads(body)
