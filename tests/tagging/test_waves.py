"""A large input on the local runner, tagged in waves of files, each a run: the same rows as one run,
each file once, and a run stopped between waves leaves the earlier waves committed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from tests.support.audio_factory import sine, write_audio
from tests.support.pipeline_helpers import read_table, run_tag_audio
from tests.support.savedmodel_factory import save_batched_encoder
from transforms.output import commit_log
from transforms.tagging import run as tagging
from transforms.tagging import waves
from transforms.tagging.done_set import _prior_from_row
from transforms.tagging.listing import FileEntry
from transforms.tagging.run import RunStoppedError


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_batched_encoder(tmp_path_factory.mktemp("model") / "model")


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for i in range(5):
        write_audio(folder / f"c{i}.wav", sine(300.0 + 50 * i, 1.5 + 0.5 * i, 16000), 16000)
    (folder / "bad.wav").write_bytes(b"not audio at all")
    return folder


def _args(model: Path, audio: Path, out: Path, *extra: str) -> list[str]:
    return ["--input", str(audio), "--output", str(out), "--model", "savedmodel", "--model_path", str(model),
            "--decode_processes", "0", "--progress_s", "0", *extra]


def _frames(out: Path) -> dict[tuple[str, int], tuple[list, list]]:
    table = read_table(out, "frames", ["uri", "frame_index", "scores", "embedding"]).to_pylist()
    return {(r["uri"], r["frame_index"]): (r["scores"], r["embedding"]) for r in table}


def _files(out: Path) -> dict[str, dict]:
    rows = read_table(out, "files").drop_columns(["run"]).to_pylist()
    assert len(rows) == len({r["uri"] for r in rows}), "a file has two rows"
    return {r["uri"]: r for r in rows}


def _runs(out: Path) -> list[str]:
    return [e.run_id for e in commit_log.read_log(str(out)) if e.kind == commit_log.RUN]


def test_waves_are_consecutive_nearly_equal_and_never_above_the_size():
    entries = [FileEntry(f"f{i:02d}") for i in range(11)]
    cut = waves.split_waves(entries, 4)
    assert [len(w) for w in cut] == [3, 4, 4]
    assert [e for w in cut for e in w] == entries
    assert [len(w) for w in waves.split_waves(entries, 11)] == [11]


def test_only_local_runners_run_in_waves():
    assert waves.runs_locally(PipelineOptions([]))
    assert waves.runs_locally(PipelineOptions(["--runner", "FnApiRunner"]))
    assert waves.runs_locally(PipelineOptions(["--runner", "DirectRunner"]))
    assert not waves.runs_locally(PipelineOptions(["--runner", "DataflowRunner"]))
    assert not waves.runs_locally(PipelineOptions(["--runner", "PortableRunner"]))


def test_waves_give_the_rows_of_one_run_each_file_once(model, audio, tmp_path, capsys):
    one, in_waves = tmp_path / "one", tmp_path / "waves"
    assert run_tag_audio(_args(model, audio, one, "--wave_files", "0")) == 0
    capsys.readouterr()
    assert run_tag_audio(_args(model, audio, in_waves, "--wave_files", "2")) == 0
    printed = capsys.readouterr().out
    assert "-> 6 to tag" in printed
    assert "wave    3 of 3" in printed and "tag_audio in 3 waves (runs): succeeded; 6 files: 5 ok" in printed

    assert len(_runs(one)) == 1 and len(_runs(in_waves)) == 3
    frames_one, frames_waves = _frames(one), _frames(in_waves)
    assert frames_one.keys() == frames_waves.keys() and len(frames_one) > 10
    for key, (scores, embedding) in frames_one.items():
        np.testing.assert_allclose(frames_waves[key][0], scores, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(frames_waves[key][1], embedding, rtol=1e-6, atol=1e-7)
    assert _files(in_waves) == _files(one)

    # Every file is done now: the next run plans nothing and tags nothing, in one ordinary run.
    assert run_tag_audio(_args(model, audio, in_waves, "--wave_files", "2")) == 0
    assert "5 done, 1 failed before" in capsys.readouterr().out
    assert len(_files(in_waves)) == 6 and len(_runs(in_waves)) == 4


def test_an_input_that_fits_in_one_wave_is_one_ordinary_run(model, audio, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_tag_audio(_args(model, audio, out)) == 0  # the default wave is far above 6 files
    printed = capsys.readouterr().out
    assert "wave" not in printed and "files      6 total: 5 ok, 0 partial, 1 failed" in printed
    assert len(_runs(out)) == 1


def test_a_run_stopped_in_a_wave_keeps_the_waves_before_it(model, audio, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    real_execute = waves.execute
    calls = []

    def stopped_in_wave_two(config, record, *args):
        calls.append(record.run_id)
        if len(calls) == 2:  # as SIGTERM would leave it: execute abandoned the wave, then raised
            raise RunStoppedError("interrupted (SIGTERM): run stopped and recorded as failed", 143)
        return real_execute(config, record, *args)

    monkeypatch.setattr(waves, "execute", stopped_in_wave_two)
    assert run_tag_audio(_args(model, audio, out, "--wave_files", "2")) == 143
    err = capsys.readouterr().err
    assert "waves 1-1 of 3, 2 files, were committed before it" in err
    assert len(_runs(out)) == 1 and len(_files(out)) == 2

    monkeypatch.setattr(waves, "execute", real_execute)
    assert run_tag_audio(_args(model, audio, out, "--wave_files", "2")) == 0
    assert "1 done, 1 failed before (skipped; --retry_failed retries them) -> 4 to tag" in (
        capsys.readouterr().out)
    files = _files(out)
    assert sorted(Path(uri).name for uri in files) == ["bad.wav", *(f"c{i}.wav" for i in range(5))]
    assert len(_runs(out)) == 3  # the first wave, then the other 4 files in two waves


def test_a_file_committed_between_the_plan_and_its_wave_is_not_tagged_again(model, audio, tmp_path, capsys,
                                                                            monkeypatch):
    out = tmp_path / "out"
    config, _record = tagging.prepare([str(audio)], str(out), model="savedmodel", model_path=str(model),
                                      decode_processes=0)
    stale = waves.plan_entries(config, PipelineOptions([]))  # planned before the other run below
    assert len(stale[0]) == 6
    assert run_tag_audio(_args(model, audio, out, "--wave_files", "0")) == 0  # commits every file
    monkeypatch.setattr(waves, "plan_entries", lambda *_: stale)
    capsys.readouterr()
    assert run_tag_audio(_args(model, audio, out, "--wave_files", "4")) == 0
    printed = capsys.readouterr().out
    assert "tag_audio in 2 waves (runs): succeeded; 0 files" in printed
    assert len(_files(out)) == 6 and len(_runs(out)) == 3  # each file once: the waves found them done


def test_a_wave_reads_only_its_own_files_earlier_rows():
    row = {"uri": "/data/a.wav", "config_id": "c1", "status": "ok", "size_bytes": 3, "last_modified": 1.0}
    found = list(_prior_from_row(("out/files/run=r1/part.parquet", row), "out", "c1", {"r1": 1},
                                 only_uris=frozenset({"/data/a.wav"})))
    assert [uri for uri, _prior in found] == ["/data/a.wav"]
    assert list(_prior_from_row(("out/files/run=r1/part.parquet", row), "out", "c1", {"r1": 1},
                                only_uris=frozenset({"/data/b.wav"}))) == []


def test_a_signal_while_planning_stops_in_one_line_with_nothing_written(monkeypatch):
    import os
    import signal
    import time

    def planning(*_):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal arrives during the plan
        raise AssertionError("the signal did not stop the plan")

    monkeypatch.setattr(waves, "plan_entries", planning)
    with pytest.raises(RunStoppedError) as stopped:
        waves.execute_in_waves(None, None, PipelineOptions([]), 10)
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    assert str(stopped.value) == "interrupted (SIGTERM) while planning: nothing was written"


def test_a_negative_wave_size_is_refused_before_any_work(model, audio, tmp_path, capsys):
    assert run_tag_audio(_args(model, audio, tmp_path / "out", "--wave_files", "-5")) == 2
    assert "--wave_files must be 0 (one run) or a number of files per run, not -5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_another_run_taking_the_output_between_waves_stops_the_rest_busy(model, audio, tmp_path, capsys,
                                                                         monkeypatch):
    from transforms.output.lease import Lease

    out = tmp_path / "out"
    real_execute = waves.execute
    calls = []

    def another_run_starts_before_wave_two(config, record, *args):
        calls.append(record.run_id)
        if len(calls) == 2:
            Lease(config.output, "another-run", 600.0).acquire()  # live: this process holds it
        return real_execute(config, record, *args)

    monkeypatch.setattr(waves, "execute", another_run_starts_before_wave_two)
    assert run_tag_audio(_args(model, audio, out, "--wave_files", "2")) == 3
    err = capsys.readouterr().err
    assert "being tagged by run another-run" in err and "waves 1-1 of 3, 2 files, were committed" in err
    assert len(_runs(out)) == 1 and len(_files(out)) == 2
