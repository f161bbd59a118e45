"""The benchmarks' own parts: generated recordings, process-tree memory, the per-file baseline."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.corpus import Corpus, clip_corpus, write_recording
from bench.memory import MB, kill_tree, run_measured, tree_rss
from tests.support.pipeline_helpers import FIXTURE_MODEL, require_shared
from transforms.decoding.stream import decode_all, probe
from transforms.decoding.windows import num_frames


def test_long_recording_is_written_block_by_block_with_the_asked_length(tmp_path):
    path = write_recording(tmp_path / "rec.flac", seconds=25.3)
    info = probe(str(path))
    assert (info.codec, info.sample_rate, info.channels) == ("flac", 44100, 1)
    assert info.duration_s == pytest.approx(25.3, abs=1e-3)
    samples = decode_all(str(path), 16000)
    assert samples.size == pytest.approx(25.3 * 16000, abs=2)
    assert 0.05 < float(abs(samples).mean()) < 0.5  # audible content, not silence or clipping


def test_process_tree_memory_counts_children(tmp_path):
    # The 300 MB are held by a grandchild: only walking the tree finds them.
    script = ("import time; b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); "
              "time.sleep(30)")
    child = subprocess.Popen([sys.executable, "-c", f"import subprocess, sys; "
                              f"subprocess.run([sys.executable, '-c', {script!r}])"])
    try:
        total = 0
        for _ in range(100):
            total, largest, count = tree_rss(child.pid)
            if largest > 300 * MB:  # the grandchild has touched all its pages
                break
            time.sleep(0.1)
        assert total > 300 * MB and count == 2 and largest > 300 * MB
        assert tree_rss(child.pid)[0] - largest < 100 * MB  # the child itself is small
    finally:
        kill_tree(child.pid)
        child.wait()


def test_memory_run_reports_a_cap_and_a_failure():
    capped = run_measured("hog", 0.0, [sys.executable, "-c", "b = bytearray(400 * 1024 * 1024); "
                                       "b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(30)"],
                          poll_s=0.05, cap_bytes=200 * MB)
    assert capped.outcome.startswith("stopped above") and capped.seconds < 20
    failed = run_measured("fail", 0.0, [sys.executable, "-c", "raise SystemExit('no such model')"],
                          poll_s=0.05)
    assert failed.outcome == "exit 1: no such model"


def test_per_file_loop_writes_one_row_per_frame(tmp_path):
    from bench.per_file_loop import load_hub_model, tag_files

    model = load_hub_model(str(require_shared(FIXTURE_MODEL)))
    corpus: Corpus = clip_corpus(tmp_path / "clips", 3)
    result = tag_files(model, corpus.files, str(tmp_path / "out.parquet"))
    expected = sum(num_frames(decode_all(f, 16000).size, 15600, 7680) for f in corpus.files)
    assert result.frames == expected == pq.ParquetFile(tmp_path / "out.parquet").metadata.num_rows
    assert result.audio_seconds == pytest.approx(15.0, abs=0.1)


def test_decode_bench_prints_every_row_with_a_cost_per_frame(capsys):
    from bench import decode

    assert decode.main(["--clips", "3", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = ["product decoder (AudioStream), in process", "product decoder, 1 decoder process",
                "product: open + probe only", "FFmpeg + soxr"]
    if decode.ffmpeg_exe():
        expected += ["ffmpeg CLI, 1 process per file", "ffmpeg CLI, start-up only"]
    for label in expected:
        row = next((line for line in lines if line.startswith(label)), None)
        assert row is not None, (label, lines)
        assert float(row[56:69]) > 0, row  # CPU-ms per frame


def test_gpu_bench_without_a_gpu_says_so_and_exits_0():
    # This machine has no GPU (the test skips where one is visible: there the run measures for minutes).
    from audio_models.device import visible_gpus

    if visible_gpus():
        pytest.skip("a GPU is visible: run python -m bench.gpu by hand")
    result = subprocess.run([sys.executable, "-m", "bench.gpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No GPU visible to TensorFlow" in result.stdout and "bench.gpu on a GPU worker" in result.stdout


def test_gpu_batch_rule_takes_the_smallest_batch_near_the_best_rate():
    from bench.gpu import pick_batch

    assert pick_batch({32: 5000.0, 64: 8000.0, 128: 9500.0, 256: 10000.0, 512: 10100.0}) == 128
    assert pick_batch({32: 1000.0, 64: 900.0}) == 32


def test_reduced_precision_moves_yamnet_outputs_a_little_and_float32_not_at_all():
    # bench.gpu keeps a precision only within the bar; here the check itself: bfloat16 convolutions
    # change the outputs (so the check can fail), float32 through the same path does not.
    from bench.gpu import fidelity

    windows = np.random.default_rng(3).uniform(-1, 1, (4, 15600)).astype(np.float32)
    same, reduced = fidelity(str(require_shared(FIXTURE_MODEL)), windows, ["float32", "bfloat16"], "/CPU:0")
    assert same.scores < 1e-7 and same.embedding < 1e-6 and same.within
    assert 1e-5 < reduced.scores < 0.5 and reduced.embedding > 1e-4


def test_backends_bench_checks_equivalence_before_timing(capsys):
    from bench import backends

    require_shared(FIXTURE_MODEL)
    assert backends.main(["--rounds", "1", "--clips", "1", "--windows", "32"]) == 0
    out = capsys.readouterr().out
    tensorflow = next(line for line in out.splitlines() if line.startswith("  TensorFlow"))
    assert tensorflow.endswith(": equivalent"), tensorflow
    assert "LiteRT" in out and "ONNX Runtime" in out  # each converted and run, or named as not installed
    timing = out.split("frames/CPU-s", 1)[1].splitlines()
    assert any(line.startswith("TensorFlow") and line.rstrip().endswith("1.00") for line in timing), timing


def test_keyword_events_bench_places_keywords_and_counts_each_hit_once():
    from bench.keyword_events import recordings, score
    from transforms.answers.events import Event

    clips = np.stack([np.full(16000, i, np.float32) for i in range(4)])
    (waveform, truth), = recordings(clips, ["yes", "_unknown_", "no", "_silence_"], seed=0)
    assert waveform.size == 4 * 16000
    # Each keyword's span is where its clip landed (the clip of label i is filled with the value i).
    for label, start, end in truth:
        value = {"yes": 0, "no": 2}[label]
        np.testing.assert_allclose(waveform[int(start * 16000):int(end * 16000)], value)
    assert sorted(label for label, _, _ in truth) == ["no", "yes"]  # background clips are no keywords

    def event(label, start, end):
        return Event(0, label, start, end, start, 0.9, 0.9, 1)

    yes_start, yes_end = next((s, e) for label, s, e in truth if label == "yes")
    found = [event("yes", yes_start + 0.2, yes_end - 0.2), event("yes", yes_start, yes_end),  # twice: 1 hit
             event("no", yes_start, yes_end)]  # the wrong word where "yes" was said
    assert score(found, truth) == (1, 2)


def test_files_corpus_links_real_one_second_clips_and_the_table_gives_the_slope(tmp_path):
    from bench.memory import MemoryRun
    from bench.memory_files import corpus, format_table, one_second_clips

    clips, _source = one_second_clips(tmp_path)
    directory = corpus(tmp_path, 5, clips)
    links = sorted(directory.iterdir())
    assert len(links) == 5 and all(link.is_symlink() for link in links)
    assert probe(str(links[0])).duration_s == pytest.approx(1.0, abs=0.05)
    assert len(list(corpus(tmp_path, 5, clips).iterdir())) == 5  # made once, kept

    def run(peak_mb: int) -> MemoryRun:
        return MemoryRun("tag_audio", 0.0, peak_mb * MB, peak_mb * MB, 3, 10.0, "ok")

    table = format_table([(1000, run(1400)), (4000, run(1517))]).splitlines()
    assert table[-1].split()[:5] == ["4000", "1517", "MB", "1517", "MB"]
    assert table[-1].split()[5:7] == ["1.08", "39.9"]  # 117 MB over 3000 files


def test_plan_archives_writes_its_shards_and_the_table_gives_bytes_per_member(tmp_path):
    import storage
    from bench.plan_archives import FOLDER_PLAN, TAR_PLAN, Measured, format_table, parse_sizes, write_shards

    assert parse_sizes("10x1000, 100x1000") == [(10, 1000), (100, 1000)]
    shards = sorted(write_shards(tmp_path / "shards", 3, 40, 100).glob("*.tar"))
    members = [m for shard in shards for m in storage.list_members(str(shard))]
    assert len(shards) == 3 and len(members) == 3 * 40 and {m.size for m in members} == {100}

    floor = Measured(TAR_PLAN, 1, 10, 10.0, 700.0, 10)
    rows = [floor, Measured(TAR_PLAN, 10, 1000, 12.0, 720.0, 10_000),
            Measured(TAR_PLAN, 100, 1000, 30.0, 900.0, 100_000),
            Measured(FOLDER_PLAN, 100, 1000, 25.0, 950.0, 99_999)]
    table = format_table(rows, {TAR_PLAN: floor}).splitlines()
    assert table[2].endswith("(floor)")
    assert table[3].split()[-3:] == ["720", "20", "2097"]  # 20 MiB over 10,000 members
    assert table[4].split()[-4:] == ["200", "2097", "10.0", "10"]  # growth follows the members: linear
    assert table[5].split()[-5:-2] == ["250", "2621", "!"]  # against the tar floor; a count that is off
