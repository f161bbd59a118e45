"""One corpus, three runners: the local FnApiRunner, Dataflow's worker harness (a portable job whose SDK
workers come from the built wheel) and a dask.distributed cluster give the same frames."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.cluster.conftest import corpus_args, sorted_frames
from tests.cluster.processes import stop
from tests.cluster.worker_pool import (
    build_wheel,
    importable_from,
    make_worker_venv,
    package_data_missing_from,
    start_worker_pool,
)
from tests.support.pipeline_helpers import read_table, run_tag_audio


def assert_same_frames(got: pa.Table, expected: pa.Table) -> None:
    assert got.num_rows == expected.num_rows > 0
    assert got["uri"].to_pylist() == expected["uri"].to_pylist()
    assert got["frame_index"].to_pylist() == expected["frame_index"].to_pylist()
    for column in ("scores", "embedding"):
        diff = np.abs(np.array(got[column].to_pylist()) - np.array(expected[column].to_pylist()))
        assert diff.max() <= 1e-4, f"{column} differs by up to {diff.max()}"


def test_dask_cluster_gives_the_local_frames(dask_cluster, local_frames, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_tag_audio([*corpus_args(), "--output", str(out), *dask_cluster.runner_args()]) == 0
    assert_same_frames(sorted_frames(out), local_frames)
    files = read_table(out, "files", ["uri", "status"]).to_pylist()
    assert sorted(r["status"] for r in files) == ["ok"] * 3


def test_dask_progress_is_one_line_not_an_error(dask_cluster, tmp_path, capsys):
    from beam_jobs import tag_audio

    args = [*corpus_args()[:2], "--model_path", corpus_args()[-1], "--output", str(tmp_path / "out"),
            "--progress_s", "1", *dask_cluster.runner_args()]
    assert tag_audio.run(args) == 0
    err = capsys.readouterr().err
    assert "progress: Dask workers are separate processes" in err and "Traceback" not in err


def test_unreachable_dask_scheduler_fails_in_one_line(tmp_path, capsys):
    from beam_jobs import tag_audio
    from tests.cluster.processes import free_port

    args = [*corpus_args(), "--output", str(tmp_path / "out"), "--runner", "dask",
            "--dask_client_address", f"tcp://127.0.0.1:{free_port()}"]
    assert tag_audio.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no Dask scheduler answered" in err[0]


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory):
    directory = tmp_path_factory.mktemp("worker_harness")
    wheel = build_wheel(directory)
    return directory, wheel, make_worker_venv(directory, wheel)


def test_the_wheel_holds_the_package_data(worker_venv):
    _, wheel, _ = worker_venv
    assert package_data_missing_from(wheel) == [], "declare these in setup.py's package_data"


def test_worker_harness_from_the_wheel_gives_the_local_frames(worker_venv, local_frames, tmp_path):
    directory, _, venv = worker_venv
    elsewhere = tmp_path / "workers"  # outside the checkout
    elsewhere.mkdir()
    # The workers' only copy of the package is the wheel's, not the checkout.
    assert str(venv) in importable_from(venv, "transforms.tagging.pipeline", elsewhere)
    pool = start_worker_pool(venv, elsewhere)
    try:
        out = tmp_path / "out"
        assert run_tag_audio([*corpus_args(), "--output", str(out), *pool.runner_args()]) == 0
    finally:
        stop(pool.process)
    assert_same_frames(sorted_frames(out), local_frames)
