"""Fixtures of the cluster tests: one small corpus from examples/, a Dask cluster, the local reference."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from tests.cluster.dask_cluster import start_dask_cluster, stop_dask_cluster
from tests.support.pipeline_helpers import read_table, run_tag_audio

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_AUDIO = REPO / "examples" / "audio"
EXAMPLE_MODEL = REPO / "examples" / "models" / "keyword"
CORPUS = ("lift.wav", "kitchen_lights.mp3", "robot_commands.flac")  # three codecs, about 10 s in all


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test over a minute on 2 cores; -m 'not slow' leaves it out")


def corpus_args() -> list[str]:
    args = []
    for name in CORPUS:
        args += ["--input", str(EXAMPLE_AUDIO / name)]
    return args + ["--model_path", str(EXAMPLE_MODEL)]


def sorted_frames(out_dir: Path) -> pa.Table:
    table = read_table(out_dir, "frames", ["uri", "frame_index", "scores", "embedding"])
    return table.sort_by([("uri", "ascending"), ("frame_index", "ascending")])


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory):
    cluster = start_dask_cluster(tmp_path_factory.mktemp("dask_cluster"))
    yield cluster
    stop_dask_cluster(cluster)


@pytest.fixture(scope="session")
def local_frames(tmp_path_factory) -> pa.Table:
    out = tmp_path_factory.mktemp("local") / "out"
    assert run_tag_audio([*corpus_args(), "--output", str(out)]) == 0
    return sorted_frames(out)
