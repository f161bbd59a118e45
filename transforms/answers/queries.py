"""Search queries: a sound file, or a span of one (``clip.wav@12.5-17``), as one embedding vector.

A span of a file the corpus holds takes that file's frames' embeddings (the
frames whose window centre lies in the span; the nearest one when none does):
no model runs.  A whole file, or a span of a file outside the corpus, is decoded
and embedded by the model that made the frames, loaded as tag_audio loaded it
(the run record names its kind, path and options), and refused when its config
id differs from the frames', so a query and the corpus share one embedding
space.  Windows of a whole file that are silent (RMS under -60 dBFS, e.g. the
zero padding of short clips) are left out of its query, or every frame of
silence in the corpus would match it.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

import storage
from schemas.tables import config_id
from storage import StoredFile
from transforms.answers.search import embedding_matrix
from transforms.output.reader import read_parts

_SPAN = re.compile(r"^(\d+(?:\.\d*)?)-(\d+(?:\.\d*)?)$")
SILENT_RMS = 1e-3  # -60 dBFS
# tag_audio's options that choose how a model is read (``ModelSource.options``, see beam_jobs/tag_audio.py)
MODEL_OPTIONS = ("sample_rate", "window_s", "pooling", "embedding_output", "scores_output")


class QueryError(ValueError):
    """A query cannot be used; ``str(e)`` is one line for the user."""


@dataclasses.dataclass(frozen=True)
class Query:
    text: str  # as the user wrote it: the name of its hits
    uri: str
    start_s: float | None = None
    end_s: float | None = None


def parse_query(text: str) -> Query:
    """``path``, or ``path@start_s-end_s`` (the last '@' followed by a span; URIs may hold '@')."""
    text = text.strip()
    head, _, tail = text.rpartition("@")
    span = _SPAN.match(tail) if head else None
    if span is None:
        return Query(text, text)
    start, end = float(span.group(1)), float(span.group(2))
    if not start < end:
        raise QueryError(f"query {text!r}: the span needs start < end")
    return Query(text, head, start, end)


def corpus_names(uri: str) -> list[str]:
    """How frames may name a query's file: as written, or (local) its absolute path."""
    if storage.is_remote(uri):
        return [uri]
    local = os.path.expanduser(storage.local_path(uri))
    return list(dict.fromkeys([uri, local, os.path.abspath(local)]))


@dataclasses.dataclass(frozen=True)
class FramesModel:
    """What made the frames: its metadata (``schemas.tables.read_model_metadata``), the run record's
    model and parameters."""

    metadata: dict
    model: dict
    parameters: dict

    @property
    def config_id(self) -> str:
        return self.metadata.get("config_id", "")

    @property
    def sample_rate(self) -> int:
        return int(self.metadata["sample_rate"])


def frames_of_uri(frame_files: list[str], query: Query) -> np.ndarray | None:
    """Embeddings ``[n, D]`` of the query's frames in the corpus; None when the URI has none."""
    columns = ["frame_index", "start_s", "end_s", "embedding"]
    parts = [StoredFile(p, 0) for p in frame_files]
    tables = [t for t in read_parts(parts, columns, uri=corpus_names(query.uri)) if t.num_rows]
    if not tables:
        return None
    embeddings = np.concatenate([embedding_matrix(t) for t in tables])
    centres = np.concatenate([(t.column("start_s").to_numpy() + t.column("end_s").to_numpy()) / 2
                              for t in tables])
    if query.start_s is None:
        return embeddings
    inside = (centres >= query.start_s) & (centres <= query.end_s)
    if not inside.any():  # a span shorter than the hop: the frame centred nearest to it
        distance = np.abs(centres - (query.start_s + query.end_s) / 2)
        inside = distance == distance.min()
    return embeddings[inside]


def load_frames_model(frames: FramesModel, model_path: str | None = None):
    """The model that made the frames, as tag_audio loaded it; QueryError when it cannot be had or is
    another model."""
    from audio_models.loading import ModelUnavailableError, load_model, load_spec, resolve_source

    kind = frames.model.get("kind") or frames.metadata.get("model")
    path = model_path or frames.model.get("source")
    if not path:
        raise QueryError("the frames' run record does not say where its model is: pass --model_path")
    options = tuple(sorted((name, str(frames.parameters[name])) for name in MODEL_OPTIONS
                           if frames.parameters.get(name) is not None))
    try:
        source = resolve_source(kind, path, hop_s=frames.parameters.get("hop_s"), options=options)
        spec = load_spec(source)
    except ModelUnavailableError as e:
        raise QueryError(f"cannot load the frames' model to embed the queries: {e}") from None
    if config_id(spec) != frames.config_id:
        made_by = f"{frames.metadata.get('model_identity')}, config {frames.config_id}"
        raise QueryError(f"the model at {path} ({spec.identity}, config {config_id(spec)}) did not make "
                         f"these frames ({made_by}): pass --model_path with the frames' model")
    return load_model(source)


def embed_file(model, query: Query) -> np.ndarray:
    """Embeddings ``[n, D]`` of a file (or its span) framed as tag_audio frames it."""
    from audio_models.spec import EMBEDDING
    from transforms.decoding.source import DecodeError
    from transforms.decoding.span import load_audio_span
    from transforms.decoding.stream import decode_all
    from transforms.decoding.windows import frames_of

    spec = model.spec
    try:
        if query.start_s is None:
            samples = decode_all(query.uri, spec.sample_rate)
        else:
            samples = load_audio_span(query.uri, spec.sample_rate, query.start_s, query.end_s).samples
    except (DecodeError, OSError) as e:
        raise QueryError(f"query {query.text!r}: cannot read {query.uri}: {e}") from None
    windows = frames_of(samples.astype(np.float32), spec.window_samples, spec.hop_samples)
    if query.start_s is None:
        sounding = np.sqrt(np.mean(np.square(windows, dtype=np.float64), axis=1)) >= SILENT_RMS
        windows = windows[sounding] if sounding.any() else windows
    return np.asarray(model.predict(windows)[EMBEDDING], np.float32)


def embed_queries(texts: list[str], frame_files: list[str], frames: FramesModel,
                  model_path: str | None = None) -> tuple[list[str], list[np.ndarray]]:
    """(query names, each query's frame embeddings ``[n, D]``); the model is loaded only for queries that
    the corpus does not answer."""
    queries = [parse_query(t) for t in texts]
    if len(set(q.text for q in queries)) != len(queries):
        raise QueryError("the same query is given twice")
    vectors, model = [], None
    for query in queries:
        embeddings = frames_of_uri(frame_files, query) if query.start_s is not None else None
        if embeddings is None:
            model = model or load_frames_model(frames, model_path)
            embeddings = embed_file(model, query)
        if embeddings.size == 0 or not np.isfinite(embeddings).all():
            raise QueryError(f"query {query.text!r} gives no usable embedding")
        vectors.append(embeddings)
    dims = {v.shape[1] for v in vectors}
    expected = int(frames.metadata.get("embedding_dim", 0) or 0)
    if len(dims) > 1 or (expected and dims != {expected}):
        raise QueryError(f"query embeddings have {sorted(dims)} dimensions; the frames have {expected}")
    return [q.text for q in queries], vectors
