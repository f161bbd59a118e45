"""One real tag_audio history shared by the reader, current-view and compaction tests.

Four real runs of ``tag_audio`` (FnApiRunner, in this process) with a tiny
SavedModel built here (tests/support/savedmodel_factory.py), so nothing needs
../shared, then a fifth run that was killed while publishing (its record says
'running', part of its Parquet is already under frames/ and files/):

====  ============================================  ==========================================
run   command                                       files rows
====  ============================================  ==========================================
1     all three inputs                              a ok, b ok, c failed (not audio)
      (b.flac is then rewritten: a changed file)
2     all three, ``--retry_failed``                 b ok (changed), c failed again
3     a.wav, ``--hop_s 0.25`` (a second config)     a ok under config 2
4     a.wav, ``--force``                            a ok
5     killed while publishing: record 'running'     a copy of run 4's rows
====  ============================================  ==========================================

So per (uri, config): a@1 is current in run 4, a@2 in run 3, b in run 2; c's
latest attempt (run 2) failed and it never had an ok row; run 1 holds nothing
current or latest.  Session-scoped: built once (about half a minute), never
modified (tests that change an output copy it first).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RATE = 16000


@dataclasses.dataclass(frozen=True)
class History:
    out: Path
    audio: Path
    model: Path
    runs: tuple[str, ...]  # the four published runs, oldest first
    running: str  # the run killed while publishing
    uris: dict[str, str]  # 'a' | 'b' | 'c' -> uri

    def tag_args(self, *extra: str) -> list[str]:
        return ["--output", str(self.out), "--model", "savedmodel", "--model_path", str(self.model),
                "--batch_size", "4", "--decode_processes", "0", *extra]


def _run_ids(out: Path) -> list[str]:
    return sorted(p.stem for p in (out / "runs").glob("*.json"))


def _tag(args: list[str]) -> None:
    from tests.support.pipeline_helpers import run_tag_audio

    assert run_tag_audio(args) == 0


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    from tests.support import savedmodel_factory as factory
    from tests.support.audio_factory import chirp, sine, write_audio
    from transforms.output.layout import new_run_id

    root = tmp_path_factory.mktemp("history")
    model = factory.save_batched_encoder(root / "model")
    audio = root / "audio"
    audio.mkdir()
    rng = np.random.default_rng(3)
    paths = {
        "a": write_audio(audio / "a.wav", sine(440, 2.0, RATE) + 0.05 * rng.standard_normal((1, 2 * RATE)),
                         RATE),
        "b": write_audio(audio / "b.flac", chirp(3.0, RATE), RATE),
        "c": audio / "c.wav",
    }
    paths["c"].write_bytes(b"RIFF? no: a text file with a .wav name")
    out = root / "out"
    h = History(out=out, audio=audio, model=model, runs=(), running="",
                uris={name: str(path) for name, path in paths.items()})

    _tag(h.tag_args("--input", str(audio)))
    write_audio(paths["b"], chirp(4.0, RATE, start_hz=300.0), RATE)  # changed: size and time differ
    _tag(h.tag_args("--input", str(audio), "--retry_failed"))
    _tag(h.tag_args("--input", str(paths["a"]), "--hop_s", "0.25"))
    _tag(h.tag_args("--input", str(paths["a"]), "--force"))
    runs = tuple(_run_ids(out))
    assert len(runs) == 4, runs

    # Run 5 was killed after moving its Parquet and before writing its final record.
    running = new_run_id()
    for table in ("frames", "files"):
        source = out / table / f"run={runs[-1]}"
        shutil.copytree(source, out / table / f"run={running}")
    record = json.loads((out / "runs" / f"{runs[-1]}.json").read_text())
    record.update(run_id=running, status="running", started_at=record["started_at"] + 60)
    for key in ("finished_at", "wall_s", "counts", "outputs"):
        record.pop(key, None)
    (out / "runs" / f"{running}.json").write_text(json.dumps(record))
    return dataclasses.replace(h, runs=runs, running=running)


@pytest.fixture()
def history_copy(history: History, tmp_path: Path) -> History:
    """A private copy of the history's OUT_DIR, for a test that changes it."""
    shutil.copytree(history.out, tmp_path / "out")
    return dataclasses.replace(history, out=tmp_path / "out")
