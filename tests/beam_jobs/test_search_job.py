"""beam_jobs.search chooses its engine from the command line: with a runner named, a Beam pipeline."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from beam_jobs import search as search_job
from tests.answers.test_search import corpus  # noqa: F401  (fixture: tone recordings, tagged)
from transforms.answers.search_run import HITS_FILE, SUMMARY_FILE


def test_a_named_runner_runs_the_search_on_beam_with_the_hits_of_the_local_scan(corpus, tmp_path):  # noqa: F811
    _, out, query = corpus
    base = ["--frames", str(out), "--query", str(query), "--top_k", "5", "--no_thumbnails"]
    assert search_job.run([*base, "--output", str(tmp_path / "local")]) == 0
    assert search_job.run([*base, "--output", str(tmp_path / "beam"), "--runner", "FnApiRunner"]) == 0
    found = {}
    for engine in ("local", "beam"):
        assert json.loads((tmp_path / engine / SUMMARY_FILE).read_text())["engine"] == engine
        found[engine] = pq.read_table(tmp_path / engine / HITS_FILE).to_pylist()
    assert len(found["local"]) == 5
    beam, local = ({(h["uri"], h["frame_index"]): h["score"] for h in found[e]} for e in ("beam", "local"))
    assert beam.keys() == local.keys()
    assert [beam[k] for k in local] == pytest.approx(list(local.values()), abs=1e-5)
