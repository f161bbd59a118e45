"""Killed at each step that changes the output, then run again: every file once, no frame twice.

A run is SIGKILLed (a real signal, from inside the real ``python -m
beam_jobs.tag_audio`` process: ``AUDIO_TAGGER_KILL_AT=K`` stops it before its
K-th rename, exclusive create, record write or delete under OUT) at each of its
steps in turn; the next run must leave exactly one files row per file and no
frame twice, as the Python reader, a raw Parquet read and the README's DuckDB
view all see it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.compute as pc
import pytest

from tests.output.sql_docs import duckdb_current_view
from tests.support.audio_factory import sine, write_audio
from tests.support.pipeline_helpers import read_table, run_tag_audio, run_tag_audio_subprocess
from tests.support.savedmodel_factory import save_batched_encoder
from transforms.output.current import current_files
from transforms.output.reader import find_output

FILES = 3
# A fresh run's changes, in order: the write probe's delete, the 'running' record, the staged parts'
# renames, the staging directory's delete, the commit, the final record. Past the last it is not killed.
FRESH_RUN_STEPS = 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    model = save_batched_encoder(root / "model")
    audio = root / "audio"
    audio.mkdir()
    for i in range(FILES):
        write_audio(audio / f"c{i}.wav", sine(300.0 + 100 * i, 2.0, 16000), 16000)
    return model, audio


def _args(corpus, out: Path) -> list[str]:
    model, audio = corpus
    return ["--input", str(audio), "--output", str(out), "--model", "savedmodel", "--model_path", str(model),
            "--decode_processes", "0", "--progress_s", "0"]


def _kill_at(corpus, out: Path, step: int):
    return run_tag_audio_subprocess(_args(corpus, out), env={"AUDIO_TAGGER_KILL_AT": str(step)})


def _assert_each_file_once(out: Path) -> None:
    current = current_files(str(out), ["uri", "num_frames"])
    assert current.num_rows == FILES and len(set(current["uri"].to_pylist())) == FILES
    raw_files = read_table(out, "files", ["uri"])  # a plain Hive read: nothing left over from the kill
    assert sorted(raw_files["uri"].to_pylist()) == sorted(current["uri"].to_pylist())
    frames = read_table(out, "frames", ["uri", "frame_index"])
    keys = {(u, i) for u, i in zip(frames["uri"].to_pylist(), frames["frame_index"].to_pylist())}
    assert len(keys) == frames.num_rows == pc.sum(current["num_frames"]).as_py()
    connection = duckdb_current_view(out)
    assert connection.execute("select count(*), count(distinct uri) from files_current").fetchone() == (
        FILES, FILES)
    assert not (out / "_lease.json").exists()
    staging = out / "_staging"
    assert not staging.exists() or not any(p.is_file() for p in staging.rglob("*"))


@pytest.mark.parametrize("step", range(1, FRESH_RUN_STEPS + 1))
def test_a_run_killed_at_each_step_then_run_again_tags_every_file_once(corpus, tmp_path, step, capsys):
    out = tmp_path / "out"
    killed = _kill_at(corpus, out, step)
    if step < FRESH_RUN_STEPS:
        assert killed.returncode == -9 and f"crash point {step}:" in killed.stderr, killed.stderr[-2000:]
    else:
        assert killed.returncode == 0, killed.stderr[-2000:]  # past its last change: it completes
    committed = [run for run in find_output(str(out)).runs if run.published] if out.exists() else []

    assert run_tag_audio(_args(corpus, out)) == 0
    plan = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plan:")]
    # Killed before its commit: nothing of it counts and every file is new again; after it: all done.
    expected = f"{FILES} done" if committed else f"{FILES} new"
    assert plan and expected in plan[0], plan
    _assert_each_file_once(out)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_a_run_killed_while_clearing_what_a_killed_run_left_is_finished_by_the_next(corpus, tmp_path, step):
    out = tmp_path / "out"
    assert _kill_at(corpus, out, 4).returncode == -9  # parts renamed into place, never committed
    leftovers = [p for p in (out / "files").rglob("*.parquet")]
    assert leftovers  # the raw layout holds them; no documented reader takes them
    assert current_files(str(out)).num_rows == 0

    cleaner = _kill_at(corpus, out, step)  # its first changes clear the leftovers
    assert cleaner.returncode == -9, cleaner.stderr[-2000:]
    assert run_tag_audio(_args(corpus, out)) == 0
    _assert_each_file_once(out)
    assert not any(os.path.exists(p) for p in leftovers)
