"""Audio stored in Parquet tables, read in place: every row of an audio column is one input.

The column holds a row's encoded audio (FLAC, Ogg, WAV ... bytes), either as plain binary or as the
struct ``{bytes, path}`` Hugging Face ``datasets`` writes for an Audio feature. A row is named like an
archive member, ``TABLE#ROW`` (``storage.paths``: a '#' after a name ending in ``.parquet``), where
``ROW`` says how to find it again with nothing but the URI:

- ``row=N``: the row at index N of the file (0-based, across its row groups);
- ``COLUMN=VALUE``: the row whose ``COLUMN`` (``tag_audio --id_column``) reads VALUE, as text;
- either prefixed by ``AUDIO:`` when the audio is in a column other than ``audio``
  (``data.parquet#speech:row=3``), so two audio columns of one table are two inputs.

Everything before the first '=' is column names (which hold no ':', '=' or '#'); everything after it is
the value, whatever it holds. ``row`` is that spelling's own: it names no id column.

Listing reads a table's footer (and, with an id column, that column alone, row group by row group);
never the audio. Opening a row reads its row group's audio column alone (``read_row_group``), kept in a
small per-process cache: rows of one row group opened one after another cost one read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator

from storage.archives import ArchiveError, Member
from storage.paths import is_remote, local_path
from storage.reads import SeekableReader, open_read, size_of
from storage.recent import RecentlyUsed, at_most

AUDIO_COLUMN = "audio"  # what Hugging Face datasets calls an Audio feature's column, mostly
ROW = "row"  # ``TABLE#row=N``: a row by its index in the file
_CACHE_BYTES = 192 << 20  # row groups' audio kept per process; the latest is kept whatever its size
_RESERVED = (":", "=", "#")


@dataclasses.dataclass(frozen=True)
class RowName:
    """What ``TABLE#...`` after the '#' says: which column holds the audio and which row it is."""

    audio_column: str
    key_column: str  # ROW: ``value`` is the row's index; else the id column ``value`` is read from
    value: str

    def __str__(self) -> str:
        prefix = "" if self.audio_column == AUDIO_COLUMN else f"{self.audio_column}:"
        return f"{prefix}{self.key_column}={self.value}"


def parse_row_name(text: str) -> RowName | None:
    """The RowName ``text`` spells, or None when it spells none (no '=', an index that is no number)."""
    head, equals, value = text.partition("=")
    if not equals:
        return None
    audio, _, key = head.rpartition(":")
    if not key or (key == ROW and not value.isdigit()):
        return None
    return RowName(audio or AUDIO_COLUMN, key, value)


def column_name_problem(flag: str, name: str) -> str | None:
    """Why ``name`` cannot be given as ``flag`` (--audio_column, --id_column), or None."""
    if not name:
        return f"{flag} needs a column name"
    if any(c in name for c in _RESERVED):
        return f"{flag} {name}: a column name with ':', '=' or '#' cannot be spelled in a row's URI"
    if flag == "--id_column" and name == ROW:
        return (f"--id_column {ROW}: '{ROW}=N' names a row by its index; without --id_column rows are "
                "named so already")
    return None


def columns_problem(table: str, audio_column: str, id_column: str | None) -> str | None:
    """Why the rows of ``table`` cannot be read as asked (a column missing, or of no audio type), in
    one line naming the columns it has; None when they can. Reads the footer alone."""
    schema = _footer(table).schema.to_arrow_schema()
    have = ", ".join(schema.names)
    for flag, name in (("--audio_column", audio_column), ("--id_column", id_column)):
        if name is not None and name not in schema.names:
            return f"{table} has no column {name!r} (give {flag} one of: {have})"
    if problem := _audio_type_problem(schema.field(audio_column).type):
        return f"{table}: column {audio_column!r} {problem} (give --audio_column one of: {have})"
    return None


def _audio_type_problem(kind) -> str | None:
    import pyarrow as pa

    if pa.types.is_struct(kind):
        index = kind.get_field_index("bytes")
        if index >= 0 and _is_binary(kind.field(index).type):
            return None
        return "is a struct without a binary 'bytes' field"
    if _is_binary(kind):
        return None
    return f"holds {kind}, not audio bytes (binary, or a struct of bytes and path)"


def _is_binary(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_fixed_size_binary(kind)


# --- listing -----------------------------------------------------------------------------------------

def list_rows(table: str, audio_column: str = AUDIO_COLUMN, id_column: str | None = None
              ) -> Iterator[Member]:
    """Every row of ``table`` as a Member named by its RowName, in file order; a row's size is its
    table's (what tells a rewritten table's rows from those tagged before). Raises ArchiveError for a
    table whose rows cannot be read as asked (not Parquet, a column missing). With ``id_column`` that
    column is read, one row group at a time: a row with no id, or the id of an earlier row, is named by
    its index with the reason."""
    with _opened(table) as (source, size):
        metadata = _metadata(table, source, size)
    if problem := columns_problem(table, audio_column, id_column):
        raise ArchiveError("no_column", problem)
    if id_column is None:
        for index in range(metadata.num_rows):
            yield Member(str(RowName(audio_column, ROW, str(index))), size,
                         group=_row_group_of(metadata, index)[0])
        return
    # Listing runs on a worker (transforms.tagging.listing), one table at a time: it holds this table's
    # ids (what its rows' URIs and done-set keys are made of anyway) and one row group of the id column,
    # never audio, so its memory does not grow with the audio column.
    seen: dict[str, int] = {}
    for group, index, value in _ids(table, metadata, id_column):
        by_index = str(RowName(audio_column, ROW, str(index)))
        if value is None:
            yield Member(by_index, size, f"no_id: the row's {id_column} is null; it is named by its "
                                         "index", group)
        elif (text := str(value)) in seen:
            yield Member(by_index, size, f"duplicate_id: {id_column}={text} also names row "
                                         f"{seen[text]}; this one is named by its index", group)
        else:
            seen[text] = index
            yield Member(str(RowName(audio_column, id_column, text)), size, group=group)


def _ids(table: str, metadata, column: str) -> Iterator[tuple[int, int, object]]:
    """(row group, row index, id) of every row, one row group of the id column in memory at a time."""
    first = 0
    for group in range(metadata.num_row_groups):
        ids = _read_row_group(table, group, column).to_pylist()
        for index, value in enumerate(ids, start=first):
            yield group, index, value
        first += len(ids)


# --- opening ---------------------------------------------------------------------------------------

def open_row(table: str, name: str) -> SeekableReader:
    """The audio bytes of the row ``name`` (a RowName's text) as a reader. Raises ArchiveError naming
    why there are none (null, empty, not stored in the table, no such row or column)."""
    row = parse_row_name(name)
    if row is None:
        raise ArchiveError("not_found", f"{name!r} names no row (row=N, or COLUMN=ID)")
    with _opened(table) as (source, size):
        metadata = _metadata(table, source, size)
        if row.audio_column not in _column_names(table, size, metadata):
            raise ArchiveError("no_column", f"the table has no column {row.audio_column!r}")
        index = _row_index(table, size, row, metadata.num_rows)
        group, offset = _row_group_of(metadata, index)
        audio = _cached_audio(table, size, group, row.audio_column, source)
    return _RowBytes(_row_bytes(audio, offset))


def _row_index(table: str, size: int, row: RowName, num_rows: int) -> int:
    if row.key_column == ROW:
        index = int(row.value)
    else:
        index = _id_index(table, size, row.key_column).get(row.value, -1)
    if not 0 <= index < num_rows:
        which = row.value if row.key_column == ROW else f"with {row.key_column}={row.value}"
        raise ArchiveError("not_found", f"the table has no row {which}")
    return index


def _row_group_of(metadata, index: int) -> tuple[int, int]:
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        if index < rows:
            return group, index
        index -= rows
    raise ArchiveError("not_found", f"the table has no row {index}")  # pragma: no cover - checked before


def _row_bytes(audio, offset: int):
    import pyarrow as pa

    if pa.types.is_struct(audio.type):
        path = audio.field("path")[offset].as_py() if audio.type.get_field_index("path") >= 0 else None
        value = audio.field("bytes")[offset] if audio[offset].is_valid else None
    else:
        path, value = None, audio[offset]
    if value is None or not value.is_valid:
        if path:
            raise ArchiveError("no_audio", f"the row's audio is not stored in the table, only its path "
                                           f"{path!r}")
        raise ArchiveError("no_audio", "the row's audio is null")
    data = value.as_buffer()
    if data.size == 0:
        raise ArchiveError("empty_file", "the row's audio is empty (0 bytes)")
    return data


class _RowBytes(SeekableReader):
    """A row's audio, read from the row group's buffer without copying it."""

    def __init__(self, data):
        super().__init__(data.size)
        self._view = memoryview(data)

    def _seek_raw(self, position: int) -> None:
        pass

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._position + size)
        data = bytes(self._view[self._position:end])
        self._position = max(self._position, end)
        return data

    def close(self) -> None:
        self._view = memoryview(b"")
        super().close()


# --- what each process keeps ---------------------------------------------------------------------

@contextlib.contextmanager
def _opened(table: str):
    """(what pyarrow reads ``table`` from, its size): a local table by its path (pyarrow's own reads;
    a stat, not an open, when the row group is cached), a remote one through a reader of
    ``storage.reads`` (ranged reads, through transient failures)."""
    if not is_remote(table):
        path = local_path(table)
        yield path, os.stat(path).st_size
        return
    with open_read(table) as reader:
        yield reader, size_of(reader)


def _footer(table: str):
    """``table``'s footer (pyarrow FileMetaData), for its current size."""
    with _opened(table) as (source, size):
        return _metadata(table, source, size)


_METADATA = RecentlyUsed(at_most(16))


def _metadata(table: str, source, size: int):
    """The footer of ``table`` at ``size`` bytes, read once per process (a rewritten table has another
    size, or is read again after other tables pushed it out)."""
    key = (table, size)
    if (known := _METADATA.get(key)) is not None:
        return known
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(source).metadata
    except Exception as error:  # noqa: BLE001 - pyarrow says 'not Parquet' many ways
        raise ArchiveError("not_table", f"not a readable Parquet file: {type(error).__name__}: "
                                        f"{str(error)[:200]}") from None
    _METADATA.put(key, metadata)
    return metadata


@functools.lru_cache(maxsize=16)
def _column_names(_table: str, _size: int, metadata) -> frozenset[str]:
    return frozenset(metadata.schema.to_arrow_schema().names)


def _read_row_group(table: str, group: int, column: str, source=None, size: int | None = None):
    """One column of one row group, as one array: only its bytes are read (ranged reads on gs://)."""
    import pyarrow.parquet as pq

    if source is None:
        with _opened(table) as (source, size):
            return _read_row_group(table, group, column, source, size)
    if not isinstance(source, str):
        source.seek(0)
    parquet = pq.ParquetFile(source, metadata=_metadata(table, source, size))
    # One column of one group: threads would only compete with the decoders around this one.
    return parquet.read_row_group(group, columns=[column], use_threads=False).column(column).combine_chunks()


@functools.lru_cache(maxsize=4)
def _id_index(table: str, _size: int, column: str) -> dict[str, int]:
    """id text -> row index, for opening rows by id: the id column alone, once per process and table.
    The first row of an id wins, as listing names it."""
    index: dict[str, int] = {}
    for _, row, value in _ids(table, _footer(table), column):
        if value is not None:
            index.setdefault(str(value), row)
    return index


_AUDIO = RecentlyUsed(lambda groups: sum(audio.nbytes for audio in groups.values()) > _CACHE_BYTES)


def _cached_audio(table: str, size: int, group: int, column: str, source):
    """The audio column of one row group, kept while it fits in ``_CACHE_BYTES`` with the others: rows
    are opened one at a time, and a row group holds many."""
    key = (table, size, group, column)
    if (known := _AUDIO.get(key)) is not None:
        return known
    audio = _read_row_group(table, group, column, source, size)
    _AUDIO.put(key, audio)
    return audio


def drop_cached() -> None:
    """Forgets every footer, id index and row group this process keeps (benchmarks measure cold reads)."""
    _METADATA.clear()
    _AUDIO.clear()
    _id_index.cache_clear()
    _column_names.cache_clear()
