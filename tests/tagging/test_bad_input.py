"""Hostile and damaged input through the whole job: one files row each, frames that agree with it.

Runs tag_audio (FnApiRunner) with a tiny waveform SavedModel (1-s windows, 0.5-s hop), so it needs
nothing from ../shared.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support import savedmodel_factory as factory  # noqa: E402
from tests.support.audio_factory import make_bad_files  # noqa: E402
from tests.support.pipeline_helpers import read_table, run_tag_audio  # noqa: E402
from transforms.decoding.stream import probe  # noqa: E402
from transforms.tagging.listing import FileEntry  # noqa: E402
from transforms.tagging.units import Framing, PlanUnits  # noqa: E402

NAMED = ("nan_late_wav", "hours_wav", "jump_mkv", "absurd_rate_wav", "absurd_channels_wav")
MANIFEST_LINES = {  # a manifest line that is not a URI -> (status, start of its error)
    "nul\x00in the middle.wav": ("failed", "invalid_uri: the input holds control characters"),
    "xyz://bucket/recording.wav": ("failed", "invalid_uri: no filesystem reads xyz:// URIs"),
    "::not a uri at all::": ("failed", "not_found: no such file"),
}
NOT_UTF8 = b"\xff\xfe recording \xc3(.wav"


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    bad = make_bad_files(root / "bad")
    model = factory.save_batched_encoder(root / "model")
    manifest = root / "manifest.txt"
    manifest.write_bytes(b"".join(line.encode() + b"\n" for line in MANIFEST_LINES) + NOT_UTF8 + b"\n")
    inputs = [arg for name in NAMED for arg in ("--input", str(bad[name]))]
    status = run_tag_audio([*inputs, "--input_manifest", str(manifest), "--output", str(root / "out"),
                            "--model", "savedmodel", "--model_path", str(model), "--unit_s", "10"])
    assert status == 0
    files = {row["uri"]: row for row in read_table(root / "out", "files").to_pylist()}
    frames = read_table(root / "out", "frames", ["uri", "end_s"]).to_pylist()
    return bad, files, frames


def _frames_of(frames, uri) -> list[float]:
    return sorted(f["end_s"] for f in frames if f["uri"] == uri)


def test_nan_midway_keeps_the_frames_before_it_and_says_where(job):
    bad, files, frames = job
    uri = str(bad["nan_late_wav"])
    row = files[uri]
    assert row["status"] == "partial"
    assert row["error"] == "non_finite: the audio holds NaN or infinite samples from 2.50 s"
    ends = _frames_of(frames, uri)
    assert row["num_frames"] == len(ends) == 4  # windows [0, 1] .. [1.5, 2.5]: all before 2.5 s
    assert max(ends) <= 2.5


@pytest.mark.parametrize("name,error,num_frames", [
    ("hours_wav", "truncated: decoded 0.50 s of a declared 36000.00 s", 1),
    ("jump_mkv", "truncated: decoded 2.00 s of a declared 10802.00 s", 3),
    ("absurd_rate_wav", "bad_header: the header declares a sample rate of 1 Hz", 0),
    ("absurd_channels_wav", "bad_header: the header declares a channel count FFmpeg cannot decode", 0),
])
def test_headers_that_lie_cost_what_the_bytes_hold(job, name, error, num_frames):
    bad, files, frames = job
    row = files[str(bad[name])]
    assert row["error"].startswith(error), row["error"]
    assert row["status"] == ("partial" if num_frames else "failed")
    assert row["num_frames"] == len(_frames_of(frames, str(bad[name]))) == num_frames


def test_manifest_lines_that_are_not_uris_get_one_row_each(job):
    _, files, _ = job
    for line, (status, error) in MANIFEST_LINES.items():
        assert files[line]["status"] == status and files[line]["error"].startswith(error), files[line]
    garbled = [uri for uri in files if "\ufffd" in uri]
    assert len(garbled) == 1
    assert files[garbled[0]]["error"] == "invalid_uri: the input is not UTF-8 text, so not a path or URI"
    assert len(files) == len(NAMED) + len(MANIFEST_LINES) + 1


def test_units_are_planned_for_what_the_bytes_can_hold(tmp_path):
    # 16 KB whose header declares 10 hours: believing it would plan 3,600 ten-second units.
    path = make_bad_files(tmp_path)["hours_wav"]
    assert probe(str(path)).duration_s == pytest.approx(36000.0)
    plan = PlanUnits(Framing(16000, 16000, 8000, unit_frames=20))
    entry = FileEntry(str(path), path.stat().st_size, path.stat().st_mtime)
    units = [u for u in plan.process(entry) if not hasattr(u, "tag")]
    assert 1 <= len(units) <= 3  # 16 KB at the lowest bitrate audio is stored at: ~22 s
