"""Every file exactly once, whatever the operator does: reused run ids, runs that lose their lease, runs
that publish between another's plan and its start, named runs, damaged parts, rewritten records, signals,
full disks and readers at work during a compaction."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beam_jobs import compact, inspect
from tests.output.sql_docs import duckdb_current_view
from tests.support.audio_factory import sine, write_audio
from tests.support.pipeline_helpers import REPO, read_table, run_tag_audio
from tests.support.savedmodel_factory import save_batched_encoder
from transforms.output import commit_log
from transforms.output.compaction import plan_compaction
from transforms.output.current import current_files
from transforms.output.layout import RunRecord
from transforms.output.lease import Lease
from transforms.output.publish import commit
from transforms.output.read_pins import reading
from transforms.output.reader import find_output
from transforms.tagging import run as tagging


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_batched_encoder(tmp_path_factory.mktemp("model") / "model")


def _audio(folder: Path, n: int, seconds: float = 2.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_audio(folder / f"c{i}.wav", sine(300.0 + 50 * i, seconds, 16000), 16000)
    return folder


def _args(model: Path, audio: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(audio), "--output", str(out), "--model", "savedmodel", "--model_path", str(model),
            "--decode_processes", "0", *extra]


def _files_rows(out: Path) -> list[str]:
    return sorted(read_table(out, "files", ["uri"])["uri"].to_pylist())


def test_a_reused_run_id_is_refused_and_the_published_run_keeps_its_rows(model, tmp_path, capsys):
    audio, out = _audio(tmp_path / "in", 2), tmp_path / "out"
    assert run_tag_audio(_args(model, audio, out, "--run_id", "nightly")) == 0
    write_audio(audio / "added.wav", sine(900.0, 2.0, 16000), 16000)
    capsys.readouterr()
    assert run_tag_audio(_args(model, audio, out, "--run_id", "nightly")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--run_id nightly" in err[0] and "already has a run of that id" in err[0]
    assert len(_files_rows(out)) == 2 and current_files(str(out)).num_rows == 2


def test_a_run_that_lost_its_lease_cannot_commit_even_mid_publish(tmp_path):
    out = str(tmp_path / "out")
    paused = Lease(out, "paused-run", ttl_s=0.5).acquire()  # then SIGSTOP, a laptop lid, a VM pause
    time.sleep(0.8)
    taker = Lease(out, "taker-run", ttl_s=60).acquire()  # stale: taken over, the paused run fenced out
    assert [(e.kind, e.run_id) for e in commit_log.read_log(out)] == [("fence", "paused-run")]
    taker_record = RunRecord("taker-run", out_dir=out, status="succeeded", protocol=2)
    assert commit(taker_record, taker).commit == 2
    # The paused run wakes up past its check of the lease, in the middle of publishing:
    woke = commit(RunRecord("paused-run", out_dir=out, status="succeeded", protocol=2), paused)
    assert woke.status == "failed" and "lost the lease" in woke.reason
    assert [(e.kind, e.run_id) for e in commit_log.read_log(out)] == [("fence", "paused-run"),
                                                                      ("run", "taker-run")]
    assert [run.run_id for run in find_output(out).published] == ["taker-run"]


def test_a_run_that_publishes_between_anothers_plan_and_start_is_not_tagged_again(model, tmp_path, capsys):
    audio, out = _audio(tmp_path / "in", 3), tmp_path / "out"
    config, record = tagging.prepare([str(audio)], str(out), model="savedmodel", model_path=str(model),
                                     decode_processes=0)
    assert run_tag_audio(_args(model, audio, out)) == 0  # publishes while the first one is prepared
    options = tagging.PipelineOptions([], runner="FnApiRunner")
    final = tagging.execute(config, record, options)
    assert final.plan["done"] == 3 and final.plan["new"] == 0
    assert len(_files_rows(out)) == 3


def test_latest_is_the_highest_commit_not_the_largest_run_id(model, tmp_path, capsys):
    audio, out = _audio(tmp_path / "in", 1), tmp_path / "out"
    assert run_tag_audio(_args(model, audio, out, "--run_id", "zzz-named")) == 0
    write_audio(audio / "c0.wav", sine(500.0, 3.0, 16000), 16000)  # changed: tagged again by the next run
    assert run_tag_audio(_args(model, audio, out)) == 0
    capsys.readouterr()
    assert run_tag_audio(_args(model, audio, out, "--plan_only")) == 0
    assert "1 done" in capsys.readouterr().out  # not 'changed' forever because 'zzz-named' sorts last
    files = current_files(str(out), ["uri", "duration_s"])
    assert files.num_rows == 1 and abs(files["duration_s"][0].as_py() - 3.0) < 0.01
    connection = duckdb_current_view(out)
    (duration,) = connection.execute("select duration_s from files_current").fetchone()
    assert duration == pytest.approx(3.0, abs=0.01)


def test_a_damaged_part_is_named_in_one_line_and_repair_quarantines_its_run(model, tmp_path, capsys):
    audio, out = _audio(tmp_path / "in", 2), tmp_path / "out"
    assert run_tag_audio(_args(model, audio, out)) == 0
    (part,) = list((out / "files").rglob("*.parquet"))
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # truncated
    capsys.readouterr()
    assert run_tag_audio(_args(model, audio, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(part) in err[0] and "--repair" in err[0]
    assert inspect.run([str(out)]) == 2
    assert str(part) in capsys.readouterr().err
    assert compact.run([str(out)]) == 2
    assert "--repair" in capsys.readouterr().err
    assert compact.run([str(out), "--repair"]) == 0
    assert not part.exists() and list((out / "_quarantine").rglob("*.parquet"))
    assert run_tag_audio(_args(model, audio, out)) == 0  # that run's files are tagged again
    assert current_files(str(out)).num_rows == 2
    assert not [r for r in find_output(str(out)).runs if not r.published]


def test_rewritten_records_neither_unpublish_a_run_nor_break_the_sql(model, tmp_path, capsys):
    audio, out = _audio(tmp_path / "in", 2), tmp_path / "out"
    assert run_tag_audio(_args(model, audio, out)) == 0
    (record,) = list((out / "runs").glob("*.json"))
    record.write_text("")  # an operator's editor, a full disk of old
    assert current_files(str(out)).num_rows == 2
    record.write_text('{"run_id": "x", "sta')  # half-written
    assert duckdb_current_view(out).execute("select count(*) from files_current").fetchone()[0] == 2
    capsys.readouterr()
    assert run_tag_audio(_args(model, audio, out, "--plan_only")) == 0
    assert "2 done" in capsys.readouterr().out


def test_compaction_leaves_the_runs_a_running_reader_reads(model, tmp_path, capsys):
    audio, out = _audio(tmp_path / "in", 1), tmp_path / "out"
    assert run_tag_audio(_args(model, audio, out)) == 0
    assert run_tag_audio(_args(model, audio, out, "--force")) == 0
    first = find_output(str(out)).published[0].run_id
    with reading(str(out), [first], "events"):
        plan = plan_compaction(str(out))
        assert plan.remove == () and plan.being_read == {first: "events"}
        assert compact.run([str(out)]) == 0
        assert (out / "frames" / f"run={first}").exists()
    assert compact.run([str(out)]) == 0
    assert not (out / "frames" / f"run={first}").exists()


def _start(model: Path, audio: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "beam_jobs.tag_audio", *_args(model, audio, out, *extra),
                             "--progress_s", "0"], cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_running_record(out: Path, job: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job.poll() is not None:
            pytest.fail(f"the job ended before it started work: {job.communicate()}")
        if list((out / "runs").glob("*.json")) if (out / "runs").exists() else []:
            return
        time.sleep(0.05)
    pytest.fail("no run record appeared")


@pytest.mark.parametrize(("sig", "code", "name"),
                         [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_signal_stops_the_run_cleanly_and_the_next_run_starts_at_once(model, tmp_path, sig, code, name):
    audio, out = _audio(tmp_path / "in", 6, seconds=20.0), tmp_path / "out"
    job = _start(model, audio, out)
    _wait_for_running_record(out, job)
    job.send_signal(sig)
    _stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == code, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("tag_audio:")]
    assert len(lines) == 1 and f"interrupted ({name})" in lines[0], stderr[-3000:]
    assert "Traceback" not in stderr
    (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    assert record["status"] == "failed" and record["reason"] == f"interrupted ({name})"
    assert not (out / "_lease.json").exists()
    assert not list((out / "_staging").rglob("*.parquet")) if (out / "_staging").exists() else True
    assert not list((out / "files").rglob("*.parquet")) if (out / "files").exists() else True
    assert run_tag_audio(_args(model, audio, out)) == 0
    assert len(_files_rows(out)) == 6


def test_a_killed_holder_on_this_host_is_taken_over_at_once(model, tmp_path):
    audio, out = _audio(tmp_path / "in", 6, seconds=20.0), tmp_path / "out"
    job = _start(model, audio, out, "--lease_ttl_s", "3600")
    _wait_for_running_record(out, job)
    job.kill()
    job.communicate()
    assert (out / "_lease.json").exists()
    assert run_tag_audio(_args(model, audio, out)) == 0  # not exit 3 for an hour
    assert len(_files_rows(out)) == 6


def _fill(directory: Path) -> None:
    with open(directory / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_disk_that_fills_mid_run_stops_it_in_one_line(model, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root): no disk to fill")
    try:
        audio, out = _audio(tmp_path / "in", 6, seconds=20.0), disk / "out"
        job = _start(model, audio, out)
        _wait_for_running_record(out, job)
        _fill(disk)  # the disk is full before the run writes its Parquet
        _stdout, stderr = job.communicate(timeout=600)
        lines = [line for line in stderr.splitlines() if line.startswith("tag_audio:")]
        assert job.returncode == 1, stderr[-3000:]
        assert len(lines) == 1 and "no space left on the device" in lines[0], stderr[-3000:]
        assert "Traceback" not in stderr
        assert not (out / "_lease.json").exists()
        assert not list(out.rglob("*.parquet"))
        (disk / "filler").unlink()
        (record,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
        assert record["status"] in ("running", "failed")  # failed unless the full disk refused that too
        assert run_tag_audio(_args(model, audio, out)) == 0  # with room again, the next run does the work
        assert len(_files_rows(out)) == 6
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
