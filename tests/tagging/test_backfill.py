"""Backfill: re-runs skip done work, pick up changes, and a killed run loses and duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from tests.support.audio_factory import make_bad_files, sine, write_audio
from tests.support.pipeline_helpers import (
    APPROX_MODEL,
    FIXTURE_MODEL,
    REPO,
    read_table,
    require_shared,
    run_tag_audio,
    run_tag_audio_subprocess,
)
from transforms.decoding.windows import num_frames
from transforms.output.layout import new_run_id


def _tag(inputs: Path, out: Path, *extra: str, model: Path = FIXTURE_MODEL) -> int:
    return run_tag_audio(["--input", str(inputs), "--output", str(out), "--model_path", str(model), *extra])


def _published_files(out: Path):
    return read_table(out, "files").to_pandas()


@pytest.fixture
def small_corpus(tmp_path):
    require_shared(FIXTURE_MODEL)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, freq in enumerate((300, 600, 900)):
        write_audio(inputs / f"tone{i}.wav" if i else inputs / "tone0.flac", sine(freq, 2.0, 16000), 16000)
    bad = make_bad_files(tmp_path / "bad_all")
    (inputs / "broken.wav").write_bytes(bad["random_as_wav"].read_bytes())
    return inputs


def test_rerun_skips_done_files_and_retags_changed_ones(small_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    assert _tag(small_corpus, out) == 0
    first = _published_files(out)
    assert len(first) == 4

    assert _tag(small_corpus, out) == 0  # nothing to do
    assert "0 new, 0 changed, 3 done, 1 failed before" in capsys.readouterr().out
    files = _published_files(out)
    assert len(files) == 4 and files.run.nunique() == 1

    changed = small_corpus / "tone1.wav"
    write_audio(changed, sine(1500, 3.0, 16000), 16000)
    os.utime(changed, (time.time() + 5, time.time() + 5))
    assert _tag(small_corpus, out) == 0
    files = _published_files(out)
    latest = files[files.run == files.run.max()]
    assert list(latest.uri) == [str(changed)]
    assert latest.iloc[0].num_frames == 6  # 3 s now

    assert _tag(small_corpus, out, "--retry_failed") == 0
    files = _published_files(out)
    retried = files[files.run == files.run.max()]
    assert list(retried.uri) == [str(small_corpus / "broken.wav")]

    assert _tag(small_corpus, out, "--force") == 0
    files = _published_files(out)
    assert len(files[files.run == files.run.max()]) == 4


def test_run_ids_sort_by_start_time_even_within_a_second():
    start = 1_795_000_000.0
    ids = [new_run_id(start + offset) for offset in (0.0, 0.001, 0.25, 0.999, 1.0, 86_400.0)]
    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    assert ids[0].startswith("20261118T") and ids[2][15:20] == ".250Z"


def test_new_model_version_is_not_done(small_corpus, tmp_path):
    require_shared(APPROX_MODEL)
    out = tmp_path / "out"
    assert _tag(small_corpus, out) == 0
    assert _tag(small_corpus, out, model=APPROX_MODEL) == 0
    frames = read_table(out, "frames", ["uri", "frame_index", "config_id", "model"]).to_pandas()
    assert frames.config_id.nunique() == 2 and frames.model.nunique() == 2
    assert not frames.duplicated(["uri", "frame_index", "config_id"]).any()
    per_config = frames.groupby("config_id").size()
    assert per_config.iloc[0] == per_config.iloc[1]


def test_plan_only_counts_without_decoding_or_writing(small_corpus, tmp_path):
    out = tmp_path / "out"
    assert _tag(small_corpus, out) == 0
    (small_corpus / "new.wav").write_bytes((small_corpus / "tone1.wav").read_bytes())
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = run_tag_audio_subprocess(["--input", str(small_corpus), "--output", str(out),
                                       "--model_path", str(FIXTURE_MODEL), "--plan_only"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "5 input files: 1 new, 0 changed, 3 done, 1 failed before" in result.stdout
    after = sorted(p.relative_to(out) for p in out.rglob("*") if "_staging" not in p.parts)
    assert after == [p for p in before if "_staging" not in p.parts]


def test_killed_run_leaves_no_output_and_the_next_run_completes(tmp_path):
    """Start the job, SIGKILL it while it tags, run again: every file ends with exactly one ok row."""
    model = require_shared(FIXTURE_MODEL)
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for i in range(24):
        write_audio(inputs / f"clip{i:02d}.flac", rng.uniform(-0.4, 0.4, (1, 16000 * 30)), 16000)
    out = tmp_path / "out"
    # Batches of one window make the tagging last several seconds, so there is a middle to kill it in.
    args = ["--input", str(inputs), "--output", str(out), "--model_path", str(model), "--lease_ttl_s", "4",
            "--progress_s", "0.5", "--batch_size", "1"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    job = subprocess.Popen([sys.executable, "-m", "beam_jobs.tag_audio", *args], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        for line in job.stderr:  # wait until the model is tagging: some units done, not all
            if "work units" in line:
                done, planned = map(int, line.split("work units ")[1].split(" ")[0].split("/"))
                if 0 < done < planned:
                    break
            assert time.time() < deadline, "the job never started tagging"
        os.killpg(job.pid, signal.SIGKILL)
    finally:
        job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL

    killed = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert [r["status"] for r in killed] == ["running"], "an unfinished run is recognisable"
    published = list(out.glob("frames/run=*/*.parquet")) + list(out.glob("files/run=*/*.parquet"))
    assert published == [], "readers of frames/ and files/ see nothing of the killed run"

    # The killed run's lease names its driver's pid on this host, which is gone: the next run takes the
    # output over at once, without waiting for the lease to go stale.
    lease = json.loads((out / "_lease.json").read_text())
    assert lease["pid"] == job.pid
    assert run_tag_audio(args[:-4]) == 0  # the same job again, with default progress and batch size
    assert not (out / "_lease.json").exists(), "the finished run gave the output up"
    con = duckdb.connect()
    ok = con.execute(f"select uri, count(*) from read_parquet('{out}/files/*/*.parquet') "
                     f"where status = 'ok' group by uri").fetchall()
    assert len(ok) == 24 and all(n == 1 for _, n in ok)
    total, distinct = con.execute(
        f"select count(*), count(distinct (uri, frame_index, config_id)) "
        f"from read_parquet('{out}/frames/*/*.parquet')").fetchone()
    assert total == distinct == 24 * num_frames(16000 * 30, 15600, 7680)
