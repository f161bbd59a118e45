"""Archives read in place: the members of a .tar, .tar.gz/.tgz or .zip, local or remote, listed and
opened without extracting anything to disk. (The rows of a Parquet table of audio are members too:
``storage.tables``.)

A member is named ``ARCHIVE#member/path`` (``gs://b/shards/000123.tar#clips/a.flac``). Reading one:

- a plain tar member, and a zip member stored without compression, is a window on the archive's
  own bytes (seekable, ranged reads on an object store);
- a deflated (bzip2, lzma) zip member is inflated as it is read, through the zip's central directory;
- a .tar.gz is one compressed stream: a member is inflated into memory from a cursor each process keeps
  per archive, so members read in archive order cost one pass (``MAX_COMPRESSED_TAR_MEMBER`` bounds it).

What cannot be read is said per member (``ArchiveError.kind``): ``truncated`` (the archive ends inside
it), ``unsafe_path`` (a name with ``..`` or a leading ``/``: named, never opened), ``unreadable`` (an
encrypted zip member), ``too_large`` (a declared size no compression reaches: a zip bomb),
``corrupt_member`` (its bytes fail their CRC or do not inflate).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import struct
import tarfile
import threading
import zipfile
import zlib
from collections.abc import Iterator

from storage.paths import archive_kind, split_member_uri
from storage.reads import SeekableReader, open_read, size_of
from storage.retries import PermanentInputError

MAX_COMPRESSED_TAR_MEMBER = 512 << 20  # a .tar.gz member is inflated into memory: no larger than this
# DEFLATE expands at most ~1032:1; a member declaring more is a bomb or damage, refused by size alone.
_MAX_RATIO = {zipfile.ZIP_DEFLATED: 1032}
_OTHER_MAX_RATIO = 100_000  # bzip2 / lzma can expand runs further; still a bound
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_ZIP_HEADER_SLACK = 1024  # a local extra field longer than the central one: a second fetch, no more


class ArchiveError(PermanentInputError):
    """A member (or an archive) that cannot be read, for a reason retrying will not change."""


@dataclasses.dataclass(frozen=True)
class Member:
    """A regular file inside an archive as listed: its name, declared size, and why it cannot be read
    (``'kind: message'``), if it cannot."""

    name: str
    size: int
    error: str | None = None
    group: int | None = None  # a table row's row group (storage.tables): its rows are read together


def unsafe_name(name: str) -> bool:
    """A name that would leave the archive's folder if extracted: read by nothing here, only named."""
    return name.startswith("/") or ".." in name.replace("\\", "/").split("/")


# --- listing -----------------------------------------------------------------------------------------

def list_members(archive: str, audio_column: str = "audio", id_column: str | None = None) -> Iterator[Member]:
    """Every regular-file member of ``archive``, in archive order. Raises ArchiveError('not_archive' or
    'truncated') for an archive unreadable from its start; a tar cut later yields its complete members,
    then the cut one with a ``truncated`` error, then (a cut header) an ArchiveError. A Parquet table's
    members are its rows (``storage.tables``: ``audio_column`` holds their audio, ``id_column`` names
    them)."""
    kind = archive_kind(archive)
    if kind == "parquet":
        from storage.tables import list_rows  # tables build on this module's members and errors

        yield from list_rows(archive, audio_column, id_column)
        return
    with open_read(archive) as reader:
        size = size_of(reader)
        if kind == "zip":
            yield from _zip_members(reader, size)
        else:
            yield from _tar_members(reader, size, compressed=kind == "tgz", archive=archive)


def _tar_members(reader, archive_size: int, compressed: bool, archive: str = "") -> Iterator[Member]:
    """A plain tar's members are checked against its size (and its index kept, for opening them in this
    process without reading the headers again); a .tar.gz member's bytes are inflated (and dropped) to
    know they are all there, which skipping them would cost anyway."""
    index: dict[str, tuple[int, int]] = {}
    try:
        tar = tarfile.open(fileobj=reader, mode="r|gz" if compressed else "r:")  # noqa: SIM115
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise ArchiveError("not_archive", f"not a readable {'tar.gz' if compressed else 'tar'}: "
                                          f"{_why(error)}") from None
    listed = 0
    while True:
        try:
            info = tar.next()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
            raise ArchiveError("truncated", f"the archive ends inside a member's header after {listed} "
                                            f"members ({_why(error)})") from None
        if info is None:
            if not compressed:
                _remember_tar_index(archive, archive_size, index)
            return
        if not info.isfile():
            continue
        index[info.name] = (info.offset_data, info.size)
        member = _tar_member(info, archive_size, compressed,
                             cut=compressed and not _inflates_whole(tar, info))
        yield member
        listed += 1
        if member.error and member.error.startswith("truncated"):
            return  # nothing follows the cut


def _tar_member(info: tarfile.TarInfo, archive_size: int, compressed: bool, cut: bool) -> Member:
    name = info.name
    if unsafe_name(name):
        return Member(name, info.size, "unsafe_path: the member's name leaves the archive (.. or a leading "
                                       "/); it is not read")
    if cut or (not compressed and info.offset_data + info.size > archive_size):
        have = "" if compressed else f" ({max(0, archive_size - info.offset_data):,} of {info.size:,} bytes)"
        return Member(name, info.size, f"truncated: the archive ends inside this member{have}")
    if compressed and info.size > MAX_COMPRESSED_TAR_MEMBER:
        return Member(name, info.size, f"too_large: a .tar.gz member is inflated in memory, at most "
                                       f"{MAX_COMPRESSED_TAR_MEMBER >> 20} MiB; this one is {info.size:,} "
                                       "bytes (a plain .tar or a .zip is read in place)")
    return Member(name, info.size)


def _inflates_whole(tar: tarfile.TarFile, info: tarfile.TarInfo) -> bool:
    try:
        data = tar.extractfile(info)
        left = info.size
        while left > 0:
            block = data.read(min(left, 1 << 20))
            if not block:
                return False
            left -= len(block)
        return True
    except (tarfile.TarError, EOFError, zlib.error, OSError):
        return False


def _zip_members(reader, archive_size: int) -> Iterator[Member]:
    try:
        infos = zipfile.ZipFile(reader).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
        raise ArchiveError("not_archive", f"not a readable zip: {_why(error)}") from None
    for info in infos:
        if not info.is_dir():
            yield Member(info.filename, info.file_size, _zip_problem(info, archive_size))


def _zip_problem(info: zipfile.ZipInfo, archive_size: int) -> str | None:
    if unsafe_name(info.filename):
        return "unsafe_path: the member's name leaves the archive (.. or a leading /); it is not read"
    if info.flag_bits & 0x1:
        return "unreadable: an encrypted zip member (no password is taken)"
    if info.header_offset + info.compress_size > archive_size:
        return "truncated: the archive ends inside this member"
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            return (f"corrupt_member: stored uncompressed, yet declares {info.file_size:,} bytes in "
                    f"{info.compress_size:,}")
        return None
    ratio = _MAX_RATIO.get(info.compress_type, _OTHER_MAX_RATIO)
    if info.file_size > ratio * max(info.compress_size, 1) + (1 << 16):
        return (f"too_large: declares {info.file_size:,} bytes from {info.compress_size:,} compressed, more "
                "than its compression can expand (a zip bomb or damage); refused before reading")
    return None


def _why(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"


# --- opening ---------------------------------------------------------------------------------------

def open_member(uri: str) -> SeekableReader:
    """A seekable reader of the member ``uri`` names. FileNotFoundError when the archive or the member
    is missing; ArchiveError when the member cannot be read (see the module's kinds)."""
    archive, name = split_member_uri(uri) or (uri, "")
    kind = archive_kind(archive)
    if kind == "parquet":  # a row: its name is a key, never a path (storage.tables)
        from storage.tables import open_row

        return open_row(archive, name)
    if unsafe_name(name):
        raise ArchiveError("unsafe_path", "the member's name leaves the archive; it is not read")
    if kind == "zip":
        return _open_zip_member(archive, name)
    if kind == "tar":
        return _open_tar_member(archive, name)
    return _MemoryMember(_compressed_tar_cursor(archive).read(name))


class _Window(SeekableReader):
    """Bytes ``start .. start + size`` of an opened archive, as a file of their own."""

    def __init__(self, raw, start: int, size: int):
        super().__init__(size)
        self._raw, self._start = raw, start
        raw.seek(start)

    def _seek_raw(self, position: int) -> None:
        self._raw.seek(self._start + min(position, self.size))

    def read(self, size: int = -1) -> bytes:
        left = max(0, self.size - self._position)
        wanted = left if size is None or size < 0 else min(size, left)
        data = self._raw.read(wanted) if wanted else b""
        if len(data) < wanted:
            reached = self._position + len(data)
            raise ArchiveError("truncated", f"the archive ends inside this member ({reached:,} of "
                                            f"{self.size:,} bytes)")
        self._position += len(data)
        return data


class _MemoryMember(SeekableReader):
    def __init__(self, data: bytes):
        super().__init__(len(data))
        self._raw = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        self._position += len(data)
        return data


class _InflatingMember(SeekableReader):
    """A deflated zip member, inflated as it is read from a window on the archive; seeking back
    restarts the inflation. Damage (bad data, a CRC that does not match) is ArchiveError."""

    _BLOCK = 1 << 18

    def __init__(self, compressed: _Window, size: int, crc: int):
        super().__init__(size)
        self._raw, self._crc_expected = compressed, crc
        self._restart()

    def _restart(self) -> None:
        self._raw.seek(0)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = b""  # compressed bytes read but not yet inflated
        self._out = 0  # inflated bytes produced so far
        self._crc = 0

    def _seek_raw(self, position: int) -> None:
        if position < self._out:
            self._restart()
        while self._out < min(position, self.size):
            self._inflate(min(self._BLOCK, position - self._out))

    def read(self, size: int = -1) -> bytes:
        if self._position < self._out:  # a seek back that landed mid-way: replay from the start
            self._seek_raw(self._position)
        wanted = self.size - self._out if size is None or size < 0 else min(size, self.size - self._out)
        data = self._inflate(wanted) if wanted > 0 else b""
        self._position += len(data)
        return data

    def _short(self, reached: int) -> ArchiveError:
        return ArchiveError("corrupt_member", f"the member's compressed bytes end after {reached:,} of "
                                              f"{self.size:,} bytes")

    def _inflate(self, wanted: int) -> bytes:
        parts, produced = [], 0
        try:
            while produced < wanted:
                if not self._pending:
                    self._pending = self._raw.read(self._BLOCK)
                    if not self._pending and not self._inflater.unconsumed_tail:
                        raise self._short(self._out + produced)
                source = self._inflater.unconsumed_tail or self._pending
                chunk = self._inflater.decompress(source, wanted - produced)
                if source is self._pending:
                    self._pending = b""
                parts.append(chunk)
                produced += len(chunk)
                if self._inflater.eof:
                    break
        except zlib.error as error:
            raise ArchiveError("corrupt_member", f"the member's bytes are damaged ({_why(error)})") from None
        data = b"".join(parts)
        self._crc = zlib.crc32(data, self._crc)
        self._out += len(data)
        if self._inflater.eof and self._out < self.size:
            raise self._short(self._out)
        if self._out >= self.size and self._crc != self._crc_expected:
            raise ArchiveError("corrupt_member", f"the member's bytes are damaged (CRC-32 {self._crc:08x}, "
                                                 f"expected {self._crc_expected:08x})")
        return data


def _open_tar_member(archive: str, name: str) -> SeekableReader:
    reader = open_read(archive)
    key = (archive, size_of(reader))
    index = _LISTED_TAR_INDEXES.get(key) or _tar_index(*key)
    offset, size = index.get(name, (None, 0))
    if offset is None:
        reader.close()
        raise FileNotFoundError(f"{archive} has no member {name}")
    _fetch_at_most(reader, size)
    return _Window(reader, offset, size)


def _fetch_at_most(reader, size: int) -> None:
    """A remote archive's reader fetches no more than the member's bytes ahead (storage.reads)."""
    if limit := getattr(reader, "fetch_at_most", None):
        limit(max(1, size))


_LISTED_TAR_INDEXES: dict[tuple[str, int], dict[str, tuple[int, int]]] = {}


def _remember_tar_index(archive: str, size: int, index: dict[str, tuple[int, int]]) -> None:
    while len(_LISTED_TAR_INDEXES) >= 8:
        _LISTED_TAR_INDEXES.pop(next(iter(_LISTED_TAR_INDEXES)))
    _LISTED_TAR_INDEXES[(archive, size)] = index


@functools.lru_cache(maxsize=8)
def _tar_index(archive: str, _size: int) -> dict[str, tuple[int, int]]:
    """name -> (data offset, size) of a plain tar's members, read once per process and archive size
    (headers only)."""
    index = {}
    with open_read(archive) as reader:
        try:
            tar = tarfile.open(fileobj=reader, mode="r:")  # noqa: SIM115 - reader closes it
            for info in iter(tar.next, None):
                if info.isfile():
                    index[info.name] = (info.offset_data, info.size)
        except (tarfile.TarError, EOFError, OSError):
            pass  # a cut archive: the members before the cut can still be read
    return index


def _open_zip_member(archive: str, name: str) -> SeekableReader:
    reader = open_read(archive)
    try:
        size = size_of(reader)
        info = _zip_index(archive, size).get(name)
        if info is None:
            raise FileNotFoundError(f"{archive} has no member {name}")
        if problem := _zip_problem(info, size):
            raise ArchiveError(*problem.split(": ", 1))
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            return _InflatingZipExt(zipfile.ZipFile(reader).open(info), info.file_size)  # bzip2, lzma
        # The local header, its name and extra field (~ the central directory's), then the data.
        _fetch_at_most(reader, _ZIP_LOCAL_HEADER.size + len(info.orig_filename.encode()) + len(info.extra)
                       + info.compress_size + _ZIP_HEADER_SLACK)
        reader.seek(info.header_offset)
        header = _ZIP_LOCAL_HEADER.unpack(reader.read(_ZIP_LOCAL_HEADER.size))
        start = info.header_offset + _ZIP_LOCAL_HEADER.size + header[-2] + header[-1]
        if info.compress_type == zipfile.ZIP_STORED:  # a window on the archive: ranged reads, no copy
            return _Window(reader, start, info.file_size)
        return _InflatingMember(_Window(reader, start, info.compress_size), info.file_size, info.CRC)
    except BaseException:
        reader.close()
        raise


@functools.lru_cache(maxsize=8)
def _zip_index(archive: str, size: int) -> dict[str, zipfile.ZipInfo]:
    """name -> ZipInfo from a zip's central directory, read once per process (and archive size)."""
    with open_read(archive) as reader:
        try:
            return {info.filename: info for info in zipfile.ZipFile(reader).infolist()}
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as error:
            raise ArchiveError("not_archive", f"not a readable zip: {_why(error)}") from None


class _InflatingZipExt(SeekableReader):
    """A zip member compressed other than by DEFLATE, through ``zipfile`` itself."""

    def __init__(self, raw: zipfile.ZipExtFile, size: int):
        super().__init__(size)
        self._raw = raw

    def _seek_raw(self, position: int) -> None:
        self._guarded(lambda: self._raw.seek(position))

    def read(self, size: int = -1) -> bytes:
        data = self._guarded(lambda: self._raw.read(size))
        self._position += len(data)
        return data

    def _guarded(self, action):
        try:
            return action()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
            raise ArchiveError("corrupt_member", f"the member's bytes are damaged ({_why(error)})") from None


class _CompressedTarCursor:
    """One pass through a .tar.gz, kept between members: a member at or after the cursor costs what
    lies between; one before it restarts the pass."""

    def __init__(self, archive: str):
        self._archive = archive
        self._lock = threading.Lock()
        self._reader = None
        self._tar = None

    def read(self, name: str) -> bytes:
        with self._lock:
            for restarted in (False, True):
                if self._tar is None or restarted:
                    self._restart()
                data = self._forward_to(name)
                if data is not None:
                    return data
            raise FileNotFoundError(f"{self._archive} has no member {name}")

    def _restart(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = open_read(self._archive)
        self._tar = tarfile.open(fileobj=self._reader, mode="r|gz")  # noqa: SIM115 - kept open

    def _forward_to(self, name: str) -> bytes | None:
        try:
            for info in iter(self._tar.next, None):
                if info.name == name and info.isfile():
                    if info.size > MAX_COMPRESSED_TAR_MEMBER:
                        raise ArchiveError("too_large", f"{info.size:,} bytes inflated in memory")
                    data = self._tar.extractfile(info).read()
                    if len(data) < info.size:
                        raise ArchiveError("truncated", "the archive ends inside this member")
                    return data
        except (tarfile.TarError, EOFError, zlib.error) as error:
            self._tar = None
            raise ArchiveError("truncated", f"the archive ends inside this member ({_why(error)})") from None
        return None


@functools.lru_cache(maxsize=4)
def _compressed_tar_cursor(archive: str) -> _CompressedTarCursor:
    return _CompressedTarCursor(archive)
