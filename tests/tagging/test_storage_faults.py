"""A filesystem that fails under a file (EIO, as NFS, SMB or gcsfuse report a server or network fault):
the file gets a 'transient' row that names the storage error, and the next run retries it.

The fault is real: strace's fault injection makes every read(2) of one file fail with EIO in the job's
processes (the decoder processes too), nothing in the product is patched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from schemas.tables import error_kind
from tests.support.audio_factory import chirp, sine, write_audio
from tests.support.pipeline_helpers import REPO, read_table

READS = "read,pread64,readv,preadv"
STATS = "stat,lstat,newfstatat,statx"


def _fault(path, calls: str = READS, error: str = "EIO") -> list[str]:
    """The strace prefix that makes ``calls`` on ``path`` fail with ``error``, in all child processes."""
    return ["strace", "-f", "-qq", "-o", os.devnull, "--seccomp-bpf", "-P", str(path), "-e", f"trace={calls}",
            "-e", f"inject={calls}:error={error}"]


def _require_strace_injection(tmp_path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace): it injects the EIO")
    probe = tmp_path / "probe.bin"
    probe.write_bytes(b"x" * 100)
    code = f"open({str(probe)!r}, 'rb').read()"
    result = subprocess.run([*_fault(probe), sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=60)
    if "[Errno 5]" not in result.stderr:
        pytest.skip(f"strace cannot inject EIO here (ptrace not allowed?): {result.stderr.strip()[-300:]}")


def _tag(args: list[str], prefix: list[str] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([*prefix, sys.executable, "-m", "beam_jobs.tag_audio", *args, "--progress_s", "0"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_eio_reading_a_file_gives_a_transient_row_and_the_next_run_retries_it(tmp_path, small_corpus):
    _require_strace_injection(tmp_path)
    audio = tmp_path / "audio"
    audio.mkdir()
    good = write_audio(audio / "good.flac", sine(440.0, 3.0, 16000), 16000)
    bad = write_audio(audio / "on_a_bad_mount.wav", chirp(3.0, 16000), 16000)
    out = tmp_path / "out"
    # --unit_s 2: the 3 s files are probed while planning, so the fault meets the probe and the decode.
    args = ["--input", str(audio), "--output", str(out), "--model", "savedmodel", "--model_path",
            str(small_corpus.model), "--unit_s", "2"]

    first = _tag(args, prefix=_fault(bad))
    assert first.returncode == 0, first.stderr[-3000:]
    listed = read_table(out, "files", ["uri", "status", "error"]).to_pylist()
    rows = {os.path.basename(r["uri"]): r for r in listed}
    assert rows[good.name]["status"] == "ok"
    assert rows[bad.name]["status"] == "failed"
    assert error_kind(rows[bad.name]["error"]) == "transient"
    assert "storage error EIO (Input/output error)" in rows[bad.name]["error"]

    again = _tag(args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 hit storage errors before (retried)" in again.stdout, again.stdout
    files = read_table(out, "files", ["uri", "status", "run"]).to_pylist()
    latest = max((r["run"], r["status"]) for r in files if r["uri"].endswith(bad.name))
    assert latest[1] == "ok"
    assert sum(r["uri"].endswith(good.name) for r in files) == 1  # done before: not tagged twice


def test_a_stale_handle_while_listing_a_named_file_is_transient_too(tmp_path):
    _require_strace_injection(tmp_path)
    named = write_audio(tmp_path / "named.wav", sine(440.0, 0.5, 16000), 16000)
    code = ("from transforms.tagging.listing import ExpandInput; "
            f"print(ExpandInput._literal({str(named)!r}).error)")
    result = subprocess.run([*_fault(named, STATS, "ESTALE"), sys.executable, "-c", code], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    error = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-2000:]
    assert error == "transient: storage error ESTALE (Stale file handle); the next run retries this file"
