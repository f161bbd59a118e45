"""Runs that share an output: one at a time, never a file tagged twice, a killed holder taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tests.support.pipeline_helpers import REPO
from transforms.output.lease import Lease, OutputBusyError


@pytest.fixture(params=["local", "gcs"])
def out_dir(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    return f"{request.getfixturevalue('gcs').bucket('lease-test')}/out-{tmp_path.name}"


def test_a_second_run_finds_the_output_held_and_a_stale_lease_is_taken_over(out_dir):
    first = Lease(out_dir, "run-a", ttl_s=2.0).acquire()
    with pytest.raises(OutputBusyError, match="being tagged by run run-a"):
        Lease(out_dir, "run-b", ttl_s=2.0).acquire()
    Lease(out_dir, "run-b").release()  # not its lease: nothing happens
    assert first.held()
    first.renew()
    time.sleep(2.5)  # run-a goes silent: killed
    second = Lease(out_dir, "run-b", ttl_s=2.0).acquire()
    assert second.held() and not first.held()
    with pytest.raises(Exception, match="lost its lease"):
        first.renew()
    second.release()
    assert not second.held()
    Lease(out_dir, "run-c").acquire().release()  # free again


def _start(corpus, output: str, env: dict | None = None) -> subprocess.Popen:
    args = ["--input", str(corpus.audio), "--output", output, "--model", "savedmodel", "--model_path",
            str(corpus.model), "--progress_s", "0", "--decode_processes", "0"]
    return subprocess.Popen([sys.executable, "-m", "beam_jobs.tag_audio", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_started_together_tag_every_file_once(small_corpus, out_dir, request, tmp_path):
    env = None
    if out_dir.startswith("gs://"):
        env = request.getfixturevalue("gcs").worker_env()
    jobs = [_start(small_corpus, out_dir, env), _start(small_corpus, out_dir, env)]
    results = [(job.wait(timeout=600), job.communicate()) for job in jobs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 3], [(code, err.splitlines()[-3:]) for code, (_, err) in results]
    loser = next(err for code, (_, err) in results if code == 3)
    assert "is being tagged by run" in loser and "this run did nothing" in loser
    local = Path(out_dir)
    if out_dir.startswith("gs://"):  # read the published Parquet back from the bucket
        gcs = request.getfixturevalue("gcs")
        local = tmp_path / "downloaded"
        for uri in gcs.list_uris(out_dir):
            target = local / uri[len(out_dir) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(gcs.read_bytes(uri))
    records = [json.loads(p.read_text()) for p in (local / "runs").glob("*.json")]
    assert [r["status"] for r in records] == ["succeeded"], "the run that yielded wrote no record"
    files = duckdb.sql(f"select uri, count(*) from read_parquet('{local}/files/*/*.parquet') group by uri")
    assert sorted(n for _, n in files.fetchall()) == [1] * len(small_corpus.listed)
    (total, distinct), = duckdb.sql(f"select count(*), count(distinct (uri, frame_index, config_id)) "
                                    f"from read_parquet('{local}/frames/*/*.parquet')").fetchall()
    assert total == distinct > 0
