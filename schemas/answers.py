"""What an events row and a search hit are.

Events: one row per detected sound, per class, per recording: when it starts
and ends in the file (seconds) and, when the recording's start time is known,
in UTC; its peak and mean score.  The Parquet metadata carries the model
metadata of the frames the events came from (``schemas.tables.model_metadata``)
plus the rules that made them (``event_rules``, JSON).

Search hits: one row per (query, frame) kept in a query's top k.
"""

from __future__ import annotations

import json

import pyarrow as pa

from schemas.tables import (
    CHANNEL,
    END_S_FIELD,
    FRAME_LOCATION,
    METADATA_PREFIX,
    PROVENANCE,
    START_S_FIELD,
    URI_FIELD,
)

UTC_TIMESTAMP = pa.timestamp("ms", tz="UTC")
EVENT_RULES_KEY = METADATA_PREFIX + "event_rules"

# Where a row's UTC times came from (the ``time_source`` column); null when unknown.
TIME_SOURCES = ("manifest", "bext", "creation_time", "file_name")


def events_schema(model_metadata: dict[bytes, bytes] | None = None, rules: dict | None = None) -> pa.Schema:
    fields = [
        URI_FIELD,
        CHANNEL,  # null: the recording's channels mixed
        pa.field("label", pa.string(), nullable=False),
        pa.field("class_index", pa.int32(), nullable=False),
        START_S_FIELD,
        END_S_FIELD,
        pa.field("peak_s", pa.float64(), nullable=False),  # centre of the best-scoring frame
        pa.field("peak_score", pa.float32(), nullable=False),
        pa.field("mean_score", pa.float32(), nullable=False),  # over the frames that make the event
        pa.field("num_frames", pa.int32(), nullable=False),
        pa.field("start_utc", UTC_TIMESTAMP),
        pa.field("end_utc", UTC_TIMESTAMP),
        pa.field("time_source", pa.string()),
        *PROVENANCE,
    ]
    metadata = dict(model_metadata or {})
    if rules is not None:
        metadata[EVENT_RULES_KEY.encode()] = json.dumps(rules, sort_keys=True).encode()
    return pa.schema(fields, metadata=metadata or None)


def event_rules_from(schema: pa.Schema) -> dict | None:
    raw = (schema.metadata or {}).get(EVENT_RULES_KEY.encode())
    return json.loads(raw) if raw else None


def hits_schema(model_metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    fields = [
        pa.field("query", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 1 = best
        *FRAME_LOCATION,  # channel null: the recording's channels mixed
        pa.field("score", pa.float32(), nullable=False),  # cosine similarity to the query
    ]
    return pa.schema(fields, metadata=model_metadata or None)
