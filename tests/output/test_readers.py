"""Every common reader reads what tag_audio wrote: pyarrow, pandas, DuckDB, Polars, Hugging Face datasets and
Spark (local mode) each see the same rows, run partitions, vectors and class names as a direct pyarrow read
of the Parquet parts.  The output is the real multi-run history of tests/output/conftest.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from schemas.tables import class_names_from
from tests.support import savedmodel_factory as factory
from transforms.output.current import current_frames

KEY = ("run", "uri", "config_id", "frame_index")


def _parts(out: Path, table: str) -> list[Path]:
    return sorted((out / table).glob("run=*/*.parquet"))


def _direct(out: Path, table: str) -> pa.Table:
    """Each part read by itself with the run taken from its directory name: the reference."""
    tables = []
    for part in _parts(out, table):
        t = pq.read_table(part)
        run = part.parent.name.removeprefix("run=")
        tables.append(t.append_column("run", pa.array([run] * t.num_rows, pa.string())))
    return pa.concat_tables(tables)


@pytest.fixture(scope="module")
def reference(history) -> dict[tuple, dict]:
    """(run, uri, config_id, frame_index) -> {'embedding', 'scores', 'start_s'} of every frame."""
    rows = _direct(history.out, "frames").to_pylist()
    assert len(rows) > 20 and len({r["run"] for r in rows}) == 5  # four published runs and the killed one
    return {tuple(r[k] for k in KEY): r for r in rows}


def assert_same_frames(reference: dict[tuple, dict], rows: list[dict], reader: str) -> None:
    got = {tuple(r[k] for k in KEY): r for r in rows}
    assert len(got) == len(rows), f"{reader}: duplicate rows"
    assert got.keys() == reference.keys(), f"{reader}: rows differ"
    for key, row in got.items():
        expected = reference[key]
        for column in ("embedding", "scores"):
            np.testing.assert_allclose(np.asarray(row[column], np.float32), expected[column], rtol=0, atol=0,
                                       err_msg=f"{reader}: {column} of {key}")
        assert row["start_s"] == pytest.approx(expected["start_s"])


def _class_names(out: Path) -> list[str]:
    return class_names_from(pq.read_schema(_parts(out, "frames")[0]))


def test_reference_carries_the_model_class_names(history):
    assert _class_names(history.out) == list(factory.BATCHED_LABELS)
    for part in _parts(history.out, "frames"):
        width = {len(v) for v in pq.read_table(part, columns=["scores"])["scores"].to_pylist()}
        assert width == {len(factory.BATCHED_LABELS)}


def test_pyarrow_dataset_with_hive_partitioning(history, reference):
    table = ds.dataset(history.out / "frames", format="parquet", partitioning="hive").to_table()
    assert table.schema.field("run").type == pa.string()
    assert_same_frames(reference, table.to_pylist(), "pyarrow.dataset")
    files = ds.dataset(history.out / "files", format="parquet", partitioning="hive").to_table()
    assert files.num_rows == _direct(history.out, "files").num_rows


def test_pandas(history, reference):
    frame = pd.read_parquet(history.out / "frames")
    frame["run"] = frame["run"].astype(str)  # the partition column arrives as a category
    assert_same_frames(reference, frame.to_dict("records"), "pandas")
    files = pd.read_parquet(history.out / "files")
    assert sorted(files["status"].unique()) == ["failed", "ok"]


def test_duckdb(history, reference):
    rows = duckdb.sql(
        f"select * from read_parquet('{history.out}/frames/*/*.parquet', hive_partitioning = true, "
        "hive_types = {'run': varchar})").arrow()
    if isinstance(rows, pa.RecordBatchReader):
        rows = rows.read_all()
    assert_same_frames(reference, rows.to_pylist(), "duckdb")
    files = f"read_parquet('{history.out}/files/*/*.parquet')"
    [(count,)] = duckdb.sql(f"select count(*) from {files}").fetchall()
    assert count == _direct(history.out, "files").num_rows


def test_polars(history, reference):
    pl = pytest.importorskip("polars")
    frame = pl.scan_parquet(f"{history.out}/frames/*/*.parquet", hive_partitioning=True).collect()
    assert frame.schema["run"] == pl.String and frame.schema["embedding"] == pl.List(pl.Float32)
    assert_same_frames(reference, frame.to_dicts(), "polars")
    metadata = pl.read_parquet_metadata(_parts(history.out, "frames")[0])
    assert json.loads(metadata["audio_tagger.class_names"]) == list(factory.BATCHED_LABELS)
    # A filter on uri is pushed into the scan.
    uri = history.uris["b"]
    only_b = (pl.scan_parquet(f"{history.out}/frames/*/*.parquet", hive_partitioning=True)
              .filter(pl.col("uri") == uri).select("run", "frame_index").collect())
    assert only_b.height == sum(1 for key in reference if key[1] == uri)


def test_hugging_face_datasets(history, reference, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    run = history.runs[1]
    loaded = datasets.load_dataset("parquet", data_files=f"{history.out}/frames/run={run}/*.parquet",
                                   split="train", cache_dir=str(tmp_path / "hf"))
    rows = [{**row, "run": run} for row in loaded]
    assert_same_frames({k: v for k, v in reference.items() if k[0] == run}, rows, "datasets")
    as_numpy = loaded.with_format("numpy")[:]
    assert as_numpy["embedding"].shape == (len(rows), factory.EMBEDDING_DIM)
    assert as_numpy["scores"].dtype == np.float32

    # The current view, as a datasets.Dataset with its run column.
    current = datasets.Dataset(current_frames(str(history.out)))
    assert set(current.column_names) >= {"run", "uri", "embedding", "scores"}
    for row in current:
        np.testing.assert_allclose(row["embedding"], reference[tuple(row[k] for k in KEY)]["embedding"])


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    java = shutil.which("java") or (str(Path(home) / "bin" / "java") if home else None)
    if not java or not Path(java).exists():
        return None
    version = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    return java if version.returncode == 0 else None


@pytest.mark.skipif(_java() is None, reason="Spark needs a Java runtime (java on PATH or JAVA_HOME)")
def test_spark_local(history, reference, tmp_path):
    pyspark_sql = pytest.importorskip("pyspark.sql")
    spark = (pyspark_sql.SparkSession.builder.master("local[1]").appName("audio-tagger-readers")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
             .config("spark.driver.memory", "512m").config("spark.local.dir", str(tmp_path))
             .getOrCreate())
    try:
        spark.sparkContext.setLogLevel("ERROR")
        frames = spark.read.parquet(str(history.out / "frames"))
        types = dict(frames.dtypes)
        assert types["run"] == "string" and types["embedding"] == "array<float>"
        assert_same_frames(reference, [row.asDict() for row in frames.collect()], "spark")
        files = spark.read.parquet(str(history.out / "files"))
        per_run = {row["run"]: row["count"] for row in files.groupBy("run").count().collect()}
        direct = _direct(history.out, "files")
        assert per_run == {run: direct.filter(pa.compute.equal(direct["run"], run)).num_rows
                           for run in set(direct["run"].to_pylist())}
        labels = files.selectExpr("uri", "top_labels_mean[0].label as top").where("status = 'ok'").collect()
        assert {row["top"] for row in labels} <= set(factory.BATCHED_LABELS)
    finally:
        spark.stop()
