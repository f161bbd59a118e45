"""Search by example, the pure part: cosine similarity of frames to queries, and an exact top k.

A query is made of its frames' embeddings, pooled one of two ways: ``mean``
(one unit vector, the mean direction of its frames; a frame scores its cosine
with it) or ``max`` (a frame scores its best cosine with any of the query's
frames, so a copy of any part of the query scores as high as that part).
``Candidates`` holds some
hits of one query; ``best`` picks the top k of any set of them exactly, so the
top k of the whole corpus is the top k of the per-shard top ks (Beam's
combiner, or the in-process loop over record batches).

With ``max_per_file`` > 0 at most that many frames of one file are kept: the
best ones (a 5-second clip does not fill a page with its ten frames).  That
stays exact under sharding: a file's best frames overall are among its best
frames in every shard that holds them.  Ties in score are broken by URI, then
frame index, so the answer does not depend on how the frames were split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEARCH_COLUMNS = ("uri", "channel", "frame_index", "start_s", "end_s", "embedding")  # channel: may be absent


@dataclasses.dataclass(frozen=True)
class Candidates:
    """Hits of one query, best first once ``best`` made them."""

    score: np.ndarray  # float32
    uri: np.ndarray  # object (str)
    frame_index: np.ndarray  # int64
    start_s: np.ndarray  # float64
    end_s: np.ndarray  # float64
    channel: np.ndarray  # int64: the file's channel (tag_audio --channels), -1 when its channels were mixed

    def __len__(self) -> int:
        return int(self.score.size)

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.zeros(0, np.float32), np.zeros(0, object), np.zeros(0, np.int64), np.zeros(0),
                   np.zeros(0), np.zeros(0, np.int64))

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(cls)))

    def take(self, rows: np.ndarray) -> Candidates:
        return Candidates(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))


def best(candidates: Candidates, k: int, max_per_file: int = 0) -> Candidates:
    """The top ``k`` of ``candidates`` (one hit per URI, channel and frame; at most ``max_per_file`` per
    URI when > 0), best first; ties broken by URI, then frame index, then channel."""
    if not len(candidates):
        return candidates
    _, codes = np.unique(candidates.uri.astype(str), return_inverse=True)
    # One hit per (uri, frame): the same frame read twice (two runs of one model) scores the same.
    channel = candidates.channel
    by_frame = np.lexsort((-candidates.score, channel, candidates.frame_index, codes))
    first = np.ones(by_frame.size, bool)
    first[1:] = (codes[by_frame][1:] != codes[by_frame][:-1]) | (
        candidates.frame_index[by_frame][1:] != candidates.frame_index[by_frame][:-1]) | (
        channel[by_frame][1:] != channel[by_frame][:-1])
    rows = by_frame[first]
    rows = rows[np.lexsort((channel[rows], candidates.frame_index[rows], codes[rows],
                            -candidates.score[rows]))]
    if max_per_file > 0:
        seen: dict[int, int] = {}
        keep = np.zeros(rows.size, bool)
        for i, code in enumerate(codes[rows]):
            seen[code] = seen.get(code, 0) + 1
            keep[i] = seen[code] <= max_per_file
        rows = rows[keep]
    return candidates.take(rows[:k])


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero: they match nothing)."""
    matrix = np.asarray(matrix, np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def query_vector(embeddings: np.ndarray) -> np.ndarray:
    """One query from its frames' embeddings ``[n, D]``: the normalised mean of their unit vectors."""
    return unit_rows(unit_rows(embeddings).mean(axis=0, keepdims=True))[0]


def embedding_matrix(table: pa.Table, column: str = "embedding") -> np.ndarray:
    """A list column of equal-length rows as ``[rows, dim]`` float32, without a Python loop."""
    values = table.column(column).combine_chunks()
    if table.num_rows == 0:
        return np.zeros((0, 0), np.float32)
    lengths = values.value_lengths().to_numpy(zero_copy_only=False)
    if values.null_count or (lengths != lengths[0]).any():
        raise ValueError(f"the frames' {column!r} rows differ in length")
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(table.num_rows, int(lengths[0])).astype(np.float32, copy=False)


def cosine_scores(embeddings: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``[rows, D]`` embeddings against ``[Q, D]`` unit queries -> ``[rows, Q]`` cosine similarities."""
    norms = np.sqrt(np.einsum("ij,ij->i", embeddings, embeddings))  # no [rows, D] temporary, unlike norm()
    scores = embeddings @ queries.T
    return np.divide(scores, norms[:, None], out=np.zeros_like(scores), where=norms[:, None] > 0)


POOLINGS = ("mean", "max")


@dataclasses.dataclass(frozen=True)
class QuerySet:
    """Unit vectors ``[rows, D]``; query q owns rows ``offsets[q]`` up to the next offset, and a frame
    scores its best cosine with them."""

    vectors: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return int(self.offsets.size)

    @classmethod
    def of(cls, per_query: Sequence[np.ndarray], pooling: str = "mean") -> QuerySet:
        """From each query's frame embeddings ``[n, D]``: one mean direction each, or (``max``) all."""
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        rows = [query_vector(m)[None] if pooling == "mean" else unit_rows(m) for m in per_query]
        sizes = np.array([r.shape[0] for r in rows])
        return cls(np.concatenate(rows).astype(np.float32), np.concatenate([[0], np.cumsum(sizes)[:-1]]))

    @classmethod
    def single(cls, vectors: np.ndarray) -> QuerySet:
        """One unit vector per query."""
        return cls(np.asarray(vectors, np.float32), np.arange(len(vectors)))

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """``[rows, Q]``: each frame's score for each query."""
        scores = cosine_scores(embeddings, self.vectors)
        if self.offsets.size == self.vectors.shape[0]:
            return scores
        return np.maximum.reduceat(scores, self.offsets, axis=1)


def _kth_largest(values: np.ndarray, k: int) -> float:
    return float(np.partition(values, values.size - k)[values.size - k])


def table_candidates(table: pa.Table, queries: QuerySet, k: int, max_per_file: int = 0
                     ) -> Iterator[tuple[int, Candidates]]:
    """(query index, the top k of this table for that query) for every query: one shard's answer."""
    if table.num_rows == 0:
        return
    scores = queries.scores(embedding_matrix(table))
    uris = table.column("uri").combine_chunks()
    encoded = pc.dictionary_encode(uris)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    names = np.asarray(encoded.dictionary.to_pylist(), object)
    frame_index = table.column("frame_index").to_numpy().astype(np.int64)
    start = table.column("start_s").to_numpy()
    end = table.column("end_s").to_numpy()
    channel = (pc.fill_null(table.column("channel"), -1).to_numpy().astype(np.int64)
               if "channel" in table.column_names else np.full(table.num_rows, -1, np.int64))
    file_max = None
    if max_per_file > 0 and len(names) > k:
        file_max = np.full((len(names), scores.shape[1]), -np.inf, np.float32)
        np.maximum.at(file_max, codes, scores)
    for q in range(scores.shape[1]):
        column = scores[:, q]
        if max_per_file <= 0 and column.size > k:
            rows = np.flatnonzero(column >= _kth_largest(column, k))  # ties at the k-th place go to ``best``
        elif file_max is not None:
            # The capped top k scores at least the k-th best file's best frame: nothing below it can enter.
            rows = np.flatnonzero(column >= _kth_largest(file_max[:, q], k))
        else:
            rows = np.arange(column.size)
        found = Candidates(column[rows], names[codes[rows]], frame_index[rows], start[rows], end[rows],
                           channel[rows])
        yield q, best(found, k, max_per_file)
