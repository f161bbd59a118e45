"""tag_audio end to end on a model and audio the test makes itself: runs in any clone, ../shared or not.

The corpus (tests/support/corpus.py, the session's ``small_corpus``) is a real SavedModel and real
FLAC, MP3 and WAV encoded by FFmpeg; the job runs through its command line on FnApiRunner; the Parquet
is read back by pyarrow and DuckDB; the expected numbers come from calling the saved signature directly.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from tests.support.corpus import RATE, tone_wave
from tests.support.pipeline_helpers import read_table, run_tag_audio
from tests.support.savedmodel_factory import (
    BATCHED_HOP_SAMPLES,
    BATCHED_LABELS,
    call_signature,
)

WINDOW = 16000


@pytest.fixture(scope="module")
def hermetic(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("hermetic") / "out"
    status = run_tag_audio(["--input", str(small_corpus.audio), "--output", str(out), "--model", "savedmodel",
                            "--model_path", str(small_corpus.model), "--decode_processes", "0"])
    return {"model": small_corpus.model, "audio": small_corpus.audio, "out": out, "status": status}


def test_every_file_gets_one_row_and_the_run_is_published(hermetic):
    assert hermetic["status"] == 0
    files = read_table(hermetic["out"], "files").to_pandas().set_index("uri")
    names = sorted(Path(u).name for u in files.index)
    assert names == ["broken.wav", "short.mp3", "sweep.wav", "tone.flac"]
    status = {Path(u).name: s for u, s in files.status.items()}
    assert status == {"broken.wav": "failed", "short.mp3": "ok", "sweep.wav": "ok", "tone.flac": "ok"}
    broken = files.loc[str(hermetic["audio"] / "broken.wav")]
    assert broken.error.split(":", 1)[0] in ("not_audio", "no_audio_data", "unreadable")
    records = list((hermetic["out"] / "runs").glob("*.json"))
    assert len(records) == 1 and '"status": "succeeded"' in records[0].read_text()


def test_frames_are_the_saved_signature_on_the_hop_grid(hermetic):
    frames = read_table(hermetic["out"], "frames", ["uri", "frame_index", "start_s", "scores", "embedding"])
    tone = frames.filter(frames["uri"].to_numpy(zero_copy_only=False)
                         == str(hermetic["audio"] / "tone.flac")).sort_by("frame_index")
    index = tone["frame_index"].to_numpy()
    # 3 s at hop 0.5 s with a 1 s window: windows start at 0, 0.5 ... 2.0 (the last one padded).
    assert list(index) == list(range(len(index))) and len(index) == 5
    np.testing.assert_allclose(tone["start_s"].to_numpy(), index * BATCHED_HOP_SAMPLES / RATE)
    wave = tone_wave()[0]
    padded = np.concatenate([wave, np.zeros(WINDOW, np.float32)])
    windows = np.stack([padded[i * BATCHED_HOP_SAMPLES:i * BATCHED_HOP_SAMPLES + WINDOW] for i in index])
    expected = call_signature(hermetic["model"], waveform=windows.astype(np.float32))
    # FLAC is lossless up to 16-bit quantisation; the model is smooth: small tolerances suffice.
    np.testing.assert_allclose(np.stack(tone["scores"].to_numpy(zero_copy_only=False)), expected["scores"],
                               atol=2e-3)
    np.testing.assert_allclose(np.stack(tone["embedding"].to_numpy(zero_copy_only=False)),
                               expected["embedding"], atol=2e-3)


def test_duckdb_reads_the_partitioned_tables_with_class_names_in_metadata(hermetic):
    out = hermetic["out"]
    rows = duckdb.sql(f"""
        select f.status, count(distinct f.uri), count(fr.frame_index)
        from read_parquet('{out}/files/*/*.parquet', hive_partitioning = true) f
        left join read_parquet('{out}/frames/*/*.parquet', hive_partitioning = true) fr
          on f.uri = fr.uri and f.run = fr.run
        group by f.status order by f.status""").fetchall()
    assert rows[0][0] == "failed" and rows[0][2] == 0
    assert rows[1][0] == "ok" and rows[1][1] == 3 and rows[1][2] > 0
    from schemas.tables import class_names_from

    schema = read_table(out, "frames").schema
    assert class_names_from(schema) == list(BATCHED_LABELS)


def test_a_second_run_skips_what_the_first_did(hermetic, capsys):
    status = run_tag_audio(["--input", str(hermetic["audio"]), "--output", str(hermetic["out"]),
                            "--model", "savedmodel", "--model_path", str(hermetic["model"]),
                            "--decode_processes", "0"])
    assert status == 0
    assert "3 done, 1 failed before" in capsys.readouterr().out
    files = read_table(hermetic["out"], "files")
    assert files.num_rows == 4  # the second run tagged nothing
