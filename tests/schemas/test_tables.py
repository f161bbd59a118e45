"""The frames and files contracts: columns, the config id, the model metadata, 'kind: reason' errors."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from schemas import tables
from schemas.model_spec import ModelSpec

SPEC = ModelSpec("savedmodel", 16000, 16000, 8000, ("dog", "cat"), embedding_dim=4, fingerprint="ab" * 32)


def test_frames_columns_follow_the_options_in_a_fixed_order():
    plain = tables.frames_schema(SPEC)
    assert plain.names == [tables.URI, "channel", tables.FRAME_INDEX, tables.START_S, tables.END_S,
                           tables.SCORES, tables.EMBEDDING, tables.MODEL, tables.CONFIG_ID]
    every = tables.frames_schema(SPEC, tables.FrameColumns("float16", top_k=3, logmel_stats=True,
                                                           logmel_patch=True))
    assert every.names == [tables.URI, "channel", tables.FRAME_INDEX, tables.START_S, tables.END_S,
                           tables.TOP_CLASSES, tables.EMBEDDING, tables.LOGMEL_STATS, tables.LOGMEL_PATCH,
                           tables.MODEL, tables.CONFIG_ID]
    assert every.field(tables.EMBEDDING).type == pa.list_(pa.float16())
    no_embedding = tables.frames_schema(dataclasses.replace(SPEC, embedding_dim=0))
    assert tables.EMBEDDING not in no_embedding.names
    assert plain.field("channel").nullable and plain.field("channel").type == pa.int32()  # null: mixed


def test_config_id_changes_with_the_weights_and_the_framing_only():
    same = tables.config_id(dataclasses.replace(SPEC, class_names=("a", "b", "c"), name="head"))
    assert same == tables.config_id(SPEC) and len(same) == 16
    assert tables.config_id(dataclasses.replace(SPEC, fingerprint="cd" * 32)) != same
    assert tables.config_id(dataclasses.replace(SPEC, hop_samples=4000)) != same


def test_model_metadata_reads_back_from_a_schema():
    schema = tables.files_schema(SPEC)
    metadata = tables.read_model_metadata(schema)
    assert metadata["model_identity"] == SPEC.identity and metadata["config_id"] == tables.config_id(SPEC)
    assert tables.class_names_from(schema) == ["dog", "cat"]
    assert tables.class_names_from(pa.schema([])) == []


def test_error_kinds_in_python_and_in_arrow_agree():
    errors = ["not_audio: not an audio file", "unlistable: cannot list gs://b/x",
              "transient: storage error EIO", "no colon at all", ""]
    kinds = ["not_audio", "unlistable", "transient", "no colon at all", ""]
    assert [tables.error_kind(e) for e in errors] == kinds
    assert tables.error_kinds(pa.array(errors)).to_pylist() == [tables.error_kind(e) for e in errors]
