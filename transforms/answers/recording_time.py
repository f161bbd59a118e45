"""When a recording started, so events get wall-clock (UTC) times.

Sources, tried in the order the user gives (default: this one):

- ``manifest``: a CSV naming each recording's start (``uri,start_utc``, ISO 8601);
- ``bext``: a Broadcast WAV ``bext`` chunk's origination date and time;
- ``creation_time``: the container's creation time (MP4/M4A/MOV, Matroska ...), as FFmpeg reads it;
- ``file_name``: a time in the file name: ``YYYYMMDD_HHMMSS`` as AudioMoth and Song Meter recorders
  write it, or a strftime pattern of the user's (``REC_%Y-%m-%d_%H.%M.%S``).

Times without a zone (bext, file names, a manifest value without an offset)
are read in ``time_zone`` (default UTC; AudioMoth names are UTC, Song Meter
names local time).  A source that cannot be read (no such chunk, the file is
gone, a name without a time) is skipped; a recording with no usable source has
no UTC times.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import re
import struct
import zoneinfo
from collections.abc import Sequence

import storage
from schemas.answers import TIME_SOURCES

URI_HEADERS = ("uri", "path", "file")
START_HEADERS = ("start_utc", "start", "start_time", "recorded_at")
_DEFAULT_NAME_RE = re.compile(r"(?<!\d)(\d{8})[_T-](\d{6})(?!\d)")
_DIRECTIVES = {"Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{2}", "d": r"\d{2}", "H": r"\d{2}", "I": r"\d{2}",
               "M": r"\d{2}", "S": r"\d{2}", "f": r"\d{1,6}", "j": r"\d{3}", "b": r"[A-Za-z]{3}",
               "p": r"[AaPp][Mm]", "z": r"[+-]\d{4}", "%": "%"}
_BEXT_DATE_AT, _BEXT_TIME_AT = 320, 330  # after Description (256), Originator (32), OriginatorReference (32)


class TimeSettingsError(ValueError):
    """The time options cannot be used; ``str(e)`` is one line for the user."""


@dataclasses.dataclass(frozen=True)
class TimeSettings:
    sources: tuple[str, ...] = TIME_SOURCES
    file_name_pattern: str | None = None  # strftime; None: YYYYMMDD_HHMMSS anywhere in the name
    time_zone: str = "UTC"  # for times that carry no zone
    manifest: str | None = None  # CSV of uri,start_utc

    def check(self) -> None:
        unknown = [s for s in self.sources if s not in TIME_SOURCES]
        if unknown:
            raise TimeSettingsError(f"unknown time source(s) {', '.join(unknown)}: use some of "
                                    f"{', '.join(TIME_SOURCES)}")
        zone_of(self.time_zone)
        if self.file_name_pattern is not None:
            pattern_regex(self.file_name_pattern)


@dataclasses.dataclass(frozen=True)
class RecordingStart:
    utc: dt.datetime  # aware, UTC
    source: str  # one of TIME_SOURCES


def zone_of(name: str) -> dt.tzinfo:
    """'UTC', an offset ('+02:00', '-0500') or an IANA name ('Europe/Paris')."""
    text = name.strip()
    if text.upper() in ("UTC", "Z", "GMT"):
        return dt.UTC
    offset = re.fullmatch(r"([+-])(\d{2}):?(\d{2})", text)
    if offset:
        sign = 1 if offset.group(1) == "+" else -1
        return dt.timezone(sign * dt.timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3))))
    try:
        return zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise TimeSettingsError(f"unknown time zone {name!r}: use UTC, an offset such as +02:00, or a name "
                                "such as Europe/Paris") from None


def _aware(value: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    return (value if value.tzinfo is not None else value.replace(tzinfo=zone)).astimezone(dt.UTC)


def parse_timestamp(text: str, zone: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """ISO 8601 ('2024-05-01T13:45:10Z', '2024-05-01 13:45:10.250+02:00'); None when it is not one."""
    text = text.strip()
    if not text:
        return None
    try:
        return _aware(dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")), zone)
    except ValueError:
        return None


def pattern_regex(pattern: str) -> re.Pattern:
    """A strftime pattern as a regex that finds it inside a file name."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern[i] == "%":
            if i + 1 >= len(pattern) or pattern[i + 1] not in _DIRECTIVES:
                raise TimeSettingsError(f"--file_time_pattern {pattern!r}: unsupported directive "
                                        f"{pattern[i:i + 2]!r} (supported: "
                                        f"{' '.join('%' + d for d in _DIRECTIVES)})")
            parts.append(_DIRECTIVES[pattern[i + 1]])
            i += 2
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def time_from_file_name(uri: str, pattern: str | None = None, zone: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """The time written in a file's name (its last path segment), if it holds one."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    try:
        if pattern is None:
            found = _DEFAULT_NAME_RE.search(name)
            if not found:
                return None
            return _aware(dt.datetime.strptime(found.group(1) + found.group(2), "%Y%m%d%H%M%S"), zone)
        found = pattern_regex(pattern).search(name)
        return _aware(dt.datetime.strptime(found.group(0), pattern), zone) if found else None
    except ValueError:  # digits that are no date (month 13 ...)
        return None


def bext_origination(reader: io.RawIOBase | io.BufferedIOBase) -> tuple[str, str] | None:
    """(OriginationDate, OriginationTime) of a RIFF/RF64 WAV's bext chunk; None without one."""
    head = reader.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return None
    position = 12
    for _ in range(64):  # a WAV has a handful of chunks before its data
        chunk = reader.read(8)
        if len(chunk) < 8:
            return None
        chunk_id, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
        if chunk_id == b"bext":
            body = reader.read(_BEXT_TIME_AT + 8)
            if len(body) < _BEXT_TIME_AT + 8:
                return None
            date = body[_BEXT_DATE_AT:_BEXT_DATE_AT + 10].decode("ascii", "replace")
            time = body[_BEXT_TIME_AT:_BEXT_TIME_AT + 8].decode("ascii", "replace")
            return date, time
        if chunk_id == b"data":
            return None  # bext comes before the audio in every writer we know
        position += 8 + size + (size & 1)
        reader.seek(position)
    return None


def parse_bext_time(date: str, time: str, zone: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """'2024-05-01' + '13:45:10' (EBU Tech 3285 allows '-', '_', ':', ' ', '.' as separators)."""
    digits = re.sub(r"[-_:. /]", "", date.strip("\0 ")) + re.sub(r"[-_:. ]", "", time.strip("\0 "))
    try:
        return _aware(dt.datetime.strptime(digits, "%Y%m%d%H%M%S"), zone) if len(digits) == 14 else None
    except ValueError:
        return None


def bext_start(uri: str, zone: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    if not uri.lower().endswith((".wav", ".wave", ".bwf", ".w64", ".rf64")):
        return None
    with storage.open_read(uri) as f:
        found = bext_origination(f)
    return parse_bext_time(*found, zone) if found else None


def container_creation_time(uri: str) -> dt.datetime | None:
    """The container's ``creation_time`` tag (MP4's is UTC by definition), from its headers only."""
    from transforms.decoding.source import open_container, open_source

    source = open_source(uri)
    try:
        with open_container(source) as container:
            tags = [container.metadata] + [s.metadata for s in container.streams.audio]
            for value in (t.get("creation_time") for t in tags):
                # A date alone (no time) is not a start time; FFmpeg maps bext's time here without a date.
                dated = value and re.match(r"\d{4}-\d{2}-\d{2}[T ]", value)
                parsed = parse_timestamp(value) if dated else None
                if parsed is not None and parsed.year > 1970:  # 1904/1970: an unset MP4 field
                    return parsed
    finally:
        source.close()
    return None


def recording_start(uri: str, settings: TimeSettings, manifest_value: str | None = None
                    ) -> RecordingStart | None:
    """The first source of ``settings.sources`` that knows when ``uri`` started; never raises for a file
    it cannot read."""
    zone = zone_of(settings.time_zone)
    for source in settings.sources:
        try:
            if source == "manifest":
                found = parse_timestamp(manifest_value, zone) if manifest_value else None
            elif source == "bext":
                found = bext_start(uri, zone)
            elif source == "creation_time":
                found = container_creation_time(uri)
            else:
                found = time_from_file_name(uri, settings.file_name_pattern, zone)
        except Exception:  # noqa: BLE001 - a moved, unreadable or odd file only loses this source
            found = None
        if found is not None:
            return RecordingStart(found, source)
    return None


# --- the starts manifest --------------------------------------------------------------------------------

def manifest_columns(header_line: str, source: str) -> tuple[int, int]:
    """(uri column, start column) of a starts manifest's header."""
    header = [cell.strip().lower() for cell in next(csv.reader([header_line]), [])]
    uri = next((header.index(h) for h in URI_HEADERS if h in header), None)
    start = next((header.index(h) for h in START_HEADERS if h in header), None)
    if uri is None or start is None:
        raise TimeSettingsError(f"{source}: the header {header} needs a uri column ({'/'.join(URI_HEADERS)}) "
                                f"and a start column ({'/'.join(START_HEADERS)})")
    return uri, start


def read_manifest_header(path: str) -> tuple[int, int]:
    try:
        with storage.open_read(path) as f:
            first = f.readline().decode("utf-8-sig")
    except Exception as e:  # noqa: BLE001
        raise TimeSettingsError(f"cannot read {path}: {' '.join(str(e).split())[:200]}") from None
    return manifest_columns(first, path)


def manifest_entry(line: str, columns: tuple[int, int]) -> list[tuple[str, str]]:
    """One manifest line -> [(uri, start text)], or [] for a blank or short line."""
    cells = next(csv.reader([line]), [])
    uri_col, start_col = columns
    if len(cells) <= max(uri_col, start_col) or not cells[uri_col].strip():
        return []
    return [(cells[uri_col].strip(), cells[start_col].strip())]


def utc_millis(start: RecordingStart | None, offsets_s: Sequence[float]) -> list[int | None]:
    """Milliseconds since the epoch of ``start + offset`` for each offset (None without a start)."""
    if start is None:
        return [None] * len(offsets_s)
    base = start.utc.timestamp()
    return [int(round((base + offset) * 1000)) for offset in offsets_s]
