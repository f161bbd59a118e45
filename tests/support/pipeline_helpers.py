"""Running tag_audio in tests and reading its output back (shared by the pipeline tests)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
FIXTURE_MODEL = SHARED / "fixtures" / "yamnet-hub-random"
APPROX_MODEL = SHARED / "models" / "yamnet-approx"
ESC10 = SHARED / "data" / "esc10"
SPEECH_COMMANDS = SHARED / "data" / "speech_commands"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here: these tests need the shared fixtures next to the repository")
    return path


def run_tag_audio(args: list[str]) -> int:
    """Runs the job in this process (FnApiRunner unless args say otherwise)."""
    from beam_jobs import tag_audio

    return tag_audio.run(args + ["--progress_s", "0"])


def run_tag_audio_here(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    """tag_audio as ``python -m beam_jobs.tag_audio ARGS`` run from ``cwd`` would run it (its exit status,
    stdout and stderr), in this process: the same job without a new interpreter importing TensorFlow.
    Tests of what only a process shows (a signal, a kill, an environment of its own) use the
    subprocess."""
    from beam_jobs import tag_audio

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = tag_audio.run([*args, "--progress_s", "0"])
    return subprocess.CompletedProcess(["tag_audio", *args], status, out.getvalue(), err.getvalue())


def run_tag_audio_subprocess(args: list[str], env: dict | None = None, timeout: float = 600,
                             replace_env: bool = False) -> subprocess.CompletedProcess:
    """``python -m beam_jobs.tag_audio ARGS``; ``env`` adds to this process's environment, or with
    ``replace_env`` is the whole environment."""
    base = {} if replace_env else os.environ
    full_env = {**base, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "beam_jobs.tag_audio", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def rows_by_uri(out: str | Path) -> dict[str, dict]:
    """The files rows of every run by URI; asserts that no input has two."""
    rows = read_table(out, "files", ["uri", "status", "error", "num_frames", "size_bytes"]).to_pylist()
    assert len(rows) == len({row["uri"] for row in rows}), "an input has two rows"
    return {row["uri"]: row for row in rows}


def frames_by_uri(out: str | Path) -> dict:
    """Each URI's scores ``[frames, classes]`` in frame order."""
    import numpy as np

    frames = read_table(out, "frames", ["uri", "frame_index", "scores"]).to_pandas()
    return {uri: np.stack(group.sort_values("frame_index").scores.to_numpy())
            for uri, group in frames.groupby("uri")}


def read_table(out_dir: str | Path, table: str, columns: list[str] | None = None) -> pa.Table:
    """All runs of one table, with the Hive 'run' partition column."""
    dataset = ds.dataset(f"{out_dir}/{table}", format="parquet", partitioning="hive")
    return dataset.to_table(columns=columns)
