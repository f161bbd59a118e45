"""tf.data over an output's frames: embeddings and scores streamed one record batch at a time.

    stream = FrameStream("out/")                 # local or gs://; the current view by default
    stream.class_names                           # from the Parquet metadata
    for frame in stream.dataset().batch(256):    # {'uri', 'start_s', 'end_s', 'embedding', 'scores'}
        ...

Parts are opened through ``storage`` and read with
``pyarrow.parquet.ParquetFile.iter_batches``: at most one row group's column
chunks and one record batch are held at a time, never a whole table.  One
output may hold frames of several models or framings (config ids); a stream
reads one of them, named by ``config_id`` when there are several.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import storage
from schemas.tables import (
    CONFIG_ID,
    EMBEDDING,
    END_S,
    SCORES,
    START_S,
    TOP_CLASSES,
    URI,
    class_names_from,
    read_model_metadata,
)
from transforms.output.current import PartSelection, current_parts, row_states, select_rows
from transforms.output.reader import OutputDir, find_output, read_footers

VECTOR_COLUMNS = (EMBEDDING, SCORES)
ID_COLUMNS = (URI, START_S, END_S)
KEY_COLUMNS = (URI, CONFIG_ID)  # read to select the current rows, even when not asked for


@dataclasses.dataclass(frozen=True)
class _Part:
    selection: PartSelection
    config_id: str
    schema: pa.Schema


class FrameStream:
    """The frames of one config of an output, as record batches, numpy batches or a ``tf.data.Dataset``.

    ``columns``: any of ``embedding`` and ``scores`` (vectors, read as float32)
    and ``uri``, ``start_s``, ``end_s``, ``frame_index`` (scalars).
    ``current``: only the frames of the current view (the latest ok result per
    file and config, ``transforms.output.current``); False reads every
    published run's frames.
    """

    def __init__(self, out_dir: str | OutputDir, columns: Sequence[str] = (*ID_COLUMNS, *VECTOR_COLUMNS),
                 config_id: str | None = None, current: bool = True, rows_per_batch: int = 1024):
        if rows_per_batch <= 0:
            raise ValueError(f"rows_per_batch must be positive, got {rows_per_batch}")
        found = find_output(out_dir) if isinstance(out_dir, str) else out_dir
        self.columns = tuple(columns)
        self.rows_per_batch = rows_per_batch
        selections = current_parts(found, row_states(found) if current else None)
        footers = read_footers([s.part for s in selections])
        parts = [_Part(s, read_model_metadata(f.schema).get("config_id", ""), f.schema)
                 for s, f in zip(selections, footers) if f.num_rows]
        configs = sorted({p.config_id for p in parts})
        if config_id is None and len(configs) > 1:
            models = {p.config_id: read_model_metadata(p.schema).get("model_identity", "?") for p in parts}
            listed = ", ".join(f"{c} ({models[c]})" for c in configs)
            raise ValueError(f"{found.root} holds frames of {len(configs)} configs: {listed}; pass config_id")
        if config_id is not None and config_id not in configs:
            raise ValueError(f"no frames with config_id {config_id!r} under {found.root} "
                             f"(configs: {', '.join(configs) or 'none'})")
        chosen = config_id if config_id is not None else (configs[0] if configs else None)
        self._parts = [p for p in parts if p.config_id == chosen]
        self.config_id = chosen
        schema = self._parts[0].schema if self._parts else None
        meta = read_model_metadata(schema) if schema is not None else {}
        self.class_names: tuple[str, ...] = tuple(class_names_from(schema)) if schema is not None else ()
        self.embedding_dim = int(meta.get("embedding_dim") or 0)
        self.model = meta.get("model_identity", "")
        for part in self._parts:
            missing = [c for c in self.columns if c not in part.schema.names]
            if missing:
                hint = (" (frames written with --top_k keep 'top_classes' instead of 'scores')"
                        if SCORES in missing and TOP_CLASSES in part.schema.names else "")
                raise ValueError(f"{part.selection.part.path} has no column {', '.join(missing)}{hint}")

    def _width(self, column: str) -> int:
        return self.embedding_dim if column == EMBEDDING else len(self.class_names)

    def record_batches(self) -> Iterator[pa.RecordBatch]:
        """The selected rows, ``columns`` only, at most ``rows_per_batch`` rows per batch."""
        read = list(dict.fromkeys([*self.columns, *KEY_COLUMNS]))
        for part in self._parts:
            with storage.open_read(part.selection.part.path) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=self.rows_per_batch, columns=read):
                    selected = select_rows(batch, part.selection)
                    if selected.num_rows:
                        yield selected.select(list(self.columns))

    def numpy_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Each record batch as arrays: vectors ``[n, width]`` float32, scalars ``[n]``."""
        for batch in self.record_batches():
            arrays = {}
            for name in self.columns:
                column = batch.column(name)
                if name in VECTOR_COLUMNS:
                    arrays[name] = _dense(column, self._width(name), name)
                elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                    arrays[name] = np.asarray(column.to_pylist(), dtype=object)
                else:
                    arrays[name] = column.to_numpy(zero_copy_only=False)
            yield arrays

    def dataset(self):  # -> tf.data.Dataset (TensorFlow is imported only here)
        """One element per frame: a dict of the ``columns``; batch, shuffle or map it as usual."""
        import tensorflow as tf

        signature = {}
        schema = self._parts[0].schema if self._parts else None
        for name in self.columns:
            if name in VECTOR_COLUMNS:
                signature[name] = tf.TensorSpec([None, self._width(name)], tf.float32)
            elif name == URI:
                signature[name] = tf.TensorSpec([None], tf.string)
            else:
                dtype = schema.field(name).type.to_pandas_dtype() if schema is not None else np.float64
                signature[name] = tf.TensorSpec([None], tf.as_dtype(dtype))
        return tf.data.Dataset.from_generator(self.numpy_batches, output_signature=signature).unbatch()


def _dense(column: pa.Array, width: int, name: str) -> np.ndarray:
    """A list column of equal-length rows as ``[n, width]`` float32."""
    n = len(column)
    if column.null_count:
        raise ValueError(f"{name}: {column.null_count} null rows")
    lengths = pc.list_value_length(column)
    if n and (pc.min(lengths).as_py() != width or pc.max(lengths).as_py() != width):
        raise ValueError(f"{name}: rows of {pc.min(lengths).as_py()}..{pc.max(lengths).as_py()} values, "
                         f"the metadata says {width}")
    values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(n, width)
