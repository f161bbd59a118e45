"""The schema BigQuery gives an external table over our Parquet (Hive partitioning, list inference), derived
offline from real tag_audio output and checked against the files' own physical and logical types.

No BigQuery here: the conversion rules below are BigQuery's documented Parquet conversions, written out
independently of transforms/output/bigquery.py, and each leaf column of the real files is checked against
them and against the Parquet group annotations (LIST) that list inference depends on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from schemas.tables import FrameColumns
from storage import StoredFile
from tests.output.sql_docs import DOC, README
from tests.support.output_factory import FakeFile, scores_with_peaks, write_run
from transforms.output.bigquery import UnsupportedColumnError, external_table_schema
from transforms.output.reader import find_output

# BigQuery's Parquet conversions for the (physical type, logical type) pairs a Parquet writer can give
# our columns.
BIGQUERY_CONVERSIONS = {
    ("BYTE_ARRAY", "STRING"): "STRING",
    ("INT32", "NONE"): "INTEGER",
    ("INT32", "INT"): "INTEGER",  # an int32 annotated with its bit width
    ("INT64", "NONE"): "INTEGER",
    ("FLOAT", "NONE"): "FLOAT",
    ("DOUBLE", "NONE"): "FLOAT",
}


def documented_schemas() -> dict[str, list[dict]]:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (schemas,) = [json.loads(b) for b in blocks if '"frames"' in b]
    return schemas


def _parts(out: Path, table: str) -> list[StoredFile]:
    found = find_output(str(out))
    return [part for run in found.runs for part in run.parts(table)]


def _leaf_paths(fields: list[dict], prefix: str = "") -> dict[str, dict]:
    """BigQuery leaf columns by dotted name (a REPEATED RECORD's children under its name)."""
    leaves = {}
    for field in fields:
        name = f"{prefix}{field['name']}"
        if field["type"] == "RECORD":
            leaves.update(_leaf_paths(field["fields"], name + "."))
        else:
            leaves[name] = field
    return leaves


def _parquet_leaves(path: str) -> dict[str, pq.ColumnSchema]:
    """Parquet leaves by their BigQuery name under list inference: 'x.list.item.y' -> 'x.y'."""
    schema = pq.ParquetFile(path).schema
    leaves = {}
    for i in range(len(schema)):
        column = schema.column(i)
        name = re.sub(r"\.list\.(item|element)", "", column.path)
        leaves[name] = column
    return leaves


def _list_groups(path: str) -> set[str]:
    """Top-level groups annotated LIST in the file's Parquet schema (what list inference reads)."""
    return set(re.findall(r"group field_id=-?\d+ (\w+) \(List\)", str(pq.ParquetFile(path).schema)))


@pytest.mark.parametrize("table", ["frames", "files"])
def test_schema_of_real_output_matches_the_documented_one(history, table):
    derived = external_table_schema(_parts(history.out, table))
    assert derived.fields == documented_schemas()[table]
    assert derived.source == max(p.path for p in _parts(history.out, table))  # the alphabetically last part
    assert derived.differing_parts == ()  # one set of columns over every run


@pytest.mark.parametrize("table", ["frames", "files"])
def test_every_column_agrees_with_the_files_logical_types(history, table):
    derived = external_table_schema(_parts(history.out, table))
    *columns, partition = derived.fields
    assert partition == {"name": "run", "type": "STRING", "mode": "NULLABLE"}
    for part in _parts(history.out, table):
        parquet = _parquet_leaves(part.path)
        bigquery = _leaf_paths(columns)
        assert set(bigquery) == set(parquet)
        lists = _list_groups(part.path)
        for name, field in bigquery.items():
            leaf = parquet[name]
            assert field["type"] == BIGQUERY_CONVERSIONS[(leaf.physical_type, leaf.logical_type.type)], name
            top = name.split(".")[0]
            if leaf.max_repetition_level:  # inside a LIST group: REPEATED under list inference
                assert top in lists, f"{name} is repeated but {top} is not a LIST"
            elif "." not in name:
                assert field["mode"] == ("REQUIRED" if leaf.max_definition_level == 0 else "NULLABLE"), name
        for field in columns:
            assert (field["mode"] == "REPEATED") == (field["name"] in lists), field["name"]


def test_without_list_inference_bigquery_shows_the_three_levels(history):
    derived = external_table_schema(_parts(history.out, "frames"), list_inference=False)
    scores = next(f for f in derived.fields if f["name"] == "scores")
    assert scores["type"] == "RECORD" and scores["mode"] == "NULLABLE"
    (inner,) = scores["fields"]
    assert inner["name"] == "list" and inner["mode"] == "REPEATED"
    assert inner["fields"][0]["type"] == "FLOAT"


def test_float16_embeddings_and_differing_runs_are_reported(tmp_path):
    files = [FakeFile("/a.wav", "ok", scores=scores_with_peaks(4, {0: 0.9}))]
    half = FrameColumns(embedding_dtype="float16")
    write_run(tmp_path / "half", files, "20250101T000000Z-aaaaaa", columns=half)
    with pytest.raises(UnsupportedColumnError, match="FLOAT16.*--embedding_dtype float32"):
        external_table_schema(_parts(tmp_path / "half", "frames"))

    write_run(tmp_path / "mixed", files, "20250101T000000Z-aaaaaa", columns=FrameColumns(top_k=2))
    write_run(tmp_path / "mixed", files, "20250102T000000Z-bbbbbb")
    derived = external_table_schema(_parts(tmp_path / "mixed", "frames"))
    names = [f["name"] for f in derived.fields]
    assert "scores" in names and "top_classes" not in names  # the newest run's columns win
    assert derived.differing_parts and all("aaaaaa" in p for p in derived.differing_parts)
    top_k = external_table_schema(_parts(tmp_path / "mixed", "frames")[:1])
    top_classes = next(f for f in top_k.fields if f["name"] == "top_classes")
    assert top_classes == {"name": "top_classes", "type": "RECORD", "mode": "REPEATED", "fields": [
        {"name": "index", "type": "INTEGER", "mode": "NULLABLE"},
        {"name": "label", "type": "STRING", "mode": "NULLABLE"},
        {"name": "score", "type": "FLOAT", "mode": "NULLABLE"}]}


@pytest.mark.parametrize("document", [DOC, README], ids=["docs", "readme"])
def test_bq_commands_use_hive_partitioning_and_list_inference(document):
    (block,) = [b for b in re.findall(r"```bash\n(.*?)```", document.read_text(), flags=re.DOTALL)
                if "bq mkdef" in b]
    assert "--parquet_enable_list_inference=true" in block
    assert "--hive_partitioning_mode=STRINGS" in block
    assert "--hive_partitioning_source_uri_prefix=$OUT/$TABLE" in block
    assert '"$OUT/$TABLE/*"' in block and "bq mk --table --external_table_definition" in block
