"""The SQL that docs/readers.md gives readers, taken from the document so the tests run what users read."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "readers.md"
README = REPO / "README.md"


def sql_block(title: str, document: Path = DOC) -> str:
    """The ```sql block whose first line is ``-- <title>``."""
    for block in re.findall(r"```sql\n(.*?)```", document.read_text(), flags=re.DOTALL):
        first, _, rest = block.partition("\n")
        if first.strip() == f"-- {title}":
            return rest
    raise AssertionError(f"{document.name} has no sql block '-- {title}'")


def statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def duckdb_current_view(out: Path) -> duckdb.DuckDBPyConnection:
    """A connection with the documented DuckDB views over ``out`` (the doc says 'out/')."""
    connection = duckdb.connect()
    for statement in statements(sql_block("DuckDB: the current view")):
        connection.execute(statement.replace("'out/", f"'{out}/"))
    return connection


def bigquery_current_view(out: Path) -> duckdb.DuckDBPyConnection:
    """The documented BigQuery view statements, run by DuckDB over tables shaped like the external tables
    (Hive partition 'run' as a string); DuckDB accepts this SQL as written."""
    connection = duckdb.connect()
    connection.execute("create schema dataset")
    for table in ("files", "frames"):
        connection.execute(
            f"create view dataset.{table} as select * from read_parquet('{out}/{table}/*/*.parquet', "
            "hive_partitioning = true, hive_types = {'run': varchar}, union_by_name = true)")
    connection.execute(  # the external table over OUT/_log/*.json, newline-delimited JSON
        f"create view dataset.log as select * from read_json('{out}/_log/*.json', "
        "columns = {run_id: 'varchar', commit: 'bigint', kind: 'varchar'})")
    for statement in statements(sql_block("BigQuery: the current view")):
        connection.execute(statement.replace("DATASET.", "dataset."))
    return connection
