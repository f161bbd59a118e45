"""Search by example: the top k equals brute force (in process and as a Beam pipeline), and the job
end to end with a real SavedModel (tests/answers/tone_model.py) on real audio files."""

from __future__ import annotations

import html.parser
import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that

from beam_jobs import search as search_job
from tests.answers.tone_model import RATE, save_tone_model, tone
from tests.support.audio_factory import write_audio
from tests.support.pipeline_helpers import run_tag_audio
from tests.support.savedmodel_factory import save_batched_encoder
from transforms.answers import search_run
from transforms.answers.search import Candidates, QuerySet, best, query_vector, table_candidates, unit_rows

DIM = 6


def corpus_tables(seed: int = 0) -> list[pa.Table]:
    """Frames of 40 files in 5 parts, with exact ties (repeated embeddings) and a zero embedding."""
    rng = np.random.default_rng(seed)
    tables = []
    for part in range(5):
        uris, index, vectors = [], [], []
        for f in range(8):
            n = int(rng.integers(1, 12))
            uris += [f"gs://b/part{part}/f{f}.wav"] * n
            index += list(range(n))
            vectors.append(rng.normal(size=(n, DIM)))
        embedding = np.concatenate(vectors).astype(np.float32)
        embedding[3] = embedding[10] = embedding[0]  # the same embedding in three frames: equal scores
        embedding[5] = 0.0
        tables.append(pa.table({
            "uri": uris, "frame_index": pa.array(index, pa.int32()),
            "start_s": np.array(index) * 0.5, "end_s": np.array(index) * 0.5 + 1.0,
            "embedding": pa.array(list(embedding), pa.list_(pa.float32()))}))
    return tables


def brute_force(tables: list[pa.Table], query: np.ndarray, k: int, max_per_file: int) -> list[tuple]:
    """``query``: one unit vector, or ``[m, D]`` of them (a frame scores its best cosine with any)."""
    rows = pa.concat_tables(tables).to_pylist()
    scored = []
    for r in rows:
        e = np.asarray(r["embedding"], np.float64)
        norm = np.linalg.norm(e)
        scored.append((float(np.max(np.atleast_2d(query) @ e) / norm) if norm else 0.0, r["uri"],
                       r["frame_index"]))
    scored.sort(key=lambda s: (-s[0], s[1], s[2]))
    kept, per_file = [], {}
    for score, uri, index in scored:
        per_file[uri] = per_file.get(uri, 0) + 1
        if max_per_file == 0 or per_file[uri] <= max_per_file:
            kept.append((uri, index, score))
    return kept[:k]


def as_list(found: Candidates) -> list[tuple]:
    return [(str(u), int(i), float(s)) for u, i, s in zip(found.uri, found.frame_index, found.score)]


def assert_same_hits(found: list[tuple], expected: list[tuple]) -> None:
    assert [(u, i) for u, i, _ in found] == [(u, i) for u, i, _ in expected]
    np.testing.assert_allclose([s for *_, s in found], [s for *_, s in expected], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k, max_per_file", [(7, 0), (25, 2), (300, 0), (5, 1)])
def test_top_k_of_shards_equals_brute_force_in_process(tmp_path, k, max_per_file):
    tables = corpus_tables()
    rng = np.random.default_rng(1)
    first = np.asarray(pa.concat_tables(tables)["embedding"][0].as_py())
    per_query = [rng.normal(size=(1, DIM)), rng.normal(size=(4, DIM)),  # a query of four frames: max pooling
                 first[None]]  # scores the tied frames highest
    queries = QuerySet.of(per_query, "max")
    rows_of = [unit_rows(m) for m in per_query]
    settings = search_run.SearchSettings(("a", "b", "c"), queries, k, max_per_file)
    paths = []
    for i, table in enumerate(tables):
        paths.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=7)
    hits, scanned = search_run.search_local(paths, settings, threads=3)
    assert scanned == sum(t.num_rows for t in tables)
    for q in range(3):
        assert_same_hits(as_list(hits[q]), brute_force(tables, rows_of[q], k, max_per_file))
    # Shards of any size give the same answer: one row at a time, merged in another order.
    rows = [t.slice(i, 1) for t in tables[::-1] for i in range(t.num_rows)]
    merged = best(Candidates.concat([c for r in rows for q, c in table_candidates(r, queries, k, max_per_file)
                                     if q == 2]), k, max_per_file)
    assert_same_hits(as_list(merged), brute_force(tables, rows_of[2], k, max_per_file))


def test_top_k_as_a_beam_pipeline_equals_brute_force(tmp_path):
    tables = corpus_tables(seed=4)
    queries = unit_rows(np.random.default_rng(5).normal(size=(2, DIM)))
    settings = search_run.SearchSettings(("a", "b"), QuerySet.single(queries), 9, 2)
    paths = []
    for i, table in enumerate(tables):
        paths.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(table, paths[-1], row_group_size=5)
    out = tmp_path / "out"

    with beam.Pipeline(runner="FnApiRunner") as pipeline:
        written = pipeline | search_run.SearchFrameFiles(paths, settings, str(out))
        assert_that(written, lambda counts: counts == [2] or pytest.fail(f"wrote {counts}"))
    hits = pq.read_table(out / "hits.parquet").to_pylist()
    for q, name in enumerate(("a", "b")):
        found = [(h["uri"], h["frame_index"], h["score"]) for h in hits if h["query"] == name]
        assert [h["rank"] for h in hits if h["query"] == name] == list(range(1, 10))
        assert_same_hits(found, brute_force(tables, queries[q], 9, 2))


def test_a_query_is_the_mean_direction_of_its_frames_or_each_of_them():
    frames = np.array([[3.0, 0.0], [0.0, 0.5]])
    np.testing.assert_allclose(query_vector(frames), [np.sqrt(0.5), np.sqrt(0.5)])
    corpus = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(QuerySet.of([frames], "mean").scores(corpus), [[np.sqrt(0.5)], [1.0], [0.0]],
                               atol=1e-6)
    np.testing.assert_allclose(QuerySet.of([frames, frames[:1]], "max").scores(corpus),
                               [[1.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)], [0.0, 0.0]], atol=1e-6)


# --- the job, end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Tone recordings: low ones, high ones, one with both; tagged with the tone model."""
    root = tmp_path_factory.mktemp("search")
    audio = root / "in"
    audio.mkdir()
    noise = np.random.default_rng(2).normal(0, 0.003, 4 * RATE)
    layout = {"low_a.wav": [("low", 0.5, 3.5)], "low_b.flac": [("low", 1.0, 2.0)],
              "high_a.wav": [("high", 0.0, 4.0)], "both.wav": [("high", 0.2, 1.6), ("low", 2.4, 3.9)],
              "quiet.wav": []}
    for name, tones in layout.items():
        signal = noise.copy()
        for label, a, b in tones:
            amplitude = 0.2 if name == "both.wav" else 0.3
            piece = tone(500.0 if label == "low" else 2000.0, b - a, amplitude=amplitude)
            signal[int(a * RATE):int(a * RATE) + piece.size] += piece
        write_audio(audio / name, signal[None], RATE)
    query = write_audio(root / "query_low.wav", np.concatenate([np.zeros(RATE), tone(500.0, 1.5)])[None],
                        RATE)  # a second of silence first: silent windows are no part of a query
    model = save_tone_model(root / "model")
    out = root / "out"
    assert run_tag_audio(["--input", str(audio), "--output", str(out), "--model", "savedmodel",
                          "--model_path", str(model)]) == 0
    return root, out, query


class _Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.images, self.players = [], 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-uri" in attrs:
            self.rows.append(attrs)
        self.images += tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,")
        if tag == "audio":
            self.players.append(attrs["src"])


def test_search_job_finds_the_sound_of_a_file_and_of_a_span(corpus, tmp_path, capsys):
    root, out, query = corpus
    span = f"{root / 'in' / 'both.wav'}@0.3-1.5"  # the high tone of a file in the corpus
    result = tmp_path / "result"
    assert search_job.run(["--frames", str(out), "--query", str(query), "--query", span, "--top_k", "6",
                           "--max_per_file", "2", "--output", str(result)]) == 0
    assert "frames scanned" in capsys.readouterr().out
    hits = pq.read_table(result / "hits.parquet").to_pandas()
    assert list(hits.columns) == ["query", "rank", "uri", "channel", "frame_index", "start_s", "end_s",
                                  "score"]
    low = hits[hits["query"] == str(query)]
    assert len(low) == 6 and (low.groupby("uri").size() <= 2).all()
    names = low.uri.str.rsplit("/", n=1).str[-1]
    assert set(names[:5]) <= {"low_a.wav", "low_b.flac", "both.wav"} and low.score.iloc[0] > 0.9
    both = low[names == "both.wav"]
    assert ((both.start_s + both.end_s) / 2 > 2.4).all()  # the low part of the file with both tones
    high = hits[hits["query"] == span]
    assert set(high.uri.str.rsplit("/", n=1).str[-1][:4]) == {"high_a.wav", "both.wav"}
    summary = json.loads((result / "search.json").read_text())
    assert summary["engine"] == "local" and summary["frames_scanned"] == 5 * 15
    page = _Page()
    page.feed((result / "index.html").read_text())
    assert len(page.rows) == 12 and page.images == 12
    assert page.players[0].startswith("file:///") and "#t=" in page.players[0]
    first = page.rows[0]
    assert first["data-uri"] == low.uri.iloc[0]
    assert float(first["data-start"]) == pytest.approx(low.start_s.iloc[0])


def test_queries_of_another_model_or_unreadable_are_refused_in_one_line(corpus, tmp_path, capsys):
    root, out, query = corpus
    other = save_batched_encoder(tmp_path / "other")
    base = ["--frames", str(out), "--output", str(tmp_path / "r")]
    assert search_job.run(base + ["--query", str(query), "--model_path", str(other)]) == 2
    assert search_job.run(base + ["--query", str(tmp_path / "missing.wav")]) == 2
    assert search_job.run(base + ["--query", f"{query}@2-1"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and "did not make these frames" in errors[0]
    assert "cannot read" in errors[1] and "start < end" in errors[2]
    assert not (tmp_path / "r").exists()


def test_the_labels_the_page_downloads_are_what_build_training_set_reads():
    """The page's own script, run by Node, turns marks into a labels CSV; the training-set parser reads it."""
    import re
    import shutil
    import subprocess

    from transforms.answers.search_page import render_page
    from transforms.training.labelled_rows import parse_labels

    node = shutil.which("node")
    if node is None:
        pytest.skip("no node here to run the page's script")
    script = re.search(r"<script>(.*?)</script>", render_page(pa.table({"query": ["q"]}).slice(0, 0),
                                                               thumbnails=False), re.S).group(1)
    marks = [{"uri": "/d/a,b.wav", "start": "1.000", "end": "1.975", "mark": "yes", "label": 'dog "bark"'},
             {"uri": "gs://x/c.wav", "start": "0.480", "end": "1.455", "mark": "no", "label": 'dog "bark"'},
             {"uri": "gs://x/d.wav", "start": "0.000", "end": "0.975", "mark": "", "label": "dog"}]
    code = f"{script}\nprocess.stdout.write(labelsCsv({json.dumps(marks)}, '_negative_'));"
    text = subprocess.run([node, "-e", code], capture_output=True, text=True, check=True).stdout
    rows = [(r.path, r.start_s, r.end_s, r.label) for r in parse_labels(text, "labels.csv").rows]
    assert rows == [("/d/a,b.wav", 1.0, 1.975, 'dog "bark"'), ("gs://x/c.wav", 0.48, 1.455, "_negative_")]
