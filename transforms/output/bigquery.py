"""The schema BigQuery gives an external table over one of our tables, derived offline from the Parquet.

The table is made as README.md and docs/readers.md say: source URIs
``OUT_DIR/<table>/*``, Hive partitioning (``run`` as a STRING partition key)
and Parquet list inference.  BigQuery then takes the column schema from the
alphabetically last Parquet file under the source URIs and converts each
column by its physical and logical type (BigQuery's "Parquet conversions"):
LIST columns become REPEATED fields of their element, groups become RECORDs,
required columns REQUIRED and optional ones NULLABLE.  A column type BigQuery
cannot convert (Parquet FLOAT16, written by ``--embedding_dtype float16``) is
reported, not guessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import storage
from storage import StoredFile
from transforms.output.current import RUN_COLUMN

# (Parquet physical type, logical type) -> BigQuery type, for the types our tables can hold.
CONVERSIONS = {
    ("BOOLEAN", "NONE"): "BOOLEAN",
    ("INT32", "NONE"): "INTEGER",
    ("INT32", "INT"): "INTEGER",
    ("INT64", "NONE"): "INTEGER",
    ("INT64", "INT"): "INTEGER",
    ("INT32", "DATE"): "DATE",
    ("INT64", "TIMESTAMP"): "TIMESTAMP",
    ("FLOAT", "NONE"): "FLOAT",
    ("DOUBLE", "NONE"): "FLOAT",
    ("BYTE_ARRAY", "NONE"): "BYTES",
    ("BYTE_ARRAY", "STRING"): "STRING",
    ("BYTE_ARRAY", "JSON"): "JSON",
    ("FIXED_LEN_BYTE_ARRAY", "NONE"): "BYTES",
}
PARTITION_FIELD = {"name": RUN_COLUMN, "type": "STRING", "mode": "NULLABLE"}


class UnsupportedColumnError(ValueError):
    """A Parquet column BigQuery has no conversion for."""


@dataclasses.dataclass(frozen=True)
class ExternalTableSchema:
    source: str  # the part BigQuery reads the schema from
    fields: list[dict[str, Any]]  # BigQuery's JSON schema, the partition column last
    differing_parts: tuple[str, ...]  # parts whose own schema differs: their other columns stay hidden


def _leaves(schema: pq.ParquetSchema) -> dict[str, pq.ColumnSchema]:
    return {schema.column(i).path: schema.column(i) for i in range(len(schema))}


def _primitive(leaf: pq.ColumnSchema) -> str:
    key = (leaf.physical_type, leaf.logical_type.type)
    if key not in CONVERSIONS:
        hint = (" (write float32 embeddings for BigQuery: --embedding_dtype float32)"
                if leaf.logical_type.type == "FLOAT16" else "")
        raise UnsupportedColumnError(f"column {leaf.path}: Parquet {key[0]} with logical type {key[1]} "
                                     f"has no BigQuery conversion{hint}")
    return CONVERSIONS[key]


def _field(field: pa.Field, path: str, leaves: dict[str, pq.ColumnSchema], list_inference: bool,
           repeated: bool = False) -> dict[str, Any]:
    mode = "REPEATED" if repeated else ("NULLABLE" if field.nullable else "REQUIRED")
    kind = field.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        element = kind.value_field
        element_path = f"{path}.list.{element.name}"
        if list_inference:
            inferred = _field(element, element_path, leaves, list_inference, repeated=True)
            return {**inferred, "name": field.name}
        # Without list inference BigQuery shows Parquet's three levels: field.list[].element.
        inner = {"name": "list", "type": "RECORD", "mode": "REPEATED",
                 "fields": [_field(element, element_path, leaves, list_inference)]}
        return {"name": field.name, "type": "RECORD", "mode": mode, "fields": [inner]}
    if pa.types.is_struct(kind):
        children = [_field(kind.field(i), f"{path}.{kind.field(i).name}", leaves, list_inference)
                    for i in range(kind.num_fields)]
        return {"name": field.name, "type": "RECORD", "mode": mode, "fields": children}
    return {"name": field.name, "type": _primitive(leaves[path]), "mode": mode}


def bigquery_fields(parquet: pq.ParquetFile, list_inference: bool = True) -> list[dict[str, Any]]:
    """BigQuery's schema for one Parquet file (without the partition column)."""
    leaves = _leaves(parquet.schema)
    return [_field(f, f.name, leaves, list_inference) for f in parquet.schema_arrow]


def _fields_of(path: str, list_inference: bool) -> list[dict[str, Any]]:
    with storage.open_read(path) as f:
        return bigquery_fields(pq.ParquetFile(f), list_inference)


def external_table_schema(parts: Sequence[StoredFile], list_inference: bool = True,
                          check_all: bool = True) -> ExternalTableSchema:
    """The schema of an external table over ``parts`` (one table of an output, every run).

    ``check_all``: also derive every other part's schema and name those that
    differ (runs made with other column options, e.g. ``--top_k``).
    """
    if not parts:
        raise FileNotFoundError("no Parquet parts: nothing for BigQuery to take a schema from")
    ordered = sorted(parts, key=lambda p: p.path)
    source = ordered[-1].path
    fields = _fields_of(source, list_inference)
    differing = tuple(p.path for p in ordered[:-1]
                      if check_all and _fields_of(p.path, list_inference) != fields)
    return ExternalTableSchema(source=source, fields=[*fields, dict(PARTITION_FIELD)],
                               differing_parts=differing)
