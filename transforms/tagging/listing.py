"""From what the user typed (--input, --input_manifest) to one entry per input file.

Everything goes through ``storage``, so local paths and ``gs://``
behave alike.  Expansion runs inside the pipeline: a bucket with millions of
objects is listed by a worker, not held by the driver.
"""

from __future__ import annotations

import dataclasses
import os
import stat

import apache_beam as beam

import storage
from transforms.decoding.source import storage_failure
from transforms.output.publish import UNLISTABLE
from transforms.tagging import progress

# Extensions taken when an --input names a directory (globs and manifest lines are taken as given).
AUDIO_EXTENSIONS = (
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "mp4", "m4v", "mkv", "webm",
    "mov", "avi", "aif", "aiff", "aifc", "au", "snd", "caf", "wma", "amr", "3gp", "mka", "w64",
)

_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One user input: a glob/directory pattern or a literal URI that must exist."""

    pattern: str
    literal: bool  # True: a single URI the user named; it gets a files row even if missing
    extensions: tuple[str, ...] = ()  # non-empty: keep only these (directory inputs)


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """An input file as listed, before anything is decoded."""

    uri: str
    size_bytes: int | None = None
    last_modified: float | None = None
    error: str | None = None  # set when the file cannot be used at all ('not_found: ...')


def is_glob(path: str) -> bool:
    return any(c in _GLOB_CHARS for c in path)


def _is_local_dir(path: str) -> bool:
    return "://" not in path and os.path.isdir(path)


def input_specs(inputs: list[str], extensions: tuple[str, ...] = AUDIO_EXTENSIONS) -> list[InputSpec]:
    """Classifies each --input as a glob, a directory (searched recursively) or a single file.

    Runs before the pipeline: a remote path is asked whether it is a prefix, and
    an error doing so (no credentials, a missing bucket) propagates rather than
    being guessed into a one-file input.
    """
    specs = []
    for raw in inputs:
        path = raw.strip()
        if not path:
            continue
        if is_glob(path):
            specs.append(InputSpec(path, literal=False))
        elif path.endswith("/") or storage.is_dir(path):
            specs.append(InputSpec(path.rstrip("/") + "/**", literal=False, extensions=extensions))
        else:
            specs.append(InputSpec(path, literal=True))
    return specs


class ExpandInput(beam.DoFn):
    """InputSpec -> FileEntry for every file it names; failures become entries with an error."""

    def process(self, spec: InputSpec):
        for entry in self._entries(spec):
            progress.record(files_listed=1)
            yield entry

    def _entries(self, spec: InputSpec):
        if spec.literal:
            yield self._literal(spec.pattern)
            return
        try:
            matched = storage.match(spec.pattern)
        except Exception as e:  # noqa: BLE001 - e.g. missing bucket: reported, never fatal
            yield FileEntry(spec.pattern, error=f"{UNLISTABLE}: cannot list {spec.pattern}: {_short(e)}")
            return
        if not matched:
            beam.metrics.Metrics.counter("inputs", "patterns_matching_nothing").inc()
        for meta in matched:
            if _is_local_dir(meta.path):
                continue  # directories under a glob are containers, not inputs
            if spec.extensions and meta.path.rsplit(".", 1)[-1].lower() not in spec.extensions:
                continue
            yield FileEntry(meta.path, meta.size_bytes, meta.last_modified)

    @staticmethod
    def _literal(uri: str) -> FileEntry:
        if problem := _not_a_uri(uri):
            return FileEntry(uri, error=f"invalid_uri: {problem}")
        if "://" not in uri:
            return _stat_local(uri)
        try:
            matched = storage.match(uri)
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


def _not_a_uri(uri: str) -> str | None:
    """Why a literal input cannot name a file at all (None when it may)."""
    if "\ufffd" in uri:  # what decoding put in place of bytes that are not UTF-8
        return "the input is not UTF-8 text, so not a path or URI"
    if any(ord(c) < 32 or ord(c) == 127 for c in uri):
        return f"the input holds control characters, so is not a path or URI: {uri[:80]!r}"
    return None


def _stat_local(path: str) -> FileEntry:
    """A local URI by os.stat: far cheaper than a filesystem match, which matters for big manifests."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
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
def ListInputFiles(pbegin, specs: list[InputSpec], manifest: str | None = None):  # noqa: N802
    """One FileEntry per distinct input file, listed on workers.

    The manifest is read with Beam's text source, so a list of millions of URIs
    is split across workers instead of passing through the driver.
    """
    sources = [pbegin | "Patterns" >> beam.Create(specs)]
    if manifest:
        sources.append(pbegin
                       | "ReadManifest" >> beam.io.ReadFromText(manifest, coder=beam.coders.BytesCoder())
                       | "ManifestLines" >> beam.FlatMap(manifest_line_to_spec))
    return (
        sources
        | "AllInputs" >> beam.Flatten()
        | "SpreadInputs" >> beam.Reshuffle()
        | "Expand" >> beam.ParDo(ExpandInput())
        | "KeyByUri" >> beam.Map(lambda e: (e.uri, e))
        | "GroupByUri" >> beam.GroupByKey()
        | "OnePerUri" >> beam.MapTuple(lambda _uri, entries: _first(entries))
    )
