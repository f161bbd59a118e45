"""Opening audio files: a URI as a seekable byte source, its container, its audio stream's facts.

Bytes come through ``storage``, so the same code reads a laptop
folder and a bucket (and a decoder process working on local files never
imports Beam).  Errors that retrying will not fix become
:class:`DecodeError` with a short machine-readable kind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import struct

import av

import storage

_AVIO_BUFFER_BYTES = 1 << 18  # FFmpeg's reads through Python: few, large ones
# Sample rates and channel counts a header may declare.  Outside them it is damaged or hostile: a
# 1 Hz header makes every byte 16,000 output samples, and FFmpeg decodes nothing of 65,535 channels.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 1_536_000  # down to old telephony; up to 8x 192 kHz
MAX_CHANNELS = 1024
# Demuxers whose declared length is an exact sample count (PCM WAV: see read_audio_info).
_EXACT_LENGTH_FORMATS = frozenset({"wav", "w64", "aiff", "caf", "au", "flac", "ogg", "mov", "mp4"})


class DecodeError(storage.PermanentInputError):
    """A file that cannot be decoded, for a reason that retrying will not change.

    ``kind`` is short and machine-readable ('not_found', 'is_directory',
    'empty_file', 'not_audio', 'no_audio_stream', 'unreadable', 'bad_header', 'non_finite',
    'no_audio_data', 'decoder_error', and from a decoder process 'decoder_crash' and
    'decoder_timeout'); ``message`` is one sentence for people.
    Transient I/O failures (a dropped connection) are not DecodeErrors: they
    propagate so the runner retries the work.
    """


class SourceFile(storage.SeekableReader):
    """A read-only, seekable view of an opened URI that can hash the bytes it serves.

    FFmpeg reads the file through this object.  With ``hash_bytes=True`` it
    keeps a SHA-256 of the file's prefix read so far: a read that continues the
    hashed prefix extends it, reads elsewhere (a demuxer peeking at the end of
    the file) leave it alone, and :meth:`finish_sha256` reads whatever the
    decoder never asked for.  The digest is of the file's bytes, exactly.
    """

    def __init__(self, uri: str, raw: io.IOBase, size: int, hash_bytes: bool = False):
        super().__init__(size)
        self.name = uri  # FFmpeg uses the name's extension as a hint when probing the format
        self._raw = raw
        self._hash = hashlib.sha256() if hash_bytes else None
        self._hashed_bytes = 0
        self.bytes_read = 0
        self.read_error: Exception | None = None

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._position)
        try:
            data = self._raw.read(size)
        except storage.ArchiveError as error:  # a damaged archive member: its own kind, not retried
            self.read_error = DecodeError(error.kind, error.message)
            raise self.read_error from None
        except Exception as error:
            # FFmpeg turns a failed read into a short file; keep the cause so the caller can
            # re-raise it and the runner retries, instead of recording a truncated file.
            self.read_error = error
            raise
        self._extend_hash(self._position, data)
        self._position += len(data)
        self.bytes_read += len(data)
        return data

    def _extend_hash(self, position: int, data: bytes) -> None:
        if self._hash is None or not (position <= self._hashed_bytes < position + len(data)):
            return
        self._hash.update(memoryview(data)[self._hashed_bytes - position:])
        self._hashed_bytes = position + len(data)

    def finish_sha256(self, block_size: int = 1 << 20) -> str | None:
        """Hex SHA-256 of the whole file, reading any part the decoder skipped; None if not hashing."""
        if self._hash is None:
            return None
        self._raw.seek(self._hashed_bytes)
        while self._hashed_bytes < self.size:
            block = self._raw.read(min(block_size, self.size - self._hashed_bytes))
            if not block:
                break
            self._hash.update(block)
            self._hashed_bytes += len(block)
        self._raw.seek(self._position)
        return self._hash.hexdigest() if self._hashed_bytes == self.size else None


def open_source(uri: str, hash_bytes: bool = False) -> SourceFile:
    """Opens ``uri`` for reading; raises DecodeError for a missing, directory-like or empty file."""
    if uri.endswith("/") or (not storage.is_remote(uri) and os.path.isdir(uri)):
        raise DecodeError("is_directory", "the path is a directory, not a file")
    try:
        raw = storage.open_read(uri)  # closed by SourceFile
    except IsADirectoryError:
        raise DecodeError("is_directory", "the path is a directory, not a file") from None
    except FileNotFoundError:
        raise DecodeError("not_found", "the file does not exist") from None
    except PermissionError as error:
        raise DecodeError("unreadable", f"the file cannot be read: permission denied ({error})") from None
    except storage.ArchiveError as error:  # an archive member that cannot be read (storage.archives)
        raise DecodeError(error.kind, error.message) from None
    try:
        size = raw.seek(0, io.SEEK_END)
        size = raw.tell() if size is None else size
        raw.seek(0)
    except BaseException:
        raw.close()
        raise
    if size == 0:
        raw.close()
        raise DecodeError("empty_file", "the file is empty (0 bytes)")
    return SourceFile(uri, raw, size, hash_bytes=hash_bytes)


@dataclasses.dataclass(frozen=True)
class AudioInfo:
    """What a file's headers say about its audio stream."""

    codec: str  # FFmpeg codec name: 'pcm_s16le', 'flac', 'mp3', 'vorbis', 'aac'...
    sample_rate: int
    channels: int
    duration_s: float | None  # declared by the container/stream; None if unknown
    duration_exact: bool  # True when the declared length is an exact sample count
    size_bytes: int
    container: str = ""  # FFmpeg demuxer name, e.g. 'wav', 'mov,mp4,m4a,3gp,3g2,mj2'
    stream_index: int = 0  # the audio stream decoded, among all of the container's streams

    def expected_samples(self, rate: int | None = None) -> int | None:
        """Declared length in samples at ``rate`` (the source rate by default); None when unknown."""
        if self.duration_s is None:
            return None
        return int(round(self.duration_s * (rate or self.sample_rate)))


def format_names(container: av.container.InputContainer) -> set[str]:
    """The demuxer's names: FFmpeg reports a family, e.g. 'mov,mp4,m4a,3gp,3g2,mj2'."""
    return set(container.format.name.split(","))


def _riff_declared_frames(source: SourceFile) -> int | None:
    """Sample frames a RIFF/RF64 WAV header declares, read from the header itself.

    FFmpeg clamps a WAV's length to the bytes present, which hides both a
    truncated file and a header that promises data that never follows.
    The file position is restored: FFmpeg may be reading through ``source``.
    """
    position = source.tell()
    try:
        return _riff_data_frames(source)
    finally:
        source.seek(position)


def _riff_data_frames(source: SourceFile) -> int | None:
    source.seek(0)
    head = source.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        return None
    block_align, data_bytes, ds64_data_bytes = None, None, None
    for _ in range(64):  # a WAV has a handful of chunks; stop on anything unreasonable
        chunk = source.read(8)
        if len(chunk) < 8:
            break
        chunk_id, chunk_size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"data":
            data_bytes = chunk_size
            break
        body = source.read(min(chunk_size, 64))
        if chunk_id == b"fmt " and len(body) >= 14:
            block_align = struct.unpack("<H", body[12:14])[0]
        elif chunk_id == b"ds64" and len(body) >= 16:
            ds64_data_bytes = struct.unpack("<Q", body[8:16])[0]
        source.seek(source.tell() - len(body) + chunk_size + (chunk_size & 1))
    if data_bytes == 0xFFFFFFFF and ds64_data_bytes is not None:
        data_bytes = ds64_data_bytes
    if not block_align or data_bytes is None or data_bytes == 0xFFFFFFFF:
        return None  # no data chunk, or a streaming writer that never filled in the size
    return data_bytes // block_align


def _short_format_name(container: av.container.InputContainer, uri: str) -> str:
    """'mp4' rather than 'mov,mp4,m4a,3gp,3g2,mj2' when the file's extension names the member."""
    names = container.format.name.split(",")
    extension = uri.rsplit(".", 1)[-1].lower()
    return extension if extension in names else names[0]


def pick_audio_stream(container: av.container.InputContainer, uri: str) -> av.AudioStream:
    """FFmpeg's best audio stream (the first one when it cannot tell); DecodeError when none."""
    if container.streams.audio:
        try:
            return container.streams.best("audio") or container.streams.audio[0]
        except (ValueError, av.error.FFmpegError):
            return container.streams.audio[0]
    kinds = sorted({stream.type for stream in container.streams})
    fmt = _short_format_name(container, uri)
    listed = " and ".join(kinds)
    if "video" in kinds:
        raise DecodeError("no_audio_stream", f"no audio stream (container {fmt} has only {listed})")
    what = f"only {listed} streams" if kinds else "no streams"
    raise DecodeError("not_audio", f"not an audio file (FFmpeg reads it as {fmt} with {what})")


def describe_failure(error: Exception) -> str:
    """``'kind: message'`` for a unit that could not be decoded; any exception, one line.

    A DecodeError says it itself; anything else is a decoder bug or an I/O
    failure that must cost one file, never the job.
    """
    if isinstance(error, storage.PermanentInputError):
        return str(error)
    if storage.is_transient(error):
        return storage_failure(error)
    return f"decoder_error: {type(error).__name__}: {str(error)[:300]}"


def storage_failure(error: BaseException) -> str:
    """The error of a file that storage failed to serve (a reset, a 503, a mount's EIO): kind
    'transient', which the next run retries (transforms.tagging.done_set)."""
    return f"transient: {storage.describe_fault(error)}; the next run retries this file"


def describe_error(error: Exception) -> str:
    """An FFmpeg error without the file name PyAV appends."""
    if isinstance(error, av.error.FFmpegError):
        return error.strerror or str(error)
    return str(error)


def open_container(source: SourceFile) -> av.container.InputContainer:
    """FFmpeg's demuxer over ``source``; DecodeError when FFmpeg does not recognise the bytes."""
    source.seek(0)
    try:
        return av.open(source, mode="r", buffer_size=_AVIO_BUFFER_BYTES)
    except av.error.FFmpegError as error:
        if source.read_error is not None:  # an I/O failure, not bad data: let the runner retry
            raise source.read_error from error
        raise _open_error(error) from None


def _open_error(error: av.error.FFmpegError) -> DecodeError:
    if isinstance(error, av.error.InvalidDataError):
        return DecodeError("not_audio", "not an audio or video file FFmpeg recognises")
    if isinstance(error, av.error.PermissionError):
        return DecodeError("unreadable", f"the file cannot be read: {describe_error(error)}")
    return DecodeError("unreadable", f"FFmpeg cannot open the file: {describe_error(error)}")


def read_audio_info(container: av.container.InputContainer, stream: av.AudioStream,
                    source: SourceFile) -> AudioInfo:
    """The facts a container's headers give about ``stream``."""
    context = stream.codec_context
    if context is None or not context.sample_rate:
        raise DecodeError("unreadable", "this FFmpeg build has no decoder for the file's audio codec")
    codec = context.codec.canonical_name
    rate = context.sample_rate
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise DecodeError("bad_header", f"the header declares a sample rate of {rate:,} Hz "
                                        f"(audio files have {MIN_SAMPLE_RATE:,} to {MAX_SAMPLE_RATE:,} Hz)")
    if context.channels <= 0:  # FFmpeg reports 0 for a count it cannot lay out (65,535, say)
        raise DecodeError("bad_header", "the header declares a channel count FFmpeg cannot decode")
    if context.channels > MAX_CHANNELS:
        raise DecodeError("bad_header", f"the header declares {context.channels:,} channels "
                                        f"(at most {MAX_CHANNELS:,} are read)")
    formats = format_names(container)
    duration_s: float | None = None
    if stream.duration is not None and stream.duration > 0:
        duration_s = float(stream.duration * stream.time_base)
    elif container.duration is not None and container.duration > 0:
        duration_s = container.duration / av.time_base
    exact = bool(formats & _EXACT_LENGTH_FORMATS) and stream.duration is not None
    if "wav" in formats and codec.startswith("pcm_"):
        declared = _riff_declared_frames(source)
        if declared is not None:
            duration_s, exact = declared / rate, True
    elif "wav" in formats:
        exact = False  # ADPCM & co: FFmpeg's length is derived, not declared
    return AudioInfo(codec=codec, sample_rate=rate, channels=context.channels, duration_s=duration_s,
                     duration_exact=exact, size_bytes=source.size, container=container.format.name,
                     stream_index=stream.index)
