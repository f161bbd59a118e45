"""From what the user typed (--input, --input_manifest) to one entry per input file.

Everything goes through ``storage``, so local paths and ``gs://``
behave alike.  Expansion runs inside the pipeline: a bucket with millions of
objects is listed by a worker, not held by the driver.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat

import apache_beam as beam
from apache_beam import pvalue

import storage
from transforms.decoding.source import storage_failure
from transforms.output.publish import UNLISTABLE
from transforms.tagging import progress

# Extensions taken when an --input names a directory (globs and manifest lines are taken as given).
AUDIO_EXTENSIONS = (
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "mp4", "m4v", "mkv", "webm",
    "mov", "avi", "aif", "aiff", "aifc", "au", "snd", "caf", "wma", "amr", "3gp", "mka", "w64",
)

SKIPPED_LINKS = "symlinked_folders_skipped"  # tag of the listing's side output, and its plan key
ARCHIVES = "archives"  # listed archives and tables, expanded into their members on workers of their own
TABLE_EXTENSIONS = ("parquet",)  # what --input_table takes from a folder or a pattern


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One user input: a folder, a pattern, or a literal URI that must exist.

    Local paths are canonical (``storage.canonical_uri``), so every spelling of
    one file lists it under one URI."""

    pattern: str
    literal: bool  # True: a single URI the user named; it gets a files row even if missing
    extensions: tuple[str, ...] = ()  # non-empty: keep only these (directory inputs)
    directory: bool = False  # ``pattern`` is a folder (taken literally), searched recursively
    follow_symlinks: bool = False  # local walks enter symlinked folders (once each)


@dataclasses.dataclass(frozen=True)
class TableColumns:
    """Where the audio of tables given as inputs is (--audio_column) and what names their rows
    (--id_column; None: the row's index)."""

    audio: str = storage.AUDIO_COLUMN
    id: str | None = None


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """An input file as listed, before anything is decoded."""

    uri: str
    size_bytes: int | None = None
    last_modified: float | None = None
    error: str | None = None  # set when the file cannot be used at all ('not_found: ...')
    sidecar: str | None = None  # an archive member's sidecar text (--archive_sidecar)
    # Inputs read from one block of bytes (a table's row group) share this: decoded by one worker, one
    # after another, they read the block once (WorkUnit.read_with).
    read_with: str | None = None


def is_glob(path: str) -> bool:
    return storage.has_glob(path)


def input_specs(inputs: list[str], extensions: tuple[str, ...] = AUDIO_EXTENSIONS,
                follow_symlinks: bool = False) -> list[InputSpec]:
    """Classifies each --input as a folder (searched recursively), a single file or a pattern.

    A path that exists is taken literally, even when its name holds ``[ ] * ?``
    (``Field Recordings [2024]/``); only one that does not is a pattern. Runs
    before the pipeline: a remote path is asked whether it is a prefix, and an
    error doing so (no credentials, a missing bucket) propagates rather than
    being guessed into a one-file input.
    """
    specs = []
    for raw in inputs:
        path = raw.strip()
        if not path:
            continue
        uri = storage.canonical_uri(path)
        if is_glob(path) and not storage.exists(uri):
            specs.append(InputSpec(uri, literal=False, follow_symlinks=follow_symlinks))
        elif path.endswith("/") or storage.is_dir(uri):
            specs.append(InputSpec(uri, literal=False, extensions=extensions, directory=True,
                                   follow_symlinks=follow_symlinks))
        else:
            specs.append(InputSpec(uri, literal=True))
    return specs


def table_specs(tables: list[str], follow_symlinks: bool = False) -> list[InputSpec]:
    """Each --input_table as an InputSpec: a table, or a folder or pattern of them (.parquet files only:
    a dataset's folder also holds its README and JSON)."""
    return [spec if spec.literal else dataclasses.replace(spec, extensions=TABLE_EXTENSIONS)
            for spec in input_specs(tables, TABLE_EXTENSIONS, follow_symlinks)]


def first_listed(spec: InputSpec, look_at: int = 1000) -> str | None:
    """The first file a folder or pattern lists (as the job would list it), or None. Stops there: a
    local walk at that file, a bucket after its first ``look_at`` objects (the driver lists no more)."""
    if storage.is_remote(spec.pattern) and not spec.literal:
        pattern = storage.escape_glob(spec.pattern) + "/**" if spec.directory else spec.pattern
        return next((found.path for found in storage.match(pattern, limit=look_at)
                     if _wanted(found.path, spec)), None)
    return next((entry.uri for entry in ExpandInput._entries(spec)
                 if isinstance(entry, FileEntry) and entry.error is None), None)


def _local_pattern_walk(pattern: str, follow_symlinks: bool):
    """WalkItems below the folder a local pattern starts in, keeping those the pattern matches (Beam's
    glob rules: ``*`` within a name, ``**`` across folders, ``?`` and ``[...]`` in any component)."""
    from apache_beam.io.filesystem import FileSystem

    regex = re.compile(FileSystem.translate_pattern(pattern))
    root = os.path.dirname(re.match(r"^[^[*?]*", pattern).group(0)) or "/"
    # Without '**' a match lies exactly as many folders down as the pattern has components: no deeper.
    depth = None if "**" in pattern else pattern.count("/") - root.rstrip("/").count("/") - 1
    for item in storage.walk_local(root, follow_symlinks, depth):
        if item.kind == storage.paths.LINKED_FOLDER or regex.match(item.path):
            yield item


def first_match(spec: InputSpec) -> str | None:
    """The first file a pattern names, or None; errors listing it propagate. Stops at the first."""
    if storage.is_remote(spec.pattern):
        found = storage.match(spec.pattern, limit=1)
        return found[0].path if found else None
    for item in _local_pattern_walk(spec.pattern, spec.follow_symlinks):
        if item.kind != storage.paths.LINKED_FOLDER:
            return item.path
    return None


class ExpandInput(beam.DoFn):
    """InputSpec -> FileEntry for every file it names; failures become entries with an error. A
    symlinked folder not followed goes to the SKIPPED_LINKS output (its path), to be counted."""

    def process(self, spec: InputSpec):
        for entry in self._entries(spec):
            if isinstance(entry, FileEntry):
                progress.record(files_listed=1)
            yield entry

    @staticmethod
    def _entries(spec: InputSpec):
        if spec.literal:
            yield ExpandInput._literal(spec.pattern)
            return
        try:
            if storage.is_remote(spec.pattern):
                yield from ExpandInput._remote(spec)
            else:
                yield from ExpandInput._local(spec)
        except Exception as e:  # noqa: BLE001 - e.g. missing bucket: reported, never fatal
            yield FileEntry(spec.pattern, error=f"{UNLISTABLE}: cannot list {spec.pattern}: {_short(e)}")

    @staticmethod
    def _remote(spec: InputSpec):
        pattern = storage.escape_glob(spec.pattern) + "/**" if spec.directory else spec.pattern
        matched = storage.match(pattern)
        if not matched:
            beam.metrics.Metrics.counter("inputs", "patterns_matching_nothing").inc()
        for meta in matched:
            if _wanted(meta.path, spec):
                yield FileEntry(meta.path, meta.size_bytes, meta.last_modified)

    @staticmethod
    def _local(spec: InputSpec):
        items = (storage.walk_local(spec.pattern, spec.follow_symlinks) if spec.directory
                 else _local_pattern_walk(spec.pattern, spec.follow_symlinks))
        for item in items:
            if item.kind == storage.paths.LINKED_FOLDER:
                yield pvalue.TaggedOutput(SKIPPED_LINKS, item.path)
            elif not _wanted(item.path, spec):
                continue
            elif item.kind == storage.paths.DANGLING_LINK:
                yield FileEntry(item.path, error=f"not_found: {item.reason}")
            else:
                yield FileEntry(item.path, item.stored.size_bytes, item.stored.last_modified)

    @staticmethod
    def _literal(uri: str) -> FileEntry:
        if problem := _not_a_uri(uri):
            return FileEntry(uri, error=f"invalid_uri: {problem}")
        if member := storage.split_member_uri(uri):
            return _member_literal(uri, *member)
        if "://" not in uri:
            return _stat_local(uri)
        try:
            matched = storage.match(storage.escape_glob(uri))  # a name, never a pattern
        except ValueError:  # Beam knows no filesystem for the scheme
            scheme = uri.split("://", 1)[0]
            return FileEntry(uri, error=f"invalid_uri: no filesystem reads {scheme}:// URIs "
                                        "(local paths and gs:// are read)")
        except Exception as e:  # noqa: BLE001
            return FileEntry(uri, error=f"{UNLISTABLE}: {_short(e)}")
        if not matched:
            return FileEntry(uri, error="not_found: no such file")
        meta = matched[0]
        return FileEntry(meta.path, meta.size_bytes, meta.last_modified)


def _member_literal(uri: str, archive: str, name: str) -> FileEntry:
    """One member named as ``ARCHIVE#member`` (a manifest line), or one row as ``TABLE#row=N``: listed
    as the archive's expansion lists it (its own size, or a row's table's; the archive's time), so both
    find the same earlier rows."""
    listed = ExpandInput._literal(archive)
    uri = storage.member_uri(listed.uri, name)
    if listed.error:
        return FileEntry(uri, error=listed.error)
    try:
        with storage.open_read(uri) as reader:
            size = reader.seek(0, 2)
        if storage.is_table_row(uri):  # a row's size is its table's, as the table's listing has it
            size = listed.size_bytes
    except storage.ArchiveError as e:
        return FileEntry(uri, error=str(e))
    except FileNotFoundError:
        return FileEntry(uri, error=f"not_found: {archive} has no member {name}")
    except Exception as e:  # noqa: BLE001
        return FileEntry(uri, error=f"unreadable: {_short(e)}")
    return FileEntry(uri, size, listed.last_modified)


def _not_a_uri(uri: str) -> str | None:
    """Why a literal input cannot name a file at all (None when it may)."""
    if "\ufffd" in uri:  # what decoding put in place of bytes that are not UTF-8
        return "the input is not UTF-8 text, so not a path or URI"
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return f"the input holds control characters, so is not a path or URI: {uri[:80]!r}"
    return None


def _wanted(path: str, spec: InputSpec) -> bool:
    return not spec.extensions or path.rsplit(".", 1)[-1].lower() in spec.extensions


def _stat_local(path: str) -> FileEntry:
    """A local URI by os.stat: far cheaper than a filesystem match, which matters for big manifests.
    A file that is there is named canonically; one that is not, as it was written (what to look for)."""
    try:
        st = os.stat(path)
        path = storage.canonical_uri(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return FileEntry(path, error=f"not_found: dangling symlink to {os.readlink(path)}")
        return FileEntry(path, error="not_found: no such file")
    except OSError as e:
        if storage.is_transient(e):  # the mount failed, not the file: the next run retries it
            return FileEntry(path, error=storage_failure(e))
        return FileEntry(path, error=f"{UNLISTABLE}: {e.strerror or e}")
    if stat.S_ISDIR(st.st_mode):
        return FileEntry(path, error="is_directory: a directory, not a file (pass it with --input)")
    return FileEntry(path, st.st_size, st.st_mtime)


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def _first(entries):
    """Of several listings of one URI, keep one: the one without an error if any."""
    entries = list(entries)
    return min(entries, key=lambda e: e.error is not None)


def is_archive(entry: FileEntry) -> bool:
    """A listed .tar, .tar.gz/.tgz, .zip or .parquet (not a member of one): its members (a table's rows)
    are the inputs."""
    return entry.error is None and bool(storage.archive_kind(entry.uri)) and not storage.split_member_uri(
        entry.uri)


MAX_SIDECAR_BYTES = 1 << 16


class ExpandArchive(beam.DoFn):
    """An archive's FileEntry -> one FileEntry per audio member, ``ARCHIVE#member``, listed in place.

    A member's size is its own; its time is the archive's, so a rewritten archive re-plans its members.
    Members that are not audio (WebDataset sidecars: .json, .cls, .txt ...) are not inputs; with
    ``sidecar`` ('json') an audio member carries its sidecar's text (``key.json`` beside ``key.flac``).
    A member that cannot be read, and an archive that cannot be, get an entry with the reason.

    A Parquet table's members are its rows (``storage.tables``): every row of the audio column that
    ``table`` names is an input, ``TABLE#row=N`` or, with an id column, ``TABLE#ID_COLUMN=ID``; a row's
    size and time are the table's, so a rewritten table re-plans its rows, and the rows of one row group
    share ``read_with``. The ids are read here, on a worker, never by the driver.
    """

    def __init__(self, sidecar: str | None = None, table: TableColumns | None = None):
        self._sidecar = sidecar
        self._table = table or TableColumns()

    def process(self, archive: FileEntry):
        try:
            members = storage.list_members(archive.uri, self._table.audio, self._table.id)
            sidecars: dict[str, storage.Member] = {}
            if self._sidecar:  # held per archive: a sidecar may come before or after its audio
                members = list(members)
                suffix = f".{self._sidecar}"
                sidecars = {m.name: m for m in members if m.name.endswith(suffix) and not m.error}
            for member in members:
                if entry := _member_entry(archive, member):
                    if self._sidecar and not entry.error:
                        text = _sidecar_text(archive.uri, member, sidecars, self._sidecar)
                        entry = dataclasses.replace(entry, sidecar=text)
                    progress.record(files_listed=1)
                    yield entry
        except storage.ArchiveError as e:
            yield FileEntry(archive.uri, archive.size_bytes, archive.last_modified, error=str(e))
        except FileNotFoundError:
            yield FileEntry(archive.uri, error="not_found: the archive is gone")
        except Exception as e:  # noqa: BLE001 - one archive's failure is its row, never the job's
            kind = "transient" if storage.is_transient(e) else "unreadable"
            yield FileEntry(archive.uri, archive.size_bytes, archive.last_modified,
                            error=f"{kind}: cannot read the archive: {_short(e)}")


def _sidecar_text(archive: str, member: storage.Member, sidecars: dict[str, storage.Member],
                  extension: str) -> str | None:
    """The text of ``member``'s sidecar: ``a/key.json`` for ``a/key.flac`` (or WebDataset's key, the
    name up to its first dot, for ``a/key.seg1.flac``); None when there is none or it is too large."""
    folder, _, base = member.name.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    candidates = (f"{member.name.rsplit('.', 1)[0]}.{extension}",
                  f"{prefix}{base.split('.', 1)[0]}.{extension}")
    for name in candidates:
        found = sidecars.get(name)
        if found is not None and found.size <= MAX_SIDECAR_BYTES:
            try:
                return storage.read_bytes(storage.member_uri(archive, name)).decode("utf-8", errors="replace")
            except (OSError, storage.ArchiveError):
                return None
    return None


def _member_entry(archive: FileEntry, member: storage.Member) -> FileEntry | None:
    uri = storage.member_uri(archive.uri, member.name)
    if member.error:
        return FileEntry(uri, member.size, archive.last_modified, error=member.error)
    if storage.archive_kind(archive.uri) == "parquet":  # a row: its name is a key, not a file name
        return FileEntry(uri, member.size, archive.last_modified, read_with=f"{archive.uri}@{member.group}")
    if storage.archive_kind(member.name):
        return FileEntry(uri, member.size, archive.last_modified,
                         error="unsupported: nested archive (give it as an --input of its own)")
    if member.name.rsplit(".", 1)[-1].lower() not in AUDIO_EXTENSIONS:
        return None
    return FileEntry(uri, member.size, archive.last_modified)


def manifest_line_to_spec(line: bytes | str) -> list[InputSpec]:
    """A manifest line is one URI; blank lines and '#' comments are skipped.

    Lines are read as bytes: one that is not UTF-8 gets a files row saying so
    instead of stopping the job.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    uri = line.strip()
    return [] if not uri or uri.startswith("#") else [InputSpec(uri, literal=True)]


@beam.ptransform_fn
def ListInputs(pbegin, specs: list[InputSpec], manifest: str | None = None,  # noqa: N802
               archive_sidecar: str | None = None, table: TableColumns | None = None):
    """(one FileEntry per distinct input file, the distinct symlinked folders not followed), listed on
    workers; archives are expanded into their members (with ``archive_sidecar``, each member's sidecar),
    Parquet tables into their rows (``table`` says which columns).

    The manifest is read with Beam's text source, so a list of millions of URIs
    is split across workers instead of passing through the driver.
    """
    sources = [pbegin | "Patterns" >> beam.Create(specs)]
    if manifest:
        sources.append(pbegin
                       | "ReadManifest" >> beam.io.ReadFromText(manifest, coder=beam.coders.BytesCoder())
                       | "ManifestLines" >> beam.FlatMap(manifest_line_to_spec))
    expanded = (
        sources
        | "AllInputs" >> beam.Flatten()
        | "SpreadInputs" >> beam.Reshuffle()
        | "Expand" >> beam.ParDo(ExpandInput()).with_outputs(SKIPPED_LINKS, main="entries"))
    routed = expanded.entries | "FindArchives" >> beam.FlatMap(
        lambda e: [pvalue.TaggedOutput(ARCHIVES, e) if is_archive(e) else e]).with_outputs(
        ARCHIVES, main="files")
    members = (routed[ARCHIVES]
               | "SpreadArchives" >> beam.Reshuffle()  # a glob of shards: each listed by a worker
               | "ExpandArchives" >> beam.ParDo(ExpandArchive(archive_sidecar, table)))
    entries = (
        (routed.files, members)
        | "FilesAndMembers" >> beam.Flatten()
        | "KeyByUri" >> beam.Map(lambda e: (e.uri, e))
        | "GroupByUri" >> beam.GroupByKey()
        | "OnePerUri" >> beam.MapTuple(lambda _uri, entries: _first(entries)))
    return entries, expanded[SKIPPED_LINKS] | "OncePerLink" >> beam.Distinct()


@beam.ptransform_fn
def ListInputFiles(pbegin, specs: list[InputSpec], manifest: str | None = None):  # noqa: N802
    """One FileEntry per distinct input file (``ListInputs`` without the skipped folders)."""
    entries, _skipped = pbegin | "ListInputs" >> ListInputs(specs, manifest)
    return entries
